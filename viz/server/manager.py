"""Start, stop and inspect a local visdom server.

The server runs as a detached ``python -m viz.server.visdom_server`` process: visdom's own
server behind a gate that refuses requests from other web pages (see
:mod:`viz.server.visdom_server`). What trainviz started is remembered in
``cache_dir()/server``: ``visdom-<port>.pid`` holds the process id and
``visdom-<port>.log`` its output, so a later command (or another shell) can stop
exactly that process and nothing else. Starting and stopping hold
``visdom-<port>.lock``, so two commands at once (two ``launch.sh`` in two terminals)
start one server, and the second reuses it.

Example::

    from viz.server import manager as server

    info = server.start(port=8097)
    print(info.url)
    server.stop(8097)

From the command line: ``trainviz server start|status|stop [--port N]``.
"""

import http.client
import os
import re
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Literal, Optional

import click

from viz.defaults import PORT as DEFAULT_PORT
from viz.paths import atomic_path, cache_dir, locked
from viz.server import frontend

SERVER_MODULE = "viz.server.visdom_server"  # what ``python -m`` runs: visdom behind trainviz's gate

# visdom's own page is titled "visdom"; with -enable_login it is "Visdom Login".
_VISDOM_TITLE = re.compile(rb"<title>\s*visdom", re.IGNORECASE)

_CREDENTIAL_VARS = ("VISDOM_USERNAME", "VISDOM_PASSWORD")

# Servers this process launched, kept so that stopping them also reaps them:
# no zombie left behind and no "subprocess still running" warning.
_launched: dict[int, subprocess.Popen] = {}


class ServerError(Exception):
    """A server operation failed; the message is one line a person can act on."""


@dataclass(frozen=True)
class ServerInfo:
    """Where a visdom server answers, and whether trainviz launched it just now."""

    port: int  # TCP port the server listens on
    pid: Optional[int]  # process id when launched by this call, None when reused
    url: str  # address to open in a browser
    log_path: Path  # where the server's output goes when trainviz starts it
    reused: bool  # True when a visdom server was already answering on the port


def state_dir() -> Path:
    """The folder holding the pid and log files of servers trainviz started."""
    return cache_dir() / "server"


def pid_path(port: int) -> Path:
    """The pid file for the server trainviz started on ``port``."""
    return state_dir() / f"visdom-{port}.pid"


def lock_path(port: int) -> Path:
    """The lock held while a server on ``port`` is started or stopped."""
    return state_dir() / f"visdom-{port}.lock"


def log_path(port: int) -> Path:
    """The log file for the server trainviz started on ``port``."""
    return state_dir() / f"visdom-{port}.log"


def url_for(port: int) -> str:
    """The browser address of a local server on ``port``."""
    return f"http://localhost:{port}"


def probe(
    port: int, host: str = "127.0.0.1", timeout: float = 2.0
) -> Optional[Literal["visdom", "other"]]:
    """Say what listens on ``host:port``.

    Sends ``GET /`` and looks for the title of visdom's page (the dashboard,
    or the login page when the server runs with ``-enable_login``).

    Args:
        port: TCP port to check.
        host: address to connect to.
        timeout: seconds to wait for the connection and for the answer.

    Returns:
        ``None`` when nothing accepts connections, ``"visdom"`` when a visdom
        server answers, ``"other"`` when something else holds the port.

    Example::

        if probe(8097) == "visdom":
            print("dashboard at", url_for(8097))
    """
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        try:
            conn.connect()
        except OSError:
            return None
        try:
            conn.request("GET", "/")
            with conn.getresponse() as response:
                # The title sits near the top; no need to read a large page to the end.
                head = response.read(16384)
        except (OSError, http.client.HTTPException):
            return "other"
        if response.status == 200 and _VISDOM_TITLE.search(head):
            return "visdom"
        return "other"
    finally:
        conn.close()


