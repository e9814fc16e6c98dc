"""The probe registry. Built-in probes and third-party plugins register the same way.

Built-ins: every module in the `probes` package is imported and its `@register_probe` classes
land here. Plugins: an entry point in the group `clip_audit.probes` pointing at a module or a
probe class; loading it runs the same decorator.
"""
import importlib
import logging
import pkgutil

from audit.errors import UserError

ENTRY_POINT_GROUP = "clip_audit.probes"
_PROBES: dict[str, type] = {}
_loaded = False
log = logging.getLogger(__name__)


def register_probe(cls: type) -> type:
    """Class decorator: a probe has `name`, `requires`, a frozen `Config` and `run(ctx, cfg)`."""
    for attr in ("name", "Config", "run"):
        if not hasattr(cls, attr):
            raise TypeError(f"probe {cls.__name__} lacks {attr!r}")
    if not hasattr(cls, "requires"):
        cls.requires = ()
    _PROBES[cls.name] = cls
    return cls


def _load_all() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    import probes

    for mod in pkgutil.iter_modules(probes.__path__):
        importlib.import_module(f"probes.{mod.name}")
    _load_entry_points()


def _load_entry_points() -> None:
    from importlib.metadata import entry_points

    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            obj = ep.load()
        except Exception as e:  # a broken plugin must not take the built-ins down with it
            log.warning("could not load probe plugin %s: %s", ep.name, e)
            continue
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
    from importlib.metadata import entry_points

    for ep in entry_points(group=MODEL_ENTRY_POINT_GROUP):
        try:
            obj = ep.load()
        except Exception as e:  # a broken plugin must not take the built-ins down with it
            log.warning("could not load model plugin %s: %s", ep.name, e)
            continue
        if callable(obj) and ep.name not in _LOADERS:
            from audit.loaders.plugin import plugin_loader

            _LOADERS[ep.name] = plugin_loader(ep.name, obj)


def list_model_loaders() -> list[ModelLoader]:
    _load_model_loaders()
    return sorted(_LOADERS.values(), key=lambda ld: (ld.order, ld.name))


def find_model_loader(spec: str, pretrained: str | None) -> ModelLoader:
    for loader in list_model_loaders():
        if loader.matches(spec, pretrained):
            return loader
    raise UserError(f"{spec}: no model loader takes this spec (see `audit models`)")
