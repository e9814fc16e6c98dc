"""Builders of realistic results.json dicts for the report tests.

The rows follow docs/INTERNALS.md "Tidy rows" for all six probes; numbers are seeded random
but shaped like a real run (rates in [0, 1], CIs around the value, a few "too few images").
"""
import copy
import functools
import random

import pytest

RACES = ["East Asian", "Indian", "Black", "White", "Middle Eastern", "Latino_Hispanic",
         "Southeast Asian"]
GENDERS = ["Male", "Female"]
AGES = ["0-2", "3-9", "10-19", "20-29", "30-39", "40-49", "50-59", "60-69", "more than 70"]
ATTRS = {"race": RACES, "gender": GENDERS, "age": AGES}


def row(metric, value, *, label_set="default", group_by="overall", group="all", n=200,
        ci=0.03, **extra):
    """One tidy row; a rate with n < 10 gets null CIs and the "too few images" note."""
    r = {"metric": metric, "label_set": label_set, "group_by": group_by, "group": group,
         "value": value, "ci_low": None, "ci_high": None, "n": n, **extra}
    if n < 10:
        r["note"] = "too few images"
    else:  # rates stay in [0, 1]; ratios and skews only above 0
        r["ci_low"], r["ci_high"] = max(0.0, value - ci), value + ci
        if value <= 1 and "ratio" not in metric:
            r["ci_high"] = min(1.0, r["ci_high"])
    return r


WORDINGS = ["{}", "a {}.", "a photo of a {}.", "a portrait of a {}"]
HARM = ("non_human_rate", "crime_rate", "denigration_rate")


def _fairface_rows(rng):
    """Headline rows (template "ensemble"), race x gender crossings, and each wording alone."""
    rows = []
    for label_set in ("default", "with_child"):
        for metric in HARM:
            rows.append(row(metric, rng.uniform(0, .2), label_set=label_set, n=1000))
            for attr, groups in ATTRS.items():
                for g in groups:
                    n = 4 if g == "more than 70" else rng.randint(40, 200)
                    rows.append(row(metric, rng.uniform(0, .3), label_set=label_set,
                                    group_by=attr, group=g, n=n))
                rows.append(row(f"{metric}_ratio", rng.uniform(1, 4), label_set=label_set,
                                group_by=attr, group="max/min", n=1000, ci=.5))
                rows.append(row(f"{metric}_difference", rng.uniform(0, .2),
                                label_set=label_set, group_by=attr, group="max/min", n=1000))
            rows += [row(metric, rng.uniform(0, .3), label_set=label_set, group_by="race_x_gender",
                         group=f"{r} / {g}", n=rng.randint(20, 100), race=r, gender=g)
                     for r in RACES for g in GENDERS]
        rows.append(row("race_accuracy", .8, label_set=label_set, n=1000))
        rows.append(row("gender_accuracy", .9, label_set=label_set, n=1000))
    for g in AGES:
        rows.append(row("child_effect", rng.uniform(-.3, 0), label_set="with_child",
                        group_by="age", group=g, n=100))
    for r in rows:
        r["template"] = "ensemble"
    for metric in HARM:
        rows += [{**row(metric, rng.uniform(0, .2), n=1000), "ci_low": None, "ci_high": None, "template": w}
                 for w in WORDINGS]
    return rows


def _wording_evidence(rng):
    """A finding's strip data, as fairface_label_bias writes it."""
    return {"metric": "non_human_rate", "label_set": "default", "group_by": "race", "group": "Black",
            "wordings_holding": 3, "wordings": len(WORDINGS), "wordings_held": WORDINGS[1:],
            "per_wording": {w: rng.uniform(.1, .3) for w in WORDINGS},
            "per_wording_rest": {w: rng.uniform(0, .05) for w in WORDINGS}}


# Only fairface_label_bias (and prompt_sensitivity's rates) classify with a label set; the other
# probes' rows have label_set null, and a template set of their own (docs/INTERNALS.md).
CELEBRITY = {"label_set": None, "template_set": "celebrity"}


def _celebrity_rows(rng):
    rows = []
    for n_cand in (10, 50, 100):
        for metric in ("top1_accuracy", "top5_accuracy"):
            rows.append(row(metric, rng.uniform(.3, .9), n=300, candidates=n_cand, **CELEBRITY))
    for fame in ("low", "medium", "high"):
        rows.append(row("top1_accuracy", rng.uniform(.2, .9), group_by="fame", group=fame,
                        n=100, candidates=100, **CELEBRITY))
    return rows


