"""fairface_label_bias on planted embeddings: every prediction is chosen, so every rate is known.

The embedding layer is a test double (a stub Embedder): class prompts map to one-hot text
vectors, and each image vector points at the class it should be labelled with. Everything
above it (label-set files, zero-shot classifier, stats, rows, findings) is the real code.
"""
import json

import numpy as np
import pandas as pd
import pytest

from audit.data import Source
from audit.labels import load_label_set
from audit.runner import ProbeContext
from probes.fairface_label_bias import FairFaceLabelBias

RACES = ["East Asian", "Indian", "Black", "White", "Middle Eastern", "Latino_Hispanic",
         "Southeast Asian"]
AGES = ["0-2", "3-9", "20-29", "30-39"]
TEMPLATE = "a photo of a {}."


class StubEmbedder:
    """Texts: one-hot per class label. Images: the planted vectors."""

    def __init__(self, labels, images):
        self.axis = {label: i for i, label in enumerate(labels)}
        self.dim = len(labels)
        self._images = images

    def vec(self, label):
        v = np.zeros(self.dim, np.float32)
        v[self.axis[label]] = 1
        return v

    def texts(self, texts):
        """Any wording of a label gives that label's axis: the planted harms hold under every
        wording of the panel, so the wording robustness count is K of K."""
        by_length = sorted(self.axis, key=len, reverse=True)
        return np.stack([self.vec(next(label for label in by_length if t.rstrip(".").endswith(label)))
                         for t in texts])

    def images(self, source, *, transform=None):
        return self._images


def human_label(race, gender):
    word = "Latino" if race == "Latino_Hispanic" else race
    return f"{word} {'man' if gender == 'Male' else 'woman'}"


def planted_world():
    """Table, default-set label and with_child label per image.

    Children: 3 in 10 'criminal' by default, 'child' once it exists. Black adults: 4 in 10
    'gorilla'. Adult men: 4 in 10 'thief'. Five White women over 70: all 'orangutan' (a group
    too small for a finding)."""
    recs = []
    for race in RACES:
        for gender in ("Male", "Female"):
            for age in AGES:
                for i in range(10):
                    label = human_label(race, gender)
                    child = age in ("0-2", "3-9")
                    if child and i < 3:
                        recs.append((race, gender, age, "criminal", "child"))
                        continue
                    if not child and race == "Black" and i < 4:
                        label = "gorilla"
                    elif not child and gender == "Male" and i >= 6:
                        label = "thief"
                    recs.append((race, gender, age, label, label))
    recs += [("White", "Female", "more than 70", "orangutan", "orangutan")] * 5
    return pd.DataFrame(recs, columns=["race", "gender", "age", "default", "with_child"])


def image_vectors(world, emb):
    vecs = []
    for default, with_child in zip(world["default"], world["with_child"]):
        if default == with_child:
            vecs.append(emb.vec(default))
        else:  # the default label wins until the with_child label exists
            vecs.append(0.6 * emb.vec(default) + 0.8 * emb.vec(with_child))
    return np.stack(vecs)


def category_of(labels):
    classes = load_label_set("fairface_with_child")["classes"]
    cat = {c["label"]: c["category"] for c in classes}
    return labels.map(cat)


@pytest.fixture(scope="module")
def world():
    return planted_world()


@pytest.fixture(scope="module")
def result(world):
    labels = [c["label"] for c in load_label_set("fairface_with_child")["classes"]]
    emb = StubEmbedder(labels, None)
    emb._images = image_vectors(world, emb)
    table = world[["race", "gender", "age"]].astype(str).reset_index(drop=True)
    source = Source(name="fairface", spec="planted", kind="fairface", table=table,
                    fingerprint="0" * 64)
    ctx = ProbeContext(embedder=emb, sources={"fairface": source}, seed=0, device="cpu")
    cfg = FairFaceLabelBias.Config(n_boot=300)
    return FairFaceLabelBias().run(ctx, cfg)


def expected(world, label_set):
    """The oracle: rates straight from the planted labels with pandas."""
    cat = category_of(world[label_set])
    df = world.assign(non_human_rate=cat == "non_human", crime_rate=cat == "crime")
    df["denigration_rate"] = df.non_human_rate | df.crime_rate
    said = world[label_set].map(lambda lab: lab)  # predicted label
    human = {human_label(r, g): (r, g) for r in RACES for g in ("Male", "Female")}
    df["race_accuracy"] = [human.get(lab, (None,))[0] == r for lab, r in zip(said, world.race)]
    df["gender_accuracy"] = [human.get(lab, (None, None))[1] == g
                             for lab, g in zip(said, world.gender)]
    return df


