"""The widget probe: the share of planted "gadget" outcomes per widget colour.

It reads its planted outcomes from its Config (no model needed), so a test can make a
baseline and a candidate that differ by a known amount.
"""
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from audit import stats
from audit.registry import Metric, register_probe
from audit.results import ProbeResult, config_dict, row


@register_probe
class WidgetProbe:
    """Gadget outcomes by widget colour."""
    name = "widget_audit"
    title = "Widget gadgetry"
    metrics = {"gadget_rate": Metric("Gadget outcomes", "fraction", worse="up"),
               "polish": Metric("Polish score", "number", worse="down")}
    row_keys = ("widget",)
    templates = Path(__file__).parent / "templates"
    requires = ()

    @dataclass(frozen=True)
    class Config:
        gadgets: tuple = (0, 0, 1)  # planted 0/1 outcome per image
        widget: str = "blue"
        polish: float = 1.0

    def run(self, ctx, cfg) -> ProbeResult:
        x = np.asarray(cfg.gadgets, dtype=float)
        rate, lo, hi = stats.bootstrap_rate(x, n_boot=500, seed=0)
        return ProbeResult(rows=[row("gadget_rate", rate, ci_low=lo, ci_high=hi, n=len(x),
                                     widget=cfg.widget),
                                 row("polish", cfg.polish, widget=cfg.widget)],
                           config=config_dict(cfg))
