"""Determinism (docs/INTERNALS.md, "Determinism"): same inputs + seed -> byte-identical rows.

The model sees fixed encode blocks whatever --batch-size says, so the batch size cannot move a
bit: rows are byte-identical across batch sizes too, on any CPU, by construction.
"""
import json

import pytest

from audit.cli import main
from tests.bad_inputs.make_corpus import make_fairface_source

PROBES = "fairface_label_bias,retrieval_skew"


@pytest.fixture(scope="module")
def faces(tmp_path_factory):
    return make_fairface_source(tmp_path_factory.mktemp("det") / "faces", 160, seed=11)


def _run(micro_dir, faces, work, *, batch_size=64, seed=0, cache=None) -> dict:
    code = main(["-q", "run", "--model", str(micro_dir), "--fairface", str(faces), "--probes", PROBES,
                 "--batch-size", str(batch_size), "--seed", str(seed), "--out", str(work / "out"),
                 "--cache-dir", str(cache or work / "cache")])
    assert code == 0
    return json.loads((work / "out" / "results.json").read_text())


def _rows_bytes(results: dict) -> bytes:
    return json.dumps({n: p["rows"] for n, p in results["probes"].items()}, sort_keys=True).encode()


def test_two_runs_and_a_cached_rerun_give_byte_identical_rows(micro_dir, faces, tmp_path):
    a = _run(micro_dir, faces, tmp_path / "a")
    b = _run(micro_dir, faces, tmp_path / "b")                       # fresh cache: recomputed
    c = _run(micro_dir, faces, tmp_path / "c", cache=tmp_path / "a" / "cache")  # all from cache
    assert all(p["status"] == "ok" and p["rows"] for p in a["probes"].values())
    assert b["run"]["embedding"]["images_encoded"] == 160 and c["run"]["embedding"]["images_encoded"] == 0
    assert _rows_bytes(a) == _rows_bytes(b) == _rows_bytes(c)
    assert [p["findings"] for p in a["probes"].values()] == [p["findings"] for p in b["probes"].values()]
    assert a["data"] == b["data"]


def test_the_seed_is_what_moves_the_intervals(micro_dir, faces, tmp_path):
    """The control: a different seed gives other bootstrap intervals (so equality above is earned)."""
    a = _run(micro_dir, faces, tmp_path / "a", seed=0)
    b = _run(micro_dir, faces, tmp_path / "b", seed=1, cache=tmp_path / "a" / "cache")
    ci = lambda r: [(x["ci_low"], x["ci_high"]) for x in r["probes"]["fairface_label_bias"]["rows"]]  # noqa: E731
    assert ci(a) != ci(b)
    vals = lambda r: [x["value"] for x in r["probes"]["fairface_label_bias"]["rows"] if "difference" not in x["metric"]]  # noqa: E731
    assert vals(a) == vals(b)


def test_batch_size_1_vs_64_embeddings_are_byte_identical(micro_dir, faces):
    from audit.data import load_source
    from audit.embed import Embedder
    from audit.models import load

    bundle = load(str(micro_dir), device="cpu")
    src = load_source(str(faces), "fairface").subset(range(64))
    one = Embedder(bundle, cache_dir=None, batch_size=1, progress=False).images(src)
    many = Embedder(bundle, cache_dir=None, batch_size=64, progress=False).images(src)
    assert one.shape == (64, 32) and one.tobytes() == many.tobytes()


def test_batch_sizes_give_byte_identical_rows(micro_dir, faces, tmp_path):
    a = _run(micro_dir, faces, tmp_path / "a", batch_size=7)
    b = _run(micro_dir, faces, tmp_path / "b", batch_size=64)
    assert all(p["status"] == "ok" and p["rows"] for p in a["probes"].values())
    assert _rows_bytes(a) == _rows_bytes(b)
    assert [p["findings"] for p in a["probes"].values()] == [p["findings"] for p in b["probes"].values()]


def test_the_encode_block_is_recorded(micro_dir, faces, tmp_path):
    a = _run(micro_dir, faces, tmp_path / "a")
    assert a["run"]["embedding"]["encode_block"] == 32