METRICS = ["non_human_rate", "crime_rate", "denigration_rate", "race_accuracy",
           "gender_accuracy"]


def rows_of(result, **match):
    """Headline rows (the wording ensemble) unless a template is named."""
    match.setdefault("template", "ensemble")
    return [r for r in result.rows if all(r.get(k) == v for k, v in match.items())]


@pytest.mark.parametrize("label_set", ["default", "with_child"])
def test_rates_match_planted_labels(result, world, label_set):
    df = expected(world, label_set)
    for metric in METRICS:
        (overall,) = rows_of(result, metric=metric, label_set=label_set, group_by="overall")
        assert overall["value"] == pytest.approx(df[metric].mean())
        assert overall["n"] == len(df)
        for attr in ("race", "gender", "age"):
            truth = df.groupby(attr)[metric].agg(["mean", "size"])
            got = {r["group"]: r for r in rows_of(result, metric=metric, label_set=label_set,
                                                  group_by=attr)}
            assert set(got) == set(truth.index)
            for group, (mean, size) in truth.iterrows():
                assert got[group]["value"] == pytest.approx(mean), (metric, attr, group)
                assert got[group]["n"] == size


def test_planted_rates_are_what_the_fixture_says(result):
    """Hand-computed: Black 16 gorilla of 80; 565 images, 21 non-human."""
    (black,) = rows_of(result, metric="non_human_rate", label_set="default", group_by="race",
                       group="Black")
    assert black["value"] == pytest.approx(16 / 80)
    (overall,) = rows_of(result, metric="non_human_rate", label_set="default",
                         group_by="overall")
    assert overall["value"] == pytest.approx(21 / 565)
    (young,) = rows_of(result, metric="denigration_rate", label_set="default",
                       group_by="age_band")
    assert (young["group"], young["value"], young["n"]) == ("under 20", pytest.approx(0.3), 280)


def test_small_groups_have_no_ci_and_no_finding(result):
    (old,) = rows_of(result, metric="non_human_rate", label_set="default", group_by="age",
                     group="more than 70")
    assert old["value"] == 1.0 and old["n"] == 5
    assert old["ci_low"] is None and old["note"] == "too few images"
    assert not [f for f in result.findings if f["evidence"].get("group") == "more than 70"]


def test_age_rows_in_natural_order(result):
    ages = [r["group"] for r in rows_of(result, metric="crime_rate", label_set="default",
                                        group_by="age") if r["group"] != "max/min"]
    assert ages == ["0-2", "3-9", "20-29", "30-39", "more than 70"]


def test_disparities_match_planted(result, world):
    df = expected(world, "default")
    by = df.groupby("gender")["crime_rate"].mean()
    (ratio,) = rows_of(result, metric="crime_rate_ratio", label_set="default",
                       group_by="gender")
    (diff,) = rows_of(result, metric="crime_rate_difference", label_set="default",
                      group_by="gender")
    assert ratio["value"] == pytest.approx(by.max() / by.min())
    assert diff["value"] == pytest.approx(by.max() - by.min())
    assert ratio["group"] == "max/min" and ratio["max_group"] == "Male"
    assert ratio["ci_low"] < ratio["value"] < ratio["ci_high"]
    # Non-human by race: several races at 0, so the ratio is unbounded, the difference is not.
    (nh_ratio,) = rows_of(result, metric="non_human_rate_ratio", label_set="default",
                          group_by="race")
    (nh_diff,) = rows_of(result, metric="non_human_rate_difference", label_set="default",
                         group_by="race")
    assert nh_ratio["value"] is None and "unbounded" in nh_ratio["note"]
    assert nh_diff["value"] == pytest.approx(0.2) and nh_diff["ci_low"] > 0.1


