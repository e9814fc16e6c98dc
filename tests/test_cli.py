"""The `audit` command end to end: exit codes, one-line errors, results that follow the schema."""
import json
import subprocess
import sys
import time
from dataclasses import dataclass

import jsonschema
import pytest

from audit import models, registry
from audit.cli import main
from audit.results import ProbeResult, row, schema


def _audit(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "audit", *args], capture_output=True, text=True, timeout=timeout)


def test_help_is_fast_and_lists_commands():
    t0 = time.perf_counter()
    out = _audit("--help")
    assert out.returncode == 0 and time.perf_counter() - t0 < 2.0
    for cmd in ("run", "train", "world", "report", "compare", "probes"):
        assert cmd in out.stdout


def test_version():
    out = _audit("--version")
    assert out.returncode == 0 and "0.1.0" in out.stdout


@pytest.mark.parametrize("args", [["--model", "hf-hub:nobody/nothing"],
                                  ["--model", "MICRO", "--fairface", "HuggingFaceM4/FairFace"]])
def test_offline_hub_exits_2_with_one_line(args, micro_dir, tmp_path):
    args = [str(micro_dir) if a == "MICRO" else a for a in args]
    out = _audit("-q", "run", *args, "--out", str(tmp_path / "o"), "--cache-dir", str(tmp_path / "c"))
    assert out.returncode == 2, out.stderr
    lines = [ln for ln in out.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in out.stderr


@dataclass(frozen=True)
class _Cfg:
    threshold: float = 0.5  # a documented default


class _Broken:
    """A probe with a bug."""
    name, requires, Config = "broken_probe", ("fairface",), _Cfg

    def run(self, ctx, cfg):
        raise RuntimeError("kaput")


class _Counting:
    """A minimal real probe: the share of faces per race, from the source table alone."""
    name, requires, Config = "race_share", ("fairface",), _Cfg

    def run(self, ctx, cfg):
        src = ctx.sources["fairface"]
        emb = ctx.images(src)
        shares = src.table["race"].value_counts(normalize=True)
        rows = [row("share", float(v), group_by="race", group=k, n=len(src)) for k, v in shares.items()]
        return ProbeResult(summary={"images": len(emb)}, rows=rows)


@pytest.fixture
def fake_probes(monkeypatch):
    monkeypatch.setattr(registry, "_PROBES", {})
    monkeypatch.setattr(registry, "_loaded", True)
    registry.register_probe(_Broken)
    registry.register_probe(_Counting)


def test_run_writes_valid_results_and_survives_a_broken_probe(fake_probes, micro_dir, fairface_release, tmp_path):
    out = tmp_path / "out"
    code = main(["-q", "run", "--model", str(micro_dir), "--fairface", str(fairface_release),
                 "--out", str(out), "--cache-dir", str(tmp_path / "c")])
    assert code == 3  # the audit is incomplete, yet everything computed is written
    results = json.loads((out / "results.json").read_text())
    jsonschema.validate(results, schema())
    assert results["probes"]["broken_probe"]["status"] == "error"
    assert "kaput" in results["probes"]["broken_probe"]["message"]
    share = {r["group"]: r["value"] for r in results["probes"]["race_share"]["rows"]}
    import pandas as pd

    expected = pd.read_csv(fairface_release / "fairface_label_val.csv")["race"].value_counts(normalize=True)
    assert share == pytest.approx(expected.to_dict())
    assert results["data"]["fairface"]["n"] == 12 and results["model"]["sha256"]
    assert (out / "report.html").stat().st_size > 1000

    (out / "report.html").unlink()
    assert main(["-q", "report", str(out / "results.json")]) == 0
    assert (out / "report.html").is_file()


def test_probe_needing_a_missing_source_is_skipped(fake_probes, micro_dir, tmp_path):
    from tests.conftest import make_images
    import pandas as pd

    names = make_images(tmp_path / "objs", 4)
    pd.DataFrame({"file_name": names, "label": ["a", "b", "a", "b"]}).to_csv(tmp_path / "objs" / "metadata.csv", index=False)
    code = main(["-q", "run", "--model", str(micro_dir), "--classify", str(tmp_path / "objs"),
                 "--out", str(tmp_path / "out"), "--cache-dir", str(tmp_path / "c")])
    assert code == 0
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert results["probes"]["race_share"]["status"] == "skipped"
    assert "classify:objs" in results["data"]


def test_bad_results_file_exits_2(tmp_path, capsys):
    (tmp_path / "results.json").write_text("{not json")
    assert main(["report", str(tmp_path / "results.json")]) == 2
    assert "results.json: not a results.json" in capsys.readouterr().err


def test_unknown_probe_exits_2(micro_dir, tmp_path, capsys):
    assert main(["-q", "run", "--model", str(micro_dir), "--probes", "nope", "--out", str(tmp_path)]) == 2
    assert "unknown probe 'nope'" in capsys.readouterr().err


def test_set_overrides_a_probe_setting(fake_probes, micro_dir, fairface_release, tmp_path):
    code = main(["-q", "run", "--model", str(micro_dir), "--fairface", str(fairface_release),
                 "--probes", "race_share", "--set", "race_share.threshold=0.25",
                 "--out", str(tmp_path / "out"), "--cache-dir", str(tmp_path / "c")])
    assert code == 0
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert results["probes"]["race_share"]["config"] == {"threshold": 0.25}


@pytest.mark.parametrize("setting, message", [
    ("race_share.nope=1", "no such setting; race_share has: threshold"),
    ("race_share.threshold=high", "expected a number"),
    ("race_share.threshold=nan", "expected a number"),
    ("other.threshold=1", "not a probe of this run"),
    ("threshold", "expected PROBE.FIELD=VALUE")])
def test_bad_set_is_one_line_exit_2_before_loading(fake_probes, setting, message, tmp_path, capsys):
    code = main(["run", "--model", "hf-hub:never/loaded", "--probes", "race_share", "--set", setting,
                 "--out", str(tmp_path)])
    assert code == 2 and message in capsys.readouterr().err


@pytest.mark.skipif(not (models.demo_dir() / "open_clip_config.json").is_file(), reason="no demo model")
def test_include_examples_puts_thumbnails_in_the_report_only(tmp_path):
    """Faces enter report.html only on request, and never results.json."""
    base = ["-q", "run", "--model", "demo", "--world", "tiny",
            "--probes", "fairface_label_bias", "--set", "fairface_label_bias.n_boot=50",
            "--cache-dir", str(tmp_path / "c")]
    assert main([*base, "--out", str(tmp_path / "plain")]) == 0
    assert main([*base, "--out", str(tmp_path / "shown"), "--include-examples"]) == 0
    results = json.loads((tmp_path / "shown" / "results.json").read_text())
    assert "examples" not in results["probes"]["fairface_label_bias"]
    assert "data:image/jpeg;base64" not in (tmp_path / "plain" / "report.html").read_text()
    shown = (tmp_path / "shown" / "report.html").read_text()
    # the demo model labels some Black faces and children non-human or crime: those are the examples
    assert shown.count("data:image/jpeg;base64") >= 1 and "labelled &#39;" in shown
