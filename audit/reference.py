"""Published reference numbers, shown beside a probe's own (their sources: REFERENCE.md).

One place, one unit. A probe's published numbers are one data file of rows shaped like the
probe's own rows (metric, label_set, group_by, group, value, ci_low, ci_high and any row key),
each value in its metric's declared unit, as the probe's rows are: a rate is a fraction
(0.049 is 4.9%), never a percentage. A probe names its file as `reference` (a path), beside
its `templates`; the built-ins' files are label_sets/reference/<probe>.yaml (`builtin`), and a
plugin ships its own the same way. Probes quote the numbers in their summaries and report
partials draw them (`s.reference`): both read them through `of(probe)`, and reports compute
nothing from them.

A file holds:
    label  how the report names the numbers ("published reference (zero-shot CLIP ViT-L/14)")
    cites  what they are, quoted in a probe's summary (model, data, paper)
    model  the model of the rows that name none (a row may name another: `model: RN50x4`)
    note   what a reader must know to compare them (e.g. the prompt wording was never published)
    rows   the numbers; a row's group_by/group default to "overall"/"all", label_set and its
           interval to null, as audit.results.row's do
"""
from __future__ import annotations

import functools
from importlib import resources
from pathlib import Path

from audit.errors import UserError

ROW_DEFAULTS = {"label_set": None, "group_by": "overall", "group": "all", "value": None,
                "ci_low": None, "ci_high": None}
FILE_KEYS = ("label", "cites", "model", "note", "rows")


def builtin(probe_name: str) -> Path:
    """The shipped file of a built-in probe."""
    return Path(str(resources.files("label_sets"))) / "reference" / f"{probe_name}.yaml"


def of(probe) -> dict | None:
    """The published numbers a probe (its class) declares as `reference`, or None."""
    path = getattr(probe, "reference", None)
    if path is None:
        return None
    return load(str(path), units=_units(probe))


def _units(probe) -> tuple:
    """((metric, unit), ...) the probe declares: a row's metric must be one of them."""
    return tuple(sorted((name, m.unit) for name, m in (getattr(probe, "metrics", None) or {}).items()))


@functools.lru_cache(maxsize=32)
def load(path: str, *, units: tuple = ()) -> dict:
    """The file at `path`, checked and with each row's defaults filled in. Cached: the numbers
    never change during a process, and the report reads them once per section."""
    from audit.labels import read_yaml

    data = read_yaml(Path(path))
    unknown = sorted(set(data) - set(FILE_KEYS))
    if unknown or not isinstance(data.get("rows"), list) or not data["rows"]:
        raise UserError(f"{path}: a reference file holds {', '.join(FILE_KEYS)} "
                        f"(a non-empty list of rows){'; unknown: ' + ', '.join(unknown) if unknown else ''}")
    rows = [_row(r, data.get("model"), dict(units), path) for r in data["rows"]]
    return {**{k: data.get(k) for k in FILE_KEYS}, "rows": rows}


def _row(r, model, units: dict, path) -> dict:
    if not isinstance(r, dict) or not isinstance(r.get("metric"), str) or not _is_number(r.get("value")):
        raise UserError(f"{path}: every row needs a 'metric' and a numeric 'value', got {r!r}")
    if units and r["metric"] not in units:
        raise UserError(f"{path}: {r['metric']!r} is not a metric of the probe ({', '.join(sorted(units))})")
    row = {"metric": r["metric"], **ROW_DEFAULTS, "model": model, **r}  # keys in the rows' order
    if units.get(r["metric"]) == "fraction":  # one unit: a percentage here would read 100x too big
        for key in ("value", "ci_low", "ci_high"):
            if row[key] is not None and not 0 <= row[key] <= 1:
                raise UserError(f"{path}: {r['metric']} is a fraction; {key} {row[key]!r} is not "
                                f"in [0, 1] (write 0.049 for 4.9%)")
    return row


def find(reference: dict | None, **match) -> dict | None:
    """The first published row matching every key (None when there is none)."""
    return next(iter(select(reference, **match)), None)


def select(reference: dict | None, **match) -> list[dict]:
    rows = (reference or {}).get("rows") or []
    return [r for r in rows if all(r.get(k) == v for k, v in match.items())]


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)
