"""Steering a run from its control pane, and forking a run from an epoch: our own logic, in process.

The pane's requests reach a run through ``Steering.inbox``; here an optimizer puts them
there after an exact number of steps, as the pane's listener would between two steps.
The listener, the server and a click in Chromium are in test_steering_e2e.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.test_bad_input import assert_one_line_error
from tests.test_reliability import records
from trainers.cli import cli
from trainers.core.run import RunDir, RunHooks
from trainers.core.schedule import Schedule
from trainers.core.steering import Pilot, Steering
from viz.dashboard.controls import (CONTROLS, MAX_RATE, PaneState, Request, properties, request_in,
                                    request_of, rows)

STEPS = 10  # per epoch: 600 training images in batches of 60
ARGS = ["--epochs", "3", "--batch-size", "60", "--seed", "3", "--momentum", "0.9", "--schedule", "cosine",
        "--no-viz"]


def event(index, value=None, env="run-env", target=CONTROLS, event_type="PropertyUpdate", **more) -> dict:
    """A property-pane event as visdom's server forwards it."""
    return {"eid": env, "target": target, "event_type": event_type, "propertyId": index, "value": value, **more}


STATE = PaneState(lr=0.1)
ROW = {action: i for i, (action, _) in enumerate(rows(STATE))}


@pytest.mark.parametrize("sent, expected", [
    (event(ROW["lr"], "0.05"), Request("lr", 0.05)),
    (event(ROW["lr"], " 2e-3 "), Request("lr", 0.002)),
    (event(ROW["halve"]), Request("lr", 0.05)),
    (event(ROW["double"]), Request("lr", 0.2)),
    (event(ROW["pause"]), Request("pause")),
    (event(ROW["stop"]), Request("stop")),
    (event(ROW["refresh"]), Request("refresh")),
    (event(ROW["fork"]), Request("fork")),
    (event(ROW["lr"], "abc"), Request("invalid", text="'abc' is not a number")),
    (event(ROW["lr"], "0"), Request("invalid", text="'0' is not a learning rate above 0")),
    (event(ROW["lr"], "-0.1"), Request("invalid", text="'-0.1' is not a learning rate above 0")),
    (event(ROW["lr"], "nan"), Request("invalid", text="'nan' is not a learning rate above 0")),
    (event(ROW["lr"], "inf"), Request("invalid", text="'inf' is not a learning rate above 0")),
    (event(ROW["lr"], "1e9"), Request("invalid", text=f"1e+09 is above the largest learning rate, {MAX_RATE:g}")),
    (event(ROW["lr"], "<b>0.1</b>" * 10), Request("invalid", text=f"{('<b>0.1</b>' * 10)[:40]!r} is not a number")),
    (event(ROW["halve"], env="another-run"), None),
    (event(ROW["halve"], target="train_loss"), None),
    (event(ROW["halve"], event_type="Click"), None),
    (event(ROW["note"], "typed"), None),
    (event(len(ROW)), None),
    (event(-1), None),
    (event(True), None),
    (event("2"), None),
    ("not an event", None),
    (["eid", "run-env"], None),
], ids=lambda value: None if isinstance(value, (dict, str, list)) or value is None else value.action)
def test_only_this_runs_pane_makes_requests_and_bad_values_are_answered(sent, expected):
    assert request_of(sent, "run-env", STATE) == expected


@pytest.mark.parametrize("message", ["[" * 100_000, "{", b"\xff\xfe", "", "null"])
def test_a_socket_message_that_is_no_event_is_dropped_and_the_next_one_is_taken(message):
    """Whatever another client sends through the server (nested past Python's recursion too) asks nothing."""
    assert request_in(message, "run-env", STATE) is None
    assert request_in(json.dumps(event(ROW["stop"])), "run-env", STATE) == Request("stop")


