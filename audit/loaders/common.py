"""Helpers every loader shares: quiet library warnings and one-line errors."""
import logging
import warnings
from contextlib import contextmanager

log = logging.getLogger("audit.models")


def first_line(e: BaseException) -> str:
    text = str(e).strip() or type(e).__name__
    return text.splitlines()[0][:300]


@contextmanager
def held_warnings():
    """Library UserWarnings are logged only once loading succeeded: a one-line error must be
    the first thing the user reads, not a warning about the thing that failed."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    for w in caught:
        log.debug("%s: %s", w.category.__name__, w.message)


def openclip_preprocess_info(cfg: dict) -> dict:
    size = cfg.get("size", 224)
    return {"size": size, "crop": cfg.get("resize_mode", "shortest") != "squash",
            "mean": list(cfg.get("mean") or ()), "std": list(cfg.get("std") or ()),
            "interpolation": cfg.get("interpolation", "bicubic"),
            "resize_mode": cfg.get("resize_mode", "shortest")}


def openclip_tokenizer_info(tok) -> dict:
    name = getattr(tok, "tokenizer_name", None) or type(tok).__name__
    # open_clip's SimpleTokenizer pads with zeros to context_length; the text tower pools at argmax
    return {"name": name, "context_length": getattr(tok, "context_length", None),
            "padding": "max_length"}
