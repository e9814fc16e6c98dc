"""`audit train`: contrastive training of a small CLIP with open_clip's own classes.

This is the single-process trainer that made the shipped demo models. It uses
`open_clip.create_model` and `open_clip.ClipLoss`, so what it writes is an ordinary open_clip
model; for multi-GPU or multi-node runs hand the same data to open_clip's trainer
(`python -m audit.world.train ...` runs `open_clip_train.main` with our configs registered; see
docs/training.md).
"""
from __future__ import annotations

import csv
import json
import logging
import math
import shlex
import sys
import time
from pathlib import Path

from audit.errors import UserError
from audit.world import layout

log = logging.getLogger(__name__)



# ---------------------------------------------------------------- architecture

def register_model_configs() -> None:
    """Make our JSON model configs (audit-tiny, ...) known to open_clip by name (idempotent)."""
    from audit.models import register_builtin_configs

    register_builtin_configs()


def resolve_arch(arch: str | None, config: Path | None) -> tuple[str, dict]:
    """(model name for open_clip, its model config dict) from --arch or --config."""
    import open_clip

    register_model_configs()
    if config is not None:
        config = Path(config)
        try:
            cfg = json.loads(config.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise UserError(f"{config}: cannot read model config ({e})") from None
        cfg = cfg.get("model_cfg", cfg)  # accept an open_clip_config.json too
        if not {"embed_dim", "vision_cfg", "text_cfg"} <= set(cfg):
            raise UserError(f"{config}: not an open_clip model config (needs embed_dim, vision_cfg, text_cfg)")
        return config.stem, cfg
    name = arch or "audit-tiny"
    cfg = open_clip.get_model_config(name)
    if cfg is None:
        raise UserError(f"{name}: unknown architecture (open_clip lists {len(open_clip.list_models())} names; "
                        f"or pass --config FILE.json)")
    return name, cfg


def build_model(name: str, cfg: dict, device: str):
    """A fresh open_clip CLIP from a config dict (registered names and custom JSON alike)."""
    import open_clip

    register_model_configs()
    if open_clip.get_model_config(name) != cfg:
        # a custom --config: open_clip only builds registered names, so register this one
        open_clip.factory._MODEL_CONFIGS[name] = cfg
    return open_clip.create_model(name, device=device)


# ---------------------------------------------------------------- data

def captions_csv(data: str) -> Path | None:
    """The CSV behind a data spec: a world folder's train/captions.csv or a .csv file; else None."""
    p = Path(data)
    captions = layout.kind_path(p, "pairs")
    if p.is_dir() and captions.is_file():
        return captions
    if p.suffix == ".csv":
        if not p.is_file():
            raise UserError(f"{data}: no such file")
        return p
    return None


class CsvPairs:
    """The rows of a `filepath,caption` CSV, paths relative to the CSV (or absolute): what
    export_open_clip_csv rewrites. Training itself reads every spec through SourcePairs."""

    def __init__(self, path: Path):
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        if not rows or not {"filepath", "caption"} <= set(rows[0]):
            raise UserError(f"{path}: needs columns filepath,caption")
        self.paths = [path.parent / r["filepath"] for r in rows]
        self.captions = [r["caption"] for r in rows]

    def __len__(self):
        return len(self.captions)

    def image(self, i):
        from PIL import Image

        with Image.open(self.paths[i]) as im:
            return im.convert("RGB")


class SourcePairs:
    """Image-text pairs from any `audit.data` source (parquet, HF dataset, image folder)."""

    def __init__(self, spec: str):
        from audit.data import load_source

        self.source = load_source(spec, "pairs")
        self.captions = [str(c) for c in self.source.table["caption"]]

    def __len__(self):
        return len(self.captions)

    def image(self, i):
        return self.source.image(i)


def open_pairs(data: str):
    """One loading path for every spec (CSV, world folder, parquet, HF): audit.data.load_source."""
    csv_path = captions_csv(data)  # a world folder -> its train/captions.csv
    pairs = SourcePairs(str(csv_path) if csv_path else data)
    if len(pairs) == 0:
        raise UserError(f"{data}: no image-text pairs")
    return pairs


class _TorchPairs:
    """torch Dataset view: preprocessed image tensor + token ids (tokenized once, up front)."""

    def __init__(self, pairs, preprocess, tokens):
        self.pairs, self.preprocess, self.tokens = pairs, preprocess, tokens

    def __len__(self):
        return len(self.pairs)

    def __getitem__(self, i):
        return self.preprocess(self.pairs.image(i)), self.tokens[i]


def make_loader(pairs, model, tokenizer, *, batch_size, workers, seed):
    """Shuffled, seeded DataLoader; `loader.generator` is re-seeded per epoch for exact resume."""
    import torch
    from open_clip.transform import PreprocessCfg, image_transform_v2

    # the eval transform: the tiny world needs no augmentation, and the audit sees eval images
    pp = image_transform_v2(PreprocessCfg(**model.visual.preprocess_cfg), is_train=False)
    tokens = tokenizer(pairs.captions)
    gen = torch.Generator().manual_seed(seed)
    return torch.utils.data.DataLoader(
        _TorchPairs(pairs, pp, tokens), batch_size=batch_size, shuffle=True,
        drop_last=len(pairs) >= 2 * batch_size,  # a 1-image last batch has no negatives
        num_workers=workers, generator=gen)


def export_open_clip_csv(world_dir: Path, out_csv: Path) -> Path:
    """A copy of DIR/train/captions.csv with absolute image paths, for open_clip_train.main."""
    src = captions_csv(str(world_dir))
    if src is None:
        raise UserError(f"{world_dir}: no {layout.KIND_PATHS['pairs']}")
    pairs = CsvPairs(src)
    out_csv = Path(out_csv)
    out_csv.parent.mkdir(parents=True, exist_ok=True)
    with open(out_csv, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["filepath", "caption"])
        w.writerows([p.resolve(), c] for p, c in zip(pairs.paths, pairs.captions))
    return out_csv


# ---------------------------------------------------------------- optimisation

def make_optimizer(model, *, lr, weight_decay):
    """AdamW; no decay on gains, biases, embeddings' scale (open_clip_train's split)."""
    import torch

    def no_decay(n, p):
        return p.ndim < 2 or "bn" in n or "ln" in n or "bias" in n or "logit_scale" in n

    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    groups = [{"params": [p for n, p in params if no_decay(n, p)], "weight_decay": 0.0},
              {"params": [p for n, p in params if not no_decay(n, p)], "weight_decay": weight_decay}]
    return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.98), eps=1e-6)


