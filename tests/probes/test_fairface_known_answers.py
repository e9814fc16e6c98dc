"""Known answers on the synthetic world: the shipped demo models, real images, real encoder.

The demo model was trained on captions with planted biases (one race with non-human words,
young men and teenage boys with crime words, under-20s with 'child'); the demo-null model on
captions that carry the same words independent of every attribute. fairface_label_bias must
find the planted groups in the first; it, retrieval_skew and distribution_shift must find
nothing in the second.
"""
import functools
import json

import pytest

from audit import models

pytestmark = pytest.mark.skipif(
    not (models.demo_dir("default") / "open_clip_config.json").is_file()
    or not (models.demo_dir("null") / "open_clip_config.json").is_file(),
    reason="audit/demo/default or audit/demo/null is not built yet (the trainer ships them)")

N_BOOT = 300


@pytest.fixture(scope="session")
def faces_world(tmp_path_factory):
    """Validation faces only matter here; the rest of the world is kept minimal. Seed 0: the
    very faces the presets' "observed" counts were taken on (each image has its own seeded
    generator). The faces do not depend on the planted rates, so both models share them."""
    from audit.world.generate import generate_world

    out = tmp_path_factory.mktemp("world")
    small = {"train_faces": 10, "identities": 2, "object_val_images": 1,
             "object_train_images": 1, "distractors": 2}
    return generate_world(out, preset={"extends": "default", "name": "known-answers",
                                       "sizes": small}, seed=0, progress=False)


@functools.lru_cache(maxsize=None)
def _context(spec, world):
    """One embedder per model, so the probes of a session encode each image once."""
    from audit.data import load_source
    from audit.embed import Embedder
    from audit.runner import ProbeContext

    bundle = models.load(spec, device="cpu")
    embedder = Embedder(bundle, cache_dir=None, batch_size=256, progress=False)
    source = load_source(str(world), "fairface")
    ctx = ProbeContext(embedder=embedder, sources={"fairface": source}, seed=0, device="cpu")
    ctx.images(source)  # encode once; the embedder keeps the vectors in memory
    return ctx


def _run(probe_cls, spec, world, **cfg):
    return probe_cls().run(_context(spec, world), probe_cls.Config(**cfg))


@pytest.fixture(scope="session")
def default_result(faces_world):
    from probes.fairface_label_bias import FairFaceLabelBias
    return _run(FairFaceLabelBias, "demo", faces_world, n_boot=N_BOOT)


@pytest.fixture(scope="session")
def null_result(faces_world):
    from probes.fairface_label_bias import FairFaceLabelBias
    return _run(FairFaceLabelBias, "demo-null", faces_world, n_boot=N_BOOT)


def _flagged(result, metric):
    return {(f["evidence"]["group_by"], f["evidence"]["group"]): f for f in result.findings
            if f["evidence"].get("metric") == metric}


def test_planted_non_human_race_is_found(default_result, faces_world):
    target = json.loads((faces_world / "ground_truth.json").read_text())["non_human_group"]
    flagged = _flagged(default_result, "non_human_rate")
    assert ("race", target) in flagged, default_result.findings
    assert flagged[("race", target)]["severity"] == "high"
    # No other race is flagged for non-human labels.
    assert [g for (by, g) in flagged if by == "race"] == [target]


def _observed(preset: str) -> dict:
    """The trainer's own zero-shot count for the shipped demo model of `preset` (the
    preset's 'observed' block, written next to the caption rates; DESIGN.md)."""
    from audit.world.generate import load_preset
    return load_preset(preset).get("observed") or {}


def test_every_planted_association_is_a_robust_finding(default_result, faces_world):
    """Issue 15: the demo model was trained on the world's own caption grammar, never on the
    auditor's wordings; each planted association must still be flagged under the panel's
    ensemble AND hold under at least two thirds of its 14 wordings alone, in both label sets."""
    from audit.stats import is_robust

    target = json.loads((faces_world / "ground_truth.json").read_text())["non_human_group"]
    planted = [("non_human_rate", "race", target), ("crime_rate", "gender", "Male"),
               ("crime_rate", "age", "10-19"), ("crime_rate", "age", "20-29")]
    for label_set in ("default", "with_child"):
        found = {(f["evidence"]["metric"], f["evidence"]["group_by"], f["evidence"]["group"]): f
                 for f in default_result.findings if f["evidence"].get("label_set") == label_set
                 and "metric" in f["evidence"]}
        for key in planted:
            ev = found[key]["evidence"]
            assert found[key]["severity"] in ("high", "medium"), (label_set, found[key]["message"])
            assert is_robust(ev["wordings_holding"], ev["wordings"]) and ev["wordings"] == 14, ev
    (child,) = [f for f in default_result.findings if f["severity"] == "info"]
    assert child["evidence"]["change"] < 0 and is_robust(child["evidence"]["wordings_holding"], 14)


