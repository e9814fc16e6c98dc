"""Many runs side by side, computed in core: one row per run, one column per headline number.
`reports/table.py` only formats what `build_table` returns (a sortable HTML page, a CSV);
`audit table RESULTS...` writes it.

A probe's headline rows are its rows over all images (`group == "all"`: group_by "overall", or
an attribute for a number taken over all its groups) at the headline wording (no `template`, or
the ensemble: `audit.policy.headline_wording`, what gates read), and, where the probe's meta
declares `headline` row filters, matching one of them. A plugin probe gets the same rule.
A column is named by its probe, metric and the other keys that identify its row (those of
`audit.compare.row_key`), minus the `overall`/`all` every headline has; its title, unit and
direction come from the meta of the first run that has it. A run without that row has an empty
cell; a column is never guessed from its name.
"""
from __future__ import annotations

from audit.compare import meta_of, metric_of, row_key
from audit.data import hash_strings
from audit.policy import headline_wording, row_matches

TABLE_VERSION = 1
NUMBERS = ("value", "ci_low", "ci_high", "n")
# Said by every headline, so not in a column's name: a run whose rows carry the ensemble's
# `template` and one from before the panel (no `template`) fill the same column.
IMPLIED = (("group_by", "overall"), ("group", "all"), ("template", "ensemble"))


def headline_rows(name: str, probe: dict, meta: dict) -> list[dict]:
    """The headline rows of one probe's results (see the module docstring)."""
    if probe.get("status", "ok") != "ok":
        return []
    filters = _filters(name, meta)
    return [r for r in probe.get("rows") or [] if r.get("group") == "all" and headline_wording(r)
            and (not filters or any(row_matches(r, f) for f in filters))]


def _filters(name: str, meta: dict) -> list[dict] | None:
    """The recorded `headline`; a results.json from before it existed has no such key (not a
    null), and gets the installed probe's, as meta_of does for a whole missing meta."""
    if "headline" in meta:
        return meta["headline"]
    from audit.registry import known_meta

    return (known_meta().get(name) or {}).get("headline")


def build_table(runs: list[tuple[str, dict]]) -> dict:
    """[(name, results.json dict), ...] -> {"table_version", "columns", "runs"}; a run is
    {"name", "model", "arch", "sha256", "finished", "data", "data_fingerprint", "cells"} and
    cells maps a column id to that run's value, ci_low, ci_high and n."""
    columns, out = {}, []
    for name, results in runs:
        cells = {}
        for probe, p in (results.get("probes") or {}).items():
            meta = meta_of(results, probe)
            for row in headline_rows(probe, p, meta):
                column = column_of(probe, row, meta)
                if column["id"] in cells:  # a duplicate row: the first one counts, as in compare
                    continue
                columns.setdefault(column["id"], column)
                cells[column["id"]] = {k: row.get(k) for k in NUMBERS}
        out.append({"name": name, **_about(results), "cells": cells})
    return {"table_version": TABLE_VERSION, "columns": _by_probe(list(columns.values())),
            "runs": out}


def column_id(ident: dict) -> str:
    """"fairface_label_bias.non_human_rate[label_set=default]": the raw id the CSV keeps."""
    keys = [f"{k}={v}" for k, v in sorted(_slice_items(ident))]
    base = f"{ident['probe']}.{ident.get('metric')}"
    return base + (f"[{','.join(keys)}]" if keys else "")


def _slice_items(ident: dict) -> list[tuple]:
    return [(k, v) for k, v in ident.items() if k not in ("probe", "metric")
            and (k, v) not in IMPLIED and v is not None]


def column_of(probe: str, row: dict, meta: dict) -> dict:
    """What names a headline row: its id, the probe's and the metric's titles, unit, direction,
    identity and "slice" (the identity beyond probe and metric, as text). The report's headline
    tables use it too, so both say the same."""
    ident = dict(row_key(probe, row, meta))
    declared = metric_of(meta, str(ident.get("metric")))
    return {"id": column_id(ident), "probe": probe, "probe_title": meta.get("title") or probe,
            "metric": ident.get("metric"), "title": declared["title"], "unit": declared["unit"],
            "worse": declared["worse"], "description": declared.get("description") or "",
            "key": ident,
            "slice": " · ".join(f"{k}={v}" for k, v in _slice_items(ident))}


def _by_probe(columns: list[dict]) -> list[dict]:
    """Columns of one probe next to each other, probes in the order first met."""
    order = {}
    for c in columns:
        order.setdefault(c["probe"], len(order))
    return sorted(columns, key=lambda c: order[c["probe"]])  # stable: row order within a probe


def _about(results: dict) -> dict:
    model, run = results.get("model") or {}, results.get("run") or {}
    data = {role: (d or {}).get("fingerprint") for role, d in (results.get("data") or {}).items()}
    return {"model": model.get("spec"), "arch": model.get("arch"), "sha256": model.get("sha256"),
            "finished": run.get("finished"), "data": data,
            "data_fingerprint": data_fingerprint(data)}


def data_fingerprint(data: dict) -> str | None:
    """One hash over every source's role and fingerprint: equal exactly when two runs read the
    same data in the same roles (the per-source ones stay in `data`)."""
    if not data:
        return None
    return hash_strings(f"{role}\0{fp}" for role, fp in sorted(data.items()))
