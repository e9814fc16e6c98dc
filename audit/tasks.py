"""Classification tasks and prompt templates shared by the probes.

Probes never import each other (DESIGN.md); what several of them need lives here: template sets
(label_sets/templates/*.yaml and open_clip's own), the classification tasks a run offers
(FairFace race/gender/age, every classify:* source), and per-template class weights.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from audit import imagenet
from audit.errors import UserError

log = logging.getLogger(__name__)


def _read_yaml(name: str) -> dict:
    from audit.labels import read_yaml

    path = Path(name) if name.endswith((".yaml", ".yml")) else \
        Path(str(resources.files("label_sets"))) / "templates" / f"{name}.yaml"
    return read_yaml(path)


def load_templates(name: str) -> list[str]:
    """Templates of a template set: label_sets/templates/<name>.yaml, or a YAML path."""
    templates = _read_yaml(name).get("templates")
    if not templates or not all(isinstance(t, str) and t.count("{}") == 1 for t in templates):
        raise UserError(f"{name}: 'templates' must be a non-empty list of strings with one '{{}}'")
    return templates


def template_panel(name: str) -> list[str]:
    """The wordings of the `panel` a template set names (empty when it names none)."""
    panel = _read_yaml(name).get("panel")
    return load_templates(panel) if panel else []


def named_templates(name: str) -> list[str]:
    """A template set by name: open_clip's 'openai' (80) or 'simple' (7), imported from
    open_clip itself, or a label_sets/templates file (or YAML path)."""
    from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES, SIMPLE_IMAGENET_TEMPLATES
    sets = {"openai": OPENAI_IMAGENET_TEMPLATES, "simple": SIMPLE_IMAGENET_TEMPLATES}
    if name in sets:
        return [t("{}") if callable(t) else t for t in sets[name]]
    return load_templates(name)


def template_sets(wording: str = "label_wording") -> dict[str, str]:
    """{template string: the sets holding it, comma-joined}, e.g. "openai,simple" (open_clip's
    7 simple templates are among its 80)."""
    out: dict[str, str] = {}
    for set_name in ("openai", "simple", wording):
        for key in named_templates(set_name):
            out[key] = f"{out[key]},{set_name}" if key in out else set_name
    return out


@dataclass
class Task:
    name: str              # "fairface:race", "classify:objects"
    source: object         # audit.data.Source, restricted to the images with a known label
    truth: np.ndarray      # (n,) class index per image
    labels: list           # the dataset's label strings, in class order
    texts: list            # what fills a template's {} for each class


def classification_tasks(ctx, *, attributes=("race", "gender", "age"), wording="fairface_tasks") -> list[Task]:
    """FairFace attributes (class text from label_sets/templates/fairface_tasks.yaml) and every
    classify:* source (class text = its label strings, underscores as spaces; ImageNet wnids
    by their class names, audit.imagenet)."""
    tasks = []
    if "fairface" in ctx.sources:
        words = _read_yaml(wording)["tasks"]
        for attr in attributes:
            labels = list(words[attr])
            tasks.append(_task(f"fairface:{attr}", ctx.sources["fairface"], attr, labels,
                               [words[attr][l] for l in labels]))
    for src in ctx.sources_of("classify"):
        labels = sorted(set(map(str, src.table["label"])))
        texts = imagenet.class_texts(labels) or [l.replace("_", " ") for l in labels]
        tasks.append(_task(src.name, src, "label", labels, texts))
    return [t for t in tasks if len(t.truth)]


def _task(name, source, column, labels, texts) -> Task:
    values = source.table[column].astype(str).to_numpy()
    index = {l: i for i, l in enumerate(labels)}
    keep = np.array([v in index for v in values])
    if not keep.all():
        log.warning("%s: %d images with a %s outside %s left out", name, (~keep).sum(), column, labels)
        source = source.subset(np.flatnonzero(keep))
    truth = np.array([index[v] for v in values[keep]], dtype=np.int64)
    return Task(name, source, truth, labels, texts)


def template_weights(ctx, texts: list[str], templates: list[str]) -> np.ndarray:
    """(T, C, D): each template's normalised class embeddings, from one batched encode."""
    from audit.zeroshot import prompts
    emb = ctx.texts(prompts(texts, templates))
    return emb.reshape(len(texts), len(templates), -1).transpose(1, 0, 2)


def ensemble(weights: np.ndarray) -> np.ndarray:
    """(C, D) open_clip ensemble: the renormalised mean over templates of (T, C, D)."""
    w = weights.mean(axis=0)
    return w / np.linalg.norm(w, axis=1, keepdims=True)


def per_template_predictions(img: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """(n, T) argmax class per image and template; one (n, C) matmul per template."""
    return np.stack([(img @ w.T).argmax(axis=1) for w in weights], axis=1)


def label_set_weights(ctx, label_set: dict, *, templates=()) -> tuple[np.ndarray, dict]:
    """(C, D) headline class weights, the ensemble of `templates` (the label set's own when
    empty: the renormalised mean of their text embeddings, the CLIP convention), and {panel
    wording: (C, D)} for each wording of the set's panel alone. Forced templates are the user's
    own wording: no panel to check them against ({}). One text encode when the panel is the
    set's templates. fairface_label_bias, distribution_shift (harm under shift) and
    person_class_bias (its classes in `label_set["classes"]`) share it."""
    texts = [c["label"] for c in label_set["classes"]]
    used = list(templates) or list(label_set["templates"])
    per = template_weights(ctx, texts, used)                      # (T, C, D)
    head = ensemble(per)
    panel = [] if templates else list(label_set.get("panel_templates") or [])
    if panel and panel != used:
        per = template_weights(ctx, texts, panel)
    return head, dict(zip(panel, per))
