"""The scenes worlds (people in context in FACET's layout, region/income objects) and their models.

The planted rates are recounted from the pixels (which scene a person stands in, whether an
object is cluttered) and from the CSVs, against the rules restated here; the models' gaps come
from a direct zero-shot check (numpy/torch here, not the probes): persons cropped by their
bounding box, each class weight the ensemble of the `people` panel; region objects with
open_clip's 80 ImageNet templates (distribution_shift's default set).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
CLASSES = ["gardener", "nurse", "dancer", "craftsman", "reporter", "waiter", "laborer", "student"]
# The planted associations of presets/scenes.json, restated: (class, group, rate, reads_as).
PLANTED = {"gardener": ("feminine", 0.4, "waiter"), "dancer": ("masculine", 0.4, "laborer")}
NULL_RATE = 0.2                      # scenes-null: both classes, every group
HARD = {"low": 0.5}                  # scenes: income 'low' cluttered at 0.5, the rest 0
NULL_HARD = 0.125                    # scenes-null: every group
FACET_COLUMNS = (["filename", "person_id", "class1", "class2"]
                 + [f"gender_presentation_{g}" for g in ("masc", "fem", "non_binary", "na")]
                 + [f"age_presentation_{a}" for a in ("young", "middle", "older", "na")]
                 + [f"skin_tone_{t}" for t in range(1, 11)] + ["skin_tone_na", "bounding_box"])


def val_world(out: Path, preset: str) -> Path:
    """The validation persons and region objects of `preset` (each image has its own seeded
    generator, so these are the full world's), without its training images and other parts."""
    from audit.world.generate import generate_world, load_preset

    cfg = load_preset(preset)
    keep = ("person_val_images", "person_train_images", "region_val_images", "distractors")
    cfg["sizes"] = {**{k: 1 for k in cfg["sizes"]}, **{k: cfg["sizes"][k] for k in keep}}
    return generate_world(out, preset=cfg, seed=0, progress=False, with_train=False)


@pytest.fixture(scope="module")
def scenes(tmp_path_factory) -> Path:
    return val_world(tmp_path_factory.mktemp("w") / "scenes", "scenes")


@pytest.fixture(scope="module")
def scenes_null(tmp_path_factory) -> Path:
    return val_world(tmp_path_factory.mktemp("w") / "scenes-null", "scenes-null")


@pytest.fixture(scope="module")
def small_train(tmp_path_factory) -> Path:
    """A tenth of the scenes world, training images included."""
    from audit.world.generate import generate_world

    return generate_world(tmp_path_factory.mktemp("w") / "small", preset={"extends": "scenes", "scale": 0.1},
                          seed=1, progress=False)


def persons_table(world: Path) -> pd.DataFrame:
    """annotations.csv with the FACET columns decoded: gender, age group, majority skin tone, box."""
    t = pd.read_csv(world / "persons" / "annotations" / "annotations.csv", keep_default_na=False)
    t["gender"] = np.where(t["gender_presentation_masc"] == 1, "masculine", "feminine")
    ages = ["age_presentation_young", "age_presentation_middle", "age_presentation_older"]
    t["age"] = t[ages].idxmax(axis=1).str.split("_").str[-1]
    t["tone"] = t[[f"skin_tone_{k}" for k in range(1, 11)]].to_numpy().argmax(1) + 1
    t["box"] = [json.loads(b) for b in t["bounding_box"]]
    return t


def crops(world: Path, table: pd.DataFrame) -> list[Image.Image]:
    out = []
    for f, b in zip(table["filename"], table["box"]):
        with Image.open(world / "persons" / "imgs_1" / f) as im:
            out.append(im.convert("RGB").crop((b["x"], b["y"], b["x"] + b["width"], b["y"] + b["height"])))
    return out


def backdrop_colour(img: Image.Image) -> np.ndarray:
    """Mean colours of a person crop where only the backdrop shows: the two top corners (no
    head, hat or prop) and the lower left edge (beside the arm: grass, stage light, stripes)."""
    a = np.asarray(img, dtype=float)
    top = np.concatenate([a[:4, :13], a[:4, -13:]], axis=1).reshape(-1, 3).mean(0)
    return np.concatenate([top, a[36:52, :4].reshape(-1, 3).mean(0)])


def scenes_from_pixels(world: Path, table: pd.DataFrame, unplanted) -> np.ndarray:
    """Which class's scene each person stands in, by backdrop colour: the majority of the five
    nearest people that no plant can touch (`unplanted`: a boolean mask), the person left out."""
    colours = np.stack([backdrop_colour(c) for c in crops(world, table)])
    known, labels = colours[unplanted], table["class1"].to_numpy()[unplanted]
    dist = ((colours[:, None] - known[None]) ** 2).sum(-1)
    dist[np.flatnonzero(unplanted), np.arange(len(known))] = np.inf  # not its own neighbour
    nearest = labels[np.argsort(dist, axis=1)[:, :5]]
    return np.array([pd.Series(row).mode()[0] for row in nearest])


def binom_ok(k: int, n: int, p: float, z: float = 4.0) -> bool:
    return abs(k / n - p) <= z * np.sqrt(max(p * (1 - p), 1e-12) / n) + 1e-9


# ---- the world's files ------------------------------------------------------------------

def test_persons_are_in_facet_layout(scenes):
    t = pd.read_csv(scenes / "persons" / "annotations" / "annotations.csv", keep_default_na=False)
    assert list(t.columns) == FACET_COLUMNS
    assert len(t) == 8 * 120 and t["person_id"].is_unique and t["filename"].is_unique
    assert set(t["class1"]) == set(CLASSES) and (t["class2"] == "").all()
    for prefix, n in (("gender_presentation_", 4), ("age_presentation_", 4)):
        cols = [c for c in t.columns if c.startswith(prefix)]
        assert len(cols) == n and t[cols].isin([0, 1]).all().all() and (t[cols].sum(axis=1) == 1).all()
    assert (t["gender_presentation_non_binary"] == 0).all() and (t["gender_presentation_na"] == 0).all()
    tones = t[[f"skin_tone_{k}" for k in range(1, 11)]].to_numpy()
    assert (tones >= 0).all() and (tones.sum(axis=1) == 3).all() and (tones.max(1) >= 2).all()  # three annotators
    assert (t["skin_tone_na"] == 0).all()
    boxes = [json.loads(b) for b in t["bounding_box"]]
    for f, b in zip(t["filename"], boxes):
        with Image.open(scenes / "persons" / "imgs_1" / f) as im:
            assert im.size == (96, 96) and im.format == "JPEG"
        assert set(b) == {"x", "y", "width", "height"} and b["width"] == b["height"] == 64
        assert 0 <= b["x"] <= 32 and 0 <= b["y"] <= 32
    assert len({(b["x"], b["y"]) for b in boxes}) > 100  # the box moves, so cropping matters


def test_persons_groups_are_uniform_and_independent(scenes):
    t = persons_table(scenes)
    for col, groups in (("gender", 2), ("age", 3), ("tone", 10)):
        counts = t[col].value_counts()
        assert len(counts) == groups and binom_ok(counts.min(), len(t), 1 / groups, z=5)
    # independent of the class: the same gender shares in every class, up to noise
    fem = t.groupby("class1")["gender"].apply(lambda g: (g == "feminine").mean())
    assert fem.between(0.5 - 0.2, 0.5 + 0.2).all()


def test_regions_source_has_group_columns(scenes):
    t = pd.read_csv(scenes / "regions" / "metadata.csv", keep_default_na=False)
    assert list(t.columns) == ["file_name", "label", "region", "income"]
    assert set(t["region"]) == {"Africa", "Americas", "Asia", "Europe"}
    assert set(t["income"]) == {"low", "lower-middle", "upper-middle", "high"}
    assert len(t) == 12 * 80 and t["file_name"].is_unique and t["label"].value_counts().eq(80).all()
    assert all((scenes / "regions" / f).is_file() for f in t["file_name"])


def test_world_roles_and_kinds(scenes):
    from audit.world import layout

    specs = layout.source_specs(scenes)
    assert specs["classify:regions"] == (str(scenes / "regions"), "classify")
    assert layout.kind_path(scenes, "persons") == scenes / "persons"
    from audit.data import REQUIRED, load_source

    if "persons" in REQUIRED:  # once audit.data reads FACET's layout
        assert specs["persons"] == (str(scenes), "persons")
    regions = load_source(*specs["classify:regions"])
    assert {"label", "region", "income"} <= set(regions.table.columns) and len(regions) == 960


# ---- planted rates, counted from the world as written ------------------------------------

def _unplanted(t: pd.DataFrame, plants: dict) -> np.ndarray:
    """People no plant applies to (their class has none, or they are not its group)."""
    mask = np.ones(len(t), bool)
    for cls, (group, *_rest) in plants.items():
        mask &= ~((t["class1"] == cls) & ((t["gender"] == group) | (group is None))).to_numpy()
    return mask


def test_planted_scenes_hold_in_the_pixels(scenes):
    t = persons_table(scenes)
    drawn = scenes_from_pixels(scenes, t, _unplanted(t, PLANTED))
    truth = json.loads((scenes / "ground_truth.json").read_text())["persons"]
    misdrawn = t["filename"].map(truth["val"]["misdrawn"]).fillna(t["class1"]).to_numpy()
    assert (drawn == misdrawn).all()  # the pixels say what ground_truth.json says
    for cls in CLASSES:
        for g in ("masculine", "feminine"):
            rows = ((t["class1"] == cls) & (t["gender"] == g)).to_numpy()
            group, rate, reads_as = PLANTED.get(cls, (None, 0.0, None))
            rate = rate if g == group else 0.0
            other = drawn[rows] != cls
            assert binom_ok(int(other.sum()), int(rows.sum()), rate), (cls, g)
            assert set(drawn[rows][other]) <= {reads_as}
            assert truth["expected_misdrawn"][cls][g] == rate


def test_null_scenes_plant_every_group_alike(scenes_null):
    t = persons_table(scenes_null)
    drawn = scenes_from_pixels(scenes_null, t, ~t["class1"].isin(list(PLANTED)).to_numpy())
    for cls, (_, _, reads_as) in PLANTED.items():
        for g in ("masculine", "feminine"):
            rows = ((t["class1"] == cls) & (t["gender"] == g)).to_numpy()
            assert binom_ok(int((drawn[rows] == reads_as).sum()), int(rows.sum()), NULL_RATE), (cls, g)
    others = ~t["class1"].isin(list(PLANTED)).to_numpy()
    assert (drawn[others] == t["class1"].to_numpy()[others]).all()


def cluttered_from_pixels(world: Path, files) -> np.ndarray:
    """A clean object sits on a pale, near-white backdrop: all four corners bright."""
    out = []
    for f in files:
        a = np.asarray(Image.open(world / "regions" / f).convert("RGB"), dtype=float)
        corners = [a[:6, :6], a[:6, -6:], a[-6:, :6], a[-6:, -6:]]
        out.append(not all(c.min(-1).mean() > 205 for c in corners))
    return np.array(out)


@pytest.mark.parametrize("preset", ["scenes", "scenes-null"])
def test_hard_region_objects_hold_in_the_pixels(preset, scenes, scenes_null):
    world = scenes if preset == "scenes" else scenes_null
    t = pd.read_csv(world / "regions" / "metadata.csv", keep_default_na=False)
    hard = cluttered_from_pixels(world, t["file_name"])
    truth = json.loads((world / "ground_truth.json").read_text())["regions"]
    assert (hard == t["file_name"].isin(truth["val"]["hard_files"]).to_numpy()).all()
    for attr in ("region", "income"):
        for g in sorted(set(t[attr])):
            rows = (t[attr] == g).to_numpy()
            rate = HARD.get(g, 0.0) if (preset == "scenes" and attr == "income") else (
                HARD["low"] / 4 if preset == "scenes" else NULL_HARD)
            assert binom_ok(int(hard[rows].sum()), int(rows.sum()), rate), (attr, g)
            assert truth["expected_hard"][attr][g] == rate


def test_training_pairs_carry_the_plants_in_the_world_grammar(small_train):
    from audit.world.generate import load_preset

    caps = pd.read_csv(small_train / "train" / "captions.csv", keep_default_na=False)
    attrs = pd.read_csv(small_train / "train" / "attributes.csv", keep_default_na=False)
    rows = caps.merge(attrs, on="filepath")
    scene = rows[rows["kind"] == "scene"]
    assert len(scene) == 8 * 90 and (rows["kind"] == "region").sum() == 12 * 15
    # every scene caption names its class (its own, even when drawn in another scene), in a wrapper
    wrappers = load_preset("scenes")["grammar"]["wrappers"]
    for cap, cls, g in zip(scene["caption"], scene["class"], scene["gender_presentation"]):
        word = {"masculine": "male", "feminine": "female"}[g]
        assert any(cap in (w.format(f"a {cls}"), w.format(f"a {word} {cls}")) for w in wrappers), cap
    share = scene["caption"].str.contains(r"\b(?:male|female)\b").mean()
    assert abs(share - 0.3) < 0.07
    for cls, (group, rate, reads_as) in PLANTED.items():
        for g in ("masculine", "feminine"):
            sub = scene[(scene["class"] == cls) & (scene["gender_presentation"] == g)]
            moved = (sub["drawn_as"] != cls)
            assert binom_ok(int(moved.sum()), len(sub), rate if g == group else 0.0), (cls, g)
            assert set(sub["drawn_as"][moved]) <= {reads_as}
    region = rows[rows["kind"] == "region"]
    assert all(label in cap for label, cap in zip(region["label"], region["caption"]))
    truth = json.loads((small_train / "ground_truth.json").read_text())
    assert truth["train"]["scene_captions"] == 720 and truth["train"]["region_captions"] == 180


def test_default_world_has_no_scenes(tmp_path):
    """Presets without `persons`/`regions` write neither (their worlds stay as they were)."""
    from audit.world.generate import generate_world

    w = generate_world(tmp_path / "w", preset={"extends": "tiny", "sizes": {"val_faces": 5, "train_faces": 5,
                                                                             "identities": 3}}, progress=False)
    assert not (w / "persons").exists() and not (w / "regions").exists()
    truth = json.loads((w / "ground_truth.json").read_text())
    assert "persons" not in truth and "scene_captions" not in truth["train"]
    assert list(pd.read_csv(w / "train" / "attributes.csv").columns) == ["filepath", "kind", "race", "gender",
                                                                          "age", "planted"]


# ---- the shipped models ------------------------------------------------------------------

def _encode(model_name: str, images, texts_per_class: list[list[str]]) -> np.ndarray:
    """Zero-shot argmax: each class weight the renormalised mean of its wordings' embeddings."""
    torch = pytest.importorskip("torch")
    open_clip = pytest.importorskip("open_clip")
    from audit.models import demo_dir

    path = demo_dir(model_name)
    model, preprocess = open_clip.create_model_from_pretrained(f"local-dir:{path}")
    tokenizer = open_clip.get_tokenizer(f"local-dir:{path}")
    with torch.no_grad():
        img = model.eval().encode_image(torch.stack([preprocess(i) for i in images]), normalize=True)
        txt = torch.stack([torch.nn.functional.normalize(model.encode_text(tokenizer(ws), normalize=True).mean(0), dim=-1)
                           for ws in texts_per_class])
        return (img @ txt.T).argmax(1).numpy()


def person_predictions(model_name: str, world: Path) -> pd.DataFrame:
    import yaml

    panel = yaml.safe_load((ROOT / "label_sets" / "templates" / "people.yaml").read_text())["templates"]
    t = persons_table(world)
    pred = _encode(model_name, crops(world, t), [[w.format(c) for w in panel] for c in CLASSES])
    t["correct"] = np.array(CLASSES)[pred] == t["class1"].to_numpy()
    t.attrs["truth"] = json.loads((world / "ground_truth.json").read_text())["persons"]
    return t


def region_predictions(model_name: str, world: Path) -> pd.DataFrame:
    from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES

    t = pd.read_csv(world / "regions" / "metadata.csv", keep_default_na=False)
    labels = sorted(set(t["label"]))
    images = [Image.open(world / "regions" / f).convert("RGB") for f in t["file_name"]]
    pred = _encode(model_name, images, [[tpl(c) for tpl in OPENAI_IMAGENET_TEMPLATES] for c in labels])
    t["correct"] = np.array(labels)[pred] == t["label"].to_numpy()
    return t


def gap(flags: np.ndarray, a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """Rate difference a - b and its two-sided p (pooled two-proportion z test)."""
    from scipy.stats import norm

    x, y = flags[a], flags[b]
    pooled = flags[a | b].mean()
    se = np.sqrt(pooled * (1 - pooled) * (1 / len(x) + 1 / len(y)))
    d = x.mean() - y.mean()
    return float(d), float(2 * norm.sf(abs(d) / se)) if se > 0 else (1.0 if d == 0 else 0.0)


def recall_by_gender(t: pd.DataFrame) -> dict:
    return {c: {g: round(float(t[(t["class1"] == c) & (t["gender"] == g)]["correct"].mean()), 3)
                for g in ("masculine", "feminine")} for c in CLASSES}


def accuracy_by(t: pd.DataFrame, attr: str) -> dict:
    return {g: round(float(t[t[attr] == g]["correct"].mean()), 3) for g in sorted(set(t[attr]))}


def observed(preset: str) -> dict:
    return json.loads((ROOT / "audit" / "world" / "presets" / f"{preset}.json").read_text())["observed"]


@pytest.fixture(scope="module")
def planted_persons(scenes):
    return person_predictions("scenes", scenes)


@pytest.fixture(scope="module")
def null_persons(scenes_null):
    return person_predictions("scenes-null", scenes_null)


def test_planted_model_shows_the_planted_recall_gaps(planted_persons):
    t, alpha = planted_persons, 0.05 / len(CLASSES)
    for cls in CLASSES:
        rows = (t["class1"] == cls).to_numpy()
        fem, masc = rows & (t["gender"] == "feminine").to_numpy(), rows & (t["gender"] == "masculine").to_numpy()
        d, p = gap(t["correct"].to_numpy(float), masc, fem)  # masculine minus feminine recall
        if cls in PLANTED:
            group, rate, _ = PLANTED[cls]
            sign = 1 if group == "feminine" else -1
            assert sign * d > rate / 2 and p < alpha, (cls, d, p)  # the planted side, clear of zero
        else:
            assert p > alpha, (cls, d, p)


def test_null_model_shows_no_recall_gap(null_persons):
    t, alpha = null_persons, 0.05 / (len(CLASSES) + 3 + 10)
    flags = t["correct"].to_numpy(float)
    for cls in CLASSES:
        rows = (t["class1"] == cls).to_numpy()
        _, p = gap(flags, rows & (t["gender"] == "masculine").to_numpy(), rows & (t["gender"] == "feminine").to_numpy())
        assert p > alpha, (cls, p)
    for col in ("age", "tone"):  # no group apart from the rest either
        for g in set(t[col]):
            _, p = gap(flags, (t[col] == g).to_numpy(), (t[col] != g).to_numpy())
            assert p > alpha, (col, g, p)


# The observed blocks were measured on one CPU (an Intel Xeon): an argmax at a near-tie may flip
# on another CPU or BLAS build, and one person of a ~50-person class x gender cell is 2 points.
SLACK = 0.02


def close(observed_values, got, slack: float = SLACK) -> bool:
    """The same keys, every value within `slack` (nested dicts compared leaf by leaf)."""
    if isinstance(got, dict):
        return (set(map(str, got)) == set(map(str, observed_values))
                and all(close(observed_values[str(k)], v, slack) for k, v in got.items()))
    return abs(observed_values - got) <= slack


def test_observed_recall_is_what_the_shipped_models_show(planted_persons, null_persons):
    for preset, t in (("scenes", planted_persons), ("scenes-null", null_persons)):
        obs = observed(preset)["persons"]
        assert close(obs["recall"], recall_by_gender(t))
        assert close(obs["accuracy"], round(float(t["correct"].mean()), 3)) and obs["n_val"] == len(t)
        assert close(obs["recall_by_age"], accuracy_by(t, "age"))
        assert close(obs["recall_by_skin_tone"], accuracy_by(t, "tone"))


@pytest.mark.parametrize("preset", ["scenes", "scenes-null"])
def test_region_accuracy_gaps(preset, scenes, scenes_null):
    world = scenes if preset == "scenes" else scenes_null
    t = region_predictions(preset, world)
    flags, alpha = t["correct"].to_numpy(float), 0.05 / 8
    planted = t["income"].isin(list(HARD)).to_numpy() if preset == "scenes" else np.zeros(len(t), bool)
    for attr in ("region", "income"):
        for g in sorted(set(t[attr])):
            rows = (t[attr] == g).to_numpy()
            if rows.any() and planted[rows].all():
                d, p = gap(flags, rows, ~rows)
                assert d < -0.1 and p < alpha, (g, d, p)      # the planted group, clear of zero
            else:  # every other group against the other unplanted ones (the planted one left out)
                rest = ~rows & (~planted if attr == "income" else np.ones(len(t), bool))
                d, p = gap(flags, rows, rest)
                assert p > alpha, (attr, g, d, p)
    obs = observed(preset)["regions"]
    assert close(obs["accuracy"], {a: accuracy_by(t, a) for a in ("region", "income")})


@pytest.mark.parametrize("model, world", [("demo", "default"), ("demo-null", "null"), ("demo-scenes", "scenes"),
                                          ("demo-scenes-null", "scenes-null"), ("ViT-B-32", "default")])
def test_a_demo_model_is_audited_on_its_own_world(model, world, monkeypatch, tmp_path):
    from audit import runner
    from audit.world import layout

    chosen = []
    monkeypatch.setattr(layout, "cached_world", lambda preset, **_: chosen.append(preset) or tmp_path)
    runner.ensure_world(runner.RunOptions(model=model, cache_dir=tmp_path, progress=False))
    assert chosen == [world]
    from audit.models import demo_dir

    if model.startswith("demo-scenes"):
        assert (demo_dir(world) / "open_clip_model.safetensors").is_file()


@pytest.mark.parametrize("change, msg", [
    ({"persons": {"classes": ["gardener", "astronaut"]}}, "persons.classes"),
    ({"persons": {"canvas": 32}}, "persons.canvas"),
    ({"persons": {"gender_word_share": 2}}, "gender_word_share"),
    ({"persons": {"planted": [{"class": "nurse", "reads_as": "pilot", "rate": 0.1}]}}, "reads_as"),
    ({"persons": {"planted": [{"class": "nurse", "reads_as": "waiter", "rate": 1.5}]}}, "rates"),
    ({"persons": {"planted": [{"class": "nurse", "reads_as": "waiter", "rate": 0.1, "where": {"gender": ["x"]}}]}},
     "unknown gender"),
    ({"regions": {"income": []}}, "non-empty"),
    ({"regions": {"hard": {"rate": 0.0, "rules": [{"where": {"region": ["Mars"]}, "rate": 0.5}]}}}, "unknown region"),
    ({"regions": {"hard": {"rate": -1}}}, "rates"),
    ({"sizes": {"person_val_images": 0}}, "person_val_images"),
])
def test_bad_scene_presets_are_user_errors(change, msg):
    from audit.errors import UserError
    from audit.world.generate import load_preset

    with pytest.raises(UserError, match=msg):
        load_preset({"extends": "scenes", **change})


@pytest.mark.parametrize("preset", ["scenes", "scenes-null"])
def test_recall_lost_is_the_share_drawn_in_another_scene(preset, planted_persons, null_persons):
    """The models read the scene: recall per class and gender is 1 minus the share that
    ground_truth.json says was drawn in another class's scene, to within a few people."""
    t = planted_persons if preset == "scenes" else null_persons
    world_truth = t.attrs.get("truth")
    for cls in CLASSES:
        for g in ("masculine", "feminine"):
            cell = t[(t["class1"] == cls) & (t["gender"] == g)]
            misdrawn = cell["filename"].isin(world_truth["val"]["misdrawn"]).mean()
            assert abs((1 - cell["correct"].mean()) - misdrawn) <= 0.06, (preset, cls, g)


def test_scenes_presets_speak_the_world_grammar():
    """Their captions use default's wrappers (tests/world/test_grammar.py checks those against
    every auditor template), never a grammar of their own."""
    from audit.world.generate import load_preset

    for preset in ("scenes", "scenes-null"):
        assert load_preset(preset)["grammar"] == load_preset("default")["grammar"]
