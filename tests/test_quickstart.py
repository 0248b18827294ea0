"""The README Quickstart is scripts/quickstart.sh, and it runs (issue 19 item 9).

CI runs the same commands with small settings (a tiny model instead of SmolLM2, 2 x 32-token
calibration windows) on a fresh local Hub; the README block must equal the script."""

from __future__ import annotations

import os
import re
import socket
import stat
import subprocess
import sys
from pathlib import Path

from hfcompress.testing.hub import client_env, start_hub_server

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "quickstart.sh"


def readme_block() -> str:
    text = (ROOT / "README.md").read_text()
    m = re.search(r"<!-- quickstart: scripts/quickstart.sh -->\n```bash\n(.*?)```\n", text, re.S)
    assert m, "README has no quickstart block (<!-- quickstart: scripts/quickstart.sh --> + ```bash)"
    return m.group(1)


def test_readme_shows_the_script():
    assert readme_block() == SCRIPT.read_text()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_quickstart_runs(tiny_models, tmp_path):
    data = tmp_path / "hub-data"
    data.mkdir()
    # What `make demo` leaves: a seeded Hub data folder (here: a tiny model under a public repo).
    server = start_hub_server(data, hf_home=tmp_path / "home0")
    try:
        server.api().create_repo("hfc-org/tiny-llama")
        server.api().upload_folder(folder_path=str(tiny_models["llama"]), repo_id="hfc-org/tiny-llama")
    finally:
        server.stop()
    bin_dir = tmp_path / "bin"  # `hfcompress` = this interpreter's package (CI: the checkout under test)
    bin_dir.mkdir()
    (bin_dir / "hfcompress").write_text(f'#!/bin/sh\nexec "{sys.executable}" -m hfcompress "$@"\n')
    (bin_dir / "hfcompress").chmod(0o755 | stat.S_IXUSR)
    env = client_env("http://unused", None, tmp_path / "home")
    for key in ("HF_ENDPOINT", "HF_TOKEN"):
        env.pop(key, None)
    env.update({"PATH": f"{bin_dir}{os.pathsep}{env['PATH']}", "HUB_DATA": str(data), "PORT": str(_free_port()),
                "MODEL": "hfc-org/tiny-llama", "SEED": "datasets", "SAMPLES": "2", "SEQ_LEN": "32",
                "OUT": str(tmp_path / "out"), "PYTHONPATH": os.pathsep.join(
                    p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)})
    proc = subprocess.run(["bash", str(SCRIPT)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, (proc.stdout[-2000:], proc.stderr[-3000:])
    assert "Traceback" not in proc.stderr
    assert (tmp_path / "out" / "quickstart-wanda-nf4" / "hfcompress.json").is_file()
    assert "The capital of France is" in proc.stdout  # the pulled model generated


def test_demo_says_how_to_serve_its_data_again(tmp_path):
    """The demo's server dies with the demo: its hint restarts a server on the same data, not a dead URL."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("demo_script", ROOT / "scripts" / "demo.py")
    demo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(demo)
    hint = demo.pull_again_hint("hfc-tester/smol", tmp_path, "http://127.0.0.1:40123")
    assert "40123" not in hint
    assert f"hub serve --port 8765 --data {tmp_path}" in hint
    assert "HF_ENDPOINT=http://127.0.0.1:8765 .venv/bin/hfcompress pull hfc-tester/smol" in hint
    assert demo.pull_again_hint("me/x", None, "https://hub.example").endswith(
        "HF_ENDPOINT=https://hub.example hfcompress pull me/x")
