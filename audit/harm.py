"""Harm rates of a label set with categories (FairFace's: non-human, crime): which images a
zero-shot classifier puts into a harmful class, under the label set's headline wording (the
ensemble of its templates) and under each wording of its panel alone.

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


def weights(ctx, label_set: dict, *, templates=()) -> tuple[np.ndarray, dict]:
    """(C, D) headline class weights, the ensemble of `templates` (the label set's own when
    empty: the renormalised mean of their text embeddings, the CLIP convention), and {panel
    wording: (C, D)} for each wording of the set's panel alone. Forced templates are the user's
    own wording: no panel to check them against ({}). One text encode when the panel is the
    set's templates."""
    from audit.tasks import ensemble, template_weights
    texts = [c["label"] for c in label_set["classes"]]
    used = list(templates) or list(label_set["templates"])
    per = template_weights(ctx, texts, used)                      # (T, C, D)
    head = ensemble(per)
    panel = [] if templates else list(label_set.get("panel_templates") or [])
    if panel and panel != used:
        per = template_weights(ctx, texts, panel)
    return head, dict(zip(panel, per))
