"""group_accuracy: per-group accuracy, top-5, worst group, gaps, CIs, the correction and the
wording robustness against a pandas/scipy oracle on planted embeddings (one region's images made
harder); --group-by; the GeoDE and Dollar Street readers on generated fixtures in their layouts."""
import zlib

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from audit import groups, stats
from audit.data import Source, load_source
from audit.errors import UserError
from audit.runner import ProbeContext, set_group_columns
from audit.tasks import ensemble, named_templates
from probes.group_accuracy import GroupAccuracy, topk_correct

D = 48
CLASSES = ("okapi", "quokka", "axolotl", "narwhal", "pangolin", "tapir", "gharial")
REGIONS = ("Africa", "Americas", "EastAsia", "Europe")
HARD = "Africa"
_rng = np.random.default_rng(5)
BASIS = dict(zip(CLASSES, np.linalg.qr(_rng.normal(size=(D, D)))[0].T))


class PlantedEmbedder:
    """Images: their class's basis vector plus noise (more for the hard region). Texts: the
    class named in the prompt plus a small draw seeded by the whole prompt, so each wording
    differs a little."""

    def __init__(self, vecs):
        self.vecs = vecs

    def images(self, source, *, transform=None):
        return np.stack([self.vecs[source.content_hash(i)] for i in range(len(source))])

    def texts(self, texts):
        out = []
        for t in texts:
            v = sum(vec for w, vec in BASIS.items() if w in t)
            v = v + 0.15 * np.random.default_rng(zlib.crc32(t.encode())).normal(size=D) / np.sqrt(D)
            out.append(v / np.linalg.norm(v))
        return np.stack(out).astype(np.float32)


def make_source(name, table):
    """A classify source of no image files: the planted embedder keys vectors by row hash."""
    hashes = [f"{name}-{i}" for i in range(len(table))]
    return Source(name, "planted", "classify", table, name, _raw=list(range(len(table))), _hashes=hashes)


def planted(*, hard_noise=6.0, noise=2.5, per=140, seed=0):
    rng = np.random.default_rng(seed)
    regions = np.repeat(REGIONS, per)
    table = pd.DataFrame({"label": rng.choice(CLASSES, size=len(regions)), "region": regions,
                          "income": rng.integers(20, 5000, size=len(regions)).astype(str)})
    src = make_source("classify:regions", table)
    vecs = {}
    for i, r in table.iterrows():
        v = BASIS[r["label"]] + (hard_noise if r["region"] == HARD else noise) * rng.normal(size=D) / np.sqrt(D)
        vecs[src.content_hash(i)] = (v / np.linalg.norm(v)).astype(np.float32)
    return ProbeContext(embedder=PlantedEmbedder(vecs), sources={src.name: src}, seed=0, device="cpu")


CFG = GroupAccuracy.Config(n_boot=400)


@pytest.fixture(scope="module")
def ctx():
    return planted()


@pytest.fixture(scope="module")
def result(ctx):
    return GroupAccuracy().run(ctx, CFG)


def oracle_correct(ctx, templates, k):
    """Each image's top-k correctness, recomputed with plain loops over classes."""
    src = ctx.sources["classify:regions"]
    img = ctx.images(src)
    labels = sorted(CLASSES)
    w = []
    for c in labels:
        e = ctx.texts([t.replace("{}", c) for t in templates]).mean(axis=0)
        w.append(e / np.linalg.norm(e))
    scores = img @ np.stack(w).T
    truth = np.array([labels.index(x) for x in src.table["label"]])
    ranks = (scores > scores[np.arange(len(truth)), truth][:, None]).sum(axis=1)
    return ranks < k


def rows_of(result, **filters):
    return [r for r in result.rows if all(r.get(k) == v for k, v in filters.items())]


def test_per_group_accuracy_and_top5_match_a_pandas_oracle(ctx, result):
    table = ctx.sources["classify:regions"].table
    for k, metric in ((1, "accuracy"), (5, "accuracy_top5")):
        df = table.assign(ok=oracle_correct(ctx, named_templates("openai"), k))
        want = df.groupby("region")["ok"].mean()
        got = {r["group"]: r["value"] for r in rows_of(result, metric=metric, group_by="region", template="ensemble")}
        assert got == pytest.approx(want.to_dict())
        overall = rows_of(result, metric=metric, group_by="overall")[0]
        assert overall["value"] == pytest.approx(df["ok"].mean()) and overall["n"] == len(df)


