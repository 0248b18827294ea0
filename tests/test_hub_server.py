"""The hub server against the REAL huggingface_hub / transformers / datasets clients."""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest
from huggingface_hub import hf_hub_download, snapshot_download
from huggingface_hub.errors import (
    EntryNotFoundError,
    HfHubHTTPError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from hfcompress.io import sha256_file
from hfcompress.testing.hub import HubHandle, start_hub_server
from hfcompress.testing.models import write_random_safetensors

BIG = 100 * 1024 * 1024 + 12345
README = "---\nlicense: apache-2.0\ntags:\n- hfcompress\n- test\nlibrary_name: transformers\n---\n# Tiny\n"


def _uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="session")
def big_model_dir(tmp_path_factory) -> Path:
    """A model folder with a 100 MB+ weights file (built once per session)."""
    d = tmp_path_factory.mktemp("big-model")
    (d / "config.json").write_text(json.dumps({"model_type": "llama", "architectures": ["LlamaForCausalLM"]}))
    (d / "README.md").write_text(README)
    (d / "sub").mkdir()
    (d / "sub" / "notes.txt").write_text("nested file\n")
    write_random_safetensors(d / "model.safetensors", BIG)
    return d


@pytest.fixture(scope="module")
def lfs_server(tmp_path_factory) -> HubHandle:
    """A second server that answers uploadMode "lfs" (for clients with HF_HUB_DISABLE_XET=1)."""
    h = start_hub_server(tmp_path_factory.mktemp("lfs-data"), "--lfs-threshold", "1048576")
    yield h
    h.stop()


@pytest.fixture(params=["default", "no-xet"])
def mode_server(request, hub_server, monkeypatch) -> HubHandle:
    """The fixture server in default client mode; the LFS server with HF_HUB_DISABLE_XET=1."""
    if request.param == "default":
        return hub_server
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)  # what the env var does at import
    return request.getfixturevalue("lfs_server")


def test_big_model_roundtrip(mode_server: HubHandle, big_model_dir: Path, tmp_path: Path):
    api = mode_server.api()
    repo = f"{mode_server.user}/{_uid('big')}"
    assert api.create_repo(repo).endswith(repo)
    assert api.create_repo(repo, exist_ok=True).endswith(repo)  # 409 + url
    with pytest.raises(HfHubHTTPError):
        api.create_repo(repo)
    api.upload_folder(folder_path=str(big_model_dir), repo_id=repo, commit_message="big")
    files = set(api.list_repo_files(repo))
    assert {"config.json", "README.md", "model.safetensors", "sub/notes.txt", ".gitattributes"} == files
    info = api.repo_info(repo, files_metadata=True)
    assert info.card_data["license"] == "apache-2.0" and info.card_data["tags"] == ["hfcompress", "test"]
    weights = next(s for s in info.siblings if s.rfilename == "model.safetensors")
    assert weights.size == (big_model_dir / "model.safetensors").stat().st_size
    assert weights.lfs is not None and weights.lfs.sha256 == sha256_file(big_model_dir / "model.safetensors")

    one = hf_hub_download(repo, "model.safetensors", endpoint=mode_server.url, cache_dir=tmp_path / "c1",
                          token=False)
    assert sha256_file(one) == weights.lfs.sha256
    snap = Path(snapshot_download(repo, endpoint=mode_server.url, cache_dir=tmp_path / "c2", token=False))
    for rel in ("config.json", "README.md", "model.safetensors", "sub/notes.txt"):
        assert sha256_file(snap / rel) == sha256_file(big_model_dir / rel), rel
    api.delete_repo(repo)


def test_branch_tag_delete_file(mode_server: HubHandle, tmp_path: Path):
    api = mode_server.api()
    repo = f"hfc-org/{_uid('refs')}"
    api.create_repo(repo)
    first = api.upload_file(path_or_fileobj=b"v1", path_in_repo="a.txt", repo_id=repo).oid
    api.upload_file(path_or_fileobj=b"gone", path_in_repo="dir/b.txt", repo_id=repo)
    api.create_branch(repo, branch="dev", revision=first)
    api.upload_file(path_or_fileobj=b"dev!", path_in_repo="a.txt", repo_id=repo, revision="dev")
    got = hf_hub_download(repo, "a.txt", revision="dev", endpoint=mode_server.url, cache_dir=tmp_path, token=False)
    assert Path(got).read_bytes() == b"dev!"
    assert set(api.list_repo_files(repo, revision="dev")) == {".gitattributes", "a.txt"}
    api.create_tag(repo, tag="v1.0", revision=first)
    refs = api.list_repo_refs(repo)
    assert {b.name for b in refs.branches} == {"main", "dev"}
    assert [(t.name, t.target_commit) for t in refs.tags] == [("v1.0", first)]
    by_tag = hf_hub_download(repo, "a.txt", revision="v1.0", endpoint=mode_server.url, cache_dir=tmp_path / "t")
    assert Path(by_tag).read_bytes() == b"v1"
    api.delete_file("dir/b.txt", repo)
    assert "dir/b.txt" not in api.list_repo_files(repo)
    with pytest.raises(EntryNotFoundError):
        api.delete_file("nope.txt", repo)
    assert [c.title for c in api.list_repo_commits(repo)][0].startswith("Delete dir/b.txt")
    api.delete_repo(repo)
    with pytest.raises(RepositoryNotFoundError):
        api.repo_info(repo)


