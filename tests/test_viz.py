"""The dashboard path without a server: renderer calls, the live sink's sender, events files, the epoch report.

Visdom is a ``MagicMock(spec=Visdom)``; tests assert the exact calls it receives.
"""

from __future__ import annotations

import io
import json
import threading
import time
from unittest.mock import MagicMock, call

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw, ImageFont
from torch import nn

from trainers.core.config import TrainConfig
from trainers.core.data import Data, Split
from trainers.core.loop import Evaluation, Parts
from trainers.core.report import learned_weights, report_curves, report_layers, report_panes
from trainers.core.run import RunDir
from trainers.core.training import make_sink
from viz.dashboard import client
from viz.dashboard.client import Client
from viz.dashboard.render import (
    CAPTION,
    GREEN,
    IMAGE_CHROME,
    RED,
    TILE,
    TRACE_CAP,
    LostState,
    Renderer,
    label_tiles,
    text_html,
)
from viz.dashboard.sender import VisdomSink, rebuild
from viz.dashboard.sink import LabelledSink, RecordingSink, Sink, decode_array, decode_images, read_events
from viz.dashboard.windows import WINDOWS, opts, title
from viz.panes import caption

SERVER, PORT, ENV = "http://localhost", 8097, "run-1"


def mock_vis(exists: bool = True):
    """A Visdom client stand-in whose windows all exist unless told otherwise."""
    vis = MagicMock(spec=Client)
    vis.win_exists.return_value = exists
    return vis


def scalars(win, x, values, env=None):
    return {"kind": "scalars", "win": win, "env": env, "x": x, "values": values}


def line_calls(vis) -> list[dict]:
    """Each ``line`` call's keyword arguments, with X and Y as lists (arrays do not compare with ==)."""
    calls = []
    for c in vis.line.call_args_list:
        assert c.args == ()
        kwargs = dict(c.kwargs)
        for axis in ("X", "Y"):
            assert kwargs[axis].dtype == float
            kwargs[axis] = kwargs[axis].tolist()
        kwargs.setdefault("update", None)
        calls.append(kwargs)
    return calls


def drawn(vis) -> list[tuple[str, str, dict[str, tuple[list, list, str]]]]:
    """Each line window drawn whole, in order: (win, env, {trace: (x, y, mode)})."""
    for c in vis.lines.call_args_list:
        assert c.kwargs["opts"] == opts(c.kwargs["win"], showlegend=True)
    return [(c.kwargs["win"], c.kwargs["env"], {name: (x, y, mode) for name, x, y, mode in c.args[0]})
            for c in vis.lines.call_args_list]


def names(vis, skip=("win_exists",)) -> list[str]:
    """The methods called on the client, in order."""
    return [name for name, _, _ in vis.method_calls if name not in skip]


def wait_for(condition, seconds: float = 3.0) -> None:
    """Poll until ``condition()`` holds; fail after ``seconds``."""
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting for the sender"
        time.sleep(0.005)


LOSS_OPTS = {"title": WINDOWS["loss"].title, "width": WINDOWS["loss"].width, "height": WINDOWS["loss"].height, "xlabel": "epoch",
             "ylabel": "cross-entropy", "showlegend": True}


# ---------------------------------------------------------------- Renderer


def test_each_batch_draws_its_windows_whole_in_one_request_each():
    vis = mock_vis()
    renderer = Renderer(vis, ENV)
    renderer.render([scalars("loss", 1, {"train": 0.5})])
    renderer.render([scalars("loss", 2, {"train": 0.4})])

    assert drawn(vis) == [("loss", ENV, {"train": ([1], [0.5], "lines")}),
                          ("loss", ENV, {"train": ([1, 2], [0.5, 0.4], "lines")})]
    assert vis.lines.call_args.kwargs["opts"] == LOSS_OPTS
    # before the second batch the renderer checks that the server still holds its window
    vis.win_exists.assert_called_once_with("loss", env=ENV)


def test_epoch_mean_trace_is_drawn_with_markers():
    vis = mock_vis()
    Renderer(vis, ENV).render([scalars("train_loss", 50, {"loss": 1.6}), scalars("train_loss", 50, {"epoch mean": 1.5})])
    assert drawn(vis) == [("train_loss", ENV, {"loss": ([50], [1.6], "lines"), "epoch mean": ([50], [1.5], "markers")})]


def test_consecutive_points_of_a_trace_go_in_one_request_in_order():
    vis = mock_vis()
    Renderer(vis, ENV).render([scalars("train_loss", step, {"loss": 3.0 - step / 10}) for step in range(1, 6)]
                              + [scalars("loss", 1, {"train": 0.9, "test": 1.1}),
                                 scalars("loss", 2, {"train": 0.7, "test": 0.8})])
    # one request per window, with all of its traces
    assert drawn(vis) == [
        ("train_loss", ENV, {"loss": ([1, 2, 3, 4, 5], [2.9, 2.8, 2.7, 2.6, 2.5], "lines")}),
        ("loss", ENV, {"train": ([1, 2], [0.9, 0.7], "lines"), "test": ([1, 2], [1.1, 0.8], "lines")}),
    ]

    vis.reset_mock()
    renderer = Renderer(vis, ENV)
    renderer.render([scalars("loss", 1, {"train": 0.9, "test": 1.1})])
    renderer.render([scalars("loss", 2, {"test": 0.8})])  # a trace without new points is drawn as it was
    assert drawn(vis)[-1] == ("loss", ENV, {"train": ([1], [0.9], "lines"), "test": ([1, 2], [1.1, 0.8], "lines")})


