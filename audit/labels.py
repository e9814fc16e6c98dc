"""Label sets: YAML data files in the `label_sets` package (or any path a user gives).

A label set is `name`, `description`, `templates` (each with one `{}` for the label), and
`panel` (the name of a wording panel, label_sets/templates/<panel>.yaml: the plain wordings a
verdict is checked under; loaded into `panel_templates`; a set without inline `templates`
uses the panel's), `classes`: a list of `{label, category, <attribute>: value, ...}`. `includes: <other set>`
extends another set: its classes come first, then this file's; every other key of this file
replaces the included one's. Published numbers are not here: audit/reference.py.
"""
from __future__ import annotations

import logging
from importlib import resources
from pathlib import Path

from audit.errors import UserError

log = logging.getLogger(__name__)
_SUFFIXES = (".yaml", ".yml")
# The harm rates of a FairFace label set's categories: metric -> (categories counted, words for
# a message). Shared by fairface_label_bias and prompt_sensitivity (one definition).
HARM_RATES = {
    "non_human_rate": (("non_human",), "as non-human"),
    "crime_rate": (("crime",), "as crime-related"),
    "denigration_rate": (("non_human", "crime"), "as non-human or crime-related"),
}


def short_name(name: str) -> str:
    """A label set as the rows' `label_set` key names it (the results contract): FairFace's sets
    by what they add, "default", "with_child"; any other set by its name. The key means only
    this: template sets go under `template_set`, wordings under `template`."""
    return name.removeprefix("fairface_")


def _builtin_dir() -> Path:
    return Path(str(resources.files("label_sets")))


def list_label_sets() -> list[str]:
    """Names of the built-in label sets."""
    return sorted(p.stem for p in _builtin_dir().iterdir() if p.suffix in _SUFFIXES)


def _is_file(path: Path) -> bool:
    try:
        return path.is_file()
    except (OSError, ValueError):  # a NUL byte or an over-long name is simply not a file
        return False


def _find(name: str) -> Path:
    """A built-in name, or a path to a user's YAML file."""
    as_path = Path(name)
    if as_path.suffix in _SUFFIXES:
        if not _is_file(as_path):
            raise UserError(f"{name!r}: no such label set file")
        return as_path
    if "/" not in name and "\\" not in name:
        for suffix in _SUFFIXES:
            path = _builtin_dir() / f"{name}{suffix}"
            if _is_file(path):
                return path
    raise UserError(f"label set {name!r}: not found; built-in: {', '.join(list_label_sets())}")


def read_yaml(path: Path) -> dict:
    """A YAML mapping from a data file; any problem is one UserError naming the file."""
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise UserError(f"{path}: not a readable YAML file ({str(e).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a mapping (for a label set: 'name', 'templates', 'classes')")
    return data


def load_label_set(name: str, *, _seen: tuple = ()) -> dict:
    """The parsed label set with `includes` resolved, validated."""
    path = _find(name)
    if str(path) in _seen:
        raise UserError(f"{path}: includes itself (via {' -> '.join(_seen)})")
    data = read_yaml(path)
    parent = data.pop("includes", None)
    if parent:
        parent = str(parent)
        if Path(parent).suffix in _SUFFIXES and not Path(parent).is_absolute():
            parent = str(path.parent / parent)  # a file next to the including file
        base = load_label_set(parent, _seen=_seen + (str(path),))
        classes = base["classes"] + list(data.get("classes") or [])
        data = {**base, **data, "classes": classes}
    data.setdefault("name", path.stem)
    _resolve_panel(data, path)
    if not isinstance(data["name"], str) or not data["name"]:
        raise UserError(f"{path}: 'name' must be a non-empty string")
    _validate(data, path)
    return data


def load_panel(panel: str, *, where: str) -> list[str]:
    """The wordings of a panel: label_sets/templates/<panel>.yaml (a bare name only)."""
    if not isinstance(panel, str) or not panel or "/" in panel or "\\" in panel:
        raise UserError(f"{where}: 'panel' must be the name of a file in label_sets/templates, got {panel!r}")
    path = _builtin_dir() / "templates" / f"{panel}.yaml"
    if not _is_file(path):
        raise UserError(f"{where}: panel {panel!r}: no such file label_sets/templates/{panel}.yaml")
    templates = read_yaml(path).get("templates")
    if not isinstance(templates, list) or not templates:
        raise UserError(f"{path}: 'templates' must be a non-empty list")
    check_templates(templates, where=str(path))
    return list(templates)


def _resolve_panel(data: dict, path: Path) -> None:
    """Each set names its panel; its wordings are the default templates (data, not code)."""
    if "panel" not in data:
        return
    data["panel_templates"] = load_panel(data["panel"], where=str(path))
    data.setdefault("templates", data["panel_templates"])


def check_templates(templates, *, where: str) -> None:
    """Each template fills one label with str.format: exactly one '{}' and no other braces."""
    for t in templates:
        if not isinstance(t, str) or t.count("{}") != 1 or "{" in t.replace("{}", ""):
            raise UserError(f"{where}: template {t!r} must contain exactly one '{{}}' "
                            "and no other braces")


def _validate(data: dict, path: Path) -> None:
    templates = data.get("templates")
    if not isinstance(templates, list) or not templates:
        raise UserError(f"{path}: 'templates' must be a non-empty list")
    check_templates(templates, where=str(path))
    classes = data.get("classes")
    if not isinstance(classes, list) or not classes:
        raise UserError(f"{path}: 'classes' must be a non-empty list")
    seen = set()
    for c in classes:
        if not isinstance(c, dict) or not isinstance(c.get("label"), str) or not c["label"]:
            raise UserError(f"{path}: every class needs a non-empty 'label' string, got {c!r}")
        if c["label"] in seen:
            raise UserError(f"{path}: class {c['label']!r} appears twice")
        seen.add(c["label"])