def test_download_errors_and_raw_protocol(hub_server: HubHandle, tmp_path: Path):
    api = hub_server.api()
    repo = f"{hub_server.user}/{_uid('err')}"
    api.create_repo(repo)
    data = os.urandom(5000)
    api.upload_file(path_or_fileobj=data, path_in_repo="x.bin", repo_id=repo)
    kw = {"endpoint": hub_server.url, "cache_dir": tmp_path}
    with pytest.raises(EntryNotFoundError):
        hf_hub_download(repo, "missing.txt", **kw)
    with pytest.raises(RevisionNotFoundError):
        hf_hub_download(repo, "x.bin", revision="no-such-branch", **kw)
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download(f"{hub_server.user}/does-not-exist", "x.bin", **kw)
    # Range requests, headers.
    req = urllib.request.Request(f"{hub_server.url}/{repo}/resolve/main/x.bin", headers={"Range": "bytes=100-199"})
    with urllib.request.urlopen(req) as r:
        assert r.status == 206 and r.read() == data[100:200]
        assert r.headers["Content-Range"] == "bytes 100-199/5000"
        assert r.headers["X-Repo-Commit"] == api.repo_info(repo).sha
        assert r.headers["X-Linked-Size"] == "5000"
    # Anything not implemented answers a JSON 501.
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(f"{hub_server.url}/api/spaces/{repo}/runtime")
    assert err.value.code == 501 and "not implemented" in json.loads(err.value.read())["error"]
    # validate-yaml validates for real.
    with pytest.raises(ValueError, match="Invalid metadata"):
        api.upload_file(path_or_fileobj=b"---\ntags: [a\n---\n", path_in_repo="README.md", repo_id=repo)
    with pytest.raises(ValueError, match="license"):
        api.upload_file(path_or_fileobj=b"---\nlicense: {a: 1}\n---\n", path_in_repo="README.md", repo_id=repo)
    api.delete_repo(repo)


def test_auth_model(hub_server: HubHandle, tmp_path: Path):
    me, anon, other = hub_server.api(), hub_server.api(token=False), hub_server.api(hub_server.other_token)
    assert me.whoami()["name"] == hub_server.user
    assert {o["name"] for o in me.whoami()["orgs"]} >= {"HuggingFaceTB", "Salesforce", "fixtures"}
    private = f"{hub_server.user}/{_uid('private')}"
    public = f"{hub_server.user}/{_uid('public')}"
    me.create_repo(private, private=True)
    me.create_repo(public)
    me.upload_file(path_or_fileobj=b"secret", path_in_repo="s.txt", repo_id=private)
    assert me.repo_info(private).private is True
    for client in (anon, other):  # private repos are invisible
        with pytest.raises(RepositoryNotFoundError):
            client.repo_info(private)
        with pytest.raises(RepositoryNotFoundError):
            client.list_repo_files(private)
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download(private, "s.txt", endpoint=hub_server.url, token=False, cache_dir=tmp_path)
    assert anon.repo_info(public).id == public  # public reads need no token
    with pytest.raises(HfHubHTTPError) as e:  # unauthenticated write
        anon.upload_file(path_or_fileobj=b"x", path_in_repo="x", repo_id=public)
    assert e.value.response.status_code == 401
    with pytest.raises(HfHubHTTPError) as e:  # another user's namespace
        other.upload_file(path_or_fileobj=b"x", path_in_repo="x", repo_id=public)
    assert e.value.response.status_code == 403
    with pytest.raises(HfHubHTTPError) as e:
        other.create_repo(f"{hub_server.user}/{_uid('steal')}")
    assert e.value.response.status_code == 403
    with pytest.raises(HfHubHTTPError) as e:
        other.delete_repo(public)
    assert e.value.response.status_code == 403
    with pytest.raises(HfHubHTTPError) as e:
        hub_server.api("wrong-token").repo_info(public)
    assert e.value.response.status_code == 401
    own = f"{hub_server.other_user}/{_uid('mine')}"
    other.create_repo(own)
    other.delete_repo(own)
    me.delete_repo(private)
    me.delete_repo(public)


def test_concurrent_clients(hub_server: HubHandle):
    api = hub_server.api()
    repo = f"{hub_server.user}/{_uid('conc')}"
    api.create_repo(repo)
    errors: list[BaseException] = []

    def worker(i: int) -> None:
        try:
            for j in range(3):
                api.upload_file(path_or_fileobj=f"{i}-{j}".encode(), path_in_repo=f"w{i}/f{j}.txt", repo_id=repo)
                api.list_repo_files(repo)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len([f for f in api.list_repo_files(repo) if f.startswith("w")]) == 12
    api.delete_repo(repo)


