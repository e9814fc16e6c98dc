"""Write a synthetic audit world to disk (where each file goes: audit/world/layout.py).

Every image is drawn from its own seeded generator (seed, stream, index), so the same preset and
seed give byte-identical files, in any order and with any number of worker processes.
"""
from __future__ import annotations

import copy
import json
import logging
import os
import shutil
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd

from audit.errors import UserError
from audit.world import captions, faces, identities, layout, objects, persons

log = logging.getLogger(__name__)

PRESET_DIR = Path(__file__).parent / "presets"
SCALED = ("val_faces", "train_faces", "identities", "object_val_images", "object_train_images")
# Sizes of the optional parts (people in context, region/income objects): per class, scaled too.
OPTIONAL_SCALED = {"persons": ("person_val_images", "person_train_images"),
                   "regions": ("region_val_images", "region_train_images")}
# One random stream per purpose, so changing one size never reshuffles the others.
STREAM = {"val_attrs": 1, "val_faces": 2, "train_attrs": 3, "train_faces": 4, "names": 5, "signatures": 6,
          "fame": 7, "identity_val": 8, "identity_train": 9, "object_train": 10, "planted": 11, "captions": 12,
          "shuffle": 13, "service_test": 14, "clean": 20, "sketch": 21, "texture": 22,
          "person_val_attrs": 30, "person_val": 31, "person_train_attrs": 32, "person_train": 33,
          "person_boxes": 34, "person_votes": 35, "region_val_attrs": 36, "region_val": 37,
          "region_train": 38}


# ---- presets ----------------------------------------------------------------------------

def list_presets() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.json"))


def load_preset(name_or_path) -> dict:
    """A preset by name, JSON path or dict, with `extends` merged and `$field` references resolved."""
    raw, where = _read_preset(name_or_path)
    cfg = _resolve_extends(raw, where, seen=())
    cfg = _substitute(cfg, cfg, where)
    _validate(cfg, where)
    return cfg


def _read_preset(name_or_path) -> tuple[dict, str]:
    if isinstance(name_or_path, dict):
        return copy.deepcopy(name_or_path), "preset"
    text = str(name_or_path)
    path = Path(text) if (text.endswith(".json") or "/" in text) else PRESET_DIR / f"{text}.json"
    if not path.is_file():
        known = ", ".join(list_presets())
        raise UserError(f"{text}: no such preset (known: {known}; or give a .json path)")
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise UserError(f"{path}: not a readable JSON preset ({exc})") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: a preset must be a JSON object")
    return data, str(path)


def _resolve_extends(raw: dict, where: str, *, seen: tuple) -> dict:
    base_name = raw.pop("extends", None)
    if base_name is None:
        return raw
    if base_name in seen:
        raise UserError(f"{where}: preset 'extends' loops through {base_name!r}")
    base, base_where = _read_preset(base_name)
    return _merge(_resolve_extends(base, base_where, seen=seen + (base_name,)), raw)


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for key, value in over.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def _substitute(node, cfg: dict, where: str):
    """'$field' strings become the preset's top-level field (e.g. '$non_human_group' -> 'Black')."""
    if isinstance(node, dict):
        return {k: _substitute(v, cfg, where) for k, v in node.items()}
    if isinstance(node, list):
        return [_substitute(v, cfg, where) for v in node]
    if isinstance(node, str) and node.startswith("$"):
        if node[1:] not in cfg:
            raise UserError(f"{where}: {node} names no top-level preset field")
        return cfg[node[1:]]
    return node


def _validate(cfg: dict, where: str) -> None:
    for key in ("sizes", "fame", "vocab", "grammar", "planted", "objects", "caption_style", "image_size"):
        if key not in cfg:
            raise UserError(f"{where}: missing preset field '{key}'")
    _check_sizes(cfg, where)
    if cfg["caption_style"] not in ("replace", "append"):
        raise UserError(f"{where}: caption_style must be 'replace' or 'append'")
    for attr, values in faces.ATTRIBUTES.items():
        missing = set(values) - set(cfg["vocab"].get(attr, {})) if attr != "age" else set()
        if missing:
            raise UserError(f"{where}: vocab.{attr} lacks {sorted(missing)}")
    _check_neutral(cfg["vocab"].get("neutral"), where)
    _check_grammar(cfg["grammar"], where)
    for name, spec in cfg["planted"].items():
        _check_category(name, spec, where)
    if "persons" in cfg:
        _check_persons(cfg["persons"], where, cfg["image_size"])
    if "regions" in cfg:
        _check_regions(cfg["regions"], where)


