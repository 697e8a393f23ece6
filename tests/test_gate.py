"""The server trainviz starts refuses other web pages: real requests against a real server.

A page on another site can make the user's browser open a websocket or send a POST to
``localhost``; a DNS-rebinding page reaches it under a name of its own. Those requests
carry a foreign ``Origin`` or ``Host`` header, and the gate answers them with 403
before visdom sees them. The browser on the dashboard's own address, and trainviz's
sender (which sends no Origin), keep working.
"""

from __future__ import annotations

import http.client
import json
import threading

import pytest
import websocket

from tests.conftest import free_port
from viz.dashboard.client import connect
from viz.dashboard.render import Renderer
from viz.server import frontend
from viz.server import manager as server
from viz.server.visdom_server import Gate, host_name, is_loopback

EVIL = "http://evil.example"
WINDOW = {"data": [{"content": "<img src=x onerror=alert(1)>", "type": "text"}], "win": "note",
          "eid": "main", "opts": {}, "layout": {}}


@pytest.fixture(scope="module")
def port(tmp_path_factory):
    """A real trainviz server on a free port, allowing one extra host name; stopped by pid."""
    if not frontend.is_ready():
        pytest.skip("visdom front-end files not installed")
    root = tmp_path_factory.mktemp("gate")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TRAINVIZ_CACHE", str(root / "cache"))
        patch.setenv("HOME", str(root))
        chosen = free_port()
        server.start(port=chosen, env_path=root / "envs", allow_hosts=("dashboard.lan",), echo=lambda line: None)
        try:
            yield chosen
        finally:
            server.stop(chosen)


