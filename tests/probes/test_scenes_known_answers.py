"""Known answers of person_class_bias and group_accuracy: the shipped scenes models, audited on
their own worlds through `audit run`, must find exactly what the world planted.

The scenes world draws feminine gardeners and masculine dancers in another class's scene at a
planted rate, and clutters the region objects of 'low' income homes (audit/world/presets/
scenes.json); the null world draws every group alike. The answers are read from the world's
ground_truth.json, and the recall gaps are checked against the share of people the world
actually drew in another scene (counted from its annotations, independently of the probe).
"""
import json

import numpy as np
import pandas as pd
import pytest

from tests.world.test_scenes import val_world

PROBES = "person_class_bias,group_accuracy"


def _audit(model: str, world, out, cache) -> dict:
    from audit.cli import main

    assert main(["-q", "run", "--model", model, "--world", str(world), "--probes", PROBES,
                 "--out", str(out), "--cache-dir", str(cache)]) == 0
    return json.loads((out / "results.json").read_text())["probes"]


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    root = tmp_path_factory.mktemp("ka")
    world = val_world(root / "scenes", "scenes")
    return world, _audit("demo-scenes", world, root / "out", root / "cache")


@pytest.fixture(scope="module")
def null(tmp_path_factory):
    root = tmp_path_factory.mktemp("ka-null")
    world = val_world(root / "scenes-null", "scenes-null")
    return _audit("demo-scenes-null", world, root / "out", root / "cache")


def _drawn_gap(world, cls: str) -> float:
    """Masculine minus feminine share of `cls`'s people drawn in their own scene: the recall gap
    a model that reads the scene shows."""
    truth = json.loads((world / "ground_truth.json").read_text())["persons"]["val"]["misdrawn"]
    t = pd.read_csv(world / "persons" / "annotations" / "annotations.csv")
    t = t[t["class1"] == cls]
    own = ~t["filename"].isin(truth.keys())
    masc = t["gender_presentation_masc"] == 1
    return float(own[masc].mean() - own[~masc].mean())


def test_planted_recall_gaps_are_the_robust_findings(planted):
    world, probes = planted
    plants = json.loads((world / "ground_truth.json").read_text())["persons"]["planted"]
    # each plant lowers its group's recall: masculine minus feminine is negative where men were misdrawn
    expected = {(p["class"], -1 if p["where"]["gender"] == ["masculine"] else 1) for p in plants}
    findings = probes["person_class_bias"]["findings"]
    found = {(f["evidence"]["class"], int(np.sign(f["evidence"]["value"]))) for f in findings}
    assert found == expected
    for f in findings:
        ev = f["evidence"]
        assert f["severity"] != "low" and 3 * ev["wordings_holding"] >= 2 * ev["wordings"]
        assert abs(f["evidence"]["value"] - _drawn_gap(world, f["evidence"]["class"])) < 0.05


def test_planted_worst_income_group_is_found(planted):
    world, probes = planted
    hard = json.loads((world / "ground_truth.json").read_text())["regions"]["hard"]["rules"]
    [(column, [group])] = [next(iter(r["where"].items())) for r in hard]
    summary = probes["group_accuracy"]["summary"]
    assert summary[f"classify:regions by {column}: acc_wg group"] == group
    findings = probes["group_accuracy"]["findings"]
    assert findings and {f["evidence"]["group"] for f in findings} == {group}
    assert all(f["severity"] != "low" and 3 * f["evidence"]["wordings_holding"] >= 2 * f["evidence"]["wordings"]
               for f in findings)


def test_null_scenes_raise_no_finding(null):
    assert null["person_class_bias"]["status"] == "ok" and null["group_accuracy"]["status"] == "ok"
    assert null["person_class_bias"]["findings"] == [] and null["group_accuracy"]["findings"] == []
