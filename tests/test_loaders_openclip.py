"""open_clip forms and their architecture traps: vectors equal open_clip's own, to 1e-5."""
import numpy as np
import pytest
import torch

from tests.test_loaders_hf import TEXTS, images


def _ours(spec, **kw):
    from audit.embed import Embedder
    from audit.models import load

    bundle = load(spec, device="cpu", **kw)
    emb = Embedder(bundle, cache_dir=None, progress=False)
    imgs = images(3)
    pix = torch.stack([bundle.preprocess(i) for i in imgs])
    return bundle, pix, emb._encode(pix, image=True), emb._encode(bundle.tokenizer(TEXTS), image=False)


def _native(model, preprocess, tokenizer):
    pix = torch.stack([preprocess(i) for i in images(3)])
    with torch.no_grad():
        im = torch.nn.functional.normalize(model.encode_image(pix), dim=-1)
        tx = torch.nn.functional.normalize(model.encode_text(tokenizer(TEXTS)), dim=-1)
    return pix, im.numpy(), tx.numpy()


@pytest.fixture
def openai_jit(micro_arch, tmp_path):
    """A torch.jit archive of a tiny open_clip QuickGELU model: OpenAI's key names and buffers."""
    import open_clip

    torch.manual_seed(3)
    # OpenAI's converter infers heads as width // 64: the smallest such model
    cfg = {"embed_dim": 32, "quick_gelu": True,
           "vision_cfg": {"image_size": 32, "layers": 1, "width": 64, "head_width": 64, "patch_size": 8},
           "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 64, "heads": 1, "layers": 1}}
    model = open_clip.CLIP(**cfg).eval()
    model.register_buffer("input_resolution", torch.tensor(32))  # an OpenAI archive's extra buffer
    scripted = torch.jit.script(model)
    path = tmp_path / "ViT-micro.pt"
    scripted.save(str(path))
    return model, path


def test_openai_jit_archive_matches_open_clip(openai_jit, micro_arch):
    import open_clip

    from open_clip.transform import PreprocessCfg, image_transform_v2

    model, path = openai_jit
    tok = open_clip.tokenizer.SimpleTokenizer(context_length=16)
    n_pix, n_im, n_tx = _native(model, image_transform_v2(PreprocessCfg(size=32),
                                                                    is_train=False), tok)
    for spec, kw in ((str(path), {}), (micro_arch, {"pretrained": str(path)})):
        bundle, pix, im, tx = _ours(spec, **kw)
        assert "QuickGELU" in repr(bundle.model)
        assert torch.allclose(pix, n_pix, atol=1e-6)
        np.testing.assert_allclose(im, n_im, atol=1e-5)
        np.testing.assert_allclose(tx, n_tx, atol=1e-5)


def test_openai_state_dict_gets_quick_gelu(micro_arch, tmp_path):
    """OpenAI-style weights (with their int buffers) into a GELU arch: built as QuickGELU."""
    import open_clip

    torch.manual_seed(4)
    model = open_clip.create_model(micro_arch, force_quick_gelu=True).eval()
    state = dict(model.state_dict(), input_resolution=torch.tensor(32), context_length=torch.tensor(16),
                 vocab_size=torch.tensor(49408))
    torch.save(state, tmp_path / "openai.pt")
    _, _, pre = open_clip.create_model_and_transforms(micro_arch)
    n = _native(model, pre, open_clip.get_tokenizer(micro_arch))
    bundle, _, im, tx = _ours(micro_arch, pretrained=str(tmp_path / "openai.pt"))
    assert "QuickGELU" in repr(bundle.model)
    np.testing.assert_allclose(im, n[1], atol=1e-5)
    np.testing.assert_allclose(tx, n[2], atol=1e-5)


def test_gelu_and_quickgelu_never_share_a_cache_entry(micro_model, micro_arch, tmp_path):
    """The same weights as GELU and as QuickGELU, one cache: different keys, different vectors."""
    from audit.embed import Embedder
    from audit.models import load

    torch.save(micro_model.state_dict(), tmp_path / "w.pt")
    params = tmp_path / "run" / "params.txt"
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    torch.save(micro_model.state_dict(), tmp_path / "run" / "checkpoints" / "epoch_1.pt")
    cache = tmp_path / "cache"
    gelu = load(str(tmp_path / "w.pt"), arch=micro_arch, device="cpu")
    params.write_text(f"model: {micro_arch}\nforce_quick_gelu: True\n")  # open_clip_train's params.txt
    quick = load(str(tmp_path / "run" / "checkpoints" / "epoch_1.pt"), device="cpu")
    assert gelu.info.sha256 == quick.info.sha256 and gelu.info.fingerprint != quick.info.fingerprint
    assert "QuickGELU" in repr(quick.model) and "QuickGELU" not in repr(gelu.model)
    a = Embedder(gelu, cache_dir=cache, progress=False).texts(TEXTS)
    b = Embedder(quick, cache_dir=cache, progress=False).texts(TEXTS)
    assert np.abs(a - b).max() > 1e-4


def test_checkpoint_in_open_clip_folder_keeps_declared_preprocess(micro_model, micro_arch, tmp_path):
    import json

    import open_clip

    from audit.models import save_local_dir
    from tests.conftest import MICRO_CFG

    pre = {"size": 32, "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5], "interpolation": "bilinear",
           "resize_mode": "squash"}
    out = save_local_dir(micro_model, MICRO_CFG, tmp_path / "m", model_name=micro_arch, preprocess_cfg=pre)
    model, _, native_pre = open_clip.create_model_and_transforms(f"local-dir:{out}")
    n = _native(model.eval(), native_pre, open_clip.get_tokenizer(f"local-dir:{out}"))
    for spec in (str(out), str(out / "open_clip_model.safetensors")):
        bundle, pix, im, tx = _ours(spec)
        assert torch.allclose(pix, n[0], atol=1e-6), spec
        np.testing.assert_allclose(im, n[1], atol=1e-5)
        assert bundle.info.preprocess["mean"] == [0.5, 0.5, 0.5] and bundle.info.preprocess["crop"] is False
    assert json.loads((out / "open_clip_config.json").read_text())["preprocess_cfg"]["resize_mode"] == "squash"


def test_openai_tag_builds_quick_gelu(micro_arch, monkeypatch):
    """open_clip's pretrained table says `openai` needs QuickGELU: the tag's flag is applied."""
    import open_clip

    from audit.loaders import openclip

    seen, real = {}, open_clip.create_model_and_transforms

    def fake(name, pretrained=None, force_quick_gelu=False):
        seen["quick"] = force_quick_gelu
        return real(name, force_quick_gelu=force_quick_gelu)  # no weights to download

    monkeypatch.setattr(open_clip, "create_model_and_transforms", fake)
    monkeypatch.setattr(open_clip, "get_pretrained_cfg", lambda n, t: {"quick_gelu": t == "openai"})
    got = openclip.load_name(f"{micro_arch}:openai")
    assert seen["quick"] is True and "QuickGELU" in repr(got.model)


def test_trust_checkpoint_is_honoured_for_pretrained_file(micro_model, micro_arch, tmp_path):
    """`--model ARCH --pretrained FILE.pt`: refused without --trust-checkpoint, loaded with it."""
    import argparse

    from audit.errors import UserError
    from audit.models import load

    path = tmp_path / "epoch_1.pt"  # open_clip_train style: args pickled beside the weights
    torch.save({"state_dict": micro_model.state_dict(), "args": argparse.Namespace(lr=1)}, path)
    with pytest.raises(UserError, match="refusing to unpickle"):
        load(micro_arch, pretrained=str(path), device="cpu")
    bundle = load(micro_arch, pretrained=str(path), device="cpu", trust_checkpoint=True)
    assert bundle.info.sha256 == load(str(_save(micro_model, tmp_path)), arch=micro_arch, device="cpu").info.sha256


def _save(model, tmp_path):
    torch.save(model.state_dict(), tmp_path / "plain.pt")
    return tmp_path / "plain.pt"


def _cfg_folder(tmp_path, text_extra, *, custom=False):
    """An open_clip folder whose config declares its own text tower and tokenizer settings."""
    import copy

    import open_clip

    from audit.models import save_local_dir
    from tests.conftest import MICRO_CFG

    cfg = copy.deepcopy(MICRO_CFG)
    cfg["text_cfg"].update(text_extra)
    torch.manual_seed(5)
    model = (open_clip.CustomTextCLIP(**cfg) if custom else open_clip.CLIP(**cfg)).eval()
    if custom:
        cfg["custom_text"] = True  # as SigLIP's model_configs say it
    return save_local_dir(model, cfg, tmp_path / "m", model_name="micro-custom")


@pytest.mark.parametrize("custom", [False, True])
def test_checkpoint_file_uses_its_configs_tokenizer(custom, tmp_path):
    """A checkpoint beside an open_clip config that declares tokenizer_kwargs / hf_tokenizer_name /
    custom_text (SigLIP's configs do) gets open_clip's own tokenizer and class, not SimpleTokenizer."""
    import open_clip

    from tests.test_loaders_hf import clip_tokenizer_files

    extra = {"tokenizer_kwargs": {"clean": "canonicalize"}}
    if custom:
        extra["hf_tokenizer_name"] = "acme/not-cached"  # local-dir: the folder's own files win
    out = _cfg_folder(tmp_path, extra, custom=custom)
    if custom:
        clip_tokenizer_files(tmp_path / "tok").save_pretrained(out)
    texts = ["A Photo, of a FACE!!", "an OLD man... smiling"]
    model, _, pre = open_clip.create_model_and_transforms(f"local-dir:{out}")
    native_tok = open_clip.get_tokenizer(f"local-dir:{out}")
    bundle, _, im, _ = _ours(str(out / "open_clip_model.safetensors"))
    assert torch.equal(bundle.tokenizer(texts), native_tok(texts))
    assert type(bundle.model) is type(model) and type(bundle.tokenizer) is type(native_tok)
    with torch.no_grad():
        n_tx = torch.nn.functional.normalize(model.eval().encode_text(native_tok(texts)), dim=-1).numpy()
    from audit.embed import Embedder

    tx = Embedder(bundle, cache_dir=None, progress=False)._encode(bundle.tokenizer(texts), image=False)
    np.testing.assert_allclose(tx, n_tx, atol=1e-5)
    np.testing.assert_allclose(im, _native(model, pre, native_tok)[1], atol=1e-5)


def test_open_clip_repo_in_populated_hf_cache(micro_dir, tmp_path, monkeypatch):
    """`hf-hub:ORG/NAME` and a bare `ORG/NAME` in open_clip layout resolve offline from the HF cache
    and give open_clip's own vectors for that repo."""
    import shutil

    import huggingface_hub.constants as hc
    import open_clip

    cache, rev = tmp_path / "hub", "cd" * 20
    shutil.copytree(micro_dir, cache / "models--acme--tiny-oc" / "snapshots" / rev)
    (cache / "models--acme--tiny-oc" / "refs").mkdir()
    (cache / "models--acme--tiny-oc" / "refs" / "main").write_text(rev)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(hc, "HF_HUB_OFFLINE", True)
    model, _, pre = open_clip.create_model_and_transforms("hf-hub:acme/tiny-oc", cache_dir=str(cache))
    n = _native(model.eval(), pre, open_clip.get_tokenizer("hf-hub:acme/tiny-oc", cache_dir=str(cache)))
    for spec in ("hf-hub:acme/tiny-oc", "acme/tiny-oc"):
        bundle, pix, im, tx = _ours(spec)
        assert bundle.info.loader == "open_clip-hf-hub", spec
        assert torch.allclose(pix, n[0], atol=1e-6)
        np.testing.assert_allclose(im, n[1], atol=1e-5)
        np.testing.assert_allclose(tx, n[2], atol=1e-5)


def test_local_dir_skips_the_random_init_the_weights_overwrite(micro_dir, monkeypatch):
    """The local-dir loader draws no random weights (they are overwritten at once), yet every
    parameter and buffer is open_clip's own load of the folder, and torch's initialisers are
    back afterwards. A folder without a weights file would keep open_clip's random init."""
    import open_clip
    import torch.nn.init as init

    from audit import models
    from audit.loaders import openclip as loader

    calls = []
    real = init.normal_

    def counting(tensor, *args, **kwargs):
        calls.append(1)
        return real(tensor, *args, **kwargs)

    monkeypatch.setattr(init, "normal_", counting)
    ours = models.load(str(micro_dir), device="cpu").model
    assert calls == [] and init.normal_ is counting
    ref, _, _ = open_clip.create_model_and_transforms(f"local-dir:{micro_dir}")
    assert calls    # open_clip alone draws them
    mine = dict([*ours.named_parameters(), *ours.named_buffers()])
    theirs = dict([*ref.named_parameters(), *ref.named_buffers()])
    assert mine.keys() == theirs.keys() and all(torch.equal(mine[k], theirs[k]) for k in mine)
    assert loader._has_weights(micro_dir) and not loader._has_weights(micro_dir.parent)
