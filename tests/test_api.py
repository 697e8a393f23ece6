"""The public API (``viz.init`` / ``run.log`` / ``run.finish``) and ``viz.Animator``, without a server.

What a user's loop leaves is a run folder the trainers' tools read: the runs table,
replay's events, a status that says how it ended, also when the process was killed or
raised. The end-to-end tests against a real server and Chromium are in
tests/test_api_e2e.py.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import viz
from trainers.cli import cli
from trainers.core.run import RunDir
from trainers.runs.table import find_runs, summary
from viz import api
from viz.dashboard.sink import RecordingSink, read_events

ROOT = Path(__file__).resolve().parent.parent


def recorded(run: viz.Run) -> RecordingSink:
    """Swap a dashboard-less run's sink for one that keeps its events (what a live run would send)."""
    sink = run._sink = RecordingSink()
    return sink


def metrics(run: viz.Run) -> list[dict]:
    return [json.loads(line) for line in run.dir.metrics_file.read_text().splitlines()]


def test_names_with_a_shared_prefix_share_a_window_as_traces(tmp_path, monkeypatch):
    monkeypatch.setattr(api, "READ_EVERY", 1e9)  # read back at finish only
    run = viz.init(name="demo", out=tmp_path, dashboard=False)
    sink = recorded(run)
    run.log({"train/loss": 2.0, "lr": 0.1}, step=0)
    run.log({"train/loss": torch.tensor(1.5)}, step=1)
    run.log({"test/loss": torch.tensor(1.75), "test/acc": 0.5}, step=1)
    run.finish()
    series = [e for e in sink.events if e["kind"] == "series"]
    assert [(e["win"], list(e["values"]), e["x"]) for e in series] == [
        ("log:loss", ["train"], [0, 1]), ("log:lr", ["lr"], [0]), ("log:loss", ["test"], [1]),
        ("log:acc", ["test"], [1])]  # one event per name, in first-use order
    assert series[0]["values"]["train"] == [2.0, 1.5]
    assert [e["kind"] for e in sink.events] == ["series"] * 4 + ["config", "outcome", "save"]  # config below the curves


def test_tensors_are_read_back_in_one_batch_not_at_each_step(tmp_path, monkeypatch):
    """Logging every step must not sync with the device: the values wait and are read back together."""
    monkeypatch.setattr(api, "READ_EVERY", 1e9)
    reads = []
    tolist = torch.Tensor.tolist

    def counted(tensor):
        reads.append(tensor.numel())
        return tolist(tensor)

    monkeypatch.setattr(torch.Tensor, "tolist", counted)
    monkeypatch.setattr(torch.Tensor, "item", lambda t: pytest.fail("a logged tensor was read with .item()"))
    run = viz.init(name="sync", out=tmp_path, dashboard=False)
    losses = [torch.tensor(float(i), requires_grad=True) * 2 for i in range(50)]
    for step, loss in enumerate(losses):
        run.log({"train/loss": loss}, step=step)
    assert not run.dir.metrics_file.exists()  # nothing read back yet
    run.finish()
    assert reads == [50]  # one read-back for the 50 steps
    assert [r["train/loss"] for r in metrics(run)] == [2.0 * i for i in range(50)]
    assert [r["step"] for r in metrics(run)] == list(range(50))


def test_values_are_read_back_about_once_a_second(tmp_path, monkeypatch):
    times = itertools.chain([0.0, 0.5, 0.9, 1.2], itertools.repeat(1.3))  # init, then one look per log
    monkeypatch.setattr(api, "clock", times.__next__)
    run = viz.init(name="clock", out=tmp_path, dashboard=False)
    for step in range(3):
        run.log({"loss": float(step)}, step=step)
    assert [r["step"] for r in metrics(run)] == [0, 1, 2]  # read back at 1.2 s, a second after init
    run.finish()


def test_tensors_of_any_dtype_read_back_as_numbers_and_an_empty_log_is_nothing(tmp_path):
    with viz.init(name="dtypes", out=tmp_path, dashboard=False) as run:
        run.log({"bf16": torch.tensor(0.5, dtype=torch.bfloat16), "int": torch.tensor(3), "half": torch.ones(1).half()})
        run.log({})
        run.log({"f64": torch.tensor(0.1, dtype=torch.float64)})
    assert metrics(run) == [{"kind": "log", "step": 0, "bf16": 0.5, "int": 3.0, "half": 1.0},
                            {"kind": "log", "step": 1, "f64": 0.1}]


