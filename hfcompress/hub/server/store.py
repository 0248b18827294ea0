"""Content-addressed storage: blobs, commit objects, repos and refs under ``--data DIR``."""

from __future__ import annotations

import collections
import contextlib
import datetime as _dt
import fcntl
import hashlib
import json
import os
import re
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from .errors import HubHTTPError

CHUNK = 1 << 20
#: Files at least this large (or with these suffixes) are stored and reported as LFS files.
LFS_MIN_SIZE = 10 * 1024 * 1024
LFS_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".h5", ".onnx", ".gguf", ".msgpack",
                ".parquet", ".arrow", ".npy", ".npz", ".model", ".pkl", ".zip", ".tar", ".gz")
_SHA_RE = re.compile(r"[0-9a-f]{40}")
_OID_RE = re.compile(r"[0-9a-f]{64}")
_TYPES = ("model", "dataset", "space")
GITATTRIBUTES = "".join(f"*{s} filter=lfs diff=lfs merge=lfs -text\n" for s in LFS_SUFFIXES)


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
    """Content-addressed blobs, commit objects and refs under ``root`` (see docs/HUB.md).

    Blobs are stored once for the whole server but *used* per repo: an LFS object is usable
    in a repo only if it was uploaded to it (``lfs/<oid>`` marker), is reachable from its
    commits, or from a repo the caller can read (:meth:`oid_usable`). Blobs and commits no
    repo references any more are deleted by :meth:`collect_garbage`; blobs and commits a
    request is still working with are pinned (:meth:`request_pins`) so that a concurrent
    collection cannot take them away.
    """

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
        self._gc_lock = threading.Lock()  # held while blobs / commits are installed or collected
        self._pins: collections.Counter[str] = collections.Counter()
        self._local = threading.local()
        self._reach_cache: dict[tuple[str, str], tuple[str, frozenset[str], frozenset[str]]] = {}

    # -- pins (a request's blobs and commits survive a concurrent garbage collection)
    @contextlib.contextmanager
    def request_pins(self) -> Iterator[None]:
        """Pin the blobs / commits this thread installs or :meth:`pin_blob` returns until the
        block ends. A block that fails after installing new blobs (a refused commit) collects
        them again, so that a refused request leaves the store as it was."""
        self._local.pins = pins = []
        self._local.created = False
        failed = False
        try:
            yield
        except BaseException:
            failed = True
            raise
        finally:
            self._local.pins = None
            with self._gc_lock:
                self._pins.subtract(pins)
                self._pins += collections.Counter()  # drop zero counts
            if failed and self._local.created:
                self.collect_garbage()

    def _pin_locked(self, key: str) -> None:
        pins = getattr(self._local, "pins", None)
        if pins is not None:
            pins.append(key)
            self._pins[key] += 1

    def pin_blob(self, sha256: str) -> BlobInfo | None:
        """The blob's info, pinned for this request; None if it is not in the store."""
        with self._gc_lock:
            info = self.blob_info(sha256)
            if info is not None:
                self._pin_locked(sha256)
            return info

    # -- blobs
    def blob_path(self, sha256: str) -> Path:
        return self.root / "blobs" / sha256[:2] / sha256

    def blob_info(self, sha256: str) -> BlobInfo | None:
        if not isinstance(sha256, str) or not _OID_RE.fullmatch(sha256):
            return None
        meta = self.blob_path(sha256).with_suffix(".json")
        if not meta.is_file() or not self.blob_path(sha256).is_file():
            return None
        with contextlib.suppress(FileNotFoundError):  # collected meanwhile
            return BlobInfo(**json.loads(meta.read_text()))
        return None

    def put_blob_file(self, tmp: Path, info: BlobInfo) -> None:
        dest = self.blob_path(info.sha256)
        dest.parent.mkdir(parents=True, exist_ok=True)
        with self._gc_lock:
            self._pin_locked(info.sha256)
            if not dest.exists():
                os.replace(tmp, dest)
                _fsync_dir(dest.parent)
                self._local.created = True
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
        with contextlib.suppress(FileNotFoundError):
            return json.loads(path.read_text())
        return None

    def set_repo_meta(self, repo_type: str, repo_id: str, meta: dict) -> None:
        atomic_write(self.repo_dir(repo_type, repo_id) / "repo.json", json.dumps(meta, indent=1).encode())

    def list_repos(self, repo_type: str) -> list[str]:
        """Ids of the repos of this type (``namespace/name``), sorted."""
        base = self.root / "repos" / f"{repo_type}s"
        return sorted(f"{ns.name}/{r.name}" for ns in base.glob("*") if ns.is_dir()
                      for r in ns.iterdir() if (r / "repo.json").is_file())

    def refs(self, repo_type: str, repo_id: str) -> dict[str, dict[str, str]]:
        path = self.repo_dir(repo_type, repo_id) / "refs.json"
        with contextlib.suppress(FileNotFoundError):
            return json.loads(path.read_text())
        return {"branches": {}, "tags": {}}

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
        """Delete the repo, then the blobs and commits nothing references any more."""
        with self.lock(repo_type, repo_id):
            src = self.repo_dir(repo_type, repo_id)
            dest = self.root / "trash" / uuid.uuid4().hex
            os.replace(src, dest)
            _fsync_dir(src.parent)
            shutil.rmtree(dest, ignore_errors=True)
        self.collect_garbage()

    # -- LFS objects per repo
    def mark_uploaded(self, repo_type: str, repo_id: str, oid: str) -> None:
        """Record that ``oid`` was uploaded (its bytes received) to this repo."""
        atomic_write(self.repo_dir(repo_type, repo_id) / "lfs" / oid, b"")

    def oid_usable(self, repo_type: str, repo_id: str, oid: str, readable: Callable[[str, str], bool]) -> bool:
        """Whether ``oid`` may be used in this repo: uploaded to it, reachable from its commits,
        or reachable from a repo ``readable(type, id)`` says the caller can read."""
        if self.blob_info(oid) is None:
            return False
        if (self.repo_dir(repo_type, repo_id) / "lfs" / oid).is_file() or oid in self.repo_blobs(repo_type, repo_id):
            return True
        return any(oid in self.repo_blobs(t, r) and readable(t, r)
                   for t in _TYPES for r in self.list_repos(t) if (t, r) != (repo_type, repo_id))

    def repo_blobs(self, repo_type: str, repo_id: str) -> frozenset[str]:
        """The sha256 of every file in every commit reachable from the repo's refs."""
        return self._reach(repo_type, repo_id)[1]

    def _reach(self, repo_type: str, repo_id: str) -> tuple[str, frozenset[str], frozenset[str]]:
        """``(refs key, blobs, commits)`` reachable from the repo's refs (cached per refs state)."""
        refs = self.refs(repo_type, repo_id)
        key = json.dumps(refs, sort_keys=True)
        cached = self._reach_cache.get((repo_type, repo_id))
        if cached is not None and cached[0] == key:
            return cached
        commits: set[str] = set()
        blobs: set[str] = set()
        todo = list(refs["branches"].values()) + list(refs["tags"].values())
        while todo:
            sha = todo.pop()
            if sha in commits:
                continue
            c = self.commit(sha)
            if c is None:
                continue
            commits.add(sha)
            blobs.update(e["sha256"] for e in c["tree"].values())
            todo.extend(c["parents"])
        out = (key, frozenset(blobs), frozenset(commits))
        self._reach_cache[(repo_type, repo_id)] = out
        return out

    def collect_garbage(self) -> dict[str, int]:
        """Delete blobs and commits that no repo references (and no request has pinned)."""
        with self._gc_lock:
            blobs: set[str] = set(self._pins)
            commits: set[str] = set(self._pins)
            for t in _TYPES:
                for r in self.list_repos(t):
                    _, b, c = self._reach(t, r)
                    blobs |= b
                    commits |= c
                    blobs.update(p.name for p in (self.repo_dir(t, r) / "lfs").glob("*"))
            for key in [k for k in list(self._reach_cache) if self.repo_meta(*k) is None]:
                del self._reach_cache[key]
            gone = {"blobs": 0, "commits": 0}
            for path in (self.root / "blobs").glob("*/*"):
                if path.suffix == "" and path.name not in blobs:
                    path.with_suffix(".json").unlink(missing_ok=True)
                    path.unlink(missing_ok=True)
                    gone["blobs"] += 1
            for path in (self.root / "commits").glob("*/*.json"):
                if path.stem not in commits:
                    path.unlink(missing_ok=True)
                    gone["commits"] += 1
            return gone

    # -- commits
    def commit(self, sha: str) -> dict | None:
        if not isinstance(sha, str) or not _SHA_RE.fullmatch(sha):
            return None
        path = self.root / "commits" / sha[:2] / f"{sha}.json"
        with contextlib.suppress(FileNotFoundError):
            return json.loads(path.read_text())
        return None

    def write_commit(self, tree: dict, parents: list[str], title: str, message: str, author: str) -> str:
        body = {"tree": dict(sorted(tree.items())), "parents": parents, "title": title, "message": message,
                "author": author, "date": _now(), "nonce": uuid.uuid4().hex}
        data = json.dumps(body, sort_keys=True).encode()
        sha = hashlib.sha1(data).hexdigest()
        with self._gc_lock:
            self._pin_locked(sha)
        atomic_write(self.root / "commits" / sha[:2] / f"{sha}.json", data)
        return sha

    def resolve(self, repo_type: str, repo_id: str, revision: str) -> str | None:
        refs = self.refs(repo_type, repo_id)
        rev = revision.removeprefix("refs/heads/").removeprefix("refs/tags/")
        sha = refs["branches"].get(rev) or refs["tags"].get(rev)
        if sha:
            return sha
        if _SHA_RE.fullmatch(revision) and revision in self._reach(repo_type, repo_id)[2]:
            return revision
        return None
