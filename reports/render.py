"""results.json -> one self-contained HTML file.

The file is mailed around and attached to tickets, so it must open anywhere with no network:
plotly.js is inlined once, chart data sits in `<script type="application/json">` blocks, and a
Content-Security-Policy allows exactly the two inline scripts we ship (by sha256) and nothing
that could load from elsewhere. Jinja autoescaping is on: group labels come from datasets and
are untrusted text.

Titles, units and directions come from each probe's own description (`probes.<name>.meta`,
audit/registry.py), never from a table here. Each probe section is the installed probe's own
partial (`<name>.html.j2` in the folder its class names as `templates`, the way a datasette
plugin reports its templates path), else `templates/probes/<probe name>.html.j2` when it exists,
else the generic `templates/probes/_generic.html.j2` (every row as a table). A plugin's folder
is taken from the installed probe, never from a path in results.json: a results file from
elsewhere must not pick which template code runs. The page around it already shows the probe's
status, findings, summary and an all-rows CSV link. A partial sees:
  s          the section: name, title, meta, status, summary, rows, findings, and reference:
             the published numbers the installed probe declares (audit/reference.py: rows
             shaped as its own, in its units; label, cites, model, note), or None
  chart      reports.charts.ChartBuilder: bar / line / heatmap / strip (rows in, Chart out)
  select, distinct, lookup, points, chance_line, csv_uri   row helpers (reports.charts)
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
    sections = _sections(results, include_examples)
    context = {"r": results, "sections": sections,
               "sources": data_sources(results),
               "findings": top_findings(results), "gates": results.get("gates") or [],
               "include_examples": include_examples}
    return _write(out, _render("report.html.j2", context, plugins=_plugin_dirs(sections)))


def render_compare(comparison: dict, out: Path, *, thumbnails: dict | None = None) -> Path:
    """Write the HTML of an `audit.compare.compare()` result to `out`, atomically; `thumbnails`
    ({sha256: data URI}, from `audit compare --include-examples`) go beside the moved images."""
    rows = comparison.get("rows", [])
    # The CSV keeps the raw ids (metric, every key of the row), the page shows titles.
    flat = [{**r.get("key", {}), **{k: v for k, v in r.items() if k not in ("key", "paired")},
             **{f"paired_{k}": v for k, v in (r.get("paired") or {}).items()}} for r in rows]
    shown = {h: uri for h, uri in (thumbnails or {}).items() if THUMBNAIL_RE.match(str(uri))}
    context = {"c": comparison, "rows": rows, "csv": charts.csv_uri(flat), "thumbnails": shown}
    return _write(out, _render("compare.html.j2", context))


def render_table(table: dict, out: Path) -> Path:
    """Write the HTML of an `audit.table.build_table()` result to `out`, atomically: one
    self-contained page, sortable by its column headers (static/table.js), no plotly."""
    from audit.io import atomic_write_text

    # Not through _write: `audit table` says what it wrote in one line of its own.
    return atomic_write_text(Path(out), _render("table.html.j2", {"t": table, "groups": _probe_groups(table)},
                                                scripts=("table.js",)))


def _probe_groups(table: dict) -> list[dict]:
    """Runs of neighbouring columns of one probe, for the header row that spans them."""
    groups = []
    for c in table.get("columns") or []:
        if groups and groups[-1]["probe"] == c["probe"]:
            groups[-1]["span"] += 1
        else:
            groups.append({"probe": c["probe"], "title": c["probe_title"], "span": 1})
    return groups


def top_findings(results: dict) -> list[dict]:
    """All findings of all probes, most severe first (stable within a severity)."""
    found = []
    for name, probe in (results.get("probes") or {}).items():
        for f in probe.get("findings") or []:
            found.append({**f, "probe": name, "probe_title": probe_title(name, results),
                          "evidence_items": evidence_items(f.get("evidence") or {},
                                                           probe_meta(name, results))})
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


def probe_meta(name: str, results: dict | None = None) -> dict:
    """The probe's meta from results.json, or the installed probe's for older files."""
    from audit.compare import meta_of

    return meta_of(results or {}, name)


def probe_title(name: str, results: dict | None = None) -> str:
    return probe_meta(name, results).get("title") or name


def metric_title(meta: dict | None, metric) -> str:
    from audit.compare import metric_of

    return metric_of(meta or {}, str(metric))["title"]


def metric_unit(meta: dict | None, metric) -> str:
    from audit.compare import metric_of

    return metric_of(meta or {}, str(metric))["unit"]


# Group values that are a tidy-row convention, not a dataset's label (docs/INTERNALS.md).
GROUP_WORDS = {"max/min": "highest vs lowest group"}


def group_label(group) -> str:
    return GROUP_WORDS.get(group, group) if isinstance(group, str) else group


def summary_items(summary: dict, meta: dict) -> list[dict]:
    """A probe's summary for readers: a key that is a declared metric shows its title and its
    value in its unit, with the `<key>_ci_low`/`_ci_high` beside it folded in; other keys are
    spelled out, declared metric ids inside them replaced by their titles. Numbers of keys that
    declare no unit are shown as they are: a unit is never guessed from a name."""
    declared = (meta or {}).get("metrics") or {}
    folded = {f"{k}_ci_{end}" for k in summary if k in declared for end in ("low", "high")}
    out = []
    for key, value in summary.items():
        if key in folded:
            continue
        if key in declared:
            unit = declared[key]["unit"]
            text = fmt_value(value, unit)
            low, high = summary.get(f"{key}_ci_low"), summary.get(f"{key}_ci_high")
            if low is not None or high is not None:
                text += f" (95% CI {fmt_ci(low, high, unit)})"
            out.append({"label": declared[key]["title"], "value": text})
        else:
            out.append({"label": spell_key(key, declared), "value": value})
    return out


def evidence_items(evidence: dict, meta: dict) -> list[dict]:
    """A finding's evidence for readers: a row-shaped one (with a declared `metric`) names the
    metric by its title and shows value and CI in its unit; the rest as the probe wrote it."""
    declared = (meta or {}).get("metrics") or {}
    metric = declared.get(evidence.get("metric")) if isinstance(evidence.get("metric"), str) else None
    out = []
    for key, value in evidence.items():
        if metric and key == "metric":
            value = metric["title"]
        elif metric and key in ("value", "ci_low", "ci_high"):
            value = fmt_value(value, metric["unit"])
        elif key == "group":
            value = group_label(value)
        out.append({"label": spell_key(key, declared), "value": value})
    return out


def spell_key(key: str, declared: dict) -> str:
    """"worst_group_non_human_rate" -> "worst group Non-human labels" (longest ids first; a
    title put in is never searched again)."""
    parts = [str(key)]  # even places: the key's own text; odd places: titles put in
    for metric in sorted(declared, key=len, reverse=True):
        pattern = re.compile(rf"(?<![A-Za-z0-9]){re.escape(metric)}(?![A-Za-z0-9])")
        spelled = []
        for i, part in enumerate(parts):
            if i % 2:
                spelled.append(part)
                continue
            for j, piece in enumerate(pattern.split(part)):
                spelled += [declared[metric]["title"], piece] if j else [piece]
        parts = spelled
    text = "".join(p if i % 2 else p.replace("_", " ") for i, p in enumerate(parts))
    return " ".join(text.split())


def _sections(results: dict, include_examples: bool) -> list[dict]:
    out = []
    for name, probe in (results.get("probes") or {}).items():
        summary = probe.get("summary") or {}
        examples = [e for e in probe.get("examples") or []
                    if THUMBNAIL_RE.match(str(e.get("thumbnail", "")))]
        meta = probe_meta(name, results)
        anchor = "probe-" + re.sub(r"[^a-z0-9_-]", "-", name.lower())
        out.append({"name": name, "title": meta.get("title") or name, "meta": meta, "probe": probe,
                    "status": probe.get("status", "ok"), "summary": summary,
                    "summary_items": summary_items(summary, meta),
                    "headline": headline(name, probe, meta),
                    # Each section's charts name metrics by the section's meta (legends, tables).
                    "chart": charts.ChartBuilder(prefix=f"{anchor}-chart", meta=meta),
                    "rows": probe.get("rows") or [],
                    "reference": installed_reference(name),
                    "findings": sorted(({**f, "evidence_items": evidence_items(f.get("evidence") or {}, meta)}
                                        for f in probe.get("findings") or []),
                                       key=lambda f: SEVERITY_ORDER.get(f.get("severity"), 4)),
                    # ProbeResult keeps why it was skipped, or its error, in "message".
                    "error": probe.get("message") or probe.get("error"),
                    "reason": probe.get("message") or probe.get("reason"),
                    "examples": examples if include_examples else [],
                    "anchor": anchor})
    return out


def headline(name: str, probe: dict, meta: dict) -> list[dict]:
    """The probe's headline rows (audit.table's rule, so the report and `audit table` agree),
    each with the title, unit and slice that name it."""
    from audit.table import column_of, headline_rows

    return [{**column_of(name, r, meta), **{k: r.get(k) for k in ("value", "ci_low", "ci_high", "n")}}
            for r in headline_rows(name, probe, meta)]


def installed_reference(name: str) -> dict | None:
    """The published numbers of the installed probe of that name (like its partial, never
    from a path in results.json), through the core's loader: the report only draws them."""
    from audit import reference
    from audit.registry import get_probe, list_probes

    return reference.of(get_probe(name)) if name in list_probes() else None


