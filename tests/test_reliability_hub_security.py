"""Security / robustness classes of the hub server (issue 16), each with a catalogue of cases,
driven over raw HTTP (byte for byte) and, where it applies, through ``huggingface_hub``.

a. LFS objects are scoped to repos (no private content through shared blobs; probes answer
   the same for "absent" and "not yours"); unreferenced blobs are deleted.
b. No user text reaches a response header unescaped.
c. Malformed requests get a 4xx with a one-line JSON error; the server logs no traceback.
d. Repo ids / commit paths are validated; idle connections are closed; tokens are compared
   in constant time; a non-loopback ``--host`` prints a warning.
e. The listing API (``/api/models``, ``/api/datasets``) with visibility rules.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import time
import uuid
from pathlib import Path

import pytest

from hfcompress.testing.hub import OTHER_TOKEN, OTHER_USER, TEST_TOKEN, TEST_USER

pytest.register_assert_rewrite("hub_raw")  # before the import: its asserts explain themselves too
from hub_raw import (  # noqa: E402
    LoggedServer,
    commit_body,
    file_op,
    lfs_batch,
    lfs_op,
    lfs_upload,
    request,
    store_digest,
)

pytest_plugins = ["hub_raw"]  # the session-wide ``logged_hub`` server, shared by both modules

ME, OTHER = TEST_TOKEN, OTHER_TOKEN


def _uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def srv(logged_hub: LoggedServer) -> LoggedServer:
    return logged_hub


def _create(srv: LoggedServer, repo: str, token: str = ME, private: bool = False, repo_type: str = "model") -> None:
    ns, name = repo.split("/")
    body = {"name": name, "organization": ns, "type": repo_type, "private": private}
    ans = request(srv.port, "POST", "/api/repos/create", json.dumps(body).encode(), token=token)
    assert ans.status == 200, (ans.status, ans.body)


def _commit(srv: LoggedServer, repo: str, *ops: dict, token: str = ME, rev: str = "main"):
    return request(srv.port, "POST", f"/api/models/{repo}/commit/{rev}", commit_body(*ops),
                   {"Content-Type": "application/x-ndjson"}, token)


def _blob_exists(srv: LoggedServer, data: bytes) -> bool:
    sha = hashlib.sha256(data).hexdigest()
    return (srv.data_dir / "blobs" / sha[:2] / sha).is_file()


def _no_traceback(srv: LoggedServer) -> None:
    log = srv.log()
    assert "Traceback" not in log, log[-3000:]
    assert all(ln.startswith("hub: ") for ln in log.splitlines()), log[-3000:]


# ---------------------------------------------------------------------------------------------
# a. LFS objects scoped to repos; probes answer the same for "absent" and "not yours"
# ---------------------------------------------------------------------------------------------

def _probe(srv: LoggedServer, repo: str, data: bytes, token: str) -> dict[str, object]:
    """What each existence probe answers for ``data`` in ``repo`` (oid-independent shape)."""
    oid = hashlib.sha256(data).hexdigest()
    up = lfs_batch(srv.port, repo, data, token, "upload")
    down = lfs_batch(srv.port, repo, data, token, "download")
    verify = request(srv.port, "POST", f"/api/lfs-verify/models/{repo}",
                     json.dumps({"oid": oid, "size": len(data)}).encode(), token=token)
    commit = _commit(srv, repo, lfs_op("leak.bin", data), token=token)
    return {
        "batch-upload": (sorted(up), sorted(up.get("actions", {}))),
        "batch-download": (sorted(down), down.get("error")),
        "verify": (verify.status, verify.json()["error"].replace(oid, "OID")),
        "commit": (commit.status, commit.json()["error"].replace(oid, "OID")),
    }


#: existence probes of another user's private LFS object (each compared with an absent one)
LFS_PROBES = ("batch-upload", "batch-download", "verify", "commit")


def test_private_lfs_object_does_not_leak_through_shared_blobs(srv: LoggedServer):
    private, mine = f"{TEST_USER}/{_uid('private')}", f"{OTHER_USER}/{_uid('thief')}"
    secret, absent = os.urandom(3000) + b"secret", os.urandom(3000) + b"absent"
    _create(srv, private, private=True)
    lfs_upload(srv.port, private, secret, ME)
    assert _commit(srv, private, lfs_op("weights.bin", secret)).status == 200
    _create(srv, mine, OTHER)

    got_secret, got_absent = _probe(srv, mine, secret, OTHER), _probe(srv, mine, absent, OTHER)
    assert set(got_secret) == set(LFS_PROBES)
    for probe in LFS_PROBES:
        assert got_secret[probe] == got_absent[probe], probe  # "not yours" answers like "absent"
    assert got_secret["batch-upload"][1] == ["upload", "verify"]  # the bytes must be sent
    assert got_secret["batch-download"][1] == {"code": 404, "message": "Object does not exist"}
    assert got_secret["verify"][0] == 404 and got_secret["commit"][0] == 422
    files = request(srv.port, "GET", f"/api/models/{mine}/tree/main", token=OTHER).json()
    assert [f["path"] for f in files] == [".gitattributes"]

    # Whoever has the bytes may upload them (the PUT hashes them): then the commit works.
    lfs_upload(srv.port, mine, secret, OTHER)
    assert _commit(srv, mine, lfs_op("mine.bin", secret), token=OTHER).status == 200
    # The owner may reuse her object in her other repos (readable), without uploading again.
    second = f"{TEST_USER}/{_uid('second')}"
    _create(srv, second)
    assert "actions" not in lfs_batch(srv.port, second, secret, ME)
    assert _commit(srv, second, lfs_op("again.bin", secret)).status == 200
    # Anonymous batch on the private repo: not found, like any invisible repo.
    ans = request(srv.port, "POST", f"/{private}.git/info/lfs/objects/batch",
                  json.dumps({"operation": "download", "objects": []}).encode())
    assert ans.status == 401 and ans.header("X-Error-Code") == "RepoNotFound"
    _no_traceback(srv)


def test_public_lfs_objects_are_usable_and_downloadable(srv: LoggedServer):
    public, mine = f"{TEST_USER}/{_uid('public')}", f"{OTHER_USER}/{_uid('reuse')}"
    data = os.urandom(5000)
    _create(srv, public)
    lfs_upload(srv.port, public, data, ME)
    assert _commit(srv, public, lfs_op("w.bin", data)).status == 200
    _create(srv, mine, OTHER)
    assert "actions" not in lfs_batch(srv.port, mine, data, OTHER)  # readable elsewhere: no upload needed
    assert _commit(srv, mine, lfs_op("copy.bin", data), token=OTHER).status == 200
    body = json.dumps({"operation": "download", "objects": [{"oid": hashlib.sha256(data).hexdigest(),
                                                             "size": len(data)}]}).encode()
    down = request(srv.port, "POST", f"/{public}.git/info/lfs/objects/batch", body).json()["objects"][0]
    href = down["actions"]["download"]["href"].split(f":{srv.port}", 1)[1]
    ans = request(srv.port, "GET", href)
    assert ans.status == 200 and ans.body == data
    forged = href.replace("sig=", "sig=0")
    assert request(srv.port, "GET", forged).status == 403


def test_lfs_scoping_through_huggingface_hub(srv: LoggedServer, tmp_path: Path, monkeypatch):
    """With HF_HUB_DISABLE_XET the client goes through the LFS batch API: another user's upload
    of the same bytes as a private file really sends them; an intra-repo LFS copy still works."""
    from huggingface_hub import CommitOperationCopy, constants, hf_hub_download

    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
    from huggingface_hub import HfApi

    hint = {"X-HFCompress-Upload-Mode": "lfs"}  # answer uploadMode "lfs" (see docs/HUB.md)
    me, other = (HfApi(endpoint=srv.url, token=t, headers=hint) for t in (ME, OTHER))
    private, mine = f"{TEST_USER}/{_uid('hf-private')}", f"{OTHER_USER}/{_uid('hf-mine')}"
    data = os.urandom(4096)
    me.create_repo(private, private=True)
    me.upload_file(path_or_fileobj=data, path_in_repo="model.safetensors", repo_id=private)
    assert srv.log().count(f"PUT /api/lfs-upload/models/{private}/") == 1
    other.create_repo(mine)
    before = srv.log().count(f"PUT /api/lfs-upload/models/{mine}/")
    other.upload_file(path_or_fileobj=data, path_in_repo="model.safetensors", repo_id=mine)
    assert srv.log().count(f"PUT /api/lfs-upload/models/{mine}/") == before + 1, "the bytes were not sent"
    me.create_commit(private, [CommitOperationCopy("model.safetensors", "copy.safetensors")], commit_message="cp")
    got = hf_hub_download(private, "copy.safetensors", endpoint=srv.url, token=ME, cache_dir=tmp_path)
    assert Path(got).read_bytes() == data


def test_unreferenced_blobs_are_deleted(srv: LoggedServer):
    one, two = f"{TEST_USER}/{_uid('gc-one')}", f"{TEST_USER}/{_uid('gc-two')}"
    unique, shared, pending, on_branch = (os.urandom(777) + bytes([i]) for i in range(4))
    _create(srv, one)
    _create(srv, two)
    assert _commit(srv, one, file_op("u.txt", unique), file_op("s.txt", shared)).status == 200
    assert _commit(srv, two, file_op("s.txt", shared)).status == 200
    lfs_upload(srv.port, one, pending, ME)  # uploaded, never committed: kept while the repo exists
    ans = request(srv.port, "POST", f"/api/models/{one}/branch/dev", b"{}", token=ME)
    assert ans.status == 200
    assert _commit(srv, one, file_op("b.txt", on_branch), rev="dev").status == 200
    assert all(_blob_exists(srv, d) for d in (unique, shared, pending, on_branch))

    assert request(srv.port, "DELETE", f"/api/models/{one}/branch/dev", token=ME).status == 200
    assert not _blob_exists(srv, on_branch) and _blob_exists(srv, unique)
    ans = request(srv.port, "DELETE", "/api/repos/delete", json.dumps({"name": one}).encode(), token=ME)
    assert ans.status == 200
    assert not _blob_exists(srv, unique) and not _blob_exists(srv, pending)
    assert _blob_exists(srv, shared)  # still referenced by the other repo
    assert request(srv.port, "GET", f"/{two}/resolve/main/s.txt").body == shared


def test_garbage_collection_races_with_concurrent_commits(srv: LoggedServer):
    """Repos created and deleted (each deletion collects garbage) while other clients commit
    regular and LFS files: every acknowledged file stays downloadable."""
    import threading

    repo = f"{TEST_USER}/{_uid('gc-race')}"
    _create(srv, repo)
    errors: list[str] = []
    expected: dict[str, bytes] = {}

    def committer(i: int, lfs: bool) -> None:
        for j in range(6):
            data, path = os.urandom(2000), f"t{i}/f{j}.bin"
            if lfs:
                lfs_upload(srv.port, repo, data, ME)
            ans = _commit(srv, repo, lfs_op(path, data) if lfs else file_op(path, data))
            if ans.status == 200:
                expected[path] = data
            else:
                errors.append(f"{path}: {ans.status} {ans.body[:200]!r}")

    def churner() -> None:
        for k in range(6):
            tmp = f"{TEST_USER}/{_uid(f'churn{k}')}"
            _create(srv, tmp)
            _commit(srv, tmp, file_op("x.bin", os.urandom(3000)))
            ans = request(srv.port, "DELETE", "/api/repos/delete", json.dumps({"name": tmp}).encode(), token=ME)
            if ans.status != 200:
                errors.append(f"delete {tmp}: {ans.status}")

    threads = [threading.Thread(target=committer, args=(i, i % 2 == 1)) for i in range(4)]
    threads.append(threading.Thread(target=churner))
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors[:5]
    assert len(expected) == 24
    for path, data in expected.items():
        assert request(srv.port, "GET", f"/{repo}/resolve/main/{path}").body == data, path
    _no_traceback(srv)


# ---------------------------------------------------------------------------------------------
# b. Header injection
# ---------------------------------------------------------------------------------------------

INJ = "x%0D%0AX-Injected:%20yes"
HEADER_INJECTION = {
    "resolve-revision": ("GET", "/{repo}/resolve/" + INJ + "/a.txt"),
    "resolve-path": ("GET", "/{repo}/resolve/main/" + INJ),
    "head-revision": ("HEAD", "/{repo}/resolve/" + INJ + "/a.txt"),
    "info-revision": ("GET", "/api/models/{repo}/revision/" + INJ),
    "tree-revision": ("GET", "/api/models/{repo}/tree/" + INJ),
    "tree-path": ("GET", "/api/models/{repo}/tree/main/" + INJ),
    "commits-revision": ("GET", "/api/models/{repo}/commits/" + INJ),
    "commit-branch": ("POST", "/api/models/{repo}/commit/" + INJ),
    "delete-branch": ("DELETE", "/api/models/{repo}/branch/" + INJ),
    "create-branch": ("POST", "/api/models/{repo}/branch/" + INJ),
    "repo-name": ("GET", "/api/models/{ns}/" + INJ),
    "lf-only": ("GET", "/{repo}/resolve/x%0AX-Injected:%20yes/a.txt"),
    "nul-esc": ("GET", "/{repo}/resolve/x%00%1B[31m%0D/a.txt"),
    "unknown-route": ("GET", "/api/" + INJ),
}


@pytest.fixture(scope="module")
def inj_repo(srv: LoggedServer) -> str:
    repo = f"{TEST_USER}/{_uid('inj')}"
    _create(srv, repo)
    assert _commit(srv, repo, file_op("a.txt", b"a")).status == 200
    return repo


@pytest.mark.parametrize("name", list(HEADER_INJECTION))
def test_no_user_text_reaches_a_header(srv: LoggedServer, inj_repo: str, name: str):
    method, path = HEADER_INJECTION[name]
    path = path.format(repo=inj_repo, ns=TEST_USER)
    ans = request(srv.port, method, path, b"{}" if method == "POST" else None, token=ME)
    assert ans.status is not None and 400 <= ans.status < 500 or ans.status == 501, (ans.status, ans.head)
    assert not any(k.lower() == "x-injected" for k, _ in ans.headers), ans.head
    assert all(ch >= 0x20 for line in ans.head.split(b"\r\n") for ch in line), ans.head
    assert ans.header("X-Error-Message"), ans.head  # the message (escaped) is still there


def test_injected_revision_through_huggingface_hub(srv: LoggedServer, inj_repo: str, tmp_path: Path):
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import RevisionNotFoundError

    with pytest.raises(RevisionNotFoundError) as err:
        hf_hub_download(inj_repo, "a.txt", revision="x\r\nX-Injected: yes", endpoint=srv.url, token=ME,
                        cache_dir=tmp_path)
    assert "x-injected" not in {k.lower() for k in err.value.response.headers}


# ---------------------------------------------------------------------------------------------
# c. Malformed requests: 4xx + one-line JSON error, no traceback
# ---------------------------------------------------------------------------------------------

J = {"Content-Type": "application/json"}
ND = {"Content-Type": "application/x-ndjson"}
MALFORMED = {
    "commit-value-string": ("POST", "/api/models/{repo}/commit/main", ND, b'{"key": "file", "value": "abc"}'),
    "commit-item-list": ("POST", "/api/models/{repo}/commit/main", ND, b'[1, 2]'),
    "commit-missing-path": ("POST", "/api/models/{repo}/commit/main", ND,
                            b'{"key": "file", "value": {"content": "YQ==", "encoding": "base64"}}'),
    "commit-path-int": ("POST", "/api/models/{repo}/commit/main", ND,
                        b'{"key": "file", "value": {"path": 5, "content": "YQ=="}}'),
    "commit-content-int": ("POST", "/api/models/{repo}/commit/main", ND,
                           b'{"key": "file", "value": {"path": "a", "content": 7}}'),
    "commit-bad-base64": ("POST", "/api/models/{repo}/commit/main", ND,
                          b'{"key": "file", "value": {"path": "a", "content": "@@@"}}'),
    "commit-non-ascii-base64": ("POST", "/api/models/{repo}/commit/main", ND,
                                '{"key": "file", "value": {"path": "a", "content": "é"}}'.encode()),
    "commit-lfs-oid-int": ("POST", "/api/models/{repo}/commit/main", ND,
                           b'{"key": "lfsFile", "value": {"path": "a.bin", "oid": 1}}'),
    "commit-not-json": ("POST", "/api/models/{repo}/commit/main", ND, b"{nope"),
    "preupload-size-abc": ("POST", "/api/models/{repo}/preupload/main", J,
                           b'{"files": [{"path": "a", "size": "abc"}]}'),
    "preupload-files-dict": ("POST", "/api/models/{repo}/preupload/main", J, b'{"files": {"a": 1}}'),
    "preupload-path-null": ("POST", "/api/models/{repo}/preupload/main", J, b'{"files": [{"size": 1}]}'),
    "paths-info-not-json": ("POST", "/api/models/{repo}/paths-info/main", J, b"paths=a"),
    "paths-info-paths-str": ("POST", "/api/models/{repo}/paths-info/main", J, b'{"paths": "a"}'),
    "paths-info-paths-ints": ("POST", "/api/models/{repo}/paths-info/main", J, b'{"paths": [1]}'),
    "create-name-int": ("POST", "/api/repos/create", J, b'{"name": 5}'),
    "create-type-list": ("POST", "/api/repos/create", J, b'{"name": "x", "type": ["model"]}'),
    "create-org-int": ("POST", "/api/repos/create", J, b'{"name": "x", "organization": 3}'),
    "create-body-array": ("POST", "/api/repos/create", J, b"[]"),
    "create-deep-json": ("POST", "/api/repos/create", J, b"[" * 100000),
    "branch-start-int": ("POST", "/api/models/{repo}/branch/dev2", J, b'{"startingPoint": 1}'),
    "tag-name-list": ("POST", "/api/models/{repo}/tag/main", J, b'{"tag": ["v"]}'),
    "lfs-batch-objects-str": ("POST", "/{repo}.git/info/lfs/objects/batch", J,
                              b'{"operation": "upload", "objects": "x"}'),
    "lfs-batch-operation": ("POST", "/{repo}.git/info/lfs/objects/batch", J, b'{"operation": 1}'),
    "lfs-verify-size-str": ("POST", "/api/lfs-verify/models/{repo}", J, b'{"oid": "' + b"a" * 64 + b'", "size": "x"}'),
    "lfs-upload-unsigned": ("PUT", "/api/lfs-upload/models/{repo}/" + "a" * 64, {}, b"abc"),
    "validate-yaml-recursive": ("POST", "/api/validate-yaml", J,
                                json.dumps({"content": "---\na: &a [*a]\n---\n"}).encode()),
    "validate-yaml-content-int": ("POST", "/api/validate-yaml", J, b'{"content": 1}'),
    "faults-off": ("POST", "/api/_hfcompress/faults", J, b'{"fail_nth": "x"}'),
    "range-garbage": ("GET", "/{repo}/resolve/main/a.txt", {"Range": "bytes=abc"}, None),
    "range-huge": ("GET", "/{repo}/resolve/main/a.txt", {"Range": "bytes=" + "9" * 40 + "-"}, None),
    "list-limit-abc": ("GET", "/api/models?limit=abc", {}, None),
    "list-sort-bad": ("GET", "/api/models?sort=__class__", {}, None),
    "content-length-abc": ("POST", "/api/repos/create", {"Content-Length": "abc"}, b"{}"),
    "content-length-negative": ("POST", "/api/repos/create", {"Content-Length": "-5"}, b"{}"),
    "content-length-plus": ("POST", "/api/repos/create", {"Content-Length": "+2"}, b"{}"),
    "content-length-and-chunked": ("POST", "/api/repos/create",
                                   {"Content-Length": "2", "Transfer-Encoding": "chunked"}, b"{}"),
    "chunk-size-bad": ("POST", "/api/repos/create", {"Transfer-Encoding": "chunked"}, b"zz\r\n{}\r\n0\r\n\r\n"),
    "chunk-size-huge": ("POST", "/api/repos/create", {"Transfer-Encoding": "chunked"}, b"f" * 40 + b"\r\n{}"),
    "chunk-no-crlf": ("POST", "/api/repos/create", {"Transfer-Encoding": "chunked"}, b"2\r\n{}XX0\r\n\r\n"),
    "transfer-encoding-gzip": ("POST", "/api/repos/create", {"Transfer-Encoding": "gzip"}, b"{}"),
    "body-shorter-than-length": ("POST", "/api/repos/create", {"Content-Length": "100"}, b"{}"),
    "body-too-large": ("POST", "/api/repos/create", {"Content-Length": str(17 << 20)}, b"{" * (17 << 20)),
    "bad-auth-scheme": ("GET", "/api/whoami-v2", {"Authorization": "Basic abc"}, None),
}


@pytest.mark.parametrize("name", list(MALFORMED))
def test_malformed_request_gets_one_line_4xx(srv: LoggedServer, inj_repo: str, name: str):
    method, path, headers, body = MALFORMED[name]
    before = store_digest(srv.data_dir)
    token = None if name == "bad-auth-scheme" else ME
    ans = request(srv.port, method, path.format(repo=inj_repo), body, headers, token)
    assert ans.status is not None, f"no answer at all: {ans.body[:200]!r}"
    assert 400 <= ans.status < 500, (ans.status, ans.body)
    err = ans.json()["error"]
    assert isinstance(err, str) and err and "\n" not in err and len(err) < 1000, err
    assert store_digest(srv.data_dir) == before, "a refused request changed the store"
    _no_traceback(srv)
    assert request(srv.port, "GET", f"/{inj_repo}/resolve/main/a.txt").body == b"a"  # still serving


# ---------------------------------------------------------------------------------------------
# d. Repo ids, commit paths, idle connections, tokens, --host
# ---------------------------------------------------------------------------------------------

BAD_REPO_NAMES = ["abc\n", "abc\r", "ab\x00c", "-abc", ".abc", "a..b", "a b", "x" * 97, "a/b/c", "", "é"]


@pytest.mark.parametrize("name", BAD_REPO_NAMES, ids=[repr(n)[:20] for n in BAD_REPO_NAMES])
def test_bad_repo_ids_are_rejected(srv: LoggedServer, name: str):
    before = store_digest(srv.data_dir)
    ans = request(srv.port, "POST", "/api/repos/create", json.dumps({"name": name}).encode(), token=ME)
    assert ans.status == 400 and "invalid repo id" in ans.json()["error"], (ans.status, ans.body)
    assert store_digest(srv.data_dir) == before


def test_repo_id_with_newline_in_url_is_not_found(srv: LoggedServer, inj_repo: str):
    ans = request(srv.port, "GET", f"/api/models/{inj_repo}%0A", token=ME)
    assert ans.status == 404


BAD_PATHS = ["a\\b.txt", "C:/x.txt", "c:x", "a\x00b", "a\nb", "a\rb", "\x1b[31m", "dir/", "/abs", ".git/config",
             "sub/.git/hooks/x", ".GIT/x", "../up", "a/../b", "./a", "a//b", "", "x" * 1001]


@pytest.mark.parametrize("path", BAD_PATHS, ids=[repr(p)[:24] for p in BAD_PATHS])
def test_bad_commit_paths_are_rejected(srv: LoggedServer, inj_repo: str, path: str):
    before = store_digest(srv.data_dir)
    for op in (file_op(path, os.urandom(64)), lfs_op(path, b"a"), {"key": "deletedFile", "value": {"path": path}}):
        ans = _commit(srv, inj_repo, op)
        assert ans.status == 400 and "invalid path" in ans.json()["error"], (path, op["key"], ans.status, ans.body)
    assert store_digest(srv.data_dir) == before, "a refused commit left blobs behind"


def test_bad_path_through_huggingface_hub(srv: LoggedServer, inj_repo: str):
    from huggingface_hub.errors import HfHubHTTPError

    with pytest.raises((HfHubHTTPError, ValueError)) as err:
        srv.api(ME).upload_file(path_or_fileobj=b"x", path_in_repo="sub/.git/config", repo_id=inj_repo)
    if isinstance(err.value, HfHubHTTPError):
        assert err.value.response.status_code == 400


def test_deleted_folder_keeps_its_trailing_slash(srv: LoggedServer):
    repo = f"{TEST_USER}/{_uid('folder')}"
    _create(srv, repo)
    assert _commit(srv, repo, file_op("d/a.txt", b"1"), file_op("d/b.txt", b"2")).status == 200
    srv.api(ME).delete_folder("d/", repo)
    assert srv.api(ME).list_repo_files(repo) == [".gitattributes"]


IDLE_CASES = {"silent": b"", "half-request-line": b"GET /api/whoami-v2 HT",
              "half-headers": b"GET /api/whoami-v2 HTTP/1.1\r\nHost: x\r\n",
              "half-body": b"POST /api/repos/create HTTP/1.1\r\nContent-Length: 100\r\n\r\n{\"na"}


@pytest.mark.parametrize("name", list(IDLE_CASES))
def test_idle_connections_are_closed(srv: LoggedServer, name: str):
    t0 = time.monotonic()
    with socket.create_connection(("127.0.0.1", srv.port), timeout=15) as s:
        s.sendall(IDLE_CASES[name])
        while s.recv(65536):  # the server answers (408 / 400) or just closes: never holds it forever
            pass
    assert time.monotonic() - t0 < 10
    assert request(srv.port, "GET", "/api/whoami-v2", token=ME).status == 200
    _no_traceback(srv)


def test_tokens_are_compared_in_constant_time(monkeypatch):
    from hfcompress.hub.server import auth

    users = [auth.User(f"u{i}", f"token-{i}-" + "x" * i) for i in range(5)]
    table = auth.TokenTable(users)
    calls: list[tuple[bytes, bytes]] = []
    real = auth.hmac.compare_digest
    monkeypatch.setattr(auth.hmac, "compare_digest", lambda a, b: calls.append((a, b)) or real(a, b))
    for token, expected in [("token-0-", users[0]), ("token-4-xxxx", users[4]), ("nope", None), ("", None)]:
        calls.clear()
        assert table.lookup(token) is expected
        assert len(calls) == len(users), "every token is compared, whichever matches"
        assert {len(a) for a, _ in calls} | {len(b) for _, b in calls} == {32}, "digests: equal lengths"
    assert not any(isinstance(v, dict) and "token-0-" in v for v in vars(table).values())


@pytest.mark.parametrize("host,warns", [("0.0.0.0", True), ("127.0.0.1", False)])
def test_non_loopback_host_warns(tmp_path: Path, host: str, warns: bool, monkeypatch, capsys):
    """``serve`` (what ``hub serve`` and ``python -m hfcompress.hub.server`` run) warns before serving."""
    import argparse
    import signal

    from hfcompress.hub.server import HubServer, add_arguments, serve

    p = argparse.ArgumentParser()
    add_arguments(p)
    monkeypatch.setattr(HubServer, "serve_forever", lambda self, poll_interval=0.5: None)  # return at once
    old = signal.getsignal(signal.SIGTERM)
    try:
        assert serve(p.parse_args(["--host", host, "--port", "0", "--data", str(tmp_path / "d")])) == 0
    finally:
        signal.signal(signal.SIGTERM, old)
    out, err = capsys.readouterr()
    assert out.startswith(f"http://{host}:")
    assert ("reachable from the network" in err) is warns, err


# ---------------------------------------------------------------------------------------------
# e. Listing API
# ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def listed(srv: LoggedServer) -> dict[str, str]:
    tag = uuid.uuid4().hex[:6]
    repos = {
        "mine-public": f"{TEST_USER}/list-{tag}-alpha",
        "mine-private": f"{TEST_USER}/list-{tag}-beta",
        "org-private": f"hfc-org/list-{tag}-gamma",
        "other-public": f"{OTHER_USER}/list-{tag}-delta",
        "other-private": f"{OTHER_USER}/list-{tag}-epsilon",
    }
    for key, repo in repos.items():
        _create(srv, repo, OTHER if key.startswith("other") else ME, private=key.endswith("private"))
    readme = b"---\ntags:\n- listed-" + tag.encode() + b"\nlibrary_name: transformers\n---\n"
    assert _commit(srv, repos["mine-public"], file_op("README.md", readme)).status == 200
    _create(srv, f"{TEST_USER}/list-{tag}-data", repo_type="dataset")
    repos["tag"] = tag
    return repos


def test_list_models_visibility_through_huggingface_hub(srv: LoggedServer, listed: dict[str, str]):
    tag = listed["tag"]
    seen = {who: {m.id for m in srv.api(tok).list_models(search=f"list-{tag}")}
            for who, tok in (("me", ME), ("other", OTHER), ("anon", False))}
    everything = {v for k, v in listed.items() if k != "tag"}
    assert seen["me"] == everything - {listed["other-private"]}
    assert seen["other"] == everything - {listed["mine-private"], listed["org-private"]}
    assert seen["anon"] == {listed["mine-public"], listed["other-public"]}
    api = srv.api(ME)
    assert {m.id for m in api.list_models(author=OTHER_USER, search=tag)} == {listed["other-public"]}
    assert {m.id for m in api.list_models(author="hfc-org", search=tag)} == {listed["org-private"]}
    assert [m.id for m in api.list_models(filter=f"listed-{tag}")] == [listed["mine-public"]]
    assert [d.id for d in api.list_datasets(author=TEST_USER, search=f"list-{tag}")] == [f"{TEST_USER}/list-{tag}-data"]
    assert len(list(api.list_models(search=f"list-{tag}", limit=2))) == 2
    newest_first = list(api.list_models(search=f"list-{tag}", sort="created_at", full=True))
    assert [m.created_at for m in newest_first] == sorted((m.created_at for m in newest_first), reverse=True)
    assert all(m.siblings is not None and m.private is not None for m in newest_first)


def test_list_pagination_link(srv: LoggedServer, listed: dict[str, str]):
    from huggingface_hub.utils._pagination import paginate

    tag = listed["tag"]
    ans = request(srv.port, "GET", f"/api/models?search=list-{tag}&limit=2", token=ME)
    assert ans.status == 200 and len(ans.json()) == 2
    link = ans.header("Link")
    assert link and link.endswith('rel="next"') and "cursor=2" in link
    ids = [m["id"] for m in paginate(f"{srv.url}/api/models", params={"search": f"list-{tag}", "limit": 2},
                                     headers={"Authorization": f"Bearer {ME}"})]
    assert len(ids) == len(set(ids)) == 4  # 2 pages of 2, then no Link
    anon = request(srv.port, "GET", f"/api/models?search=list-{tag}&cursor=0&limit=1000")
    assert {m["id"] for m in anon.json()} == {listed["mine-public"], listed["other-public"]}
    assert not any(m["private"] for m in anon.json())
