"""open_clip models in every form open_clip knows: the demo models, `NAME[:TAG]` / --pretrained,
`hf-hub:ORG/REPO` (open_clip layout), `local-dir:DIR` or a DIR with open_clip_config.json, and a
checkpoint file (architecture from --arch, its own metadata, a sibling open_clip_config.json, or
open_clip_train's params.txt)."""
import contextlib
import json
import logging
import pickle
from pathlib import Path

from audit.errors import UserError
from audit.loaders import Loaded
from audit.loaders.checkpoint import (CHECKPOINT_SUFFIXES, is_openai_state, is_torchscript,
                                      read_checkpoint, strip_openai_keys)
from audit.loaders.common import (first_line, held_warnings, openclip_preprocess_info,
                                  openclip_tokenizer_info)
from audit.registry import register_model_loader

log = logging.getLogger("audit.models")
# name -> folder under audit/demo/, named after the world preset the model was trained on
# (the runner audits a demo model on that world by default)
DEMO_MODELS = {"demo": "default", "demo-null": "null", "demo-scenes": "scenes", "demo-scenes-null": "scenes-null"}


def _wrap(model, preprocess, tokenizer, arch, source, cfg=None) -> Loaded:
    pre = dict(getattr(model.visual, "preprocess_cfg", {}) or {})
    return Loaded(model=model, preprocess=preprocess, tokenizer=tokenizer, arch=arch, source=source,
                  library="open_clip", cls=type(model).__name__,
                  preprocess_info=openclip_preprocess_info(pre),
                  tokenizer_info=openclip_tokenizer_info(tokenizer), config=cfg or {})


def _tokenizer(ident: str, text_cfg: dict | None, label: str):
    """open_clip's tokenizer; SigLIP/timm ones come from the Hub: an uncached one is a user error."""
    import open_clip

    try:
        return open_clip.get_tokenizer(ident)
    except Exception as e:  # the hub client raises a zoo of types when offline
        repo = (text_cfg or {}).get("hf_tokenizer_name") or ident
        raise UserError(f"{label}: cannot load the tokenizer {repo!r} ({first_line(e)}); it comes from the "
                        f"Hugging Face Hub: put it in the local HF cache (huggingface-cli download {repo})") from None


@register_model_loader("demo", order=0, doc="demo / demo-null / demo-scenes / demo-scenes-null: the built-in tiny models",
                       matches=lambda spec, pre: spec in DEMO_MODELS)
def load_demo(spec, **_):
    from audit.models import demo_dir

    path = demo_dir(DEMO_MODELS[spec])
    if not (path / "open_clip_config.json").is_file():
        raise UserError(f"{spec}: the built-in demo model is missing from {path}; reinstall clip-audit")
    return load_local_dir(f"local-dir:{path}", label=spec)


# torch.nn.init's in-place initialisers: what builds a module's random weights.
_INITS = ("uniform_", "normal_", "trunc_normal_", "constant_", "ones_", "zeros_", "xavier_uniform_",
          "xavier_normal_", "kaiming_uniform_", "kaiming_normal_", "orthogonal_")


def _has_weights(path: Path) -> bool:
    """A weights file open_clip's local-dir schema loads (it globs the same suffixes)."""
    return any(any(path.glob(f"*{suffix}")) for suffix in (".safetensors", ".bin", ".pth"))


@contextlib.contextmanager
def _no_random_init(enabled: bool):
    """Skip drawing random weights that the checkpoint overwrites at once (transformers'
    `no_init_weights` does the same): about a second for a ViT-B-32 on 2 CPU cores. Safe only
    because open_clip loads a local-dir checkpoint with strict=True, so every parameter and
    persistent buffer comes from the file; buffers computed in __init__ (the causal mask) use no
    initialiser. Without a weights file the model keeps open_clip's random init."""
    import torch.nn.init as init

    if not enabled:
        yield
        return
    saved = {name: getattr(init, name) for name in _INITS}
    try:
        for name in _INITS:
            setattr(init, name, lambda tensor, *args, **kwargs: tensor)
        yield
    finally:
        for name, fn in saved.items():
            setattr(init, name, fn)


def _is_local_dir(spec, pre):
    return spec.startswith("local-dir:") or (Path(spec).is_dir() and (Path(spec) / "open_clip_config.json").is_file())


@register_model_loader("open_clip-local-dir", order=20, matches=_is_local_dir,
                       doc="local-dir:DIR or DIR with open_clip_config.json + weights")
