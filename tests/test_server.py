"""Tests for viz.server.manager (real visdom processes on free ports) and viz.frontend."""

import ast
import http.server
import io
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tarfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from click.testing import CliRunner

from viz.server import frontend
from viz.server import manager as server

needs_frontend = pytest.mark.skipif(
    not frontend.is_ready(),
    reason="visdom front-end files not installed (needs npm once): "
    "python -c 'from viz.server import frontend; frontend.install()'",
)


def free_port() -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def get(url: str) -> tuple[int, str]:
    """Status and body of a GET request."""
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.status, response.read().decode()


def process_gone(pid: int) -> bool:
    """Whether every thread of ``pid`` has exited."""
    states = []
    for stat in Path(f"/proc/{pid}/task").glob("*/stat"):
        try:
            states.append(stat.read_text().rsplit(")", 1)[1].split()[0])
        except OSError:
            continue
    return all(state in ("Z", "X") for state in states)


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    """Keep pid and log files, and visdom's default ~/.visdom, in a per-test folder."""
    monkeypatch.setenv("TRAINVIZ_CACHE", str(tmp_path / "cache"))
    (tmp_path / "home").mkdir()
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    return tmp_path / "cache"


@pytest.fixture
def port():
    """A free port; whatever trainviz started on it is stopped afterwards, by pid."""
    chosen = free_port()
    yield chosen
    pid_file = server.pid_path(chosen)
    if pid_file.exists():
        pid = int(pid_file.read_text())
        server.stop(chosen)
        if not process_gone(pid):
            os.kill(pid, signal.SIGKILL)


# --- real servers -----------------------------------------------------------


@needs_frontend
def test_start_serves_dashboard_reuses_and_stops(port, tmp_path, monkeypatch, cache):
    env_path = tmp_path / "envs" / "new"

    info = server.start(port=port, env_path=env_path)

    assert info.reused is False
    assert info.url == f"http://localhost:{port}"
    assert server.pid_path(port).read_text().strip() == str(info.pid)
    assert info.log_path == cache / "server" / f"visdom-{port}.log"
    assert server.probe(port) == "visdom"
    status_code, body = get(f"http://127.0.0.1:{port}/")
    assert status_code == 200
    assert "<title>visdom</title>" in body
    assert (env_path / "main.json").is_file()

    again = server.start(port=port)
    assert again.reused is True
    assert again.pid is None
    assert server.status(port) == (
        f"visdom server running at http://localhost:{port} (pid {info.pid}, log {info.log_path})"
    )

    # Seen from another trainviz cache, the server is not ours to stop.
    monkeypatch.setenv("TRAINVIZ_CACHE", str(tmp_path / "other-cache"))
    assert server.status(port) == (
        f"visdom server running at http://localhost:{port} (not started by trainviz)"
    )
    assert server.stop(port) is False
    assert server.probe(port) == "visdom"
    monkeypatch.setenv("TRAINVIZ_CACHE", str(cache))

    assert server.stop(port) is True
    assert process_gone(info.pid)
    assert server.probe(port) is None
    assert not server.pid_path(port).exists()
    assert server.stop(port) is False
    assert server.status(port) == f"visdom server not running on port {port}"


@needs_frontend
def test_cli_start_status_stop(port, monkeypatch):
    monkeypatch.setenv("VISDOM_PORT", str(port))
    runner = CliRunner()

    started = runner.invoke(server.server_cli, ["start"])
    assert started.exit_code == 0, started.output
    pid = int(server.pid_path(port).read_text())
    url = f"http://localhost:{port}"
    assert started.output.startswith(f"visdom server running at {url} (pid {pid}")

    reused = runner.invoke(server.server_cli, ["start"])
    assert reused.output == f"visdom server already running at {url} (reused)\n"

    status = runner.invoke(server.server_cli, ["status"])
    assert status.output.startswith(f"visdom server running at {url} (pid {pid}")

    stopped = runner.invoke(server.server_cli, ["stop"])
    assert stopped.output == f"visdom server on port {port} stopped\n"
    assert process_gone(pid)


LOGIN_REFUSAL = {"0.2.4": 400, "0.3.0": 401}  # how each visdom answers its API without the login cookie


