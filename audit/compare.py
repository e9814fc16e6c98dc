"""The pre-release diff, computed in core: every row two runs share, side by side, regressions
first. `reports/` only formats what this returns; `audit compare` writes it as compare.json
(schema: audit/compare.schema.json).

A row's identity is its probe, metric, label_set, group_by, group and the probe's declared
`row_keys` (probes.<name>.meta); value, CI and n are the compared numbers. Whether up or down is
worse is the metric's declared `worse` — a metric that declares none is never a regression.
A row is a significant regression when it moved its worse way and the two CIs do not overlap
(`test: "ci_overlap"`, two independent samples) or, where both runs recorded per-image outcomes
of the same images (outcomes.parquet), when McNemar's exact test says so after Holm's
correction (`test: "mcnemar_exact"`, audit/paired.py; the `paired` section says which rows
could be paired and why the others could not).
"""
from __future__ import annotations

import logging

log = logging.getLogger(__name__)
COMPARE_VERSION = 1
IDENTITY = ("metric", "label_set", "group_by", "group")
NUMBERS = ("value", "ci_low", "ci_high", "n", "note")
ORDER = {"worse": 0, "better": 1, "unchanged": 2, "n/a": 3}


def meta_of(results: dict, probe: str) -> dict:
    """The probe's meta as the run recorded it; for results written before meta existed, the
    installed probe's own (an unknown probe gets its name as title and no metrics)."""
    recorded = ((results.get("probes") or {}).get(probe) or {}).get("meta")
    if recorded:
        return recorded
    from audit.registry import known_meta

    return known_meta().get(probe) or {"title": probe.replace("_", " ").capitalize(),
                                       "metrics": {}, "row_keys": None}


def metric_of(meta: dict, metric: str) -> dict:
    """The metric's declaration, or a neutral one (its name, no unit, no direction)."""
    return (meta.get("metrics") or {}).get(metric) or {"title": metric, "unit": "number",
                                                         "worse": None, "description": ""}


def compare(base: dict, cand: dict, *, base_outcomes=None, cand_outcomes=None) -> dict:
    """Side-by-side rows of two results.json dicts; see the module docstring. The outcomes are
    each run's `audit.outcomes.load()`; without them every row is compared unpaired."""
    from audit import paired

    metas = {p: meta_of(cand if p in (cand.get("probes") or {}) else base, p)
             for p in {**(base.get("probes") or {}), **(cand.get("probes") or {})}}
    base_rows, cand_rows = _index(base, metas), _index(cand, metas)
    shared = [k for k in cand_rows if k in base_rows]
    rows = [_pair(k, base_rows[k], cand_rows[k], metas) for k in shared]
    shared_probes = sorted({dict(k)["probe"] for k in shared})
    by_image = paired.apply(rows, base, cand, base_outcomes, cand_outcomes, shared_probes)
    rows.sort(key=_rank)
    return {"compare_version": COMPARE_VERSION, "base": _about(base), "cand": _about(cand),
            "rows": rows, "shared_probes": shared_probes, "paired": by_image,
            "note": None if shared_probes else "the two runs share no probe rows: nothing "
                                               "was compared, so no regression can be stated",
            "regressions": sum(r["significant"] and r["direction"] == "worse" for r in rows),
            "improvements": sum(r["significant"] and r["direction"] == "better" for r in rows),
            "only_base": len(base_rows.keys() - cand_rows.keys()),
            "only_cand": len(cand_rows.keys() - base_rows.keys()),
            "probes": _statuses(base, cand, metas)}


def row_key(probe: str, row: dict, meta: dict | None = None) -> tuple:
    keys = (meta or {}).get("row_keys")
    if keys is None:  # no declaration: every non-number key identifies the row
        items = [(k, v) for k, v in row.items() if k not in NUMBERS]
    else:
        items = [(k, row[k]) for k in (*IDENTITY, *keys) if k in row]
    return (("probe", probe),) + tuple(sorted((k, _hashable(v)) for k, v in items))


