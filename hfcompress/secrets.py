"""Keep tokens out of everything we print or write.

:func:`redact` replaces any Hugging Face token (``hf_...``) and any token value known
to this process (``HF_TOKEN``, ``HUGGING_FACE_HUB_TOKEN``, tokens registered with
:func:`register_secret`) by ``***``. The CLI passes every error and log line through it.
"""

from __future__ import annotations

import os
import re

_HF_TOKEN_RE = re.compile(r"hf_[A-Za-z0-9]{8,}")
_KNOWN: set[str] = set()


def register_secret(value: str | None) -> None:
    """Remember a secret so that :func:`redact` hides it wherever it appears."""
    if value and len(value) >= 4:
        _KNOWN.add(value)


def redact(text: str) -> str:
    """``text`` with every known token replaced by ``***``."""
    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HFCOMPRESS_HUB_TOKEN"):
        register_secret(os.environ.get(name))
    for secret in sorted(_KNOWN, key=len, reverse=True):
        text = text.replace(secret, "***")
    return _HF_TOKEN_RE.sub("***", text)