def _check_sizes(cfg: dict, where: str) -> None:
    if not isinstance(cfg.get("scale", 1.0), (int, float)) or cfg.get("scale", 1.0) <= 0:
        raise UserError(f"{where}: scale must be a positive number")
    optional = [k for part, keys in OPTIONAL_SCALED.items() if part in cfg for k in keys]
    for key in SCALED + ("identity_val_images", "distractors") + tuple(optional):
        value = cfg["sizes"].get(key)
        if not isinstance(value, int) or value < 1:
            raise UserError(f"{where}: sizes.{key} must be a positive integer, got {value!r}")
    lo, hi = cfg["fame"].get("min"), cfg["fame"].get("max")
    if not (isinstance(lo, int) and isinstance(hi, int) and 1 <= lo <= hi):
        raise UserError(f"{where}: fame needs integers 1 <= min <= max")


def _check_neutral(neutral, where: str) -> None:
    if neutral is None:
        return
    word, share = (neutral.get("word"), neutral.get("share")) if isinstance(neutral, dict) else (None, None)
    if not (isinstance(word, str) and isinstance(share, (int, float)) and 0 <= share <= 1):
        raise UserError(f"{where}: vocab.neutral needs a 'word' and a 'share' in [0, 1]")


def _check_grammar(grammar, where: str) -> None:
    """The world's own wrappers: a non-empty list of distinct strings, each with one '{}'.
    Deliberately no way to name an auditor template set: the world must not speak its wording."""
    wrappers = grammar.get("wrappers") if isinstance(grammar, dict) else None
    if not (isinstance(wrappers, list) and wrappers and all(isinstance(w, str) for w in wrappers)):
        raise UserError(f"{where}: grammar.wrappers must be a non-empty list of strings")
    for w in wrappers:
        if w.count("{}") != 1 or "{" in w.replace("{}", "") or "}" in w.replace("{}", ""):
            raise UserError(f"{where}: grammar wrapper {w!r} needs exactly one '{{}}' and no other braces")
    if len(set(wrappers)) != len(wrappers):
        raise UserError(f"{where}: grammar.wrappers repeats a wrapper")


def _check_category(name: str, spec: dict, where: str) -> None:
    _check_rates(spec, f"{where}: planted.{name}")
    if not spec.get("words"):
        raise UserError(f"{where}: planted.{name} needs a non-empty 'words' list")
    for rule in spec.get("rules", []):
        _check_where(rule.get("where", {}), faces.ATTRIBUTES, f"{where}: planted.{name} rule")


def _check_rates(spec: dict, what: str) -> None:
    """A rule table's default `rate` and every rule's rate are numbers in [0, 1]."""
    rates = [spec.get("rate")] + [r.get("rate") for r in spec.get("rules", [])]
    if not all(isinstance(r, (int, float)) and 0 <= r <= 1 for r in rates):
        raise UserError(f"{what} rates must be numbers in [0, 1]")


def _check_persons(spec, where: str, image_size: int) -> None:
    classes = spec.get("classes") if isinstance(spec, dict) else None
    if not (isinstance(classes, list) and len(classes) >= 2 and set(classes) <= set(persons.LOOKS)):
        raise UserError(f"{where}: persons.classes must list at least two of {sorted(persons.LOOKS)}")
    if not (isinstance(spec.get("canvas"), int) and spec["canvas"] >= image_size):
        raise UserError(f"{where}: persons.canvas must be an integer >= image_size (pixels)")
    words, share = spec.get("gender_words"), spec.get("gender_word_share")
    if not (isinstance(words, dict) and set(words) == set(persons.GENDERS) and isinstance(share, (int, float))
            and 0 <= share <= 1):
        raise UserError(f"{where}: persons needs gender_words for {list(persons.GENDERS)} and a "
                        "gender_word_share in [0, 1]")
    for plant in spec.get("planted", []):
        if plant.get("class") not in classes or plant.get("reads_as") not in classes:
            raise UserError(f"{where}: persons.planted: class and reads_as must be among persons.classes")
        _check_rates(plant, f"{where}: persons.planted")
        _check_where(plant.get("where", {}), persons.ATTRIBUTES, f"{where}: persons.planted")


