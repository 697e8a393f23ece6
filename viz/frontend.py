"""Make visdom's front-end files available without internet access.

On every start, ``python -m visdom.server`` downloads about twenty JS/CSS/font
files from public CDNs plus MathJax 2.7.5, unless all of them are already in
visdom's ``static/`` folder and ``static/version.built`` holds the visdom
version. Offline the MathJax download raises and the server never starts.
Every one of those files is published on the npm registry at the version visdom
wants, so :func:`install` fetches them once with ``npm pack`` and puts them where
visdom looks, after which the server starts offline.

Example::

    from viz import frontend

    if not frontend.is_ready():
        frontend.install()
"""

import importlib.util
import shutil
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable


class FrontendError(Exception):
    """The front-end files could not be installed; the message says what to do."""


@dataclass(frozen=True)
class Asset:
    """One file (or whole package) visdom's server expects under ``static/``."""

    package: str  # npm package name
    version: str  # exact version visdom's build.py asks for
    source: str  # path inside the package tarball ("" for the whole package)
    dest: str  # path under visdom's static/ folder

    @property
    def spec(self) -> str:
        """The ``name@version`` argument for ``npm pack``."""
        return f"{self.package}@{self.version}"


_BOOTSTRAP_FONTS = tuple(
    Asset(
        "bootstrap",
        "3.3.7",
        f"dist/fonts/glyphicons-halflings-regular.{ext}",
        f"fonts/glyphicons-halflings-regular.{ext}",
    )
    for ext in ("eot", "woff2", "woff", "ttf")
)

# Mirrors ext_files in visdom/server/build.py (0.2.4), with the CDN URL
# replaced by the npm package that publishes the same file.
ASSETS: tuple[Asset, ...] = (
    Asset("jquery", "3.1.1", "dist/jquery.min.js", "js/jquery.min.js"),
    Asset("bootstrap", "3.3.7", "dist/js/bootstrap.min.js", "js/bootstrap.min.js"),
    Asset("react", "16.2.0", "umd/react.production.min.js", "js/react-react.min.js"),
    Asset("react-dom", "16.2.0", "umd/react-dom.production.min.js", "js/react-dom.min.js"),
    Asset("react-modal", "3.1.10", "dist/react-modal.min.js", "js/react-modal.min.js"),
    Asset("plotly.js-dist-min", "2.11.1", "plotly.min.js", "js/plotly-plotly.min.js"),
    Asset("sjcl", "1.0.7", "sjcl.js", "js/sjcl.js"),
    Asset(
        "layout-bin-packer",
        "1.4.0",
        "dist/layout-bin-packer.js.map",
        "js/layout-bin-packer.js.map",
    ),
    Asset("layout-bin-packer", "1.4.0", "dist/layout-bin-packer.js", "js/layout_bin_packer.js"),
    Asset("d3", "3.5.17", "d3.min.js", "js/d3.v3.min.js"),
    Asset(
        "d3-selection-multi",
        "1.0.1",
        "build/d3-selection-multi.js",
        "js/d3-selection-multi.v1.js",
    ),
    Asset("save-svg-as-png", "1.4.17", "lib/saveSvgAsPng.js", "js/saveSvgAsPng.js"),
    Asset("react-resizable", "1.4.6", "css/styles.css", "css/react-resizable-styles.css"),
    Asset(
        "react-grid-layout",
        "0.16.3",
        "css/styles.css",
        "css/react-grid-layout-styles.css",
    ),
    Asset("bootstrap", "3.3.7", "dist/css/bootstrap.min.css", "css/bootstrap.min.css"),
    # build.py files the classnames script under fonts/ because its saved
    # name has no extension; the server's pages expect it there.
    Asset("classnames", "2.2.5", "index.js", "fonts/classnames"),
    *_BOOTSTRAP_FONTS,
    # build.py keeps the CDN's URL fragment as part of the file name.
    Asset(
        "bootstrap",
        "3.3.7",
        "dist/fonts/glyphicons-halflings-regular.svg",
        "fonts/glyphicons-halflings-regular.svg#glyphicons_halflingsregular",
    ),
    Asset("mathjax", "2.7.5", "", "js/mathjax/2.7.5"),
)

# The MathJax files build.py fetches when absent, whatever version.built says.
MATHJAX_FILES = (
    "config/Safe.js",
    "config/TeX-AMS-MML_HTMLorMML.js",
    "extensions/Safe.js",
    "jax/output/SVG/fonts/TeX/fontdata.js",
    "jax/output/SVG/jax.js",
    "jax/output/SVG/fonts/TeX/Size1/Regular/Main.js",
    "jax/output/SVG/config.js",
    "MathJax.js",
)

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


def _asset_files(asset: Asset) -> list[str]:
    """The files under ``static/`` that show an asset is in place."""
    if asset.source:
        return [asset.dest]
    return [f"{asset.dest}/{name}" for name in MATHJAX_FILES]


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
    absent = [
        rel for asset in ASSETS for rel in _asset_files(asset) if not (static / rel).is_file()
    ]
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
        return list(ASSETS)
    return [
        asset
        for asset in ASSETS
        if any(not (static / rel).is_file() for rel in _asset_files(asset))
    ]


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
    source = package_root / asset.source if asset.source else package_root
    dest = static / asset.dest
    if not source.exists():
        raise FrontendError(
            f"{asset.spec} has no {asset.source or 'files'}; cannot install {asset.dest}"
        )
    dest.parent.mkdir(parents=True, exist_ok=True)
    if source.is_dir():
        shutil.copytree(source, dest, dirs_exist_ok=True)
    else:
        shutil.copyfile(source, dest)


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
    assets = _assets_to_fetch()
    specs = _unique(asset.spec for asset in assets)
    static = static_dir()
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
            (static / VERSION_BUILT).write_text(visdom_version())
        except OSError as err:
            raise FrontendError(
                f"cannot write visdom's front-end files into {static}: {err.strerror or err}; "
                "run as a user who can write to the Python environment"
            ) from None
    echo(f"Installed visdom's front-end files into {static}")
