"""Issue 16, point 7: a real demo run's report shows metrics by their declared titles and
values in their units; the raw ids (`non_human_rate`, the group `max/min`) stay in the CSVs."""
import json
import re
from html.parser import HTMLParser

from reports.render import fmt_ci, fmt_delta, fmt_value


class TableText(HTMLParser):
    """The text of every <table> (including those inside <details>), scripts aside."""

    def __init__(self):
        super().__init__()
        self.depth, self.skip, self.cells = 0, False, []

    def handle_starttag(self, tag, attrs):
        self.depth += tag == "table"
        self.skip = self.skip or tag in ("script", "style")

    def handle_endtag(self, tag):
        self.depth -= tag == "table"
        self.skip = self.skip and tag not in ("script", "style")

    def handle_data(self, data):
        if self.depth and not self.skip and data.strip():
            self.cells.append(data.strip())


def _table_text(page: str) -> list[str]:
    parser = TableText()
    parser.feed(page)
    return parser.cells


def test_demo_report_tables_show_titles_and_units_not_ids(demo_run, tmp_path):
    from audit.cli import main

    out = tmp_path / "report.html"
    assert main(["report", str(demo_run), "-o", str(out)]) == 0
    results = json.loads((demo_run / "results.json").read_text())
    page = out.read_text(encoding="utf-8")
    cells = _table_text(page)
    text = "\n".join(cells)
    metas = {n: p["meta"] for n, p in results["probes"].items()}
    ids = {m for meta in metas.values() for m in meta["metrics"]}
    # Ids with an underscore (or mce/ndkl) cannot be an ordinary English word in a cell.
    raw = [m for m in ids if "_" in m or m in ("mce", "ndkl")]
    leaks = {m: [c for c in cells if re.search(rf"(?<![\w.]){re.escape(m)}(?!\w)", c)] for m in raw}
    assert {m: c for m, c in leaks.items() if c} == {}
    assert "max/min" not in text
    headline = [r for r in results["probes"]["fairface_label_bias"]["rows"]
                if r["metric"] == "non_human_rate" and r["group_by"] == "overall"
                and r["label_set"] == "default"][0]
    assert "Non-human labels" in cells and f"{100 * headline['value']:.1f}%" in cells
    assert all(meta["title"] in page for meta in metas.values())
    assert "Mean corruption error" in cells and "MaxSkew of the top k" in cells
    assert "non_human_rate" in page  # in the CSV downloads, which keep the raw ids


def test_one_format_per_unit():
    assert fmt_value(0.1234, "fraction") == "12.3%"
    assert fmt_value(0.012, "points") == "+1.2 points"
    assert fmt_value(-0.267, "points") == "-26.7 points"
    assert fmt_value(1.95192, "ratio") == "1.95" and fmt_value(35.1, "number") == "35.1"
    assert fmt_value(2300, "count") == "2,300" and fmt_value(None, "fraction") == "–"
    assert fmt_delta(0.012, "fraction") == "+1.2 points" and fmt_delta(0.5, "number") == "+0.5"
    assert fmt_ci(0.009, 0.019, "fraction") == "0.9% to 1.9%"
    assert fmt_ci(-0.325, -0.202, "points") == "-32.5 to -20.2 points"
    assert fmt_ci(2.82, None, "ratio") == "2.82 to –" and fmt_ci(None, None) == "–"


def test_summary_keys_are_spelled_with_titles():
    from reports.render import summary_items

    meta = {"metrics": {"non_human_rate": {"title": "Non-human labels", "unit": "fraction"}}}
    items = summary_items({"non_human_rate": 0.0135, "non_human_rate_ci_low": 0.0085,
                           "non_human_rate_ci_high": 0.019, "worst_group_non_human_rate": "race: Black",
                           "images": 2000}, meta)
    assert items == [{"label": "Non-human labels", "value": "1.4% (95% CI 0.9% to 1.9%)"},
                     {"label": "worst group Non-human labels", "value": "race: Black"},
                     {"label": "images", "value": 2000}]