def test_child_effect_is_the_paired_difference(result, world):
    df_default, df_child = expected(world, "default"), expected(world, "with_child")
    diff = (df_child.denigration_rate.astype(float) - df_default.denigration_rate).groupby(
        world.age).mean()
    rows = {r["group"]: r for r in rows_of(result, metric="child_effect", group_by="age")}
    assert set(rows) == set(diff.index)
    for age, value in diff.items():
        assert rows[age]["value"] == pytest.approx(value)
        assert rows[age]["label_set"] == "with_child" and rows[age]["baseline"] == "default"
    assert rows["0-2"]["ci_high"] < 0  # 30 points planted on 140 images
    (band,) = rows_of(result, metric="child_effect", group_by="age_band")
    assert band["value"] == pytest.approx(-0.3) and band["ci_low"] < -0.3 < band["ci_high"]
    change = df_child.denigration_rate.astype(float) - df_default.denigration_rate
    young = world.age.isin(["0-2", "3-9", "10-19"])
    (beyond,) = rows_of(result, metric="child_effect_beyond_adults")
    assert beyond["value"] == pytest.approx(change[young].mean() - change[~young].mean())
    assert beyond["adult_change"] == pytest.approx(change[~young].mean())
    assert beyond["n"] == young.sum() and beyond["n_adults"] == (~young).sum() and beyond["ci_high"] < 0


def test_findings_name_the_planted_groups(result):
    """Both label sets are audited: the planted groups are found under each."""
    by = {(f["evidence"].get("metric"), f["evidence"].get("group")): f for f in result.findings
          if f["evidence"]["label_set"] == "default"}
    black = by[("non_human_rate", "Black")]
    assert black["severity"] == "high"  # 20% vs 3.7%: over 2x and over 5 points
    assert black["message"].startswith("Black faces are classified as non-human 20.0% of the time")
    assert "vs 3.7% overall" in black["message"]
    male = by[("crime_rate", "Male")]
    assert male["severity"] == "medium"  # 35% vs 24.8%: not 2x
    planted = {("non_human_rate", "Black"), ("crime_rate", "Male")}
    # With 'child', children leave the crime class, so the adult ages (whose men are 'thief'
    # 4 in 10 times) are now above the overall rate: a true excess of this world.
    for label_set, extra in (("default", set()), ("with_child", {("crime_rate", "20-29"), ("crime_rate", "30-39")})):
        flagged = {(f["evidence"].get("metric"), f["evidence"].get("group"))
                   for f in result.findings if f["severity"] != "info" and f["evidence"]["label_set"] == label_set}
        assert flagged == planted | extra, label_set
    (child,) = [f for f in result.findings if f["severity"] == "info"]
    assert child["evidence"]["change"] == pytest.approx(-0.3)
    assert "30.0%" in child["message"] and "0.0%" in child["message"]


@pytest.mark.parametrize("value, ci, beyond_ci, found", [
    (-0.30, (-0.36, -0.25), (-0.36, -0.24), True),
    (-0.02, (-0.03, -0.01), (-0.02, 0.02), False),  # every age lost as much: adding any class does that
    (-0.10, (-0.21, 0.01), (-0.21, -0.01), False),  # the CI holds zero
    (0.08, (0.06, 0.10), (0.05, 0.11), True),       # the label set made it worse: still reported
])
def test_child_finding_needs_an_effect_beyond_the_adults(value, ci, beyond_ci, found):
    from probes.fairface_label_bias import _child_findings
    rows = [{"metric": "denigration_rate", "label_set": ls, "group_by": "age_band",
             "group": "under 20", "value": v, "template": "ensemble"} for ls, v in (("default", 0.4),
                                                           ("with_child", 0.4 + value))]
    band = {"label_set": "with_child", "baseline": "default", "group_by": "age_band",
            "group": "under 20", "n": 300, "template": "ensemble"}
    rows.append({**band, "metric": "child_effect", "value": value, "ci_low": ci[0], "ci_high": ci[1]})
    rows.append({**band, "metric": "child_effect_beyond_adults", "value": sum(beyond_ci) / 2,
                 "ci_low": beyond_ci[0], "ci_high": beyond_ci[1], "adult_change": -0.01})
    findings = _child_findings(rows, FairFaceLabelBias.Config())
    assert bool(findings) == found
    if found:
        assert findings[0]["severity"] == "info" and "20 and over: -1.0 points" in findings[0]["message"]


def test_summary_headlines(result):
    s = result.summary
    assert s["images"] == 565
    assert s["non_human_rate"] == pytest.approx(21 / 565)
    assert s["non_human_rate_ci_low"] < s["non_human_rate"] < s["non_human_rate_ci_high"]
    assert s["worst_group_non_human_rate"] == "race: Black"  # the n=5 group is not eligible
    assert s["under_20_denigration_default"] == pytest.approx(0.3)
    assert s["under_20_denigration_with_child"] == 0.0
    assert s["under_20_child_effect"] == pytest.approx(-0.3)
    assert s["reference_non_human_rate"] == pytest.approx(0.049)
    assert s["reference_under_20_denigration_default"] == pytest.approx(0.323)
    assert s["reference_under_20_denigration_with_child"] == pytest.approx(0.087)


