"""Paired comparison on the same images (issue 16, item 3): per-image outcomes beside results.json,
McNemar's exact test per group, a paired bootstrap CI of each change, the images that moved,
and the fallback to the unpaired test when the runs saw different images.

The planted runs belong to a probe that no part of audit/ names ("widget", its meta in the
results as a plugin's would be): the paired path is generic.
"""
import hashlib
import json
import math
from fractions import Fraction

import numpy as np
import pytest

from audit import outcomes, paired, stats
from audit.compare import compare, paired_cis, validate
from audit.data import Source, hash_strings
from audit.results import ImageOutcomes, ProbeResult, jsonable, row
from audit.results import validate as validate_results
from tests.reports.conftest import make_results

META = {"title": "Widget harm", "description": "", "templates": None, "row_keys": [],
        "metrics": {"harm_rate": {"title": "Harmful widget labels", "unit": "fraction",
                                  "worse": "up", "description": ""}}}
N = 2000


def _source(n=N, *, tag="img", groups=None):
    import pandas as pd

    hashes = [hashlib.sha256(f"{tag}{i}".encode()).hexdigest() for i in range(n)]
    groups = groups if groups is not None else np.where(np.arange(n) < n // 2, "A", "B")
    table = pd.DataFrame({"race": groups})
    return Source(name="faces", spec="planted", kind="fairface", table=table,
                  fingerprint=hash_strings([*hashes, table.to_csv(index=False)]), _hashes=hashes)


def _rows(hit, groups):
    """The probe's rows: the rate overall and per group, each with its bootstrap CI."""
    out = []
    for group_by, name, mask in [("overall", "all", np.ones(hit.size, bool))] + \
            [("race", g, groups == g) for g in sorted(set(groups))]:
        value, lo, hi = stats.bootstrap_rate(hit[mask], n_boot=1000, seed=0)
        out.append(row("harm_rate", value, group_by=group_by, group=name, ci_low=lo, ci_high=hi,
                       n=int(mask.sum())))
    return out


def _run(source, hit):
    """A results dict and its outcomes, through the runner's own collect()."""
    groups = source.table["race"].to_numpy()
    result = ProbeResult(rows=_rows(hit, groups), image_outcomes=ImageOutcomes(
        "faces", {"harm": hit}, {"harm": {"metric": "harm_rate", "label_set": None}}))
    entry = {**result.to_json(), "meta": META}
    built = outcomes.collect({"widget": result}, {"widget": entry}, {"faces": source})
    results = {**make_results(), "data": {"faces": source.describe()},
               "probes": {"widget": entry}, "outcomes": built.record}
    return jsonable(results), built


def planted():
    """2,000 images, 10% harmful; in the candidate 40 of group A move into harm and 10 out:
    +1.5 points overall, +3 in A. Every CI overlaps its partner; McNemar's p is ~2e-5."""
    base = np.zeros(N, bool)
    base[np.r_[0:100, 1000:1100]] = True  # 100 harmful in A (rows 0-999), 100 in B
    cand = base.copy()
    cand[200:240] = True    # into harm: A
    cand[0:10] = False      # out of it: A
    return base, cand


@pytest.fixture(scope="module")
def runs():
    src = _source()
    base, cand = planted()
    return src, _run(src, base), _run(src, cand)


def _loaded(built):
    return outcomes.from_built(built)


def _row(comparison, group):
    return next(r for r in comparison["rows"] if r["key"]["group"] == group)


def test_paired_test_finds_the_regression_the_ci_overlap_misses(runs):
    src, (base, bo), (cand, co) = runs
    unpaired = compare(base, cand)
    assert unpaired["regressions"] == 0 and not _row(unpaired, "all")["beyond_ci"]
    assert not unpaired["paired"]["used"] and "no per-image outcomes" in unpaired["paired"]["note"]

    c = compare(base, cand, base_outcomes=_loaded(bo), cand_outcomes=_loaded(co))
    validate(jsonable(c))
    overall, a, b = (_row(c, g) for g in ("all", "A", "B"))
    assert not overall["beyond_ci"] and not a["beyond_ci"]  # the CIs still overlap...
    for r, moved_in, moved_out in ((overall, 40, 10), (a, 40, 10)):  # ...the paired test decides
        assert r["test"] == "mcnemar_exact" and r["significant"] and r["direction"] == "worse"
        p = r["paired"]
        assert (p["moved_in"], p["moved_out"]) == (moved_in, moved_out)
        assert p["p_value"] == pytest.approx(_mcnemar_by_hand(40, 10)) and p["p_value"] < 1e-4
        # Holm over 3 tests (overall, A, B): the two equal smallest p get 3p (the second's 2p
        # is raised to the first's by the step-down's running maximum)
        assert p["p_adjusted"] == pytest.approx(3 * p["p_value"], rel=1e-9)
        lo, hi = p["delta_ci"]
        assert 0 < lo < r["delta"] < hi
    assert b["test"] == "mcnemar_exact" and b["paired"]["p_value"] == 1 and not b["significant"]
    assert c["regressions"] == 2 and c["paired"]["used"] and c["paired"]["note"] is None
    assert c["paired"]["method"]["family"] == 3 and c["paired"]["method"]["correction"] == "holm"


def test_moved_images_are_named_by_hash_with_their_groups(runs):
    src, (base, bo), (cand, co) = runs
    c = compare(base, cand, base_outcomes=_loaded(bo), cand_outcomes=_loaded(co))
    [moved] = c["paired"]["moved"]
    assert moved["into"] == [src.content_hash(i) for i in range(200, 240)]
    assert moved["out_of"] == [src.content_hash(i) for i in range(10)]
    labels = c["paired"]["images"]["faces"]
    assert len(labels) == 50 and {v["race"] for v in labels.values()} == {"A"}


def test_paired_ci_is_narrower_than_the_independent_one(runs):
    """The same change, CI from the two runs' intervals vs from the images resampled in pairs."""
    src, (base, bo), (cand, co) = runs
    c = compare(base, cand, base_outcomes=_loaded(bo), cand_outcomes=_loaded(co))
    overall = _row(c, "all")
    independent = math.hypot(*(np.diff(ci)[0] / 2 for ci in (overall["base_ci"], overall["cand_ci"])))
    lo, hi = overall["paired"]["delta_ci"]
    assert (hi - lo) / 2 < independent / 2


GATE = '[[gate]]\nname = "w"\nmetric = "widget.harm_rate"\ngroup_by = "overall"\nmax_increase = 0.03\n'


def test_baseline_gate_uses_the_paired_ci(runs):
    """+1.5 points against a 3-point allowance: independent CIs straddle it, the paired one is
    clear under it."""
    from audit.policy import evaluate, parse_policy

    src, (base, bo), (cand, co) = runs
    policy = parse_policy(GATE)
    [unpaired] = evaluate(policy, cand, baseline=base)
    assert unpaired["outcome"] == "inconclusive" and unpaired["paired"] is False
    c = compare(base, cand, base_outcomes=_loaded(bo), cand_outcomes=_loaded(co))
    [gate] = evaluate(policy, cand, baseline=base, paired=paired_cis(c))
    assert gate["outcome"] == "pass" and gate["paired"] is True
    assert gate["ci"] == pytest.approx(_row(c, "all")["paired"]["delta_ci"])
    assert "paired on the same images" in gate["detail"]


def test_different_images_fall_back_to_the_unpaired_test_and_say_so(runs):
    src, (base, bo), _ = runs
    other = _source(tag="other")
    cand, co = _run(other, planted()[1])
    c = compare(base, cand, base_outcomes=_loaded(bo), cand_outcomes=_loaded(co))
    validate(jsonable(c))
    assert not c["paired"]["used"] and not c["paired"]["probes"]["widget"]["paired"]
    assert "different faces data" in c["paired"]["note"] and "CI overlap" in c["paired"]["note"]
    assert all(r["test"] == "ci_overlap" and r["paired"] is None for r in c["rows"])
    assert c["regressions"] == 0


def test_same_fingerprint_but_other_hashes_in_the_file_is_not_paired(runs):
    """A results.json whose fingerprint matches but whose outcomes list other images (edited or
    mixed-up files) must not be paired row by row."""
    src, (base, bo), _ = runs
    cand, co = _run(_source(tag="other"), planted()[1])
    cand = {**cand, "data": base["data"]}
    c = compare(base, cand, base_outcomes=_loaded(bo), cand_outcomes=_loaded(co))
    assert "hold different faces images" in c["paired"]["note"]


def test_outcomes_that_do_not_reproduce_the_rows_are_not_used(runs):
    src, (base, bo), (cand, co) = runs
    flipped = _run(src, ~planted()[1])[1]  # the file of another run, rows of this one
    c = compare(base, cand, base_outcomes=_loaded(bo), cand_outcomes=_loaded(flipped))
    assert all(r["test"] == "ci_overlap" for r in c["rows"]) and c["regressions"] == 0


def test_cli_compare_pairs_from_the_files_and_fails_on_the_paired_regression(runs, tmp_path, capsys):
    from audit.cli import main

    src, (base, bo), (cand, co) = runs
    paths = {}
    for name, (results, built) in {"base": (base, bo), "cand": (cand, co)}.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "outcomes.parquet").write_bytes(built.data)
        (tmp_path / name / "results.json").write_text(json.dumps(results))
        paths[name] = str(tmp_path / name / "results.json")
        validate_results(results)
    out = tmp_path / "c.html"
    assert main(["compare", paths["base"], paths["cand"], "-o", str(out), "--fail-on-regression"]) == 1
    doc = json.loads((tmp_path / "compare.json").read_text())
    validate(doc)
    assert doc["regressions"] == 2 and doc["rows"][0]["test"] == "mcnemar_exact"
    html = out.read_text()
    assert "McNemar" in html and src.content_hash(200)[:12] in html
    assert "paired" in capsys.readouterr().out

    (tmp_path / "cand" / "outcomes.parquet").write_bytes(bo.data)  # stale: the sha256 disagrees
    assert main(["compare", paths["base"], paths["cand"], "-o", str(out), "--fail-on-regression"]) == 0
    doc = json.loads((tmp_path / "compare.json").read_text())
    validate(doc)
    assert "does not match the sha256" in doc["paired"]["note"] and doc["regressions"] == 0


