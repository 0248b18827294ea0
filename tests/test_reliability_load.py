"""Load: the local Hub server under concurrent clients.

8 parallel pulls of a 100 MB+ model and 4 parallel pushes to different repos (2 through the
LFS batch API, 2 as regular base64 commits), all at once, each client its own process with the
real ``huggingface_hub``. Every download's sha256 must match; every acknowledged commit must be
readable, byte for byte, after the server is SIGKILLed and restarted. Loopback only.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from hfcompress.io import sha256_file
from hfcompress.testing.hub import start_hub_server
from hfcompress.testing.models import write_random_safetensors

BIG = 100 * 1024 * 1024 + 4321
PUSH_SIZE = 12 * 1024 * 1024
PULLS, PUSHES = 8, 4

CLIENT = textwrap.dedent('''
    import json, sys
    from huggingface_hub import HfApi, snapshot_download
    kind, endpoint, token, repo, folder, mode = sys.argv[1:7]
    if kind == "pull":
        path = snapshot_download(repo, endpoint=endpoint, token=token, local_dir=folder)
        print(json.dumps({"folder": path}))
    else:
        headers = {"X-HFCompress-Upload-Mode": mode}
        api = HfApi(endpoint=endpoint, token=token, headers=headers)
        api.create_repo(repo, exist_ok=True)
        info = api.upload_folder(folder_path=folder, repo_id=repo, commit_message="load test push")
        print(json.dumps({"oid": info.oid}))
''')


def _model(folder: Path, nbytes: int, tag: str) -> Path:
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"model_type": "llama", "tag": tag}))
    write_random_safetensors(folder / "model.safetensors", nbytes)
    return folder


def test_concurrent_pulls_and_pushes_survive_restart(tmp_path: Path, monkeypatch):
    from huggingface_hub import constants, hf_hub_download

    data = tmp_path / "data"
    server = start_hub_server(data, "--lfs-threshold", str(1 << 20))
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)  # this server answers "lfs": no Xet
    env = {**server.env, "HF_HUB_DISABLE_XET": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1"}
    script = tmp_path / "client.py"
    script.write_text(CLIENT)
    acked: dict[str, tuple[str, Path]] = {}
    try:
        api = server.api()
        big_repo = f"{server.user}/load-big"
        big = _model(tmp_path / "big", BIG, "big")
        api.create_repo(big_repo)
        api.upload_folder(folder_path=str(big), repo_id=big_repo)
        big_sha = sha256_file(big / "model.safetensors")
        acked[big_repo] = (api.repo_info(big_repo).sha, big)

        procs = []
        for i in range(PULLS):
            out = tmp_path / f"pull-{i}"
            procs.append(("pull", big_repo, out, subprocess.Popen(
                [sys.executable, str(script), "pull", server.url, server.token, big_repo, str(out), "-"],
                env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)))
        for i in range(PUSHES):
            folder = _model(tmp_path / f"push-src-{i}", PUSH_SIZE + i, f"push-{i}")
            repo = f"{server.user}/load-push-{i}"
            mode = "lfs" if i % 2 == 0 else "regular"
            procs.append(("push", repo, folder, subprocess.Popen(
                [sys.executable, str(script), "push", server.url, server.token, repo, str(folder), mode],
                env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)))
        for kind, repo, path, proc in procs:
            stdout, stderr = proc.communicate(timeout=300)
            assert proc.returncode == 0, f"{kind} {repo} failed: {stderr[-2000:]}"
            result = json.loads(stdout.strip().splitlines()[-1])
            if kind == "pull":
                assert sha256_file(path / "model.safetensors") == big_sha, f"{path}: corrupted download"
                assert json.loads((path / "config.json").read_text())["tag"] == "big"
            else:
                acked[repo] = (result["oid"], path)
        assert len(acked) == 1 + PUSHES
        server.stop(signal.SIGKILL)  # a crash: acknowledged commits must survive
    finally:
        server.stop()

    again = start_hub_server(data)
    try:
        api = again.api()
        for repo, (oid, folder) in acked.items():
            assert api.repo_info(repo).sha == oid, f"{repo}: the acknowledged commit is not the head any more"
            for name in ("config.json", "model.safetensors"):
                got = hf_hub_download(repo, name, revision=oid, endpoint=again.url, token=again.token,
                                      cache_dir=tmp_path / "verify")
                assert sha256_file(Path(got)) == sha256_file(folder / name), f"{repo}/{name} differs after restart"
        assert not list((data / "tmp").iterdir())
    finally:
        again.stop()


@pytest.fixture(autouse=True)
def _free_disk(tmp_path: Path):
    """The downloads take ~1 GB: remove them as soon as the test is done."""
    yield
    import shutil

    for p in tmp_path.iterdir():
        shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