def load_local_dir(spec, *, label=None, **_):
    import open_clip

    path = Path(spec[len("local-dir:"):] if spec.startswith("local-dir:") else spec)
    label = label or spec
    if not path.is_dir():
        raise UserError(f"{label}: no such directory")
    cfg = _read_config(path / "open_clip_config.json", label)
    try:
        with held_warnings(), _no_random_init(_has_weights(path)):
            model, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{path}")
    except pickle.UnpicklingError as e:  # open_clip loads .bin weights_only: same refusal as a .pt
        raise UserError(f"{label}: refusing to unpickle the model weights: they hold Python objects "
                        f"beyond tensors ({first_line(e)}). Loading them could run arbitrary code; "
                        "convert them to safetensors") from None
    except Exception as e:  # a broken config reaches open_clip as any of a dozen types
        raise UserError(f"{label}: cannot load the open_clip local-dir model ({first_line(e)})") from None
    tokenizer = _tokenizer(f"local-dir:{path}", cfg["model_cfg"].get("text_cfg"), label)
    arch = cfg.get("model_name") or cfg.get("arch") or "custom"
    return _wrap(model, preprocess, tokenizer, str(arch), f"local-dir:{path}", cfg["model_cfg"])


def _read_config(path: Path, label: str) -> dict:
    """open_clip_config.json, checked before open_clip meets it: wrong types must not traceback."""
    try:
        cfg = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise UserError(f"{path}: not a readable open_clip config ({first_line(e)})") from None
    if not isinstance(cfg, dict) or not isinstance(cfg.get("model_cfg"), dict):
        raise UserError(f"{path}: the config needs a 'model_cfg' object (open_clip's local-dir layout)")
    model_cfg = cfg["model_cfg"]
    for key in ("vision_cfg", "text_cfg"):
        if not isinstance(model_cfg.get(key, {}), dict):
            raise UserError(f"{path}: model_cfg.{key} must be an object")
    if not isinstance(cfg.get("preprocess_cfg", {}), dict):
        raise UserError(f"{path}: preprocess_cfg must be an object")
    return cfg


def _hub_is_open_clip(spec, pre):
    from audit.loaders.hf import cached_repo_layout

    if not spec.startswith("hf-hub:"):  # a bare ORG/NAME cached in open_clip layout is one too
        return spec.count("/") == 1 and not Path(spec).exists() and cached_repo_layout(spec) == "open_clip"
    return cached_repo_layout(spec[len("hf-hub:"):]) != "transformers"


@register_model_loader("open_clip-hf-hub", order=10, matches=_hub_is_open_clip,
                       doc="hf-hub:ORG/REPO or ORG/REPO in open_clip layout (cached offline)")
def load_hub(spec, **_):
    import open_clip

    from audit import hub

    online = hub.prepare()
    spec = spec if spec.startswith("hf-hub:") else f"hf-hub:{spec}"
    try:
        with held_warnings():
            model, _, preprocess = open_clip.create_model_and_transforms(spec)
            tokenizer = open_clip.get_tokenizer(spec)
    except Exception as e:  # the hub client raises a zoo of types when offline
        why = "the Hub is unreachable and the model or its tokenizer is not in the local cache" \
            if not online else first_line(e)
        raise UserError(
            f"{spec}: could not load the model from the Hugging Face Hub ({why}). "
            "Pass a local checkpoint instead: --model PATH.safetensors --arch NAME, "
            "or --model DIR holding open_clip_config.json") from None
    return _wrap(model, preprocess, tokenizer, spec[len("hf-hub:"):], spec)


def _is_file(spec, pre):
    path = Path(spec)
    return (path.suffix in CHECKPOINT_SUFFIXES or path.is_file()) and not is_torchscript(path)


@register_model_loader("checkpoint", order=30, matches=_is_file,
                       doc="FILE.safetensors/.pt/.pth/.bin/.ckpt (--arch NAME, or its own metadata)")
def load_checkpoint_file(spec, *, arch=None, trust=False, **_):
    path = Path(spec)
    if not path.is_file():
        raise UserError(f"{spec}: no such checkpoint file")
    return from_checkpoint(path, arch=arch, trust=trust)


@register_model_loader("open_clip", order=90, matches=lambda spec, pre: True,
                       doc="NAME[:TAG] or NAME --pretrained TAG|FILE (open_clip.list_models())")
