"""Release gates: a TOML policy checked against results.json (and a baseline's, if given).

Policy format (see examples/policy.toml)::

    [[gate]]
    name = "non-human rate by race"              # required, shown in reports and CI logs
    metric = "fairface_label_bias.non_human_rate"  # required: "<probe>.<row metric>"
    label_set = "default"                        # optional row filters: label_set, group_by,
    group_by = "race"                            #   group, template, and any key a registered
    group = ["Black", "White"]                   #   probe declares in `row_keys` (plugins too);
                                                 #   a list means "any of"
    where = { widget = "x" }                     # filters on any other row key
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

Absolute gates are CI-aware: `outcome` is "pass" (every matching row's CI is on the bound's
side), "fail" (some row's CI lies wholly beyond it) or "inconclusive" (a CI straddles it), with
`images_to_settle`: how many images per group would settle it at the observed rate (Wilson
arithmetic, see images_to_settle). The top-level `inconclusive = "fail" | "pass"` (default
"fail") folds that into `passed`, which alone decides the exit code. A gate sees only the
headline rows (no `template` key, or template "ensemble") unless it names a `template`.
"""
from __future__ import annotations

import math
import tomllib
from pathlib import Path

from audit.errors import UserError

ABSOLUTE = ("max", "min")
RELATIVE = ("max_increase", "max_decrease")
GATE_KEYS = ("name", "metric", "aggregate", "where", *ABSOLUTE, *RELATIVE)
AGGREGATES = ("max", "min", "mean", "value")
INCONCLUSIVE = ("fail", "pass")
Z95 = 1.959963984540054  # the two-sided 95% normal quantile, as in the probes' CIs
HEADLINE_TEMPLATES = (None, "ensemble")  # rows a gate matches unless it names a template


def load_policy(path: Path) -> dict:
    """Read and check a policy file; any problem is a one-line UserError naming the file."""
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: cannot read policy ({exc})") from None
    return parse_policy(text, source=str(path))


def check_inputs(policy: Path | None, baseline: Path | None) -> None:
    """Read and check --policy and --baseline before any model loads: a TOML typo must stop
    the run in one line (exit 2) before minutes of work, not discard them at the end. The
    runner reads both again when it evaluates the gates; they are small."""
    from audit import results

    if policy:
        load_policy(policy)
    if baseline:
        results.read(baseline)


def parse_policy(text: str, *, source: str = "<policy>") -> dict:
    try:
        doc = tomllib.loads(text)
    except (tomllib.TOMLDecodeError, RecursionError, ValueError) as exc:
        raise UserError(f"{source}: not valid TOML ({exc})") from None
    unknown = set(doc) - {"gate", "inconclusive"}
    if unknown:
        raise UserError(f"{source}: unknown top-level key(s) {sorted(unknown)}; "
                        "a policy holds [[gate]] tables and 'inconclusive'")
    inconclusive = doc.get("inconclusive", "fail")
    if inconclusive not in INCONCLUSIVE:
        raise UserError(f"{source}: inconclusive must be \"fail\" or \"pass\", got {inconclusive!r}")
    gates = doc.get("gate", [])
    if not isinstance(gates, list):
        raise UserError(f"{source}: 'gate' must be an array of tables ([[gate]])")
    return {"gates": [_check_gate(g, i, source) for i, g in enumerate(gates, 1)],
            "inconclusive": inconclusive}


def _check_gate(gate, index: int, source: str) -> dict:
    where = f"{source}: gate {index}"
    if not isinstance(gate, dict):
        raise UserError(f"{where}: must be a table")
    if isinstance(gate.get("name"), str) and gate["name"].strip():
        where = f"{source}: gate {gate['name']!r}"
    unknown = sorted(set(gate) - set(GATE_KEYS) - set(row_filters()))
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


