"""prompt_sensitivity on planted embeddings: every per-template prediction is known or
recomputed by an independent loop (one text at a time, no batching, no reshapes)."""
import math
import re

import numpy as np
import pandas as pd
import pytest

from audit.data import Source
from audit.runner import ProbeContext
from audit.tasks import template_sets
from probes.prompt_sensitivity import PromptSensitivity, names_a_group

RACES = {"East Asian": "East Asian", "Indian": "Indian", "Black": "Black", "White": "White",
         "Middle Eastern": "Middle Eastern", "Latino_Hispanic": "Latino", "Southeast Asian": "Southeast Asian"}
CRIME = ("thief", "criminal", "suspicious person")
SHAPES = ("circle", "square", "star")
D = 48
_rng = np.random.default_rng(42)
NON_HUMAN = ("animal", "gorilla", "chimpanzee", "orangutan")
# the denigrating words get directions of their own (no image has them), not only template noise:
# a text that is nothing but noise is a random direction, and a random direction ranks one
# cluster of faces first, which is a disparity of its own under that wording
BASIS = dict(zip([*RACES.values(), "man", "woman", "face", *SHAPES, "thief", "criminal", "suspicious",
                  *NON_HUMAN],
                 np.linalg.qr(_rng.normal(size=(D, D)))[0].T))
BAD_RACE = "a {}."               # a label-wording template under which every race reads "White"
BAD_CRIME = "itap of a {}."      # an open_clip template under which crime words win for Black faces
ALL_CRIME = "a bad photo of a {}."  # one under which crime words win for everyone
BLACK_AND_WHITE = ("a black and white photo of the {}.", "a black and white photo of a {}.")  # say 'white'


def text_fn(s: str) -> np.ndarray:
    """The planted text encoder: a sum of basis vectors for the words it contains, plus a small
    random vector per string (seeded by the string) so templates differ a little."""
    if any(s == ALL_CRIME.format(c) for c in CRIME):
        return BASIS["face"]
    if any(s == BAD_CRIME.format(c) for c in CRIME):
        v = BASIS["Black"] + 0.3 * BASIS["face"]
        return v / np.linalg.norm(v)
    if any(s == BAD_RACE.format(f"{r} person") for r in RACES.values()):
        return BASIS["White"]
    v = np.zeros(D)
    for word, vec in BASIS.items():
        if word != "face" and re.search(rf"\b{word}\b", s):
            v += vec
    seed = int.from_bytes(s.encode()[:8].ljust(8, b"\0"), "little") ^ len(s)
    v += 0.15 * np.random.default_rng(seed).normal(size=D)
    return v / np.linalg.norm(v)


class PlantedEmbedder:
    def __init__(self, vecs):
        self.vecs, self.text_calls = vecs, 0

    def images(self, source, *, transform=None):
        return np.stack([self.vecs[source.content_hash(i)] for i in range(len(source))])

    def texts(self, texts):
        self.text_calls += 1
        return np.stack([text_fn(t) for t in texts]).astype(np.float32)


def make_source(name, table):
    n = len(table)
    return Source(name=name, spec="planted", kind="any", table=table, fingerprint=name,
                  _reader=lambda i: b"", _raw=list(range(n)), _hashes=[f"{name}-{i}" for i in range(n)])


def planted(n=140, seed=0, *, with_objects=True):
    rng = np.random.default_rng(seed)
    table = pd.DataFrame({"race": rng.choice(list(RACES), n), "gender": rng.choice(["Male", "Female"], n),
                          "age": rng.choice(["3-9", "20-29", "60-69"], n)})
    faces = make_source("fairface", table)
    vecs = {}
    for i, r in table.iterrows():
        v = BASIS[RACES[r["race"]]] + BASIS["man" if r["gender"] == "Male" else "woman"] + 2 * BASIS["face"]
        vecs[faces.content_hash(i)] = v + 0.8 * rng.normal(size=D) / np.sqrt(D)
    sources = {"fairface": faces}
    if with_objects:
        objects = make_source("classify:objects", pd.DataFrame({"label": rng.choice(SHAPES, 60)}))
        for i, lab in enumerate(objects.table["label"]):
            vecs[objects.content_hash(i)] = BASIS[lab] + 1.2 * rng.normal(size=D) / np.sqrt(D)
        sources["classify:objects"] = objects
    vecs = {k: v / np.linalg.norm(v) for k, v in vecs.items()}
    emb = PlantedEmbedder(vecs)
    return ProbeContext(embedder=emb, sources=sources, seed=0, device="cpu"), emb


