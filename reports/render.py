"""results.json -> one self-contained HTML file.

The file is mailed around and attached to tickets, so it must open anywhere with no network:
plotly.js is inlined once, chart data sits in `<script type="application/json">` blocks, and a
Content-Security-Policy allows exactly the two inline scripts we ship (by sha256) and nothing
that could load from elsewhere. Jinja autoescaping is on: group labels come from datasets and
are untrusted text.

Each probe section is `templates/probes/<probe name>.html.j2` when it exists, else the generic
`templates/probes/_generic.html.j2` (every row as a table). The page around it already shows
the probe's status, findings, summary and an all-rows CSV link. A partial sees:
  s          the section: name, title, status, summary, rows, findings
  chart      reports.charts.ChartBuilder: bar / line / heatmap / strip (rows in, Chart out)
  select, distinct, lookup, chance_line, csv_uri   row helpers (reports.charts)
  reference  reports/reference.json (published numbers, shown beside the model's)
and draws a chart with `{% import "_macros.html.j2" as m %}{{ m.show(chart.bar(...)) }}`, which
adds the chart's rows as a table and a CSV link.
"""
from __future__ import annotations

import base64
import functools
import hashlib
import json
import logging
import re
from pathlib import Path

from reports import charts

log = logging.getLogger(__name__)
HERE = Path(__file__).parent
SEVERITY_ORDER = {"high": 0, "medium": 1, "low": 2, "info": 3}
PROBE_TITLES = {
    "fairface_label_bias": "FairFace label bias",
    "celebrity_identification": "Celebrity identification",
    "prompt_sensitivity": "Prompt sensitivity",
    "distribution_shift": "Distribution shift",
    "retrieval_skew": "Retrieval skew",
}
# Only inline raster thumbnails; anything else (a URL, SVG with script) is dropped.
THUMBNAIL_RE = re.compile(r"^data:image/(jpeg|png|webp);base64,[A-Za-z0-9+/=\s]+$")


def check_names(results: dict, *, where: str = "results") -> None:
    """Probe names pick template files and anchors: a name such as "../report" from a crafted
    results.json must be refused in one line, never looked up as a path."""
    from audit.errors import UserError

    for name in (results.get("probes") or {}):
        if not (isinstance(name, str) and name.isidentifier() and name.isascii()):
            raise UserError(f"{where}: probe name {name!r} is not a valid name "
                            "(letters, digits and _, not starting with a digit)")


def render_report(results: dict, out: Path, *, include_examples: bool = False) -> Path:
    """Write the HTML report for `results` (a results.json dict) to `out`, atomically."""
    check_names(results)
    context = {"r": results, "sections": _sections(results, include_examples),
               "sources": data_sources(results),
               "findings": top_findings(results), "gates": results.get("gates") or [],
               "include_examples": include_examples, "reference": load_reference()}
    return _write(out, _render("report.html.j2", context))


def render_compare(comparison: dict, out: Path) -> Path:
    """Write the HTML of a `reports.compare.compare()` result to `out`, atomically."""
    context = {"c": comparison, "rows": comparison.get("rows", []),
               "csv": charts.csv_uri(comparison.get("rows", []))}
    return _write(out, _render("compare.html.j2", context))


def top_findings(results: dict) -> list[dict]:
    """All findings of all probes, most severe first (stable within a severity)."""
    found = []
    for name, probe in (results.get("probes") or {}).items():
        for f in probe.get("findings") or []:
            found.append({**f, "probe": name, "probe_title": probe_title(name)})
    return sorted(found, key=lambda f: SEVERITY_ORDER.get(f.get("severity"), 4))


def data_sources(results: dict) -> list[dict]:
    """The `data` section, one dict per source; `skipped` may be a count (with the files in
    `skipped_files`, as audit.data writes it) or the list of files itself."""
    out = []
    for name, d in (results.get("data") or {}).items():
        skipped = d.get("skipped")
        files = d.get("skipped_files") or (skipped if isinstance(skipped, list) else [])
        count = skipped if isinstance(skipped, int) else len(files)
        out.append({**d, "name": name, "skipped_count": count, "skipped_files": files})
    return out


def probe_title(name: str) -> str:
    return PROBE_TITLES.get(name, name.replace("_", " ").capitalize())


@functools.lru_cache(maxsize=1)
def load_reference() -> dict:
    return json.loads((HERE / "reference.json").read_text(encoding="utf-8"))