def test_a_non_scalar_event_splits_the_batch_in_order():
    vis = mock_vis()
    Renderer(vis, ENV).render([scalars("train_loss", 1, {"loss": 2.0}), scalars("train_loss", 2, {"loss": 1.9}),
                               {"kind": "text", "win": "predictions", "text": "<b>hi</b>"},
                               scalars("train_loss", 3, {"loss": 1.8})])
    assert names(vis) == ["lines", "text", "lines"]
    assert drawn(vis) == [("train_loss", ENV, {"loss": ([1, 2], [2.0, 1.9], "lines")}),
                          ("train_loss", ENV, {"loss": ([1, 2, 3], [2.0, 1.9, 1.8], "lines")})]
    vis.text.assert_called_once_with(text_html("<b>hi</b>"), win="predictions", env=ENV,
                                     opts={"title": WINDOWS["predictions"].title, "width": WINDOWS["predictions"].width, "height": WINDOWS["predictions"].height})


def test_compare_curves_are_redrawn_whole_and_created_when_missing():
    vis = mock_vis()
    vis.line.return_value = "win does not exist"  # what visdom answers a replace in a missing window
    renderer = Renderer(vis, ENV)
    trace = "run-1 (lr=0.1 bs=160)"
    renderer.render([scalars("compare_acc", 1, {trace: 0.7}, env="compare")])
    vis.line.return_value = "compare_acc"
    renderer.render([scalars("compare_acc", 2, {trace: 0.8}, env="compare")])
    renderer.render([scalars("compare_acc", 3, {trace: 0.85}, env="compare"), {"kind": "save"}])

    replace = dict(win="compare_acc", env="compare", name=trace, update="replace")
    assert line_calls(vis) == [
        dict(Y=[0.7], X=[1.0], **replace),
        dict(Y=[0.7, 0.8], X=[1.0, 2.0], **replace),
        dict(Y=[0.7, 0.8, 0.85], X=[1.0, 2.0, 3.0], **replace),
    ]
    # Only the first, refused replace creates the window, and with one request that adds the trace.
    compare_opts = {"title": WINDOWS["compare_acc"].title, "width": 900, "height": 400, "xlabel": "epoch",
                    "ylabel": "accuracy", "showlegend": True}
    vis.add_trace.assert_called_once_with([1.0], [0.7], "compare_acc", "compare", trace, compare_opts)
    vis.save.assert_called_once_with([ENV, "compare"])


def test_save_saves_only_the_run_env_when_compare_was_not_used():
    vis = mock_vis()
    Renderer(vis, ENV).render([scalars("loss", 1, {"train": 1.0}), {"kind": "save"}])
    assert names(vis) == ["lines", "save"]
    vis.save.assert_called_once_with([ENV])


def test_images_become_one_request_of_labelled_rgb_tiles():
    sink = RecordingSink()
    pixels = np.arange(3 * 28 * 28, dtype=np.uint8).reshape(3, 28, 28)
    sink.images("samples", pixels, ["a\n-> a 90%", "b\n-> c 60%", "c\n-> c 99%"], [False, True, False])
    np.testing.assert_array_equal(decode_images(sink.events[0]), pixels)

    vis = mock_vis()
    Renderer(vis, ENV).render(sink.events)
    (call,) = vis.png.call_args_list
    (image,) = call.args
    cell_h, cell_w = TILE + 4 + CAPTION + 4, TILE + 4 + 4  # a tile and 2 pixels of padding around it
    assert image.dtype == np.uint8 and image.shape == (cell_h, 3 * cell_w, 3)  # one row of three
    assert call.kwargs == dict(win="samples", env=ENV,
                               opts={"title": title("samples"), "width": WINDOWS["samples"].width,
                                     "height": round(cell_h * WINDOWS["samples"].width / (3 * cell_w)) + IMAGE_CHROME})
    # the second image sits inside its 2-pixel frame, enlarged 3x with nearest-neighbour
    np.testing.assert_array_equal(image[4:4 + TILE:3, cell_w + 4:cell_w + 4 + TILE:3, 0], pixels[1])


