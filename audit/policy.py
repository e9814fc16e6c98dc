"""Release gates: a TOML policy checked against results.json (and a baseline's, if given).

Policy format (see examples/policy.toml)::

    [[gate]]
    name = "non-human rate by race"              # required, shown in reports and CI logs
    metric = "fairface_label_bias.non_human_rate"  # required: "<probe>.<row metric>"
    label_set = "default"                        # optional row filters: any tidy-row key
    group_by = "race"                            #   (label_set, group_by, group, task,
    group = ["Black", "White"]                   #   template, ...); a list means "any of"
    where = { widget = "x" }                     # filters on keys of third-party probes
    aggregate = "max"                            # max | min | mean | value
    max = 0.05                                   # absolute bounds: max and/or min
    min = 0.0
    max_increase = 0.02                          # relative to a baseline run:
    max_decrease = 0.02                          #   max_increase and/or max_decrease

`aggregate` reduces the matching rows' `value`s to one number; `value` demands exactly one
matching row. It defaults to "min" when the gate has only lower bounds (min, max_decrease),
else "max": a ceiling on a rate should hold for the worst group.

A gate with absolute bounds gives one result; a gate with relative bounds gives one more,
named "<name> (vs baseline)", which is skipped (passed, with the reason) when no baseline run
is given. A gate whose metric matches no row fails: a typo must never pass silently.
Results: `{"name", "passed", "value", "threshold", "detail"}`; a skipped gate has
`"passed": null` and `"skipped": true`, and does not fail the run.
"""
from __future__ import annotations

import math
import tomllib
from pathlib import Path

from audit.errors import UserError

ROW_FILTERS = ("label_set", "group_by", "group", "template", "corruption", "severity", "k",
               "candidates", "split", "attribute", "task", "concept")
ABSOLUTE = ("max", "min")
RELATIVE = ("max_increase", "max_decrease")
GATE_KEYS = ("name", "metric", "aggregate", "where", *ABSOLUTE, *RELATIVE, *ROW_FILTERS)
AGGREGATES = ("max", "min", "mean", "value")


def load_policy(path: Path) -> dict:
    """Read and check a policy file; any problem is a one-line UserError naming the file."""
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: cannot read policy ({exc})") from None
    return parse_policy(text, source=str(path))


def parse_policy(text: str, *, source: str = "<policy>") -> dict:
    try:
        doc = tomllib.loads(text)
    except (tomllib.TOMLDecodeError, RecursionError, ValueError) as exc:
        raise UserError(f"{source}: not valid TOML ({exc})") from None
    unknown = set(doc) - {"gate"}
    if unknown:
        raise UserError(f"{source}: unknown top-level key(s) {sorted(unknown)}; "
                        "a policy holds only [[gate]] tables")
    gates = doc.get("gate", [])
    if not isinstance(gates, list):
        raise UserError(f"{source}: 'gate' must be an array of tables ([[gate]])")
    return {"gates": [_check_gate(g, i, source) for i, g in enumerate(gates, 1)]}


def _check_gate(gate, index: int, source: str) -> dict:
    where = f"{source}: gate {index}"
    if not isinstance(gate, dict):
        raise UserError(f"{where}: must be a table")
    if isinstance(gate.get("name"), str) and gate["name"].strip():
        where = f"{source}: gate {gate['name']!r}"
    unknown = sorted(set(gate) - set(GATE_KEYS))
    if unknown:
        raise UserError(f"{where}: unknown key(s) {unknown} (filters on other row keys go "
                        "in 'where = {{...}}')")
    for key in ("name", "metric"):
        if not isinstance(gate.get(key), str) or not gate[key].strip():
            raise UserError(f"{where}: '{key}' must be a non-empty string")
    if gate["metric"].count(".") != 1 or "" in gate["metric"].split("."):
        raise UserError(f"{where}: metric must read '<probe>.<metric>', got {gate['metric']!r}")
    bounds = {k: _number(gate[k], k, where) for k in ABSOLUTE + RELATIVE if k in gate}
    if not bounds:
        raise UserError(f"{where}: needs a bound (max, min, max_increase or max_decrease)")
    return {"name": gate["name"], "metric": gate["metric"], **bounds,
            "aggregate": _aggregate(gate, bounds, where), "filters": _filters(gate, where)}