def test_steps_default_to_the_next_one_and_non_finite_values_are_kept_as_null(tmp_path):
    run = viz.init(name="steps", out=tmp_path, dashboard=False)
    run.log({"loss": 1.0})
    run.log({"loss": float("nan")})
    run.log({"loss": torch.tensor(float("inf"))}, step=7)
    run.log({"loss": 0.5})
    run.finish()
    assert [(r["step"], r["loss"]) for r in metrics(run)] == [(0, 1.0), (1, None), (7, None), (8, 0.5)]


@pytest.mark.parametrize("values, words", [
    ({"loss": "low"}, "a number or a one-element tensor"),
    ({"loss": True}, "a number or a one-element tensor"),
    ({"": 1.0}, "non-empty string"),
    ({"train/": 1.0}, "non-empty string"),
    ({"x" * 101: 1.0}, "1 to 100 characters"),
])
def test_bad_values_and_names_are_refused_where_they_are_logged(values, words, tmp_path):
    with viz.init(name="bad", out=tmp_path, dashboard=False) as run:
        with pytest.raises((TypeError, ValueError), match=words):
            run.log(values)
        with pytest.raises(ValueError, match="one number"):
            run.log({"loss": torch.ones(3)})
            run.finish()


def test_the_run_folder_is_one_the_runs_table_reads(tmp_path):
    with viz.init(name="lenet", config={"lr": 0.05, "epochs": 3, "layers": [6, 16]}, out=tmp_path,
                  dashboard=False) as run:
        for epoch in range(2):
            run.log({"train/loss": 1.0 / (epoch + 1)}, step=epoch * 10)
            run.log({"val/acc": 0.6 + epoch / 10, "test/acc": 0.55 + epoch / 10, "test/loss": 1.2}, step=epoch * 10 + 9)
    assert RunDir(run.path).read_status()["status"] == "finished"
    (found,) = find_runs(tmp_path)
    row = summary(found, tmp_path)
    assert row | {"path": None} == {
        "run": run.path.name, "trainer": "lenet", "status": "finished", "settings": "lr=0.05 epochs=3 layers=[6, 16]",
        "epochs": 2, "epochs_planned": 3, "val_acc": 0.7, "test_acc": 0.65, "seconds": 0, "path": None,
        "lineage": None, "damaged": None}
    config = json.loads((run.path / "config.json").read_text())
    assert config["config"] == {"lr": 0.05, "epochs": 3, "layers": [6, 16]} and config["env"] == run.path.name


def test_an_exception_in_the_with_block_ends_the_run_failed_and_ctrl_c_stopped(tmp_path):
    with pytest.raises(ZeroDivisionError):
        with viz.init(name="boom", out=tmp_path / "a", dashboard=False) as run:
            run.log({"loss": 1.0})
            1 / 0
    assert RunDir(run.path).read_status()["status"] == "failed"
    assert [r["loss"] for r in metrics(run)] == [1.0]  # what was logged is delivered
    with pytest.raises(KeyboardInterrupt):
        with viz.init(name="stop", out=tmp_path / "b", dashboard=False) as stopped:
            raise KeyboardInterrupt
    assert RunDir(stopped.path).read_status()["status"] == "stopped"
    with pytest.raises(RuntimeError, match="is finished"):
        stopped.log({"loss": 1.0})
    stopped.finish()  # again: nothing happens


def test_sys_exit_in_the_with_block_ends_the_run_as_its_code_says(tmp_path):
    for code, status in ((0, "finished"), (None, "finished"), (3, "failed")):
        with pytest.raises(SystemExit):
            with viz.init(name="exit", out=tmp_path / str(code), dashboard=False) as run:
                run.log({"loss": 1.0})
                sys.exit(code)
        assert RunDir(run.path).read_status()["status"] == status, code


