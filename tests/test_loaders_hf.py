"""transformers models: our vectors and pixels equal the native library's own, to 1e-5."""
import numpy as np
import pytest
import torch
from PIL import Image

TEXTS = ["a photo of a face", "a person", "an old man smiling at the camera"]


def clip_tokenizer_files(folder):
    """A CLIPTokenizer built from open_clip's BPE vocab (no download): the same ids as OpenAI's."""
    import json

    from open_clip.tokenizer import SimpleTokenizer
    from transformers import CLIPTokenizer

    st = SimpleTokenizer()
    folder.mkdir(parents=True, exist_ok=True)
    names = {"<start_of_text>": "<|startoftext|>", "<end_of_text>": "<|endoftext|>"}  # HF's spelling
    (folder / "vocab.json").write_text(json.dumps({names.get(k, k): v for k, v in st.encoder.items()}))
    merges = sorted(st.bpe_ranks, key=st.bpe_ranks.get)
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n")
    return CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"))


def tiny_towers(**vision) -> dict:
    """Text and vision config of a 1-layer, 32-wide model (any transformers CLIP-like family)."""
    return {"text_config": dict(vocab_size=49408, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                num_attention_heads=2, max_position_embeddings=16),
            "vision_config": dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                  num_attention_heads=2, patch_size=8, **vision)}


def images(n=4, size=40):
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 255, (size, size + 7, 3), dtype=np.uint8)) for _ in range(n)]


@pytest.fixture(scope="module")
def hf_clip_dir(tmp_path_factory):
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    out = tmp_path_factory.mktemp("hfclip") / "model"
    torch.manual_seed(0)
    cfg = CLIPConfig(**tiny_towers(image_size=32), projection_dim=32)
    CLIPModel(cfg).eval().save_pretrained(out)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(out)
    clip_tokenizer_files(out / "tok").save_pretrained(out)
    return out


def native(folder, imgs, texts):
    from transformers import AutoImageProcessor, AutoModel, AutoTokenizer

    model = AutoModel.from_pretrained(folder).eval()
    proc, tok = AutoImageProcessor.from_pretrained(folder), AutoTokenizer.from_pretrained(folder)
    pixels = proc(images=imgs, return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        im = model.get_image_features(pixel_values=pixels)
        tx = model.get_text_features(**tok(texts, padding=True, return_tensors="pt"))
    im = im if hasattr(im, "dim") else im.pooler_output
    tx = tx if hasattr(tx, "dim") else tx.pooler_output
    return pixels, torch.nn.functional.normalize(im, dim=-1), torch.nn.functional.normalize(tx, dim=-1)


def ours(spec, imgs, texts, tmp_path):
    from audit.embed import Embedder
    from audit.models import load

    bundle = load(spec, device="cpu")
    pixels = torch.stack([bundle.preprocess(i) for i in imgs])
    emb = Embedder(bundle, cache_dir=None, progress=False)
    im = emb._encode(pixels, image=True)
    tx = emb._encode(bundle.tokenizer(texts), image=False)
    return bundle, pixels, im, tx


def test_clip_folder_matches_transformers(hf_clip_dir, tmp_path):
    imgs = images()
    n_pix, n_im, n_tx = native(hf_clip_dir, imgs, TEXTS)
    bundle, pix, im, tx = ours(str(hf_clip_dir), imgs, TEXTS, tmp_path)
    assert bundle.info.library == "transformers" and bundle.info.cls == "CLIPModel"
    assert torch.allclose(pix, n_pix, atol=1e-6)
    np.testing.assert_allclose(im, n_im.numpy(), atol=1e-5)
    np.testing.assert_allclose(tx, n_tx.numpy(), atol=1e-5)
    assert bundle.info.tokenizer["padding"] == "longest"


def test_repo_id_from_populated_hf_cache(hf_clip_dir, tmp_path, monkeypatch):
    """`ORG/NAME` and `hf-hub:ORG/NAME` resolve offline from models--ORG--NAME/snapshots/<hash>/."""
    import shutil

    cache = tmp_path / "hub"
    snap = cache / "models--acme--tiny-clip" / "snapshots" / ("ab" * 20)
    shutil.copytree(hf_clip_dir, snap)
    (cache / "models--acme--tiny-clip" / "refs").mkdir()
    (cache / "models--acme--tiny-clip" / "refs" / "main").write_text("ab" * 20)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    import huggingface_hub.constants as hc

    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(cache))
    imgs = images(2)
    _, n_im, n_tx = native(hf_clip_dir, imgs, TEXTS)
    for spec in ("acme/tiny-clip", "hf-hub:acme/tiny-clip"):
        bundle, _, im, tx = ours(spec, imgs, TEXTS, tmp_path)
        assert bundle.info.loader == "transformers"
        np.testing.assert_allclose(im, n_im.numpy(), atol=1e-5)
        np.testing.assert_allclose(tx, n_tx.numpy(), atol=1e-5)