def test_heatmap_bars_histogram_text_and_config_requests():
    sink = RecordingSink()
    sink.heatmap("confusion", [[3, 1], [0, 4]], ["a", "b"], ["a", "b"])
    sink.bars("class_acc", [0.75, 1.0], ["a", "b"])
    sink.histogram("weights", {"0.weight": ([-1.0, 0.0, 1.0], [0.2, 0.6, 0.2]), "2.weight": ([0.5], [2.0])})
    sink.text("predictions", "1 < 2 & <b>bold</b>")
    sink.config({"lr": 0.1, "name": "<x>"})
    vis = mock_vis()
    Renderer(vis, ENV).render(sink.events)
    assert names(vis) == ["heatmap", "bar", "line", "text", "text", "record_run"]
    assert vis.record_run.call_args.args == (ENV, {"lr": 0.1, "name": "<x>"})

    heatmap = vis.heatmap.call_args.kwargs
    np.testing.assert_array_equal(heatmap.pop("X"), [[3.0, 1.0], [0.0, 4.0]])
    assert heatmap == dict(win="confusion", env=ENV, opts={
        "title": title("confusion"), "width": WINDOWS["confusion"].width, "height": WINDOWS["confusion"].height,
        "rownames": ["a", "b"], "columnnames": ["a", "b"], "colormap": "Viridis",
        "layoutopts": {"plotly": {"margin": {"l": 100, "b": 90}}}})

    bar = vis.bar.call_args.kwargs
    np.testing.assert_array_equal(bar.pop("X"), [0.75, 1.0])
    assert bar == dict(win="class_acc", env=ENV,
                       opts={"title": title("class_acc"), "width": WINDOWS["class_acc"].width, "height": WINDOWS["class_acc"].height, "rownames": ["a", "b"]})

    histogram = vis.line.call_args.kwargs
    # one column per layer; the shorter one is padded with NaN
    np.testing.assert_array_equal(histogram.pop("X"), [[-1.0, 0.5], [0.0, np.nan], [1.0, np.nan]])
    np.testing.assert_array_equal(histogram.pop("Y"), [[0.2, 2.0], [0.6, np.nan], [0.2, np.nan]])
    assert histogram == dict(win="weights", env=ENV, opts={
        "title": WINDOWS["weights"].title, "width": WINDOWS["weights"].width, "height": WINDOWS["weights"].height, "xlabel": "weight", "ylabel": "density",
        "legend": ["0.weight", "2.weight"]})

    text, config = vis.text.call_args_list
    assert text.args == ("<div style='font-family:sans-serif;font-size:12px;white-space:pre-wrap'>"
                         "1 &lt; 2 &amp; &lt;b&gt;bold&lt;/b&gt;</div>",)
    assert config.kwargs == dict(win="config", env=ENV,
                                 opts={"title": "Run config", "width": WINDOWS["config"].width, "height": WINDOWS["config"].height})
    assert "<b>lr</b> 0.1</div>" in config.args[0] and "&lt;x&gt;" in config.args[0]


def test_render_raises_lost_state_when_the_server_lost_a_window():
    vis = mock_vis()
    renderer = Renderer(vis, ENV)
    renderer.render([scalars("loss", 1, {"train": 1.0})])
    vis.win_exists.return_value = False
    with pytest.raises(LostState):
        renderer.render([scalars("loss", 2, {"train": 0.9})])
    assert vis.lines.call_count == 1  # nothing sent to a window that is gone
    assert issubclass(LostState, ConnectionError)  # the sender treats it like a dropped connection

    renderer.reset()
    renderer.render([scalars("loss", 2, {"train": 0.9})])
    assert drawn(vis)[-1] == ("loss", ENV, {"train": ([2], [0.9], "lines")})  # created again


# ---------------------------------------------------------------- VisdomSink


def open_sink(tmp_path, vis=None, connect=None, **kwargs) -> VisdomSink:
    """A live sink writing into ``tmp_path`` whose client is ``vis`` (or whatever ``connect`` returns)."""
    connect = connect or (lambda server, port, env: vis)
    return VisdomSink(SERVER, PORT, ENV, tmp_path / "events.jsonl", connect_with=connect, **kwargs)


def test_every_event_goes_to_the_events_file_one_line_each_in_order(tmp_path):
    vis = mock_vis()
    sink = open_sink(tmp_path, vis, flush_seconds=60)
    sent = [scalars("train_loss", i, {"loss": 1.0 / i}) for i in range(1, 4)]
    for event in sent:
        sink.emit(event)
    sink.text("predictions", "<p>x</p>")
    sink.save()  # a save flushes the file, so a crash after it loses nothing before it
    lines = (tmp_path / "events.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in lines] == sent + [
        {"kind": "text", "win": "predictions", "text": "<p>x</p>"}, {"kind": "save"}]
    sink.close()
    assert read_events(tmp_path / "events.jsonl") == (sent + [
        {"kind": "text", "win": "predictions", "text": "<p>x</p>"}, {"kind": "save"}], 0)


def test_the_sender_merges_a_burst_into_one_request(tmp_path, capsys):
    vis = mock_vis()
    sink = open_sink(tmp_path, vis, flush_seconds=60)  # only close() wakes the sender
    for step in range(100):
        sink.scalars("train_loss", x=step, values={"loss": step / 100})
    assert vis.lines.call_count == 0  # training never waits on a request
    sink.close()

    assert drawn(vis) == [("train_loss", ENV, {"loss": (list(range(100)), [s / 100 for s in range(100)], "lines")})]
    assert not sink._thread.is_alive()
    assert capsys.readouterr().err == ""


def test_the_sender_wakes_by_itself_after_flush_seconds(tmp_path):
    vis = mock_vis()
    sink = open_sink(tmp_path, vis, flush_seconds=0.02)
    sink.scalars("loss", x=1, values={"train": 0.5})
    wait_for(lambda: vis.lines.call_count == 1)
    sink.close()
    assert vis.lines.call_count == 1


def test_a_save_wakes_the_sender_at_once(tmp_path):
    vis = mock_vis()
    sink = open_sink(tmp_path, vis, flush_seconds=60)
    sink.scalars("loss", x=1, values={"train": 0.5})
    started = time.monotonic()
    sink.save()
    wait_for(lambda: vis.save.called, seconds=2)
    assert time.monotonic() - started < 2
    assert names(vis) == ["lines", "save"]
    vis.save.assert_called_once_with([ENV])
    sink.close()