def _check_regions(spec, where: str) -> None:
    groups = {a: spec.get(a) for a in ("region", "income")} if isinstance(spec, dict) else {}
    if not all(isinstance(v, list) and v and all(isinstance(x, str) for x in v) for v in groups.values()) or not groups:
        raise UserError(f"{where}: regions needs non-empty 'region' and 'income' lists of strings")
    hard = spec.get("hard", {"rate": 0.0})
    _check_rates(hard, f"{where}: regions.hard")
    for rule in hard.get("rules", []):
        _check_where(rule.get("where", {}), groups, f"{where}: regions.hard rule")


def _check_where(where_: dict, attributes: dict, what: str) -> None:
    for attr, values in where_.items():
        if attr not in attributes or not set(values) <= set(attributes[attr]):
            raise UserError(f"{what} has unknown {attr} values {values}")


def world_sizes(cfg: dict) -> dict:
    """The preset's sizes after `scale` (images per identity and distractors are not scaled)."""
    scale = float(cfg.get("scale", 1.0))
    scaled = SCALED + tuple(k for keys in OPTIONAL_SCALED.values() for k in keys)
    return {k: (max(1, int(round(v * scale))) if k in scaled else v) for k, v in cfg["sizes"].items()}


# ---- the world --------------------------------------------------------------------------

def generate_world(out: Path, *, preset: str | Path | dict = "default", seed: int = 0,
                   progress: bool = True, workers: int | None = None, with_train: bool = True) -> Path:
    """Write the world for `preset` and `seed` under `out` and return `out`.

    `workers`: drawing processes (default: one per CPU beyond two, at most 4); the files do not
    depend on it. `with_train=False` leaves out the training images (most of the drawing, and
    an audit never reads them); every other file is byte-identical to the full world's.
    """
    cfg = load_preset(preset)
    out = _prepare_out(Path(out))
    workers = _default_workers() if workers is None else max(1, int(workers))
    ctx = {"cfg": cfg, "sizes": world_sizes(cfg), "seed": int(seed), "out": out, "with_train": with_train}
    with _pool(workers) as pool, _progress(progress) as bar:
        ctx.update(pool=pool, bar=bar)
        _write_val_faces(ctx)
        people = _write_identities(ctx)
        _write_objects(ctx)
        scenes = _write_persons(ctx) if "persons" in cfg else None
        regions = _write_regions(ctx) if "regions" in cfg else None
        train = _write_train(ctx, people)
    _write_json(out / layout.PRESET, {**cfg, "seed": int(seed)})  # what regenerates this world
    truth = _ground_truth(ctx, people, train)
    if scenes is not None:
        truth["persons"] = _persons_truth(cfg, scenes, train)
    if regions is not None:
        truth["regions"] = _regions_truth(cfg, regions, train)
    _write_json(out / layout.GROUND_TRUTH, truth)
    log.info("wrote the %s world (seed %d) to %s", cfg.get("name", "custom"), seed, out)
    return out


def _default_workers() -> int:
    """On 2 cores the main process (JPEG writes) and the workers contend; measured slower there."""
    cpus = os.cpu_count() or 1
    return 1 if cpus <= 2 else min(4, cpus - 1)


def _prepare_out(out: Path) -> Path:
    """Refuse to write into a directory that holds something other than an earlier world."""
    if out.exists() and not out.is_dir():
        raise UserError(f"{out}: exists and is not a directory")
    if out.is_dir() and any(out.iterdir()):
        if not (out / layout.PRESET).is_file():
            raise UserError(f"{out}: not empty and not a world directory; choose an empty --out")
        for entry in layout.ENTRIES:
            path = out / entry
            shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    return out


