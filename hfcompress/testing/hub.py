"""pytest plugin: a local Hub-compatible server for tests (``pytest_plugins = ["hfcompress.testing.hub"]``).

Fixtures:

* ``hub_server`` (session) — starts ``python -m hfcompress.cli hub serve`` on a free loopback
  port, seeds the datasets of ``../shared/hub/datasets`` and yields a :class:`HubHandle`
  (``.url``, ``.token``, ``.user``, ``.data_dir``, ``.env``, ``.run(...)``, ``.api()``).
  The user :data:`TEST_USER` (token :data:`TEST_TOKEN`) belongs to the orgs
  ``HuggingFaceTB``, ``sentence-transformers``, ``Salesforce``, ``fixtures`` and ``hfc-org``;
  a second user :data:`OTHER_USER` (token :data:`OTHER_TOKEN`) has no org.
* ``hub_models`` (session) — also seeds the real models (SmolLM2 is ~540 MB: only request
  it in tests that need it).
* ``hub_env`` (function) — points the already-imported ``huggingface_hub`` / ``datasets`` /
  ``transformers`` of *this* process at the server (env vars + their import-time constants)
  with a fresh ``HF_HOME``, and restores everything afterwards.

Set ``HFCOMPRESS_HUB_TEST_DATA=/some/dir`` to keep the server's data between runs (seeding
is idempotent, so re-runs skip the uploads). Example::

    def test_download(hub_env):
        from huggingface_hub import hf_hub_download
        hf_hub_download("Salesforce/wikitext", "README.md", repo_type="dataset")

    def test_cli(hub_server):
        r = hub_server.run(["hfcompress", "pull", "fixtures/x", "--no-load"])
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from ..hub.seed import SEED_ORGS, default_datasets_dir

TEST_USER = "hfc-tester"
TEST_TOKEN = "hfc-test-token-5f1d0c"
TEST_ORGS = (*SEED_ORGS, "hfc-org")
OTHER_USER = "hfc-other"
OTHER_TOKEN = "hfc-other-token-9a8b7c"
REPO_ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 60


@dataclass
class HubHandle:
    """A running hub server (see module docstring)."""

    url: str
    token: str
    user: str
    data_dir: Path
    env: dict[str, str]
    proc: subprocess.Popen
    other_user: str = OTHER_USER
    other_token: str = OTHER_TOKEN
    _home: Path | None = field(default=None, repr=False)

    def api(self, token: str | None | bool = None):
        """A ``huggingface_hub.HfApi`` bound to this server (``token=False``: anonymous)."""
        from huggingface_hub import HfApi

        tok = self.token if token is None else token
        return HfApi(endpoint=self.url, token=tok)

    def run(self, cmd: Sequence[str], *, env: dict[str, str] | None = None, timeout: float = 300,
            check: bool = False, **kwargs: Any) -> subprocess.CompletedProcess:
        """Run ``cmd`` in a fresh subprocess with :attr:`env` (+ ``env`` overrides); text output captured.

        ``cmd[0] == "hfcompress"`` runs the CLI with this interpreter.
        """
        cmd = list(cmd)
        if cmd and cmd[0] == "hfcompress":
            cmd = [sys.executable, "-m", "hfcompress.cli", *cmd[1:]]
        return subprocess.run(cmd, env={**self.env, **(env or {})}, capture_output=True, text=True,
                              timeout=timeout, check=check, cwd=kwargs.pop("cwd", REPO_ROOT), **kwargs)

    def popen(self, cmd: Sequence[str], *, env: dict[str, str] | None = None, **kwargs: Any) -> subprocess.Popen:
        """Like :meth:`run` but returns the running :class:`subprocess.Popen`."""
        cmd = list(cmd)
        if cmd and cmd[0] == "hfcompress":
            cmd = [sys.executable, "-m", "hfcompress.cli", *cmd[1:]]
        return subprocess.Popen(cmd, env={**self.env, **(env or {})}, cwd=kwargs.pop("cwd", REPO_ROOT), **kwargs)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Stop the server process (by its PID)."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def client_env(url: str, token: str | None, hf_home: Path) -> dict[str, str]:
    """Environment for a subprocess that talks to the server at ``url`` as an online client would."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("HF_", "HUGGING_FACE_", "TRANSFORMERS_", "HFCOMPRESS_HUB"))}
    env.update({
        "HF_ENDPOINT": url,
        "HF_HOME": str(hf_home),
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "HF_HUB_DISABLE_PROGRESS_BARS": "1",
        "HF_HUB_OFFLINE": "0",
        "HF_DATASETS_OFFLINE": "0",
        "TRANSFORMERS_OFFLINE": "0",
        "HF_HUB_DISABLE_UPDATE_CHECK": "1",
        "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]),
    })
    if token:
        env["HF_TOKEN"] = token
    return env


