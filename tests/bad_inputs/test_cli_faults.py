"""Regression corpus of issue 13's faults: each ends in its exit code and one first line, no traceback.

Every case is data: a setup (which files to make), the argv, the expected exit code and the
expected start of stderr's first line. One tiny FairFace-layout world and one real run of
`fairface_label_bias` on the micro model are shared by the module, so the whole file stays fast.
"""
import errno
import json
import shutil

import pandas as pd
import pytest

from audit.cli import main
from tests.conftest import fairface_rows, make_images

PROBE = ["--probes", "fairface_label_bias", "--set", "fairface_label_bias.n_boot=20"]


@pytest.fixture(scope="module")
def world(tmp_path_factory, micro_dir):
    """A 24-face FairFace release folder, a save_to_disk copy, and one finished run in run/."""
    root = tmp_path_factory.mktemp("faults")
    ff = root / "ff"
    names = make_images(ff / "val", 24)
    df = fairface_rows(24)
    df.insert(0, "file", [f"val/{n}" for n in names])
    df.to_csv(ff / "fairface_label_val.csv", index=False)
    _save_to_disk(ff, root / "hf")
    code = main(["-q", "run", "--model", str(micro_dir), "--fairface", str(ff), *PROBE,
                 "--out", str(root / "run"), "--cache-dir", str(root / "cache")])
    assert code == 0
    return root


def _save_to_disk(ff, out):
    import datasets

    df = pd.read_csv(ff / "fairface_label_val.csv")
    ds = datasets.Dataset.from_dict({"image": [str(ff / f) for f in df.file], "race": df.race.tolist(),
                                     "gender": df.gender.tolist(), "age": df.age.tolist()},
                                    features=datasets.Features({"image": datasets.Image(),
                                                                **{c: datasets.Value("string") for c in ("race", "gender", "age")}}))
    ds.save_to_disk(str(out))


# -- setups: each makes the case's files under `tmp` from the shared world and returns nothing --
def _file_as_out(world, tmp):
    (tmp / "o").write_text("not a folder")


def _garbled_state(world, tmp):
    shutil.copytree(world / "hf", tmp / "hf")
    (tmp / "hf" / "state.json").write_text('{"_data_files": 5}')


def _dotdot_probe_name(world, tmp):
    data = json.loads((world / "run" / "results.json").read_text())
    data["probes"] = {"../report": data["probes"]["fairface_label_bias"]}
    (tmp / "results.json").write_text(json.dumps(data))


def _copy_run(world, tmp):
    shutil.copytree(world / "run", tmp / "run")
    (tmp / "cmp").mkdir()


def _nothing(world, tmp):
    pass


def _not_results(world, tmp):
    (tmp / "notes.json").write_text("hello")
    (tmp / "other.json").write_text('{"a": 1}')


