"""Built-in model loaders. Each module registers its loaders with audit.registry, the same
table that `clip_audit.models` plugins land in; audit.models.load picks the first that matches."""
from dataclasses import dataclass, field


@dataclass
class Loaded:
    """What a loader hands back: a model with encode_image/encode_text, its preprocess and
    tokenizer, and what the results record and the cache key cover."""
    model: object
    preprocess: object
    tokenizer: object
    arch: str
    source: str
    library: str
    cls: str
    preprocess_info: dict = field(default_factory=dict)
    tokenizer_info: dict = field(default_factory=dict)
    config: dict = field(default_factory=dict)  # architecture config (activation included)


from audit.loaders import openclip, hf, openai_jit  # noqa: E402,F401  (register the built-ins)
