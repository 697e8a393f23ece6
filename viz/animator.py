"""Dive into Deep Learning's ``Animator``, drawn live on the dashboard instead of by matplotlib.

The book's training functions (``train_ch3`` and its kin) plot with ``d2l.Animator``,
which redraws a matplotlib figure inside Jupyter and, from a terminal or PyCharm, shows
nothing until the end or blocks on ``plt.show()``. ``viz.Animator`` takes the same
arguments and the same ``add(x, y)``, so swapping the one name makes those functions
draw live from anywhere:

    animator = viz.Animator(xlabel="epoch", xlim=[1, num_epochs], ylim=[0.3, 0.9],
                            legend=["train loss", "train acc", "test acc"])
    for epoch in range(num_epochs):
        ...
        animator.add(epoch + 1, train_metrics + (test_acc,))

Every Animator draws into the run the program started last (``viz.init``), or into one
it starts itself (named after the script, under ./runs), finished when the program ends.
"""

from __future__ import annotations

import weakref

from viz import api

_count: weakref.WeakKeyDictionary[api.Run, int] = weakref.WeakKeyDictionary()  # Animators made in each run


def shared_run() -> api.Run:
    """The run Animators draw into: the latest one started and not finished, else a new one."""
    return api.current() or api.init()


class Animator:
    """A live line window with ``d2l.Animator``'s arguments.

    ``fmts``, ``nrows``, ``ncols`` and ``figsize`` are matplotlib's and taken only so the
    book's calls work unchanged. ``run``: the run to draw into (default: ``shared_run()``);
    ``name``: the window's name (default "animator", then "animator 2", ...).
    """

    def __init__(self, xlabel=None, ylabel=None, legend=None, xlim=None, ylim=None, xscale="linear",
                 yscale="linear", fmts=("-", "m--", "g-.", "r:"), nrows=1, ncols=1, figsize=(3.5, 2.5), *,
                 run: api.Run | None = None, name: str | None = None):
        self.run = run or shared_run()
        made = _count[self.run] = _count.get(self.run, 0) + 1  # each gets its own window
        self.name = name or ("animator" if made == 1 else f"animator {made}")
        self.traces: list[str] = []  # each y's trace by position: its legend entry, or its position
        for entry in legend or []:
            self._add_trace(str(entry))
        self.run.axes(self.name, xlabel or "", ylabel or "", xlim, ylim, xscale, yscale)

    def add(self, x, y) -> None:
        """Add points: ``y`` a number or a sequence, one per legend entry; ``x`` one number or one per ``y``.

        Points whose x or y is None are skipped, as the book's Animator skips them.
        """
        if not one_or_more(y):
            y = [y]
        if not one_or_more(x):
            x = [x] * len(y)
        while len(self.traces) < len(y):  # more values than legend entries: the rest named by position
            self._add_trace(str(len(self.traces)))
        by_x: dict[float, dict] = {}
        for a, b, name in zip(x, y, self.traces):
            if a is not None and b is not None:
                by_x.setdefault(float(a), {})[name] = b
        for a, values in by_x.items():
            self.run.plot(self.name, a, values)

    def _add_trace(self, wanted: str) -> None:
        """Name the next trace ``wanted``, or ``wanted (2)`` and so on when a trace has that name already."""
        name, count = wanted, 1
        while name in self.traces:
            count += 1
            name = f"{wanted} ({count})"
        self.traces.append(name)


def one_or_more(value) -> bool:
    """Whether ``value`` is a sequence of points rather than one (a number, or a 0-dim tensor or array)."""
    return hasattr(value, "__len__") and getattr(value, "ndim", 1) != 0
