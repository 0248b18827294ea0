"""Models larger than memory: weights offloaded by accelerate, brought in one block at a time.

``load(..., max_memory={"cpu": "300MB"}, offload_folder=DIR)`` loads with transformers'
``device_map="auto"``: the modules that fit in ``max_memory`` are loaded, the others stay on the
``meta`` device with accelerate's :class:`~accelerate.hooks.AlignDevicesHook` reading their
weights on demand (from the source ``*.safetensors`` themselves — transformers indexes them in
place — or from ``offload_folder`` when a weight had to be converted). Then:

* :func:`onloaded` brings a module (a block) onto its compute device for the time of a
  ``with`` and, on leaving, writes the tensors changed inside it (pruned weights) into this
  model's own offload store (``safetensors`` files in a private folder inside the offload folder)
  and points accelerate's weights map at them, so the discarded offload copy is never the one
  that is saved; the source folder is only read.
* :func:`iter_onloaded` walks named targets, one owning module in memory at a time (data-free
  methods: magnitude, threshold).
* :func:`named_tensors` yields every parameter materialized one at a time (sizes, sparsity).
* :func:`embeddings_from_disk` lets an offloaded embedding read only the rows a forward uses.
* :func:`save_offloaded` writes the weights shard by shard (safetensors + index), one tensor in
  memory at a time, stored tensors copied from their file in chunks.

Every function is a no-op pass-through for a model that is not offloaded, on any device.
"""

from __future__ import annotations

import itertools
import os
import shutil
import tempfile
import weakref
from collections.abc import Iterable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import UnsupportedError, UsageError

#: attribute of a loaded model holding its :class:`OffloadStore`
STORE_ATTR = "_hfcompress_offload"
#: smallest / default shard written by :func:`save_offloaded` (bytes)
MIN_SHARD_BYTES = 32 << 20
DEFAULT_SHARD_BYTES = 1 << 30
_UNITS = {"": 1, "B": 1, "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
          "KIB": 1 << 10, "MIB": 1 << 20, "GIB": 1 << 30, "TIB": 1 << 40}


def _size(text: str, flag: str) -> int:
    raw = text.strip().upper().replace(" ", "")
    num = raw.rstrip("KMGTIB")
    unit = raw[len(num):]
    try:
        value = float(num)
    except ValueError:
        value = -1.0
    if unit not in _UNITS or value <= 0:
        raise UsageError(f"{flag}: {text!r} is not a size: write it like 300MB, 2GiB or 1500000000")
    return int(value * _UNITS[unit])


def parse_max_memory(spec: str | Iterable[str] | dict[Any, Any] | None, flag: str = "--max-memory"
                     ) -> dict[int | str, int] | None:
    """``"cpu=300MB,0=10GiB"`` (or a list of ``DEVICE=SIZE``, or a dict) -> accelerate's ``max_memory``.

    Devices: ``cpu``, ``mps``, a GPU index (``0``) or ``cuda:N``; sizes in B / KB / MB / GB / KiB / MiB /
    GiB or bytes. Any other value is a one-line :class:`UsageError`.
    """
    if spec is None:
        return None
    if isinstance(spec, dict):
        items = [(str(k), str(v)) for k, v in spec.items()]
    else:
        parts = [spec] if isinstance(spec, str) else list(spec)
        items = []
        for part in parts:
            for entry in str(part).split(","):
                if not entry.strip():
                    continue
                device, sep, size = entry.partition("=")
                if not sep or not size.strip():
                    raise UsageError(f"{flag}: {entry.strip()!r} is not DEVICE=SIZE: write it like cpu=300MB "
                                     "(or 0=10GiB for GPU 0)")
                items.append((device, size))
    if not items:
        raise UsageError(f"{flag} is empty: give DEVICE=SIZE, e.g. cpu=300MB")
    out: dict[int | str, int] = {}
    for device, size in items:
        d = device.strip().lower()
        if d.startswith("cuda:"):
            d = d[5:]
        key: int | str
        if d.isdigit():
            key = int(d)
            if not torch.cuda.is_available() or key >= torch.cuda.device_count():
                raise UsageError(f"{flag}: GPU {key} is not available here: use cpu=SIZE (and --offload-folder)")
        elif d in ("cpu", "mps"):
            key = d
        else:
            raise UsageError(f"{flag}: unknown device {device.strip()!r}: use cpu, a GPU index (0) or cuda:N")
        if key in out:
            raise UsageError(f"{flag}: device {device.strip()} is given twice: give each device once")
        out[key] = _size(size, flag)
    return out