def _mcnemar_by_hand(b: int, c: int) -> float:
    """The exact two-sided McNemar p: twice the smaller binomial tail at 1/2, in exact fractions."""
    n = b + c
    if b == c:
        return 1.0
    tail = sum(Fraction(math.comb(n, k), 2 ** n) for k in range(min(b, c) + 1))
    return float(min(Fraction(1), 2 * tail))


@pytest.mark.parametrize("b, c", [(0, 0), (1, 0), (0, 5), (3, 3), (7, 2), (12, 30), (40, 10),
                                  (400, 350), (1, 1000)])
def test_mcnemar_exact_matches_the_binomial_tail_by_hand(b, c):
    assert stats.mcnemar_exact(b, c) == pytest.approx(_mcnemar_by_hand(b, c), rel=1e-9, abs=1e-300)


def test_holm_adjusted_p_by_hand():
    # sorted 0.005, 0.01, 0.03, 0.04 -> x4, x3, x2, x1 = 0.02, 0.03, 0.06, 0.04 -> running max
    assert stats.holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    # 0.8 x 2 caps at 1, and the running max carries it to 0.9 x 1
    assert stats.holm([]) == [] and stats.holm([0.9, 0.8]) == [1.0, 1.0]


def test_outcomes_file_is_small_and_holds_no_pixels():
    """What fairface_label_bias writes for 10,000 faces (2 label sets x 3 rates, each under the
    ensemble and the 14 wordings alone; race/gender/age, the age band and the two crossings)
    stays under 1 MB."""
    from tests.conftest import AGES, GENDERS, RACES

    n, rng = 10_000, np.random.default_rng(0)
    src = _source(n, groups=rng.choice(RACES, n))
    src.table["gender"], src.table["age"] = rng.choice(GENDERS, n), rng.choice(AGES, n)
    names = [f"{m}/{ls}" for m in ("non_human_rate", "crime_rate", "denigration_rate")
             for ls in ("default", "with_child")]
    names += [f"{m}/{ls}/w{j}" for m in ("non_human_rate", "crime_rate", "denigration_rate")
              for ls in ("default", "with_child") for j in range(14)]
    columns = {c: rng.random(n) < 0.1 for c in names}
    keys = {c: {"metric": c.split("/")[0], "label_set": c.split("/")[1]} for c in names}
    rows = [row("crime_rate", 0.1, group_by=g) for g in ("overall", "race", "gender", "age", "age_band",
                                                         "race_x_gender", "age_band_x_gender")]
    from audit.groups import with_crossings
    made, _ = with_crossings(src.table)
    made = {c: made[c].to_numpy() for c in ("age_band", "race_x_gender", "age_band_x_gender")}
    result = ProbeResult(rows=rows, image_outcomes=ImageOutcomes("faces", columns, keys, groups=made))
    built = outcomes.collect({"p": result}, {"p": result.to_json()}, {"faces": src})
    print(f"outcomes.parquet for {n} images, {len(columns)} columns: {len(built.data):,} bytes")
    assert len(built.data) < 1_000_000
    frame = outcomes.frame(built.data)
    assert set(frame.columns) == {"source", "image", "by/race", "by/gender", "by/age",
                                  *(f"p/by/{c}" for c in made), *(f"p/{c}" for c in names)}
    assert frame["image"].tolist() == [src.content_hash(i) for i in range(n)]
    assert (frame["p/crime_rate/default"].to_numpy(bool) == columns["crime_rate/default"]).all()


