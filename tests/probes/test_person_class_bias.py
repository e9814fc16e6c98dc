"""person_class_bias on planted embeddings (every prediction chosen, so every recall is known,
checked against a pandas groupby oracle), and end to end on a tiny FACET-layout folder.

The embedding layer of the planted tests is a test double: each class's prompt maps to a one-hot
text vector, except that gardener's prompts that say "photo" lean away from the farmer axis, and
each person's image vector points at the class it should be labelled with.
"""
import json

import numpy as np
import pandas as pd
import pytest
from scipy.stats import fisher_exact

from audit.data import Source
from audit.errors import UserError
from audit.labels import load_label_set
from audit.runner import ProbeContext
from probes.person_class_bias import PersonClassBias

LABELS = [c["label"] for c in load_label_set("facet_classes")["classes"]]
PANEL = load_label_set("facet_classes")["panel_templates"]
PHOTO = [w for w in PANEL if "photo" in w]  # the wordings under which gardener's mistake shows


class StubEmbedder:
    def __init__(self, images=None):
        self.axis = {label: i for i, label in enumerate(LABELS)}
        self._images = images

    def vec(self, label, weight=1.0):
        v = np.zeros(len(LABELS), np.float32)
        v[self.axis[label]] = weight
        return v

    def texts(self, texts):
        by_length = sorted(self.axis, key=len, reverse=True)
        out = []
        for t in texts:
            label = next(lab for lab in by_length if t.rstrip(".").endswith(lab))
            v = self.vec(label)
            if label == "gardener" and "photo" in t:  # a photo-wording gardener leans off 'farmer'
                v = (v - self.vec("farmer")) / np.sqrt(2)
            out.append(v)
        return np.stack(out)

    def images(self, source, *, transform=None):
        """The planted vectors of the source's rows (a subset keeps each row's hash: its index)."""
        return self._images[[int(source.content_hash(i)) for i in range(len(source))]]