# -- what is offloaded ------------------------------------------------------------------------------

def _hooks(module: nn.Module) -> list[Any]:
    hook = getattr(module, "_hf_hook", None)
    if hook is None:
        return []
    return list(getattr(hook, "hooks", None) or [hook])  # a SequentialHook holds several


def _offload_hook(module: nn.Module) -> Any | None:
    """The accelerate hook that offloads ``module``'s own tensors, if any."""
    return next((h for h in _hooks(module) if getattr(h, "offload", False) and getattr(h, "weights_map", None)
                 is not None), None)


def is_offloaded(model: nn.Module) -> bool:
    """Whether some of ``model``'s weights live outside memory (accelerate's offload hooks)."""
    return any(_offload_hook(m) is not None for m in model.modules())


def execution_device(model: nn.Module) -> torch.device:
    """Where the model computes: the first non-meta parameter's device, else the hooks' device."""
    for p in model.parameters():
        if p.device.type != "meta":
            return p.device
    for m in model.modules():
        for h in _hooks(m):
            dev = getattr(h, "execution_device", None)
            if dev is not None:
                return torch.device(dev) if not isinstance(dev, int) else torch.device("cuda", dev)
    return torch.device("cpu")


# -- the offload store: where changed tensors of offloaded modules go ---------------------------------

@dataclass
class OffloadStore:
    """A private folder of ``safetensors`` files holding the tensors changed in offloaded modules.

    Removed with the model (or at exit); ``owned``: the whole offload folder was created by us.
    """

    folder: Path
    offload_folder: Path
    owned: bool
    #: the ``max_memory`` the model was loaded with (sizes the shards of :func:`save_offloaded`)
    max_memory: dict[int | str, int] = field(default_factory=dict)
    counter: Iterator[int] = field(default_factory=itertools.count)
    #: tensors written, by name: ``(file, key)``
    written: dict[str, tuple[str, str]] = field(default_factory=dict)

    def write(self, tensors: dict[str, torch.Tensor]) -> str:
        path = self.folder / f"changed-{next(self.counter):05d}.safetensors"
        _write_shard(path, nn.Module(), [(k, v.detach().to("cpu").contiguous()) for k, v in tensors.items()])
        for k in tensors:
            self.written[k] = (str(path), k)
        return str(path)


def _cleanup(folder: str, offload_folder: str, owned: bool) -> None:
    shutil.rmtree(offload_folder if owned else folder, ignore_errors=True)


def attach_store(model: nn.Module, offload_folder: str | os.PathLike, *, owned: bool,
                 max_memory: dict[int | str, int] | None = None) -> OffloadStore:
    """Give an offloaded model its :class:`OffloadStore`: a private folder inside ``offload_folder``,
    deleted with the model (``owned``: the whole offload folder is ours and goes too)."""
    base = Path(offload_folder)
    folder = Path(tempfile.mkdtemp(prefix=f"hfcompress-changed-{os.getpid()}-", dir=base))
    store = OffloadStore(folder, base, owned, dict(max_memory or {}))
    object.__setattr__(model, STORE_ATTR, store)
    use_read_into(model)
    weakref.finalize(model, _cleanup, str(folder), str(base), owned)
    return store


def offload_folder_for(offload_folder: str | os.PathLike | None) -> str:
    """The folder transformers offloads converted weights to: ``offload_folder``, checked, or a new
    temporary one (one-line :class:`UsageError` for a file or an unwritable path)."""
    if offload_folder is None:
        return tempfile.mkdtemp(prefix="hfcompress-offload-")
    p = Path(offload_folder).expanduser()
    if p.exists() and not p.is_dir():
        raise UsageError(f"--offload-folder {offload_folder} is a file: give a folder (created if missing)")
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"--offload-folder {offload_folder} cannot be created ({exc.strerror}): "
                         "give a writable folder") from None
    if not os.access(p, os.W_OK):
        raise UsageError(f"--offload-folder {offload_folder} is not writable: give a writable folder")
    return str(p.resolve())


