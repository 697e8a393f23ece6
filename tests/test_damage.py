"""Damaged files, a full disk, a shared run folder, a hostile events file.

Run folders are copied between machines, edited by hand, half-written by a killed
process; disks fill; two terminals point at one run. Each case ends in one line that
says what is wrong and what to do, and nothing the user produced is lost, rewritten or
injected into the dashboard.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from test_dashboard_e2e import browser  # noqa: F401  (the fixture: headless Chromium through Playwright)

from tests.conftest import missing, write_idx_dir
from tests.test_bad_input import assert_one_line_error
from trainers.cli import cli
from trainers.core.run import RunDir

ROOT = Path(__file__).resolve().parent.parent
HOST = socket.gethostname()


def records(run: Path) -> list[dict]:
    """metrics.jsonl without the wall-clock field."""
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k != "seconds"} for line in lines]


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` and its bytes."""
    return {str(path.relative_to(folder)): path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()}


def train(out: Path, data: Path, *args: str, trainer: str = "nn-softmax") -> Path:
    """Train a run into ``out`` (which must hold no other run) and return its folder."""
    result = CliRunner().invoke(cli, [trainer, "--data-dir", str(data), "--out", str(out), "--no-viz", *args])
    assert result.exit_code == 0, result.output
    (run,) = [path for path in out.iterdir() if path.is_dir()]
    return run


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """A finished 2-epoch nn-softmax run, with an events.jsonl to replay; copy it before damaging it."""
    root = tmp_path_factory.mktemp("finished")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TRAINVIZ_CACHE", str(root / "cache"))
        run = train(root / "runs", write_idx_dir(root / "idx"), "--epochs", "2")
    (run / "events.jsonl").write_text(json.dumps({"kind": "text", "win": "predictions", "text": "hello"}) + "\n")
    return run


@pytest.fixture
def run_copy(finished, tmp_path) -> Path:
    """A copy of the finished run, to damage."""
    return Path(shutil.copytree(finished, tmp_path / "copy" / finished.name))


# ---------------------------------------------------------------- one damaged run, one line


DEEP = "[" * 100_000 + "]" * 100_000  # JSON nested deeper than the parser's recursion goes


def strict_json(constant: str):
    raise ValueError(f"{constant} is not strict JSON")


def write(name: str, text: str):
    return lambda run: (run / name).write_text(text)


def cut(name: str, keep: float):
    return lambda run: (run / name).write_bytes((run / name).read_bytes()[: int((run / name).stat().st_size * keep)])


def damage_line(number: int):
    def damage(run: Path) -> None:
        lines = (run / "metrics.jsonl").read_text().splitlines(keepends=True)
        lines[number - 1] = "{not json\n"
        (run / "metrics.jsonl").write_text("".join(lines))
    return damage


def state_changed(**changes):
    """Change the checkpoint's entries: to a value, or to what a function of the torch module makes."""
    def damage(run: Path) -> None:
        import torch

        state = torch.load(run / "checkpoint.pt", weights_only=True)
        made = {key: value(torch) if callable(value) else value for key, value in changes.items()}
        torch.save({**state, **made}, run / "checkpoint.pt")
    return damage


def replaced(name: str, make):
    """Put what ``make(path)`` makes where the run's file ``name`` was."""
    def damage(run: Path) -> None:
        (run / name).unlink(missing_ok=True)
        make(run / name)
    return damage


BIG = "1" + "0" * 400  # a whole number JSON holds and no float does


def first_save_killed(run: Path) -> None:
    (run / "checkpoint.pt").rename(run / ".checkpoint.pt.x1y2z3.partial")


def data_moved(run: Path) -> None:
    import torch

    state = torch.load(run / "checkpoint.pt", weights_only=True)
    state["config"]["data_dir"] = str(run.parent / "moved-away")
    torch.save(state, run / "checkpoint.pt")


def wrong_weights(run: Path, name: str = "checkpoint.pt") -> None:
    import torch

    state = torch.load(run / name, weights_only=True)
    state["model"] = {key: tensor[:1] for key, tensor in state["model"].items()}
    (run / name).unlink()  # a kept epoch may be checkpoint.pt's hard link: the other stays as it was
    torch.save(state, run / name)


def progress_changed(**fields):
    """Change fields of where the checkpoint says the run stands."""
    def damage(run: Path) -> None:
        import torch

        state = torch.load(run / "checkpoint.pt", weights_only=True)
        torch.save({**state, "progress": {**state["progress"], **fields}}, run / "checkpoint.pt")
    return damage


