"""`make demo`: the main job end to end on embedded defaults.

1. Start the project's Hub-compatible server on 127.0.0.1 (unless HF_ENDPOINT names a Hub
   and HF_TOKEN is set: then that Hub is used) and seed it with the real SmolLM2-135M-Instruct
   and the datasets of ../shared/hub/datasets under their real repo ids.
2. `hfcompress compress HuggingFaceTB/SmolLM2-135M-Instruct --recipe recipes/wanda-50-nf4.yaml
   --push-to-hub <user>/SmolLM2-135M-Instruct-wanda50-nf4` — loads by repo id, prunes (Wanda 50%,
   calibrated on fixtures/enwiki-sample), quantizes to NF4, evaluates on Salesforce/wikitext,
   writes the folder + card and pushes it in one commit.
3. `hfcompress pull` the pushed repo into a fresh cache and generate text with it.

Everything a step prints is shown; the script stops at the first failing step.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / os.environ.get("DEMO_RECIPE", "recipes/demo-wanda-50-nf4.yaml")
OUTPUT = ROOT / "demo-output" / "SmolLM2-135M-Instruct-wanda50-nf4"
MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"


def step(title: str, cmd: list[str], env: dict[str, str]) -> None:
    print(f"\n=== {title}\n$ {' '.join(cmd)}", flush=True)
    start = time.time()
    proc = subprocess.run(cmd, env=env, cwd=ROOT)
    if proc.returncode:
        sys.exit(f"demo failed at: {title} (exit {proc.returncode})")
    print(f"--- {title}: done in {time.time() - start:.0f}s", flush=True)


def pull_again_hint(repo: str, data_dir: Path | None, endpoint: str) -> str:
    """How to pull the pushed model later. The demo's own server stops with the demo, so its URL
    would be dead: say how to serve the same data again instead (what scripts/quickstart.sh does)."""
    if data_dir is None:
        return f"Pull it again with: HF_ENDPOINT={endpoint} hfcompress pull {repo}"
    return ("The demo's Hub server stops now. To pull the model again, serve the same data and point "
            "HF_ENDPOINT at it:\n"
            f"  .venv/bin/hfcompress hub serve --port 8765 --data {data_dir} --token me:TOKEN:hfc-org &\n"
            f"  HF_ENDPOINT=http://127.0.0.1:8765 .venv/bin/hfcompress pull {repo}\n"
            "(or run scripts/quickstart.sh, the README Quickstart, which does the same)")


def main() -> None:
    hfc = [sys.executable, "-m", "hfcompress"]
    own_hub = not (os.environ.get("HF_ENDPOINT") and os.environ.get("HF_TOKEN"))
    server = None
    if own_hub:
        from hfcompress.hub.seed import default_datasets_dir
        from hfcompress.testing.hub import TEST_USER, start_hub_server

        data = Path(os.environ.get("HFCOMPRESS_DEMO_HUB", Path.home() / ".cache" / "hfcompress" / "demo-hub"))
        data.mkdir(parents=True, exist_ok=True)
        server = start_hub_server(data, hf_home=tempfile.mkdtemp(prefix="hfc-demo-home-"))
        env, user = server.env, TEST_USER
        print(f"local Hub server: {server.url} (data in {data})")
        datasets_dir = default_datasets_dir()
        step("seed the local Hub with the real model and datasets",
             [*hfc, "hub", "seed", "--endpoint", server.url, "--datasets", str(datasets_dir),
              "--only", MODEL, "datasets"], env)
    else:
        env, user = dict(os.environ), os.environ.get("HFCOMPRESS_DEMO_USER", "me")
        print(f"using the Hub at {env['HF_ENDPOINT']}")
    repo = f"{user}/SmolLM2-135M-Instruct-wanda50-nf4"
    try:
        step(f"compress {MODEL} with {RECIPE.name} and push to {repo}",
             [*hfc, "compress", MODEL, "--recipe", str(RECIPE), "--output", str(OUTPUT), "--overwrite",
              "--push-to-hub", repo], env)
        pull_env = {**env, "HF_HOME": tempfile.mkdtemp(prefix="hfc-demo-pull-")}
        step(f"pull {repo} into a fresh cache and generate",
             [*hfc, "pull", repo, "--generate", "The capital of France is"], pull_env)
        print(f"\nDemo finished. Output folder: {OUTPUT}\nModel card: {OUTPUT / 'README.md'}")
        print(pull_again_hint(repo, server.data_dir if server else None, env.get("HF_ENDPOINT", "")))
    finally:
        if server:
            server.stop()


if __name__ == "__main__":
    main()