def load_name(spec, *, pretrained=None, trust=False, **kw):
    import open_clip

    if Path(spec).is_dir():
        raise UserError(f"{spec}: a model directory needs open_clip_config.json (open_clip's local-dir layout) "
                        "or config.json (transformers' save_pretrained layout)")
    name, _, tag = spec.partition(":")
    pretrained = pretrained or tag or None
    if name not in open_clip.list_models():
        raise UserError(f"{spec}: not a model file, directory, hf-hub: id, cached Hugging Face repo "
                        "or open_clip architecture (see `audit models`)")
    if pretrained and (Path(pretrained).suffix in CHECKPOINT_SUFFIXES or Path(pretrained).is_file()):
        if is_torchscript(Path(pretrained)):
            from audit.loaders.openai_jit import load_jit

            return load_jit(pretrained, arch=name)
        return from_checkpoint(Path(pretrained), arch=name, trust=trust)
    if pretrained is None:
        log.warning("%s: no --pretrained weights given; auditing a randomly initialised model", spec)
    # open_clip's pretrained table says which tags were trained with QuickGELU (openai, yfcc15m...)
    cfg = dict(open_clip.get_model_config(name) or {})
    tokenizer = _tokenizer(name, cfg.get("text_cfg"), spec)  # before minutes of weights: it may be missing
    quick = bool(pretrained and open_clip.get_pretrained_cfg(name, pretrained).get("quick_gelu"))
    if quick and not name.endswith("-quickgelu"):
        log.info("%s: tag %r was trained with QuickGELU; building the QuickGELU architecture", name, pretrained)
    try:
        with held_warnings():
            model, _, preprocess = open_clip.create_model_and_transforms(
                name, pretrained=pretrained, force_quick_gelu=quick)
    except Exception as e:
        raise UserError(
            f"{spec}: could not load pretrained weights {pretrained!r} ({first_line(e)}); offline? "
            f"Pass a local file: --model {name} --pretrained PATH.safetensors") from None
    cfg["quick_gelu"] = quick or cfg.get("quick_gelu")
    return _wrap(model, preprocess, tokenizer, name, f"open_clip:{name}:{pretrained}", cfg)


def from_checkpoint(path: Path, *, arch: str | None, trust: bool) -> Loaded:
    import open_clip

    state, meta_cfg = read_checkpoint(path, trust=trust)
    declared = _declared(path, arch, meta_cfg)
    model_cfg, arch_name, pre_cfg, quick = declared
    if is_openai_state(state):  # OpenAI's weights were trained with QuickGELU
        state = strip_openai_keys(state)
        if not quick:
            log.info("%s: OpenAI-style weights; building the QuickGELU architecture", path)
        quick = True
    try:
        with held_warnings():
            if model_cfg is not None:
                model_cfg = dict(model_cfg, quick_gelu=quick or model_cfg.get("quick_gelu", False))
                model = _build_from_cfg(model_cfg)
                tokenizer = _tokenizer_from_cfg(model_cfg.get("text_cfg", {}), path)
            else:
                model = open_clip.create_model(arch_name, force_quick_gelu=quick)
                model_cfg = dict(open_clip.get_model_config(arch_name) or {}, quick_gelu=quick)
                tokenizer = _tokenizer(arch_name, model_cfg.get("text_cfg"), str(path))
    except UserError:
        raise
    except Exception as e:  # the config's fields reach the model constructor unchecked
        raise UserError(f"{path}: the declared model config does not build a model ({first_line(e)})") from None
    preprocess = _preprocess(model, model_cfg, pre_cfg, path)
    load_state(model, state, path)
    return _wrap(model, preprocess, tokenizer, arch_name, f"file:{path}", model_cfg)


def _build_from_cfg(model_cfg: dict):
    """The class open_clip's create_model picks: SigLIP-style configs say `custom_text`."""
    import open_clip

    cfg = dict(model_cfg)
    custom = cfg.pop("custom_text", False) or cfg.get("text_cfg", {}).get("hf_model_name")
    cfg.pop("model_name", None)
    return (open_clip.CustomTextCLIP if custom else open_clip.CLIP)(**cfg)