@pytest.mark.parametrize("server", ["http://localhost:8097", "localhost", "http://[::1", "http://host/visdom"])
def test_a_server_that_is_not_a_plain_url_is_refused_before_anything_is_written(server, tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="with no port or path"):
        viz.init(name="where", out=tmp_path, server=server, dashboard=False)
    monkeypatch.setenv("VISDOM_SERVER_URL", server)
    with pytest.raises(ValueError, match="with no port or path"):
        viz.init(name="where", out=tmp_path, dashboard=False)
    assert not any(tmp_path.iterdir())


def test_a_config_is_settings_not_data(tmp_path):
    with pytest.raises(ValueError, match="more than 1,048,576: it is for settings"):
        viz.init(name="vocab", config={"vocab": [f"word{i}" for i in range(200_000)]}, out=tmp_path, dashboard=False)
    assert not any(tmp_path.iterdir())
    with viz.init(name="big", config={"vocab": [f"word{i}" for i in range(60_000)]}, out=tmp_path,
                  dashboard=False) as run:
        pass
    (row,) = [summary(found, tmp_path) for found in find_runs(tmp_path)]
    assert row["damaged"] is None and row["status"] == "finished"  # what init takes, the runs table reads


def test_the_control_pane_takes_the_rate_the_loop_has_also_0_or_a_tensor(tmp_path, monkeypatch):
    with viz.init(name="rates", out=tmp_path, dashboard=False) as run:
        sink = recorded(run)
        assert run.controls(0.0) == []  # a warm-up's first step
        monkeypatch.setattr(api, "clock", lambda: float("inf"))  # past when a changed rate may be shown again
        assert run.controls(torch.tensor(0.02, dtype=torch.float64)) == []
        with pytest.raises(ValueError, match="a number from 0 to"):
            run.controls(-0.1)
    assert [e["lr"] for e in sink.events if e["kind"] == "controls"] == [0.0, 0.02]


def test_finish_takes_only_the_words_the_runs_table_knows(tmp_path):
    run = viz.init(name="words", out=tmp_path, dashboard=False)
    with pytest.raises(ValueError, match="one of finished, failed, stopped, not 'done'"):
        run.finish("done")
    run.log({"loss": 1.0})  # still open
    run.finish("stopped")
    assert RunDir(run.path).read_status()["status"] == "stopped"


def test_a_value_that_cannot_be_read_back_fails_the_run(tmp_path, monkeypatch):
    run = viz.init(name="unreadable", out=tmp_path, dashboard=False)
    run.log({"loss": torch.tensor(0.5)})

    def lost(values):  # as the read-back from a device that was lost meanwhile
        raise RuntimeError("device lost")

    monkeypatch.setattr(api, "as_numbers", lost)
    with pytest.raises(RuntimeError, match="device lost"):
        run.finish()
    assert RunDir(run.path).read_status()["status"] == "failed"


@pytest.mark.parametrize("value, error", [
    (torch.tensor(0.5, device="meta"), "not a meta one"),  # holds no data to read back
    (torch.tensor(1 + 2j), "not a complex one"),
    (torch.tensor([[0.5]]).to_sparse(), "not a sparse one"),
    (10**400, "too large for a float"),
])
def test_a_value_that_could_never_be_read_back_is_refused_where_it_is_logged(tmp_path, value, error):
    run = viz.init(name="refused", out=tmp_path, dashboard=False)
    run.log({"loss": 1.0}, step=0)
    with pytest.raises((TypeError, ValueError), match=error):
        run.log({"loss": value}, step=1)
    run.log({"loss": 2.0}, step=2)
    run.finish()
    assert [r["loss"] for r in RunDir(run.path).read_metrics()] == [1.0, 2.0]  # the values around it kept
    assert RunDir(run.path).read_status()["status"] == "finished"


