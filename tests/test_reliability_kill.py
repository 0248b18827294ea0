"""Atomic outputs: ``compress`` killed with SIGKILL at any point leaves the previous output or
none, never a half folder; re-running the same command succeeds (stale temp siblings of dead
runs are removed) and the source model is never modified.

A driver process imports hfcompress once and forks one child per run (cheap on 2 cores); the
child pauses at a named point (hooks installed in the child only) so the test can SIGKILL it
exactly there, or the test kills it after a random delay.
"""

from __future__ import annotations

import hashlib
import json
import os
import queue
import random
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from hfcompress.registry import methods
from hfcompress.testing.hub import REPO_ROOT

DRIVER = textwrap.dedent('''
    import json, os, sys, time
    import hfcompress, hfcompress.io as hio, hfcompress.pipeline as pl
    from hfcompress.cli import main
    import hfcompress.prune  # registers the real methods before forking

    def pause(marker):
        with open(marker, "w") as f:
            f.write(str(os.getpid()))
        while True:
            time.sleep(60)

    def after(mod, name, marker, when=lambda result, *a, **k: True):
        real = getattr(mod, name)
        def wrapped(*a, **k):
            result = real(*a, **k)
            if when(result, *a, **k):
                pause(marker)
            return result
        setattr(mod, name, wrapped)

    def before(mod, name, marker):
        real = getattr(mod, name)
        def wrapped(*a, **k):
            pause(marker)
            return real(*a, **k)
        setattr(mod, name, wrapped)

    def install(point, marker):
        if point == "loaded":
            after(pl, "load", marker)
        elif point == "stage-done":
            after(pl, "run_stage", marker)
        elif point == "weights-written":
            after(pl, "save_bundle", marker)
        elif point == "report":
            before(pl, "write_json", marker)
        elif point == "card-written":
            after(pl, "write_card", marker)
        elif point == "before-rename":
            after(hio, "_fsync_tree", marker)
        elif point == "after-exchange":
            after(hio, "_exchange", marker, when=lambda ok, *a, **k: ok)
        elif point == "between-renames":  # the fallback path without an atomic exchange
            hio._exchange = lambda a, b: False
            real = os.replace
            def replace(src, dst, *a, **k):
                real(src, dst, *a, **k)
                if os.path.basename(str(dst)) == "x":
                    pause(marker)
            os.replace = replace
        elif point:
            raise SystemExit("unknown point " + point)

    for line in sys.stdin:
        job = json.loads(line)
        pid = os.fork()
        if pid == 0:
            log = os.open(job["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
            os.dup2(log, 1)
            os.dup2(log, 2)
            install(job.get("point"), job["marker"])
            try:
                code = main(job["argv"])
            except SystemExit as exc:
                code = exc.code
            sys.stdout.flush(); sys.stderr.flush()
            os._exit(int(code or 0))
        print(json.dumps({"pid": pid}), flush=True)
        _, status = os.waitpid(pid, 0)
        print(json.dumps({"status": status}), flush=True)
''')

FRESH_POINTS = ["loaded", "weights-written", "report", "before-rename"]
OVERWRITE_POINTS = ["stage-done", "weights-written", "card-written", "before-rename", "after-exchange",
                    "between-renames"]
KILLS: dict[str, int] = {"named points": 0, "random delays": 0}


def _digest(folder: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            h.update(p.relative_to(folder).as_posix().encode() + p.read_bytes())
    return h.hexdigest()


class Driver:
    def __init__(self, tmp: Path):
        self.tmp = tmp
        script = tmp / "driver.py"
        script.write_text(DRIVER)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]),
               "HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1", "OMP_NUM_THREADS": "1"}
        self.proc = subprocess.Popen([sys.executable, str(script)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True, env=env, cwd=tmp)
        self.n = 0
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=lambda: [self.lines.put(ln) for ln in self.proc.stdout] + [self.lines.put("")],
                         daemon=True).start()

    def _read(self, timeout: float | None = 300) -> dict:
        line = self.lines.get(timeout=timeout)
        if not line:
            raise RuntimeError(f"driver died (exit {self.proc.poll()})")
        return json.loads(line)

    def run(self, argv: list[str], point: str | None = None, kill_after: float | None = None,
            timeout: float = 120) -> tuple[int | None, str]:
        """Run ``argv`` in a forked child; kill it at ``point`` or after ``kill_after`` s.

        Returns (exit code or None if killed, child log)."""
        self.n += 1
        marker = self.tmp / f"marker-{self.n}"
        log = self.tmp / f"log-{self.n}.txt"
        job = {"argv": argv, "point": point, "marker": str(marker), "log": str(log)}
        self.proc.stdin.write(json.dumps(job) + "\n")
        self.proc.stdin.flush()
        pid = self._read()["pid"]
        status = None
        if point is not None:
            deadline = time.monotonic() + timeout
            while not marker.exists():
                if time.monotonic() > deadline:
                    os.kill(pid, signal.SIGKILL)
                    raise AssertionError(f"the run never reached {point}: {log.read_text()[-2000:]}")
                try:  # the run may end without passing the point (e.g. no atomic exchange here)
                    status = self._read(timeout=0.02)["status"]
                    break
                except queue.Empty:
                    continue
            if status is None:
                os.kill(pid, signal.SIGKILL)
        elif kill_after is not None:
            time.sleep(kill_after)
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if status is None:
            status = self._read()["status"]
        text = log.read_text() if log.exists() else ""
        if os.WIFSIGNALED(status):
            assert os.WTERMSIG(status) == signal.SIGKILL
            return None, text
        return os.WEXITSTATUS(status), text

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