def test_the_planted_region_is_the_worst_with_its_gaps(ctx, result):
    table = ctx.sources["classify:regions"].table
    for k, metric, worst in ((1, "accuracy", "acc_wg"), (5, "accuracy_top5", "acc_top5_wg")):
        acc = table.assign(ok=oracle_correct(ctx, named_templates("openai"), k)).groupby("region")["ok"].mean()
        sfx = "" if k == 1 else "_top5"
        w = rows_of(result, metric=worst, group_by="region")[0]
        assert w["worst_group"] == HARD == acc.idxmin() and w["group"] == "all"
        assert w["value"] == pytest.approx(acc.min())
        assert w["gap_to_mean"] == pytest.approx(acc.min() - acc.mean())
        gaps = {r["group"]: r["value"] for r in rows_of(result, metric=f"gap_to_mean{sfx}", group_by="region")}
        assert gaps == pytest.approx((acc - acc.mean()).to_dict())
        overall = rows_of(result, metric=metric, group_by="overall")[0]["value"]
        gaps = {r["group"]: r["value"] for r in rows_of(result, metric=f"gap_to_overall{sfx}", group_by="region")}
        assert gaps == pytest.approx((acc - overall).to_dict())
        mean = rows_of(result, metric=f"group_mean_accuracy{sfx}", group_by="region")[0]
        assert mean["value"] == pytest.approx(acc.mean())
        assert w["ci_low"] <= w["value"] <= w["ci_high"]
    assert result.summary["classify:regions by region: acc_top5_wg group"] == HARD


def test_cis_hold_their_value_and_have_the_binomial_width(result):
    for r in rows_of(result, metric="accuracy", group_by="region", template="ensemble"):
        assert r["ci_low"] <= r["value"] <= r["ci_high"]
        p, n = r["value"], r["n"]
        assert r["ci_high"] - r["ci_low"] == pytest.approx(2 * 1.96 * np.sqrt(p * (1 - p) / n), rel=0.3)
    for r in rows_of(result, metric="gap_to_mean", group_by="region"):
        assert r["ci_low"] <= r["value"] <= r["ci_high"]


def holm_oracle(p):
    order = np.argsort(p)
    out, running = np.empty(len(p)), 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(p) - rank) * p[i]))
        out[i] = running
    return out


def fisher_p(ok, in_group):
    """One-sided Fisher exact test: more errors in the group than in the rest."""
    from scipy.stats import fisher_exact

    err = ~ok
    table = [[(err & in_group).sum(), (~err & in_group).sum()], [(err & ~in_group).sum(), (~err & ~in_group).sum()]]
    return fisher_exact(table, alternative="greater").pvalue


def test_only_the_planted_region_is_flagged_with_holm_p_values(ctx, result):
    table = ctx.sources["classify:regions"].table
    family = []
    for k in (1, 5):
        ok = oracle_correct(ctx, named_templates("openai"), k)
        for col in ("region", "income"):
            labels, _ = _labels(table, col)
            for g in sorted(set(labels)):
                if (labels == g).sum() >= CFG.min_n:
                    family.append((k, col, g, fisher_p(ok, labels == g) if ok[labels == g].mean() < ok.mean() else 1.0))
    adjusted = holm_oracle(np.array([f[3] for f in family]))
    flagged = {(k, col, g) for (k, col, g, _), a in zip(family, adjusted) if a < CFG.alpha}
    found = {(1 if f["evidence"]["metric"] == "accuracy" else 5, f["evidence"]["group_by"], f["evidence"]["group"])
             for f in result.findings}
    assert found == flagged and (1, "region", HARD) in found
    assert {g for _, _, g in found} <= {HARD} | {g for g in set(_labels(table, "income")[0])}
    for f in result.findings:
        ev = f["evidence"]
        i = next(i for i, x in enumerate(family) if (x[0], x[1], x[2]) == (1 if ev["metric"] == "accuracy" else 5, ev["group_by"], ev["group"]))
        assert ev["p_value"] == pytest.approx(family[i][3], rel=1e-6)
        assert ev["p_adjusted"] == pytest.approx(adjusted[i], rel=1e-6)
        assert ev["tests"] == len(family) and ev["correction"] == "holm"


def _labels(table, col):
    from probes.group_accuracy import _group_labels
    return _group_labels(table, col)