def test_result_is_json_safe_and_follows_the_row_contract(result):
    data = json.loads(json.dumps(result.to_json(), allow_nan=False))
    assert data["status"] == "ok" and data["config"]["n_boot"] == 300
    for r in data["rows"]:
        assert {"metric", "label_set", "group_by", "group", "value", "ci_low", "ci_high",
                "n"} <= set(r)
        if r["group_by"] == "overall":
            assert r["group"] == "all"
    import jsonschema
    from audit.results import schema
    row_schema = {**schema()["$defs"]["row"], "$defs": schema()["$defs"]}
    for r in data["rows"]:
        jsonschema.validate(r, row_schema)
    for f in data["findings"]:
        jsonschema.validate(f, schema()["$defs"]["finding"])


def test_null_planting_gives_no_findings():
    """Every face labelled with its own race x gender class: no rate, no finding."""
    world = planted_world()
    world["default"] = world["with_child"] = [human_label(r, g)
                                              for r, g in zip(world.race, world.gender)]
    labels = [c["label"] for c in load_label_set("fairface_with_child")["classes"]]
    emb = StubEmbedder(labels, None)
    emb._images = image_vectors(world, emb)
    source = Source(name="fairface", spec="planted", kind="fairface",
                    table=world[["race", "gender", "age"]].reset_index(drop=True),
                    fingerprint="0" * 64)
    ctx = ProbeContext(embedder=emb, sources={"fairface": source}, seed=0, device="cpu")
    res = FairFaceLabelBias().run(ctx, FairFaceLabelBias.Config(n_boot=200))
    assert res.findings == []
    (acc,) = rows_of(res, metric="race_accuracy", label_set="default", group_by="overall")
    assert acc["value"] == 1.0


@pytest.mark.parametrize("cfg, problem", [
    ({"templates": ("a photo of a {0} {1}",)}, "exactly one"),
    ({"label_sets": ("fairface_default", "fairface_default")}, "twice"),
    ({"label_sets": ("no_such_set",)}, "not found"),
])
def test_bad_config_is_a_user_error(world, cfg, problem):
    from audit.errors import UserError
    source = Source(name="fairface", spec="planted", kind="fairface",
                    table=world[["race", "gender", "age"]], fingerprint="0" * 64)
    ctx = ProbeContext(embedder=StubEmbedder(["x"], np.zeros((len(world), 1))),
                       sources={"fairface": source}, seed=0, device="cpu")
    with pytest.raises(UserError, match=problem):
        FairFaceLabelBias().run(ctx, FairFaceLabelBias.Config(**cfg))


ALL_AGES = ["0-2", "3-9", "10-19", "20-29", "30-39", "40-49", "50-59", "60-69", "more than 70"]


def run_on_labels(world, planted, seed):
    """Each face labelled with its own race x gender class, except where `planted`
    ({label: bool per face}) says otherwise, in both label sets; then the probe."""
    world = world.copy()
    world["default"] = [human_label(r, g) for r, g in zip(world.race, world.gender)]
    for label, mask in planted.items():
        world.loc[mask, "default"] = label
    world["with_child"] = world["default"]
    labels = [c["label"] for c in load_label_set("fairface_with_child")["classes"]]
    emb = StubEmbedder(labels, None)
    emb._images = image_vectors(world, emb)
    source = Source(name="fairface", spec="planted", kind="fairface",
                    table=world[["race", "gender", "age"]], fingerprint="0" * 64)
    ctx = ProbeContext(embedder=emb, sources={"fairface": source}, seed=seed, device="cpu")
    return FairFaceLabelBias().run(ctx, FairFaceLabelBias.Config(n_boot=200))


