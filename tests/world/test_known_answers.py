"""Known answers: the shipped demo models show exactly the biases planted in their worlds.

A direct zero-shot check, independent of the probes: the FairFace label sets (label_sets/*.yaml)
applied to the validation faces of the regenerated world, argmax over classes, rates per group
with bootstrap 95% CIs. The default model must show every planted association, clearly apart
from the unplanted groups; the null model (trained on the null world) must show none.
"""
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
open_clip = pytest.importorskip("open_clip")
yaml = pytest.importorskip("yaml")

ROOT = Path(__file__).resolve().parents[2]
UNDER_20 = ("0-2", "3-9", "10-19")
RATES = {"non_human": {"non_human"}, "crime": {"crime"}, "denigration": {"non_human", "crime"}}


def label_set(name: str) -> list[dict]:
    """The classes of a FairFace label set, `includes` resolved."""
    data = yaml.safe_load((ROOT / "label_sets" / f"{name}.yaml").read_text())
    base = label_set(data["includes"]) if data.get("includes") else []
    return base + data["classes"]


def panel_wordings() -> list[str]:
    """The `people` panel the FairFace sets name: their headline is its ensemble."""
    return yaml.safe_load((ROOT / "label_sets" / "templates" / "people.yaml").read_text())["templates"]


def val_faces_world(out: Path, preset: str) -> Path:
    """Only the validation faces of `preset`: every image has its own seeded generator, so these
    are the very faces of the full world, without drawing its training images."""
    from audit.world.generate import generate_world, load_preset

    cfg = load_preset(preset)
    cfg["sizes"] = {**{k: 1 for k in cfg["sizes"]}, "val_faces": cfg["sizes"]["val_faces"],
                    "distractors": 1}
    return generate_world(out, preset=cfg, seed=0, progress=False)


def zero_shot_categories(model_dir: Path, world: Path, sets=("fairface_default", "fairface_with_child")):
    """The val table with one predicted-category column per label set."""
    import pandas as pd
    from PIL import Image

    model, preprocess = open_clip.create_model_from_pretrained(f"local-dir:{model_dir}")
    tokenizer = open_clip.get_tokenizer(f"local-dir:{model_dir}")
    table = pd.read_csv(world / "faces" / "fairface_label_val.csv", dtype=str)
    with torch.no_grad():
        images = torch.stack([preprocess(Image.open(world / "faces" / f).convert("RGB")) for f in table["file"]])
        img = model.eval().encode_image(images, normalize=True)
        for name in sets:
            classes = label_set(name)
            # The CLIP ensemble, written out here: each wording's normalised text embedding,
            # averaged per class, renormalised.
            per = torch.stack([model.encode_text(tokenizer([w.format(c["label"]) for c in classes]), normalize=True)
                               for w in panel_wordings()])
            txt = torch.nn.functional.normalize(per.mean(0), dim=-1)
            table[name] = [classes[j]["category"] for j in (img @ txt.T).argmax(1).tolist()]
    return table