def lr_at(step: int, *, base_lr: float, warmup: int, total: int) -> float:
    """Linear warm-up to base_lr, then cosine decay to 0 at `total` steps."""
    if step < warmup:
        return base_lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * base_lr * (1 + math.cos(math.pi * min(1.0, progress)))


def _autocast(device: str):
    import contextlib

    import torch

    # bf16 autocast on CUDA only: CPU autocast is slower than fp32 for a model this small
    if device.startswith("cuda"):
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def train_epoch(model, loader, opt, loss_fn, *, step, lr_fn, device, progress=None) -> tuple[float, int]:
    """One pass over the data; returns (mean loss, global step after)."""
    import torch

    model.train()
    total, n = 0.0, 0
    for images, texts in loader:
        for g in opt.param_groups:
            g["lr"] = lr_fn(step)
        with _autocast(device):
            loss = loss_fn(*model(images.to(device), texts.to(device)))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():  # CLIP's clamp: temperature at most 100
            model.logit_scale.clamp_(0, math.log(100))
        step += 1
        total, n = total + loss.item(), n + 1
        if step % 50 == 0:
            log.debug("step %d: loss %.4f", step, loss.item())
        if progress is not None:
            progress(loss.item())
    return total / max(1, n), step


# ---------------------------------------------------------------- checkpoints and output

def latest_checkpoint(out: Path) -> Path | None:
    ckpts = sorted((Path(out) / "checkpoints").glob("epoch_*.pt"), key=lambda p: int(p.stem.split("_")[1]))
    return ckpts[-1] if ckpts else None


def save_checkpoint(out: Path, *, model, opt, epoch: int, config: dict, losses: list) -> Path:
    import torch

    path = Path(out) / "checkpoints" / f"epoch_{epoch}.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    # model_cfg at the top level: audit.models.load reads the architecture from there
    torch.save({"state_dict": model.state_dict(), "optimizer": opt.state_dict(), "epoch": epoch,
                "model_cfg": config["model_cfg"], "config": config, "losses": losses}, tmp)
    tmp.replace(path)  # a killed run never leaves a half-written checkpoint behind
    return path


def _world_info(data: str) -> dict:
    """Preset name and seed of a world folder (from DIR/ground_truth.json), for training.json."""
    p = Path(data) / layout.GROUND_TRUTH
    if not p.is_file():
        return {}
    truth = json.loads(p.read_text())
    return {"preset": truth.get("preset"), "seed": truth.get("seed")}


# ---------------------------------------------------------------- the entry point