# (name, setup, argv after `audit`, exit code, start of stderr's first line)
# MODEL, FF, HF, WORLD, TMP are replaced by the micro model, the FairFace folder, the
# save_to_disk folder, the shared world and the case's own folder.
RUN = ["-q", "run", "--model", "MODEL", "--cache-dir", "TMP/cache"]
CASES = [
    ("negative seed", _nothing, [*RUN, "--fairface", "FF", *PROBE, "--seed", "-1", "--out", "TMP/o"],
     2, "error: Invalid value for '--seed': -1 is not in the range x>=0"),
    ("n_boot not whole", _nothing, [*RUN, "--fairface", "FF", "--probes", "fairface_label_bias",
                                    "--set", "fairface_label_bias.n_boot=2.5", "--out", "TMP/o"],
     2, "error: --set fairface_label_bias.n_boot=2.5: expected a whole number"),
    ("n_boot negative", _nothing, [*RUN, "--fairface", "FF", "--probes", "fairface_label_bias",
                                   "--set", "fairface_label_bias.n_boot=-5", "--out", "TMP/o"],
     2, "error: --set fairface_label_bias.n_boot=-5: out of range (expected >= 1)"),
    ("alpha above 1", _nothing, [*RUN, "--fairface", "FF", *PROBE, "--set", "fairface_label_bias.alpha=2",
                                 "--out", "TMP/o"],
     2, "error: --set fairface_label_bias.alpha=2: out of range (expected > 0 and < 1)"),
    ("probability above 1", _nothing, [*RUN, "--fairface", "FF", "--probes", "celebrity_identification",
                                       "--set", "celebrity_identification.high_accuracy=1.5", "--out", "TMP/o"],
     2, "error: --set celebrity_identification.high_accuracy=1.5: out of range (expected >= 0 and <= 1)"),
    ("size zero", _nothing, [*RUN, "--fairface", "FF", *PROBE, "--set", "fairface_label_bias.min_group_n=0",
                             "--out", "TMP/o"],
     2, "error: --set fairface_label_bias.min_group_n=0: out of range (expected >= 1)"),
    ("seed not whole", _nothing, [*RUN, "--fairface", "FF", *PROBE, "--seed", "2.5", "--out", "TMP/o"],
     2, "error: Invalid value for '--seed': '2.5' is not a valid integer"),
    ("out is a file", _file_as_out, [*RUN, "--fairface", "FF", *PROBE, "--out", "TMP/o"],
     2, "error: TMP/o: is a file; --out needs a folder"),
    ("out below a file", _file_as_out, [*RUN, "--fairface", "FF", *PROBE, "--out", "TMP/o/sub"],
     2, "error: TMP/o/sub: is below the file TMP/o"),
    ("misspelled split", _nothing, [*RUN, "--fairface", "HF@validaton", *PROBE, "--out", "TMP/o"],
     2, "error: HF@validaton: no split 'validaton': the folder holds a single dataset"),
    ("garbled state.json", _garbled_state, [*RUN, "--fairface", "TMP/hf", *PROBE, "--out", "TMP/o"],
     2, "error: TMP/hf: not a readable datasets save_to_disk folder (TypeError"),
    ("report of a run folder", _copy_run, ["report", "TMP/run"], 0, "wrote TMP/run/report.html"),
    ("compare into a folder", _copy_run, ["compare", "TMP/run/results.json", "TMP/run/results.json",
                                         "-o", "TMP/cmp"], 0, ""),
    ("probe name ../report", _dotdot_probe_name, ["report", "TMP/results.json"],
     2, "error: TMP/results.json: probe name '../report' is not a valid name"),
    ("report --include-examples removed", _copy_run, ["report", "TMP/run", "--include-examples"],
     2, "error: No such option '--include-examples'"),
    # audit table (issue 16, point 6): like report, a run folder stands for its results.json
    ("table of two run folders", _copy_run, ["table", "TMP/run", "WORLD/run", "-o", "TMP/cmp"],
     0, "wrote TMP/cmp/table.html (2 run(s), "),
    ("table as csv", _copy_run, ["table", "TMP/run/results.json", "-o", "TMP/t.csv"],
     0, "wrote TMP/t.csv (1 run(s), "),
    ("table of a missing file", _copy_run, ["table", "TMP/run", "TMP/nope.json", "-o", "TMP/t.csv"],
     2, "error: TMP/nope.json: no such file"),
    ("table of a folder without results", _nothing, ["table", "TMP", "-o", "TMP/t.csv"],
     2, "error: TMP/results.json: no such file"),
    ("table of a text file", _not_results, ["table", "TMP/notes.json", "-o", "TMP/t.csv"],
     2, "error: TMP/notes.json: not a results.json"),
    ("table of other json", _not_results, ["table", "TMP/other.json", "-o", "TMP/t.csv"],
     2, "error: TMP/other.json: does not follow the results schema"),
    ("table probe name ../report", _dotdot_probe_name, ["table", "TMP/results.json", "-o", "TMP/t.html"],
     2, "error: TMP/results.json: probe name '../report' is not a valid name"),
    ("table -o unknown extension", _nothing, ["table", "TMP/never-read.json", "-o", "TMP/t.xlsx"],
     2, "error: TMP/t.xlsx: unknown table format '.xlsx'; use .html or .csv"),
    ("table -o without extension", _nothing, ["table", "TMP/never-read.json", "-o", "TMP/t"],
     2, "error: TMP/t: unknown table format '(no extension)'"),
    ("table -o below a file", _file_as_out, ["table", "WORLD/run", "-o", "TMP/o/t.csv"],
     2, "error: TMP/o/t.csv: is below the file TMP/o"),
    ("table of nothing", _nothing, ["table", "-o", "TMP/t.csv"],
     2, "error: Missing argument 'RESULTS...'"),
]