def test_steps_are_whole_numbers_within_64_bits_and_plots_take_any_real_x_numpys_included(tmp_path):
    run = viz.init(name="steps", out=tmp_path, dashboard=False)
    run.log({"loss": 1.0}, step=np.int64(10))
    run.log({"loss": 2.0}, step=3)
    run.log({"loss": 3.0})  # the largest step so far + 1
    for step in (10**5000, 2**63, 1.5, True):
        with pytest.raises(TypeError, match="within 64 bits"):
            run.log({"loss": 0.0}, step=step)
    run.plot("curve", np.float32(0.5), {"y": 1.0})  # an x of numpy's, or a whole number, as JSON writes it
    run.plot("curve", np.int64(2), {"y": 2.0})
    with pytest.raises(ValueError, match="too large for a float"):
        run.plot("curve", 10**400, {"y": 3.0})
    for x in (float("inf"), "1", None, True):
        with pytest.raises(TypeError, match="x must be a finite number"):
            run.plot("curve", x, {"y": 3.0})
    run.finish()
    records = RunDir(run.path).read_metrics()
    assert [r["step"] for r in records if r["kind"] == "log"] == [10, 3, 11]
    assert [r["x"] for r in records if r["kind"] == "plot"] == [0.5, 2]


def test_names_that_would_draw_the_same_trace_or_window_are_refused(tmp_path):
    run = viz.init(name="names", out=tmp_path, dashboard=False)
    run.log({"loss": 1.0, "test/loss": 2.0})  # traces "loss" and "test" of window loss
    with pytest.raises(ValueError, match="as 'loss' does"):
        run.log({"loss/loss": 3.0})
    with pytest.raises(ValueError, match="window 'loss' shows lines already"):
        run.text("loss", "a note")
    run.text("notes", "a note")
    with pytest.raises(ValueError, match="window 'notes' shows text already"):
        run.log({"notes": 1.0})
    with pytest.raises(ValueError, match="samples is how many"):
        run.classification(torch.zeros(4, 2), torch.zeros(4, dtype=torch.long), torch.zeros(4, 28, 28), samples=0)
    run.plot("acc", 1, {"train": 0.5})
    run.plot("acc", 2, {"train": 0.6, "test": 0.55})  # the same plot's traces again
    with pytest.raises(ValueError, match=r"'train/acc' would draw trace 'train' of window 'acc', as "
                                         r"run.plot\('acc'\) does"):
        run.log({"train/acc": 0.7})
    with pytest.raises(ValueError, match=r"run.plot\('loss'\) would draw trace 'test' of window 'loss', as "
                                         "'test/loss' does"):
        run.plot("loss", 1, {"test": 2.0})
    run.finish()


def test_a_second_writer_of_a_run_folder_is_refused_while_the_run_is_open(tmp_path):
    from trainers.core.run import Busy

    run = viz.init(name="held", out=tmp_path, dashboard=False)
    with pytest.raises(Busy, match="is in use"):
        with RunDir(run.path).writing():
            pass
    run.finish()
    with RunDir(run.path).writing():  # let go at finish
        pass


SCRIPT = """
import os, signal, sys
import viz
{before}
run = viz.init(name="script", config={{"epochs": 2}}, out={out!r}, dashboard=False)
run.log({{"loss": 1.0}})
{end}
"""


HOOK = "sys.excepthook = lambda *error: print('own hook:', error[1])"  # a traceback prettifier's place


def test_two_runs_under_a_hook_that_chains_to_ours_fail_once_each(tmp_path):
    """A library installs a hook that calls the one before it (as error reporters do) between two runs."""
    out = tmp_path / "runs"
    end = ("previous = sys.excepthook\n"
           "sys.excepthook = lambda *error: (print('own hook'), previous(*error))\n"
           f"viz.init(name='second', out={str(out)!r}, dashboard=False)\n"
           "raise ValueError('bad batch')")
    script = tmp_path / "script.py"
    script.write_text(SCRIPT.format(out=str(out), before="", end=end))
    done = subprocess.run([sys.executable, str(script)], env={**os.environ, "PYTHONPATH": str(ROOT)},
                          capture_output=True, text=True, timeout=120)
    assert done.stdout == "own hook\n" and "RecursionError" not in done.stderr, done.stderr
    assert done.stderr.count("ValueError: bad batch") == 1
    assert sorted(RunDir(run.path).read_status()["status"] for run in find_runs(out)) == ["failed", "failed"]


