"""Models from outside: an entry point in `clip_audit.models`, or audit.api. A plugin is a
callable taking the rest of the spec (`NAME:REST` -> REST) and returning an object with
encode_image(pixels), encode_text(tokens), preprocess(PIL image) and tokenizer(list[str])."""
from audit.errors import UserError
from audit.loaders import Loaded
from audit.registry import ModelLoader


def wrap_object(obj, *, name: str, source: str) -> Loaded:
    for attr in ("encode_image", "encode_text", "preprocess", "tokenizer"):
        if not hasattr(obj, attr):
            raise UserError(f"{name}: the model object lacks {attr!r} (see audit.api)")
    model = obj if hasattr(obj, "to") else _Movable(obj)
    return Loaded(model=model, preprocess=obj.preprocess, tokenizer=obj.tokenizer, arch=name, source=source,
                  library=type(obj).__module__.split(".")[0], cls=type(obj).__name__,
                  preprocess_info={"repr": repr(obj.preprocess)[:500]},
                  tokenizer_info={"name": type(obj.tokenizer).__name__,
                                  "context_length": getattr(obj.tokenizer, "context_length", None),
                                  "padding": getattr(obj.tokenizer, "padding", None)},
                  config={"plugin": name})


class _Movable:
    """An encoder that is not a torch Module: .to()/.eval() are no-ops, encode_* pass through."""
    def __init__(self, obj):
        self.obj = obj

    def to(self, device):
        return self

    def eval(self):
        return self

    def encode_image(self, x):
        return self.obj.encode_image(x)

    def encode_text(self, x):
        return self.obj.encode_text(x)

    def state_dict(self):
        return getattr(self.obj, "state_dict", dict)()


def plugin_loader(name: str, factory) -> ModelLoader:
    def load(spec, **_):
        rest = spec[len(name) + 1:] if spec.startswith(name + ":") else ""
        return wrap_object(factory(rest), name=name, source=f"plugin:{spec}")

    return ModelLoader(name, load, lambda spec, pre: spec == name or spec.startswith(name + ":"),
                       doc=(factory.__doc__ or "plugin").strip().splitlines()[0], order=-1)
