"""A Hub-compatible HTTP server for loopback use (stdlib + PyYAML only).

It speaks the parts of the Hugging Face Hub API that ``huggingface_hub`` 2.x,
``transformers`` and ``datasets`` use: repos (create / delete / settings), preupload +
NDJSON commits, the LFS batch API (for clients run with ``HF_HUB_DISABLE_XET=1``), repo and
revision info, tree / paths-info listings, ``resolve`` downloads (HEAD / GET / Range),
branches, tags, commit history, ``validate-yaml`` and ``whoami-v2``. See ``docs/HUB.md``.

Storage under ``--data DIR`` is content-addressed and crash-safe: blobs are streamed to a
temporary file while hashed, fsynced and renamed into place; commit objects and refs are
written with fsync + atomic rename, so an acknowledged commit survives a crash and a client
killed mid-upload leaves the repo at its previous commit. Usage::

    python -m hfcompress.hub.server --port 0 --data /tmp/hub --token alice:secret:my-org
    # first stdout line: http://127.0.0.1:PORT
"""

from __future__ import annotations

import argparse
import base64
import binascii
import contextlib
import datetime as _dt
import fcntl
import hashlib
import hmac
import json
import os
import re
import secrets
import shutil
import signal
import socket
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import parse_qs, quote, unquote, urlsplit

CHUNK = 1 << 20
#: Files at least this large (or with these suffixes) are stored and reported as LFS files.
LFS_MIN_SIZE = 10 * 1024 * 1024
LFS_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".h5", ".onnx", ".gguf", ".msgpack",
                ".parquet", ".arrow", ".npy", ".npz", ".model", ".pkl", ".zip", ".tar", ".gz")
MAX_SMALL_LINE = 64 * 1024 * 1024  # an NDJSON line without streamable content may not exceed this
REPO_TYPES = ("model", "dataset", "space")
TYPE_PREFIX = {"model": "", "dataset": "datasets/", "space": "spaces/"}
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")
_SHA_RE = re.compile(r"^[0-9a-f]{40}$")
_CONTENT_MARK = b'"content": "'
GITATTRIBUTES = "".join(f"*{s} filter=lfs diff=lfs merge=lfs -text\n" for s in LFS_SUFFIXES)