def test_siglip_folder_pads_to_max_length(hf_clip_dir, tmp_path):
    from transformers import AutoTokenizer, SiglipConfig, SiglipImageProcessor, SiglipModel

    out = tmp_path / "siglip"
    torch.manual_seed(1)
    cfg = SiglipConfig(**tiny_towers(image_size=32))
    model = SiglipModel(cfg).eval()
    model.save_pretrained(out)
    SiglipImageProcessor(size={"height": 32, "width": 32}).save_pretrained(out)
    AutoTokenizer.from_pretrained(hf_clip_dir).save_pretrained(out)
    imgs = images(3)
    tok = AutoTokenizer.from_pretrained(out)
    proc = SiglipImageProcessor.from_pretrained(out)
    n_pix = proc(images=imgs, return_tensors="pt")["pixel_values"]
    with torch.no_grad():  # SigLIP's native convention: ids padded to max_length, no mask
        ids = tok(TEXTS, padding="max_length", max_length=16, return_tensors="pt")["input_ids"]
        n_tx = torch.nn.functional.normalize(_t(model.get_text_features(input_ids=ids)), dim=-1)
        n_im = torch.nn.functional.normalize(_t(model.get_image_features(pixel_values=n_pix)), dim=-1)
    bundle, pix, im, tx = ours(f"hf:{out}", imgs, TEXTS, tmp_path)
    assert bundle.info.cls == "SiglipModel" and bundle.info.tokenizer["padding"] == "max_length"
    assert torch.allclose(pix, n_pix, atol=1e-6)
    np.testing.assert_allclose(im, n_im.numpy(), atol=1e-5)
    np.testing.assert_allclose(tx, n_tx.numpy(), atol=1e-5)


def _t(out):
    return out if hasattr(out, "dim") else out.pooler_output


def test_clip_tokenizer_padding_with_a_real_token(hf_clip_dir, tmp_path):
    """LAION's transformers CLIP repos pad with '!' (id 0), not EOS: a '!' inside a text is text, and
    the mask we pass must be the tokenizer's own (ones through EOS), whatever the pad id."""
    import shutil

    from transformers import AutoTokenizer

    out = tmp_path / "bang"
    shutil.copytree(hf_clip_dir, out)
    tok = AutoTokenizer.from_pretrained(out)
    tok.pad_token = "!"
    tok.save_pretrained(out)
    texts = ["wow! a face!", "a person", "an old man smiling at the camera!"]
    _, n_im, n_tx = native(out, images(2), texts)
    assert AutoTokenizer.from_pretrained(out).pad_token_id == 0
    _, _, _, tx = ours(str(out), images(2), texts, tmp_path)
    np.testing.assert_allclose(tx, n_tx.numpy(), atol=1e-5)