def planted_people() -> pd.DataFrame:
    """label (truth), the attributes, and the class each person's image points at (`said`;
    'mixed' = between gardener and farmer, gardener by a hair).

    nurse: 9 in 10 feminine nurses recognised, 5 in 10 masculine ones (the rest 'doctor'): a
    robust gap under every wording. doctor: all recognised (no gap). gardener: every masculine
    one recognised, feminine ones 'mixed', i.e. wrong under the ensemble and the 4 'photo'
    wordings only: a wording-dependent finding. 5 non-binary nurses: too few for a CI. Skin tone
    buckets and age groups cycle independently of everything (no planted gap)."""
    recs = []
    tones, ages = ["1-3", "4-6", "7-10"], ["young", "middle", "older"]
    for label, gender, n, wrong, said_wrong in (
            ("nurse", "feminine", 60, 6, "doctor"), ("nurse", "masculine", 60, 30, "doctor"),
            ("doctor", "feminine", 50, 0, None), ("doctor", "masculine", 50, 0, None),
            ("gardener", "masculine", 50, 0, None), ("gardener", "feminine", 50, 50, "mixed"),
            ("nurse", "non-binary", 5, 0, None), ("doctor", "unknown", 10, 0, None)):
        for i in range(n):
            recs.append((label, gender, tones[i % 3], ages[(i // 3) % 3], said_wrong if i < wrong else label))
    return pd.DataFrame(recs, columns=["label", "gender_presentation", "skin_tone_group", "age_group", "said"])


def image_vectors(people, emb):
    return np.stack([0.72 * emb.vec("gardener") + 0.69 * emb.vec("farmer") if s == "mixed" else emb.vec(s)
                     for s in people["said"]])


def run_probe(people, **cfg):
    emb = StubEmbedder()
    emb._images = image_vectors(people, emb)
    table = people.drop(columns=["said"]).astype(str).reset_index(drop=True)
    source = Source(name="persons", spec="planted", kind="persons", table=table, fingerprint="0" * 64,
                    _raw=list(range(len(table))), _hashes=[str(i) for i in range(len(table))])
    ctx = ProbeContext(embedder=emb, sources={"persons": source}, seed=0, device="cpu")
    return PersonClassBias().run(ctx, PersonClassBias.Config(n_boot=300, **cfg))


@pytest.fixture(scope="module")
def people():
    return planted_people()


@pytest.fixture(scope="module")
def result(people):
    return run_probe(people)


def oracle(people):
    """The headline prediction per person: the planted class, 'mixed' is farmer (the ensemble)."""
    df = people.copy()
    df["correct"] = df["said"] == df["label"]
    return df


def rows_of(result, **match):
    match.setdefault("template", "ensemble")
    return [r for r in result.rows if all(r.get(k) == v for k, v in match.items())]


def test_recall_per_class_and_group_is_the_groupby(result, people):
    df = oracle(people)
    for cls, want in df.groupby("label")["correct"].mean().items():
        (r,) = rows_of(result, metric="recall", group_by="overall", **{"class": cls})
        assert r["value"] == pytest.approx(want) and r["n"] == (df.label == cls).sum()
        assert r["ci_low"] <= r["value"] <= r["ci_high"]
    for attr in ("gender_presentation", "skin_tone_group", "age_group"):
        for (cls, g), want in df.groupby(["label", attr])["correct"].mean().items():
            (r,) = rows_of(result, metric="recall", group_by=attr, group=g, **{"class": cls})
            assert r["value"] == pytest.approx(want)


def test_accuracy_and_mean_recall(result, people):
    df = oracle(people)
    (acc,) = rows_of(result, metric="accuracy", group_by="overall")
    assert acc["value"] == pytest.approx(df.correct.mean())
    (mean,) = rows_of(result, metric="mean_recall", group_by="overall")
    assert mean["value"] == pytest.approx(df.groupby("label").correct.mean().mean())
    for g, want in df.groupby("gender_presentation").correct.mean().items():
        (r,) = rows_of(result, metric="accuracy", group_by="gender_presentation", group=g)
        assert r["value"] == pytest.approx(want)


def _oracle_gap(df, cls, attr, group, versus):
    part = df[df.label == cls]
    a = part[part[attr] == group].correct
    b = part[part[attr] == versus].correct if versus != "rest" else \
        part[(part[attr] != group) & (part[attr] != "unknown")].correct
    return a, b


def test_gaps_are_the_groupby_differences_with_fisher_p_and_one_correction(result, people):
    df = oracle(people)
    gaps = rows_of(result, metric="recall_gap")
    tested = [r for r in gaps if r.get("p_value") is not None]
    # gender: the declared pair only; skin tone and age: 3 known groups each, each vs the rest
    assert {(r["group_by"], r["group"], r["versus"]) for r in gaps if r["class"] == "nurse"} == {
        ("gender_presentation", "masculine", "feminine"),
        *(("skin_tone_group", g, "rest") for g in ("1-3", "4-6", "7-10")),
        *(("age_group", g, "rest") for g in ("young", "middle", "older"))}
    assert len(tested) == 3 * 7
    for r in tested:
        a, b = _oracle_gap(df, r["class"], r["group_by"], r["group"], r["versus"])
        assert r["value"] == pytest.approx(a.mean() - b.mean())
        assert (r["n_group"], r["n_versus"]) == (len(a), len(b))
        table = [[a.sum(), len(a) - a.sum()], [b.sum(), len(b) - b.sum()]]
        assert r["p_value"] == pytest.approx(fisher_exact(table)[1])
        assert r["p_adjusted"] == pytest.approx(min(1, r["p_value"] * len(tested)))
        assert r["ci_low"] <= r["value"] <= r["ci_high"]
    (nurse,) = [r for r in tested if r["class"] == "nurse" and r["group_by"] == "gender_presentation"]
    assert nurse["value"] == pytest.approx(0.5 - 0.9)


def test_small_groups_get_a_value_but_no_ci(result):
    (r,) = rows_of(result, metric="recall", group_by="gender_presentation", group="non-binary", **{"class": "nurse"})
    assert r["value"] == 1.0 and r["ci_low"] is None and r["note"] == "too few images"


def test_findings_carry_the_wording_robustness(result):
    by_class = {f["evidence"]["class"]: f for f in result.findings}
    assert set(by_class) == {"nurse", "gardener"}  # doctor: no gap; skin tone, age: none planted
    nurse, gardener = by_class["nurse"], by_class["gardener"]
    assert nurse["severity"] == "high" and nurse["evidence"]["wordings_holding"] == len(PANEL)
    assert f"Holds under {len(PANEL)} of {len(PANEL)} wordings" in nurse["message"]
    assert gardener["severity"] == "low" and gardener["message"].startswith("Wording-dependent")
    ev = gardener["evidence"]
    assert ev["wordings_holding"] == len(PHOTO) == 4 and sorted(ev["wordings_held"]) == sorted(PHOTO)
    assert all(ev["per_wording"][w] == 1.0 and ev["per_wording_rest"][w] == (0.0 if w in PHOTO else 1.0)
               for w in PANEL)
    assert ev["p_value"] < ev["p_cutoff"] and ev["p_cutoff"] == pytest.approx(0.05 / 21)


def test_wording_rows_and_the_headline_gap(result, people):
    def spread(end):
        (r,) = [r for r in result.rows if r["metric"] == f"recall_gap_{end}" and r["class"] == "gardener"
                and r["group_by"] == "gender_presentation"]
        return r
    low, high = spread("min"), spread("max")
    assert low["value"] == 0.0 and low["template"] not in PHOTO
    assert high["value"] == 1.0 and high["template"] in PHOTO
    per = [r for r in result.rows if r["metric"] == "accuracy" and r["template"] in PANEL and r["group_by"] == "overall"]
    assert len(per) == len(PANEL)
    (top,) = rows_of(result, metric="max_recall_gap", attribute="gender_presentation")
    assert top["value"] == pytest.approx(1.0) and top["class"] == "gardener"
    assert result.summary["templates"] == f"ensemble of {len(PANEL)} wordings"


def test_null_world_raises_no_finding(people):
    fair = people.assign(said=people["label"])
    assert run_probe(fair).findings == []


def test_classes_present_and_classes_the_set_lacks(people, caplog):
    odd = pd.concat([people, pd.DataFrame([{"label": "juggler", "gender_presentation": "feminine",
                                             "skin_tone_group": "1-3", "age_group": "young", "said": "nurse"}])])
    res = run_probe(odd.reset_index(drop=True), classes="present")
    assert "juggler" in caplog.text and res.summary["people_left_out"] == 1
    assert res.summary["classes"] == 3  # nurse, doctor, gardener: only the classes present
    assert run_probe(people).summary["classes"] == 52  # FACET's protocol: all 52
    with pytest.raises(UserError, match="classes"):
        run_probe(people, classes="some")
    with pytest.raises(UserError, match="attribute:group|versus"):
        run_probe(people, pairs=("gender_presentation",))


def test_rows_are_json_and_declared(result):
    json.dumps(result.rows)
    declared = set(PersonClassBias.metrics)
    assert {r["metric"] for r in result.rows} <= declared
    assert all(r["label_set"] == "facet_classes" and r["template"] for r in result.rows)


def test_summary_quotes_the_published_reference(result):
    assert "Table 4" in result.summary["reference_model"]
