"""Release gates: absolute and relative bounds on crafted results, and policy-file checking."""
import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from audit.errors import UserError
from audit.policy import evaluate, load_policy, parse_policy, print_gates


def _row(metric, group, value, *, group_by="race", label_set="default", **extra):
    return {"metric": metric, "label_set": label_set, "group_by": group_by, "group": group,
            "value": value, "ci_low": None, "ci_high": None, "n": 100, **extra}


def _results(rates, *, status="ok"):
    """One probe whose non_human_rate by race is `rates` ({group: value})."""
    rows = [_row("non_human_rate", g, v) for g, v in rates.items()]
    rows.append(_row("non_human_rate", "Black", 0.9, label_set="with_child"))  # filtered out
    rows.append(_row("top1_accuracy", "all", 0.4, group_by="overall", candidates=100))
    rows.append(_row("top1_accuracy", "all", 0.2, group_by="overall", candidates=1000))
    return {"probes": {"p": {"status": status, "rows": rows, "summary": {}, "findings": []}}}


def _policy(tmp_path, text):
    path = tmp_path / "gates.toml"
    path.write_text(text)
    return load_policy(path)


RACE_GATE = """
[[gate]]
name = "nh"
metric = "p.non_human_rate"
label_set = "default"
group_by = "race"
aggregate = "{agg}"
{bound}
"""


@pytest.mark.parametrize("agg, bound, rates, passed, value", [
    ("max", "max = 0.05", {"A": 0.01, "B": 0.04}, True, 0.04),
    ("max", "max = 0.05", {"A": 0.01, "B": 0.06}, False, 0.06),
    ("min", "min = 0.02", {"A": 0.01, "B": 0.06}, False, 0.01),
    ("mean", "max = 0.05", {"A": 0.02, "B": 0.06}, True, 0.04),
    ("mean", "max = 0.03", {"A": 0.02, "B": 0.06}, False, 0.04),
    ("max", "max = 0.05\nmin = 0.03", {"A": 0.04}, True, 0.04),
])
def test_absolute_gate(tmp_path, agg, bound, rates, passed, value):
    policy = _policy(tmp_path, RACE_GATE.format(agg=agg, bound=bound))
    [gate] = evaluate(policy, _results(rates))
    assert gate["passed"] is passed and gate["value"] == pytest.approx(value)
    assert gate["name"] == "nh" and gate["detail"]


def test_value_aggregate_needs_exactly_one_row(tmp_path):
    policy = _policy(tmp_path, """
[[gate]]
name = "celeb"
metric = "p.top1_accuracy"
candidates = 100
aggregate = "value"
max = 0.5
[[gate]]
name = "celeb, ambiguous"
metric = "p.top1_accuracy"
aggregate = "value"
max = 0.5
""")
    one, two = evaluate(policy, _results({"A": 0.0}))
    assert one["passed"] is True and one["value"] == 0.4
    assert two["passed"] is False and "exactly one row" in two["detail"]


def test_list_filter_means_any_of(tmp_path):
    policy = _policy(tmp_path, RACE_GATE.format(agg="max", bound='max = 0.05\ngroup = ["A", "B"]'))
    [gate] = evaluate(policy, _results({"A": 0.01, "B": 0.02, "C": 0.5}))
    assert gate["passed"] is True and gate["value"] == 0.02


@pytest.mark.parametrize("metric, status, why", [
    ("p.non_human_rat", "ok", "no row"),           # a typo must fail, not pass
    ("q.non_human_rate", "ok", "not in the results"),
    ("p.non_human_rate", "error", "status 'error'"),
])
def test_gate_that_matches_nothing_fails(tmp_path, metric, status, why):
    policy = _policy(tmp_path, f'[[gate]]\nname = "g"\nmetric = "{metric}"\nmax = 1.0\n')
    [gate] = evaluate(policy, _results({"A": 0.01}, status=status))
    assert gate["passed"] is False and why in gate["detail"]


REL_GATE = """
[[gate]]
name = "nh"
metric = "p.non_human_rate"
label_set = "default"
group_by = "race"
{bound}
"""


