"""The HTTP server and its routes (one ``h_*`` method per Hub API endpoint).

Every request is parsed by the helpers of :mod:`.protocol`: malformed input raises
:class:`HubHTTPError` 4xx, answered as one-line JSON (and one log line); only a bug in the
server answers 500 with a traceback in the log. Every header value goes through
:func:`.protocol.printable` (:meth:`Handler.send_header`), so no user text reaches a header
with CR / LF / control characters.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
import re
import secrets
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlencode, urlsplit

from .auth import TokenTable, User, can_read
from .cards import parse_front_matter, validate_card_metadata
from .errors import HubHTTPError
from .faults import Faults
from .protocol import (
    Body,
    check_repo_path,
    get_int,
    get_list,
    get_str,
    iter_ndjson,
    json_body,
    printable,
)
from .store import CHUNK, BlobInfo, BlobWriter, Store, is_lfs_path

REPO_TYPES = ("model", "dataset", "space")
TYPE_PREFIX = {"model": "", "dataset": "datasets/", "space": "spaces/"}
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}")
_REF_RE = re.compile(r"[A-Za-z0-9._/-]{1,200}")
#: Listing pages hold at most this many repos (``limit`` may ask for fewer); more: ``Link: rel="next"``.
PAGE_SIZE = 1000
_LIST_SORTS = ("id", "createdAt", "lastModified", "downloads", "likes", "trendingScore")
_LFS_ABSENT = "Object does not exist"


@dataclass
class ServerConfig:
    users: list[User]
    lfs_threshold: int | None = None  # answer uploadMode "lfs" from this size on (None: never)
    faults: Faults = field(default_factory=Faults)
    fault_control: bool = False  # allow /api/_hfcompress/faults (tests only)
    stall_s: float = 0.0  # seconds per MiB of request body
    secret: bytes = field(default_factory=lambda: secrets.token_bytes(32))
    idle_timeout_s: float = 120.0  # a connection silent this long (half-open client) is closed


class HubServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 64

    def __init__(self, addr: tuple[str, int], store: Store, config: ServerConfig):
        super().__init__(addr, Handler)
        self.store = store
        self.config = config
        self.tokens = TokenTable(config.users)
        self.counter = 0
        self.counter_lock = threading.Lock()

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A connection that failed outside a request (e.g. a reset): one log line, no traceback."""
        exc = sys.exc_info()[1]
        sys.stderr.write(f"hub: connection from {client_address[0]} failed: {type(exc).__name__}: "
                         f"{printable(str(exc))[:200]}\n")


FAULTS_PATH = "/api/_hfcompress/faults"
_T = r"(?P<type>models|datasets|spaces)"
_RepoPath = r"(?P<repo>[^/]+/[^/]+)"
_API = r"/api/" + _T + "/" + _RepoPath
_GIT = r"/(?P<prefix>datasets/|spaces/)?" + _RepoPath
ROUTES: list[tuple[str, re.Pattern[str], str]] = [
    (m, re.compile(p), h) for m, p, h in [
        ("GET", r"/api/whoami-v2", "whoami"),
        ("GET", r"/api/" + _T, "list_repos"),
        ("POST", r"/api/repos/create", "create_repo"),
        ("DELETE", r"/api/repos/delete", "delete_repo"),
        ("POST", r"/api/validate-yaml", "validate_yaml"),
        ("PUT", r"/api/lfs-upload/" + _T + "/" + _RepoPath + r"/(?P<oid>[0-9a-f]{64})", "lfs_upload"),
        ("GET", r"/api/lfs-download/" + _T + "/" + _RepoPath + r"/(?P<oid>[0-9a-f]{64})", "lfs_download"),
        ("POST", r"/api/lfs-verify/" + _T + "/" + _RepoPath, "lfs_verify"),
        ("POST", _API + r"/preupload/(?P<rev>[^/]+)", "preupload"),
        ("POST", _API + r"/commit/(?P<rev>[^/]+)", "commit"),
        ("GET", _API + r"/tree/(?P<rev>[^/]+)(?:/(?P<path>.*))?", "tree"),
        ("POST", _API + r"/paths-info/(?P<rev>[^/]+)", "paths_info"),
        ("GET", _API + r"/refs", "refs"),
        ("GET", _API + r"/commits/(?P<rev>[^/]+)", "commits"),
        ("POST", _API + r"/(?P<kind>branch)/(?P<name>[^/]+)", "create_ref"),
        ("DELETE", _API + r"/(?P<kind>branch|tag)/(?P<name>[^/]+)", "delete_ref"),
        ("POST", _API + r"/(?P<kind>tag)/(?P<rev>[^/]+)", "create_ref"),
        ("PUT", _API + r"/settings", "settings"),
        ("GET", _API + r"(?:/revision/(?P<rev>[^/]+))?", "repo_info"),
        ("POST", _GIT + r"\.git/info/lfs/objects/batch", "lfs_batch"),
        ("GET", _GIT + r"/resolve/(?P<rev>[^/]+)/(?P<path>.+)", "resolve"),
        ("HEAD", _GIT + r"/resolve/(?P<rev>[^/]+)/(?P<path>.+)", "resolve"),
    ]
]