@contextmanager
def _pool(workers: int):
    """One pool for the whole world; 'spawn' because rich's refresh thread makes fork unsafe."""
    if workers <= 1:
        yield None
        return
    import multiprocessing

    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        yield pool


@contextmanager
def _progress(enabled: bool):
    if not enabled:
        yield None
        return
    from rich.progress import Progress

    with Progress() as bar:
        yield bar


def _render_all(ctx: dict, jobs: list[tuple], paths: list[Path], description: str) -> None:
    """Draw each job (a picklable tuple for `_render`) and write it to its path."""
    for path in {p.parent for p in paths}:
        path.mkdir(parents=True, exist_ok=True)
    bar = ctx["bar"]
    task = bar.add_task(description, total=len(jobs)) if bar is not None else None
    small = len(jobs) < 200  # not worth the round trips
    results = map(_render, jobs) if ctx["pool"] is None or small else ctx["pool"].map(_render, jobs, chunksize=32)
    for path, data in zip(paths, results):
        path.write_bytes(data)
        if task is not None:
            bar.advance(task)


def _render(job: tuple) -> bytes:
    kind, seed, stream, index, what, cfg = job
    rng = faces.image_rng(seed, stream, index)
    size, noise = cfg["image_size"], cfg.get("noise", 5.0)
    if kind == "face":
        img = faces.draw_face(rng, *what, size=size, noise=noise)
    elif kind == "identity":
        img = identities.draw_identity(rng, what, size=size, noise=noise)
    elif kind == "scene":  # what: (person, None) for a training crop, (person, (canvas, box)) for val
        img = persons.draw_person(rng, what[0], size=size, noise=noise)
        if what[1] is not None:
            img = persons.place_in_canvas(rng, img, *what[1], noise=noise)
    elif kind == "region":  # what: (label, hard)
        img = (objects.draw_cluttered(rng, what[0], objects=cfg["objects"], size=size, noise=noise) if what[1]
               else objects.draw_object(rng, what[0], "clean", objects=cfg["objects"], size=size, noise=noise))
    else:
        img = objects.draw_object(rng, what[0], what[1], objects=cfg["objects"], size=size, noise=noise)
    return faces.jpeg_bytes(img, cfg.get("jpeg_quality", 90))


def _draw_attrs(seed: int, stream: str, n: int) -> list[dict]:
    """Race, gender and age drawn uniformly and independently."""
    rng = faces.image_rng(seed, STREAM[stream], 0)
    return [{attr: str(values[int(rng.integers(len(values)))]) for attr, values in faces.ATTRIBUTES.items()}
            for _ in range(n)]


def _draw_cfg(cfg: dict) -> dict:
    """The few preset fields a drawing worker needs (small to pickle)."""
    return {k: cfg[k] for k in ("image_size", "noise", "jpeg_quality", "objects") if k in cfg}


# ---- faces ------------------------------------------------------------------------------

def _write_val_faces(ctx: dict) -> None:
    """faces/fairface_label_val.csv + faces/val/N.jpg, and the same images as faces_hf/."""
    seed, out, n = ctx["seed"], ctx["out"], ctx["sizes"]["val_faces"]
    people = _draw_attrs(seed, "val_attrs", n)
    rng = faces.image_rng(seed, STREAM["service_test"], 0)
    service = rng.random(n) < float(ctx["cfg"].get("service_test_rate", 0.5))
    jobs = [("face", seed, STREAM["val_faces"], i, (p["race"], p["gender"], p["age"]), _draw_cfg(ctx["cfg"]))
            for i, p in enumerate(people)]
    faces_dir = out / layout.FACES
    paths = [faces_dir / layout.FACES_IMAGES / f"{i + 1}.jpg" for i in range(n)]
    _render_all(ctx, jobs, paths, "validation faces")
    table = pd.DataFrame({"file": [f"{layout.FACES_IMAGES}/{i + 1}.jpg" for i in range(n)],
                          "age": [p["age"] for p in people], "gender": [p["gender"] for p in people],
                          "race": [p["race"] for p in people], "service_test": [bool(s) for s in service]})
    table.to_csv(faces_dir / layout.FACES_TABLE, index=False)
    _write_faces_hf(out, table)