def test_siglip2_naflex_folder_matches_transformers(hf_clip_dir, tmp_path):
    """SigLIP 2 takes patches + a patch mask + the patch grid: all three reach get_image_features."""
    transformers = pytest.importorskip("transformers")
    if not hasattr(transformers, "Siglip2Model"):
        pytest.skip("this transformers has no Siglip2Model")
    from transformers import AutoImageProcessor, AutoTokenizer, Siglip2Config, Siglip2ImageProcessor, Siglip2Model

    from audit.loaders.hf import unpack_naflex

    out = tmp_path / "siglip2"
    torch.manual_seed(2)
    cfg = Siglip2Config(**tiny_towers(num_patches=16))
    model = Siglip2Model(cfg).eval()
    model.save_pretrained(out)
    Siglip2ImageProcessor(patch_size=8, max_num_patches=16).save_pretrained(out)
    AutoTokenizer.from_pretrained(hf_clip_dir).save_pretrained(out)
    imgs = images(3)
    proc, tok = AutoImageProcessor.from_pretrained(out), AutoTokenizer.from_pretrained(out)
    n = proc(images=imgs, return_tensors="pt")
    with torch.no_grad():
        n_im = _t(model.get_image_features(pixel_values=n["pixel_values"], pixel_attention_mask=n["pixel_attention_mask"],
                                          spatial_shapes=n["spatial_shapes"]))
        # Siglip2Processor's defaults; the CLIP vocab comes back as a Siglip2Tokenizer (AutoTokenizer
        # goes by the model type): odd ids, but the same odd ids natively and here
        ids = tok(TEXTS, padding="max_length", truncation=True, max_length=16, return_tensors="pt")["input_ids"]
        n_tx = _t(model.get_text_features(input_ids=ids))
    bundle, pix, im, tx = ours(str(out), imgs, TEXTS, tmp_path)
    pv, mask, shapes = unpack_naflex(pix)
    assert bundle.info.cls == "Siglip2Model" and bundle.info.tokenizer["padding"] == "max_length"
    assert torch.allclose(pv, n["pixel_values"], atol=1e-6) and torch.equal(mask, n["pixel_attention_mask"].long())
    assert torch.equal(shapes, n["spatial_shapes"].long())
    np.testing.assert_allclose(im, torch.nn.functional.normalize(n_im, dim=-1).numpy(), atol=1e-5)
    np.testing.assert_allclose(tx, torch.nn.functional.normalize(n_tx, dim=-1).numpy(), atol=1e-5)


def test_mask_is_the_tokenizers_own(hf_clip_dir, tmp_path):
    """The rebuilt mask equals the native tokenizer's attention_mask: CLIP (EOS-padded), CLIP padded
    with '!', and a BERT-style tokenizer with no EOS at all."""
    from transformers import AutoTokenizer, BertTokenizer

    from audit.loaders.hf import _mask

    (tmp_path / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "a", "face", "!", "wow"]))
    bang = AutoTokenizer.from_pretrained(hf_clip_dir)
    bang.pad_token = "!"
    texts = ["wow! a face!", "a", "a face a face!"]
    for tok in (AutoTokenizer.from_pretrained(hf_clip_dir), bang, BertTokenizer(str(tmp_path / "vocab.txt"))):
        got = tok(texts, padding="longest", return_tensors="pt")
        mask = _mask(got["input_ids"], tok.eos_token_id, tok.pad_token_id)
        assert torch.equal(mask, got["attention_mask"].long()), type(tok).__name__


class _Payload:
    """Unpickling this runs code: what a weights_only load must refuse."""

    def __reduce__(self):
        import pathlib

        return (pathlib.Path.touch, (pathlib.Path(_Payload.marker),))


def test_bin_weights_load_weights_only(hf_clip_dir, tmp_path):
    """A pytorch_model.bin of plain tensors loads as the safetensors folder does; one holding a
    pickled object is refused in one line, and its code never runs."""
    import shutil

    from audit.errors import UserError
    from audit.models import load
    from transformers import CLIPModel

    out = tmp_path / "bin"
    shutil.copytree(hf_clip_dir, out)
    state = CLIPModel.from_pretrained(hf_clip_dir).state_dict()
    (out / "model.safetensors").unlink()
    torch.save(state, out / "pytorch_model.bin")
    imgs = images()
    _, _, im_ref, tx_ref = ours(str(hf_clip_dir), imgs, TEXTS, tmp_path)
    _, _, im, tx = ours(str(out), imgs, TEXTS, tmp_path)
    np.testing.assert_allclose(im, im_ref, atol=1e-6)
    np.testing.assert_allclose(tx, tx_ref, atol=1e-6)
    _Payload.marker = str(tmp_path / "ran")
    torch.save({**state, "extra": _Payload()}, out / "pytorch_model.bin")
    with pytest.raises(UserError, match="cannot load the transformers model"):
        load(str(out), device="cpu")
    assert not (tmp_path / "ran").exists()