def _store(model: nn.Module | None) -> OffloadStore:
    store = getattr(model, STORE_ATTR, None) if model is not None else None
    if store is None:
        raise UnsupportedError("this model was offloaded outside hfcompress.load(): load it with "
                               "hfcompress.load(..., max_memory=...) to change offloaded weights")
    return store


def _put_back(hook: Any, name: str, tensor: torch.Tensor, path: str, key: str) -> None:
    """Point ``hook``'s weights map at the changed tensor (``key`` in ``path``)."""
    from accelerate.utils import OffloadedWeightsLoader, PrefixedDataset

    wm = hook.weights_map
    if isinstance(wm, PrefixedDataset) and isinstance(wm.dataset, OffloadedWeightsLoader):
        loader, full = wm.dataset, wm.prefix + name
        if full in loader.state_dict:  # offloaded to CPU memory (a GPU model): replace in place
            loader.state_dict[full] = tensor.detach().to("cpu")
            return
        loader.index[full] = {"safetensors_file": path, "weight_name": key,
                              "dtype": str(tensor.dtype).removeprefix("torch.")}
        if full not in loader.all_keys:
            loader.all_keys.append(full)
    elif isinstance(wm, dict):
        wm[name] = tensor.detach().to("cpu")
    else:
        raise UnsupportedError(f"cannot write back offloaded weights held in a {type(wm).__name__}: "
                               "load the model with hfcompress.load(..., max_memory=...)")


def _module_tensors(module: nn.Module, hook: Any) -> list[str]:
    from accelerate.utils.modeling import named_module_tensors

    return [n for n, _ in named_module_tensors(module, include_buffers=hook.offload_buffers,
                                               recurse=hook.place_submodules, remove_non_persistent=True)]


@contextmanager
def onloaded(module: nn.Module, *, root: nn.Module | None = None, device: torch.device | str | None = None,
             writeback: bool = True) -> Iterator[nn.Module]:
    """Inside the ``with``, every offloaded tensor of ``module`` (and its submodules) is in memory on
    its compute device (``device`` overrides it) and accelerate's hooks neither reload nor drop it.

    On leaving, tensors changed in place (or replaced) are written to ``root``'s offload store and the
    weights map points at them (``writeback``); then they return to ``meta``. A module with nothing
    offloaded passes through.
    """
    from accelerate.utils import set_module_tensor_to_device

    found = [(m, h) for m in module.modules() if (h := _offload_hook(m)) is not None]
    if not found:
        yield module
        return
    state: list[tuple[nn.Module, Any, Any, list[tuple[str, int, int]]]] = []
    try:
        for m, hook in found:
            target = device if device is not None else hook.execution_device
            seen = []
            for name in _module_tensors(m, hook):
                set_module_tensor_to_device(m, name, target, value=hook.weights_map[name])
                t = _get(m, name)
                seen.append((name, id(t), t._version))
            state.append((m, hook, hook.execution_device, seen))
            hook.offload = False  # pre/post_forward only move inputs now
            hook.execution_device = target
        yield module
        if writeback:
            names = {id(m): n for n, m in root.named_modules()} if root is not None else {}
            changed: dict[str, torch.Tensor] = {}
            where: list[tuple[Any, str, str]] = []
            for m, hook, _, seen in state:
                for name, ident, version in seen:
                    t = _get(m, name)
                    if id(t) != ident or t._version != version:
                        prefix = names.get(id(m), str(id(m)))
                        key = f"{prefix}.{name}" if prefix else name
                        changed[key] = t
                        where.append((hook, name, key))
            if changed:
                path = _store(root).write(changed)
                for hook, name, key in where:
                    _put_back(hook, name, changed[key], path, key)
            del changed
    finally:
        for m, hook, original, seen in state:
            hook.offload = True
            hook.execution_device = original
            for name, _, _ in seen:
                set_module_tensor_to_device(m, name, "meta")


def _get(module: nn.Module, name: str) -> torch.Tensor:
    owner, _, attr = name.rpartition(".")
    return getattr(module.get_submodule(owner) if owner else module, attr)


