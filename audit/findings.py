"""What findings of several probes share (probes never import each other, DESIGN.md).

The wording-robustness rule (issue 15) as a finding carries it: a verdict is drawn from the
headline (the panel's ensemble) and re-tested under each panel wording alone; the evidence says
under how many it holds (k of K), and one that holds under fewer than two thirds of them
(`stats.is_robust`) is wording-dependent, severity "low". fairface_label_bias and
person_class_bias build their findings through `with_robustness`.
"""
from __future__ import annotations

from audit import stats


def with_robustness(finding: dict, robust: dict) -> dict:
    """A finding that holds under fewer than 2/3 of the panel's wordings is wording-dependent:
    severity low, naming the wordings it appears under (the verdict hangs on the prompt).
    `robust` holds `wordings_holding`, `wordings`, `wordings_held` and any per-wording values
    (all go into the evidence); empty means no panel to check against: unchanged."""
    if not robust:
        return finding
    finding["evidence"].update(robust)
    k, n = robust["wordings_holding"], robust["wordings"]
    if stats.is_robust(k, n):
        finding["message"] += f" Holds under {k} of {n} wordings."
        return finding
    shown = ", ".join(repr(w) for w in robust["wordings_held"][:4]) or "none alone"
    finding["severity"] = "low"
    finding["message"] = (f"Wording-dependent: {finding['message']} Holds under only {k} of {n} wordings "
                          f"({shown}), fewer than two thirds.")
    return finding