@pytest.mark.parametrize("before, end, status", [
    ("", "", "finished"),  # the script ends without finish(): finished at exit
    ("", "raise SystemExit(0)", "finished"),
    ("", "raise ValueError('bad batch')", "failed"),  # an uncaught exception
    (HOOK, "raise ValueError('bad batch')", "failed"),  # under a hook of the script's own, which still runs
    ("", "os.kill(os.getpid(), signal.SIGKILL)", "failed"),  # killed: "running" with a dead pid, listed as failed
])
def test_a_script_that_never_calls_finish_is_listed_as_it_ended(before, end, status, tmp_path):
    out = tmp_path / "runs"
    script = tmp_path / "script.py"
    script.write_text(SCRIPT.format(out=str(out), before=before, end=end))
    done = subprocess.run([sys.executable, str(script)], env={**os.environ, "PYTHONPATH": str(ROOT)},
                          capture_output=True, text=True, timeout=120)
    if before:
        assert done.stdout == "own hook: bad batch\n"
    result = CliRunner().invoke(cli, ["runs", str(out), "--json"])
    assert result.exit_code == 0, result.output
    (row,) = json.loads(result.output)
    assert (row["trainer"], row["status"]) == ("script", status)
    if status == "finished":
        assert [json.loads(line)["loss"] for line in (Path(row["path"]) / "metrics.jsonl").read_text().splitlines()] == [1.0]


def test_the_panes_from_plain_tensors(tmp_path):
    classes = [f"class {i}" for i in range(4)]
    logits = torch.tensor([[4.0, 0, 0, 0], [0, 3.0, 0, 0], [0, 0, 0, 5.0], [0, 2.0, 0, 0]] * 5)
    labels = torch.tensor([0, 1, 2, 3] * 5)
    images = torch.rand(20, 1, 28, 28)
    with viz.init(name="panes", out=tmp_path, dashboard=False) as run:
        sink = recorded(run)
        run.log({"test/acc": 0.5}, step=3)
        run.classification(logits, labels, images, classes=classes, samples=8)
        run.templates(torch.randn(4, 784), classes=classes)
        run.templates(torch.randn(6, 1, 5, 5))
        run.histogram("weights", {"fc": torch.randn(100), "conv": torch.randn(50)})
        run.images("inputs", images[:3, 0], captions=["a", "b", "c"], marked=[False, True, False])
        run.text("notes", "<script>alert(1)</script>")
    by_win = {}
    for event in sink.events:
        by_win.setdefault(event.get("win"), []).append(event)
    assert len(by_win["samples"][0]["captions"]) == 8
    mistakes = by_win["mistakes"][0]
    assert mistakes["kind"] == "images" and len(mistakes["captions"]) == 8  # of 10, the most confident first
    assert [c.split(" ")[:4] for c in mistakes["captions"]] == [["class", "2\n->", "class", "3"]] * 5 + \
        [["class", "3\n->", "class", "1"]] * 3
    assert by_win["confusion"][0]["counts"][2][3] == 5 and by_win["confusion"][0]["counts"][3][1] == 5
    assert by_win["class_acc"][0]["values"] == [1.0, 1.0, 0.0, 0.0]
    shown = [caption.split("\n-> ") for caption in by_win["samples"][0]["captions"]]
    right = sum(true == predicted.rsplit(" ", 1)[0] for true, predicted in shown)
    assert by_win["predictions"][0]["caption"] == f"Step 3: {right} of 8 right"
    linear, conv = by_win["templates"]
    assert linear["shape"] == [4, 28, 28] and linear["captions"] == classes
    assert conv["shape"] == [6, 5, 5] and conv["captions"][0].startswith("filter ")
    assert sorted(by_win["log:weights"][0]["series"]) == ["conv", "fc"]
    assert by_win["log:inputs"][0]["shape"] == [3, 28, 28] and by_win["log:inputs"][0]["marked"] == [False, True, False]
    assert by_win["log:notes"][0]["text"] == "<script>alert(1)</script>"  # data: the renderer escapes it


def test_a_live_run_writes_events_that_replay_reads_even_with_no_server(tmp_path, capfd):
    from conftest import free_port

    with viz.init(name="offline", out=tmp_path, port=free_port()) as run:
        run.log({"train/loss": torch.tensor(0.5)}, step=0)
        run.images("inputs", torch.rand(2, 28, 28))
    err = capfd.readouterr().err
    (warning,) = [line for line in err.splitlines() if "warning" in line]  # one line in all, finish included
    assert warning.startswith("warning: no visdom server answers") and f"trainviz replay {run.path}" in warning
    events, damaged = read_events(run.dir.events_file)
    assert damaged == 0
    assert [e["kind"] for e in events] == ["series", "config", "images", "outcome", "save"]  # config before the first pane


