"""Done-when: the same weights as an open_clip local-dir and converted to transformers' CLIP give
the same fairface_label_bias rates within one image (the two libraries resize differently)."""
import json

import numpy as np
import torch

from tests.test_loaders_hf import TEXTS, clip_tokenizer_files, images


def _converted(micro_dir, tmp_path):
    import sys

    sys.path.insert(0, str(__import__("pathlib").Path(__file__).parent.parent / "bench"))
    from convert_open_clip_to_hf import convert

    tok = tmp_path / "tok"
    clip_tokenizer_files(tok).save_pretrained(tok)
    return convert(micro_dir, tmp_path / "hf", tok)


def test_converted_weights_embed_like_open_clip(micro_dir, tmp_path):
    from audit.embed import Embedder
    from audit.models import load

    hf = _converted(micro_dir, tmp_path)
    vecs = []
    for spec in (str(micro_dir), str(hf)):
        b = load(spec, device="cpu")
        e = Embedder(b, cache_dir=None, progress=False)
        pix = torch.stack([b.preprocess(i) for i in images(3)])
        vecs.append((e._encode(pix, image=True), e._encode(b.tokenizer(TEXTS), image=False), pix))
    (oi, ot, op), (hi, ht, hp) = vecs
    np.testing.assert_allclose(ot, ht, atol=1e-5)  # same ids, same text tower
    assert (op - hp).abs().max() < 3 / 255 / 0.26  # resize differs by up to 2/255 before normalising
    assert (oi * hi).sum(-1).min() > 0.99


def test_same_fairface_rates_across_libraries(micro_dir, fairface_release, tmp_path):
    from audit.cli import main

    hf = _converted(micro_dir, tmp_path)
    rates = []
    for i, spec in enumerate((str(micro_dir), str(hf))):
        out = tmp_path / f"o{i}"
        assert main(["-q", "run", "--model", spec, "--fairface", str(fairface_release), "--probes",
                     "fairface_label_bias", "--out", str(out), "--no-cache"]) == 0
        res = json.loads((out / "results.json").read_text())
        rates.append(res)
    a, b = (r["probes"]["fairface_label_bias"] for r in rates)
    assert a["status"] == b["status"] == "ok"
    n = rates[0]["data"]["fairface"]["n"]
    rows_a = {(r.get("metric"), r.get("group")): r.get("value") for r in a["rows"]}
    rows_b = {(r.get("metric"), r.get("group")): r.get("value") for r in b["rows"]}
    assert rows_a.keys() == rows_b.keys() and rows_a
    for k, v in rows_a.items():
        if isinstance(v, (int, float)) and isinstance(rows_b[k], (int, float)):
            assert abs(v - rows_b[k]) <= 1 / min(n, 12) + 1e-9, k  # within one image of a group
    assert rates[1]["model"]["library"] == "transformers" and rates[0]["model"]["library"] == "open_clip"
    import jsonschema

    schema = json.loads((__import__("pathlib").Path(__file__).parent.parent / "audit" / "results.schema.json").read_text())
    for i, r in enumerate(rates):
        jsonschema.validate(r, schema)
        assert r["model"]["library"] in (tmp_path / f"o{i}" / "report.html").read_text()
    assert rates[1]["model"]["class"] == "CLIPModel" and rates[1]["model"]["tokenizer"]["padding"] == "longest"
