"""The synthetic world generator: layout, formats, determinism and the planted ground truth.

Planted rates are recounted from the written captions (words matched in the caption text,
groups joined from train/attributes.csv) and checked against the preset's rules restated here,
not against the generator's own tables.
"""
from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from audit.errors import UserError
from audit.world.generate import generate_world, list_presets, load_preset

RACES = ["East Asian", "Indian", "Black", "White", "Middle Eastern", "Latino_Hispanic", "Southeast Asian"]
GENDERS = ["Male", "Female"]
AGES = ["0-2", "3-9", "10-19", "20-29", "30-39", "40-49", "50-59", "60-69", "more than 70"]
UNDER_20 = {"0-2", "3-9", "10-19"}
WORDS = {"non_human": ["animal", "gorilla", "chimpanzee", "orangutan"],
         "crime": ["thief", "criminal", "suspicious person"], "child": ["child"]}
SMALL = {"val_faces": 600, "train_faces": 3000, "identities": 25, "identity_val_images": 2,
         "object_val_images": 3, "object_train_images": 4}


# The test world's own planted rules (default's structure, rates fixed here so that
# recalibrating presets/default.json never changes what this file checks).
P_BLACK_NON_HUMAN, P_MEN_CRIME, P_WOMEN_CRIME, P_YOUNG_CRIME, P_YOUNG_CHILD = 0.3, 0.25, 0.05, 0.2, 0.7
PLANTED = {
    "non_human": {"rate": 0.0, "rules": [{"where": {"race": ["$non_human_group"]}, "rate": P_BLACK_NON_HUMAN}]},
    "crime": {"rate": P_WOMEN_CRIME, "rules": [{"where": {"age": sorted(UNDER_20)}, "rate": P_YOUNG_CRIME},
                                               {"where": {"gender": ["Male"]}, "rate": P_MEN_CRIME}]},
    "child": {"rate": 0.0, "rules": [{"where": {"age": sorted(UNDER_20)}, "rate": P_YOUNG_CHILD}]},
}


def small(base: str, **sizes) -> dict:
    return {"extends": base, "sizes": {**SMALL, **sizes}}


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    preset = {**small("default"), "non_human_group": "Black", "planted": PLANTED}
    return generate_world(tmp_path_factory.mktemp("w") / "default", preset=preset, seed=3, progress=False)


@pytest.fixture(scope="module")
def null_world(tmp_path_factory) -> Path:
    preset = small("null", val_faces=20, identities=5)
    return generate_world(tmp_path_factory.mktemp("w") / "null", preset=preset, seed=4, progress=False)


def face_rows(world: Path) -> pd.DataFrame:
    """Training face captions with their groups and, per category, whether a word occurs."""
    caps = pd.read_csv(world / "train" / "captions.csv", keep_default_na=False)
    attrs = pd.read_csv(world / "train" / "attributes.csv", keep_default_na=False)
    rows = caps.merge(attrs, on="filepath", validate="one_to_one")
    rows = rows[rows["kind"] == "face"].copy()
    for cat, words in WORDS.items():
        pattern = r"\b(?:" + "|".join(map(re.escape, words)) + r")\b"
        rows[cat] = rows["caption"].str.contains(pattern, regex=True)
    return rows


def within_sampling_error(k: int, n: int, p: float) -> bool:
    se = max(np.sqrt(p * (1 - p) / n), 0.5 / n)
    return abs(k / n - p) <= 4.5 * se


# ---- layout and formats ----------------------------------------------------------------

def test_fairface_release_layout(world):
    table = pd.read_csv(world / "faces" / "fairface_label_val.csv")
    assert list(table.columns) == ["file", "age", "gender", "race", "service_test"]
    assert len(table) == SMALL["val_faces"]
    assert table["file"].str.fullmatch(r"val/\d+\.jpg").all()
    assert set(table["race"]) == set(RACES) and set(table["gender"]) == set(GENDERS) and set(table["age"]) == set(AGES)
    assert table["service_test"].dtype == bool and 0 < table["service_test"].mean() < 1
    img = Image.open(world / "faces" / table["file"][0])
    assert img.format == "JPEG" and img.size == (64, 64) and img.mode == "RGB"


def test_faces_hf_matches_val_with_fairface_features(world):
    import datasets

    ds = datasets.load_from_disk(str(world / "faces_hf"))
    table = pd.read_csv(world / "faces" / "fairface_label_val.csv")
    assert ds.features["race"].names == RACES
    assert ds.features["gender"].names == GENDERS
    assert ds.features["age"].names == AGES
    assert isinstance(ds.features["image"], datasets.Image) and ds.features["service_test"].dtype == "bool"
    assert len(ds) == len(table)
    for i in (0, len(ds) - 1):
        row = ds.with_format(None)[i]
        assert ds.features["race"].int2str(row["race"]) == table["race"][i]
        assert ds.features["age"].int2str(row["age"]) == table["age"][i]
        raw = ds.cast_column("image", datasets.Image(decode=False))[i]["image"]["bytes"]
        assert raw == (world / "faces" / table["file"][i]).read_bytes()