def test_close_delivers_what_is_queued(tmp_path):
    vis = mock_vis()
    sink = open_sink(tmp_path, vis, flush_seconds=60)
    sink.scalars("loss", x=1, values={"train": 0.5, "test": 0.6})
    sink.bars("class_acc", [0.5, 1.0], ["a", "b"])
    sink.save()
    sink.scalars("loss", x=2, values={"train": 0.4, "test": 0.5})
    sink.close()
    assert names(vis) == ["lines", "bar", "save", "lines"]
    assert drawn(vis)[-1] == ("loss", ENV, {"train": ([1, 2], [0.5, 0.4], "lines"), "test": ([1, 2], [0.6, 0.5], "lines")})


def test_no_server_warns_once_and_training_goes_on(tmp_path, capsys):
    sink = open_sink(tmp_path, connect=lambda server, port, env: None, flush_seconds=0.01)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{SERVER}:{PORT}" in err and err.startswith("warning:")
    assert f"trainviz replay {tmp_path}" in err  # what draws the run later: said once, here

    for step in range(200):
        sink.scalars("train_loss", x=step, values={"loss": 1.0})
    sink.save()
    time.sleep(0.05)  # let the sender retry a few times
    assert capsys.readouterr().err == ""  # retries are silent
    sink.close()
    assert capsys.readouterr().err == ""  # the warning at the start said what is left to do
    assert len(read_events(tmp_path / "events.jsonl")[0]) == 201


def test_a_server_that_starts_later_gets_the_whole_run(tmp_path):
    vis = mock_vis()
    up = threading.Event()
    sink = open_sink(tmp_path, connect=lambda server, port, env: vis if up.is_set() else None, flush_seconds=0.01)
    for step in range(1, 31):
        sink.scalars("train_loss", x=step, values={"loss": 1.0})
    up.set()
    wait_for(lambda: vis.save.called)  # a rebuild ends with a save
    sink.close()
    vis.delete_env.assert_called_once_with(ENV)
    assert names(vis) == ["delete_env", "lines", "save"]
    assert drawn(vis)[0][2]["loss"][0] == list(range(1, 31))


def test_a_dead_server_keeps_memory_bounded_and_the_next_delivery_rebuilds(tmp_path, capsys):
    vis = mock_vis()
    vis.lines.side_effect = ConnectionError("server died")
    sink = open_sink(tmp_path, vis, flush_seconds=0.01, max_pending=50)
    sink.scalars("train_loss", x=0, values={"loss": 0.0})
    wait_for(lambda: vis.lines.called and sink._stale)

    sizes = []
    for step in range(1, 1000):
        sink.scalars("train_loss", x=step, values={"loss": step / 1000})
        sizes.append(len(sink._pending))
    assert max(sizes) <= 50

    # Two more failed rebuilds: the one running now read the events file after the last emit.
    tries = vis.delete_env.call_count
    wait_for(lambda: vis.delete_env.call_count >= tries + 2)
    vis.lines.side_effect = None  # the server is back
    wait_for(lambda: vis.save.called)  # a rebuild ends with a save
    sink.close()
    assert capsys.readouterr().err == ""  # it all arrived: no replay hint

    # what reached the server after the last rebuild started: the whole run, once
    calls = vis.method_calls
    last_delete = max(i for i, c in enumerate(calls) if c[0] == "delete_env")
    assert calls[last_delete] == (("delete_env", (ENV,), {}))
    after = [c for c in calls[last_delete + 1:] if c[0] != "win_exists"]
    assert [c[0] for c in after] == ["lines", "save"]  # the window is created afresh in the emptied env
    # with the whole run, decimated to stay bounded on the server: both ends, every step in order
    ((name, x, y, _),) = after[0].args[0]
    assert name == "loss" and x[0] == 0.0 and x[-1] == 999.0 and x == sorted(set(x)) and len(x) <= TRACE_CAP
    assert y == [s / 1000 for s in x]


def test_events_dropped_during_a_rebuild_are_not_lost(tmp_path):
    vis = mock_vis()
    rebuilding, release = threading.Event(), threading.Event()

    def slow_delete(env):
        rebuilding.set()
        release.wait(5)

    vis.delete_env.side_effect = slow_delete
    up = threading.Event()
    sink = open_sink(tmp_path, connect=lambda server, port, env: vis if up.is_set() else None,
                     flush_seconds=0.01, max_pending=50)
    up.set()
    wait_for(rebuilding.is_set)
    for step in range(1, 61):  # 60 > max_pending: the first 10 are dropped from the queue
        sink.scalars("train_loss", x=step, values={"loss": 1.0})
    release.set()
    sink.close()
    assert drawn(vis)[-1][2]["loss"][0] == list(range(1, 61))


def test_a_rebuild_does_not_duplicate_compare_points():
    vis = mock_vis()
    renderer = Renderer(vis, ENV)
    events = [scalars("compare_acc", 1, {"run": 0.5}, env="compare"),
              scalars("compare_acc", 2, {"run": 0.6}, env="compare")]
    renderer.render(events)
    rebuild(vis, renderer, events)
    assert line_calls(vis)[-1]["X"] == [1.0, 2.0]


# ---------------------------------------------------------------- events files and tiles


