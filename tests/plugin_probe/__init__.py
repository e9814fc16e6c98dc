"""A third-party probe, as a plugin package would ship it: registered through the
`clip_audit.probes` entry point, with its own metrics and its own report partial."""
from dataclasses import dataclass
from pathlib import Path

from audit.registry import Metric
from audit.results import ProbeResult, row


class WidgetProbe:
    """Counts widgets (a test plugin)."""
    name = "widget_probe"
    title = "Widget harm"
    metrics = {"harm_rate": Metric("Harmful widget labels", "fraction", worse="up"),
               "quality": Metric("Widget quality", "fraction", worse="down")}
    row_keys = ("widget",)
    templates = Path(__file__).parent / "templates"
    reference = Path(__file__).parent / "reference.yaml"   # its own published numbers
    requires = ()

    @dataclass(frozen=True)
    class Config:
        harm: float = 0.1  # the harm rate it reports

    def run(self, ctx, cfg):
        return ProbeResult(rows=[row("harm_rate", cfg.harm, ci_low=cfg.harm - 0.01,
                                     ci_high=cfg.harm + 0.01, n=1000, widget="w1")])
