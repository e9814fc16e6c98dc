"""Per-image outcomes beside results.json (outcomes.parquet): what a paired `audit compare` of two
runs on the same images needs, and nothing more: no pixels, no file names.

One row per image of each source a probe reported on: `source` (its role), `image` (the sha256
of its bytes, 32 raw bytes: the id a paired comparison names), the group labels the probes'
rows split by (`by/<column>` from the source table, `<probe>/by/<name>` made by a probe) and one
bool column per probe outcome, `<probe>/<name>` (null on another source's images). results.json
records the file as `outcomes`: name, rows, sha256, and per probe its source, the row identity
of each column and the file column of each group_by. That sha256 binds the two files: a stale
or edited outcomes.parquet is refused, and the comparison falls back to the unpaired test.
"""
from __future__ import annotations

import hashlib
import io
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

FILE = "outcomes.parquet"
TABLE_GROUP, PROBE_GROUP = "by/", "/by/"


@dataclass
class Built:
    data: bytes    # the parquet file, written with results.json (audit.io.write_together)
    record: dict   # results.json's `outcomes` entry


@dataclass
class Loaded:
    frame: "object"        # pandas.DataFrame, `image` as hex strings; None when unusable
    record: dict | None    # results.json's `outcomes`
    note: str | None = None  # why there is no frame


def collect(results_by_probe: dict, probe_json: dict, sources: dict) -> Built | None:
    """The run's outcomes from each ok probe's ImageOutcomes; None when no probe gave any. A
    malformed one (a probe bug) is dropped with a warning: it costs the paired test, not the run."""
    from audit.results import jsonable

    parts, probes = {}, {}
    for name, result in results_by_probe.items():
        got = getattr(result, "image_outcomes", None)
        if got is None or probe_json[name]["status"] != "ok":
            continue
        problem = _problem(got, sources)
        if problem:
            log.warning("%s: per-image outcomes dropped: %s", name, problem)
            continue
        src = sources[got.source]
        part = parts.setdefault(got.source, {"image": [src.content_hash(i) for i in range(len(src))]})
        groups = _groups(name, got, src, probe_json[name]["rows"], part)
        part.update({f"{name}/{col}": np.asarray(v).astype(bool) for col, v in got.columns.items()})
        probes[name] = {"source": got.source, "groups": groups,
                        "columns": {f"{name}/{col}": jsonable(got.keys[col]) for col in got.columns}}
    if not probes:
        return None
    data = _parquet(parts)
    return Built(data, {"file": FILE, "format": "parquet",
                        "rows": sum(len(p["image"]) for p in parts.values()),
                        "sha256": hashlib.sha256(data).hexdigest(), "probes": probes})


def _problem(got, sources: dict) -> str | None:
    if got.source not in sources:
        return f"no source {got.source!r} in this run"
    n = len(sources[got.source])
    for col, values in got.columns.items():
        v = np.asarray(values)
        if not isinstance(col, str) or not col or col.startswith(TABLE_GROUP):
            return f"column name {col!r} (a non-empty string, not starting with {TABLE_GROUP!r})"
        if v.shape != (n,):
            return f"column {col!r} has shape {v.shape}, the source has {n} images"
        if v.dtype != bool and not np.isin(v, (0, 1)).all():
            return f"column {col!r} is not one bool per image"
        if not isinstance(got.keys.get(col), dict) or "metric" not in got.keys[col]:
            return f"column {col!r} names no rows (keys[{col!r}] needs at least a metric)"
    bad = [g for g, v in got.groups.items() if np.asarray(v).shape != (n,)]
    return f"groups {bad} are not one label per image" if bad else None


def _groups(name: str, got, src, rows: list, part: dict) -> dict:
    """{group_by: file column} for every group_by of the probe's rows that a label per image
    resolves: the probe's own labels first, else the source table's column of that name. Only
    those columns are stored: nothing of the table the rows do not split by."""
    out = {}
    for g in sorted({r.get("group_by") for r in rows} - {"overall", None}):
        if g in got.groups:
            out[g] = f"{name}{PROBE_GROUP}{g}"
            part[out[g]] = np.asarray(got.groups[g]).astype(str)
        elif g in src.table.columns:
            out[g] = f"{TABLE_GROUP}{g}"
            part.setdefault(out[g], src.table[g].astype(str).to_numpy())
    return out


def _parquet(parts: dict) -> bytes:
    """Sources one after another, each in its row order; raw 32-byte hashes (a third of hex)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    tables = []
    for source in sorted(parts):
        cols = parts[source]
        n = len(cols["image"])
        arrays = {"source": pa.array([source] * n, pa.string()),
                  "image": pa.array([bytes.fromhex(h) for h in cols["image"]], pa.binary(32))}
        for k, v in cols.items():
            if k != "image":
                arrays[k] = pa.array(v, pa.bool_() if v.dtype == bool else pa.string())
        tables.append(pa.table(arrays))
    table = pa.concat_tables(tables, promote_options="default")
    buf = io.BytesIO()
    # Strings and bools compress to almost nothing under dictionary/RLE; the hashes cannot.
    pq.write_table(table, buf, compression="zstd",
                   use_dictionary=[c for c in table.column_names if c != "image"])
    return buf.getvalue()


def load(results_path, results: dict) -> Loaded:
    """The outcomes a results.json names, checked against the sha256 it records. Any problem
    is a note (the comparison then falls back to the unpaired test), never an error."""
    record = results.get("outcomes")
    if not record:
        return Loaded(None, None, "records no per-image outcomes")
    name = str(record.get("file") or "")
    if Path(name).name != name or name.startswith("."):  # a results.json names a file beside it, no path
        return Loaded(None, record, f"names an outcomes file {name!r} that is not beside it")
    path = Path(results_path).parent / name
    try:
        data = path.read_bytes()
    except OSError as e:
        return Loaded(None, record, f"{path}: cannot read ({e.strerror or e})")
    if hashlib.sha256(data).hexdigest() != record.get("sha256"):
        return Loaded(None, record, f"{path} does not match the sha256 its results.json records "
                                    "(stale or edited)")
    try:
        return Loaded(frame(data), record)
    except Exception as e:  # pyarrow raises its own zoo on a damaged file
        return Loaded(None, record, f"{path}: not readable parquet ({type(e).__name__})")


def from_built(built: Built | None) -> Loaded:
    """The run's own outcomes, read back exactly as a later `audit compare` will read them."""
    if built is None:
        return Loaded(None, None, "records no per-image outcomes")
    return Loaded(frame(built.data), built.record)


def frame(data: bytes):
    import pyarrow as pa
    import pyarrow.parquet as pq

    df = pq.read_table(pa.BufferReader(data)).to_pandas()
    df["image"] = [b.hex() for b in df["image"]]
    return df
