"""GPU figures in one short run (issue 13, part 5): the five-probe audit of a FairFace-sized world
on ViT-L-14, its embedding speed against the bare bf16 forward and the FLOP bound.

Steps, each timed: generate a world of 10,954 faces (FairFace's validation size; the CPU work is
outside the GPU figures); save ViT-L-14 with seeded random weights (the cost is the
architecture's, not the weights'); time the bare forward (bf16 autocast, channels-last, blocks of
`embed.encode_block("cuda")` on tensors already on the GPU) alternately with the toolkit's
Embedder over the same decoded images (bench/_common.alternate); count the forward's FLOPs per
image (torch.utils.flop_counter) to set the images/s bound at the card's bf16 dense peak; then
one cold `audit run` of all five probes, wall time and phases; with 2+ GPUs also the same audit
under `torchrun --nproc_per_node 2`. Prints `gpu_audit_seconds=` (target < 90 s on one
H100/H200) with `embed_over_bound` (target >= 0.5) among the figures.
`--device cpu --quick` is a smoke test of the script itself (audit-tiny, a tiny world).
"""
import json
import os
import subprocess
import sys
import time

from _common import ROOT, alternate, headline, make_world, parser, random_model_dir, setup_logging, workdir

# bf16 dense tensor-core peak, FLOP/s (NVIDIA datasheets, SXM parts; no sparsity)
PEAK_BF16 = {"H100": 989e12, "H200": 989e12, "A100": 312e12}


def peak_flops(device: str) -> float | None:
    import torch

    if device != "cuda":
        return None
    name = torch.cuda.get_device_name(0)
    return next((v for k, v in PEAK_BF16.items() if k in name), None)


def flops_per_image(model, size: int, device: str) -> float:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.zeros(1, 3, size, size, device=device)
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        model.encode_image(x)
    return float(counter.get_total_flops())


def bare(model, tensors, block: int, device: str) -> float:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16, enabled=device == "cuda"):
        for s in range(0, len(tensors), block):
            model.encode_image(tensors[s:s + block])
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def toolkit(bundle, source, block: int) -> float:
    from audit.embed import Embedder

    t0 = time.perf_counter()
    Embedder(bundle, cache_dir=None, batch_size=block, workers=8 if bundle.device == "cuda" else 0,
             progress=False).images(source)
    return time.perf_counter() - t0


def audit_cmd(launcher: list[str], model, world, out, cache, device) -> tuple[float, dict]:
    cmd = [*launcher, "-m", "audit", "-q", "run", "--model", str(model), "--world", str(world), "--out", str(out),
           "--cache-dir", str(cache), "--device", device, "--workers", "8" if device == "cuda" else "0"]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    seconds = time.perf_counter() - t0
    if proc.returncode not in (0, 1):
        sys.exit(f"audit run failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return seconds, json.loads((out / "results.json").read_text())["run"]


def main() -> None:
    import torch

    from audit import embed, models
    from audit.data import load_source

    p = parser(__doc__)
    p.add_argument("--device", default="cuda")
    p.add_argument("--model", default=None, help="open_clip architecture (default ViT-L-14; --quick: audit-tiny)")
    p.add_argument("--bare-images", type=int, default=2048, help="images in the bare-vs-toolkit timing")
    args = p.parse_args()
    setup_logging()
    arch = args.model or ("audit-tiny" if args.quick else "ViT-L-14")
    work = workdir(args, "gpu")
    t0 = time.perf_counter()
    world = make_world(work, 200 if args.quick else 10954)
    world_s = time.perf_counter() - t0
    model_dir = random_model_dir(arch, work)
    bundle = models.load(str(model_dir), device=args.device)
    block = embed.encode_block(args.device)
    source = load_source(str(world / "faces"), "fairface").subset(range(min(args.bare_images, 10954 if not args.quick else 200)))
    tensors = torch.stack([bundle.preprocess(source.image(i)) for i in range(len(source))]).to(args.device)
    if args.device == "cuda":
        tensors = tensors.contiguous(memory_format=torch.channels_last)
    bare(bundle.model, tensors[:block], block, args.device)  # warm-up: kernels, allocator
    timed = alternate(lambda: bare(bundle.model, tensors, block, args.device),
                      lambda: toolkit(bundle, source, block), pairs=3)
    bare_ips = len(source) / min(a for a, _ in timed["runs"])
    flops = flops_per_image(bundle.model, tensors.shape[-1], args.device)
    peak = peak_flops(args.device)
    audit_s, run = audit_cmd([sys.executable], model_dir, world, work / "out", work / "cache", args.device)
    figures = {"model": f"{arch} (random init)", "device": args.device, "faces": 200 if args.quick else 10954,
               "world_generation_s": world_s, "encode_block": block, "bare_images_per_s": bare_ips,
               "toolkit_over_bare": timed["ratio"], "ratio_min": timed["ratio_min"], "ratio_max": timed["ratio_max"],
               "gflops_per_image": flops / 1e9, "bound_images_per_s": peak / flops if peak else None,
               "embed_over_bound": bare_ips * timed["ratio"] * flops / peak if peak else None,
               "audit_timings": run.get("timings"), "audit_embedding": run.get("embedding")}
    if args.device == "cuda" and torch.cuda.device_count() >= 2:
        launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
        two_s, _ = audit_cmd(launcher, model_dir, world, work / "out2", work / "cache2", args.device)
        figures["torchrun_2_speedup"] = audit_s / two_s
    else:
        figures["torchrun_2_speedup"] = "needs 2 GPUs"
    headline("gpu_audit_seconds", audit_s, figures, args)


if __name__ == "__main__":
    main()