def request(port: int, method: str, path: str, headers: dict, body: str | None = None) -> tuple[int, str]:
    """Send one HTTP request to the server with exactly these headers."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
        for name, value in headers.items():
            conn.putheader(name, value)
        data = body.encode() if body is not None else None
        if data is not None:
            conn.putheader("Content-Length", str(len(data)))
        conn.endheaders(data)
        response = conn.getresponse()
        return response.status, response.read().decode(errors="replace")
    finally:
        conn.close()


def window_exists(port: int, win: str, env: str = "main") -> bool:
    status, body = request(port, "POST", "/win_exists", {"Host": f"127.0.0.1:{port}"},
                           json.dumps({"win": win, "eid": env}))
    assert status == 200, body
    return body == "true"


def test_a_cross_origin_post_is_refused_and_changes_nothing(port):
    status, body = request(port, "POST", "/events", {"Host": f"localhost:{port}", "Origin": EVIL}, json.dumps(WINDOW))
    assert status == 403 and "evil.example" in body
    assert not window_exists(port, "note")


@pytest.mark.parametrize("method", ["DELETE", "PUT", "GET"])
def test_other_methods_from_another_origin_are_refused(port, method):
    status, _ = request(port, method, "/env/main", {"Host": f"localhost:{port}", "Origin": EVIL})
    assert status == 403


def test_a_cross_origin_delete_of_an_environment_is_refused(port):
    vis = connect("http://127.0.0.1", port, "keep")
    vis.text("still here", win="kept", env="keep")
    status, _ = request(port, "POST", "/delete_env", {"Host": f"localhost:{port}", "Origin": EVIL},
                        json.dumps({"eid": "keep"}))
    assert status == 403
    assert window_exists(port, "kept", env="keep")


def test_a_cross_origin_websocket_is_refused(port):
    with pytest.raises(websocket.WebSocketBadStatusException) as refused:
        websocket.create_connection(f"ws://127.0.0.1:{port}/socket", origin=EVIL, timeout=10)
    assert refused.value.status_code == 403


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1"])
def test_the_dashboards_own_page_and_socket_work(port, host):
    origin = f"http://{host}:{port}"
    status, body = request(port, "GET", "/", {"Host": f"{host}:{port}"})
    assert status == 200 and "<title>visdom</title>" in body
    socket = websocket.create_connection(f"ws://{host}:{port}/socket", origin=origin, timeout=10)
    try:
        assert json.loads(socket.recv())["command"] == "register"
    finally:
        socket.close()
    # The page's own POSTs carry its origin and pass.
    status, _ = request(port, "POST", "/env/main", {"Host": f"{host}:{port}", "Origin": origin},
                        json.dumps({"eid": "main"}))
    assert status == 200


def test_a_foreign_host_is_refused_and_an_allowed_one_served(port):
    assert request(port, "GET", "/", {"Host": f"evil.example:{port}"})[0] == 403
    status, body = request(port, "POST", "/events", {"Host": f"evil.example:{port}"}, json.dumps(WINDOW))
    assert status == 403 and not window_exists(port, "note")
    assert request(port, "GET", "/", {"Host": f"dashboard.lan:{port}"})[0] == 200


def test_trainviz_sender_sends_no_origin_and_is_served(port):
    vis = connect("http://127.0.0.1", port, "sender")
    vis.text("from training", win="pane", env="sender")
    assert window_exists(port, "pane", env="sender")


def test_runs_drawing_into_compare_at_once_keep_every_trace(port):
    """Eight runs add their curve to the same, new compare window at the same moment."""
    barrier = threading.Barrier(8)
    errors = []

    def draw(i: int) -> None:
        try:
            renderer = Renderer(connect("http://127.0.0.1", port, f"run-{i}"), f"run-{i}")
            barrier.wait()
            renderer.render([{"kind": "scalars", "win": "compare_acc", "env": "race", "x": 1,
                              "values": {f"run-{i}": 0.5 + i / 100}}])
        except Exception as err:  # noqa: BLE001 (reported below, with the thread's run)
            errors.append((i, err))

    threads = [threading.Thread(target=draw, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    vis = connect("http://127.0.0.1", port, "race")
    windows = json.loads(vis.get_window_data(env="race"))
    names = sorted(trace["name"] for trace in windows["compare_acc"]["content"]["data"])
    assert names == sorted(f"run-{i}" for i in range(8))


# --- the gate's rules, without a server -------------------------------------------------


class Request:
    def __init__(self, host: str, origin: str | None = None):
        self.host, self.headers = host, {"Origin": origin} if origin else {}


@pytest.mark.parametrize("header, name", [("localhost:8097", "localhost"), ("[::1]:8097", "::1"),
                                          ("127.0.0.1", "127.0.0.1"), ("Dashboard.LAN:80", "dashboard.lan")])
def test_host_name_drops_the_port_and_brackets(header, name):
    assert host_name(header) == name


def test_loopback_names_and_addresses():
    assert all(is_loopback(name) for name in ("localhost", "127.0.0.1", "127.8.9.1", "::1"))
    assert not any(is_loopback(name) for name in ("evil.example", "10.0.0.1", "localhost.evil.example", ""))


def test_gate_rules():
    gate = Gate({"Dashboard.lan"})
    assert gate.refusal(Request("localhost:8097")) is None
    assert gate.refusal(Request("localhost:8097", "http://localhost:8097")) is None
    assert gate.refusal(Request("dashboard.lan:8097", "http://dashboard.lan:8097")) is None
    assert "evil.example" in gate.refusal(Request("evil.example:8097"))
    assert "not allowed" in gate.refusal(Request("localhost:8097", "http://localhost:9999"))
    assert gate.refusal(Request("localhost:8097", "null")) is not None  # sandboxed frames and files


@pytest.mark.parametrize("host", ["127.evil.example", "127.0.0.1.evil.example", "127.1.evil.example",
                                  "localhost.evil.example", "evildashboard.lan", "dashboard.lan.evil.example"])
def test_names_that_only_look_like_allowed_ones_are_refused(host):
    """A DNS-rebinding page picks its own name: one that starts like an address or ends like an allowed name."""
    assert not is_loopback(host)
    for header in (host, f"{host}:8097"):
        assert f"Host {header!r} is not allowed" in Gate({"dashboard.lan"}).refusal(Request(header))
