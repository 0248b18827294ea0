"""Secrets and trust: the token never shows up in logs (any verbosity, with failures and
``--debug``), reports, recipes, cards, exceptions or pushed files; pushed files carry no local
paths (tmp dir, home, user name); ``trust_remote_code`` stays off unless asked (and the CLI says
when it is on); only safetensors are written; pickle checkpoints need ``allow_pickle``.
"""

from __future__ import annotations

import getpass
import json
import secrets
import string
import sys
import tempfile
from pathlib import Path

import pytest

from hfcompress.cli import main
from hfcompress.registry import methods
from hfcompress.testing.hub import HubHandle, client_env, hub_environment, start_hub_server

#: an ``hf_``-shaped token (the redaction regex) and a plain one (only known to the process)
TOKEN = "hf_" + "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(34))
PLAIN = "plain-secret-" + secrets.token_hex(8)
USER = "leak-tester"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")

pytestmark = pytest.mark.skipif("magnitude" not in methods("prune"), reason="prune method magnitude not registered")


def _local_markers(*extra: Path) -> list[bytes]:
    """Byte strings that would reveal this machine: tmp dir, home, the OS user in a path."""
    user = getpass.getuser()
    out = [tempfile.gettempdir().rstrip("/") + "/", str(Path.home()).rstrip("/") + "/", f"/{user}/",
           f"pytest-of-{user}", *(str(p) for p in extra)]
    return [m.encode() for m in out if m not in ("/", "//")]


def _assert_clean(name: str, data: bytes, markers: list[bytes]) -> None:
    for secret in (TOKEN, PLAIN):
        assert secret.encode() not in data, f"the token leaked into {name}"
    for m in markers:
        assert m not in data, f"{name} reveals a local path ({m!r})"


@pytest.fixture(scope="module")
def leak_hub(tmp_path_factory) -> HubHandle:
    server = start_hub_server(tmp_path_factory.mktemp("leak-hub"), "--token", f"{USER}:{TOKEN}",
                              "--token", f"plain-user:{PLAIN}")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def src(tmp_path_factory) -> Path:
    from hfcompress.testing.models import save_tiny

    root = tmp_path_factory.mktemp("leak-src")
    (root / "r.yaml").write_text("name: leak-check\nstages:\n  - prune: {method: magnitude, sparsity: 0.5}\n")
    return save_tiny("llama", root / "llama")


