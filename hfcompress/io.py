"""Atomic output folders and the ``hfcompress.json`` report.

Every output is written into a temporary sibling (``.NAME.tmp-XXXX``) and renamed into
place at the end, so a killed run leaves the previous output or none, never a half
folder::

    check_output(out, source=bundle.path, overwrite=False)   # before any work
    with atomic_folder(out, overwrite=False) as tmp:
        save_bundle(bundle, tmp)
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .errors import OutputError

REPORT_NAME = "hfcompress.json"
RECIPE_NAME = "recipe.yaml"
REPORT_SCHEMA_VERSION = 1


def check_output(output: str | os.PathLike, source: Path | None = None, overwrite: bool = False) -> Path:
    """Refuse, before any work starts, an output that would clobber the input or an existing folder."""
    out = Path(output).expanduser().resolve()
    if source is not None:
        src = Path(source).resolve()
        if out == src or src in out.parents:
            raise OutputError(f"output folder {output} is the input model folder or inside it: "
                              "choose a folder outside the source model")
        if out in src.parents:
            raise OutputError(f"output folder {output} contains the input model: choose another folder")
    if out.exists():
        if not out.is_dir():
            raise OutputError(f"output {output} exists and is a file: choose a folder path")
        if any(out.iterdir()) and not overwrite:
            raise OutputError(f"output folder {output} already exists: pass --overwrite to replace it")
    parent = out.parent
    while not parent.exists():
        parent = parent.parent
    if not os.access(parent, os.W_OK):
        raise OutputError(f"cannot write to {parent}: choose a writable --output")
    return out


@contextlib.contextmanager
def atomic_folder(output: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling folder; on success it replaces ``output`` in one rename."""
    out = Path(output).expanduser().resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    os.chmod(tmp, 0o755)
    try:
        yield tmp
        _fsync_tree(tmp)
        if out.exists():
            if any(out.iterdir()) and not overwrite:
                raise OutputError(f"output folder {output} already exists: pass --overwrite to replace it")
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
            os.replace(out, old / "x")
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _fsync_tree(folder: Path) -> None:
    for p in folder.rglob("*"):
        if p.is_file():
            with open(p, "rb") as f:
                os.fsync(f.fileno())


def folder_bytes(folder: str | os.PathLike, pattern: str = "*") -> int:
    return sum(p.stat().st_size for p in Path(folder).rglob(pattern) if p.is_file())


def weight_bytes(folder: str | os.PathLike) -> int:
    """Bytes of the weight files (``*.safetensors``) in a folder."""
    return folder_bytes(folder, "*.safetensors")


def write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")


def read_report(folder: str | os.PathLike) -> dict[str, Any] | None:
    p = Path(folder) / REPORT_NAME
    return json.loads(p.read_text()) if p.is_file() else None


def library_versions() -> dict[str, str]:
    """Versions of the libraries that shape the output (for the report)."""
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("hfcompress", "torch", "transformers", "huggingface_hub", "datasets", "accelerate",
                 "safetensors", "bitsandbytes", "optimum", "optimum-quanto", "peft", "evaluate"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            continue
    return out