def _is_running(pid: int) -> bool:
    """Whether ``pid`` is a process that has not finished exiting."""
    proc = _launched.get(pid)
    if proc is not None:
        # waitpid reports the exit only once every thread is gone and the port is free.
        if proc.poll() is None:
            return True
        del _launched[pid]
        return False
    # A server trainviz launched from another process: its main thread can show as a
    # zombie while other threads still hold the listening socket, so look at each thread.
    try:
        threads = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return False
    return any(_thread_state(pid, tid) not in ("Z", "X", "") for tid in threads)


def _thread_state(pid: int, tid: str) -> str:
    """The state letter of one thread of ``pid`` ("" when it is gone)."""
    try:
        stat = Path(f"/proc/{pid}/task/{tid}/stat").read_text()
    except OSError:
        return ""
    # The state follows the parenthesised command name, which may hold spaces.
    return stat.rsplit(")", 1)[1].split()[0]


def _is_visdom_process(pid: int) -> bool:
    """Whether ``pid`` is still a running trainviz visdom server (guards against pid reuse)."""
    try:
        args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return SERVER_MODULE.encode() in args and _is_running(pid)


def _our_pid(port: int) -> Optional[int]:
    """The pid of the running server trainviz started on ``port``, or None."""
    try:
        pid = int(pid_path(port).read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if _is_visdom_process(pid) else None


def _last_log_line(path: Path) -> str:
    """The last non-empty line of a log file, or a note that it is empty."""
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return "no log output"
    for line in reversed(lines):
        if line.strip():
            return line.strip()
    return "no log output"


def _check_env_path(env_path: Path) -> Path:
    """Create ``env_path`` if needed and make sure the server can write there."""
    env_path = env_path.expanduser().resolve()
    try:
        env_path.mkdir(parents=True, exist_ok=True)
        # A real write, because access() says yes to root for read-only folders too.
        with tempfile.TemporaryFile(dir=env_path):
            pass
    except OSError as err:
        raise ServerError(
            f"--env-path {env_path} is not a writable folder ({err.strerror or err}); "
            "pick a folder you can write to"
        ) from None
    return env_path


def _login_env(env: dict[str, str]) -> dict[str, str]:
    """Environment that lets visdom's -enable_login read credentials without prompting.

    visdom signs its login cookie with ~/.visdom/COOKIE_SECRET; whoever can read that
    file can forge a login. visdom would write it readable by everyone (0644, in a 0755
    folder), so it is written here first, 0600 in a 0700 folder, from $VISDOM_COOKIE or
    a fresh random secret; one found readable by others is made private.
    """
    missing = [name for name in _CREDENTIAL_VARS if not os.environ.get(name)]
    if missing:
        raise ServerError(
            f"--public needs a login: set {' and '.join(missing)} in the environment "
            "(the server then asks for them in the browser)"
        )
    # Without this visdom 0.2.4 prompts on stdin for username, password and cookie secret.
    env = {**env, "VISDOM_USE_ENV_CREDENTIALS": "1"}
    visdom_home = Path.home() / ".visdom"
    secret = visdom_home / "COOKIE_SECRET"
    try:
        visdom_home.mkdir(mode=0o700, parents=True, exist_ok=True)
        for path, private in ((visdom_home, 0o700), (secret, 0o600)):
            if path.exists() and path.stat().st_mode & 0o077:
                os.chmod(path, path.stat().st_mode & private)
        if not secret.exists():
            # O_EXCL: of two servers starting at once, the first one's secret is the one kept.
            fd = os.open(secret, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(env.get("VISDOM_COOKIE") or secrets.token_hex(32))
    except FileExistsError:
        pass
    except OSError as err:
        raise ServerError(f"cannot keep the login secret {secret} private ({err.strerror}); "
                          "it must be readable by you alone") from None
    return env


def _terminate(pid: int, grace_s: float = 5.0) -> None:
    """SIGTERM ``pid``, then SIGKILL if it is still alive after ``grace_s`` seconds."""
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 2.0)):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            if not _is_running(pid):
                return
            time.sleep(0.05)


