"""The embedding cache: each image encoded at most once per run and reused by the next run."""
import numpy as np
import pytest

from audit import models
from audit.data import load_source
from audit.embed import Embedder


class CountingModel:
    """Wraps the real model and counts the images it encodes."""

    def __init__(self, model):
        self.model, self.images = model, 0

    def encode_image(self, x):
        self.images += len(x)
        return self.model.encode_image(x)

    def encode_text(self, t):
        return self.model.encode_text(t)


@pytest.fixture
def bundle(micro_dir):
    b = models.load(str(micro_dir), device="cpu")
    b.model = CountingModel(b.model)
    return b


@pytest.fixture
def source(fairface_release):
    return load_source(str(fairface_release), "fairface")


def _two_probes(embedder, source):
    """What two probes over the same images do: each asks for the embeddings."""
    return embedder.images(source), embedder.images(source.subset(range(6)))


def test_each_image_once_per_run_and_none_on_rerun(bundle, source, tmp_path):
    first = Embedder(bundle, cache_dir=tmp_path / "c", batch_size=5, progress=False)
    a, b = _two_probes(first, source)
    assert bundle.model.images == len(source) == 12
    np.testing.assert_array_equal(a[:6], b)
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1, atol=1e-5)
    assert a.dtype == np.float32

    second = Embedder(bundle, cache_dir=tmp_path / "c", batch_size=5, progress=False)
    c, _ = _two_probes(second, source)
    assert bundle.model.images == 12 and second.stats["images_encoded"] == 0
    np.testing.assert_array_equal(a, c)


def test_truncated_cache_chunk_is_recomputed(bundle, source, tmp_path, monkeypatch):
    monkeypatch.setattr("audit.embed.CHUNK_BATCHES", 1)  # one chunk per block of 4: 3 chunks
    a = Embedder(bundle, cache_dir=tmp_path / "c", block=4, progress=False).images(source)
    chunks = sorted((tmp_path / "c").rglob("*.npz"))
    chunks[0].write_bytes(chunks[0].read_bytes()[:100])
    bundle.model.images = 0
    again = Embedder(bundle, cache_dir=tmp_path / "c", block=4, progress=False)
    b = again.images(source)
    assert 0 < bundle.model.images < 12       # only the broken chunk's images
    np.testing.assert_allclose(a, b, atol=1e-6)


def test_garbled_cache_values_fail_the_checksum(bundle, source, tmp_path):
    a = Embedder(bundle, cache_dir=tmp_path / "c", batch_size=32, progress=False).images(source)
    chunk = next((tmp_path / "c").rglob("*.npz"))
    with np.load(chunk) as z:
        keys, emb, checksum = z["keys"], z["emb"].copy(), z["checksum"]
    emb[0, 0] += 1.0
    np.savez(chunk, keys=keys, emb=emb, checksum=checksum)
    bundle.model.images = 0
    b = Embedder(bundle, cache_dir=tmp_path / "c", batch_size=32, progress=False).images(source)
    assert bundle.model.images == 12
    np.testing.assert_allclose(a, b, atol=1e-6)


def test_transform_gets_its_own_cache_entries(bundle, source, tmp_path):
    from PIL import ImageOps

    class Flip:
        key = "flip"

        def __call__(self, img, index):
            return ImageOps.mirror(img)

    e = Embedder(bundle, cache_dir=tmp_path / "c", progress=False)
    clean, flipped = e.images(source), e.images(source, transform=Flip())
    assert bundle.model.images == 24 and not np.allclose(clean, flipped)


def test_no_cache_dir_still_shares_within_run(bundle, source):
    e = Embedder(bundle, cache_dir=None, progress=False)
    _two_probes(e, source)
    assert bundle.model.images == 12


def test_texts_cached_and_normalised(bundle, tmp_path):
    e = Embedder(bundle, cache_dir=tmp_path / "c", progress=False)
    t = e.texts(["a photo of a cat", "a dog", "a photo of a cat"])
    assert e.stats["texts_encoded"] == 2 and t.shape[0] == 3
    np.testing.assert_array_equal(t[0], t[2])
    e2 = Embedder(bundle, cache_dir=tmp_path / "c", progress=False)
    np.testing.assert_array_equal(e2.texts(["a dog"])[0], t[1])
    assert e2.stats["texts_encoded"] == 0


def test_stale_temp_files_are_swept(bundle, source, tmp_path):
    import os
    import time

    e = Embedder(bundle, cache_dir=tmp_path / "c", progress=False)
    e.images(source)
    root = next((tmp_path / "c").iterdir())
    old, young = root / ".chunk.old.tmp", root / ".chunk.young.tmp"
    old.write_bytes(b"half"), young.write_bytes(b"half")
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    Embedder(bundle, cache_dir=tmp_path / "c", progress=False).images(source)
    assert not old.exists() and young.exists()


def test_prefetching_loader_gives_the_same_bytes_and_raises_its_errors(bundle, source, monkeypatch):
    """Images load on a background thread ahead of the forward (audit.embed._prefetched): the
    vectors are those of in-line loading, byte for byte, and an error raised while loading
    reaches the caller, with the loader thread gone."""
    import threading

    from audit.errors import UserError

    class Where:
        key = "same"

        def __init__(self):
            self.threads = set()

        def __call__(self, img, index):
            self.threads.add(threading.current_thread().name)
            return img

    seen = Where()
    ahead = Embedder(bundle, cache_dir=None, batch_size=5, progress=False).images(source, transform=seen)
    monkeypatch.setenv("CLIP_AUDIT_PREFETCH", "0")
    here = Where()
    inline = Embedder(bundle, cache_dir=None, batch_size=5, progress=False).images(source, transform=here)
    assert seen.threads == {"clip-audit-loader"} and here.threads == {"MainThread"}
    assert ahead.tobytes() == inline.tobytes()
    monkeypatch.delenv("CLIP_AUDIT_PREFETCH")

    class Broken:
        key = "broken"

        def __call__(self, img, index):
            if index == 7:
                raise UserError("image 7: cannot be corrupted")
            return img

    with pytest.raises(UserError, match="image 7"):
        Embedder(bundle, cache_dir=None, batch_size=2, progress=False).images(source, transform=Broken())
    assert not any(t.name == "clip-audit-loader" for t in threading.enumerate())
