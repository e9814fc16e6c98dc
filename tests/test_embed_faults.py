"""The cache degrades instead of failing, and never serves a vector that does not fit the model;
a model whose vectors are not finite stops the run (issue 13, part 2)."""
import errno
import logging

import numpy as np
import pytest

from audit import models
from audit.data import load_source
from audit.embed import Embedder
from audit.errors import UserError


@pytest.fixture
def bundle(micro_dir):
    return models.load(str(micro_dir), device="cpu")


@pytest.fixture
def source(fairface_release):
    return load_source(str(fairface_release), "fairface")


def _reference(bundle, source):
    return Embedder(bundle, cache_dir=None, progress=False).images(source)


def test_cache_below_a_file_degrades_to_computing(bundle, source, tmp_path, caplog):
    (tmp_path / "plain-file").write_text("not a folder")
    e = Embedder(bundle, cache_dir=tmp_path / "plain-file" / "c", progress=False)
    with caplog.at_level(logging.WARNING, logger="audit.embed"):
        got = e.images(source)
        e.texts(["a photo of a dog"])
    np.testing.assert_array_equal(got, _reference(bundle, source))
    warnings = [r for r in caplog.records if "cannot be written" in r.getMessage()]
    assert len(warnings) == 1  # one warning, not one per chunk
    assert e.stats["cache_not_written"].startswith(("NotADirectoryError", "FileExistsError"))


def test_full_disk_mid_run_degrades_and_leaves_no_temp_file(bundle, source, tmp_path, monkeypatch):
    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("audit.embed.os.fsync", full)
    e = Embedder(bundle, cache_dir=tmp_path / "c", progress=False)
    np.testing.assert_array_equal(e.images(source), _reference(bundle, source))
    assert not e.store.writable and not list((tmp_path / "c").rglob(".chunk.*"))


def test_a_folder_in_place_of_a_chunk_is_ignored(bundle, source, tmp_path):
    first = Embedder(bundle, cache_dir=tmp_path / "c", progress=False)
    first.images(source)
    chunk = next((tmp_path / "c").rglob("*.npz"))
    chunk.unlink()
    chunk.mkdir()
    again = Embedder(bundle, cache_dir=tmp_path / "c", progress=False)
    np.testing.assert_array_equal(again.images(source), _reference(bundle, source))
    assert again.stats["images_encoded"] == len(source)


def test_a_chunk_of_the_wrong_width_is_not_served(bundle, source, tmp_path):
    """A whole, checksummed chunk with 16-wide vectors in a 32-wide model's folder."""
    from audit.embed import _checksum

    first = Embedder(bundle, cache_dir=tmp_path / "c", progress=False)
    ref = first.images(source)
    chunk = next((tmp_path / "c").rglob("*.npz"))
    with np.load(chunk) as z:
        keys = z["keys"]
    emb = np.ascontiguousarray(np.random.default_rng(0).random((len(keys), 16), dtype=np.float32))
    np.savez(chunk, keys=keys, emb=emb, checksum=np.array(_checksum(keys, emb)))
    again = Embedder(bundle, cache_dir=tmp_path / "c", progress=False)
    np.testing.assert_array_equal(again.images(source), ref)
    assert again.stats["images_encoded"] == len(source)


def test_non_finite_embeddings_stop_the_run(bundle, source):
    import torch

    with torch.no_grad():
        for p in bundle.model.parameters():
            p.fill_(float("nan"))
    e = Embedder(bundle, cache_dir=None, progress=False)
    with pytest.raises(UserError, match="non-finite image embeddings"):
        e.images(source)
    with pytest.raises(UserError, match="non-finite text embeddings"):
        e.texts(["a photo of a dog"])
