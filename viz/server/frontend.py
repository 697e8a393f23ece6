"""Make visdom's front-end files available without internet access.

On every start, ``python -m visdom.server`` downloads about twenty JS/CSS/font
files from public CDNs plus MathJax, unless all of them are already in visdom's
``static/`` folder and ``static/version.built`` holds the visdom version. Offline
the MathJax download raises and the server never starts. Every one of those files
is published on the npm registry at the version visdom wants, so :func:`install`
fetches them once with ``npm pack`` and puts them where visdom looks, after which
the server starts offline.

Which files those are depends on the visdom release (0.3.0 asks for newer CSS and
another MathJax than 0.2.4), so the list is read from the installed visdom's own
``server/build.py``: its ``ext_files`` table of CDN URLs and its MathJax list, each
URL mapped to the npm package that publishes the same file (:func:`assets_from_build`).

Example::

    from viz.server import frontend

    if not frontend.is_ready():
        frontend.install()
"""

import ast
import functools
import importlib.util
import json
import re
import shutil
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

from viz.paths import atomic_path, locked


class FrontendError(Exception):
    """The front-end files could not be installed; the message says what to do."""


@dataclass(frozen=True)
class Asset:
    """One file (or whole package) visdom's server expects under ``static/``."""

    package: str  # npm package name
    version: str  # exact version visdom's build.py asks for
    source: str | None  # path inside the package; "." the whole package; None its main file
    dest: str  # path under visdom's static/ folder
    check: tuple[str, ...] = ()  # files under static/ that show it is in place (default: dest)

    @property
    def spec(self) -> str:
        """The ``name@version`` argument for ``npm pack``."""
        return f"{self.package}@{self.version}"

    @property
    def files(self) -> tuple[str, ...]:
        """The paths under ``static/`` that show this asset is in place."""
        return self.check or (self.dest,)


# CDN addresses in build.py -> (npm package, version, path in the package). unpkg.com
# serves npm packages as they are; the others publish the same files under other names.
_CDN_TO_NPM: tuple[tuple[re.Pattern, Callable[[re.Match], tuple[str, str, str | None]]], ...] = (
    (re.compile(r"https?://unpkg\.com/((?:@[^/@]+/)?[^/@]+)@([^/]+)/?(.*)"),
     lambda m: (m[1], m[2], m[3] or None)),
    (re.compile(r"https?://cdn\.plot\.ly/plotly-([\d.]+)\.min\.js"),
     lambda m: ("plotly.js-dist-min", m[1], "plotly.min.js")),
    # d3js.org serves the last release of each major version under these names.
    (re.compile(r"https?://d3js\.org/d3\.v3\.min\.js"), lambda m: ("d3", "3.5.17", "d3.min.js")),
    (re.compile(r"https?://d3js\.org/d3-selection-multi\.v1\.js"),
     lambda m: ("d3-selection-multi", "1.0.1", "build/d3-selection-multi.js")),
)
_MATHJAX_CDN = re.compile(r"https?://cdnjs\.cloudflare\.com/ajax/libs/mathjax/([^/]+)/")


def _npm_source(url: str) -> tuple[str, str, str | None]:
    """The npm package, version and path that publish what ``url`` serves."""
    address = url.split("#")[0].split("?")[0]  # a fragment or query names no file in the package
    for pattern, to_npm in _CDN_TO_NPM:
        if match := pattern.fullmatch(address):
            return to_npm(match)
    raise FrontendError(f"visdom's build.py asks for {url}, which trainviz cannot map to an npm package")


def _static_subdir(name: str) -> str:
    """The folder build.py files a download in, by its name (its own rule)."""
    if name.endswith((".js", ".js.map")):
        return "js"
    return "css" if name.endswith(".css") else "fonts"


def _evaluate(node: ast.AST, names: dict):
    """The value of a build.py expression made of strings, % formatting, lists and dicts."""
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Name):
        return names[node.id]
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mod):
        return _evaluate(node.left, names) % _evaluate(node.right, names)
    if isinstance(node, (ast.List, ast.Tuple)):
        return [_evaluate(item, names) for item in node.elts]
    if isinstance(node, ast.Dict):
        return {_evaluate(k, names): _evaluate(v, names) for k, v in zip(node.keys, node.values)}
    raise ValueError(ast.dump(node))


def _build_names(source: str) -> dict:
    """Every simple assignment in build.py's ``download_scripts`` whose value can be evaluated."""
    function = next(node for node in ast.walk(ast.parse(source))
                    if isinstance(node, ast.FunctionDef) and node.name == "download_scripts")
    names: dict = {}
    for statement in function.body:
        if isinstance(statement, ast.Assign) and len(statement.targets) == 1 \
                and isinstance(statement.targets[0], ast.Name):
            try:
                names[statement.targets[0].id] = _evaluate(statement.value, names)
            except (KeyError, ValueError, TypeError):
                continue  # computed at run time (paths, proxies): not part of the download list
    return names


