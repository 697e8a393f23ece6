"""Keeping the dashboard cheap at any run length: a time budget, and bounded traces.

Two costs grow if nothing bounds them. The costly panes (image grids, histograms,
confusion matrix, learned templates) cost tens of milliseconds to compute, draw and
send, which is a large share of a 0.2-second epoch: ``Budget`` refreshes them only as
often as their measured cost allows. And a per-step trace grows with the run, and with
it every redraw of its window, on the server and in the browser: ``decimate`` lets the
renderer keep every trace below a fixed number of points.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np


class Budget:
    """Decides when the costly panes are refreshed, so they take at most ``share`` of the run's time.

    A refresh that cost ``c`` seconds (measured where it ran, and, through ``background``,
    where it was drawn and sent) is followed by at least ``c / share`` seconds without one.
    Before the first refresh its cost is not known: it is taken to be ``prior`` seconds,
    counted from the budget's creation, so a run of a few seconds is not slowed by a
    refresh midway. The caller refreshes at the last epoch regardless, so the final state
    is always shown.

    Example:
        >>> clock = iter([0.0, 4.0, 5.0]).__next__
        >>> budget = Budget(0.02, prior=0.1, clock=clock)  # created at 0 s
        >>> budget.due(), budget.due()  # at 4 s, then at 5 s
        (False, True)
        >>> budget.spent(started=5.0, seconds=0.05)  # due again 2.5 s after it started
    """

    def __init__(self, share: float, background: Callable[[], float] = lambda: 0.0,
                 clock: Callable[[], float] = time.perf_counter, prior: float = 0.0):
        self.share = share
        self.background = background  # seconds spent so far elsewhere on these panes (the sender)
        self.clock = clock
        self.started = clock()  # when the last refresh began (none yet: when the budget was made) ...
        self.seconds = prior  # ... and what it cost in the caller's thread
        self.background_mark = 0.0  # background() when it began

    def due(self) -> bool:
        """Whether enough time passed since the last refresh for its cost to fit the share."""
        cost = self.seconds + self.background() - self.background_mark
        return self.clock() - self.started >= cost / self.share

    def spent(self, started: float, seconds: float) -> None:
        """Record a refresh that began at ``started`` and cost ``seconds`` in the caller's thread."""
        self.started, self.seconds = started, seconds
        self.background_mark = self.background()


def decimate(x: np.ndarray, y: np.ndarray, target: int) -> tuple[np.ndarray, np.ndarray]:
    """At most ``target`` points of the curve (x, y) that draw it the same at screen resolution.

    The points between the first and the last are cut into buckets; each bucket keeps its
    lowest and highest point (in x order), so every spike and dip survives. The first
    and last points are always kept. A curve of ``target`` points or fewer is returned
    as it is.

    Example:
        >>> x = np.arange(10.0); y = np.array([0, 5, 1, 1, 9, 1, 1, 1, 2, 3.0])
        >>> decimate(x, y, 6)[1].tolist()
        [0.0, 1.0, 9.0, 1.0, 2.0, 3.0]
    """
    n = len(x)
    if n <= target:
        return x, y
    buckets = max(1, (target - 2) // 2)
    edges = np.linspace(1, n - 1, buckets + 1).round().astype(int)
    keep = [0]
    for start, stop in zip(edges[:-1], edges[1:]):
        if stop > start:
            segment = y[start:stop]
            keep += sorted({start + int(segment.argmin()), start + int(segment.argmax())})
    keep.append(n - 1)
    return x[keep], y[keep]