def train(data: str, out: Path, *, arch: str | None = None, config: Path | None = None,
          epochs: int = 10, batch_size: int = 128, lr: float = 1e-3, warmup: int = 100,
          weight_decay: float = 0.1, seed: int = 0, device: str = "auto", resume: bool = False,
          checkpoint_every: int = 1, workers: int = 0, progress: bool = True,
          fp16: bool = False) -> Path:
    """Train a CLIP on image-text pairs; write an open_clip local-dir model to `out`."""
    import open_clip
    import torch

    from audit.models import resolve_device, save_local_dir

    out = Path(out)
    name, model_cfg = resolve_arch(arch, config)
    device = resolve_device(device)
    torch.manual_seed(seed)
    model = build_model(name, model_cfg, device)
    pairs = open_pairs(data)
    loader = make_loader(pairs, model, open_clip.get_tokenizer(name), batch_size=batch_size,
                         workers=workers, seed=seed)
    opt = make_optimizer(model, lr=lr, weight_decay=weight_decay)
    run_cfg = {"arch": name, "model_cfg": model_cfg, "data": str(data), "epochs": epochs,
               "batch_size": batch_size, "lr": lr, "warmup": warmup, "weight_decay": weight_decay,
               "seed": seed, "n_pairs": len(pairs)}
    start, losses = _maybe_resume(out, model, opt, resume=resume, arch=name)
    total = epochs * len(loader)
    lr_fn = lambda s: lr_at(s, base_lr=lr, warmup=warmup, total=total)  # noqa: E731
    t0 = time.time()
    with _Progress(enabled=progress, total=total, done=start * len(loader)) as bar:
        for epoch in range(start, epochs):
            loader.generator.manual_seed(seed * 100_003 + epoch)  # shuffle = f(seed, epoch) only
            loss, _ = train_epoch(model, loader, opt, open_clip.ClipLoss(), step=epoch * len(loader),
                                  lr_fn=lr_fn, device=device, progress=bar.advance)
            losses.append(loss)
            log.info("epoch %d/%d: loss %.4f", epoch + 1, epochs, loss)
            if checkpoint_every and ((epoch + 1) % checkpoint_every == 0 or epoch + 1 == epochs):
                save_checkpoint(out, model=model, opt=opt, epoch=epoch + 1, config=run_cfg, losses=losses)
    model.eval()
    save_local_dir(model, model_cfg, out, fp16=fp16, model_name=name)
    _write_training_json(out, run_cfg, data=data, losses=losses, fp16=fp16, seconds=time.time() - t0)
    return out


def _maybe_resume(out: Path, model, opt, *, resume: bool, arch: str) -> tuple[int, list]:
    """Load the newest checkpoint into model and optimizer; (epochs done, loss history)."""
    import torch

    ckpt_path = latest_checkpoint(out) if resume else None
    if ckpt_path is None:
        if resume:
            log.warning("%s: no checkpoint to resume from; starting at epoch 0", out)
        return 0, []
    ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    if ckpt["config"]["arch"] != arch:
        raise UserError(f"{ckpt_path}: checkpoint is {ckpt['config']['arch']}, not {arch}")
    model.load_state_dict(ckpt["state_dict"])
    opt.load_state_dict(ckpt["optimizer"])
    log.info("resumed from %s", ckpt_path)
    return int(ckpt["epoch"]), list(ckpt.get("losses", []))


def _write_training_json(out: Path, run_cfg: dict, *, data, losses, fp16, seconds):
    info = {k: v for k, v in run_cfg.items() if k != "model_cfg"}
    info.update(world=_world_info(str(data)), losses=[round(x, 4) for x in losses],
                final_loss=round(losses[-1], 4) if losses else None, fp16=fp16,
                train_seconds=round(seconds, 1),
                command=_command_line())
    (Path(out) / "training.json").write_text(json.dumps(info, indent=2) + "\n")


def _command_line() -> str:
    prog = Path(sys.argv[0]).name
    prog = "audit" if prog == "__main__.py" else prog  # `python -m audit train ...`
    return shlex.join([prog, *sys.argv[1:]])


class _Progress:
    """rich progress bar showing the running loss; a no-op when disabled."""

    def __init__(self, *, enabled: bool, total: int, done: int):
        self.enabled, self.total, self.done = enabled, total, done

    def __enter__(self):
        if self.enabled:
            from rich.progress import Progress

            self.p = Progress(*Progress.get_default_columns(), "loss {task.fields[loss]}")
            self.p.start()
            self.task = self.p.add_task("training", total=self.total, completed=self.done, loss="-")
        return self

    def advance(self, loss: float):
        if self.enabled:
            self.p.update(self.task, advance=1, loss=f"{loss:.3f}")

    def __exit__(self, *exc):
        if self.enabled:
            self.p.stop()


def open_clip_main(argv: list[str] | None = None) -> None:
    """open_clip's own trainer with our model configs registered (`--model audit-tiny`)."""
    from open_clip_train.main import main

    register_model_configs()
    main(sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":  # torchrun --nproc_per_node N -m audit.world.train <open_clip_train args>
    open_clip_main()