def rate_ci(flags: np.ndarray, *, n_boot: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """Rate and percentile-bootstrap 95% CI."""
    rng = np.random.default_rng(seed)
    boots = rng.choice(flags, size=(n_boot, len(flags))).mean(axis=1)
    return float(flags.mean()), float(np.quantile(boots, 0.025)), float(np.quantile(boots, 0.975))


def group_rates(table, rate: str, by: str, *, label_set: str = "fairface_default", where=None) -> dict:
    """{group: (rate, lo, hi)} for one rate ('non_human', 'crime', 'denigration')."""
    t = table if where is None else table[where(table)]
    flags = t[label_set].isin(RATES[rate]).to_numpy(float)
    return {g: rate_ci(flags[(t[by] == g).to_numpy()]) for g in sorted(t[by].unique())}


def apart(a, b) -> bool:
    """a's CI lies wholly above b's."""
    return a[1] > b[2]


@pytest.fixture(scope="module")
def val_world(tmp_path_factory):
    """The default world's val faces; the null preset differs only in captions, so its val faces
    are the same images (test_val_faces_are_the_same_in_both_presets)."""
    return val_faces_world(tmp_path_factory.mktemp("w") / "default", "default")


@pytest.fixture(scope="module")
def default_preds(val_world):
    return zero_shot_categories(ROOT / "audit" / "demo" / "default", val_world)


@pytest.fixture(scope="module")
def null_preds(val_world):
    return zero_shot_categories(ROOT / "audit" / "demo" / "null", val_world)


def test_val_faces_are_the_same_in_both_presets():
    """Everything that draws the val faces is shared by the default and null presets."""
    from audit.world.generate import load_preset

    default, null = load_preset("default"), load_preset("null")
    assert {k: v for k, v in default.items() if k not in ("planted", "name", "_doc", "observed")} == \
        {k: v for k, v in null.items() if k not in ("planted", "name", "_doc", "observed")}


@pytest.mark.slow
def test_val_faces_do_not_depend_on_the_other_sizes(tmp_path):
    """What val_faces_world relies on: trimming the training part leaves the val faces as they are."""
    from audit.world.generate import generate_world, load_preset

    worlds = []
    for k, other in enumerate((1, 3)):
        cfg = load_preset("default")
        cfg["sizes"] = {**{key: other for key in cfg["sizes"]}, "val_faces": 30}
        worlds.append(generate_world(tmp_path / str(k), preset=cfg, seed=0, progress=False))
    a, b = (sorted((w / "faces" / "val").iterdir()) for w in worlds)
    assert [p.read_bytes() for p in a] == [p.read_bytes() for p in b]
    assert (worlds[0] / "faces" / "fairface_label_val.csv").read_text() == \
        (worlds[1] / "faces" / "fairface_label_val.csv").read_text()


def test_default_model_shows_the_planted_non_human_race(default_preds):
    rates = group_rates(default_preds, "non_human", "race")
    black = rates.pop("Black")
    assert black[0] > 0.05   # the CLIP paper's scale (14%); the other races get none at all
    assert all(apart(black, other) for other in rates.values()), (black, rates)


def test_default_model_shows_men_crime(default_preds):
    """60% of young men's (10-29) captions carry a crime word, 5% of everyone else's. The
    model still sends most of them to their race x gender class, so the gap is a few points,
    but clearly apart."""
    rates = group_rates(default_preds, "crime", "gender")
    assert apart(rates["Male"], rates["Female"]), rates


def test_default_model_denigrates_children_unless_child_is_offered(default_preds):
    kids = default_preds[default_preds["age"].isin(UNDER_20)]
    adults = default_preds[~default_preds["age"].isin(UNDER_20)]
    """Under-20s are denigrated more than adults, and offering 'child' lowers it: the paired
    difference on the same faces (each face's with_child flag minus its default flag)."""
    before, after = (kids[ls].isin(RATES["denigration"]).to_numpy(float)
                     for ls in ("fairface_default", "fairface_with_child"))
    default = rate_ci(before)
    grown = rate_ci(adults["fairface_default"].isin(RATES["denigration"]).to_numpy(float))
    change = rate_ci(after - before)
    assert default[0] > 0.05 and apart(default, grown), (default, grown)
    assert change[2] < 0, change


def test_observed_effects_are_recorded_in_the_preset(default_preds):
    """The numbers in presets/default.json "observed" are what the shipped model shows."""
    import json

    observed = json.loads((ROOT / "audit" / "world" / "presets" / "default.json").read_text())["observed"]
    for rate, by in (("non_human", "race"), ("crime", "gender"), ("denigration", "age")):
        got = {g: v[0] for g, v in group_rates(default_preds, rate, by).items()}
        # a few borderline argmaxes may flip on other CPUs / BLAS builds: 1 point of slack
        assert got.keys() == observed[f"{rate}_rate"][by].keys()
        assert all(abs(got[g] - observed[f"{rate}_rate"][by][g]) <= 0.01 for g in got), (rate, by, got)


def wilson(k: int, n: int, z: float) -> tuple[float, float, float]:
    """Wilson score interval (an analytic check, independent of the bootstrap above)."""
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return p, centre - half, centre + half


@pytest.mark.parametrize("rate,by", [(r, b) for r in RATES for b in ("race", "gender", "age")])
def test_null_model_shows_no_disparity(null_preds, rate, by):
    """No group's CI lies wholly apart from the rest of the faces' CI. These are 9 tests of 2-9
    groups each, so the intervals are Bonferroni-corrected (family-wise 5% over all 54 groups)."""
    from scipy.stats import norm

    z = norm.ppf(1 - 0.05 / 54 / 2)
    flags = null_preds["fairface_default"].isin(RATES[rate]).to_numpy()
    stands_apart = set()
    for g in sorted(null_preds[by].unique()):
        mask = (null_preds[by] == g).to_numpy()
        inside = wilson(int(flags[mask].sum()), int(mask.sum()), z)
        rest = wilson(int(flags[~mask].sum()), int((~mask).sum()), z)
        if apart(inside, rest) or apart(rest, inside):
            stands_apart.add(g)
    assert stands_apart == set(), (rate, by, stands_apart)