def _plugin_dirs(sections: list[dict]) -> tuple:
    """((probe name, folder), ...) of the installed probes that ship their own partial."""
    from audit.registry import get_probe, list_probes

    installed = set(list_probes())
    out = []
    for s in sections:
        folder = getattr(get_probe(s["name"]), "templates", None) if s["name"] in installed else None
        if folder is not None and (Path(folder) / f"{s['name']}.html.j2").is_file():
            out.append((s["name"], str(folder)))
    return tuple(out)


def _render(template: str, context: dict, *, plugins: tuple = (), scripts: tuple = ("app.js",)) -> str:
    """`scripts`: static files inlined in order, each allowed by its hash and nothing else;
    a page that draws charts (app.js) gets plotly.js before them."""
    env = _env(plugins)
    inlined = [(HERE / "static" / name).read_text(encoding="utf-8") for name in scripts]
    if "app.js" in scripts:
        inlined.insert(0, _plotly_js())
    css = (HERE / "static" / "report.css").read_text(encoding="utf-8")
    context = {**context, "scripts": inlined, "css": css, "csp": _csp(inlined),
               "chart": charts.ChartBuilder()}
    return env.get_template(template).render(**context)


@functools.lru_cache(maxsize=8)
def _env(plugins: tuple = ()):
    import jinja2

    # A plugin's partial is reachable only as "plugin:<probe>/<probe>.html.j2": it cannot
    # shadow the report's own templates.
    prefixed = jinja2.PrefixLoader({f"plugin:{n}": jinja2.FileSystemLoader(d) for n, d in plugins})
    loader = jinja2.ChoiceLoader([jinja2.FileSystemLoader(HERE / "templates"), prefixed])
    env = jinja2.Environment(loader=loader,
                             autoescape=True, undefined=jinja2.ChainableUndefined,
                             trim_blocks=True, lstrip_blocks=True)
    env.globals.update(select=charts.select, distinct=charts.distinct, lookup=charts.lookup,
                       points=charts.points,
                       csv_uri=charts.csv_uri, chance_line=charts.chance_line,
                       columns_of=charts.columns_of,
                       partial_for=functools.partial(_partial_for, dict(plugins)),
                       td=table_cell, probe_title=probe_title, metric_title=metric_title,
                       metric_unit=metric_unit, value_cell=value_cell)
    from reports.compare import evidence, fmt_p

    # `value` formats every metric's number; `pct` stays for plugin partials written before it.
    env.filters.update(num=fmt_number, pct=functools.partial(fmt_value, unit="fraction"),
                       severity_rank=SEVERITY_ORDER.get, value=fmt_value, delta=fmt_delta,
                       ci=fmt_ci, group=group_label, evidence=evidence, p=fmt_p)
    return env


