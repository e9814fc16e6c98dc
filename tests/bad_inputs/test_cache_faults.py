"""Cache and model-output faults through the CLI (issue 13, part 2): an unwritable cache is a
recorded degradation with exit 0; a model with non-finite outputs is one line and exit 2."""
import json

import pytest

from audit.cli import main
from tests.bad_inputs.make_corpus import make_fairface_source


@pytest.fixture(scope="module")
def faces(tmp_path_factory):
    return make_fairface_source(tmp_path_factory.mktemp("cf") / "faces", 24, seed=3)


def _run(model, faces, out, cache) -> int:
    return main(["-q", "run", "--model", str(model), "--fairface", str(faces), "--probes", "fairface_label_bias",
                 "--out", str(out), "--cache-dir", str(cache)])


def test_cache_below_a_file_is_a_recorded_degradation(micro_dir, faces, tmp_path):
    (tmp_path / "file").write_text("x")
    assert _run(micro_dir, faces, tmp_path / "out", tmp_path / "file" / "cache") == 0
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert results["probes"]["fairface_label_bias"]["status"] == "ok"
    assert "NotADirectoryError" in results["run"]["embedding"]["cache_not_written"]
    reference = tmp_path / "ref"
    assert _run(micro_dir, faces, reference, tmp_path / "cache-ok") == 0
    ok = json.loads((reference / "results.json").read_text())
    assert results["probes"]["fairface_label_bias"]["rows"] == ok["probes"]["fairface_label_bias"]["rows"]


def test_nan_weights_exit_2_with_one_line(micro_model, faces, tmp_path, capsys):
    import copy

    import torch

    from audit.models import save_local_dir
    from tests.conftest import MICRO_ARCH, MICRO_CFG

    broken = copy.deepcopy(micro_model)
    with torch.no_grad():
        for p in broken.parameters():
            p.fill_(float("nan"))
    model = save_local_dir(broken, MICRO_CFG, tmp_path / "nan", model_name=MICRO_ARCH)
    assert _run(model, faces, tmp_path / "out", tmp_path / "cache") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "non-finite image embeddings" in err[0] and "Traceback" not in err[0]