@needs_frontend
def test_public_server_asks_for_login_and_keeps_credentials_out_of_files(
    port, tmp_path, monkeypatch, cache
):
    home = tmp_path / "home"
    monkeypatch.delenv("VISDOM_COOKIE", raising=False)
    monkeypatch.setenv("VISDOM_USERNAME", "alice")
    monkeypatch.setenv("VISDOM_PASSWORD", "s3cret-pw-for-test")

    info = server.start(port=port, public=True)

    assert server.probe(port) == "visdom"
    _, body = get(f"http://127.0.0.1:{port}/")
    assert "Visdom Login" in body
    # Without the login cookie, visdom refuses its API.
    request = urllib.request.Request(f"http://127.0.0.1:{port}/env/main", data=b"{}")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=5)
    refused.value.close()
    assert refused.value.code == LOGIN_REFUSAL[frontend.visdom_version()]
    assert (home / ".visdom" / "COOKIE_SECRET").is_file()
    check_logins(port, tmp_path, monkeypatch)
    for path in (cache, home):
        for file in path.rglob("*"):
            if file.is_file():
                assert b"s3cret-pw-for-test" not in file.read_bytes(), file
    assert server.stop(port) is True
    assert process_gone(info.pid)


def check_logins(port: int, tmp_path: Path, monkeypatch) -> None:
    """Against a server started with alice's login: hers is let in; a wrong or missing one is one line."""
    from trainers.cli import cli
    from viz.dashboard.client import LoginRefused, connect
    from viz.dashboard.sender import VisdomSink

    assert connect("http://localhost", port, "logins") is not None
    monkeypatch.setenv("VISDOM_PASSWORD", "not-hers")
    with pytest.raises(LoginRefused, match="refused the login of VISDOM_USERNAME 'alice': check VISDOM_PASSWORD"):
        connect("http://localhost", port, "logins")
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text('{"trainer": "mlp", "env": "logins"}')
    (run / "events.jsonl").write_text('{"kind": "text", "win": "mistakes", "text": "none"}\n')
    replay = CliRunner().invoke(cli, ["replay", str(run), "--port", str(port)])
    assert replay.exit_code == 2 and replay.output.strip().splitlines() == [
        f"Error: the visdom server at http://localhost:{port} refused the login of VISDOM_USERNAME 'alice': "
        "check VISDOM_PASSWORD"]
    # a run streaming to it trains on, says so once, and keeps its events for a replay with the right login
    sink = VisdomSink("http://localhost", port, "logins", run / "live.jsonl")
    sink.scalars("loss", x=1, values={"train": 0.5})
    sink.close()
    assert sink.listen(lambda: None, lambda request: None) is None
    assert len((run / "live.jsonl").read_text().splitlines()) == 1
    monkeypatch.delenv("VISDOM_USERNAME")
    with pytest.raises(LoginRefused, match="asks for a login: set VISDOM_USERNAME and VISDOM_PASSWORD"):
        connect("http://localhost", port, "logins")


@needs_frontend
def test_server_dying_at_start_reports_last_log_line(port):
    # A bound but not listening socket: probe sees nothing, yet visdom cannot bind.
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", port))
        with pytest.raises(server.ServerError) as err:
            server.start(port=port, timeout=20)
    message = str(err.value)
    assert message.startswith("visdom server exited at start (code 1): ")
    assert "Address already in use" in message
    assert str(server.log_path(port)) in message
    assert not server.pid_path(port).exists()


# --- ports held by something else -----------------------------------------------


class _Hello(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"<html><title>not it</title></html>")

    def log_message(self, *args):
        pass


def _http_holder():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hello)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    return httpd.server_address[1], lambda: (httpd.shutdown(), httpd.server_close())


def _closing_holder():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    done = threading.Event()

    def accept_and_close():
        sock.settimeout(0.1)
        while not done.is_set():
            try:
                conn, _ = sock.accept()
            except OSError:
                continue
            conn.close()

    threading.Thread(target=accept_and_close, daemon=True).start()
    return sock.getsockname()[1], lambda: (done.set(), sock.close())


def _silent_holder():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    return sock.getsockname()[1], sock.close


@pytest.mark.parametrize("holder", [_http_holder, _closing_holder, _silent_holder])
def test_port_held_by_something_else_fails_fast(holder):
    held_port, release = holder()
    try:
        assert server.probe(held_port, timeout=0.5) == "other"
        began = time.monotonic()
        with pytest.raises(server.ServerError) as err:
            server.start(port=held_port)
        assert time.monotonic() - began < 10
    finally:
        release()
    assert str(err.value) == (
        f"port {held_port} is in use by something that is not a visdom server; "
        "choose another with --port"
    )
    assert not server.pid_path(held_port).exists()


def test_probe_reports_nothing_on_a_free_port():
    assert server.probe(free_port()) is None


# --- refusals before anything starts --------------------------------------------


