"""Example thumbnails for the report, made while the run still has the images.

Only under `audit run --include-examples`: faces are personal data, so neither results.json nor
the report carries any by default, and `audit report` cannot add them later (results.json holds
no image). The report only shows what it is given (reports/render.py keeps inline raster data
URIs and drops anything else).
"""
from __future__ import annotations

import base64
import io


def thumbnail(image, *, size: int = 96, quality: int = 80) -> str:
    """A PIL image -> small JPEG data: URI for `probes.<name>.examples[].thumbnail`."""
    img = image.convert("RGB")
    img.thumbnail((size, size))
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def for_report(examples: dict, sources: dict, *, per_probe: int = 24) -> dict:
    """{probe: [{"thumbnail": data URI, "caption"}]} from each probe's ProbeResult.examples
    ({"source", "row", "caption"}), for the report alone, never results.json."""
    return {name: [{"thumbnail": thumbnail(sources[e["source"]].image(e["row"])), "caption": e["caption"]}
                   for e in items[:per_probe]]
            for name, items in examples.items() if items}