def _write_faces_hf(out: Path, table: pd.DataFrame) -> None:
    """The validation faces as HuggingFaceM4/FairFace's features, via datasets.save_to_disk."""
    import datasets

    features = datasets.Features({
        "image": datasets.Image(),
        "age": datasets.ClassLabel(names=list(faces.AGES)),
        "gender": datasets.ClassLabel(names=list(faces.GENDERS)),
        "race": datasets.ClassLabel(names=list(faces.RACES)),
        "service_test": datasets.Value("bool"),
    })
    data = {"image": [{"bytes": (out / layout.FACES / f).read_bytes(), "path": None} for f in table["file"]],
            **{c: table[c].tolist() for c in ("age", "gender", "race", "service_test")}}
    ds = datasets.Dataset.from_dict(data, features=features)
    was_on = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    try:
        ds.save_to_disk(str(out / layout.FACES_HF))
    finally:
        if was_on:
            datasets.enable_progress_bars()


# ---- identities -------------------------------------------------------------------------

def _write_identities(ctx: dict) -> dict:
    """identities/images + metadata.csv (file_name,name,fame) + distractors.txt."""
    seed, out, sizes, cfg = ctx["seed"], ctx["out"], ctx["sizes"], ctx["cfg"]
    n, k = sizes["identities"], sizes["identity_val_images"]
    names, distractors = _names(seed, n, sizes["distractors"])
    try:
        sigs = identities.make_signatures(faces.image_rng(seed, STREAM["signatures"], 0), n)
    except ValueError as exc:
        raise UserError(f"preset sizes.identities: {exc}") from None
    fame = identities.make_fame(faces.image_rng(seed, STREAM["fame"], 0), n, lo=cfg["fame"]["min"], hi=cfg["fame"]["max"])
    files = [f"{layout.IMAGES}/{i + 1:04d}_{j + 1}.jpg" for i in range(n) for j in range(k)]
    jobs = [("identity", seed, STREAM["identity_val"], i * k + j, sigs[i], _draw_cfg(cfg)) for i in range(n) for j in range(k)]
    folder = out / layout.IDENTITIES
    _render_all(ctx, jobs, [folder / f for f in files], "identities")
    pd.DataFrame({"file_name": files, "name": [names[i] for i in range(n) for _ in range(k)],
                  "fame": [fame[i] for i in range(n) for _ in range(k)]}).to_csv(folder / layout.TABLE, index=False)
    (folder / layout.DISTRACTORS).write_text("".join(f"{d}\n" for d in distractors))
    return {"names": names, "signatures": sigs, "fame": fame, "distractors": distractors}


def _names(seed: int, n: int, n_distractors: int) -> tuple[list[str], list[str]]:
    try:
        return identities.make_names(faces.image_rng(seed, STREAM["names"], 0), n, n_distractors)
    except ValueError as exc:
        raise UserError(f"preset sizes: {exc}") from None


# ---- objects ----------------------------------------------------------------------------

def _write_objects(ctx: dict) -> None:
    """objects/<split>/metadata.csv (file_name,label) + images/, for every rendition."""
    seed, out, cfg = ctx["seed"], ctx["out"], ctx["cfg"]
    labels, per = objects.class_labels(cfg["objects"]), ctx["sizes"]["object_val_images"]
    for split in objects.SPLITS:
        items = [(label, j) for label in labels for j in range(per)]
        files = [f"{layout.IMAGES}/{label.replace(' ', '_')}_{j + 1:03d}.jpg" for label, j in items]
        jobs = [("object", seed, STREAM[split], i, (label, split), _draw_cfg(cfg)) for i, (label, _) in enumerate(items)]
        folder = out / layout.OBJECTS / split
        _render_all(ctx, jobs, [folder / f for f in files], f"objects ({split})")
        pd.DataFrame({"file_name": files, "label": [label for label, _ in items]}).to_csv(
            folder / layout.TABLE, index=False)


# ---- people in context (FACET layout) and region/income objects -------------------------

