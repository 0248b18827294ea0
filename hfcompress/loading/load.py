"""``load()``: a model plus its tokenizer / processor, by Hub repo id or local folder.

The task (and so the ``AutoModelFor...`` class) is detected from ``config.json``
(``architectures`` first, then ``model_type``) or given explicitly::

    import hfcompress
    bundle = hfcompress.load("HuggingFaceTB/SmolLM2-135M-Instruct", dtype="float32")
    bundle.model, bundle.tokenizer, bundle.task   # LlamaForCausalLM, tokenizer, "causal-lm"

``trust_remote_code`` is off unless asked. Every failure is a one-line
:class:`~hfcompress.errors.ModelLoadError` / :class:`~hfcompress.errors.UnsupportedError`.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ModelLoadError, UnsupportedError, UsageError

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
        raise ModelLoadError(f"cannot reach the Hub to download {name} and it is not cached: "
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

    folder, source = _resolve(name, revision, token)
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
    kwargs["use_safetensors"] = None if allow_pickle else True
    target = folder if source.repo_id is None else name
    hub_kwargs = {"revision": revision, "token": token} if source.repo_id else {}
    try:
        model = auto_cls.from_pretrained(target, trust_remote_code=trust_remote_code, **hub_kwargs, **kwargs)
    except ValueError as exc:
        msg = " ".join(str(exc).split())[:300]
        if "Unrecognized configuration class" in msg:
            raise UnsupportedError(f"{config.model_type} has no {TASKS[task][0]} class: pass another task "
                                   f"(detected {task!r})") from None
        raise ModelLoadError(f"cannot load {name}: {msg}") from None
    except OSError as exc:
        msg = " ".join(str(exc).split())[:300]
        if "safetensors" in msg or "pytorch_model.bin" in msg:
            raise ModelLoadError(f"{name} has no safetensors weights: pickle checkpoints need an explicit "
                                 "opt-in (allow_pickle=True / --allow-pickle)") from None
        raise ModelLoadError(f"cannot load weights of {name}: {msg}") from None
    model.eval()
    tokenizer = _load_processor(target, task, trust_remote_code, hub_kwargs) if with_tokenizer else None
    return ModelBundle(model=model, tokenizer=tokenizer, task=task, source=source, path=folder)


def _load_processor(target: Any, task: str, trust_remote_code: bool, hub_kwargs: dict) -> Any | None:
    """Tokenizer (text), image processor (vision) or processor (speech); None if the repo has none."""
    import transformers

    if task == "image-classification":
        order = ["AutoImageProcessor"]
    elif task in ("speech-seq2seq", "ctc", "audio-classification"):
        order = ["AutoProcessor", "AutoFeatureExtractor"]
    else:
        order = ["AutoTokenizer"]
    for cls_name in order:
        try:
            return getattr(transformers, cls_name).from_pretrained(
                target, trust_remote_code=trust_remote_code, **hub_kwargs
            )
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            continue
    return None


def read_config_json(folder: Path) -> dict[str, Any]:
    return json.loads((Path(folder) / "config.json").read_text())