def row_filters() -> tuple[str, ...]:
    """Row keys a gate may name at top level: the common ones plus every registered probe's
    declared `row_keys` (plugins included), so no table of built-in probes lives here."""
    from audit.registry import BASE_ROW_KEYS, known_meta

    extra = [k for meta in known_meta().values() for k in meta.get("row_keys", [])]
    return tuple(dict.fromkeys([*BASE_ROW_KEYS, "template", *extra]))


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
    filters = {**{k: gate[k] for k in row_filters() if k in gate}, **extra}
    for key, want in filters.items():
        options = want if isinstance(want, list) else [want]
        if not options or not all(isinstance(v, (str, int, float, bool)) for v in options):
            raise UserError(f"{where}: filter '{key}' must be a string, number, boolean, or "
                            "a non-empty list of them")
    return filters


def evaluate(policy: dict, results: dict, *, baseline: dict | None = None) -> list[dict]:
    """One result dict per absolute gate and per relative gate, in policy order."""
    out, inconclusive = [], policy.get("inconclusive", "fail")
    for gate in policy.get("gates", []):
        if any(k in gate for k in ABSOLUTE):
            out.append(_absolute(gate, results, inconclusive))
        if any(k in gate for k in RELATIVE):
            out.append(_relative(gate, results, baseline))
    return out


def _absolute(gate: dict, results: dict, inconclusive: str = "fail") -> dict:
    value, problem = _measure(gate, results)
    threshold = {k: gate[k] for k in ABSOLUTE if k in gate}
    threshold = next(iter(threshold.values())) if len(threshold) == 1 else threshold
    if problem:
        return _result(gate["name"], False, value, threshold, problem)
    outcomes = _outcomes(gate, _matching_rows(gate, results), value,
                         _is_fraction(gate, results))
    outcome = ("fail" if any(o == "fail" for o, _ in outcomes) else
               "pass" if all(o == "pass" for o, _ in outcomes) else "inconclusive")
    settle = [n for o, n in outcomes if o == "inconclusive"]
    settle = None if outcome != "inconclusive" or None in settle else max(settle)
    what = "the one matching row" if gate["aggregate"] == "value" else \
        f"{gate['aggregate']} over matching rows"
    bound = " and ".join(f"{'<=' if k == 'max' else '>='} {gate[k]:g}" for k in ABSOLUTE
                         if k in gate)
    detail = f"{what} = {value:.4g}; must be {bound}"
    if outcome == "inconclusive":
        detail += (f"; inconclusive: a CI straddles the bound (counts as {inconclusive})" +
                   (f"; ~{settle} images per group would settle it at the observed rate"
                    if settle else ""))
    passed = outcome == "pass" or (outcome == "inconclusive" and inconclusive == "pass")
    return {**_result(gate["name"], passed, value, threshold, detail), "outcome": outcome,
            "images_to_settle": settle}


def _outcomes(gate: dict, rows: list[dict], value: float, fraction: bool) -> list[tuple]:
    """(outcome, images that would settle it) per row and bound. A ceiling over the worst
    group (aggregate max or value) must hold for every row, so each row's CI is judged; so is
    a floor under aggregate min or value. Other combinations (a mean, the max of a floor) have
    no CI here and are judged on the aggregate alone."""
    out = []
    for key in (k for k in ABSOLUTE if k in gate):
        if gate["aggregate"] in (key, "value"):
            out += [_bound_outcome(key, gate[key], r, fraction) for r in rows]
        else:
            ok = value <= gate[key] if key == "max" else value >= gate[key]
            out.append(("pass" if ok else "fail", None))
    return out


def _bound_outcome(key: str, bound: float, row: dict, fraction: bool) -> tuple[str, int | None]:
    """A bound is met when the whole CI is on its side (a ceiling passes when the upper end
    is at or under it), broken when the whole CI is beyond it, else inconclusive. A row
    without a CI is judged on its value alone."""
    lo, hi = _ci(row, fraction)
    ok, broken = (hi <= bound, lo > bound) if key == "max" else (lo >= bound, hi < bound)
    if ok or broken:
        return ("pass" if ok else "fail"), None
    return "inconclusive", images_to_settle(row["value"], bound) if fraction else None


