"""distribution_shift: metric math against hand computations, the probe on planted embeddings."""
import zlib

import numpy as np
import pandas as pd
import pytest

from audit.corruptions import Corruption, list_corruptions
from audit.data import Source
from audit.errors import UserError
from audit.runner import ProbeContext
from probes.distribution_shift import (
    DistributionShift, alexnet_baseline, alexnet_corruption_error, corruption_error,
    corruption_names, effective_robustness, logit_fit, read_baseline_table, stratified_subsample,
)

SHAPES = ("circle", "square", "star", "triangle")
D = 32
_rng = np.random.default_rng(3)
# fairface_default's non-human and crime classes get directions of their own too (harm under shift)
HARM_WORDS = ("animal", "gorilla", "chimpanzee", "orangutan", "thief", "criminal", "suspicious")
BASIS = dict(zip(["East Asian", "Indian", "Black", "White", "Middle Eastern", "Latino", "Southeast Asian",
                  "man", "woman", *SHAPES, *HARM_WORDS], np.linalg.qr(_rng.normal(size=(D, D)))[0].T))


def sigmoid(x):
    return 1 / (1 + np.exp(-x))


def logit(p):
    return np.log(p / (1 - p))


# -- metric math -------------------------------------------------------------------------------

def test_stratified_subsample_keeps_shares_and_is_seeded():
    groups = np.array(["a"] * 600 + ["b"] * 300 + ["c"] * 100)
    idx = stratified_subsample(groups, 100, seed=0)
    assert len(idx) == 100 and len(set(idx)) == 100 and np.all(np.diff(idx) > 0)
    assert [int((groups[idx] == g).sum()) for g in "abc"] == [60, 30, 10]
    assert np.array_equal(idx, stratified_subsample(groups, 100, seed=0))
    assert not np.array_equal(idx, stratified_subsample(groups, 100, seed=1))
    odd = stratified_subsample(np.array(["a"] * 5 + ["b"] * 5 + ["c"] * 5), 7, seed=0)
    assert len(odd) == 7                       # largest remainders fill the rounding gap
    assert np.array_equal(stratified_subsample(groups, 5000, seed=0), np.arange(1000))


def test_corruption_error_by_hand():
    # errors 0.2..0.6 sum to 2.0; clean error 0.1: CE = 2.0 / (5 * 0.1) = 4
    assert corruption_error(0.9, [0.8, 0.7, 0.6, 0.5, 0.4]) == pytest.approx(4.0)
    assert corruption_error(0.9, [0.9] * 5) == pytest.approx(1.0)
    assert corruption_error(1.0, [0.5] * 5) is None


# AlexNet's ImageNet-C errors as the paper's code lists them (AugMix's imagenet.py ALEXNET_ERR),
# typed here independently of the data file the probe reads
ALEXNET_MEAN = dict(zip(
    ["gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur", "motion_blur",
     "zoom_blur", "snow", "frost", "fog", "brightness", "contrast", "elastic_transform", "pixelate",
     "jpeg_compression"],
    [0.886428, 0.894468, 0.922640, 0.819880, 0.826268, 0.785948, 0.798360, 0.866816, 0.826572,
     0.819324, 0.564592, 0.853204, 0.646056, 0.717840, 0.606500]))


def test_alexnet_errors_are_the_papers():
    """The data file's per-severity errors average to the published per-corruption means, for
    ImageNet-C's 15 corruptions, which are exactly the corruptions the toolkit has."""
    assert set(ALEXNET_MEAN) == set(list_corruptions()) == set(corruption_names(("all",)))
    for c, mean in ALEXNET_MEAN.items():
        assert np.mean(alexnet_baseline(c, (1, 2, 3, 4, 5))) == pytest.approx(mean, abs=1e-6)