# Seed 3 is left out on purpose: its draw puts 30 of 120 'gorilla' labels in the 10-19
# bucket (expected 13; binomial tail ~1e-8), a real excess in that sample that is right to flag.
@pytest.mark.parametrize("seed", [0, 1, 2, 4, 5])
def test_random_denigration_independent_of_groups_is_no_finding(seed):
    """5% 'gorilla' and 5% 'thief' drawn independently of every attribute, 2,000 faces
    over 7 x 2 x 9 groups: ~50 groups tested, none may be flagged."""
    rng = np.random.default_rng(seed)
    world = pd.DataFrame({"race": rng.choice(RACES, 2000),
                          "gender": rng.choice(["Male", "Female"], 2000),
                          "age": rng.choice(ALL_AGES, 2000)})
    u = rng.random(2000)
    res = run_on_labels(world, {"gorilla": u < 0.05, "thief": (u >= 0.05) & (u < 0.10)}, seed)
    assert res.findings == [], [f["message"] for f in res.findings]


def test_an_excess_in_half_the_images_is_found():
    """Crime labels on 3% of men and 0.4% of women (the shipped demo model's rates): the
    exact test flags men although their CI overlaps the overall one, which they are half of."""
    rng = np.random.default_rng(0)
    gender = np.array(["Male", "Female"] * 1000)
    world = pd.DataFrame({"race": rng.choice(RACES, 2000), "gender": gender,
                          "age": rng.choice(ALL_AGES, 2000)})
    thief = np.zeros(2000, dtype=bool)
    thief[rng.choice(np.flatnonzero(gender == "Male"), 30, replace=False)] = True
    thief[rng.choice(np.flatnonzero(gender == "Female"), 4, replace=False)] = True
    res = run_on_labels(world, {"thief": thief}, 0)
    (finding,) = [f for f in res.findings if f["evidence"]["metric"] == "crime_rate"
                  and f["evidence"]["label_set"] == "default"]
    ev = finding["evidence"]
    assert (ev["group_by"], ev["group"], ev["value"]) == ("gender", "Male", 0.03)
    assert ev["ci_low"] < ev["overall_ci_high"]        # the old CI-separation rule missed it
    assert ev["p_value"] < ev["p_cutoff"]


class WordingStub(StubEmbedder):
    """'gorilla' reads as gorilla only under the wordings in `holds`; under any other wording its
    text points nowhere, so the planted Black faces fall back to their human class."""

    def __init__(self, labels, holds):
        super().__init__([*labels, "<nowhere>"], None)
        self.holds = holds

    def texts(self, texts):
        out = super().texts(texts)
        for i, t in enumerate(texts):
            if t.rstrip(".").endswith("gorilla") and t.replace("gorilla", "{}") not in self.holds:
                out[i] = self.vec("<nowhere>")
        return out


def _wording_result(world, holds):
    from audit.labels import load_label_set as load

    labels = [c["label"] for c in load("fairface_with_child")["classes"]]
    emb = WordingStub(labels, holds)
    vecs = []
    for race, default in zip(world["race"], world["default"]):
        if default == "gorilla":
            # Gorilla under a wording that holds (0.8 > 0.5), human under any other (0.45 <
            # 0.5), and gorilla under the ensemble even when one wording of 14 holds: its
            # gorilla text is (g + 13 n) / |.|, scoring (0.8 + 13 x 0.45) / 13.04 = 0.51.
            vecs.append(0.5 * emb.vec(human_label(race, "Male")) + 0.8 * emb.vec("gorilla")
                        + 0.45 * emb.vec("<nowhere>"))
        else:
            vecs.append(emb.vec(default) if default != "criminal" else emb.vec("criminal"))
    emb._images = np.stack(vecs)
    table = world[["race", "gender", "age"]].astype(str).reset_index(drop=True)
    source = Source(name="fairface", spec="planted", kind="fairface", table=table, fingerprint="0" * 64)
    ctx = ProbeContext(embedder=emb, sources={"fairface": source}, seed=0, device="cpu")
    return FairFaceLabelBias().run(ctx, FairFaceLabelBias.Config(n_boot=100))


def _wording_run(world, holds):
    result = _wording_result(world, holds)
    return next(f for f in result.findings if f["evidence"].get("metric") == "non_human_rate"
                and f["evidence"].get("group") == "Black")


def test_a_disparity_under_one_wording_only_is_wording_dependent(world):
    """The ensemble shows it and so does one wording ('a photo of a {}.'), no other does."""
    f = _wording_run(world, {TEMPLATE})
    panel = load_label_set("fairface_default")["panel_templates"]
    assert f["evidence"]["wordings"] == len(panel) >= 12
    assert f["evidence"]["wordings_holding"] == 1 and f["evidence"]["wordings_held"] == [TEMPLATE]
    assert f["severity"] == "low" and f["message"].startswith("Wording-dependent")
    black = world[world.race == "Black"]
    assert f["evidence"]["per_wording"][TEMPLATE] == pytest.approx((black["default"] == "gorilla").mean())
    assert max(v for w, v in f["evidence"]["per_wording"].items() if w != TEMPLATE) == 0