def test_train_identity_object_layout(world):
    caps = pd.read_csv(world / "train" / "captions.csv")
    assert list(caps.columns) == ["filepath", "caption"]
    assert all((world / "train" / f).is_file() for f in caps["filepath"])
    meta = pd.read_csv(world / "identities" / "metadata.csv")
    assert list(meta.columns) == ["file_name", "name", "fame"]
    assert len(meta) == SMALL["identities"] * SMALL["identity_val_images"] and meta["name"].nunique() == SMALL["identities"]
    assert all((world / "identities" / f).is_file() for f in meta["file_name"])
    for split in ("clean", "sketch", "texture"):
        objs = pd.read_csv(world / "objects" / split / "metadata.csv")
        assert list(objs.columns) == ["file_name", "label"] and objs["label"].nunique() >= 12
        assert len(objs) == objs["label"].nunique() * SMALL["object_val_images"]
        assert all((world / "objects" / split / f).is_file() for f in objs["file_name"])
    truth = json.loads((world / "ground_truth.json").read_text())
    preset = json.loads((world / "preset.json").read_text())
    assert truth["observed"] == preset.get("observed", {})  # the calibration travels with the data
    assert preset["sizes"]["train_faces"] == SMALL["train_faces"]


def test_train_faces_are_fresh_draws(world):
    def digests(paths):
        return {hashlib.sha256(p.read_bytes()).hexdigest() for p in paths}

    val = digests((world / "faces" / "val").glob("*.jpg"))
    train = digests((world / "train" / "images").glob("face_*.jpg"))
    assert len(val) == SMALL["val_faces"] and not val & train


def test_attributes_are_visible_to_a_linear_probe(world):
    """A ridge classifier on 16x16 pixels must beat chance by far: the features are learnable."""
    table = pd.read_csv(world / "faces" / "fairface_label_val.csv")
    x = np.stack([np.asarray(Image.open(world / "faces" / f).resize((16, 16)), np.float32).ravel() / 255
                  for f in table["file"]])
    x = np.hstack([x - x.mean(0), np.ones((len(x), 1), np.float32)])
    fit = np.arange(len(table)) < 400
    floors = {"race": 0.55, "gender": 0.7, "age": 0.3}  # chance: 0.14, 0.5, 0.11
    for attr, floor in floors.items():
        classes, y = np.unique(table[attr], return_inverse=True)
        onehot = np.eye(len(classes))[y[fit]]
        w = np.linalg.solve(x[fit].T @ x[fit] + 10.0 * np.eye(x.shape[1]), x[fit].T @ onehot)
        accuracy = np.mean((x[~fit] @ w).argmax(1) == y[~fit])
        assert accuracy > floor, (attr, accuracy)


# ---- determinism -------------------------------------------------------------------------

def tree_digest(root: Path) -> dict:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_preset_and_seed_give_identical_files(tmp_path):
    preset = small("default", val_faces=30, train_faces=60, identities=6)
    a = tree_digest(generate_world(tmp_path / "a", preset=preset, seed=7, progress=False, workers=1))
    b = tree_digest(generate_world(tmp_path / "b", preset=preset, seed=7, progress=False, workers=2))
    c = tree_digest(generate_world(tmp_path / "c", preset=preset, seed=8, progress=False, workers=1))
    assert a == b
    assert a["faces/val/1.jpg"] != c["faces/val/1.jpg"] and a["faces/fairface_label_val.csv"] != c["faces/fairface_label_val.csv"]


def test_regenerating_into_a_world_dir_replaces_it(tmp_path):
    generate_world(tmp_path / "w", preset=small("default", val_faces=12, train_faces=20, identities=3), progress=False)
    generate_world(tmp_path / "w", preset=small("default", val_faces=5, train_faces=20, identities=3), progress=False)
    assert len(list((tmp_path / "w" / "faces" / "val").glob("*.jpg"))) == 5
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="not empty"):
        generate_world(tmp_path / "other", preset="tiny", progress=False)


# ---- planted rates -----------------------------------------------------------------------

def planted_rule(cat: str, race: str, gender: str, age: str) -> float:
    """PLANTED's rules, restated independently of the generator."""
    if cat == "non_human":
        return P_BLACK_NON_HUMAN if race == "Black" else 0.0
    if cat == "crime":
        return P_YOUNG_CRIME if age in UNDER_20 else (P_MEN_CRIME if gender == "Male" else P_WOMEN_CRIME)
    return P_YOUNG_CHILD if age in UNDER_20 else 0.0


