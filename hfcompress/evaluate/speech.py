"""Speech recognition metrics: word / character error rate of a speech-to-text model (Whisper)
on a Hub audio dataset, plus latency of the encoder forward and of full generation and the
peak memory of generation.

The dataset needs an audio column (``datasets.Audio`` or WAV bytes; decoded without torchcodec,
see :mod:`hfcompress.audio`) and a reference transcript column. Audio is resampled to the
model's feature-extractor rate; transcripts come from greedy (or beam) ``generate``. WER and
CER come from the shipped ``wer`` ``evaluate`` module (:mod:`hfcompress.metrics.wer`, over
``jiwer``) after Whisper's English text normalizer::

    from hfcompress.evaluate import evaluate
    from hfcompress.evaluate.speech import WERConfig
    report = evaluate("openai/whisper-tiny.en", [WERConfig(dataset="fixtures/espeak-sentences")])
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import Field

from ..audio import decode_audio_rate, resample
from ..data import load_split
from ..errors import UsageError
from ..registry import register
from ..sizes import memory_bytes
from .base import DatasetEvalConfig, make_result
from .core import MethodSpec, apply_stage
from .rss_probe import peak_rss_during
from .tasks import load_metric

SPEECH_TASKS = ("speech-seq2seq",)


class WERConfig(DatasetEvalConfig):
    """Word error rate (and CER) of a speech recognition model on an audio dataset split."""

    method: Literal["wer"] = "wer"
    split: str = Field("test", description="dataset split")
    audio_column: str = Field("audio", description="column with the audio (datasets.Audio or WAV bytes)")
    text_column: str = Field("text", description="column with the reference transcript")
    max_samples: int | None = Field(None, ge=1, description="evaluate the first N clips only")
    batch_size: int = Field(16, ge=1, le=1024, description="clips per generate call")
    max_new_tokens: int = Field(128, ge=1, le=444, description="tokens generated per clip at most")
    num_beams: int = Field(1, ge=1, le=16, description="beam search width (1: greedy)")
    normalizer: Literal["english", "basic", "none"] = Field(
        "english", description="text normalizer applied to predictions and references before scoring")
    latency_clips: int = Field(5, ge=0, le=1000, description="clips timed one by one (batch 1) for the "
                                                             "encoder and generation latency; 0: skip")
    hub_metrics: bool = Field(False, description="load the wer module from the Hub instead of hfcompress's")


@dataclass
class SpeechData:
    audio: list[Any]  # float32 arrays at `rate`
    rate: int
    references: list[str]
    metric: Any = None
    notes: dict[str, Any] = field(default_factory=dict)


def prepare_speech(cfg: WERConfig) -> SpeechData:
    """Load and check the split (columns, emptiness, transcripts) and decode the audio; no model."""

    where = f"dataset {cfg.dataset} ({cfg.split})"
    ds = load_split(cfg.dataset, cfg.config, cfg.split, cfg.revision)
    cols = ds.column_names
    if cfg.audio_column not in cols:
        raise UsageError(f"{where} has no audio column {cfg.audio_column!r}, and {cfg.method} needs audio: pass "
                         f"--audio-column (columns: {', '.join(cols)}) or use a speech dataset")
    if cfg.text_column not in cols:
        raise UsageError(f"{where} has no transcript column {cfg.text_column!r}, and {cfg.method} needs reference "
                         f"transcripts: pass --text-column (columns: {', '.join(cols)})")
    if len(ds) == 0:
        raise UsageError(f"{where} is empty: choose another --split")
    if cfg.max_samples is not None:
        ds = ds.select(range(min(cfg.max_samples, len(ds))))
    refs = ds[cfg.text_column]
    bad = sum(1 for t in refs if not isinstance(t, str))
    if bad:
        raise UsageError(f"{where}: {bad} rows of column {cfg.text_column!r} are not text: pass the transcript "
                         "column with --text-column")
    from datasets import Audio

    if isinstance(ds.features.get(cfg.audio_column), Audio):
        ds = ds.cast_column(cfg.audio_column, Audio(decode=False))
    decoded = [decode_audio_rate(v, where=f"{where} row {i} column {cfg.audio_column!r}")
                for i, v in enumerate(ds[cfg.audio_column])]
    rates = {r for _, r in decoded}
    rate = rates.pop() if len(rates) == 1 else 16_000  # mixed rates: bring everything to 16 kHz now
    decoded = [resample(x, r, rate) for x, r in decoded]
    return SpeechData(audio=decoded, rate=rate, references=list(refs),
                      metric=load_metric("wer", hub=cfg.hub_metrics))


def check_speech(cfg: WERConfig, data: SpeechData, model_config: Any, task: str) -> None:
    if task not in SPEECH_TASKS:
        hint = ("use --metric accuracy for image or text classifiers" if task.endswith("classification")
                else "use --metric perplexity for language models")
        raise UsageError(f"{cfg.method} scores speech recognition models (speech-seq2seq, e.g. Whisper); this model "
                         f"is {task!r}: {hint}")


def _features(processor: Any, audio: list[Any], rate: int, device: Any, dtype: Any) -> Any:

    fe = getattr(processor, "feature_extractor", processor)
    target = int(getattr(fe, "sampling_rate", rate))
    arrays = [resample(a, rate, target) for a in audio]
    feats = fe(arrays, sampling_rate=target, return_tensors="pt").input_features
    return feats.to(device=device, dtype=dtype)


def _generate(model: Any, feats: Any, cfg: WERConfig) -> Any:
    return model.generate(input_features=feats, max_new_tokens=cfg.max_new_tokens, num_beams=cfg.num_beams,
                          do_sample=False)


def measure_speech(bundle: Any, cfg: WERConfig, data: SpeechData, *, model_label: str,
                   progress: bool = False) -> list[dict[str, Any]]:
    import torch

    processor = bundle.tokenizer
    if processor is None or not hasattr(processor, "batch_decode"):
        raise UsageError(f"{cfg.method} needs the model's processor (feature extractor + tokenizer), and this model "
                         "has none: save it with its WhisperProcessor (processor.save_pretrained(folder))")
    model = bundle.model
    param = next(model.parameters())
    dtype = param.dtype if param.dtype.is_floating_point else torch.float32
    start = time.perf_counter()
    predictions: list[str] = []
    steps = range(0, len(data.audio), cfg.batch_size)
    if progress:
        from tqdm.auto import tqdm

        steps = tqdm(steps, desc=cfg.method, unit="batch")
    peak = 0
    with torch.inference_mode():
        for i in steps:
            feats = _features(processor, data.audio[i:i + cfg.batch_size], data.rate, param.device, dtype)
            ids, grown = peak_rss_during(lambda f=feats: _generate(model, f, cfg))
            peak = max(peak, grown)
            predictions.extend(processor.batch_decode(ids, skip_special_tokens=True))
    transcribe_s = time.perf_counter() - start
    try:
        scores = data.metric.compute(predictions=predictions, references=data.references,
                                     normalizer=cfg.normalizer)
    except (ValueError, TypeError) as exc:
        raise UsageError(f"metric {cfg.method}: {' '.join(str(exc).split())[:200]}") from None
    latency = _latency(model, processor, data, cfg, param.device, dtype) if cfg.latency_clips else {}
    seconds = time.perf_counter() - start
    settings = {"audio_column": cfg.audio_column, "text_column": cfg.text_column, "batch_size": cfg.batch_size,
                "max_new_tokens": cfg.max_new_tokens, "num_beams": cfg.num_beams, "normalizer": cfg.normalizer,
                "examples": len(predictions), "metric_source": "hub" if cfg.hub_metrics else "hfcompress",
                "device": str(param.device), "torch_threads": torch.get_num_threads()}
    counts = {k: v for k, v in scores.items() if k not in ("wer", "cer")}
    details = {**data.notes, **counts, "model_bytes": memory_bytes(model),
               "examples_shown": [{"reference": r, "prediction": p}
                                  for r, p in list(zip(data.references, predictions, strict=True))[:5]]}

    def res(metric: str, value: Any, unit: str, hib: bool, extra: dict | None = None) -> dict[str, Any]:
        # Speed and memory results are named "efficiency": the card's model-index carries quality only.
        name = cfg.method if metric in ("wer", "cer") else "efficiency"
        return make_result(name, metric, value, model=model_label, unit=unit, higher_is_better=hib,
                           dataset=cfg.dataset, config=cfg.config, split=cfg.split, settings=settings,
                           details=extra if extra is not None else details, seconds=seconds)

    out = [res("wer", float(scores["wer"]), "", False), res("cer", float(scores["cer"]), "", False)]
    audio_s = sum(len(a) for a in data.audio) / data.rate
    out.append(res("real_time_factor", transcribe_s / audio_s if audio_s else None, "", False,
                   {"transcribe_seconds": transcribe_s, "audio_seconds": audio_s,
                    "note": "batched transcription time / audio duration (measured under this machine's load)"}))
    out.append(res("generate_peak_rss_bytes", peak, "bytes", False,
                   {"method": "inprocess: psutil RSS sampled every 1 ms during each batched generate, "
                              "minus RSS before it; the largest batch reported"}))
    for name, value in latency.items():
        if name.endswith("_ms"):
            out.append(res(name, value, "ms", False, latency))
    return out


def _latency(model: Any, processor: Any, data: SpeechData, cfg: WERConfig, device: Any, dtype: Any) -> dict[str, Any]:
    """Median batch-1 milliseconds of the encoder forward and of full generation, over real clips."""
    import torch

    n = min(cfg.latency_clips, len(data.audio))
    enc_t, gen_t, tokens = [], [], []
    encoder = model.get_encoder()
    with torch.inference_mode():
        for i in range(n + 1):  # the first clip warms up
            feats = _features(processor, [data.audio[i % len(data.audio)]], data.rate, device, dtype)
            t = time.perf_counter()
            encoder(feats)
            e = (time.perf_counter() - t) * 1000
            t = time.perf_counter()
            ids = _generate(model, feats, cfg)
            g = (time.perf_counter() - t) * 1000
            if i:
                enc_t.append(e)
                gen_t.append(g)
                tokens.append(int(ids.shape[-1]))
    if not enc_t:
        return {}
    return {"encoder_latency_ms": statistics.median(enc_t), "generate_latency_ms": statistics.median(gen_t),
            "clips": n, "median_output_tokens": statistics.median(tokens), "warmup": 1,
            "note": "batch 1, median over clips, after one warm-up clip; timings depend on the machine's load"}


def _measure(bundle: Any, cfg: WERConfig, data: SpeechData, *, model_label: str, folder: Any = None,
             work_dir: Any = None, progress: bool = False) -> list[dict[str, Any]]:
    return measure_speech(bundle, cfg, data, model_label=model_label, progress=progress)


register(WERConfig, spec=MethodSpec(prepare_speech, check_speech, _measure, tasks=SPEECH_TASKS))(apply_stage)
