"""Broken model files never traceback: exit 2 and one line naming the problem (issue 13/14).

Each case: a builder writing the bad file(s), the argv after `audit run`, and a substring the
first (and only) stderr line must hold."""
import json

import pytest


def _random_pt(d):
    (d / "w.pt").write_bytes(bytes(range(256)) * 7)
    return [str(d / "w.pt"), "--arch", "audit-tiny"]


def _html_pt(d):
    (d / "w.pt").write_text("<!DOCTYPE html><html><body>404 Not Found</body></html>")
    return [str(d / "w.pt"), "--arch", "audit-tiny"]


def _safetensors(d, meta):
    import torch
    from safetensors.torch import save_file

    save_file({"x": torch.zeros(2)}, str(d / "w.safetensors"), metadata=meta)
    return [str(d / "w.safetensors")]


def _non_tensor_state(d):
    import torch

    torch.save({"state_dict": {"visual.proj": [1, 2, 3]}}, d / "w.pt")
    return [str(d / "w.pt"), "--arch", "audit-tiny"]


def _local_dir(d, cfg_text):
    (d / "m").mkdir()
    (d / "m" / "open_clip_config.json").write_text(cfg_text)
    return [str(d / "m")]


def _sibling_config(d, cfg_text):
    (d / "open_clip_config.json").write_text(cfg_text)
    return _safetensors(d, {})


CASES = {
    "random bytes .pt": (_random_pt, "not a PyTorch checkpoint"),
    "html page .pt": (_html_pt, "web page"),
    "model_cfg not json": (lambda d: _safetensors(d, {"model_cfg": "{oops"}), "not valid JSON"),
    "model_cfg wrong types": (lambda d: _safetensors(d, {"model_cfg": '{"vision_cfg": 3, "text_cfg": []}'}),
                              "must be an object"),
    "model_cfg wrong field types": (lambda d: _safetensors(d, {"model_cfg": json.dumps(
        {"embed_dim": "big", "vision_cfg": {"width": "x"}, "text_cfg": {}})}), "does not build a model"),
    "non-tensor state value": (_non_tensor_state, "non-tensor"),
    "local-dir config wrong types": (lambda d: _local_dir(d, '{"model_cfg": {"vision_cfg": "tiny"}}'),
                                     "must be an object"),
    "local-dir config not json": (lambda d: _local_dir(d, "{not json"), "not a readable open_clip config"),
    "local-dir config keyless": (lambda d: _local_dir(d, '{"model_name": "x"}'), "needs a 'model_cfg'"),
    "sibling config broken": (lambda d: _sibling_config(d, "[1, 2"), "not a readable open_clip config"),
    "sibling config keyless": (lambda d: _sibling_config(d, "{}"), "needs a 'model_cfg'"),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_model_file_is_one_line_exit_2(name, tmp_path, capsys):
    from audit.cli import main

    build, expected = CASES[name]
    spec = build(tmp_path)
    code = main(["-q", "run", "--model", *spec, "--out", str(tmp_path / "o"), "--cache-dir", str(tmp_path / "c")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2, err
    assert len(err) == 1 and err[0].startswith("error: ") and expected in err[0], err
    assert "refusing to unpickle" not in err[0]  # none of these is a dangerous pickle


def test_uncached_siglip_tokenizer_offline_names_the_repo(tmp_path, monkeypatch, capsys):
    """open_clip SigLIP's tokenizer comes from the Hub: offline and uncached, one line, exit 2."""
    from audit.cli import main

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty"))
    code = main(["-q", "run", "--model", "ViT-B-16-SigLIP", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "timm/ViT-B-16-SigLIP" in err[0], err
