"""Open a rendered report in headless Chromium, offline, and check what a recipient would see.

Chromium is driven over the DevTools protocol on `--remote-debugging-pipe` (stdlib only): we
record every network request and console message while the page loads, then ask the DOM
whether each chart was drawn. Skips only when no chromium binary is installed.
"""
import json
import os
import queue
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from screenshot import OFFLINE_FLAGS, WIDTH, find_chromium  # noqa: E402

from reports.render import render_report  # noqa: E402

XSS = '<script>window.__pwned=1</script><img src=x onerror="window.__pwned=2">'


class Browser:
    """Minimal DevTools client: fd 3 carries our commands in, fd 4 events out, NUL-separated."""

    def __init__(self, binary: str, profile: str):
        to_browser, self._in = os.pipe()
        self._out, from_browser = os.pipe()

        def wire():  # in the child: the pipe protocol expects exactly fds 3 and 4
            a, b = os.dup(to_browser), os.dup(from_browser)  # dodge clashes with 3/4
            os.dup2(a, 3)
            os.dup2(b, 4)

        self.proc = subprocess.Popen(
            [binary, *OFFLINE_FLAGS, "--remote-debugging-pipe", f"--user-data-dir={profile}",
             f"--window-size={WIDTH},900", "about:blank"],
            preexec_fn=wire, pass_fds=(3, 4),
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(to_browser)
        os.close(from_browser)
        self.events, self._replies, self._next = [], queue.Queue(), 0
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        buf = b""
        while chunk := os.read(self._out, 1 << 16):
            buf += chunk
            *messages, buf = buf.split(b"\0")
            for raw in messages:
                msg = json.loads(raw)
                (self._replies.put if "id" in msg else self.events.append)(msg)

    def send(self, method, params=None, *, session=None, timeout=30):
        self._next += 1
        msg = {"id": self._next, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self._in, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            reply = self._replies.get(timeout=max(0.1, deadline - time.monotonic()))
            if reply["id"] == self._next:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})

    def wait_for(self, method, *, timeout=30):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(e.get("method") == method for e in self.events):
                return
            time.sleep(0.05)
        raise TimeoutError(method)

    def close(self):
        try:
            self.send("Browser.close", timeout=5)
        except Exception:
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def _open(browser, url):
    target = browser.send("Target.createTarget", {"url": "about:blank"})["targetId"]
    session = browser.send("Target.attachToTarget",
                           {"targetId": target, "flatten": True})["sessionId"]
    for domain in ("Page", "Runtime", "Log", "Network"):
        browser.send(f"{domain}.enable", session=session)
    browser.send("Emulation.setDeviceMetricsOverride", {"width": WIDTH, "height": 900,
                 "deviceScaleFactor": 1, "mobile": False}, session=session)
    browser.send("Page.navigate", {"url": url}, session=session)
    browser.wait_for("Page.loadEventFired")
    time.sleep(1.0)  # let plotly finish its async layout passes
    return session


def _eval(browser, session, expr):
    res = browser.send("Runtime.evaluate", {"expression": expr, "returnByValue": True},
                       session=session)
    return res["result"].get("value")


def _problems(events):
    """Console errors/warnings, uncaught exceptions and CSP reports, as readable lines."""
    out = []
    for e in events:
        m, p = e.get("method"), e.get("params", {})
        if m == "Runtime.consoleAPICalled" and p.get("type") in ("error", "warning", "assert"):
            out.append("console: " + " ".join(str(a.get("value", a.get("description")))
                                             for a in p.get("args", [])))
        elif m == "Runtime.exceptionThrown":
            out.append("exception: " + json.dumps(p.get("exceptionDetails", {}))[:500])
        elif m == "Log.entryAdded" and p["entry"].get("level") in ("error", "warning"):
            out.append(f"log[{p['entry'].get('source')}]: {p['entry'].get('text')}")
    return out


@pytest.fixture(scope="module")
def loaded_report(tmp_path_factory, results_factory):
    binary = find_chromium()
    if binary is None:
        pytest.skip("chromium is not installed (apt-get install -y chromium)")
    results = results_factory()
    rows = results["probes"]["fairface_label_bias"]["rows"]
    rows[1]["group"] = XSS  # the first race row: appears in a chart, its table and CSV
    results["probes"]["fairface_label_bias"]["summary"]["worst_group"] = XSS
    out = tmp_path_factory.mktemp("browser") / "report.html"
    render_report(results, out)
    profile = tempfile.mkdtemp(prefix="chromium-profile-")
    browser = Browser(binary, profile)
    try:
        session = _open(browser, out.as_uri())
        yield browser, session, out, results
    finally:
        browser.close()
        shutil.rmtree(profile, ignore_errors=True)