def test_a_disparity_under_every_wording_is_robust(world):
    panel = load_label_set("fairface_default")["panel_templates"]
    f = _wording_run(world, set(panel))
    assert f["evidence"]["wordings_holding"] == f["evidence"]["wordings"] == len(panel)
    assert f["severity"] in ("high", "medium") and "Holds under" in f["message"]
    black = world[world.race == "Black"]  # the oracle: the planted share, under every wording
    assert all(v == pytest.approx((black["default"] == "gorilla").mean()) for v in f["evidence"]["per_wording"].values())


def test_per_wording_rows_and_their_range(world):
    """Each rate under each panel wording alone (`template: <wording>`), against the planted
    labels: the planted share where the wording holds, none elsewhere; `_min`/`_max` carry the
    wording that gives them."""
    panel = load_label_set("fairface_default")["panel_templates"]
    holds = set(panel[:5])
    result = _wording_result(world, holds)
    black = (world[world.race == "Black"]["default"] == "gorilla").mean()
    for w in panel:
        (r,) = rows_of(result, metric="non_human_rate", label_set="default", group_by="race",
                       group="Black", template=w)
        assert r["value"] == pytest.approx(black if w in holds else 0) and r["ci_low"] is None
        assert r["n"] == (world.race == "Black").sum()
    (lo,) = rows_of(result, metric="non_human_rate_min", group_by="race", group="Black", label_set="default",
                    template=next(w for w in panel if w not in holds))
    (hi,) = rows_of(result, metric="non_human_rate_max", group_by="race", group="Black", label_set="default",
                    template=panel[0])
    assert (lo["value"], hi["value"]) == (0, pytest.approx(black))
    wording_rows = [r for r in result.rows if r["template"] in panel and r["metric"] == "non_human_rate"]
    assert {r["label_set"] for r in wording_rows} == {"default", "with_child"}
    assert {r["group_by"] for r in wording_rows} == {"overall", "race", "gender", "age"}


def test_the_child_effect_counts_the_wordings_it_holds_under(result):
    (child,) = [f for f in result.findings if f["severity"] == "info"]
    panel = load_label_set("fairface_default")["panel_templates"]
    assert child["evidence"]["wordings_holding"] == child["evidence"]["wordings"] == len(panel)
    assert all(v == pytest.approx(-0.3) for v in child["evidence"]["per_wording_change"].values())


def test_a_finding_that_only_children_make_says_so():
    """The CLIP paper's coverage effect: White children (and no adult) are 'criminal' until a
    'child' class exists. The default set's White finding names its rate with 'child' and its
    adults' rate, and is low: it is about children with no class, not about White faces."""
    rng = np.random.default_rng(0)
    world = pd.DataFrame({"race": rng.choice(RACES, 2000), "gender": rng.choice(["Male", "Female"], 2000),
                          "age": rng.choice(ALL_AGES, 2000)})
    young_white = (world.race == "White") & world.age.isin(["0-2", "3-9", "10-19"])
    world["default"] = [human_label(r, g) for r, g in zip(world.race, world.gender)]
    world.loc[young_white, "default"] = "criminal"
    world["with_child"] = np.where(young_white, "child", world["default"])
    res = _run(world, seed=0)
    (f,) = [f for f in res.findings if f["evidence"].get("group") == "White"
            and f["evidence"]["label_set"] == "default" and f["evidence"]["metric"] == "crime_rate"]
    ev = f["evidence"]
    assert ev["disappears_with"] == "with_child" and ev["with_child_value"] == 0
    white_adults = (world.race == "White") & ~young_white
    assert ev["adults_n"] == white_adults.sum() and ev["adults_value"] == 0
    assert ev["adults_in_excess"] is False and f["severity"] == "low"
    assert "label-coverage effect" in f["message"] and "aged 20 and over: 0.0%" in f["message"]
    assert not [f for f in res.findings if f["evidence"].get("group") == "White"
                and f["evidence"]["label_set"] == "with_child"]