def test_read_events_skips_and_counts_damaged_lines(tmp_path):
    good = [scalars("loss", 1, {"train": 0.5}), {"kind": "save"}]
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"\n".join([
        json.dumps(good[0]).encode(),
        b"not json at all",
        b"",  # blank lines are not damage
        b'{"kind": "unknown", "win": "loss"}',
        b"[1, 2, 3]",
        b"\xff\xfe\x00garbage",
        json.dumps(good[1]).encode(),
        b'{"kind": "scalars", "win": "lo',  # a write cut short by a crash
    ]))
    assert read_events(path) == (good, 5)


def test_label_tiles_frames_marked_tiles_in_red():
    images = np.full((2, 28, 28), 128, dtype=np.uint8)
    tiles = label_tiles(images, ["a\n-> b 90%", "a\n-> a 80%"], [True, False])
    assert tiles.dtype == np.uint8 and tiles.shape == (2, TILE + 4 + CAPTION, TILE + 4, 3)

    def frame(tile):  # the 2-pixel border around the enlarged image, as (pixels, 3)
        rgb = tile[: TILE + 4]
        return np.concatenate([rgb[:2].reshape(-1, 3), rgb[-2:].reshape(-1, 3),
                               rgb[:, :2].reshape(-1, 3), rgb[:, -2:].reshape(-1, 3)])

    assert (frame(tiles[0]) == RED).all() and (frame(tiles[1]) == GREEN).all()
    assert not (tiles[1] == RED).all(axis=2).any()  # no red anywhere on a right one
    assert (tiles[:, 2:2 + TILE, 2:2 + TILE] == 128).all()


def test_captions_are_drawn_as_pillow_draws_multiline_text():
    text = "Ankle boot\n-> Sneaker 7%"
    for bad, ink in ((True, RED), (False, (0, 0, 0))):
        tiles = label_tiles(np.zeros((1, 28, 28), dtype=np.uint8), [text], [bad])
        expected = Image.new("RGB", (TILE + 4, TILE + 4 + CAPTION), "white")
        ImageDraw.Draw(expected).multiline_text((3, TILE + 5), text, fill=ink, font=ImageFont.load_default(size=11),
                                                spacing=1)
        np.testing.assert_array_equal(tiles[0, TILE + 4:], np.asarray(expected)[TILE + 4:])


def test_a_caption_too_wide_for_its_tile_is_wrapped_at_spaces_not_cut():
    from viz.dashboard.render import caption_font, wrapped

    text = "Ankle boot\n-> T-shirt/top 100%"
    assert [piece for line in text.split("\n") for piece in wrapped(line)] == \
        ["Ankle boot", "-> T-shirt/top", "100%"]
    assert all(caption_font().getlength(piece) <= TILE + 1 for piece in wrapped("-> T-shirt/top 100%"))
    tiles = label_tiles(np.zeros((1, 28, 28), dtype=np.uint8), [text], [True])
    expected = Image.new("RGB", (TILE + 4, TILE + 4 + CAPTION), "white")
    ImageDraw.Draw(expected).multiline_text((3, TILE + 5), "Ankle boot\n-> T-shirt/top\n100%", fill=RED,
                                            font=ImageFont.load_default(size=11), spacing=1)
    np.testing.assert_array_equal(tiles[0, TILE + 4:], np.asarray(expected)[TILE + 4:])


def test_an_image_window_is_as_tall_as_its_grid_at_the_window_width():
    sink = RecordingSink()
    sink.images("mistakes", np.zeros((8, 28, 28), dtype=np.uint8), ["a\n-> b 90%"] * 8, [True] * 8)
    vis = mock_vis()
    Renderer(vis, ENV).render(sink.events)
    (image,), kwargs = vis.png.call_args
    width = WINDOWS["mistakes"].width
    assert kwargs["opts"]["width"] == width
    assert kwargs["opts"]["height"] == round(image.shape[0] * width / image.shape[1]) + IMAGE_CHROME


def test_png_bytes_decode_to_the_same_pixels():
    image = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(client.png_bytes(image)))), image)


# ---------------------------------------------------------------- the epoch report


CLASSES = ("a", "b", "c")
TEST_LABELS = [0, 0, 1, 1, 2, 2]
PREDICTED = [0, 1, 1, 1, 2, 0]
CONFIDENCE = [0.9, 0.8, 0.7, 0.6, 0.95, 0.99]
RECORD = {"kind": "epoch", "epoch": 2, "step": 10, "train_loss": 1.5, "train_acc": 0.4,
          "test_loss": 1.2, "test_acc": 0.5, "seconds": 2.0}


def tiny_report(with_grad: bool = True, predicted=PREDICTED):
    """report_epoch on 8 training and 6 test images, 3 classes, a 784 -> 3 linear model."""
    generator = torch.Generator().manual_seed(0)
    data = Data(train=Split(torch.randint(0, 256, (8, 1, 28, 28), generator=generator, dtype=torch.uint8),
                            torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])),
                test=Split(torch.randint(0, 256, (6, 1, 28, 28), generator=generator, dtype=torch.uint8),
                           torch.tensor(TEST_LABELS)),
                classes=CLASSES, source=None)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 3))
    parts = Parts(model, nn.functional.cross_entropy, torch.optim.SGD(model.parameters(), lr=0.1))
    if with_grad:
        parts.loss(model(data.train.floats(data.train.pixels)), data.train.labels).backward()
    test = Evaluation(loss=1.2, accuracy=0.5, predictions=torch.tensor(predicted),
                      confidence=torch.tensor(CONFIDENCE))
    sink = RecordingSink()
    report_curves(sink, RECORD)
    report_panes(sink, f"Epoch {RECORD['epoch']}", test, data.test, "test", data.classes, parts, torch.tensor([1, 0, 5]))
    report_layers(sink, RECORD, parts, samples_seen=8)
    return sink.events, data, model