def test_public_without_credentials_starts_nothing(port, monkeypatch):
    monkeypatch.delenv("VISDOM_USERNAME", raising=False)
    monkeypatch.setenv("VISDOM_PASSWORD", "pw")

    with pytest.raises(server.ServerError) as err:
        server.start(port=port, public=True)

    assert str(err.value) == (
        "--public needs a login: set VISDOM_USERNAME in the environment "
        "(the server then asks for them in the browser)"
    )
    assert server.probe(port) is None
    assert not server.pid_path(port).exists()


def test_cli_public_without_credentials_exits_1_with_one_line(port, monkeypatch):
    monkeypatch.delenv("VISDOM_USERNAME", raising=False)
    monkeypatch.delenv("VISDOM_PASSWORD", raising=False)

    result = CliRunner().invoke(server.server_cli, ["start", "--public", "--port", str(port)])

    assert result.exit_code == 1
    assert result.output == (
        "Error: --public needs a login: set VISDOM_USERNAME and VISDOM_PASSWORD in the "
        "environment (the server then asks for them in the browser)\n"
    )


def test_env_path_that_cannot_be_a_folder_is_refused(port, tmp_path):
    (tmp_path / "afile").write_text("a file, not a folder")
    bad = tmp_path / "afile" / "sub"

    with pytest.raises(server.ServerError) as err:
        server.start(port=port, env_path=bad)

    assert str(err.value).startswith(f"--env-path {bad} is not a writable folder (")
    assert server.probe(port) is None
    assert not server.pid_path(port).exists()


def test_cli_status_when_nothing_runs(port):
    result = CliRunner().invoke(server.server_cli, ["status", "--port", str(port)])
    assert result.exit_code == 0
    assert result.output == f"visdom server not running on port {port}\n"


def test_cli_stop_when_nothing_runs(port):
    result = CliRunner().invoke(server.server_cli, ["stop", "--port", str(port)])
    assert result.output == f"no visdom server started by trainviz on port {port}\n"


def test_stale_pid_file_of_another_process_is_not_signalled(port):
    # Our own pid stands in for a recycled pid: it is alive but not visdom.server.
    server.state_dir().mkdir(parents=True)
    server.pid_path(port).write_text(f"{os.getpid()}\n")

    assert server.stop(port) is False
    assert not server.pid_path(port).exists()


# --- frontend ---------------------------------------------------------------------


# Copies of the two releases' server/build.py, whichever visdom this Python installed.
BUILD_0_2_4 = Path(__file__).parent / "fixtures" / "visdom-0.2.4-build.py"
BUILD_0_3_0 = Path(__file__).parent / "fixtures" / "visdom-0.3.0-build.py"


@pytest.fixture
def fake_static(tmp_path, monkeypatch):
    """An empty stand-in for visdom's static folder."""
    static = tmp_path / "static"
    static.mkdir()
    monkeypatch.setattr(frontend, "static_dir", lambda: static)
    return static


def _fill(static: Path) -> None:
    for rel in frontend.missing():
        path = static / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(frontend.visdom_version() if rel == "version.built" else "x")


def test_missing_lists_every_file_of_an_empty_static_dir(fake_static, monkeypatch):
    monkeypatch.setattr(frontend, "assets", lambda: frontend.assets_from_build(BUILD_0_2_4.read_text()))
    absent = frontend.missing()

    assert len(absent) == 21 + 8 + 1  # build.py's files, MathJax files, version.built
    assert absent[0] == "js/jquery.min.js"
    assert "fonts/glyphicons-halflings-regular.svg#glyphicons_halflingsregular" in absent
    assert "fonts/classnames" in absent
    assert "js/mathjax/2.7.5/jax/output/SVG/fonts/TeX/Size1/Regular/Main.js" in absent
    assert absent[-1] == "version.built"
    assert frontend.is_ready() is False


def test_missing_flags_a_stale_version_built(fake_static):
    _fill(fake_static)
    assert frontend.missing() == []
    assert frontend.is_ready() is True

    (fake_static / "version.built").write_text("0.1.0")
    assert frontend.missing() == ["version.built"]


def test_install_without_npm_says_how_to_get_it(fake_static, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))

    with pytest.raises(frontend.FrontendError) as err:
        frontend.install(echo=lambda line: None)

    assert str(err.value) == (
        "npm (Node.js) is needed to fetch visdom's front-end files: apt-get install nodejs npm"
    )


def test_install_is_a_no_op_when_ready(fake_static, tmp_path, monkeypatch):
    _fill(fake_static)
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    lines = []

    frontend.install(echo=lines.append)

    assert lines == []


