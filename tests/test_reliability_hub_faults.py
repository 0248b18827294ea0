"""Hub faults: push / pull survive transient errors (5xx, dropped connections, interrupted
downloads, a slow server) with bounded retries; after the last retry they fail with one clear
line, and a failed push leaves the remote repo exactly as it was.

One server (``--fault-control``) serves the whole module; each test sets its faults through
``POST /api/_hfcompress/faults`` (counter reset) and reads back how many were injected.
Traffic stays on 127.0.0.1.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest

from hfcompress.errors import HubError
from hfcompress.hub import transfer
from hfcompress.hub.server import FAULTS_PATH
from hfcompress.hub.transfer import TransientHubError, pull, push
from hfcompress.io import sha256_file
from hfcompress.testing.hub import HubHandle, hub_environment, start_hub_server

#: faults injected and survived in this module (reported in docs/RELIABILITY.md)
SURVIVED: dict[str, int] = {}


def _uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def set_faults(server: HubHandle, **faults) -> None:
    req = urllib.request.Request(server.url + FAULTS_PATH, data=json.dumps(faults).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        assert r.status == 200


def injected(server: HubHandle) -> dict[str, int]:
    with urllib.request.urlopen(server.url + FAULTS_PATH, timeout=10) as r:
        return json.loads(r.read())["injected"]


@pytest.fixture(scope="module")
def fault_server(tmp_path_factory) -> HubHandle:
    server = start_hub_server(tmp_path_factory.mktemp("fault-hub"), "--fault-control")
    yield server
    server.stop()


@pytest.fixture()
def hub(fault_server: HubHandle, tmp_path: Path, monkeypatch) -> HubHandle:
    """The fault server, faults cleared, this process's HF libraries pointed at it, short back-off."""
    set_faults(fault_server)
    monkeypatch.setattr(transfer, "BACKOFF_S", 0.05)
    monkeypatch.setattr(transfer, "MAX_BACKOFF_S", 0.2)
    home = tmp_path / "hf-home"
    home.mkdir()
    with hub_environment(fault_server.url, fault_server.token, home):
        yield fault_server
    set_faults(fault_server)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    """A small model folder: config.json + 3 MB of safetensors + a nested file."""
    import torch
    from safetensors.torch import save_file

    d = tmp_path_factory.mktemp("fault-model")
    (d / "config.json").write_text(json.dumps({"model_type": "llama", "architectures": ["LlamaForCausalLM"]}))
    torch.manual_seed(0)
    save_file({"w": torch.randn(768, 1024)}, str(d / "model.safetensors"))
    (d / "extra").mkdir()
    (d / "extra" / "notes.txt").write_text("nested\n")
    return d


def _remote_state(server: HubHandle, repo: str) -> tuple[str, list[str]] | None:
    from huggingface_hub.errors import RepositoryNotFoundError

    try:
        info = server.api().repo_info(repo)
    except RepositoryNotFoundError:
        return None
    return info.sha, sorted(s.rfilename for s in info.siblings)


def _assert_same_files(folder: Path, model_dir: Path) -> None:
    for rel in ("config.json", "model.safetensors", "extra/notes.txt"):
        assert sha256_file(folder / rel) == sha256_file(model_dir / rel), rel


def _count(server: HubHandle, label: str) -> dict[str, int]:
    got = injected(server)
    SURVIVED[label] = sum(v for k, v in got.items() if k != "delay") + (1 if got["delay"] else 0)
    return got


PUSH_FAULTS = {
    "commit-503": dict(match=r"^POST .*/commit/", fail_nth="1"),
    "commit-500-twice": dict(match=r"^POST .*/commit/", fail_nth="1,2", fail_status=500),
    "commit-dropped": dict(match=r"^POST .*/commit/", drop_nth="1"),
    "preupload-502": dict(match=r"/preupload/", fail_nth="1", fail_status=502),
    "create-repo-503": dict(match=r"/api/repos/create", fail_nth="1"),
    "create-repo-dropped": dict(match=r"/api/repos/create", drop_nth="1"),
    "answer-cut": dict(match=r"^POST .*/commit/", cut_nth="1"),
    "slow-server": dict(delay_ms=400),
    "every-3rd-request-503": dict(fail_nth="3,6,9,12"),
}


