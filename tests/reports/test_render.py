"""The HTML report: escaping, self-containment, CSP, and that it shows what results.json says."""
import base64
import csv
import hashlib
import html
import io
import json
import re
from urllib.parse import unquote

import pytest

from reports.render import render_compare, render_report

EVIL = "<script>alert(1)</script>\"quoted' </textarea>"
SCRIPT_RE = re.compile(r"<script(?P<attrs>[^>]*)>(?P<body>.*?)</script>", re.S)


def _render(results, tmp_path, **kw):
    out = render_report(results, tmp_path / "sub" / "report.html", **kw)
    return out.read_text(encoding="utf-8")


def _without_plotly(text):
    """The page minus the plotly.js library text (a third party's code, checked separately)."""
    return SCRIPT_RE.sub(lambda m: "" if len(m["body"]) > 1_000_000 else m[0], text)


def _json_blocks(text):
    return [json.loads(m["body"]) for m in SCRIPT_RE.finditer(text)
            if 'type="application/json"' in m["attrs"]]


def test_hostile_labels_are_escaped(results, tmp_path):
    rows = results["probes"]["fairface_label_bias"]["rows"]
    race_rows = [r for r in rows if r["group_by"] == "race" and r["label_set"] == "default"]
    for r in race_rows[:3]:
        r["group"] = EVIL  # lands in chart JSON, tables and the CSV link
    results["probes"]["fairface_label_bias"]["summary"]["worst_group"] = EVIL
    results["probes"]["retrieval_skew"]["findings"] = [
        {"severity": "high", "message": EVIL, "evidence": {EVIL: EVIL}}]
    results["data"]["fairface"]["skipped_files"] = [{"path": EVIL, "reason": EVIL}]
    results["model"]["spec"] = EVIL
    page = _without_plotly(_render(results, tmp_path))
    for raw in ("<script>alert(1)", "</textarea>", "quoted' </"):
        assert raw not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "&lt;/textarea&gt;" in page
    assert EVIL in html.unescape(page)  # shown, as text, quotes and all
    # Inside JSON blocks, the label survives intact once parsed.
    labels = {x for b in _json_blocks(page) for t in b["data"] for x in t.get("x", [])}
    assert EVIL in labels


def test_self_contained(results, tmp_path):
    text = _render(results, tmp_path)
    assert "<script src" not in text.lower() and "<link" not in text.lower()
    assert not re.search(r"""<img[^>]+src=["']?https?:""", text, re.I)
    ours = _without_plotly(text)
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", ours, re.I)
    # plotly.js is inlined exactly once.
    from plotly.offline import get_plotlyjs

    assert text.count(get_plotlyjs()[:200]) == 1


def test_csp_hashes_allow_exactly_the_inline_scripts(results, tmp_path):
    text = _render(results, tmp_path)
    csp = html.unescape(re.search(r'http-equiv="Content-Security-Policy" content="([^"]+)"',
                                  text)[1])
    directives = dict(d.strip().split(" ", 1) for d in csp.split(";"))
    assert directives["default-src"] == "'none'" and directives["img-src"] == "data:"
    allowed = set(re.findall(r"'sha256-([^']+)'", directives["script-src"]))
    run = [m["body"] for m in SCRIPT_RE.finditer(text) if "type=" not in m["attrs"]]
    digests = {base64.b64encode(hashlib.sha256(b.encode()).digest()).decode() for b in run}
    assert len(run) == 2 and digests == allowed
    assert "unsafe" not in directives["script-src"]


def test_summary_lists_findings_most_severe_first(results, tmp_path):
    text = _render(results, tmp_path)
    summary = text[text.index('id="findings"'):text.index('id="gates"')]
    messages = [f["message"] for p in results["probes"].values() for f in p["findings"]]
    positions = {m: html.unescape(summary).index(m) for m in messages}
    sev = {f["message"]: f["severity"] for p in results["probes"].values() for f in p["findings"]}
    order = sorted(positions, key=positions.get)
    ranks = [["high", "medium", "low", "info"].index(sev[m]) for m in order]
    assert ranks == sorted(ranks) and len(order) == 4


