"""Convert an open_clip ViT CLIP (local-dir layout) to transformers' CLIPModel save_pretrained layout.

    python bench/convert_open_clip_to_hf.py OPEN_CLIP_DIR OUT_DIR TOKENIZER_DIR

The weights are renamed and q/k/v split, nothing else: the same model in transformers' classes,
for the cross-library check in tests/test_loaders_convert.py. TOKENIZER_DIR holds a CLIPTokenizer
(vocab.json + merges.txt) with OpenAI's BPE vocabulary, which open_clip's SimpleTokenizer uses.
"""
import sys
from pathlib import Path


def _block(state, src, dst, out):
    q, k, v = state[f"{src}.attn.in_proj_weight"].chunk(3)
    qb, kb, vb = state[f"{src}.attn.in_proj_bias"].chunk(3)
    for name, w, b in (("q", q, qb), ("k", k, kb), ("v", v, vb)):
        out[f"{dst}.self_attn.{name}_proj.weight"], out[f"{dst}.self_attn.{name}_proj.bias"] = w, b
    pairs = {"attn.out_proj": "self_attn.out_proj", "ln_1": "layer_norm1", "ln_2": "layer_norm2",
             "mlp.c_fc": "mlp.fc1", "mlp.c_proj": "mlp.fc2"}
    for a, b in pairs.items():
        for p in ("weight", "bias"):
            out[f"{dst}.{b}.{p}"] = state[f"{src}.{a}.{p}"]


def convert_state(state: dict, v_layers: int, t_layers: int) -> dict:
    out = {"vision_model.embeddings.patch_embedding.weight": state["visual.conv1.weight"],
           "vision_model.embeddings.class_embedding": state["visual.class_embedding"],
           "vision_model.embeddings.position_embedding.weight": state["visual.positional_embedding"],
           "visual_projection.weight": state["visual.proj"].T.contiguous(),
           "text_model.embeddings.token_embedding.weight": state["token_embedding.weight"],
           "text_model.embeddings.position_embedding.weight": state["positional_embedding"],
           "text_projection.weight": state["text_projection"].T.contiguous(),
           "logit_scale": state["logit_scale"]}
    for src, dst in (("visual.ln_pre", "vision_model.pre_layrnorm"), ("visual.ln_post", "vision_model.post_layernorm"),
                     ("ln_final", "text_model.final_layer_norm")):
        for p in ("weight", "bias"):
            out[f"{dst}.{p}"] = state[f"{src}.{p}"]
    for i in range(v_layers):
        _block(state, f"visual.transformer.resblocks.{i}", f"vision_model.encoder.layers.{i}", out)
    for i in range(t_layers):
        _block(state, f"transformer.resblocks.{i}", f"text_model.encoder.layers.{i}", out)
    return out


def convert(src: Path, out: Path, tokenizer_dir: Path) -> Path:
    import json

    from safetensors.torch import load_file
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPTokenizer

    cfg = json.loads((src / "open_clip_config.json").read_text())
    mc, pre = cfg["model_cfg"], cfg.get("preprocess_cfg") or {}
    v, t = mc["vision_cfg"], mc["text_cfg"]
    hf_cfg = CLIPConfig(
        projection_dim=mc["embed_dim"],
        vision_config=dict(hidden_size=v["width"], intermediate_size=int(v["width"] * v.get("mlp_ratio", 4)),
                           num_hidden_layers=v["layers"], num_attention_heads=v["width"] // v.get("head_width", 64),
                           image_size=v["image_size"], patch_size=v["patch_size"],
                           hidden_act="quick_gelu" if mc.get("quick_gelu") else "gelu"),
        text_config=dict(vocab_size=t["vocab_size"], hidden_size=t["width"], intermediate_size=int(t["width"] * t.get("mlp_ratio", 4)),
                         num_hidden_layers=t["layers"], num_attention_heads=t["heads"],
                         max_position_embeddings=t["context_length"], eos_token_id=49407, bos_token_id=49406,
                         pad_token_id=49407, hidden_act="quick_gelu" if mc.get("quick_gelu") else "gelu"))
    model = CLIPModel(hf_cfg).eval()
    state = load_file(str(src / "open_clip_model.safetensors"))
    model.load_state_dict({k: val.float() for k, val in convert_state(state, v["layers"], t["layers"]).items()},
                          strict=False)  # position_ids buffers are rebuilt by transformers
    model.save_pretrained(out)
    size = pre.get("size", v["image_size"])
    size = size[-1] if isinstance(size, (list, tuple)) else size
    CLIPImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size},
                       image_mean=pre.get("mean"), image_std=pre.get("std")).save_pretrained(out)
    CLIPTokenizer.from_pretrained(tokenizer_dir, model_max_length=t["context_length"]).save_pretrained(out)
    return out


if __name__ == "__main__":
    convert(Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]))
