"""Reading checkpoint files safely: pickles load weights_only unless the user trusts the file."""
import json
import pickle
import zipfile
from pathlib import Path

from audit.errors import UserError
from audit.loaders.common import first_line

CHECKPOINT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors", ".ckpt")
OPENAI_EXTRA_KEYS = ("input_resolution", "context_length", "vocab_size")


def is_torchscript(path: Path) -> bool:
    """A TorchScript archive is a zip holding code/ and constants.pkl (OpenAI's ~/.cache/clip/*.pt)."""
    try:
        if not path.is_file() or not zipfile.is_zipfile(path):
            return False
        with zipfile.ZipFile(path) as z:
            return any(n.endswith("/constants.pkl") or "/code/" in n for n in z.namelist())
    except (OSError, zipfile.BadZipFile):
        return False


def is_openai_state(state: dict) -> bool:
    # OpenAI's state dicts carry these three int buffers; open_clip's never do
    return any(k in state for k in OPENAI_EXTRA_KEYS) and "visual.conv1.weight" in state


def strip_openai_keys(state: dict) -> dict:
    return {k: v for k, v in state.items() if k not in OPENAI_EXTRA_KEYS}


def read_checkpoint(path: Path, *, trust: bool = False) -> tuple[dict, dict | None]:
    """State dict (+ the model config if the file carries one)."""
    if path.suffix == ".safetensors":
        return _read_safetensors(path)
    import torch

    _check_magic(path)
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=not trust)
    except pickle.UnpicklingError as e:
        raise UserError(
            f"{path}: refusing to unpickle: the checkpoint holds Python objects beyond tensors "
            f"({first_line(e)}). Loading it could run arbitrary code. Convert it to safetensors, "
            "or pass --trust-checkpoint if you trust its author completely") from None
    except Exception as e:  # corrupt archives raise RuntimeError, EOFError, IndexError, KeyError...
        raise UserError(f"{path}: not a readable PyTorch checkpoint ({first_line(e)})") from None
    meta = ckpt.get("model_cfg") if isinstance(ckpt, dict) else None
    state = ckpt.get("state_dict", ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(state, dict):
        raise UserError(f"{path}: no state_dict found in the checkpoint")
    if meta is not None and not isinstance(meta, dict):
        raise UserError(f"{path}: the checkpoint's model_cfg is not a mapping")
    return _check_tensors(strip_prefix(state), path), meta


def _check_magic(path: Path) -> None:
    """torch.load reads a zip (torch>=1.6) or a raw pickle (protocol 2+ starts with 0x80).
    Anything else, an HTML error page saved as .pt above all, is not a checkpoint at all."""
    try:
        head = path.read_bytes()[:8] if path.stat().st_size < 64 else path.open("rb").read(8)
    except OSError as e:
        raise UserError(f"{path}: cannot read ({first_line(e)})") from None
    if not (head.startswith(b"PK") or head[:1] == b"\x80"):
        hint = "; it looks like a web page saved instead of the file" if head.lstrip()[:1] == b"<" else ""
        raise UserError(f"{path}: not a PyTorch checkpoint (neither a zip archive nor a pickle){hint}")


def _read_safetensors(path: Path):
    from safetensors import SafetensorError
    from safetensors.torch import load_file, safe_open

    try:
        state = load_file(str(path))
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as e:
        raise UserError(f"{path}: not a readable safetensors file ({first_line(e)})") from None
    cfg = None
    if "model_cfg" in meta:
        try:
            cfg = json.loads(meta["model_cfg"])
        except ValueError as e:
            raise UserError(f"{path}: the model_cfg metadata is not valid JSON ({first_line(e)})") from None
        if not isinstance(cfg, dict) or not all(isinstance(cfg.get(k, {}), dict) for k in ("vision_cfg", "text_cfg")):
            raise UserError(f"{path}: the model_cfg metadata must be an object with vision_cfg and text_cfg objects")
    return strip_prefix(state), cfg


def _check_tensors(state: dict, path: Path) -> dict:
    import torch

    bad = [k for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise UserError(f"{path}: the state dict holds non-tensor values (e.g. {str(bad[0])[:80]!r})")
    return state


def strip_prefix(state: dict) -> dict:
    # DistributedDataParallel checkpoints (open_clip_train) prefix every key with "module."
    if state and all(isinstance(k, str) and k.startswith("module.") for k in state):
        return {k[len("module."):]: v for k, v in state.items()}
    return state