def assets_from_build(source: str) -> tuple[Asset, ...]:
    """The npm assets that stand in for every download of a visdom ``build.py``.

    Args:
        source: the text of visdom's ``server/build.py``.

    Raises:
        FrontendError: the file has no download table trainviz can read, or names a
            CDN address trainviz cannot map to an npm package.

    Example::

        assets_from_build((visdom_dir / "server" / "build.py").read_text())
    """
    try:
        names = _build_names(source)
        ext_files, mathjax_url, mathjax_paths = names["ext_files"], names["cdnjs_url"], names["mathjax_path"]
    except (StopIteration, KeyError, SyntaxError):
        raise FrontendError("visdom's server/build.py has no download table trainviz can read; "
                            "install visdom 0.2.4 or 0.3.0") from None
    assets = []
    for url, name in ext_files.items():
        package, version, path = _npm_source(url)
        assets.append(Asset(package, version, path, f"{_static_subdir(name)}/{name}"))
    match = _MATHJAX_CDN.match(mathjax_url)
    if match is None:
        raise FrontendError(f"visdom's build.py asks for MathJax at {mathjax_url}, which trainviz cannot map")
    # build.py saves each MathJax file under js/mathjax/VERSION/ without its query string;
    # the whole npm package goes there, so the files MathJax loads on demand are present too.
    folder = f"js/mathjax/{match[1]}"
    files = tuple(f"{folder}/{path.split('?')[0]}" for path in mathjax_paths)
    assets.append(Asset("mathjax", match[1], ".", folder, files))
    return tuple(assets)


@functools.cache
def assets() -> tuple[Asset, ...]:
    """The assets the installed visdom asks for."""
    return assets_from_build((_visdom_dir() / "server" / "build.py").read_text())


VERSION_BUILT = "version.built"

# npm retries slow registries for minutes; past this we give up with a message.
_NPM_TIMEOUT_S = 600


def _visdom_dir() -> Path:
    """The installed visdom package folder, found without importing visdom."""
    spec = importlib.util.find_spec("visdom")
    if spec is None or spec.origin is None:
        raise FrontendError("visdom is not installed: pip install visdom")
    return Path(spec.origin).parent


def static_dir() -> Path:
    """The ``static/`` folder of the installed visdom package."""
    return _visdom_dir() / "static"


def visdom_version() -> str:
    """The version text visdom compares ``static/version.built`` against."""
    return (_visdom_dir() / "VERSION").read_text().strip()


def _built_version_ok(static: Path) -> bool:
    """Whether ``version.built`` names the installed visdom version."""
    try:
        return (static / VERSION_BUILT).read_text().strip() == visdom_version()
    except OSError:
        return False


def missing() -> list[str]:
    """Paths under :func:`static_dir` that visdom would try to download.

    Includes ``version.built`` when it is absent or names another visdom
    version (visdom then re-downloads everything).
    """
    static = static_dir()
    absent = [rel for asset in assets() for rel in asset.files if not (static / rel).is_file()]
    if not _built_version_ok(static):
        absent.append(VERSION_BUILT)
    return absent


def is_ready() -> bool:
    """True when ``python -m visdom.server`` will start without downloading."""
    return not missing()


def _assets_to_fetch() -> list[Asset]:
    """The assets install() has to fetch: all of them after a visdom upgrade."""
    static = static_dir()
    if not _built_version_ok(static):
        return list(assets())
    return [asset for asset in assets() if any(not (static / rel).is_file() for rel in asset.files)]


def _first_npm_error(stderr: str) -> str:
    """The most telling line of npm's error output."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    errors = [line[len("npm error") :].strip() for line in lines if line.startswith("npm error")]
    # npm leads with "code E404" / "errno" / "syscall" lines; the sentence after them says why.
    telling = [line for line in errors if line.split(" ")[0] not in ("code", "errno", "syscall")]
    for candidates in (telling, errors, lines):
        if candidates:
            return candidates[0]
    return "no error output"


def _npm_pack(specs: list[str], workdir: Path) -> None:
    """Download the tarballs for ``specs`` into ``workdir`` with one npm call."""
    npm = shutil.which("npm")
    if npm is None:
        raise FrontendError(
            "npm (Node.js) is needed to fetch visdom's front-end files: apt-get install nodejs npm"
        )
    # --silent would also hide npm's error message; --loglevel=error keeps only that.
    cmd = [npm, "pack", "--loglevel=error", *specs]
    try:
        result = subprocess.run(
            cmd,
            cwd=workdir,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=_NPM_TIMEOUT_S,
        )
    except subprocess.TimeoutExpired:
        raise FrontendError(
            f"npm pack did not finish within {_NPM_TIMEOUT_S} s fetching {' '.join(specs)}: "
            "check access to the npm registry (npm config get registry)"
        ) from None
    if result.returncode != 0:
        raise FrontendError(
            f"npm pack failed for {' '.join(specs)}: {_first_npm_error(result.stderr)}"
        )


def _tarball_name(package: str, version: str) -> str:
    """The file name ``npm pack`` gives a package's tarball."""
    return f"{package.lstrip('@').replace('/', '-')}-{version}.tgz"


