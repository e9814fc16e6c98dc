"""Batched image/text encoding with an on-disk cache shared by every probe and every run.

Cache layout: `<cache_dir>/<model key>/<chunk>.npz`, each chunk holding `keys` (one per vector),
`emb` (float32) and `checksum` (sha256 of both). The model key is the model's fingerprint
(weights, architecture config, preprocessing, tokenizer and context length: models.model_fingerprint),
so another model, the same weights with another activation, or another resize never reuses a vector. Chunks are written
atomically as encoding goes, so a killed run keeps every finished chunk and a rerun resumes.
A chunk that fails to load, to verify or to match the model's vector width is deleted and its
vectors recomputed, never trusted. A cache that cannot be written (full, read-only) is dropped
with one warning and the run goes on computing without it.

The model always sees blocks of a fixed number of rows (`encode_block`: 32 on a CPU, 256 on
CUDA), cut from the rows still to encode in source order, whatever `--batch-size` says: a float32
GEMM's rounding depends on the shape it runs at, so this is what keeps every number independent
of the batch size (docs/INTERNALS.md, "Determinism").
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
from audit.errors import UserError
from audit.progress import bar

log = logging.getLogger(__name__)
# Encode blocks per cache chunk: how much work a kill -9 can lose (env override for tests and tuning).
CHUNK_BATCHES = max(1, int(os.environ.get("CLIP_AUDIT_CHUNK_BATCHES") or 8))


def encode_block(device: str) -> int:
    """Rows per model forward. Fixed per device kind, never taken from --batch-size, so the batch
    size cannot move a vector's last bits. CLIP_AUDIT_ENCODE_BLOCK overrides it (a GPU short of
    memory); results.json records the value, and runs compare byte-for-byte only at equal blocks.
    On a CPU, 32 images of ViT-B-32 are a GEMM of 1,600 token rows: past the size where bigger
    blocks still speed it up (bench/RESULTS.md)."""
    env = os.environ.get("CLIP_AUDIT_ENCODE_BLOCK")
    return max(1, int(env)) if env else (256 if device == "cuda" else 32)


def default_cache_dir() -> Path:
    if os.environ.get("CLIP_AUDIT_CACHE"):
        return Path(os.environ["CLIP_AUDIT_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "clip-audit"


class Embedder:
    def __init__(self, bundle, *, cache_dir: Path | None, batch_size: int = 64, workers: int = 0,
                 progress: bool = True, block: int | None = None):
        self.bundle = bundle
        self.batch_size = batch_size  # images per loading step: decode, preprocess, progress
        self.block = block or encode_block(bundle.device)  # rows per model forward
        self.workers = workers
        self.progress = progress
        self.model_key = bundle.info.fingerprint[:24]  # the whole model: weights, architecture, preprocess, tokenizer
        self.store = _ChunkStore(Path(cache_dir) / self.model_key, width=self._width) if cache_dir else None
        self.memory: dict[str, np.ndarray] = {}
        self.stats = {"images_encoded": 0, "images_from_cache": 0, "texts_encoded": 0,
                      "encode_block": self.block}
        self._dim: int | None = None
        self._trim: bool | None = None
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
        if not self.workers and os.environ.get("CLIP_AUDIT_PREFETCH", "1") != "0":
            loader = _prefetched(loader)
        chunk_keys, chunk_vecs, done = [], [], 0
        with bar(f"embedding {source.name}", len(rows), enabled_=self.progress) as advance:
            for batch in _reblock(loader, self.block):
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
        start, stop = distributed.shard(len(rows), batch_size=self.block)
        mine = []
        with bar(f"embedding {source.name}", stop - start, enabled_=self.progress) as advance:
            for batch in _reblock(self._loader(source, rows[start:stop], transform), self.block):
                mine.append(self._encode(batch, image=True))
                advance(len(mine[-1]))
        local = np.concatenate(mine) if mine else np.zeros((0, 0), dtype=np.float32)
        vecs = distributed.gather(local)
        step = CHUNK_BATCHES * self.block  # the same chunking as one process
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
            tokens = self.bundle.tokenizer([texts[i] for i in rows])
            order = _by_length(tokens) if self._trims_text() else list(range(len(rows)))
            step = _text_batch(self.bundle.device)
            vecs = [self._encode(tokens[order[s:s + step]], image=False) for s in range(0, len(order), step)]
            self._save([keys[rows[j]] for j in order], vecs)
            self.stats["texts_encoded"] += len(rows)
            self.seconds += time.perf_counter() - t0
        return self._stack(keys)

    def _trims_text(self) -> bool:
        if self._trim is None:
            self._trim = _trimmable(self.bundle.model)
        return self._trim

    # -- shared -----------------------------------------------------------------------------
    def _encode(self, batch, *, image: bool) -> np.ndarray:
        import torch

        device = self.bundle.device
        batch = batch.to(device, non_blocking=True)
        if image and device == "cuda":
            batch = batch.contiguous(memory_format=torch.channels_last)
        # bf16 autocast on CUDA: the tensor cores' native precision; outputs go back to fp32.
        with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16, enabled=device == "cuda"):
            if image:
                out = self.bundle.model.encode_image(batch)
            elif self._trims_text():
                out = encode_text_trimmed(self.bundle.model, batch)
            else:
                out = self.bundle.model.encode_text(batch)
        out = torch.nn.functional.normalize(out.float(), dim=-1)
        return self._finite(out.cpu().numpy().astype(np.float32), image=image)

    def _finite(self, vecs: np.ndarray, *, image: bool) -> np.ndarray:
        """NaN or inf vectors make every rate 0% and every gate pass: stop instead."""
        bad = ~np.isfinite(vecs).all(axis=1)
        if bad.any():
            raise UserError(f"{self.bundle.info.spec}: the model gives non-finite {'image' if image else 'text'} "
                            f"embeddings (NaN/inf) for {int(bad.sum())} of {len(vecs)} inputs; its weights are "
                            "broken or overflow at this precision, so no audit number would mean anything")
        return vecs

    def _width(self) -> int:
        """The model's vector width, for checking cached chunks (one short text, never cached)."""
        if self._dim is None:
            self._dim = int(self._encode(self.bundle.tokenizer(["a"]), image=False).shape[1])
        return self._dim

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
            if self.store.error:  # recorded in results.json: a degraded run says so
                self.stats["cache_not_written"] = self.store.error

    def _stack(self, keys) -> np.ndarray:
        if not keys:
            return np.zeros((0, 0), dtype=np.float32)
        return np.stack([self.memory[k] for k in keys]).astype(np.float32, copy=False)


