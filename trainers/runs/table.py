"""What the run folders under a directory hold, read from their files: ``trainviz runs`` and ``compare``.

Nothing here imports torch: a table of a hundred runs answers at once.
"""

from __future__ import annotations

import json
import os
import re
import socket
from pathlib import Path

from trainers.core.run import Damaged, RunDir, is_number, is_whole, process_alive

# The table's columns: (key, heading). Sorting by an accuracy puts the best first.
COLUMNS = (("run", "run"), ("trainer", "trainer"), ("status", "status"), ("settings", "settings"),
           ("epochs", "epochs"), ("val_acc", "best val acc"), ("test_acc", "test acc"), ("seconds", "seconds"),
           ("lineage", "lineage"))
DESCENDING = {"val_acc", "test_acc", "epochs", "seconds"}


def find_runs(root: Path) -> list[RunDir]:
    """Every run folder under ``root`` (any depth, sweep trials included), in path order."""
    found, folders = [], [root]  # a stack, not rglob's recursion: folders may nest deeper than Python recurses
    while folders:
        try:
            entries = list(os.scandir(folders.pop()))
        except OSError:  # unreadable, or gone meanwhile
            continue
        for entry in entries:
            if entry.name == "config.json":  # a folder or a link there too: a damaged run, listed as one
                found.append(Path(entry.path))
            elif entry.is_dir(follow_symlinks=False):
                folders.append(entry.path)
    return [RunDir(config.parent) for config in sorted(found)]


def settings_text(config: dict) -> str:
    """The settings that tell runs apart, short: ``lr=0.1 bs=160 mom=0.9 cosine 200,200 drop=0.2``.

    A user's loop's run (``viz.init``) shows its own settings as ``name=value``.
    """
    if config.get("source") == "viz.init":
        user = config.get("config") if isinstance(config.get("config"), dict) else {}
        text = " ".join(f"{k}={v if isinstance(v, (int, float, str)) else json.dumps(v)}" for k, v in user.items())
        return text if len(text) <= 60 else text[:57] + "..."
    def g(value) -> str:  # a number as short as it goes; anything else (a damaged setting) as its text
        return f"{value:g}" if is_number(value) else f"{str(value):.20}"

    parts = [f"lr={g(config.get('lr', 0))}", f"bs={config.get('batch_size')}"]
    if config.get("momentum"):
        parts.append(f"mom={g(config['momentum'])}")
    if config.get("weight_decay"):
        parts.append(f"wd={g(config['weight_decay'])}")
    if config.get("schedule", "constant") != "constant":
        parts.append(str(config["schedule"]))
    if isinstance(config.get("hidden"), list):
        parts.append(",".join(map(str, config["hidden"])))
        if config.get("trainer") == "mlp":
            parts.append(str(config.get("activation", "relu")))
        if config.get("dropout"):
            parts.append(f"drop={g(config['dropout'])}")
    own = config.get("own_settings") if isinstance(config.get("own_settings"), list) else []
    parts += [f"{name}={config[name]}" for name in own if isinstance(name, str) and name in config]
    return " ".join(parts)


def status_of(run: RunDir) -> str:
    """The status the run wrote; a "running" run whose process is gone from this host is "failed"."""
    status = run.read_status()
    if status.get("status") == "running" and status.get("host") == socket.gethostname() \
            and not process_alive(status.get("pid", 0)):
        return "failed"
    return status.get("status", "-")


def record_problem(record) -> str | None:
    """Why an epoch or test record cannot be shown: a field of the wrong type; None when it can."""
    if not isinstance(record, dict):
        return "is not a metrics record"
    if record.get("kind") == "epoch" and not is_whole(record.get("epoch")):
        return "is an epoch record without a whole-number epoch"
    for key, value in record.items():
        if (key.endswith(("_acc", "_loss")) or key == "seconds") and not is_number(value):
            return f"has {key} {value!r:.40}, not a number"
    return None


# A user's loop (``viz.init``) that logs val/acc, test/acc, val/loss or test/loss: each such log is an epoch here.
HELD_OUT = re.compile(rb'"(val|test)/(acc|loss)"')
LOGGED_COLUMNS = {"train/loss": "train_loss", "train/acc": "train_acc", "val/acc": "val_acc", "val/loss": "val_loss",
                  "test/acc": "test_acc", "test/loss": "test_loss"}