class HubHTTPError(Exception):
    """An HTTP error answered as JSON ``{"error": message}`` with optional ``X-Error-Code``."""

    def __init__(self, status: int, message: str, code: str | None = None, extra: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.code, self.extra = status, message, code, extra or {}


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` durably: temp file, fsync, rename, fsync of the folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def is_lfs_path(path: str, size: int) -> bool:
    return size >= LFS_MIN_SIZE or path.lower().endswith(LFS_SUFFIXES)


def parse_front_matter(text: str) -> tuple[dict | None, str | None]:
    """``(metadata, error)`` from a README's YAML front matter (``({}, None)`` when absent)."""
    import yaml

    if not text.startswith("---"):
        return {}, None
    m = re.match(r"^---[ \t]*\r?\n(.*?)\r?\n---[ \t]*(\r?\n|$)", text, re.S)
    if m is None:
        m = re.match(r"^---[ \t]*\r?\n()---[ \t]*(\r?\n|$)", text)
        if m is None:
            return None, "YAML front matter is not closed by a '---' line"
    try:
        data = yaml.safe_load(m.group(1))
    except yaml.YAMLError as exc:
        return None, f"invalid YAML in front matter: {' '.join(str(exc).split())}"
    if data is None:
        return {}, None
    if not isinstance(data, dict):
        return None, f"YAML front matter must be a mapping, got {type(data).__name__}"
    return json.loads(json.dumps(data, default=str)), None


_STR_OR_LIST = ("license", "language", "base_model", "datasets", "metrics", "tags", "license_name")


def validate_card_metadata(meta: dict, repo_type: str) -> list[str]:
    """Errors in card metadata (types of the well-known keys; dataset ``configs``)."""
    errors = []
    for key in _STR_OR_LIST:
        val = meta.get(key)
        if val is not None and not (isinstance(val, str) or
                                    (isinstance(val, list) and all(isinstance(v, str) for v in val))):
            errors.append(f'"{key}" must be a string or a list of strings')
    for key in ("pipeline_tag", "library_name", "license_link", "pretty_name"):
        if meta.get(key) is not None and not isinstance(meta[key], str):
            errors.append(f'"{key}" must be a string')
    if "model-index" in meta and not isinstance(meta["model-index"], list):
        errors.append('"model-index" must be a list')
    configs = meta.get("configs")
    if configs is not None:
        if repo_type != "dataset":
            errors.append('"configs" is only allowed in dataset cards')
        elif not isinstance(configs, list):
            errors.append('"configs" must be a list')
        else:
            for i, cfg in enumerate(configs):
                if not isinstance(cfg, dict) or not isinstance(cfg.get("config_name"), str):
                    errors.append(f'"configs[{i}]" must be a mapping with a string "config_name"')
    return errors


# ---------------------------------------------------------------------------------------------
# Storage
# ---------------------------------------------------------------------------------------------


@dataclass
class BlobInfo:
    sha256: str
    size: int
    sha1: str  # git blob id


class BlobWriter:
    """Stream bytes into a temp file while hashing; :meth:`finish` moves it into the store."""

    def __init__(self, store: Store, stall_s: float = 0.0):
        self.store = store
        self.tmp = store.root / "tmp" / f"blob-{uuid.uuid4().hex}"
        self.f: BinaryIO = open(self.tmp, "wb")
        self.h = hashlib.sha256()
        self.size = 0
        self.stall_s = stall_s
        self._since_stall = 0

    def write(self, data: bytes) -> None:
        self.f.write(data)
        self.h.update(data)
        self.size += len(data)
        if self.stall_s:
            self._since_stall += len(data)
            while self._since_stall >= CHUNK:
                self._since_stall -= CHUNK
                time.sleep(self.stall_s)

    def finish(self, expected_sha256: str | None = None, expected_size: int | None = None) -> BlobInfo:
        try:
            self.f.flush()
            os.fsync(self.f.fileno())
            self.f.close()
            digest = self.h.hexdigest()
            if expected_size is not None and expected_size != self.size:
                raise HubHTTPError(400, f"size mismatch: expected {expected_size} bytes, got {self.size}")
            if expected_sha256 is not None and expected_sha256 != digest:
                raise HubHTTPError(400, f"sha256 mismatch: expected {expected_sha256}, got {digest}")
            sha1 = hashlib.sha1(f"blob {self.size}\0".encode())
            with open(self.tmp, "rb") as f:
                for chunk in iter(lambda: f.read(CHUNK), b""):
                    sha1.update(chunk)
            info = BlobInfo(digest, self.size, sha1.hexdigest())
            self.store.put_blob_file(self.tmp, info)
            return info
        finally:
            self.abort()

    def abort(self) -> None:
        with contextlib.suppress(Exception):
            self.f.close()
        with contextlib.suppress(FileNotFoundError):
            self.tmp.unlink()


class Store:
    """Content-addressed blobs, commit objects and refs under ``root`` (see docs/HUB.md)."""

    def __init__(self, root: Path):
        self.root = Path(root)
        for sub in ("blobs", "commits", "repos", "tmp", "trash"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        self._lockfile = open(self.root / ".lock", "a+")
        try:
            fcntl.flock(self._lockfile, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise SystemExit(f"error: another hub server is using {self.root}: stop it or choose another --data") from None
        for leftover in list((self.root / "tmp").iterdir()) + list((self.root / "trash").iterdir()):
            if leftover.is_dir():
                shutil.rmtree(leftover, ignore_errors=True)
            else:
                leftover.unlink()
        self._locks: dict[tuple[str, str], threading.Lock] = {}
        self._locks_guard = threading.Lock()

    # -- blobs
    def blob_path(self, sha256: str) -> Path:
        return self.root / "blobs" / sha256[:2] / sha256

    def blob_info(self, sha256: str) -> BlobInfo | None:
        meta = self.blob_path(sha256).with_suffix(".json")
        if not re.fullmatch(r"[0-9a-f]{64}", sha256) or not meta.is_file() or not self.blob_path(sha256).is_file():
            return None
        return BlobInfo(**json.loads(meta.read_text()))

    def put_blob_file(self, tmp: Path, info: BlobInfo) -> None:
        dest = self.blob_path(info.sha256)
        dest.parent.mkdir(parents=True, exist_ok=True)
        if not dest.exists():
            os.replace(tmp, dest)
            _fsync_dir(dest.parent)
        meta = dest.with_suffix(".json")
        if not meta.exists():
            atomic_write(meta, json.dumps(info.__dict__).encode())

    def put_bytes(self, data: bytes) -> BlobInfo:
        w = BlobWriter(self)
        w.write(data)
        return w.finish()

    # -- repos
    def lock(self, repo_type: str, repo_id: str) -> threading.Lock:
        with self._locks_guard:
            return self._locks.setdefault((repo_type, repo_id), threading.Lock())

    def repo_dir(self, repo_type: str, repo_id: str) -> Path:
        return self.root / "repos" / f"{repo_type}s" / repo_id

    def repo_meta(self, repo_type: str, repo_id: str) -> dict | None:
        path = self.repo_dir(repo_type, repo_id) / "repo.json"
        return json.loads(path.read_text()) if path.is_file() else None

    def set_repo_meta(self, repo_type: str, repo_id: str, meta: dict) -> None:
        atomic_write(self.repo_dir(repo_type, repo_id) / "repo.json", json.dumps(meta, indent=1).encode())

    def refs(self, repo_type: str, repo_id: str) -> dict[str, dict[str, str]]:
        path = self.repo_dir(repo_type, repo_id) / "refs.json"
        return json.loads(path.read_text()) if path.is_file() else {"branches": {}, "tags": {}}

    def set_refs(self, repo_type: str, repo_id: str, refs: dict) -> None:
        atomic_write(self.repo_dir(repo_type, repo_id) / "refs.json", json.dumps(refs, indent=1).encode())

    def create_repo(self, repo_type: str, repo_id: str, private: bool, author: str) -> bool:
        """Create the repo with an initial ``.gitattributes`` commit; False if it exists."""
        with self.lock(repo_type, repo_id):
            if self.repo_meta(repo_type, repo_id) is not None:
                return False
            blob = self.put_bytes(GITATTRIBUTES.encode())
            tree = {".gitattributes": {"sha256": blob.sha256, "size": blob.size, "oid": blob.sha1, "lfs": False}}
            sha = self.write_commit(tree, [], "initial commit", "", author)
            now = _now()
            self.set_repo_meta(repo_type, repo_id, {"id": repo_id, "type": repo_type, "private": bool(private),
                                                    "createdAt": now, "author": author, "_id": uuid.uuid4().hex[:24]})
            self.set_refs(repo_type, repo_id, {"branches": {"main": sha}, "tags": {}})
            return True

    def delete_repo(self, repo_type: str, repo_id: str) -> None:
        with self.lock(repo_type, repo_id):
            src = self.repo_dir(repo_type, repo_id)
            dest = self.root / "trash" / uuid.uuid4().hex
            os.replace(src, dest)
            _fsync_dir(src.parent)
            shutil.rmtree(dest, ignore_errors=True)

    # -- commits
    def commit(self, sha: str) -> dict | None:
        path = self.root / "commits" / sha[:2] / f"{sha}.json"
        return json.loads(path.read_text()) if _SHA_RE.match(sha) and path.is_file() else None

    def write_commit(self, tree: dict, parents: list[str], title: str, message: str, author: str) -> str:
        body = {"tree": dict(sorted(tree.items())), "parents": parents, "title": title, "message": message,
                "author": author, "date": _now(), "nonce": uuid.uuid4().hex}
        data = json.dumps(body, sort_keys=True).encode()
        sha = hashlib.sha1(data).hexdigest()
        atomic_write(self.root / "commits" / sha[:2] / f"{sha}.json", data)
        return sha

    def resolve(self, repo_type: str, repo_id: str, revision: str) -> str | None:
        refs = self.refs(repo_type, repo_id)
        rev = revision.removeprefix("refs/heads/").removeprefix("refs/tags/")
        sha = refs["branches"].get(rev) or refs["tags"].get(rev)
        if sha:
            return sha
        if _SHA_RE.match(revision) and self.commit(revision) is not None and self._reachable(refs, revision):
            return revision
        return None

    def _reachable(self, refs: dict, sha: str) -> bool:
        seen: set[str] = set()
        todo = list(refs["branches"].values()) + list(refs["tags"].values())
        while todo:
            cur = todo.pop()
            if cur == sha:
                return True
            if cur in seen:
                continue
            seen.add(cur)
            c = self.commit(cur)
            todo.extend(c["parents"] if c else [])
        return False


# ---------------------------------------------------------------------------------------------
# Auth
# ---------------------------------------------------------------------------------------------


@dataclass
class User:
    name: str
    token: str
    orgs: list[str] = field(default_factory=list)

    def can_write(self, namespace: str) -> bool:
        return namespace == self.name or namespace in self.orgs


def parse_token_spec(spec: str) -> User:
    """``USER:TOKEN[:ORG,ORG...]`` -> :class:`User`."""
    parts = spec.split(":")
    if len(parts) not in (2, 3) or not parts[0] or not parts[1]:
        raise argparse.ArgumentTypeError(f"bad --token {parts[0]!r}...: expected USER:TOKEN[:ORG,ORG...]")
    orgs = [o for o in (parts[2].split(",") if len(parts) == 3 else []) if o]
    return User(parts[0], parts[1], orgs)


# ---------------------------------------------------------------------------------------------
# HTTP
# ---------------------------------------------------------------------------------------------


class Body:
    """The request body as a stream (Content-Length or chunked transfer encoding)."""

    def __init__(self, rfile: BinaryIO, headers, stall_s: float = 0.0):
        self.rfile = rfile
        self.chunked = "chunked" in headers.get("Transfer-Encoding", "").lower()
        self.remaining = int(headers.get("Content-Length") or 0) if not self.chunked else 0
        self.done = not self.chunked and self.remaining == 0
        self.stall_s = stall_s

    def read(self, n: int = CHUNK) -> bytes:
        if self.done:
            return b""
        if self.chunked:
            if self.remaining == 0:
                line = self.rfile.readline(65537)
                size = int(line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass
                    self.done = True
                    return b""
                self.remaining = size
            data = self.rfile.read(min(n, self.remaining))
            self.remaining -= len(data)
            if self.remaining == 0:
                self.rfile.readline(3)
        else:
            data = self.rfile.read(min(n, self.remaining))
            self.remaining -= len(data)
            if self.remaining == 0:
                self.done = True
        if not data:
            self.done = True
            raise HubHTTPError(400, "request body ended early")
        if self.stall_s:
            time.sleep(self.stall_s * len(data) / CHUNK)
        return data

    def read_all(self, limit: int = MAX_SMALL_LINE) -> bytes:
        parts, total = [], 0
        while chunk := self.read():
            parts.append(chunk)
            total += len(chunk)
            if total > limit:
                raise HubHTTPError(413, f"request body larger than {limit} bytes")
        return b"".join(parts)

    def drain(self) -> None:
        while self.read():
            pass


def _b64_stream_into(body: Body, buf: bytes, writer: BlobWriter) -> bytes:
    """Decode base64 from ``buf`` + ``body`` into ``writer`` up to the closing quote; return what follows."""
    carry = b""
    while True:
        q = buf.find(b'"')
        piece = buf if q < 0 else buf[:q]
        data = carry + piece
        cut = len(data) - len(data) % 4 if q < 0 else len(data)
        try:
            writer.write(base64.b64decode(data[:cut], validate=True))
        except binascii.Error as exc:
            raise HubHTTPError(400, f"invalid base64 content in commit: {exc}") from None
        carry = data[cut:]
        if q >= 0:
            return buf[q:]
        buf = body.read()
        if not buf:
            raise HubHTTPError(400, "commit payload ended inside a file's content")


def iter_ndjson(body: Body, store: Store) -> Any:
    """Yield the NDJSON commit items; large ``file`` contents stream straight into blobs.

    A streamed item gets ``value["_blob"] = BlobInfo`` and an empty ``content``.
    """
    buf = b""
    while True:
        nl = buf.find(b"\n")
        if nl >= 0:
            line, buf = buf[:nl], buf[nl + 1:]
            if line.strip():
                yield _parse_line(line, store)
            continue
        mark = buf.find(_CONTENT_MARK, 0, 4096)
        if len(buf) > CHUNK and mark >= 0:
            head = buf[:mark + len(_CONTENT_MARK)]
            writer = BlobWriter(store)
            try:
                rest = _b64_stream_into(body, buf[len(head):], writer)
                blob = writer.finish()
            finally:
                writer.abort()
            while b"\n" not in rest:
                more = body.read()
                if not more:
                    break
                rest += more
            nl = rest.find(b"\n")
            line, buf = (rest, b"") if nl < 0 else (rest[:nl], rest[nl + 1:])
            item = json.loads(head + line)
            item.setdefault("value", {})["_blob"] = blob
            yield item
            continue
        if len(buf) > MAX_SMALL_LINE:
            raise HubHTTPError(413, "NDJSON line too long")
        chunk = body.read()
        if not chunk:
            if buf.strip():
                yield _parse_line(buf, store)
            return
        buf += chunk


def _parse_line(line: bytes, store: Store) -> dict:
    try:
        item = json.loads(line)
    except ValueError:
        raise HubHTTPError(400, "malformed NDJSON line in commit payload") from None
    if not isinstance(item, dict):
        raise HubHTTPError(400, "malformed NDJSON item in commit payload")
    val = item.get("value")
    if item.get("key") == "file" and isinstance(val, dict):
        if val.get("encoding", "base64") != "base64":
            raise HubHTTPError(400, f"unsupported file encoding {val.get('encoding')!r}")
        try:
            data = base64.b64decode(val.get("content", ""), validate=True)
        except binascii.Error:
            raise HubHTTPError(400, f"invalid base64 content for {val.get('path')!r}") from None
        val["_blob"] = store.put_bytes(data)
        val["content"] = ""
    return item


def parse_nth(spec: str | list | None, flag: str = "--fail-nth") -> set[int]:
    """``"3"``, ``"3,5"``, ``"2-4,9"`` (or a list of ints) -> a set of 1-based request numbers."""
    if spec is None or spec == "":
        return set()
    items = spec if isinstance(spec, list) else str(spec).split(",")
    out: set[int] = set()
    try:
        for item in items:
            if isinstance(item, int):
                out.add(item)
                continue
            item = item.strip()
            if not item:
                continue
            lo, _, hi = item.partition("-")
            out.update(range(int(lo), int(hi) + 1) if hi else [int(lo)])
    except ValueError:
        raise ValueError(f"{flag} expects request numbers like 3, 3,5 or 2-4, got {spec!r}") from None
    if any(n < 1 for n in out):
        raise ValueError(f"{flag}: request numbers start at 1, got {spec!r}")
    return out


@dataclass
class Faults:
    """Fault injection for reliability tests (see ``docs/HUB.md``).

    Requests are numbered from 1; with ``match`` (a regex searched in ``"METHOD /path"``)
    only matching requests are numbered (and can fail). For the numbered request N:
    ``fail`` answers ``fail_status``; ``drop`` closes the connection without an answer;
    ``cut`` answers but closes the connection half-way through the body (an interrupted
    download); ``delay`` sleeps ``delay_ms`` first (every numbered request when ``delay`` is
    empty and ``delay_ms`` > 0). ``injected`` counts what was done.
    """

    match: str | None = None
    fail: set[int] = field(default_factory=set)
    fail_status: int = 503
    drop: set[int] = field(default_factory=set)
    cut: set[int] = field(default_factory=set)
    delay: set[int] = field(default_factory=set)
    delay_ms: float = 0.0
    counter: int = 0
    injected: dict[str, int] = field(default_factory=lambda: {"fail": 0, "drop": 0, "cut": 0, "delay": 0})

    @classmethod
    def from_dict(cls, d: dict) -> Faults:
        known = {"match", "fail_nth", "fail_status", "drop_nth", "cut_nth", "delay_nth", "delay_ms"}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown fault keys {sorted(unknown)}: use {sorted(known)}")
        match = d.get("match") or None
        if match is not None:
            re.compile(match)
        status = int(d.get("fail_status") or 503)
        if not 400 <= status <= 599:
            raise ValueError(f"fail_status must be an HTTP error status (400-599), got {status}")
        return cls(match=match, fail=parse_nth(d.get("fail_nth"), "fail_nth"), fail_status=status,
                   drop=parse_nth(d.get("drop_nth"), "drop_nth"), cut=parse_nth(d.get("cut_nth"), "cut_nth"),
                   delay=parse_nth(d.get("delay_nth"), "delay_nth"), delay_ms=float(d.get("delay_ms") or 0.0))

    def to_dict(self) -> dict:
        return {"match": self.match, "fail_nth": sorted(self.fail), "fail_status": self.fail_status,
                "drop_nth": sorted(self.drop), "cut_nth": sorted(self.cut), "delay_nth": sorted(self.delay),
                "delay_ms": self.delay_ms, "counter": self.counter, "injected": dict(self.injected)}

    def decide(self, request_line: str) -> tuple[int, str | None, float]:
        """``(n, action, delay_s)`` for this request (``n`` = 0 when it is not numbered)."""
        if self.match and not re.search(self.match, request_line):
            return 0, None, 0.0
        self.counter += 1
        n = self.counter
        delay = self.delay_ms / 1000.0 if (n in self.delay or (not self.delay and self.delay_ms > 0)) else 0.0
        if delay:
            self.injected["delay"] += 1
        for action, nth in (("fail", self.fail), ("drop", self.drop), ("cut", self.cut)):
            if n in nth:
                self.injected[action] += 1
                return n, action, delay
        return n, None, delay


@dataclass
class ServerConfig:
    users: list[User]
    lfs_threshold: int | None = None  # answer uploadMode "lfs" from this size on (None: never)
    faults: Faults = field(default_factory=Faults)
    fault_control: bool = False  # allow /api/_hfcompress/faults (tests only)
    stall_s: float = 0.0  # seconds per MiB of request body
    secret: bytes = field(default_factory=lambda: secrets.token_bytes(32))


class HubServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 64

    def __init__(self, addr: tuple[str, int], store: Store, config: ServerConfig):
        super().__init__(addr, Handler)
        self.store = store
        self.config = config
        self.tokens = {u.token: u for u in config.users}
        self.counter = 0
        self.counter_lock = threading.Lock()


FAULTS_PATH = "/api/_hfcompress/faults"
_RepoPath = r"(?P<repo>[^/]+/[^/]+)"
_API = r"/api/(?P<type>models|datasets|spaces)/" + _RepoPath
ROUTES: list[tuple[str, re.Pattern[str], str]] = [
    (m, re.compile(p + r"$"), h) for m, p, h in [
        ("GET", r"/api/whoami-v2", "whoami"),
        ("POST", r"/api/repos/create", "create_repo"),
        ("DELETE", r"/api/repos/delete", "delete_repo"),
        ("POST", r"/api/validate-yaml", "validate_yaml"),
        ("PUT", r"/api/lfs-upload/(?P<type>models|datasets|spaces)/" + _RepoPath + r"/(?P<oid>[0-9a-f]{64})",
         "lfs_upload"),
        ("POST", r"/api/lfs-verify/(?P<type>models|datasets|spaces)/" + _RepoPath, "lfs_verify"),
        ("POST", _API + r"/preupload/(?P<rev>[^/]+)", "preupload"),
        ("POST", _API + r"/commit/(?P<rev>[^/]+)", "commit"),
        ("GET", _API + r"/tree/(?P<rev>[^/]+)(?:/(?P<path>.*))?", "tree"),
        ("POST", _API + r"/paths-info/(?P<rev>[^/]+)", "paths_info"),
        ("GET", _API + r"/refs", "refs"),
        ("GET", _API + r"/commits/(?P<rev>[^/]+)", "commits"),
        ("POST", _API + r"/branch/(?P<branch>[^/]+)", "create_branch"),
        ("DELETE", _API + r"/branch/(?P<branch>[^/]+)", "delete_branch"),
        ("POST", _API + r"/tag/(?P<rev>[^/]+)", "create_tag"),
        ("DELETE", _API + r"/tag/(?P<tag>[^/]+)", "delete_tag"),
        ("PUT", _API + r"/settings", "settings"),
        ("GET", _API + r"(?:/revision/(?P<rev>[^/]+))?", "repo_info"),
        ("POST", r"/(?P<prefix>datasets/|spaces/)?" + r"(?P<repo>[^/]+/[^/]+)\.git/info/lfs/objects/batch",
         "lfs_batch"),
        ("GET", r"/(?P<prefix>datasets/|spaces/)?" + _RepoPath + r"/resolve/(?P<rev>[^/]+)/(?P<path>.+)",
         "resolve"),
        ("HEAD", r"/(?P<prefix>datasets/|spaces/)?" + _RepoPath + r"/resolve/(?P<rev>[^/]+)/(?P<path>.+)",
         "resolve"),
    ]
]


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: HubServer
    server_version = "hfcompress-hub/1"

    # -- plumbing
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        if os.environ.get("HFCOMPRESS_HUB_LOG"):
            sys.stderr.write("hub: " + (format % args) + "\n")

    def _dispatch(self) -> None:
        self.body = Body(self.rfile, self.headers, self.server.config.stall_s)
        self.user: User | None = None
        self.cut = False
        split = urlsplit(self.path)
        self.query = parse_qs(split.query)
        try:
            if split.path == FAULTS_PATH:
                self._faults_control()
                return
            with self.server.counter_lock:
                self.server.counter += 1
                n, action, delay = self.server.config.faults.decide(f"{self.command} {split.path}")
            if delay:
                time.sleep(delay)
            if action == "fail":
                raise HubHTTPError(self.server.config.faults.fail_status, f"injected failure on request #{n}")
            if action == "drop":  # no answer at all: the client sees the connection close
                self.close_connection = True
                with contextlib.suppress(OSError):
                    self.connection.shutdown(socket.SHUT_RDWR)
                return
            self.cut = action == "cut"
            self._authenticate()
            for method, pattern, name in ROUTES:
                m = pattern.match(split.path)
                if m and method == self.command:
                    params = {k: unquote(v) for k, v in m.groupdict().items() if v is not None}
                    getattr(self, f"h_{name}")(**params)
                    break
            else:
                raise HubHTTPError(501, f"not implemented by the hfcompress hub server: {self.command} {split.path}")
        except HubHTTPError as err:
            self._send_error(err)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except Exception as exc:  # noqa: BLE001 - a server answers 500, it does not crash
            import traceback

            traceback.print_exc(file=sys.stderr)
            self._send_error(HubHTTPError(500, f"internal error: {type(exc).__name__}: {exc}"))
        if not self.body.done:
            self.close_connection = True

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = do_PATCH = _dispatch  # noqa: N815

    def _faults_control(self) -> None:
        """GET: the fault settings and counts; POST a JSON object: replace them (counter reset)."""
        if not self.server.config.fault_control:
            raise HubHTTPError(404, "fault control is off: start the server with --fault-control")
        if self.command == "POST":
            try:
                faults = Faults.from_dict(self._json())
            except (ValueError, TypeError) as exc:
                raise HubHTTPError(400, str(exc)) from None
            with self.server.counter_lock:
                self.server.config.faults = faults
        elif self.command != "GET":
            raise HubHTTPError(405, "use GET or POST")
        self._send(200, self.server.config.faults.to_dict())

    def _cut_connection(self) -> None:
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)

    def _send(self, status: int, payload: Any = None, headers: dict[str, str] | None = None,
              raw: bytes | None = None) -> None:
        data = raw if raw is not None else json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json" if raw is None else "application/octet-stream")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        if not self.body.done:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.cut:  # injected: half the body, then the connection goes away
            self.wfile.write(data[: len(data) // 2])
            self._cut_connection()
            return
        if self.command != "HEAD":
            self.wfile.write(data)

    def _send_error(self, err: HubHTTPError) -> None:
        # Read (a bounded amount of) an unread body so that the client sees the answer, not a reset.
        with contextlib.suppress(Exception):
            left = 512 * CHUNK
            while left > 0 and (chunk := self.body.read()):
                left -= len(chunk)
        headers = {"X-Error-Message": err.message.encode("ascii", "replace").decode()[:500]}
        if err.code:
            headers["X-Error-Code"] = err.code
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            self._send(err.status, {"error": err.message, **err.extra}, headers)

    def _json(self) -> dict:
        data = self.body.read_all(16 * CHUNK)
        try:
            obj = json.loads(data or b"{}")
        except ValueError:
            raise HubHTTPError(400, "request body is not valid JSON") from None
        if not isinstance(obj, dict):
            raise HubHTTPError(400, "request body must be a JSON object")
        return obj

    @property
    def base(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{self.headers.get('Host') or f'{host}:{port}'}"

    def _authenticate(self) -> None:
        auth = self.headers.get("Authorization", "")
        if not auth:
            return
        token = auth[7:].strip() if auth.lower().startswith("bearer ") else ""
        user = self.server.tokens.get(token)
        if user is None:
            raise HubHTTPError(401, "Invalid credentials in Authorization header")
        self.user = user

    def _require_user(self) -> User:
        if self.user is None:
            raise HubHTTPError(401, "You must be authenticated to do this: pass a token (HF_TOKEN)")
        return self.user

    def _check_write_ns(self, namespace: str, repo_type: str = "model") -> User:
        user = self._require_user()
        if not user.can_write(namespace):
            raise HubHTTPError(403, f"You don't have the rights to write {repo_type}s under the namespace "
                                    f"{namespace!r} (user {user.name!r}, orgs {user.orgs})")
        return user

    def _repo(self, repo_type: str, repo_id: str, write: bool = False) -> dict:
        """The repo's metadata, after the visibility / permission checks the Hub does."""
        meta = self.server.store.repo_meta(repo_type, repo_id) if self._valid_id(repo_id) else None
        ns = repo_id.split("/")[0]
        visible = meta is not None and (not meta["private"] or (self.user is not None and self.user.can_write(ns)))
        if not visible:
            status = 401 if self.user is None else 404
            raise HubHTTPError(status, f"Repository Not Found for {repo_type} {repo_id!r}", "RepoNotFound")
        if write:
            self._check_write_ns(ns, repo_type)
        return meta

    @staticmethod
    def _valid_id(repo_id: str) -> bool:
        parts = repo_id.split("/")
        return len(parts) == 2 and all(_NAME_RE.match(p) and ".." not in p for p in parts)

    def _commit_for(self, repo_type: str, repo_id: str, rev: str) -> tuple[str, dict]:
        sha = self.server.store.resolve(repo_type, repo_id, rev)
        commit = self.server.store.commit(sha) if sha else None
        if commit is None:
            raise HubHTTPError(404, f"Invalid rev id: {rev}", "RevisionNotFound")
        return sha, commit

    def _url(self, repo_type: str, repo_id: str) -> str:
        return f"{self.base}/{TYPE_PREFIX[repo_type]}{repo_id}"

    # -- account & repos
    def h_whoami(self) -> None:
        user = self._require_user()
        self._send(200, {"type": "user", "id": hashlib.sha1(user.name.encode()).hexdigest()[:24],
                         "name": user.name, "fullname": user.name, "email": None, "emailVerified": False,
                         "isPro": False, "canPay": False,
                         "orgs": [{"type": "org", "name": o, "fullname": o, "roleInOrg": "write"} for o in user.orgs],
                         "auth": {"type": "access_token",
                                  "accessToken": {"displayName": "hfcompress-hub", "role": "write"}}})

    def _repo_from_payload(self, body: dict) -> tuple[str, str]:
        name, org = body.get("name"), body.get("organization")
        repo_type = body.get("type") or "model"
        if repo_type not in REPO_TYPES:
            raise HubHTTPError(400, f"invalid repo type {repo_type!r}: expected one of {REPO_TYPES}")
        if not isinstance(name, str):
            raise HubHTTPError(400, "missing repo 'name'")
        user = self._require_user()
        repo_id = f"{org or user.name}/{name}" if "/" not in name else name
        if not self._valid_id(repo_id):
            raise HubHTTPError(400, f"invalid repo id {repo_id!r}: use namespace/name with letters, digits, "
                                    "'-', '_', '.' (max 96 characters each)")
        return repo_type, repo_id

    def h_create_repo(self) -> None:
        body = self._json()
        repo_type, repo_id = self._repo_from_payload(body)
        user = self._check_write_ns(repo_id.split("/")[0], repo_type)
        private = body.get("visibility") == "private" or body.get("private") is True
        url = self._url(repo_type, repo_id)
        if not self.server.store.create_repo(repo_type, repo_id, private, user.name):
            raise HubHTTPError(409, "You already created this repo", extra={"url": url})
        self._send(200, {"url": url, "name": repo_id, "id": repo_id})

    def h_delete_repo(self) -> None:
        repo_type, repo_id = self._repo_from_payload(self._json())
        self._repo(repo_type, repo_id, write=True)
        self.server.store.delete_repo(repo_type, repo_id)
        self._send(200, {})

    def h_settings(self, type: str, repo: str) -> None:  # noqa: A002
        repo_type = type[:-1]
        meta = self._repo(repo_type, repo, write=True)
        body = self._json()
        if "visibility" in body:
            meta["private"] = body["visibility"] == "private"
        if "private" in body:
            meta["private"] = bool(body["private"])
        if body.get("gated") not in (None, False):
            raise HubHTTPError(501, "gated repos are not implemented by the hfcompress hub server")
        self.server.store.set_repo_meta(repo_type, repo, meta)
        self._send(200, {"private": meta["private"]})

    def h_validate_yaml(self) -> None:
        body = self._json()
        content = body.get("content")
        if not isinstance(content, str):
            raise HubHTTPError(400, "'content' must be the README text")
        meta, error = parse_front_matter(content)
        errors = [error] if error else validate_card_metadata(meta or {}, body.get("repoType") or "model")
        if errors:
            raise HubHTTPError(400, "Invalid metadata in README.md: " + "; ".join(errors),
                               extra={"errors": [{"message": e} for e in errors]})
        self._send(200, {"errors": [], "warnings": []})

    # -- info & listings
    def _card_data(self, tree: dict) -> dict | None:
        entry = tree.get("README.md")
        if not entry or entry["size"] > 4 * CHUNK:
            return None
        text = self.server.store.blob_path(entry["sha256"]).read_bytes().decode("utf-8", "replace")
        meta, _ = parse_front_matter(text)
        return meta or None

    def h_repo_info(self, type: str, repo: str, rev: str = "main") -> None:  # noqa: A002
        repo_type = type[:-1]
        meta = self._repo(repo_type, repo)
        sha, commit = self._commit_for(repo_type, repo, rev)
        tree = commit["tree"]
        card = self._card_data(tree)
        siblings = []
        for path, e in tree.items():
            s: dict[str, Any] = {"rfilename": path, "size": e["size"], "blobId": e["oid"]}
            if e["lfs"]:
                s["lfs"] = {"sha256": e["sha256"], "size": e["size"], "pointerSize": 134}
            siblings.append(s)
        info: dict[str, Any] = {
            "_id": meta["_id"], "id": repo, "author": repo.split("/")[0], "sha": sha, "private": meta["private"],
            "gated": False, "disabled": False, "downloads": 0, "likes": 0, "createdAt": meta["createdAt"],
            "lastModified": commit["date"], "tags": list((card or {}).get("tags") or []) if card else [],
            "cardData": card, "siblings": siblings, "usedStorage": sum(e["size"] for e in tree.values()),
        }
        if repo_type == "model":
            info["modelId"] = repo
            for key in ("pipeline_tag", "library_name"):
                if card and isinstance(card.get(key), str):
                    info[key] = card[key]
            if "config.json" in tree and tree["config.json"]["size"] < CHUNK:
                with contextlib.suppress(ValueError):
                    cfg = json.loads(self.server.store.blob_path(tree["config.json"]["sha256"]).read_bytes())
                    info["config"] = {k: cfg[k] for k in ("architectures", "model_type") if k in cfg}
        self._send(200, info)

    @staticmethod
    def _entry(path: str, e: dict) -> dict:
        out: dict[str, Any] = {"type": "file", "oid": e["oid"], "size": e["size"], "path": path}
        if e["lfs"]:
            out["lfs"] = {"oid": e["sha256"], "size": e["size"], "pointerSize": 134}
        return out

    @staticmethod
    def _dir_entry(path: str, tree: dict) -> dict:
        h = hashlib.sha1("".join(f"{p}:{e['oid']}" for p, e in sorted(tree.items())
                                 if p.startswith(path + "/")).encode())
        return {"type": "directory", "oid": h.hexdigest(), "size": 0, "path": path}

    def _listing(self, tree: dict, prefix: str, recursive: bool) -> list[dict]:
        base = prefix.strip("/")
        out: dict[str, dict] = {}
        for path, e in sorted(tree.items()):
            if base and not path.startswith(base + "/"):
                continue
            rel = path[len(base) + 1:] if base else path
            parts = rel.split("/")
            for i in range(1, len(parts)):
                d = "/".join(([base] if base else []) + parts[:i])
                if d not in out and (recursive or i == 1):
                    out[d] = self._dir_entry(d, tree)
            if recursive or len(parts) == 1:
                out[path] = self._entry(path, e)
        return list(out.values())

    def h_tree(self, type: str, repo: str, rev: str, path: str = "") -> None:  # noqa: A002
        repo_type = type[:-1]
        self._repo(repo_type, repo)
        sha, commit = self._commit_for(repo_type, repo, rev)
        tree = commit["tree"]
        path = path.strip("/")
        if path and not any(p.startswith(path + "/") for p in tree):
            raise HubHTTPError(404, f"{path} does not exist on {rev!r}", "EntryNotFound")
        recursive = (self.query.get("recursive") or ["false"])[0].lower() in ("1", "true", "yes")
        entries = self._listing(tree, path, recursive)
        if (self.query.get("expand") or ["false"])[0].lower() in ("1", "true"):
            last = {"id": sha, "title": commit["title"], "date": commit["date"]}
            for e in entries:
                e["lastCommit"] = last
        self._send(200, entries)

    def h_paths_info(self, type: str, repo: str, rev: str) -> None:  # noqa: A002
        repo_type = type[:-1]
        self._repo(repo_type, repo)
        data = self.body.read_all(4 * CHUNK).decode()
        ctype = self.headers.get("Content-Type", "")
        if "json" in ctype:
            paths = json.loads(data or "{}").get("paths", [])
        else:
            paths = parse_qs(data).get("paths", [])
        _, commit = self._commit_for(repo_type, repo, rev)
        tree = commit["tree"]
        out = []
        for p in paths:
            p = p.strip("/")
            if p in tree:
                out.append(self._entry(p, tree[p]))
            elif any(k.startswith(p + "/") for k in tree) or p == "":
                out.append(self._dir_entry(p, tree))
        self._send(200, out)

    def h_refs(self, type: str, repo: str) -> None:  # noqa: A002
        repo_type = type[:-1]
        self._repo(repo_type, repo)
        refs = self.server.store.refs(repo_type, repo)
        self._send(200, {
            "branches": [{"name": n, "ref": f"refs/heads/{n}", "targetCommit": s} for n, s in refs["branches"].items()],
            "tags": [{"name": n, "ref": f"refs/tags/{n}", "targetCommit": s} for n, s in refs["tags"].items()],
            "converts": [], "pullRequests": [],
        })

    def h_commits(self, type: str, repo: str, rev: str) -> None:  # noqa: A002
        repo_type = type[:-1]
        self._repo(repo_type, repo)
        sha, commit = self._commit_for(repo_type, repo, rev)
        out = []
        while commit is not None:
            out.append({"id": sha, "title": commit["title"], "message": commit["message"], "date": commit["date"],
                        "authors": [{"user": commit["author"]}]})
            sha = commit["parents"][0] if commit["parents"] else ""
            commit = self.server.store.commit(sha) if sha else None
        self._send(200, out)

    # -- refs
    def h_create_branch(self, type: str, repo: str, branch: str) -> None:  # noqa: A002
        repo_type = type[:-1]
        self._repo(repo_type, repo, write=True)
        start = self._json().get("startingPoint") or "main"
        if not re.fullmatch(r"[A-Za-z0-9._/-]{1,200}", branch) or ".." in branch or branch.startswith("refs/"):
            raise HubHTTPError(400, f"invalid branch name {branch!r}")
        store = self.server.store
        with store.lock(repo_type, repo):
            sha, _ = self._commit_for(repo_type, repo, start)
            refs = store.refs(repo_type, repo)
            if branch in refs["branches"]:
                raise HubHTTPError(409, f"Reference already exists: refs/heads/{branch}")
            refs["branches"][branch] = sha
            store.set_refs(repo_type, repo, refs)
        self._send(200, {})

    def h_delete_branch(self, type: str, repo: str, branch: str) -> None:  # noqa: A002
        repo_type = type[:-1]
        self._repo(repo_type, repo, write=True)
        store = self.server.store
        with store.lock(repo_type, repo):
            refs = store.refs(repo_type, repo)
            if branch not in refs["branches"]:
                raise HubHTTPError(404, f"Invalid rev id: {branch}", "RevisionNotFound")
            if branch == "main":
                raise HubHTTPError(403, "the main branch cannot be deleted")
            del refs["branches"][branch]
            store.set_refs(repo_type, repo, refs)
        self._send(200, {})

    def h_create_tag(self, type: str, repo: str, rev: str) -> None:  # noqa: A002
        repo_type = type[:-1]
        self._repo(repo_type, repo, write=True)
        tag = self._json().get("tag")
        if not isinstance(tag, str) or not re.fullmatch(r"[A-Za-z0-9._/-]{1,200}", tag) or ".." in tag:
            raise HubHTTPError(400, f"invalid tag name {tag!r}")
        store = self.server.store
        with store.lock(repo_type, repo):
            sha, _ = self._commit_for(repo_type, repo, rev)
            refs = store.refs(repo_type, repo)
            if tag in refs["tags"]:
                raise HubHTTPError(409, f"Tag already exists: {tag}")
            refs["tags"][tag] = sha
            store.set_refs(repo_type, repo, refs)
        self._send(200, {})

    def h_delete_tag(self, type: str, repo: str, tag: str) -> None:  # noqa: A002
        repo_type = type[:-1]
        self._repo(repo_type, repo, write=True)
        store = self.server.store
        with store.lock(repo_type, repo):
            refs = store.refs(repo_type, repo)
            if tag not in refs["tags"]:
                raise HubHTTPError(404, f"Invalid rev id: {tag}", "RevisionNotFound")
            del refs["tags"][tag]
            store.set_refs(repo_type, repo, refs)
        self._send(200, {})

    # -- uploads
    def h_preupload(self, type: str, repo: str, rev: str) -> None:  # noqa: A002
        repo_type = type[:-1]
        self._repo(repo_type, repo, write=True)
        if self.query.get("create_pr"):
            raise HubHTTPError(501, "pull requests are not implemented by the hfcompress hub server")
        files = self._json().get("files") or []
        sha = self.server.store.resolve(repo_type, repo, rev)
        tree = (self.server.store.commit(sha) or {}).get("tree", {}) if sha else {}
        threshold = self.server.config.lfs_threshold
        hint = self.headers.get("X-HFCompress-Upload-Mode", "").lower()
        out = []
        for f in files:
            path, size = f.get("path"), int(f.get("size") or 0)
            lfs = is_lfs_path(path or "", size) and size > 0 and (
                hint == "lfs" or (hint != "regular" and threshold is not None and size >= threshold))
            mode = "lfs" if lfs else "regular"
            entry = tree.get(path)
            oid = (entry["sha256"] if entry["lfs"] else entry["oid"]) if entry else None
            out.append({"path": path, "uploadMode": mode, "shouldIgnore": False, "oid": oid})
        self._send(200, {"files": out, "commitOid": sha})

    def _sign(self, repo_type: str, repo: str, oid: str, size: int, exp: int) -> str:
        msg = f"{repo_type}|{repo}|{oid}|{size}|{exp}".encode()
        return hmac.new(self.server.config.secret, msg, hashlib.sha256).hexdigest()

    def h_lfs_batch(self, repo: str, prefix: str = "") -> None:
        repo_type = {"": "model", "datasets/": "dataset", "spaces/": "space"}[prefix]
        self._repo(repo_type, repo, write=True)
        body = self._json()
        if body.get("operation") != "upload":
            raise HubHTTPError(501, "only LFS 'upload' batches are implemented (downloads use /resolve)")
        objects = []
        exp = int(time.time()) + 3600
        for obj in body.get("objects") or []:
            oid, size = str(obj.get("oid", "")), obj.get("size")
            if not re.fullmatch(r"[0-9a-f]{64}", oid) or not isinstance(size, int) or size < 0:
                objects.append({"oid": oid, "size": size if isinstance(size, int) else 0,
                                "error": {"code": 422, "message": "invalid oid or size"}})
                continue
            info = self.server.store.blob_info(oid)
            if info is not None and info.size == size:
                objects.append({"oid": oid, "size": size})
                continue
            sig = self._sign(repo_type, repo, oid, size, exp)
            q = f"size={size}&exp={exp}&sig={sig}"
            objects.append({"oid": oid, "size": size, "authenticated": True, "actions": {
                "upload": {"href": f"{self.base}/api/lfs-upload/{repo_type}s/{repo}/{oid}?{q}", "expires_in": 3600},
                "verify": {"href": f"{self.base}/api/lfs-verify/{repo_type}s/{repo}", "expires_in": 3600},
            }})
        self._send(200, {"transfer": "basic", "objects": objects, "hash_algo": "sha256"})

    def h_lfs_upload(self, type: str, repo: str, oid: str) -> None:  # noqa: A002
        repo_type = type[:-1]
        try:
            size, exp = int(self.query["size"][0]), int(self.query["exp"][0])
            sig = self.query["sig"][0]
        except (KeyError, ValueError, IndexError):
            raise HubHTTPError(403, "LFS upload URL is missing its signature: ask the batch API again") from None
        if exp < time.time() or not hmac.compare_digest(sig, self._sign(repo_type, repo, oid, size, exp)):
            raise HubHTTPError(403, "LFS upload URL is invalid or expired: ask the batch API again")
        writer = BlobWriter(self.server.store)
        try:
            while chunk := self.body.read():
                writer.write(chunk)
            writer.finish(expected_sha256=oid, expected_size=size)
        finally:
            writer.abort()
        self._send(200, {}, {"ETag": f'"{oid}"'})

    def h_lfs_verify(self, type: str, repo: str) -> None:  # noqa: A002
        self._repo(type[:-1], repo, write=True)
        body = self._json()
        info = self.server.store.blob_info(str(body.get("oid", "")))
        if info is None or info.size != body.get("size"):
            raise HubHTTPError(404, f"LFS object {body.get('oid')} was not uploaded")
        self._send(200, {"success": True})

    def h_commit(self, type: str, repo: str, rev: str) -> None:  # noqa: A002
        repo_type = type[:-1]
        self._repo(repo_type, repo, write=True)
        user = self._require_user()
        store = self.server.store
        if self.query.get("create_pr"):
            raise HubHTTPError(501, "pull requests are not implemented by the hfcompress hub server")
        refs = store.refs(repo_type, repo)
        if rev not in refs["branches"]:
            raise HubHTTPError(404, f"Invalid rev id: {rev} (commits go to an existing branch)", "RevisionNotFound")
        header: dict = {}
        ops: list[tuple[str, str, dict | None]] = []
        for item in iter_ndjson(self.body, store):
            key, val = item.get("key"), item.get("value") or {}
            if key == "header":
                header = val
            elif key == "file":
                blob: BlobInfo = val["_blob"]
                ops.append(("add", val["path"], {"sha256": blob.sha256, "size": blob.size, "oid": blob.sha1,
                                                 "lfs": is_lfs_path(val["path"], blob.size)}))
            elif key == "lfsFile":
                info = store.blob_info(str(val.get("oid", "")))
                if info is None:
                    raise HubHTTPError(422, f"LFS file {val.get('path')!r} (oid {val.get('oid')}) was not "
                                            "uploaded: upload it through the LFS batch API first")
                ops.append(("add", val["path"], {"sha256": info.sha256, "size": info.size, "oid": info.sha1,
                                                 "lfs": True}))
            elif key in ("deletedFile", "deletedFolder"):
                ops.append(("del" if key == "deletedFile" else "deldir", val.get("path", ""), None))
            else:
                raise HubHTTPError(501, f"commit operation {key!r} is not implemented by the hfcompress hub server")
        for _, path, _ in ops:
            if not path or path.startswith("/") or any(p in ("", ".", "..") for p in path.rstrip("/").split("/")):
                raise HubHTTPError(400, f"invalid path in repo: {path!r}")
        with store.lock(repo_type, repo):
            refs = store.refs(repo_type, repo)
            head = refs["branches"].get(rev)
            if head is None:
                raise HubHTTPError(404, f"Invalid rev id: {rev}", "RevisionNotFound")
            parent = header.get("parentCommit")
            if parent and parent != head:
                raise HubHTTPError(412, f"A commit has happened since {parent}: the head of {rev} is {head}")
            tree = dict(store.commit(head)["tree"])
            for kind, path, entry in ops:
                if kind == "add":
                    tree[path] = entry
                elif kind == "del":
                    if path not in tree:
                        raise HubHTTPError(404, f"A file with this name doesn't exist: {path}", "EntryNotFound")
                    del tree[path]
                else:
                    folder = path.rstrip("/") + "/"
                    gone = [p for p in tree if p.startswith(folder)]
                    if not gone:
                        raise HubHTTPError(404, f"A folder with this name doesn't exist: {path}", "EntryNotFound")
                    for p in gone:
                        del tree[p]
            if tree == store.commit(head)["tree"]:
                # Nothing changes (e.g. a commit retried after its answer was lost): no empty commit.
                sha = head
            else:
                sha = store.write_commit(tree, [head], str(header.get("summary") or "Upload files"),
                                         str(header.get("description") or ""), user.name)
                refs["branches"][rev] = sha
                store.set_refs(repo_type, repo, refs)
        self._send(200, {"success": True, "commitOid": sha, "pullRequestUrl": None,
                         "commitUrl": f"{self._url(repo_type, repo)}/commit/{sha}"})

    # -- downloads
    def h_resolve(self, repo: str, rev: str, path: str, prefix: str = "") -> None:
        repo_type = {"": "model", "datasets/": "dataset", "spaces/": "space"}[prefix]
        self._repo(repo_type, repo)
        sha, commit = self._commit_for(repo_type, repo, rev)
        entry = commit["tree"].get(path)
        if entry is None:
            raise HubHTTPError(404, f"Entry not found: {path} at {rev}", "EntryNotFound",
                               extra={"commit": sha})
        size = entry["size"]
        headers = {"X-Repo-Commit": sha, "ETag": f'"{entry["sha256"] if entry["lfs"] else entry["oid"]}"',
                   "Accept-Ranges": "bytes", "Content-Disposition": f"inline; filename*=UTF-8''{quote(Path(path).name)}"}
        if entry["lfs"]:
            headers.update({"X-Linked-Etag": f'"{entry["sha256"]}"', "X-Linked-Size": str(size)})
        start, end = 0, size - 1
        status = 200
        rng = self.headers.get("Range")
        if rng:
            m = re.fullmatch(r"bytes=(\d*)-(\d*)", rng.strip())
            if not m or (not m.group(1) and not m.group(2)):
                raise HubHTTPError(416, f"unsupported Range {rng!r}")
            if m.group(1):
                start = int(m.group(1))
                end = min(int(m.group(2)), size - 1) if m.group(2) else size - 1
            else:
                start = max(size - int(m.group(2)), 0)
            if start >= size or start > end:
                raise HubHTTPError(416, f"Range {rng!r} not satisfiable for {size} bytes",
                                   extra={"size": size})
            status = 206
            headers["Content-Range"] = f"bytes {start}-{end}/{size}"
        length = max(end - start + 1, 0)
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(length))
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        if self.command == "HEAD" or length == 0:
            if self.cut:
                self._cut_connection()
            return
        with open(self.server.store.blob_path(entry["sha256"]), "rb") as f:
            f.seek(start)
            left = length
            stop_at = length // 2 if self.cut else -1  # injected: interrupted download
            while left > 0:
                if length - left >= stop_at >= 0:
                    self._cut_connection()
                    return
                want = min(CHUNK, left) if stop_at < 0 else max(min(CHUNK, left, stop_at - (length - left)), 1)
                chunk = f.read(want)
                if not chunk:
                    break
                self.wfile.write(chunk)
                left -= len(chunk)
                if self.server.config.stall_s:
                    time.sleep(self.server.config.stall_s * len(chunk) / CHUNK)


# ---------------------------------------------------------------------------------------------
# Entry point
# ---------------------------------------------------------------------------------------------


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Options of ``hub serve`` (shared by the CLI and ``python -m hfcompress.hub.server``)."""
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1; keep it loopback)")
    p.add_argument("--port", type=int, default=0, help="port (0 = pick a free one)")
    p.add_argument("--data", required=True, help="storage folder (created if missing; persists across restarts)")
    p.add_argument("--token", action="append", default=[], type=parse_token_spec, metavar="USER:TOKEN[:ORG,...]",
                   help="a user, its token and its orgs (repeatable)")
    p.add_argument("--token-file", help="file with one USER:TOKEN[:ORG,ORG...] per line (keeps tokens out of ps)")
    p.add_argument("--lfs-threshold", type=int, default=None, metavar="BYTES",
                   help="answer uploadMode 'lfs' for LFS-type files of at least BYTES (only for clients run with "
                        "HF_HUB_DISABLE_XET=1; default: always 'regular')")
    p.add_argument("--fail-nth", default="", metavar="N[,M-K...]",
                   help="fault injection: answer the Nth request(s) (1-based) with --fail-status")
    p.add_argument("--fail-status", type=int, default=503, help="status for --fail-nth (default 503)")
    p.add_argument("--drop-nth", default="", metavar="N[,M-K...]",
                   help="fault injection: close the connection of the Nth request(s) without an answer")
    p.add_argument("--cut-nth", default="", metavar="N[,M-K...]",
                   help="fault injection: answer the Nth request(s) but cut the connection half-way "
                        "through the body (an interrupted download)")
    p.add_argument("--delay-nth", default="", metavar="N[,M-K...]",
                   help="fault injection: delay the Nth request(s) by --delay-ms (default: every request)")
    p.add_argument("--delay-ms", type=float, default=0.0, help="fault injection: delay before answering")
    p.add_argument("--fault-match", default=None, metavar="REGEX",
                   help="number (and fault) only the requests whose 'METHOD /path' matches REGEX")
    p.add_argument("--fault-control", action="store_true",
                   help=f"tests only: accept GET/POST {FAULTS_PATH} to read / replace the fault settings")
    p.add_argument("--stall-ms", type=float, default=0.0,
                   help="fault injection: sleep this long per MiB of request/response body")


def make_server(args: argparse.Namespace) -> HubServer:
    users = list(args.token)
    if args.token_file:
        users += [parse_token_spec(line.strip()) for line in Path(args.token_file).read_text().splitlines()
                  if line.strip() and not line.startswith("#")]
    try:
        faults = Faults.from_dict({"match": args.fault_match, "fail_nth": args.fail_nth,
                                   "fail_status": args.fail_status, "drop_nth": args.drop_nth,
                                   "cut_nth": args.cut_nth, "delay_nth": args.delay_nth,
                                   "delay_ms": args.delay_ms})
    except (ValueError, re.error) as exc:
        raise SystemExit(f"error: {exc}") from None
    config = ServerConfig(users=users, lfs_threshold=args.lfs_threshold, faults=faults,
                          fault_control=args.fault_control, stall_s=args.stall_ms / 1000.0)
    return HubServer((args.host, args.port), Store(Path(args.data)), config)


def serve(args: argparse.Namespace) -> int:
    """Run the server until SIGTERM / SIGINT; the first stdout line is the URL."""
    server = make_server(args)
    host, port = server.server_address[:2]
    print(f"http://{host}:{port}", flush=True)

    def _stop(signum, frame):  # noqa: ARG001
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, _stop)
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m hfcompress.hub.server", description=__doc__.splitlines()[0])
    add_arguments(p)
    return serve(p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