def start(
    port: int = DEFAULT_PORT,
    env_path: Optional[Path] = None,
    public: bool = False,
    allow_hosts: tuple[str, ...] = (),
    timeout: float = 30.0,
    echo: Callable[[str], None] = print,
) -> ServerInfo:
    """Make sure a visdom server answers on ``port``, starting one if needed.

    A visdom server already answering there is reused. Otherwise the front-end
    files are installed (once, see :mod:`viz.server.frontend`) and
    ``python -m viz.server.visdom_server`` is launched in its own session, detached from
    this process, with its output in :func:`log_path`. Two calls at once start
    one server: the second waits for the first and reuses its server.

    Args:
        port: TCP port to serve on.
        env_path: folder where visdom saves environments (visdom's default,
            ``~/.visdom``, when None); created if missing.
        public: listen on every interface with visdom's login enabled, and accept
            this machine's own names in the Host header. Needs ``VISDOM_USERNAME``
            and ``VISDOM_PASSWORD`` in the environment. Without it the server only
            accepts connections from this machine.
        allow_hosts: host names besides the loopback ones that browsers may use to
            reach the server (a name in /etc/hosts, a tunnel's name).
        timeout: seconds to wait for the new server to answer.
        echo: receives progress lines (the one-time front-end download).

    Raises:
        ServerError: the port is taken by something else, the login variables
            or env_path are unusable, or the server did not come up.

    Example::

        info = start(8097, env_path=Path("runs/visdom"))
        print(f"open {info.url}")
    """
    env = dict(os.environ)
    if public:
        env = _login_env(env)
    cmd = [sys.executable, "-m", SERVER_MODULE, "-port", str(port)]
    if env_path is not None:
        cmd += ["-env_path", str(_check_env_path(Path(env_path)))]
    cmd += ["-enable_login", "--public"] if public else ["-bind_local"]
    for name in allow_hosts:
        cmd += ["--allow-host", name]
    with locked(lock_path(port)):
        return _launch(port, cmd, env, timeout, echo)


def _launch(port: int, cmd: list[str], env: dict[str, str], timeout: float,
            echo: Callable[[str], None]) -> ServerInfo:
    """Reuse the visdom server on ``port`` or run ``cmd`` and wait for it; the caller holds the lock."""
    found = probe(port)
    if found == "visdom":
        return ServerInfo(port, None, url_for(port), log_path(port), reused=True)
    if found == "other":
        raise ServerError(
            f"port {port} is in use by something that is not a visdom server; "
            "choose another with --port"
        )
    try:
        frontend.install(echo=echo)
    except frontend.FrontendError as err:
        raise ServerError(str(err)) from None

    log = log_path(port)
    # Unbuffered, so the log already holds the reason when the server dies at start.
    env["PYTHONUNBUFFERED"] = "1"
    with open(log, "wb") as log_file:
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    _launched[proc.pid] = proc
    with atomic_path(pid_path(port)) as partial:
        partial.write_text(f"{proc.pid}\n")

    # Wait for the server to answer, giving up if it dies or takes too long.
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            _launched.pop(proc.pid, None)
            pid_path(port).unlink(missing_ok=True)
            raise ServerError(
                f"visdom server exited at start (code {proc.returncode}): "
                f"{_last_log_line(log)} (log: {log})"
            )
        if probe(port, timeout=1.0) == "visdom":
            return ServerInfo(port, proc.pid, url_for(port), log, reused=False)
        time.sleep(0.2)
    _terminate(proc.pid)
    pid_path(port).unlink(missing_ok=True)
    raise ServerError(
        f"visdom server did not answer on port {port} within {timeout:g} s: "
        f"{_last_log_line(log)} (log: {log})"
    )


