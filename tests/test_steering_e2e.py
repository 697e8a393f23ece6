"""End to end: a running trainer steered from its control pane by clicks in Chromium, and the
pane's listener against a real visdom server: what it takes, what it drops, a server that
dies and comes back.

Events reach the listener the way the page sends them: ``forward_to_vis`` on the page's
own socket, which the server passes to every Python client.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import write_idx_dir
from test_dashboard_e2e import (ARTIFACTS, HOST, REPO, browser, count_lines, only_run, start_server,  # noqa: F401 (fixtures)
                                visdom_port, wait_for, window_data)

import viz
from viz.api import READ_EVERY
from viz.dashboard.controls import CONTROLS, PaneState, Request, rows

pytestmark = pytest.mark.slow

ROW = {action: i for i, (action, _) in enumerate(rows(PaneState(lr=0.1, refresh=False, fork=False)))}


class Page:
    """A socket like the dashboard page's own, sending what a click on a property sends."""

    def __init__(self, port: int):
        import websocket

        self.socket = websocket.create_connection(f"ws://127.0.0.1:{port}/socket", timeout=10)

    def click(self, env: str, row: int, value=None, target: str = CONTROLS) -> None:
        packet = {"eid": env, "target": target, "event_type": "PropertyUpdate", "propertyId": row, "value": value}
        self.socket.send(json.dumps({"cmd": "forward_to_vis", "data": packet}))

    def close(self) -> None:
        self.socket.close()


def requests_of(run: viz.Run, lr: float, count: int, timeout: float = 10) -> list[Request]:
    """The next ``count`` requests the run's pane delivers (what ``run.controls`` returns meanwhile)."""
    found, deadline = [], time.monotonic() + timeout
    while len(found) < count and time.monotonic() < deadline:
        found += run.controls(lr)
        time.sleep(0.05)
    return found


def shown(port: int, env: str, windows: list[str], timeout: float = 15) -> None:
    """Wait until the server holds these windows of ``env``."""
    deadline = time.monotonic() + timeout
    while not set(windows) <= set(window_data(port, env)):
        assert time.monotonic() < deadline, f"{env} has no {windows} after {timeout} s"
        time.sleep(0.1)


def pane_says(port: int, env: str, note: str, timeout: float = 10) -> bool:
    """Whether the pane's last-request row on the server comes to read ``note`` (the sender delivers it soon)."""
    deadline = time.monotonic() + timeout
    while window_data(port, env)[CONTROLS]["content"][ROW["note"]]["value"] != note:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def test_the_pane_takes_only_its_own_events_and_outlives_its_server(tmp_path):
    running = start_server(tmp_path / "server")
    page = None
    try:
        options = {"out": tmp_path / "runs", "server": HOST, "port": running.port}
        ours, theirs = viz.init(name="ours", **options), viz.init(name="theirs", **options)
        for run in (ours, theirs):
            run.log({"train/loss": 1.0}, step=1)
            assert run.controls(0.1) == []
            assert run._listener.connected.wait(10)
        time.sleep(READ_EVERY)
        ours.log({"train/loss": 0.95}, step=1)  # the values logged are read back and drawn now
        for run in (ours, theirs):  # the page clicks on windows it shows
            shown(running.port, run.env, [CONTROLS, "log:loss"] if run is ours else [CONTROLS])
        page = Page(running.port)
        page.click(theirs.env, ROW["halve"])  # another run's pane
        page.click(ours.env, ROW["halve"], target="log:loss")  # another window of ours
        page.click(ours.env, ROW["lr"], "abc")  # a value that is no rate
        page.click(ours.env, ROW["lr"], "0.03")
        assert requests_of(ours, 0.1, 1) == [Request("lr", 0.03)]
        assert requests_of(theirs, 0.1, 1) == [Request("lr", 0.05)]
        time.sleep(0.5)
        assert ours.controls(0.03) == [] and theirs.controls(0.05) == []
        assert pane_says(running.port, ours.env, "step 1: learning rate set to 0.03")
        control = [json.loads(line) for line in (ours.dir.path / "metrics.jsonl").read_text().splitlines()
                   if '"control"' in line]
        assert control == [{"kind": "control", "step": 1, "action": "lr", "value": 0.03}]

        page.close()
        page = None
        running.stop()
        ours.log({"train/loss": 0.9}, step=2)
        assert ours.controls(0.03) == []  # no server: nothing to hear, nothing blocks
        running.start("envs-2")
        assert ours._listener.connected.wait(10), "the listener did not call the restarted server"
        ours.log({"train/loss": 0.8}, step=3)  # the sender finds the server back and rebuilds the environment
        shown(running.port, ours.env, [CONTROLS])
        page = Page(running.port)
        page.click(ours.env, ROW["stop"])
        assert requests_of(ours, 0.03, 1) == [Request("stop")]
        listener = ours._listener
        ours.finish()
        theirs.finish()
        listener._thread.join(5)
        assert not listener._thread.is_alive()
    finally:
        if page is not None:
            page.close()
        running.stop()


