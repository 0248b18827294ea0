"""Is the Hub reachable? One short connect probe per endpoint, then cache-only (offline) if not.

Without it, a repo id with no reachable Hub retries for half a minute and ends in a traceback,
and a cached model retries dozens of times before loading. :func:`hub_or_offline` asks once::

    from hfcompress.reachability import hub_or_offline

    if not hub_or_offline():   # the Hub did not answer: this process now reads the cache only
        ...

Offline is ``HF_HUB_OFFLINE=1`` semantics for the rest of the process (huggingface_hub,
transformers and datasets read the same switch).
"""

from __future__ import annotations

import os
import socket
import sys
from urllib.parse import urlsplit

#: Seconds the connect probe waits: a Hub that answers at all answers a TCP connect much faster.
PROBE_TIMEOUT_S = 3.0

_probed: dict[tuple[str, int], bool] = {}


def hub_endpoint() -> str:
    """The Hub URL this process talks to (``HF_ENDPOINT`` or huggingface_hub's default)."""
    from huggingface_hub import constants

    return (os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")


def is_reachable(url: str, timeout: float = PROBE_TIMEOUT_S) -> bool:
    """Whether a TCP connection to ``url``'s host and port opens within ``timeout`` (cached per process)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    key = (host, port)
    if key not in _probed:
        try:
            with socket.create_connection(key, timeout=timeout):
                _probed[key] = True
        except OSError:
            _probed[key] = False
    return _probed[key]


def go_offline() -> None:
    """Cache-only for the rest of this process (what ``HF_HUB_OFFLINE=1`` does at start-up)."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    from huggingface_hub import constants

    constants.HF_HUB_OFFLINE = True
    datasets_config = sys.modules.get("datasets.config")
    if datasets_config is not None:
        datasets_config.HF_HUB_OFFLINE = True


def is_offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def hub_or_offline(url: str | None = None) -> bool:
    """True if the Hub (``url``, default :func:`hub_endpoint`) can be used; else switch this process to
    the cache (once, with one stderr line)."""
    if is_offline():
        return False
    url = (url or hub_endpoint()).rstrip("/")
    if is_reachable(url):
        return True
    go_offline()
    print(f"hfcompress: the Hub at {url} does not answer: using the local cache only (HF_HUB_OFFLINE=1)",
          file=sys.stderr, flush=True)
    return False


def unreachable_hint(repo_id: str, url: str | None = None) -> str:
    """The one-line error for a repo that is neither reachable nor cached."""
    return (f"cannot reach the Hub at {(url or hub_endpoint()).rstrip('/')} and {repo_id} is not in the local cache: start a Hub "
            "(`hfcompress hub serve`, see the README Quickstart) and export HF_ENDPOINT, fix the network, "
            "or give a local folder")