def _fake_npm(bin_dir: Path, script: str) -> None:
    bin_dir.mkdir()
    npm = bin_dir / "npm"
    npm.write_text("#!/bin/sh\n" + script)
    npm.chmod(npm.stat().st_mode | stat.S_IXUSR)


def test_install_reports_npm_failure_in_one_line(fake_static, tmp_path, monkeypatch):
    _fake_npm(
        tmp_path / "bin",
        "echo 'npm error code ETARGET' >&2\n"
        "echo 'npm error notarget No matching version found for jquery@3.1.1.' >&2\n"
        "exit 1\n",
    )
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))

    with pytest.raises(frontend.FrontendError) as err:
        frontend.install(echo=lambda line: None)

    message = str(err.value)
    assert message.startswith("npm pack failed for jquery@3.1.1 bootstrap@3.3.7 ")
    assert message.endswith(": notarget No matching version found for jquery@3.1.1.")


def _tarball(path: Path, files: dict[str, bytes]) -> None:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def _npm_registry(folder: Path, assets) -> Path:
    """Tarballs shaped like npm's, one per package, each file holding 'name@version:path'."""
    folder.mkdir()
    contents: dict[str, dict[str, bytes]] = {}
    for asset in assets:
        files = contents.setdefault(f"{asset.package}-{asset.version}.tgz", {})
        if asset.source is None:
            files["package/package.json"] = b'{"main": "index.js"}'
            files["package/index.js"] = f"{asset.spec}:index.js".encode()
        for rel in asset.files:
            source = asset.source if asset.source != "." else rel[len(asset.dest) + 1:]
            if source:
                files[f"package/{source}"] = f"{asset.spec}:{source}".encode()
    for name, files in contents.items():
        _tarball(folder / name, files)
    return folder


@pytest.mark.parametrize("build_py", [BUILD_0_2_4, BUILD_0_3_0], ids=["0.2.4", "0.3.0"])
def test_install_puts_npm_files_where_visdom_looks(fake_static, tmp_path, monkeypatch, build_py):
    assets = frontend.assets_from_build(build_py.read_text())
    monkeypatch.setattr(frontend, "assets", lambda: assets)
    packed = _npm_registry(tmp_path / "packed", assets)
    _fake_npm(tmp_path / "bin", f'{shutil.which("cp")} {packed}/*.tgz "$PWD"\n')
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    lines = []

    frontend.install(echo=lines.append)

    assert frontend.missing() == []
    # classnames is fetched by its bare name: unpkg serves the package's main file.
    assert (fake_static / "fonts/classnames").read_text() == "classnames@2.2.5:index.js"
    mathjax = {BUILD_0_2_4: ("2.7.5", "MathJax.js"), BUILD_0_3_0: ("3.2.2", "es5/tex-mml-svg.js")}[build_py]
    assert (fake_static / f"js/mathjax/{mathjax[0]}/{mathjax[1]}").read_text() == "mathjax@%s:%s" % mathjax
    assert (fake_static / "version.built").read_text() == frontend.visdom_version()
    assert lines == [
        "Fetching visdom's front-end files with npm (15 packages) ...",
        f"Installed visdom's front-end files into {fake_static}",
    ]


INSTALL_SCRIPT = """
import sys
from pathlib import Path
from viz.server import frontend
frontend.static_dir = lambda: Path(sys.argv[1])
frontend.install(echo=lambda line: None)
"""


