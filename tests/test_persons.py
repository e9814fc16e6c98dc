"""The persons source: FACET's release layout read as one cropped row per person (audit/persons.py),
and any other source with a label column and attribute columns."""
import hashlib

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from audit.data import load_source
from audit.errors import UserError
from tests.facet_layout import person, write_facet


def two_colour(w=60, h=40):
    """Left half red, right half blue: a crop shows which half it took."""
    arr = np.zeros((h, w, 3), np.uint8)
    arr[:, : w // 2] = (255, 0, 0)
    arr[:, w // 2:] = (0, 0, 255)
    return Image.fromarray(arr)


@pytest.fixture
def facet(tmp_path):
    people = [person(10, "a.png", "nurse", (0, 0, 30, 40), gender="fem", age="young", tones={2: 2, 5: 1}),
              person(11, "a.png", "disk_jockey", (30.4, 10, 20, 30), tones={4: 1, 8: 1}),   # a tie: the lighter
              person(12, "b.png", "gardener", (-5, -5, 8, 100), gender=None, age="na", tones={"na": 3}),
              person(13, "a.png", "nurse", (25, 0, 100, 10), gender="non_binary", age="older", tones={9: 3})]
    return write_facet(tmp_path / "facet", people,
                       {"imgs_1/a.png": two_colour(), "imgs_3/b.png": Image.new("RGB", (12, 12), (9, 90, 9))})


def test_one_row_per_person_with_facets_derived_columns(facet):
    src = load_source(str(facet), "persons")
    t = src.table
    assert t["label"].tolist() == ["nurse", "disk_jockey", "gardener", "nurse"]
    assert t["gender_presentation"].tolist() == ["feminine", "masculine", "unknown", "non-binary"]
    assert t["age_group"].tolist() == ["young", "middle", "unknown", "older"]
    assert t["skin_tone"].tolist() == ["2", "4", "unknown", "9"]
    assert t["skin_tone_group"].tolist() == ["1-3", "4-6", "unknown", "7-10"]
    assert t["person_id"].tolist() == ["10", "11", "12", "13"]
    assert not any(c.startswith(("skin_tone_", "gender_presentation_", "age_presentation_")) and c != "skin_tone_group"
                   for c in t.columns)


def test_each_person_is_the_crop_of_its_box_clamped_to_the_image(facet):
    src = load_source(str(facet), "persons")
    assert [src.image(i).size for i in range(len(src))] == [(30, 40), (21, 30), (3, 12), (35, 10)]
    assert src.image(0).getpixel((10, 10)) == (255, 0, 0)   # the left (red) person
    assert src.image(1).getpixel((10, 10)) == (0, 0, 255)   # x 30.4 -> from pixel 30: the blue half
    assert src.image(2).getpixel((0, 0)) == (9, 90, 9)      # found under imgs_3/ by its name
    sub = src.subset([1])
    assert sub.image(0).size == (21, 30) and sub.content_hash(0) == src.content_hash(1)


def test_two_people_of_one_photo_have_their_own_hash(facet):
    src = load_source(str(facet), "persons")
    hashes = [src.content_hash(i) for i in range(len(src))]
    assert len(set(hashes)) == 4
    raw = hashlib.sha256((facet / "imgs_1" / "a.png").read_bytes())
    raw.update(b"\0crop:0,0,30,40")
    assert hashes[0] == raw.hexdigest()  # the file's bytes and the box: stable across runs


def test_a_missing_image_file_is_skipped_and_listed(facet):
    (facet / "imgs_3" / "b.png").unlink()
    src = load_source(str(facet), "persons")
    assert len(src) == 3 and src.skipped[0]["path"] == "b.png#person 12"


def test_a_generic_persons_source_is_read_as_it_is(tmp_path):
    (tmp_path / "crops").mkdir()
    for i in range(3):
        Image.new("RGB", (8, 8), (i * 40, 0, 0)).save(tmp_path / "crops" / f"{i}.png")
    pd.DataFrame({"file_name": [f"crops/{i}.png" for i in range(3)], "label": ["nurse", "doctor", "nurse"],
                  "gender_presentation": ["feminine", "masculine", "feminine"], "region": ["a", "b", "a"]}
                 ).to_csv(tmp_path / "metadata.csv", index=False)
    src = load_source(str(tmp_path), "persons")
    assert src.table["gender_presentation"].tolist() == ["feminine", "masculine", "feminine"]
    assert src.table["region"].tolist() == ["a", "b", "a"] and src.image(0).size == (8, 8)


@pytest.mark.parametrize("edit, needles", [
    (lambda rows: rows[1].update(bounding_box="{x: 1}"), ["line 3", "bounding_box", "not a JSON object"]),
    (lambda rows: rows[0].update(bounding_box='{"x": 1, "y": 1, "width": 0, "height": 4}'), ["line 2", "width and height"]),
    (lambda rows: rows[2].update(bounding_box='{"x": 500, "y": 1, "width": 9, "height": 9}'),
     ["line 4", "lies outside the image b.png (12x12)"]),
    (lambda rows: rows[3].update(gender_presentation_fem="yes"), ["line 5", "gender_presentation_fem", "'yes'"]),
    (lambda rows: [r.pop("skin_tone_na") for r in rows], ["missing column", "skin_tone_na"]),
    (lambda rows: [r.pop("class1") for r in rows], ["missing column", "class1"]),
])
def test_bad_annotations_are_one_line_naming_file_and_row(tmp_path, edit, needles):
    rows = [person(1, "a.png", "nurse", (0, 0, 5, 5)), person(2, "a.png", "nurse", (5, 0, 5, 5)),
            person(3, "b.png", "doctor", (0, 0, 5, 5)), person(4, "b.png", "doctor", (2, 2, 5, 5))]
    edit(rows)
    root = write_facet(tmp_path, rows, {"imgs_1/a.png": two_colour(), "imgs_2/b.png": Image.new("RGB", (12, 12))})
    with pytest.raises(UserError) as e:
        load_source(str(root), "persons")
    msg = str(e.value)
    assert "\n" not in msg and "annotations.csv" in msg
    for needle in needles:
        assert needle in msg, (needle, msg)


def test_run_with_persons_audits_a_facet_folder(facet, micro_dir, tmp_path):
    """`audit run --persons DIR` end to end with a random-init model: the probe runs on the crops,
    the other probes are skipped (no source), and the report renders its section."""
    from audit import runner

    opts = runner.RunOptions(model=str(micro_dir), persons=str(facet), out=tmp_path / "out", device="cpu",
                             cache_dir=tmp_path / "cache", progress=False,
                             overrides=["person_class_bias.min_group_n=1", "person_class_bias.n_boot=50"])
    results = runner.run(opts)
    probe = results["probes"]["person_class_bias"]
    assert probe["status"] == "ok", probe
    assert probe["summary"]["people"] == 4 and probe["summary"]["classes"] == 52
    assert results["data"]["persons"]["n"] == 4
    assert results["probes"]["fairface_label_bias"]["status"] == "skipped"
    html = (tmp_path / "out" / "report.html").read_text(encoding="utf-8")
    assert "Person classes by group" in html