def thumbnail(image, *, size: int = 96, quality: int = 80) -> str:
    """A PIL image -> small JPEG data: URI for `probes.<name>.examples[].thumbnail`.

    For the runner, and only when the user asked for --include-examples: faces are personal
    data, so neither results.json nor the report carries any by default.
    """
    import io

    img = image.convert("RGB")
    img.thumbnail((size, size))
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _sections(results: dict, include_examples: bool) -> list[dict]:
    out = []
    order = list(PROBE_TITLES)  # the product's order; other probes after, as they come
    probes = sorted((results.get("probes") or {}).items(),
                    key=lambda kv: order.index(kv[0]) if kv[0] in order else len(order))
    for name, probe in probes:
        summary = probe.get("summary") or {}
        examples = [e for e in probe.get("examples") or []
                    if THUMBNAIL_RE.match(str(e.get("thumbnail", "")))]
        out.append({"name": name, "title": probe_title(name), "probe": probe,
                    "status": probe.get("status", "ok"), "summary": summary,
                    "rows": probe.get("rows") or [],
                    "findings": sorted(probe.get("findings") or [],
                                       key=lambda f: SEVERITY_ORDER.get(f.get("severity"), 4)),
                    # ProbeResult keeps why it was skipped, or its error, in "message".
                    "error": probe.get("message") or probe.get("error"),
                    "reason": probe.get("message") or probe.get("reason"),
                    "examples": examples if include_examples else [],
                    "anchor": "probe-" + re.sub(r"[^a-z0-9_-]", "-", name.lower())})
    return out


def _render(template: str, context: dict) -> str:
    env = _env()
    plotly_js, app_js = _plotly_js(), (HERE / "static" / "app.js").read_text(encoding="utf-8")
    css = (HERE / "static" / "report.css").read_text(encoding="utf-8")
    context = {**context, "plotly_js": plotly_js, "app_js": app_js, "css": css,
               "csp": _csp([plotly_js, app_js]), "chart": charts.ChartBuilder()}
    return env.get_template(template).render(**context)


@functools.lru_cache(maxsize=1)
def _env():
    import jinja2

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(HERE / "templates"),
                             autoescape=True, undefined=jinja2.ChainableUndefined,
                             trim_blocks=True, lstrip_blocks=True)
    env.globals.update(select=charts.select, distinct=charts.distinct, lookup=charts.lookup,
                       csv_uri=charts.csv_uri, chance_line=charts.chance_line,
                       columns_of=charts.columns_of,
                       partial_for=_partial_for, td=table_cell, probe_title=probe_title)
    env.filters.update(num=fmt_number, pct=fmt_percent, severity_rank=SEVERITY_ORDER.get)
    return env


def _partial_for(name: str) -> str:
    """A probe's own partial when one exists, else the generic table."""
    own = f"probes/{name}.html.j2"
    return own if (HERE / "templates" / own).is_file() else "probes/_generic.html.j2"


@functools.lru_cache(maxsize=1)
def _plotly_js() -> str:
    import plotly.offline

    # A literal "</script" inside would end the inline block early; plotly.js has none today.
    return plotly.offline.get_plotlyjs().replace("</script", "<\\/script")


def _csp(scripts: list[str]) -> str:
    hashes = " ".join(f"'sha256-{_sha256_b64(s)}'" for s in scripts)
    # style-src needs 'unsafe-inline': plotly.js sets style attributes on the SVG it draws, and
    # CSP cannot allow those by hash. Styles cannot run code or reach the network here because
    # default-src/img-src/font-src/connect-src stay closed.
    return ("default-src 'none'; " f"script-src {hashes}; " "style-src 'unsafe-inline'; "
            "img-src data:; font-src 'none'; connect-src 'none'; base-uri 'none'; "
            "form-action 'none'; object-src 'none'")


def _sha256_b64(text: str) -> str:
    return base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode("ascii")


def fmt_number(value, digits: int = 3) -> str:
    """Numbers for tables: 3 significant digits, integers as they are, missing as a dash."""
    if value is None or value == "":
        return "–"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if value != value:  # NaN
        return "–"
    return f"{value:.{digits}g}" if abs(value) >= 1e-3 or value == 0 else f"{value:.2e}"


def table_cell(value):
    """One <td>: numbers right-aligned and rounded, nested data as JSON, text escaped."""
    from markupsafe import Markup, escape

    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return Markup('<td class="num">%s</td>') % fmt_number(value)
    if isinstance(value, (list, tuple)) and all(isinstance(v, (int, float)) for v in value):
        return Markup("<td>%s</td>") % ", ".join(fmt_number(v) for v in value)
    if isinstance(value, (dict, list, tuple)):
        return Markup("<td><code>%s</code></td>") % json.dumps(value, default=str)
    missing = value is None or type(value).__name__.endswith("Undefined")
    return Markup("<td>%s</td>") % ("–" if missing else escape(str(value)))


def fmt_percent(value, digits: int = 1) -> str:
    if value is None or not isinstance(value, (int, float)) or value != value:
        return "–"
    return f"{100 * value:.{digits}f}%"


def _write(out: Path, html: str) -> Path:
    """Temp file + rename (audit.io), so a reader never sees half a report."""
    from audit.io import atomic_write_text

    out = atomic_write_text(Path(out), html)
    log.info("wrote %s (%d KiB)", out, len(html) // 1024)
    return out