def start_hub_server(data_dir: str | Path, *extra_args: str, hf_home: str | Path | None = None,
                     token: str = TEST_TOKEN) -> HubHandle:
    """Start a server subprocess on a free port over ``data_dir``; returns once it answers."""
    data_dir = Path(data_dir)
    home = Path(hf_home) if hf_home else Path(tempfile.mkdtemp(prefix="hfc-hf-home-"))
    # the server's own entry point (``hfcompress hub serve`` minus the CLI): the full CLI parser
    # imports torch and transformers, seconds of CPU per start that a server never uses
    cmd = [sys.executable, "-m", "hfcompress.hub.server", "--host", "127.0.0.1", "--port", "0",
           "--data", str(data_dir), "--token", f"{TEST_USER}:{TEST_TOKEN}:{','.join(TEST_ORGS)}",
           "--token", f"{OTHER_USER}:{OTHER_TOKEN}", *extra_args]
    env = client_env("http://127.0.0.1:0", None, home)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=None, text=True, env=env, cwd=REPO_ROOT)
    line: list[str] = []
    reader = threading.Thread(target=lambda: line.append(proc.stdout.readline()), daemon=True)
    reader.start()
    reader.join(START_TIMEOUT_S)
    url = (line[0] if line else "").strip()
    if not url.startswith("http://127.0.0.1:"):
        proc.kill()
        proc.wait()
        raise RuntimeError(f"hub server did not start (first line {url!r}, exit {proc.returncode})")
    return HubHandle(url=url, token=token, user=TEST_USER, data_dir=data_dir, env=client_env(url, token, home),
                     proc=proc, _home=home)


# ---------------------------------------------------------------------------------------------
# In-process redirection of huggingface_hub / datasets / transformers
# ---------------------------------------------------------------------------------------------

_PACKAGES = ("huggingface_hub", "datasets", "transformers", "evaluate", "peft")


@contextlib.contextmanager
def hub_environment(url: str, token: str | None, hf_home: str | Path) -> Iterator[None]:
    """Point this process's HF libraries at ``url`` with a fresh ``hf_home``; restore on exit.

    ``huggingface_hub`` and ``datasets`` copy ``HF_ENDPOINT`` / ``HF_HOME`` into module
    constants at import, and ``huggingface_hub.hf_api.api`` (behind ``hf_hub_download`` &
    co.) keeps its endpoint: every module-level string constant of these packages that
    starts with the old endpoint or old HF home is rewritten, plus the shared ``HfApi``.
    """
    from huggingface_hub import constants

    hf_home = str(hf_home)
    old_env = dict(os.environ)
    old_endpoint, old_home = constants.ENDPOINT, constants.HF_HOME
    saved: list[tuple[Any, str, Any]] = []

    def setattr_saved(obj: Any, name: str, value: Any) -> None:
        saved.append((obj, name, getattr(obj, name)))
        setattr(obj, name, value)

    os.environ.update({k: v for k, v in client_env(url, token, Path(hf_home)).items()
                       if k.startswith(("HF_", "TRANSFORMERS_"))})
    if not token:
        os.environ.pop("HF_TOKEN", None)
    try:
        for modname, mod in list(sys.modules.items()):
            if mod is None or not modname.startswith(_PACKAGES):
                continue
            for name, value in list(vars(mod).items()):
                if not name.isupper():
                    continue
                if isinstance(value, str) and value.startswith(old_endpoint):
                    setattr_saved(mod, name, url + value[len(old_endpoint):])
                elif isinstance(value, (str, Path)) and str(value).startswith(old_home):
                    new = hf_home + str(value)[len(old_home):]
                    setattr_saved(mod, name, type(value)(new))
                elif name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE") and value is True:
                    setattr_saved(mod, name, False)
        setattr_saved(constants, "HF_URL_HOSTS", frozenset(constants.HF_URL_HOSTS | {"127.0.0.1"}))
        hf_api = sys.modules.get("huggingface_hub.hf_api")
        if hf_api is not None:
            setattr_saved(hf_api.api, "endpoint", url)
        hffs = sys.modules.get("huggingface_hub.hf_file_system")
        if hffs is not None:
            hffs.HfFileSystem.clear_instance_cache()
        yield
    finally:
        for obj, name, value in reversed(saved):
            setattr(obj, name, value)
        os.environ.clear()
        os.environ.update(old_env)
        hffs = sys.modules.get("huggingface_hub.hf_file_system")
        if hffs is not None:
            hffs.HfFileSystem.clear_instance_cache()