def _write_persons(ctx: dict) -> list[dict]:
    """persons/annotations/annotations.csv + persons/imgs_1/*.jpg, FACET's release layout:
    each validation person in a larger canvas, with its bounding box; returns the people."""
    seed, out, cfg, spec = ctx["seed"], ctx["out"], ctx["cfg"], ctx["cfg"]["persons"]
    people = persons.draw_people(faces.image_rng(seed, STREAM["person_val_attrs"], 0), spec["classes"],
                                 ctx["sizes"]["person_val_images"], spec.get("planted", []))
    box_rng = faces.image_rng(seed, STREAM["person_boxes"], 0)
    boxes = [persons.draw_box(box_rng, spec["canvas"], cfg["image_size"]) for _ in people]
    files = [f"sa_{i + 1:06d}.jpg" for i in range(len(people))]
    jobs = [("scene", seed, STREAM["person_val"], i, (p, (spec["canvas"], b)), _draw_cfg(cfg))
            for i, (p, b) in enumerate(zip(people, boxes))]
    folder = out / layout.PERSONS
    _render_all(ctx, jobs, [folder / layout.PERSONS_IMAGES / f for f in files], "people in context")
    votes = faces.image_rng(seed, STREAM["person_votes"], 0)
    rows = [persons.facet_row(f, i + 1, p, b, votes) for i, (f, p, b) in enumerate(zip(files, people, boxes))]
    (folder / layout.PERSONS_TABLE).parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(folder / layout.PERSONS_TABLE, index=False)
    return [{**p, "filename": f} for p, f in zip(people, files)]


def _write_regions(ctx: dict) -> list[dict]:
    """regions/metadata.csv (file_name,label,region,income) + images/: the world's object
    classes from homes of every region and income; the `hard` rule's share drawn cluttered."""
    seed, out, cfg = ctx["seed"], ctx["out"], ctx["cfg"]
    labels, per = objects.class_labels(cfg["objects"]), ctx["sizes"]["region_val_images"]
    items = objects.draw_region_items(faces.image_rng(seed, STREAM["region_val_attrs"], 0), labels, per,
                                      cfg["regions"])
    files = [f"{layout.IMAGES}/{it['label'].replace(' ', '_')}_{j % per + 1:03d}.jpg" for j, it in enumerate(items)]
    jobs = [("region", seed, STREAM["region_val"], i, (it["label"], it["hard"]), _draw_cfg(cfg))
            for i, it in enumerate(items)]
    folder = out / layout.REGIONS
    _render_all(ctx, jobs, [folder / f for f in files], "region/income objects")
    pd.DataFrame({"file_name": files, **{c: [it[c] for it in items] for c in ("label", "region", "income")}}).to_csv(
        folder / layout.TABLE, index=False)
    return [{**it, "file_name": f} for it, f in zip(items, files)]


def _persons_truth(cfg: dict, val: list[dict], train: dict) -> dict:
    spec = cfg["persons"]
    return {"classes": spec["classes"], "canvas": spec["canvas"], "planted": spec.get("planted", []),
            "expected_misdrawn": persons.expected_rates(spec["classes"], spec.get("planted", [])),
            "val": {"n": len(val), "misdrawn": {p["filename"]: p["drawn_as"] for p in val if p["drawn_as"] != p["class"]},
                    "realized": persons.realized(val)},
            "train": {"n": len(train["scenes"]), "realized": persons.realized(train["scenes"])}}


def _regions_truth(cfg: dict, val: list[dict], train: dict) -> dict:
    spec = cfg["regions"]
    groups = {a: spec[a] for a in ("region", "income")}
    return {"classes": objects.class_labels(cfg["objects"]), "groups": groups, "hard": spec.get("hard", {}),
            "expected_hard": objects.expected_hard(spec), "train": {"n": train["regions"], "rendition": "clean"},
            "val": {"n": len(val), "hard_files": [it["file_name"] for it in val if it["hard"]],
                    "realized": {a: {g: captions._count([it["hard"] for it in val if it[a] == g]) for g in gs}
                                 for a, gs in groups.items()}}}


# ---- training pairs ---------------------------------------------------------------------