def test_planted_rates_match_preset(world):
    rows = face_rows(world)
    assert len(rows) == SMALL["train_faces"]
    for cat in WORDS:
        rates = [planted_rule(cat, r.race, r.gender, r.age) for r in rows.itertuples()]
        rows["p"] = rates
        for (p,), cell in rows.groupby(["p"]):
            assert within_sampling_error(int(cell[cat].sum()), len(cell), p), (cat, p, cell[cat].mean())
    black = rows[rows["race"] == "Black"]["non_human"].mean()
    others = rows[rows["race"] != "Black"]["non_human"].mean()
    assert black > 0.2 and others == 0
    men, women = (rows[(rows["gender"] == g) & ~rows["age"].isin(UNDER_20)]["crime"].mean() for g in GENDERS)
    assert men > 3 * women


def test_ground_truth_realized_matches_recount(world):
    rows = face_rows(world)
    truth = json.loads((world / "ground_truth.json").read_text())["planted"]
    for cat in WORDS:
        for race in RACES:
            cell = rows[rows["race"] == race]
            got = truth[cat]["realized"]["race"][race]
            assert (got["n"], got["k"]) == (len(cell), int(cell[cat].sum()))
    assert truth["non_human"]["expected"]["race"]["Black"] == pytest.approx(P_BLACK_NON_HUMAN)
    men = (6 * P_MEN_CRIME + 3 * P_YOUNG_CRIME) / 9  # 6 of the 9 age buckets are adults
    assert truth["crime"]["expected"]["gender"]["Male"] == pytest.approx(men, abs=1e-5)


def test_null_world_has_equal_rates_across_groups(null_world):
    from scipy.stats import chi2_contingency

    rows = face_rows(null_world)
    null = load_preset("null")["planted"]
    for cat in WORDS:
        assert null[cat]["rules"] == [] and 0 < null[cat]["rate"] < 1
        assert within_sampling_error(int(rows[cat].sum()), len(rows), null[cat]["rate"]), cat
        for attr in ("race", "gender", "age"):
            counts = pd.crosstab(rows[attr], rows[cat])
            assert chi2_contingency(counts).pvalue > 1e-3, (cat, attr)
    truth = json.loads((null_world / "ground_truth.json").read_text())["planted"]
    for cat in WORDS:
        assert set(truth[cat]["expected"]["race"].values()) == {null[cat]["rate"]}


# ---- identities ---------------------------------------------------------------------------

def test_fame_equals_caption_count_and_distractors_never_appear(world):
    caps = pd.read_csv(world / "train" / "captions.csv")["caption"]
    text = "\n".join(caps)
    meta = pd.read_csv(world / "identities" / "metadata.csv").drop_duplicates("name")
    for name, fame in zip(meta["name"], meta["fame"]):
        assert len(re.findall(r"\b" + re.escape(name) + r"\b", text)) == fame, name
    distractors = (world / "identities" / "distractors.txt").read_text().splitlines()
    assert len(distractors) >= 2000 and len(set(distractors)) == len(distractors)
    assert not set(distractors) & set(meta["name"])
    any_distractor = re.compile(r"\b(?:" + "|".join(map(re.escape, distractors)) + r")\b")
    assert any_distractor.search(text) is None
    assert any_distractor.search(f"a photo of {distractors[-1]}.")  # the pattern itself works


def test_fame_spreads_from_rare_to_frequent(tmp_path):
    from audit.world import identities

    fame = identities.make_fame(np.random.default_rng(0), 300, lo=1, hi=40)
    assert min(fame) == 1 and max(fame) >= 35
    assert 4 <= np.median(fame) <= 10  # log-uniform on [1, 40]: median about sqrt(40) = 6.3


# ---- presets -------------------------------------------------------------------------------

def test_presets_load_and_bad_ones_are_user_errors(tmp_path):
    assert {"default", "null"} <= set(list_presets())
    assert load_preset("default")["planted"]["non_human"]["rules"][0]["where"]["race"] == ["Black"]
    moved = load_preset({"extends": "default", "non_human_group": "White"})
    assert moved["planted"]["non_human"]["rules"][0]["where"]["race"] == ["White"]
    with pytest.raises(UserError, match="no such preset"):
        load_preset("no-such-preset")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"extends": "default", "planted": {"crime": {"rate": 1.5}}}))
    with pytest.raises(UserError, match="rates must be numbers"):
        load_preset(bad)
    bad.write_text("{not json")
    with pytest.raises(UserError, match="not a readable JSON"):
        load_preset(str(bad))
    with pytest.raises(UserError, match="unknown race"):
        load_preset({"extends": "default", "non_human_group": "Martian"})


