"""Pipeline efficiency: the toolkit's embedding pass vs bare model.encode_image.

Toolkit: load_source (reads, hashes and decode-checks every image) + Embedder.images on an empty
cache (decode + preprocess + encode + normalise + cache write). Bare: model.encode_image on
tensors decoded and preprocessed beforehand. Same model (ViT-B-32, random init), batch size and
device; the two are timed alternately (bare, toolkit, bare, toolkit, ...: REPS pairs) and the
figure is the median of the pair ratios, with their min-max (bench/_common.alternate).
Prints `pipeline_ratio=` (images/s toolkit / images/s bare, check pass included).
"""
import time

from _common import alternate, headline, machine, parser, setup_logging, workdir  # noqa: F401


def make_fairface(folder, n: int, *, size: int = 224, seed: int = 0):
    """n FairFace-sized (224 px) JPEG faces in FairFace's release layout; smooth noise so JPEG
    decode costs what a photo does."""
    import numpy as np
    import pandas as pd
    from PIL import Image, ImageFilter

    rng = np.random.default_rng(seed)
    (folder / "val").mkdir(parents=True, exist_ok=True)
    for i in range(n):
        arr = (rng.random((size // 4, size // 4, 3)) * 255).astype("uint8")
        img = Image.fromarray(arr).resize((size, size), Image.BICUBIC).filter(ImageFilter.SMOOTH)
        img.save(folder / "val" / f"{i}.jpg", quality=90)
    pd.DataFrame({"file": [f"val/{i}.jpg" for i in range(n)], "age": "20-29", "gender": "Male",
                  "race": "White", "service_test": "True"}).to_csv(folder / "fairface_label_val.csv", index=False)
    return folder


def bare(bundle, tensors, batch_size: int) -> dict:
    import torch

    t0, c0 = time.perf_counter(), time.process_time()
    with torch.inference_mode():
        for s in range(0, len(tensors), batch_size):
            bundle.model.encode_image(tensors[s:s + batch_size].to(bundle.device))
    return {"wall": time.perf_counter() - t0, "cpu": time.process_time() - c0}


def toolkit(bundle, folder, cache, *, batch_size: int, workers: int) -> dict:
    from audit.data import load_source
    from audit.embed import Embedder

    t0, c0 = time.perf_counter(), time.process_time()
    source = load_source(str(folder), "fairface")
    t1 = time.perf_counter()
    Embedder(bundle, cache_dir=cache, batch_size=batch_size, workers=workers, progress=False).images(source)
    t2, c2 = time.perf_counter(), time.process_time()
    # cpu: this process only (a loader worker's decode is not counted; use it with --workers 0)
    return {"check": t1 - t0, "embed": t2 - t1, "wall": t2 - t0, "cpu": c2 - c0}


def main() -> None:
    import shutil

    import torch

    from audit.data import load_source
    from audit.models import load

    p = parser(__doc__)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--reps", type=int, default=5, help="alternating pairs (at least 3)")
    p.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    args = p.parse_args()
    setup_logging()
    if args.threads:
        torch.set_num_threads(args.threads)
    n = 64 if args.quick else 256
    work = workdir(args, "pipeline")
    folder = make_fairface(work / "faces", n)
    torch.manual_seed(0)
    bundle = load("ViT-B-32", device="cpu")
    src = load_source(str(folder), "fairface")
    tensors = torch.stack([bundle.preprocess(src.image(i)) for i in range(n)])
    bare(bundle, tensors[: args.batch_size], args.batch_size)  # warm-up: first-call allocations
    reps = iter(range(10 ** 6))

    def kit() -> dict:
        cache = work / f"cache{next(reps)}"
        shutil.rmtree(cache, ignore_errors=True)
        return toolkit(bundle, folder, cache, batch_size=args.batch_size, workers=args.workers)

    timed = alternate(lambda: bare(bundle, tensors, args.batch_size), kit, pairs=args.reps,
                      seconds=lambda r: r["wall"])
    bares, kits = [a for a, _ in timed["runs"]], [b for _, b in timed["runs"]]
    embed_only = [a["wall"] / b["embed"] for a, b in timed["runs"]]
    figures = {"images": n, "batch_size": args.batch_size, "workers": args.workers, "reps": args.reps,
               "threads": torch.get_num_threads(), "bare": bares, "toolkit": kits,
               "ratio_min": timed["ratio_min"], "ratio_max": timed["ratio_max"],
               "pair_ratios": timed["pair_ratios"],
               "ratio_without_check_pass": sorted(embed_only)[len(embed_only) // 2],
               "cpu_time_ratio": min(b["cpu"] for b in bares) / min(k["cpu"] for k in kits)}
    headline("pipeline_ratio", timed["ratio"], figures, args)


if __name__ == "__main__":
    main()