RESUME = ["nn-softmax", "--resume", "{run}", "--no-viz", "--epochs", "3"]
# name: (damage, command, words the one line must hold)
DAMAGED = {
    "config.json not JSON": (write("config.json", "{\"lr\": 0.1,"), RESUME,
                             ["config.json is damaged", "not JSON", "restore it from a copy"]),
    "config.json a list": (write("config.json", "[1, 2]"), RESUME, ["config.json is damaged", "a JSON array"]),
    "config.json lr a word": (write("config.json", '{"trainer": "nn-softmax", "lr": "fast"}'), RESUME,
                              ["config.json is damaged", "lr is 'fast'"]),
    "config.json trainer a list": (write("config.json", '{"trainer": ["nn-softmax"]}'), RESUME,
                                   ["config.json is damaged", "trainer is ['nn-softmax']"]),
    "config.json env a path": (write("config.json", '{"trainer": "nn-softmax", "env": "../../etc"}'), RESUME,
                               ["config.json is damaged", "not a usable environment name"]),
    "checkpoint truncated": (cut("checkpoint.pt", 0.5), RESUME, ["checkpoint.pt is damaged", "cannot be read"]),
    "checkpoint empty": (cut("checkpoint.pt", 0), RESUME, ["checkpoint.pt is damaged", "the file is empty"]),
    "checkpoint of other weights": (wrong_weights, RESUME, ["checkpoint.pt is damaged", "do not fit"]),
    "metrics line before the checkpoint": (damage_line(2), RESUME,
                                           ["metrics.jsonl is damaged", "line 2 is not JSON", "before the checkpoint"]),
    "fork of a step record without its epoch": (
        lambda run: (run / "metrics.jsonl").write_text('{"kind": "step", "step": 1}\n'
                                                       + (run / "metrics.jsonl").read_text()),
        ["nn-softmax", "--fork", "{run}", "--from-epoch", "1", "--no-viz", "--out", "{run}/forks"],
        ["metrics.jsonl is damaged", "line 1 is not a metrics record"]),
    "fork of a step record without its loss": (
        lambda run: (run / "metrics.jsonl").write_text('{"kind": "step", "step": 1, "epoch": 1}\n'
                                                       + (run / "metrics.jsonl").read_text()),
        ["nn-softmax", "--fork", "{run}", "--from-epoch", "1", "--no-viz", "--out", "{run}/forks"],
        ["metrics.jsonl is damaged", "line 1 is not a metrics record"]),
    "fork of a kept checkpoint that is a FIFO": (
        lambda run: ((run / "checkpoints" / "epoch-0001.pt").unlink(),
                     os.mkfifo(run / "checkpoints" / "epoch-0001.pt")),
        ["nn-softmax", "--fork", "{run}", "--from-epoch", "1", "--no-viz", "--out", "{run}/forks"],
        ["epoch-0001.pt is damaged", "not a regular file"]),
    "first save killed": (first_save_killed, RESUME, ["no checkpoint yet", "killed while writing", ".partial"]),
    # a resume cuts metrics.jsonl in place: never a file elsewhere, never a file that is no run's
    "metrics.jsonl a link": (lambda run: ((run / "notes.txt").write_text("mine\n"),
                                          replaced("metrics.jsonl", lambda p: p.symlink_to(run / "notes.txt"))(run)),
                             RESUME, ["metrics.jsonl is damaged", "symbolic link"]),
    # nor write where it would block, fail after an epoch's training, or write through a link
    "events.jsonl a folder": (replaced("events.jsonl", Path.mkdir), RESUME,
                              ["events.jsonl is damaged", "not a regular file", "move it aside"]),
    "events.jsonl a FIFO": (replaced("events.jsonl", os.mkfifo), RESUME,
                            ["events.jsonl is damaged", "not a regular file"]),
    "events.jsonl a link": (lambda run: ((run / "notes.txt").write_text("mine\n"),
                                         replaced("events.jsonl", lambda p: p.symlink_to(run / "notes.txt"))(run)),
                            RESUME, ["events.jsonl is damaged", "symbolic link"]),
    "checkpoints a file": (lambda run: (shutil.rmtree(run / "checkpoints"), (run / "checkpoints").write_text("x")),
                           RESUME, ["checkpoints is damaged", "not a folder"]),
    "status.json a folder": (replaced("status.json", Path.mkdir), RESUME, ["status.json is damaged", "a folder"]),
    "metrics.jsonl all garbage": (write("metrics.jsonl", "garbage\nmore garbage\n"), RESUME,
                                  ["metrics.jsonl is damaged", "holds no record up to the checkpoint's step"]),
    ".lock a FIFO": (replaced(".lock", os.mkfifo), RESUME, ["cannot write in", ".lock is a symbolic link or a FIFO"]),
    ".lock a link": (replaced(".lock", lambda p: p.symlink_to(p.parent / "made-by-the-lock")), RESUME,
                     ["cannot write in", ".lock is a symbolic link"]),
    "fork of a kept checkpoint that is a folder": (
        replaced("checkpoints/epoch-0001.pt", Path.mkdir),
        ["nn-softmax", "--fork", "{run}", "--from-epoch", "1", "--no-viz", "--out", "{run}/forks"],
        ["epoch-0001.pt is damaged", "not a regular file"]),
    "checkpoint without optimizer state": (state_changed(optimizer={}), RESUME,
                                           ["checkpoint.pt is damaged", "training state cannot be restored"]),
    "checkpoint with a float generator": (state_changed(generator=lambda torch: torch.zeros(3)), RESUME,
                                          ["checkpoint.pt is damaged", "training state cannot be restored"]),
    "checkpoint with a rate change that is no pair": (state_changed(steering=[[1]]), RESUME,
                                                      ["checkpoint.pt is damaged", "do not fit"]),
    "checkpoint with a word for its loss sum": (progress_changed(loss_sum="much"), RESUME,
                                                ["checkpoint.pt is damaged", "do not fit"]),
    "fork of a kept checkpoint of other weights": (
        lambda run: wrong_weights(run, "checkpoints/epoch-0001.pt"),
        ["nn-softmax", "--fork", "{run}", "--from-epoch", "1", "--no-viz", "--out", "{run}/forks"],
        ["checkpoints/epoch-0001.pt is damaged", "do not fit"]),
    "config.json lr too large for a float": (write("config.json", '{"trainer": "nn-softmax", "lr": ' + BIG + "}"),
                                             RESUME, ["config.json is damaged", "lr is 1000"]),
    "fork of a kept checkpoint that links to nothing": (
        replaced("checkpoints/epoch-0001.pt", lambda p: p.symlink_to(p.parent / "gone.pt")),
        ["nn-softmax", "--fork", "{run}", "--from-epoch", "1", "--no-viz", "--out", "{run}/forks"],
        ["epoch-0001.pt is damaged", "symbolic link to no file"]),
    "finished, no --epochs": (lambda run: None, ["nn-softmax", "--resume", "{run}", "--no-viz"],
                              ["has trained all its 2 epochs", "--epochs N above 2"]),
    "finished, --epochs not above": (lambda run: None, ["nn-softmax", "--resume", "{run}", "--no-viz", "--epochs", "2"],
                                     ["--epochs 2 is not above the 2 epochs"]),
    "data folder moved": (data_moved, RESUME, ["data folder", "is gone", "--data-dir FOLDER"]),
    "evaluate truncated checkpoint": (cut("checkpoint.pt", 0.5), ["evaluate", "{run}"],
                                      ["checkpoint.pt is damaged", "cannot be read"]),
    "evaluate empty checkpoint": (cut("checkpoint.pt", 0), ["evaluate", "{run}"], ["the file is empty"]),
    "replay config.json not JSON": (write("config.json", "{"), ["replay", "{run}", "--port", "1"],
                                    ["config.json is damaged", "--env"]),
    "compare metrics line": (damage_line(3), ["compare", "{run}", "--port", "1"],
                             ["metrics.jsonl line 3 is not JSON", "compare without it"]),
    "compare config.json a list": (write("config.json", "[]"), ["compare", "{run}", "--port", "1"],
                                   ["config.json", "a JSON array"]),
}