def _partial_for(plugins: dict, name: str) -> str:
    """The installed probe's own partial, else ours for a built-in, else the generic table."""
    if name in plugins:
        return f"plugin:{name}/{name}.html.j2"
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


def fmt_value(value, unit: str | None = None) -> str:
    """The one way a metric's number is shown (the `value` filter every template uses): a
    fraction as a percentage ("12.3%"), points (a difference of fractions) signed, in percentage
    points ("+1.2 points"), a ratio, number or count as it is. The CSV downloads keep raw values."""
    if not _is_number(value):
        return fmt_number(value)
    if unit == "fraction":
        return f"{100 * value:.1f}%"
    if unit == "points":
        return f"{100 * value:+.1f} points"
    return fmt_number(value)


def fmt_delta(delta, unit: str | None = None) -> str:
    """A change between two runs, signed: a change of a fraction is in points too."""
    if not _is_number(delta):
        return fmt_number(delta)
    if unit in ("fraction", "points"):
        return fmt_value(delta, "points")
    return ("+" if delta > 0 else "") + fmt_number(delta)


def fmt_ci(low, high, unit: str | None = None) -> str:
    """"0.9% to 1.9%", "-32.5 to -20.2 points"; an end the probe could not bound is a dash."""
    if not (_is_number(low) or _is_number(high)):
        return "–"
    ends = [fmt_value(x, unit) if _is_number(x) else "–" for x in (low, high)]
    if unit == "points":  # the unit once, after both ends
        return " to ".join(e.removesuffix(" points") for e in ends) + " points"
    return " to ".join(ends)


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and v == v


def value_cell(value, unit: str | None = None):
    from markupsafe import Markup

    if _is_number(value):
        return Markup('<td class="num">%s</td>') % fmt_value(value, unit)
    return table_cell(value)


def _write(out: Path, html: str) -> Path:
    """Temp file + rename (audit.io), so a reader never sees half a report."""
    from audit.io import atomic_write_text

    out = atomic_write_text(Path(out), html)
    log.info("wrote %s (%d KiB)", out, len(html) // 1024)
    return out
