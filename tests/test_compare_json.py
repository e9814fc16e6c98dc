"""`audit compare` writes compare.json beside the HTML (validated against its schema), exits 1
on a significant regression with --fail-on-regression, and says so when nothing is shared."""
import json

from audit.cli import main
from tests.reports.conftest import make_results


def _write(path, results):
    path.write_text(json.dumps(results))
    return str(path)


def _regressed():
    cand = make_results()
    row = next(r for r in cand["probes"]["fairface_label_bias"]["rows"]
               if r["metric"] == "crime_rate" and r["group_by"] == "race" and r["group"] == "Black"
               and r["label_set"] == "default")
    row.update(value=0.9, ci_low=0.85, ci_high=0.95)
    return cand


def test_compare_json_validates_and_fail_on_regression(tmp_path, capsys):
    from audit.compare import validate

    base = _write(tmp_path / "base.json", make_results())
    cand = _write(tmp_path / "cand.json", _regressed())
    out = tmp_path / "c.html"
    assert main(["compare", base, cand, "-o", str(out)]) == 0
    doc = json.loads((tmp_path / "compare.json").read_text())
    validate(doc)
    worst = doc["rows"][0]
    assert worst["key"]["metric"] == "crime_rate" and worst["key"]["group"] == "Black"
    assert worst["direction"] == "worse" and worst["significant"] and doc["regressions"] >= 1
    assert main(["compare", base, cand, "-o", str(out), "--fail-on-regression"]) == 1
    assert main(["compare", base, base, "-o", str(out), "--fail-on-regression"]) == 0


def test_no_shared_probe_is_said_not_counted(tmp_path, capsys):
    only = make_results()
    base_r = {**only, "probes": {"retrieval_skew": only["probes"]["retrieval_skew"]}}
    cand_r = {**only, "probes": {"fairface_label_bias": only["probes"]["fairface_label_bias"]}}
    out = tmp_path / "c.html"
    assert main(["compare", _write(tmp_path / "b.json", base_r), _write(tmp_path / "c.json", cand_r),
                 "-o", str(out)]) == 0
    assert "Nothing compared" in capsys.readouterr().out
    assert 'id="nothing-compared"' in out.read_text()
    assert json.loads((tmp_path / "compare.json").read_text())["shared_probes"] == []


def test_bad_policy_is_one_line_exit_2(tmp_path, capsys):
    base = _write(tmp_path / "base.json", make_results())
    (tmp_path / "p.toml").write_text('[[gate]]\nname = "g"\nmetric = "fairface_label_bias.nope"\nmax = 1\n')
    assert main(["compare", base, base, "-o", str(tmp_path / "c.html"), "--policy", str(tmp_path / "p.toml")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "no metric 'nope'" in err and err.count("\n") == 1
    assert not (tmp_path / "compare.json").exists()
