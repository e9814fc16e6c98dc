"""`audit table`: the headline numbers of several runs side by side, checked against an
independent read of each results.json (the oracle below re-implements the headline rule and
the column ids from docs/INTERNALS.md, not through audit.table)."""
import base64
import copy
import hashlib
import html
import json
import math
import re

import pandas as pd
import pytest

from audit.cli import main

IMPLIED = {("group_by", "overall"), ("group", "all"), ("template", "ensemble")}


def _any_of(row, filters):
    return all(row.get(k) in (v if isinstance(v, list) else [v]) for k, v in filters.items())


def oracle(results: dict) -> dict:
    """{column id: row} of one run: ok probes' rows over all images, at no wording or the
    ensemble, matching the probe's declared headline filters if it has any."""
    out = {}
    for name, probe in results["probes"].items():
        if probe.get("status") != "ok":
            continue
        meta = probe.get("meta") or {}
        keys = ["label_set", "group_by", "group", *(meta.get("row_keys") or [])]
        for r in probe["rows"]:
            if r["group"] != "all" or r.get("template") not in (None, "ensemble"):
                continue
            if meta.get("headline") and not any(_any_of(r, f) for f in meta["headline"]):
                continue
            parts = sorted(f"{k}={r[k]}" for k in keys if r.get(k) is not None
                           and (k, r[k]) not in IMPLIED)
            out.setdefault(f"{name}.{r['metric']}" + (f"[{','.join(parts)}]" if parts else ""), r)
    return out


def widget_results(base: dict) -> dict:
    """A run of a probe that is not installed here: only its recorded meta describes it."""
    rows = [{"metric": "harm_rate", "label_set": None, "group_by": "overall", "group": "all",
             "value": 0.125, "ci_low": 0.1, "ci_high": 0.15, "n": 800, "widget": "w1"},
            {"metric": "harm_rate", "label_set": None, "group_by": "colour", "group": "red",
             "value": 0.5, "ci_low": 0.4, "ci_high": 0.6, "n": 80, "widget": "w1"},
            {"metric": "harm_rate", "label_set": None, "group_by": "overall", "group": "all",
             "value": 0.9, "ci_low": None, "ci_high": None, "n": 800, "widget": "w1",
             "template": "one wording"}]
    meta = {"title": "Widget harm", "description": "", "row_keys": ["widget", "template"],
            "metrics": {"harm_rate": {"title": "Harmful widget labels", "unit": "fraction",
                                      "worse": "up", "description": ""}}}
    return {**{k: copy.deepcopy(base[k]) for k in ("schema_version", "tool", "run", "data")},
            "model": {"spec": "widget-model", "arch": "w", "sha256": "0" * 64, "source": "x"},
            "probes": {"widget_probe": {"status": "ok", "summary": {}, "rows": rows,
                                        "findings": [], "config": {}, "meta": meta}},
            "gates": []}


@pytest.fixture(scope="module")
def runs(demo_run, tmp_path_factory):
    """Three runs as `audit table` is given them: the demo run's folder, an edited copy of its
    results.json (hostile model spec, a moved rate, a probe removed, one failed), a plugin's."""
    root = tmp_path_factory.mktemp("table")
    a = json.loads((demo_run / "results.json").read_text())
    b = copy.deepcopy(a)
    b["model"]["spec"] = '=HYPERLINK("http://example.com")'
    for r in b["probes"]["fairface_label_bias"]["rows"]:
        if r["metric"] == "non_human_rate" and r["group_by"] == "overall":
            r.update(value=0.5, ci_low=0.45, ci_high=0.55)
    del b["probes"]["retrieval_skew"]
    b["probes"]["celebrity_identification"]["status"] = "error"
    (root / "@cand").mkdir()
    (root / "@cand" / "results.json").write_text(json.dumps(b))
    (root / "widget.json").write_text(json.dumps(widget_results(a)))
    # The second as a relative path from root: a run name that starts like a formula.
    given = [str(demo_run), "@cand/results.json", str(root / "widget.json")]
    return root, given, [a, b, widget_results(a)]


@pytest.fixture
def table(runs, monkeypatch):
    """Runs `audit table` on the three runs into root/NAME, from root; returns the path."""
    root, given, _ = runs
    monkeypatch.chdir(root)
    return lambda name: _table(runs, name)


def _table(runs, name):
    root, given, _ = runs
    out = root / name
    assert main(["table", *given, "-o", str(out)]) == 0
    return out


def _same(got, want):
    if want is None:
        return isinstance(got, float) and math.isnan(got)
    return got == want


def test_csv_holds_each_runs_headline_rows(runs, table):
    _, given, data = runs
    df = pd.read_csv(table("t.csv"))
    assert len(df) == 3
    assert df["run"].tolist() == [given[0], "'@cand/results.json", given[2]]
    wanted = [oracle(d) for d in data]
    ids = {c for w in wanted for c in w}
    assert {c.rsplit(" ", 1)[0] for c in df.columns if c.endswith(" value")} == ids
    for i, want in enumerate(wanted):
        for cid in ids:
            row = want.get(cid) or {}
            for k in ("value", "ci_low", "ci_high", "n"):
                assert _same(df.loc[i, f"{cid} {k}"], row.get(k)), (i, cid, k)
    assert df.loc[0, "sha256"] == data[0]["model"]["sha256"]
    assert df.loc[0, "data:fairface"] == data[0]["data"]["fairface"]["fingerprint"]