# ---------------------------------------------------------------------------------------------
# Fixtures
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def hub_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubHandle]:
    """A running, dataset-seeded hub server for the whole session (see module docstring)."""
    persistent = os.environ.get("HFCOMPRESS_HUB_TEST_DATA")
    data_dir = Path(persistent) if persistent else tmp_path_factory.mktemp("hub-data")
    handle = start_hub_server(data_dir, hf_home=tmp_path_factory.mktemp("hf-home"))
    try:
        ddir = default_datasets_dir()
        if ddir.is_dir():
            from ..hub.seed import seed

            # inside hub_environment: a test that ran first may have imported huggingface_hub under
            # HF_HUB_OFFLINE=1, which freezes its offline switch for the process
            with hub_environment(handle.url, handle.token, tmp_path_factory.mktemp("hf-home-seed")):
                seed(handle.url, handle.token, only=["datasets"], datasets_dir=ddir, log=lambda _msg: None)
        yield handle
    finally:
        handle.stop()


@pytest.fixture(scope="session")
def hub_models(hub_server: HubHandle) -> HubHandle:
    """``hub_server`` with the real models seeded too (builds the assets if needed; slow the first time)."""
    r = hub_server.run([sys.executable, "-m", "hfcompress.hub.seed", "--endpoint", hub_server.url,
                        "--only", "models"], env={"HF_HUB_DISABLE_XET": "1"}, timeout=3600)
    if r.returncode != 0:
        raise RuntimeError(f"seeding the models failed: {r.stderr.strip().splitlines()[-1:]}")
    return hub_server


@pytest.fixture()
def hub_env(hub_server: HubHandle, tmp_path: Path) -> Iterator[HubHandle]:
    """``hub_server``, with this process's HF libraries pointed at it and a fresh HF_HOME."""
    home = tmp_path / "hf-home"
    home.mkdir()
    with hub_environment(hub_server.url, hub_server.token, home):
        yield hub_server


def compress_push_pull(hub: HubHandle, model: str | Path, stages: list[Any], dataset: tuple[Path, str],
                       repo_name: str, tmp: Path) -> tuple[dict[str, dict[str, Any]], list[Any]]:
    """Upload ``dataset`` (folder, repo id) as a dataset repo, ``compress`` ``model`` with ``stages``
    into ``tmp/out``, push it to ``<user>/<repo_name>`` and pull it back (the pull must load).
    Returns the run's evaluation rows by metric and the pushed card's ``eval_results``."""
    import hfcompress
    from hfcompress.recipes import Recipe

    api = hub.api()
    folder, data = dataset
    api.create_repo(data, repo_type="dataset", exist_ok=True)
    api.upload_folder(folder_path=str(folder), repo_id=data, repo_type="dataset")
    out = tmp / "out"
    hfcompress.compress(str(model), Recipe(stages=stages), output=out, progress=False)
    measured = {r["metric"]: r for r in json.loads((out / "hfcompress.json").read_text())["evaluation"]}
    repo = f"{hub.user}/{repo_name}"
    hfcompress.push(out, repo)
    loaded, pulled = hfcompress.pull(repo, output=tmp / "pulled")
    if loaded is None or not (pulled / "README.md").is_file():
        raise AssertionError(f"{repo} did not pull back as a loadable model with a card")
    return measured, list(api.model_info(repo).card_data.eval_results or [])
