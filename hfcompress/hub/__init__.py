"""Hub support: a local Hub-compatible server, seeding, and push / pull of model folders.

* :mod:`hfcompress.hub.server` — ``hfcompress hub serve``: the parts of the Hugging Face
  Hub HTTP API that ``huggingface_hub``, ``transformers`` and ``datasets`` use (stdlib only).
* :mod:`hfcompress.hub.seed` — ``hfcompress hub seed``: upload the offline assets and
  datasets under their real repo ids.
* :mod:`hfcompress.hub.transfer` — :func:`push` / :func:`pull`.

See ``docs/HUB.md``.
"""

from __future__ import annotations

__all__ = ["push", "pull"]


def __getattr__(name: str):  # lazy: importing the server must not import huggingface_hub
    if name in __all__:
        from . import transfer

        return getattr(transfer, name)
    raise AttributeError(name)