@pytest.mark.parametrize("bound, base, cand, passed, change", [
    ("max_increase = 0.02", 0.10, 0.11, True, 0.01),
    ("max_increase = 0.02", 0.10, 0.13, False, 0.03),
    ("max_decrease = 0.02", 0.10, 0.07, False, -0.03),
    ("max_decrease = 0.02", 0.10, 0.30, True, 0.20),
])
def test_relative_gate(tmp_path, bound, base, cand, passed, change):
    policy = _policy(tmp_path, REL_GATE.format(bound=bound))
    # Default aggregate: max for ceilings, min for floors; B must not be the one picked.
    other = 0.0 if "increase" in bound else 1.0
    [gate] = evaluate(policy, _results({"A": cand, "B": other}),
                      baseline=_results({"A": base, "B": other}))
    assert gate["passed"] is passed and gate["value"] == pytest.approx(change)
    assert gate["name"] == "nh (vs baseline)"


def test_relative_gate_without_baseline_is_skipped_not_passed(tmp_path):
    policy = _policy(tmp_path, REL_GATE.format(bound="max = 0.5\nmax_increase = 0.01"))
    absolute, relative = evaluate(policy, _results({"A": 0.2}))
    assert absolute["passed"] is True
    assert relative["passed"] is None and relative["skipped"] is True
    assert "baseline" in relative["detail"]


@pytest.mark.parametrize("text, problem", [
    ("[[gate]\nname=", "not valid TOML"),
    ('[[gate]]\nname = "g"\nmetric = "p.m"\nmax = 1\ncolour = "red"\n', "unknown key"),
    ('[[gate]]\nname = "g"\nmetric = "p.m"\nmax = "0.05"\n', "'max' must be a finite number"),
    ('[[gate]]\nname = "g"\nmetric = "p.m"\nmax = true\n', "'max' must be a finite number"),
    ('[[gate]]\nname = "g"\nmetric = "p.m"\nmax = nan\n', "finite"),
    ('[[gate]]\nname = "g"\nmetric = "p.m"\n', "needs a bound"),
    ('[[gate]]\nname = "g"\nmetric = "nodot"\nmax = 1\n', "<probe>.<metric>"),
    ('[[gate]]\nmetric = "p.m"\nmax = 1\n', "'name'"),
    ('[[gate]]\nname = "g"\nmetric = "p.m"\nmax = 1\naggregate = "median"\n', "aggregate"),
    ('[[gate]]\nname = "g"\nmetric = "p.m"\nmax_increase = -1\n', ">= 0"),
    ('[[gate]]\nname = "g"\nmetric = "p.m"\nmax = 1\ngroup = []\n', "filter 'group'"),
    ('[[gate]]\nname = "g"\nmetric = "p.m"\nmax = 1\nwhere = 3\n', "'where'"),
    ('gate = 3\n', "array of tables"),
    ('[gates]\nx = 1\n', "unknown top-level"),
])
def test_malformed_policy_is_a_user_error_naming_the_file(tmp_path, text, problem):
    with pytest.raises(UserError) as info:
        _policy(tmp_path, text)
    message = str(info.value)
    assert message.startswith(str(tmp_path / "gates.toml") + ":") and problem in message
    assert "\n" not in message


def test_missing_or_binary_file(tmp_path):
    with pytest.raises(UserError, match="cannot read"):
        load_policy(tmp_path / "absent.toml")
    (tmp_path / "bin.toml").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(UserError, match="bin.toml"):
        load_policy(tmp_path / "bin.toml")


@pytest.mark.parametrize("name", ["policy.toml", "policy-tolerant.toml"])
def test_example_policies_load(name):
    from pathlib import Path

    policy = load_policy(Path(__file__).parents[1] / "examples" / name)
    assert len(policy["gates"]) >= 5


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text())
def test_fuzz_any_text_is_a_policy_or_a_user_error(text):
    try:
        policy = parse_policy(text, source="fuzz.toml")
    except UserError as e:
        assert str(e).startswith("fuzz.toml:")
        return
    assert isinstance(policy["gates"], list)


TOML_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 5) | st.floats(allow_nan=True) |
    st.text(max_size=5), lambda inner: st.lists(inner, max_size=3), max_leaves=6)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(["name", "metric", "max", "min", "aggregate", "group",
                                        "max_increase", "where", "k", "oops"]),
                       TOML_VALUES, max_size=6))
