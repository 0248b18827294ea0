"""Fuzz the hub server over raw sockets (loopback only): seeded random request lines, headers
and bodies — malformed framing, junk paths, control characters, wrong JSON types, bad commit
payloads — while another client keeps downloading.

Asserted for every request: an answer (never a dropped connection), no 5xx other than the 501
"not implemented" of unknown routes, no injected header, a one-line JSON error. After the run:
no traceback in the server log (one ``hub:`` line per event), the data folder byte-identical
(the fuzz never sends a request that may legitimately change it: writes go without a valid
token, or with bodies that are invalid by construction), the concurrent downloads all
succeeded and the server still serves ``huggingface_hub``.

``HFCOMPRESS_FUZZ_SEED`` / ``HFCOMPRESS_FUZZ_N`` change the seed (default 16) / request count
(default 600); the run stops early after ``TIME_BUDGET_S``.
"""

from __future__ import annotations

import collections
import json
import os
import random
import threading
import time
import uuid
from pathlib import Path

import pytest

from hfcompress.testing.hub import OTHER_TOKEN, TEST_TOKEN, TEST_USER

pytest.register_assert_rewrite("hub_raw")  # before the import: its asserts explain themselves too
from hub_raw import (  # noqa: E402
    LoggedServer,
    commit_body,
    file_op,
    lfs_op,
    lfs_upload,
    raw,
    request,
    store_digest,
)

pytest_plugins = ["hub_raw"]  # the session-wide ``logged_hub`` server, shared by both modules

SEED = int(os.environ.get("HFCOMPRESS_FUZZ_SEED", "16"))
N_REQUESTS = int(os.environ.get("HFCOMPRESS_FUZZ_N", "600"))
TIME_BUDGET_S = 60.0

JUNK = ["%0D%0AX-Injected:%20yes", "%0AX-Injected:%20yes", "%00", "%1B[2J", "..", "%2e%2e", "%2F", "%", "%zz",
        "%ff%fe", "é", "%C3%A9", "x" * 300, "a" * 5000, "", "-", ".git", "main", "refs%2Fheads%2Fmain",
        "0" * 40, "f" * 64, "%20", "+", "~", "*", "?x=%zz", "#frag", "\\", "C:", "\x7f", "😀"]
ROUTES = [
    ("GET", "/api/whoami-v2"), ("GET", "/api/models"), ("GET", "/api/datasets"), ("GET", "/api/spaces"),
    ("GET", "/api/models/{repo}"), ("GET", "/api/models/{repo}/revision/{rev}"),
    ("GET", "/api/models/{repo}/tree/{rev}/{path}"), ("GET", "/api/models/{repo}/refs"),
    ("GET", "/api/models/{repo}/commits/{rev}"), ("GET", "/{repo}/resolve/{rev}/{path}"),
    ("HEAD", "/{repo}/resolve/{rev}/{path}"), ("GET", "/datasets/{repo}/resolve/{rev}/{path}"),
    ("POST", "/api/models/{repo}/preupload/{rev}"), ("POST", "/api/models/{repo}/paths-info/{rev}"),
    ("POST", "/{repo}.git/info/lfs/objects/batch"), ("POST", "/api/lfs-verify/models/{repo}"),
    ("POST", "/api/validate-yaml"), ("GET", "/api/lfs-download/models/{repo}/{oid}?size=1&exp=9&sig={rev}"),
    # writes: never with a token that may write there (see module docstring)
    ("POST", "/api/repos/create"), ("DELETE", "/api/repos/delete"), ("PUT", "/api/models/{repo}/settings"),
    ("POST", "/api/models/{repo}/commit/{rev}"), ("POST", "/api/models/{repo}/branch/{rev}"),
    ("DELETE", "/api/models/{repo}/branch/{rev}"), ("POST", "/api/models/{repo}/tag/{rev}"),
    ("DELETE", "/api/models/{repo}/tag/{rev}"), ("PUT", "/api/lfs-upload/models/{repo}/{oid}?size=3&exp=1&sig=x"),
    ("PATCH", "/api/models/{repo}"), ("GET", "/{junk}"), ("OPTIONS", "/api/models"), ("BREW", "/"),
]
READ_ONLY_POSTS = ("preupload", "paths-info", "objects/batch", "lfs-verify", "validate-yaml")


