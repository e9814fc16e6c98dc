"""Chart builders the report templates call: tidy rows in, a plotly figure (plain JSON) out.

Templates pick rows (`select`), then ask for a chart; every chart carries its own rows as an
HTML table and a CSV link, so each number in a picture can also be read and copied. Nothing here
computes a statistic: values, CIs and counts come from results.json as they are. Figures are
plain dicts rendered by plotly.js in the browser, so the Python plotly package is not needed.
"""
from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass, field
from urllib.parse import quote

# Okabe-Ito: distinguishable with the common colour-vision deficiencies. Bars also get a fill
# pattern and markers a symbol per series, so the legend can be matched without colour.
PALETTE = ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#56B4E9", "#CC79A7", "#F0E442",
           "#000000"]
PATTERNS = ["", "/", ".", "x", "\\", "+", "-", "|"]
HIGHLIGHT = "#D55E00"  # Okabe-Ito vermillion: the bar a chart singles out (the worst group)
SYMBOLS = ["circle", "square", "diamond", "triangle-up", "x", "cross", "star", "hexagon"]
REFERENCE_STYLE = {"color": "#000000", "symbol": "diamond-open", "size": 11,
                   "line": {"width": 2}}
BASE_COLUMNS = ["metric", "label_set", "group_by", "group"]
VALUE_COLUMNS = ["value", "ci_low", "ci_high", "n", "note"]


@dataclass
class Chart:
    id: str
    title: str
    figure: dict
    rows: list[dict]
    columns: list[str] = field(default_factory=list)
    caption: str = ""
    meta: dict | None = None  # the probe's meta: its table shows metric titles and units

    @property
    def figure_json(self) -> str:
        return script_json(self.figure)

    @property
    def csv_uri(self) -> str:
        return csv_uri(self.rows, self.columns)

    @property
    def filename(self) -> str:
        return f"{self.id}.csv"


def script_json(obj) -> str:
    """JSON safe inside <script type="application/json">: no '<', '>' or '&' survives raw,
    so a label holding '</script>' cannot end the block."""
    text = json.dumps(_finite(obj), ensure_ascii=False, allow_nan=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _finite(obj):
    # NaN/inf are not JSON; show them as missing rather than failing the whole report.
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {str(k): _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def columns_of(rows: list[dict]) -> list[str]:
    """Row keys in a stable reading order: identity keys, extra keys, then the numbers."""
    seen = [k for k in BASE_COLUMNS if any(k in r for r in rows)]
    for r in rows:
        seen += [k for k in r if k not in seen and k not in VALUE_COLUMNS]
    return seen + [k for k in VALUE_COLUMNS if any(k in r for r in rows)]


def csv_uri(rows: list[dict], columns: list[str] | None = None) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns or columns_of(rows), extrasaction="ignore",
                            lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: csv_cell(v) for k, v in r.items()} for r in rows)
    return "data:text/csv;charset=utf-8," + quote(buf.getvalue(), safe="")


FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value):
    """Text a spreadsheet would run as a formula (a group label "=HYPERLINK(...)" from someone's
    dataset) gets OWASP's prefix, a single quote; numbers stay numbers (-0.5 is not text)."""
    if isinstance(value, str) and value.startswith(FORMULA_START):
        return "'" + value
    return value


def select(rows, **filters) -> list[dict]:
    """Rows whose keys equal the filters; a list/tuple filter value means "any of these"."""
    def keep(r):
        for k, want in filters.items():
            ok = r.get(k) in want if isinstance(want, (list, tuple)) else r.get(k) == want
            if not ok:
                return False
        return True
    return [r for r in rows or [] if keep(r)]


def distinct(rows, key) -> list:
    out = []
    for r in rows:
        if r.get(key) not in out:
            out.append(r.get(key))
    return out


def lookup(rows, **filters) -> dict | None:
    """The one row matching the filters, or None when none (or several) match."""
    hits = select(rows, **filters)
    return hits[0] if len(hits) == 1 else None


def points(rows, x: str = "group") -> dict:
    """{x label: value} of rows, the `points` a chart's reference markers take (published
    numbers are rows too: audit/reference.py)."""
    return {_label(r.get(x)): r.get("value") for r in rows or []}


def chance_line(candidates) -> dict:
    """The accuracy of guessing among N names, 1/N, drawn as a reference for each N shown."""
    return {"name": "chance (1/N)", "dash": True,
            "points": {str(n): 1 / n for n in candidates if isinstance(n, (int, float)) and n > 0}}


