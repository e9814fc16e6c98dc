"""transformers models: CLIPModel, SiglipModel, Siglip2Model and any class with
get_image_features/get_text_features, from a save_pretrained folder (`DIR`, `hf:DIR`) or a repo
id in the local HF cache (`ORG/NAME`, `hf-hub:ORG/NAME` in transformers layout), offline.

The adapter gives the Embedder what it asks of every model: encode_image(pixels),
encode_text(token ids), preprocess(PIL)->tensor from the repo's own image processor, and
tokenizer(list[str])->ids with the model's own padding convention."""
import inspect
from pathlib import Path

from audit.errors import UserError
from audit.loaders import Loaded
from audit.loaders.common import first_line, held_warnings
from audit.registry import register_model_loader


def cached_repo_layout(repo: str) -> str | None:
    """'open_clip', 'transformers' or None for a repo id in the local HF cache (no network)."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    for fname, layout in (("open_clip_config.json", "open_clip"), ("config.json", "transformers")):
        try:
            hit = try_to_load_from_cache(repo, fname)
        except Exception:  # not a valid repo id
            return None
        if isinstance(hit, str):
            return layout
    return None


def _local_folder(spec: str) -> Path | None:
    path = Path(spec[3:] if spec.startswith("hf:") else spec)
    if path.is_dir() and (path / "config.json").is_file() and not (path / "open_clip_config.json").is_file():
        return path
    return None


def _matches(spec, pre):
    if _local_folder(spec):
        return True
    if spec.startswith("hf-hub:"):
        return cached_repo_layout(spec[7:]) == "transformers"
    return spec.count("/") == 1 and not Path(spec).exists() and cached_repo_layout(spec) == "transformers"


@register_model_loader("transformers", order=15, matches=_matches,
                       doc="DIR / hf:DIR (save_pretrained) or ORG/NAME, hf-hub:ORG/NAME in the HF cache")
def load_transformers(spec, **_):
    folder = _local_folder(spec) or _snapshot(spec[7:] if spec.startswith("hf-hub:") else spec)
    try:
        with held_warnings():
            from transformers import AutoImageProcessor, AutoModel, AutoTokenizer

            model = AutoModel.from_pretrained(str(folder), local_files_only=True)
            processor = AutoImageProcessor.from_pretrained(str(folder), local_files_only=True)
            tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    except Exception as e:
        raise UserError(f"{spec}: cannot load the transformers model ({first_line(e)})") from None
    if not (hasattr(model, "get_image_features") and hasattr(model, "get_text_features")):
        raise UserError(f"{spec}: {type(model).__name__} has no get_image_features/get_text_features")
    adapter = HFAdapter(model.float().eval())
    tok = HFTokenizer(tokenizer, model.config)
    adapter.uses_mask, adapter.eos_id = not tok.siglip, tokenizer.eos_token_id
    adapter.pad_id = tokenizer.pad_token_id
    pre = HFPreprocess(processor)
    return Loaded(model=adapter, preprocess=pre, tokenizer=tok, arch=model.config.model_type,
                  source=f"transformers:{folder}", library="transformers", cls=type(model).__name__,
                  preprocess_info=pre.info(), tokenizer_info=tok.info(), config=model.config.to_dict())


def _snapshot(repo: str) -> Path:
    from huggingface_hub import snapshot_download

    from audit import hub

    hub.prepare()
    try:
        return Path(snapshot_download(repo, local_files_only=True))
    except Exception as e:
        raise UserError(f"{repo}: not in the local Hugging Face cache ({first_line(e)})") from None


def _text_cfg(config):
    return getattr(config, "text_config", config)


class HFAdapter:
    """encode_image/encode_text over get_image_features/get_text_features."""

    def __init__(self, model):
        self.hf = model
        self.eos_id, self.pad_id, self.uses_mask = None, None, True
        self.naflex = "spatial_shapes" in inspect.signature(model.get_image_features).parameters

    def to(self, device):
        self.hf.to(device)
        return self

    def eval(self):
        self.hf.eval()
        return self

    def state_dict(self):
        return self.hf.state_dict()

    def __repr__(self):
        return repr(self.hf)

    def encode_image(self, pixels):
        if self.naflex:
            pixels, mask, shapes = unpack_naflex(pixels)
            return _features(self.hf.get_image_features(pixel_values=pixels, pixel_attention_mask=mask,
                                                        spatial_shapes=shapes))
        return _features(self.hf.get_image_features(pixel_values=pixels))

    def encode_text(self, ids):
        if self.uses_mask:
            return _features(self.hf.get_text_features(input_ids=ids, attention_mask=_mask(ids, self.eos_id, self.pad_id)))
        return _features(self.hf.get_text_features(input_ids=ids))


def pack_naflex(pixels, mask, shapes):
    """One tensor per image, so the Embedder can stack it like any other: SigLIP 2's processor
    gives (patches, dim) pixels, a (patches,) mask and a (2,) grid; they travel as 3 extra columns."""
    import torch

    extra = torch.stack([mask.float(), *(torch.full_like(mask, int(v)).float() for v in shapes)], dim=1)
    return torch.cat([pixels.float(), extra], dim=1)


def unpack_naflex(packed):
    return packed[..., :-3], packed[..., -3].long(), packed[:, 0, -2:].long()


def _features(out):
    # transformers 5 may return a model output object rather than a tensor
    return out if hasattr(out, "dim") else out.pooler_output


def _mask(ids, eos_id, pad_id=None):
    """The attention mask the tokenizer gave, rebuilt from the ids: ones through the first EOS.
    Not `ids != pad`: LAION's repos pad with '!' (id 0), which is also text; OpenAI's pad with EOS.
    A tokenizer with no EOS (BERT-style, [SEP] then [PAD]) has a pad id that is never text."""
    import torch

    if eos_id is None:
        return (ids != pad_id).long()
    is_eos = ids == eos_id
    before = torch.cumsum(is_eos.int(), dim=1) - is_eos.int()  # EOS seen strictly before here
    return (before == 0).long()


class HFTokenizer:
    """list[str] -> LongTensor with the model's own convention: SigLIP pads to max_length
    (trained that way, no attention mask); CLIP pads to the longest text with a mask."""

    def __init__(self, tokenizer, config):
        self.tok = tokenizer
        self.max_length = getattr(_text_cfg(config), "max_position_embeddings", 77)
        self.siglip = "siglip" in config.model_type
        self.padding = "max_length" if self.siglip else "longest"
        self.context_length = self.max_length

    def __call__(self, texts):
        out = self.tok(list(texts), padding=self.padding, truncation=True, max_length=self.max_length,
                       return_tensors="pt")
        return out["input_ids"]

    def info(self):
        return {"name": getattr(self.tok, "name_or_path", None) or type(self.tok).__name__,
                "class": type(self.tok).__name__, "context_length": self.max_length, "padding": self.padding}


class HFPreprocess:
    """PIL -> pixel tensor through the repo's own image processor."""

    def __init__(self, processor):
        self.processor = processor

    def __call__(self, image):
        out = self.processor(images=image.convert("RGB"), return_tensors="pt")
        if "spatial_shapes" in out:  # SigLIP 2 (NaFlex): patches + which are real + the patch grid
            return pack_naflex(out["pixel_values"][0], out["pixel_attention_mask"][0], out["spatial_shapes"][0])
        return out["pixel_values"][0]

    def __repr__(self):
        return f"HFPreprocess({self.processor.to_json_string()})"

    def info(self):
        p = self.processor
        crop = getattr(p, "crop_size", None) if getattr(p, "do_center_crop", False) else None
        return {"size": _plain(getattr(p, "size", None)), "crop": _plain(crop),
                "mean": list(p.image_mean or ()), "std": list(p.image_std or ()),
                "interpolation": str(getattr(p, "resample", None)), "processor": type(p).__name__}


def _plain(value):
    """transformers 5 keeps sizes in a SizeDict: results.json wants plain JSON."""
    if value is None or isinstance(value, (int, float, str)):
        return value
    return {k: v for k, v in dict(value).items() if v is not None} if hasattr(value, "keys") else list(value)