def _junk(rng: random.Random) -> str:
    return rng.choice(JUNK) if rng.random() < 0.7 else "".join(rng.choice(JUNK) for _ in range(rng.randint(2, 4)))


def _json_value(rng: random.Random, depth: int = 0):
    kinds = ["str", "int", "neg", "float", "null", "bool", "list", "dict", "junk"]
    kind = rng.choice(kinds if depth < 3 else kinds[:6])
    return {"str": lambda: rng.choice(["", "abc", "main", "x\r\ny", "../a", "a\\b", ".git/x", "é"]),
            "int": lambda: rng.randint(0, 1 << 70), "neg": lambda: -rng.randint(1, 99), "float": lambda: 1e308 * 10,
            "null": lambda: None, "bool": lambda: rng.random() < 0.5,
            "list": lambda: [_json_value(rng, depth + 1) for _ in range(rng.randint(0, 3))],
            "dict": lambda: {rng.choice(["path", "size", "oid", "name", "type"]): _json_value(rng, depth + 1)},
            "junk": lambda: _junk(rng)}[kind]()


INVALID_CREATE_NAMES = ["abc\n", "", "a/b/c", "..", "-x", "x" * 97, "a b", "é", 5, None, ["x"], {"a": 1}]
BAD_PATHS = ["a\\b", "C:/x", "a\x00b", "a\nb", "dir/", ".git/config", "../x", "", "/abs", "a//b"]


def _body(rng: random.Random, route: str) -> bytes:
    """A body; for the writing routes, invalid by construction."""
    choice = rng.randrange(8)
    if "/commit/" in route:
        op = rng.choice([file_op(rng.choice(BAD_PATHS), os.urandom(rng.randint(0, 3000))),
                         lfs_op(rng.choice(BAD_PATHS), b"a"), {"key": "file", "value": _json_value(rng)},
                         {"key": _json_value(rng), "value": {}}, {"key": "deletedFile", "value": {"path": 7}}])
        body = commit_body(op)
        return body if choice < 6 else body[: rng.randint(0, len(body))] + os.urandom(rng.randint(0, 50))
    if "/repos/create" in route or "/repos/delete" in route:
        obj = {"name": rng.choice(INVALID_CREATE_NAMES), "type": rng.choice(["model", "dataset", 3, None, "x"]),
               "organization": rng.choice([None, "hfc-org", 3, ""])}
        return json.dumps(obj).encode() if choice < 6 else rng.choice([b"[]", b"{", b"\xff\xfe", b"[" * 50000])
    if choice == 0:
        return b""
    if choice == 1:
        return os.urandom(rng.randint(1, 2000))
    if choice == 2:
        return b"[" * rng.randint(1, 100000)
    if choice == 3:
        return json.dumps(_json_value(rng)).encode()
    obj = {"files": [{"path": _json_value(rng), "size": _json_value(rng)}], "paths": _json_value(rng),
           "operation": rng.choice(["upload", "download", 1, None]), "objects": _json_value(rng),
           "oid": _json_value(rng), "size": _json_value(rng), "content": rng.choice(["---\na: &a [*a]\n---\n", 5]),
           "tag": _json_value(rng), "startingPoint": _json_value(rng), "private": _json_value(rng)}
    return json.dumps(obj).encode()