def test_headline_rule_keeps_the_table_short(runs):
    _, _, data = runs
    ids = list(oracle(data[0]))
    probes = {c.split(".")[0] for c in ids}
    ran = {name for name, p in data[0]["probes"].items() if p["status"] == "ok"}
    assert probes == ran  # every probe the demo ran contributes (one without its source is skipped)
    assert not [c for c in ids if "severity=3" in c]  # distribution_shift's cells are not headlines
    assert "widget_probe.harm_rate[widget=w1]" in oracle(data[2])


def test_csv_escapes_formulas_and_keeps_numbers(table):
    text = table("t.csv").read_text()
    assert "\n'@cand/results.json," in text and \
        ',"\'=HYPERLINK(""http://example.com"")",' in text
    df = pd.read_csv(table("t.csv"))
    assert df.loc[1, "model"].startswith("'=")
    drop = [c for c in df.columns if "relative_robustness" in c and c.endswith(" value")]
    assert drop and df[drop[0]].dtype == float and (df[drop[0]].dropna() < 0).all()


def test_table_csv_escapes_every_text_cell():
    from reports.table import table_csv

    table = {"columns": [{"id": "p.m"}], "runs": [
        {"name": "+run", "model": "-m", "arch": "@a", "sha256": "\tx", "finished": "=1",
         "data_fingerprint": None, "data": {"=role": "=fp"},
         "cells": {"p.m": {"value": -0.5, "ci_low": None, "ci_high": 1, "n": 3}}}]}
    lines = table_csv(table).splitlines()
    assert lines[0] == ("run,model,arch,sha256,finished,data_fingerprint,data:=role,"
                        "p.m value,p.m ci_low,p.m ci_high,p.m n")
    assert lines[1] == "'+run,'-m,'@a,'\tx,'=1,,'=fp,-0.5,,1,3"


def test_html_is_sortable_self_contained_and_shows_titles(runs, table):
    _, _, data = runs
    text = table("t.html").read_text()
    scripts = re.findall(r"<script>(.*?)</script>", text, re.S)
    assert len(scripts) == 1 and "aria-sort" in scripts[0] and "Plotly" not in text
    digest = base64.b64encode(hashlib.sha256(scripts[0].encode()).digest()).decode()
    assert f"script-src 'sha256-{digest}';" in html.unescape(text)
    assert text.count('aria-sort="none"') == 4 + len({c for d in data for c in oracle(d)})
    assert "Widget harm" in text and "Harmful widget labels" in text and "12.5%" in text
    assert "FairFace label bias" in text and "Non-human labels" in text
    # Each number cell carries the run's own value to sort by.
    [body] = re.findall(r"<tbody>(.*?)</tbody>", text, re.S)[:1]
    rows = re.findall(r"<tr>(.*?)</tr>", body, re.S)
    nh = next(r for r in data[0]["probes"]["fairface_label_bias"]["rows"]
              if r["metric"] == "non_human_rate" and r["group_by"] == "overall"
              and r["label_set"] == "default")
    assert f'data-sort="{nh["value"]}"' in rows[0] and 'data-sort="0.5"' in rows[1]
    assert f"{100 * nh['value']:.1f}%" in rows[0] and "50.0%" in rows[1]
    assert "non_human_rate" not in re.sub(r"<script>.*?</script>", "", text, flags=re.S)


def test_a_folder_and_its_results_json_give_the_same_row(demo_run, tmp_path):
    out = tmp_path / "t.csv"
    assert main(["table", str(demo_run), str(demo_run / "results.json"), "-o", str(out)]) == 0
    df = pd.read_csv(out)
    values = df[[c for c in df.columns if c.endswith(" value")]]
    assert values.iloc[0].equals(values.iloc[1])


def test_a_probes_headline_filters_are_recorded_and_narrow_its_rows():
    from audit.registry import Metric, probe_meta, register_probe
    from audit.table import headline_rows

    class Probe:
        name, metrics = "narrow_probe", {"acc": Metric("Accuracy", "fraction", worse="down")}
        headline = ({"cut": ["clean", None]},)
        Config, run = object, None

    meta = probe_meta(Probe)
    assert meta["headline"] == [{"cut": ["clean", None]}]
    rows = [{"metric": "acc", "group": "all", "cut": c, "value": 0.5} for c in ("clean", "fog")]
    rows += [{"metric": "acc", "group": "all", "value": 0.4},
             {"metric": "acc", "group": "all", "value": 0.3, "template": "one wording"},
             {"metric": "acc", "group": "Black", "value": 0.2}]
    kept = headline_rows("narrow_probe", {"status": "ok", "rows": rows}, meta)
    assert [r.get("cut") for r in kept] == ["clean", None]
    assert headline_rows("narrow_probe", {"status": "error", "rows": rows}, meta) == []
    Probe.headline = ("cut",)
    with pytest.raises(TypeError, match="headline must be a sequence of row filters"):
        register_probe(Probe)