def _text_batch(device: str) -> int:
    """Texts per encode: fixed per device kind (a shape chosen from the machine would make the
    vectors machine-chosen too). On a CPU, 64 trimmed prompts per batch were the fastest size
    on both CPU kinds measured (bench/text_batch.py: 11% faster than 32 on an Intel Xeon, 9% on
    an AMD EPYC; 128 is faster still on the Xeon only; bench/RESULTS.md); a GPU wants big batches."""
    return 256 if device == "cuda" else 64


def _prefetched(batches, depth: int = 2):
    """Iterate `batches` on a thread, `depth` ahead, so decoding and preprocessing the next
    images fills the cycles the forward leaves idle instead of one core idling through the
    decode (bench/pipeline.py: 0.89 -> 0.96 of the bare forward on 2 cores). The thread runs at
    the lowest priority: at equal priority it preempts one of the forward's OpenMP threads and
    the other waits for it at every barrier (0.82). torch's thread count is per thread (OpenMP
    and MKL keep it thread-local), so the loader's single-thread ops (`_one_thread`) never narrow
    the forward's. Tensors are those of in-line loading, so vectors are byte-identical.
    CLIP_AUDIT_PREFETCH=0 loads in-line. An error in the thread is raised here; when the
    consumer stops (an interrupt), the thread stops after its current batch and is joined."""
    import queue
    import threading

    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    done = object()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def fill():
        try:
            _lowest_priority()
            for batch in batches:
                if not put(batch):
                    return
            put(done)
        except BaseException as e:  # handed to the consumer, raised in its thread
            put(e)

    thread = threading.Thread(target=fill, name="clip-audit-loader", daemon=True)
    thread.start()
    try:
        while (item := q.get()) is not done:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        # Wait for the thread: one left inside a torch op while the interpreter exits aborts
        # the process ("terminate called without an active exception") instead of exit 130.
        stop.set()
        thread.join()


def _lowest_priority() -> None:
    """Nice the calling thread to 19. Linux only, where a thread id is a task id: elsewhere
    setpriority(PRIO_PROCESS, ...) would name the process (or nothing)."""
    import sys
    import threading

    if sys.platform.startswith("linux"):
        try:
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
        except OSError:  # a sandbox that forbids it: prefetching still overlaps, less well
            pass


def _reblock(batches, block: int):
    """Re-cut a stream of (n, ...) tensors into tensors of exactly `block` rows (the last may be
    shorter), so the model's input shape never depends on how the loader batched."""
    import torch

    pending, have = [], 0
    for batch in batches:
        pending.append(batch)
        have += len(batch)
        while have >= block:
            whole = torch.cat(pending) if len(pending) > 1 else pending[0]
            yield whole[:block]
            rest = whole[block:]
            pending, have = ([rest] if len(rest) else []), len(rest)
    if have:
        yield torch.cat(pending) if len(pending) > 1 else pending[0]