def test_a_malformed_outcome_is_dropped_not_fatal(caplog):
    src = _source(10)
    bad = ProbeResult(rows=[], image_outcomes=ImageOutcomes("faces", {"x": np.ones(9, bool)},
                                                              {"x": {"metric": "m"}}))
    assert outcomes.collect({"p": bad}, {"p": bad.to_json()}, {"faces": src}) is None
    assert "shape" in caplog.text


def test_fairface_label_bias_outcomes_reproduce_its_rows():
    """The probe's columns are what compare needs: each column's mean over a group is the
    row's value, for every label set, rate and group."""
    from audit.labels import load_label_set
    from audit.runner import ProbeContext
    from probes.fairface_label_bias import FairFaceLabelBias
    from tests.probes.test_fairface_label_bias import StubEmbedder, image_vectors, planted_world

    world = planted_world()
    labels = [c["label"] for c in load_label_set("fairface_with_child")["classes"]]
    emb = StubEmbedder(labels, None)
    emb._images = image_vectors(world, emb)
    table = world[["race", "gender", "age"]].astype(str).reset_index(drop=True)
    source = Source(name="fairface", spec="planted", kind="fairface", table=table, fingerprint="0" * 64)
    ctx = ProbeContext(embedder=emb, sources={"fairface": source}, seed=0, device="cpu")
    result = FairFaceLabelBias().run(ctx, FairFaceLabelBias.Config(n_boot=50))
    got = result.image_outcomes
    assert got.source == "fairface" and len(got.columns) >= 6
    headline = [c for c, k in got.keys.items() if k["template"] == "ensemble"]
    assert len(headline) == 6   # 3 rates x 2 label sets; the rest are the panel's wordings alone
    panel = load_label_set("fairface_default")["panel_templates"]
    assert len(got.columns) == 6 * (1 + len(panel))
    labels = {**{a: table[a].to_numpy() for a in ("race", "gender", "age")}, **got.groups}
    checked = 0
    for r in result.rows:
        key = {k: r[k] for k in ("metric", "label_set", "template") if k in r}
        col = next((c for c in got.columns if got.keys[c] == key), None)
        if col is None or r["group_by"] not in ("overall", *labels):
            continue
        x = got.columns[col] if r["group_by"] == "overall" else got.columns[col][labels[r["group_by"]] == r["group"]]
        assert x.mean() == pytest.approx(r["value"], abs=1e-12), r
        checked += 1
    assert checked > 1000   # every label set, rate, wording and group, crossings included