def _write_train(ctx: dict, people: dict) -> dict:
    """train/captions.csv (filepath,caption) + train/images/: faces, identities, objects, shuffled."""
    seed, out, cfg, sizes = ctx["seed"], ctx["out"], ctx["cfg"], ctx["sizes"]
    crng = faces.image_rng(seed, STREAM["captions"], 0)
    train_faces = _draw_attrs(seed, "train_attrs", sizes["train_faces"])
    carried = captions.draw_planted(faces.image_rng(seed, STREAM["planted"], 0), train_faces, cfg["planted"])
    rows, jobs = [], []
    for i, (face, cats) in enumerate(zip(train_faces, carried)):
        rows.append((f"{layout.IMAGES}/face_{i + 1:05d}.jpg", captions.face_caption(crng, face, cats, preset=cfg)))
        jobs.append(("face", seed, STREAM["train_faces"], i, (face["race"], face["gender"], face["age"]), _draw_cfg(cfg)))
    _add_identity_pairs(ctx, people, crng, rows, jobs)
    _add_object_pairs(ctx, crng, rows, jobs)
    extra = {}  # filepath -> the columns attributes.csv gains for scenes and region objects
    scenes = _add_scene_pairs(ctx, crng, rows, jobs, extra) if "persons" in cfg else []
    n_regions = _add_region_pairs(ctx, crng, rows, jobs, extra) if "regions" in cfg else 0
    made = {"faces": train_faces, "carried": carried, "pairs": len(rows), "scenes": scenes, "regions": n_regions}
    if not ctx["with_train"]:  # the captions and planted draws still make ground_truth.json
        return made
    _render_all(ctx, jobs, [out / layout.TRAIN / f for f, _ in rows], "training pairs")
    order = faces.image_rng(seed, STREAM["shuffle"], 0).permutation(len(rows))
    pd.DataFrame([rows[i] for i in order], columns=["filepath", "caption"]).to_csv(
        out / layout.TRAIN / layout.CAPTIONS, index=False)
    _write_train_attributes(out, rows, train_faces, carried, extra)
    return made


def _write_train_attributes(out: Path, rows: list, train_faces: list[dict], carried: list, extra: dict) -> None:
    """train/attributes.csv: who is in each training image, so planted rates can be recounted.

    Not read by training; a 'replace' caption no longer names the group, so this is the only
    record of it. kind is face/person/object; face rows carry race, gender, age and the
    planted categories (';'-joined). Worlds with scenes or region objects add their columns
    (class, gender_presentation, age_group, skin_tone, drawn_as; label), empty elsewhere.
    """
    n = len(train_faces)
    table = pd.DataFrame({"filepath": [f for f, _ in rows],
                          "kind": [f.split("/")[1].split("_")[0] for f, _ in rows],
                          "race": [f["race"] for f in train_faces] + [""] * (len(rows) - n),
                          "gender": [f["gender"] for f in train_faces] + [""] * (len(rows) - n),
                          "age": [f["age"] for f in train_faces] + [""] * (len(rows) - n),
                          "planted": [";".join(c) for c in carried] + [""] * (len(rows) - n)})
    columns = list(dict.fromkeys(c for cols in extra.values() for c in cols))
    for c in columns:
        table[c] = [extra.get(f, {}).get(c, "") for f, _ in rows]
    table.to_csv(out / layout.TRAIN / layout.ATTRIBUTES, index=False)


def _add_identity_pairs(ctx: dict, people: dict, crng, rows: list, jobs: list) -> None:
    """Each identity appears in exactly `fame` training captions."""
    cfg, seed, k = ctx["cfg"], ctx["seed"], 0
    for i, (name, fame) in enumerate(zip(people["names"], people["fame"])):
        for _ in range(fame):
            k += 1
            rows.append((f"{layout.IMAGES}/person_{k:05d}.jpg", captions.named_caption(crng, name, preset=cfg)))
            jobs.append(("identity", seed, STREAM["identity_train"], k, people["signatures"][i], _draw_cfg(cfg)))


def _add_object_pairs(ctx: dict, crng, rows: list, jobs: list) -> None:
    """Clean renditions only: sketches and textures stay unseen, so they measure the shift."""
    cfg, seed, k = ctx["cfg"], ctx["seed"], 0
    for label in objects.class_labels(cfg["objects"]):
        for _ in range(ctx["sizes"]["object_train_images"]):
            k += 1
            rows.append((f"{layout.IMAGES}/object_{k:05d}.jpg", captions.object_caption(crng, label, preset=cfg)))
            jobs.append(("object", seed, STREAM["object_train"], k, (label, "clean"), _draw_cfg(cfg)))


