"""The stage contract every method family builds on: what a stage sees and how a bundle is saved.

This module sits below the families (``prune``, ``quantize``, ``distill``, ``evaluate``) so
each method can type its ``apply(bundle, config, ctx: StageContext)``::

    from hfcompress.stage import StageContext, as_bundle, save_bundle

    bundle = as_bundle("HuggingFaceTB/SmolLM2-135M-Instruct")
    ctx = StageContext(progress=False)
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config import StageConfig
from .errors import HFCompressError
from .loading import ModelBundle, detect_task, load
from .registry import Method, get_method

#: Families whose stages only read the model (a save made before them stays valid).
READ_ONLY_FAMILIES = ("evaluate",)


@dataclass
class StageContext:
    """What a stage can see besides the model: where to put scratch files, extra
    output files (``files``: name -> bytes, written next to the model), earlier
    stage records and evaluation results, and whether to show progress bars."""

    work_dir: Path | None = None
    files: dict[str, bytes] = field(default_factory=dict)
    records: list[dict[str, Any]] = field(default_factory=list)
    evaluations: list[dict[str, Any]] = field(default_factory=list)
    progress: bool = True
    source_bundle: ModelBundle | None = None
    #: The save of the current model made by :meth:`saved_copy` (dropped when a stage may change it).
    saved: Path | None = None
    #: How many stages the run has (shown as ``[stage i/n]``); None when unknown.
    stage_total: int | None = None

    def saved_copy(self, bundle: ModelBundle) -> Path:
        """A folder holding ``bundle`` as :func:`save_bundle` writes it, saved once per model state.

        Measurements that need a file (bytes on disk, a fresh-process memory probe) share it,
        and the pipeline links its files into the output instead of saving the model again.
        """
        if self.saved is None or not self.saved.is_dir():
            folder = Path(tempfile.mkdtemp(prefix="saved-", dir=self.work_dir))
            save_bundle(bundle, folder)
            self.saved = folder
        return self.saved

    def model_changing(self) -> None:
        """Forget the saved copy: the next stage may change the model."""
        if self.saved is not None:
            shutil.rmtree(self.saved, ignore_errors=True)
            self.saved = None


def as_bundle(model: Any, tokenizer: Any = None, task: str | None = None) -> ModelBundle:
    """Wrap a bare ``PreTrainedModel`` (or pass a bundle through) for the verbs."""
    if isinstance(model, ModelBundle):
        return model
    if isinstance(model, (str, os.PathLike)):
        return load(model, task=task)
    return ModelBundle(model=model, tokenizer=tokenizer, task=task or detect_task(model.config))


def save_bundle(bundle: ModelBundle, folder: Path) -> None:
    """Write the model (safetensors only) and its tokenizer / processor into ``folder``."""
    if bundle.saver is not None:
        bundle.saver(bundle, folder)
    else:
        bundle.model.save_pretrained(folder)
    if bundle.tokenizer is not None:
        bundle.tokenizer.save_pretrained(folder)
    _scrub_config_names(folder)
    refuse_pickles(folder)


#: config.json keys naming where a model was loaded or converted from (a local path, or a GGUF
#: file's ``general.name``): not true of the output, so not written.
CONFIG_ORIGIN_KEYS = ("_name_or_path", "_model_name_or_path")


def _scrub_config_names(folder: Path) -> None:
    path = Path(folder) / "config.json"
    if not path.is_file():
        return
    config = json.loads(path.read_text())
    if not any(k in config for k in CONFIG_ORIGIN_KEYS):
        return
    for key in CONFIG_ORIGIN_KEYS:
        config.pop(key, None)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


#: Suffixes of pickle-based files, never written into an output folder.
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")


def refuse_pickles(folder: Path) -> None:
    """Raise if any pickle-based file (``*.bin``, ``*.pt``, ...) is in ``folder`` (recursively)."""
    for p in sorted(folder.rglob("*")):
        if p.is_file() and p.suffix.lower() in PICKLE_SUFFIXES:
            raise HFCompressError(f"refusing to write pickle file {p.relative_to(folder)}: "
                                  "only safetensors are written")


_NOTE: ContextVar[Callable[[str], None] | None] = ContextVar("hfcompress_stage_note", default=None)


def note(message: str) -> None:
    """A progress line from inside the running stage, printed at once (stderr) when the run shows progress.

    Long measurements call it between steps (``note("latency: 20 runs")``) so a user sees that
    the stage is alive; outside a stage, or with progress off, it does nothing.
    """
    emit = _NOTE.get()
    if emit is not None:
        emit(message)


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


@contextmanager
def _announced(ctx: StageContext, config: StageConfig) -> Iterator[None]:
    """``[stage i/n] family method: started`` / notes / ``done in Xs`` lines, as they happen."""
    if not ctx.progress:
        yield
        return
    index = len(ctx.records) + 1
    tag = f"[stage {index}/{ctx.stage_total}]" if ctx.stage_total else f"[stage {index}]"
    name = f"{config.family} {config.method}"
    start = time.perf_counter()
    _say(f"{tag} {name}: started")
    token = _NOTE.set(lambda message: _say(f"{tag} {name}: {message} ({time.perf_counter() - start:.0f}s)"))
    try:
        yield
    except BaseException:
        _say(f"{tag} {name}: failed after {time.perf_counter() - start:.1f}s")
        raise
    finally:
        _NOTE.reset(token)
    summary = json.dumps(ctx.records[-1]["summary"], default=str) if ctx.records else ""
    _say(f"{tag} {name}: done in {time.perf_counter() - start:.1f}s"
         + (f" {summary[:200]}{'...' if len(summary) > 200 else ''}" if summary not in ("", "{}") else ""))


def run_stage(bundle: ModelBundle, config: StageConfig, ctx: StageContext | None = None,
              method: Method | None = None) -> dict[str, Any]:
    """Apply one stage config to ``bundle``; returns the record stored in the report.

    ``method``: the registered method when the caller has resolved it already. With
    ``ctx.progress`` the stage's start, notes (:func:`note`) and end are printed to stderr as
    they happen.
    """
    ctx = ctx or StageContext()
    method = method or get_method(config.family, config.method)
    if not isinstance(config, method.config_cls):
        config = method.config_cls.model_validate(config.model_dump())
    check_offload(bundle, config)
    if config.family not in READ_ONLY_FAMILIES:
        ctx.model_changing()
    with _announced(ctx, config):
        return _apply(bundle, config, ctx, method)


def check_offload(bundle: ModelBundle, config: StageConfig) -> None:
    """One-line refusal of a stage that cannot run on a model offloaded by ``max_memory`` (only the
    configs whose ``runs_offloaded()`` says so run block by block on it)."""
    if not getattr(bundle.model, "hf_device_map", None):  # loaded without a device map: nothing offloaded
        return
    from .loading.offload import check_runs_offloaded  # deferred: imports torch / accelerate

    runs = getattr(config, "runs_offloaded", None)
    check_runs_offloaded(bundle.model, config.family, config.method, bool(runs()) if callable(runs) else False)


def _apply(bundle: ModelBundle, config: StageConfig, ctx: StageContext, method: Method) -> dict[str, Any]:
    start = time.perf_counter()
    summary = method.apply(bundle, config, ctx) or {}
    record = {
        "family": config.family,
        "method": config.method,
        "params": config.model_dump(mode="json"),
        "seconds": round(time.perf_counter() - start, 3),
        "summary": summary,
    }
    ctx.records.append(record)
    return record
