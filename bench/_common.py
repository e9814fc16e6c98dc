"""Helpers shared by the bench scripts: argument parsing, machine description, world building.

Benchmarks report ratios measured inside one run on one machine: absolute times on a shared
2-core box are noise, ratios of two timings taken back to back are not.
"""
import argparse
import json
import logging
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as `python bench/x.py` from a checkout, without installing
    sys.path.insert(0, str(ROOT))

log = logging.getLogger("bench")


def parser(doc: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=doc.strip().splitlines()[0])
    p.add_argument("--quick", action="store_true", help="a size that finishes in a few minutes on 2 cores")
    p.add_argument("--workdir", type=Path, default=None, help="scratch folder (default: a temp dir)")
    p.add_argument("--json", type=Path, default=None, help="also write the figures here")
    return p


def setup_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)


def machine() -> dict:
    """What the figures were measured on: CPU model, core count, GPU if any, date."""
    import torch

    cpu = platform.processor() or "unknown"
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        cpu = next((ln.split(":", 1)[1].strip() for ln in out.splitlines() if ln.startswith("Model name")), cpu)
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(), "gpu": gpu,
            "torch": torch.__version__, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}


def headline(name: str, value: float, figures: dict, args) -> None:
    """The last line every bench prints: `NAME=VALUE` (plus the figures as JSON before it, and
    the min-max of the pair ratios and the CPU model when the value came from `alternate`)."""
    figures = {**figures, name: value, "machine": machine()}
    print(json.dumps(figures, indent=1, default=str))
    if getattr(args, "json", None):
        Path(args.json).write_text(json.dumps(figures, indent=1, default=str))
    spread = f" (pairs {figures['ratio_min']:.3f}-{figures['ratio_max']:.3f})" if "ratio_min" in figures else ""
    print(f"{name}={value:.3f}{spread} on {figures['machine']['cpu']}")


def alternate(run_a, run_b, *, pairs: int = 3, seconds=lambda r: r) -> dict:
    """Time A and B alternately (A B A B ..., `pairs` >= 3 pairs) and return the median of the
    pair ratios A/B with their min and max. On a shared box a load spike hits one pair, not one
    side: the pair ratio moves, the median of pair ratios does not. `seconds(result)` reads the
    time from what each callable returns."""
    import statistics

    runs = [(run_a(), run_b()) for _ in range(max(3, pairs))]
    ratios = [seconds(a) / seconds(b) for a, b in runs]
    return {"ratio": statistics.median(ratios), "ratio_min": min(ratios), "ratio_max": max(ratios),
            "pair_ratios": ratios, "runs": runs}


def workdir(args, name: str) -> Path:
    import tempfile

    if args.workdir:
        path = Path(args.workdir) / name
        path.mkdir(parents=True, exist_ok=True)
        return path
    return Path(tempfile.mkdtemp(prefix=f"clip-audit-bench-{name}-"))


def world_preset(n_faces: int, *, identities: int | None = None, objects_per_class: int = 20) -> dict:
    """The default world with its audit-side sizes set; training-side sizes kept minimal because
    an audit never reads them (they only feed `audit train`)."""
    identities = identities or max(10, n_faces // 7)
    return {"extends": "default", "name": f"bench-{n_faces}", "scale": 1.0,
            "sizes": {"val_faces": n_faces, "train_faces": 1, "identities": identities,
                      "identity_val_images": 3, "object_val_images": objects_per_class,
                      "object_train_images": 1, "distractors": 2000}}


def make_world(root: Path, n_faces: int, **kw) -> Path:
    """Generate (once) a world of about n_faces FairFace-style faces under root."""
    from audit.world.generate import generate_world

    out = Path(root) / f"world-{n_faces}"
    if (out / "ground_truth.json").is_file():
        return out
    t0 = time.perf_counter()
    generate_world(out, preset=world_preset(n_faces, **kw), seed=0, progress=False)
    log.info("world of %d faces generated in %.1f s", n_faces, time.perf_counter() - t0)
    return out


def count_images(world: Path) -> int:
    """Distinct images an audit of this world encodes (faces + identity probes + every object split)."""
    import pandas as pd

    n = len(pd.read_csv(world / "faces" / "fairface_label_val.csv"))
    n += len(pd.read_csv(world / "identities" / "metadata.csv"))
    for split in (world / "objects").iterdir():
        if (split / "metadata.csv").is_file():
            n += len(pd.read_csv(split / "metadata.csv"))
    return n


def random_model_dir(arch: str, root: Path, *, seed: int = 0) -> Path:
    """A seeded random-init open_clip `arch` saved in open_clip's local-dir layout, so that every
    load has the same weights (and the same cache key) and peers can read the same file."""
    import open_clip
    import torch

    from audit.models import register_builtin_configs, save_local_dir

    out = Path(root) / f"{arch}-random{seed}"
    if (out / "open_clip_config.json").is_file():
        return out
    register_builtin_configs()
    torch.manual_seed(seed)
    model = open_clip.create_model(arch).eval()
    return save_local_dir(model, open_clip.get_model_config(arch), out, model_name=arch)


def run_audit(model: Path, world: Path, out: Path, cache: Path, **kw) -> dict:
    """One full audit in this process (runner.run), every probe, no progress bars."""
    from audit import runner

    opts = runner.RunOptions(model=str(model), world=str(world), out=Path(out), cache_dir=Path(cache),
                             device="cpu", progress=False, **kw)
    return runner.run(opts)