@pytest.mark.parametrize("name, setup, argv, code, first", CASES, ids=[c[0] for c in CASES])
def test_fault(name, setup, argv, code, first, world, micro_dir, tmp_path, capsys):
    subs = {"MODEL": str(micro_dir), "FF": str(world / "ff"), "HF": str(world / "hf"),
            "WORLD": str(world), "TMP": str(tmp_path)}

    def fill(text):
        for k, v in subs.items():
            text = text.replace(k, v)
        return text
    setup(world, tmp_path)
    got = main([fill(a) for a in argv])
    err = capsys.readouterr().err
    assert got == code, err
    assert "Traceback" not in err
    lines = err.splitlines()
    assert (lines[0] if lines else "").startswith(fill(first)), err
    if code == 2:
        assert len(lines) == 1, err  # nothing printed before the one line
    if name == "compare into a folder":
        assert (tmp_path / "cmp" / "compare.html").is_file()
    if name.startswith("table") and code == 2:
        assert not [p for p in tmp_path.iterdir() if p.name.startswith("t.")]  # nothing written


def test_out_checked_before_the_model_loads(world, tmp_path, capsys):
    """A bad --out fails before loading: the model spec here would fail (offline) if read."""
    (tmp_path / "o").write_text("x")
    assert main(["-q", "run", "--model", "hf-hub:never/loaded", "--out", str(tmp_path / "o")]) == 2
    assert "is a file" in capsys.readouterr().err


def test_full_disk_leaves_the_previous_pair(world, micro_dir, tmp_path, capsys, monkeypatch):
    """ENOSPC while writing the report: one line, exit 2, and the old results.json and
    report.html stay together (never a new results.json beside the old report)."""
    from audit import io

    out = tmp_path / "run"
    shutil.copytree(world / "run", out)
    before = {p: (out / p).read_bytes() for p in ("results.json", "report.html", "outcomes.parquet")}
    real = io.atomic_write_bytes

    def full(path, data):
        if "report.html" in str(path):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(path, data)
    monkeypatch.setattr(io, "atomic_write_bytes", full)
    code = main(["-q", "run", "--model", str(micro_dir), "--fairface", str(world / "ff"), *PROBE,
                 "--seed", "1", "--out", str(out), "--cache-dir", str(world / "cache")])
    err = capsys.readouterr().err.splitlines()
    assert code == 2 and len(err) == 1
    files = "results.json, report.html and outcomes.parquet"  # the per-image outcomes go with them
    assert err[0] == (f"error: {out}: could not write {files} "
                      f"(No space left on device); {files} left as they were")
    assert {p: (out / p).read_bytes() for p in before} == before
    assert sorted(p.name for p in out.iterdir()) == ["outcomes.parquet", "report.html", "results.json"]  # no temp left


def test_render_failure_leaves_the_previous_pair(world, micro_dir, tmp_path, monkeypatch):
    """A bug while rendering (not a disk error) propagates, but the new results.json it would
    have stood beside is removed: the old pair stays, and no temp file is left."""
    import reports.render

    out = tmp_path / "run"
    shutil.copytree(world / "run", out)
    before = {p: (out / p).read_bytes() for p in ("results.json", "report.html", "outcomes.parquet")}

    def broken(*a, **k):
        raise RuntimeError("template bug")
    monkeypatch.setattr(reports.render, "render_report", broken)
    with pytest.raises(RuntimeError, match="template bug"):
        main(["-q", "run", "--model", str(micro_dir), "--fairface", str(world / "ff"), *PROBE,
              "--seed", "1", "--out", str(out), "--cache-dir", str(world / "cache")])
    assert {p: (out / p).read_bytes() for p in before} == before
    assert sorted(p.name for p in out.iterdir()) == ["outcomes.parquet", "report.html", "results.json"]


def test_probe_error_exits_3_and_writes_both(world, micro_dir, tmp_path, capsys, monkeypatch):
    from probes.fairface_label_bias import FairFaceLabelBias

    def broken(self, ctx, cfg):
        raise RuntimeError("kaput")
    monkeypatch.setattr(FairFaceLabelBias, "run", broken)
    code = main(["-q", "run", "--model", str(micro_dir), "--fairface", str(world / "ff"), *PROBE,
                 "--out", str(tmp_path / "o"), "--cache-dir", str(world / "cache")])
    err = capsys.readouterr().err.splitlines()
    assert code == 3 and err[-1].startswith("incomplete: 1 probe(s) failed: fairface_label_bias")
    results = json.loads((tmp_path / "o" / "results.json").read_text())
    assert results["probes"]["fairface_label_bias"]["status"] == "error"
    assert (tmp_path / "o" / "report.html").is_file()