def test_findings_carry_the_wording_robustness(ctx, result):
    panel = named_templates("label_wording")
    table = ctx.sources["classify:regions"].table
    f = next(f for f in result.findings if f["evidence"]["group"] == HARD and f["evidence"]["metric"] == "accuracy")
    ev = f["evidence"]
    assert ev["wordings"] == len(panel) and set(ev["per_wording"]) == set(panel)
    for w in panel:
        ok = oracle_correct(ctx, [w], 1)
        hard = table["region"].to_numpy() == HARD
        assert ev["per_wording"][w] == pytest.approx(ok[hard].mean())
        assert ev["per_wording_rest"][w] == pytest.approx(ok[~hard].mean())
    assert ev["wordings_holding"] == len(ev["wordings_held"]) >= 7
    assert f["severity"] in ("high", "medium") and f"Holds under {ev['wordings_holding']} of {len(panel)}" in f["message"]
    # the wording rows are the strip's numbers
    for w in panel:
        r = rows_of(result, metric="accuracy", group_by="region", group=HARD, template=w)[0]
        assert r["value"] == pytest.approx(ev["per_wording"][w]) and r["ci_low"] is None


def test_a_numeric_income_is_binned_into_quartiles(ctx, result):
    table = ctx.sources["classify:regions"].table
    income = table["income"].astype(float)
    want = pd.qcut(income, 4, labels=["Q1 (lowest)", "Q2", "Q3", "Q4 (highest)"]).astype(str)
    labels, note = _labels(table, "income")
    assert (labels == want.to_numpy()).all() and "binned" in note
    got = {r["group"]: r["n"] for r in rows_of(result, metric="accuracy", group_by="income", template="ensemble")}
    assert got == want.value_counts().to_dict()


def test_a_null_world_raises_no_finding():
    result = GroupAccuracy().run(planted(hard_noise=2.5, seed=1), CFG)
    assert result.status == "ok" and result.findings == []


def test_small_groups_get_no_ci_and_no_part_in_the_worst_group():
    ctx = planted(per=40)
    table = ctx.sources["classify:regions"].table
    table.loc[table.index[:5], "region"] = "Antarctica"   # 5 images: below min_n
    result = GroupAccuracy().run(ctx, CFG)
    tiny = rows_of(result, metric="accuracy", group_by="region", group="Antarctica", template="ensemble")[0]
    assert tiny["ci_low"] is None and tiny["note"] == stats.TOO_FEW and tiny["n"] == 5
    assert not rows_of(result, metric="gap_to_mean", group="Antarctica")
    assert rows_of(result, metric="acc_wg", group_by="region")[0]["worst_group"] != "Antarctica"
    assert all(f["evidence"]["group"] != "Antarctica" for f in result.findings)


def test_a_wording_dependent_finding_is_low():
    from probes.group_accuracy import _finding
    t = {"task": "classify:x", "group_by": "region", "k": 1, "overall": 0.8, "gap_to_mean": -0.2, "p": np.array([1e-6]),
         "row": {"metric": "accuracy", "group": "A", "value": 0.6, "ci_low": 0.5, "ci_high": 0.7, "n": 100}}
    robust = {"wordings_holding": 3, "wordings": 10, "wordings_held": ["{}", "a {}.", "{}."]}
    f = _finding(t, 1e-5, 4, CFG, robust)
    assert f["severity"] == "low" and f["message"].startswith("Wording-dependent") and "3 of 10" in f["message"]
    assert _finding(t, 1e-5, 4, CFG, {**robust, "wordings_holding": 7})["severity"] == "high"


def test_topk_correct_by_hand():
    scores = np.array([[0.1, 0.9, 0.5, 0.3, 0.2, 0.0], [0.9, 0.1, 0.2, 0.3, 0.4, 0.5]])
    assert topk_correct(scores, np.array([1, 1]), 1).tolist() == [True, False]
    # row 0: class 4 ranks 5th (in), class 5 last (out); row 1: class 1 last, class 2 5th
    assert topk_correct(scores, np.array([4, 1]), 5).tolist() == [True, False]
    assert topk_correct(scores, np.array([5, 2]), 5).tolist() == [False, True]


def test_no_top5_with_fewer_than_five_classes():
    ctx = planted()
    src = ctx.sources["classify:regions"]
    src.table["label"] = src.table["label"].where(src.table["label"].isin(CLASSES[:3]), CLASSES[0])
    result = GroupAccuracy().run(ctx, CFG)
    assert rows_of(result, metric="accuracy") and not rows_of(result, metric="accuracy_top5")