@pytest.mark.parametrize("case", DAMAGED)
def test_a_command_aimed_at_a_damaged_run_says_what_in_one_line_and_rewrites_nothing(case, run_copy):
    damage, command, words = DAMAGED[case]
    damage(run_copy)
    before = snapshot(run_copy)
    result = CliRunner().invoke(cli, [arg.format(run=run_copy) for arg in command])
    assert_one_line_error(result, *words)
    after = snapshot(run_copy)
    after.pop(".lock", None)  # the writer's lock a refused resume took, empty
    before.pop(".lock", None)
    assert after == before, "a refused command changed the run folder"


def test_runs_lists_damaged_runs_with_the_reason_and_goes_on(finished, tmp_path):
    root = tmp_path / "runs"
    damages = {
        "binary-tail": lambda run: open(run / "metrics.jsonl", "ab").write(b"\x89\xff\x00\n\x93garbage\n\xfe"),
        "cut-last-line": lambda run: open(run / "metrics.jsonl", "a").write('{"kind": "epoch", "ep'),
        "config-lr-word": write("config.json", '{"trainer": "nn-softmax", "lr": "fast"}'),
        "config-list": write("config.json", "[1]"),
        "status-string": write("status.json", '"running"'),
        "status-pid-word": write("status.json", json.dumps({"status": "running", "pid": "x", "host": HOST})),
        "status-pid-huge": write("status.json", json.dumps({"status": "running", "pid": 2**63, "host": HOST})),
        "config-trainer-list": write("config.json", '{"trainer": ["nn-softmax"]}'),
        "status-nested-deep": write("status.json", DEEP),
        "config-fifo": lambda run: ((run / "config.json").unlink(), os.mkfifo(run / "config.json")),  # would block
        "status-dev-zero": lambda run: ((run / "status.json").unlink(), (run / "status.json").symlink_to("/dev/zero")),
        "config-huge": write("config.json", '{"trainer": "nn-softmax", "notes": "' + "x" * 17_000_000 + '"}'),
        "checkpoint-fifo": lambda run: ((run / "checkpoint.pt").unlink(), os.mkfifo(run / "checkpoint.pt")),
        "test-acc-nan": lambda run: open(run / "metrics.jsonl", "a").write(
            '{"kind": "test", "step": 9, "test_acc": NaN}\n'),
        "config-own-dropout-word": write("config.json", '{"trainer": "lenet.py", "hidden": [8], "dropout": "0.2"}'),
        "checkpoint-cut": cut("checkpoint.pt", 0.3),
        "val-acc-word": lambda run: open(run / "metrics.jsonl", "a").write(
            '{"kind": "epoch", "epoch": 3, "step": 9, "val_acc": "high"}\n'),
        "test-acc-huge": lambda run: open(run / "metrics.jsonl", "a").write(
            '{"kind": "test", "step": 9, "test_acc": ' + BIG + "}\n"),
        "config-trainer-escapes": write("config.json", json.dumps({"trainer": "x\x1b]0;pwned\x07\nfake-run  mlp"})),
    }
    for name, damage in damages.items():
        damage(Path(shutil.copytree(finished, root / name)))
    shutil.copytree(finished, root / "sound")
    next_line = len((finished / "metrics.jsonl").read_text().splitlines()) + 1  # the first damaged one

    result = CliRunner().invoke(cli, ["runs", str(root), "--json"])
    assert result.exit_code == 0, result.output
    rows = {row["run"]: row for row in json.loads(result.output, parse_constant=strict_json)}
    assert set(rows) == {*damages, "sound"}
    reasons = {name: row["damaged"] for name, row in rows.items()}
    assert reasons == {
        "binary-tail": f"metrics.jsonl line {next_line} is not JSON",
        "cut-last-line": None,  # a killed writer's last line: not damage, skipped
        "config-lr-word": "config.json: lr is 'fast', not a finite number",
        "config-list": "config.json: it holds a JSON array, not an object of settings",
        "status-string": "status.json holds a JSON string, not an object",
        "status-pid-word": None,
        "status-pid-huge": None,
        "config-trainer-list": "config.json: trainer is ['nn-softmax'], not a string",
        "test-acc-nan": None,
        "config-fifo": "config.json: it is not a regular file",
        "status-dev-zero": "status.json: it is not a regular file",
        "config-huge": "config.json: it holds 17,000,038 bytes, more than a run's settings take (16,777,216)",
        "checkpoint-fifo": "checkpoint.pt is not a regular file",
        "status-nested-deep": "status.json is not JSON (maximum recursion depth exceeded while decoding a JSON array "
                              "from a unicode string)",
        "config-own-dropout-word": None,  # an own model's settings are its own: shown as they are
        "checkpoint-cut": "checkpoint.pt is not a whole checkpoint (empty or cut short)",
        "val-acc-word": f"metrics.jsonl line {next_line} has val_acc 'high', not a number",
        "test-acc-huge": f"metrics.jsonl line {next_line} has test_acc {BIG[:40]}, not a number",
        "config-trainer-escapes": None,
        "sound": None,
    }, reasons
    assert {name for name, row in rows.items() if row["status"] == "damaged"} == {
        name for name, reason in reasons.items() if reason}
    assert rows["status-pid-word"]["status"] == rows["status-pid-huge"]["status"] == "failed"  # no such process here
    assert rows["test-acc-nan"]["test_acc"] is None  # NaN, written as strict JSON's null
    assert rows["config-own-dropout-word"]["settings"].endswith("8 drop=0.2")
    assert rows["sound"] == {**rows["cut-last-line"], "run": "sound", "path": str(root / "sound")}
    assert rows["sound"]["epochs"] == 2 and rows["sound"]["status"] == "finished"

    table = CliRunner().invoke(cli, ["runs", str(root)])
    assert table.exit_code == 0 and "Traceback" not in table.output
    lines = table.output.splitlines()
    assert len(lines) == 1 + len(rows) + sum(map(bool, reasons.values()))  # heading, a row each, a line per damaged run
    assert "damaged: config-list: config.json: it holds a JSON array" in table.output
    assert "\x1b" not in table.output and "x\\x1b]0;pwned\\x07\\nfake-run" in table.output  # written out, not acted on