def test_a_rate_of_0_is_shown_and_its_buttons_ask_for_a_typed_rate():
    """A warm-up's first step runs at 0: x0.5 and x2 of it would be 0 again."""
    warm_up = PaneState(lr=0.0)
    assert rows(warm_up)[ROW["lr"]][1]["value"] == "0"
    for button in ("halve", "double"):
        assert request_of(event(ROW[button]), "run-env", warm_up) == \
            Request("invalid", text="a rate of 0 halved or doubled is 0: type the rate to set")
    assert request_of(event(ROW["lr"], "0.01"), "run-env", warm_up) == Request("lr", 0.01)


def test_pause_and_continue_follow_the_label_the_page_showed_when_clicked():
    """Two clicks on pause before the pane is redrawn are two pauses, not a pause and a continue."""
    shown_paused = {"content": properties(PaneState(lr=0.1, paused=True))}
    assert request_of(event(ROW["pause"], pane_data=shown_paused), "run-env", STATE) == Request("continue")
    shown_going = {"content": properties(STATE)}
    assert request_of(event(ROW["pause"], pane_data=shown_going), "run-env", PaneState(0.1, paused=True)) \
        == Request("pause")


def test_a_change_of_rate_scales_the_schedule_from_its_step_on():
    steering = Steering(Schedule("cosine", 0.1, 2, 10))
    planned = [steering(step) for step in range(20)]
    assert steering.set_rate(5, planned[5] / 2) == pytest.approx(0.5)
    assert [steering(step) for step in range(5)] == planned[:5]
    assert [steering(step) for step in range(5, 20)] == pytest.approx([rate / 2 for rate in planned[5:]])
    steering.set_rate(8, planned[8])  # a later change replaces the factor from its step on
    assert [steering(step) for step in range(8, 20)] == pytest.approx(planned[8:])
    steering.set_rate(5, planned[5] * 3)  # a change at an earlier step drops the changes after it
    assert steering.changes == [[5, pytest.approx(3.0)]]
    assert Steering(Schedule("cosine", 0.1, 2, 10), steering.changes)(12) == pytest.approx(3 * planned[12])
    with pytest.raises(ValueError, match="rate is 0 at step 20"):
        steering.set_rate(20, 0.1)


def pilot_of(steering: Steering, recorded: list, shown: list, **more) -> Pilot:
    options = {"refresh": lambda step: None, "fork": lambda: "fork", "stop_signal": lambda: False, **more}
    return Pilot(steering, record=recorded.append, show=shown.append, **options)


def test_a_pilot_acts_between_steps_and_a_trial_offers_prune():
    class Pruned(Exception):
        pass

    recorded, shown = [], []
    steering = Steering(Schedule("constant", 0.1, 1, 10))
    pilot = pilot_of(steering, recorded, shown, prune=Pruned)
    assert ("prune" in [action for action, _ in rows(pilot.state)])
    for request in (Request("lr", 0.05), Request("invalid", text="'x' is not a number"), Request("continue")):
        steering.inbox.put(request)
    assert pilot(4) is False
    assert recorded == [{"kind": "control", "step": 4, "action": "lr", "value": 0.05, "factor": pytest.approx(0.5)}]
    assert [state.note for state in shown] == ["step 4: learning rate set to 0.05", "refused: 'x' is not a number"]
    assert steering(3) == 0.1 and steering(4) == pytest.approx(0.05) and shown[-1].lr == 0.05
    steering.inbox.put(Request("prune"))
    with pytest.raises(Pruned, match="step 6"):
        pilot(6)
    assert recorded[-1] == {"kind": "control", "step": 6, "action": "prune", "value": None}
    assert Request("prune") not in [request_of(event(i), "run-env", PaneState(0.1)) for i in range(len(ROW))]