def test_two_setups_at_once_fetch_once_and_both_succeed(tmp_path):
    """Two `trainviz server setup` (two launch.sh in two terminals) on one visdom: one fetch, no clash."""
    static = tmp_path / "static"
    static.mkdir()
    packed = _npm_registry(tmp_path / "packed", frontend.assets())
    calls = tmp_path / "npm-calls"
    # A slow npm, so the second process arrives while the first is still fetching.
    _fake_npm(tmp_path / "bin", f'echo call >> {calls}\nsleep 1\n{shutil.which("cp")} {packed}/*.tgz "$PWD"\n')
    env = {**os.environ, "PATH": f"{tmp_path / 'bin'}:{os.environ['PATH']}"}
    procs = [subprocess.Popen([sys.executable, "-c", INSTALL_SCRIPT, str(static)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    for proc in procs:
        _, stderr = proc.communicate(timeout=60)
        assert proc.returncode == 0, stderr
    assert calls.read_text().splitlines() == ["call"]
    assert (static / "version.built").read_text() == frontend.visdom_version()
    assert not list(static.rglob("*.partial"))


@pytest.mark.parametrize("member", ["package/../../escaped.js", "/etc/escaped.js", "link"])
def test_extraction_refuses_members_outside_the_target(tmp_path, member):
    tarball = tmp_path / "evil.tgz"
    with tarfile.open(tarball, "w:gz") as tar:
        info = tarfile.TarInfo(member)
        if member == "link":
            info.type = tarfile.SYMTYPE
            info.linkname = "/etc/passwd"
            tar.addfile(info)
        else:
            info.size = 1
            tar.addfile(info, io.BytesIO(b"x"))
    target = tmp_path / "out"
    target.mkdir()

    with pytest.raises(frontend.FrontendError, match="refusing to extract"):
        frontend._safe_extract(tarball, target)

    assert list(target.iterdir()) == []
    assert not (tmp_path / "escaped.js").exists()


def _build_py_table(source: str) -> dict[str, str]:
    """build.py's ext_files as {file name: URL}, read independently of frontend's parser."""
    names = {"b": "https://unpkg.com/"}
    names["bb"] = "%sbootstrap@3.3.7/dist/" % names["b"]
    table = next(node.value for node in ast.walk(ast.parse(source)) if isinstance(node, ast.Assign)
                 and any(isinstance(t, ast.Name) and t.id == "ext_files" for t in node.targets))
    return {eval(compile(ast.Expression(v), "build.py", "eval"), {}, names):
            eval(compile(ast.Expression(k), "build.py", "eval"), {}, names)
            for k, v in zip(table.keys, table.values)}


@pytest.mark.parametrize("build_py", [None, BUILD_0_2_4, BUILD_0_3_0], ids=["installed", "0.2.4", "0.3.0"])
def test_every_download_of_build_py_has_an_npm_asset(build_py):
    source = (build_py or frontend._visdom_dir() / "server" / "build.py").read_text()
    derived = frontend.assets_from_build(source)
    table = _build_py_table(source)

    # One asset per download, filed where build.py files it (js/, css/ or fonts/ by extension) ...
    files = {asset.dest.split("/", 1)[1]: asset for asset in derived if asset.package != "mathjax"}
    assert set(files) == set(table)
    for name, url in table.items():
        asset = files[name]
        assert asset.dest.split("/")[0] == ("js" if name.endswith((".js", ".js.map")) else
                                            "css" if name.endswith(".css") else "fonts")
        # ... from the same package and version when the URL is npm's own (unpkg).
        if url.startswith("https://unpkg.com/"):
            assert url.startswith(f"https://unpkg.com/{asset.spec}"), (url, asset)
    (mathjax,) = [asset for asset in derived if asset.package == "mathjax"]
    assert f'"{mathjax.version}"' in source or f"mathjax/{mathjax.version}/" in source
    assert mathjax.source == "." and mathjax.dest == f"js/mathjax/{mathjax.version}"


def test_the_two_visdom_releases_ask_for_their_own_versions():
    old = {a.dest: a for a in frontend.assets_from_build(BUILD_0_2_4.read_text())}
    new = {a.dest: a for a in frontend.assets_from_build(BUILD_0_3_0.read_text())}
    assert old["css/react-resizable-styles.css"].spec == "react-resizable@1.4.6"
    assert new["css/react-resizable-styles.css"].spec == "react-resizable@3.1.3"
    assert new["css/react-grid-layout-styles.css"].spec == "react-grid-layout@2.2.3"
    assert old["js/plotly-plotly.min.js"].spec == new["js/plotly-plotly.min.js"].spec == "plotly.js-dist-min@2.11.1"
    assert old["js/mathjax/2.7.5"].files[-1] == "js/mathjax/2.7.5/MathJax.js"
    assert new["js/mathjax/3.2.2"].files == ("js/mathjax/3.2.2/es5/tex-mml-svg.js",)
    assert new["fonts/classnames"].source is None  # the bare package: its main file
    # build.py keeps the CDN's URL fragment in the saved name; the file in the package has none.
    svg = new["fonts/glyphicons-halflings-regular.svg#glyphicons_halflingsregular"]
    assert svg.source == "dist/fonts/glyphicons-halflings-regular.svg"
    assert not any("#" in (a.source or "") or "?" in (a.source or "") for a in [*old.values(), *new.values()])


def test_a_cdn_trainviz_does_not_know_is_named():
    source = BUILD_0_3_0.read_text().replace("https://d3js.org/d3.v3.min.js", "https://cdn.example/d3.js")
    with pytest.raises(frontend.FrontendError, match="https://cdn.example/d3.js"):
        frontend.assets_from_build(source)
