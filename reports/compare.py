"""The pre-release diff: every row the two runs share, side by side, regressions first.

A row's key is its probe plus every identifying key (metric, label_set, group_by, group and any
extra key such as template or k); value, CI, n and note are the compared numbers. Whether up or
down is worse depends on the metric: more denigration, skew, corruption error, or identification
accuracy (surveillance risk) is worse; less of any other accuracy or robustness is worse.
"""
from __future__ import annotations

import logging

log = logging.getLogger(__name__)
NUMBERS = ("value", "ci_low", "ci_high", "n", "note")
UP_IS_WORSE = ("denigration", "crime", "non_human", "skew", "ndkl", "corruption_error", "mce",
               "drop")
DOWN_IS_WORSE = ("accuracy", "robustness")
NOT_DIRECTIONAL = ("accuracy_std",)
# Naming people better is a risk, not a quality, for this probe.
SURVEILLANCE_PROBES = ("celebrity_identification",)
ORDER = {"worse": 0, "better": 1, "unchanged": 2, "n/a": 3}


def compare(base: dict, cand: dict) -> dict:
    """Side-by-side rows of two results.json dicts; see the module docstring."""
    base_rows, cand_rows = _index(base), _index(cand)
    shared = [k for k in cand_rows if k in base_rows]
    rows = sorted((_pair(k, base_rows[k], cand_rows[k]) for k in shared), key=_rank)
    return {"base": _about(base), "cand": _about(cand), "rows": rows,
            "regressions": sum(r["direction"] == "worse" and r["beyond_ci"] for r in rows),
            "improvements": sum(r["direction"] == "better" and r["beyond_ci"] for r in rows),
            "only_base": len(base_rows.keys() - cand_rows.keys()),
            "only_cand": len(cand_rows.keys() - base_rows.keys()),
            "probes": _statuses(base, cand)}


def worse_direction(probe: str, metric: str) -> str | None:
    """"up", "down", or None when neither way is a regression."""
    if metric in NOT_DIRECTIONAL:
        return None
    if probe in SURVEILLANCE_PROBES and "accuracy" in metric:
        return "up"
    if any(t in metric for t in UP_IS_WORSE):
        return "up"
    if any(t in metric for t in DOWN_IS_WORSE):
        return "down"
    return None


def row_key(probe: str, row: dict) -> tuple:
    return (("probe", probe),) + tuple(sorted((k, _hashable(v)) for k, v in row.items()
                                              if k not in NUMBERS))


def _hashable(v):
    return tuple(v) if isinstance(v, list) else v


def _index(results: dict) -> dict:
    out = {}
    for probe, p in (results.get("probes") or {}).items():
        for row in p.get("rows") or []:
            key = row_key(probe, row)
            if key in out:
                log.warning("%s: duplicate row %s; comparing the first", probe, dict(key))
                continue
            out[key] = row
    return out


def _pair(key: tuple, b: dict, c: dict) -> dict:
    ident = dict(key)
    bv, cv = b.get("value"), c.get("value")
    numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (bv, cv))
    delta = cv - bv if numeric else None
    return {**ident, "slice": _slice(ident), "base": bv, "cand": cv, "delta": delta,
            "base_ci": [b.get("ci_low"), b.get("ci_high")],
            "cand_ci": [c.get("ci_low"), c.get("ci_high")],
            "base_n": b.get("n"), "cand_n": c.get("n"),
            "beyond_ci": _disjoint(b, c),
            "direction": _direction(ident["probe"], ident.get("metric", ""), delta)}


def _disjoint(b: dict, c: dict) -> bool:
    """True when both rows carry a CI and the two intervals do not overlap."""
    bounds = [b.get("ci_low"), b.get("ci_high"), c.get("ci_low"), c.get("ci_high")]
    if any(not isinstance(x, (int, float)) for x in bounds):
        return False
    b_lo, b_hi, c_lo, c_hi = bounds
    return b_hi < c_lo or c_hi < b_lo


def _direction(probe: str, metric: str, delta) -> str:
    worse = worse_direction(probe, str(metric))
    if delta is None or worse is None:
        return "n/a"
    if delta == 0:
        return "unchanged"
    return "worse" if (delta > 0) == (worse == "up") else "better"


def _rank(row: dict):
    # Regressions first; within a class, the ones beyond noise, then the biggest moves.
    return (ORDER[row["direction"]], not row["beyond_ci"], -abs(row["delta"] or 0))


def _about(results: dict) -> dict:
    return {k: results.get(k) or {} for k in ("model", "run", "tool", "data")}


def _statuses(base: dict, cand: dict) -> dict:
    names = list(base.get("probes") or {}) + [n for n in cand.get("probes") or {}
                                              if n not in (base.get("probes") or {})]
    get = lambda r, n: ((r.get("probes") or {}).get(n) or {}).get("status", "absent")  # noqa: E731
    return {n: {"base": get(base, n), "cand": get(cand, n)} for n in names}


def _slice(ident: dict) -> str:
    """"race: Black · label_set=default · k=10": the row's identity minus probe and metric."""
    parts = [f"{ident['group_by']}: {ident.get('group')}"] if "group_by" in ident else []
    parts += [f"{k}={v}" for k, v in ident.items()
              if k not in ("probe", "metric", "group_by", "group")]
    return " · ".join(parts)


def _signed(delta) -> str:
    from reports.render import fmt_number

    return ("+" if isinstance(delta, (int, float)) and delta > 0 else "") + fmt_number(delta)


def print_compare(comparison: dict, console, *, limit: int = 40) -> None:
    """A rich table of the rows that moved, regressions first; the rest are counted."""
    from rich.table import Table
    from rich.text import Text

    from reports.render import fmt_number

    rows = comparison.get("rows", [])
    moved = [r for r in rows if r["direction"] in ("worse", "better")]
    table = Table(title=f"{comparison['base'].get('model', {}).get('spec')} → "
                        f"{comparison['cand'].get('model', {}).get('spec')}")
    for col in ("probe", "metric", "slice", "base", "cand", "delta", "beyond CI", "direction"):
        table.add_column(col, justify="right" if col in ("base", "cand", "delta") else "left")
    for r in moved[:limit]:
        style = {"worse": "bold red", "better": "green"}[r["direction"]]
        table.add_row(r["probe"], str(r.get("metric")), r["slice"], fmt_number(r["base"]),
                      fmt_number(r["cand"]), _signed(r["delta"]),
                      "yes" if r["beyond_ci"] else "no",
                      Text(r["direction"].upper() if r["beyond_ci"] else r["direction"], style))
    console.print(table)
    console.print(f"{comparison['regressions']} regression(s) and {comparison['improvements']} "
                  f"improvement(s) beyond the CIs; {len(rows)} shared rows, "
                  f"{max(0, len(moved) - limit)} moved rows not shown, "
                  f"{comparison['only_base']} only in base, {comparison['only_cand']} only in "
                  "candidate.")