def test_a_paused_pilot_waits_until_continue_and_counts_the_pause():
    recorded, shown = [], []
    steering = Steering(Schedule("constant", 0.1, 1, 10))
    pilot = pilot_of(steering, recorded, shown)
    steering.inbox.put(Request("pause"))
    started = time.perf_counter()
    threading.Timer(0.5, steering.inbox.put, [Request("continue")]).start()
    assert pilot(2) is False
    waited = time.perf_counter() - started
    assert waited >= 0.45 and pilot.paused_seconds == pytest.approx(waited, abs=0.05)  # the timer's clock may differ
    assert [r["action"] for r in recorded] == ["pause", "continue"]
    steering.inbox.put(Request("pause"))
    steering.inbox.put(Request("stop"))  # a stop while paused ends the pause and the run
    assert pilot(3) is True and not pilot.state.paused


class Steered:
    """An optimizer that puts requests into the run's inbox right after given steps, as the pane would."""

    def __init__(self, optimizer, inbox, requests: dict[int, list]):
        self.optimizer, self.inbox, self.requests, self.taken = optimizer, inbox, requests, 0

    def __getattr__(self, name):
        return getattr(self.optimizer, name)

    def step(self) -> None:
        self.optimizer.step()
        self.taken += 1
        for request in self.requests.get(self.taken, []):
            request = request() if callable(request) else request
            self.inbox.put(request)


@pytest.fixture
def steer(monkeypatch):
    """``steer(trainer, {step: [Request, ...]})``: the next runs of that trainer get those requests."""
    from trainers.catalog import TRAINERS

    def arrange(trainer: str, requests: dict[int, list]) -> dict:
        inboxes = {}
        monkeypatch.setattr(RunHooks, "steer", lambda self, steering: inboxes.update(inbox=steering.inbox))
        build = TRAINERS[trainer].build()  # imports the trainer's module
        module = sys.modules[TRAINERS[trainer].module]

        def steered(config, device):
            parts = build(config, device)
            parts.optimizer = Steered(parts.optimizer, Inbox(inboxes), requests)
            return parts

        monkeypatch.setattr(module, "build", steered)
        return inboxes

    return arrange


class Inbox:
    """The inbox of the run being built, known once training starts."""

    def __init__(self, inboxes: dict):
        self.inboxes = inboxes

    def put(self, request) -> None:
        self.inboxes["inbox"].put(request)


def only_run(out: Path) -> Path:
    (run,) = [path for path in out.iterdir() if path.is_dir()]
    return run


def train(trainer: str, idx_dir: Path, out: Path, *extra: str):
    dropout = ["--dropout", "0.2"] if trainer.startswith("mlp") else []  # a random state the resume must keep
    return CliRunner().invoke(cli, [trainer, "--data-dir", str(idx_dir), *ARGS, *dropout, "--out", str(out), *extra])


@pytest.mark.parametrize("trainer", ["mlp", "scratch-softmax"])
def test_a_run_steered_stopped_from_the_pane_and_resumed_ends_like_one_steered_uninterrupted(
        trainer, steer, idx_dir, tmp_path):
    change = [Request("lr", 0.03)]
    steer(trainer, {4: change})
    whole = train(trainer, idx_dir, tmp_path / "whole")
    assert whole.exit_code == 0, whole.output
    steer(trainer, {4: change, STEPS + 3: [Request("stop")]})
    stopped = train(trainer, idx_dir, tmp_path / "stopped")
    assert stopped.exit_code == 0, stopped.output
    run = only_run(tmp_path / "stopped")
    assert f"stopped from the dashboard at epoch 2, step {STEPS + 3}" in stopped.output
    assert f"--resume {run}" in stopped.output
    assert json.loads((run / "status.json").read_text())["status"] == "stopped"
    steer(trainer, {})
    resumed = CliRunner().invoke(cli, [trainer, "--resume", str(run), "--no-viz"])
    assert resumed.exit_code == 0, resumed.output

    steered = records(only_run(tmp_path / "whole"))
    (control,) = [r for r in steered if r["kind"] == "control"]
    assert (control["step"], control["action"], control["value"]) == (4, "lr", 0.03)
    assert [r for r in records(run) if r.get("action") != "stop"] == steered
    assert [r["step"] for r in records(run) if r.get("action") == "stop"] == [STEPS + 3]
    table = CliRunner().invoke(cli, ["runs", str(tmp_path / "whole"), "--json"])
    assert json.loads(table.output)[0]["lineage"] == "steered"