def test_summary_shows_model_data_and_gates(results, tmp_path):
    text = _render(results, tmp_path)
    head = text[:text.index('id="probe-')]
    for needle in (results["model"]["sha256"], results["data"]["fairface"]["fingerprint"],
                   "val/17.jpg", "cannot identify image", "2.14.1", "1 failed",
                   "non-human rate by race"):
        assert needle in head


def test_skipped_files_as_a_bare_list_still_listed(results, tmp_path):
    results["data"]["celebrity"] = {"spec": "x", "fingerprint": "f", "n": 3,
                                    "skipped": [{"path": "bad/1.png", "reason": "truncated"}]}
    text = _render(results, tmp_path)
    assert "bad/1.png" in text and "1 unreadable file(s) skipped in celebrity" in text


def test_probe_without_partial_falls_back_to_generic_table(results, tmp_path):
    results["probes"]["third_party_probe"] = {
        "status": "ok", "summary": {"headline": 0.5}, "findings": [], "config": {},
        "rows": [{"metric": "odd_metric", "label_set": "x", "group_by": "overall",
                  "group": "all", "value": 0.123456, "ci_low": 0.1, "ci_high": 0.2, "n": 7,
                  "widget": "sprocket"}]}
    text = _render(results, tmp_path)
    section = text[text.index('id="probe-third_party_probe"'):]
    assert "Third party probe" in section and "odd_metric" in section
    assert "sprocket" in section and "0.123" in section  # extra keys and values as a table


def test_error_and_skipped_statuses(results, tmp_path):
    results["probes"]["celebrity_identification"] = {
        "status": "error", "summary": {}, "rows": [], "findings": [], "config": {},
        "message": "RuntimeError: out of memory in batch 3"}
    results["probes"]["retrieval_skew"] = {"status": "skipped", "summary": {}, "rows": [],
                                           "findings": [], "config": {},
                                           "message": "needs a fairface source"}
    text = _render(results, tmp_path)
    celeb = text[text.index('id="probe-celebrity_identification"'):]
    assert "This probe failed" in celeb[:2000] and "out of memory in batch 3" in celeb[:2000]
    skew = text[text.index('id="probe-retrieval_skew"'):]
    assert "Skipped" in skew[:2000] and "needs a fairface source" in skew[:2000]


def test_charts_show_the_rows_values_unchanged(results, tmp_path):
    text = _render(results, tmp_path)
    rows = results["probes"]["fairface_label_bias"]["rows"]
    want = [r["value"] for r in rows if r["label_set"] == "default" and r["group_by"] == "race"
            and r["metric"] == "non_human_rate"]
    # The legend names the metric by its declared title (issue 16, point 7).
    traces = [t for b in _json_blocks(text) for t in b["data"] if t.get("name") ==
              "Non-human labels" and t["x"][:1] == ["East Asian"]]
    assert traces and traces[0]["y"] == want
    plus = traces[0]["error_y"]["array"]
    assert plus == pytest.approx([r["ci_high"] - r["value"] for r in rows
                                  if r["label_set"] == "default" and r["group_by"] == "race"
                                  and r["metric"] == "non_human_rate"])


def test_csv_link_holds_the_tidy_rows(results, tmp_path):
    text = _render(results, tmp_path)
    link = re.search(r'download="celebrity_identification.csv" href="([^"]+)"', text)[1]
    body = unquote(html.unescape(link).split(",", 1)[1])
    got = list(csv.DictReader(io.StringIO(body)))
    rows = results["probes"]["celebrity_identification"]["rows"]
    assert len(got) == len(rows)
    assert [float(g["value"]) for g in got] == [r["value"] for r in rows]
    assert got[0]["candidates"] == str(rows[0]["candidates"])


