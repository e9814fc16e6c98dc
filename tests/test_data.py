"""Every SRC form reads into the same table; ClassLabel ints become their names."""
import hashlib

import pandas as pd
import pytest

from audit.data import decode_image, load_source
from audit.errors import UserError
from tests.conftest import make_images


def _check_fairface(src, expected: pd.DataFrame):
    assert list(src.table[["race", "gender", "age"]].itertuples(index=False)) == \
        list(expected[["race", "gender", "age"]].itertuples(index=False))
    assert src.image(0).mode == "RGB"
    assert src.content_hash(0) == hashlib.sha256(src.image_bytes(0)).hexdigest()
    assert len(src.fingerprint) == 64


def test_fairface_release_layout(fairface_release):
    df = pd.read_csv(fairface_release / "fairface_label_val.csv", dtype=str)
    src = load_source(str(fairface_release), "fairface")
    _check_fairface(src, df)
    assert load_source(f"{fairface_release}@val", "fairface").fingerprint == src.fingerprint


def test_save_to_disk_with_classlabels(fairface_hf, tmp_path):
    ds, df = fairface_hf
    ds.save_to_disk(str(tmp_path / "disk"))
    src = load_source(str(tmp_path / "disk"), "fairface")
    _check_fairface(src, df)
    assert set(src.table["service_test"]) <= {"True", "False"}


def test_save_to_disk_datasetdict_split(fairface_hf, tmp_path):
    import datasets

    ds, df = fairface_hf
    datasets.DatasetDict({"train": ds.select(range(4)), "validation": ds}).save_to_disk(str(tmp_path / "dd"))
    assert len(load_source(str(tmp_path / "dd"), "fairface")) == 12          # validation by default
    assert len(load_source(f"{tmp_path / 'dd'}@train", "fairface")) == 4
    with pytest.raises(UserError, match="no split 'test'"):
        load_source(f"{tmp_path / 'dd'}@test", "fairface")


def test_parquet_file_and_folder(fairface_hf, tmp_path):
    ds, df = fairface_hf
    (tmp_path / "pq").mkdir()
    ds.to_parquet(str(tmp_path / "pq" / "part-0.parquet"))
    _check_fairface(load_source(str(tmp_path / "pq" / "part-0.parquet"), "fairface"), df)
    _check_fairface(load_source(str(tmp_path / "pq"), "fairface"), df)


def test_image_folder_with_metadata_csv_and_csv_file(tmp_path):
    names = make_images(tmp_path / "images", 6, ext="png")
    labels = ["cat", "dog", "cat", "bird", "dog", "cat"]
    pd.DataFrame({"file_name": [f"images/{n}" for n in names], "label": labels}).to_csv(tmp_path / "metadata.csv", index=False)
    for spec in (str(tmp_path), str(tmp_path / "metadata.csv")):
        src = load_source(spec, "classify")
        assert list(src.table["label"]) == labels
        assert src.image(3).size == (24, 24)


def test_undecodable_images_are_skipped_and_listed(fairface_release):
    (fairface_release / "val" / "0.jpg").write_bytes(b"")
    (fairface_release / "val" / "1.jpg").write_bytes(b"GIF89a not really")
    src = load_source(str(fairface_release), "fairface")
    assert len(src) == 10
    assert [s["path"].split("/")[-1] for s in src.skipped] == ["0.jpg", "1.jpg"]
    assert all(s["reason"] for s in src.skipped)


def test_missing_column_names_the_file(tmp_path):
    make_images(tmp_path / "i", 2)
    pd.DataFrame({"file_name": ["i/0.jpg", "i/1.jpg"], "race": ["Black", "White"]}).to_csv(tmp_path / "metadata.csv", index=False)
    with pytest.raises(UserError, match=r"metadata.csv: missing column\(s\) gender, age"):
        load_source(str(tmp_path), "fairface")


def test_offline_hub_dataset_is_one_clear_line():
    with pytest.raises(UserError, match="HuggingFaceM4/FairFace:0.25@validation: could not load") as e:
        load_source("HuggingFaceM4/FairFace:0.25@validation", "fairface")
    assert "\n" not in str(e.value)


def test_nonexistent_path_is_a_clear_error(tmp_path):
    with pytest.raises(UserError, match="no such file"):
        load_source(str(tmp_path / "nope" / "x"), "fairface")


def test_subset_keeps_images_and_rows(fairface_release):
    src = load_source(str(fairface_release), "fairface")
    sub = src.subset([5, 2])
    assert sub.image_bytes(0) == src.image_bytes(5) and sub.content_hash(1) == src.content_hash(2)
    assert sub.table.iloc[0].to_dict() == src.table.iloc[5].to_dict()


def test_keep_decoded_reads_each_file_once_and_gives_the_same_pixels(fairface_release):
    """distribution_shift reads its subset 50 times over: each image is decoded once, and a
    transform that draws on what it gets cannot change the kept copy."""
    src = load_source(str(fairface_release), "fairface").subset([0, 1, 2])
    calls = []
    reader = src._reader
    kept = src.keep_decoded()
    kept._reader = lambda raw: calls.append(raw) or reader(raw)
    for _ in range(3):
        for i in range(len(kept)):
            img = kept.image(i)
            assert img.tobytes() == src.image(i).tobytes()
            img.paste((255, 0, 0), (0, 0, 4, 4))  # a transform drawing on its input
    assert len(calls) == len(kept)
    assert kept.content_hash(1) == src.content_hash(1) and src._decoded is None


def test_threaded_check_pass_refuses_every_bomb_and_leaves_warnings_alone(tmp_path):
    """The check pass decodes on two threads with a plain size check as the bomb guard: every
    72-megapixel PNG (over the limit, under PIL's own threshold) is refused wherever it falls,
    the good images keep their order, and no warning filter was touched (another thread may
    hold one: a model loader's held_warnings)."""
    import warnings

    import pandas as pd
    from PIL import Image

    from tests.bad_inputs.make_corpus import _png_header_only

    before = list(warnings.filters)
    (tmp_path / "images").mkdir()
    names = []
    for i in range(40):
        name = f"{i:02d}.png"
        if i % 7 == 3:
            (tmp_path / "images" / name).write_bytes(_png_header_only(9000, 8000))
        else:
            Image.new("RGB", (8, 8), (i, 2 * i, 3 * i)).save(tmp_path / "images" / name)
        names.append(name)
    pd.DataFrame({"file_name": [f"images/{n}" for n in names], "label": "x"}).to_csv(tmp_path / "metadata.csv", index=False)
    src = load_source(str(tmp_path), "classify")
    bombs = [n for i, n in enumerate(names) if i % 7 == 3]
    assert [s["path"].split("/")[-1] for s in src.skipped] == bombs
    assert all("decompression bomb" in s["reason"] for s in src.skipped)
    good = [i for i in range(40) if i % 7 != 3]
    assert [src.image(k).getpixel((0, 0)) for k in range(len(src))] == [(i, 2 * i, 3 * i) for i in good]
    assert warnings.filters == before


@pytest.mark.parametrize("size", [(9000, 8000), (10000, 10000), (20000, 20000)])
def test_bomb_guard_holds_whatever_warning_filter_is_in_force(size):
    """Over our limit, under PIL's warning threshold, between its warning and error thresholds
    and over both: refused while another part of the process ignores every warning (as a
    loader's held_warnings may, on another thread, while the check pass decodes)."""
    import warnings

    from tests.bad_inputs.make_corpus import _png_header_only

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ValueError, match="decompression bomb"):
            decode_image(_png_header_only(*size))