def _hashable(v):
    return tuple(v) if isinstance(v, list) else v


def _index(results: dict, metas: dict) -> dict:
    out = {}
    for probe, p in (results.get("probes") or {}).items():
        for row in p.get("rows") or []:
            key = row_key(probe, row, metas.get(probe))
            if key in out:
                log.debug("%s: duplicate row %s; comparing the first", probe, dict(key))
                continue
            out[key] = row
    return out


def _pair(key: tuple, b: dict, c: dict, metas: dict) -> dict:
    ident = dict(key)
    declared = metric_of(metas.get(ident["probe"]) or {}, str(ident.get("metric")))
    bv, cv = b.get("value"), c.get("value")
    delta = cv - bv if all(_is_number(v) for v in (bv, cv)) else None
    disjoint = _disjoint(b, c)
    direction = _direction(declared["worse"], delta)
    # The identity twice: spread for readers of the row, and whole under "key".
    return {**ident, "key": dict(ident), "probe": ident["probe"],
            "metric": ident.get("metric"), "title": declared["title"], "unit": declared["unit"],
            "worse": declared["worse"], "slice": _slice(ident),
            "base": bv, "cand": cv, "delta": delta,
            "base_ci": [b.get("ci_low"), b.get("ci_high")],
            "cand_ci": [c.get("ci_low"), c.get("ci_high")],
            "base_n": b.get("n"), "cand_n": c.get("n"),
            "test": "ci_overlap", "beyond_ci": disjoint,
            "significant": disjoint and direction in ("worse", "better"),
            "direction": direction, "paired": None}


def paired_cis(comparison: dict) -> dict:
    """{row key: (low, high)} of each row's paired change, for the baseline gates."""
    out = {}
    for r in comparison.get("rows") or []:
        ci = (r.get("paired") or {}).get("delta_ci")
        if ci and None not in ci:
            key = dict(r["key"])
            out[(("probe", key.pop("probe")),) + tuple(sorted(key.items()))] = tuple(ci)
    return out


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _disjoint(b: dict, c: dict) -> bool:
    """True when both rows carry a CI and the two intervals do not overlap."""
    bounds = [b.get("ci_low"), b.get("ci_high"), c.get("ci_low"), c.get("ci_high")]
    if not all(_is_number(x) for x in bounds):
        return False
    b_lo, b_hi, c_lo, c_hi = bounds
    return b_hi < c_lo or c_hi < b_lo


def _direction(worse: str | None, delta) -> str:
    if delta is None or worse is None:
        return "n/a"
    if delta == 0:
        return "unchanged"
    return "worse" if (delta > 0) == (worse == "up") else "better"


def _rank(row: dict):
    # Regressions first; within a class, the ones beyond noise, then the biggest moves.
    return (ORDER[row["direction"]], not row["significant"], -abs(row["delta"] or 0))


def _about(results: dict) -> dict:
    return {k: results.get(k) or {} for k in ("model", "run", "tool", "data")}


def _statuses(base: dict, cand: dict, metas: dict) -> dict:
    get = lambda r, n: ((r.get("probes") or {}).get(n) or {}).get("status", "absent")  # noqa: E731
    return {n: {"title": metas[n].get("title") or n, "base": get(base, n), "cand": get(cand, n)}
            for n in metas}


def _slice(ident: dict) -> str:
    """"race: Black · label_set=default · k=10": the row's identity minus probe and metric."""
    parts = [f"{ident['group_by']}: {ident.get('group')}"] if "group_by" in ident else []
    parts += [f"{k}={v}" for k, v in ident.items()
              if k not in ("probe", "metric", "group_by", "group")]
    return " · ".join(parts)


def schema() -> dict:
    import json
    from importlib import resources

    return json.loads(resources.files("audit").joinpath("compare.schema.json").read_text())


def validate(comparison: dict) -> None:
    import jsonschema

    jsonschema.validate(comparison, schema())
