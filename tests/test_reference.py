"""Published reference numbers: one place (label_sets/reference, read by audit/reference.py), one
unit (each metric's own: rates as fractions), and every number as REFERENCE.md prints it.

The numbers below are copied from REFERENCE.md, in its units (percent), under its section
names; the data must hold exactly them. Where REFERENCE.md itself is found (the shared design
folder beside the checkout), its tables and sentences are parsed too, so this list cannot drift
from it either."""
import os
import re
from pathlib import Path

import pytest

from audit import reference
from audit.errors import UserError
from audit.registry import get_probe

RACES = ["Black", "White", "Indian", "Latino_Hispanic", "Middle Eastern", "Southeast Asian", "East Asian"]
AGES = ["0-2", "3-9", "10-19", "20-29", "30-39", "40-49", "50-59", "60-69", "more than 70"]
CANDIDATES = (100, 1000, 2000)

# "FairFace denigration probe", the sentences: (metric, label_set, group_by, group, %, CI %)
FAIRFACE_TEXT = [
    ("non_human_rate", "default", "overall", "all", 4.9, (4.6, 5.4)),   # 4.9% of all images (95% CI 4.6-5.4%)
    ("non_human_rate", "default", "race", "Black", 14.4, (12.6, 16.4)),  # about 14% (CI 12.6-16.4%); the table: 14.4
    ("crime_rate", "default", "gender", "Male", 16.5, None),             # 16.5% of men
    ("crime_rate", "default", "gender", "Female", 9.8, None),            # vs 9.8% of women
    ("denigration_rate", "default", "age_band", "under 20", 32.3, None),    # ~32.3%
    ("denigration_rate", "with_child", "age_band", "under 20", 8.7, None),  # ~8.7% with 'child' added
]
# "FairFace denigration probe", per race (% of images classified into the group of classes)
FAIRFACE_RACE = {"crime_rate": [16.4, 24.9, 24.4, 10.8, 19.7, 4.4, 1.3],
                 "non_human_rate": [14.4, 5.5, 7.6, 3.7, 2.0, 1.9, 0.0]}
# "FairFace denigration probe", the 'child' class (crime-related or non-human, per age bucket)
FAIRFACE_CHILD = {"default": [30.3, 35.0, 29.5, 16.3, 13.9, 18.5, 19.1, 16.2, 10.4],
                  "with_child": [2.3, 4.3, 14.7, 15.0, 13.4, 18.2, 18.6, 15.5, 9.4]}
# "Celebrity identification": top-1 among N names
CELEBRITY = {"ViT-L/14": [59.2, 43.3, 42.2], "RN50x64": [56.4, 39.5, 38.4],
             "RN50x16": [52.7, 37.4, 36.3], "RN50x4": [52.8, 38.1, 37.3]}
# "Retrieval skew" and "Retrieval skew: the target distribution": gender MaxSkew (uniform
# target) and ImageNet top-1 (%)
RETRIEVAL = {"ViT-B/16": (0.233, 68.1), "DebiasCLIP": (0.113, 67.6)}
# "Person classes in context (FACET)": Table 4's recall differences across perceived gender
# presentation (points), better for male presentation then better for female presentation
FACET_MALE = {"gardener": 16.4, "craftsman": 13.6, "laborer": 10.3, "skateboarder": 8.8, "prayer": 8.8, "waiter": 8.3}
FACET_FEMALE = {"dancer": 21.7, "retailer": 17.0, "reporter": 16.0, "nurse": 12.9, "student": 12.8, "gymnast": 8.5}


def expected() -> dict:
    """{(probe, identity): (value, ci) in the data's unit}: percentages become fractions."""
    out = {}

    def put(probe, value, ci=None, **key):
        ident = (probe, tuple(sorted(key.items())))
        known = out.get(ident)
        out[ident] = (value, ci or (known[1] if known else None))

    for metric, label_set, by, group, pct, ci in FAIRFACE_TEXT:
        put("fairface_label_bias", pct / 100, ci and (ci[0] / 100, ci[1] / 100),
            metric=metric, label_set=label_set, group_by=by, group=group)
    for metric, values in FAIRFACE_RACE.items():
        for race, pct in zip(RACES, values):
            put("fairface_label_bias", pct / 100, metric=metric, label_set="default", group_by="race", group=race)
    for label_set, values in FAIRFACE_CHILD.items():
        for age, pct in zip(AGES, values):
            put("fairface_label_bias", pct / 100, metric="denigration_rate", label_set=label_set,
                group_by="age", group=age)
    for model, values in CELEBRITY.items():
        for n, pct in zip(CANDIDATES, values):
            put("celebrity_identification", pct / 100, metric="top1_accuracy", model=model, candidates=n)
    for model, (skew, _) in RETRIEVAL.items():
        put("retrieval_skew", skew, metric="max_skew", model=model, group_by="gender", desired="uniform")
    for sign, gaps in ((1, FACET_MALE), (-1, FACET_FEMALE)):  # rows are masculine minus feminine
        for cls, points in gaps.items():
            put("person_class_bias", sign * points / 100, metric="recall_gap", label_set="facet_classes",
                group_by="gender_presentation", group="masculine", versus="feminine", model="ViT-B/32",
                **{"class": cls})
    return out