def _ci(row: dict, fraction: bool) -> tuple[float, float]:
    """The row's CI; a rate row with n but no CI (a small group) gets its Wilson interval."""
    lo, hi, n = row.get("ci_low"), row.get("ci_high"), row.get("n")
    if _is_number(lo) and _is_number(hi):
        return float(lo), float(hi)
    if fraction and isinstance(n, int) and n > 0 and 0 <= row["value"] <= 1:
        return wilson(row["value"], n)
    return float(row["value"]), float(row["value"])


def wilson(p: float, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of a rate p observed on n images."""
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def images_to_settle(p: float, bound: float, z: float = Z95) -> int | None:
    """The fewest images at which a rate p, if it held, would put `bound` outside the 95%
    Wilson interval, i.e. settle the gate either way.

    The Wilson interval is exactly the set of t with |p - t| <= z·sqrt(t(1 - t)/n) (the score
    test inverted), so `bound` falls outside once n > z²·bound(1 - bound)/(p - bound)².
    None when p == bound: no number of images settles a rate sitting on its bound."""
    if p == bound:
        return None
    return math.floor(z * z * bound * (1 - bound) / (p - bound) ** 2) + 1


def _is_fraction(gate: dict, results: dict) -> bool:
    """Whether the gate's metric is a rate, by its probe's own description in the results."""
    probe_name, metric = gate["metric"].split(".")
    meta = ((results.get("probes") or {}).get(probe_name) or {}).get("meta") or {}
    return (meta.get("metrics") or {}).get(metric, {}).get("unit") == "fraction"


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
    outcome = "skipped" if passed is None else "pass" if passed else "fail"
    return {"name": name, "passed": None if passed is None else bool(passed), "value": value,
            "threshold": threshold, "detail": detail, "outcome": outcome,
            "images_to_settle": None}


def _measure(gate: dict, results: dict) -> tuple[float | None, str | None]:
    """The gate's aggregate over its matching rows, or (None, why it could not be measured)."""
    probe_name, metric = gate["metric"].split(".")
    probe = (results.get("probes") or {}).get(probe_name)
    if probe is None:
        return None, f"probe {probe_name!r} is not in the results"
    if probe.get("status", "ok") != "ok":
        return None, f"probe {probe_name!r} has status {probe.get('status')!r}"
    rows = _matching_rows(gate, results)
    values = [r["value"] for r in rows]
    described = _describe(metric, gate["filters"])
    if not values:
        return None, f"no row with a value matches {described}"
    agg = gate["aggregate"]
    if agg == "value" and len(rows) != 1:
        return None, f"aggregate 'value' needs exactly one row, {len(rows)} match {described}"
    reduce = {"max": max, "min": min, "mean": lambda v: sum(v) / len(v), "value": lambda v: v[0]}
    return float(reduce[agg](values)), None


def _matching_rows(gate: dict, results: dict) -> list[dict]:
    """The rows with a value that the gate judges: its metric and filters, and only the
    headline rows (no template, or the wording ensemble) unless it names a template."""
    probe_name, metric = gate["metric"].split(".")
    probe = (results.get("probes") or {}).get(probe_name) or {}
    headline = "template" in gate["filters"] or None
    return [r for r in probe.get("rows") or [] if r.get("metric") == metric
            and _matches(r, gate["filters"]) and _is_number(r.get("value"))
            and (headline or r.get("template") in HEADLINE_TEMPLATES)]


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
                       ("INCONCLUSIVE → " + ("PASS" if g["passed"] else "FAIL"), "yellow")
                       if g.get("outcome") == "inconclusive" else
                       ("PASS", "green") if g["passed"] else ("FAIL", "bold red"))
        value = "–" if g.get("value") is None else f"{g['value']:.4g}"
        table.add_row(g["name"], Text(word, style), value, str(g.get("threshold")),
                      g.get("detail") or "")
    console.print(table)
    failed = [g["name"] for g in gates if g["passed"] is False]
    console.print(f"{len(failed)} of {len(gates)} gate(s) failed" +
                  (": " + ", ".join(failed) if failed else "."))