def _flag(query: dict[str, list[str]], key: str) -> bool:
    return (query.get(key) or ["false"])[0].lower() in ("1", "true", "yes")


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: HubServer
    server_version = "hfcompress-hub/1"

    # -- plumbing
    def setup(self) -> None:
        self.timeout = self.server.config.idle_timeout_s  # socket timeout: half-open clients go away
        super().setup()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        if os.environ.get("HFCOMPRESS_HUB_LOG"):
            sys.stderr.write("hub: " + printable(format % args) + "\n")

    def send_header(self, keyword: str, value: str) -> None:
        """Every header goes out through here: control characters in values are escaped."""
        super().send_header(keyword, printable(str(value)))

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """Errors found by the stdlib request parser (bad request line, headers too long, ...): JSON too."""
        self.close_connection = True
        if not hasattr(self, "body"):
            self.body = Body(self.rfile, {})
        self.cut = False
        if code == 501:  # a method no route has (OPTIONS, BREW, ...)
            message = f"not implemented by the hfcompress hub server: {message}"
        message = printable(message or explain or "bad request")
        with contextlib.suppress(OSError):
            self._send(code, {"error": message}, {"X-Error-Message": message[:500], "Connection": "close"})
            # Lingering close: read (a bounded amount of) what the client still sends, so that
            # closing with unread data does not reset the connection before it reads the answer.
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_WR)
            self.connection.settimeout(1.0)
            left = 1 << 20
            while left > 0 and (chunk := self.connection.recv(65536)):
                left -= len(chunk)

    def _dispatch(self) -> None:
        self.body = Body(self.rfile, {})
        self.user: User | None = None
        self.cut = False
        try:
            with self.server.store.request_pins():
                split = urlsplit(self.path)
                self.query = parse_qs(split.query)
                try:
                    self.body = Body(self.rfile, self.headers, self.server.config.stall_s)
                except HubHTTPError:
                    self.close_connection = True  # the body's framing is unknown: nothing more can be read
                    raise
                self._route(split.path)
        except HubHTTPError as err:
            self._send_error(err)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except TimeoutError:
            self.close_connection = True
            self.body.done = True
            self.log_error("connection idle for %ss: closed", self.server.config.idle_timeout_s)
            with contextlib.suppress(OSError):
                self._send(408, {"error": "request timed out: the connection was idle too long"})
        except Exception as exc:  # noqa: BLE001 - a server answers 500, it does not crash
            import traceback

            traceback.print_exc(file=sys.stderr)
            self._send_error(HubHTTPError(500, f"internal error: {type(exc).__name__}: {exc}"))
        if not self.body.done:
            self.close_connection = True

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = do_PATCH = _dispatch  # noqa: N815

    def _route(self, path: str) -> None:
        if path == FAULTS_PATH:
            self._faults_control()
            return
        with self.server.counter_lock:
            self.server.counter += 1
            n, action, delay = self.server.config.faults.decide(f"{self.command} {path}")
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
            m = pattern.fullmatch(path)
            if m and method == self.command:
                params = {k: unquote(v) for k, v in m.groupdict().items() if v is not None}
                getattr(self, f"h_{name}")(**params)
                return
        raise HubHTTPError(501, f"not implemented by the hfcompress hub server: {self.command} {path[:200]}")

    def _faults_control(self) -> None:
        """GET: the fault settings and counts; POST a JSON object: replace them (counter reset)."""
        if not self.server.config.fault_control:
            raise HubHTTPError(404, "fault control is off: start the server with --fault-control")
        if self.command == "POST":
            try:
                faults = Faults.from_dict(self._json())
            except (ValueError, TypeError, re.error) as exc:
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
        if not self.body.done and "Connection" not in (headers or {}):
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
        message = printable(err.message)  # one line, whatever user text it quotes
        headers = {"X-Error-Message": message.encode("ascii", "replace").decode()[:500]}
        if err.code:
            headers["X-Error-Code"] = err.code
        with contextlib.suppress(BrokenPipeError, ConnectionResetError, TimeoutError):
            self._send(err.status, {"error": message, **err.extra}, headers)

    def _json(self, limit: int = 16 * CHUNK) -> dict:
        return json_body(self.body.read_all(limit))

    def _q(self, key: str) -> str | None:
        """The first value of a query parameter."""
        vals = self.query.get(key)
        return vals[0] if vals else None

    @property
    def base(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{self.headers.get('Host') or f'{host}:{port}'}"

    def _authenticate(self) -> None:
        auth = self.headers.get("Authorization", "")
        if not auth:
            return
        token = auth[7:].strip() if auth.lower().startswith("bearer ") else ""
        user = self.server.tokens.lookup(token)
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

    def _readable(self, repo_type: str, repo_id: str) -> bool:
        return can_read(self.server.store.repo_meta(repo_type, repo_id), repo_id, self.user)

    def _repo(self, repo_type: str, repo_id: str, write: bool = False) -> dict:
        """The repo's metadata, after the visibility / permission checks the Hub does."""
        meta = self.server.store.repo_meta(repo_type, repo_id) if self._valid_id(repo_id) else None
        if meta is None or not can_read(meta, repo_id, self.user):
            status = 401 if self.user is None else 404
            raise HubHTTPError(status, f"Repository Not Found for {repo_type} {repo_id!r}", "RepoNotFound")
        if write:
            self._check_write_ns(repo_id.split("/")[0], repo_type)
        return meta

    @staticmethod
    def _valid_id(repo_id: str) -> bool:
        parts = repo_id.split("/")
        return len(parts) == 2 and all(_NAME_RE.fullmatch(p) and ".." not in p for p in parts)

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
        repo_type = get_str(body, "type", "model", "repo")
        if repo_type not in REPO_TYPES:
            raise HubHTTPError(400, f"invalid repo type {repo_type[:40]!r}: expected one of {REPO_TYPES}")
        name = get_str(body, "name", what="repo")
        org = get_str(body, "organization", "", "repo")
        user = self._require_user()
        repo_id = f"{org or user.name}/{name}" if "/" not in name else name
        if not self._valid_id(repo_id):
            raise HubHTTPError(400, f"invalid repo id {repo_id[:200]!r}: use namespace/name with letters, digits, "
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
        content = get_str(body, "content", what="validate-yaml")
        meta, error = parse_front_matter(content)
        repo_type = get_str(body, "repoType", "model", "validate-yaml")
        errors = [error] if error else validate_card_metadata(meta or {}, repo_type)
        if errors:
            raise HubHTTPError(400, "Invalid metadata in README.md: " + "; ".join(errors),
                               extra={"errors": [{"message": e} for e in errors]})
        self._send(200, {"errors": [], "warnings": []})

    def h_list_repos(self, type: str) -> None:  # noqa: A002
        """``GET /api/models|datasets|spaces``: ``author``, ``search`` (substrings of the id, all
        must match), ``filter`` (tags, all must match), ``sort`` / ``direction``, ``limit`` (page
        size) and ``cursor`` (from the ``Link: <...>; rel="next"`` header). Private repos are listed
        only for their namespace's user / org members."""
        repo_type = type[:-1]
        store = self.server.store
        author = self._q("author")
        searches = [s.lower() for s in self.query.get("search", [])]
        filters = set(self.query.get("filter", []))
        sort, direction = self._q("sort"), self._q("direction")
        if sort is not None and sort not in _LIST_SORTS:
            raise HubHTTPError(400, f"invalid sort {sort[:40]!r}: use one of {', '.join(_LIST_SORTS)}")
        if direction not in (None, "1", "-1"):
            raise HubHTTPError(400, f"invalid direction {direction[:40]!r}: use 1 or -1")
        limit = self._query_int("limit", PAGE_SIZE)
        offset = self._query_int("cursor", 0)
        items = []
        for repo_id in store.list_repos(repo_type):
            if (author and repo_id.split("/")[0] != author) or any(s not in repo_id.lower() for s in searches):
                continue
            meta = store.repo_meta(repo_type, repo_id)
            if not can_read(meta, repo_id, self.user):
                continue
            with contextlib.suppress(HubHTTPError):  # a repo deleted meanwhile
                item = self._repo_summary(repo_type, repo_id, meta, "main", full=_flag(self.query, "full"))
                if filters <= set(item["tags"]):
                    items.append(item)
        if sort:
            items.sort(key=lambda it: (it.get(sort) or 0, it["id"]), reverse=direction != "1")
        page_size = max(1, min(limit, PAGE_SIZE))
        page = items[offset:offset + page_size]
        headers = {}
        if offset + page_size < len(items):
            query = {k: v for k, v in self.query.items() if k != "cursor"}
            query["cursor"] = [str(offset + page_size)]
            headers["Link"] = f'<{self.base}/api/{type}?{urlencode(query, doseq=True)}>; rel="next"'
        self._send(200, page, headers)

    def _query_int(self, key: str, default: int) -> int:
        val = self._q(key)
        if val is None:
            return default
        if not val.isdigit() or len(val) > 9:
            raise HubHTTPError(400, f"invalid {key} {val[:40]!r}: expected a non-negative integer")
        return int(val)

    # -- info & listings
    def _card_data(self, tree: dict) -> dict | None:
        entry = tree.get("README.md")
        if not entry or entry["size"] > 4 * CHUNK:
            return None
        try:
            text = self.server.store.blob_path(entry["sha256"]).read_bytes().decode("utf-8", "replace")
        except FileNotFoundError:  # collected meanwhile (the repo was deleted)
            return None
        meta, _ = parse_front_matter(text)
        return meta or None

    def _repo_summary(self, repo_type: str, repo: str, meta: dict, rev: str, full: bool = True) -> dict:
        """What ``repo_info`` answers (and, without ``siblings`` unless ``full``, each listing item)."""
        sha, commit = self._commit_for(repo_type, repo, rev)
        tree = commit["tree"]
        card = self._card_data(tree)
        tags = [t for t in ((card or {}).get("tags") or []) if isinstance(t, str)] if card else []
        info: dict[str, Any] = {
            "_id": meta["_id"], "id": repo, "author": repo.split("/")[0], "sha": sha, "private": meta["private"],
            "gated": False, "disabled": False, "downloads": 0, "likes": 0, "createdAt": meta["createdAt"],
            "lastModified": commit["date"], "tags": tags, "cardData": card,
            "usedStorage": sum(e["size"] for e in tree.values()),
        }
        if full:
            info["siblings"] = [{"rfilename": path, "size": e["size"], "blobId": e["oid"],
                                 **({"lfs": {"sha256": e["sha256"], "size": e["size"], "pointerSize": 134}}
                                    if e["lfs"] else {})} for path, e in tree.items()]
        if repo_type == "model":
            info["modelId"] = repo
            for key in ("pipeline_tag", "library_name"):
                if card and isinstance(card.get(key), str):
                    info[key] = card[key]
            if "config.json" in tree and tree["config.json"]["size"] < CHUNK:
                with contextlib.suppress(ValueError, OSError):
                    cfg = json.loads(self.server.store.blob_path(tree["config.json"]["sha256"]).read_bytes())
                    info["config"] = {k: cfg[k] for k in ("architectures", "model_type") if k in cfg}
        return info

    def h_repo_info(self, type: str, repo: str, rev: str = "main") -> None:  # noqa: A002
        repo_type = type[:-1]
        meta = self._repo(repo_type, repo)
        self._send(200, self._repo_summary(repo_type, repo, meta, rev))

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
        data = self.body.read_all(4 * CHUNK)
        if "json" in self.headers.get("Content-Type", ""):
            paths = get_list(json_body(data, "paths-info body"), "paths", "paths-info", of=str)
        else:
            paths = parse_qs(data.decode("utf-8", "replace")).get("paths", [])
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
    def h_create_ref(self, type: str, repo: str, kind: str, name: str | None = None,  # noqa: A002
                     rev: str | None = None) -> None:
        """``POST .../branch/{name}`` (``startingPoint``, default main) or ``.../tag/{rev}`` (``tag``)."""
        repo_type = type[:-1]
        self._repo(repo_type, repo, write=True)
        body = self._json()
        if kind == "branch":
            start = get_str(body, "startingPoint", "main", "create branch")
        else:
            name, start = get_str(body, "tag", what="create tag"), rev
        if not _REF_RE.fullmatch(name) or ".." in name or name.startswith("refs/"):
            raise HubHTTPError(400, f"invalid {kind} name {name[:200]!r}")
        store = self.server.store
        group = "branches" if kind == "branch" else "tags"
        with store.lock(repo_type, repo):
            sha, _ = self._commit_for(repo_type, repo, start)
            refs = store.refs(repo_type, repo)
            if name in refs[group]:
                raise HubHTTPError(409, f"Reference already exists: refs/{'heads' if kind == 'branch' else 'tags'}/{name}")
            refs[group][name] = sha
            store.set_refs(repo_type, repo, refs)
        self._send(200, {})

    def h_delete_ref(self, type: str, repo: str, kind: str, name: str) -> None:  # noqa: A002
        repo_type = type[:-1]
        self._repo(repo_type, repo, write=True)
        store = self.server.store
        group = "branches" if kind == "branch" else "tags"
        with store.lock(repo_type, repo):
            refs = store.refs(repo_type, repo)
            if name not in refs[group]:
                raise HubHTTPError(404, f"Invalid rev id: {name}", "RevisionNotFound")
            if kind == "branch" and name == "main":
                raise HubHTTPError(403, "the main branch cannot be deleted")
            del refs[group][name]
            store.set_refs(repo_type, repo, refs)
        store.collect_garbage()
        self._send(200, {})

    # -- uploads
    def h_preupload(self, type: str, repo: str, rev: str) -> None:  # noqa: A002
        repo_type = type[:-1]
        self._repo(repo_type, repo, write=True)
        if self.query.get("create_pr"):
            raise HubHTTPError(501, "pull requests are not implemented by the hfcompress hub server")
        files = get_list(self._json(), "files", "preupload")
        sha = self.server.store.resolve(repo_type, repo, rev)
        tree = (self.server.store.commit(sha) or {}).get("tree", {}) if sha else {}
        threshold = self.server.config.lfs_threshold
        hint = self.headers.get("X-HFCompress-Upload-Mode", "").lower()
        out = []
        for f in files:
            path, size = get_str(f, "path", what="preupload file"), get_int(f, "size", 0, "preupload file")
            lfs = is_lfs_path(path, size) and size > 0 and (
                hint == "lfs" or (hint != "regular" and threshold is not None and size >= threshold))
            entry = tree.get(path)
            oid = (entry["sha256"] if entry["lfs"] else entry["oid"]) if entry else None
            out.append({"path": path, "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False, "oid": oid})
        self._send(200, {"files": out, "commitOid": sha})

    def _sign(self, op: str, repo_type: str, repo: str, oid: str, size: int, exp: int) -> str:
        msg = f"{op}|{repo_type}|{repo}|{oid}|{size}|{exp}".encode()
        return hmac.new(self.server.config.secret, msg, hashlib.sha256).hexdigest()

    def _signed_url(self, op: str, repo_type: str, repo: str, oid: str, size: int) -> dict:
        exp = int(time.time()) + 3600
        q = f"size={size}&exp={exp}&sig={self._sign(op, repo_type, repo, oid, size, exp)}"
        return {"href": f"{self.base}/api/lfs-{op}/{repo_type}s/{repo}/{oid}?{q}", "expires_in": 3600}

    def _check_signature(self, op: str, repo_type: str, repo: str, oid: str) -> int:
        """The signed URL's size, after checking its signature and expiry (403 otherwise)."""
        try:
            size, exp = int(self._q("size") or ""), int(self._q("exp") or "")
            sig = self._q("sig") or ""
        except ValueError:
            raise HubHTTPError(403, f"LFS {op} URL is missing its signature: ask the batch API again") from None
        if exp < time.time() or not hmac.compare_digest(sig, self._sign(op, repo_type, repo, oid, size, exp)):
            raise HubHTTPError(403, f"LFS {op} URL is invalid or expired: ask the batch API again")
        return size

    def _oid_usable(self, repo_type: str, repo: str, oid: str, size: int | None = None) -> BlobInfo | None:
        """The blob, pinned for this request, if ``oid`` may be used in this repo by this caller
        (uploaded to it, reachable from its commits or from a repo the caller can read); None
        otherwise — the same answer for "absent" and "not yours"."""
        store = self.server.store
        if not store.oid_usable(repo_type, repo, oid, self._readable):
            return None
        info = store.pin_blob(oid)
        return info if info is not None and (size is None or info.size == size) else None

    def h_lfs_batch(self, repo: str, prefix: str = "") -> None:
        repo_type = {"": "model", "datasets/": "dataset", "spaces/": "space"}[prefix]
        body = self._json()
        operation = body.get("operation")
        if operation not in ("upload", "download"):
            raise HubHTTPError(400, "LFS batch 'operation' must be 'upload' or 'download'")
        self._repo(repo_type, repo, write=operation == "upload")
        objects = []
        for obj in get_list(body, "objects", "LFS batch"):
            oid, size = obj.get("oid"), obj.get("size")
            if not isinstance(oid, str) or not re.fullmatch(r"[0-9a-f]{64}", oid) or not isinstance(size, int) \
                    or isinstance(size, bool) or size < 0:
                objects.append({"oid": oid if isinstance(oid, str) else "", "size": 0,
                                "error": {"code": 422, "message": "invalid oid or size"}})
                continue
            known = self._oid_usable(repo_type, repo, oid, size) is not None
            if operation == "download":
                objects.append({"oid": oid, "size": size, "authenticated": True,
                                "actions": {"download": self._signed_url("download", repo_type, repo, oid, size)}}
                               if known else {"oid": oid, "size": size, "error": {"code": 404, "message": _LFS_ABSENT}})
            elif known:
                objects.append({"oid": oid, "size": size})
            else:
                objects.append({"oid": oid, "size": size, "authenticated": True, "actions": {
                    "upload": self._signed_url("upload", repo_type, repo, oid, size),
                    "verify": {"href": f"{self.base}/api/lfs-verify/{repo_type}s/{repo}", "expires_in": 3600},
                }})
        self._send(200, {"transfer": "basic", "objects": objects, "hash_algo": "sha256"})

    def h_lfs_upload(self, type: str, repo: str, oid: str) -> None:  # noqa: A002
        repo_type = type[:-1]
        size = self._check_signature("upload", repo_type, repo, oid)
        if not self.body.has_length:
            raise HubHTTPError(411, "LFS upload needs a Content-Length (or chunked transfer encoding)")
        store = self.server.store
        writer = BlobWriter(store)
        try:
            while chunk := self.body.read():
                writer.write(chunk)
            writer.finish(expected_sha256=oid, expected_size=size)
        finally:
            writer.abort()
        if store.repo_meta(repo_type, repo) is None:
            raise HubHTTPError(404, f"Repository Not Found for {repo_type} {repo!r}", "RepoNotFound")
        store.mark_uploaded(repo_type, repo, oid)
        self._send(200, {}, {"ETag": f'"{oid}"'})

    def h_lfs_download(self, type: str, repo: str, oid: str) -> None:  # noqa: A002
        repo_type = type[:-1]
        size = self._check_signature("download", repo_type, repo, oid)
        info = self.server.store.pin_blob(oid)
        if info is None or info.size != size:
            raise HubHTTPError(404, _LFS_ABSENT)
        self._send_blob(info.sha256, size, {"ETag": f'"{oid}"'})

    def h_lfs_verify(self, type: str, repo: str) -> None:  # noqa: A002
        repo_type = type[:-1]
        self._repo(repo_type, repo, write=True)
        body = self._json()
        oid, size = get_str(body, "oid", what="LFS verify"), get_int(body, "size", what="LFS verify")
        if self._oid_usable(repo_type, repo, oid, size) is None:
            raise HubHTTPError(404, f"LFS object {oid[:64]} was not uploaded")
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
            key, val = item["key"], item["value"]
            if key == "header":
                header = val
            elif key == "file":
                path = check_repo_path(val.get("path"))
                blob: BlobInfo = val["_blob"]
                ops.append(("add", path, {"sha256": blob.sha256, "size": blob.size, "oid": blob.sha1,
                                          "lfs": is_lfs_path(path, blob.size)}))
            elif key == "lfsFile":
                path = check_repo_path(val.get("path"))
                oid, size = get_str(val, "oid", what="lfsFile"), val.get("size")
                info = self._oid_usable(repo_type, repo, oid, size if isinstance(size, int) else None)
                if info is None:
                    raise HubHTTPError(422, f"LFS file {path!r} (oid {oid[:64]}) was not uploaded: upload it "
                                            "through the LFS batch API first")
                ops.append(("add", path, {"sha256": info.sha256, "size": info.size, "oid": info.sha1, "lfs": True}))
            elif key in ("deletedFile", "deletedFolder"):
                path = check_repo_path(val.get("path"), folder=key == "deletedFolder")
                ops.append(("del" if key == "deletedFile" else "deldir", path, None))
            else:
                raise HubHTTPError(501, f"commit operation {key[:40]!r} is not implemented by the hfcompress "
                                        "hub server")
        with store.lock(repo_type, repo):
            refs = store.refs(repo_type, repo)
            head = refs["branches"].get(rev)
            if head is None:
                raise HubHTTPError(404, f"Invalid rev id: {rev}", "RevisionNotFound")
            parent = header.get("parentCommit")
            if parent and parent != head:
                raise HubHTTPError(412, f"A commit has happened since {str(parent)[:40]}: the head of {rev} is {head}")
            tree = dict(store.commit(head)["tree"])
            for kind, path, entry in ops:
                if kind == "add":
                    tree[path] = entry
                elif kind == "del":
                    if path not in tree:
                        raise HubHTTPError(404, f"A file with this name doesn't exist: {path}", "EntryNotFound")
                    del tree[path]
                else:
                    gone = [p for p in tree if p.startswith(path + "/")]
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
                   "Content-Disposition": f"inline; filename*=UTF-8''{quote(path.rsplit('/', 1)[-1])}"}
        if entry["lfs"]:
            headers.update({"X-Linked-Etag": f'"{entry["sha256"]}"', "X-Linked-Size": str(size)})
        self._send_blob(entry["sha256"], size, headers)

    def _send_blob(self, sha256: str, size: int, headers: dict[str, str]) -> None:
        """Stream a stored blob: ``Range`` (206 / 416), HEAD, and the injected cut / stall faults."""
        start, end = 0, size - 1
        status = 200
        headers = {**headers, "Accept-Ranges": "bytes"}
        rng = self.headers.get("Range")
        if rng:
            m = re.fullmatch(r"bytes=(\d{0,18})-(\d{0,18})", rng.strip())
            if not m or (not m.group(1) and not m.group(2)):
                raise HubHTTPError(416, f"unsupported Range {rng[:100]!r}")
            if m.group(1):
                start = int(m.group(1))
                end = min(int(m.group(2)), size - 1) if m.group(2) else size - 1
            else:
                start = max(size - int(m.group(2)), 0)
            if start >= size or start > end:
                raise HubHTTPError(416, f"Range {rng[:100]!r} not satisfiable for {size} bytes",
                                   extra={"size": size})
            status = 206
            headers["Content-Range"] = f"bytes {start}-{end}/{size}"
        length = max(end - start + 1, 0)
        try:
            f = open(self.server.store.blob_path(sha256), "rb")
        except FileNotFoundError:  # collected meanwhile: its repo was deleted
            raise HubHTTPError(404, "Entry not found (deleted meanwhile)", "EntryNotFound") from None
        with f:
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