def _owner(model: nn.Module, name: str) -> nn.Module:
    """The deepest existing submodule whose path prefixes ``name`` (a target's own module)."""
    parts = name.split(".")
    for k in range(len(parts), 0, -1):
        try:
            return model.get_submodule(".".join(parts[:k]))
        except AttributeError:
            continue
    return model


def iter_onloaded(model: nn.Module, items: dict[str, Any], *, writeback: bool = True) -> Iterator[tuple[str, Any]]:
    """``items`` (name -> target) in order, each target's module in memory while it is yielded
    (consecutive targets of one module share one onload). No-op for a model in memory."""
    if not is_offloaded(model):
        yield from items.items()
        return
    with ExitStack() as stack:
        current: nn.Module | None = None
        for name, target in items.items():
            owner = _owner(model, name)
            if owner is not current:
                stack.close()
                stack.enter_context(onloaded(owner, root=model, writeback=writeback))
                current = owner
            yield name, target
        stack.close()


def named_tensors(model: nn.Module) -> Iterator[tuple[str, torch.Tensor]]:
    """Every parameter (tied ones once), an offloaded one read into memory for the time it is yielded."""
    for name, p in model.named_parameters():
        if p.device.type != "meta":
            yield name, p
            continue
        owner_name, _, attr = name.rpartition(".")
        owner = model.get_submodule(owner_name) if owner_name else model
        hook = _offload_hook(owner)
        if hook is None:
            raise UnsupportedError(f"{name} is on the meta device with no offload hook: the model was not "
                                   "loaded completely (reload it)")
        yield name, hook.weights_map[attr]