def test_the_notebook_view_links_the_environment_and_escapes_it(tmp_path):
    run = viz.init(name="nb", out=tmp_path, dashboard=False, server="http://localhost", port=8100)
    shown = run._repr_html_()
    assert f"href='http://localhost:8100/env/{run.env}'" in shown and "<iframe src=" in shown
    run.finish()


def test_images_of_half_floats_and_whole_numbers_are_drawn_as_they_look():
    from viz.panes import as_pixels

    levels = torch.arange(0, 256, dtype=torch.int64).reshape(1, 16, 16)
    assert as_pixels(levels).tolist() == levels.to(torch.uint8).tolist()  # 0..255 kept, not clipped to white
    assert as_pixels(levels.numpy().astype("int32")).tolist() == levels.tolist()
    halves = torch.tensor([[[0.0, 0.5, 1.0]]], dtype=torch.bfloat16)
    assert as_pixels(halves).tolist() == [[[0, 128, 255]]] == as_pixels(halves.half()).tolist()
    assert as_pixels(torch.tensor([[[True, False]]])).tolist() == [[[255, 0]]]


def test_a_histogram_with_no_finite_values_draws_nothing_and_the_others_go_on(tmp_path):
    with viz.init(name="diverged", out=tmp_path, dashboard=False) as run:
        sink = recorded(run)
        run.histogram("weights", torch.tensor([float("nan"), float("inf")]))
        run.histogram("grads", {"fc": torch.tensor([float("nan")]), "conv": torch.randn(50)})
    histograms = [e for e in sink.events if e["kind"] == "histogram"]
    assert [(e["win"], sorted(e["series"])) for e in histograms] == [("log:grads", ["conv"])]


def test_a_histogram_of_one_value_is_a_spike_at_that_value():
    from viz.panes import BINS, histograms

    centers, densities = histograms({"zeros": torch.zeros(10)})["zeros"]
    assert centers == sorted(centers) and centers[0] < 0 < centers[-1]
    peak = max(range(BINS), key=densities.__getitem__)
    assert abs(centers[peak]) < 1 / BINS and sum(densities) * (centers[1] - centers[0]) == pytest.approx(1)


def test_the_final_word_keeps_each_windows_values_when_traces_share_names(tmp_path):
    with viz.init(name="final", out=tmp_path, dashboard=False) as run:
        sink = recorded(run)
        run.plot("loss", 1, {"train": 0.25, "test": 0.3})
        run.plot("acc", 1, {"train": 0.91, "test": 0.88})
    (outcome,) = [e for e in sink.events if e["kind"] == "outcome"]
    assert outcome["metrics"] == {"train/loss": 0.25, "test/loss": 0.3, "train/acc": 0.91, "test/acc": 0.88}


def test_animator_takes_the_books_arguments_and_draws_one_trace_per_legend_entry(tmp_path):
    with viz.init(name="d2l", out=tmp_path, dashboard=False) as run:
        sink = recorded(run)
        animator = viz.Animator(xlabel="epoch", xlim=[1, 3], ylim=[0.3, 0.9], legend=["train loss", "train acc",
                                "test acc"], figsize=(7, 5), run=run)
        animator.add(1, (0.9, 0.6, 0.62))
        animator.add(2, (0.5, 0.8, None))  # None: skipped, as the book's Animator skips it
        animator.add([2.5, 3], [0.4, 0.85])
        viz.Animator(legend=["loss"], run=run).add(torch.tensor(4), torch.tensor(0.5))  # 0-dim tensors: one point
    axes = next(e for e in sink.events if e["kind"] == "axes")
    assert axes | {"win": None} == {"kind": "axes", "win": None, "xlabel": "epoch", "ylabel": "", "xlim": [1.0, 3.0],
                                    "ylim": [0.3, 0.9], "xscale": "linear", "yscale": "linear"}
    points = [(e["win"], e["x"], e["values"]) for e in sink.events if e["kind"] == "scalars"]
    assert points == [("log:animator", 1.0, {"train loss": 0.9, "train acc": 0.6, "test acc": 0.62}),
                      ("log:animator", 2.0, {"train loss": 0.5, "train acc": 0.8}),
                      ("log:animator", 2.5, {"train loss": 0.4}), ("log:animator", 3.0, {"train acc": 0.85}),
                      ("log:animator 2", 4.0, {"loss": 0.5})]
    with viz.init(name="again", out=tmp_path, dashboard=False) as again:
        assert viz.Animator(run=again).name == "animator"  # each run's first Animator is its "animator"