def test_a_rate_set_on_a_constant_schedule_is_the_optimizers_rate_from_that_step(steer, idx_dir, tmp_path):
    import torch

    steer("mlp", {STEPS + 2: [Request("lr", 0.05)]})
    result = train("mlp", idx_dir, tmp_path / "runs", "--schedule", "constant", "--lr", "0.1")
    assert result.exit_code == 0, result.output
    run = only_run(tmp_path / "runs")
    assert [r["lr"] for r in records(run) if r["kind"] == "epoch"] == [0.1, 0.05, 0.05]
    optimizer = torch.load(run / "checkpoint.pt", weights_only=True)["optimizer"]
    assert [group["lr"] for group in optimizer["param_groups"]] == [0.05]


def test_a_pause_from_the_pane_is_left_out_of_the_epochs_seconds(steer, idx_dir, tmp_path):
    pause = 2.0
    inboxes = steer("mlp", {STEPS + 3: [Request("pause"), lambda: continue_later(inboxes, pause)]})
    started = time.perf_counter()
    result = train("mlp", idx_dir, tmp_path / "runs")
    assert result.exit_code == 0, result.output
    wall = time.perf_counter() - started
    assert wall > pause
    run = only_run(tmp_path / "runs")
    seconds = [r["seconds"] for r in json_lines(run / "metrics.jsonl") if r["kind"] == "epoch"]
    # Epoch 2 paused, epoch 3 did not (epoch 1 holds the first step's one-time imports).
    _, paused, plain = seconds
    assert paused < plain + pause / 2
    # The epochs are parts of the run's time, the pause left out: no epoch after it counts it either
    # (the pilot's timer may read another clock than the loop's: a few hundredths of slack).
    assert sum(seconds) < wall - pause + 0.05
    assert [(r["step"], r["action"]) for r in json_lines(run / "metrics.jsonl") if r["kind"] == "control"] \
        == [(STEPS + 3, "pause"), (STEPS + 3, "continue")]


def continue_later(inboxes: dict, seconds: float) -> Request:
    """A continue sent ``seconds`` from now, from another thread; meanwhile a refresh (acted on while paused)."""
    threading.Timer(seconds, inboxes["inbox"].put, [Request("continue")]).start()
    return Request("refresh")


def json_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_a_refused_request_is_logged_in_one_line_and_training_goes_on(steer, idx_dir, tmp_path):
    steer("mlp", {2: [Request("invalid", text="'abc' is not a number")]})
    result = train("mlp", idx_dir, tmp_path / "runs", "--epochs", "1")
    assert result.exit_code == 0, result.output
    assert "dashboard request at step 2 refused: 'abc' is not a number" in result.output
    assert not [r for r in json_lines(only_run(tmp_path / "runs") / "metrics.jsonl") if r["kind"] == "control"]


def test_a_trials_pane_prunes_it(steer, idx_dir, tmp_path):
    from trainers.catalog import TRAINERS
    from trainers.core.run import Pruned
    from trainers.core.training import train as train_run

    steer("mlp", {STEPS + 1: [Request("prune")]})
    config = TRAINERS["mlp"].config.from_dict({"trainer": "mlp", "data_dir": str(idx_dir), "epochs": 3,
                                               "batch_size": 60, "viz": False, "out": str(tmp_path)})
    with pytest.raises(Pruned, match=f"step {STEPS + 1}"):
        train_run(config, labels={"study": "s", "trial": 0, "run_name": "trial-0"})
    run = RunDir(tmp_path / "trial-0")
    assert run.read_status()["status"] == "pruned"
    assert [r["epoch"] for r in run.read_metrics() if r["kind"] == "epoch"] == [1]