def _error_bars(rows) -> dict:
    # Plotly draws asymmetric bars from distances; rows without a CI get none.
    plus = [None if r.get("ci_high") is None or r.get("value") is None
            else r["ci_high"] - r["value"] for r in rows]
    minus = [None if r.get("ci_low") is None or r.get("value") is None
             else r["value"] - r["ci_low"] for r in rows]
    return {"type": "data", "symmetric": False, "array": plus, "arrayminus": minus,
            "color": "#333", "thickness": 1.2, "width": 3}


def _layout(title, *, x_title="", y_title="", percent=False, height=380) -> dict:
    y_axis = {"title": {"text": y_title}, "gridcolor": "#e5e5e5", "zerolinecolor": "#999",
              "automargin": True}
    if percent:
        y_axis["tickformat"] = ".0%"
    return {"title": {"text": title, "x": 0, "font": {"size": 15}}, "height": height,
            "font": {"family": "system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif",
                     "size": 12, "color": "#1f2328"},
            "margin": {"l": 60, "r": 20, "t": 60, "b": 60}, "paper_bgcolor": "#fff",
            "plot_bgcolor": "#fff", "legend": {"orientation": "h", "y": -0.22},
            "xaxis": {"title": {"text": x_title}, "type": "category", "automargin": True},
            "yaxis": y_axis, "barmode": "group", "hovermode": "closest"}


def _label(value) -> str:
    return "(none)" if value is None else str(value)


def _hover(percent) -> str:
    fmt = "%{y:.1%}" if percent else "%{y:.3g}"
    return f"%{{x}}: {fmt}<extra>%{{fullData.name}}</extra>"


