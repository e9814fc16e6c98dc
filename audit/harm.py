"""Harm rates of a label set with categories (FairFace's: non-human, crime): which images a
zero-shot classifier puts into a harmful class, under the label set's headline wording (the
ensemble of its templates) and under each wording of its panel alone (the class weights of both:
audit.tasks.label_set_weights).

Probes never import each other (DESIGN.md): fairface_label_bias (harm by group) and
distribution_shift (harm under corruption) share these pieces, so a harm rate means the same in
both. The rates themselves (metric -> categories counted) are audit.labels.HARM_RATES.
"""
from __future__ import annotations

import numpy as np

from audit.labels import HARM_RATES


def indicators(pred: np.ndarray, classes: list[dict], rates=HARM_RATES) -> dict:
    """{rate metric: bool per image}: the predicted class (index into `classes`) is in one of
    the rate's categories."""
    category = np.array([c.get("category", "") for c in classes])[pred]
    return {m: np.isin(category, rates[m][0]) for m in rates}