# Whether a property of a pane on the page shows the text (the pane's fields are inputs).
PANE_SAYS = """text => Array.from(document.querySelectorAll('.window input'))
    .some(field => field.value.includes(text))"""


def test_a_click_in_chromium_steers_a_running_trainer(visdom_port, browser, tmp_path):  # noqa: F811
    idx, out = write_idx_dir(tmp_path / "idx", n_train=2000), tmp_path / "runs"
    with open(tmp_path / "stdout", "w") as stdout, open(tmp_path / "stderr", "w") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-m", "trainers", "mlp", "--data-dir", str(idx), "--epochs", "200", "--batch-size", "20",
             "--lr", "0.1", "--schedule", "constant", "--port", str(visdom_port), "--server", HOST, "--out", str(out)],
            cwd=REPO, stdout=stdout, stderr=stderr, env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        wait_for(proc, lambda: out.is_dir() and any(out.iterdir()), "a run folder", timeout=120)
        run = only_run(out)
        wait_for(proc, lambda: count_lines(run / "metrics.jsonl", '"kind": "epoch"') >= 1, "the first epoch",
                 timeout=120)
        env = json.loads((run / "config.json").read_text())["env"]
        page = browser.new_page(viewport={"width": 1600, "height": 1000})
        page.goto(f"http://127.0.0.1:{visdom_port}/env/{env}")
        pane = page.locator(".window", has_text="learning rate (type, then Enter)")
        pane.get_by_role("button", name="x0.5").click()
        wait_for(proc, lambda: count_lines(run / "metrics.jsonl", '"action": "lr"') >= 1, "the rate's change")
        page.wait_for_function(PANE_SAYS, arg="learning rate set to 0.05", timeout=20_000)

        field = pane.locator("input").first
        field.click()
        field.fill("0")
        field.press("Enter")
        page.wait_for_function(PANE_SAYS, arg="refused: '0' is not a learning rate above 0", timeout=20_000)
        ARTIFACTS.mkdir(exist_ok=True)
        pane.screenshot(path=str(ARTIFACTS / "control-pane.png"))

        pane.get_by_role("button", name="stop (resumable)").click()
        assert proc.wait(timeout=60) == 0, (tmp_path / "stderr").read_text()
        page.close()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert json.loads((run / "status.json").read_text())["status"] == "stopped"
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    (change,) = [r for r in metrics if r.get("action") == "lr"]
    assert change["value"] == 0.05
    assert [r["action"] for r in metrics if r["kind"] == "control"] == ["lr", "stop"]
    assert all(r["lr"] == 0.05 for r in metrics if r["kind"] == "epoch" and r["step"] > change["step"])
    optimizer = torch.load(run / "checkpoint.pt", weights_only=True)["optimizer"]
    assert [group["lr"] for group in optimizer["param_groups"]] == [0.05]
    assert "refused: '0' is not a learning rate above 0" in (tmp_path / "stdout").read_text() \
        + (tmp_path / "stderr").read_text()
