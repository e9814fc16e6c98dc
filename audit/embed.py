"""Batched image/text encoding with an on-disk cache shared by every probe and every run.

Cache layout: `<cache_dir>/<model key>/<chunk>.npz`, each chunk holding `keys` (one per vector),
`emb` (float32) and `checksum` (sha256 of both). The model key is the weights' sha256 plus the
preprocess config, so another model or another resize never reuses a vector. Chunks are written
atomically as encoding goes, so a killed run keeps every finished chunk and a rerun resumes.
A chunk that fails to load or to verify is deleted and its vectors recomputed, never trusted.
"""
import hashlib
import logging
import os
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from audit import distributed
from audit.data import hash_strings
from audit.progress import bar

log = logging.getLogger(__name__)
# Batches per cache chunk: how much work a kill -9 can lose (env override for tests and tuning).
CHUNK_BATCHES = max(1, int(os.environ.get("CLIP_AUDIT_CHUNK_BATCHES") or 8))


def default_cache_dir() -> Path:
    if os.environ.get("CLIP_AUDIT_CACHE"):
        return Path(os.environ["CLIP_AUDIT_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "clip-audit"


class Embedder:
    def __init__(self, bundle, *, cache_dir: Path | None, batch_size: int = 64, workers: int = 0,
                 progress: bool = True):
        self.bundle = bundle
        self.batch_size = batch_size
        self.workers = workers
        self.progress = progress
        self.model_key = bundle.info.fingerprint[:24]
        self.store = _ChunkStore(Path(cache_dir) / self.model_key) if cache_dir else None
        self.memory: dict[str, np.ndarray] = {}
        self.stats = {"images_encoded": 0, "images_from_cache": 0, "texts_encoded": 0}
        self.seconds = 0.0  # wall time spent encoding (images and texts): the run's "embed" phase

    # -- images -----------------------------------------------------------------------------
    def images(self, source, *, transform=None) -> np.ndarray:
        tag = getattr(transform, "key", "") if transform is not None else ""
        keys = [f"img:{tag}:{source.content_hash(i)}" for i in range(len(source))]
        todo = self._lookup(keys)
        # under torchrun every rank must run the same collectives: rank 0's list of rows rules
        rows = distributed.agree(_first_rows(keys, todo))
        self.stats["images_from_cache"] += len(set(keys)) - len(rows)
        if rows:
            t0 = time.perf_counter()
            self._encode_images(source, rows, [keys[i] for i in rows], transform)
            self.seconds += time.perf_counter() - t0
        return self._stack(keys)

    def _encode_images(self, source, rows, keys, transform) -> None:
        if distributed.enabled():
            return self._encode_images_sharded(source, rows, keys, transform)
        loader = self._loader(source, rows, transform)
        chunk_keys, chunk_vecs, done = [], [], 0
        with bar(f"embedding {source.name}", len(rows), enabled_=self.progress) as advance:
            for batch in loader:
                vecs = self._encode(batch, image=True)
                chunk_keys += keys[done:done + len(vecs)]
                chunk_vecs.append(vecs)
                done += len(vecs)
                advance(len(vecs))
                if len(chunk_vecs) >= CHUNK_BATCHES:
                    self._save(chunk_keys, chunk_vecs)
                    chunk_keys, chunk_vecs = [], []
        self._save(chunk_keys, chunk_vecs)
        self.stats["images_encoded"] += done

    def _encode_images_sharded(self, source, rows, keys, transform) -> None:
        """This rank's block of whole batches, then every rank's vectors on every rank."""
        start, stop = distributed.shard(len(rows), batch_size=self.batch_size)
        mine = []
        with bar(f"embedding {source.name}", stop - start, enabled_=self.progress) as advance:
            for batch in self._loader(source, rows[start:stop], transform):
                mine.append(self._encode(batch, image=True))
                advance(len(mine[-1]))
        local = np.concatenate(mine) if mine else np.zeros((0, 0), dtype=np.float32)
        vecs = distributed.gather(local)
        step = CHUNK_BATCHES * self.batch_size  # the same chunking as one process
        for s in range(0, len(keys), step):
            self._save(keys[s:s + step], [vecs[s:s + step]])
        self.stats["images_encoded"] += len(keys)

    def _loader(self, source, rows, transform):
        import torch
        from torch.utils.data import DataLoader

        ds = _ImageDataset(source, rows, self.bundle.preprocess, transform)
        return DataLoader(ds, batch_size=self.batch_size, shuffle=False, num_workers=self.workers,
                          collate_fn=_collate, pin_memory=self.bundle.device == "cuda",
                          persistent_workers=False, prefetch_factor=4 if self.workers else None,
                          generator=torch.Generator().manual_seed(0))

    # -- texts ------------------------------------------------------------------------------
    def texts(self, texts: list[str]) -> np.ndarray:
        keys = [f"txt:{hash_strings([t])}" for t in texts]
        todo = self._lookup(keys)
        if todo:
            t0 = time.perf_counter()
            rows = _first_rows(keys, todo)
            step = _text_batch(self.bundle.device)
            vecs = [self._encode(self.bundle.tokenizer([texts[i] for i in rows[s:s + step]]), image=False)
                    for s in range(0, len(rows), step)]
            self._save([keys[i] for i in rows], vecs)
            self.stats["texts_encoded"] += len(rows)
            self.seconds += time.perf_counter() - t0
        return self._stack(keys)

    # -- shared -----------------------------------------------------------------------------
    def _encode(self, batch, *, image: bool) -> np.ndarray:
        import torch

        device = self.bundle.device
        batch = batch.to(device, non_blocking=True)
        if image and device == "cuda":
            batch = batch.contiguous(memory_format=torch.channels_last)
        # bf16 autocast on CUDA: the tensor cores' native precision; outputs go back to fp32.
        with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16, enabled=device == "cuda"):
            out = self.bundle.model.encode_image(batch) if image else self.bundle.model.encode_text(batch)
        out = torch.nn.functional.normalize(out.float(), dim=-1)
        return out.cpu().numpy().astype(np.float32)

    def _lookup(self, keys) -> set[str]:
        """Fill memory from disk where possible; return the keys still to compute."""
        missing = {k for k in keys if k not in self.memory}
        if missing and self.store is not None:
            self.memory.update(self.store.get(missing))
            missing = {k for k in missing if k not in self.memory}
        return missing

    def _save(self, keys, vec_list) -> None:
        if not keys:
            return
        vecs = np.concatenate(vec_list)
        self.memory.update(zip(keys, vecs))
        if self.store is not None and distributed.is_main():  # one writer per cache folder
            self.store.put(keys, vecs)

    def _stack(self, keys) -> np.ndarray:
        if not keys:
            return np.zeros((0, 0), dtype=np.float32)
        return np.stack([self.memory[k] for k in keys]).astype(np.float32, copy=False)


def _text_batch(device: str) -> int:
    """Texts per encode. On a CPU small batches are faster (ViT-B-32's text tower on 2 cores:
    256 texts take 6.1 s in batches of 16, 6.4 s of 32, 7.6 s of 64 and 8.4-10 s of 256: the
    activations of a big batch fall out of cache); a GPU wants big ones."""
    return 256 if device == "cuda" else 32


class _ImageDataset:
    def __init__(self, source, rows, preprocess, transform):
        self.source, self.rows, self.preprocess, self.transform = source, rows, preprocess, transform

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, j):
        i = self.rows[j]
        with _one_thread():
            img = self.source.image(i)
            if self.transform is not None:
                img = self.transform(img, i)
            return self.preprocess(img)


