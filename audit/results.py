"""The results contract (DESIGN.md, schema_version 1): ProbeResult and results.json."""
import dataclasses
import json
import math
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from audit.errors import UserError
from audit.io import atomic_write_json

SCHEMA_VERSION = 1
STATUSES = ("ok", "skipped", "error")
SEVERITIES = ("high", "medium", "low", "info")


@dataclass
class ProbeResult:
    status: str = "ok"
    summary: dict = field(default_factory=dict)
    rows: list = field(default_factory=list)
    findings: list = field(default_factory=list)
    config: dict = field(default_factory=dict)
    message: str | None = None  # why skipped, or the error
    # Images worth showing ({"source", "row", "caption"}): never written to results.json; the
    # runner turns them into thumbnails only under --include-examples (faces stay out by default).
    examples: list = field(default_factory=list)
    # Per-image outcomes for a paired `audit compare` (ImageOutcomes): never in results.json;
    # the runner writes them to outcomes.parquet, keyed by image content hash.
    image_outcomes: "ImageOutcomes | None" = None

    @classmethod
    def skipped(cls, why: str, config=None) -> "ProbeResult":
        return cls(status="skipped", message=why, config=config_dict(config))

    @classmethod
    def error(cls, why: str, config=None) -> "ProbeResult":
        return cls(status="error", message=why, config=config_dict(config))

    def to_json(self) -> dict:
        # Not asdict: it would deep-copy the per-image arrays only to drop them.
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
             if f.name not in ("examples", "image_outcomes")}
        d["config"] = config_dict(d["config"])
        if d["message"] is None:
            del d["message"]
        return jsonable(d)


@dataclass
class ImageOutcomes:
    """What a probe found for each image, so that two runs on the same images can be compared
    image by image (McNemar's test) rather than as two independent samples.

    `columns[name]` holds one bool per image of the source named `source` (its role, e.g.
    "fairface"), in the source's row order: True where the image counts towards the rows that
    `keys[name]` identifies (their metric, label_set and any declared row key, without
    group_by/group). Those rows' values must be the column's mean: over all images for group_by
    "overall", over one group's images otherwise. A row's groups are the source table's column
    of its group_by name, or `groups[group_by]` (one label per image, made by the probe: an age
    band, say)."""
    source: str
    columns: dict
    keys: dict
    groups: dict = field(default_factory=dict)


def config_dict(cfg) -> dict:
    if cfg is None:
        return {}
    return dataclasses.asdict(cfg) if dataclasses.is_dataclass(cfg) else dict(cfg)


def row(metric, value, *, label_set=None, group_by="overall", group="all",
        ci_low=None, ci_high=None, n=None, **extra) -> dict:
    """One tidy row; probes add keys such as template, corruption, k."""
    return {"metric": metric, "label_set": label_set, "group_by": group_by, "group": group,
            "value": value, "ci_low": ci_low, "ci_high": ci_high, "n": n, **extra}


def jsonable(obj):
    """numpy scalars/arrays, tuples, Paths and NaN made JSON-safe (NaN -> null)."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "tolist"):  # numpy scalar or array
        return jsonable(obj.tolist())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def schema() -> dict:
    return json.loads(resources.files("audit").joinpath("results.schema.json").read_text())


def write(results: dict, path: Path) -> Path:
    return atomic_write_json(path, jsonable(results))


def read(path: Path) -> dict:
    """Read a results.json; any problem is the user's file, reported in one line."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{path}: no such file") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(f"{path}: not a results.json ({e})") from None
    validate(data, source=str(path))
    return data


def validate(data: dict, *, source: str = "results") -> None:
    import jsonschema

    try:
        jsonschema.validate(data, schema())
    except jsonschema.ValidationError as e:
        where = "/".join(str(p) for p in e.absolute_path) or "top level"
        raise UserError(f"{source}: does not follow the results schema at {where}: {e.message}") from None