def test_report_emits_every_window_in_page_order():
    events, data, model = tiny_report()
    assert [(e["kind"], e.get("win")) for e in events] == [
        ("scalars", "train_loss"), ("scalars", "loss"), ("scalars", "accuracy"),
        ("images", "samples"), ("table", "predictions"), ("images", "mistakes"),
        ("confusion", "confusion"), ("bars", "class_acc"), ("templates", "templates"), ("histogram", "weights"),
        ("scalars", "weight_norm"), ("scalars", "grad_norm"), ("scalars", "throughput"),
    ]
    assert events[:3] == [
        scalars("train_loss", 10, {"epoch mean": 1.5}),
        scalars("loss", 2, {"train": 1.5, "test": 1.2}),
        scalars("accuracy", 2, {"train": 0.4, "test": 0.5}),
    ]
    weight = model[1].weight
    assert events[10] == scalars("weight_norm", 2, {"1.weight": pytest.approx(weight.norm().item())})
    assert events[11] == scalars("grad_norm", 2, {"1.weight": pytest.approx(weight.grad.norm().item())})
    assert events[12] == scalars("throughput", 2, {"samples/s": 4.0})  # 8 training samples in 2 s
    json.dumps(events)  # everything is JSON-ready, as the live sink writes it


def test_a_linear_classifier_shows_one_template_per_class():
    events, _, model = tiny_report()
    (templates,) = [e for e in events if e["kind"] == "templates"]
    assert templates["captions"] == list(CLASSES) and templates["columns"] == 5
    expected = model[1].weight.detach().reshape(3, 28, 28).numpy()  # nn.Linear: (classes, 784)
    np.testing.assert_allclose(decode_array(templates), expected, atol=1e-3, rtol=1e-3)


def test_hand_written_weights_are_read_input_first():
    from trainers.models.scratch_softmax import SoftmaxRegression

    torch.manual_seed(0)
    model = SoftmaxRegression(classes=3)  # W is (784, classes)
    weights, captions, _ = learned_weights(model, CLASSES)
    np.testing.assert_array_equal(weights, model.params["W"].detach().T.reshape(3, 28, 28).numpy())
    assert captions == list(CLASSES)


def test_an_mlp_shows_its_strongest_first_layer_units():
    from trainers.models.mlp import MLP

    torch.manual_seed(0)
    model = MLP((784, 40, 10))
    with torch.no_grad():
        model.net[1].weight[7] *= 10  # unit 7 now has by far the largest weights
    weights, captions, columns = learned_weights(model, tuple("0123456789"))
    assert weights.shape == (32, 28, 28) and columns == 8
    assert captions[0] == "unit 7"
    norms = [np.linalg.norm(w) for w in weights]
    assert norms == sorted(norms, reverse=True)


def test_report_confusion_matrix_and_class_accuracy_by_hand():
    events, _, _ = tiny_report()
    confusion = next(e for e in events if e["win"] == "confusion")
    # true a: 1 right, 1 taken for b; true b: both right; true c: 1 right, 1 taken for a
    assert confusion["counts"] == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    assert sum(map(sum, confusion["counts"])) == len(TEST_LABELS)
    assert confusion["classes"] == list(CLASSES)
    class_acc = next(e for e in events if e["win"] == "class_acc")
    assert class_acc["values"] == pytest.approx([0.5, 1.0, 0.5]) and class_acc["names"] == list(CLASSES)


def test_report_sample_grid_table_and_mistakes():
    events, data, _ = tiny_report()
    by_win = {e.get("win"): e for e in events}
    expected = data.test.pixels.squeeze(1).numpy()

    samples = by_win["samples"]  # test images 1, 0, 5
    np.testing.assert_array_equal(decode_images(samples), expected[[1, 0, 5]])
    assert samples["captions"] == ["a\n-> b 80%", "a\n-> a 90%", "c\n-> a 99%"]
    assert samples["marked"] == [True, False, True]

    table = by_win["predictions"]  # data, not markup: the renderer builds and escapes the pane
    assert table["kind"] == "table" and table["caption"] == "Epoch 2: 1 of 3 right"
    assert table["headings"] == ["#", "true", "predicted", "confidence"]
    assert table["rows"] == [[1, "a", "b", "80.0%"], [2, "a", "a", "90.0%"], [3, "c", "a", "99.0%"]]
    assert table["marked"] == [True, False, True]

    mistakes = by_win["mistakes"]  # every wrong prediction, most confident first
    np.testing.assert_array_equal(decode_images(mistakes), expected[[5, 1]])
    assert mistakes["captions"] == [caption(CLASSES, 2, 0, 0.99), caption(CLASSES, 0, 1, 0.8)]
    assert mistakes["marked"] == [True, True]


def test_report_weight_histogram_is_a_density_and_skips_biases():
    events, _, model = tiny_report(with_grad=False)
    wins = [e.get("win") for e in events]
    assert "grad_norm" not in wins  # no backward yet: nothing to show
    (histogram,) = [e for e in events if e["kind"] == "histogram"]
    assert list(histogram["series"]) == ["1.weight"]
    centers, density = histogram["series"]["1.weight"]["centers"], histogram["series"]["1.weight"]["density"]
    width = centers[1] - centers[0]
    assert len(centers) == len(density) == 40
    assert sum(density) * width == pytest.approx(1.0, rel=1e-4)
    weight = model[1].weight.detach()
    assert weight.min().item() < centers[0] < centers[-1] < weight.max().item()