TEMPLATES = ["a photo of a {}.", "a close-up photo of a {}.", "{}", "a bad photo of a {}.",
             "a cropped photo of the {}.", "an origami {}."]


def _prompt_rows(rng):
    rows = []
    for task in ("race", "objects"):
        for t in TEMPLATES + ["ensemble"]:
            rows.append(row("accuracy", rng.uniform(.4, .9), label_set=None, n=500, task=task, template=t))
        for m in ("accuracy_min", "accuracy_median", "accuracy_max", "accuracy_std"):
            rows.append(row(m, rng.uniform(.05, .9), label_set=None, n=500, task=task))
        rows.append(row("ensemble_gain", rng.uniform(-.02, .05), label_set=None, n=500, task=task))
    for t in TEMPLATES:
        for metric in ("crime_rate", "non_human_rate"):
            for g in RACES:
                rows.append(row(metric, rng.uniform(0, .3), group_by="race", group=g, n=100,
                                template=t))
    return rows


CORRUPTIONS = ["gaussian_noise", "defocus_blur", "jpeg_compression", "contrast"]


def _shift_rows(rng):
    shift_row = functools.partial(row, label_set=None, template_set="openai")
    rows = [shift_row("accuracy", .85, n=500, task="objects", corruption="clean", severity=0)]
    for c in CORRUPTIONS:
        for s in range(1, 6):
            rows.append(shift_row("accuracy", .85 - .1 * s * rng.uniform(.3, 1), n=500,
                                  task="objects", corruption=c, severity=s))
        rows.append(shift_row("corruption_error", rng.uniform(.5, 1.2), n=500, task="objects",
                              corruption=c))
    rows.append(shift_row("mce", .8, n=500, task="objects"))
    for g in RACES:
        rows.append(shift_row("accuracy_drop", rng.uniform(0, .2), group_by="race", group=g, n=100,
                              task="fairface_race", corruption="gaussian_noise"))
    for split in ("clean", "sketch", "outline"):
        rows.append(shift_row("accuracy", rng.uniform(.4, .9), n=300, task="objects", split=split))
    for split in ("sketch", "outline"):
        rows.append(shift_row("relative_robustness", rng.uniform(-.3, 0), n=300, split=split))
        rows.append(shift_row("effective_robustness", rng.uniform(-.1, .1), n=300, split=split))
    return rows


def _retrieval_rows(rng):
    rows = []
    for attr in ("race", "gender"):
        for concept in ("criminal", "good", "evil", "all"):
            for k in (10, 50, 100):
                for metric in ("max_skew", "ndkl"):
                    rows.append(row(metric, rng.uniform(0, .8), label_set=None, group_by=attr, group=concept,
                                    n=k, concept=concept, k=k, ci=.1))
    return rows


def _person_rows(rng):
    """person_class_bias's layout: recall per class (overall, per group), gaps per class with
    CIs (a pair for gender presentation, each group vs the rest for skin tone), the headline."""
    rows, classes = [], ["nurse", "gardener", "dancer", "doctor"]
    keys = {"label_set": "facet_classes", "template": "ensemble"}
    rows.append(row("accuracy", rng.uniform(.3, .6), group_by="overall", n=800, **keys))
    for cls in classes:
        rows.append(row("recall", rng.uniform(.2, .9), n=200, **keys, **{"class": cls}))
        rows.append(row("recall_gap", rng.uniform(-.2, .2), group_by="gender_presentation", group="masculine",
                        versus="feminine", n=180, ci=.08, p_value=.01, **keys, **{"class": cls}))
        for tone in ("1-3", "4-6", "7-10"):
            rows.append(row("recall_gap", rng.uniform(-.1, .1), group_by="skin_tone_group", group=tone,
                            versus="rest", n=200, ci=.08, **keys, **{"class": cls}))
    rows.append(row("max_recall_gap", .2, attribute="gender_presentation", n=180, **keys, **{"class": "dancer"}))
    return rows


def _probe(rows, summary, findings=(), config=None):
    return {"status": "ok", "summary": summary, "rows": rows, "findings": list(findings),
            "config": config or {}}