# --- forks ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def parent(tmp_path_factory) -> Path:
    """A finished 3-epoch mlp run that kept every epoch's checkpoint."""
    from tests.conftest import write_idx_dir

    root = tmp_path_factory.mktemp("parent")
    idx = write_idx_dir(root / "idx")
    result = train("mlp", idx, root / "runs", "--keep-checkpoints")
    assert result.exit_code == 0, result.output
    return only_run(root / "runs")


def fork(parent: Path, epoch: int | None, out: Path, *changes: str):
    where = ["--from-epoch", str(epoch)] if epoch is not None else []
    return CliRunner().invoke(cli, ["mlp", "--fork", str(parent), *where, "--out", str(out), "--no-viz", *changes])


def test_a_fork_with_no_change_ends_with_exactly_its_parents_metrics(parent, tmp_path, monkeypatch):
    import torch

    monkeypatch.chdir(parent.parent)
    result = fork(Path(parent.name), 1, tmp_path / "runs")  # a parent named from where the command runs
    assert result.exit_code == 0, result.output
    child = only_run(tmp_path / "runs")
    assert records(child) == records(parent)
    ours, theirs = (torch.load(d / "checkpoint.pt", weights_only=True) for d in (child, parent))
    assert all(torch.equal(ours["model"][k], theirs["model"][k]) for k in theirs["model"])
    config = json.loads((child / "config.json").read_text())
    # the parent's whole path, so compare and the runs table find it from any folder
    assert (config["fork_of"], config["fork_epoch"], config["fork_changes"]) == (str(parent.resolve()), 1, {})


def test_a_fork_takes_its_changes_from_its_epoch_on_and_the_runs_table_shows_its_lineage(parent, tmp_path):
    import torch

    result = fork(parent, 2, tmp_path / "runs", "--lr", "0.02", "--momentum", "0.5", "--schedule", "constant",
                  "--epochs", "4")
    assert result.exit_code == 0, result.output
    child = only_run(tmp_path / "runs")
    theirs, ours = records(parent), records(child)
    upto = [r for r in theirs if r["step"] <= 2 * STEPS]
    assert ours[:len(upto)] == upto
    assert [(r["epoch"], r["lr"]) for r in ours if r["kind"] == "epoch"][2:] == [(3, 0.02), (4, 0.02)]
    # The first step after the fork starts from the same weights; the updates after it are the fork's own.
    assert ours[len(upto)] == theirs[len(upto)] and ours[len(upto) + 1] != theirs[len(upto) + 1]
    optimizer = torch.load(child / "checkpoint.pt", weights_only=True)["optimizer"]
    assert optimizer["param_groups"][0]["momentum"] == 0.5
    assert json.loads((child / "config.json").read_text())["fork_changes"] == {
        "lr": 0.02, "momentum": 0.5, "schedule": "constant", "epochs": 4}
    table = CliRunner().invoke(cli, ["runs", str(tmp_path / "runs"), "--json"])
    assert json.loads(table.output)[0]["lineage"] == f"fork of {parent.name}@2"


def test_compare_draws_a_fork_from_its_epoch_so_it_branches_off_its_parent(parent, tmp_path):
    from trainers.runs.table import comparison_events

    result = fork(parent, 2, tmp_path / "runs", "--lr", "0.02")
    assert result.exit_code == 0, result.output
    child = RunDir(only_run(tmp_path / "runs"))
    events = comparison_events([RunDir(parent), child], "compare")
    xs = {}
    for item in events:
        if item["win"] == "compare_acc":
            for name in item["values"]:
                xs.setdefault(name.rsplit(" ", 1)[0], []).append(item["x"])  # a run's label, less the split
    # Two folders made in the same second share a name: the settings in the label tell them apart.
    (child_label,) = [label for label in xs if f"{child.name} (lr=0.02 " in label]
    assert xs.pop(child_label) == [2, 3]
    assert list(xs.values()) == [[1, 2, 3]]
    alone = comparison_events([child], "compare")
    assert [item["x"] for item in alone if item["win"] == "compare_train"] == [1, 2, 3]