def test_push_end_to_end_with_debug_logs_leaks_nothing(leak_hub: HubHandle, src: Path, tmp_path: Path):
    """compress --push-to-hub in a subprocess at full verbosity; then every pushed file is scanned."""
    repo = f"{USER}/leak-check"
    out = tmp_path / "out"
    env = {**client_env(leak_hub.url, TOKEN, tmp_path / "home"), "HF_HUB_VERBOSITY": "debug",
           "TRANSFORMERS_VERBOSITY": "debug", "HFCOMPRESS_DEBUG": "1", "HFCOMPRESS_HUB_LOG": "1"}
    r = leak_hub.run(["hfcompress", "--debug", "compress", str(src), "-r", str(src.parent / "r.yaml"),
                      "-o", str(out), "--push-to-hub", repo, "--private"], env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "pushed to" in r.stdout
    _assert_clean("the CLI output", (r.stdout + r.stderr).encode(), [])

    markers = _local_markers(tmp_path, src.parent)
    for p in out.rglob("*"):  # the local output (report, recipe, card, weights)
        if p.is_file():
            _assert_clean(f"output file {p.name}", p.read_bytes(), markers)
            assert p.suffix not in PICKLE_SUFFIXES, p
    api = leak_hub.api(TOKEN)
    files = api.list_repo_files(repo)
    assert {"hfcompress.json", "recipe.yaml", "README.md", "model.safetensors", "config.json"} <= set(files)
    snap = Path(api.snapshot_download(repo, local_dir=str(tmp_path / "remote")))
    scanned = 0
    for name in files:
        _assert_clean(f"pushed file {name}", (snap / name).read_bytes(), markers)
        assert Path(name).suffix not in PICKLE_SUFFIXES, f"pickle file pushed: {name}"
        scanned += 1
    assert scanned >= 8
    report = json.loads((snap / "hfcompress.json").read_text())
    assert report["source"] == {"local_name": "llama"}


@pytest.fixture()
def verbose_logs():
    """Every library logger at DEBUG for the duration of a test (restored afterwards)."""
    import logging

    import huggingface_hub.utils.logging as hf_logging
    import transformers

    root_level = logging.getLogger().level
    hf_level, tf_level = hf_logging.get_verbosity(), transformers.logging.get_verbosity()
    logging.getLogger().setLevel(logging.DEBUG)
    hf_logging.set_verbosity_debug()
    transformers.logging.set_verbosity_debug()
    yield
    logging.getLogger().setLevel(root_level)
    hf_logging.set_verbosity(hf_level)
    transformers.logging.set_verbosity(tf_level)


FAILING = [
    # (argv, token in argv?) — each fails; --debug prints (redacted) tracebacks
    (["push", "{src}", "someone-else/stolen"], False),                 # 403
    (["push", "{src}", "someone-else/stolen", "--token", "{token}"], True),
    (["pull", "{user}/does-not-exist", "--no-load"], False),            # 404
    (["pull", "{user}/does-not-exist", "--no-load", "--token={token}"], True),
    (["push", "{src}", "{user}/x", "{token}"], True),                    # argparse: unrecognized argument
    (["pull", "--token", "{token}"], True),                              # argparse: missing repo id
    (["compress", "{src}", "-r", "{tmp}/missing.yaml", "-o", "{tmp}/o"], False),
    (["compress", "{user}/does-not-exist", "-r", "{recipe}", "-o", "{tmp}/o"], False),
]


@pytest.mark.parametrize("token", [TOKEN, PLAIN], ids=["hf-token", "plain-token"])
@pytest.mark.parametrize("argv, in_argv", FAILING, ids=[" ".join(a[:2]) + f"-{i}" for i, (a, _) in enumerate(FAILING)])
def test_failures_with_debug_never_print_the_token(leak_hub: HubHandle, src: Path, tmp_path: Path, capfd,
                                                   verbose_logs, argv, in_argv, token):
    import hfcompress.secrets as hs

    if token == PLAIN and argv[-1] == "{token}" and argv[-2] != "--token":
        pytest.skip("a token that is not hf_-shaped, pasted as a stray argument, cannot be recognised")
    hs._KNOWN.discard(token)  # as in a fresh process: known only from HF_TOKEN / argv
    subs = {"src": str(src), "token": token, "user": USER, "tmp": str(tmp_path), "recipe": str(src.parent / "r.yaml")}
    args = ["--debug", *[a.format(**subs) for a in argv]]
    home = tmp_path / "home"
    home.mkdir()
    with hub_environment(leak_hub.url, None if in_argv else token, home):
        try:
            code = main(args)
        except SystemExit as exc:
            code = exc.code
    captured = capfd.readouterr()
    assert code not in (0, None)
    text = captured.out + captured.err
    assert "error:" in text
    assert token not in text, f"the token leaked: {text[-2000:]}"


def test_exceptions_do_not_carry_the_token(leak_hub: HubHandle, src: Path, tmp_path: Path):
    from hfcompress.errors import HubError
    from hfcompress.hub import pull, push

    with pytest.raises(HubError) as err:
        push(src, "someone-else/stolen", token=TOKEN, endpoint=leak_hub.url)
    assert TOKEN not in str(err.value) and TOKEN not in repr(err.value.__cause__)
    with pytest.raises(HubError) as err:
        pull(f"{USER}/nope", token=PLAIN, endpoint=leak_hub.url, load=False)
    assert PLAIN not in str(err.value)


def test_redact_hides_known_and_hf_shaped_tokens():
    from hfcompress.secrets import redact, register_secret, scrub

    register_secret(PLAIN)
    text = f"Authorization: Bearer {PLAIN} and hf_{'a' * 30} at /tmp/x"
    assert redact(text) == "Authorization: Bearer *** and *** at /tmp/x"
    assert scrub({"a": [f"/home/u/{PLAIN}", "org/name"]}) == {"a": ["local:***", "org/name"]}


# ---------------------------------------------------------------------------------------------
# trust_remote_code, pickles
# ---------------------------------------------------------------------------------------------

@pytest.fixture()
def custom_code_model(tmp_path: Path) -> tuple[Path, Path]:
    """A model folder whose config points at custom code that leaves a marker when imported."""
    from hfcompress.testing.models import save_tiny

    folder = save_tiny("llama", tmp_path / "custom")
    marker = tmp_path / "CUSTOM-CODE-RAN"
    cfg = json.loads((folder / "config.json").read_text())
    cfg["auto_map"] = {"AutoConfig": "custom.CustomConfig", "AutoModelForCausalLM": "custom.CustomModel"}
    (folder / "config.json").write_text(json.dumps(cfg))
    (folder / "custom.py").write_text(
        f"import pathlib\npathlib.Path({str(marker)!r}).write_text('ran')\n"
        "from transformers import LlamaConfig, LlamaForCausalLM\n"
        "class CustomConfig(LlamaConfig):\n    pass\n"
        "class CustomModel(LlamaForCausalLM):\n    config_class = CustomConfig\n")
    return folder, marker


def test_remote_code_does_not_run_unless_asked(custom_code_model, tmp_path: Path, capsys):
    import hfcompress

    folder, marker = custom_code_model
    bundle = hfcompress.load(str(folder))
    assert type(bundle.model).__name__ == "LlamaForCausalLM" and not marker.exists()
    # The CLI says when it is on (checked on a run that then stops at the output check).
    code = main(["compress", str(folder), "-r", str(tmp_path / "none.yaml"), "-o", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and "trust_remote_code" not in err
    code = main(["compress", str(folder), "--trust-remote-code", "-r", str(tmp_path / "none.yaml"),
                 "-o", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and "warning: trust_remote_code is ON" in err
    assert not marker.exists()


def test_remote_code_runs_only_with_trust(custom_code_model, tmp_path: Path, monkeypatch):
    import transformers.dynamic_module_utils as dmu

    import hfcompress

    folder, marker = custom_code_model
    monkeypatch.setattr(dmu, "HF_MODULES_CACHE", str(tmp_path / "modules"))  # not the user's cache
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    bundle = hfcompress.load(str(folder), trust_remote_code=True, with_tokenizer=False)
    assert marker.exists() and type(bundle.model).__name__ == "CustomModel"


def test_pickle_checkpoint_needs_opt_in_and_output_is_safetensors(tmp_path: Path, capsys):
    import torch

    from hfcompress.testing.models import tiny_model

    src = tmp_path / "pickled"
    src.mkdir()
    model = tiny_model("llama")
    model.config.save_pretrained(src)
    torch.save(model.state_dict(), src / "pytorch_model.bin")
    (tmp_path / "r.yaml").write_text("stages:\n  - prune: {method: magnitude, sparsity: 0.5}\n")
    out = tmp_path / "out"
    argv = ["compress", str(src), "-r", str(tmp_path / "r.yaml"), "-o", str(out)]
    assert main(argv) == 1
    assert "--allow-pickle" in capsys.readouterr().err and not out.exists()
    assert main([*argv, "--allow-pickle"]) == 0
    written = sorted(p.name for p in out.rglob("*"))
    assert "model.safetensors" in written
    assert not [n for n in written if n.endswith(PICKLE_SUFFIXES)], written


def test_pipeline_refuses_to_write_pickle_files(tmp_path: Path, capsys):
    """A stage that tries to add a pickle file to the output: refused, nothing written."""
    from typing import Literal

    from hfcompress import registry
    from hfcompress.prune.base import PruneConfig

    class PickleConfig(PruneConfig):
        method: Literal["test-writes-pickle"] = "test-writes-pickle"

    def apply(bundle, config, ctx):
        ctx.files["extra/state.pt"] = b"\x80\x04K\x01."
        return {}

    registry.register_method("prune", "test-writes-pickle", PickleConfig, apply)
    try:
        from hfcompress.testing.models import save_tiny

        src = save_tiny("llama", tmp_path / "src")
        (tmp_path / "r.yaml").write_text("stages:\n  - prune: {method: test-writes-pickle}\n")
        out = tmp_path / "out"
        assert main(["compress", str(src), "-r", str(tmp_path / "r.yaml"), "-o", str(out)]) == 1
        assert "refusing to write pickle file extra/state.pt" in capsys.readouterr().err
        assert not out.exists() and not list(tmp_path.glob(".out.*"))
    finally:
        registry._REGISTRY["prune"].pop("test-writes-pickle", None)


def test_server_request_log_does_not_print_tokens(tmp_path: Path, capfd, monkeypatch):
    """With HFCOMPRESS_HUB_LOG=1 the server logs request lines, never the Authorization header."""
    import argparse
    import threading
    import urllib.error
    import urllib.request

    from hfcompress.hub.server import add_arguments, make_server

    monkeypatch.setenv("HFCOMPRESS_HUB_LOG", "1")
    p = argparse.ArgumentParser()
    add_arguments(p)
    server = make_server(p.parse_args(["--data", str(tmp_path / "data"), "--token", f"{USER}:{TOKEN}"]))
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        for tok in (TOKEN, PLAIN):
            req = urllib.request.Request(f"{base}/api/whoami-v2", headers={"Authorization": f"Bearer {tok}"})
            try:
                urllib.request.urlopen(req, timeout=10).read()
            except urllib.error.HTTPError as exc:
                assert exc.code == 401 and PLAIN not in exc.read().decode()
    finally:
        server.shutdown()
        server.server_close()
    err = capfd.readouterr().err
    assert "hub: " in err and "whoami" in err
    assert TOKEN not in err and PLAIN not in err