def test_no_console_errors(loaded_report):
    browser, _, _, _ = loaded_report
    assert _problems(browser.events) == []


def test_no_request_leaves_the_file(loaded_report):
    browser, _, out, _ = loaded_report
    urls = [e["params"]["request"]["url"] for e in browser.events
            if e.get("method") == "Network.requestWillBeSent"]
    assert out.as_uri() in urls  # the recorder works: it saw the page itself
    assert [u for u in urls if not u.startswith(("file:", "data:", "blob:"))] == []
    assert [u for u in urls if u.startswith("file:") and u != out.as_uri()] == []


def test_every_chart_rendered(loaded_report):
    browser, session, _, _ = loaded_report
    total = _eval(browser, session, "document.querySelectorAll('[data-figure]').length")
    drawn = _eval(browser, session, "Array.from(document.querySelectorAll('[data-figure]'))"
                  ".filter(d => d.classList.contains('js-plotly-plot')"
                  " && d.querySelector('.main-svg')).length")
    assert total >= 15  # five probes' partials, several charts each
    assert drawn == total


def test_race_by_gender_heatmaps_are_drawn(loaded_report):
    """Issue 16.5: one heatmap per harm rate, its cells the crossings' rates."""
    browser, session, _, results = loaded_report
    cells = _eval(browser, session, "Array.from(document.querySelectorAll('#probe-fairface_label_bias .js-plotly-plot'))"
                  ".filter(d => d.data && d.data[0].type === 'heatmap')"
                  ".map(d => [d.data[0].x.length, d.data[0].y.length, d.querySelectorAll('.hm').length])")
    assert len(cells) == 3, cells
    assert all(x == 7 and y == 2 and drawn >= 1 for x, y, drawn in cells), cells


def test_person_class_gaps_are_drawn_beside_the_published(loaded_report):
    """Issue 17.1: one gap chart per attribute (gender presentation carries FACET's Table 4
    markers), bars with CI whiskers, and the recall chart."""
    browser, session, _, _ = loaded_report
    charts = _eval(browser, session, "Array.from(document.querySelectorAll('#probe-person_class_bias .js-plotly-plot'))"
                   ".map(d => [d.data.map(t => t.type), d.data[0].x.length, !!d.querySelector('.main-svg'),"
                   " d.data[0].error_y && d.data[0].error_y.array.filter(v => v !== null).length])")
    assert len(charts) == 3, charts
    gender, tone, recall = charts
    assert gender[0] == ["bar", "scatter"] and gender[1] == 4 and gender[3] == 4  # the reference markers
    assert tone[0] == ["bar"] * 3 and all(c[2] for c in charts)


def test_a_finding_draws_its_wording_strip(loaded_report):
    """Issue 15.5: k/K and one dot per wording for the group (and a ring for the rest)."""
    browser, session, _, _ = loaded_report
    strip = _eval(browser, session, "(() => { const s = document.querySelector('.wording-strip');"
                  " return s && [s.innerText, s.querySelectorAll('circle.held, circle.group').length,"
                  " s.querySelectorAll('circle.rest').length, s.querySelector('svg').getBoundingClientRect().width]; })()")
    assert strip is not None
    text, dots, rings, width = strip
    assert "3/4 wordings" in text and dots == 4 and rings == 4 and width > 40


def test_summary_lists_findings(loaded_report):
    browser, session, _, results = loaded_report
    text = _eval(browser, session, "document.getElementById('findings')"
                 ".nextElementSibling.innerText")
    for probe in results["probes"].values():
        for f in probe["findings"]:
            assert f["message"] in text


def test_injected_label_did_not_execute(loaded_report):
    browser, session, _, _ = loaded_report
    assert _eval(browser, session, "typeof window.__pwned") == "undefined"
    assert _eval(browser, session, "document.body.innerText.includes('<script>window.__pwned')")


