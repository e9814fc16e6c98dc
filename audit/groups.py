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