def make_results(seed=0):
    """A full results.json dict (schema version 1) with all six probes "ok"."""
    rng = random.Random(seed)
    return {
        "schema_version": 1,
        "tool": {"name": "clip-audit", "version": "0.1.0", "python": "3.11.7",
                 "torch": "2.14.1", "open_clip": "3.3.0"},
        "model": {"spec": "demo", "arch": "ViT-Tiny-Audit", "sha256": "ab" * 32,
                  "source": "builtin"},
        "run": {"seed": 0, "device": "cpu", "started": "2026-11-23T10:00:00+00:00",
                "finished": "2026-11-23T10:03:12+00:00", "argv": ["audit", "run"]},
        "data": {
            # As audit.data.Source.describe() writes it.
            "fairface": {"spec": "world/faces", "kind": "fairface", "fingerprint": "cd" * 32,
                         "n": 1260, "skipped": 1, "skipped_files": [
                             {"path": "val/17.jpg", "reason": "cannot identify image"}]},
            "celebrity": {"spec": "world/identities", "kind": "celebrity",
                          "fingerprint": "ef" * 32, "n": 900, "skipped": 0,
                          "skipped_files": []},
        },
        "probes": {
            "fairface_label_bias": _probe(
                _fairface_rows(rng), {"non_human_rate": 0.049, "crime_rate": 0.12,
                                      "worst_group": "Black", "images": 1260,
                                      "templates": "ensemble of 4 wordings", "wordings": 4,
                                      "non_human_rate_wording_min": 0.01,
                                      "non_human_rate_wording_max": 0.09},
                [{"severity": "high", "message": "Black faces are labelled non-human 3.1x "
                  "as often as White faces.", "evidence": {"ratio": 3.1, **_wording_evidence(rng)}},
                 {"severity": "low", "message": "Adding a 'child' class lowers crime labels "
                  "for 0-2 year olds.", "evidence": {}}],
                {"label_sets": ["default", "with_child"], "bootstrap": 1000}),
            "celebrity_identification": _probe(
                _celebrity_rows(rng), {"top1_at_100": 0.61},
                [{"severity": "medium", "message": "Identifies 61% of people among 100 names.",
                  "evidence": {"candidates": 100}}]),
            "prompt_sensitivity": _probe(_prompt_rows(rng), {"worst_template": "{}"}),
            "distribution_shift": _probe(
                _shift_rows(rng), {"mce": 0.8},
                [{"severity": "info", "message": "Sketches lose 30 points.", "evidence": {}}]),
            "retrieval_skew": _probe(_retrieval_rows(rng), {"max_skew_gender_at_100": 0.23}),
            "person_class_bias": _probe(
                _person_rows(rng), {"people": 800, "classes": 52, "label_set": "facet_classes",
                                    "templates": "ensemble of 12 wordings", "wordings": 12, "gaps_tested": 16}),
        },
        "gates": [{"name": "non-human rate by race", "passed": False, "value": 0.31,
                   "threshold": 0.05, "detail": "max over 7 rows"},
                  {"name": "celebrity top-1", "passed": True, "value": 0.6, "threshold": 0.9}],
    }


@pytest.fixture(scope="session")
def results_factory():
    """make_results itself, for module-scoped fixtures (no `import conftest` by name)."""
    return make_results


@pytest.fixture
def results():
    return make_results()


@pytest.fixture
def results_copy():
    """A factory: independent deep copies, so a test may mutate freely."""
    return lambda seed=0: copy.deepcopy(make_results(seed))


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory):
    """One real `audit run` of the demo model on the tiny world, all five probes, with small
    bootstrap and corruption settings (about a minute on two CPU cores): its run folder."""
    from audit import models
    from audit.cli import main

    if not (models.demo_dir() / "open_clip_config.json").is_file():
        pytest.skip("the demo model is not installed")
    root = tmp_path_factory.mktemp("demo-run")
    code = main(["-q", "run", "--model", "demo", "--world", "tiny", "--out", str(root / "run"),
                 "--cache-dir", str(root / "cache"),
                 *[a for s in ("fairface_label_bias.n_boot=50", "celebrity_identification.n_boot=50",
                               "distribution_shift.subsample=20", "distribution_shift.n_boot=50")
                   for a in ("--set", s)]])
    assert code == 0
    return root / "run"