def evaluation_record(record: dict, epoch: int) -> dict | None:
    """A user loop's log record of held-out results as an epoch record (``epoch``: its count); None if it has none.

    Held-out results logged at one step (val/acc, then test/acc) are one epoch: ``epoch_records``
    merges the records of a step.
    """
    found = {column: record[name] for name, column in LOGGED_COLUMNS.items() if is_number(record.get(name))}
    if not any(column.startswith(("val_", "test_")) for column in found):
        return None
    return {"kind": "epoch", "epoch": epoch, "step": record.get("step"), **found}


def epoch_records(run: RunDir) -> list[dict]:
    """The run's epoch and test records from metrics.jsonl (step records are skipped unparsed).

    Raises:
        Damaged: a line other than the last is not a record that can be shown.
    """
    records = []
    if run.metrics_file.is_file():
        with open(run.metrics_file, "rb") as f:
            for number, line in enumerate(f, 1):
                if b'"kind": "step"' in line or not line.endswith(b"\n") or not line.strip():
                    continue  # step records are most of the file; a line being written is not whole yet
                if line.startswith((b'{"kind": "log"', b'{"kind": "plot"')) and not HELD_OUT.search(line):
                    continue  # a user's loop's per-step values
                try:
                    record = json.loads(line)
                except (ValueError, RecursionError):  # UnicodeDecodeError included
                    raise Damaged(run.metrics_file, f"line {number} is not JSON") from None
                if isinstance(record, dict) and record.get("kind") == "log":
                    logged = evaluation_record(record, len(records) + 1)
                    if logged is None:
                        continue
                    if records and records[-1].get("step") == logged["step"]:  # one step's logs: one epoch
                        records[-1].update({k: v for k, v in logged.items() if k != "epoch"})
                        continue
                    record = logged
                problem = record_problem(record)
                if problem:
                    raise Damaged(run.metrics_file, f"line {number} {problem}")
                records.append(record)
    return records


def problems(run: RunDir) -> tuple[dict, list[dict], list[str]]:
    """What can be read of a run (its config, its epoch records) and what is damaged in it, each in a phrase."""
    found, config, records = [], {}, []
    try:
        config = run.read_config()
    except Damaged as err:
        found.append(f"config.json: {err.problem}")
    except OSError as err:
        found.append(f"config.json cannot be read ({err.strerror})")
    try:
        records = epoch_records(run)
    except Damaged as err:
        found.append(f"metrics.jsonl {err.problem}")
    except OSError as err:
        found.append(f"metrics.jsonl cannot be read ({err.strerror})")
    found += [problem for problem in (run.status_problem(), run.checkpoint_problem()) if problem]
    return config, records, found


def shown_trainer(trainer) -> str:
    """The trainer as the table names it: a model file of one's own by its file name (``lenet.py``)."""
    return Path(trainer).name if isinstance(trainer, str) and trainer.endswith(".py") else str(trainer)


def lineage(config: dict, records: list[dict]) -> str | None:
    """Where a run comes from and what was done to it: ``fork of mlp-...@3``, ``steered``; None for neither.

    A fork names its parent's folder and epoch (config.json); a run whose learning rate
    was changed from its dashboard has control records.
    """
    notes = []
    if isinstance(config.get("fork_of"), str) and is_number(config.get("fork_epoch")):
        notes.append(f"fork of {Path(config['fork_of']).name}@{config['fork_epoch']}")
    if any(r.get("kind") == "control" and r.get("action") == "lr" for r in records):
        notes.append("steered")
    return ", ".join(notes) or None


def summary(run: RunDir, root: Path) -> dict:
    """One row of the table; a damaged run's row says "damaged" and, under ``damaged``, what is."""
    config, records, found = problems(run)
    epochs = [r for r in records if r.get("kind") == "epoch"]
    val = [r["val_acc"] for r in epochs if "val_acc" in r]
    test = [r["test_acc"] for r in records if "test_acc" in r]
    planned = config.get("epochs")
    if config.get("source") == "viz.init":  # a user's loop: the epochs its own config plans, if it says
        user = config.get("config")
        planned = user.get("epochs") if isinstance(user, dict) and is_number(user.get("epochs")) else None
    return {
        "run": str(run.path.relative_to(root)) if run.path != root else run.name,
        "trainer": shown_trainer(config.get("trainer", "?")),
        "status": "damaged" if found else status_of(run),
        "settings": settings_text(config) if config else "-",
        "epochs": len(epochs),
        "epochs_planned": planned,
        "val_acc": max(val) if val else None,
        "test_acc": test[-1] if test else None,
        "seconds": round(sum(r.get("seconds", 0) for r in epochs), 1),
        "lineage": lineage(config, records),
        "path": str(run.path),
        "damaged": "; ".join(found) or None,
    }


