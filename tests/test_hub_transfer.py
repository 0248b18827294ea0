"""push / pull (Python API and CLI) against the local hub server."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from huggingface_hub.errors import RepositoryNotFoundError

from hfcompress.errors import HubError, UsageError
from hfcompress.hub.transfer import PICKLE_SUFFIXES, pull, push
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


# -- issue 16: pickles, late repo creation, cleanup on SIGTERM, atomic pull with load, token files

CLOSED_PORT = "http://127.0.0.1:9"  # nothing listens: a refusal there proves no network call was made


def test_push_refuses_pickles_unless_allowed(hub_server: HubHandle, tiny_model_dir: Path, tmp_path: Path):
    folder = tmp_path / "with-pickles"
    shutil.copytree(tiny_model_dir, folder)
    (folder / "pytorch_model.bin").write_bytes(b"\x80\x04pickle")
    (folder / "sub").mkdir()
    (folder / "sub" / "opt.PT").write_bytes(b"\x80\x04pickle")
    (folder / ".hidden").mkdir()
    (folder / ".hidden" / "never-uploaded.pkl").write_bytes(b"ignored like every hidden file")
    repo = f"{hub_server.user}/{_uid('pickles')}"
    with pytest.raises(UsageError) as err:
        push(folder, repo, token=hub_server.token, endpoint=CLOSED_PORT)
    msg = str(err.value)
    assert "\n" not in msg and "(pytorch_model.bin, sub/opt.PT)" in msg and "--allow-pickle" in msg, msg
    _assert_absent(hub_server, repo)
    for suffix in PICKLE_SUFFIXES:  # every pickle suffix is refused
        single = tmp_path / f"single{suffix}"
        shutil.copytree(tiny_model_dir, single)
        (single / f"weights{suffix}").write_bytes(b"x")
        with pytest.raises(UsageError, match=f"weights\\{suffix}"):
            push(single, repo, token=hub_server.token, endpoint=CLOSED_PORT)
    push(folder, repo, token=hub_server.token, endpoint=hub_server.url, allow_pickle=True)
    files = set(hub_server.api().list_repo_files(repo))
    assert {"pytorch_model.bin", "sub/opt.PT"} <= files and not any(f.startswith(".hidden") for f in files)
    r = hub_server.run(["hfcompress", "push", str(folder), f"{repo}-cli", "--endpoint", CLOSED_PORT])
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "pytorch_model.bin" in r.stderr, r.stderr


def test_push_hashes_every_file_before_creating_the_repo(hub_server: HubHandle, tiny_model_dir: Path,
                                                        monkeypatch):
    from huggingface_hub import CommitOperationAdd, HfApi

    calls: list[str] = []
    real_create, real_init = HfApi.create_repo, CommitOperationAdd.__post_init__

    def create_repo(self, *args, **kwargs):
        calls.append("create")
        return real_create(self, *args, **kwargs)

    def post_init(self):
        calls.append(f"hash {self.path_in_repo}")
        real_init(self)

    monkeypatch.setattr(HfApi, "create_repo", create_repo)
    monkeypatch.setattr(CommitOperationAdd, "__post_init__", post_init)
    repo = f"{hub_server.user}/{_uid('late')}"
    push(tiny_model_dir, repo, token=hub_server.token, endpoint=hub_server.url)
    hashed = [i for i, c in enumerate(calls) if c.startswith("hash ")]
    assert len(hashed) >= 2 and calls.index("create") > max(hashed), calls

    # a file that cannot be read while preparing: nothing is created on the Hub
    def unreadable(self):
        raise OSError(5, "Input/output error", str(self.path_or_fileobj))

    monkeypatch.setattr(CommitOperationAdd, "__post_init__", unreadable)
    repo2 = f"{hub_server.user}/{_uid('unreadable')}"
    with pytest.raises(HubError, match="cannot read"):
        push(tiny_model_dir, repo2, token=hub_server.token, endpoint=hub_server.url)
    _assert_absent(hub_server, repo2)


def test_push_terminated_before_its_commit_deletes_the_repo(tmp_path: Path, tiny_model_dir: Path):
    """SIGTERM while the push uploads (the repo exists, the commit is not made): the repo goes away."""
    server = start_hub_server(tmp_path / "data", "--fault-match", "preupload", "--delay-nth", "1",
                              "--delay-ms", "30000")
    try:
        repo = f"{server.user}/terminated"
        api = server.api()
        proc = server.popen(["hfcompress", "push", str(tiny_model_dir), repo], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:  # the push holds on its (delayed) preupload once the repo exists
            try:
                api.repo_info(repo)
                break
            except RepositoryNotFoundError:
                assert proc.poll() is None, proc.communicate()
                time.sleep(0.2)
        else:
            pytest.fail("the push never created its repo")
        time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)  # exit waits for the delayed upload thread
        assert proc.returncode == 130 and "error: interrupted" in err, err
        _assert_absent(server, repo)
    finally:
        server.stop()


def test_pull_with_load_is_atomic_and_points_at_the_output(hub_server: HubHandle, tiny_model_dir: Path,
                                                           tmp_path: Path):
    from transformers import PreTrainedTokenizerFast

    repo = f"{hub_server.user}/{_uid('atomic')}"
    kw = {"token": hub_server.token, "endpoint": hub_server.url}
    push(tiny_model_dir, repo, **kw)
    out = tmp_path / "loaded"
    bundle, folder = pull(repo, output=out, **kw)
    assert folder == out and bundle.path == out.resolve() and bundle.source.local_name == "loaded"
    assert bundle.model.config._name_or_path == str(out.resolve())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["loaded"]
    # a repo whose tokenizer is broken: the load fails, and no folder is left behind
    broken = tmp_path / "broken-src"
    shutil.copytree(tiny_model_dir, broken)
    PreTrainedTokenizerFast(tokenizer_file=None, tokenizer_object=_char_tokenizer()).save_pretrained(broken)
    (broken / "tokenizer.json").write_text('{"truncated')
    repo2 = f"{hub_server.user}/{_uid('broken-tok')}"
    push(broken, repo2, **kw)
    from hfcompress.errors import ModelLoadError

    with pytest.raises(ModelLoadError, match="tokenizer.json: not valid JSON") as err:
        pull(repo2, output=tmp_path / "never", **kw)
    assert ".never.tmp" not in str(err.value)
    assert not (tmp_path / "never").exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def _char_tokenizer():
    from tokenizers import Tokenizer, models

    return Tokenizer(models.WordLevel(vocab={"<unk>": 0, "a": 1}, unk_token="<unk>"))


def test_token_file_instead_of_a_visible_token(hub_server: HubHandle, tiny_model_dir: Path, tmp_path: Path):
    token_file = tmp_path / "token"
    token_file.write_text(hub_server.token + "\n")
    repo = f"{hub_server.user}/{_uid('token-file')}"
    no_env = {"HF_TOKEN": ""}
    r = hub_server.run(["hfcompress", "push", str(tiny_model_dir), repo, "--private", "--token-file",
                        str(token_file)], env=no_env)
    assert r.returncode == 0, r.stderr
    assert hub_server.token not in r.stdout + r.stderr
    out = tmp_path / "pulled"
    r = hub_server.run(["hfcompress", "pull", repo, "--no-load", "--output", str(out), "--token-file",
                        str(token_file)], env=no_env)
    assert r.returncode == 0 and (out / "model.safetensors").is_file(), r.stderr
    r = hub_server.run(["hfcompress", "pull", repo, "--no-load"], env=no_env)  # private: the token is needed
    assert r.returncode == 1 and "private" in r.stderr
    for cmd in (["push"], ["pull"], ["hub", "seed"]):
        r = hub_server.run(["hfcompress", *cmd, "--help"])
        text = " ".join(r.stdout.split())
        assert r.returncode == 0 and "--token-file PATH" in text and "VISIBLE to other users" in text, text
    r = hub_server.run(["hfcompress", "hub", "seed", "--token-file", str(tmp_path / "missing")])
    assert r.returncode == 2 and r.stderr.startswith("error: --token-file") and r.stderr.count("\n") == 1


@pytest.mark.real
@pytest.mark.slow
def test_seeded_models_load_through_hf_endpoint(hub_models: HubHandle):
    code = ("import hfcompress, datasets; b = hfcompress.load('HuggingFaceTB/SmolLM2-135M-Instruct'); "
            "print(type(b.model).__name__); "
            "ds = datasets.load_dataset('Salesforce/wikitext', 'wikitext-2-raw-v1', split='test'); print(ds.num_rows)")
    r = hub_models.run([sys.executable, "-c", code], timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "LlamaForCausalLM" in r.stdout and "2891" in r.stdout