@pytest.fixture(scope="module")
def driver(tmp_path_factory):
    if "magnitude" not in methods("prune"):
        pytest.skip("prune method magnitude not registered")
    d = Driver(tmp_path_factory.mktemp("kill-driver"))
    yield d
    d.close()


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> dict[str, Path]:
    from hfcompress.testing.models import save_tiny

    root = tmp_path_factory.mktemp("kill")
    src = save_tiny("llama", root / "src")
    for name, sparsity in (("new", 0.5), ("old", 0.25)):
        (root / f"{name}.yaml").write_text(f"name: {name}\nstages:\n  - prune: {{method: magnitude, "
                                           f"sparsity: {sparsity}}}\n")
    return {"root": root, "src": src, "new": root / "new.yaml", "old": root / "old.yaml"}


def _assert_complete(out: Path, recipe_name: str) -> None:
    """A finished output: every file there, the report names the recipe, and it loads."""
    import hfcompress

    names = {p.name for p in out.iterdir()}
    assert {"config.json", "model.safetensors", "hfcompress.json", "recipe.yaml", "README.md",
            "tokenizer.json"} <= names, names
    report = json.loads((out / "hfcompress.json").read_text())
    assert report["recipe"]["name"] == recipe_name
    bundle = hfcompress.load(str(out), with_tokenizer=True)
    assert type(bundle.model).__name__ == "LlamaForCausalLM" and bundle.tokenizer is not None


def _siblings(out: Path) -> list[str]:
    return sorted(p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}."))


def test_killed_fresh_run_leaves_no_output(driver: Driver, setup, tmp_path: Path):
    src_digest = _digest(setup["src"])
    out = tmp_path / "out"
    argv = ["compress", str(setup["src"]), "-r", str(setup["new"]), "-o", str(out), "--no-progress"]
    for point in FRESH_POINTS:
        code, log = driver.run(argv, point=point)
        KILLS["named points"] += 1
        assert code is None, f"{point}: the run was not killed: {log[-1000:]}"
        assert not out.exists(), f"killed at {point}: a half folder was left at the output"
    assert _siblings(out), "the kills left temp siblings behind (expected: cleaned by the next run)"
    code, log = driver.run(argv)
    assert code == 0, log[-2000:]
    _assert_complete(out, "new")
    assert _siblings(out) == [], "stale temp siblings of killed runs are removed"
    assert _digest(setup["src"]) == src_digest, "the source model is never modified"


def test_killed_overwrite_keeps_previous_output(driver: Driver, setup, tmp_path: Path):
    src_digest = _digest(setup["src"])
    out = tmp_path / "out"
    base = ["compress", str(setup["src"]), "-o", str(out), "--no-progress", "--overwrite"]
    code, log = driver.run([*base, "-r", str(setup["old"])])
    assert code == 0, log[-2000:]
    previous = _digest(out)
    for point in OVERWRITE_POINTS:
        code, log = driver.run([*base, "-r", str(setup["new"])], point=point)
        if point == "after-exchange" and code == 0:  # this filesystem has no RENAME_EXCHANGE
            _assert_complete(out, "new")
        else:
            KILLS["named points"] += 1
            assert code is None, f"{point}: the run was not killed: {log[-1000:]}"
        if code == 0:
            pass
        elif point == "between-renames":  # without an atomic exchange: previous output or none
            assert not out.exists() or _digest(out) == previous
        elif point == "after-exchange":  # the new output is in place, complete
            _assert_complete(out, "new")
        else:
            assert _digest(out) == previous, f"killed at {point}: the previous output changed"
        # restore the previous output for the next point
        if not out.exists() or _digest(out) != previous:
            code, log = driver.run([*base, "-r", str(setup["old"])])
            assert code == 0, log[-2000:]
            previous = _digest(out)
    code, log = driver.run([*base, "-r", str(setup["new"])])
    assert code == 0, log[-2000:]
    _assert_complete(out, "new")
    assert _siblings(out) == []
    assert _digest(setup["src"]) == src_digest


def test_killed_at_random_moments(driver: Driver, setup, tmp_path: Path):
    """Kills at random times over a whole run: the output is absent or complete, never half."""
    src_digest = _digest(setup["src"])
    out = tmp_path / "out"
    argv = ["compress", str(setup["src"]), "-r", str(setup["new"]), "-o", str(out), "--no-progress",
            "--overwrite"]
    start = time.monotonic()
    code, log = driver.run(argv)
    assert code == 0, log[-2000:]
    span = time.monotonic() - start
    rng = random.Random(1234)
    for _ in range(5):
        code, _ = driver.run(argv, kill_after=rng.uniform(0.0, span))
        KILLS["random delays"] += 1
        assert code in (None, 0)
        if out.exists():
            _assert_complete(out, "new")
    code, log = driver.run(argv)
    assert code == 0, log[-2000:]
    _assert_complete(out, "new")
    assert _siblings(out) == []
    assert _digest(setup["src"]) == src_digest
