"""Base config classes shared by every stage family.

A method's config is a pydantic model: the Python API takes it, a YAML recipe is a
list of them serialised (``{family: {method: ..., field: value}}``). Unknown keys
are errors (``extra="forbid"``)::

    from hfcompress.prune import WandaConfig
    cfg = WandaConfig(sparsity=0.5, calibration=CalibrationConfig(samples=32))
"""

from __future__ import annotations

from typing import Any, ClassVar, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .errors import UsageError


class StrictModel(BaseModel):
    """Pydantic base: unknown keys and wrong types are errors; assignment is validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())


M = TypeVar("M", bound=BaseModel)


class StageConfig(StrictModel):
    """Base of every method config. Subclasses set ``family`` and a ``method`` literal."""

    family: ClassVar[str] = ""
    method: str


#: The default calibration / training text: a small public Hub dataset (10k documents of the Pile,
#: column ``text``, split ``train``; AutoRound's default). ``hfcompress hub seed`` puts an offline
#: stand-in under this id on a local Hub.
DEFAULT_CALIBRATION_DATASET = "NeelNanda/pile-10k"


class CalibrationConfig(StrictModel):
    """Calibration data: a Hub dataset id (or a local dataset folder), in the model's own modality.

    Text models: ``samples`` windows of ``seq_len`` tokens are drawn at seeded random offsets from
    the concatenated, tokenized text (as the GPTQ / Wanda / SparseGPT papers do). Image / speech
    models: ``samples`` rows drawn at seeded random indices, through the model's own processor
    (:mod:`hfcompress.calibration.modality`; ``seq_len`` caps the transcript tokens).
    """

    dataset: str = DEFAULT_CALIBRATION_DATASET
    config: str | None = None
    split: str = "train"
    text_column: str = "text"
    samples: int = Field(32, ge=1, le=100_000)
    seq_len: int = Field(512, ge=8, le=131_072)
    seed: int = 0
    revision: str | None = None
    add_bos: bool | None = Field(None, description="start every window with BOS (default: when the tokenizer "
                                                   "adds BOS itself)")
    image_column: str | None = Field(None, description="image column of the calibration dataset, for image models "
                                                        "(default: the column of Image type, else one named image)")
    audio_column: str | None = Field(None, description="audio column of the calibration dataset, for speech models "
                                                        "(default: the column of Audio type, else one named audio); "
                                                        "transcripts come from text_column")


def validation_message(exc: ValidationError, *, flags: bool = False, context: str = "") -> str:
    """One line for a pydantic ``ValidationError``: where (a ``--flag`` or a dotted key) and what.

    ``flags=True`` names fields as CLI flags (``calibration.seq_len`` -> ``--seq-len``).
    """
    errors = exc.errors()
    err = errors[0]
    loc = [str(x) for x in err["loc"]]
    if flags:
        where = f"--{loc[-1].replace('_', '-')}" if loc else "options"
    else:
        where = ".".join(loc) or "options"
    msg = str(err["msg"]).removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        msg = "unknown option"
    elif err["type"] == "missing":
        msg = "missing required value"
    more = f" (and {len(errors) - 1} more error(s))" if len(errors) > 1 else ""
    prefix = f"{context}: " if context else ""
    return f"{prefix}{where}: {msg}{more}"


def build_config(cls: type[M], params: dict[str, Any], *, flags: bool = False, context: str = "") -> M:
    """Validate ``params`` into ``cls``; a bad value raises a one-line :class:`UsageError`."""
    try:
        return cls.model_validate(params)
    except ValidationError as exc:
        raise UsageError(validation_message(exc, flags=flags, context=context)) from None
