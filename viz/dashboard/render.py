"""Events -> Visdom calls. Used by the live sender and by ``trainviz replay``.

Events come from a run folder that anyone may have written, and visdom draws a text
pane's HTML as it is, so every pane is built here from data: each string an event or a
setting holds is escaped where it is put on the page (text, tables, trace names, tick
labels), and no event carries markup of its own.
"""

from __future__ import annotations

import functools
import html
import math
from collections import defaultdict
from html.parser import HTMLParser

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from viz.dashboard.economy import decimate
from viz.dashboard.sink import decode_array, decode_images
from viz.dashboard.controls import CONTROLS, PaneState, properties
from viz.dashboard.windows import EPOCH_MEAN, STEERED, is_logged, opts, spec

TILE = 84  # pixels per image side in the grids (28 x 3, nearest-neighbour)
CAPTION = 38  # pixels of caption below each tile: three lines of the caption font
RED, GREEN, GREY = (220, 40, 40), (40, 160, 70), (160, 160, 160)
# Points one trace shows: past this, its whole history decimated to half as many, then
# the points that come after. Each redraw sends the window whole, so it stays this small.
TRACE_CAP = 300
MARKERS = {EPOCH_MEAN, STEERED}  # traces drawn as dots, not lines
IMAGE_WIDTH = 760  # pixels: the widest a logged image window is drawn (the trainers' grids' width)
IMAGE_CHROME = 22  # pixels of a visdom image window above and below its image: the title bar, margins


def label_tiles(images: np.ndarray, captions: list[str], marked: list[bool | None]) -> np.ndarray:
    """Enlarge images and write each caption under it, framed red when marked, green when not.

    ``images`` are uint8 grayscale (N, H, W) or RGB (N, H, W, 3); a ``marked`` of None
    gives a neutral grey frame. Returns uint8 RGB tiles (N, TILE + 4 + CAPTION, TILE + 4, 3).
    Built with numpy on whole arrays: only each distinct caption line is drawn by the font.
    """
    n, height, width = images.shape[:3]
    rgb = images if images.ndim == 4 else images[..., None]  # grey broadcasts to 3 channels below
    tiles = np.full((n, TILE + 4 + CAPTION, TILE + 4, 3), 255, dtype=np.uint8)
    frames = np.array([GREY if bad is None else RED if bad else GREEN for bad in marked], dtype=np.uint8)
    tiles[:, : TILE + 4, : TILE + 4] = frames[:, None, None]
    rows, columns = np.arange(TILE) * height // TILE, np.arange(TILE) * width // TILE  # nearest neighbour
    tiles[:, 2: TILE + 2, 2: TILE + 2] = rgb[:, rows][:, :, columns]
    ink = np.array([RED if bad else (0, 0, 0) for bad in marked], dtype=np.float32)
    alpha = np.stack([caption_mask(caption) for caption in captions])[..., None]  # (N, h, w, 1)
    area = tiles[:, TILE + 5:, 3:]  # white: blending the ink in is white - alpha * (white - ink)
    area[:] = (255 - alpha * (255 - ink[:, None, None])).round().astype(np.uint8)
    return tiles


@functools.cache
def caption_font() -> ImageFont.FreeTypeFont:
    """Pillow's built-in font at the captions' size."""
    return ImageFont.load_default(size=11)


@functools.lru_cache(maxsize=1024)
def caption_line(line: str) -> np.ndarray:
    """One line of caption text drawn as coverage in [0, 1], the caption area's size (cached: lines repeat)."""
    image = Image.new("L", (TILE + 1, CAPTION - 1))
    ImageDraw.Draw(image).text((0, 0), line, fill=255, font=caption_font())
    return np.asarray(image, dtype=np.float32) / 255


@functools.lru_cache(maxsize=1024)
def wrapped(line: str) -> tuple[str, ...]:
    """``line`` broken at spaces into pieces that each fit the tile's width in the caption font."""
    font, pieces = caption_font(), []
    for word in line.split(" "):
        if pieces and font.getlength(f"{pieces[-1]} {word}") <= TILE + 1:
            pieces[-1] = f"{pieces[-1]} {word}"
        else:
            pieces.append(word)
    return tuple(pieces)


