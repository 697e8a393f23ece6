"""A sweep's own environment: every trial's validation curve, settings -> accuracy, and the trials table.

It draws rows made by ``trainers.sweeps.study.trial_rows`` (plain dicts: number, params, state,
value, epochs, curve, seconds, env), so it knows nothing of Optuna; the renderer draws
them from a ``trials`` event with the functions here. Every string in them is escaped
where it is drawn: settings come from the command line, the storage and events files.
"""

from __future__ import annotations

import html

from viz.dashboard.render import escaped
from viz.dashboard.windows import WINDOWS

COLORSCALE = "Viridis"


def label(params: dict) -> str:
    """A trial's settings as a trace name: ``lr=0.1 hidden=200,200``."""
    return " ".join(f"{k.replace('_', '-')}={short(v)}" for k, v in params.items())


def short(value) -> str:
    """A setting as a table shows it: floats to 3 significant digits, a missing one as -."""
    return "-" if value is None else f"{value:.3g}" if isinstance(value, float) else str(value)


def curves_figure(rows: list[dict]) -> dict:
    """One validation-accuracy line per trial that reported an epoch, the best one thick."""
    best = next((r["number"] for r in rows if r["state"] == "complete"), None)
    data = [{"type": "scatter", "mode": "lines+markers", "name": escaped(f"#{r['number']} {label(r['params'])}"),
             "x": [epoch for epoch, _ in r["curve"]], "y": [value for _, value in r["curve"]],
             "line": {"width": 4 if r["number"] == best else 1.5, "dash": "dot" if r["state"] == "pruned" else "solid"},
             "marker": {"size": 5}}
            for r in sorted(rows, key=lambda r: r["number"]) if r["curve"]]
    spec = WINDOWS["sweep_val_acc"]
    return {"data": data, "layout": {"xaxis": {"title": {"text": spec.xlabel}, "dtick": 1},
                                     "yaxis": {"title": {"text": spec.ylabel}}, "showlegend": True,
                                     "margin": {"l": 60, "r": 20, "t": 40, "b": 40}}}


def parcoords_figure(rows: list[dict], fields: list[str]) -> dict:
    """A parallel-coordinates plot: one axis per searched setting, the last one validation accuracy.

    Numbers get a numeric axis; choices that are not numbers get one tick per choice.
    Lines are coloured by accuracy, so the settings of good trials stand out.
    """
    scored = [r for r in rows if r["value"] is not None and all(f in r["params"] for f in fields)]
    dimensions = []
    for field in fields:
        values = [r["params"][field] for r in scored]
        numbers = [_number(v) for v in values]
        if all(n is not None for n in numbers):
            dimensions.append({"label": escaped(field.replace("_", "-")), "values": numbers})
        else:
            ticks = sorted({str(v) for v in values})
            dimensions.append({"label": escaped(field.replace("_", "-")),
                               "values": [ticks.index(str(v)) for v in values],
                               "tickvals": list(range(len(ticks))), "ticktext": [escaped(t) for t in ticks]})
    accuracy = [r["value"] for r in scored]
    dimensions.append({"label": "val acc", "values": accuracy})
    trace = {"type": "parcoords", "dimensions": dimensions,
             "line": {"color": accuracy, "colorscale": COLORSCALE, "showscale": True}}
    return {"data": [trace], "layout": {"margin": {"l": 70, "r": 70, "t": 70, "b": 30}}}


def _number(value) -> float | None:
    if isinstance(value, bool):
        return None
    try:
        return float(value)
    except (TypeError, ValueError, OverflowError):  # OverflowError: a whole number no float holds
        return None


def trials_html(rows: list[dict], fields: list[str]) -> str:
    """The trials as an HTML table, best first, the best marked, each linked to its own environment."""
    best = next((r["number"] for r in rows if r["state"] == "complete"), None)
    head = "".join(f"<th>{html.escape(h)}</th>" for h in
                   ["#", *[f.replace("_", "-") for f in fields], "val acc", "epochs", "state", "seconds", "dashboard"])
    body = []
    for r in rows:
        style = "background:#fff3c4;font-weight:bold" if r["number"] == best else ""
        cells = [("&#9733; " if r["number"] == best else "") + str(r["number"]),
                 *[html.escape(short(r["params"].get(f))) for f in fields],
                 "-" if r["value"] is None else f"{r['value']:.4f}", str(r["epochs"]), html.escape(r["state"]),
                 "-" if r["seconds"] is None else f"{r['seconds']:.0f}",
                 # relative to the page at /env/STUDY (or /): the trial's environment beside it
                 f"<a href='../env/{html.escape(r['env'])}' target='_blank'>{html.escape(r['env'])}</a>"
                 if r["env"] else "-"]
        body.append(f"<tr style='{style}'>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    return ("<div style='font-family:sans-serif;font-size:12px'>"
            "<table style='border-collapse:collapse;width:100%' border=1 cellpadding=3>"
            f"<tr>{head}</tr>{''.join(body)}</table></div>")


TABLE_ROW = 18  # pixels of one row of the trials table at its font size and padding
TABLE_CHROME = 30  # pixels of the window around the table: the title bar and margins


def table_height(trials: int) -> int:
    """The trials window's height: its rows and heading, up to the window's own height (then it scrolls)."""
    return min(WINDOWS["sweep_trials"].height, TABLE_CHROME + TABLE_ROW * (trials + 1))


class SweepBoard:
    """Draws a study's environment through a sink: each draw is one ``trials`` event of every row.

    The live sink writes the events to the study's events.jsonl before it sends them,
    so a server that was missing or restarted gets the board back whole, and
    ``trainviz replay STUDY_DIR --env STUDY`` rebuilds it later. Each draw replaces the
    windows whole: any worker or machine may redraw them.
    """

    def __init__(self, sink, fields: list[str]):
        self.sink, self.fields = sink, fields

    def draw(self, rows: list[dict]) -> None:
        """Show ``rows`` (best first), once there is a curve to plot: the windows appear with the first epoch."""
        if not any(r["curve"] for r in rows):
            return
        self.sink.trials(rows, self.fields)
        self.sink.save()

    def close(self) -> None:
        """Deliver what is queued."""
        self.sink.close()
