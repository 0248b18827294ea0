"""Raw-HTTP helpers for the hub server tests: a server whose log is captured, requests sent
byte for byte over a socket (malformed framing included), and the LFS upload protocol."""

from __future__ import annotations

import base64
import hashlib
import json
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from hfcompress.testing.hub import (
    OTHER_TOKEN,
    OTHER_USER,
    REPO_ROOT,
    TEST_ORGS,
    TEST_TOKEN,
    TEST_USER,
    client_env,
)


@dataclass
class LoggedServer:
    """A hub server subprocess; its stderr (request log, errors) goes to :attr:`log_path`."""

    url: str
    data_dir: Path
    log_path: Path
    proc: subprocess.Popen
    env: dict[str, str]

    @property
    def port(self) -> int:
        return int(urlsplit(self.url).port)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def api(self, token: str | bool | None = TEST_TOKEN):
        from huggingface_hub import HfApi

        return HfApi(endpoint=self.url, token=token)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=3)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_logged_server(data_dir: Path, *extra: str) -> LoggedServer:
    """``python -m hfcompress.hub.server`` with request logging on and the test users."""
    data_dir = Path(data_dir)
    log_path = data_dir.parent / f"{data_dir.name}-server.log"
    home = Path(tempfile.mkdtemp(prefix="hfc-hf-home-"))
    env = {**client_env("http://127.0.0.1:0", None, home), "HFCOMPRESS_HUB_LOG": "1"}
    cmd = [sys.executable, "-m", "hfcompress.hub.server", "--port", "0", "--data", str(data_dir),
           "--token", f"{TEST_USER}:{TEST_TOKEN}:{','.join(TEST_ORGS)}", "--token", f"{OTHER_USER}:{OTHER_TOKEN}",
           *extra]
    log = open(log_path, "w")  # noqa: SIM115 - the child owns it
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log, text=True, env=env, cwd=REPO_ROOT)
    line: list[str] = []
    reader = threading.Thread(target=lambda: line.append(proc.stdout.readline()), daemon=True)
    reader.start()
    reader.join(60)
    url = (line[0] if line else "").strip()
    if not url.startswith("http://"):
        proc.kill()
        raise RuntimeError(f"hub server did not start: {log_path.read_text()[-2000:]}")
    return LoggedServer(url, data_dir, log_path, proc, client_env(url, TEST_TOKEN, home))


@pytest.fixture(scope="session")
def logged_hub(tmp_path_factory) -> Iterator[LoggedServer]:
    """One logged server (idle timeout 1.5 s) shared by the hub security and fuzz tests; at the
    end, its log must hold no traceback."""
    server = start_logged_server(tmp_path_factory.mktemp("logged-hub") / "data", "--idle-timeout", "1.5")
    yield server
    server.stop()
    assert "Traceback" not in server.log(), server.log()[-3000:]


@dataclass
class Answer:
    status: int | None  # None: no answer at all
    headers: list[tuple[str, str]]
    body: bytes
    head: bytes  # the raw status line + headers

    def json(self):
        return json.loads(self.body)

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k.lower() == name.lower()), None)


def raw(port: int, data: bytes, timeout: float = 20.0, half_close: bool = True) -> Answer:
    """Send ``data`` as is on a new connection (then close our side), read the whole answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        try:
            s.sendall(data)
            if half_close:
                s.shutdown(socket.SHUT_WR)
        except OSError:  # the server answered early (e.g. 431) and closed: read what it said
            pass
        chunks = []
        try:
            while chunk := s.recv(65536):
                chunks.append(chunk)
        except (ConnectionResetError, TimeoutError, OSError):
            pass
    out = b"".join(chunks)
    head, _, body = out.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    if not lines[0].startswith(b"HTTP/1."):
        return Answer(None, [], out, head)
    headers = []
    for ln in lines[1:]:
        k, _, v = ln.decode("latin-1").partition(":")
        headers.append((k.strip(), v.strip()))
    return Answer(int(lines[0].split()[1]), headers, body, head)


def request(port: int, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None,
            token: str | None = None) -> Answer:
    """A well-framed request (Content-Length set from ``body`` unless given in ``headers``)."""
    hdrs = {"Host": f"127.0.0.1:{port}", "Connection": "close", **(headers or {})}
    if token:
        hdrs["Authorization"] = f"Bearer {token}"
    if body is not None and not any(k.lower() in ("content-length", "transfer-encoding") for k in hdrs):
        hdrs["Content-Length"] = str(len(body))
    head = f"{method} {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in hdrs.items()) + "\r\n"
    return raw(port, head.encode("latin-1") + (body or b""))


def ndjson(*items: dict) -> bytes:
    return b"\n".join(json.dumps(i).encode() for i in items)


def commit_body(*ops: dict, summary: str = "raw commit") -> bytes:
    return ndjson({"key": "header", "value": {"summary": summary}}, *ops)


def file_op(path: str, data: bytes) -> dict:
    return {"key": "file", "value": {"path": path, "content": base64.b64encode(data).decode(), "encoding": "base64"}}


def lfs_op(path: str, data: bytes) -> dict:
    return {"key": "lfsFile", "value": {"path": path, "algo": "sha256", "oid": hashlib.sha256(data).hexdigest(),
                                        "size": len(data)}}


def lfs_batch(port: int, repo: str, data: bytes, token: str, operation: str = "upload") -> dict:
    """The batch API's answer for the one object ``data``."""
    body = json.dumps({"operation": operation, "transfers": ["basic"], "hash_algo": "sha256",
                       "objects": [{"oid": hashlib.sha256(data).hexdigest(), "size": len(data)}]}).encode()
    ans = request(port, "POST", f"/{repo}.git/info/lfs/objects/batch", body,
                  {"Content-Type": "application/vnd.git-lfs+json"}, token)
    assert ans.status == 200, (ans.status, ans.body)
    return ans.json()["objects"][0]


def lfs_upload(port: int, repo: str, data: bytes, token: str) -> dict:
    """Upload ``data`` through the LFS batch API as a client does (batch, PUT, verify); the batch object."""
    obj = lfs_batch(port, repo, data, token)
    if "actions" in obj:
        href = urlsplit(obj["actions"]["upload"]["href"])
        ans = request(port, "PUT", f"{href.path}?{href.query}", data)
        assert ans.status == 200, (ans.status, ans.body)
        verify = urlsplit(obj["actions"]["verify"]["href"]).path
        ans = request(port, "POST", verify, json.dumps({"oid": obj["oid"], "size": obj["size"]}).encode(),
                      token=token)
        assert ans.status == 200, (ans.status, ans.body)
    return obj


def store_digest(data_dir: Path) -> str:
    """A hash of every file (path and content) of a server's data folder, tmp/ and the lock aside."""
    h = hashlib.sha256()
    for p in sorted(Path(data_dir).rglob("*")):
        rel = p.relative_to(data_dir).as_posix()
        if rel.startswith(("tmp/", "trash/")) or rel == ".lock" or not p.is_file():
            continue
        h.update(rel.encode() + b"\0" + p.read_bytes() + b"\0")
    return h.hexdigest()