def _tokenizer_from_cfg(text_cfg: dict, path: Path):
    """The tokenizer open_clip's get_tokenizer builds for this text_cfg: an HF tokenizer where the
    config names one (SigLIP: from the checkpoint's folder when it holds open_clip_config.json, as
    local-dir does), else SimpleTokenizer with the config's tokenizer_kwargs (e.g. clean)."""
    import open_clip

    length = text_cfg.get("context_length", 77)
    kwargs = dict(text_cfg.get("tokenizer_kwargs") or {})
    name = text_cfg.get("hf_tokenizer_name")
    if not name:
        return open_clip.tokenizer.SimpleTokenizer(context_length=length, **kwargs)
    source = str(path.parent) if (path.parent / "open_clip_config.json").is_file() else name
    try:
        return open_clip.tokenizer.HFTokenizer(source, context_length=length,
                                               tokenizer_mode=text_cfg.get("tokenizer_mode"), **kwargs)
    except Exception as e:  # the hub client raises a zoo of types when offline
        raise UserError(f"{path}: cannot load the tokenizer {name!r} ({first_line(e)}); it comes from the "
                        f"Hugging Face Hub: put it in the local HF cache (huggingface-cli download {name})") from None


def _preprocess(model, model_cfg: dict, pre_cfg: dict | None, path: Path):
    """The checkpoint's declared preprocess_cfg wins; its image size must fit the weights."""
    from open_clip.transform import PreprocessCfg, image_transform_v2

    size = model_cfg.get("vision_cfg", {}).get("image_size", 224)
    base = dict(getattr(model.visual, "preprocess_cfg", {}) or {})
    cfg = dict(base, **(pre_cfg or {}))
    cfg.setdefault("size", size)
    got = cfg["size"] if isinstance(cfg["size"], int) else tuple(cfg["size"])[-1]
    want = size if isinstance(size, int) else tuple(size)[-1]
    if got != want:
        raise UserError(f"{path}: the declared preprocess size {cfg['size']} differs from the model's image "
                        f"size {size}; fix preprocess_cfg.size in open_clip_config.json")
    try:
        pp = PreprocessCfg(**{k: v for k, v in cfg.items() if k in PreprocessCfg.__dataclass_fields__})
    except TypeError as e:
        raise UserError(f"{path}: bad preprocess_cfg ({first_line(e)})") from None
    from dataclasses import asdict

    model.visual.preprocess_cfg = asdict(pp)
    return image_transform_v2(pp, is_train=False)


def _declared(path: Path, arch: str | None, meta_cfg: dict | None):
    """(model_cfg or None, arch name, preprocess_cfg or None, quick_gelu) the checkpoint declares."""
    import open_clip

    sibling = path.parent / "open_clip_config.json"
    pre_cfg = _read_config(sibling, str(path)).get("preprocess_cfg") if sibling.is_file() else None
    if arch:
        if arch not in open_clip.list_models():
            raise UserError(f"--arch {arch}: unknown open_clip architecture")
        return None, arch, pre_cfg, False
    if meta_cfg:
        return meta_cfg, str(meta_cfg.get("model_name", "custom")), pre_cfg, bool(meta_cfg.get("quick_gelu"))
    if sibling.is_file():
        cfg = _read_config(sibling, str(path))
        return cfg["model_cfg"], str(cfg.get("model_name", "custom")), pre_cfg, False
    params = path.parent.parent / "params.txt"  # open_clip_train: logs/NAME/{params.txt,checkpoints/}
    if params.is_file():
        p = _read_params(params)
        if p.get("model"):
            return None, p["model"], None, p.get("force_quick_gelu") == "True"
    raise UserError(f"{path}: cannot tell the architecture of this checkpoint; pass --arch NAME "
                    "(one of open_clip.list_models())")


def _read_params(path: Path) -> dict:
    out = {}
    for line in path.read_text(errors="replace").splitlines():
        key, _, value = line.partition(":")
        out[key.strip()] = value.strip()
    return out


def load_state(model, state: dict, path: Path) -> None:
    expected = model.state_dict()
    missing, unexpected, mismatched = _compare_keys(expected, state)
    if mismatched == ["positional_embedding"] and not missing and not unexpected:
        have, want = state["positional_embedding"].shape[0], expected["positional_embedding"].shape[0]
        raise UserError(f"{path}: the weights have a text context length of {have}, the architecture {want}; "
                        "pass the --arch the weights were trained with")
    if missing or unexpected or mismatched:
        parts = [f"{label}: {', '.join(keys[:5])}" for label, keys in
                 (("missing", missing), ("unexpected", unexpected), ("shape mismatch", mismatched)) if keys]
        raise UserError(f"{path}: weights do not fit the architecture ({'; '.join(parts)})")
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})


def _compare_keys(expected: dict, got: dict):
    missing = sorted(set(expected) - set(got))
    unexpected = sorted(set(got) - set(expected))
    mismatched = sorted(k for k in set(expected) & set(got) if tuple(expected[k].shape) != tuple(got[k].shape))
    return missing, unexpected, mismatched
