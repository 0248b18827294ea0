"""Wire formats: request bodies (Content-Length / chunked) and NDJSON commit payloads."""

from __future__ import annotations

import base64
import binascii
import json
import re
import time
from collections.abc import Callable
from typing import Any, BinaryIO

from .errors import HubHTTPError
from .store import CHUNK, BlobWriter, Store

MAX_SMALL_LINE = 64 * 1024 * 1024  # an NDJSON line without streamable content may not exceed this
_CONTENT_MARK = b'"content": "'


class Body:
    """The request body as a stream (Content-Length or chunked transfer encoding).

    Framing errors (a Content-Length that is not a non-negative integer, both framings at
    once, a bad chunk size) raise :class:`HubHTTPError` 400 before anything is read.
    """

    def __init__(self, rfile: BinaryIO, headers, stall_s: float = 0.0):
        self.rfile = rfile
        self.done = True  # until the framing is known to be valid
        te = headers.get("Transfer-Encoding", "").strip().lower()
        cl = headers.get("Content-Length")
        if te not in ("", "chunked"):
            raise HubHTTPError(400, f"unsupported Transfer-Encoding {printable(te)!r}: send Content-Length")
        if te and cl is not None:
            raise HubHTTPError(400, "both Content-Length and Transfer-Encoding are set: send one of them")
        self.chunked = te == "chunked"
        self.has_length = self.chunked or cl is not None
        self.remaining = 0 if self.chunked else parse_content_length(cl)
        self.done = not self.chunked and self.remaining == 0
        self.stall_s = stall_s

    def _chunk_size(self) -> int:
        line = self.rfile.readline(1026)
        size = line.split(b";")[0].strip()
        if not line.endswith(b"\n") or not re.fullmatch(rb"[0-9a-fA-F]{1,15}", size):
            self.done = True
            raise HubHTTPError(400, f"invalid chunk size line {printable(line[:40].decode('latin-1'))!r} in a chunked body")
        return int(size, 16)

    def read(self, n: int = CHUNK) -> bytes:
        if self.done:
            return b""
        if self.chunked:
            if self.remaining == 0:
                size = self._chunk_size()
                if size == 0:
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass
                    self.done = True
                    return b""
                self.remaining = size
            data = self.rfile.read(min(n, self.remaining))
            self.remaining -= len(data)
            if self.remaining == 0 and self.rfile.readline(3) not in (b"\r\n", b"\n"):
                self.done = True
                raise HubHTTPError(400, "a chunk of the chunked body is not followed by CRLF")
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
            item = _load_item(head + line)
            if item["key"] != "file":
                raise HubHTTPError(400, "only 'file' items of a commit payload carry 'content'")
            item["value"]["_blob"] = blob
            item["value"]["content"] = ""
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


def _load_item(line: bytes) -> dict:
    """One NDJSON commit item: ``{"key": str, "value": {...}}`` (400 otherwise)."""
    try:
        item = json.loads(line)
    except (ValueError, RecursionError):
        raise HubHTTPError(400, "malformed NDJSON line in commit payload") from None
    if not isinstance(item, dict) or not isinstance(item.get("key"), str) or not isinstance(item.get("value"), dict):
        raise HubHTTPError(400, 'malformed NDJSON item in commit payload: expected {"key": ..., "value": {...}}')
    return item


def _parse_line(line: bytes, store: Store) -> dict:
    item = _load_item(line)
    val = item["value"]
    if item["key"] == "file":
        if val.get("encoding", "base64") != "base64":
            raise HubHTTPError(400, f"unsupported file encoding {printable(repr(val.get('encoding'))[:40])}")
        content = val.get("content", "")
        if not isinstance(content, str):
            raise HubHTTPError(400, "a commit file's 'content' must be a base64 string")
        try:
            data = base64.b64decode(content, validate=True)
        except (binascii.Error, ValueError):
            raise HubHTTPError(400, "invalid base64 content in commit payload") from None
        val["_blob"] = store.put_bytes(data)
        val["content"] = ""
    return item


# ---------------------------------------------------------------------------------------------
# Request parsing: every helper raises HubHTTPError 4xx (one line) on malformed input
# ---------------------------------------------------------------------------------------------

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_PATH_MAX = 1000


def printable(text: str) -> str:
    """``text`` with control characters (CR, LF, NUL, ESC, ...) percent-escaped: safe in a
    header value or a log line."""
    return _CONTROL.sub(lambda m: f"%{ord(m.group()):02X}", text)


def parse_content_length(value: str | None) -> int:
    """A Content-Length header: absent -> 0; anything but a non-negative integer -> 400."""
    if value is None:
        return 0
    value = value.strip()
    if not value.isdigit() or not value.isascii() or len(value) > 18:
        raise HubHTTPError(400, f"invalid Content-Length {printable(value[:40])!r}: expected a byte count")
    return int(value)


def json_body(data: bytes, what: str = "request body") -> dict:
    """``data`` parsed as a JSON object (empty -> ``{}``)."""
    try:
        obj = json.loads(data or b"{}")
    except (ValueError, RecursionError):
        raise HubHTTPError(400, f"{what} is not valid JSON") from None
    if not isinstance(obj, dict):
        raise HubHTTPError(400, f"{what} must be a JSON object")
    return obj


def _field(obj: dict, key: str, default: Any, ok: Callable[[Any], bool], expected: str, what: str) -> Any:
    val = obj.get(key)
    if val is None and default is not None:
        return default
    if not ok(val):
        raise HubHTTPError(400, f"{what}: {key!r} must be {expected}, got {printable(repr(val)[:40])}")
    return val


def get_str(obj: dict, key: str, default: str | None = None, what: str = "request") -> str:
    """``obj[key]`` as a string (``default`` when absent or null; 400 when absent and no default)."""
    return _field(obj, key, default, lambda v: isinstance(v, str), "a string", what)


def get_int(obj: dict, key: str, default: int | None = None, what: str = "request") -> int:
    """``obj[key]`` as a non-negative integer (``default`` when absent or null)."""
    return _field(obj, key, default, lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0,
                  "a non-negative integer", what)


def get_list(obj: dict, key: str, what: str = "request", of: type = dict) -> list:
    """``obj[key]`` as a list of ``of`` (absent or null -> ``[]``)."""
    val = obj.get(key)
    if val is None:
        return []
    if not isinstance(val, list) or not all(isinstance(v, of) for v in val):
        raise HubHTTPError(400, f"{what}: {key!r} must be a list of {of.__name__}s")
    return val


def check_repo_path(path: object, folder: bool = False) -> str:
    """A file path inside a repo: relative, ``/``-separated, no ``.``/``..``/``.git``
    components, no backslash, drive letter or control character; a trailing ``/`` only for a
    folder. Returns it without the trailing ``/``; raises 400 otherwise."""
    if not isinstance(path, str):
        raise HubHTTPError(400, f"invalid path in repo: expected a string, got {type(path).__name__}")
    body = path[:-1] if folder and path.endswith("/") else path
    parts = body.split("/")
    bad = (not body or len(path) > _PATH_MAX or _CONTROL.search(path) or "\\" in path
           or re.match(r"[A-Za-z]:", body) or any(p in ("", ".", "..") or p.lower() == ".git" for p in parts))
    if bad:
        raise HubHTTPError(400, f"invalid path in repo: {printable(path[:200])!r} (use a relative 'dir/file' path "
                                "without '..', '.git', backslashes or control characters)")
    return body