def test_runs_are_found_below_folders_nested_deeper_than_python_recurses(finished, tmp_path):
    from trainers.runs.table import find_runs

    root = tmp_path / "runs"
    (root / Path(*["d"] * 300)).mkdir(parents=True)
    shutil.copytree(finished, root / "sound")
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(200)  # deeper folders than Python recurses; fewer than pytest's clean-up, which recurses
    try:
        found = find_runs(root)
    finally:
        sys.setrecursionlimit(limit)
    assert [run.path for run in found] == [root / "sound"]


def test_a_forks_parent_named_with_a_nul_is_no_parent():
    from trainers.runs.table import fork_epoch

    assert fork_epoch({"fork_of": "runs/a\0b", "fork_epoch": 1}, []) == 0


def test_only_the_names_a_run_gives_its_checkpoints_name_a_kept_epoch(run_copy):
    run = RunDir(run_copy)
    kept = run.kept_epochs()
    # a superscript two, an Arabic-Indic three; epoch 5 named otherwise than a fork would look for it
    for name in ("epoch-\u00b2.pt", "epoch-\u0663.pt", "epoch-5.pt", "epoch-00005.pt"):
        (run.epochs_dir / name).touch()
    assert run.kept_epochs() == kept and kept


def test_a_status_json_that_links_elsewhere_is_replaced_not_written_through(run_copy, tmp_path):
    outside = tmp_path / "outside.txt"
    outside.write_bytes(b"x" * 4096)  # as long as a status.json: the in-place rewrite would fit it
    (run_copy / "status.json").unlink()
    (run_copy / "status.json").symlink_to(outside)
    RunDir(run_copy).write_status("finished")
    assert outside.read_bytes() == b"x" * 4096
    assert not (run_copy / "status.json").is_symlink() and RunDir(run_copy).read_status()["status"] == "finished"


def test_a_damaged_last_metrics_line_is_no_loss_resume_continues_from_the_checkpoint(finished, tmp_path, idx_dir):
    whole = train(tmp_path / "whole", Path(json.loads((finished / "config.json").read_text())["data_dir"]),
                  "--epochs", "3")
    run = Path(shutil.copytree(finished, tmp_path / "killed" / finished.name))
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"kind": "step", "epoch": 3, "step": 9, "train_lo')  # a writer killed mid-line
    result = CliRunner().invoke(cli, ["nn-softmax", "--resume", str(run), "--no-viz", "--epochs", "3"])
    assert result.exit_code == 0, result.output
    assert records(run) == records(whole)
    config = json.loads((run / "config.json").read_text())
    assert config["epochs"] == 3  # the run is now one of 3 epochs: `runs` shows 3/3
    assert CliRunner().invoke(cli, ["runs", str(run.parent), "--json"]).output.count('"epochs_planned": 3') == 1


def test_resume_takes_data_dir_for_data_that_moved(run_copy, tmp_path):
    data_moved(run_copy)
    moved = write_idx_dir(tmp_path / "new-home")
    result = CliRunner().invoke(cli, ["nn-softmax", "--resume", str(run_copy), "--data-dir", str(moved), "--no-viz",
                                      "--epochs", "3"])
    assert result.exit_code == 0, result.output
    assert json.loads((run_copy / "config.json").read_text())["data_dir"] == str(moved)
    assert [r["epoch"] for r in records(run_copy) if r["kind"] == "epoch"] == [1, 2, 3]


# ---------------------------------------------------------------- one writer per run folder