def _token(rng: random.Random, method: str, route: str) -> str | None:
    """No token, a wrong one, the user without rights on the fuzzed repos, or (for reads and for
    repo creation, whose fuzzed bodies are always invalid) the owner's."""
    writes = method in ("PUT", "DELETE", "PATCH") or (method == "POST" and not any(r in route for r in READ_ONLY_POSTS))
    owner_ok = not writes or "/repos/create" in route
    return rng.choice([None, None, "garbage", "", OTHER_TOKEN] + ([TEST_TOKEN] * 3 if owner_ok else []))


def _request_bytes(rng: random.Random, repos: list[str], port: int) -> tuple[str, bytes]:
    method, template = rng.choice(ROUTES)
    path = template.format(repo=rng.choice(repos) if rng.random() < 0.6 else f"{_junk(rng)}/{_junk(rng)}",
                           rev=rng.choice(["main", _junk(rng)]), path=rng.choice(["a.txt", "w.bin", _junk(rng)]),
                           oid=rng.choice(["a" * 64, _junk(rng)]), junk=_junk(rng))
    if rng.random() < 0.3:
        path += "?" + "&".join(f"{rng.choice(['limit', 'cursor', 'sort', 'search', 'recursive', 'expand'])}="
                               f"{_junk(rng)}" for _ in range(rng.randint(1, 3)))
    path = "".join(c if c.isprintable() and c != " " else f"%{ord(c):02X}" for c in path) \
        if rng.random() < 0.9 else path  # sometimes raw control characters / spaces in the request line
    headers = {"Host": f"127.0.0.1:{port}", "Connection": "close"}
    token = _token(rng, method, template)
    if token is not None:
        headers["Authorization"] = rng.choice(["Bearer "] * 6 + ["bearer ", "Basic ", ""]) + token
    body = _body(rng, template) if method in ("POST", "PUT", "PATCH", "DELETE") else b""
    framing = rng.randrange(10)
    if framing == 0:
        headers["Content-Length"] = rng.choice(["abc", "-5", "+3", "1e3", " ", "99999999999999999999", "0x10"])
    elif framing == 1:
        headers["Transfer-Encoding"] = rng.choice(["chunked", "gzip", "chunked, gzip", "identity"])
        body = rng.choice([b"zz\r\n" + body, f"{len(body):x}\r\n".encode() + body + b"\r\n0\r\n\r\n",
                           b"f" * 40 + b"\r\n", f"{len(body) + 10:x}\r\n".encode() + body])
    elif framing == 2:
        headers["Content-Length"] = str(len(body) + rng.randint(1, 1000))  # the body ends early
    elif body or method != "GET":
        headers["Content-Length"] = str(len(body))
    if rng.random() < 0.15:
        headers["Range"] = rng.choice(["bytes=abc", "bytes=5-1", "bytes=-", "bytes=0-0,1-1", "bytes=" + "9" * 30 + "-",
                                       "bytes=-99999999999", "items=0-1"])
    if rng.random() < 0.1:
        headers["Content-Type"] = rng.choice(["application/json", "application/x-ndjson", "text/plain", "\x01"])
    if rng.random() < 0.05:
        headers["X-Long"] = "x" * rng.choice([100, 70000])
    if rng.random() < 0.03:
        headers.update({f"X-Many-{i}": "1" for i in range(120)})
    head = f"{method} {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
    return f"{method} {template}", head.encode("utf-8", "surrogateescape") + body


