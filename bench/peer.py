"""Against the peer: CLIP_benchmark's zero-shot classification vs the toolkit's, same model and data.

The world's clean object task is exported to the webdataset layout CLIP_benchmark reads offline
(`wds/NAME`: test/0.tar + nshards.txt, classnames.txt, zeroshot_classification_templates.txt
with open_clip's 80 OpenAI templates); the model is a seeded random-init open_clip architecture
saved as one safetensors file that both read (peer: `--model ARCH --pretrained FILE`; toolkit:
the local-dir beside it). Each side runs as its own subprocess, so both pay interpreter and
library start-up. Installing the peer is part of the benchmark, not a project dependency: the
script runs `pip install clip-benchmark requests` when the `clip_benchmark` console script is
missing. The two sides are timed alternately (ours, peer, ours, peer, ...: at least 3 pairs) and
the figure is the median of the pair ratios with their min-max (bench/_common.alternate). Prints
both top-1s (must agree within 0.1 points) and `peer_time_ratio=` (ours/theirs, target <= 0.5). `--full-audit` also times the whole audit (cold) against one peer run per
classification task it shares with the peer, and reports that ratio.
"""
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

from _common import ROOT, alternate, headline, make_world, parser, random_model_dir, setup_logging, workdir


def ensure_peer() -> str:
    exe = shutil.which("clip_benchmark")
    if exe is None:
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "clip-benchmark", "requests"], check=True)
        exe = shutil.which("clip_benchmark")
    return exe


def openai_templates() -> list[str]:
    from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES

    return [t("{c}") for t in OPENAI_IMAGENET_TEMPLATES]  # CLIP_benchmark fills "{c}"


def export_wds(pairs: list[tuple[Path, str]], out: Path) -> tuple[Path, list[str]]:
    """(image path, label) pairs -> webdataset shard with the original JPEG bytes."""
    import tarfile
    from io import BytesIO

    classes = sorted({label for _, label in pairs})
    (out / "test").mkdir(parents=True, exist_ok=True)
    with tarfile.open(out / "test" / "0.tar", "w") as tar:
        for i, (path, label) in enumerate(pairs):
            for ext, data in (("jpg", Path(path).read_bytes()), ("cls", str(classes.index(label)).encode())):
                info = tarfile.TarInfo(f"{i:06d}.{ext}")
                info.size = len(data)
                tar.addfile(info, BytesIO(data))
    (out / "test" / "nshards.txt").write_text("1\n")
    (out / "classnames.txt").write_text("\n".join(classes) + "\n")
    (out / "zeroshot_classification_templates.txt").write_text("\n".join(openai_templates()) + "\n")
    return out, classes


def split_pairs(split_dir: Path) -> list[tuple[Path, str]]:
    """An image-folder split (metadata.csv: file_name,label) as (path, label) pairs."""
    import pandas as pd

    table = pd.read_csv(split_dir / "metadata.csv", dtype=str)
    return [(split_dir / f, label) for f, label in zip(table["file_name"], table["label"])]


def peer_tasks(world: Path, out: Path) -> dict[str, Path]:
    """Every zero-shot classification the audit runs that the peer can also run, one dataset
    each: FairFace race, gender and age, and the objects' clean, sketch and texture splits."""
    import pandas as pd

    faces = pd.read_csv(world / "faces" / "fairface_label_val.csv", dtype=str)
    tasks = {f"fairface_{attr}": [(world / "faces" / f, v) for f, v in zip(faces["file"], faces[attr])]
             for attr in ("race", "gender", "age")}
    tasks.update({f"objects_{s}": split_pairs(world / "objects" / s) for s in ("clean", "sketch", "texture")})
    return {name: export_wds(pairs, out / name)[0] for name, pairs in tasks.items()}


def full_audit_vs_peer_runs(exe, arch, model_dir: Path, world: Path, work: Path, *, batch: int) -> dict:
    """The whole five-probe audit (cold cache, one subprocess) vs one peer run per task above.
    The audit does strictly more: corruptions, celebrity names, retrieval, denigration rates,
    80-template sweeps; the peer runs cover only its clean zero-shot accuracies."""
    peer = {name: run_peer(exe, arch, model_dir / "open_clip_model.safetensors", root,
                           work / f"peer-{name}.json", batch=batch)[0]
            for name, root in peer_tasks(world, work / "wds-tasks").items()}
    cache = work / "cache-full-audit"
    shutil.rmtree(cache, ignore_errors=True)
    cmd = [sys.executable, "-m", "audit", "-q", "run", "--model", str(model_dir), "--world", str(world),
           "--out", str(work / "full-audit"), "--cache-dir", str(cache), "--device", "cpu",
           "--batch-size", str(batch)]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=ROOT)
    audit_s = time.perf_counter() - t0
    return {"peer_runs_s": peer, "peer_total_s": sum(peer.values()), "full_audit_s": audit_s,
            "full_audit_over_peer_runs": audit_s / sum(peer.values())}


