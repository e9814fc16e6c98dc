"""Talking to the Hugging Face Hub only when it can answer.

Offline, huggingface_hub retries each file for ~20 s before failing. One quick connection test
up front lets us switch it to cache-only mode, so a cached model still loads and a missing one
fails at once with our own one-line message.
"""
import logging
import os
import socket
import sys
from functools import lru_cache

HUB_HOST = "huggingface.co"


@lru_cache(maxsize=1)
def hub_reachable(timeout: float = 2.0) -> bool:
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
        return False
    try:
        socket.create_connection((HUB_HOST, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def prepare() -> bool:
    """Call before any hub access; returns whether the hub is online."""
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")  # SECURITY.md: no telemetry
    online = hub_reachable()
    logging.getLogger("huggingface_hub").setLevel(logging.ERROR)
    if not online:
        os.environ["HF_HUB_OFFLINE"] = "1"
        os.environ["HF_DATASETS_OFFLINE"] = "1"
        import huggingface_hub.constants as hc

        hc.HF_HUB_OFFLINE = True
        # datasets reads HF_DATASETS_OFFLINE when imported: only a copy imported already needs
        # telling (importing it here would cost every model load half a second).
        dc = sys.modules.get("datasets.config")
        if dc is not None:
            dc.HF_HUB_OFFLINE = True
    return online