def test_report_without_mistakes_says_so_instead_of_a_grid():
    events, _, _ = tiny_report(predicted=TEST_LABELS)
    (mistakes,) = [e for e in events if e.get("win") == "mistakes"]
    assert mistakes == {"kind": "text", "win": "mistakes", "text": "No mistakes on the test set at epoch 2.",
                        "split": "test"}
    assert next(e for e in events if e.get("win") == "confusion")["counts"] == [[2, 0, 0], [0, 2, 0], [0, 0, 2]]


# ---------------------------------------------------------------- the sink a command picks


def test_make_sink(tmp_path, monkeypatch, capsys):
    run = RunDir.create(tmp_path, "mlp")
    run.write_config({"env": "my-env"})
    sink = make_sink(TrainConfig(viz=False), run)
    assert type(sink) is Sink and not sink.active

    class Refused:  # what the visdom client does when nothing listens on the port
        def __init__(self, **kwargs):
            import requests

            raise requests.ConnectionError("refused")

    monkeypatch.setattr(client, "Client", Refused)
    sink = make_sink(TrainConfig(server="http://example.invalid", port=9001), run)
    assert isinstance(sink, VisdomSink) and sink.active
    assert (sink.env, sink.events_path) == ("my-env", run.events_file)
    assert "http://example.invalid:9001" in capsys.readouterr().err
    sink.close(timeout=5)



# ---------------------------------------------------------------- fewer events, fewer requests


def test_a_series_event_draws_like_the_scalar_events_it_replaces():
    one_by_one, at_once = mock_vis(), mock_vis()
    Renderer(one_by_one, ENV).render([scalars("train_loss", x, {"loss": 1 / x, "smoothed": 2 / x}) for x in (1, 2, 3)])
    Renderer(at_once, ENV).render([{"kind": "series", "win": "train_loss", "x": [1, 2, 3],
                                    "values": {"loss": [1, 1 / 2, 1 / 3], "smoothed": [2, 1, 2 / 3]}}])
    assert drawn(one_by_one) == drawn(at_once) == [
        ("train_loss", ENV, {"loss": ([1.0, 2.0, 3.0], [1, 1 / 2, 1 / 3], "lines"),
                             "smoothed": ([1.0, 2.0, 3.0], [2, 1, 2 / 3], "lines")})]


def test_held_events_are_released_in_page_order_each_window_in_time_order():
    from viz.dashboard.sink import HeldSink

    held, sink = HeldSink(), RecordingSink()
    held.scalars("lr", x=50, values={"lr": 0.1})
    held.scalars("throughput", x=1, values={"samples/s": 10.0})
    held.scalars("weight_norm", x=1, values={"w": 1.0})
    held.scalars("lr", x=100, values={"lr": 0.05})
    held.scalars("weight_norm", x=2, values={"w": 2.0})
    assert sink.events == []
    held.release(sink)
    assert [(e["win"], e["x"]) for e in sink.events] == [
        ("weight_norm", 1), ("weight_norm", 2), ("throughput", 1), ("lr", 50), ("lr", 100)]
    held.release(sink)
    assert len(sink.events) == 5  # released once


def test_how_a_run_ended_goes_to_the_client_as_it_was_recorded():
    sink = RecordingSink()
    sink.outcome("stopped", {"epoch": 2, "test_acc": 0.5})
    vis = mock_vis()
    Renderer(vis, ENV).render(sink.events)
    assert names(vis) == ["end_run"]
    assert vis.end_run.call_args.args == (ENV, "stopped", {"epoch": 2, "test_acc": 0.5})


@pytest.mark.parametrize("status, final", [("finished", "finished"), ("diverged", "failed"), ("pruned", "failed"),
                                           ("failed", "failed"), ("stopped", None)])
def test_visdom_experiments_get_the_metrics_the_status_and_an_end_only_when_final(monkeypatch, status, final):
    """On visdom 0.3.0+ (EXPERIMENTS) a run's end is logged; a stopped run stays open, to be resumed."""
    from viz.dashboard import client

    monkeypatch.setattr(client, "EXPERIMENTS", True)
    vis = MagicMock()
    client.Client.end_run(vis, ENV, status, {"step": 40, "test_acc": 0.75})
    client.Client.record_run(vis, ENV, {"lr": 0.1, "hidden": [200, 200], "resume": None})

    expected = [call.log_metrics({"step": 40, "test_acc": 0.75}, step=40, env=ENV),
                call.experiment(tags={"status": status}, env=ENV)]
    if final:
        expected.append(call.finish_experiment(final, env=ENV))
    expected.append(call.experiment(name=ENV, params={"lr": 0.1, "hidden": "[200, 200]"}, env=ENV))
    assert vis.method_calls == expected


def test_visdom_without_experiments_gets_no_experiment_calls(monkeypatch):
    from viz.dashboard import client

    monkeypatch.setattr(client, "EXPERIMENTS", False)
    vis = MagicMock()
    client.Client.end_run(vis, ENV, "finished", {"step": 40})
    client.Client.record_run(vis, ENV, {"lr": 0.1})
    assert vis.method_calls == []