def test_fuzz_gate_tables(gate):
    """Structured fuzz: well-formed TOML with arbitrary gate contents."""
    lines = ["[[gate]]"] + [f"{k} = {_toml(v)}" for k, v in gate.items() if v is not None]
    try:
        policy = parse_policy("\n".join(lines), source="g.toml")
    except UserError:
        return
    [checked] = policy["gates"]
    for bound in ("max", "min", "max_increase"):
        assert bound not in checked or math.isfinite(checked[bound])
    evaluate(policy, _results({"A": 0.1}))  # never raises on a valid policy


def _toml(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return "nan" if v != v else ("inf" if v == math.inf else "-inf" if v == -math.inf
                                     else repr(v))
    if isinstance(v, str):
        return '"' + v.encode("unicode_escape").decode().replace('"', '\\"') + '"'
    if isinstance(v, list):
        return "[" + ", ".join(_toml(x) for x in v if x is not None) + "]"
    return str(v)


def test_print_gates(capsys):
    from rich.console import Console

    gates = [{"name": "a", "passed": True, "value": 0.01, "threshold": 0.05, "detail": "ok"},
             {"name": "b", "passed": False, "value": 0.3, "threshold": 0.05, "detail": "bad"},
             {"name": "c", "passed": None, "value": None, "threshold": 0.02, "detail": "skip",
              "skipped": True}]
    console = Console(width=120, color_system=None)
    print_gates(gates, console)
    out = capsys.readouterr().out
    assert "PASS" in out and "FAIL" in out and "SKIP" in out and "1 of 3 gate(s) failed: b" in out


# --- CI-aware outcomes (issue 16 point 4) -------------------------------------------------
META = {"title": "P", "metrics": {"non_human_rate": {"title": "Non-human", "unit": "fraction",
                                                     "worse": "up"}}}


def _ci_results(rows_ci, **extra):
    """non_human_rate rows by race with the given (value, ci_low, ci_high, n), and meta."""
    rows = [{**_row("non_human_rate", f"G{i}", v, **extra), "ci_low": lo, "ci_high": hi, "n": n}
            for i, (v, lo, hi, n) in enumerate(rows_ci)]
    return {"probes": {"p": {"status": "ok", "rows": rows, "meta": META}}}


CEILING = '[[gate]]\nname = "nh"\nmetric = "p.non_human_rate"\nmax = 0.05\n'


@pytest.mark.parametrize("rows_ci, outcome", [
    ([(0.102, 0.068, 0.139, 265)], "fail"),                       # the CI is all above 0.05
    ([(0.01, 0.002, 0.03, 500), (0.02, 0.01, 0.049, 400)], "pass"),  # every CI is under it
    ([(0.06, 0.0, 0.15, 30)], "inconclusive"),                    # the 30-face group
    ([(0.04, 0.0, 0.11, 30)], "inconclusive"),                    # under it, but not known
    ([(0.01, 0.0, 0.03, 500), (0.102, 0.068, 0.139, 265), (0.04, 0.0, 0.11, 30)], "fail"),
])
def test_ceiling_outcome_follows_the_ci(rows_ci, outcome):
    [gate] = evaluate(parse_policy(CEILING), _ci_results(rows_ci))
    assert gate["outcome"] == outcome
    assert gate["passed"] is (outcome == "pass")  # inconclusive counts as fail by default
    assert (gate["images_to_settle"] is None) == (outcome != "inconclusive")


def test_floor_outcomes_mirror_the_ceiling():
    floor = CEILING.replace("max = 0.05", "min = 0.5")
    outcome = lambda ci: evaluate(parse_policy(floor), _ci_results([ci]))[0]["outcome"]  # noqa: E731
    assert outcome((0.7, 0.6, 0.8, 100)) == "pass"
    assert outcome((0.3, 0.2, 0.4, 100)) == "fail"
    assert outcome((0.55, 0.45, 0.65, 100)) == "inconclusive"


def test_inconclusive_policy_decides_passed():
    results = _ci_results([(0.06, 0.0, 0.15, 30)])
    [strict] = evaluate(parse_policy(CEILING), results)
    [lenient] = evaluate(parse_policy('inconclusive = "pass"\n' + CEILING), results)
    assert strict["outcome"] == lenient["outcome"] == "inconclusive"
    assert strict["passed"] is False and lenient["passed"] is True
    assert "inconclusive" in lenient["detail"] and "counts as pass" in lenient["detail"]
    relative = CEILING.replace("max = 0.05", "max_increase = 0.01")
    [skipped] = evaluate(parse_policy(relative), results)
    [rel] = evaluate(parse_policy(relative), results, baseline=results)
    assert (skipped["outcome"], rel["outcome"], rel["passed"]) == ("skipped", "pass", True)
    with pytest.raises(UserError, match="inconclusive must be"):
        parse_policy('inconclusive = "maybe"\n' + CEILING)


def test_images_to_settle_is_where_the_wilson_interval_leaves_the_bound():
    """Checked against the Wilson interval itself: at the returned n the bound is outside
    the interval of the observed rate, one image fewer it is still inside."""
    from audit.policy import images_to_settle, wilson

    for p, bound in [(0.06, 0.05), (0.04, 0.05), (0.3, 0.2), (0.5, 0.45), (0.01, 0.02)]:
        n = images_to_settle(p, bound)
        lo, hi = wilson(p, n)
        assert not lo <= bound <= hi, (p, bound, n)
        lo, hi = wilson(p, n - 1)
        assert lo <= bound <= hi, (p, bound, n)
    assert images_to_settle(0.05, 0.05) is None
    [gate] = evaluate(parse_policy(CEILING), _ci_results([(0.06, 0.0, 0.15, 30)]))
    assert gate["images_to_settle"] == images_to_settle(0.06, 0.05)
    assert str(gate["images_to_settle"]) in gate["detail"]


def test_wilson_bounds_are_the_score_test_roots():
    """The Wilson bounds are the roots of (p - t)² = z²·t(1 - t)/n, solved independently."""
    from audit.policy import Z95, wilson

    p, n = 0.06, 30
    a = 1 + Z95 ** 2 / n
    b = -(2 * p + Z95 ** 2 / n)
    roots = sorted(((-b - s * math.sqrt(b * b - 4 * a * p * p)) / (2 * a)) for s in (1, -1))
    assert wilson(p, n) == pytest.approx(tuple(roots))


def test_small_group_without_ci_gets_its_wilson_interval():
    """A "too few images" rate row carries no CI; its n still makes it inconclusive, not a
    point pass."""
    [gate] = evaluate(parse_policy(CEILING), _ci_results([(0.04, None, None, 8)]))
    assert gate["outcome"] == "inconclusive"


def test_gate_matches_headline_rows_unless_it_names_a_template():
    rows = [(0.01, 0.0, 0.02, 900)]
    results = _ci_results(rows, template="ensemble")
    per_template = _ci_results([(0.3, 0.25, 0.35, 900)], template="a photo of {}")
    results["probes"]["p"]["rows"] += per_template["probes"]["p"]["rows"]
    [headline] = evaluate(parse_policy(CEILING), results)
    assert headline["outcome"] == "pass" and headline["value"] == pytest.approx(0.01)
    [named] = evaluate(parse_policy(CEILING + 'template = "a photo of {}"\n'), results)
    assert named["outcome"] == "fail" and named["value"] == pytest.approx(0.3)


@pytest.mark.parametrize("which, content, message", [
    ("--policy", "[[gate]\nname = 'x'\n", "not valid TOML"),
    ("--policy", '[[gate]]\nname = "x"\nmetric = "p.m"\nmaxx = 1\n', "unknown key"),
    ("--baseline", "{not json", "not a results.json"),
])
def test_bad_policy_or_baseline_stops_before_the_model_loads(which, content, message, tmp_path,
                                                             capsys, monkeypatch):
    """A typo in --policy or --baseline is one line, exit 2, and no model was ever loaded."""
    from audit import models
    from audit.cli import main

    loaded = []
    monkeypatch.setattr(models, "load", lambda *a, **kw: loaded.append(a) or 1 / 0)
    bad = tmp_path / ("bad.toml" if which == "--policy" else "base.json")
    bad.write_text(content)
    code = main(["run", "--model", "demo", "--probes", "fairface_label_bias", which, str(bad),
                 "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and loaded == []
    assert len(err.splitlines()) == 1 and err.startswith("error:") and message in err
    assert str(bad) in err and not (tmp_path / "out" / "results.json").exists()


def test_report_shows_an_inconclusive_gate(tmp_path):
    from reports.render import render_report

    results = _ci_results([(0.06, 0.0, 0.15, 30)])
    results.update(schema_version=1, gates=evaluate(parse_policy(CEILING), results))
    html = render_report(results, tmp_path / "r.html").read_text(encoding="utf-8")
    assert f"(inconclusive: ~{results['gates'][0]['images_to_settle']} images settle it)" in html