def shard_bytes(model: nn.Module) -> int:
    """The shard size :func:`save_offloaded` writes: a quarter of the CPU memory the model was
    allowed (``max_memory``), at least :data:`MIN_SHARD_BYTES`."""
    store = getattr(model, STORE_ATTR, None)
    cpu = store.max_memory.get("cpu") if store is not None else None
    return max(MIN_SHARD_BYTES, cpu // 4) if cpu else DEFAULT_SHARD_BYTES


# -- reading and writing offloaded tensors without a second copy ---------------------------------

_HEADERS: dict[str, tuple[int, dict[str, Any]]] = {}


def _header(path: str) -> tuple[int, dict[str, Any]]:
    """(offset of the data, header) of a safetensors file, read once."""
    if path not in _HEADERS:
        import json
        import struct

        with open(path, "rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            _HEADERS[path] = (8 + n, json.loads(f.read(n)))
    return _HEADERS[path]


def _bytes_of(t: torch.Tensor) -> memoryview:
    """The tensor's bytes, no copy (``t`` contiguous, on the CPU)."""
    return memoryview(t.reshape(-1).view(torch.uint8).numpy())


def read_safetensor(path: str, key: str) -> torch.Tensor:
    """One tensor of a safetensors file read with ``readinto`` into a fresh tensor: unlike a memory
    map (safetensors' ``get_tensor``), the file's pages are not added to this process's RSS."""
    base, header = _header(path)
    info = header[key]
    dtype = _ST_DTYPES[info["dtype"]]
    t = torch.empty(info["shape"], dtype=dtype)
    a, b = info["data_offsets"]
    with open(path, "rb", buffering=0) as f:
        f.seek(base + a)
        view, done = _bytes_of(t), 0
        while done < b - a:
            got = f.readinto(view[done:])
            if not got:
                raise UnsupportedError(f"{Path(path).name} ends inside tensor {key}: the file is truncated "
                                       "(re-download the model)")
            done += got
    return t


def _loader_class() -> type:
    from accelerate.utils import OffloadedWeightsLoader

    class ReadIntoWeightsLoader(OffloadedWeightsLoader):
        """accelerate's loader, reading safetensors entries with :func:`read_safetensor`."""

        def __getitem__(self, key: str) -> torch.Tensor:
            info = self.index.get(key) if key not in self.state_dict else None
            if not info or info.get("safetensors_file") is None:
                return super().__getitem__(key)
            t = read_safetensor(info["safetensors_file"], info.get("weight_name", key))
            if "dtype" in info:
                t = t.to(getattr(torch, info["dtype"]))
            device = "cpu" if self.device is None else self.device
            return t if t.device == torch.device(device) else t.to(device)

    return ReadIntoWeightsLoader


def use_read_into(model: nn.Module) -> None:
    """Make the model's accelerate weights loaders read without memory maps (see :func:`read_safetensor`)."""
    from accelerate.utils import OffloadedWeightsLoader, PrefixedDataset

    cls = _loader_class()
    for m in model.modules():
        for h in _hooks(m):
            wm = getattr(h, "weights_map", None)
            if isinstance(wm, PrefixedDataset) and type(wm.dataset) is OffloadedWeightsLoader:
                wm.dataset.__class__ = cls


_ST_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
              "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
              "BOOL": torch.bool, "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2}
_ST_NAMES = {v: k for k, v in _ST_DTYPES.items()}


def _tensor(model: nn.Module, name: str, t: torch.Tensor) -> torch.Tensor:
    """``t`` (a state-dict entry) in memory on the CPU, read back from the offload when it is meta."""
    if t.device.type == "meta":
        owner_name, _, attr = name.rpartition(".")
        hook = _offload_hook(model.get_submodule(owner_name) if owner_name else model)
        if hook is None:
            raise UnsupportedError(f"{name} is on the meta device with no offload hook: reload the model")
        t = hook.weights_map[attr]
    return t.detach().to("cpu").contiguous()


#: bytes copied at a time by :func:`_copy_range`
COPY_CHUNK = 16 << 20


def _file_span(model: nn.Module, name: str, t: torch.Tensor) -> tuple[str, int, int] | None:
    """``(file, start, end)`` of an offloaded tensor stored with the same dtype and shape in a
    safetensors file (the source checkpoint or the store), else None."""
    if t.device.type != "meta":
        return None
    from accelerate.utils import OffloadedWeightsLoader, PrefixedDataset

    owner_name, _, attr = name.rpartition(".")
    hook = _offload_hook(model.get_submodule(owner_name) if owner_name else model)
    wm = getattr(hook, "weights_map", None)
    if not (isinstance(wm, PrefixedDataset) and isinstance(wm.dataset, OffloadedWeightsLoader)):
        return None
    key = wm.prefix + attr
    info = wm.dataset.index.get(key) if key not in wm.dataset.state_dict else None
    if not info or not info.get("safetensors_file"):
        return None
    base, header = _header(info["safetensors_file"])
    entry = header.get(info.get("weight_name", key))
    if entry is None or _ST_DTYPES.get(entry["dtype"]) != t.dtype or list(entry["shape"]) != list(t.shape):
        return None
    a, b = entry["data_offsets"]
    return info["safetensors_file"], base + a, base + b


def _copy_range(out: Any, path: str, start: int, end: int) -> None:
    with open(path, "rb", buffering=0) as f:
        f.seek(start)
        left = end - start
        while left > 0:
            chunk = f.read(min(COPY_CHUNK, left))
            if not chunk:
                raise UnsupportedError(f"{Path(path).name} is truncated: re-download the model")
            out.write(chunk)
            left -= len(chunk)


@contextmanager
def embeddings_from_disk(model: nn.Module) -> Iterator[None]:
    """Inside the ``with``, an offloaded plain ``nn.Embedding`` stored as is in a safetensors file
    looks up only the rows its input asks for (read from the file), instead of reading the whole
    table (for SmolLM2 fp32, 113 MB) into memory for one forward. Same values bit for bit."""
    patched: list[nn.Module] = []
    try:
        for name, m in model.named_modules():
            if type(m) is not nn.Embedding or m.max_norm is not None or m.weight.device.type != "meta":
                continue
            span = _file_span(model, f"{name}.weight" if name else "weight", m.weight)
            hook = _offload_hook(m)
            if span is None or hook is None:
                continue
            m.__dict__["_hfcompress_forward"] = m.__dict__.get("forward")
            m.forward = _row_lookup(m, span, hook.execution_device)
            patched.append(m)
        yield
    finally:
        for m in patched:
            previous = m.__dict__.pop("_hfcompress_forward", None)
            m.__dict__.pop("forward", None)
            if previous is not None:
                m.__dict__["forward"] = previous


def _row_lookup(m: nn.Embedding, span: tuple[str, int, int], device: Any) -> Any:
    path, start, _ = span
    dim, dtype = m.embedding_dim, m.weight.dtype
    row = dim * m.weight.element_size()

    def forward(input: torch.Tensor) -> torch.Tensor:
        ids, inverse = torch.unique(input.reshape(-1).cpu(), return_inverse=True)
        rows = torch.empty((len(ids), dim), dtype=dtype)
        view = rows.view(torch.uint8).numpy()
        with open(path, "rb", buffering=0) as f:
            for k, i in enumerate(ids.tolist()):
                f.seek(start + i * row)
                if f.readinto(memoryview(view[k])) != row:
                    raise UnsupportedError(f"{Path(path).name} is truncated: re-download the model")
        out = rows[inverse].reshape(*input.shape, dim)
        return out.to(device if device is not None else input.device)

    return forward


def _write_shard(path: Path, model: nn.Module, entries: list[tuple[str, torch.Tensor]]) -> None:
    """One safetensors file written tensor by tensor: only one tensor in memory at a time."""
    import json

    header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, t in entries:
        size = t.numel() * t.element_size()
        header[name] = {"dtype": _ST_NAMES[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + size]}
        offset += size
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    with open(path, "wb") as f:
        f.write(len(raw).to_bytes(8, "little"))
        f.write(raw)
        for name, t in entries:
            span = _file_span(model, name, t)
            if span is not None:  # stored as is in a safetensors file: copied in chunks, never all in memory
                _copy_range(f, *span)
                continue
            value = _tensor(model, name, t)
            if value.dtype != t.dtype or tuple(value.shape) != tuple(t.shape):
                raise UnsupportedError(f"offloaded {name} came back as {value.dtype} {tuple(value.shape)}, not "
                                       f"{t.dtype} {tuple(t.shape)}: reload the model")
            f.write(_bytes_of(value))
            del value


def save_offloaded(bundle: Any, folder: Path) -> None:
    """The model's weights written shard by shard (safetensors + index, as ``save_pretrained`` names
    them), each tensor read back from the offload (the changed ones from the store) and written
    before the next is read: one tensor in memory at a time. Config and generation config come
    from ``save_pretrained``. A model whose weights transformers converts at load time (fused
    experts, ...) is saved by ``save_pretrained`` itself, in shards of :func:`shard_bytes`."""
    import json
    import warnings

    from transformers.modeling_utils import remove_tied_weights_from_state_dict

    model, folder = bundle.model, Path(folder)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Attempting to save a model with offloaded modules")
        if getattr(model, "_weight_conversions", None):
            model.save_pretrained(folder, max_shard_size=shard_bytes(model))
            return
        model.save_pretrained(folder, state_dict={})  # config.json, generation_config.json, no weights
    state = model.state_dict()
    for key in getattr(model, "_keys_to_ignore_on_save", None) or ():
        state.pop(key, None)
    state = remove_tied_weights_from_state_dict(state, model)
    limit = shard_bytes(model)
    shards: list[list[tuple[str, torch.Tensor]]] = [[]]
    size = 0
    for name, t in state.items():
        n = t.numel() * t.element_size()
        if shards[-1] and size + n > limit:
            shards.append([])
            size = 0
        shards[-1].append((name, t))
        size += n
    total = len(shards)
    names = ["model.safetensors"] if total == 1 else \
        [f"model-{i + 1:05d}-of-{total:05d}.safetensors" for i in range(total)]
    weight_map: dict[str, str] = {}
    for fname, entries in zip(names, shards, strict=True):
        _write_shard(folder / fname, model, entries)
        weight_map.update({name: fname for name, _ in entries})
    if total > 1:
        index = {"metadata": {"total_size": sum(t.numel() * t.element_size() for t in state.values())},
                 "weight_map": weight_map}
        (folder / "model.safetensors.index.json").write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")


def check_runs_offloaded(model: nn.Module, family: str, method: str, ok: bool) -> None:
    """One-line refusal of a stage that cannot run on an offloaded model (before any work)."""
    if ok or not is_offloaded(model):
        return
    raise UnsupportedError(f"{family} {method} cannot run on a model offloaded by --max-memory / --offload-folder: "
                           "load it in memory (drop those flags), or prune it offloaded (magnitude, threshold, "
                           "wanda, sparsegpt) and run this step on the output")