@pytest.mark.parametrize("split, shown", [("test", "Test"), ("val", "Validation"), ("<b>x</b>", "Test"), (None, "Test")])
def test_pane_titles_name_the_split_they_show(split, shown):
    """A sweep trial's panes show validation images: their titles say so; anything unknown reads as test."""
    sink = RecordingSink()
    LabelledSink(sink, split=split).bars("class_acc", [0.5, 1.0], ["a", "b"])
    LabelledSink(sink, split=split).confusion("confusion", [[1, 0], [0, 1]], ["a", "b"])
    vis = mock_vis()
    Renderer(vis, ENV).render(sink.events)
    assert vis.bar.call_args.kwargs["opts"]["title"] == f"{shown} accuracy per class"
    figure = vis._send.call_args.args[0]
    assert figure["opts"]["title"] == figure["layout"]["title"]["text"] == \
        f"Confusion matrix ({shown.lower()} set): share of each true class"


def test_the_trials_table_window_is_as_tall_as_its_rows_up_to_its_own_height():
    from viz.dashboard.sweep_board import TABLE_CHROME, TABLE_ROW, SweepBoard, table_height

    assert table_height(4) == TABLE_CHROME + 5 * TABLE_ROW  # the heading and four trials
    assert table_height(1000) == WINDOWS["sweep_trials"].height
    vis = mock_vis()
    rows = [{"number": n, "params": {"lr": 0.1}, "value": 0.5, "epochs": 1, "state": "complete", "seconds": 1.0,
             "env": f"s_trial-{n:03d}", "curve": [(1, 0.5)], "pruned": False} for n in range(3)]
    recorded = RecordingSink()
    SweepBoard(recorded, ["lr"]).draw(rows)
    Renderer(vis, "s").render(recorded.events)
    assert vis.text.call_args.kwargs["opts"]["height"] == table_height(3)


# --- a sweep's board and a user's windows, as events ----------------------------------------

TRIAL = {"number": 3, "params": {"lr": 0.1, "hidden": "200,200"}, "state": "complete", "value": 0.85, "epochs": 2,
         "curve": [[1, 0.8], [2, 0.85]], "seconds": 4.2, "env": "study_trial-003"}


def test_a_sweep_board_is_one_trials_event_drawn_into_its_three_windows(tmp_path):
    recorded = RecordingSink()
    from viz.dashboard.sweep_board import SweepBoard

    board = SweepBoard(recorded, ["lr", "hidden"])
    board.draw([{**TRIAL, "curve": []}])  # no epoch yet: nothing drawn
    assert recorded.events == []
    board.draw([{**TRIAL, "run_dir": "/somewhere"}])
    trials, save = recorded.events
    assert trials == {"kind": "trials", "win": "sweep_trials", "fields": ["lr", "hidden"], "rows": [TRIAL]}
    assert save == {"kind": "save"}
    path = tmp_path / "events.jsonl"
    path.write_text("".join(json.dumps(e) + "\n" for e in recorded.events))
    events, damaged = read_events(path)
    assert damaged == 0 and events == recorded.events  # what replay reads back
    vis = mock_vis()
    Renderer(vis, "study").render(events)
    assert [c.args[0]["win"] for c in vis._send.call_args_list] == ["sweep_val_acc", "sweep_parcoords"]
    (text,) = vis.text.call_args_list
    assert text.kwargs["win"] == "sweep_trials" and "study_trial-003" in text.args[0]
    vis.save.assert_called_once_with(["study"])


@pytest.mark.parametrize("change", [
    {"env": "<script>"}, {"number": "3"}, {"curve": [[1, "x"]]}, {"params": {"lr": [1]}}, {"value": "high"},
    {"extra": 1},
])
def test_a_trials_event_with_rows_of_the_wrong_shape_is_not_drawn(change, tmp_path):
    row = {**TRIAL, **change}
    path = tmp_path / "events.jsonl"
    path.write_text(json.dumps({"kind": "trials", "win": "sweep_trials", "fields": ["lr"], "rows": [row]}) + "\n")
    events, damaged = read_events(path)
    if "env" in change:  # a string: drawn, and escaped where it is put on the page
        vis = mock_vis()
        Renderer(vis, "study").render(events)
        assert "&lt;script&gt;" in vis.text.call_args.args[0] and "<script>" not in vis.text.call_args.args[0]
    else:
        assert (events, damaged) == ([], 1)


def test_a_logged_window_is_titled_by_its_name_escaped_and_takes_its_axes():
    vis = mock_vis()
    renderer = Renderer(vis, "run")
    renderer.render([
        {"kind": "series", "win": "log:<b>loss</b>", "x": [0, 1], "values": {"train": [2.0, 1.0]}},
        {"kind": "axes", "win": "log:<b>loss</b>", "xlabel": "epoch", "ylabel": "", "xlim": [1, 3], "ylim": None,
         "xscale": "linear", "yscale": "log"},
    ])
    first, second = vis.lines.call_args_list
    assert first.kwargs["opts"]["title"] == "&lt;b&gt;loss&lt;/b&gt;"
    assert second.kwargs["opts"] | {"title": None} == {
        "title": None, "width": 500, "height": 320, "xlabel": "epoch", "ylabel": "", "showlegend": True,
        "xtickmin": 1, "xtickmax": 3, "ytype": "log"}