def _fuzz_loop(rng: random.Random, repos: list[str], port: int, statuses: collections.Counter,
               failures: list[str], t0: float) -> int:
    """Send the fuzzed requests; record each answer's status and any broken guarantee."""
    sent = 0
    for i in range(N_REQUESTS):
        if time.monotonic() - t0 > TIME_BUDGET_S:
            break
        label, data = _request_bytes(rng, repos, port)
        ans = raw(port, data, timeout=30)
        sent += 1
        statuses[ans.status] += 1
        problem = None
        if ans.status is None:
            problem = "no answer"
        elif ans.status >= 500 and not (ans.status == 501 and "not implemented" in (ans.header("X-Error-Message") or "")):
            problem = f"HTTP {ans.status}: {ans.body[:200]!r}"
        elif any(k.lower() == "x-injected" for k, _ in ans.headers) or any(
                ch < 0x20 for line in ans.head.split(b"\r\n") for ch in line):
            problem = f"header injection: {ans.head[:300]!r}"
        elif ans.status >= 400 and ans.header("Content-Type") == "application/json" and data[:4] != b"HEAD":
            try:
                err = ans.json()["error"]
                if not isinstance(err, str) or "\n" in err:
                    problem = f"error is not one line: {err!r}"
            except (ValueError, KeyError):
                problem = f"error body is not JSON: {ans.body[:200]!r}"
        if problem:
            failures.append(f"#{i} {label}: {problem} <- {data[:300]!r}")
    return sent


def test_fuzz_requests(logged_hub: LoggedServer, tmp_path: Path):
    _run_fuzz(logged_hub, tmp_path)


def _run_fuzz(server, tmp_path: Path) -> None:
    port, me = server.port, TEST_TOKEN
    tag = uuid.uuid4().hex[:6]
    public, private = f"{TEST_USER}/pub-{tag}", f"{TEST_USER}/priv-{tag}"
    for repo, priv in ((public, False), (private, True)):
        body = json.dumps({"name": repo.split("/")[1], "private": priv}).encode()
        assert request(port, "POST", "/api/repos/create", body, token=me).status == 200
    weights = os.urandom(50_000)
    lfs_upload(port, public, weights, me)
    ans = request(port, "POST", f"/api/models/{public}/commit/main",
                  commit_body(file_op("a.txt", b"hello"), lfs_op("w.bin", weights)), token=me)
    assert ans.status == 200
    assert request(port, "POST", f"/api/models/{private}/commit/main", commit_body(file_op("a.txt", b"secret")),
                   token=me).status == 200
    before = store_digest(server.data_dir)

    stop = threading.Event()
    downloads = collections.Counter()

    def downloader() -> None:  # another client, served all along
        while not stop.is_set():
            got = request(port, "GET", f"/{public}/resolve/main/a.txt")
            downloads["ok" if got.status == 200 and got.body == b"hello" else f"bad {got.status}"] += 1
            time.sleep(0.05)

    bg = threading.Thread(target=downloader, daemon=True)
    bg.start()
    rng = random.Random(SEED)
    statuses: collections.Counter[int | None] = collections.Counter()
    failures: list[str] = []
    t0 = time.monotonic()
    sent = 0
    try:
        sent = _fuzz_loop(rng, [public, private], port, statuses, failures, t0)
    finally:
        stop.set()
        bg.join(10)
    elapsed = time.monotonic() - t0
    print(f"fuzz: seed {SEED}, {sent} requests in {elapsed:.1f} s; statuses {dict(sorted(statuses.items(), key=str))}; "
          f"concurrent downloads {dict(downloads)}")
    assert not failures, "\n".join(failures[:20])
    assert sent >= min(N_REQUESTS, 100)
    assert downloads["ok"] > 0 and set(downloads) == {"ok"}, downloads
    log = server.log()  # (the whole run's, shared with the security tests)
    assert "Traceback" not in log, log[-4000:]
    assert all(ln.startswith("hub: ") for ln in log.splitlines()), [ln for ln in log.splitlines()
                                                                     if not ln.startswith("hub: ")][:10]
    assert store_digest(server.data_dir) == before, "a fuzz request changed the store"

    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import RepositoryNotFoundError

    got = hf_hub_download(public, "w.bin", endpoint=server.url, token=False, cache_dir=tmp_path / "c")
    assert Path(got).read_bytes() == weights
    try:
        hf_hub_download(private, "a.txt", endpoint=server.url, token=False, cache_dir=tmp_path / "c")
        raise AssertionError("the private file was served anonymously")
    except RepositoryNotFoundError:
        pass