# -- data: cells and layouts that used to end in a traceback or "no image column" ------------------
def _png(color):
    import io as _io

    from PIL import Image

    buf = _io.BytesIO()
    Image.new("RGB", (8, 8), color).save(buf, "PNG")
    return buf.getvalue()


@pytest.mark.parametrize("cells, kept, skipped", [
    ("raw bytes", 3, 0), ("bytes-path dicts", 3, 0), ("a null cell", 2, 1), ("an empty dict", 2, 1)])
def test_pandas_parquet_images_are_read(tmp_path, cells, kept, skipped):
    from audit.data import load_source

    images = [_png((i * 40, 9, 9)) for i in range(3)]
    column = {"raw bytes": images,
              "bytes-path dicts": [{"bytes": b, "path": None} for b in images],
              "a null cell": [images[0], None, images[2]],
              "an empty dict": [{"bytes": images[0], "path": None}, {"bytes": None, "path": None},
                                {"bytes": images[2], "path": None}]}[cells]
    pd.DataFrame({"image": column, "label": ["a", "b", "c"]}).to_parquet(tmp_path / "d.parquet")
    src = load_source(str(tmp_path / "d.parquet"), "classify")
    assert len(src) == kept and len(src.skipped) == skipped
    assert all("empty image cell" in s["reason"] for s in src.skipped)
    assert src.image_bytes(0) == images[0]


def test_set_of_a_tuple_field_is_a_list_of_one():
    from audit.settings import probe_configs

    cfg = probe_configs(["fairface_label_bias"], ["fairface_label_bias.label_sets=fairface_default"])
    assert cfg["fairface_label_bias"].label_sets == ("fairface_default",)


@pytest.mark.parametrize("label, cell", [("=HYPERLINK(1)", "'=HYPERLINK(1)"), ("+1", "'+1"), ("-x", "'-x"),
                                         ("@SUM(A1)", "'@SUM(A1)"), ("0-2", "0-2"), (-0.5, "-0.5")])
def test_csv_download_escapes_formulas(label, cell):
    from urllib.parse import unquote

    from reports.charts import csv_uri

    text = unquote(csv_uri([{"group": label, "value": 1}]).split(",", 1)[1])
    assert text.splitlines()[1] == f"{cell},1"


def test_library_warnings_and_logs_stay_off_stderr_without_v(capsys):
    """A UserWarning or a third-party log line must not stand before the one-line error."""
    import logging
    import warnings

    from audit.cli import _setup_logging

    _setup_logging(0, False)
    warnings.warn("a library's warning", UserWarning)
    logging.getLogger("datasets.builder").warning("a library's log line")
    logging.getLogger("audit.data").warning("ours")
    assert capsys.readouterr().err == "ours\n"


def test_read_only_out_fails_before_loading(tmp_path, capsys, monkeypatch):
    """A read-only mount (simulated: root ignores chmod) is found by a test write, up front."""
    import tempfile

    def read_only(*a, **k):
        raise OSError(errno.EROFS, "Read-only file system")
    monkeypatch.setattr(tempfile, "mkstemp", read_only)
    assert main(["-q", "run", "--model", "hf-hub:never/loaded", "--out", str(tmp_path / "o")]) == 2
    assert capsys.readouterr().err == f"error: {tmp_path / 'o'}: cannot write to this folder (Read-only file system)\n"


def test_table_to_a_read_only_folder_fails_before_reading(tmp_path, capsys, monkeypatch):
    """An unwritable -o folder is found by a test write before any results.json is read."""
    import tempfile

    def read_only(*a, **k):
        raise OSError(errno.EROFS, "Read-only file system")
    monkeypatch.setattr(tempfile, "mkstemp", read_only)
    assert main(["table", str(tmp_path / "never-read.json"), "-o", str(tmp_path / "t.csv")]) == 2
    assert capsys.readouterr().err == f"error: {tmp_path}: cannot write to this folder (Read-only file system)\n"


def test_table_on_a_full_disk_is_one_line(world, tmp_path, capsys, monkeypatch):
    from audit import io

    def full(path, data):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(io, "atomic_write_bytes", full)
    for ext in ("csv", "html"):
        out = tmp_path / f"t.{ext}"
        assert main(["table", str(world / "run"), "-o", str(out)]) == 2
        err = capsys.readouterr().err.splitlines()
        assert err == [f"error: {out}: could not write the table (No space left on device)"]
        assert not out.exists()