def stop(port: int = DEFAULT_PORT) -> bool:
    """Stop the visdom server trainviz started on ``port``.

    Only the process named in the pid file is signalled, and only while it is
    still a trainviz visdom server process: SIGTERM, then SIGKILL after about
    5 s. A server trainviz did not start is left alone; a pid file naming a
    process that is gone is removed.

    Returns:
        True when a server was stopped, False when there was none of ours.

    Example::

        if not stop(8097):
            print("nothing to stop")
    """
    with locked(lock_path(port)):
        pid = _our_pid(port)
        if pid is not None:
            _terminate(pid)
        pid_path(port).unlink(missing_ok=True)
    return pid is not None


def status(port: int = DEFAULT_PORT) -> str:
    """One line saying whether a visdom server runs on ``port`` and who started it.

    Example::

        print(status(8097))
    """
    pid = _our_pid(port)
    found = probe(port)
    if found == "visdom" and pid is not None:
        return f"visdom server running at {url_for(port)} (pid {pid}, log {log_path(port)})"
    if found == "visdom":
        return f"visdom server running at {url_for(port)} (not started by trainviz)"
    if pid is not None:
        return f"visdom server pid {pid} is not answering on port {port} (log {log_path(port)})"
    if found == "other":
        return f"visdom server not running; port {port} is in use by something else"
    return f"visdom server not running on port {port}"


port_option = click.option(
    "--port",
    type=click.IntRange(1, 65535),
    default=DEFAULT_PORT,
    show_default=True,
    envvar="VISDOM_PORT",
    help="Port of the visdom server (env: VISDOM_PORT).",
)


@click.group("server")
def server_cli() -> None:
    """Start, stop or check the local visdom server that shows training live."""


@server_cli.command("start")
@port_option
@click.option(
    "--env-path",
    type=click.Path(path_type=Path),
    default=None,
    help="Folder where visdom saves environments (default: ~/.visdom).",
)
@click.option(
    "--public",
    is_flag=True,
    help="Listen on all interfaces with login (needs VISDOM_USERNAME, VISDOM_PASSWORD).",
)
@click.option(
    "--allow-host",
    "allow_hosts",
    multiple=True,
    metavar="NAME",
    help="A host name browsers may use besides localhost and 127.0.0.1 (repeatable).",
)
def start_command(port: int, env_path: Optional[Path], public: bool, allow_hosts: tuple[str, ...]) -> None:
    """Start a visdom server, or reuse the one already on the port.

    The server refuses requests from other web pages (an Origin header other than its
    own address) and requests addressed to a host name it does not know (DNS
    rebinding): see --allow-host.
    """
    try:
        info = start(port=port, env_path=env_path, public=public, allow_hosts=allow_hosts, echo=_echo_err)
    except ServerError as err:
        raise click.ClickException(str(err)) from None
    if info.reused:
        click.echo(f"visdom server already running at {info.url} (reused)")
    else:
        click.echo(f"visdom server running at {info.url} (pid {info.pid}, log {info.log_path})")


@server_cli.command("setup")
def setup_command() -> None:
    """Install visdom's front-end files from the npm registry so the server starts offline."""
    try:
        frontend.install(echo=_echo_err)
    except frontend.FrontendError as err:
        raise click.ClickException(str(err)) from None
    click.echo(f"visdom front-end ready in {frontend.static_dir()}")


@server_cli.command("stop")
@port_option
def stop_command(port: int) -> None:
    """Stop the visdom server trainviz started on the port."""
    if stop(port):
        click.echo(f"visdom server on port {port} stopped")
    else:
        click.echo(f"no visdom server started by trainviz on port {port}")


@server_cli.command("status")
@port_option
def status_command(port: int) -> None:
    """Say whether a visdom server runs on the port."""
    click.echo(status(port))


def _echo_err(line: str) -> None:
    """Progress output for the CLI, on stderr so stdout stays one line."""
    click.echo(line, err=True)
