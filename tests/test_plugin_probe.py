"""Done-when of issue 16: a probe installed through the `clip_audit.probes` entry point gets its
title, its partial, compare directions and gates, with nothing in audit/ or reports/ naming it.
The entry point is mocked at importlib.metadata, so the registry's real loading path runs."""
import importlib.metadata as md

import pytest

from audit import registry


@pytest.fixture
def plugin(monkeypatch):
    ep = md.EntryPoint(name="widget", value="tests.plugin_probe:WidgetProbe",
                       group=registry.ENTRY_POINT_GROUP)
    registry.list_probes()  # built-ins into the real registry first: modules import only once
    real = md.entry_points
    monkeypatch.setattr(md, "entry_points", lambda **kw: md.EntryPoints([ep])
                        if kw.get("group") == registry.ENTRY_POINT_GROUP else real(**kw))
    monkeypatch.setattr(registry, "_loaded", False)
    monkeypatch.setattr(registry, "_PROBES", dict(registry._PROBES))
    yield registry.get_probe("widget_probe")


def _results(harm):
    from tests.reports.conftest import make_results

    from audit.runner import ProbeContext, run_probes

    r = make_results()
    cls = registry.get_probe("widget_probe")
    ctx = ProbeContext(embedder=None, sources={}, seed=0, device="cpu")
    probes, errors, _ = run_probes(ctx, {"widget_probe": cls.Config(harm=harm)})
    assert not errors
    r["probes"].update(probes)
    return r


def test_plugin_meta_report_compare_and_gates(plugin, tmp_path):
    from audit import results
    from audit.compare import compare
    from audit.policy import check_policy, evaluate, parse_policy
    from reports.render import render_report

    base, cand = _results(0.10), _results(0.30)
    results.validate(results.jsonable(cand))
    meta = cand["probes"]["widget_probe"]["meta"]
    assert meta["title"] == "Widget harm" and meta["metrics"]["harm_rate"]["worse"] == "up"

    html = render_report(cand, tmp_path / "r.html").read_text()
    assert 'id="widget-partial"' in html and "Widget partial: Widget harm, 1 row(s)" in html
    # its own published numbers, declared beside its partial, in its metric's unit
    assert "published reference (Widget et al.): 4.2%" in html

    c = compare(base, cand)
    [row] = [r for r in c["rows"] if r["probe"] == "widget_probe"]
    assert row["direction"] == "worse" and row["significant"] and row["title"] == "Harmful widget labels"

    policy = parse_policy('[[gate]]\nname = "w"\nmetric = "widget_probe.harm_rate"\n'
                          'widget = "w1"\nmax = 0.2\nmax_increase = 0.05\n')
    check_policy(policy, {"widget_probe": meta})
    absolute, relative = evaluate(policy, cand, baseline=base)
    assert absolute["outcome"] == "fail" and relative["outcome"] == "fail"
    assert evaluate(policy, base, baseline=base)[0]["outcome"] == "pass"
