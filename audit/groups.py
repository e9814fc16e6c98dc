"""Intersectional groups (issue 16.5): the crossings of two attributes that harm concentrates in,
as DataComp's FairFace table and FACET report them (race x gender), plus age band x gender.

A crossing is one more group column of the source table, so every probe's group code, small-group
rule and multiple-comparison family treat it like an attribute. Rows of a crossing carry the two
parts as keys of their own (`race`, `gender`), so a report can lay them out as a heatmap without
parsing the group name.
"""
from __future__ import annotations

import pandas as pd

# FairFace's age buckets -> bands coarse enough that a band x gender group keeps its images.
AGE_BANDS = {"0-2": "under 20", "3-9": "under 20", "10-19": "under 20",
             "20-29": "20-39", "30-39": "20-39", "40-49": "40-59", "50-59": "40-59",
             "60-69": "60 and over", "more than 70": "60 and over"}
# group_by name -> the two columns crossed
CROSSINGS = {"race_x_gender": ("race", "gender"), "age_band_x_gender": ("age_band", "gender")}
SEP = " / "


def with_crossings(table: pd.DataFrame, crossings=tuple(CROSSINGS)) -> tuple[pd.DataFrame, tuple]:
    """The table with an `age_band` column (when it has `age`) and a column for each of
    `crossings` whose two parts it has; and the names of the crossings added."""
    table = table.copy()
    if "age" in table:
        table["age_band"] = table["age"].astype(str).map(AGE_BANDS).fillna(table["age"].astype(str))
    added = []
    for name in crossings:
        a, b = CROSSINGS[name]
        if a in table and b in table:
            table[name] = table[a].astype(str) + SEP + table[b].astype(str)
            added.append(name)
    return table, tuple(added)


def parts(group_by: str, group: str) -> dict:
    """{"race": "Black", "gender": "Female"} for a crossing's group; {} for a plain attribute."""
    if group_by not in CROSSINGS or SEP not in str(group):
        return {}
    return dict(zip(CROSSINGS[group_by], str(group).split(SEP, 1)))


def components(group_by: str) -> tuple:
    """The attributes a group column is made of (itself for a plain one)."""
    return CROSSINGS.get(group_by, (group_by,))




# -- group columns of a classify source (group_accuracy, `audit run --group-by`) ---------------
# Looked for when --group-by names none, in this order: geography and income as Dollar Street,
# GeoDE and DataComp's evaluations group them. `income` only where no `income_group` is (the
# Dollar Street reader keeps the raw number beside its bins).
KNOWN_GROUP_COLUMNS = ("region", "income_group", "income_level", "income", "country")
SUPERSEDED = {"income": "income_group"}
INCOME_BINS = "income_quartiles"  # label_sets/groups/<name>.yaml
NUMERIC_GROUPS_MAX = 12  # a numeric column with more distinct values is binned (INCOME_BINS)


def group_columns_of(table: pd.DataFrame, requested=None, *, where: str) -> list[str]:
    """The columns to group a classify source by: `requested` (each must be there, else one
    UserError naming the source and its columns), or the known ones it has."""
    from audit.errors import UserError

    if requested:
        missing = [c for c in requested if c not in table.columns]
        if missing:
            raise UserError(f"{where}: no column {', '.join(missing)} to group by (--group-by); "
                            f"its columns: {', '.join(map(str, table.columns))}")
        return list(requested)
    return [c for c in KNOWN_GROUP_COLUMNS
            if c in table.columns and SUPERSEDED.get(c) not in table.columns]


def load_bins(name: str = INCOME_BINS) -> dict:
    """A binning rule, label_sets/groups/<name>.yaml (or a YAML path): `labels` and either
    `quantiles` or `edges`, one cut fewer than labels."""
    from importlib import resources
    from pathlib import Path

    from audit.errors import UserError
    from audit.labels import read_yaml

    path = Path(name) if name.endswith((".yaml", ".yml")) else \
        Path(str(resources.files("label_sets"))) / "groups" / f"{name}.yaml"
    rule = read_yaml(path)
    cuts = rule.get("quantiles", rule.get("edges"))
    labels = rule.get("labels")
    if not isinstance(cuts, list) or not isinstance(labels, list) or len(labels) != len(cuts) + 1:
        raise UserError(f"{path}: needs 'labels' and 'quantiles' (or 'edges'), one cut fewer than labels")
    return {**rule, "path": str(path)}


def bin_numeric(values, rule: dict) -> tuple[list[str], list[float]]:
    """Each value's bin label under `rule` (load_bins) and the inner edges used: a value on an
    edge goes to the lower bin. Quantiles are of these values themselves."""
    import numpy as np

    x = np.asarray(values, dtype=float)
    edges = np.quantile(x, rule["quantiles"]) if "quantiles" in rule else np.asarray(rule["edges"], dtype=float)
    codes = np.searchsorted(edges, x, side="left")
    return [rule["labels"][c] for c in codes], [float(e) for e in edges]


def is_numeric(values) -> bool:
    return pd.to_numeric(pd.Series(values), errors="coerce").notna().all()