def _trimmable(model) -> bool:
    """True when positions after a prompt's end cannot change its vector, so they need not be
    computed: open_clip's CLIP text tower with a causal mask and end-of-text (argmax/eos)
    pooling, padded with token 0 by its SimpleTokenizer. Without a causal mask (SigLIP), with
    last/mean pooling, or in a CustomTextCLIP (HF text towers), every position counts: keep full length."""
    if not type(model).__module__.startswith("open_clip"):  # another library: never import open_clip for it
        return False
    import open_clip

    return (type(model) is open_clip.CLIP and getattr(model, "attn_mask", None) is not None
            and getattr(model, "text_pool_type", None) in ("argmax", "eos"))


def encode_text_trimmed(model, tokens):
    """open_clip CLIP.encode_text (open_clip 3.x, model.py) on tokens cut after the batch's last
    non-pad column: the same layers, with the positional embedding and causal mask sliced to
    that length. Exact in arithmetic; in float32 within ~3e-6 of full length (tests/test_embed.py)."""
    from open_clip.transformer import text_global_pool

    n = max(1, int((tokens != 0).any(dim=0).nonzero().max()) + 1) if tokens.numel() else 1
    tokens = tokens[:, :n]
    cast_dtype = model.transformer.get_cast_dtype()
    x = model.token_embedding(tokens).to(cast_dtype) + model.positional_embedding[:n].to(cast_dtype)
    x = model.transformer(x, attn_mask=model.attn_mask[:n, :n])
    x = model.ln_final(x)
    x = text_global_pool(x, tokens, model.text_pool_type, eos_token_id=getattr(model, "text_eos_id", None))
    if model.text_projection is not None:
        x = model.text_projection(x) if hasattr(model.text_projection, "weight") else x @ model.text_projection
    return x


def _by_length(tokens) -> list[int]:
    """Text rows sorted by token length (stable), so each batch is cut close to its own prompts."""
    lengths = (tokens != 0).sum(dim=1).tolist()
    return sorted(range(len(lengths)), key=lambda i: lengths[i])


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
    """The on-disk half of the cache. Reading trusts nothing (checksum, key type, vector width);
    writing is best effort: the first failure (disk full, read-only, a folder in the way) turns
    writing off with one warning, and the run computes on from memory."""

    def __init__(self, root: Path, *, width):
        self.root = root
        self.width = width  # callable: the model's vector width, asked only when a chunk is read
        self.index: dict[str, Path] | None = None
        self.writable, self.error = True, None

    def _scan(self) -> dict[str, Path]:
        if self.index is None:
            self.index = {}
            self._sweep_stale_temp_files()
            for f in sorted(self.root.glob("*.npz")):
                try:
                    with np.load(f) as z:
                        self.index.update(dict.fromkeys(z["keys"].tolist(), f))
                except Exception as e:  # truncated, garbled, or not a file: recompute rather than trust
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
            # a checksum proves the file is whole, not that it is this model's: check the shape too
            if emb.ndim != 2 or len(emb) != len(keys) or emb.dtype != np.float32 or emb.shape[1] != self.width():
                raise ValueError(f"vectors of shape {emb.shape} do not fit this model")
            return dict(zip(keys.tolist(), emb))
        except Exception as e:
            self._drop(f, e)
            return {}

    def _drop(self, f: Path, why) -> None:
        log.warning("cache chunk %s is unusable (%s); recomputing its vectors", f.name, why)
        try:
            f.unlink(missing_ok=True)
        except OSError:  # a folder in its place, or a read-only cache: ignore it, never trust it
            pass
        if self.index:
            self.index = {k: v for k, v in self.index.items() if v != f}

    def put(self, keys: list[str], emb: np.ndarray) -> None:
        if not self.writable:
            return
        try:
            path = self._write(keys, emb)
        except OSError as e:
            self.writable, self.error = False, f"{type(e).__name__}: {e.strerror or e}"
            log.warning("the embedding cache %s cannot be written (%s); going on without it "
                        "(vectors are computed, not saved)", self.root, e.strerror or e)
            return
        self._scan().update(dict.fromkeys(keys, path))

    def _write(self, keys: list[str], emb: np.ndarray) -> Path:
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
        except BaseException:  # full disk, Ctrl-C/SIGTERM mid-write: leave no stray temp file behind
            Path(tmp).unlink(missing_ok=True)
            raise
        return path


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
