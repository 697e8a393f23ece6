"""What keeps the dashboard cheap (the panes' budget, bounded traces) and the new panes' drawing."""

from __future__ import annotations

from unittest.mock import MagicMock

import numpy as np
import pytest

from trainers.core.report import Smoothed
from viz.dashboard import render
from viz.dashboard.client import Client
from viz.dashboard.economy import Budget, decimate
from viz.dashboard.render import CAPTION, TILE, Renderer, confusion_figure, diverging


class Clock:
    """A clock the test moves by hand."""

    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


# --- the budget ---------------------------------------------------------------------------


def test_the_first_refresh_waits_for_its_prior_cost_then_each_next_for_the_last_cost():
    clock = Clock()
    budget = Budget(0.02, clock=clock, prior=0.1)
    clock.now = 4.99
    assert not budget.due()  # an unmeasured refresh is taken to cost 0.1 s: due 5 s in
    clock.now = 5.0
    assert budget.due()
    assert Budget(0.02, clock=clock).due()  # no prior: due at once
    budget.spent(started=0.0, seconds=0.05)  # 50 ms at 2 %: the next one 2.5 s after it began
    clock.now = 2.49
    assert not budget.due()
    clock.now = 2.5
    assert budget.due()


def test_time_spent_in_the_background_counts_towards_the_cost():
    clock, background = Clock(), [1.0]
    budget = Budget(0.05, background=lambda: background[0], clock=clock)
    budget.spent(started=10.0, seconds=0.01)
    background[0] += 0.09  # the sender drew and sent the panes: 90 ms more
    clock.now = 10.0 + 0.01 / 0.05 + 0.1
    assert not budget.due()  # 0.3 s passed; 0.1 s of cost needs 2 s
    clock.now = 12.01
    assert budget.due()


def test_a_cheap_refresh_is_due_again_soon():
    clock = Clock()
    budget = Budget(0.02, clock=clock)
    budget.spent(started=0.0, seconds=0.0001)
    clock.now = 0.005
    assert budget.due()


# --- decimation ---------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(5))
def test_decimation_keeps_the_ends_and_every_buckets_extremes(seed):
    rng = np.random.default_rng(seed)
    n, target = 5000, 200
    x = np.arange(n, dtype=float)
    y = np.cumsum(rng.normal(size=n)) + 50 * (rng.random(n) < 0.002)  # a walk with a few spikes
    dx, dy = decimate(x, y, target)
    assert len(dx) <= target
    assert (dx[0], dy[0], dx[-1], dy[-1]) == (x[0], y[0], x[-1], y[-1])
    assert np.all(np.diff(dx) > 0)  # in order, no point twice
    kept = set(dx.astype(int))
    edges = np.linspace(1, n - 1, (target - 2) // 2 + 1).round().astype(int)
    for start, stop in zip(edges[:-1], edges[1:]):
        assert start + int(y[start:stop].argmin()) in kept and start + int(y[start:stop].argmax()) in kept
    assert dy.max() == y.max() and dy.min() == y.min()  # the spikes survive


def test_a_short_curve_is_not_decimated():
    x, y = np.arange(5.0), np.arange(5.0) ** 2
    dx, dy = decimate(x, y, 10)
    assert dx is x and dy is y


def test_traces_on_the_server_stay_bounded(monkeypatch):
    monkeypatch.setattr(render, "TRACE_CAP", 100)
    vis = MagicMock(spec=Client)
    vis.win_exists.return_value = True
    renderer = Renderer(vis, "run")
    sizes = []
    for start in range(0, 1000, 30):  # 30 steps per flush, as the sender would batch them
        vis.reset_mock()
        renderer.render([{"kind": "scalars", "win": "train_loss", "env": None, "x": float(s),
                          "values": {"loss": 1.0 / (s + 1)}} for s in range(start, min(start + 30, 1000))])
        (sent,) = vis.lines.call_args_list  # the window, drawn whole
        ((name, x, y, _),) = sent.args[0]
        assert name == "loss" and x[0] == 0.0 and x[-1] == float(min(start + 29, 999)) and x == sorted(x)
        sizes.append(len(x))
    assert max(sizes) <= 100
    decimated = sum(later < earlier for earlier, later in zip(sizes, sizes[1:]))
    assert decimated >= 10  # cut back to half the cap now and then, growing in between


# --- the new panes ------------------------------------------------------------------------


def test_confusion_figure_puts_the_first_class_on_top_and_lets_mistakes_show():
    counts = np.array([[90, 10, 0], [5, 95, 0], [0, 20, 80]])
    figure = confusion_figure(counts, ["a", "b", "c"])
    heatmap, layout = figure["data"][0], figure["layout"]
    assert layout["yaxis"]["autorange"] == "reversed" and heatmap["y"] == ["a", "b", "c"]
    shares = np.array(heatmap["z"])
    np.testing.assert_allclose(shares.sum(axis=1), 1.0)
    assert heatmap["zmax"] == pytest.approx(0.2)  # the largest mistake, not the diagonal's 0.95
    assert heatmap["customdata"] == counts.tolist()  # counts on hover
    texts = {(a["y"], a["x"]): a["text"] for a in layout["annotations"]}
    assert texts[(2, 1)] == "20%" and texts[(0, 2)] == ""


def test_diverging_colours_keep_signs_apart():
    weights = np.array([[[1.0, -1.0], [0.0, 0.5]]])
    rgb = diverging(weights)
    assert rgb.shape == (1, 2, 2, 3) and rgb.dtype == np.uint8
    assert rgb[0, 1, 0].tolist() == [255, 255, 255]  # zero is white
    red, blue = rgb[0, 0, 0], rgb[0, 0, 1]
    assert red[0] > red[2] and blue[2] > blue[0]


def test_smoothed_loss_is_a_debiased_moving_average():
    smooth = Smoothed(0.6)
    values = [smooth(v) for v in (2.0, 2.0, 2.0)]
    assert values == pytest.approx([2.0, 2.0, 2.0])  # no pull towards 0 at the start
    assert Smoothed(0.6)(5.0) == 5.0
    smooth = Smoothed(0.6)
    smooth(1.0)
    assert smooth(0.0) == pytest.approx(0.6 * 0.4 / (1 - 0.36))


def test_confusion_and_templates_events_become_one_request_each():
    from viz.dashboard.sink import RecordingSink

    sink = RecordingSink()
    sink.confusion("confusion", [[3, 1], [0, 4]], ["a", "b"])
    sink.templates("templates", np.linspace(-1, 1, 2 * 28 * 28).reshape(2, 28, 28), ["a", "b"], columns=5)
    vis = MagicMock(spec=Client)
    Renderer(vis, "run").render(sink.events)

    (sent,) = vis._send.call_args_list
    message = sent.args[0]
    assert message["win"] == "confusion" and message["eid"] == "run"
    assert message["data"][0]["type"] == "heatmap" and message["data"][0]["customdata"] == [[3, 1], [0, 4]]
    (images,) = vis.png.call_args_list
    image = images.args[0]
    # two tiles side by side in one row, each with 2 pixels of padding around its frame
    assert image.shape == (TILE + 4 + CAPTION + 4, 2 * (TILE + 4 + 4), 3) and images.kwargs["win"] == "templates"
