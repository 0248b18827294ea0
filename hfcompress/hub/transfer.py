"""Push a model folder to the Hub in one commit; pull a model back (and load it).

Both use the real ``huggingface_hub`` client (its own retry / back-off machinery for
transient errors), honour ``HF_ENDPOINT`` / ``HF_TOKEN`` / the saved login and never print the
token. Usage::

    from hfcompress.hub.transfer import push, pull
    url = push("out/smollm2-int8", "me/smollm2-int8", private=True)
    model, path = pull("me/smollm2-int8", output="models/smollm2-int8")

``push`` refuses pickle files (``*.bin``, ``*.pt``, ...) unless ``allow_pickle=True``, hashes
every file before it creates a new repo (right before the commit), and deletes a repo / branch
it created when the push fails (also on Ctrl-C / SIGTERM). ``pull --output`` is atomic, loading
included: a pull that fails leaves no folder.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from ..errors import HFCompressError, HubError, UsageError
from ..secrets import register_secret

T = TypeVar("T")
WEIGHT_PATTERNS = ("*.safetensors", "adapter_model.safetensors", "adapter_model.bin", "*.gguf")
IGNORE_PATTERNS = [".*", "**/.*", "*.lock", "__pycache__/*", "**/__pycache__/*"]
#: Files that unpickle (run code) when loaded: never pushed unless asked (``allow_pickle``).
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")
#: Tries per Hub step (push / pull) on transient errors, and the exponential back-off between
#: them (seconds, doubled each time, capped). ``HFCOMPRESS_HUB_RETRIES`` / ``HFCOMPRESS_HUB_BACKOFF_S``
#: override them (tests use a short back-off).
RETRIES = max(1, int(os.environ.get("HFCOMPRESS_HUB_RETRIES") or 4))
BACKOFF_S = float(os.environ.get("HFCOMPRESS_HUB_BACKOFF_S") or 1.0)
MAX_BACKOFF_S = 8.0
_TRANSIENT_NAMES = ("ConnectError", "ReadError", "WriteError", "RemoteProtocolError", "ReadTimeout",
                    "ConnectTimeout", "WriteTimeout", "PoolTimeout", "NetworkError", "TimeoutException",
                    "IncompleteRead", "ChunkedEncodingError")


class TransientHubError(HubError):
    """The Hub kept failing with transient errors (5xx, 429, dropped connections) after every retry."""


class PushInterrupted(KeyboardInterrupt):
    """SIGTERM during a push: raised so the push can delete what it created, then exits like Ctrl-C."""


def read_token_file(path: str | os.PathLike) -> str:
    """The token in a file (its first non-empty line), for ``--token-file``; one-line errors."""
    p = Path(path).expanduser()
    try:
        with open(p, "rb") as f:
            raw = f.read(65537)
    except OSError as exc:
        raise UsageError(f"--token-file {path}: cannot be read ({exc.strerror or type(exc).__name__}): "
                         "give a file holding the Hub token") from None
    try:
        lines = [ln.strip() for ln in raw.decode("utf-8").splitlines() if ln.strip()]
    except UnicodeDecodeError:
        lines = []
    if len(raw) > 65536 or not lines or any(c.isspace() or not c.isprintable() for c in lines[0]):
        raise UsageError(f"--token-file {path}: does not hold a token on its first line: "
                         "write just the token into the file")
    register_secret(lines[0])
    return lines[0]


def _token(token: str | None) -> str | None:
    if token:
        register_secret(token)
        return token
    from huggingface_hub import get_token

    found = get_token()
    register_secret(found)
    return found


def _endpoint(endpoint: str | None) -> str | None:
    """An explicit endpoint, else ``$HF_ENDPOINT`` read now (huggingface_hub reads it at import)."""
    ep = endpoint or os.environ.get("HF_ENDPOINT")
    if not ep:
        return None
    from urllib.parse import urlsplit

    where = "--endpoint" if endpoint else "HF_ENDPOINT"
    try:
        parts = urlsplit(ep)
    except ValueError:
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not parts.netloc \
            or not ep.isprintable() or any(c.isspace() for c in ep):
        raise UsageError(f"{where} {ep!r} is not an http(s) URL: give e.g. https://huggingface.co or "
                         "http://127.0.0.1:8000")
    return ep.rstrip("/")


def load_model(folder: str | Path, allow_pickle: bool = False) -> Any:
    """The pulled folder loaded with :func:`hfcompress.load` (a :class:`ModelBundle`)."""
    from ..loading import load

    return load(str(folder), allow_pickle=allow_pickle)


def _moved(bundle: Any, folder: Path) -> None:
    """Point a bundle loaded from the temp sibling at its final folder."""
    bundle.path = folder
    bundle.source.local_name = folder.name
    config = getattr(bundle.model, "config", None)
    if config is not None:
        config._name_or_path = str(folder)
    if bundle.tokenizer is not None and hasattr(bundle.tokenizer, "name_or_path"):
        with contextlib.suppress(AttributeError):
            bundle.tokenizer.name_or_path = str(folder)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.startswith("(Request ID")]
    return " ".join(lines[:2])


def _status(exc: BaseException) -> int | None:
    response = getattr(exc, "response", None)
    return getattr(response, "status_code", None)


def _is_transient(exc: BaseException) -> bool:
    """5xx / 429 / 408 answers, dropped connections and timeouts, also when wrapped in another
    error (``snapshot_download`` turns a 503 into ``LocalEntryNotFoundError(...) from err``)."""
    from huggingface_hub.errors import HfHubHTTPError

    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if type(cur).__name__ == "OfflineModeIsEnabled":  # a ConnectionError, but retrying cannot help
            return False
        if isinstance(cur, HfHubHTTPError):
            status = _status(cur)
            if status is not None:
                return status >= 500 or status in (408, 429)
        elif isinstance(cur, (ConnectionError, TimeoutError)) or type(cur).__name__ in _TRANSIENT_NAMES:
            return True
        cur = cur.__cause__ or cur.__context__
    return False


def _with_retries(fn: Callable[[], T], what: str, repo_id: str = "") -> T:
    """Run ``fn`` with bounded retries and exponential back-off on transient errors.

    ``huggingface_hub`` already retries most idempotent requests (``http_backoff``); this
    covers the steps it does not (the commit POST, whole-file downloads). A commit is
    atomic on the server, so retrying it after a failure cannot leave a half-pushed repo
    (and ``create_commit`` skips files the remote already has, so a commit whose answer was
    lost is not made twice). After the last try: :class:`TransientHubError`.
    """
    delay = BACKOFF_S
    for attempt in range(1, RETRIES + 1):
        try:
            return fn()
        except Exception as exc:  # noqa: BLE001 - classified below
            if not _is_transient(exc):
                raise
            if attempt == RETRIES:
                status = _status(exc)
                cause = f"HTTP {status}" if status else _first_line(exc)[:200]
                raise TransientHubError(
                    f"{what} on {repo_id or 'the Hub'} failed {RETRIES} times with transient errors "
                    f"(last: {cause}): the Hub is unreachable or overloaded, try again later") from exc
            time.sleep(delay)
            delay = min(delay * 2, MAX_BACKOFF_S)
    raise AssertionError("unreachable")


def _translate(exc: Exception, repo_id: str, revision: str | None) -> HubError:
    from huggingface_hub.errors import (
        EntryNotFoundError,
        HfHubHTTPError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    if isinstance(exc, RevisionNotFoundError):
        return HubError(f"revision {revision!r} not found in {repo_id}: check --revision (a branch, tag or commit)")
    if isinstance(exc, RepositoryNotFoundError):
        return HubError(f"repository {repo_id} not found (or it is private and the token cannot read it): "
                        "check the repo id and HF_TOKEN / --token")
    if isinstance(exc, EntryNotFoundError):
        return HubError(f"file not found in {repo_id}: {_first_line(exc)}")
    if isinstance(exc, HfHubHTTPError):
        status = exc.response.status_code if exc.response is not None else "?"
        if status == 401:
            return HubError(f"the Hub refused the token for {repo_id} (HTTP 401: missing, invalid or expired "
                            "token): check HF_TOKEN / --token")
        if status == 403:
            return HubError(f"not allowed on {repo_id} (HTTP 403): the token cannot write there; "
                            "check HF_TOKEN / --token and the namespace")
        return HubError(f"Hub request for {repo_id} failed (HTTP {status}): {_first_line(exc)}")
    return HubError(f"Hub request for {repo_id} failed: {_first_line(exc)}")


def check_model_folder(folder: str | Path) -> Path:
    """Raise :class:`UsageError` unless ``folder`` holds config.json (or adapter_config.json) + weights."""
    path = Path(folder)
    if not path.is_dir():
        raise UsageError(f"model folder {str(folder)!r} does not exist: pass the output folder of `hfcompress compress`")
    has_config = (path / "config.json").is_file() or (path / "adapter_config.json").is_file()
    has_weights = any(next(path.glob(p), None) for p in WEIGHT_PATTERNS)
    if not has_config or not has_weights:
        missing = "config.json" if not has_config else "weights (*.safetensors or adapter files)"
        raise UsageError(f"{folder} is not a model folder: no {missing} found")
    return path


def check_push(repo_id: str, token: str | None = None) -> str:
    """Validate a push target before any work: repo id shape and a token; returns the token."""
    if "/" not in repo_id or repo_id.count("/") != 1 or not all(repo_id.split("/")):
        raise UsageError(f"repo id {repo_id!r} must look like namespace/name")
    tok = _token(token)
    if not tok:
        raise HubError("no Hub token: set HF_TOKEN, pass --token-file (or --token), or run `hf auth login`")
    return tok


def upload_files(folder: str | Path) -> list[str]:
    """The files (paths relative to ``folder``) a push uploads: everything but :data:`IGNORE_PATTERNS`."""
    from huggingface_hub.utils import filter_repo_objects

    path = Path(folder)
    files = sorted(p.relative_to(path).as_posix() for p in path.glob("**/*") if p.is_file())
    return list(filter_repo_objects(files, ignore_patterns=IGNORE_PATTERNS))


def check_no_pickles(folder: str | Path, allow_pickle: bool = False) -> None:
    """Refuse (one line, naming them) pickle files in a folder about to be pushed."""
    if allow_pickle:
        return
    pickles = [f for f in upload_files(folder) if f.lower().endswith(PICKLE_SUFFIXES)]
    if pickles:
        more = f" and {len(pickles) - 5} more" if len(pickles) > 5 else ""
        raise UsageError(f"{folder} holds pickle files ({', '.join(pickles[:5])}{more}), which run code when "
                         "loaded: remove them (the safetensors weights are enough) or pass --allow-pickle / "
                         "allow_pickle=True to push them anyway")


class _Interrupts:
    """In the main thread, SIGTERM / SIGINT raise :class:`PushInterrupted` so the push can clean up;
    inside :meth:`critical` (creating the repo / branch and recording that we did) they are held
    until it ends, so the push always knows what it created."""

    def __init__(self) -> None:
        self.depth = 0
        self.pending = False

    def _handler(self, signum: int, frame: Any) -> None:
        if self.depth:
            self.pending = True
            return
        raise PushInterrupted()

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        old = {sig: signal.signal(sig, self._handler) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            yield
        finally:
            for sig, handler in old.items():
                signal.signal(sig, handler)

    @contextlib.contextmanager
    def critical(self) -> Iterator[None]:
        self.depth += 1
        try:
            yield
        finally:
            self.depth -= 1
        if not self.depth and self.pending:
            self.pending = False
            raise PushInterrupted()


def push(folder: str | Path, repo_id: str, *, private: bool = False, revision: str | None = None,
         commit_message: str | None = None, token: str | None = None, endpoint: str | None = None,
         allow_pickle: bool = False) -> str:
    """Upload the model ``folder`` to ``repo_id`` in ONE commit; return the commit URL.

    Refuses, before any network call, a missing folder, a folder that is not a model, pickle
    files (``*.bin``, ``*.pt``, ``*.pth``, ``*.pkl``, ``*.pickle``, ``*.ckpt``; unless
    ``allow_pickle``) and a missing token. A folder written by hfcompress gets its model card
    rendered for ``repo_id`` first (unless its README.md is the user's own). Every file is hashed
    before a new repo is created (right before the upload and commit); a push that fails or is
    interrupted (Ctrl-C, SIGTERM) deletes the repo / branch it created. ``revision`` names a
    branch, created from main if new. Example::

        push("out/tiny-int8", "alice/tiny-int8", private=True, revision="int8")
    """
    path = check_model_folder(folder)
    check_no_pickles(path, allow_pickle)
    tok = check_push(repo_id, token)
    from huggingface_hub import CommitOperationAdd, HfApi
    from huggingface_hub.errors import HfHubHTTPError

    if (path / "hfcompress.json").is_file():
        from ..cards import is_generated_card, write_card

        if not (path / "README.md").exists() or is_generated_card(path):
            write_card(path, repo_id=repo_id)  # the card names the repo it goes to (a user's own README stays)
    api = HfApi(endpoint=_endpoint(endpoint), token=tok, library_name="hfcompress")
    # Hashing (the slow local part) happens here, before anything exists on the Hub.
    try:
        operations = [CommitOperationAdd(path_in_repo=f, path_or_fileobj=str(path / f)) for f in upload_files(path)]
    except OSError as exc:
        raise HubError(f"push of {folder} failed: cannot read {_first_line(exc)}") from exc
    created_repo = created_branch = False
    interrupts = _Interrupts()
    with interrupts.installed():
        try:
            with interrupts.critical():
                created_repo = _with_retries(lambda: _create(api.create_repo, repo_id, private=private),
                                             "creating the repo", repo_id)
            if revision and revision != "main":
                with interrupts.critical():
                    created_branch = _with_retries(lambda: _create(api.create_branch, repo_id, branch=revision),
                                                   "creating the branch", repo_id)
            info = _with_retries(lambda: api.create_commit(
                repo_id, operations=operations, revision=revision,
                commit_message=commit_message or f"Upload {path.name} with hfcompress"), "the push", repo_id)
        except BaseException as exc:
            # A failed push leaves the remote as it was: what this push created goes away again
            # (a second Ctrl-C / SIGTERM does not cut the clean-up short).
            interrupts.depth += 1
            try:
                _undo(api, repo_id, revision if created_branch else None, created_repo)
            finally:
                interrupts.depth -= 1
                interrupts.pending = False
            if isinstance(exc, HubError) or not isinstance(exc, Exception):
                raise
            if isinstance(exc, HfHubHTTPError):
                raise _translate(exc, repo_id, revision) from exc
            if isinstance(exc, (OSError, ValueError)):
                raise HubError(f"push to {repo_id} failed: {_first_line(exc)}") from exc
            raise
    return str(info.commit_url if hasattr(info, "commit_url") else info)


def _create(create: Callable[..., Any], repo_id: str, **kwargs: Any) -> bool:
    """Create a repo / branch; True if this call created it, False if it already existed (409)."""
    from huggingface_hub.errors import HfHubHTTPError

    try:
        create(repo_id, exist_ok=False, **kwargs)
        return True
    except HfHubHTTPError as exc:
        if _status(exc) == 409:
            return False
        raise


def _undo(api: Any, repo_id: str, branch: str | None, repo: bool) -> None:
    """Best effort: delete the repo (or branch) a failed push created."""
    try:
        if repo:
            _with_retries(lambda: api.delete_repo(repo_id, missing_ok=True), "cleaning up", repo_id)
        elif branch:
            _with_retries(lambda: api.delete_branch(repo_id, branch=branch), "cleaning up", repo_id)
    except Exception:  # noqa: BLE001 - the push error is what the user needs to see
        pass


def pull(repo_id: str, *, revision: str | None = None, output: str | Path | None = None,
         token: str | None = None, load: bool = True, endpoint: str | None = None,
         allow_pickle: bool = False) -> tuple[Any, Path]:
    """Download ``repo_id`` (snapshot) and, if ``load``, load it; returns ``(model or None, folder)``.

    With ``output`` the pull is atomic: files land in a temp sibling, are loaded there (if
    ``load``), and only a pull that fully succeeded is renamed to ``output``; a failure (the
    Hub, or a model that does not load) leaves no folder. An existing non-empty ``output`` is
    refused. ``allow_pickle`` lets the model load from pickle checkpoints. Example::

        model, folder = pull("HuggingFaceTB/SmolLM2-135M-Instruct", output="smollm2")
    """
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError

    from ..io import atomic_folder, check_output

    tok = _token(token)
    out = Path(output) if output else None
    if out is not None:
        if out.exists() and (not out.is_dir() or any(out.iterdir())):
            raise UsageError(f"output folder {out} exists and is not empty: choose another --output or remove it")
        check_output(out)  # parents that are files, unwritable folders: before any download

    from ..reachability import hub_or_offline, unreachable_hint

    online = hub_or_offline(_endpoint(endpoint))  # one short probe; unreachable: the cache, at once

    def download(local_dir: Path | None) -> Path:
        return Path(_with_retries(lambda: snapshot_download(
            repo_id, revision=revision, token=tok or False, endpoint=_endpoint(endpoint),
            local_dir=str(local_dir) if local_dir else None), "the download", repo_id))

    if load:  # the library that loads this format must be installed before anything is downloaded
        from huggingface_hub import hf_hub_download

        from ..formats import check_loadable_before_pull

        check_loadable_before_pull(lambda: hf_hub_download(repo_id, "config.json", revision=revision, token=tok or False,
                                                           endpoint=_endpoint(endpoint)))

    def load_from(folder: Path) -> Any:
        if not load:
            return None
        try:
            return load_model(folder, allow_pickle=allow_pickle)
        except HFCompressError as exc:  # name the repo, not the temp / cache folder
            raise type(exc)(str(exc).replace(str(folder), repo_id)) from exc

    model = None
    try:
        if out is None:
            folder = download(None)
            model = load_from(folder)
        else:
            # Temp sibling + rename, after loading: a failed pull leaves no folder at ``output``.
            with atomic_folder(out) as tmp:
                download(tmp)
                shutil.rmtree(tmp / ".cache", ignore_errors=True)
                model = load_from(tmp)
            folder = out
            if model is not None:  # it was read from the temp sibling, now renamed
                _moved(model, out.resolve())
    except HubError:
        raise
    except HfHubHTTPError as exc:
        raise _translate(exc, repo_id, revision) from exc
    except (OSError, ValueError) as exc:
        if type(exc).__name__ in ("LocalEntryNotFoundError", "OfflineModeIsEnabled"):
            if not online:
                raise HubError(unreachable_hint(repo_id, _endpoint(endpoint))) from exc
            raise HubError(f"cannot reach the Hub for {repo_id}: {_first_line(exc)}") from exc
        raise HubError(f"pull of {repo_id} failed: {_first_line(exc)}") from exc
    return model, folder
