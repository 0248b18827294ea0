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


def public_path(value: str) -> str:
    """A local filesystem path reduced to ``local:<name>``; anything else unchanged.

    Reports, recipes and cards that may be pushed never carry the machine's paths (they
    reveal user names and directory layouts); Hub ids (``org/name``) pass through.
    """
    import os.path

    if os.path.isabs(value) or value.startswith(("~", "./", "../")):
        return "local:" + os.path.basename(os.path.normpath(os.path.expanduser(value)))
    return value


def scrub(obj):
    """``obj`` (JSON-like) with tokens redacted and local paths reduced by :func:`public_path`."""
    if isinstance(obj, str):
        return redact(public_path(obj))
    if isinstance(obj, dict):
        return {k: scrub(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [scrub(v) for v in obj]
    return obj
