"""Where everything lives in a synthetic world folder, and the cache of generated worlds.

One module knows the layout (docs/INTERNALS.md, "The synthetic world on disk"): generate.py
writes it, audit.data reads a world folder's sources by role, the runner picks the world's
sources and the trainer its captions. The world writes itself in real formats (FairFace's
release layout, `datasets` save_to_disk, image folders with metadata.csv), so the real loaders
are the ones tested; only which folder holds what is the world's own.

    preset.json, ground_truth.json
    faces/fairface_label_val.csv + val/*.jpg     FairFace release layout (validation)
    faces_hf/                                    datasets.save_to_disk of the same faces
    train/captions.csv, train/attributes.csv + images/
    identities/metadata.csv + images/, identities/distractors.txt
    objects/<split>/metadata.csv + images/       split "clean" + renditions
    persons/annotations/annotations.csv + imgs_1/ FACET release layout (presets with `persons`)
    regions/metadata.csv + images/               objects with region, income (presets with `regions`)
"""
from __future__ import annotations

import logging
from pathlib import Path

log = logging.getLogger(__name__)

PRESET = "preset.json"                # what regenerates the world
GROUND_TRUTH = "ground_truth.json"    # its planted answers; its presence marks a world folder
FACES, FACES_TABLE, FACES_IMAGES = "faces", "fairface_label_val.csv", "val"
FACES_HF = "faces_hf"
IDENTITIES, DISTRACTORS = "identities", "distractors.txt"
OBJECTS, CLEAN = "objects", "clean"
TRAIN, CAPTIONS, ATTRIBUTES = "train", "captions.csv", "attributes.csv"
TABLE, IMAGES = "metadata.csv", "images"   # an image folder (the HF imagefolder convention)
PERSONS, PERSONS_TABLE, PERSONS_IMAGES = "persons", "annotations/annotations.csv", "imgs_1"  # FACET's
REGIONS = "regions"
ENTRIES = (PRESET, GROUND_TRUTH, FACES, FACES_HF, TRAIN, IDENTITIES, OBJECTS, PERSONS, REGIONS)
# What a source kind reads from a world folder given as its SRC (`--fairface WORLD`, ...).
KIND_PATHS = {"fairface": FACES, "celebrity": IDENTITIES, "classify": f"{OBJECTS}/{CLEAN}",
              "pairs": f"{TRAIN}/{CAPTIONS}", "persons": PERSONS}


def is_world(path: Path) -> bool:
    return Path(path).is_dir() and (Path(path) / GROUND_TRUTH).is_file()


def kind_path(world: Path, kind: str) -> Path | None:
    """The file or folder a source of `kind` reads in a world folder; None for other kinds."""
    return Path(world) / KIND_PATHS[kind] if kind in KIND_PATHS else None


def source_specs(world: Path) -> dict[str, tuple[str, str]]:
    """{source role: (spec, kind)} of a world: faces, identities, and every objects split
    (the clean one to classify, each rendition a shift of it); where the world has them, its
    people in context (role and kind "persons") and region/income objects ("classify:regions",
    a classify source with group columns). Faces, identities and persons are given as the
    world folder itself, which audit.data resolves by kind (kind_path)."""
    world = Path(world)
    specs = {"fairface": (str(world), "fairface"), "celebrity": (str(world), "celebrity")}
    for split in sorted(p.name for p in (world / OBJECTS).iterdir() if p.is_dir()):
        role = "classify:objects" if split == CLEAN else f"shift:{split}"
        specs[role] = (str(world / OBJECTS / split), "classify")
    if (world / PERSONS).is_dir():
        specs["persons"] = (str(world), "persons")
    if (world / REGIONS).is_dir():
        specs["classify:regions"] = (str(world / REGIONS), "classify")
    return specs


def distractors(world: Path) -> Path | None:
    """Names that are nobody in the world, the celebrity probe's extra candidates."""
    path = Path(world) / IDENTITIES / DISTRACTORS
    return path if path.is_file() else None


# -- the cache of generated worlds ---------------------------------------------------------------
def cached_world(preset: str, *, seed: int, cache_dir: Path, progress: bool) -> Path:
    """The preset's world, generated once into `cache_dir`/worlds and reused."""
    key = f"{preset}-seed{seed}-{world_version(preset)[:12]}"
    root = Path(cache_dir) / "worlds" / key
    if (root / GROUND_TRUTH).is_file():
        return root
    return _generate(preset, root, seed=seed, progress=progress)


def world_version(preset: str) -> str:
    """A hash of the resolved preset and of the code that draws worlds: a cached world is
    reused only while both are unchanged (a new release that draws faces differently, or an
    edited preset, generates afresh instead of auditing a stale world)."""
    import json
    from importlib import resources

    from audit.data import hash_strings
    from audit.world.generate import load_preset

    code = sorted(resources.files("audit.world").iterdir(), key=lambda p: p.name)
    return hash_strings([json.dumps(load_preset(preset), sort_keys=True),
                         *(p.read_text() for p in code if p.name.endswith(".py"))])


def _generate(preset: str, root: Path, *, seed: int, progress: bool) -> Path:
    import shutil
    import tempfile

    from audit.world.generate import generate_world

    log.info("generating the %r synthetic world (seed %d) into %s", preset, seed, root)
    try:
        root.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=root.parent, prefix=f".{root.name}."))
    except OSError as e:  # an unwritable cache costs the reuse, not the run
        return _generate_uncached(preset, seed=seed, progress=progress, why=e)
    try:
        generate_world(tmp, preset=preset, seed=seed, progress=progress, with_train=False)
        tmp.rename(root)  # atomic: a half-generated world is never mistaken for a whole one
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return root


def _generate_uncached(preset: str, *, seed: int, progress: bool, why: OSError) -> Path:
    import atexit
    import shutil
    import tempfile

    from audit.world.generate import generate_world

    tmp = Path(tempfile.mkdtemp(prefix="clip-audit-world-"))
    atexit.register(shutil.rmtree, tmp, ignore_errors=True)
    log.warning("the cache cannot hold the synthetic world (%s); generating it for this run only", why.strerror or why)
    generate_world(tmp, preset=preset, seed=seed, progress=progress, with_train=False)
    return tmp