def caption_mask(caption: str) -> np.ndarray:
    """A caption's lines, each wrapped to the tile's width, stacked one under another, as coverage in [0, 1]."""
    font = caption_font()
    spacing = font.getbbox("A")[3] + 1  # what Pillow's multiline text advances per line
    mask = np.zeros((CAPTION - 1, TILE + 1), dtype=np.float32)
    lines = [piece for line in caption.split("\n") for piece in wrapped(line)]
    for i, line in enumerate(lines):
        top = i * spacing
        if top >= len(mask):
            break
        np.maximum(mask[top:], caption_line(line)[: len(mask) - top], out=mask[top:])
    return mask


def grid(tiles: np.ndarray, columns: int, padding: int = 2) -> np.ndarray:
    """Tiles (N, H, W, 3) laid out ``columns`` to a row, ``padding`` dark pixels around each: (H', W', 3)."""
    n, height, width, channels = tiles.shape
    columns = min(columns, n)
    rows = -(-n // columns)
    cell_h, cell_w = height + 2 * padding, width + 2 * padding
    image = np.zeros((rows * cell_h, columns * cell_w, channels), dtype=np.uint8)
    for k, tile in enumerate(tiles):
        top, left = (k // columns) * cell_h + padding, (k % columns) * cell_w + padding
        image[top:top + height, left:left + width] = tile
    return image


def curve(points: list[tuple[float, float]], limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The x and y arrays of (x, y) points; with ``limit``, decimated to at most that many."""
    x, y = (np.array(column, dtype=float) for column in zip(*points))
    return decimate(x, y, limit) if limit else (x, y)


def diverging(values: np.ndarray) -> np.ndarray:
    """Weights -> RGB on a blue-white-red map, white at 0, each image scaled to its own largest |w|.

    Returns uint8 (N, H, W, 3): positive weights red, negative blue, so what pushes a
    unit up and what pushes it down stand apart.
    """
    scale = np.abs(values).reshape(len(values), -1).max(axis=1).clip(min=1e-12)[:, None, None]
    t = (values / scale)[..., None]  # in [-1, 1]
    white, red, blue = np.array([255, 255, 255.0]), np.array([178, 24, 43.0]), np.array([33, 102, 172.0])
    rgb = np.where(t >= 0, white + t * (red - white), white - t * (blue - white))
    return rgb.round().astype(np.uint8)


def confusion_figure(counts: np.ndarray, classes: list[str]) -> dict:
    """A plotly heatmap of a confusion matrix: rows are true classes, the first on top.

    Each cell's colour is the share of its true class (rows sum to 1). The colour scale
    ends at the largest mistake, so the diagonal saturates and the mistakes use the
    whole range; every cell is labelled with its share, and hovering shows the count.
    """
    shares = counts / counts.sum(axis=1, keepdims=True).clip(min=1)
    off = shares[~np.eye(len(classes), dtype=bool)]
    top = float(off.max()) if off.size and off.max() > 0 else 1.0
    annotations = [
        {"x": c, "y": r, "text": f"{shares[r, c]:.0%}" if counts[r, c] else "", "showarrow": False,
         "font": {"size": 10, "color": "white" if shares[r, c] > top * 0.6 else "black"}}
        for r in range(len(classes)) for c in range(len(classes))
    ]
    return {
        "data": [{
            "type": "heatmap", "z": shares.round(4).tolist(), "x": classes, "y": classes,
            "customdata": counts.tolist(), "zmin": 0, "zmax": top,
            "colorscale": [[0, "#ffffff"], [0.15, "#fee8c8"], [0.5, "#fc8d59"], [1, "#b30000"]],
            "colorbar": {"title": {"text": "share"}, "tickformat": ".0%"},
            "hovertemplate": "true %{y}<br>predicted %{x}<br>%{customdata} images, %{z:.1%} of the class<extra></extra>",
        }],
        "layout": {
            "xaxis": {"title": {"text": "predicted"}, "tickangle": -40},
            "yaxis": {"title": {"text": "true"}, "autorange": "reversed"},
            "margin": {"l": 100, "b": 90, "t": 20, "r": 20},
            "annotations": annotations,
        },
    }


PANE_STYLE = "font-family:sans-serif;font-size:12px"


def escaped(text) -> str:
    """A string from an event or a setting as it goes onto the page: never markup.

    Plotly shows the entities as the characters they stand for, so a trace or tick
    named ``<b>`` reads as typed.
    """
    return html.escape(str(text), quote=False)


def text_html(text: str) -> str:
    """A pane of plain text, its line breaks kept."""
    return f"<div style='{PANE_STYLE};white-space:pre-wrap'>{html.escape(text)}</div>"


def table_html(caption: str, headings: list[str], rows: list[list], marked: list[bool]) -> str:
    """A table pane: the caption in bold, the headings, one row per entry, marked rows in red.

    Numbers and percentages are right-aligned.
    """
    def cell(tag: str, value) -> str:
        align = "right" if not isinstance(value, str) or value.endswith("%") else "left"
        return f"<{tag} style='text-align:{align}'>{html.escape(str(value))}</{tag}>"

    head = "".join(cell("th", heading) for heading in headings)
    body = "".join(f"<tr style='color:{'#c62828;font-weight:bold' if bad else '#222'}'>"
                   + "".join(cell("td", value) for value in row) + "</tr>" for row, bad in zip(rows, marked))
    return (f"<div style='{PANE_STYLE}'><b>{html.escape(caption)}</b>"
            f"<table style='border-collapse:collapse;width:100%'><tr>{head}</tr>{body}</table></div>")


class _TextOf(HTMLParser):
    """The text of a piece of HTML, a line per block and spaces between cells; no tag survives."""

    BLOCKS = {"br", "p", "div", "tr", "table", "li", "h1", "h2", "h3", "h4"}

    def __init__(self):
        super().__init__()
        self.parts: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.parts.append("\n" if tag in self.BLOCKS else "  " if tag in ("td", "th") else "")

    def handle_data(self, data):
        self.parts.append(data)


def markup_text(markup: str) -> str:
    """What an HTML pane written by an older run says, as plain text: its tags and attributes dropped."""
    parser = _TextOf()
    parser.feed(markup)
    parser.close()
    lines = [line.strip() for line in "".join(parser.parts).splitlines()]
    return "\n".join(line for line in lines if line)


def config_html(settings: dict) -> str:
    """Every setting as "name value", in three columns to fit a wide, short pane."""
    lines = "".join(
        f"<div style='break-inside:avoid'><b>{html.escape(str(k))}</b> {html.escape(str(v))}</div>"
        for k, v in settings.items()
    )
    return f"<div style='columns:3;column-gap:24px;font-family:monospace;font-size:12px'>{lines}</div>"


def send_figure(vis, env: str, win: str, figure: dict, split: str = "test") -> None:
    """Draw a plotly figure (``data`` and ``layout``) as window ``win``, titled and sized as WINDOWS says.

    visdom's ``plotlyplot`` wants the plotly package only to turn a Figure into this
    dict; the request it sends is this one.
    """
    window, shown = spec(win), opts(win, split)["title"]  # a user's window name escaped, as every title is
    figure["layout"].update(title={"text": shown}, width=window.width, height=window.height)
    vis._send({**figure, "win": win, "eid": env, "opts": {"title": shown, "width": window.width,
                                                          "height": window.height}})


def pane_opts(event: dict, **extra) -> dict:
    """Visdom options for the window of a pane event, titled for the held-out split it shows."""
    return opts(event["win"], event.get("split", "test"), **extra)


def image_opts(event: dict, image: np.ndarray) -> dict:
    """Options for an image window as tall as its image needs at the window's width: no empty bands."""
    width = spec(event["win"]).width if not is_logged(event["win"]) else min(image.shape[1], IMAGE_WIDTH)
    return pane_opts(event, width=width, height=round(image.shape[0] * width / image.shape[1]) + IMAGE_CHROME)


class LostState(ConnectionError):
    """The server no longer holds windows this renderer created: it was restarted."""


class Renderer:
    """Draws events into a Visdom client's windows.

    A line window is drawn whole, every trace in one request, each time it gets new
    points: visdom applies an append by copying the window and diffing the copy, which
    costs its server ten or more times what replacing a window of a few hundred points does.
    Each trace shows at most ``TRACE_CAP`` points: past that, its whole history
    decimated to half the cap, then the points that come after. Windows marked
    ``shared`` get points from several commands (two ``trainviz compare`` into one
    environment), so they are redrawn one trace at a time instead.
    """

    def __init__(self, vis, env: str):
        self.vis, self.env = vis, env
        self.created: set[tuple[str, str]] = set()
        self.history: dict[tuple[str, str, str], list[tuple[float, float]]] = defaultdict(list)
        self.shown: dict[tuple[str, str, str], list[tuple[float, float]]] = defaultdict(list)  # what is drawn
        self.traces: dict[tuple[str, str], list[str]] = defaultdict(list)  # each window's traces, in order
        self.axes: dict[str, dict] = {}  # visdom options of the logged windows an ``axes`` event set up

    def reset(self) -> None:
        """Forget every window and history, before drawing a run again from all its events."""
        self.created.clear()
        self.history.clear()
        self.shown.clear()
        self.traces.clear()
        self.axes.clear()

    def render(self, events: list[dict]) -> None:
        """Send ``events`` in order, merging runs of scalar points into one request per window.

        Raises:
            LostState: a window created earlier is gone from the server.
        """
        if self.created:
            env, win = next(iter(self.created))
            if not self.vis.win_exists(win, env=env):
                raise LostState(f"window {win} of {env} is gone")
        points: dict[tuple[str, str, str], list[tuple[float, float]]] = defaultdict(list)
        for event in events:
            if event["kind"] == "scalars":
                env = event.get("env") or self.env
                for trace, value in event["values"].items():
                    points[(env, event["win"], trace)].append((event["x"], value))
                continue
            if event["kind"] == "series":
                for trace, values in event["values"].items():
                    if values:  # an empty series draws nothing, not an empty trace
                        points[(self.env, event["win"], trace)].extend(zip(event["x"], values))
                continue
            self._lines(points)
            points.clear()
            getattr(self, f"_{event['kind']}")(event)
        self._lines(points)

    def _lines(self, points: dict) -> None:
        windows: dict[tuple[str, str], None] = {}  # the windows to draw, in the order they got points
        for key, xy in points.items():
            env, win, trace = key
            self.history[key].extend(xy)
            if spec(win).shared:
                self._redraw_trace(env, win, trace)
                continue
            shown = self.shown[key]
            shown.extend(xy)
            if len(shown) > TRACE_CAP:
                x, y = curve(self.history[key], TRACE_CAP // 2)
                shown[:] = zip(x.tolist(), y.tolist())
            if trace not in self.traces[(env, win)]:
                self.traces[(env, win)].append(trace)
            windows[(env, win)] = None
        for env, win in windows:
            self._draw(env, win)

    def _draw(self, env: str, win: str) -> None:
        """Create or replace a line window with what each of its traces shows, in one request."""
        drawn = []
        for trace in self.traces[(env, win)]:
            x, y = zip(*self.shown[(env, win, trace)])
            drawn.append((escaped(trace), list(x), list(y), "markers" if trace in MARKERS else "lines"))
        self.vis.lines(drawn, win=win, env=env, opts=opts(win, showlegend=True, **self.axes.get(win, {})))
        self.created.add((env, win))

    def _redraw_trace(self, env: str, win: str, trace: str) -> None:
        """Replace one named trace with its full history, leaving the window's other traces alone.

        Several commands may draw into the compare windows at once, so each request must be one
        the server applies whole: a replace of this trace, or, when the window is not
        there yet, an append, which visdom turns into "create the window" or, if another
        run created it meanwhile, "add this trace". Creating the window outright would
        wipe the traces another run put there in between.
        """
        x, y = curve(self.history[(env, win, trace)])
        name = escaped(trace)
        answer = self.vis.line(Y=y, X=x, win=win, env=env, name=name, update="replace")
        if answer != win:  # visdom answers the window's id, or why not ("win does not exist", no env)
            self.vis.add_trace(x.tolist(), y.tolist(), win, env, name, opts(win, showlegend=True))

    def _images(self, event: dict) -> None:
        tiles = label_tiles(decode_images(event), event["captions"], event["marked"])
        image = grid(tiles, columns=8)
        self.vis.png(image, win=event["win"], env=self.env, opts=image_opts(event, image))

    def _text(self, event: dict) -> None:
        text = event["text"] if "text" in event else markup_text(event["html"])  # "html": an older run's pane
        self.vis.text(text_html(text), win=event["win"], env=self.env, opts=pane_opts(event))

    def _table(self, event: dict) -> None:
        self.vis.text(table_html(event["caption"], event["headings"], event["rows"], event["marked"]),
                      win=event["win"], env=self.env, opts=pane_opts(event))

    def _config(self, event: dict) -> None:
        self.vis.text(config_html(event["settings"]), win="config", env=self.env, opts=opts("config"))
        self.vis.record_run(self.env, event["settings"])

    def _controls(self, event: dict) -> None:
        """The control pane: visdom's properties pane, whose labels and values React draws as text."""
        state = PaneState(**{key: event[key] for key in ("lr", "paused", "note", "refresh", "fork", "prune")})
        self.vis.properties(properties(state), win=CONTROLS, env=self.env, opts=opts(CONTROLS))
        self.created.add((self.env, CONTROLS))

    def _outcome(self, event: dict) -> None:
        if (self.env, CONTROLS) in self.created:  # nothing listens to it any more
            self.vis.close(win=CONTROLS, env=self.env)
            self.created.discard((self.env, CONTROLS))
        self.vis.end_run(self.env, event["status"], event["metrics"])

    def _templates(self, event: dict) -> None:
        weights = decode_array(event)
        tiles = label_tiles(diverging(weights), event["captions"], [None] * len(weights))
        image = grid(tiles, columns=event.get("columns", 8))
        self.vis.png(image, win=event["win"], env=self.env, opts=image_opts(event, image))

    def _confusion(self, event: dict) -> None:
        send_figure(self.vis, self.env, event["win"],
                    confusion_figure(np.array(event["counts"]), [escaped(c) for c in event["classes"]]),
                    event.get("split", "test"))

    def _heatmap(self, event: dict) -> None:
        self.vis.heatmap(X=np.array(event["matrix"], dtype=float), win=event["win"], env=self.env,
                         opts=pane_opts(event, rownames=[escaped(r) for r in event["rows"]],
                                   columnnames=[escaped(c) for c in event["columns"]],
                                   colormap="Viridis",
                                   layoutopts={"plotly": {"margin": {"l": 100, "b": 90}}}))

    def _bars(self, event: dict) -> None:
        self.vis.bar(X=np.array(event["values"], dtype=float), win=event["win"], env=self.env,
                     opts=pane_opts(event, rownames=[escaped(n) for n in event["names"]]))

    def _histogram(self, event: dict) -> None:
        names = list(event["series"])
        width = max(len(s["centers"]) for s in event["series"].values())
        # One column per layer; shorter series are padded with NaN, which plotly skips.
        x = np.full((width, len(names)), np.nan)
        y = np.full((width, len(names)), np.nan)
        for i, name in enumerate(names):
            centers, density = event["series"][name]["centers"], event["series"][name]["density"]
            x[: len(centers), i], y[: len(density), i] = centers, density
        self.vis.line(Y=y, X=x, win=event["win"], env=self.env,
                      opts=pane_opts(event, legend=[escaped(n) for n in names]))

    def _axes(self, event: dict) -> None:
        options = {"xlabel": escaped(event["xlabel"]), "ylabel": escaped(event["ylabel"])}
        for axis in "xy":
            limits = event[f"{axis}lim"]
            if event[f"{axis}scale"] == "log":
                options[f"{axis}type"] = "log"
                limits = limits and [math.log10(v) for v in limits]  # plotly takes a log axis's range as powers of 10
            if limits is not None:
                options[f"{axis}tickmin"], options[f"{axis}tickmax"] = limits
        self.axes[event["win"]] = options
        if any(win == event["win"] for _, win in self.created):
            self._draw(self.env, event["win"])

    def _trials(self, event: dict) -> None:
        from viz.dashboard import sweep_board  # it draws with this module's helpers

        rows, fields = event["rows"], event["fields"]
        send_figure(self.vis, self.env, "sweep_val_acc", sweep_board.curves_figure(rows))
        send_figure(self.vis, self.env, "sweep_parcoords", sweep_board.parcoords_figure(rows, fields))
        self.vis.text(sweep_board.trials_html(rows, fields), win="sweep_trials", env=self.env,
                      opts=opts("sweep_trials", height=sweep_board.table_height(len(rows))))
        self.created.add((self.env, "sweep_trials"))

    def _save(self, event: dict) -> None:
        envs = [self.env] + sorted({env for env, _, _ in self.history if env != self.env})
        self.vis.save(envs)