def oracle_accuracy(img, truth, class_texts, template):
    """One template: encode each class string on its own, argmax by an explicit loop."""
    W = np.stack([text_fn(template.format(c)) for c in class_texts])
    preds = [int(np.argmax([img[i] @ w for w in W])) for i in range(len(img))]
    return float(np.mean(np.array(preds) == truth))


def test_the_80_openai_templates_come_from_open_clip():
    from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES
    sets = template_sets()
    assert sum("openai" in v.split(",") for v in sets.values()) == 80 == len(OPENAI_IMAGENET_TEMPLATES)
    assert sum("simple" in v.split(",") for v in sets.values()) == 7
    assert BAD_RACE in sets and sets[BAD_RACE] == "label_wording"


@pytest.fixture(scope="module")
def result():
    ctx, emb = planted()
    res = PromptSensitivity().run(ctx, PromptSensitivity.Config(n_boot=100))
    return ctx, emb, res


def test_per_template_accuracy_matches_the_loop(result):
    ctx, emb, res = result
    src = ctx.sources["fairface"]
    truth = np.array([list(RACES).index(r) for r in src.table["race"]])
    img = emb.images(src)
    texts = [f"{r} person" for r in RACES.values()]
    acc = {r["template"]: r for r in res.rows if r["metric"] == "accuracy" and r["task"] == "fairface:race"}
    assert len(acc) == len(template_sets()) + 1
    for t in ["a photo of a {}.", "art of the {}.", "{}", BAD_RACE, BAD_CRIME]:
        assert acc[t]["value"] == pytest.approx(oracle_accuracy(img, truth, texts, t))
    # the planted bad wording: every race reads the same, argmax takes the first class
    assert acc[BAD_RACE]["value"] == pytest.approx(np.mean(src.table["race"] == "East Asian"))
    assert acc["a photo of a {}."]["value"] > 0.7 > acc[BAD_RACE]["value"]