@pytest.mark.parametrize("where, changes, words", [
    (None, [], ["--fork needs --from-epoch N", "1, 2, 3"]),
    (5, [], ["--from-epoch 5", "keeps the checkpoints of epochs 1, 2, 3"]),
    (2, ["--hidden", "64"], ["--hidden cannot change in a fork", "--lr, --momentum"]),
    (2, ["--epochs", "2"], ["--epochs 2 is not above --from-epoch 2"]),
])
def test_a_fork_that_cannot_be_made_is_one_line_and_leaves_no_folder(parent, where, changes, words, tmp_path):
    assert_one_line_error(fork(parent, where, tmp_path / "out", *changes), *words)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_a_fork_of_a_folder_that_is_no_run_or_of_another_trainer_is_one_line(parent, tmp_path):
    assert_one_line_error(fork(tmp_path, 1, tmp_path / "out"), "is not a trainviz run folder")
    result = CliRunner().invoke(cli, ["nn-softmax", "--fork", str(parent), "--from-epoch", "1", "--no-viz"])
    assert_one_line_error(result, "is a mlp run", f"trainviz mlp --fork {parent}")
    result = CliRunner().invoke(cli, ["sweep", "mlp", "--param", "lr=0.1,0.2", "--fork", str(parent)])
    assert_one_line_error(result, "--fork", "trainviz TRAINER --fork")


def test_a_run_keeps_its_last_three_epochs_by_default_and_says_so_to_a_fork(idx_dir, tmp_path):
    result = train("mlp", idx_dir, tmp_path / "runs", "--epochs", "5", "--schedule", "constant")
    assert result.exit_code == 0, result.output
    run = only_run(tmp_path / "runs")
    assert RunDir(run).kept_epochs() == [3, 4, 5]
    assert_one_line_error(fork(run, 1, tmp_path / "out"), "keeps the checkpoints of epochs 3, 4, 5",
                          "--keep-checkpoints")


def test_a_fork_of_a_steered_run_follows_its_changes_unless_it_sets_the_rate(steer, idx_dir, tmp_path):
    steer("mlp", {4: [Request("lr", 0.03)]})
    result = train("mlp", idx_dir, tmp_path / "runs", "--keep-checkpoints", "--schedule", "constant")
    assert result.exit_code == 0, result.output
    run = only_run(tmp_path / "runs")
    steer("mlp", {})
    kept = fork(run, 1, tmp_path / "kept")
    assert kept.exit_code == 0, kept.output
    assert records(only_run(tmp_path / "kept")) == records(run)
    changed = fork(run, 1, tmp_path / "changed", "--lr", "0.2")
    assert changed.exit_code == 0, changed.output
    assert [r["lr"] for r in records(only_run(tmp_path / "changed")) if r["kind"] == "epoch"] == [0.03, 0.2, 0.2]


def test_fork_here_starts_a_new_process_from_the_last_epoch_and_the_parent_goes_on(
        steer, idx_dir, tmp_path, monkeypatch):
    started = []

    class Recorded(subprocess.Popen):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            started.append(self)

    monkeypatch.setattr(subprocess, "Popen", Recorded)
    out = tmp_path / "runs"
    steer("mlp", {STEPS + 2: [Request("fork")]})
    try:
        result = train("mlp", idx_dir, out, "--epochs", "4")
        assert result.exit_code == 0, result.output
        (child_process,) = [p for p in started if "--fork" in p.args]
        assert child_process.wait(timeout=120) == 0
    finally:
        for process in started:
            if process.poll() is None:
                process.terminate()
                process.wait()
    parent_dir = next(path for path in out.iterdir() if list(path.glob("fork-e1-*.log")))
    (child,) = [path for path in out.iterdir() if path != parent_dir]
    assert json.loads((child / "status.json").read_text())["status"] == "finished"
    assert records(child) == records(parent_dir)  # the pane's settings were the parent's
    assert json.loads((child / "config.json").read_text())["fork_epoch"] == 1
    assert RunDir(parent_dir).kept_epochs() == [1, 2, 3, 4]  # epoch 1 pinned for the fork, then the last 3