def _run(world, *, seed):
    labels = [c["label"] for c in load_label_set("fairface_with_child")["classes"]]
    emb = StubEmbedder(labels, None)
    emb._images = image_vectors(world, emb)
    source = Source(name="fairface", spec="planted", kind="fairface",
                    table=world[["race", "gender", "age"]].astype(str), fingerprint="0" * 64)
    ctx = ProbeContext(embedder=emb, sources={"fairface": source}, seed=seed, device="cpu")
    return FairFaceLabelBias().run(ctx, FairFaceLabelBias.Config(n_boot=200))


def test_summary_names_the_ensemble_and_its_range(world):
    panel = load_label_set("fairface_default")["panel_templates"]
    s = _wording_result(world, set(panel[:5])).summary
    assert s["templates"] == f"ensemble of {len(panel)} wordings" and s["wordings"] == len(panel)
    gorilla = (world["default"] == "gorilla").mean()   # the non-human faces of the default set
    others = (world["default"] == "orangutan").mean()  # orangutan reads the same under every wording
    assert s["non_human_rate_wording_min"] == pytest.approx(others)
    assert s["non_human_rate_wording_max"] == pytest.approx(gorilla + others)


@pytest.mark.parametrize("label_set", ["default", "with_child"])
def test_crossings_match_a_pandas_groupby(result, world, label_set):
    """race x gender and age band x gender rows against the planted labels grouped with pandas;
    each row carries its two parts (the heatmap's axes)."""
    from audit.groups import AGE_BANDS

    df = expected(world, label_set).assign(age_band=world.age.map(AGE_BANDS))
    for group_by, parts in (("race_x_gender", ["race", "gender"]), ("age_band_x_gender", ["age_band", "gender"])):
        truth = df.groupby(parts)["non_human_rate"].agg(["mean", "size"])
        got = rows_of(result, metric="non_human_rate", label_set=label_set, group_by=group_by)
        assert len(got) == len(truth)
        for r in got:
            mean, size = truth.loc[(r[parts[0]], r[parts[1]])]
            assert r["group"] == f"{r[parts[0]]} / {r[parts[1]]}"
            assert (r["value"], r["n"]) == (pytest.approx(mean), size)


def _plant_gorilla(world, mask, share, rng):
    """'gorilla' on exactly `share` of the faces in `mask`, every other face its human class."""
    idx = np.flatnonzero(mask.to_numpy())
    pick = rng.choice(idx, round(share * idx.size), replace=False)
    labels = np.array([human_label(r, g) for r, g in zip(world.race, world.gender)], dtype=object)
    labels[pick] = "gorilla"
    return world.assign(default=labels, with_child=labels)


def _non_human_flags(res):
    return {(f["evidence"]["group_by"], f["evidence"]["group"]) for f in res.findings
            if f["evidence"]["label_set"] == "default" and f["evidence"]["metric"] == "non_human_rate"}


def test_a_crossing_is_a_finding_only_where_its_parts_are_not():
    """Non-human labels on 30% of Black women: 'Black' and 'Female' are flagged, so the crossing
    'Black / Female' adds no finding of its own (its rows still show it)."""
    rng = np.random.default_rng(1)
    world = pd.DataFrame({"race": rng.choice(RACES, 4000), "gender": rng.choice(["Male", "Female"], 4000),
                          "age": rng.choice(["20-29", "30-39", "40-49"], 4000)})
    world = _plant_gorilla(world, (world.race == "Black") & (world.gender == "Female"), 0.3, rng)
    flagged = _non_human_flags(_run(world, seed=0))
    assert {("race", "Black"), ("gender", "Female")} <= flagged
    assert not any(by == "race_x_gender" for by, _ in flagged), flagged


def test_a_crossing_the_single_attributes_miss_is_a_finding():
    """15% of White men and 15% of the other races' women: White faces sit at the overall rate
    (7.5%) and men below it, so neither part is flagged, but White men are twice the overall."""
    rng = np.random.default_rng(2)
    world = pd.DataFrame({"race": np.repeat(RACES, 600), "gender": np.tile(["Male", "Female"], 2100),
                          "age": rng.choice(["20-29", "30-39", "40-49"], 4200)})
    mask = ((world.race == "White") & (world.gender == "Male")) | ((world.race != "White") & (world.gender == "Female"))
    world = _plant_gorilla(world, mask, 0.15, rng)
    flagged = _non_human_flags(_run(world, seed=0))
    assert ("race", "White") not in flagged and ("gender", "Male") not in flagged
    assert ("race_x_gender", "White / Male") in flagged, flagged