def test_screenshot(loaded_report, tmp_path):
    """Saves a 1366px-wide picture; copied to $AUDIT_TEST_ARTIFACTS when that is set."""
    browser, session, _, _ = loaded_report
    shot = browser.send("Page.captureScreenshot", {"format": "png", "captureBeyondViewport":
                        True, "clip": {"x": 0, "y": 0, "width": WIDTH, "height": 3000,
                                       "scale": 1}}, session=session)
    import base64

    png = tmp_path / "report.png"
    png.write_bytes(base64.b64decode(shot["data"]))
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 50_000
    if os.environ.get("AUDIT_TEST_ARTIFACTS"):
        dest = Path(os.environ["AUDIT_TEST_ARTIFACTS"])
        dest.mkdir(parents=True, exist_ok=True)
        shutil.copy(png, dest / "report.png")


def test_compare_page_opens_clean_and_shows_titles(tmp_path, results_factory):
    from audit.compare import compare
    from reports.render import render_compare

    binary = find_chromium()
    if binary is None:
        pytest.skip("chromium is not installed (apt-get install -y chromium)")
    base, cand = results_factory(0), results_factory(0)
    row = next(r for r in cand["probes"]["fairface_label_bias"]["rows"]
               if r["metric"] == "crime_rate" and r["group_by"] == "race")
    row.update(value=0.9, ci_low=0.85, ci_high=0.95)
    comparison = compare(base, cand)
    # A moved image with its thumbnail (`audit compare --include-examples`) must show, inline.
    from PIL import Image

    from audit.thumbnails import thumbnail
    digest = "ab" * 32
    comparison["paired"] = {"used": True, "note": None, "probes": {}, "images": {"fairface": {digest: {"race": "Black"}}},
                            "moved": [{"probe": "fairface_label_bias", "column": "x", "source": "fairface",
                                       "title": "Crime-related labels", "key": {}, "into": [digest], "out_of": []}]}
    out = render_compare(comparison, tmp_path / "compare.html",
                         thumbnails={digest: thumbnail(Image.new("RGB", (64, 64), (200, 30, 30)))})
    profile = tempfile.mkdtemp(prefix="chromium-profile-")
    browser = Browser(binary, profile)
    try:
        session = _open(browser, out.as_uri())
        assert _problems(browser.events) == []
        text = _eval(browser, session, "document.getElementById('regressions')"
                     ".nextElementSibling.innerText")
        assert "Crime-related labels" in text and "90.0%" in text and "crime_rate" not in text
        shown = _eval(browser, session, "[...document.querySelectorAll('img.thumb')]"
                      ".map(i => i.complete && i.naturalWidth).join(',')")
        assert shown == "64"
    finally:
        browser.close()
        shutil.rmtree(profile, ignore_errors=True)


def test_table_page_sorts_by_a_clicked_header(tmp_path, results_factory):
    """`audit table`'s page opens clean offline, and a click on a header sorts the runs by that
    column (again: the other way)."""
    from audit.table import build_table
    from reports.render import render_table

    binary = find_chromium()
    if binary is None:
        pytest.skip("chromium is not installed (apt-get install -y chromium)")
    table = build_table([(f"run-{seed}", results_factory(seed)) for seed in range(3)])
    out = render_table(table, tmp_path / "table.html")
    cid = "fairface_label_bias.non_human_rate[label_set=default]"
    col = 4 + [c["id"] for c in table["columns"]].index(cid)
    by_value = [r["name"] for r in sorted(table["runs"], key=lambda r: r["cells"][cid]["value"])]
    assert by_value != [r["name"] for r in table["runs"]]  # sorting has something to do
    click = f"document.querySelector('#runs-table th[data-col=\"{col}\"] button').click()"
    order = "Array.from(document.querySelectorAll('#runs-table tbody tr')).map(r => r.cells[0].textContent)"
    profile = tempfile.mkdtemp(prefix="chromium-profile-")
    browser = Browser(binary, profile)
    try:
        session = _open(browser, out.as_uri())
        assert _problems(browser.events) == []
        urls = [e["params"]["request"]["url"] for e in browser.events
                if e.get("method") == "Network.requestWillBeSent"]
        assert urls == [out.as_uri()]
        _eval(browser, session, click)
        assert _eval(browser, session, order) == by_value
        _eval(browser, session, click)
        assert _eval(browser, session, order) == by_value[::-1]
        header = f"document.querySelector('#runs-table th[data-col=\"{col}\"]')"
        assert _eval(browser, session, header + ".getAttribute('aria-sort')") == "descending"
        assert "Non-human labels" in _eval(browser, session, header + ".innerText")
        assert _problems(browser.events) == []
    finally:
        browser.close()
        shutil.rmtree(profile, ignore_errors=True)