# clip_benchmark 1.6.2's accuracy() calls float() on a 1-element array, an error under numpy 2.x;
# the same arithmetic with .item(), patched in before its CLI runs (no effect on timing).
PEER_SHIM = """
import sys, clip_benchmark.metrics.zeroshot_classification as z
def accuracy(output, target, topk=(1,)):
    pred = output.topk(max(topk), 1, True, True)[1].t()
    correct = pred.eq(target.view(1, -1).expand_as(pred))
    return [correct[:k].reshape(-1).float().sum().item() / len(target) for k in topk]
z.accuracy = accuracy
from clip_benchmark.cli import main
sys.argv[0] = 'clip_benchmark'
sys.exit(main())
"""


def run_peer(exe: str, arch: str, weights: Path, wds_root: Path, out: Path, *, batch: int) -> tuple[float, float]:
    cmd = [sys.executable, "-c", PEER_SHIM, "eval", "--dataset", f"wds/{wds_root.name}", "--dataset_root", str(wds_root),
           "--task", "zeroshot_classification", "--model", arch, "--pretrained", str(weights),
           "--batch_size", str(batch), "--num_workers", "0", "--no_amp", "--output", str(out)]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode:
        sys.exit(f"clip_benchmark failed:\n{proc.stderr[-3000:]}")
    seconds = time.perf_counter() - t0
    return seconds, 100 * json.loads(out.read_text())["metrics"]["acc1"]


def run_ours(model_dir: Path, split_dir: Path, *, batch: int) -> tuple[float, float]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "_ours", str(model_dir), str(split_dir), str(batch)]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=ROOT)
    seconds = time.perf_counter() - t0
    return seconds, json.loads(proc.stdout.strip().splitlines()[-1])["top1"]


def ours_child(model_dir: str, split_dir: str, batch: str) -> None:
    """The toolkit's zero-shot evaluation (what the probes do): load, check, embed, classify."""
    import numpy as np

    from audit import models, zeroshot
    from audit.data import load_source
    from audit.embed import Embedder
    from audit.runner import ProbeContext

    bundle = models.load(model_dir, device="cpu")
    source = load_source(split_dir, "classify", name="classify:objects")
    ctx = ProbeContext(embedder=Embedder(bundle, cache_dir=None, batch_size=int(batch), progress=False),
                       sources={source.name: source}, seed=0, device="cpu")
    from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES

    classes = sorted(source.table["label"].unique())
    weights = zeroshot.classifier(ctx, classes, list(OPENAI_IMAGENET_TEMPLATES))
    pred = zeroshot.predict(ctx.images(source), weights)
    truth = np.array([classes.index(c) for c in source.table["label"]])
    print(json.dumps({"top1": 100 * float(np.mean(pred == truth))}))


def main() -> None:
    p = parser(__doc__)
    # an architecture open_clip ships: the peer cannot be told about audit-tiny's config file
    p.add_argument("--model", default="ViT-B-32", help="open_clip architecture, seeded random init")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--pairs", type=int, default=3, help="alternating (ours, peer) pairs, at least 3")
    p.add_argument("--full-audit", action="store_true",
                   help="also time the full audit against one peer run per classification task")
    args = p.parse_args()
    setup_logging()
    exe = ensure_peer()
    work = workdir(args, "peer")
    world = make_world(work, 100 if args.quick else 300, objects_per_class=10 if args.quick else 40)
    model_dir = random_model_dir(args.model, work)
    split = world / "objects" / "clean"
    wds_root, classes = export_wds(split_pairs(split), work / "wds" / "objects")
    weights = model_dir / "open_clip_model.safetensors"
    timed = alternate(lambda: run_ours(model_dir, split, batch=args.batch_size),
                      lambda: run_peer(exe, args.model, weights, wds_root, work / "peer.json", batch=args.batch_size),
                      pairs=args.pairs, seconds=lambda r: r[0])
    (ours_s, ours_top1), (peer_s, peer_top1) = timed["runs"][0]
    figures = {"model": f"{args.model} (random init)", "images": sum(1 for _ in open(split / "metadata.csv")) - 1,
               "classes": len(classes), "templates": 80, "peer_top1": peer_top1, "ours_top1": ours_top1,
               "top1_gap_points": abs(peer_top1 - ours_top1),
               "ours_s": [a[0] for a, _ in timed["runs"]], "peer_s": [b[0] for _, b in timed["runs"]],
               **{k: timed[k] for k in ("ratio_min", "ratio_max", "pair_ratios")}}
    if args.full_audit:
        figures["full_audit"] = full_audit_vs_peer_runs(exe, args.model, model_dir, world, work,
                                                        batch=args.batch_size)
    headline("peer_time_ratio", timed["ratio"], figures, args)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_ours":
        ours_child(*sys.argv[2:5])
    else:
        main()
