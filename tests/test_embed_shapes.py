"""Shapes the model sees: fixed blocks whatever --batch-size says, and text cut after its end.

Trimming a text batch after its longest prompt is exact in arithmetic for a causal text tower
with end-of-text pooling (open_clip CLIP): the parity test holds it to the native full-length
`encode_text`. Models where later positions count (no causal mask) keep full length.
"""
import numpy as np
import pytest

from audit import models
from audit.data import load_source
from audit.embed import Embedder, _trimmable, encode_text_trimmed

TEXTS = ["a photo of a cat.", "dog", "a close-up photo of a suspicious person, outdoors",
         "an image of a Black woman", "!", "a portrait of a child!", "x " * 30]


@pytest.fixture
def bundle(micro_dir):
    return models.load(str(micro_dir), device="cpu")


def test_batch_size_never_changes_a_vector(bundle, fairface_release):
    src = load_source(str(fairface_release), "fairface")
    runs = [Embedder(bundle, cache_dir=None, batch_size=b, progress=False).images(src) for b in (1, 5, 7, 64)]
    assert all(r.tobytes() == runs[0].tobytes() for r in runs)


def test_the_model_sees_whole_blocks(bundle, fairface_release):
    src = load_source(str(fairface_release), "fairface")
    seen = []
    inner = bundle.model.encode_image
    bundle.model.encode_image = lambda x: (seen.append(len(x)), inner(x))[1]
    Embedder(bundle, cache_dir=None, batch_size=3, block=5, progress=False).images(src)
    assert seen == [5, 5, 2]


@pytest.mark.parametrize("arch", ["micro", "audit-tiny", "eos-pooled"])
def test_trimmed_text_equals_native_full_length(arch, micro_model):
    import open_clip
    import torch

    from audit.models import register_builtin_configs

    register_builtin_configs()
    torch.manual_seed(0)
    if arch == "micro":
        model = micro_model
    elif arch == "audit-tiny":
        model = open_clip.create_model("audit-tiny").eval()
    else:  # end-of-text pooling by the tokenizer's eos id rather than the argmax token
        cfg = open_clip.get_model_config("audit-tiny")
        cfg["text_cfg"] = {**cfg["text_cfg"], "pool_type": "eos", "eos_id": 49407}
        model = open_clip.CLIP(**cfg).eval()
    assert _trimmable(model)
    ctx = model.positional_embedding.shape[0]
    tokens = open_clip.tokenizer.SimpleTokenizer(context_length=ctx)(TEXTS)
    with torch.inference_mode():
        full = torch.nn.functional.normalize(model.encode_text(tokens), dim=-1)
        cut = torch.nn.functional.normalize(encode_text_trimmed(model, tokens[:4]), dim=-1)
        longest_kept = torch.nn.functional.normalize(encode_text_trimmed(model, tokens), dim=-1)
    np.testing.assert_allclose(cut.numpy(), full[:4].numpy(), rtol=0, atol=1e-5)
    np.testing.assert_allclose(longest_kept.numpy(), full.numpy(), rtol=0, atol=1e-5)


def test_embedder_texts_match_native_and_keep_the_callers_order(bundle):
    import open_clip
    import torch

    e = Embedder(bundle, cache_dir=None, progress=False)
    got = e.texts(TEXTS)
    with torch.inference_mode():
        ref = torch.nn.functional.normalize(bundle.model.encode_text(bundle.tokenizer(TEXTS)), dim=-1).numpy()
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-5)
    assert isinstance(bundle.model, open_clip.CLIP)


def test_no_causal_mask_keeps_full_length():
    """Without a causal mask a pad position feeds every other position: trimming would change the
    vector, so such a tower is encoded at full length."""
    import open_clip
    import torch

    cfg = open_clip.get_model_config("audit-tiny") if "audit-tiny" in open_clip.list_models() else None
    if cfg is None:
        from audit.models import register_builtin_configs
        register_builtin_configs()
        cfg = open_clip.get_model_config("audit-tiny")
    cfg = {**cfg, "text_cfg": {**cfg["text_cfg"], "no_causal_mask": True, "pool_type": "last"}}
    torch.manual_seed(0)
    model = open_clip.CLIP(**cfg).eval()
    assert not _trimmable(model)