def _collate(tensors):
    """torch.stack of one batch, single-threaded like each image's transform: on a busy 2-core
    box a two-thread stack of 32 images sometimes waited 250 ms for the second thread."""
    import torch

    with _one_thread():
        return torch.stack(tensors)


@contextmanager
def _one_thread():
    """Per-image tensor ops (ToTensor, Normalize, a corruption) are tiny: spread over intra-op
    threads they cost more in synchronisation than they save, 20+ ms instead of 0.5 ms per image
    on a busy 2-core box. DataLoader workers run with one thread for this reason; do the same
    when loading in the main process. The toggle itself costs under a microsecond."""
    import torch

    n = torch.get_num_threads()
    if n == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


class _ChunkStore:
    def __init__(self, root: Path):
        self.root = root
        self.index: dict[str, Path] | None = None

    def _scan(self) -> dict[str, Path]:
        if self.index is None:
            self.index = {}
            self._sweep_stale_temp_files()
            for f in sorted(self.root.glob("*.npz")):
                try:
                    with np.load(f) as z:
                        self.index.update(dict.fromkeys(z["keys"].tolist(), f))
                except Exception as e:  # truncated or garbled: recompute rather than trust
                    self._drop(f, e)
        return self.index

    def _sweep_stale_temp_files(self, max_age_s: float = 3600) -> None:
        """A kill -9 mid-write leaves a .tmp behind; never read, but it should not pile up.
        Only old ones go: a younger one may belong to a run writing right now."""
        import time

        for f in self.root.glob(".chunk.*.tmp"):
            try:
                if time.time() - f.stat().st_mtime > max_age_s:
                    f.unlink()
            except OSError:
                pass

    def get(self, wanted: set[str]) -> dict[str, np.ndarray]:
        index = self._scan()
        files = {index[k] for k in wanted if k in index}
        found = {}
        for f in sorted(files):
            found.update(self._read_verified(f))
        return {k: v for k, v in found.items() if k in wanted}

    def _read_verified(self, f: Path) -> dict:
        try:
            with np.load(f) as z:
                keys, emb, checksum = z["keys"], z["emb"], str(z["checksum"])
            if _checksum(keys, emb) != checksum:
                raise ValueError("checksum mismatch")
            return dict(zip(keys.tolist(), emb))
        except Exception as e:
            self._drop(f, e)
            return {}

    def _drop(self, f: Path, why) -> None:
        log.warning("cache chunk %s is corrupt (%s); recomputing its vectors", f.name, why)
        f.unlink(missing_ok=True)
        if self.index:
            self.index = {k: v for k, v in self.index.items() if v != f}

    def put(self, keys: list[str], emb: np.ndarray) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        arr_keys = np.array(keys)
        checksum = _checksum(arr_keys, emb)
        path = self.root / f"{checksum[:32]}.npz"
        fd, tmp = tempfile.mkstemp(dir=self.root, prefix=".chunk.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as fh:
                np.savez(fh, keys=arr_keys, emb=emb, checksum=np.array(checksum))
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:  # Ctrl-C/SIGTERM mid-write: leave no stray temp file behind
            Path(tmp).unlink(missing_ok=True)
            raise
        self._scan().update(dict.fromkeys(keys, path))


def _checksum(keys: np.ndarray, emb: np.ndarray) -> str:
    h = hashlib.sha256("\n".join(keys.tolist()).encode())
    h.update(np.ascontiguousarray(emb, dtype=np.float32).tobytes())
    return h.hexdigest()


def _first_rows(keys: list[str], todo: set[str]) -> list[int]:
    """One row per key still to compute: the same image twice in a source is encoded once."""
    seen, rows = set(), []
    for i, k in enumerate(keys):
        if k in todo and k not in seen:
            seen.add(k)
            rows.append(i)
    return rows