def wait_until(done, proc: subprocess.Popen, what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        assert proc.poll() is None, f"the trainer exited before {what}: {proc.communicate()}"
        assert time.monotonic() < deadline, f"no {what} after {timeout} s"
        time.sleep(0.05)


@pytest.mark.slow
def test_a_second_writer_is_refused_naming_the_first_and_a_killed_one_lets_go(tmp_path):
    data = write_idx_dir(tmp_path / "idx", n_train=3000)  # 750 steps an epoch at batch 4
    out = tmp_path / "runs"
    proc = subprocess.Popen([sys.executable, "-m", "trainers", "mlp", "--data-dir", str(data), "--epochs", "3",
                             "--batch-size", "4", "--no-viz", "--out", str(out)],
                            env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: any(out.glob("*/checkpoint.pt")), proc, "a first checkpoint")
        (run,) = out.iterdir()
        status = json.loads((run / "status.json").read_text())
        assert (status["status"], status["pid"], status["host"]) == ("running", proc.pid, HOST)

        for args in (["--epochs", "5"], []):  # two terminals on one run: the second is refused, whatever it asks
            second = CliRunner().invoke(cli, ["mlp", "--resume", str(run), "--no-viz", *args])
            assert_one_line_error(second, f"{run} is in use", f"pid {proc.pid} on {HOST}")
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    # The kernel let go of the killed process's lock: the run continues from its checkpoint.
    resumed = CliRunner().invoke(cli, ["mlp", "--resume", str(run), "--no-viz", "--epochs", "2"])
    assert resumed.exit_code == 0, resumed.output
    epochs = [r["epoch"] for r in records(run) if r["kind"] == "epoch"]
    assert epochs == [1, 2], "each epoch once"
    assert json.loads((run / "status.json").read_text())["status"] == "finished"


def test_the_lock_is_the_kernels_and_held_only_while_writing(tmp_path):
    from trainers.core.run import Busy

    run = RunDir.create(tmp_path, "mlp")
    run.write_status("running")
    with run.writing():
        with pytest.raises(Busy, match=f"pid {os.getpid()} on {HOST} is writing it"):
            with run.writing():
                pass
    with run.writing():  # released when the block ended
        pass


# ---------------------------------------------------------------- a full disk


@pytest.fixture
def small_disk(tmp_path):
    """A 4 MB tmpfs mounted in the test's folder (needs root), unmounted afterwards."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(disk)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        missing(f"cannot mount a small tmpfs for the full-disk test (needs root): {mounted.stderr.strip()}")
    try:
        yield disk
    finally:
        subprocess.run(["umount", str(disk)], check=False)
        if os.path.ismount(disk):
            subprocess.run(["umount", "-l", str(disk)], check=False)


def test_a_full_disk_ends_the_run_in_one_line_keeping_the_last_checkpoint(small_disk, idx_dir, tmp_path):
    import torch

    args = ["--hidden", "64", "--log-every", "1000", "--epochs", "4"]
    probe = train(tmp_path / "probe", idx_dir, *args[:4], "--epochs", "1", trainer="mlp")
    size = (probe / "checkpoint.pt").stat().st_size
    # Room for the run's small files and one checkpoint and a half: the second save cannot fit
    # beside the first (a save writes the new one whole before it replaces the old).
    filler = small_disk / "filler"
    filler.write_bytes(b"\0" * (shutil.disk_usage(small_disk).free - int(1.5 * size) - 64 * 1024))
    out = small_disk / "runs"

    result = CliRunner().invoke(cli, ["mlp", "--data-dir", str(idx_dir), "--out", str(out), "--no-viz", *args])
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("Error: no space left on the disk holding ") and "Traceback" not in result.output
    (run,) = out.iterdir()
    assert f"the last checkpoint (1 epoch done) and the metrics are intact in {run}" in lines[-1]
    assert f"--resume {run}" in lines[-1] and " free)" in lines[-1]
    assert torch.load(run / "checkpoint.pt", weights_only=True)["progress"]["epoch"] == 1
    assert all(json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines())
    status = json.loads((run / "status.json").read_text())
    assert status["status"] == "failed" and "No space left" in status["error"]
    assert not list(run.glob(".*.partial"))
    assert CliRunner().invoke(cli, ["runs", str(out), "--json"]).output.count('"status": "failed"') == 1

    filler.unlink()  # space again: the run continues where its checkpoint left it
    resumed = CliRunner().invoke(cli, ["mlp", "--resume", str(run), "--no-viz"])
    assert resumed.exit_code == 0, resumed.output
    assert [r["epoch"] for r in records(run) if r["kind"] == "epoch"] == [1, 2, 3, 4]


def test_appends_are_whole_or_cut_back(tmp_path, monkeypatch):
    """A write that fails part way (the disk filled) leaves the file as it was."""
    import errno

    from viz import paths

    target = tmp_path / "metrics.jsonl"
    target.write_bytes(b'{"step": 1}\n')
    real_write, calls = os.write, []

    def half_then_full(fd, data):
        calls.append(len(data))
        if len(calls) == 1:
            return real_write(fd, bytes(data[: len(data) // 2]))
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(paths.os, "write", half_then_full)
    with pytest.raises(OSError) as raised:
        paths.append_whole(target, b'{"step": 2, "train_loss": 0.5}\n')
    assert raised.value.errno == errno.ENOSPC and raised.value.filename == str(target)
    assert target.read_bytes() == b'{"step": 1}\n'


def test_the_status_is_rewritten_in_place_when_no_new_file_fits(tmp_path, monkeypatch):
    import errno

    from trainers.core import run as run_module

    run = RunDir.create(tmp_path, "mlp")
    run.write_status("running")
    assert run.status_file.stat().st_size == run_module.STATUS_BYTES

    def full(target, data):
        raise OSError(errno.ENOSPC, "No space left on device", str(target))

    monkeypatch.setattr(RunDir, "_replace", staticmethod(full))
    run.write_status("failed", error="OSError: [Errno 28] No space left on device")
    assert run.read_status()["status"] == "failed"
    assert run.status_file.stat().st_size == run_module.STATUS_BYTES


# ---------------------------------------------------------------- sweeps


SWEEP = ["--val-size", "100", "--batch-size", "32", "--no-viz", "--epochs", "1"]


def sweep_trials(folder: Path):
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    storage = JournalStorage(JournalFileBackend(str(folder / "journal.log")))
    (summary,) = optuna.get_all_study_summaries(storage)
    return optuna.load_study(study_name=summary.study_name, storage=storage).get_trials()


def test_a_trial_that_crashes_is_failed_in_the_storage_and_its_folder(idx_dir, tmp_path, monkeypatch):
    """A bug inside a trial: the worker records it and goes on; the sweep then ends in one line, exit 1."""
    from trainers.catalog import TRAINERS
    from trainers.core import training as command
    from trainers.sweeps import study as sweep
    from trainers.sweeps.space import parse_params

    out = tmp_path / "runs"
    args = ["sweep", "mlp", "--data-dir", str(idx_dir), "--out", str(out), *SWEEP, "--param", "lr=0.05|0.1",
            "--study", "crash"]
    ctx = cli.commands["sweep"].commands["mlp"].make_context("mlp", args[2:])
    options = {k: v for k, v in ctx.params.items() if k not in ("specs", "sampler", "trials", "prune", "pruner",
                                                                "refit", "study", "storage", "jobs", "heartbeat")}
    params = parse_params(ctx.params["specs"], TRAINERS["mlp"].config, ctx.command, ctx)
    plan = sweep.plan("mlp", TRAINERS["mlp"].config(trainer="mlp", **{**options, "test": False}).to_dict(), params,
                      study="crash", storage=None, sampler=None, trials=None, prune=None, jobs=1, heartbeat=10)
    sweep.open_study(plan, sweep.open_storage(plan))

    def boom(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(command, "fit", boom)
    sweep._work(plan, 0, threading.Event())  # this process is the worker: the crash happens here

    trials = sweep_trials(out / "crash")
    assert [(t.state.name, t.user_attrs.get("ended"), t.user_attrs.get("error")) for t in trials] == [
        ("FAIL", "failed", "RuntimeError: boom")] * 2
    folders = [RunDir(Path(t.user_attrs["run_dir"])) for t in trials]
    assert [f.read_status()["status"] for f in folders] == ["failed", "failed"]

    # The same command again runs nothing new, and says in one line that no trial finished.
    again = CliRunner().invoke(cli, args)
    assert again.exit_code == 1, again.output
    (line,) = again.stderr.strip().splitlines()
    assert line.startswith("Error: no trial finished: 2 of 2 trials failed (trial 0: RuntimeError: boom)")
    assert len(sweep_trials(out / "crash")) == 2


@pytest.mark.slow
def test_a_sweep_whose_every_trial_fails_exits_1_in_one_line(idx_dir, tmp_path):
    out = tmp_path / "runs"
    args = ["sweep", "mlp", "--data-dir", str(idx_dir), "--out", str(out), *SWEEP, "--param", "batch-size=600|700",
            "--jobs", "5"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 1, result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith(("Error", "--jobs"))]
    assert errors == ["--jobs 5 is more than the 2 trials: 2 workers here",
                      f"Error: no trial finished: 2 of 2 trials failed (trial 0: --batch-size 600 is larger than the "
                      f"500 training samples); the workers' logs are in {next(out.iterdir())}"]
    folder = next(out.iterdir())
    assert {t.state.name for t in sweep_trials(folder)} == {"FAIL"}


def test_jobs_are_capped_by_the_trials_and_by_memory(capsys):
    from trainers.sweeps.study import WORKER_MEMORY, capped_jobs

    assert capped_jobs(8, 3, None) == 3
    assert capped_jobs(4, 10, int(2.5 * WORKER_MEMORY)) == 2
    assert capped_jobs(2, 10, 100) == 1  # one worker always runs
    assert capped_jobs(2, 10, 64 * WORKER_MEMORY) == 2
    assert capsys.readouterr().err.splitlines() == [
        "--jobs 8 is more than the 3 trials: 3 workers here",
        "--jobs 4 would take about 2.73 GB of memory (700 MB a worker) and 1.71 GB is free: 2 workers here",
        "--jobs 2 would take about 1.37 GB of memory (700 MB a worker) and 100 bytes is free: 1 worker here"]


@pytest.mark.slow
def test_a_half_written_journal_line_is_recovered_and_a_damaged_one_refused(idx_dir, tmp_path):
    out = tmp_path / "runs"
    args = ["sweep", "mlp", "--data-dir", str(idx_dir), "--out", str(out), *SWEEP, "--param", "lr=0.1",
            "--study", "j"]
    assert CliRunner().invoke(cli, args).exit_code == 0
    journal = out / "j" / "journal.log"
    whole = journal.read_bytes()
    half = b'{"op_code":5,"worker_id":"x","trial_id":0,"sta'
    journal.write_bytes(whole + half)  # a writer killed in the middle of its line

    again = CliRunner().invoke(cli, args)
    assert again.exit_code == 0, again.output
    assert f"recovered the journal {journal}: its last line was half-written" in again.stderr
    assert (out / "j" / f"journal.log.cut-{len(whole)}").read_bytes() == half  # nothing lost
    assert [t.state.name for t in sweep_trials(out / "j")] == ["COMPLETE"]
    assert CliRunner().invoke(cli, args).exit_code == 0  # and it stays readable

    lines = journal.read_bytes().splitlines(keepends=True)
    journal.write_bytes(b"".join([*lines[:2], b"garbage\n", *lines[2:]]))
    damaged = journal.read_bytes()
    refused = CliRunner().invoke(cli, args)
    assert_one_line_error(refused, f"the journal {journal} is damaged at line 3", "restore it from a copy")
    assert journal.read_bytes() == damaged  # never made worse


def test_the_chosen_trials_test_record_is_written_once(idx_dir, tmp_path):
    """Two sweeps ending together: one measures the test accuracy, the other waits and reads it."""
    from trainers.sweeps.study import test_record

    run = RunDir(train(tmp_path / "runs", idx_dir, "--epochs", "1", "--val-size", "100", "--no-test"))
    other = {}

    def other_sweep() -> None:
        with run.writing():
            other["holding"] = True
            time.sleep(1.0)
            run.append_metrics([{"kind": "test", "epoch": 1, "step": 16, "test_loss": 0.5, "test_acc": 0.25}])

    thread = threading.Thread(target=other_sweep)
    thread.start()
    while not other.get("holding"):
        time.sleep(0.01)
    assert test_record(run, "cpu")["test_acc"] == 0.25  # waited for the other, then read its record
    thread.join()
    assert [r["kind"] for r in run.read_metrics()].count("test") == 1


# ---------------------------------------------------------------- the login secret


def test_the_login_secret_is_0600_in_a_0700_folder(tmp_path, monkeypatch):
    from viz.server import manager as server

    home = tmp_path / "home"
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("VISDOM_USERNAME", "ann")
    monkeypatch.setenv("VISDOM_PASSWORD", "pw")
    monkeypatch.setenv("VISDOM_COOKIE", "a-secret-of-the-users")
    server._login_env(dict(os.environ))
    folder, secret = home / ".visdom", home / ".visdom" / "COOKIE_SECRET"
    assert (folder.stat().st_mode & 0o777, secret.stat().st_mode & 0o777) == (0o700, 0o600)
    assert secret.read_text() == "a-secret-of-the-users"

    # One written by an older trainviz or by visdom itself (0644 in 0755) is made private, kept as it is.
    os.chmod(folder, 0o755)
    os.chmod(secret, 0o644)
    monkeypatch.delenv("VISDOM_COOKIE")
    server._login_env(dict(os.environ))
    assert (folder.stat().st_mode & 0o777, secret.stat().st_mode & 0o777) == (0o700, 0o600)
    assert secret.read_text() == "a-secret-of-the-users"


def test_a_fresh_login_secret_is_random_and_private(tmp_path, monkeypatch):
    from viz.server import manager as server

    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("VISDOM_USERNAME", "ann")
    monkeypatch.setenv("VISDOM_PASSWORD", "pw")
    monkeypatch.delenv("VISDOM_COOKIE", raising=False)
    env = server._login_env({})
    secret = tmp_path / ".visdom" / "COOKIE_SECRET"
    assert len(secret.read_text()) == 64 and secret.stat().st_mode & 0o777 == 0o600
    assert "VISDOM_COOKIE" not in env


# ---------------------------------------------------------------- data that is not what it says


def test_a_failed_download_leaves_the_data_dir_as_it_was(tmp_path, monkeypatch):
    from torchvision import datasets

    from tests.conftest import free_port

    monkeypatch.setattr(datasets.MNIST, "mirrors", [f"http://127.0.0.1:{free_port()}/"])
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("mine")
    result = CliRunner().invoke(cli, ["mlp", "--dataset", "mnist", "--data-dir", str(empty), "--no-viz",
                                      "--out", str(tmp_path / "runs")])
    assert_one_line_error(result, "download", "failed")
    assert snapshot(empty) == {"notes.txt": b"mine"} and [p.name for p in empty.iterdir()] == ["notes.txt"]


def test_fashion_mnist_files_are_not_taken_for_mnist(tmp_path):
    from tests.conftest import FASHION_DIR

    if not (FASHION_DIR / "train-labels-idx1-ubyte.gz").is_file():
        missing(f"Fashion-MNIST is not installed in {FASHION_DIR} (apt-get install dataset-fashion-mnist)")
    result = CliRunner().invoke(cli, ["mlp", "--dataset", "mnist", "--data-dir", str(FASHION_DIR), "--no-viz",
                                      "--out", str(tmp_path / "runs")])
    assert_one_line_error(result, "hold Fashion-MNIST, not MNIST", "--dataset fashion-mnist")
    assert not (tmp_path / "runs").exists()


# ---------------------------------------------------------------- events of the wrong shape


def test_events_the_renderer_cannot_draw_are_skipped_and_counted(tmp_path):
    from viz.dashboard.sink import RecordingSink, read_events

    sink = RecordingSink()
    sink.scalars("loss", x=1, values={"train": 0.5})
    sink.series("train_loss", [1, 2], {"loss": [2.0, float("nan")]})
    sink.images("samples", np.zeros((2, 28, 28)), ["a", "b"], [True, False])
    sink.table("predictions", "Epoch 1", ["#", "true"], [[1, "a"]], [False])
    sink.text("mistakes", "none")
    sink.confusion("confusion", [[1, 0], [0, 1]], ["a", "b"])
    sink.config({"lr": 0.1})
    sink.save()
    good = sink.events
    bad = [
        {"kind": "scalars", "win": "nowhere", "x": 1, "values": {"a": 1}},  # no such window
        {"kind": "scalars", "win": "loss", "x": "one", "values": {"a": 1}},
        {"kind": "scalars", "win": "loss", "x": 1, "values": {"a": 1}, "env": "another-users-env"},
        {"kind": "series", "win": "train_loss", "x": [1, 2], "values": {"loss": [1.0]}},
        {**good[2], "pixels": good[2]["pixels"][:-8]},  # fewer pixels than its shape says
        {**good[2], "shape": [2, 28, -28]},
        {"kind": "table", "win": "predictions", "caption": "c", "headings": ["#"], "rows": [[{"b": 1}]],
         "marked": [False]},
        {"kind": "text", "win": "mistakes"},
        {"kind": "confusion", "win": "confusion", "counts": [[1, 0]], "classes": ["a", "b"]},
        {"kind": "bars", "win": "class_acc", "values": [1.0], "names": ["a", "b"]},
        {"kind": "histogram", "win": "weights", "series": {}},
        {"kind": "confusion", "win": "confusion", "counts": [], "classes": []},
        {"kind": "confusion", "win": "confusion", "counts": [[None, 0], [0, 1]], "classes": ["a", "b"]},
        {"kind": "confusion", "win": "confusion", "counts": [[10**400, 0], [0, 1]], "classes": ["a", "b"]},
        {"kind": "bars", "win": "class_acc", "values": [None], "names": ["a"]},
        {"kind": "heatmap", "win": "log:h", "matrix": [], "rows": [], "columns": []},
        {"kind": "axes", "win": "log:loss", "xlabel": "", "ylabel": "", "xlim": [0, 10**400], "ylim": None,
         "xscale": "linear", "yscale": "linear"},
        {**good[2], "shape": [100_000, 1, 1], "pixels": base64.b64encode(bytes(100_000)).decode(),
         "captions": [""] * 100_000, "marked": [False] * 100_000},  # a small line asking gigabytes of tiles
        {"kind": "config", "win": "config", "settings": [1]},
        {"kind": "exec", "win": "loss"},
        {"kind": ["scalars"], "win": "loss"},
        ["not", "an", "event"],
    ]
    path = tmp_path / "events.jsonl"
    path.write_text("".join(json.dumps(event) + "\n" for event in [*good, *bad]) + DEEP + "\n")
    assert read_events(path) == (json.loads(json.dumps(good)), len(bad) + 1)
    fifo = tmp_path / "fifo.jsonl"
    os.mkfifo(fifo)
    with pytest.raises(OSError, match="not a regular file"):  # a reader of it would wait for a writer forever
        read_events(fifo)



def one_event_of_each_kind() -> list[dict]:
    """A good event of every kind the renderer draws, each window one it knows."""
    from viz.dashboard.controls import PaneState
    from viz.dashboard.sink import KINDS, RecordingSink

    sink = RecordingSink()
    sink.scalars("loss", x=1, values={"train": 0.5})
    sink.series("log:curve", [1, 2], {"a": [2.0, 1.0]})
    sink.images("samples", np.zeros((2, 4, 4), np.uint8), ["a", "b"], [True, False])
    sink.templates("templates", np.zeros((2, 4, 4), np.float32), ["a", "b"], columns=2)
    sink.text("mistakes", "none")
    sink.table("predictions", "Epoch 1", ["#", "true"], [[1, "a"]], [False])
    sink.heatmap("log:map", [[1.0, 2.0]], ["r"], ["c1", "c2"])
    sink.confusion("confusion", [[1, 0], [0, 1]], ["a", "b"])
    sink.bars("class_acc", [0.5, 0.7], ["a", "b"])
    sink.histogram("weights", {"w": ([0.0, 1.0], [0.5, 0.5])})
    sink.axes("log:curve", ylim=(0.0, 1.0), yscale="linear")
    sink.trials([{"number": 0, "params": {"lr": 0.1}, "state": "COMPLETE", "value": 0.8, "epochs": 2,
                  "curve": [[1, 0.7], [2, 0.8]], "seconds": 3.0, "env": "s_0"}], ["lr"])
    sink.controls(PaneState(lr=0.1))
    sink.config({"lr": 0.1})
    sink.outcome("finished", {"test_acc": 0.8})
    sink.save()
    assert {event["kind"] for event in sink.events} == KINDS
    return sink.events


ODD_VALUES = [None, True, 0, -1, 1.5, 10**400, "", "x", [], [[]], [1, 2, 2, 3], [None], ["a"], [[1, 2], [3]],
              {}, {"a": []}, {"a": None}, {"a": [1, 2, 3]}, {"a": {}}, {"a": {"centers": [], "density": []}}]


def test_every_event_that_passes_the_check_is_drawn_without_an_error():
    """One field of a good event at a time set to an odd value: skipped, or drawn; never an exception."""
    from unittest.mock import MagicMock

    from viz.dashboard.client import Client
    from viz.dashboard.render import Renderer
    from viz.dashboard.sink import drawable

    events = one_event_of_each_kind()
    templates = next(event for event in events if event["kind"] == "templates")
    colour = {**templates, "shape": [1, 4, 4, 3], "captions": ["a"],
              "values": base64.b64encode(np.zeros(48, np.float32).tobytes()).decode()}
    odd = [{**event, field: value} for event in events for field in event for value in ODD_VALUES] + [
        {"kind": "series", "win": "log:curve", "x": [], "values": {"a": []}},  # fields odd only together
        {"kind": "text", "win": "mistakes", "text": 5, "html": "an older run's pane"},
        colour]
    assert all(map(drawable, events))
    drawn = 0
    for event in odd:
        if drawable(event):
            vis = MagicMock(spec=Client)
            vis.win_exists.return_value = False
            Renderer(vis, "env").render([event])
            drawn += 1
    assert drawn > 50, drawn  # the odd values a kind takes (an empty caption, another number) are drawn

def test_a_logged_windows_name_is_escaped_in_a_figures_title():
    from unittest.mock import MagicMock

    from viz.dashboard.render import send_figure

    vis = MagicMock()
    send_figure(vis, "env", "log:<a href='x'>click</a>", {"data": [], "layout": {}})
    sent = vis._send.call_args.args[0]
    assert sent["opts"]["title"] == sent["layout"]["title"]["text"] == "&lt;a href='x'&gt;click&lt;/a&gt;"


# ---------------------------------------------------------------- a hostile events file, in a real browser

ATTACK = "<img src=x onerror=\"document.body.setAttribute('data-pwned', '1')\">"

PAGE_JS = """() => ({
    pwned: document.body.hasAttribute('data-pwned') || window.pwned === 1,
    handlers: document.querySelectorAll('[onerror], [onload]:not(body):not(iframe)').length,
    injected: document.querySelectorAll('img[src="x"], .window script').length,
    panes: Array.from(document.querySelectorAll('.window')).map(w => (w.querySelector('.content') || w).innerText),
})"""


@pytest.mark.slow
def test_a_hostile_events_file_puts_no_markup_in_the_page(browser, tmp_path):
    """replay of a run folder someone shared: every string in it reaches the page as text."""
    from test_dashboard_e2e import HOST as LOCAL
    from test_dashboard_e2e import open_env, start_server

    run = tmp_path / "shared-run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"trainer": "mlp", "env": "hostile"}))
    script = "<script>window.pwned = 1; document.body.setAttribute('data-pwned', '2')</script>"
    events = [
        {"kind": "series", "win": "train_loss", "x": [1, 2], "values": {ATTACK: [2.0, 1.5]}},
        {"kind": "scalars", "win": "loss", "x": 1, "values": {ATTACK: 1.0}},
        {"kind": "table", "win": "predictions", "caption": ATTACK, "headings": ["#", ATTACK], "rows": [[1, ATTACK]],
         "marked": [True]},
        {"kind": "text", "win": "mistakes", "html": f"<p>an older run's pane</p>{ATTACK}{script}"},
        {"kind": "text", "win": "templates", "text": f"{ATTACK}{script}"},
        {"kind": "confusion", "win": "confusion", "counts": [[1, 0], [0, 1]], "classes": [ATTACK, "b"]},
        {"kind": "bars", "win": "class_acc", "values": [0.5, 1.0], "names": [ATTACK, "b"]},
        {"kind": "config", "win": "config", "settings": {ATTACK: ATTACK}},
        {"kind": "save"},
    ]
    (run / "events.jsonl").write_text("".join(json.dumps(event) + "\n" for event in events))
    server = start_server(tmp_path / "visdom")
    try:
        result = CliRunner().invoke(cli, ["replay", str(run), "--server", LOCAL, "--port", str(server.port)])
        assert result.exit_code == 0 and "damaged" not in result.output, result.output
        page = browser.new_page(viewport={"width": 1600, "height": 1000})
        open_env(page, server.port, "hostile", 8, tmp_path / "hostile.png")
        page.wait_for_timeout(1500)  # time for an injected handler to fire
        shown = page.evaluate(PAGE_JS)
        legends = page.eval_on_selector_all(".legendtext", "ts => ts.map(t => t.textContent)")
        ticks = page.eval_on_selector_all(".xtick text, .ytick text", "ts => ts.map(t => t.textContent)")
    finally:
        server.stop()
    assert not shown["pwned"], "script from the events file ran in the dashboard"
    assert (shown["handlers"], shown["injected"]) == (0, 0), shown
    typed = "<img src=x onerror="
    older = [text for text in shown["panes"] if "an older run's pane" in text]
    assert len(older) == 1 and "<" not in older[0], shown["panes"]  # its tags dropped, its words kept
    # Every other window shows the string as typed: panes, legends, tick labels, settings.
    assert sum(typed in text for text in shown["panes"]) == len(shown["panes"]) - 1 == 7, shown["panes"]
    assert any(typed in legend for legend in legends), legends  # trace names read as typed
    assert any(typed in tick for tick in ticks), ticks  # so do class names