def test_a_source_without_group_columns_is_skipped_before_any_encoding():
    class Refuses(PlantedEmbedder):
        def images(self, source, *, transform=None):
            raise AssertionError("encoded")
        texts = images
    src = make_source("classify:objects", pd.DataFrame({"label": list(CLASSES)}))
    ctx = ProbeContext(embedder=Refuses({}), sources={src.name: src}, seed=0, device="cpu")
    result = GroupAccuracy().run(ctx, CFG)
    assert result.status == "skipped" and "--group-by" in result.message


# -- --group-by ---------------------------------------------------------------------------------

def test_group_by_names_the_columns_and_a_missing_one_is_one_line():
    src = make_source("classify:regions", pd.DataFrame({"label": ["a"], "region": ["x"], "income": ["1"]}))
    sources = {src.name: src}
    set_group_columns(sources, ["income"])
    assert src.attrs["group_by"] == ["income"]
    with pytest.raises(UserError) as e:
        set_group_columns(sources, ["region", "continent"])
    msg = str(e.value)
    assert "\n" not in msg and "classify:regions" in msg and "continent" in msg and "label, region, income" in msg
    set_group_columns(sources, None)
    assert src.attrs["group_by"] == ["region", "income"]


def test_auto_detection_prefers_income_group_and_knows_the_columns():
    table = pd.DataFrame(columns=["label", "country", "income", "income_group", "region", "topics"])
    assert groups.group_columns_of(table, None, where="x") == ["region", "income_group", "country"]
    assert groups.group_columns_of(pd.DataFrame(columns=["label", "shape"]), None, where="x") == []


def test_cli_passes_group_by_to_the_runner(monkeypatch, tmp_path):
    from audit import cli, runner
    seen = {}

    def fake_run(opts):
        seen["group_by"] = opts.group_by
        raise UserError("stop here")
    monkeypatch.setattr(runner, "run", fake_run)
    assert cli.main(["run", "--group-by", "region, income_group", "--out", str(tmp_path)]) == 2
    assert seen["group_by"] == ["region", "income_group"]
    assert cli.main(["run", "--out", str(tmp_path)]) == 2 and seen["group_by"] is None


# -- readers: an image folder, GeoDE, Dollar Street ------------------------------------------------

def _jpg(path, colour):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), colour).save(path)


def test_an_imagefolder_with_region_and_income_is_grouped(tmp_path):
    rows = []
    for i in range(12):
        _jpg(tmp_path / "images" / f"{i}.jpg", (i * 20, 0, 0))
        rows.append({"file_name": f"images/{i}.jpg", "label": CLASSES[i % 3], "region": REGIONS[i % 2],
                     "income": ["low", "high"][i % 2]})
    pd.DataFrame(rows).to_csv(tmp_path / "metadata.csv", index=False)
    src = load_source(str(tmp_path), "classify", name="classify:regions")
    set_group_columns({src.name: src}, None)
    assert src.attrs["group_by"] == ["region", "income"]


def geode(root, rows=None):
    rows = rows or [("bag", "Africa", "Nigeria"), ("bag", "Europe", "Italy"), ("stove", "WestAsia", "Turkey"),
                    ("hand_soap", "EastAsia", "Japan")]
    out = []
    for i, (obj, region, country) in enumerate(rows):
        _jpg(root / "images" / obj / f"{obj}_{i}.jpg", (i * 40, 10, 10))
        out.append({"file_path": f"images/{obj}/{obj}_{i}.jpg", "object": obj, "region": region, "ip_country": country})
    pd.DataFrame(out).to_csv(root / "index.csv", index=False)
    return pd.DataFrame(out)


def test_geode_index_is_read_as_a_classify_source(tmp_path):
    want = geode(tmp_path)
    src = load_source(str(tmp_path), "classify")
    assert src.table["label"].tolist() == want["object"].tolist()
    assert src.table["region"].tolist() == want["region"].tolist()
    assert src.table["country"].tolist() == want["ip_country"].tolist()
    assert len(src) == 4 and groups.group_columns_of(src.table, None, where="x") == ["region", "country"]
    assert load_source(str(tmp_path / "index.csv"), "classify").fingerprint == src.fingerprint


