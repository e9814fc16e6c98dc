"""ImageNet-1k's classes, for the tasks that are ImageNet's (label_sets/imagenet/).

A classify source is an ImageNet task when every label is one of ImageNet-1k's 1000 WordNet ids
(n01440764 ...) or every label is one of its 1000 class names as open_clip lists them (case and
underscores aside): the whole of ImageNet or a subset of its classes. Integer class indices
never count (0..9 is CIFAR's too). distribution_shift then normalises corruption error by
AlexNet's, and a wnid is prompted by its class name ("tench"), not by the id.
"""
from __future__ import annotations

import functools


def data(name: str) -> dict:
    """label_sets/imagenet/<name>.yaml."""
    from importlib import resources
    from pathlib import Path

    from audit.labels import read_yaml
    return read_yaml(Path(str(resources.files("label_sets"))) / "imagenet" / f"{name}.yaml")


@functools.lru_cache(maxsize=1)
def _classes() -> tuple[dict, frozenset]:
    """({wnid: open_clip's class name}, the class names normalised): both in class-index order."""
    from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES
    wnids = data("wnids")["wnids"]
    return dict(zip(wnids, IMAGENET_CLASSNAMES)), frozenset(_norm(n) for n in IMAGENET_CLASSNAMES)


def _norm(label: str) -> str:
    return " ".join(str(label).replace("_", " ").lower().split())


def is_imagenet(labels) -> bool:
    labels = [str(l) for l in labels]
    if not labels:
        return False
    names, texts = _classes()
    return all(l in names for l in labels) or all(_norm(l) in texts for l in labels)


def class_texts(labels) -> list[str] | None:
    """What fills a template for each label when every label is a wnid (open_clip's class
    names); None otherwise, and the labels' own text is used."""
    labels = [str(l) for l in labels]
    names, _ = _classes()
    return [names[l] for l in labels] if labels and all(l in names for l in labels) else None
