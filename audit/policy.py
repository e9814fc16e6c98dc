"""Release gates: a TOML policy checked against results.json (and a baseline's, if given).

Policy format (see examples/policy.toml)::

    inconclusive = "fail"                        # or "pass": what an unsettled gate means
                                                 #   for the exit code (default "fail")
    [[gate]]
    name = "non-human rate by race"              # required, shown in reports and CI logs
    metric = "fairface_label_bias.non_human_rate"  # required: "<probe>.<row metric>"
    label_set = "default"                        # optional row filters: label_set, group_by,
    group_by = "race"                            #   group, template, and any row key the
    group = ["Black", "White"]                   #   probe declares (meta.row_keys);
    where = { widget = "x" }                     #   a list means "any of"
    aggregate = "max"                            # max | min | mean | value
    max = 0.05                                   # absolute bounds: max and/or min
    min = 0.0
    max_increase = 0.02                          # relative to a baseline run:
    max_decrease = 0.02                          #   max_increase and/or max_decrease

A gate reads the headline rows: rows with no `template` key or `template = "ensemble"` (the
wording ensemble), unless it names a `template` itself. `aggregate` reduces the matching rows
to one number and one interval; `value` demands exactly one matching row. It defaults to "min"
when the gate has only lower bounds (min, max_decrease), else "max": a ceiling on a rate should
hold for the worst group.

Each gate's outcome comes from the confidence interval, not the point value: a ceiling passes
when the interval's upper end is under it, fails when its lower end is over it, and is
"inconclusive" otherwise, with `images_to_settle`: how many images the straddling row would
need, at its observed value, for its interval to clear the bound (the half-width shrinks as
1/sqrt(n)). A row with no interval (too few images) is inconclusive unless the other rows
already fail the gate. A relative gate pairs each candidate row with the baseline's same row
and bounds the change. Where both runs recorded per-image outcomes of the same images, the
change's interval is the paired bootstrap's (audit/paired.py: the same images resampled in
both runs, far narrower); otherwise it combines the two runs' intervals as independent samples.
The result's `paired` says which (true only when every matching row was paired).

A gate with absolute bounds gives one result; a gate with relative bounds gives one more,
named "<name> (vs baseline)", which is skipped when no baseline run is given. A gate whose
metric matches no row fails: a typo must never pass silently. `check_policy` checks probe,
metric and filter keys against the probes' declared metrics and row keys before anything runs.
Results: `{"name", "outcome", "passed", "value", "ci", "threshold", "detail",
"images_to_settle", "unit"}` (unit: the metric's, "points" for a change of a fraction; and
`paired` for a relative gate); outcome is "pass" | "fail" | "inconclusive" | "skipped";
`passed` is what the policy makes of it (null when skipped).
"""
from __future__ import annotations

import math
import tomllib
from pathlib import Path

from audit.errors import GateFailed, ProbeFailed, UserError

ABSOLUTE = ("max", "min")
RELATIVE = ("max_increase", "max_decrease")
OWN_KEYS = ("name", "metric", "aggregate", "where", *ABSOLUTE, *RELATIVE)
BASE_FILTERS = ("label_set", "group_by", "group", "template")
AGGREGATES = ("max", "min", "mean", "value")
INCONCLUSIVE = ("fail", "pass")
HEADLINE_TEMPLATE = "ensemble"
Z95 = 1.959964


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
            "inconclusive": inconclusive, "source": source}