def sort_rows(rows: list[dict], column: str) -> list[dict]:
    """Rows sorted by ``column``: accuracies, epochs and time largest first, text A-Z; empty cells last."""
    present = [r for r in rows if r[column] is not None]
    missing = [r for r in rows if r[column] is None]
    return sorted(present, key=lambda r: r[column], reverse=column in DESCENDING) + missing


def format_table(rows: list[dict]) -> str:
    """The rows as an aligned text table."""
    def cell(row: dict, key: str) -> str:
        value = row[key]
        if key == "epochs":
            return f"{value}/{row['epochs_planned'] or '?'}"
        if key in ("val_acc", "test_acc"):
            return "-" if value is None else f"{value:.4f}"
        return "-" if value is None else str(value)

    table = text_table([[heading for _, heading in COLUMNS],
                        *[[printable(cell(row, key)) for key, _ in COLUMNS] for row in rows]])
    notes = [printable(f"damaged: {row['run']}: {row['damaged']}") for row in rows if row.get("damaged")]
    return "\n".join([table, *notes])


def printable(text: str) -> str:
    r"""``text`` with what a terminal would act on (newlines, escape sequences) written out as Python writes it.

    A run folder's files may hold anything: a setting must never add a row or retitle the terminal.

        >>> printable("mlp\n\x1b]0;title\x07")
        'mlp\\n\\x1b]0;title\\x07'
    """
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def text_table(lines: list[list[str]]) -> str:
    """Rows of cells (the first the headings) as left-aligned columns two spaces apart."""
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    return "\n".join("  ".join(text.ljust(width) for text, width in zip(line, widths)).rstrip() for line in lines)


def run_names(runs: list[RunDir]) -> list[str]:
    """Each run's name in compare: its folder's name, or where two folders share one, its path from where they part.

    Folders are named by their start to the second, so runs of two ``--out`` folders
    (a run and its fork, two machines' runs) may share a name.
    """
    paths = [run.path.resolve() for run in runs]
    names = []
    for path in paths:
        twins = {other for other in paths if other.name == path.name}
        names.append(str(path.relative_to(os.path.commonpath(twins))) if len(twins) > 1 else path.name)
    return names


def identical_curves(runs: list[RunDir]) -> list[list[str]]:
    """Groups of run names whose epoch records match in every number but the seconds: drawn, they coincide."""
    groups: dict[str, list[str]] = {}
    for run, name in zip(runs, run_names(runs)):
        curve = [{k: v for k, v in record.items() if k != "seconds"} for record in epoch_records(run)
                 if record.get("kind") == "epoch"]
        groups.setdefault(json.dumps(curve, sort_keys=True), []).append(name)
    return [names for names in groups.values() if len(names) > 1]


def fork_epoch(config: dict, others: list[RunDir]) -> int:
    """The epoch a run forked from one of ``others`` at; 0 when it is no fork of theirs."""
    parent, epoch = config.get("fork_of"), config.get("fork_epoch")
    if not (isinstance(parent, str) and is_whole(epoch)) or "\0" in parent:  # a NUL names no path
        return 0
    try:
        parent_path = Path(parent).resolve()
    except OSError:  # a loop of links, a name too long
        return 0
    return int(epoch) if any(other.path.resolve() == parent_path for other in others) else 0


def comparison_events(runs: list[RunDir], env: str) -> list[dict]:
    """Scalar events drawing the runs' epoch curves into the compare windows of ``env``.

    One trace per run and held-out split in the accuracy and loss windows (named
    ``<run> val`` and ``<run> test``), one per run in the training-loss window. A fork
    compared with its parent is drawn from the epoch it forked at, so its curves branch
    off the parent's there.
    """
    events = []
    for run, name in zip(runs, run_names(runs)):
        config = run.read_config()  # read and checked by the caller: compare refuses a damaged run first
        label = f"{name} ({settings_text(config)})"
        start = fork_epoch(config, [other for other in runs if other is not run])
        for record in epoch_records(run):
            if record.get("kind") != "epoch" or record["epoch"] < start:
                continue
            x = record["epoch"]
            for metric, win in (("acc", "compare_acc"), ("loss", "compare_loss")):
                values = {f"{label} {split}": record[f"{split}_{metric}"] for split in ("val", "test")
                          if f"{split}_{metric}" in record}
                events.append({"kind": "scalars", "win": win, "env": env, "x": x, "values": values})
            if "train_loss" in record:  # a user's loop may log held-out results only
                events.append({"kind": "scalars", "win": "compare_train", "env": env, "x": x,
                               "values": {label: record["train_loss"]}})
    return events