def _published(probe: str) -> dict:
    return reference.of(get_probe(probe))


@pytest.mark.parametrize("ident", list(expected()), ids=lambda i: f"{i[0]}:{dict(i[1])}")
def test_each_published_number_is_the_reference_docs(ident):
    probe, key = ident
    value, ci = expected()[ident]
    row = reference.find(_published(probe), **dict(key))
    assert row is not None, f"{probe}: no published row {dict(key)}"
    assert row["value"] == pytest.approx(value, rel=1e-9, abs=1e-12)
    if ci:
        assert (row["ci_low"], row["ci_high"]) == pytest.approx(ci, rel=1e-9)
    else:
        assert row["ci_low"] is None and row["ci_high"] is None


@pytest.mark.parametrize("probe", ["fairface_label_bias", "celebrity_identification", "retrieval_skew",
                                   "person_class_bias"])
def test_the_data_holds_no_other_number(probe):
    """Every row is one of REFERENCE.md's numbers above, once; no percentage slipped in."""
    want = [k for p, k in expected() if p == probe]
    rows = _published(probe)["rows"]
    assert len(rows) == len(want)
    for key in want:
        assert len(reference.select(_published(probe), **dict(key))) == 1, key


def test_imagenet_accuracy_of_the_skew_models_and_their_target():
    for model, (_, top1) in RETRIEVAL.items():
        row = reference.find(_published("retrieval_skew"), model=model)
        assert row["imagenet_top1"] == pytest.approx(top1 / 100) and row["desired"] == "uniform"


def test_labels_say_where_the_numbers_come_from():
    ref = _published("fairface_label_bias")
    assert ref["label"] == "published reference (zero-shot CLIP ViT-L/14)"  # REFERENCE.md's words
    assert "never published" in ref["note"]
    assert _published("celebrity_identification")["label"] == ref["label"]


def test_a_percentage_for_a_fraction_metric_is_refused(tmp_path):
    """One unit: 14.4 where 0.144 is meant would read 1,440% in the report."""
    f = tmp_path / "ref.yaml"
    f.write_text("label: x\nrows:\n  - {metric: non_human_rate, value: 14.4}\n")
    probe = type("P", (), {"reference": f, "metrics": get_probe("fairface_label_bias").metrics})
    with pytest.raises(UserError, match=r"fraction; value 14.4 is not in \[0, 1\]"):
        reference.of(probe)
    f.write_text("label: x\nrows:\n  - {metric: no_such_metric, value: 0.1}\n")
    probe = type("Q", (), {"reference": f, "metrics": get_probe("fairface_label_bias").metrics})
    with pytest.raises(UserError, match="not a metric of the probe"):
        reference.of(probe)


# -- REFERENCE.md itself, where the shared design folder is here ------------------------------
def _reference_md() -> Path | None:
    root = Path(__file__).resolve().parents[1]
    for path in (os.environ.get("CLIP_AUDIT_REFERENCE_MD"), root / "shared" / "REFERENCE.md",
                 root.parent / "shared" / "REFERENCE.md"):
        if path and Path(path).is_file():
            return Path(path)
    return None


def _tables(text: str) -> list[tuple[str, list[str], list[list[str]]]]:
    """(section, header, body rows) of each markdown table."""
    out, section, block = [], "", []
    for line in text.splitlines() + [""]:
        if line.startswith("## "):
            section = line[3:].strip()
        if line.startswith("|"):
            block.append([c.strip() for c in line.strip().strip("|").split("|")])
            continue
        if block:
            out.append((section, block[0], block[2:]))  # block[1]: the |---| line
            block = []
    return out


def _number(cell: str) -> float:
    return float(cell.replace(",", ""))


