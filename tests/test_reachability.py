"""An unreachable Hub is detected once: a cached model loads at once from the cache, an uncached
one fails at once with a one-line error (issue 19 item 9). Before: ~30 s of retries and a
traceback, or 35 retries (2m48s) before a cached load."""

from __future__ import annotations

import json
import socket
import subprocess
import sys

from hfcompress.testing.hub import client_env

LOAD = """
import json, sys, time
import huggingface_hub, torch, transformers  # imported before the clock starts
from hfcompress.errors import HFCompressError
from hfcompress.loading import load
t = time.perf_counter()
try:
    bundle = load(sys.argv[1])
    out = {"ok": True, "params": sum(p.numel() for p in bundle.model.parameters())}
except HFCompressError as exc:
    out = {"ok": False, "error": str(exc)}
out["seconds"] = time.perf_counter() - t
print("RESULT" + json.dumps(out))
"""


def _dead_endpoint() -> str:
    with socket.socket() as s:  # a port nothing listens on (bound, then closed)
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


def _load(repo: str, env: dict[str, str]) -> tuple[dict, str]:
    proc = subprocess.run([sys.executable, "-c", LOAD, repo], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT"))
    return json.loads(line[len("RESULT"):]), proc.stderr


def test_uncached_repo_without_a_hub_is_one_line_at_once(tmp_path):
    dead = _dead_endpoint()
    res, err = _load("HuggingFaceTB/not-cached-anywhere", client_env(dead, None, tmp_path / "home"))
    assert not res["ok"] and res["seconds"] < 10, res
    assert res["error"].startswith(f"cannot reach the Hub at {dead}") and "hfcompress hub serve" in res["error"]
    assert "\n" not in res["error"] and "Traceback" not in err


def test_cached_model_loads_at_once_when_the_hub_is_gone(hub_server, tiny_models, tmp_path):
    repo = f"{hub_server.user}/reach-tiny"
    hub_server.api().create_repo(repo, exist_ok=True)
    hub_server.api().upload_folder(folder_path=str(tiny_models["llama"]), repo_id=repo)
    home = tmp_path / "home"
    online, _ = _load(repo, client_env(hub_server.url, hub_server.token, home))  # fills the cache
    assert online["ok"], online
    offline, err = _load(repo, client_env(_dead_endpoint(), None, home))
    assert offline["ok"] and offline["params"] == online["params"], offline
    assert offline["seconds"] < 15, offline
    assert "does not answer: using the local cache only" in err