def _check_gate(gate, index: int, source: str) -> dict:
    where = f"{source}: gate {index}"
    if not isinstance(gate, dict):
        raise UserError(f"{where}: must be a table")
    if isinstance(gate.get("name"), str) and gate["name"].strip():
        where = f"{source}: gate {gate['name']!r}"
    for key in ("name", "metric"):
        if not isinstance(gate.get(key), str) or not gate[key].strip():
            raise UserError(f"{where}: '{key}' must be a non-empty string")
    if gate["metric"].count(".") != 1 or "" in gate["metric"].split("."):
        raise UserError(f"{where}: metric must read '<probe>.<metric>', got {gate['metric']!r}")
    bounds = {k: _number(gate[k], k, where) for k in ABSOLUTE + RELATIVE if k in gate}
    if not bounds:
        raise UserError(f"{where}: needs a bound (max, min, max_increase or max_decrease)")
    return {"name": gate["name"], "metric": gate["metric"], **bounds, "where": where,
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
    # Every key that is not the gate's own is a row filter; check_policy holds them against
    # the probe's declared row keys, so a typo ('mx = 0.05') is caught before the run.
    filters = {**{k: v for k, v in gate.items() if k not in OWN_KEYS}, **extra}
    for key, want in filters.items():
        options = want if isinstance(want, list) else [want]
        if not options or not all(isinstance(v, (str, int, float, bool)) for v in options):
            raise UserError(f"{where}: filter '{key}' must be a string, number, boolean, or "
                            "a non-empty list of them")
    return filters


def check_policy(policy: dict, metas: dict) -> dict:
    """Hold each gate against the probes' self-descriptions ({probe: meta}): an unknown probe,
    a metric the probe does not declare, or a filter on a key its rows never carry is a
    UserError now, before a model loads. Returns the policy."""
    from audit.registry import BASE_ROW_KEYS

    for gate in policy["gates"]:
        probe, metric = gate["metric"].split(".")
        if probe not in metas:
            raise UserError(f"{gate['where']}: no probe {probe!r}; available: "
                            f"{', '.join(sorted(metas))}")
        meta = metas[probe]
        declared = meta.get("metrics") or {}
        if declared and metric not in declared:
            raise UserError(f"{gate['where']}: {probe} has no metric {metric!r}; it reports "
                            f"{', '.join(sorted(declared))}")
        keys = meta.get("row_keys")
        if keys is not None:
            allowed = {*BASE_ROW_KEYS, "template", *keys}
            unknown = sorted(set(gate["filters"]) - allowed)
            if unknown:
                raise UserError(f"{gate['where']}: unknown key(s) {unknown}: not a gate key "
                                f"nor a row key of {probe} ({', '.join(sorted(allowed))})")
    return policy


def prepare(policy_path, baseline_path=None):
    """Parse and check `--policy` and read `--baseline` up front, so a typo costs seconds,
    not a computed run. Returns (policy or None, baseline results or None)."""
    from audit import results as res
    from audit.registry import known_meta

    policy = None
    if policy_path:
        policy = check_policy(load_policy(policy_path), known_meta())
    baseline = res.read(baseline_path) if baseline_path else None
    return policy, baseline


def evaluate(policy: dict, results: dict, *, baseline: dict | None = None,
             paired: dict | None = None) -> list[dict]:
    """One result dict per absolute gate and per relative gate, in policy order. `paired`:
    {row key: CI of the paired change} (audit.compare.paired_cis), used by relative gates."""
    out = []
    lenient = policy.get("inconclusive", "fail") == "pass"
    for gate in policy.get("gates", []):
        if any(k in gate for k in ABSOLUTE):
            out.append(_decide(_absolute(gate, results), lenient))
        if any(k in gate for k in RELATIVE):
            out.append(_decide(_relative(gate, results, baseline, paired or {}), lenient))
    return out


def run_gates(gating: tuple, results: dict, *, baseline_path=None, per_image=None) -> list[dict]:
    """The gates of `audit run`, from prepare()'s (policy, baseline): none without a policy.
    Relative gates bound the paired change where the baseline and this run (`per_image`:
    audit.outcomes.collect()'s, or None) kept per-image outcomes of the same images."""
    policy, baseline = gating
    if not policy:
        return []
    paired = _paired_cis(baseline_path, baseline, results, per_image) if baseline else None
    return evaluate(policy, results, baseline=baseline, paired=paired)


def _paired_cis(baseline_path, baseline: dict, results: dict, per_image) -> dict:
    """CIs of the paired changes against --baseline, for its relative gates."""
    from audit import compare, outcomes

    both = compare.compare(baseline, results, base_outcomes=outcomes.load(baseline_path, baseline),
                           cand_outcomes=outcomes.from_built(per_image))
    return compare.paired_cis(both)


def raise_for_run(results: dict, user_errors: list[str], *, results_path) -> None:
    """The exit code of a finished run, once its files are written (docs/INTERNALS.md): a
    probe's UserError (2) over a failed probe (3) over a failed gate (1); else nothing (0)."""
    if user_errors:
        raise UserError(user_errors[0] + (f" (+{len(user_errors) - 1} more)" if len(user_errors) > 1 else ""))
    broken = [name for name, p in results["probes"].items() if p["status"] == "error"]
    if broken:  # an audit missing a probe must not pass CI as a success
        raise ProbeFailed(f"{len(broken)} probe(s) failed: {', '.join(broken)}; the audit is incomplete "
                          f"(see {results_path})")
    raise_if_failed(results.get("gates") or [])


def raise_if_failed(gates: list[dict]) -> None:
    """The exit code of a policy: GateFailed (exit 1) when any gate did not pass."""
    failed = [g["name"] for g in gates if g.get("passed") is False]
    if failed:
        raise GateFailed(f"{len(failed)} gate(s) failed: {', '.join(failed)}")


def _decide(result: dict, lenient: bool) -> dict:
    outcome = result["outcome"]
    passed = None if outcome == "skipped" else (
        outcome == "pass" or (outcome == "inconclusive" and lenient))
    return {**result, "passed": passed}


def _absolute(gate: dict, results: dict) -> dict:
    threshold = _threshold(gate, ABSOLUTE)
    rows, problem = _matching(gate, results)
    if problem:
        return _result(gate["name"], "fail", None, None, threshold, problem)
    items = [(r["value"], _ci(r), r.get("n"), r.get("metric")) for r in rows]
    bounds = {k: gate[k] for k in ABSOLUTE if k in gate}
    return _judge(gate, items, bounds, threshold, gate["name"], _unit(gate, results))


def _relative(gate: dict, results: dict, baseline: dict | None, paired: dict) -> dict:
    name = f"{gate['name']} (vs baseline)"
    threshold = _threshold(gate, RELATIVE)
    if baseline is None:
        return {**_result(name, "skipped", None, None, threshold,
                          "skipped: relative gate needs a baseline (audit compare)"),
                "skipped": True}
    rows, problem = _matching(gate, results)
    base_rows, base_problem = _matching(gate, baseline)
    if problem or base_problem:
        return _result(name, "fail", None, None, threshold, problem or f"baseline: {base_problem}")
    items, n_paired = _deltas(gate, rows, base_rows, results, paired)
    if not items:
        return _result(name, "fail", None, None, threshold,
                       "no matching row is in both the baseline and the candidate")
    bounds = {"max": gate.get("max_increase"), "min": _neg(gate.get("max_decrease"))}
    bounds = {k: v for k, v in bounds.items() if v is not None}
    out = _judge(gate, items, bounds, threshold, name, _unit(gate, results), change=True)
    how = ("paired on the same images" if n_paired == len(items) else
           f"{n_paired} of {len(items)} rows paired on the same images, the rest independent"
           if n_paired else "independent samples")
    return {**out, "paired": n_paired == len(items), "detail": f"{out['detail']} ({how})"}


def _neg(x):
    return None if x is None else -x


def _deltas(gate: dict, rows: list[dict], base_rows: list[dict], results: dict,
            paired: dict) -> tuple[list, int]:
    """(change, its CI, n) per row present in both runs, and how many CIs are paired ones.
    Unpaired, the CI of a difference of two independent estimates has the half-widths added
    in quadrature."""
    from audit.compare import meta_of, row_key

    probe = gate["metric"].split(".")[0]
    meta = meta_of(results, probe)
    base = {row_key(probe, r, meta): r for r in base_rows}
    out, n_paired = [], 0
    for r in rows:
        key = row_key(probe, r, meta)
        b = base.get(key)
        if b is None:
            continue
        change = r["value"] - b["value"]
        (clo, chi), (blo, bhi) = _ci(r), _ci(b)
        ci = (None, None)
        if key in paired:
            ci, n_paired = paired[key], n_paired + 1
        elif None not in (clo, chi, blo, bhi):
            half = math.hypot((chi - clo) / 2, (bhi - blo) / 2)
            ci = (change - half, change + half)
        out.append((change, ci, r.get("n"), r.get("metric")))
    return out, n_paired


def _judge(gate, items, bounds, threshold, name, unit, *, change=False) -> dict:
    """Outcome from the aggregate's interval against each bound; see the module docstring."""
    agg = gate["aggregate"]
    if agg == "value" and len(items) != 1:
        return _result(name, "fail", None, None, threshold,
                       f"aggregate 'value' needs exactly one row, {len(items)} match "
                       f"{_describe(gate['metric'], gate['filters'])}")
    value = _reduce(agg, [v for v, _, _, _ in items])
    lo, hi = _interval(agg, [ci for _, ci, _, _ in items])
    verdicts = []
    for key, bound in bounds.items():
        if key == "max":
            verdicts.append("pass" if hi is not None and hi <= bound else
                            "fail" if lo is not None and lo > bound else "inconclusive")
        else:
            verdicts.append("pass" if lo is not None and lo >= bound else
                            "fail" if hi is not None and hi < bound else "inconclusive")
    outcome = "fail" if "fail" in verdicts else "pass" if all(v == "pass" for v in verdicts) \
        else "inconclusive"
    settle = _to_settle(items, bounds) if outcome == "inconclusive" else None
    detail = _detail(agg, value, (lo, hi), bounds, unit, change, outcome, settle)
    # The unit the value and threshold are in, for readers: a change of a fraction is points.
    shown = "points" if change and unit in ("fraction", "points") else unit
    return {**_result(name, outcome, value, [lo, hi], threshold, detail),
            "images_to_settle": settle, "unit": shown}


def _reduce(agg: str, values: list[float]) -> float:
    reduce = {"max": max, "min": min, "mean": lambda v: sum(v) / len(v), "value": lambda v: v[0]}
    return float(reduce[agg](values))


def _interval(agg: str, cis: list[tuple]) -> tuple:
    """The aggregate's interval from the rows' intervals. The max of several values is at least
    each row's lower end, so a known lower end is the largest known one; its upper end is
    known only when every row's is (an unknown row could be anything). Mirrored for min."""
    los, his = [c[0] for c in cis], [c[1] for c in cis]
    known_lo, known_hi = [x for x in los if x is not None], [x for x in his if x is not None]
    all_lo, all_hi = len(known_lo) == len(los), len(known_hi) == len(his)
    if agg in ("max", "value"):
        return (max(known_lo) if known_lo else None, max(his) if all_hi else None)
    if agg == "min":
        return (min(los) if all_lo else None, min(known_hi) if known_hi else None)
    mean = lambda v: sum(v) / len(v)  # noqa: E731  (bounds of a mean, rows taken alike)
    return (mean(los) if all_lo else None, mean(his) if all_hi else None)


def _to_settle(items, bounds) -> int | None:
    """Images the most uncertain straddling row needs for its interval to clear the bound."""
    needs = []
    for value, (lo, hi), n, _ in items:
        for bound in bounds.values():
            straddles = lo is None or hi is None or lo <= bound <= hi
            if straddles and isinstance(n, int) and n > 0:
                needs.append(images_to_settle(value, bound, n=n, ci=(lo, hi)))
    known = [x for x in needs if x is not None]
    return max(known) if known else None


def images_to_settle(value: float, bound: float, *, n: int, ci=(None, None)) -> int | None:
    """Images at which an interval around `value` stops reaching `bound`: the half-width
    shrinks as 1/sqrt(n). Without an interval, a rate's binomial one (Agresti-Coull's
    adjusted share, so 0% does not look certain). None when value == bound (no n settles it)."""
    gap = abs(value - bound)
    if gap == 0:
        return None
    lo, hi = ci
    if lo is not None and hi is not None and hi > lo:
        return max(n, math.ceil(n * ((hi - lo) / 2 / gap) ** 2))
    if 0 <= value <= 1:
        p = (value * n + 2) / (n + 4)
        return max(n + 1, math.ceil(Z95 ** 2 * p * (1 - p) / gap ** 2))
    return None


def _detail(agg, value, ci, bounds, unit, change, outcome, settle) -> str:
    share = unit in ("fraction", "points")  # a change of a share is in percentage points
    fmt = (lambda x: f"{100 * x:+.1f} points") if change and share else \
        (lambda x: f"{x:+.4g}") if change else \
        (lambda x: f"{100 * x:.1f}%") if unit == "fraction" else (lambda x: f"{x:.4g}")
    what = "the one matching row" if agg == "value" else f"{agg} over matching rows"
    what = ("change, " if change else "") + what
    ci_text = "no CI" if None in ci else f"95% CI {fmt(ci[0])} to {fmt(ci[1])}"
    bound = " and ".join(f"{'<=' if k == 'max' else '>='} {fmt(b)}" for k, b in bounds.items())
    text = f"{what} = {fmt(value)} ({ci_text}); must be {bound}"
    if outcome == "inconclusive":
        text += "; the interval straddles the bound" + (
            f" (about {settle:,} images would settle it at the observed rate)" if settle else "")
    return text


def _threshold(gate: dict, keys: tuple):
    threshold = {k: gate[k] for k in keys if k in gate}
    return next(iter(threshold.values())) if len(threshold) == 1 else threshold


def _result(name, outcome, value, ci, threshold, detail) -> dict:
    return {"name": name, "outcome": outcome, "passed": None, "value": value, "ci": ci,
            "threshold": threshold, "detail": detail, "images_to_settle": None}


def _unit(gate: dict, results: dict) -> str:
    from audit.compare import meta_of, metric_of

    probe, metric = gate["metric"].split(".")
    return metric_of(meta_of(results, probe), metric)["unit"]


def _ci(row: dict) -> tuple:
    lo, hi = row.get("ci_low"), row.get("ci_high")
    return (lo if _is_number(lo) else None, hi if _is_number(hi) else None)


def _matching(gate: dict, results: dict) -> tuple[list[dict], str | None]:
    """The gate's headline rows with a value, or ([], why none could be measured)."""
    probe_name, metric = gate["metric"].split(".")
    probe = (results.get("probes") or {}).get(probe_name)
    if probe is None:
        return [], f"probe {probe_name!r} is not in the results"
    if probe.get("status", "ok") != "ok":
        return [], f"probe {probe_name!r} has status {probe.get('status')!r}"
    filters = gate["filters"]
    rows = [r for r in probe.get("rows") or [] if r.get("metric") == metric
            and row_matches(r, filters) and ("template" in filters or headline_wording(r))]
    rows = [r for r in rows if _is_number(r.get("value"))]
    if not rows:
        return [], f"no row with a value matches {_describe(metric, filters)}"
    return rows, None


def headline_wording(row: dict) -> bool:
    """A headline row: not one wording's, but the ensemble's (or a probe without wordings).
    audit.table reads headlines the same way, so a table never shows what a gate would not."""
    return row.get("template") in (None, HEADLINE_TEMPLATE) if "template" in row else True


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def row_matches(row: dict, filters: dict) -> bool:
    """Every filter holds: a list means "any of", None matches an absent key."""
    for key, want in filters.items():
        options = want if isinstance(want, list) else [want]
        if row.get(key) not in options:
            return False
    return True


def _describe(metric: str, filters: dict) -> str:
    return ", ".join([f"metric={metric}"] + [f"{k}={v}" for k, v in filters.items()])


def gate_word(gate: dict) -> str:
    """PASS / FAIL / SKIP / INCONCLUSIVE (and what the policy made of it)."""
    outcome = gate.get("outcome") or ("skipped" if gate.get("passed") is None else
                                      "pass" if gate["passed"] else "fail")
    if outcome == "inconclusive":
        return "INCONCLUSIVE (counted as " + ("pass)" if gate.get("passed") else "fail)")
    return {"pass": "PASS", "fail": "FAIL", "skipped": "SKIP"}[outcome]


def print_gates(gates: list[dict], console) -> None:
    """A rich table: one line per gate, PASS/FAIL/SKIP spelled out (readable without colour)."""
    from rich.table import Table
    from rich.text import Text

    table = Table(title="Release gates")
    for col in ("gate", "result", "value", "threshold", "detail"):
        table.add_column(col, justify="right" if col in ("value", "threshold") else "left")
    for g in gates:
        word = gate_word(g)
        style = ("dim" if g.get("passed") is None else "green" if g["passed"] else "bold red")
        value = "–" if g.get("value") is None else f"{g['value']:.4g}"
        table.add_row(g["name"], Text(word, style), value, str(g.get("threshold")),
                      g.get("detail") or "")
    console.print(table)
    failed = [g["name"] for g in gates if g["passed"] is False]
    console.print(f"{len(failed)} of {len(gates)} gate(s) failed" +
                  (": " + ", ".join(failed) if failed else "."))