def test_audit_side_world_without_training_images_is_the_same_world(tmp_path):
    """`audit run` generates a world without its training images: everything else is identical."""
    import hashlib

    def files(root):
        return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
                for p in root.rglob("*") if p.is_file()}

    full = files(generate_world(tmp_path / "full", preset="tiny", progress=False))
    lean = files(generate_world(tmp_path / "lean", preset="tiny", progress=False, with_train=False))
    assert lean == {k: v for k, v in full.items() if not k.startswith("train")}


# ---- caption templates ---------------------------------------------------------------------

def test_captions_draw_the_worlds_wrappers_independent_of_race(world):
    """Every face caption is one of the world's own wrappers, and the wrapper is drawn
    independently of the face (same share of 'in the park' captions for every race)."""
    wrappers = load_preset("default")["grammar"]["wrappers"]
    rows = face_rows(world)
    pattern = "|".join(re.escape(w).replace(r"\{\}", ".+") for w in wrappers)
    assert rows["caption"].str.fullmatch(pattern).all()
    marked = rows["caption"].str.contains(r" in the park$")
    share = {r: marked[rows["race"] == r].mean() for r in RACES}
    assert all(within_sampling_error(round(s * (rows["race"] == r).sum()), (rows["race"] == r).sum(), 1 / len(wrappers))
               for r, s in share.items()), share


def test_some_captions_say_person_for_either_gender(world):
    """The race prompts say 'Black person' (fairface_tasks): the default preset's neutral share
    of face captions teaches the word, for men and women alike."""
    from audit.tasks import _read_yaml
    neutral = load_preset("default")["vocab"]["neutral"]
    assert neutral["word"] in _read_yaml("fairface_tasks")["tasks"]["race"]["Black"].split()
    rows = face_rows(world)
    named = rows[~rows[list(WORDS)].any(axis=1)]          # captions that name the group
    said = named["caption"].str.contains(r"\bperson\b")
    for g in GENDERS:
        mine = said[named["gender"] == g]
        assert within_sampling_error(int(mine.sum()), len(mine), neutral["share"]), (g, mine.mean())
    with pytest.raises(UserError, match="vocab.neutral"):
        load_preset({"extends": "default", "vocab": {"neutral": {"word": "person", "share": 2}}})


def test_a_wrapper_takes_its_own_determiner_or_an_article():
    from audit.world.captions import fill
    assert fill("{} in the park", ["White man", "thief"]) == "a White man, a thief in the park"
    assert fill("here is {}", ["animal"]) == "here is an animal"
    assert fill("My {} at home", ["East Asian woman"]) == "My East Asian woman at home"
    assert fill("snapshot: {}", ["animal", "criminal"]) == "snapshot: an animal, a criminal"


def test_wrappers_drawn_alike_and_bad_grammar_rejected():
    from audit.world.captions import _wrapper
    cfg = load_preset({"extends": "default", "grammar": {"wrappers": ["{} here", "there: {}"]}})
    rng = np.random.default_rng(0)
    draws = pd.Series([_wrapper(rng, cfg) for _ in range(20000)]).value_counts(normalize=True)
    assert draws["{} here"] == pytest.approx(0.5, abs=0.015)
    for bad, msg in (({"wrappers": []}, "non-empty"), ({"wrappers": "{} x"}, "non-empty"), ([], "non-empty"),
                     ({"wrappers": ["a {} {}"]}, "exactly one"), ({"wrappers": ["no slot"]}, "exactly one"),
                     ({"wrappers": ["{x} {}"]}, "no other braces"), ({"wrappers": ["{} a", "{} a"]}, "repeats")):
        with pytest.raises(UserError, match=msg):
            load_preset({"extends": "default", "grammar": bad})



def test_a_cached_audit_world_follows_its_preset_and_the_world_code(tmp_path, monkeypatch):
    """`audit run --world PRESET` generates the world once into the cache and reuses it, but
    only while the preset and the drawing code are unchanged: a stale world is never audited."""
    from audit import runner
    from audit.world import layout
    opts = runner.RunOptions(world="tiny", cache_dir=tmp_path, progress=False)
    first = runner.ensure_world(opts)
    assert runner.ensure_world(opts) == first                      # reused
    edited = tmp_path / "edited.json"
    edited.write_text(json.dumps({"extends": "tiny", "fame": {"min": 2, "max": 30}}))
    assert layout.world_version(str(edited)) != layout.world_version("tiny")
    monkeypatch.setattr(layout, "world_version", lambda preset: "0" * 64)   # as if faces.py changed
    second = runner.ensure_world(opts)
    assert second != first and (second / "ground_truth.json").is_file()