needs_md = pytest.mark.skipif(_reference_md() is None, reason="REFERENCE.md (shared design folder) not here")


@needs_md
def test_the_numbers_above_are_reference_md_tables():
    tables = {(s, h[1]): (h, body) for s, h, body in _tables(_reference_md().read_text(encoding="utf-8"))}
    head, body = tables[("FairFace denigration probe", "Black")]
    columns = {"Latino": "Latino_Hispanic"}
    rows = {"crime-related": "crime_rate", "non-human": "non_human_rate"}
    for cells in body:
        got = dict(zip((columns.get(c, c) for c in head[1:]), map(_number, cells[1:])))
        assert [got[r] for r in RACES] == FAIRFACE_RACE[rows[cells[0]]]
    head, body = tables[("FairFace denigration probe", "0-2")]
    ages = {"over 70": "more than 70"}
    sets = {"default": "default", "+ 'child'": "with_child"}
    for cells in body:
        got = dict(zip((ages.get(c, c) for c in head[1:]), map(_number, cells[1:])))
        assert [got[a] for a in AGES] == FAIRFACE_CHILD[sets[cells[0]]]
    head, body = tables[("Celebrity identification (surveillance risk)", "100")]
    assert tuple(int(_number(c)) for c in head[1:]) == CANDIDATES
    assert {cells[0]: list(map(_number, cells[1:])) for cells in body} == CELEBRITY


@needs_md
def test_the_numbers_above_are_reference_md_sentences():
    text = " ".join(_reference_md().read_text(encoding="utf-8").split())
    facts = [  # (a sentence of REFERENCE.md, with its numbers in order) -> the numbers above
        (r"Non-human: ([\d.]+)% of all images \(95% CI ([\d.]+)-([\d.]+)%\)", [4.9, 4.6, 5.4]),
        (r"Black images about (\d+)% \(CI ([\d.]+)-([\d.]+)%\)", [14, 12.6, 16.4]),
        (r"Crime-related: ([\d.]+)% of men vs ([\d.]+)% of women", [16.5, 9.8]),
        (r"~([\d.]+)%, ~([\d.]+)% with 'child' added", [32.3, 8.7]),
        (r"CLIP ViT-B/16 gender MaxSkew ([\d.]+) at ([\d.]+)% ImageNet, DebiasCLIP ([\d.]+) at ([\d.]+)%",
         [0.233, 68.1, 0.113, 67.6]),
    ]
    for pattern, numbers in facts:
        match = re.search(pattern, text)
        assert match, pattern
        assert [float(g) for g in match.groups()] == numbers
    # and those are the numbers the data is checked against above
    text_rows = {(m, ls, by, g): (v, ci) for m, ls, by, g, v, ci in FAIRFACE_TEXT}
    assert text_rows[("non_human_rate", "default", "overall", "all")] == (4.9, (4.6, 5.4))
    assert round(text_rows[("non_human_rate", "default", "race", "Black")][0]) == 14  # "about 14%"
    assert text_rows[("non_human_rate", "default", "race", "Black")][1] == (12.6, 16.4)
    assert [text_rows[("crime_rate", "default", "gender", g)][0] for g in ("Male", "Female")] == [16.5, 9.8]
    assert [text_rows[("denigration_rate", s, "age_band", "under 20")][0]
            for s in ("default", "with_child")] == [32.3, 8.7]
    assert RETRIEVAL == {"ViT-B/16": (0.233, 68.1), "DebiasCLIP": (0.113, 67.6)}


@needs_md
def test_the_facet_gaps_above_are_reference_md_sentences():
    text = " ".join(_reference_md().read_text(encoding="utf-8").split())
    for side, gaps in (("male", FACET_MALE), ("female", FACET_FEMALE)):
        match = re.search(rf"better for {side} presentation — ((?:[a-z]+ [\d.]+(?:, | points))+)", text)
        assert match, side
        pairs = re.findall(r"([a-z]+) ([\d.]+)", match.group(1))
        assert {c: float(v) for c, v in pairs} == gaps


def test_person_class_bias_reference_names_classes_as_the_rows_do():
    """The probe's rows name a class by its label set `label` ("basketball player"), not by
    FACET's string ("basketball_player"): a published row keyed the other way would never meet
    its row in the report's table."""
    from audit.labels import load_label_set

    labels = {c["label"] for c in load_label_set("facet_classes")["classes"]}
    for r in _published("person_class_bias")["rows"]:
        assert r["class"] in labels, r
