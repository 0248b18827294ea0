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

from .errors import HFCompressError, OutputError, UsageError

REPORT_NAME = "hfcompress.json"
RECIPE_NAME = "recipe.yaml"
REPORT_SCHEMA_VERSION = 1
#: Limits for JSON files read from user folders (config.json, hfcompress.json, ...).
MAX_JSON_BYTES = 64 << 20
MAX_JSON_DEPTH = 100


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
    while not parent.exists() and not parent.is_symlink():
        parent = parent.parent
    if not parent.is_dir():
        raise OutputError(f"cannot create output folder {output}: {parent} is a file, not a folder: "
                          "choose an --output whose parents are folders")
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


class _DuplicateKey(ValueError):
    pass


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKey(key)
        out[key] = value
    return out


def _depth(value: Any) -> int:
    """Nesting depth of parsed JSON, without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, (dict, list)):
            deepest = max(deepest, level)
            stack.extend((v, level + 1) for v in (item.values() if isinstance(item, dict) else item))
    return deepest


def parse_json_bytes(raw: bytes, *, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """Strict JSON from bytes (UTF-8, no duplicate keys, at most ``max_depth`` levels); raises
    ``ValueError`` whose text is a one-line reason."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset {exc.start})") from None
    try:
        data = json.loads(text.removeprefix("\ufeff"), object_pairs_hook=_no_duplicates)
    except _DuplicateKey as exc:
        raise ValueError(f"duplicate key {exc.args[0]!r}") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"not valid JSON at line {exc.lineno} column {exc.colno} ({exc.msg})") from None
    except RecursionError:
        raise ValueError(f"nested more than {max_depth} levels deep") from None
    if _depth(data) > max_depth:
        raise ValueError(f"nested more than {max_depth} levels deep")
    return data


def read_json_file(path: str | os.PathLike, *, error: type[HFCompressError] = UsageError, fix: str,
                   max_bytes: int = MAX_JSON_BYTES, max_depth: int = MAX_JSON_DEPTH, label: str | None = None) -> Any:
    """Parse a JSON file a user gave us, with limits (size, depth, UTF-8, no duplicate keys).

    Any problem is raised as ``error("<label>: <problem>: <fix>")`` (one line)::

        cfg = read_json_file(folder / "config.json", error=ModelLoadError, fix="re-download the model")
    """
    p = Path(path)
    label = label or p.name
    try:
        with open(p, "rb") as f:
            raw = f.read(max_bytes + 1)
    except OSError as exc:
        raise error(f"{label}: cannot be read ({exc.strerror or type(exc).__name__}): {fix}") from None
    if len(raw) > max_bytes:
        raise error(f"{label}: larger than {max_bytes} bytes, the limit for this file: {fix}")
    try:
        return parse_json_bytes(raw, max_depth=max_depth)
    except ValueError as exc:
        raise error(f"{label}: {exc}: {fix}") from None


def read_report(folder: str | os.PathLike) -> dict[str, Any] | None:
    """The ``hfcompress.json`` of ``folder`` (None if it has none); a damaged one is a one-line
    :class:`UsageError`."""
    p = Path(folder) / REPORT_NAME
    if not p.is_file():
        return None
    fix = "it is damaged or was not written by hfcompress; re-run the command that wrote this folder"
    data = read_json_file(p, fix=fix, max_bytes=16 << 20, label=str(p))
    if not isinstance(data, dict):
        raise UsageError(f"{p}: not a JSON object: {fix}")
    return data


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
