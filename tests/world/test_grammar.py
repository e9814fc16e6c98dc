"""The world speaks its own wording (issue 15.6): its caption grammar shares no template with
the auditor, and generating a world reads no auditor template file.

If the world's captions used the probes' templates, the demo model would natively speak the
auditor's wording and no test could see a verdict that flips with the wording.
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

import yaml

from audit.world.generate import generate_world, load_preset

TEMPLATE_DIR = Path(__file__).resolve().parents[2] / "label_sets" / "templates"

# One audit hook for the whole process (hooks cannot be removed): it records the paths of
# file opens and directory listings while `_TRACE` is switched on.
_TRACE: dict = {"on": False, "paths": []}
_EVENTS = {"open", "os.listdir", "os.scandir", "glob.glob"}


def _hook(event: str, args: tuple) -> None:
    if _TRACE["on"] and event in _EVENTS and args and isinstance(args[0], (str, bytes, Path)):
        _TRACE["paths"].append(Path(args[0].decode() if isinstance(args[0], bytes) else args[0]))


sys.addaudithook(_hook)


def _traced(fn, *args, **kwargs) -> list[Path]:
    _TRACE["paths"].clear()
    _TRACE["on"] = True
    try:
        fn(*args, **kwargs)
    finally:
        _TRACE["on"] = False
    return list(_TRACE["paths"])


def _under_templates(paths: list[Path]) -> list[Path]:
    root = TEMPLATE_DIR.resolve()
    return [p for p in paths if root == p.resolve() or root in p.resolve().parents]


def test_the_trace_sees_a_template_read():
    """Positive control: the hook does catch the auditor reading its own template files, by
    path (read_yaml) and by importlib.resources, so the test below can fail."""
    from audit.tasks import load_templates
    assert _under_templates(_traced(load_templates, "label_wording"))
    assert _under_templates(_traced(lambda: (TEMPLATE_DIR / "celebrity.yaml").read_text()))


def test_world_generator_reads_no_auditor_template_file(tmp_path):
    # workers=1: every open happens in this process, where the hook is installed
    preset = {"extends": "tiny", "sizes": {"val_faces": 400, "train_faces": 800, "identities": 40}}
    paths = _traced(generate_world, tmp_path / "w", preset=preset, seed=0, progress=False, workers=1)
    assert any(p.name == "tiny.json" for p in paths)       # the trace saw the preset being read
    assert any(p.name == "captions.csv" for p in paths)    # ... and the captions being written
    assert _under_templates(paths) == []


def _auditor_templates() -> set[str]:
    """Every template string the auditor may score: open_clip's sets and every '{...}' string
    in label_sets/templates/*.yaml (present and future files alike)."""
    from audit.tasks import named_templates
    found = set(named_templates("openai")) | set(named_templates("simple"))

    def walk(node):
        if isinstance(node, dict):
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)
        elif isinstance(node, str) and re.search(r"\{[^{}]*\}", node):
            found.add(node)

    for path in sorted(TEMPLATE_DIR.glob("*.yaml")):
        walk(yaml.safe_load(path.read_text()))
    return found


def _normal(template: str) -> str:
    """Wording up to what `fill` adds or the tokenizer drops: the slot's article, casing,
    spacing and final punctuation ('A photo of a {}.' ~ 'a photo of {}')."""
    t = re.sub(r"\{[^{}]*\}", "{}", template.lower())
    t = re.sub(r"\b(?:a|an|the)\s+\{\}", "{}", t)
    return re.sub(r"\s+", " ", t).strip().rstrip(".!?…").strip()


def test_no_caption_wrapper_equals_an_auditor_template():
    auditor = _auditor_templates()
    assert "a photo of {}." in auditor and len(auditor) > 80         # the check has something to hit
    for preset in ("default", "null", "tiny", "scenes", "scenes-null"):
        wrappers = load_preset(preset)["grammar"]["wrappers"]
        assert len(wrappers) >= 30
        assert not set(wrappers) & auditor
        clash = {w for w in wrappers if _normal(w) in {_normal(t) for t in auditor}}
        assert clash == set(), clash


def test_normal_form_catches_near_copies():
    assert _normal("A photo of a {}.") == _normal("a photo of {}") == "a photo of {}"
    assert _normal("{}!") == _normal("{}") == "{}"
    assert _normal("{} in the park") != _normal("a photo of {}.")


def test_the_grammar_changes_only_the_wording(tmp_path):
    """Another grammar, same seed: every image, the planted and the realized rates are the same,
    and the captions differ only around the same noun phrases (the planted words stay put).
    Two wrappers, not one: numpy draws nothing for integers(1), which would shift later draws."""
    import json

    import pandas as pd

    sizes = {"val_faces": 200, "train_faces": 400, "identities": 40}
    worlds = [generate_world(tmp_path / str(k), preset={"extends": "tiny", "sizes": sizes, **extra},
                             seed=1, progress=False, workers=1)
              for k, extra in enumerate(({}, {"grammar": {"wrappers": ["[{}]", "<{}>"]}}))]
    images = [{p.relative_to(w): p.read_bytes() for p in w.rglob("*.jpg")} for w in worlds]
    assert images[0] == images[1] and len(images[0]) > 100
    truth = [json.loads((w / "ground_truth.json").read_text()) for w in worlds]
    assert {k: v for k, v in truth[0].items() if k != "preset"} == {k: v for k, v in truth[1].items() if k != "preset"}
    ours, plain = (pd.read_csv(w / "train" / "captions.csv") for w in worlds)
    assert (ours["filepath"] == plain["filepath"]).all()
    phrases = plain["caption"].str.slice(1, -1)               # '<a Black man>' -> 'a Black man'
    assert all(p in c for p, c in zip(phrases, ours["caption"]))
    assert not (ours["caption"] == plain["caption"]).any()
