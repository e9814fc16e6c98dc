"""OpenAI's TorchScript archives (what the `clip` package caches as ~/.cache/clip/ViT-B-32.pt).

We take the state dict out of the archive and build open_clip's own CLIP from it with
open_clip's OpenAI converter (QuickGELU, as OpenAI trained). The archive's TorchScript code is
never run. SECURITY.md says what torch.jit.load still trusts.
"""
from pathlib import Path

from audit.errors import UserError
from audit.loaders.checkpoint import is_torchscript
from audit.loaders.common import first_line, held_warnings
from audit.registry import register_model_loader


@register_model_loader("openai-jit", order=25, doc="FILE.pt: OpenAI TorchScript archive (QuickGELU)",
                       matches=lambda spec, pre: is_torchscript(Path(spec)))
def load_jit(spec, *, arch=None, **_):
    import torch
    from open_clip.model import build_model_from_openai_state_dict
    from open_clip.transform import image_transform_v2, PreprocessCfg

    from audit.loaders.openclip import _wrap
    import open_clip

    path = Path(spec)
    try:
        with held_warnings():
            state = torch.jit.load(str(path), map_location="cpu").state_dict()
            # a scripted open_clip model keeps its causal mask as state; open_clip rebuilds it
            state = {k: v for k, v in state.items() if k != "attn_mask"}
            model = build_model_from_openai_state_dict(state, quick_gelu=True, cast_dtype=None)
    except Exception as e:
        raise UserError(f"{path}: not a loadable OpenAI TorchScript CLIP archive ({first_line(e)})") from None
    # the converter rounds to fp16 (OpenAI's archives are fp16, so lossless for them); reload the
    # archive's own values so an fp32 archive keeps its precision
    model = model.float()
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()
                           if k not in ("input_resolution", "context_length", "vocab_size")})
    size = model.visual.image_size
    size = size[-1] if isinstance(size, tuple) else size
    pp = PreprocessCfg(size=size)  # OpenAI's own: bicubic, shortest side, centre crop, OpenAI mean/std
    from dataclasses import asdict

    model.visual.preprocess_cfg = asdict(pp)
    tokenizer = open_clip.tokenizer.SimpleTokenizer(context_length=model.context_length)
    cfg = {"openai_jit": True, "quick_gelu": True, "image_size": size, "context_length": model.context_length}
    return _wrap(model, image_transform_v2(pp, is_train=False), tokenizer, arch or "openai-jit",
                 f"openai-jit:{path}", cfg)