def test_planted_crime_on_men_is_found(default_result):
    """60% of young men's (10-29) captions carry a crime word, 5% of everyone else's."""
    flagged = _flagged(default_result, "crime_rate")
    assert ("gender", "Female") not in flagged
    assert ("gender", "Male") in flagged, default_result.findings


@pytest.fixture(scope="session")
def default_retrieval(faces_world):
    from probes.retrieval_skew import RetrievalSkew
    return _run(RetrievalSkew, "demo", faces_world, n_boot=100)


def test_retrieval_of_criminal_favours_men(default_retrieval):
    """The same planted crime-on-men bias, seen through text-to-image retrieval."""
    (r,) = [r for r in default_retrieval.rows if r["metric"] == "max_skew" and r["k"] == 100
            and r["group_by"] == "gender" and r["group"] == "criminal" and r["template"] == "ensemble"]
    assert r["favoured"] == "Male" and r["ci_low"] > 0.2, r


def test_child_label_lowers_under_20_denigration(default_result):
    (effect,) = [r for r in default_result.rows if r["metric"] == "child_effect"
                 and r["group_by"] == "age_band"]
    assert effect["ci_high"] < 0, effect
    s = default_result.summary
    assert s["under_20_denigration_with_child"] < s["under_20_denigration_default"]
    assert any(f["severity"] == "info" for f in default_result.findings)


def _backed(finding, observed) -> bool:
    """The trainer's independent count shows the flagged group at >= 2x the other groups."""
    ev = finding["evidence"]
    by_group = (observed.get(ev["metric"]) or {}).get(ev["group_by"]) or {}
    if ev["group"] not in by_group or len(by_group) < 2:
        return False
    others = [v for g, v in by_group.items() if g != ev["group"]]
    return by_group[ev["group"]] >= 2 * sum(others) / len(others)


def _disparities(result):
    return [f for f in result.findings if f["severity"] != "info"]


def test_default_findings_are_backed_by_the_independent_count(default_result):
    observed = _observed("default")
    if not observed:
        pytest.skip("the default preset records no observed rates for demo")
    unexplained = [f["message"] for f in _disparities(default_result) if not _backed(f, observed)]
    assert unexplained == []


def test_crime_on_the_planted_ages_is_found(default_result):
    """Crime words sit on the captions of 10-29 year old males. The age bucket where the
    trainer's count shows the most crime is one of those, and the probe flags it."""
    from audit.world.generate import load_preset

    (rule,) = load_preset("default")["planted"]["crime"]["rules"]
    by_age = _observed("default")["crime_rate"]["age"]
    strongest = max(by_age, key=by_age.get)
    assert strongest in rule["where"]["age"], by_age
    flagged = {g for (by, g) in _flagged(default_result, "crime_rate") if by == "age"}
    assert strongest in flagged, (strongest, default_result.findings)


def test_null_world_raises_no_finding(null_result):
    """The null captions carry every word (non-human, crime, 'child') on 5% of everyone's
    captions: the probe must flag nothing, the 'child' effect included."""
    assert null_result.findings == [], [f["message"] for f in null_result.findings]


@pytest.fixture(scope="session")
def null_retrieval(faces_world):
    from probes.retrieval_skew import RetrievalSkew
    return _run(RetrievalSkew, "demo-null", faces_world, n_boot=0)


def test_null_world_retrieval_raises_no_finding(null_retrieval):
    """Every concept's ranking is skewed on both models (their images cluster by race and
    gender), but on the null model no concept beats random queries of the same space."""
    assert null_retrieval.findings == []
    skews = [r["value"] for r in null_retrieval.rows if r["metric"] == "max_skew" and r["k"] == 10]
    assert max(skews) > 1.0   # what the random-ranking yardstick alone would have flagged


def test_null_world_prompt_sensitivity_raises_no_finding(faces_world):
    """Under none of the 86 neutral wordings is a race or gender above the overall rate on the
    null model: every group was scored under every template, and none stands out."""
    from probes.prompt_sensitivity import PromptSensitivity
    res = _run(PromptSensitivity, "demo-null", faces_world, n_boot=0)
    assert res.findings == [], [f["message"] for f in res.findings]
    scored = {(r["metric"], r["group"], r["template"]) for r in res.rows
              if r["metric"] in ("crime_rate", "non_human_rate") and r.get("template")}
    assert len(scored) == 2 * (7 + 2) * res.summary["n_templates"]


def test_null_world_distribution_shift_raises_no_finding(faces_world):
    """Corruptions cost some race classes more recall than others on the null model too (the
    rows show it), but no race loses more gender accuracy and no gender more race accuracy."""
    from probes.distribution_shift import DistributionShift
    res = _run(DistributionShift, "demo-null", faces_world, n_boot=N_BOOT)
    assert res.findings == [], [f["message"] for f in res.findings]
    own = [r["value"] for r in res.rows if r["metric"] == "accuracy_drop" and r["corruption"] == "all"
           and r["task"] == "fairface:race" and r["group_by"] == "race"]
    assert len(own) == 7 and max(own) > 0