class ChartBuilder:
    """Chart factory of one page or one probe section: element ids unique under its prefix, in
    document order. With the probe's meta, a legend of metrics names each by its title."""

    def __init__(self, prefix: str = "chart", meta: dict | None = None):
        self.prefix, self.count, self.meta = prefix, 0, meta

    def _new(self, title, figure, rows, caption="") -> Chart:
        self.count += 1
        return Chart(f"{self.prefix}-{self.count}", title, figure, list(rows), columns_of(rows),
                     caption, self.meta)

    def bar(self, rows, *, title, x="group", series=None, percent=False, x_title="",
            y_title="", reference=None, caption="", highlight=None) -> Chart | None:
        """Grouped bars with CI error bars; `reference` = {"name", "points": {x: value}};
        `highlight`: the x label whose bars stand out (another colour and a hatch, so not by
        colour alone), e.g. the worst group a probe named."""
        if not rows:
            return None
        traces = []
        for i, (name, part) in enumerate(self._split(rows, series)):
            xs = [_label(r.get(x)) for r in part]
            traces.append({"type": "bar", "name": name, "x": xs,
                           "y": [r.get("value") for r in part], "error_y": _error_bars(part),
                           "marker": self._bar_marker(i, xs, highlight),
                           "hovertemplate": _hover(percent)})
        refs = [reference] if isinstance(reference, dict) else list(reference or [])
        for j, ref in enumerate(refs):
            traces.append(self._reference_trace(ref, x_categories=distinct(rows, x), index=j))
        layout = _layout(title, x_title=x_title, y_title=y_title, percent=percent)
        if any("series" in ref for ref in refs):
            # Puts each reference marker over the bar of the series it belongs to.
            layout["scattermode"] = "group"
            for t in traces:
                t["offsetgroup"] = t.get("offsetgroup") or t["name"]
        return self._new(title, {"data": traces, "layout": layout}, rows, caption)

    @staticmethod
    def _bar_marker(i, xs, highlight) -> dict:
        marker = {"color": PALETTE[i % 8], "line": {"color": "#333", "width": 0.5},
                  "pattern": {"shape": PATTERNS[i % 8], "fgcolor": "#fff", "fillmode": "overlay",
                              "solidity": 0.3}}
        if highlight is not None and _label(highlight) in xs:
            marked = [v == _label(highlight) for v in xs]
            marker["color"] = [HIGHLIGHT if m else PALETTE[i % 8] for m in marked]
            marker["pattern"]["shape"] = ["x" if m else PATTERNS[i % 8] for m in marked]
            marker["line"]["width"] = [2.5 if m else 0.5 for m in marked]
        return marker

    def line(self, rows, *, title, x, series=None, percent=False, x_title="", y_title="",
             log_x=False, extra=(), caption="") -> Chart | None:
        """Lines over a numeric x; `extra` = [{"name", "points": {x: y}, "dash": bool}]."""
        if not rows:
            return None
        traces = []
        for i, (name, part) in enumerate(self._split(rows, series)):
            part = sorted(part, key=lambda r: r.get(x))
            traces.append({"type": "scatter", "mode": "lines+markers", "name": name,
                           "x": [r.get(x) for r in part], "y": [r.get("value") for r in part],
                           "error_y": _error_bars(part),
                           "line": {"color": PALETTE[i % 8], "width": 2},
                           "marker": {"symbol": SYMBOLS[i % 8], "size": 8}})
        for j, ref in enumerate(extra):
            traces.append(self._extra_trace(ref, dash=ref.get("dash", False), index=j))
        layout = _layout(title, x_title=x_title, y_title=y_title, percent=percent)
        layout["xaxis"]["type"] = "log" if log_x else "linear"
        return self._new(title, {"data": traces, "layout": layout}, rows, caption)

    def heatmap(self, rows, *, title, x, y, percent=False, x_title="", y_title="",
                caption="") -> Chart | None:
        """Cells = row values; the cell text carries the number so colour is never needed."""
        if not rows:
            return None
        xs, ys = distinct(rows, x), distinct(rows, y)
        cell = {(r.get(x), r.get(y)): r.get("value") for r in rows}
        z = [[cell.get((xv, yv)) for xv in xs] for yv in ys]
        fmt = ".1%" if percent else ".3g"
        trace = {"type": "heatmap", "x": [_label(v) for v in xs], "y": [_label(v) for v in ys],
                 "z": z, "colorscale": "Cividis", "texttemplate": f"%{{z:{fmt}}}",
                 "hovertemplate": f"%{{y}} / %{{x}}: %{{z:{fmt}}}<extra></extra>",
                 "colorbar": {"tickformat": ".0%" if percent else ""}}
        layout = _layout(title, x_title=x_title, y_title=y_title,
                         height=max(300, 60 + 34 * len(ys)))
        layout["yaxis"].update({"type": "category", "autorange": "reversed"})
        return self._new(title, {"data": [trace], "layout": layout}, rows, caption)

    def strip(self, rows, *, title, x, label, highlight=None, percent=False, x_title="",
              y_title="", caption="") -> Chart | None:
        """One dot per row over categories `x`, hover names the row by `label`; rows whose
        `label` equals `highlight` are drawn as a separate, labelled series."""
        if not rows:
            return None
        plain = [r for r in rows if highlight is None or r.get(label) != highlight]
        marked = [r for r in rows if highlight is not None and r.get(label) == highlight]
        traces = []
        for i, (name, part) in enumerate([(f"each {label}", plain), (str(highlight), marked)]):
            if part:
                traces.append({"type": "scatter", "mode": "markers", "name": name,
                               "x": [_label(r.get(x)) for r in part],
                               "y": [r.get("value") for r in part],
                               "text": [_label(r.get(label)) for r in part],
                               "marker": {"color": PALETTE[i * 3], "symbol": SYMBOLS[i * 2],
                                          "size": 10 + 4 * i, "opacity": 0.8},
                               "hovertemplate": "%{text}: %{y:.3g}<extra></extra>"})
        layout = _layout(title, x_title=x_title, y_title=y_title, percent=percent)
        return self._new(title, {"data": traces, "layout": layout}, rows, caption)

    def _split(self, rows, series):
        if series is None:
            return [("value", rows)]
        return [(self._series_name(series, s), select(rows, **{series: s}))
                for s in distinct(rows, series)]

    def _series_name(self, series, value) -> str:
        if series == "metric" and self.meta is not None:
            from audit.compare import metric_of

            return metric_of(self.meta, str(value))["title"]
        # A bare number in a legend ("10") says nothing; name it ("k=10").
        return f"{series}={value}" if isinstance(value, (int, float)) else _label(value)

    @staticmethod
    def _reference_trace(reference, *, x_categories, index=0) -> dict:
        points = reference["points"]
        xs = [_label(c) for c in x_categories if _label(c) in points]
        symbol = ["diamond-open", "circle-open", "square-open"][index % 3]
        trace = {"type": "scatter", "mode": "markers", "name": reference["name"], "x": xs,
                 "y": [points[c] for c in xs], "marker": {**REFERENCE_STYLE, "symbol": symbol},
                 "hovertemplate": "%{x}: %{y:.1%}<extra>%{fullData.name}</extra>"}
        if "series" in reference:
            trace["offsetgroup"] = str(reference["series"])
        return trace

    @staticmethod
    def _extra_trace(ref, *, dash, index) -> dict:
        xs = sorted(ref["points"], key=float)
        return {"type": "scatter", "mode": "lines+markers" if dash else "markers",
                "name": ref["name"], "x": [float(v) for v in xs],
                "y": [ref["points"][v] for v in xs],
                "line": {"color": "#555", "dash": "dot", "width": 1.5},
                "marker": {**REFERENCE_STYLE, "symbol": SYMBOLS[(index + 2) % 8] + "-open"}}
