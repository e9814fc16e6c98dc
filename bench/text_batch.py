"""Text batch size: seconds to encode the prompt sweep of a zero-shot task at each batch size.

The texts are what prompt_sensitivity encodes for one task (open_clip's 80 OpenAI templates x
12 class names, 960 prompts), through the Embedder's own path (sorted by length, each batch cut
after its longest prompt). Batch sizes are timed round-robin (16, 32, 64, 128, 16, 32, ...;
--rounds rounds) and each one's median is printed with its ratio to the shipped value (32 on a
CPU, `embed._text_batch`). Prints `text_batch_ratio=` (best batch's median / the shipped one's:
1.0 means the shipped value is the fastest here).
"""
import statistics
import time

from _common import headline, parser, setup_logging

CLASSES = ["cat", "dog", "horse", "airplane", "bicycle", "teapot", "violin", "mushroom",
           "lighthouse", "goldfish", "umbrella", "school bus"]


def encode_all(embedder, texts, batch: int, monkey) -> float:
    monkey(batch)
    embedder.memory.clear()
    t0 = time.perf_counter()
    embedder.texts(texts)
    return time.perf_counter() - t0


def main() -> None:
    import torch
    from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES

    from audit import embed, models

    p = parser(__doc__)
    p.add_argument("--model", default="ViT-B-32", help="open_clip architecture, random init")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--sizes", default="16,32,64,128")
    args = p.parse_args()
    setup_logging()
    torch.manual_seed(0)
    bundle = models.load(args.model, device="cpu")
    texts = [t(c) for t in OPENAI_IMAGENET_TEMPLATES for c in CLASSES][: 240 if args.quick else None]
    embedder = embed.Embedder(bundle, cache_dir=None, progress=False)
    shipped = embed._text_batch("cpu")
    sizes = [int(s) for s in args.sizes.split(",")]

    def use(batch):
        embed._text_batch = lambda device, b=batch: b

    times = {b: [] for b in sizes}
    encode_all(embedder, texts[:64], shipped, use)  # warm-up
    for _ in range(args.rounds):
        for b in sizes:
            times[b].append(encode_all(embedder, texts, b, use))
    medians = {b: statistics.median(t) for b, t in times.items()}
    figures = {"model": f"{args.model} (random init)", "texts": len(texts), "shipped": shipped,
               "seconds": times, "median_s": medians,
               "ratio_to_shipped": {b: m / medians[shipped] for b, m in medians.items()}}
    headline("text_batch_ratio", min(medians.values()) / medians[shipped], figures, args)


if __name__ == "__main__":
    main()
