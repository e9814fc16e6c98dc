"""A third-party probe installed through the real `clip_audit.probes` entry-point path gets its
title, its report partial, compare directions and gates, with no change to audit/ or reports/.

The plugin lives in tests/plugin_widget; `importlib.metadata.entry_points` is patched to return
a real EntryPoint pointing at it, exactly what an installed package's metadata would give.
"""
import importlib.metadata
import json
import types

import pytest

from audit import registry
from audit.policy import evaluate, parse_policy
from audit.runner import run_probes
from audit.settings import make_config

EP = importlib.metadata.EntryPoint(name="widget", value="tests.plugin_widget.probe:WidgetProbe",
                                   group=registry.ENTRY_POINT_GROUP)


@pytest.fixture
def plugin(monkeypatch):
    """The registry as a fresh process with the plugin installed would build it."""
    registry._load_all()  # the built-ins, before the plugin is "installed"
    real = importlib.metadata.entry_points
    monkeypatch.setattr(importlib.metadata, "entry_points",
                        lambda **kw: [EP] if kw.get("group") == registry.ENTRY_POINT_GROUP
                        else real(**kw))
    monkeypatch.setattr(registry, "_PROBES", dict(registry._PROBES))
    monkeypatch.setattr(registry, "_loaded", False)
    return registry.get_probe("widget_audit")


def _run(cls, gadgets, polish) -> dict:
    """results.json's probes section, through the runner's own run_probes."""
    # the way --set reaches it: text, converted by the plugin Config's own field types
    cfg = make_config(cls, {"gadgets": json.dumps(list(gadgets)), "polish": json.dumps(polish)})
    ctx = types.SimpleNamespace(has=lambda role: True)
    out, errors, _ = run_probes(ctx, {"widget_audit": cfg})
    assert not errors and out["widget_audit"]["status"] == "ok"
    return {"schema_version": 1, "probes": out}


def test_plugin_probe_is_described_compared_gated_and_rendered(plugin, tmp_path):
    from reports.compare import compare
    from reports.render import render_report

    assert plugin.__module__ == "tests.plugin_widget.probe"
    base = _run(plugin, [1] * 40 + [0] * 360, polish=1.0)   # 10% gadgets
    cand = _run(plugin, [1] * 160 + [0] * 240, polish=0.5)  # 40% gadgets, less polish
    meta = cand["probes"]["widget_audit"]["meta"]
    assert meta["title"] == "Widget gadgetry" and meta["metrics"]["gadget_rate"]["worse"] == "up"

    c = compare(base, cand)
    assert c["titles"]["widget_audit"] == "Widget gadgetry"
    by_metric = {r["metric"]: r for r in c["rows"]}
    assert by_metric["gadget_rate"]["direction"] == "worse" and by_metric["gadget_rate"]["beyond_ci"]
    assert by_metric["gadget_rate"]["metric_title"] == "Gadget outcomes"
    assert by_metric["polish"]["direction"] == "worse"  # down is worse for polish
    assert c["regressions"] == 1  # polish has no CI, so it is not beyond noise

    # `widget` is a top-level gate filter because the plugin declares it in row_keys.
    policy = parse_policy('[[gate]]\nname = "gadgets"\nmetric = "widget_audit.gadget_rate"\n'
                          'widget = "blue"\nmax = 0.2\nmax_increase = 0.05\n')
    absolute, relative = evaluate(policy, cand, baseline=base)
    assert absolute["passed"] is False and absolute["value"] == pytest.approx(0.4)
    assert relative["passed"] is False and relative["value"] == pytest.approx(0.3)
    assert evaluate(policy, base, baseline=base)[0]["passed"] is True

    html = render_report(cand, tmp_path / "report.html").read_text(encoding="utf-8")
    assert "Widget gadgetry" in html
    assert "Widget partial says: Widget gadgetry has 2 rows." in html


def test_plugin_row_key_is_not_a_gate_key_without_the_plugin():
    """Without the plugin installed, `widget` is an unknown gate key (typos still fail)."""
    from audit.errors import UserError

    if "widget_audit" in registry.list_probes():
        pytest.skip("the plugin is installed in this environment")
    with pytest.raises(UserError, match="unknown key"):
        parse_policy('[[gate]]\nname = "g"\nmetric = "widget_audit.gadget_rate"\n'
                     'widget = "blue"\nmax = 0.2\n')
