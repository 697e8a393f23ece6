"""Events -> Visdom calls. Used by the live sender and by ``trainviz replay``."""

from __future__ import annotations

import html
from collections import defaultdict

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from viz.sink import decode_images
from viz.windows import COMPARE_ENV, WINDOWS, opts

TILE = 84  # pixels per image side in the grids (28 x 3, nearest-neighbour)
CAPTION = 30  # pixels of caption below each tile
RED, GREEN = (220, 40, 40), (40, 160, 70)


def label_tiles(images: np.ndarray, captions: list[str], marked: list[bool]) -> np.ndarray:
    """Enlarge grayscale images and write each caption under it, framed red when marked.

    Returns uint8 (N, 3, H, W) ready for ``Visdom.images``.
    """
    font = ImageFont.load_default(size=11)
    tiles = []
    for image, caption, bad in zip(images, captions, marked):
        tile = Image.new("RGB", (TILE + 4, TILE + 4 + CAPTION), "white")
        tile.paste(Image.fromarray(image).resize((TILE, TILE), Image.NEAREST).convert("RGB"), (2, 2))
        draw = ImageDraw.Draw(tile)
        draw.rectangle([0, 0, TILE + 3, TILE + 3], outline=RED if bad else GREEN, width=2)
        draw.multiline_text((3, TILE + 5), caption, fill=RED if bad else (0, 0, 0), font=font, spacing=1)
        tiles.append(np.asarray(tile).transpose(2, 0, 1))
    return np.stack(tiles)


def config_html(settings: dict) -> str:
    """A two-column table of settings."""
    rows = "".join(
        f"<tr><td style='padding-right:12px'><b>{html.escape(str(k))}</b></td><td>{html.escape(str(v))}</td></tr>"
        for k, v in settings.items()
    )
    return f"<table style='font-family:monospace;font-size:12px'>{rows}</table>"


class LostState(ConnectionError):
    """The server no longer holds windows this renderer created: it was restarted."""


class Renderer:
    """Draws events into a Visdom client's windows.

    A window is created by its first event and appended to afterwards. Windows marked
    ``whole`` (and the ``compare`` curves, which other runs share) are redrawn from the
    history this renderer keeps, so a lost or concurrent update is repaired by the next.
    """

    def __init__(self, vis, env: str):
        self.vis, self.env = vis, env
        self.created: set[tuple[str, str]] = set()
        self.history: dict[tuple[str, str, str], list[tuple[float, float]]] = defaultdict(list)

    def reset(self) -> None:
        """Forget every window and history, before drawing a run again from all its events."""
        self.created.clear()
        self.history.clear()

    def render(self, events: list[dict]) -> None:
        """Send ``events`` in order, merging runs of scalar points into one request per trace.

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
            self._lines(points)
            points.clear()
            getattr(self, f"_{event['kind']}")(event)
        self._lines(points)

    def _lines(self, points: dict) -> None:
        for (env, win, trace), xy in points.items():
            if env == COMPARE_ENV or WINDOWS[win].whole:
                self.history[(env, win, trace)].extend(xy)
                self._redraw_trace(env, win, trace)
                continue
            x, y = (np.array(column, dtype=float) for column in zip(*xy))
            first = (env, win) not in self.created
            marker = {"markers": True, "markersize": 6} if trace == "epoch mean" else {}
            self.vis.line(Y=y, X=x, win=win, env=env, name=trace,
                          update=None if first else "append",
                          opts=opts(win, showlegend=True, legend=[trace], **marker) if first else None)
            self.created.add((env, win))

    def _redraw_trace(self, env: str, win: str, trace: str) -> None:
        """Replace one named trace with its full history, leaving the window's other traces alone.

        Several runs draw into the compare windows at once, so each request must be one
        the server applies whole: a replace of this trace, or, when the window is not
        there yet, an append, which visdom turns into "create the window" or, if another
        run created it meanwhile, "add this trace". Creating the window outright would
        wipe the traces another run put there in between.
        """
        x, y = (np.array(column, dtype=float) for column in zip(*self.history[(env, win, trace)]))
        answer = self.vis.line(Y=y, X=x, win=win, env=env, name=trace, update="replace")
        if answer != win:  # visdom answers the window's id, or why not ("win does not exist", no env)
            self.vis.add_trace(x.tolist(), y.tolist(), win, env, trace, opts(win, showlegend=True))

    def _images(self, event: dict) -> None:
        tiles = label_tiles(decode_images(event), event["captions"], event["marked"])
        self.vis.images(tiles, nrow=min(8, len(tiles)), padding=2, win=event["win"], env=self.env,
                        opts=opts(event["win"]))

    def _text(self, event: dict) -> None:
        self.vis.text(event["html"], win=event["win"], env=self.env, opts=opts(event["win"]))

    def _config(self, event: dict) -> None:
        self.vis.text(config_html(event["settings"]), win="config", env=self.env, opts=opts("config"))

    def _heatmap(self, event: dict) -> None:
        self.vis.heatmap(X=np.array(event["matrix"], dtype=float), win=event["win"], env=self.env,
                         opts=opts(event["win"], rownames=event["rows"], columnnames=event["columns"],
                                   colormap="Viridis",
                                   layoutopts={"plotly": {"margin": {"l": 100, "b": 90}}}))

    def _bars(self, event: dict) -> None:
        self.vis.bar(X=np.array(event["values"], dtype=float), win=event["win"], env=self.env,
                     opts=opts(event["win"], rownames=event["names"]))

    def _histogram(self, event: dict) -> None:
        names = list(event["series"])
        width = max(len(s["centers"]) for s in event["series"].values())
        # One column per layer; shorter series are padded with NaN, which plotly skips.
        x = np.full((width, len(names)), np.nan)
        y = np.full((width, len(names)), np.nan)
        for i, name in enumerate(names):
            centers, density = event["series"][name]["centers"], event["series"][name]["density"]
            x[: len(centers), i], y[: len(density), i] = centers, density
        self.vis.line(Y=y, X=x, win=event["win"], env=self.env, opts=opts(event["win"], legend=names))

    def _save(self, event: dict) -> None:
        envs = [self.env] + sorted({env for env, _, _ in self.history if env != self.env})
        self.vis.save(envs)
