"""The probe registry. Built-in probes and third-party plugins register the same way.

Built-ins: every module in the `probes` package is imported and its `@register_probe` classes
land here. Plugins: an entry point in the group `clip_audit.probes` pointing at a module or a
probe class; loading it runs the same decorator.

A probe describes itself, so that compare, gates and the report never hard-code one:
    title = "FairFace label bias"
    metrics = {"non_human_rate": Metric("Non-human labels", "fraction", worse="up"), ...}
    row_keys = ("template",)               # row keys beyond metric/label_set/group_by/group
    headline = ({"corruption": ["clean", None]},)   # optional: which rows over all images are
                                            # headline numbers (audit.table): any filter matches;
                                            # a list is "any of", None an absent key
    templates = Path(__file__).parent / "templates"   # optional: a folder holding
                                            # "<name>.html.j2", its report partial (datasette's
                                            # plugins report their templates path the same way)
    reference = Path(__file__).parent / "reference.yaml"   # optional: its published numbers
                                            # (audit/reference.py), shown beside its own
`probe_meta(cls)` turns that into the JSON the runner writes as `probes.<name>.meta`.
"""
import importlib
import logging
import pkgutil
from dataclasses import dataclass

from audit.errors import UserError

ENTRY_POINT_GROUP = "clip_audit.probes"
_PROBES: dict[str, type] = {}
_loaded = False
log = logging.getLogger(__name__)
UNITS = ("fraction", "points", "ratio", "number", "count")
WORSE = ("up", "down", None)
BASE_ROW_KEYS = ("label_set", "group_by", "group")


@dataclass(frozen=True)
class Metric:
    """One metric a probe reports. unit: "fraction" (a share, shown as a percentage), "points"
    (a difference of two fractions, shown in percentage points), "ratio", "number" or "count".
    worse: which way is a regression ("up", "down"), or None when neither is."""
    title: str
    unit: str = "number"
    worse: str | None = None
    description: str = ""

    def __post_init__(self):
        if self.unit not in UNITS:
            raise TypeError(f"Metric {self.title!r}: unit must be one of {UNITS}, got {self.unit!r}")
        if self.worse not in WORSE:
            raise TypeError(f"Metric {self.title!r}: worse must be 'up', 'down' or None")

    def to_json(self) -> dict:
        return {"title": self.title, "unit": self.unit, "worse": self.worse,
                "description": self.description}


def register_probe(cls: type) -> type:
    """Class decorator: a probe has `name`, `requires`, a frozen `Config` and `run(ctx, cfg)`."""
    for attr in ("name", "Config", "run"):
        if not hasattr(cls, attr):
            raise TypeError(f"probe {cls.__name__} lacks {attr!r}")
    if not hasattr(cls, "requires"):
        cls.requires = ()
    for name, m in getattr(cls, "metrics", {}).items():
        if not isinstance(m, Metric):
            raise TypeError(f"probe {cls.__name__}: metrics[{name!r}] must be a Metric")
    if not all(isinstance(f, dict) for f in getattr(cls, "headline", None) or ()):
        raise TypeError(f"probe {cls.__name__}: headline must be a sequence of row filters (dicts)")
    _PROBES[cls.name] = cls
    return cls


def probe_meta(cls: type) -> dict:
    """The probe's self-description, JSON-safe: written into results.json as probes.<name>.meta."""
    templates = getattr(cls, "templates", None)
    return {"title": getattr(cls, "title", None) or cls.name.replace("_", " ").capitalize(),
            "description": (cls.__doc__ or "").strip().split("\n")[0],
            "metrics": {k: m.to_json() for k, m in getattr(cls, "metrics", {}).items()},
            "row_keys": list(getattr(cls, "row_keys", ())),
            "headline": _headline_filters(cls),
            "templates": None if templates is None else str(templates)}


def _headline_filters(cls: type) -> list[dict] | None:
    filters = getattr(cls, "headline", None)
    if filters is None:
        return None
    return [{k: list(v) if isinstance(v, (list, tuple)) else v for k, v in f.items()} for f in filters]


def known_meta() -> dict:
    """{probe name: meta} of every registered probe (for results written before meta existed)."""
    _load_all()
    return {name: probe_meta(cls) for name, cls in _PROBES.items()}


def _load_all() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    import probes

    for mod in pkgutil.iter_modules(probes.__path__):
        importlib.import_module(f"probes.{mod.name}")
    _load_entry_points()


def _plugins(group: str, kind: str):
    """(name, object) of each installed entry point of `group` that loads; probes and model
    loaders both come in this way, like the built-ins' decorators."""
    from importlib.metadata import entry_points

    for ep in entry_points(group=group):
        try:
            yield ep.name, ep.load()
        except Exception as e:  # a broken plugin must not take the built-ins down with it
            log.warning("could not load %s plugin %s: %s", kind, ep.name, e)


def _load_entry_points() -> None:
    for _, obj in _plugins(ENTRY_POINT_GROUP, "probe"):
        if isinstance(obj, type) and obj not in _PROBES.values():
            register_probe(obj)


def list_probes() -> list[str]:
    _load_all()
    return sorted(_PROBES)


def get_probe(name: str) -> type:
    _load_all()
    if name not in _PROBES:
        raise UserError(f"unknown probe {name!r}; available: {', '.join(sorted(_PROBES))}")
    return _PROBES[name]


# -- model loaders ----------------------------------------------------------------------------
# The same pattern for models: built-in loaders (audit/loaders/) and plugins in the entry point
# group `clip_audit.models` land in one table. A loader is `load(spec, *, pretrained, arch, trust)`
# returning an audit.loaders.Loaded; `matches(spec, pretrained)` says whether it takes the spec.
# Plugins are tried first, then built-ins by ascending `order` (the open_clip name is the fallback).
MODEL_ENTRY_POINT_GROUP = "clip_audit.models"
_LOADERS: dict[str, "ModelLoader"] = {}
_models_loaded = False


class ModelLoader:
    def __init__(self, name, load, matches, doc="", order=50):
        self.name, self.load, self.matches, self.doc, self.order = name, load, matches, doc, order


def register_model_loader(name: str, *, matches, doc: str = "", order: int = 50):
    """Decorator on a load function; a plugin may call it too."""
    def wrap(fn):
        _LOADERS[name] = ModelLoader(name, fn, matches, doc or (fn.__doc__ or "").strip(), order)
        return fn
    return wrap


def _load_model_loaders() -> None:
    global _models_loaded
    if _models_loaded:
        return
    _models_loaded = True
    import audit.loaders  # noqa: F401  (registers the built-ins)

    for name, obj in _plugins(MODEL_ENTRY_POINT_GROUP, "model"):
        if callable(obj) and name not in _LOADERS:
            from audit.loaders.plugin import plugin_loader

            _LOADERS[name] = plugin_loader(name, obj)


def list_model_loaders() -> list[ModelLoader]:
    _load_model_loaders()
    return sorted(_LOADERS.values(), key=lambda ld: (ld.order, ld.name))


def find_model_loader(spec: str, pretrained: str | None) -> ModelLoader:
    for loader in list_model_loaders():
        if loader.matches(spec, pretrained):
            return loader
    raise UserError(f"{spec}: no model loader takes this spec (see `audit models`)")