@pytest.mark.parametrize("name", list(PUSH_FAULTS))
def test_push_survives_transient_faults(hub: HubHandle, model_dir: Path, name: str):
    repo = f"{hub.user}/{_uid('faulty-push')}"
    set_faults(hub, **PUSH_FAULTS[name])
    url = push(model_dir, repo, private=True, token=hub.token, endpoint=hub.url)
    got = _count(hub, f"push/{name}")
    assert any(got.values()), f"no fault was injected: {got}"
    set_faults(hub)
    assert "/commit/" in url
    commits = hub.api().list_repo_commits(repo)
    assert len(commits) == 2, "initial commit + exactly one push commit (a retried commit is not doubled)"
    snap = Path(hub.api().snapshot_download(repo, local_dir=str(model_dir.parent / _uid("check"))))
    _assert_same_files(snap, model_dir)


PULL_FAULTS = {
    "repo-info-503": dict(match=r"^GET /api/models/", fail_nth="1"),
    "repo-info-dropped": dict(match=r"^GET /api/models/", drop_nth="1"),
    "download-503": dict(match=r"^GET /.*/resolve/.*safetensors", fail_nth="1"),
    "download-dropped": dict(match=r"^GET /.*/resolve/.*safetensors", drop_nth="1"),
    "download-interrupted": dict(match=r"^GET /.*/resolve/.*safetensors", cut_nth="1"),
    "download-interrupted-3x": dict(match=r"^GET /.*/resolve/", cut_nth="1-3"),
    "slow-server": dict(delay_ms=300),
}


@pytest.fixture(scope="module")
def pulled_repo(fault_server: HubHandle, model_dir: Path) -> str:
    repo = f"{fault_server.user}/{_uid('faulty-pull')}"
    push(model_dir, repo, token=fault_server.token, endpoint=fault_server.url)
    return repo


@pytest.mark.parametrize("name", list(PULL_FAULTS))
def test_pull_survives_transient_faults(hub: HubHandle, pulled_repo: str, model_dir: Path, tmp_path: Path,
                                        name: str):
    set_faults(hub, **PULL_FAULTS[name])
    out = tmp_path / "pulled"
    model, folder = pull(pulled_repo, output=out, load=False, token=hub.token, endpoint=hub.url)
    got = _count(hub, f"pull/{name}")
    assert any(got.values()), f"no fault was injected: {got}"
    assert model is None and folder == out
    _assert_same_files(out, model_dir)
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".pulled.")]


PERSISTENT_PUSH = {
    "commit-always-503": dict(match=r"^POST .*/commit/", fail_nth="1-1000"),
    "commit-always-dropped": dict(match=r"^POST .*/commit/", drop_nth="1-1000"),
    "preupload-always-500": dict(match=r"/preupload/", fail_nth="1-1000", fail_status=500),
}


@pytest.mark.parametrize("name", list(PERSISTENT_PUSH))
@pytest.mark.parametrize("target", ["new-repo", "existing-repo", "new-branch"])
def test_push_that_keeps_failing_leaves_remote_unchanged(hub: HubHandle, model_dir: Path, tmp_path: Path,
                                                         name: str, target: str, monkeypatch):
    import huggingface_hub.utils._http as hf_http

    # huggingface_hub's own http_backoff would wait 1+2+4+8+8 s per request: keep the test short
    monkeypatch.setattr(hf_http.time, "sleep", lambda s: None)
    repo = f"{hub.user}/{_uid('never')}"
    if target != "new-repo":
        hub.api().create_repo(repo)
        hub.api().upload_file(path_or_fileobj=b"v1", path_in_repo="keep.txt", repo_id=repo)
    before = _remote_state(hub, repo)
    branches_before = {b.name for b in hub.api().list_repo_refs(repo).branches} if before else None
    set_faults(hub, **PERSISTENT_PUSH[name])
    with pytest.raises(HubError) as err:
        push(model_dir, repo, token=hub.token, endpoint=hub.url,
             revision="int8" if target == "new-branch" else None)
    set_faults(hub)
    msg = str(err.value)
    assert "\n" not in msg and repo in msg
    assert isinstance(err.value, TransientHubError) or "HTTP 500" in msg, msg
    assert "try again later" in msg or "HTTP 500" in msg, msg
    assert _remote_state(hub, repo) == before, "a failed push must leave the remote unchanged"
    if before is not None:
        assert {b.name for b in hub.api().list_repo_refs(repo).branches} == branches_before


