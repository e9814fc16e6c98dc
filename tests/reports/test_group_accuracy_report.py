"""group_accuracy's report partial in headless Chromium: the probe's own rows (run on planted
embeddings, tests/probes/test_group_accuracy.py) rendered beside the other probes' sections;
every chart drawn, the worst group's bar highlighted, its findings and the metric definitions
shown, no console error. The partial computes nothing: what it shows is in the rows."""
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parents[1] / "probes"))
from test_browser import Browser, _eval, _open, _problems  # noqa: E402
from screenshot import find_chromium  # noqa: E402

from audit.registry import probe_meta  # noqa: E402
from reports.charts import HIGHLIGHT  # noqa: E402
from reports.render import render_report  # noqa: E402


@pytest.fixture(scope="module")
def page(tmp_path_factory, results_factory):
    from probes.group_accuracy import GroupAccuracy
    from test_group_accuracy import CFG, planted

    binary = find_chromium()
    if binary is None:
        pytest.skip("chromium is not installed (apt-get install -y chromium)")
    result = GroupAccuracy().run(planted(), CFG)
    results = results_factory()
    results["probes"]["group_accuracy"] = {**result.to_json(), "meta": probe_meta(GroupAccuracy)}
    out = tmp_path_factory.mktemp("group-report") / "report.html"
    render_report(results, out)
    profile = tempfile.mkdtemp(prefix="chromium-profile-")
    browser = Browser(binary, profile)
    try:
        yield browser, _open(browser, out.as_uri()), results["probes"]["group_accuracy"], out
    finally:
        browser.close()
        shutil.rmtree(profile, ignore_errors=True)


SECTION = "document.getElementById('probe-group_accuracy')"


def test_the_section_opens_clean_and_draws_every_chart(page):
    browser, session, probe, _ = page
    assert _problems(browser.events) == []
    total = _eval(browser, session, f"{SECTION}.querySelectorAll('[data-figure]').length")
    drawn = _eval(browser, session, f"Array.from({SECTION}.querySelectorAll('[data-figure]'))"
                  ".filter(d => d.classList.contains('js-plotly-plot') && d.querySelector('.main-svg')).length")
    # per column (region, income): top-1, top-5 and the gaps
    assert total == 6 and drawn == total


def test_the_worst_group_bar_is_highlighted(page):
    browser, session, probe, _ = page
    worst = next(r for r in probe["rows"] if r["metric"] == "acc_top5_wg" and r["group_by"] == "region")
    marked = _eval(browser, session, f"Array.from({SECTION}.querySelectorAll('.js-plotly-plot'))"
                   ".filter(d => d.data[0].type === 'bar' && Array.isArray(d.data[0].marker.color))"
                   f".map(d => d.data[0].x.filter((x, i) => d.data[0].marker.color[i] === '{HIGHLIGHT}'))")
    assert [worst["worst_group"]] in marked
    text = _eval(browser, session, f"{SECTION}.innerText")
    assert f"Worst group (vermillion, hatched): {worst['worst_group']}" in text


def test_findings_and_metric_definitions_are_shown(page):
    browser, session, probe, _ = page
    text = _eval(browser, session, f"{SECTION}.innerText")
    assert probe["findings"] and all(f["message"] in text for f in probe["findings"])
    assert "acc_top5_wg" in text and "acc_wg" in text and "publishes no numbers" in text
    strips = _eval(browser, session, f"{SECTION}.querySelectorAll('.wording-strip').length")
    assert strips == len([f for f in probe["findings"] if f["evidence"].get("per_wording")])