def test_published_reference_is_labelled(results, tmp_path):
    text = _render(results, tmp_path)
    assert "published reference (zero-shot CLIP ViT-L/14)" in text
    assert "never published" in text
    for pct in ("14.4%", "4.9%", "16.5%", "9.8%", "59.2%", "43.3%", "42.2%", "2.3%"):
        assert pct in text


def test_examples_only_on_request(results, tmp_path):
    thumb = "data:image/jpeg;base64," + base64.b64encode(b"\xff\xd8\xff fake").decode()
    results["probes"]["fairface_label_bias"]["examples"] = [
        {"thumbnail": thumb, "caption": "val/1.jpg"},
        {"thumbnail": "https://example.com/face.jpg", "caption": "remote"}]
    default = _render(results, tmp_path)
    assert thumb not in default and "Contains images of people" not in default
    shown = _render(results, tmp_path, include_examples=True)
    assert thumb in shown and "Contains images of people" in shown
    assert "example.com" not in shown  # only inline data: thumbnails are ever shown


def test_thumbnail_is_a_small_inline_jpeg_the_report_accepts(results, tmp_path):
    from PIL import Image

    from audit.thumbnails import thumbnail

    uri = thumbnail(Image.new("RGB", (640, 480), (200, 10, 10)))
    raw = base64.b64decode(uri.split(",", 1)[1])
    assert Image.open(io.BytesIO(raw)).size == (96, 72)
    results["probes"]["retrieval_skew"]["examples"] = [{"thumbnail": uri, "caption": "c"}]
    assert uri in _render(results, tmp_path, include_examples=True)


def test_minimal_results_render_and_write_is_atomic(tmp_path):
    out = render_report({"schema_version": 1, "probes": {}}, tmp_path / "a" / "r.html")
    assert out.read_text().startswith("<!doctype html>")
    assert [p.name for p in out.parent.iterdir()] == ["r.html"]
    assert out.stat().st_mode & 0o044  # others may read it: it is made to be shared


def test_render_compare(tmp_path):
    row = {"probe": "fairface_label_bias", "metric": "crime_rate", "label_set": "default",
           "group_by": "race", "group": EVIL, "slice": f"race: {EVIL}", "base": 0.1, "cand": 0.3,
           "delta": 0.2,
           "beyond_ci": True, "direction": "worse"}
    comparison = {"base": {"model": {"spec": "a"}}, "cand": {"model": {"spec": "b"}},
                  "rows": [row], "regressions": 1, "improvements": 0}
    text = (render_compare(comparison, tmp_path / "c.html")).read_text()
    assert "<script>alert(1)" not in _without_plotly(text)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text and EVIL in html.unescape(text)
    assert "worse" in text


# --- compare -------------------------------------------------------------------------------

def _set(results, probe, value, ci=0.01, **match):
    for r in results["probes"][probe]["rows"]:
        if all(r.get(k) == v for k, v in match.items()):
            r.update(value=value, ci_low=value - ci, ci_high=value + ci)
            return r
    raise AssertionError(f"no row {match}")


