"""push / pull (Python API and CLI) against the local hub server."""

from __future__ import annotations

import json
import sys
import uuid
from pathlib import Path

import pytest
from huggingface_hub.errors import RepositoryNotFoundError

from hfcompress.errors import HubError, UsageError
from hfcompress.hub.transfer import pull, push
from hfcompress.testing.hub import HubHandle, start_hub_server


def _uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory) -> Path:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, vocab_size=128, max_position_embeddings=64)
    d = tmp_path_factory.mktemp("tiny-llama")
    LlamaForCausalLM(cfg).save_pretrained(d)
    return d


def _assert_absent(hub: HubHandle, repo: str) -> None:
    with pytest.raises(RepositoryNotFoundError):
        hub.api().repo_info(repo)


def test_push_pull_api(hub_server: HubHandle, tiny_model_dir: Path, tmp_path: Path):
    repo = f"{hub_server.user}/{_uid('push')}"
    kw = {"token": hub_server.token, "endpoint": hub_server.url}
    url = push(tiny_model_dir, repo, private=True, commit_message="first", **kw)
    assert "/commit/" in url
    api = hub_server.api()
    head = api.repo_info(repo).sha
    assert api.repo_info(repo).private and api.list_repo_commits(repo)[0].title == "first"
    # a new branch is created from main; main does not move
    push(tiny_model_dir, repo, revision="int8", **kw)
    assert api.repo_info(repo).sha == head
    assert {b.name for b in api.list_repo_refs(repo).branches} == {"main", "int8"}
    model, folder = pull(repo, revision="int8", output=tmp_path / "out", load=False, **kw)
    assert model is None and folder == tmp_path / "out"
    assert json.loads((folder / "config.json").read_text())["model_type"] == "llama"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.tmp")]
    with pytest.raises(UsageError, match="not empty"):
        pull(repo, output=folder, load=False, **kw)
    with pytest.raises(HubError, match="not found"):
        pull(f"{hub_server.user}/{_uid('nope')}", load=False, **kw)
    with pytest.raises(HubError, match="revision 'nope' not found"):
        pull(repo, revision="nope", load=False, **kw)
    with pytest.raises(HubError, match="private"):  # private without token
        pull(repo, load=False, token=None, endpoint=hub_server.url)


def test_push_refuses_before_uploading(hub_server: HubHandle, tiny_model_dir: Path, tmp_path: Path,
                                       monkeypatch):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "home"))
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "home" / "token"))
    monkeypatch.setattr(constants, "HF_STORED_TOKENS_PATH", str(tmp_path / "home" / "stored_tokens"))
    repo = f"{hub_server.user}/{_uid('refused')}"
    with pytest.raises(HubError, match="HF_TOKEN") as err:
        push(tiny_model_dir, repo, endpoint=hub_server.url)
    assert "\n" not in str(err.value) and "hf auth login" in str(err.value)
    not_model = tmp_path / "not-model"
    not_model.mkdir()
    (not_model / "config.json").write_text("{}")
    with pytest.raises(UsageError, match="not a model folder"):
        push(not_model, repo, token=hub_server.token, endpoint=hub_server.url)
    with pytest.raises(UsageError, match="does not exist"):
        push(tmp_path / "missing", repo, token=hub_server.token, endpoint=hub_server.url)
    _assert_absent(hub_server, repo)


def test_push_retries_transient_commit_failure(tmp_path: Path, tiny_model_dir: Path):
    # request 1 = create repo, 2 = preupload, 3 = commit -> one injected 503 on the commit
    server = start_hub_server(tmp_path / "data", "--fail-nth", "3")
    try:
        repo = f"{server.user}/retried"
        push(tiny_model_dir, repo, token=server.token, endpoint=server.url)
        commits = server.api().list_repo_commits(repo)
        assert len(commits) == 2  # initial + exactly one push
        assert "model.safetensors" in server.api().list_repo_files(repo)
    finally:
        server.stop()


def test_cli_push_pull_end_to_end(hub_server: HubHandle, tiny_model_dir: Path, tmp_path: Path):
    repo = f"{hub_server.user}/{_uid('cli')}"
    r = hub_server.run(["hfcompress", "push", str(tiny_model_dir), repo, "--commit-message", "via cli"])
    assert r.returncode == 0, r.stderr
    assert repo in r.stdout and hub_server.token not in r.stdout + r.stderr
    out = tmp_path / "pulled"
    r = hub_server.run(["hfcompress", "pull", repo, "--output", str(out)])
    assert r.returncode == 0, r.stderr
    assert "LlamaForCausalLM" in r.stdout and "parameters" in r.stdout and str(out) in r.stdout
    assert (out / "model.safetensors").is_file()


def test_cli_refusals_are_one_line(hub_server: HubHandle, tiny_model_dir: Path, tmp_path: Path):
    repo = f"{hub_server.user}/{_uid('cli-refused')}"
    r = hub_server.run(["hfcompress", "push", str(tiny_model_dir), repo], env={"HF_TOKEN": ""})
    assert r.returncode != 0
    assert r.stderr.strip().count("\n") == 0 and r.stderr.startswith("error: no Hub token")
    (tmp_path / "empty").mkdir()
    r = hub_server.run(["hfcompress", "push", str(tmp_path / "empty"), repo])
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0 and "not a model folder" in r.stderr
    _assert_absent(hub_server, repo)
    r = hub_server.run(["hfcompress", "pull", f"{hub_server.user}/{_uid('nope')}", "--no-load"])
    assert r.returncode == 1 and r.stderr.strip().count("\n") == 0 and "not found" in r.stderr


@pytest.mark.real
@pytest.mark.slow
def test_seeded_models_load_through_hf_endpoint(hub_models: HubHandle):
    code = ("import hfcompress, datasets; b = hfcompress.load('HuggingFaceTB/SmolLM2-135M-Instruct'); "
            "print(type(b.model).__name__); "
            "ds = datasets.load_dataset('Salesforce/wikitext', 'wikitext-2-raw-v1', split='test'); print(ds.num_rows)")
    r = hub_models.run([sys.executable, "-c", code], timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "LlamaForCausalLM" in r.stdout and "2891" in r.stdout
