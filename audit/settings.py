"""Probe settings: `audit run --set PROBE.FIELD=VALUE`, type- and range-checked before anything loads.

A probe's `Config` is a frozen dataclass whose defaults say each field's type. A field may also
declare its valid range next to its commented default:

    n_boot: int = setting(1000, min=1)              # bootstrap resamples
    alpha: float = setting(0.05, above=0, below=1)  # 1 - confidence level

`min`/`max` are inclusive bounds, `above`/`below` exclusive ones. A value outside them, of the
wrong type (2.5 for an int), or for an unknown probe or field is a UserError naming the --set
item, raised before the model or any source is read: a typo must not cost minutes of loading.
"""
import dataclasses
import json
import math

from audit.errors import UserError

BOUNDS = ("min", "max", "above", "below")


def setting(default, *, min=None, max=None, above=None, below=None):
    """A Config field with its valid range (the bounds live in the field's metadata)."""
    bounds = {k: v for k, v in dict(min=min, max=max, above=above, below=below).items() if v is not None}
    return dataclasses.field(default=default, metadata={"range": bounds})


def probe_configs(names: list[str] | None, overrides: list[str]) -> dict:
    """{probe name: its Config with the user's --set overrides}, all checked up front."""
    from audit.registry import get_probe, list_probes

    names = [get_probe(n).name for n in names] if names else list_probes()
    values = parse_overrides(overrides)
    unknown = sorted(set(values) - set(names))
    if unknown:
        raise UserError(f"--set {unknown[0]}.…: not a probe of this run ({', '.join(names)})")
    return {n: make_config(get_probe(n), values.get(n, {})) for n in names}


def parse_overrides(items: list[str]) -> dict[str, dict[str, str]]:
    """["distribution_shift.subsample=1000"] -> {"distribution_shift": {"subsample": "1000"}}.
    Values stay text here: what they mean depends on the field's type (make_config)."""
    out: dict[str, dict] = {}
    for item in items:
        key, eq, value = item.partition("=")
        probe, dot, name = key.strip().partition(".")
        if not (eq and dot and probe and name):
            raise UserError(f"--set {item}: expected PROBE.FIELD=VALUE, e.g. distribution_shift.subsample=1000")
        out.setdefault(probe, {})[name.strip()] = value.strip()
    return out


def make_config(cls, values: dict[str, str]):
    """The probe's frozen Config with the user's overrides, each converted by its field's type."""
    fields = {f.name: f for f in dataclasses.fields(cls.Config)}
    defaults = cls.Config()
    typed = {}
    for name, text in values.items():
        if name not in fields:
            raise UserError(f"--set {cls.name}.{name}: no such setting; {cls.name} has: {', '.join(fields)}")
        where = f"--set {cls.name}.{name}={text}"
        typed[name] = convert(text, getattr(defaults, name), where=where, annotation=str(fields[name].type))
        check_range(typed[name], fields[name].metadata.get("range") or {}, where=where)
    return dataclasses.replace(defaults, **typed)


def convert(text: str, default, *, where: str, annotation: str = ""):
    """The text of a --set value as the type of the field's default (`str | None` fields: text
    or null, from the annotation, since a None default says nothing of the type)."""
    if isinstance(default, str) or (default is None and "str" in annotation):
        return None if default is None and text == "null" else text  # names, paths: never JSON ("1" stays "1")
    value = _json(text)
    if default is None:
        return value
    if isinstance(default, tuple):
        items = value if isinstance(value, list) else [value if isinstance(value, (int, float)) else text]
        sample = default[0] if default else None
        return tuple(convert(v if isinstance(v, str) else json.dumps(v), sample,
                             where=f"{where} (item {i + 1})") for i, v in enumerate(items))
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise UserError(f"{where}: expected true or false")
        return value
    if isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise UserError(f"{where}: expected a whole number")
        return value
    if isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise UserError(f"{where}: expected a number")
        return float(value)
    return value


def check_range(value, bounds: dict, *, where: str) -> None:
    """Every number of the value (a tuple's items too) within the field's declared bounds."""
    numbers = value if isinstance(value, tuple) else (value,)
    for v in numbers:
        if not isinstance(v, (int, float)) or isinstance(v, bool):
            continue
        lo, hi = bounds.get("min"), bounds.get("max")
        above, below = bounds.get("above"), bounds.get("below")
        if (lo is not None and v < lo) or (hi is not None and v > hi) or \
                (above is not None and v <= above) or (below is not None and v >= below):
            raise UserError(f"{where}: out of range (expected {describe(bounds)})")


def describe(bounds: dict) -> str:
    """{"min": 1} -> ">= 1"; {"above": 0, "below": 1} -> "> 0 and < 1"."""
    signs = {"min": ">=", "max": "<=", "above": ">", "below": "<"}
    return " and ".join(f"{signs[k]} {bounds[k]}" for k in BOUNDS if k in bounds)


def _json(text: str):
    try:
        return json.loads(text)
    except ValueError:
        return text