def test_geode_without_its_columns_is_one_line_naming_the_file(tmp_path):
    geode(tmp_path)
    pd.read_csv(tmp_path / "index.csv").drop(columns=["region"]).to_csv(tmp_path / "index.csv", index=False)
    with pytest.raises(UserError) as e:
        load_source(str(tmp_path), "classify")
    assert "index.csv" in str(e.value) and "GeoDE" in str(e.value) and "region" in str(e.value)
    assert "\n" not in str(e.value)


def dollar_street(root, n=16, name="images_v2_imagenet_test.csv"):
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        rel = f"assets/{i:04x}/{i}.jpg"
        _jpg(root / rel, (10, i * 15, 10))
        topic = CLASSES[i % 4]
        out.append({"id": f"{i:04x}", "country.id": "ng", "country.name": ["Nigeria", "India", "Sweden"][i % 3],
                    "region.id": ["af", "as", "eu", "am"][i % 4], "type": "image", "imageRelPath": rel,
                    "topics": f"['{topic}', 'home']" if i % 2 else f'["{topic}"]', "place": "x",
                    "income": str(int(rng.integers(27, 10000))), "imagenet_synonyms": "['x']",
                    "imagenet_sysnet_id": "['n0']"})
    pd.DataFrame(out).to_csv(root / name, index=False)
    return pd.DataFrame(out)


def test_dollar_street_is_read_with_its_own_income_quartiles(tmp_path):
    want = dollar_street(tmp_path)
    src = load_source(str(tmp_path), "classify")
    assert src.table["label"].tolist() == [CLASSES[i % 4] for i in range(16)]
    assert src.table["region"].tolist() == want["region.id"].tolist()
    assert src.table["country"].tolist() == want["country.name"].tolist()
    q = pd.qcut(want["income"].astype(float), 4, labels=["Q1 (lowest)", "Q2", "Q3", "Q4 (highest)"]).astype(str)
    assert src.table["income_group"].tolist() == q.tolist()
    bins = src.attrs["group_bins"]["income_group"]
    assert bins["edges"] == pytest.approx(np.quantile(want["income"].astype(float), [.25, .5, .75]).tolist())
    assert groups.group_columns_of(src.table, None, where="x") == ["region", "income_group", "country"]


def test_dollar_street_bad_cells_are_one_line_naming_the_file(tmp_path):
    dollar_street(tmp_path, name="images_v2.csv")
    table = pd.read_csv(tmp_path / "images_v2.csv", dtype=str)
    table.loc[3, "income"] = "lots"
    table.to_csv(tmp_path / "images_v2.csv", index=False)
    with pytest.raises(UserError) as e:
        load_source(str(tmp_path), "classify")
    assert "images_v2.csv: line 5: income 'lots' is not a number" in str(e.value)
    table.loc[3, "income"] = "100"
    table.loc[2, "topics"] = "[]"
    table.to_csv(tmp_path / "images_v2.csv", index=False)
    with pytest.raises(UserError, match=r"images_v2.csv: line 4: topics '\[\]' names no topic"):
        load_source(str(tmp_path), "classify")
    table.drop(columns=["income"]).to_csv(tmp_path / "images_v2.csv", index=False)
    with pytest.raises(UserError, match="a Dollar Street table needs column.*missing income"):
        load_source(str(tmp_path), "classify")


def test_dollar_street_end_to_end_through_the_probe(tmp_path):
    """The reader's groups reach the probe (a planted embedder keyed by content hash)."""
    dollar_street(tmp_path, n=48)
    src = load_source(str(tmp_path), "classify", name="classify:dollarstreet")
    rng = np.random.default_rng(0)
    vecs = {src.content_hash(i): BASIS[lab] + rng.normal(size=D) / np.sqrt(D)
            for i, lab in enumerate(src.table["label"])}
    ctx = ProbeContext(embedder=PlantedEmbedder(vecs), sources={src.name: src}, seed=0, device="cpu")
    set_group_columns(ctx.sources, None)
    result = GroupAccuracy().run(ctx, GroupAccuracy.Config(n_boot=50, min_n=5))
    assert {r["group_by"] for r in result.rows} == {"overall", "region", "income_group", "country"}
    assert result.summary["classify:dollarstreet: bins"]["income_group"]["labels"][0] == "Q1 (lowest)"
    assert rows_of(result, metric="acc_wg", group_by="income_group")[0]["worst_group"].startswith("Q")