def test_transformers_push_to_hub_and_back(hub_env: HubHandle):
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, vocab_size=128, max_position_embeddings=64)
    model = LlamaForCausalLM(cfg).eval()
    repo = f"{hub_env.user}/{_uid('tiny-llama')}"
    model.push_to_hub(repo)
    back = AutoModelForCausalLM.from_pretrained(repo).eval()
    ids = torch.randint(0, 128, (1, 12))
    with torch.no_grad():
        assert torch.equal(model(ids).logits, back(ids).logits)


DATASETS = [
    ("Salesforce/wikitext", {"name": "wikitext-2-raw-v1", "split": "test"}, 2891),
    ("fixtures/enwiki-sample", {"split": "train"}, 96),
    ("fixtures/movie-review-snippets", {"split": "validation"}, 1012),
]


@pytest.mark.parametrize("repo_id,kwargs,rows", DATASETS, ids=[d[0] for d in DATASETS])
def test_load_dataset_by_repo_id(hub_env: HubHandle, shared_datasets, repo_id, kwargs, rows):
    import datasets

    ds = datasets.load_dataset(repo_id, **kwargs)
    assert ds.num_rows == rows


def _blob_uploads(data_dir: Path) -> list[Path]:
    return [p for p in (data_dir / "tmp").glob("blob-*") if p.stat().st_size > 0]


@pytest.mark.parametrize("xet", ["default", "no-xet"])
def test_killed_push_and_restart_keep_acknowledged_commits(tmp_path: Path, xet: str):
    data = tmp_path / "data"
    extra = ["--stall-ms", "150"] + (["--lfs-threshold", "1"] if xet == "no-xet" else [])
    server = start_hub_server(data, *extra)
    try:
        api = server.api()
        repo = f"{server.user}/killed"
        api.create_repo(repo)
        acked = api.upload_file(path_or_fileobj=b"before", path_in_repo="keep.txt", repo_id=repo).oid
        folder = tmp_path / "model"
        folder.mkdir()
        (folder / "config.json").write_text("{}")
        write_random_safetensors(folder / "model.safetensors", 24 << 20)  # ~4 s at the stalled rate
        env = {"HF_HUB_DISABLE_XET": "1"} if xet == "no-xet" else {}
        code = (f"from huggingface_hub import HfApi; HfApi().upload_folder(folder_path={str(folder)!r}, "
                f"repo_id={repo!r})")
        proc = server.popen([sys.executable, "-c", code], env=env)
        deadline = time.monotonic() + 60
        while not _blob_uploads(data) and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        assert proc.poll() is None, "the push finished before it could be killed"
        assert _blob_uploads(data), "the upload never started"
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert api.repo_info(repo).sha == acked
        assert set(api.list_repo_files(repo)) == {".gitattributes", "keep.txt"}
        server.stop(signal.SIGKILL)  # a crash of the server itself
    finally:
        server.stop()
    again = start_hub_server(data)
    try:
        api = again.api()
        assert api.repo_info(repo).sha == acked
        got = hf_hub_download(repo, "keep.txt", endpoint=again.url, cache_dir=tmp_path / "c")
        assert Path(got).read_bytes() == b"before"
        assert not list((data / "tmp").iterdir())  # partial uploads were cleaned at start
    finally:
        again.stop()


def test_fault_injection_flag(tmp_path: Path):
    server = start_hub_server(tmp_path / "data", "--fail-nth", "2")
    try:
        req = f"{server.url}/api/whoami-v2"
        headers = {"Authorization": f"Bearer {server.token}"}
        with urllib.request.urlopen(urllib.request.Request(req, headers=headers)) as r:
            assert r.status == 200
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(urllib.request.Request(req, headers=headers))
        assert err.value.code == 503
        with urllib.request.urlopen(urllib.request.Request(req, headers=headers)) as r:
            assert r.status == 200
    finally:
        server.stop()


def test_seed_cli_is_idempotent(hub_server: HubHandle, shared_datasets: Path):
    # the session fixture already seeded the datasets: a second seed uploads nothing
    before = hub_server.api().dataset_info("fixtures/enwiki-sample").sha
    r = hub_server.run(["hfcompress", "hub", "seed", "--only", "datasets", "--datasets", str(shared_datasets)])
    assert r.returncode == 0, r.stderr
    # the shared datasets, the built speech / digits datasets and the NeelNanda/pile-10k stand-in
    from hfcompress.hub.seed import find_dataset_repos

    expected = find_dataset_repos(shared_datasets)
    assert len(expected) >= 4 and r.stdout.count("up to date") == len(expected), r.stdout
    assert hub_server.api().dataset_info("fixtures/enwiki-sample").sha == before
    r = hub_server.run(["hfcompress", "hub", "seed", "--only", "nope/nope"])
    assert r.returncode == 2 and r.stderr.startswith("error: unknown seed item")
