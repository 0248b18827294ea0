"""``load()``: a model plus its tokenizer / processor, by Hub repo id or local folder.

The task (and so the ``AutoModelFor...`` class) is detected from ``config.json``
(``architectures`` first, then ``model_type``) or given explicitly::

    import hfcompress
    bundle = hfcompress.load("HuggingFaceTB/SmolLM2-135M-Instruct", dtype="float32")
    bundle.model, bundle.tokenizer, bundle.task   # LlamaForCausalLM, tokenizer, "causal-lm"

``trust_remote_code`` is off unless asked. Every failure is a one-line
:class:`~hfcompress.errors.ModelLoadError` / :class:`~hfcompress.errors.UnsupportedError`
naming the file: ``config.json`` is read with limits before transformers sees it, every
``*.safetensors`` header is checked (bounded) before the weights are loaded, a config whose
shapes do not match the weights is one line (not transformers' load-report table), and a
tokenizer / processor whose files are present but broken is an error, never silently dropped.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ModelLoadError, UnsupportedError, UsageError
from ..io import parse_json_bytes, read_json_file

#: task name -> (transformers Auto class name, Hub pipeline tag, mapping in modeling_auto)
TASKS: dict[str, tuple[str, str, str]] = {
    "causal-lm": ("AutoModelForCausalLM", "text-generation", "MODEL_FOR_CAUSAL_LM_MAPPING_NAMES"),
    "seq2seq-lm": ("AutoModelForSeq2SeqLM", "text2text-generation", "MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES"),
    "sequence-classification": ("AutoModelForSequenceClassification", "text-classification",
                                "MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES"),
    "token-classification": ("AutoModelForTokenClassification", "token-classification",
                             "MODEL_FOR_TOKEN_CLASSIFICATION_MAPPING_NAMES"),
    "masked-lm": ("AutoModelForMaskedLM", "fill-mask", "MODEL_FOR_MASKED_LM_MAPPING_NAMES"),
    "feature-extraction": ("AutoModel", "feature-extraction", "MODEL_MAPPING_NAMES"),
    "image-classification": ("AutoModelForImageClassification", "image-classification",
                             "MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES"),
    "speech-seq2seq": ("AutoModelForSpeechSeq2Seq", "automatic-speech-recognition",
                       "MODEL_FOR_SPEECH_SEQ_2_SEQ_MAPPING_NAMES"),
    "ctc": ("AutoModelForCTC", "automatic-speech-recognition", "MODEL_FOR_CTC_MAPPING_NAMES"),
    "audio-classification": ("AutoModelForAudioClassification", "audio-classification",
                             "MODEL_FOR_AUDIO_CLASSIFICATION_MAPPING_NAMES"),
}

# Architecture-name suffix -> task, checked in order (first match wins).
_SUFFIXES = [
    ("ForCausalLM", "causal-lm"),
    ("LMHeadModel", "causal-lm"),
    ("ForSequenceClassification", "sequence-classification"),
    ("ForTokenClassification", "token-classification"),
    ("ForMaskedLM", "masked-lm"),
    ("ForImageClassification", "image-classification"),
    ("ForSpeechSeq2Seq", "speech-seq2seq"),
    ("ForCTC", "ctc"),
    ("ForAudioClassification", "audio-classification"),
]
_DTYPES = {"auto", "float32", "float16", "bfloat16"}
#: A safetensors header larger than this is refused (real ones are well under 10 MB).
MAX_SAFETENSORS_HEADER = 100_000_000
MAX_CONFIG_BYTES = 16 << 20
_ST_ITEMSIZE = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "F8_E8M0": 1, "I16": 2, "U16": 2,
                "F16": 2, "BF16": 2, "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8, "C64": 8}
#: Files whose presence means the model ships a tokenizer / processor (a broken one is an error).
PROCESSOR_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json", "vocab.txt",
                   "merges.txt", "spiece.model", "sentencepiece.bpe.model", "special_tokens_map.json",
                   "added_tokens.json", "preprocessor_config.json", "processor_config.json")
_WEIGHTS_FIX = "re-download the model or re-save it with save_pretrained"


@dataclass
class ModelSource:
    """Where a model came from. ``repo_id`` is None for a local folder (never a path)."""

    repo_id: str | None = None
    revision: str | None = None
    commit: str | None = None
    local_name: str | None = None
    license: str | None = None

    @property
    def is_hub(self) -> bool:
        return self.repo_id is not None

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v is not None}


@dataclass
class ModelBundle:
    """A model with what travels with it through the pipeline.

    ``saver`` (optional) writes the model in a non-default format (sparse, quanto, ...);
    it is called as ``saver(bundle, folder)`` instead of ``model.save_pretrained``.
    ``path`` is the local folder the weights were read from (never written to).
    """

    model: Any
    tokenizer: Any | None
    task: str
    source: ModelSource = field(default_factory=ModelSource)
    path: Path | None = None
    saver: Callable[[ModelBundle, Path], None] | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def pipeline_tag(self) -> str:
        return TASKS[self.task][1]


_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


def _looks_like_path(name: str) -> bool:
    """A local path unless it is shaped like a repo id (``org/name``) and no such path exists."""
    return os.path.exists(name) or not _REPO_ID.match(name) or ".." in name


def detect_task(config: Any) -> str:
    """The task name for a ``PretrainedConfig`` (architectures first, then model_type)."""
    from transformers.models.auto import modeling_auto

    archs = list(getattr(config, "architectures", None) or [])
    is_encoder_decoder = bool(getattr(config, "is_encoder_decoder", False))
    for arch in archs:
        if arch.endswith("ForConditionalGeneration") and is_encoder_decoder:
            model_type = getattr(config, "model_type", "")
            if model_type in modeling_auto.MODEL_FOR_SPEECH_SEQ_2_SEQ_MAPPING_NAMES:
                return "speech-seq2seq"
            return "seq2seq-lm"
        for suffix, task in _SUFFIXES:
            if arch.endswith(suffix):
                return task
        if arch.endswith("Model"):
            return "feature-extraction"
    model_type = getattr(config, "model_type", None)
    for task in ("causal-lm", "seq2seq-lm", "speech-seq2seq", "image-classification", "masked-lm",
                 "feature-extraction"):
        if model_type in getattr(modeling_auto, TASKS[task][2]):
            return task
    raise UnsupportedError(
        f"cannot tell the task of model type {model_type!r}: pass task=... (one of {', '.join(TASKS)})"
    )


def _resolve(name: str, revision: str | None, token: str | None) -> tuple[Path, ModelSource]:
    """Local folder of the model's config, and where it came from. One-line errors."""
    if _looks_like_path(name):
        folder = Path(name).expanduser()
        if not folder.exists():
            raise ModelLoadError(f"model folder {name} does not exist: check the path or give a Hub repo id")
        if not folder.is_dir():
            raise ModelLoadError(f"{name} is a file, not a model folder: give the folder that holds config.json")
        if not (folder / "config.json").is_file():
            raise ModelLoadError(f"{name} is not a model folder (no config.json): give a folder written by "
                                 "save_pretrained or a Hub repo id")
        if revision:
            raise UsageError(f"--revision {revision} applies to Hub repo ids, not to the local folder {name}")
        return folder.resolve(), ModelSource(local_name=folder.resolve().name)

    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import (
        EntryNotFoundError,
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    from ..reachability import hub_or_offline, unreachable_hint

    online = hub_or_offline()  # one short probe: an unreachable Hub means the cache, at once
    try:
        config_file = Path(hf_hub_download(name, "config.json", revision=revision, token=token))
    except GatedRepoError:
        raise ModelLoadError(f"{name} is gated: accept its terms on the Hub and pass a token") from None
    except RepositoryNotFoundError:
        raise ModelLoadError(
            f"model {name} not found on the Hub (or it is private): check the id, or set HF_TOKEN / pass --token"
        ) from None
    except RevisionNotFoundError:
        raise ModelLoadError(f"revision {revision!r} of {name} does not exist: check the branch, tag or commit") from None
    except LocalEntryNotFoundError:  # a subclass of EntryNotFoundError: must come first
        raise ModelLoadError(unreachable_hint(name) if not online else
                             f"cannot reach the Hub to download {name} and it is not cached: "
                             "check HF_ENDPOINT / the network, or give a local folder") from None
    except EntryNotFoundError:
        raise ModelLoadError(f"{name} has no config.json: it is not a transformers model repo") from None
    except HfHubHTTPError as exc:
        raise ModelLoadError(f"Hub error while fetching {name}: {str(exc).splitlines()[0]}") from None
    except ValueError as exc:  # malformed repo id
        raise ModelLoadError(f"{name!r} is neither an existing folder nor a valid Hub repo id ({exc})") from None
    # .../snapshots/<commit>/config.json: the resolved commit of this revision.
    commit = config_file.parent.name if config_file.parent.parent.name == "snapshots" else None
    return config_file.parent, ModelSource(repo_id=name, revision=revision, commit=commit,
                                           license=_hub_license(name, commit or revision, token))


def _hub_license(repo_id: str, revision: str | None, token: str | None) -> str | None:
    """The ``license`` of the repo's model card, if it has one (inherited by our cards)."""
    from huggingface_hub import ModelCard, hf_hub_download

    try:
        card = hf_hub_download(repo_id, "README.md", revision=revision, token=token)
        return ModelCard.load(card, ignore_metadata_errors=True).data.license
    except Exception:  # noqa: BLE001 - a missing / unreadable card only means "license unknown"
        return None


def _shown(path: Path) -> str:
    """The file's name, and where it points if it is a link that is not into a Hub cache."""
    if path.is_symlink():
        target = os.readlink(path)
        if "blobs" not in Path(target).parts:
            return f"{path.name} (a link to {target})"
    return path.name


def check_safetensors(path: str | os.PathLike) -> None:
    """Validate a safetensors file's header, bounded, without loading any tensor.

    Reads the 8-byte header length (refused over :data:`MAX_SAFETENSORS_HEADER` or beyond the file
    size), parses the header as strict JSON and checks every tensor's offsets lie inside the file
    and match its shape and dtype. Raises a one-line :class:`ModelLoadError` naming the file.
    """
    p = Path(path)

    def bad(reason: str) -> ModelLoadError:
        return ModelLoadError(f"{_shown(p)} is not a valid safetensors file ({reason}): {_WEIGHTS_FIX}")

    try:
        with open(p, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            head = f.read(8)
            if len(head) < 8:
                raise bad("empty file" if not head else f"{size} bytes: truncated before the header")
            (n,) = struct.unpack("<Q", head)
            if n > MAX_SAFETENSORS_HEADER:
                raise bad(f"header length {n} bytes is over the {MAX_SAFETENSORS_HEADER // 1_000_000} MB limit")
            if 8 + n > size:
                raise bad(f"header length {n} bytes is beyond the file size {size}: truncated or not safetensors")
            raw = f.read(n)
    except OSError as exc:
        if p.is_symlink() and not p.exists():
            raise ModelLoadError(f"{_shown(p)} is a broken link: {_WEIGHTS_FIX}") from None
        raise ModelLoadError(f"{_shown(p)} cannot be read ({exc.strerror or type(exc).__name__}): "
                             f"{_WEIGHTS_FIX}") from None
    try:
        header = parse_json_bytes(raw, max_depth=4)
    except ValueError as exc:
        raise bad(f"header is {exc}") from None
    if not isinstance(header, dict):
        raise bad("header is not a JSON object")
    data_size = size - 8 - n
    for name, info in header.items():
        if name == "__metadata__":
            if not isinstance(info, dict):
                raise bad("__metadata__ is not a JSON object")
            continue
        try:
            dtype, shape, (a, b) = info["dtype"], info["shape"], info["data_offsets"]
            ok = (isinstance(dtype, str) and isinstance(shape, list)
                  and all(isinstance(d, int) and d >= 0 for d in shape) and isinstance(a, int) and isinstance(b, int))
        except (TypeError, KeyError, ValueError):
            ok = False
        if not ok:
            raise bad(f"tensor {name!r} has no valid dtype / shape / data_offsets")
        if not 0 <= a <= b <= data_size:
            raise bad(f"tensor {name!r} lies outside the file (bytes {a}..{b} of {data_size}): the file is truncated")
        numel = 1
        for d in shape:
            numel *= d
        if dtype in _ST_ITEMSIZE and numel * _ST_ITEMSIZE[dtype] != b - a:
            raise bad(f"tensor {name!r} holds {b - a} bytes, not the {numel * _ST_ITEMSIZE[dtype]} its shape "
                      f"{shape} and dtype {dtype} need")


def check_weight_files(folder: str | os.PathLike, *, local: bool = True) -> None:
    """Validate every top-level ``*.safetensors`` of a model folder and its shard index, if any
    (``local=False``: a Hub snapshot, which holds only the shards downloaded so far)."""
    folder = Path(folder)
    for index in sorted(folder.glob("*.safetensors.index.json")):
        data = read_json_file(index, error=ModelLoadError, fix=_WEIGHTS_FIX, label=_shown(index))
        weight_map = data.get("weight_map") if isinstance(data, dict) else None
        if not isinstance(weight_map, dict):
            raise ModelLoadError(f"{index.name} has no weight_map: {_WEIGHTS_FIX}")
        for shard in sorted({str(v) for v in weight_map.values()}):
            if local and not (folder / shard).is_file():
                raise ModelLoadError(f"{index.name} names {shard}, which is missing: {_WEIGHTS_FIX}")
    for weights in sorted(folder.glob("*.safetensors")):
        check_safetensors(weights)


def _read_config(folder: Path) -> dict[str, Any]:
    """config.json read with limits; one line naming the problem."""
    data = read_json_file(folder / "config.json", error=ModelLoadError, max_bytes=MAX_CONFIG_BYTES,
                          fix="repair config.json or re-download the model", label=_shown(folder / "config.json"))
    if not isinstance(data, dict):
        raise ModelLoadError("config.json is not a JSON object: repair it or re-download the model")
    return data


class _HoldLoadReport(logging.Filter):
    """Holds back transformers' multi-line load-report table (re-emitted only if loading succeeds)."""

    def __init__(self) -> None:
        super().__init__()
        self.held: list[logging.LogRecord] = []

    def filter(self, record: logging.LogRecord) -> bool:
        if "LOAD REPORT" in str(record.msg):
            self.held.append(record)
            return False
        return True


class _Quiet(logging.Filter):
    """Drops log records containing ``text``."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text

    def filter(self, record: logging.LogRecord) -> bool:
        return self.text not in str(record.msg)


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _mismatch_line(held: list[logging.LogRecord]) -> str:
    """``N weight(s) differ, e.g. KEY: weights [..], config [..]`` from a held load report."""
    text = _ANSI.sub("", "\n".join(str(r.msg) for r in held))
    rows = [ln for ln in text.splitlines() if "size mismatch" in ln]
    if not rows:
        return "tensor shapes differ"
    key = rows[0].split("|")[0].strip()
    m = re.search(r"ckpt:\s*(?:torch\.Size\()?(\[[^\]]*\])\)?\s*vs model:\s*(?:torch\.Size\()?(\[[^\]]*\])", rows[0])
    shapes = f": weights {m.group(1)}, config {m.group(2)}" if m else ""
    return f"{len(rows)} weight(s) differ, e.g. {key}{shapes}"


def load(
    name_or_path: str | os.PathLike,
    *,
    task: str | None = None,
    revision: str | None = None,
    dtype: str = "auto",
    device_map: str | dict | None = None,
    trust_remote_code: bool = False,
    token: str | None = None,
    with_tokenizer: bool = True,
    allow_pickle: bool = False,
    max_memory: str | dict | None = None,
    offload_folder: str | os.PathLike | None = None,
    **model_kwargs: Any,
) -> ModelBundle:
    """Load a model and its tokenizer / processor from a Hub repo id or a local folder.

    Args:
        name_or_path: Hub repo id (``org/name``) or local folder written by ``save_pretrained``.
        task: one of :data:`TASKS`; detected from the config when omitted.
        revision: branch, tag or commit (Hub only).
        dtype: ``"auto"`` (as saved), ``"float32"``, ``"float16"`` or ``"bfloat16"``.
        device_map: passed to ``from_pretrained`` (``"cpu"``, ``"auto"``, a dict, ...).
        trust_remote_code: run code from the repo; off unless asked.
        allow_pickle: also accept ``pytorch_model.bin`` checkpoints (off: safetensors only).
        max_memory: memory allowed for the weights per device (``{"cpu": "300MB"}`` or
            ``"cpu=300MB,0=10GiB"``); implies ``device_map="auto"``: what does not fit is offloaded to
            disk and read back block by block (see :mod:`hfcompress.loading.offload`, docs/OFFLOAD.md).
        offload_folder: where weights offloaded to disk go (default: a temporary folder); the source
            folder is only read.
        model_kwargs: extra ``from_pretrained`` keyword arguments (e.g. ``quantization_config``).
    """
    import transformers
    from transformers import AutoConfig

    name = os.fspath(name_or_path)
    if not name:
        raise UsageError("no model given: pass a Hub repo id or a local folder")
    if dtype not in _DTYPES:
        raise UsageError(f"dtype {dtype!r} is not supported: use one of {', '.join(sorted(_DTYPES))}")
    if task is not None and task not in TASKS:
        raise UsageError(f"unknown task {task!r}: use one of {', '.join(TASKS)}")
    offload: dict[str, Any] | None = None
    if max_memory is not None or offload_folder is not None:
        from .offload import offload_folder_for, parse_max_memory  # deferred: imports torch / accelerate

        offload = {"max_memory": parse_max_memory(max_memory, "max_memory")}
        if device_map is None:
            device_map = "auto"
        elif device_map in ("cpu", "cuda") or (isinstance(device_map, str) and device_map.startswith("cuda:")):
            raise UsageError(f"device_map {device_map!r} puts the whole model on one device: max_memory / "
                             "offload_folder need device_map 'auto' (the default with them)")

    folder, source = _resolve(name, revision, token)
    _read_config(folder)
    local = source.repo_id is None
    if local:
        check_weight_files(folder, local=local)
    try:
        config = AutoConfig.from_pretrained(folder, trust_remote_code=trust_remote_code)
    except ValueError as exc:
        msg = str(exc).splitlines()[0]
        if "trust_remote_code" in msg:
            raise UnsupportedError(f"{name} needs custom code from its repo: pass --trust-remote-code "
                                   "if you trust it") from None
        raise UnsupportedError(f"{name}: unsupported architecture ({msg[:200]})") from None
    except (KeyError, OSError) as exc:
        raise UnsupportedError(f"{name}: cannot read its config ({str(exc).splitlines()[0][:200]})") from None

    task = task or detect_task(config)
    auto_cls = getattr(transformers, TASKS[task][0])
    kwargs: dict[str, Any] = dict(model_kwargs)
    kwargs["dtype"] = dtype
    if device_map is not None:
        kwargs["device_map"] = device_map
    if offload is not None:
        offload["owned"] = offload_folder is None
        kwargs["offload_folder"] = offload["folder"] = offload_folder_for(offload_folder)
        if offload["max_memory"] is not None:
            kwargs["max_memory"] = offload["max_memory"]
    kwargs["use_safetensors"] = None if allow_pickle else True
    target = folder if source.repo_id is None else name
    hub_kwargs = {"revision": revision, "token": token} if source.repo_id else {}
    held = _HoldLoadReport()
    mu_logger = logging.getLogger("transformers.modeling_utils")
    mu_logger.addFilter(held)
    quiet = _Quiet("parameters are on the meta device because they were offloaded")  # asked for: no warning
    logging.getLogger("accelerate.big_modeling").addFilter(quiet)
    model = None
    try:
        model = auto_cls.from_pretrained(target, trust_remote_code=trust_remote_code, **hub_kwargs, **kwargs)
    except ValueError as exc:
        msg = " ".join(str(exc).split())[:300]
        if "Unrecognized configuration class" in msg:
            raise UnsupportedError(f"{config.model_type} has no {TASKS[task][0]} class: pass another task "
                                   f"(detected {task!r})") from None
        check_weight_files(folder, local=local)
        raise ModelLoadError(f"cannot load {name}: {msg}") from None
    except OSError as exc:
        msg = " ".join(str(exc).split())[:300]
        if "safetensors" in msg or "pytorch_model.bin" in msg:
            raise ModelLoadError(f"{name} has no safetensors weights: pickle checkpoints need an explicit "
                                 "opt-in (allow_pickle=True / --allow-pickle)") from None
        check_weight_files(folder, local=local)
        raise ModelLoadError(f"cannot load weights of {name}: {msg}") from None
    except Exception as exc:  # noqa: BLE001 - safetensors / torch errors: named one line, not a traceback
        msg = " ".join(str(exc).split())
        if "size mismatch" in msg or "ignore_mismatched_sizes" in msg:
            raise ModelLoadError(f"config.json of {name} does not match its weights ({_mismatch_line(held.held)}): "
                                 "use the config.json saved with these weights") from None
        check_weight_files(folder, local=local)  # names the broken file (a Hub snapshot is checked once downloaded)
        raise ModelLoadError(f"cannot load weights of {name}: {type(exc).__name__}: {msg[:300]}") from None
    finally:
        mu_logger.removeFilter(held)
        logging.getLogger("accelerate.big_modeling").removeFilter(quiet)
        if offload is not None and offload["owned"] and model is None:
            shutil.rmtree(offload["folder"], ignore_errors=True)
    for record in held.held:  # a load that worked: its report (missing / unexpected keys) is shown
        mu_logger.handle(record)
    model.eval()
    saver = _offloaded(model, offload)
    tokenizer = _load_processor(target, task, trust_remote_code, hub_kwargs, folder) if with_tokenizer else None
    return ModelBundle(model=model, tokenizer=tokenizer, task=task, source=source, path=folder, saver=saver)


def _offloaded(model: Any, offload: dict[str, Any] | None) -> Callable[[ModelBundle, Path], None] | None:
    """For a model loaded with offloaded weights: its offload store and the shard-by-shard saver."""
    if offload is None:
        return None
    from .offload import attach_store, is_offloaded, save_offloaded  # deferred: imports torch / accelerate

    if not is_offloaded(model):  # everything fitted in memory
        if offload["owned"]:
            shutil.rmtree(offload["folder"], ignore_errors=True)
        return None
    attach_store(model, offload["folder"], owned=offload["owned"], max_memory=offload["max_memory"])
    return save_offloaded


def _load_processor(target: Any, task: str, trust_remote_code: bool, hub_kwargs: dict,
                    folder: Path | None = None) -> Any | None:
    """Tokenizer (text), image processor (vision) or processor (speech); None if the model has none.

    Files present but broken (``folder`` holds one of :data:`PROCESSOR_FILES` and loading fails)
    are a :class:`ModelLoadError` naming the file: a model is never used or published without
    the tokenizer its card tells users to load.
    """
    import transformers

    if task == "image-classification":
        order = ["AutoImageProcessor"]
    elif task in ("speech-seq2seq", "ctc", "audio-classification"):
        order = ["AutoProcessor", "AutoFeatureExtractor"]
    else:
        order = ["AutoTokenizer"]
    failure: Exception | None = None
    for cls_name in order:
        try:
            return getattr(transformers, cls_name).from_pretrained(
                target, trust_remote_code=trust_remote_code, **hub_kwargs
            )
        except Exception as exc:  # noqa: BLE001 - judged below: absent is fine, broken is not
            failure = failure or exc
    present = [f for f in PROCESSOR_FILES if folder is not None and (folder / f).is_file()]
    if not present:
        return None
    fix = "restore the tokenizer / processor files from the original model"
    for name in present:
        if name.endswith(".json"):
            data = read_json_file(folder / name, error=ModelLoadError, fix=fix, label=_shown(folder / name))
            if not isinstance(data, dict):
                raise ModelLoadError(f"{name} is not a JSON object: {fix}")
    reason = " ".join(f"{type(failure).__name__}: {failure}".split())[:300]
    raise ModelLoadError(f"cannot load the {order[0].removeprefix('Auto')} from {', '.join(present)} ({reason}): "
                         f"{fix}")


def read_config_json(folder: Path) -> dict[str, Any]:
    """A model folder's config.json, read with limits (one-line :class:`ModelLoadError`)."""
    return _read_config(Path(folder))
