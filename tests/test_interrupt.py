"""Interrupted runs, for real: a subprocess `audit run` killed mid-embedding.

kill -9 leaves no results.json/report.html and only cache chunks that verify; SIGTERM and Ctrl-C
stop with a message and exit 130. Re-running the same command resumes from the cache (fewer
images encoded) and gives the same results.json rows as a run that was never interrupted.
"""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from audit.embed import _checksum
from tests.bad_inputs.make_corpus import make_fairface_source

N_IMAGES = 800
# Small batches and 2 batches per chunk: a chunk lands every 16 images, so the kill falls mid-run.
ENV = {"CLIP_AUDIT_CHUNK_BATCHES": "2", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parents[1])}


@pytest.fixture(scope="module")
def setup(micro_dir, tmp_path_factory):
    """The source, and the reference: the same command run once without interruption."""
    root = tmp_path_factory.mktemp("interrupt")
    src = make_fairface_source(root / "faces", N_IMAGES, seed=3)
    ref = _finish(_start(micro_dir, src, root / "ref"))
    return micro_dir, src, root, ref


def _start(model, src, work: Path) -> subprocess.Popen:
    argv = [sys.executable, "-m", "audit", "-q", "run", "--model", str(model), "--fairface", str(src),
            "--probes", "fairface_label_bias,retrieval_skew", "--batch-size", "8", "--seed", "7",
            "--out", str(work / "out"), "--cache-dir", str(work / "cache")]
    return subprocess.Popen(argv, env={**os.environ, **ENV}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, preexec_fn=_default_sigint)


def _default_sigint() -> None:
    # A suite started in the background by a non-interactive shell inherits SIGINT ignored, and
    # Python then keeps it ignored: Ctrl-C must reach the run as it does from a terminal.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _finish(proc: subprocess.Popen) -> dict:
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    out = Path(proc.args[proc.args.index("--out") + 1])
    return json.loads((out / "results.json").read_text())


def _chunks(work: Path) -> list[Path]:
    return sorted((work / "cache").glob("embeddings/*/*.npz"))


def _interrupt(proc: subprocess.Popen, work: Path, sig: int, *, min_chunks: int = 4) -> str:
    deadline = time.monotonic() + 240
    while len(_chunks(work)) < min_chunks:
        assert proc.poll() is None, "the run ended before it could be interrupted"
        assert time.monotonic() < deadline
        time.sleep(0.02)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    return err


def _verified_keys(work: Path) -> set[str]:
    """Every chunk on disk loads and matches its checksum; the keys they hold."""
    keys = set()
    for f in _chunks(work):
        with np.load(f) as z:
            assert _checksum(z["keys"], z["emb"]) == str(z["checksum"]), f
            keys.update(z["keys"].tolist())
    return keys


def _rows(results: dict) -> str:
    return json.dumps({name: p["rows"] for name, p in results["probes"].items()}, sort_keys=True)


def _resume_matches_reference(setup, work: Path, cached: int) -> None:
    model, src, _, ref = setup
    again = _finish(_start(model, src, work))
    emb = again["run"]["embedding"]
    # images_from_cache counts every probe's request; what was encoded is the part not cached
    assert emb["images_encoded"] == N_IMAGES - cached and emb["images_from_cache"] >= cached
    assert again["probes"]["fairface_label_bias"]["status"] == "ok"
    assert _rows(again) == _rows(ref)
    assert again["data"] == ref["data"]


def test_kill_9_mid_embedding_loses_nothing_finished_and_resumes(setup):
    model, src, root, _ = setup
    work = root / "kill9"
    proc = _start(model, src, work)
    _interrupt(proc, work, signal.SIGKILL)
    assert proc.returncode == -signal.SIGKILL
    assert not (work / "out" / "results.json").exists() and not (work / "out" / "report.html").exists()
    cached = len(_verified_keys(work))
    assert 0 < cached < N_IMAGES  # stray *.tmp from the kill may exist; they are never read as chunks
    _resume_matches_reference(setup, work, cached)


def test_sigterm_stops_cleanly_with_exit_130_and_resumes(setup):
    model, src, root, _ = setup
    work = root / "term"
    proc = _start(model, src, work)
    err = _interrupt(proc, work, signal.SIGTERM)
    assert proc.returncode == 130, err
    lines = err.strip().splitlines()
    assert lines[-1].startswith("interrupted:") and "Traceback" not in err
    assert not (work / "out").exists()
    assert not list((work / "cache").rglob("*.tmp"))  # a clean stop leaves no temp files either
    cached = len(_verified_keys(work))
    assert 0 < cached < N_IMAGES
    _resume_matches_reference(setup, work, cached)


def test_ctrl_c_exits_130_with_the_same_message(setup):
    model, src, root, _ = setup
    work = root / "int"
    proc = _start(model, src, work)
    err = _interrupt(proc, work, signal.SIGINT, min_chunks=1)
    assert proc.returncode == 130 and "rerun the same command to resume" in err and "Traceback" not in err
    assert not (work / "out").exists()
    assert _verified_keys(work)