RELATIVE_GATE = """
[[gate]]
name = "denigration may not grow"
metric = "fairface_label_bias.denigration_rate"
label_set = "default"
group_by = "overall"
max_increase = 1.0
"""


def test_run_writes_outcomes_and_compare_pairs_them(micro_arch, micro_dir, fairface_release, tmp_path):
    """End to end on 12 faces and two micro models: `audit run` writes outcomes.parquet with
    results.json, `--baseline` gates and `audit compare` pair on it; a later run in the same
    folder whose probes give none removes the old file."""
    import open_clip
    import torch

    from audit.cli import main
    from audit.models import save_local_dir
    from tests.conftest import MICRO_CFG

    torch.manual_seed(1)
    other = save_local_dir(open_clip.create_model(micro_arch).eval(), MICRO_CFG, tmp_path / "m2",
                           model_name=micro_arch)
    common = ["--fairface", str(fairface_release), "--cache-dir", str(tmp_path / "cache")]
    fairface = ["--probes", "fairface_label_bias", "--set", "fairface_label_bias.n_boot=50"]
    a, b = tmp_path / "a", tmp_path / "b"
    assert main(["-q", "run", "--model", str(micro_dir), "--out", str(a), *fairface, *common]) == 0
    (tmp_path / "gate.toml").write_text(RELATIVE_GATE)
    assert main(["-q", "run", "--model", str(other), "--out", str(b), *fairface, "--baseline",
                 str(a / "results.json"), "--policy", str(tmp_path / "gate.toml"), *common]) == 0
    results = json.loads((b / "results.json").read_text())
    record = results["outcomes"]
    assert record["rows"] == 12 and record["file"] == "outcomes.parquet"
    assert hashlib.sha256((b / "outcomes.parquet").read_bytes()).hexdigest() == record["sha256"]
    [gate] = results["gates"]
    assert gate["paired"] is True and "paired on the same images" in gate["detail"]

    assert main(["compare", str(a / "results.json"), str(b / "results.json"), "-o", str(tmp_path / "c.html")]) == 0
    doc = json.loads((tmp_path / "compare.json").read_text())
    validate(doc)
    probe = doc["paired"]["probes"]["fairface_label_bias"]
    assert probe["paired"] and probe["images"] == 12 and probe["rows"] >= 6
    overall = [r for r in doc["rows"] if r["group_by"] == "overall" and r["worse"] == "up"
               and r.get("template") == "ensemble"]
    assert overall and all(r["test"] == "mcnemar_exact" for r in overall)

    # --include-examples: each moved image's thumbnail, read back from the source the runs name,
    # in the HTML only. The oracle finds the images by hashing the files themselves.
    from PIL import Image

    from audit.thumbnails import thumbnail
    assert main(["compare", str(a / "results.json"), str(b / "results.json"), "-o", str(tmp_path / "shown.html"),
                 "--include-examples"]) == 0
    moved = {h for mv in doc["paired"]["moved"] for h in mv["into"] + mv["out_of"]}
    assert moved    # two random models disagree on some of the 12 faces
    files = {hashlib.sha256(f.read_bytes()).hexdigest(): f for f in (fairface_release / "val").iterdir()}
    shown = (tmp_path / "shown.html").read_text()
    assert all(thumbnail(Image.open(files[h])) in shown for h in moved)
    assert shown.count('<img class="thumb"') >= len(moved) and "Contains images of people" in shown
    assert "data:image" not in (tmp_path / "compare.json").read_text()
    assert '<img class="thumb"' not in (tmp_path / "c.html").read_text()

    assert main(["-q", "run", "--model", str(micro_dir), "--out", str(a), "--probes",
                 "celebrity_identification", *common]) == 0
    assert not (a / "outcomes.parquet").exists() and "outcomes" not in json.loads((a / "results.json").read_text())