def test_spread_gain_and_ensemble(result):
    ctx, emb, res = result
    for task in ("fairface:race", "fairface:gender", "fairface:age", "classify:objects"):
        single = np.array([r["value"] for r in res.rows if r["metric"] == "accuracy"
                           and r["task"] == task and r["template"] != "ensemble"])
        stat = {r["metric"]: r["value"] for r in res.rows if r.get("task") == task and r["metric"] != "accuracy"}
        assert stat["accuracy_min"] == single.min() and stat["accuracy_max"] == single.max()
        assert stat["accuracy_median"] == np.sort(single)[(len(single) - 1) // 2]
        assert stat["accuracy_std"] == pytest.approx(single.std())
        ens = next(r["value"] for r in res.rows if r["metric"] == "accuracy" and r["task"] == task
                   and r["template"] == "ensemble")
        assert stat["ensemble_gain"] == pytest.approx(ens - stat["accuracy_median"])
    # the race ensemble by hand: renormalised mean of the 80 open_clip templates
    from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES
    src = ctx.sources["fairface"]
    W = np.stack([np.mean([text_fn(t(f"{r} person")) for t in OPENAI_IMAGENET_TEMPLATES], axis=0)
                  for r in RACES.values()])
    truth = np.array([list(RACES).index(r) for r in src.table["race"]])
    want = np.mean((emb.images(src) @ W.T).argmax(1) == truth)
    got = next(r["value"] for r in res.rows if r["metric"] == "accuracy" and r["task"] == "fairface:race"
               and r["template"] == "ensemble")
    assert got == pytest.approx(want)
    assert "best template" in " ".join(res.summary) and res.summary["tasks"][-1] == "classify:objects"


def test_label_set_names_only_the_label_set_of_the_rates(result):
    """`label_set` means a label set's short name (docs/INTERNALS.md, Tidy rows): the rates'
    fairface_default is "default", as fairface_label_bias names it; the accuracy rows are about
    templates, which their `template` and `template_set` keys name."""
    _, _, res = result
    rates = [r for r in res.rows if r["metric"].startswith(("crime_rate", "non_human_rate"))]
    assert rates and {r["label_set"] for r in rates} == {"default"}
    others = [r for r in res.rows if r not in rates]
    assert {r["label_set"] for r in others} == {None}
    acc = [r for r in others if r["metric"] == "accuracy"]
    assert all(r["template_set"] for r in acc)
    assert {r["template_set"] for r in acc if r["template"] == "ensemble"} == {"openai"}


def test_one_text_encode_per_task_plus_one_for_bias(result):
    ctx, emb, res = result
    assert emb.text_calls == 4 + 1


def test_bias_moves_with_wording(result):
    ctx, emb, res = result
    race = ctx.sources["fairface"].table["race"].to_numpy()
    crime = [r for r in res.rows if r["metric"] == "crime_rate" and r["group_by"] == "race"]
    assert {r["template"] for r in crime} == set(template_sets())
    assert [r["value"] for r in crime if r["template"] == ALL_CRIME] == [1.0] * 7
    assert {r["group"]: r["value"] for r in crime if r["template"] == BAD_CRIME} == \
        {g: float(g == "Black") for g in RACES}
    assert all(r["value"] == 0.0 for r in crime if r["template"] == "a photo of a {}.")
    top = [r for r in res.rows if r["metric"] == "crime_rate_max" and r["group_by"] == "gender"]
    assert {r["template"] for r in top} == {ALL_CRIME} and all(r["value"] == 1.0 for r in top)
    assert all(r["value"] == 0.0 for r in res.rows if r["metric"] == "crime_rate_min")
    assert res.summary["wording_largest_move_points"] == pytest.approx(1.0)
    # the move under ALL_CRIME is everyone's: no finding. Under BAD_CRIME only Black faces
    # move: the one finding, with the hypergeometric tail of all Black faces being the positives.
    [f] = res.findings
    ev = f["evidence"]
    assert (ev["metric"], ev["group_by"], ev["group"]) == ("crime_rate", "race", "Black")
    neutral = [t for t in template_sets() if t not in BLACK_AND_WHITE]
    assert res.summary["wording_templates_naming_a_group"] == list(BLACK_AND_WHITE)
    assert ev["templates_flagged"] == [BAD_CRIME] and ev["n_templates"] == len(neutral)
    n, k = len(race), int((race == "Black").sum())
    assert ev["rate"] == 1.0 and ev["overall"] == pytest.approx(k / n)
    assert ev["p_value"] == pytest.approx(1 / math.comb(n, k))
    table = ctx.sources["fairface"].table
    sizes = [*table["race"].value_counts(), *table["gender"].value_counts()]
    tested = 2 * len(neutral) * sum(s >= 20 for s in sizes)       # 2 rates x templates x groups
    assert ev["p_cutoff"] == pytest.approx(0.05 / tested)


def test_templates_saying_a_group_word_are_not_tested():
    classes = [{"label": "White man", "category": "human"}, {"label": "Latino woman", "category": "human"},
               {"label": "animal", "category": "non_human"}]
    assert [t for t in template_sets() if names_a_group(t, classes)] == list(BLACK_AND_WHITE)
    assert names_a_group("a photo of a {} with a Latino friend.", classes)
    assert not names_a_group("a photo of an {} in the wild.", classes)   # 'animal' names no group
    assert not names_a_group("a photo of a {} manatee.", classes)        # whole words only


def test_skipped_without_a_task():
    ctx = ProbeContext(embedder=PlantedEmbedder({}), sources={}, seed=0, device="cpu")
    res = PromptSensitivity().run(ctx, PromptSensitivity.Config())
    assert res.status == "skipped" and "classify" in res.message