def test_an_animators_repeated_legend_entries_and_unnamed_values_are_traces_of_their_own(tmp_path):
    with viz.init(name="d2l", out=tmp_path, dashboard=False) as run:
        sink = recorded(run)
        viz.Animator(legend=["acc", "acc", "1"], run=run).add(1, [0.5, 0.6, 0.7, 0.8, 0.9])
    (point,) = [e["values"] for e in sink.events if e["kind"] == "scalars"]
    assert point == {"acc": 0.5, "acc (2)": 0.6, "1": 0.7, "3": 0.8, "4": 0.9}


D2L = ROOT / "tests" / "fixtures" / "d2l_softmax.py"


def test_the_books_softmax_loop_draws_live_with_only_the_animator_swapped(idx_dir, tmp_path):
    """A copy of Dive into Deep Learning's train_ch3 and its kin, its Animator the one line changed."""
    out = tmp_path / "runs"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TRAINVIZ_DATA": str(idx_dir), "TRAINVIZ_OUT": str(out)}
    done = subprocess.run([sys.executable, str(D2L)], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    (run,) = find_runs(out)
    plots = [json.loads(line) for line in run.metrics_file.read_text().splitlines()]
    assert [p["x"] for p in plots] == [1.0, 2.0, 3.0]
    assert [sorted(k for k in p if k not in ("kind", "step", "window", "x")) for p in plots] == \
        [["test acc", "train acc", "train loss"]] * 3
    printed = [line for line in done.stdout.splitlines() if line.startswith("epoch")]
    assert [f"epoch {i}, train_loss {p['train loss']:f}, train_acc {p['train acc']:f}, test_acc {p['test acc']:f}"
            for i, p in enumerate(plots, 1)] == printed  # the dashboard shows what the book prints
    assert plots[-1]["test acc"] > 0.7 and plots[-1]["train loss"] < plots[0]["train loss"]
    assert run.read_status()["status"] == "finished"  # finished at exit: the book never calls finish


def test_a_tensor_changed_after_it_was_logged_keeps_the_value_it_had(tmp_path):
    total = torch.tensor(0.0)
    with viz.init(name="inplace", out=tmp_path, dashboard=False) as run:
        for _ in range(3):
            total += 1
            run.log({"total": total})
    assert [r["total"] for r in metrics(run)] == [1.0, 2.0, 3.0]


def test_a_log_axis_takes_its_limits_as_powers_of_ten_and_refuses_zero(tmp_path):
    from unittest.mock import MagicMock

    from viz.dashboard.client import Client
    from viz.dashboard.render import Renderer

    with viz.init(name="axes", out=tmp_path, dashboard=False) as run:
        sink = recorded(run)
        with pytest.raises(ValueError, match="above 0 on a log scale"):
            run.axes("loss", yscale="log", ylim=[0, 1])
        run.axes("loss", xlabel="epoch", yscale="log", ylim=[1e-3, 1e2])  # the book's Animator in section 4.4
        run.log({"train/loss": 0.5})
    vis = MagicMock(spec=Client)
    Renderer(vis, run.env).render([e for e in sink.events if e["kind"] in ("axes", "series")])
    options = vis.lines.call_args.kwargs["opts"]
    assert (options["ytype"], options["ytickmin"], options["ytickmax"]) == ("log", -3.0, 2.0)


def test_names_that_are_the_records_own_fields_are_refused(tmp_path):
    with viz.init(name="reserved", out=tmp_path, dashboard=False) as run:
        for name in ("step", "kind"):
            with pytest.raises(ValueError, match="names a field"):
                run.log({name: 1.0})
        run.log({"loss": 1.0})
    assert metrics(run) == [{"kind": "log", "step": 0, "loss": 1.0}]
