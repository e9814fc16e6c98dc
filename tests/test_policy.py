"""Release gates: absolute and relative bounds on crafted results, and policy-file checking."""
import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from audit.errors import UserError
from audit.policy import evaluate, load_policy, parse_policy, print_gates


def _row(metric, group, value, *, group_by="race", label_set="default", half=0.005, **extra):
    """A row with a narrow CI (value +- half), so the point value decides unless a test widens it."""
    return {"metric": metric, "label_set": label_set, "group_by": group_by, "group": group,
            "value": value, "ci_low": value - half, "ci_high": value + half, "n": 100, **extra}


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
    ("max_decrease = 0.02", 0.10, 0.30, True, 0.0),  # per-row changes: B's 0 is the min
])
def test_relative_gate(tmp_path, bound, base, cand, passed, change):
    policy = _policy(tmp_path, REL_GATE.format(bound=bound))
    # Each row's change from the baseline's same row; default aggregate: max for ceilings,
    # min for floors.
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


CEILING = """
inconclusive = "{mode}"
[[gate]]
name = "ceiling"
metric = "p.non_human_rate"
label_set = "default"
group_by = "race"
max = 0.05
"""


@pytest.mark.parametrize("value, half, outcome", [
    (0.02, 0.01, "pass"),          # CI 1-3%: wholly under 5%
    (0.102, 0.035, "fail"),        # CI 6.7-13.7%: wholly over
    (0.06, 0.06, "inconclusive"),  # CI 0-12%: straddles
    (0.04, 0.03, "inconclusive"),  # CI 1-7%: straddles from below; the point alone would pass
])
def test_gate_outcome_comes_from_the_ci(tmp_path, value, half, outcome):
    rows = [_row("non_human_rate", "A", value, half=half)]
    results = {"probes": {"p": {"status": "ok", "rows": rows, "summary": {}, "findings": []}}}
    for mode in ("fail", "pass"):
        [gate] = evaluate(_policy(tmp_path, CEILING.format(mode=mode)), results)
        assert gate["outcome"] == outcome
        expected = outcome == "pass" or (outcome == "inconclusive" and mode == "pass")
        assert gate["passed"] is expected
    if outcome == "inconclusive":
        # half-width shrinks as 1/sqrt(n): n * (half / gap)^2 images clear the bound
        assert gate["images_to_settle"] == math.ceil(100 * (half / abs(value - 0.05)) ** 2)
        assert "would settle it" in gate["detail"]
    else:
        assert gate["images_to_settle"] is None


def test_gate_reads_headline_rows_unless_it_names_a_template(tmp_path):
    rows = [_row("non_human_rate", "A", 0.01, template="ensemble"),
            _row("non_human_rate", "A", 0.30, template="a photo of a {}."),
            _row("non_human_rate", "B", 0.02)]
    results = {"probes": {"p": {"status": "ok", "rows": rows, "summary": {}, "findings": []}}}
    [gate] = evaluate(_policy(tmp_path, CEILING.format(mode="fail")), results)
    assert gate["outcome"] == "pass" and gate["value"] == pytest.approx(0.02)
    named = CEILING.format(mode="fail") + 'template = "a photo of a {}."\n'
    [gate] = evaluate(_policy(tmp_path, named), results)
    assert gate["outcome"] == "fail" and gate["value"] == pytest.approx(0.30)


def test_policy_is_checked_against_the_probes_declarations(tmp_path):
    from audit.policy import check_policy
    from audit.registry import known_meta

    base = CEILING.format(mode="fail").replace("p.non_human_rate", "fairface_label_bias.non_human_rate")
    check_policy(_policy(tmp_path, base), known_meta())
    for text, problem in [(base.replace("max = 0.05", "max = 0.05\nmx = 0.1"), "unknown key"),
                          (base.replace(".non_human_rate", ".non_human"), "no metric"),
                          (base.replace("fairface_label_bias.", "fairface."), "no probe")]:
        with pytest.raises(UserError, match=problem):
            check_policy(_policy(tmp_path, text), known_meta())


def test_run_checks_policy_and_baseline_before_any_model_loads(tmp_path, monkeypatch, capsys):
    from audit import models
    from audit.cli import main

    def boom(*a, **k):
        raise AssertionError("the model loaded before the policy was checked")

    monkeypatch.setattr(models, "load", boom)
    (tmp_path / "p.toml").write_text('[[gate]]\nname = "g"\nmetric = "fairface_label_bias.non_human_rate"\nmax = 1\nmx = 1\n')
    assert main(["run", "--policy", str(tmp_path / "p.toml"), "--out", str(tmp_path / "o")]) == 2
    assert "unknown key(s) ['mx']" in capsys.readouterr().err
    (tmp_path / "ok.toml").write_text('[[gate]]\nname = "g"\nmetric = "fairface_label_bias.non_human_rate"\nmax = 1\n')
    assert main(["run", "--policy", str(tmp_path / "ok.toml"), "--baseline", str(tmp_path / "none.json"),
                 "--out", str(tmp_path / "o")]) == 2
    assert "none.json: no such file" in capsys.readouterr().err