def _add_scene_pairs(ctx: dict, crng, rows: list, jobs: list, extra: dict) -> list[dict]:
    """People in context, as training crops (the figure alone), captioned by their class:
    planted people too, so the association is in what the model learns."""
    cfg, seed, spec = ctx["cfg"], ctx["seed"], ctx["cfg"]["persons"]
    people = persons.draw_people(faces.image_rng(seed, STREAM["person_train_attrs"], 0), spec["classes"],
                                 ctx["sizes"]["person_train_images"], spec.get("planted", []))
    for k, p in enumerate(people):
        path = f"{layout.IMAGES}/scene_{k + 1:05d}.jpg"
        rows.append((path, captions.scene_caption(crng, p, preset=cfg)))
        jobs.append(("scene", seed, STREAM["person_train"], k, (p, None), _draw_cfg(cfg)))
        extra[path] = {"class": p["class"], "gender_presentation": p["gender"], "age_group": p["age"],
                       "skin_tone": p["skin_tone"], "drawn_as": p["drawn_as"]}
    return people


def _add_region_pairs(ctx: dict, crng, rows: list, jobs: list, extra: dict) -> int:
    """Region objects in the clean rendition only: the hard one is met at audit time alone."""
    cfg, seed, k = ctx["cfg"], ctx["seed"], 0
    for label in objects.class_labels(cfg["objects"]):
        for _ in range(ctx["sizes"]["region_train_images"]):
            k += 1
            path = f"{layout.IMAGES}/region_{k:05d}.jpg"
            rows.append((path, captions.object_caption(crng, label, preset=cfg)))
            jobs.append(("region", seed, STREAM["region_train"], k, (label, False), _draw_cfg(cfg)))
            extra[path] = {"label": label}
    return k


# ---- ground truth -----------------------------------------------------------------------

def _ground_truth(ctx: dict, people: dict, train: dict) -> dict:
    """What was planted: the rule table, its expected rate per group, and what was actually written.

    `observed` is left for the trainer: the effect a model trained on this world shows.
    """
    cfg = ctx["cfg"]
    expected = captions.expected_rates(cfg["planted"])
    realized = captions.realized_rates(train["faces"], train["carried"], cfg["planted"])
    planted = {}
    for cat in expected:
        spec = cfg["planted"].get(cat, {})
        planted[cat] = {"words": spec.get("words"), "rate": spec.get("rate"), "rules": spec.get("rules"),
                        "expected": expected[cat], "realized": realized[cat]}
    if "denigration" in planted:
        planted["denigration"].update(words=None, rate=None, rules="union of non_human and crime")
    fame = people["fame"]
    # scene and region captions are counted only in worlds that have them (default's file is unchanged)
    more = {**({"scene_captions": len(train["scenes"])} if "persons" in cfg else {}),
            **({"region_captions": train["regions"]} if "regions" in cfg else {})}
    return {
        "preset": cfg.get("name", "custom"), "seed": ctx["seed"], "caption_style": cfg["caption_style"],
        "non_human_group": cfg.get("non_human_group"), "planted": planted,
        "train": {"pairs": train["pairs"], "faces": len(train["faces"]), "identity_captions": int(sum(fame)),
                  "object_captions": train["pairs"] - len(train["faces"]) - int(sum(fame)) - sum(more.values()),
                  **more},
        "identities": {"n": len(fame), "fame_min": int(min(fame)), "fame_max": int(max(fame)),
                       "fame_median": float(np.median(fame)), "distractors": len(people["distractors"])},
        "objects": {"classes": objects.class_labels(cfg["objects"]), "splits": list(objects.SPLITS),
                    "train_split": "clean"},
        "sizes": ctx["sizes"],
        # What the shipped demo model trained on this preset shows (calibration, data): the
        # planted caption rate and the effect a trained model shows are not the same number.
        "observed": cfg.get("observed", {}),
    }


def _write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")

