"""Atomic output folders and the ``hfcompress.json`` report.

Every output is written into a temporary sibling (``.NAME.tmp-PID-XXXX``) and renamed into
place at the end, so a killed run leaves the previous output or none, never a half
folder::

    check_output(out, source=bundle.path, overwrite=False)   # before any work
    with atomic_folder(out, overwrite=False) as tmp:
        save_bundle(bundle, tmp)
"""

from __future__ import annotations

import contextlib
import errno
import glob
import json
import os
import shutil
import sys
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


def _is_disk_full(exc: BaseException) -> bool:
    """ENOSPC / EDQUOT however the writer reports it (OSError, or a wrapped error such as
    safetensors' ``IoError(Os { code: 28, kind: StorageFull })``)."""
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, OSError) and cur.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        text = str(cur)
        if "No space left" in text or "StorageFull" in text or "code: 28," in text or "Disk quota" in text:
            return True
        cur = cur.__cause__ or cur.__context__
    return False


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_stale_siblings(output: str | os.PathLike) -> list[Path]:
    """Remove ``.NAME.tmp-PID-*`` / ``.NAME.old-PID-*`` siblings left by runs that were killed
    (their PID is gone); siblings of live runs (and names without a PID) are left alone."""
    out = Path(output).expanduser().resolve()
    removed = []
    if not out.parent.is_dir():
        return removed
    for kind in ("tmp", "old"):
        prefix = f".{out.name}.{kind}-"
        for p in out.parent.glob(f"{glob.escape(prefix)}*"):
            pid, sep, _ = p.name[len(prefix):].partition("-")
            if not sep or not pid.isdigit() or int(pid) == os.getpid() or _pid_alive(int(pid)):
                continue
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p, ignore_errors=True)
            else:
                with contextlib.suppress(OSError):
                    p.unlink()
            removed.append(p)
    return removed


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths (Linux ``renameat2(RENAME_EXCHANGE)``); False if unsupported."""
    if sys.platform != "linux":
        return False
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.EXDEV, errno.EPERM):
        return False
    raise OSError(err, os.strerror(err), str(a))


@contextlib.contextmanager
def atomic_folder(output: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling folder; on success it replaces ``output`` in one rename.

    A run killed at any point leaves the previous ``output`` (or none), never a half folder:
    the temp sibling is ``.NAME.tmp-PID-XXXX`` and the next run removes those of dead PIDs.
    Replacing an existing folder is one atomic exchange where the OS offers it (Linux). A full
    disk is reported as an :class:`OutputError` and leaves nothing behind.
    """
    out = Path(output).expanduser().resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    clean_stale_siblings(out)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-{os.getpid()}-", dir=out.parent))
    os.chmod(tmp, 0o755)
    try:
        yield tmp
        _fsync_tree(tmp)
        if out.exists():
            if any(out.iterdir()) and not overwrite:
                raise OutputError(f"output folder {output} already exists: pass --overwrite to replace it")
            if not _exchange(tmp, out):  # fallback: two renames (a crash in between leaves no output)
                old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-{os.getpid()}-", dir=out.parent))
                os.replace(out, old / "x")
                os.replace(tmp, out)
                shutil.rmtree(old, ignore_errors=True)
            # after an exchange, ``tmp`` holds the previous output: removed below
        else:
            os.replace(tmp, out)
        _fsync_dir(out.parent)
    except BaseException as exc:
        if not isinstance(exc, OutputError) and _is_disk_full(exc):
            raise OutputError(f"no space left on the device while writing {output}: free some space or "
                              "choose another --output (nothing was written)") from exc
        raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _fsync_tree(folder: Path) -> None:
    """fsync every file and folder; files get ordinary permissions (safetensors writes 0600)."""
    umask = os.umask(0)
    os.umask(umask)
    for p in folder.rglob("*"):
        if p.is_file():
            os.chmod(p, 0o666 & ~umask)
            with open(p, "rb") as f:
                os.fsync(f.fileno())
    for d in [folder, *(p for p in folder.rglob("*") if p.is_dir())]:
        _fsync_dir(d)


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


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