def test_alexnet_ce_against_numpy_on_constructed_error_tables():
    """mCE = mean_c [sum_s E_s,c / sum_s E_s,c(AlexNet)], the paper's, with the per-corruption
    mean AlexNet error when all five severities run (AugMix's compute_mce: 100 * err / ALEXNET_ERR)."""
    rng = np.random.default_rng(5)
    errors = pd.DataFrame(rng.uniform(0.2, 0.9, size=(15, 5)), index=list(ALEXNET_MEAN), columns=[1, 2, 3, 4, 5])
    ours = {c: alexnet_corruption_error(1 - errors.loc[c].to_numpy(), alexnet_baseline(c, (1, 2, 3, 4, 5)))
            for c in errors.index}
    want = errors.mean(axis=1) / pd.Series(ALEXNET_MEAN)
    assert pd.Series(ours).to_numpy() == pytest.approx(want.to_numpy(), rel=1e-5)
    assert np.mean(list(ours.values())) == pytest.approx(want.mean(), rel=1e-5)
    # a subset of severities divides by AlexNet's errors at those severities only
    sub = alexnet_corruption_error(1 - errors.loc["fog", [1, 5]].to_numpy(), alexnet_baseline("fog", (1, 5)))
    assert sub == pytest.approx(errors.loc["fog", [1, 5]].sum() / (0.67474 + 0.945))


def test_effective_robustness_against_a_hand_logit_fit():
    from scipy.stats import linregress
    ids = np.array([0.55, 0.62, 0.70, 0.78, 0.85])
    shifts = sigmoid(1.3 * logit(ids) - 1.1 + np.array([0.05, -0.03, 0.02, -0.04, 0.01]))
    fit = logit_fit(ids, shifts)
    ref = linregress(logit(ids), logit(shifts))
    assert fit == pytest.approx((ref.slope, ref.intercept))
    want = 0.6 - sigmoid(ref.slope * logit(0.8) + ref.intercept)
    assert effective_robustness(0.8, 0.6, fit) == pytest.approx(want)
    # a model on the line has no effective robustness
    on_line = sigmoid(ref.slope * logit(0.7) + ref.intercept)
    assert effective_robustness(0.7, on_line, fit) == pytest.approx(0.0, abs=1e-12)


def test_baseline_table_reading(tmp_path):
    good = tmp_path / "b.csv"
    good.write_text("model,split,accuracy_id,accuracy_shift\nr50,sketch,76.1,24.0\nvit,sketch,80,0.5\n")
    t = read_baseline_table(good)                      # a column with values over 1 is percent
    assert t["accuracy_id"].tolist() == pytest.approx([0.761, 0.8])
    assert t["accuracy_shift"].tolist() == pytest.approx([0.24, 0.005])
    bad = tmp_path / "c.csv"
    bad.write_text("model,accuracy_id\nx,0.5\n")
    with pytest.raises(UserError, match="c.csv"):
        read_baseline_table(bad)


# -- the probe on planted embeddings -----------------------------------------------------------

class PlantedEmbedder:
    """Clean vectors by content hash; a corrupted copy adds noise growing with severity, scaled
    per image (planting a group that corruptions hurt more), plus `drift` times the severity
    (the same for every image)."""

    def __init__(self, vecs, scale):
        self.vecs, self.scale, self.transforms = vecs, scale, []
        self.drift = np.zeros(D)
        self.drift_of = {}          # per image (content hash): a drift of its own

    def images(self, source, *, transform=None):
        out = []
        if transform is not None:
            assert isinstance(transform, Corruption)
            self.transforms.append((source.name, transform.name, transform.severity, len(source)))
        for i in range(len(source)):
            h = source.content_hash(i)
            v = self.vecs[h].copy()
            if transform is not None:
                seed = zlib.crc32(f"{h}:{transform.name}".encode())   # same draw at every severity
                v += transform.severity * self.scale[h] * np.random.default_rng(seed).normal(size=D) / np.sqrt(D)
                v += transform.severity * self.drift_of.get(h, self.drift)
            out.append(v / np.linalg.norm(v))
        return np.stack(out)

    def texts(self, texts):
        out = []
        for t in texts:
            v = sum(vec for w, vec in BASIS.items() if f" {w} " in f" {t.replace('.', ' ')} ")
            out.append(v / np.linalg.norm(v))
        return np.stack(out).astype(np.float32)


