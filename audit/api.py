"""Audit any encoder from Python, no checkpoint format needed.

    from audit import api
    api.audit(my_model, name="in-house-v3", out="runs/v3")   # encode_image/encode_text + preprocess + tokenizer
    api.audit((image_fn, text_fn), name="mine", preprocess=pp, tokenizer=tok, out="runs/x")

The model is registered as a loader under its name (the registry plugins use) and audited by the
same runner as `audit run --model NAME`. Its cache key hashes its weights when it has a
state_dict and, always, its vectors on a fixed probe image and text: another model never reuses
its cached vectors."""
import hashlib

from audit.registry import ModelLoader, _LOADERS, _load_model_loaders


class Callables:
    """A pair of callables (pixel batch -> vectors, token batch -> vectors) as a model object."""

    def __init__(self, image_fn, text_fn, preprocess, tokenizer):
        self.encode_image, self.encode_text = image_fn, text_fn
        self.preprocess, self.tokenizer = preprocess, tokenizer


def register(model, *, name: str, preprocess=None, tokenizer=None) -> str:
    """Make `model` loadable as the spec `name`; returns the spec."""
    from audit.loaders.plugin import wrap_object

    if isinstance(model, tuple):
        model = Callables(*model, preprocess, tokenizer)
    elif preprocess is not None or tokenizer is not None:
        model = Callables(model.encode_image, model.encode_text, preprocess or model.preprocess,
                          tokenizer or model.tokenizer)
    _load_model_loaders()

    def load(spec, **_):
        got = wrap_object(model, name=name, source=f"api:{name}")
        got.config["probe"] = _probe_hash(model)
        return got

    _LOADERS[name] = ModelLoader(name, load, lambda spec, pre: spec == name, doc="audit.api model", order=-2)
    return name


def _probe_hash(model) -> str:
    """Hash of the model's vectors on one fixed image and text: what it computes, not its name."""
    import numpy as np
    import torch
    from PIL import Image

    img = Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    with torch.inference_mode():
        im = model.encode_image(torch.stack([model.preprocess(img)]))
        tx = model.encode_text(model.tokenizer(["a photo of a person"]))
    h = hashlib.sha256()
    for t in (im, tx):
        h.update(np.round(torch.as_tensor(t).float().cpu().numpy(), 5).tobytes())
    return h.hexdigest()


def audit(model, *, name: str, preprocess=None, tokenizer=None, **options) -> dict:
    """Run the audit (audit.runner.RunOptions fields as keywords); returns the results dict."""
    from audit.runner import RunOptions, run

    spec = register(model, name=name, preprocess=preprocess, tokenizer=tokenizer)
    return run(RunOptions(model=spec, **options))