def test_pull_that_keeps_failing_leaves_no_folder(hub: HubHandle, pulled_repo: str, tmp_path: Path, monkeypatch):
    import huggingface_hub.utils._http as hf_http

    monkeypatch.setattr(hf_http.time, "sleep", lambda s: None)
    import huggingface_hub.file_download as fd

    monkeypatch.setattr(fd.time, "sleep", lambda s: None)  # resume retries inside http_get
    set_faults(hub, match=r"^GET /.*/resolve/.*safetensors", cut_nth="1-1000")
    out = tmp_path / "never"
    with pytest.raises(HubError) as err:
        pull(pulled_repo, output=out, load=False, token=hub.token, endpoint=hub.url)
    got = injected(hub)
    set_faults(hub)
    assert got["cut"] >= transfer.RETRIES, got
    assert "\n" not in str(err.value) and pulled_repo in str(err.value)
    assert not out.exists() and not list(tmp_path.glob(".never.*")), "no half folder"


def test_cli_pull_interrupted_download_is_one_line(hub: HubHandle, pulled_repo: str, tmp_path: Path,
                                                   capsys, monkeypatch):
    import huggingface_hub.file_download as fd
    import huggingface_hub.utils._http as hf_http

    from hfcompress.cli import main

    monkeypatch.setattr(hf_http.time, "sleep", lambda s: None)
    monkeypatch.setattr(fd.time, "sleep", lambda s: None)
    set_faults(hub, match=r"^GET /.*/resolve/", cut_nth="1-1000")
    out = tmp_path / "cli-pull"
    code = main(["pull", pulled_repo, "--no-load", "--output", str(out)])
    set_faults(hub)
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert code == 1 and len(lines) == 1 and pulled_repo in lines[0], err
    assert "Traceback" not in err
    assert not out.exists() and not list(tmp_path.glob(".cli-pull.*"))


def test_fault_flags_on_the_command_line(tmp_path: Path):
    """--drop-nth / --cut-nth / --fail-nth / --delay-ms / --fault-match as parsed by `hub serve`."""
    import argparse
    import threading

    from hfcompress.hub.server import add_arguments, make_server

    p = argparse.ArgumentParser()
    add_arguments(p)
    token = "flag-test-token"
    args = p.parse_args(["--data", str(tmp_path / "data"), "--token", f"u:{token}", "--fault-match", "whoami",
                         "--drop-nth", "1", "--cut-nth", "2", "--fail-nth", "3", "--fail-status", "500",
                         "--delay-nth", "4", "--delay-ms", "50"])
    server = make_server(args)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        outcomes = []
        for _ in range(4):
            req = urllib.request.Request(f"{base}/api/whoami-v2", headers={"Authorization": f"Bearer {token}"})
            try:
                with urllib.request.urlopen(req, timeout=10) as r:
                    json.loads(r.read())
                    outcomes.append(r.status)
            except urllib.error.HTTPError as exc:
                outcomes.append(exc.code)
            except Exception as exc:  # noqa: BLE001 - dropped / cut connections
                outcomes.append(type(exc).__name__)
        assert outcomes[2:] == [500, 200], outcomes
        assert all(isinstance(o, str) for o in outcomes[:2]), outcomes
        assert server.config.faults.injected == {"fail": 1, "drop": 1, "cut": 1, "delay": 1}
        # requests that do not match are not numbered and not faulted; fault control is off unless asked
        for path, status in (("/api/models/u/nope", 401), (FAULTS_PATH, 404)):
            with pytest.raises(urllib.error.HTTPError) as err:
                urllib.request.urlopen(base + path, timeout=10)
            assert err.value.code == status
        assert server.config.faults.counter == 4
    finally:
        server.shutdown()
        server.server_close()