def _number(value, key: str, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise UserError(f"{where}: '{key}' must be a finite number, got {value!r}")
    if key in RELATIVE and value < 0:
        raise UserError(f"{where}: '{key}' must be >= 0, got {value!r}")
    return float(value)


def _aggregate(gate: dict, bounds: dict, where: str) -> str:
    lower_only = set(bounds) <= {"min", "max_decrease"}
    agg = gate.get("aggregate", "min" if lower_only else "max")
    if agg not in AGGREGATES:
        raise UserError(f"{where}: aggregate must be one of {list(AGGREGATES)}, got {agg!r}")
    return agg


def _filters(gate: dict, where: str) -> dict:
    extra = gate.get("where", {})
    if not isinstance(extra, dict):
        raise UserError(f"{where}: 'where' must be a table of row filters")
    filters = {**{k: gate[k] for k in ROW_FILTERS if k in gate}, **extra}
    for key, want in filters.items():
        options = want if isinstance(want, list) else [want]
        if not options or not all(isinstance(v, (str, int, float, bool)) for v in options):
            raise UserError(f"{where}: filter '{key}' must be a string, number, boolean, or "
                            "a non-empty list of them")
    return filters


def evaluate(policy: dict, results: dict, *, baseline: dict | None = None) -> list[dict]:
    """One result dict per absolute gate and per relative gate, in policy order."""
    out = []
    for gate in policy.get("gates", []):
        if any(k in gate for k in ABSOLUTE):
            out.append(_absolute(gate, results))
        if any(k in gate for k in RELATIVE):
            out.append(_relative(gate, results, baseline))
    return out


def _absolute(gate: dict, results: dict) -> dict:
    value, problem = _measure(gate, results)
    threshold = {k: gate[k] for k in ABSOLUTE if k in gate}
    threshold = next(iter(threshold.values())) if len(threshold) == 1 else threshold
    if problem:
        return _result(gate["name"], False, value, threshold, problem)
    passed = gate.get("max", math.inf) >= value >= gate.get("min", -math.inf)
    what = "the one matching row" if gate["aggregate"] == "value" else \
        f"{gate['aggregate']} over matching rows"
    bound = " and ".join(f"{'<=' if k == 'max' else '>='} {gate[k]:g}" for k in ABSOLUTE
                         if k in gate)
    return _result(gate["name"], passed, value, threshold,
                   f"{what} = {value:.4g}; must be {bound}")


def _relative(gate: dict, results: dict, baseline: dict | None) -> dict:
    name = f"{gate['name']} (vs baseline)"
    threshold = {k: gate[k] for k in RELATIVE if k in gate}
    threshold = next(iter(threshold.values())) if len(threshold) == 1 else threshold
    if baseline is None:
        # passed is null: neither a pass nor a failure, and the exit code ignores it.
        return {**_result(name, None, None, threshold,
                          "skipped: relative gate needs a baseline (audit compare)"),
                "skipped": True}
    cand, problem = _measure(gate, results)
    base, base_problem = _measure(gate, baseline)
    if problem or base_problem:
        return _result(name, False, None, threshold,
                       problem or f"baseline: {base_problem}")
    change = cand - base
    passed = (change <= gate.get("max_increase", math.inf)
              and -change <= gate.get("max_decrease", math.inf))
    return _result(name, passed, change, threshold,
                   f"{gate['aggregate']}: baseline {base:.4g} -> candidate {cand:.4g} "
                   f"(change {change:+.4g})")


def _result(name, passed, value, threshold, detail) -> dict:
    return {"name": name, "passed": None if passed is None else bool(passed), "value": value,
            "threshold": threshold, "detail": detail}


def _measure(gate: dict, results: dict) -> tuple[float | None, str | None]:
    """The gate's aggregate over its matching rows, or (None, why it could not be measured)."""
    probe_name, metric = gate["metric"].split(".")
    probe = (results.get("probes") or {}).get(probe_name)
    if probe is None:
        return None, f"probe {probe_name!r} is not in the results"
    if probe.get("status", "ok") != "ok":
        return None, f"probe {probe_name!r} has status {probe.get('status')!r}"
    rows = [r for r in probe.get("rows") or [] if r.get("metric") == metric
            and _matches(r, gate["filters"])]
    values = [r["value"] for r in rows if _is_number(r.get("value"))]
    described = _describe(metric, gate["filters"])
    if not values:
        return None, f"no row with a value matches {described}"
    agg = gate["aggregate"]
    if agg == "value" and len(rows) != 1:
        return None, f"aggregate 'value' needs exactly one row, {len(rows)} match {described}"
    reduce = {"max": max, "min": min, "mean": lambda v: sum(v) / len(v), "value": lambda v: v[0]}
    return float(reduce[agg](values)), None


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _matches(row: dict, filters: dict) -> bool:
    for key, want in filters.items():
        options = want if isinstance(want, list) else [want]
        if row.get(key) not in options:
            return False
    return True


def _describe(metric: str, filters: dict) -> str:
    return ", ".join([f"metric={metric}"] + [f"{k}={v}" for k, v in filters.items()])


def print_gates(gates: list[dict], console) -> None:
    """A rich table: one line per gate, PASS/FAIL/SKIP spelled out (readable without colour)."""
    from rich.table import Table
    from rich.text import Text

    table = Table(title="Release gates")
    for col in ("gate", "result", "value", "threshold", "detail"):
        table.add_column(col, justify="right" if col in ("value", "threshold") else "left")
    for g in gates:
        word, style = (("SKIP", "dim") if g.get("passed") is None else
                       ("PASS", "green") if g["passed"] else ("FAIL", "bold red"))
        value = "–" if g.get("value") is None else f"{g['value']:.4g}"
        table.add_row(g["name"], Text(word, style), value, str(g.get("threshold")),
                      g.get("detail") or "")
    console.print(table)
    failed = [g["name"] for g in gates if g["passed"] is False]
    console.print(f"{len(failed)} of {len(gates)} gate(s) failed" +
                  (": " + ", ".join(failed) if failed else "."))
