"""audit.api and the clip_audit.models entry point: any encoder, same vectors as its own."""
import subprocess
import sys
import textwrap

import numpy as np
import torch

from tests.test_loaders_hf import TEXTS, images


class InHouse:
    """Not an nn.Module, not open_clip's API: just the four things the audit asks for."""

    def __init__(self, clip, preprocess, tokenizer):
        self.clip, self.preprocess, self.tokenizer = clip, preprocess, tokenizer

    def encode_image(self, pixels):
        return self.clip.encode_image(pixels) * 3.0  # unnormalised: the audit normalises

    def encode_text(self, tokens):
        return self.clip.encode_text(tokens)


def _micro(micro_arch):
    import open_clip

    model, _, pre = open_clip.create_model_and_transforms(micro_arch)
    return model.eval(), pre, open_clip.get_tokenizer(micro_arch)


def test_api_object_and_callables_give_the_model_vectors(micro_arch):
    from audit import api
    from audit.embed import Embedder
    from audit.models import load

    model, pre, tok = _micro(micro_arch)
    imgs = torch.stack([pre(i) for i in images(2)])
    with torch.no_grad():
        want_im = torch.nn.functional.normalize(model.encode_image(imgs), dim=-1).numpy()
        want_tx = torch.nn.functional.normalize(model.encode_text(tok(TEXTS)), dim=-1).numpy()
    for spec in (api.register(InHouse(model, pre, tok), name="in-house"),
                 api.register((model.encode_image, model.encode_text), name="pair", preprocess=pre, tokenizer=tok)):
        bundle = load(spec, device="cpu")
        emb = Embedder(bundle, cache_dir=None, progress=False)
        np.testing.assert_allclose(emb._encode(imgs, image=True), want_im, atol=1e-5)
        np.testing.assert_allclose(emb._encode(bundle.tokenizer(TEXTS), image=False), want_tx, atol=1e-5)
    other, _, _ = _micro(micro_arch)  # another random init under the same name: another cache key
    first = load("in-house", device="cpu").info.fingerprint
    api.register(InHouse(other, pre, tok), name="in-house")
    assert load("in-house", device="cpu").info.fingerprint != first


def test_entry_point_plugin_is_listed_and_loads(tmp_path):
    pkg = tmp_path / "site"
    (pkg / "tinyplug").mkdir(parents=True)
    (pkg / "tinyplug" / "__init__.py").write_text(textwrap.dedent('''
        import torch

        class Enc:
            """tinyplug: a fixed random projection"""
            context_length = 4
            def __init__(self, seed):
                g = torch.Generator().manual_seed(int(seed or 0))
                self.w = torch.randn(3 * 8 * 8, 5, generator=g)
                self.emb = torch.randn(10, 5, generator=g)
            def preprocess(self, img):
                return torch.tensor(list(img.convert("RGB").resize((8, 8)).getdata()), dtype=torch.float32).T.reshape(3, 8, 8) / 255
            def tokenizer(self, texts):
                return torch.tensor([[len(w) % 10 for w in (t.split() + ["", "", "", ""])[:4]] for t in texts])
            def encode_image(self, x):
                return x.flatten(1) @ self.w
            def encode_text(self, ids):
                return self.emb[ids].sum(1)

        def load(rest):
            """tinyplug:SEED - a fixed random projection"""
            return Enc(rest)
    '''))
    dist = pkg / "tinyplug-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: tinyplug\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[clip_audit.models]\ntinyplug = tinyplug:load\n")
    code = ("import sys; from audit.models import load; from audit.cli import main; main(['models']);"
            "b = load('tinyplug:3', device='cpu'); print('LOADED', b.info.loader, b.info.source)")
    import os

    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(pkg), os.getcwd()]))
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "tinyplug" in out.stdout.splitlines()[0]  # plugins are tried first, listed first
    assert "LOADED tinyplug plugin:tinyplug:3" in out.stdout
