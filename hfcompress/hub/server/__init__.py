"""A Hub-compatible HTTP server for loopback use (stdlib + PyYAML only).

It speaks the parts of the Hugging Face Hub API that ``huggingface_hub`` 2.x,
``transformers`` and ``datasets`` use: repos (create / delete / settings), preupload +
NDJSON commits, the LFS batch API (for clients run with ``HF_HUB_DISABLE_XET=1``), repo and
revision info, tree / paths-info listings, ``resolve`` downloads (HEAD / GET / Range),
branches, tags, commit history, repo listings (``/api/models``, ``/api/datasets``),
``validate-yaml`` and ``whoami-v2``. See ``docs/HUB.md``.

Storage under ``--data DIR`` is content-addressed and crash-safe: blobs are streamed to a
temporary file while hashed, fsynced and renamed into place; commit objects and refs are
written with fsync + atomic rename, so an acknowledged commit survives a crash and a client
killed mid-upload leaves the repo at its previous commit. Usage::

    python -m hfcompress.hub.server --port 0 --data /tmp/hub --token alice:secret:my-org
    # first stdout line: http://127.0.0.1:PORT

Modules: :mod:`.store` (blobs, commits, repos, refs), :mod:`.auth` (users, tokens,
visibility), :mod:`.protocol` (request bodies, NDJSON commits, request parsing),
:mod:`.cards` (README metadata), :mod:`.faults` (fault injection), :mod:`.routes` (the HTTP
server and its endpoints) and :mod:`.app` (options and the serve loop).
"""

from __future__ import annotations

from .app import add_arguments, main, make_server, serve
from .auth import User, parse_token_spec
from .errors import HubHTTPError
from .faults import Faults, parse_nth
from .routes import FAULTS_PATH, Handler, HubServer, ServerConfig
from .store import Store

__all__ = ["FAULTS_PATH", "Faults", "Handler", "HubHTTPError", "HubServer", "ServerConfig", "Store", "User",
           "add_arguments", "main", "make_server", "parse_nth", "parse_token_spec", "serve"]
