"""Example thumbnails for the report, made while the run still has the images.

Only under `audit run --include-examples`: faces are personal data, so neither results.json nor
the report carries any by default, and `audit report` cannot add them later (results.json holds
no image). The report only shows what it is given (reports/render.py keeps inline raster data
URIs and drops anything else).

`audit compare --include-examples` shows the images that moved between two runs: it reopens the
source that results.json names (`data.<role>.spec`), checks that it is still the same data (its
fingerprint), and finds each moved image by its sha256. Only the HTML carries them;
compare.json keeps the hashes alone.
"""
from __future__ import annotations

import base64
import io
import logging

log = logging.getLogger(__name__)


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


def for_moved(moved: list, data: dict, *, per_outcome: int = 24) -> dict:
    """{sha256: data URI} for the first `per_outcome` images each way of every `moved` entry
    (audit.paired), read from the sources `data` (a results.json `data` section) names. A source
    that cannot be reopened, or holds other data now, costs its thumbnails (one warning), not
    the comparison."""
    wanted: dict[str, set] = {}
    for mv in moved:
        wanted.setdefault(mv["source"], set()).update(mv["into"][:per_outcome] + mv["out_of"][:per_outcome])
    shown = {}
    for role, hashes in sorted(wanted.items()):
        source = _reopen(role, data.get(role) or {})
        if source is None:
            continue
        rows = {source.content_hash(i): i for i in range(len(source))}
        shown.update({h: thumbnail(source.image(rows[h])) for h in sorted(hashes) if h in rows})
    return shown


def _reopen(role: str, entry: dict):
    """The source results.json recorded for `role`, if it still holds the same data."""
    from audit.data import load_source
    from audit.errors import UserError

    spec, kind = entry.get("spec"), entry.get("kind")
    if not spec or not kind:
        log.warning("%s: results.json names no source to show its moved images from", role)
        return None
    try:
        source = load_source(spec, kind, name=role)
    except (UserError, OSError, ValueError) as e:
        log.warning("%s: cannot reopen %s to show its moved images (%s)", role, spec, e)
        return None
    if source.fingerprint != entry.get("fingerprint"):
        log.warning("%s: %s holds other data than the runs saw; its moved images are not shown", role, spec)
        return None
    return source
