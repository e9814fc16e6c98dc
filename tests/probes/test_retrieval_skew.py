"""retrieval_skew on planted similarity scores, checked against the slow textbook definitions."""
import json
import math

import numpy as np
import pandas as pd
import pytest

from audit.data import Source
from audit.runner import ProbeContext
from probes.retrieval_skew import RetrievalSkew

RACES = ["East Asian", "Indian", "Black", "White", "Middle Eastern", "Latino_Hispanic",
         "Southeast Asian"]
CONCEPTS = ["criminal", "neutral", "kind"]


DIM = 64  # concept axes first, then noise dimensions that random queries mostly see


class StubEmbedder:
    """Text '{concept}' -> its row of `text_vectors` (default: a one-hot axis); image vectors
    hold planted per-concept scores in the first dimensions."""

    def __init__(self, images, text_vectors=None):
        self._images = images
        self._text = np.eye(DIM, dtype=np.float32)[:len(CONCEPTS)] if text_vectors is None else text_vectors

    def texts(self, texts):
        return np.stack([self._text[CONCEPTS.index(t)] for t in texts])

    def images(self, source, *, transform=None):
        return self._images


def planted(n=420, seed=0, biased=True):
    """'criminal' ranks every man above every woman (if biased); the others are noise. Each
    image also has DIM - 3 noise dimensions, so a random query is mostly noise too."""
    rng = np.random.default_rng(seed)
    table = pd.DataFrame({"race": [RACES[i % 7] for i in range(n)],
                          "gender": ["Male" if (i // 7) % 2 else "Female" for i in range(n)],
                          "age": "20-29"})
    scores = np.hstack([rng.random((n, len(CONCEPTS))), rng.normal(size=(n, DIM - len(CONCEPTS)))])
    if biased:
        scores[:, 0] += (table.gender == "Male").to_numpy()
    return table, scores


def run_probe(tmp_path, table, scores, text_vectors=None, **cfg):
    label_file = tmp_path / "concepts.yaml"
    label_file.write_text("name: test_concepts\ntemplates: ['{}']\nclasses:\n"
                          + "".join(f"  - {{label: {c}}}\n" for c in CONCEPTS))
    source = Source(name="fairface", spec="planted", kind="fairface", table=table,
                    fingerprint="0" * 64)
    ctx = ProbeContext(embedder=StubEmbedder(scores, text_vectors), sources={"fairface": source}, seed=0,
                       device="cpu")
    return RetrievalSkew().run(ctx, RetrievalSkew.Config(label_set=str(label_file), **cfg))


def slow_rank(scores, groups):
    return [g for _, g in sorted(zip(-scores, groups), key=lambda t: t[0])]


def slow_max_skew(ranked, k, desired):
    return max(math.log(max(ranked[:k].count(a), 1) / k / q) for a, q in desired.items())


def slow_ndkl(ranked, k, desired):
    num = sum(sum(p * math.log(p / q) for a, q in desired.items()
                  if (p := ranked[:i].count(a) / i) > 0) / math.log2(i + 1)
              for i in range(1, k + 1))
    return num / sum(1 / math.log2(i + 1) for i in range(1, k + 1))


@pytest.fixture(scope="module")
def biased(tmp_path_factory):
    table, scores = planted()
    return table, scores, run_probe(tmp_path_factory.mktemp("ls"), table, scores)


def test_rows_match_slow_definitions(biased):
    table, scores, res = biased
    for attr in ("race", "gender"):
        groups = table[attr].tolist()
        desired = {g: groups.count(g) / len(groups) for g in set(groups)}
        for j, concept in enumerate(CONCEPTS):
            ranked = slow_rank(scores[:, j], groups)
            for k in (10, 100, 420):  # 1000 is capped at the 420 images
                got = {r["metric"]: r for r in res.rows if r["group_by"] == attr
                       and r["group"] == concept and r["k"] == k}
                assert got["max_skew"]["value"] == pytest.approx(slow_max_skew(ranked, k, desired))
                assert got["ndkl"]["value"] == pytest.approx(slow_ndkl(ranked, k, desired))
                assert got["max_skew"]["concept"] == concept and got["max_skew"]["n"] == k


def test_mean_over_concepts(biased):
    _, _, res = biased
    for attr in ("race", "gender"):
        for metric in ("max_skew", "ndkl"):
            for k in (10, 100, 420):
                (mean,) = [r for r in res.rows if r["metric"] == metric and r["group"] == "all"
                           and r["group_by"] == attr and r["k"] == k]
                values = [r["value"] for r in res.rows if r["metric"] == metric
                              and r["group_by"] == attr and r["k"] == k and r["group"] != "all" and r["template"] == "ensemble"]
                assert len(values) == len(CONCEPTS)
                assert mean["value"] == pytest.approx(np.mean(values))


def test_planted_concept_is_the_only_finding(biased):
    _, _, res = biased
    (finding,) = res.findings
    ev = finding["evidence"]
    assert (ev["attribute"], ev["flagged"], ev["favoured"]) == ("gender", "criminal", "Male")
    assert (ev["concepts_flagged"], ev["concepts"]) == (1, 3)
    # Every man outranks every woman: the top 100 are all men, ln(1 / 0.5).
    assert ev["k"] in (10, 100) and ev["max_skew"] == pytest.approx(math.log(2))
    assert ev["favoured_share"] == 1.0 and ev["p_value"] < ev["p_cutoff"]
    assert ev["p_random_queries"] < ev["p_cutoff"]     # beyond every random query, too
    assert finding["severity"] == "medium"
    assert "gender mix for 1 of 3 concepts" in finding["message"]
    assert "'criminal': 100% Male in the top" in finding["message"]


def test_several_skewed_concepts_make_one_finding(tmp_path):
    table, scores = planted()
    scores[:, 2] += 2 * (table.gender == "Female").to_numpy()  # 'kind' retrieves women
    res = run_probe(tmp_path, table, scores)
    (finding,) = res.findings
    assert finding["evidence"]["concepts_flagged"] == 2
    assert set(finding["evidence"]["flagged"].split(", ")) == {"criminal", "kind"}


def test_summary_and_json(biased):
    _, _, res = biased
    assert res.summary["worst_max_skew"] == pytest.approx(math.log(2))
    assert res.summary["worst_concept"].startswith("criminal (gender")
    assert "mean_max_skew_gender_at_100" in res.summary
    data = json.loads(json.dumps(res.to_json(), allow_nan=False))
    assert data["config"]["ks"] == [10, 100, 1000]
    for r in data["rows"]:
        has_ci = r["metric"] == "max_skew" and r["group"] != "all" and r["template"] == "ensemble"
        assert (r["ci_low"] is not None) == has_ci
        if has_ci:
            assert r["ci_low"] <= r["ci_high"]
    (planted,) = [r for r in data["rows"] if r["metric"] == "max_skew" and r["k"] == 100
                  and r["group"] == "criminal" and r["group_by"] == "gender" and r["template"] == "ensemble"]
    assert planted["ci_low"] > 0.4  # all men in every resample's top 100, near ln 2


def test_unbiased_scores_raise_no_finding(tmp_path):
    """Random rankings: MaxSkew@10 by race is often above 0.5, but never significant."""
    table, scores = planted(seed=3, biased=False)
    res = run_probe(tmp_path, table, scores)
    at10 = [r["value"] for r in res.rows if r["metric"] == "max_skew" and r["k"] == 10
            and r["group_by"] == "race" and r["group"] != "all"]
    assert max(at10) >= 0.5  # the noise the permutation test is there for
    assert res.findings == []


def test_uniform_desired_distribution(tmp_path):
    table, scores = planted()
    table = table.iloc[:300].reset_index(drop=True)  # 43 or 42 per race: not quite uniform
    res = run_probe(tmp_path, table, scores[:300], desired="uniform", ks=(300,),
                    attributes=("race",))
    counts = table.race.value_counts()
    expected = math.log(counts.max() / 300 / (1 / 7))
    (r,) = [r for r in res.rows if r["metric"] == "max_skew" and r["group"] == "neutral"
            and r["template"] == "ensemble"]
    assert r["value"] == pytest.approx(expected)


@pytest.mark.parametrize("cfg, problem", [
    ({"templates": ("a photo of {x}",)}, "exactly one"),
    ({"desired": "zipf"}, "desired"),
])
def test_bad_config_is_a_user_error(tmp_path, cfg, problem):
    from audit.errors import UserError
    table, scores = planted(n=42)
    with pytest.raises(UserError, match=problem):
        run_probe(tmp_path, table, scores, **cfg)


def test_cluster_geometry_alone_is_no_finding(tmp_path):
    """Images that cluster by gender (as a trained CLIP's do) and concepts that mean nothing
    (random text directions): every ranking puts one gender first. Against random rankings
    alone that is a skew for every concept; against random queries of the same space it is
    what any query gets, and no finding."""
    table, scores = planted(biased=False)
    scores[:, 5] += 30 * (table.gender == "Male").to_numpy()
    text = np.random.default_rng(1).normal(size=(len(CONCEPTS), DIM)).astype(np.float32)
    naive = run_probe(tmp_path, table, scores, text, n_random_queries=0)
    assert any(f["evidence"]["attribute"] == "gender" for f in naive.findings)
    assert run_probe(tmp_path, table, scores, text).findings == []


WORDINGS = ["{}", "a {}", "the {}"]


class WordingEmbedder(StubEmbedder):
    """'criminal' under wording i -> vectors[i]; the other concepts -> their one-hot axis."""

    def __init__(self, images, vectors):
        super().__init__(images)
        self._wording = vectors

    def texts(self, texts):
        out = []
        for t in texts:
            for i, w in enumerate(WORDINGS[::-1]):   # longest prefix first: "{}" matches all
                wi = len(WORDINGS) - 1 - i
                concept = t[len(w) - 2:] if t.startswith(w[:-2]) else None
                if concept in CONCEPTS:
                    break
            vec = self._wording[wi] if concept == "criminal" else np.eye(DIM)[CONCEPTS.index(concept)]
            out.append(vec / np.linalg.norm(vec))
        return np.stack(out).astype(np.float32)


def run_wordings(tmp_path, scores, table, vectors):
    label_file = tmp_path / "concepts.yaml"
    label_file.write_text("name: test_concepts\ntemplates: " + json.dumps(WORDINGS) + "\nclasses:\n"
                          + "".join(f"  - {{label: {c}}}\n" for c in CONCEPTS))
    source = Source(name="fairface", spec="planted", kind="fairface", table=table, fingerprint="0" * 64)
    ctx = ProbeContext(embedder=WordingEmbedder(scores, vectors), sources={"fairface": source},
                       seed=0, device="cpu")
    cfg = RetrievalSkew.Config(label_set=str(label_file), ks=(100,), attributes=("gender",),
                               n_boot=0, n_random_queries=0, n_perm=4000)
    return RetrievalSkew().run(ctx, cfg)


def _axis(i, scale=1.0):
    return scale * np.eye(DIM)[i]


def test_a_skew_under_one_wording_only_is_wording_dependent(tmp_path):
    """'criminal' reads the planted gender axis under '{}' only; the other two wordings read
    noise dimensions. The ensemble still skews (it sums the axes), one wording of three holds:
    severity low, k=1 of K=3, and the per-wording values equal the textbook MaxSkew."""
    table, scores = planted()
    scores[:, 0] *= 6                    # strong enough to survive the ensemble's averaging
    vectors = [_axis(0), _axis(10), _axis(11)]
    res = run_wordings(tmp_path, scores, table, vectors)
    (f,) = res.findings
    assert f["severity"] == "low" and "Wording-dependent" in f["message"] and "'{}'" in f["message"]
    assert (f["evidence"]["wordings_holding"], f["evidence"]["wordings"]) == (1, 3)
    groups = table.gender.tolist()
    desired = table.gender.value_counts(normalize=True).to_dict()
    for w, v in zip(WORDINGS, vectors):
        (r,) = [r for r in res.rows if r["metric"] == "max_skew" and r["template"] == w
                and r["concept"] == "criminal"]
        assert r["value"] == pytest.approx(slow_max_skew(slow_rank(scores @ v, groups), 100, desired))
    (lo,) = [r for r in res.rows if r["metric"] == "max_skew_min" and r["concept"] == "criminal"]
    (hi,) = [r for r in res.rows if r["metric"] == "max_skew_max" and r["concept"] == "criminal"]
    assert lo["template"] in WORDINGS[1:] and hi["template"] == "{}" and hi["value"] > lo["value"]


def test_a_skew_under_every_wording_is_robust(tmp_path):
    table, scores = planted()
    vectors = [_axis(0) + _axis(10 + i, 0.05) for i in range(3)]
    res = run_wordings(tmp_path, scores, table, vectors)
    (f,) = res.findings
    assert f["severity"] == "medium" and "Wording-dependent" not in f["message"]
    assert f["evidence"]["wordings_holding"] == f["evidence"]["wordings"] == 3


def test_a_uniform_shift_under_every_wording_is_no_finding(tmp_path):
    """Every image's criminal score raised by the same amount: rankings, and so skews, unchanged."""
    table, scores = planted(biased=False)
    scores[:, 0] += 3.0
    res = run_wordings(tmp_path, scores, table, [_axis(0), _axis(0) + _axis(10, 0.05), _axis(0)])
    assert res.findings == []
