"""The public API end to end: the README's own example and a notebook, against a real visdom server.

The README's "Your own training loop" example runs exactly as printed there (on small
IDX files in torchvision's layout, so nothing is downloaded), and headless Chromium
checks the windows it drew. A notebook that uses the API runs in a real Jupyter kernel
(nbclient, ipykernel) and shows the run's link; the server holds what it logged.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import missing, write_idx_dir
from test_dashboard_e2e import ARTIFACTS, browser, open_env, visdom_port, window_data  # noqa: F401  (fixtures)

from trainers.runs.table import find_runs, summary
from viz.dashboard.windows import logged, title

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent


def readme_example() -> str:
    """The Python block of the README's "Your own training loop" section, as printed."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Your own training loop"):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_readme_example_runs_as_printed_and_draws_every_window(visdom_port, browser, tmp_path):  # noqa: F811
    write_idx_dir(tmp_path / "data" / "FashionMNIST" / "raw", n_train=1000, n_test=300, gz=False)
    (tmp_path / "cnn.py").write_text(readme_example())
    env = {**os.environ, "PYTHONPATH": str(ROOT), "VISDOM_PORT": str(visdom_port)}
    done = subprocess.run([sys.executable, "cnn.py"], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr
    assert "warning" not in done.stderr, done.stderr
    (run,) = find_runs(tmp_path / "runs")
    row = summary(run, tmp_path / "runs")
    assert (row["trainer"], row["status"], row["epochs"], row["epochs_planned"]) == ("cnn", "finished", 2, 2)
    assert row["test_acc"] > 0.5  # the synthetic task is easy: 10% is chance

    page = browser.new_page(viewport={"width": 1600, "height": 1000})
    expected = {"loss": title(logged("loss")), "acc": title(logged("acc"))} | {
        key: title(key) for key in ("samples", "predictions", "mistakes", "confusion", "class_acc", "templates",
                                    "config")}
    windows = open_env(page, visdom_port, run.name, len(expected), ARTIFACTS / "own-loop.png")
    assert sorted(windows) == sorted(expected.values())
    shown = {key: windows[name] for key, name in expected.items()}
    assert shown["loss"]["legend"] == ["train", "test"] and shown["loss"]["lines"] == 2
    assert shown["acc"]["legend"] == ["test"]
    for key in ("samples", "templates"):
        assert shown[key]["images"] and all(shown[key]["images"]), f"{key}: images not loaded"
    assert (shown["mistakes"]["images"] and all(shown["mistakes"]["images"])) \
        or "No mistakes on the test set" in shown["mistakes"]["text"]  # the synthetic task may be learnt whole
    assert shown["class_acc"]["bars"] == 10 and shown["confusion"]["heatmap"] >= 1
    assert "Ankle boot" in shown["predictions"]["text"] or "Trouser" in shown["predictions"]["text"]
    assert "momentum" in shown["config"]["text"]
    steps = len([line for line in run.metrics_file.read_text().splitlines() if '"train/loss"' in line])
    assert steps == 2 * 8  # 1000 images in batches of 128, two epochs: every step delivered


NOTEBOOK = [
    "import torch\nimport viz",
    "run = viz.init(name='notebook', config={{'lr': 0.1}}, out={out!r}, port={port})\n"
    "for step in range(20):\n    run.log({{'train/loss': torch.tensor(1.0 / (step + 1))}}, step=step)\n"
    "run",
    "run.finish()",
]


def test_a_notebook_shows_the_run_and_no_cell_blocks(visdom_port, tmp_path, monkeypatch):
    try:
        import nbformat
        from nbclient import NotebookClient
    except ImportError:
        missing("nbclient and nbformat are not installed (pip install -e .[test])")
    monkeypatch.setenv("PYTHONPATH", str(ROOT))  # the kernel imports viz from this checkout
    out = tmp_path / "runs"
    notebook = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell(cell.format(out=str(out), port=visdom_port)) for cell in NOTEBOOK])
    NotebookClient(notebook, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    shown = notebook.cells[1].outputs[0]["data"]["text/html"]
    (run,) = find_runs(out)
    assert f"href='http://localhost:{visdom_port}/env/{run.name}'" in shown and "<iframe" in shown
    assert run.read_status()["status"] == "finished"
    window = window_data(visdom_port, run.name)[logged("loss")]
    (trace,) = window["content"]["data"]
    assert trace["name"] == "train" and trace["y"] == pytest.approx([1.0 / (s + 1) for s in range(20)])


def test_nan_and_infinities_are_gaps_that_the_page_can_parse(visdom_port, tmp_path):  # noqa: F811
    from visdom import Visdom

    import viz

    with viz.init(name="diverging", out=tmp_path / "runs", port=visdom_port) as run:
        for step, loss in enumerate([1.0, float("nan"), 0.5, float("inf")]):
            run.log({"train/loss": loss}, step=step)
        run.plot("by_epoch", 1, {"train": float("-inf")})
    vis = Visdom(server="http://localhost", port=visdom_port, use_incoming_socket=False, raise_exceptions=True)
    stored = vis.get_window_data(env=run.env)

    def refuse(constant):
        raise ValueError(f"{constant} is not JSON: the page's JSON.parse would fail on it")

    windows = json.loads(stored, parse_constant=refuse)
    (trace,) = windows[logged("loss")]["content"]["data"]
    assert trace["y"] == [1.0, None, 0.5, None]
    (point,) = windows[logged("by_epoch")]["content"]["data"]
    assert point["y"] == [None]