def test_moved_thumbnails_need_the_same_data_back(fairface_release, tmp_path, caplog):
    """A source reopened with other data, or not at all, costs its thumbnails with a warning,
    never the comparison; the same data gives each listed image's own thumbnail."""
    import shutil

    from audit.data import load_source
    from audit.thumbnails import for_moved, thumbnail

    import logging

    caplog.set_level(logging.WARNING)   # an earlier `audit -q` run leaves the root logger at ERROR
    src = load_source(str(fairface_release), "fairface")
    moved = [{"source": "fairface", "into": [src.content_hash(0)], "out_of": [src.content_hash(3)]}]
    shown = for_moved(moved, {"fairface": src.describe()})
    assert shown == {src.content_hash(i): thumbnail(src.image(i)) for i in (0, 3)}
    assert for_moved(moved, {"fairface": {**src.describe(), "fingerprint": "0" * 64}}) == {}
    assert "holds other data" in caplog.text
    (fairface_release / "fairface_label_val.csv").unlink()
    assert for_moved(moved, {"fairface": src.describe()}) == {}
    assert "cannot reopen" in caplog.text
    caplog.clear()
    shutil.rmtree(fairface_release)     # the whole folder gone: the same one warning
    assert for_moved(moved, {"fairface": src.describe()}) == {} and "cannot reopen" in caplog.text