def _safe_extract(tarball: Path, target: Path) -> None:
    """Extract ``tarball`` into ``target``, refusing members that would land outside it."""
    root = target.resolve()
    with tarfile.open(tarball) as tar:
        members = tar.getmembers()
        for member in members:
            dest = (root / member.name).resolve()
            if not dest.is_relative_to(root):
                raise FrontendError(
                    f"{tarball.name}: refusing to extract {member.name!r} outside {root}"
                )
            if not (member.isfile() or member.isdir()):
                raise FrontendError(
                    f"{tarball.name}: refusing to extract {member.name!r} (not a plain file)"
                )
        tar.extractall(root, members=members, filter="data")


def _copy_into_place(asset: Asset, package_root: Path, static: Path) -> None:
    """Copy one asset from an extracted package into visdom's static folder."""
    source = package_root / (asset.source or _main_file(package_root))
    dest = static / asset.dest
    if not source.exists():
        raise FrontendError(
            f"{asset.spec} has no {asset.source or 'main file'}; cannot install {asset.dest}"
        )
    dest.parent.mkdir(parents=True, exist_ok=True)
    if source.is_dir():
        shutil.copytree(source, dest, dirs_exist_ok=True)
    else:
        with atomic_path(dest) as partial:  # a server starting meanwhile never serves half a file
            shutil.copyfile(source, partial)


def _main_file(package_root: Path) -> str:
    """The file unpkg serves for a bare ``name@version``: package.json's "main", else index.js."""
    try:
        return json.loads((package_root / "package.json").read_text()).get("main") or "index.js"
    except (OSError, ValueError):
        return "index.js"


def _unique(items: Iterable[str]) -> list[str]:
    """The items in first-seen order without repeats."""
    return list(dict.fromkeys(items))


def install(echo: Callable[[str], None] = print) -> None:
    """Fetch visdom's front-end files from npm and put them in visdom's static folder.

    Does nothing when :func:`is_ready` already holds. Otherwise runs one
    ``npm pack`` for the packages that are missing (all of them when
    ``version.built`` is stale), unpacks them, copies the files visdom expects
    and finally writes ``version.built`` so visdom skips its own downloads.

    Args:
        echo: called with a short progress line before and after the fetch.

    Raises:
        FrontendError: npm is missing or failed, or the static folder is not
            writable; the message is one line saying what to do.

    Example::

        install(echo=lambda line: click.echo(line, err=True))
    """
    if is_ready():
        return
    static = static_dir()
    try:
        with locked(static / ".trainviz-install.lock"):
            # Another process may have installed everything while this one waited.
            if not is_ready():
                _install(static, echo)
    except PermissionError as err:
        raise FrontendError(
            f"cannot write visdom's front-end files into {static}: {err.strerror or err}; "
            "run as a user who can write to the Python environment"
        ) from None


def _install(static: Path, echo: Callable[[str], None]) -> None:
    """Fetch and place the missing assets; the caller holds the install lock."""
    assets = _assets_to_fetch()
    specs = _unique(asset.spec for asset in assets)
    echo(f"Fetching visdom's front-end files with npm ({len(specs)} packages) ...")
    with tempfile.TemporaryDirectory(prefix="trainviz-frontend-") as tmp:
        workdir = Path(tmp)
        _npm_pack(specs, workdir)
        unpacked = {}
        for asset in assets:
            if asset.spec in unpacked:
                continue
            tarball = workdir / _tarball_name(asset.package, asset.version)
            if not tarball.is_file():
                raise FrontendError(f"npm pack did not produce {tarball.name} for {asset.spec}")
            target = workdir / "unpacked" / asset.spec
            target.mkdir(parents=True)
            _safe_extract(tarball, target)
            unpacked[asset.spec] = target / "package"
        try:
            for asset in assets:
                _copy_into_place(asset, unpacked[asset.spec], static)
            # Written last: visdom takes this file as the sign that everything is in place.
            with atomic_path(static / VERSION_BUILT) as partial:
                partial.write_text(visdom_version())
        except OSError as err:
            raise FrontendError(
                f"cannot write visdom's front-end files into {static}: {err.strerror or err}; "
                "run as a user who can write to the Python environment"
            ) from None
    echo(f"Installed visdom's front-end files into {static}")