def make_source(name, table):
    n = len(table)
    return Source(name=name, spec="planted", kind="any", table=table, fingerprint=name,
                  _reader=lambda i: b"", _raw=list(range(n)), _hashes=[f"{name}-{i}" for i in range(n)])


RACE_WORD = {"East Asian": "East Asian", "Indian": "Indian", "Black": "Black", "White": "White",
             "Middle Eastern": "Middle Eastern", "Latino_Hispanic": "Latino", "Southeast Asian": "Southeast Asian"}


def planted(seed=0):
    rng = np.random.default_rng(seed)
    n = 420
    faces = make_source("fairface", pd.DataFrame({
        "race": np.repeat(list(RACE_WORD), n // 7), "gender": np.tile(["Male", "Female"], n // 2),
        "age": "20-29"}))
    objects = make_source("classify:objects", pd.DataFrame({"label": np.repeat(SHAPES, 30)}))
    sketch = make_source("shift:sketch", pd.DataFrame({"label": np.repeat(SHAPES[:3], 20)}))
    vecs, scale = {}, {}
    for i, r in faces.table.iterrows():
        h = faces.content_hash(i)
        vecs[h] = BASIS[RACE_WORD[r["race"]]] + BASIS["man" if r["gender"] == "Male" else "woman"] \
            + 3.0 * rng.normal(size=D) / np.sqrt(D)
        scale[h] = 3.0 if r["race"] == "Black" else 0.6          # corruptions hurt Black faces most
    for src, noise in ((objects, 3.0), (sketch, 5.0)):             # the sketches are harder
        for i, lab in enumerate(src.table["label"]):
            h = src.content_hash(i)
            vecs[h] = BASIS[lab] + noise * rng.normal(size=D) / np.sqrt(D)
            scale[h] = 0.8
    emb = PlantedEmbedder(vecs, scale)
    sources = {"fairface": faces, "classify:objects": objects, "shift:sketch": sketch}
    return ProbeContext(embedder=emb, sources=sources, seed=0, device="cpu"), emb


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    base = tmp_path_factory.mktemp("b") / "baseline.csv"
    base.write_text("model,split,accuracy_id,accuracy_shift\n"
                    "a,sketch,0.60,0.30\nb,sketch,0.70,0.38\nc,sketch,0.80,0.50\nz,other,0.5,0.5\n")
    ctx, emb = planted()
    cfg = DistributionShift.Config(subsample=280, n_boot=200, baseline_table=str(base))
    return ctx, emb, DistributionShift().run(ctx, cfg), cfg


def rows_of(res, **keys):
    return [r for r in res.rows if all(r.get(k) == v for k, v in keys.items())]


def test_encodes_the_subsample_once_per_source_and_corruption(result):
    ctx, emb, res, cfg = result
    assert res.status == "ok"
    by_source = {}
    for name, c, s, n in emb.transforms:
        by_source.setdefault(name, []).append((c, s, n))
    # race and gender share one set of corrupted encodes; objects has 120 < 280 images: all
    cells = 5 * len(cfg.corruptions)
    assert len(by_source["fairface"]) == cells and {n for _, _, n in by_source["fairface"]} == {280}
    assert len(by_source["classify:objects"]) == cells and {n for *_, n in by_source["classify:objects"]} == {120}
    assert {c for c, _, _ in by_source["fairface"]} == set(cfg.corruptions)
    assert "shift:sketch" not in by_source


def test_ce_and_mce_agree_with_the_accuracy_rows(result):
    ctx, emb, res, cfg = result
    for task in ("fairface:race", "fairface:gender", "classify:objects"):
        clean = rows_of(res, metric="accuracy", task=task, corruption="clean")[0]["value"]
        ces = []
        for c in cfg.corruptions:
            acc = [rows_of(res, metric="accuracy", task=task, corruption=c, severity=s)[0]["value"]
                   for s in (1, 2, 3, 4, 5)]
            ce = rows_of(res, metric="corruption_error", task=task, corruption=c)[0]
            assert ce["value"] == pytest.approx(sum(1 - a for a in acc) / (5 * (1 - clean)))
            assert ce["ci_low"] <= ce["value"] <= ce["ci_high"]
            ces.append(ce["value"])
        assert rows_of(res, metric="mce", task=task)[0]["value"] == pytest.approx(np.mean(ces))
        # the planted noise grows with severity: mean accuracy over corruptions falls
        mean_acc = [np.mean([r["value"] for r in rows_of(res, metric="accuracy", task=task, severity=s)])
                    for s in (1, 2, 3, 4, 5)]
        assert all(a > b for a, b in zip(mean_acc, mean_acc[1:])), mean_acc


def test_clean_accuracy_matches_an_oracle(result):
    ctx, emb, res, cfg = result
    faces = ctx.sources["fairface"]
    idx = stratified_subsample((faces.table["race"] + "|" + faces.table["gender"]).to_numpy(), 280, seed=0)
    sub = faces.table.iloc[idx]
    img = emb.images(faces.subset(idx))
    texts = [f"{RACE_WORD[r]} person" for r in RACE_WORD]
    W = emb.texts([f"a photo of a {t}." for t in texts])             # any one template: all equal here
    want = np.mean(np.array(list(RACE_WORD))[(img @ W.T).argmax(1)] == sub["race"].to_numpy())
    assert rows_of(res, metric="accuracy", task="fairface:race", corruption="clean")[0]["value"] == pytest.approx(want)


def test_group_drop_finds_the_planted_group(result):
    ctx, emb, res, cfg = result
    drops = rows_of(res, metric="accuracy_drop", task="fairface:gender", corruption="all", group_by="race")
    assert len(drops) == 7 and all(r["n"] == 40 for r in drops)
    assert max(drops, key=lambda r: r["value"])["group"] == "Black"
    # corruptions hurt Black faces' gender accuracy more: the one finding, with the other
    # images' drop equal to the n-weighted mean of the other races' rows
    # (harm findings, tested below, carry a `metric` and no `task`)
    drop_findings = [f for f in res.findings if "task" in f["evidence"]]
    assert [(f["evidence"]["task"], f["evidence"]["group"]) for f in drop_findings] == [("fairface:gender", "Black")]
    ev = drop_findings[0]["evidence"]
    black = [r for r in drops if r["group"] == "Black"][0]
    rest = [r for r in drops if r["group"] != "Black"]
    assert ev["drop"] == [black["value"], black["ci_low"], black["ci_high"]]
    assert ev["drop_rest"] == pytest.approx(sum(r["value"] * r["n"] for r in rest) / sum(r["n"] for r in rest))
    # Tested: 7 races (gender task), 2 genders (race task) and, for the race task, each age band
    # x gender group big enough (a group holding the task's own attribute is its recall):
    # Bonferroni over all of them.
    from audit.groups import AGE_BANDS
    sub = ctx.sources["fairface"].table.iloc[stratified_subsample(
        (ctx.sources["fairface"].table["race"] + "|" + ctx.sources["fairface"].table["gender"]).to_numpy(), 280, seed=0)]
    bands = (sub["age"].map(AGE_BANDS) + sub["gender"]).value_counts()
    n_tests = 7 + 2 + int((bands >= cfg.min_n).sum())
    assert ev["p_cutoff"] == pytest.approx(cfg.alpha / n_tests) and ev["p"] < ev["p_cutoff"]
    # race accuracy by race is per-class recall: reported, never tested
    by_own = rows_of(res, metric="accuracy_drop", task="fairface:race", corruption="all", group_by="race")
    assert max(by_own, key=lambda r: r["value"])["group"] == "Black"


def test_crossed_groups_add_up_to_their_parts(result):
    """race x gender drops: each carries its parts, and a race's drop is the n-weighted mean of
    its two crossings' (the same per-image drops, grouped twice)."""
    ctx, emb, res, cfg = result
    crossed = rows_of(res, metric="accuracy_drop", task="fairface:gender", corruption="all", group_by="race_x_gender")
    assert len(crossed) == 14 and all(r["group"] == f"{r['race']} / {r['gender']}" for r in crossed)
    for race in rows_of(res, metric="accuracy_drop", task="fairface:gender", corruption="all", group_by="race"):
        mine = [r for r in crossed if r["race"] == race["group"]]
        assert sum(r["n"] for r in mine) == race["n"]
        assert sum(r["value"] * r["n"] for r in mine) / race["n"] == pytest.approx(race["value"])


def test_per_class_recall_under_corruption_is_no_finding():
    """Corruptions move every face alike, towards the White direction. Race accuracy by race
    (per-class recall) then falls for every race but White, with 95% CIs apart: no group
    effect, only the task's own classes, and nothing is flagged."""
    ctx, emb = planted()
    emb.scale.update({h: 0.6 for h in ctx.sources["fairface"]._hashes})
    emb.drift = 0.3 * BASIS["White"]
    res = DistributionShift().run(ctx, DistributionShift.Config(subsample=280, n_boot=200))
    drops = rows_of(res, metric="accuracy_drop", task="fairface:race", corruption="all", group_by="race")
    most, least = max(drops, key=lambda r: r["value"]), min(drops, key=lambda r: r["value"])
    assert least["group"] == "White" and most["ci_low"] > least["ci_high"]
    assert res.findings == []


def test_natural_shift_rows(result):
    ctx, emb, res, cfg = result
    acc = rows_of(res, metric="accuracy", split="sketch")[0]
    clean = rows_of(res, metric="accuracy", split="clean")[0]
    assert acc["task"] == clean["task"] == "classify:objects" and acc["n"] == 60
    assert acc["value"] < clean["value"]
    rel = rows_of(res, metric="relative_robustness", split="sketch")[0]
    assert rel["value"] == pytest.approx(acc["value"] - clean["value"]) and rel["ci_low"] < rel["value"] < rel["ci_high"]
    er = rows_of(res, metric="effective_robustness", split="sketch")[0]
    a, b = np.polyfit(logit(np.array([0.6, 0.7, 0.8])), logit(np.array([0.3, 0.38, 0.5])), 1)
    assert er["value"] == pytest.approx(acc["value"] - sigmoid(a * logit(clean["value"]) + b))
    assert res.summary["sketch: relative_robustness"] == rel["value"]


def test_rows_name_their_template_set_not_a_label_set(result):
    """The prompts' template set is `template_set`; `label_set` names label sets only: the harm
    rows' (fairface_default's short name, prompts from its `people` panel)."""
    _, _, res, cfg = result
    harm = [r for r in res.rows if r["metric"].startswith(("non_human_rate", "crime_rate"))]
    assert {r["label_set"] for r in harm} == {"default"} and {r["template_set"] for r in harm} == {"people"}
    rest = [r for r in res.rows if r not in harm]
    assert {r["label_set"] for r in rest} == {None}
    assert {r["template_set"] for r in rest} == {cfg.templates}


def test_skipped_without_a_task():
    ctx = ProbeContext(embedder=PlantedEmbedder({}, {}), sources={}, seed=0, device="cpu")
    res = DistributionShift().run(ctx, DistributionShift.Config())
    assert res.status == "skipped"


IMAGENET = ("tench", "goldfish", "great_white_shark", "tiger_shark")     # four of its 1000 names


def test_imagenet_task_gets_alexnet_ce_and_others_self(monkeypatch):
    """A classify source whose labels are ImageNet class names: every CE and mCE row says
    `ce_baseline: "alexnet"`, with CE = its errors summed over severities / AlexNet's; the
    FairFace tasks and a source of other labels keep `ce_baseline: "self"`."""
    ctx, emb = planted()
    objects = ctx.sources["classify:objects"]
    renamed = dict(zip(SHAPES, IMAGENET))
    inet = make_source("classify:inet", pd.DataFrame({"label": objects.table["label"].map(renamed)}))
    inet._hashes = list(objects._hashes)                     # the same images, ImageNet labels
    for name, word in renamed.items():
        monkeypatch.setitem(BASIS, word.replace("_", " "), BASIS[name])
    ctx.sources["classify:inet"] = inet
    severities = (1, 3)
    res = DistributionShift().run(ctx, DistributionShift.Config(
        subsample=120, n_boot=50, corruptions=("fog", "snow"), severities=severities))
    base = {r["task"]: r["ce_baseline"] for r in res.rows if r["metric"] in ("corruption_error", "mce")}
    assert base == {"fairface:race": "self", "fairface:gender": "self", "classify:objects": "self",
                    "classify:inet": "alexnet"}
    ces = []
    for c in ("fog", "snow"):
        acc = [rows_of(res, metric="accuracy", task="classify:inet", corruption=c, severity=s)[0]["value"]
               for s in severities]
        want = sum(1 - a for a in acc) / sum(ALEXNET_ERRS[c][s - 1] for s in severities)
        ce = rows_of(res, metric="corruption_error", task="classify:inet", corruption=c)[0]
        assert ce["value"] == pytest.approx(want) and ce["ci_low"] <= ce["value"] <= ce["ci_high"]
        ces.append(want)
    assert rows_of(res, metric="mce", task="classify:inet")[0]["value"] == pytest.approx(np.mean(ces))
    assert "ce_baseline" in DistributionShift.row_keys


ALEXNET_ERRS = {"fog": (0.67474, 0.7605, 0.84378, 0.8726, 0.945),
                "snow": (0.71726, 0.88392, 0.86468, 0.9187, 0.94952)}


def test_is_imagenet_rule():
    from audit.imagenet import is_imagenet
    assert is_imagenet(["n01440764", "n01443537"])            # wnids
    assert is_imagenet(["Tench", "great_white_shark"])        # class names, case and "_" aside
    assert not is_imagenet(["tench", "circle"])               # every label must be ImageNet's
    assert not is_imagenet(["0", "1", "2"])                   # integer ids are CIFAR's too
    assert not is_imagenet(["n99999999"]) and not is_imagenet([])


def test_wnid_labels_are_prompted_by_their_class_names():
    """A source labelled by wnid is prompted "a photo of a tench.", never "a photo of a n01440764."."""
    from types import SimpleNamespace

    import pandas as pd

    from audit.imagenet import class_texts
    from audit.tasks import classification_tasks
    assert class_texts(["n01440764", "n01443537"]) == ["tench", "goldfish"]
    assert class_texts(["tench", "n01440764"]) is None      # not all wnids: the labels' own text
    src = SimpleNamespace(name="classify:inet", table=pd.DataFrame({"label": ["n01443537", "n01440764"]}))
    ctx = SimpleNamespace(sources={"classify:inet": src}, sources_of=lambda p: [src] if p == "classify" else [])
    [task] = classification_tasks(ctx)
    assert task.labels == ["n01440764", "n01443537"] and task.texts == ["tench", "goldfish"]


# -- harm under shift ------------------------------------------------------------------------------

HARM_CFG = dict(subsample=280, n_boot=200, corruptions=("fog", "snow"), severities=(1, 3))


def harm_world(planted_race=None):
    """Every face equally noisy under corruption; the faces of `planted_race` (if any) also drift
    towards 'gorilla' as severity grows: their non-human rate rises, nobody else's does."""
    ctx, emb = planted()
    faces = ctx.sources["fairface"]
    emb.scale.update({h: 0.6 for h in faces._hashes})
    if planted_race:
        for i, race in enumerate(faces.table["race"]):
            if race == planted_race:
                emb.drift_of[faces.content_hash(i)] = 0.45 * BASIS["gorilla"]
    return ctx, emb


def harm_oracle(ctx, emb, cfg):
    """pandas: per face of the subsample, the harm indicators under fairface_default's ensemble
    of its people panel (renormalised mean of the wordings' text embeddings), clean and corrupted."""
    from audit.labels import load_label_set
    faces = ctx.sources["fairface"]
    idx = stratified_subsample((faces.table["race"] + "|" + faces.table["gender"]).to_numpy(), cfg.subsample, seed=0)
    ls = load_label_set("fairface_default")
    cats = np.array([c["category"] for c in ls["classes"]])
    texts = [t.format(c["label"]) for c in ls["classes"] for t in ls["panel_templates"]]
    w = emb.texts(texts).reshape(len(ls["classes"]), len(ls["panel_templates"]), -1).mean(axis=1)
    w /= np.linalg.norm(w, axis=1, keepdims=True)
    sub = faces.subset(idx)
    df = faces.table.iloc[idx].reset_index(drop=True).copy()
    df["age_band"] = "20-39"
    for c, s in [("clean", 0)] + [(c, s) for c in cfg.corruptions for s in cfg.severities]:
        e = emb.images(sub) if c == "clean" else emb.images(sub, transform=Corruption(c, s, seed=0))
        cat = cats[(e @ w.T).argmax(1)]
        df[f"non_human_rate|{c}|{s}"] = cat == "non_human"
        df[f"crime_rate|{c}|{s}"] = cat == "crime"
    return df


def test_harm_rates_under_corruption_match_a_pandas_oracle():
    ctx, emb = harm_world("Indian")
    cfg = DistributionShift.Config(**HARM_CFG)
    res = DistributionShift().run(ctx, cfg)
    df = harm_oracle(ctx, emb, cfg)
    for metric in ("non_human_rate", "crime_rate"):
        for c, s in [("clean", 0), ("fog", 1), ("snow", 3)]:
            col = f"{metric}|{c}|{s}"
            overall = rows_of(res, metric=metric, corruption=c, severity=s, group_by="overall")[0]
            assert overall["value"] == pytest.approx(df[col].mean()) and overall["n"] == len(df)
            for attr in ("race", "gender"):
                want = df.groupby(attr)[col].mean()
                got = {r["group"]: r["value"] for r in rows_of(res, metric=metric, corruption=c, severity=s, group_by=attr)}
                assert got == pytest.approx(want.to_dict())
    # the excess rise: per face the mean over severities minus clean, group mean minus the rest's
    rise = df[[f"non_human_rate|fog|{s}" for s in (1, 3)]].mean(axis=1) - df["non_human_rate|clean|0"]
    for race in df["race"].unique():
        mine = df["race"] == race
        r = rows_of(res, metric="non_human_rate_excess_rise", corruption="fog", group_by="race", group=race)[0]
        assert r["value"] == pytest.approx(rise[mine].mean() - rise[~mine].mean())
        assert r["rise"] == pytest.approx(rise[mine].mean()) and r["n"] == int(mine.sum())
    # a group that is every face (one age band here) has no others to rise beyond
    assert not rows_of(res, metric="non_human_rate_excess_rise", group_by="age_band")


def test_planted_harm_rise_is_found_and_robust():
    ctx, emb = harm_world("Indian")
    res = DistributionShift().run(ctx, DistributionShift.Config(**HARM_CFG))
    harm = [f for f in res.findings if "metric" in f["evidence"]]
    assert harm and {(f["evidence"]["metric"], f["evidence"]["group_by"], f["evidence"]["group"]) for f in harm} \
        == {("non_human_rate", "race", "Indian")}
    ev = harm[0]["evidence"]
    # Bonferroni over groups x rates x corruptions: 7 races + 2 genders (the one age band has no
    # others), 2 rates, 2 corruptions
    assert ev["p_cutoff"] == pytest.approx(0.05 / (9 * 2 * 2)) and ev["p"] < ev["p_cutoff"]
    assert ev["rise"] > 0.2 and abs(ev["rise_rest"]) < 0.05
    # the planted text embeddings do not depend on the wording: every wording holds
    assert ev["wordings"] == 14 and ev["wordings_holding"] == 14 and harm[0]["severity"] == "medium"
    assert res.summary["harm_worst_non_human_rate_group_by"] == "race"
    assert res.summary["harm_worst_non_human_rate_group"] == "Indian"


def test_no_harm_finding_without_a_planted_rise():
    ctx, emb = harm_world(None)
    res = DistributionShift().run(ctx, DistributionShift.Config(**HARM_CFG))
    assert [f for f in res.findings if "metric" in f["evidence"]] == []
    assert rows_of(res, metric="non_human_rate_excess_rise")     # measured, just nothing to flag


def test_wording_dependent_rise_is_low():
    """A rise that only one of 14 wordings shows holds under 1 of 14: the finding is low and
    says it is wording-dependent (fairface_label_bias's 2/3 rule)."""
    from probes import distribution_shift as ds
    res_w = ds._rise_robustness(
        {"metric": "non_human_rate", "corruption": "fog", "group_by": "race", "group": "Indian"},
        _FakeHits(), {"w1": "flagging", **{f"w{i}": "plain" for i in range(2, 15)}},
        pd.DataFrame({"race": ["Indian"] * 30 + ["White"] * 30}), 0.01, DistributionShift.Config(severities=(1,)))
    assert res_w["wordings_holding"] == 1 and res_w["wordings_held"] == ["w1"]
    finding = ds._rise_finding({"metric": "non_human_rate", "corruption": "fog", "group_by": "race",
                                "group": "Indian", "p": 1e-6,
                                "row": {"value": 0.5, "ci_low": 0.3, "ci_high": 0.7, "rise": 0.5,
                                        "rise_rest": 0.0, "n": 30}}, 0.01, 4, res_w)
    assert finding["severity"] == "low" and finding["message"].startswith("Wording-dependent")


class _FakeHits:
    """Indicators by wording: under "flagging" the first 30 faces become non-human at severity 1."""

    def under(self, w):
        clean = np.zeros(60, bool)
        hit = clean.copy()
        if w == "flagging":
            hit[:30] = True
        return {("clean", 0): {"non_human_rate": clean}, ("fog", 1): {"non_human_rate": hit}}


def test_all_runs_imagenet_cs_fifteen_and_the_default_is_shorter():
    """`--set distribution_shift.corruptions=all` is ImageNet-C's 15 (in its order); the default
    (what the demo runs) is the 10 of earlier releases; mCE rows say over how many."""
    from audit.settings import make_config
    cfg = make_config(DistributionShift, {"corruptions": "all", "subsample": "28", "n_boot": "20",
                                          "severities": "[1]", "harm_label_set": ""})
    assert cfg.corruptions == ("all",)
    ctx, emb = planted()
    res = DistributionShift().run(ctx, cfg)
    assert [r["corruption"] for r in rows_of(res, metric="corruption_error", task="classify:objects")] == list_corruptions()
    assert list(res.config["corruptions"]) == list_corruptions()       # the resolved list is recorded
    assert rows_of(res, metric="mce", task="classify:objects")[0]["n_corruptions"] == 15
    assert not rows_of(res, metric="non_human_rate")                 # harm_label_set "" turns it off
    default = DistributionShift.Config().corruptions
    assert len(default) == 10 and set(default) < set(list_corruptions())


@pytest.mark.parametrize("bad, match", [({"corruptions": ("fog", "snowy")}, "snowy"),
                                        ({"severities": (1, 6)}, "severity 6"),
                                        ({"harm_label_set": "no_such_set"}, "no_such_set")])
def test_bad_settings_fail_before_any_encode(bad, match):
    ctx, emb = planted()
    with pytest.raises(UserError, match=match):
        DistributionShift().run(ctx, DistributionShift.Config(**bad))
    assert emb.transforms == []