def test_compare_orders_regressions_first(results_copy):
    from audit.compare import compare

    base, cand = results_copy(), results_copy()
    race = dict(label_set="default", group_by="race", group="Black")
    _set(base, "fairface_label_bias", 0.10, metric="crime_rate", **race)
    _set(cand, "fairface_label_bias", 0.30, metric="crime_rate", **race)       # up: worse
    _set(base, "celebrity_identification", 0.5, metric="top1_accuracy", candidates=100)
    _set(cand, "celebrity_identification", 0.7, metric="top1_accuracy", candidates=100)
    _set(base, "prompt_sensitivity", 0.6, metric="accuracy", task="race", template="ensemble")
    _set(cand, "prompt_sensitivity", 0.8, metric="accuracy", task="race", template="ensemble")
    _set(base, "distribution_shift", 0.85, ci=0.2, metric="accuracy", corruption="clean")
    _set(cand, "distribution_shift", 0.80, ci=0.2, metric="accuracy", corruption="clean")
    cand["probes"]["retrieval_skew"]["rows"].pop()                             # base only
    c = compare(base, cand)
    top = [(r["probe"], r["metric"], r["direction"], r["beyond_ci"]) for r in c["rows"][:3]]
    assert ("fairface_label_bias", "crime_rate", "worse", True) in top[:2]
    assert ("celebrity_identification", "top1_accuracy", "worse", True) in top[:2]
    assert top[2][2] == "worse" and top[2][3] is False  # the overlapping-CI drop comes next
    assert c["regressions"] == 2 and c["improvements"] == 1 and c["only_base"] == 1
    crime = next(r for r in c["rows"] if r["metric"] == "crime_rate" and r["group"] == "Black"
                 and r["label_set"] == "default")
    assert crime["base"] == 0.10 and crime["cand"] == 0.30
    assert crime["delta"] == pytest.approx(0.20)
    better = next(r for r in c["rows"] if r.get("template") == "ensemble" and r.get("task") ==
                  "race")
    assert better["direction"] == "better"
    unchanged = [r for r in c["rows"] if r["direction"] in ("unchanged", "n/a")]
    assert len(c["rows"]) == len(unchanged) + 4


@pytest.mark.parametrize("probe, metric, worse", [
    ("fairface_label_bias", "denigration_rate", "up"),
    ("fairface_label_bias", "non_human_rate_ratio", "up"),
    ("retrieval_skew", "ndkl", "up"), ("retrieval_skew", "max_skew", "up"),
    ("distribution_shift", "corruption_error", "up"), ("distribution_shift", "mce", "up"),
    ("celebrity_identification", "top5_accuracy", "up"),
    ("prompt_sensitivity", "accuracy", "down"), ("fairface_label_bias", "race_accuracy", None),
    ("distribution_shift", "effective_robustness", "down"),
    ("prompt_sensitivity", "accuracy_std", "up"), ("x", "seconds", None),
])
def test_worse_direction_is_the_probes_declaration(probe, metric, worse):
    from audit.compare import meta_of, metric_of

    assert metric_of(meta_of({}, probe), metric)["worse"] == worse


def test_print_compare(results_copy, capsys):
    from rich.console import Console

    from audit.compare import compare
    from reports.compare import print_compare

    base, cand = results_copy(), results_copy()
    _set(cand, "fairface_label_bias", 0.9, metric="non_human_rate", label_set="default",
         group_by="race", group="White")
    print_compare(compare(base, cand), Console(width=160, color_system=None))
    out = capsys.readouterr().out
    assert "WORSE" in out and " points" in out and "1 regression(s)" in out
    assert "race: White · label_set=default" in out


def test_compare_html_shows_regressions_and_gates(results_copy, tmp_path):
    from audit.compare import compare

    base, cand = results_copy(), results_copy()
    _set(cand, "retrieval_skew", 5.0, metric="ndkl", group_by="gender", group="evil", k=10)
    c = compare(base, cand)
    c["gates"] = [{"name": "skew gate", "passed": False, "value": 5.0, "threshold": 0.3,
                   "detail": "max"}]
    text = render_compare(c, tmp_path / "compare.html").read_text()
    regress = text[text.index('id="regressions"'):text.index('id="improvements"')]
    assert "NDKL of the ranking" in regress and "+4" in regress
    assert "skew gate" in text and "FAILED" in text


def test_retrieval_headline_says_ensemble_and_range(results, tmp_path):
    """Per-wording rows (issue 15) give the 'ensemble of K wordings; range' line and stay out of
    the ensemble charts."""
    rows = results["probes"]["retrieval_skew"]["rows"]
    for r in list(rows):
        r["template"] = "ensemble"
    rows += [{**rows[0], "template": w, "value": v} for w, v in (("{}", 0.125), ("a {}", 0.75))]
    text = _render(results, tmp_path)
    skew = text[text.index('id="probe-retrieval_skew"'):]
    assert "ensemble of 2 wordings; range\n0.12–0.75" in skew or "ensemble of 2 wordings; range 0.12–0.75" in skew
