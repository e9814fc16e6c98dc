"""Load any CLIP the way open_clip does, and fingerprint its weights.

The loaders live in audit/loaders/ and register with audit.registry (plugins too: the entry point
group `clip_audit.models`). SPEC forms (DESIGN.md): `demo` / `demo-null`; `ViT-B-32` with --pretrained TAG|FILE or
`ViT-B-32:openai`; `hf-hub:org/repo`; `local-dir:PATH` or a directory holding
`open_clip_config.json`; a `.pt`/`.pth`/`.bin`/`.safetensors` file (architecture from --arch, from
the checkpoint's own metadata, from a sibling open_clip_config.json, or from open_clip_train's
params.txt next to its checkpoints/ folder).
"""
import hashlib
import json
import logging
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from audit.errors import UserError

log = logging.getLogger(__name__)


@dataclass
class ModelInfo:
    spec: str
    arch: str
    source: str
    sha256: str
    pretrained: str | None = None
    library: str = "open_clip"
    cls: str = ""
    preprocess: dict = field(default_factory=dict)
    tokenizer: dict = field(default_factory=dict)
    loader: str = ""
    fingerprint: str = ""  # model_fingerprint(): the embedding cache key

    def __post_init__(self):
        # a bundle built by hand (tests, a caller's own) still gets a key no other weights share
        self.fingerprint = self.fingerprint or self.sha256


@dataclass
class ModelBundle:
    model: object
    preprocess: object
    tokenizer: object
    info: ModelInfo
    device: str


def resolve_device(name: str = "auto") -> str:
    import torch

    if name != "auto":
        if name == "cuda" and not torch.cuda.is_available():
            raise UserError("--device cuda: no CUDA device is available on this machine")
        return name
    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def register_builtin_configs() -> None:
    """Make `audit-tiny` and friends known to open_clip, like its own model_configs/."""
    import open_clip

    folder = resources.files("audit").joinpath("model_configs")
    if Path(str(folder)).is_dir() and "audit-tiny" not in open_clip.list_models():
        open_clip.add_model_config(Path(str(folder)))


def demo_dir(name: str = "default") -> Path:
    return Path(str(resources.files("audit").joinpath("demo", name)))


def load(spec: str, *, pretrained: str | None = None, arch: str | None = None,
         device: str = "auto", trust_checkpoint: bool = False) -> ModelBundle:
    """The first registered loader that takes the spec builds the model (`audit models`)."""
    from audit import hub
    from audit.registry import find_model_loader

    hub.prepare()  # offline up front: no spec may wait a minute on network retries
    register_builtin_configs()
    device = resolve_device(device)
    loader = find_model_loader(spec, pretrained)
    got = loader.load(spec, pretrained=pretrained, arch=arch, trust=trust_checkpoint)
    model = got.model.to(device).eval()
    sha = fingerprint(model)
    info = ModelInfo(spec=spec, arch=got.arch, source=got.source, sha256=sha, pretrained=pretrained,
                     library=got.library, cls=got.cls, preprocess=got.preprocess_info,
                     tokenizer=got.tokenizer_info, loader=loader.name)
    info.fingerprint = model_fingerprint(sha, model, got)
    return ModelBundle(model=model, preprocess=got.preprocess, tokenizer=got.tokenizer, info=info, device=device)


def model_fingerprint(sha: str, model, got) -> str:
    """The cache key: everything that changes a vector. Weights alone are not the model: the same
    weights as GELU and QuickGELU, or with another resize or tokenizer, embed differently. The
    module repr names every layer's class (QuickGELU vs GELU); the config and preprocessing are
    hashed as declared."""
    h = hashlib.sha256()
    for part in (sha, repr(model), json.dumps(got.config, sort_keys=True, default=str),
                 json.dumps(got.preprocess_info, sort_keys=True, default=str), repr(got.preprocess),
                 json.dumps(got.tokenizer_info, sort_keys=True, default=str), type(got.tokenizer).__name__):
        h.update(part.encode())
        h.update(b"\0")
    return h.hexdigest()


def read_checkpoint(path: Path, *, trust: bool = False):
    from audit.loaders.checkpoint import read_checkpoint as read

    return read(Path(path), trust=trust)


def fingerprint(model) -> str:
    """sha256 over the weights in a fixed order: the same weights give the same id whatever
    file format or device they came from."""
    h = hashlib.sha256()
    for key, tensor in sorted(model.state_dict().items()):
        h.update(key.encode())
        h.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def save_local_dir(model, model_cfg: dict, out: Path, *, fp16: bool = False, model_name: str = "custom",
                   preprocess_cfg: dict | None = None) -> Path:
    """Write open_clip's local-dir layout: open_clip_config.json + open_clip_model.safetensors."""
    from safetensors.torch import save_file

    from audit.io import atomic_write_json

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    pre = preprocess_cfg or dict(getattr(model.visual, "preprocess_cfg", {}) or {})
    atomic_write_json(out / "open_clip_config.json",
                      {"model_name": model_name, "model_cfg": model_cfg, "preprocess_cfg": pre})
    state = {k: (v.half() if fp16 and v.is_floating_point() else v).detach().cpu().contiguous()
             for k, v in model.state_dict().items()}
    tmp = out / ".open_clip_model.safetensors.tmp"
    save_file(state, str(tmp), metadata={"model_cfg": json.dumps(model_cfg), "model_name": model_name})
    tmp.replace(out / "open_clip_model.safetensors")
    return out

