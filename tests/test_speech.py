"""Speech: the CTranslate2 -> transformers Whisper converter, audio I/O, the WER metric and the
``wer`` evaluation (tiny random Whisper through the local Hub); real-asset checks marked ``real``."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from hfcompress.errors import UsageError

SPECIALS = ["<|endoftext|>", "<|startoftranscript|>", "<|en|>", "<|translate|>", "<|transcribe|>",
            "<|startoflm|>", "<|startofprev|>", "<|nocaptions|>", "<|notimestamps|>"]


# ------------------------------------------------------------------ a tiny CTranslate2 Whisper, written here
def _tiny_tokenizer_json(path: Path) -> int:
    """A byte-level BPE tokenizer (256 byte symbols, no merges) + Whisper's special tokens."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    vocab = {ch: i for i, ch in enumerate(bytes_to_unicode().values())}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in SPECIALS])
    tok.save(str(path))
    return tok.get_vocab_size(with_added_tokens=True)


def _ct2_names(model) -> dict[str, torch.Tensor]:
    """CTranslate2's forward mapping of a WhisperForConditionalGeneration (independent of the converter)."""
    sd = {k: v.detach().clone() for k, v in model.state_dict().items()}
    d = model.config.d_model
    out: dict[str, torch.Tensor] = {}

    def ln(ct, hf):
        out[f"{ct}/gamma"], out[f"{ct}/beta"] = sd[f"{hf}.weight"], sd[f"{hf}.bias"]

    def lin(ct, hf):
        out[f"{ct}/weight"], out[f"{ct}/bias"] = sd[f"{hf}.weight"], sd[f"{hf}.bias"]

    def fused(ct, hfs):
        out[f"{ct}/weight"] = torch.cat([sd[f"{h}.weight"] for h in hfs])
        out[f"{ct}/bias"] = torch.cat([sd.get(f"{h}.bias", torch.zeros(d)) for h in hfs])

    e, dec = "model.encoder", "model.decoder"
    lin("encoder/conv1", f"{e}.conv1")
    lin("encoder/conv2", f"{e}.conv2")
    out["encoder/position_encodings/encodings"] = sd[f"{e}.embed_positions.weight"]
    ln("encoder/layer_norm", f"{e}.layer_norm")
    for i in range(model.config.encoder_layers):
        c, h = f"encoder/layer_{i}", f"{e}.layers.{i}"
        ln(f"{c}/self_attention/layer_norm", f"{h}.self_attn_layer_norm")
        fused(f"{c}/self_attention/linear_0", [f"{h}.self_attn.{p}_proj" for p in "qkv"])
        lin(f"{c}/self_attention/linear_1", f"{h}.self_attn.out_proj")
        ln(f"{c}/ffn/layer_norm", f"{h}.final_layer_norm")
        lin(f"{c}/ffn/linear_0", f"{h}.fc1")
        lin(f"{c}/ffn/linear_1", f"{h}.fc2")
    out["decoder/embeddings/weight"] = sd[f"{dec}.embed_tokens.weight"]
    out["decoder/position_encodings/encodings"] = sd[f"{dec}.embed_positions.weight"]
    ln("decoder/layer_norm", f"{dec}.layer_norm")
    for i in range(model.config.decoder_layers):
        c, h = f"decoder/layer_{i}", f"{dec}.layers.{i}"
        ln(f"{c}/self_attention/layer_norm", f"{h}.self_attn_layer_norm")
        fused(f"{c}/self_attention/linear_0", [f"{h}.self_attn.{p}_proj" for p in "qkv"])
        lin(f"{c}/self_attention/linear_1", f"{h}.self_attn.out_proj")
        ln(f"{c}/attention/layer_norm", f"{h}.encoder_attn_layer_norm")
        lin(f"{c}/attention/linear_0", f"{h}.encoder_attn.q_proj")
        fused(f"{c}/attention/linear_1", [f"{h}.encoder_attn.{p}_proj" for p in "kv"])
        lin(f"{c}/attention/linear_2", f"{h}.encoder_attn.out_proj")
        ln(f"{c}/ffn/layer_norm", f"{h}.final_layer_norm")
        lin(f"{c}/ffn/linear_0", f"{h}.fc1")
        lin(f"{c}/ffn/linear_1", f"{h}.fc2")
    return out


_DTYPE_IDS = {torch.float32: 0, torch.int8: 1, torch.int16: 2, torch.int32: 3, torch.float16: 4}


def write_ct2_model_bin(path: Path, variables: dict[str, torch.Tensor], aliases: dict[str, str],
                        spec: str = "WhisperSpec", version: int = 6) -> None:
    """model.bin in CTranslate2's layout (see hfcompress.assets_whisper)."""

    def name(s: str) -> bytes:
        b = s.encode() + b"\0"
        return struct.pack("<H", len(b)) + b

    blob = bytearray(struct.pack("<I", version) + name(spec) + struct.pack("<I", 3)
                     + struct.pack("<I", len(variables)))
    for n, t in sorted(variables.items()):
        t = t.contiguous()
        raw = t.numpy().tobytes()
        blob += name(n) + struct.pack("<B", t.dim()) + b"".join(struct.pack("<I", s) for s in t.shape)
        blob += struct.pack("<B", _DTYPE_IDS[t.dtype]) + struct.pack("<I", len(raw)) + raw
    blob += struct.pack("<I", len(aliases))
    for a, target in aliases.items():
        blob += name(a) + name(target)
    path.write_bytes(bytes(blob))


@pytest.fixture(scope="module")
def tiny_ct2(tmp_path_factory) -> tuple[Path, torch.nn.Module]:
    """A CTranslate2 Whisper folder (fp32) made from a tiny random HF Whisper, and that model."""
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    folder = tmp_path_factory.mktemp("ct2")
    vocab = _tiny_tokenizer_json(folder / "tokenizer.json")
    cfg = WhisperConfig(vocab_size=vocab, num_mel_bins=16, d_model=32, encoder_layers=2, decoder_layers=2,
                        encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=64,
                        decoder_ffn_dim=64, max_source_positions=50, max_target_positions=24,
                        decoder_start_token_id=257, eos_token_id=256, pad_token_id=256, bos_token_id=256)
    torch.manual_seed(0)
    model = WhisperForConditionalGeneration(cfg).eval()
    with torch.no_grad():  # random biases everywhere (HF initializes them to zero)
        for n, p in model.named_parameters():
            if n.endswith("bias"):
                p.normal_(0, 0.1)
    variables = _ct2_names(model)
    scalars = {"encoder/num_heads": torch.tensor(4, dtype=torch.int16),
               "decoder/num_heads": torch.tensor(4, dtype=torch.int16),
               "decoder/activation": torch.tensor(3, dtype=torch.int8),
               "decoder/scale_embeddings": torch.tensor(0, dtype=torch.int8)}
    write_ct2_model_bin(folder / "model.bin", {**variables, **scalars},
                        {"decoder/projection/weight": "decoder/embeddings/weight"})
    (folder / "config.json").write_text(json.dumps({
        "alignment_heads": [[1, 0]], "lang_ids": [258], "suppress_ids": [5, 6], "suppress_ids_begin": [256]}))
    return folder, model


@pytest.fixture(scope="module")
def tiny_whisper(tiny_ct2, tmp_path_factory) -> Path:
    from hfcompress.assets_whisper import convert_ct2_whisper

    return convert_ct2_whisper(tiny_ct2[0], tmp_path_factory.mktemp("hf") / "whisper")


# ------------------------------------------------------------------ converter
def test_converter_round_trip_is_exact(tiny_ct2, tiny_whisper):
    from transformers import AutoProcessor, WhisperForConditionalGeneration

    _, original = tiny_ct2
    converted = WhisperForConditionalGeneration.from_pretrained(tiny_whisper).eval()
    ref = original.state_dict()
    for k, v in converted.state_dict().items():
        assert torch.equal(v, ref[k]), k  # k_proj has no bias on both sides
    assert "model.encoder.layers.0.self_attn.k_proj.bias" not in converted.state_dict()
    feats = torch.randn(2, 16, 100)
    dec = torch.tensor([[257, 264, 40, 41], [257, 264, 50, 51]])
    with torch.no_grad():
        assert torch.equal(converted(input_features=feats, decoder_input_ids=dec).logits,
                           original(input_features=feats, decoder_input_ids=dec).logits)
    gc = converted.generation_config
    assert gc.no_timestamps_token_id == 264 and gc.is_multilingual is False
    assert gc.alignment_heads == [[1, 0]] and list(gc.suppress_tokens) == [5, 6]
    assert converted.config.decoder_start_token_id == 257 and converted.config.begin_suppress_tokens == [256]
    proc = AutoProcessor.from_pretrained(tiny_whisper)
    assert proc.feature_extractor.feature_size == 16 and proc.feature_extractor.nb_max_frames == 100
    assert proc.tokenizer.decode(proc.tokenizer("hello there")["input_ids"], skip_special_tokens=True) \
        == "hello there"
    with torch.no_grad():
        out = converted.generate(input_features=feats[:1], max_new_tokens=4)
    assert out[0, 0].item() == 257 or out.shape[1] <= 5  # prompt handled by Whisper's generate


def test_fp16_model_bin_converts(tiny_ct2, tmp_path):
    from hfcompress.assets_whisper import read_ct2_model, whisper_state_dict

    src, original = tiny_ct2
    m = read_ct2_model(src / "model.bin")
    half = {k: (v.half() if v.is_floating_point() else v) for k, v in m.variables.items()}
    write_ct2_model_bin(tmp_path / "model.bin", half, m.aliases)
    sd = whisper_state_dict(read_ct2_model(tmp_path / "model.bin"))
    w = original.state_dict()["model.decoder.layers.1.encoder_attn.v_proj.weight"]
    assert sd["model.decoder.layers.1.encoder_attn.v_proj.weight"].dtype == torch.float32
    assert torch.equal(sd["model.decoder.layers.1.encoder_attn.v_proj.weight"], w.half().float())


@pytest.mark.parametrize("damage, match", [
    (lambda b: b[:-7], "runs past the end|trailing"),
    (lambda b: b[:len(b) // 2], "runs past the end"),
    (lambda b: struct.pack("<I", 2) + b[4:], "format version 2"),
    (lambda b: b + b"xx", "trailing bytes"),
    (lambda b: b[:4] + struct.pack("<H", 60000) + b[6:], "spec name|past the end"),
])
def test_reader_refuses_damaged_files(tiny_ct2, tmp_path, damage, match):
    from hfcompress.assets_whisper import read_ct2_model

    raw = (tiny_ct2[0] / "model.bin").read_bytes()
    (tmp_path / "model.bin").write_bytes(damage(raw))
    with pytest.raises(UsageError, match=match):
        read_ct2_model(tmp_path / "model.bin")


def test_reader_checks_byte_counts_and_spec(tmp_path):
    from hfcompress.assets_whisper import read_ct2_model, whisper_state_dict

    good = {"a/weight": torch.ones(2, 3)}
    write_ct2_model_bin(tmp_path / "model.bin", good, {})
    raw = bytearray((tmp_path / "model.bin").read_bytes())
    # The byte count of the single variable sits right before its 24 data bytes.
    pos = len(raw) - 4 - 24 - 4
    assert struct.unpack_from("<I", raw, pos)[0] == 24
    struct.pack_into("<I", raw, pos, 20)
    (tmp_path / "bad.bin").write_bytes(bytes(raw))
    with pytest.raises(UsageError, match="needs 24 bytes, the file says 20"):
        read_ct2_model(tmp_path / "bad.bin")
    write_ct2_model_bin(tmp_path / "t.bin", good, {}, spec="TransformerSpec")
    with pytest.raises(UsageError, match="not WhisperSpec"):
        whisper_state_dict(read_ct2_model(tmp_path / "t.bin"))


# ------------------------------------------------------------------ audio I/O
def test_wav_round_trip_and_resample():
    from hfcompress.audio import array_to_wav, decode_audio, wav_to_array

    t = np.arange(22050) / 22050
    x = (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    y, rate = wav_to_array(array_to_wav(x, 22050))
    assert rate == 22050 and np.abs(y - x).max() < 1e-4
    z = decode_audio({"bytes": array_to_wav(x, 22050), "path": None}, 16000)
    assert len(z) == 16000
    spectrum = np.abs(np.fft.rfft(z))
    assert abs(int(spectrum.argmax()) - 440) <= 1  # 1 s at 16 kHz: bin = Hz
    with pytest.raises(UsageError, match="not a PCM WAV"):
        wav_to_array(b"RIFFnope")


# ------------------------------------------------------------------ WER metric
def test_wer_metric_counts():
    from hfcompress.evaluate import load_metric

    wer = load_metric("wer")
    r = wer.compute(predictions=["the cat sat", "a b c d"], references=["the cat sat on", "a x c d"],
                    normalizer="none")
    # 1 deletion + 1 substitution over 8 reference words
    assert r["wer"] == pytest.approx(2 / 8) and (r["deletions"], r["substitutions"]) == (1, 1)
    assert r["reference_words"] == 8
    # Whisper's English normalizer: case, punctuation and spelled-out numbers do not count
    r = wer.compute(predictions=["Hello, world! It's 20 dollars."], references=["hello world it is twenty dollars"])
    assert r["wer"] == 0 and r["cer"] == 0
    r = wer.compute(predictions=["x", "y"], references=["", "y"], normalizer="none")
    assert r["skipped"] == 1 and r["wer"] == 0
    with pytest.raises(ValueError, match="normalizer"):
        wer.compute(predictions=["a"], references=["a"], normalizer="klingon")


# ------------------------------------------------------------------ evaluate through the local Hub
def _audio_dataset(folder: Path, n: int = 4) -> Path:
    from datasets import Audio, Features, Value

    from hfcompress.assets_datasets import write_parquet
    from hfcompress.audio import array_to_wav

    rng = np.random.default_rng(0)
    feats = Features({"audio": Audio(sampling_rate=16000), "text": Value("string")})
    rows = {"audio": [{"bytes": array_to_wav(0.1 * rng.standard_normal(8000 + 1000 * i), 16000),
                       "path": f"{i}.wav"} for i in range(n)],
            "text": [f"clip number {i}" for i in range(n)]}
    write_parquet(rows, feats, folder / "data" / "test-00000-of-00001.parquet")
    (folder / "README.md").write_text("---\nconfigs:\n- config_name: default\n  data_files:\n  - split: test\n"
                                      "    path: data/test-*\n---\n# tiny audio\n")
    return folder


def test_wer_evaluate_through_local_hub(hub_env, tiny_whisper, tmp_path):
    from hfcompress.evaluate import evaluate
    from hfcompress.evaluate.speech import WERConfig

    api = hub_env.api()
    repo = "fixtures/tiny-audio-wer"
    api.create_repo(repo, repo_type="dataset", exist_ok=True)
    api.upload_folder(folder_path=str(_audio_dataset(tmp_path / "ds")), repo_id=repo, repo_type="dataset")
    report = evaluate(str(tiny_whisper), [WERConfig(dataset=repo, max_new_tokens=6, batch_size=3,
                                                    latency_clips=2)])
    by = {r["metric"]: r for r in report["results"]}
    assert set(by) >= {"wer", "cer", "encoder_latency_ms", "generate_latency_ms", "real_time_factor",
                       "generate_peak_rss_bytes"}
    assert by["wer"]["value"] >= 0.5  # random weights cannot transcribe
    assert by["wer"]["dataset"] == repo and by["wer"]["split"] == "test"
    assert by["wer"]["settings"]["examples"] == 4 and by["wer"]["details"]["reference_words"] == 12
    assert by["encoder_latency_ms"]["name"] == "efficiency" and by["encoder_latency_ms"]["value"] > 0
    # The card's model-index carries WER / CER, not the speed figures.
    from hfcompress.cards.card import _eval_results

    metrics = {r.metric_type for r in _eval_results({"evaluation": report["results"]},
                                                    "automatic-speech-recognition")}
    assert metrics == {"wer", "cer"}


def test_wer_errors_are_one_line(tiny_whisper, tmp_path):
    from hfcompress.evaluate import AccuracyConfig, evaluate
    from hfcompress.evaluate.speech import WERConfig

    ds = str(_audio_dataset(tmp_path / "ds", n=2))
    with pytest.raises(UsageError, match="no transcript column 'sentence'.*columns: audio, text"):
        evaluate(str(tiny_whisper), [WERConfig(dataset=ds, text_column="sentence")])
    with pytest.raises(UsageError, match="no audio column 'speech'"):
        evaluate(str(tiny_whisper), [WERConfig(dataset=ds, audio_column="speech")])
    # Classification metrics on Whisper: said before any data or weights load, with the fix.
    with pytest.raises(UsageError, match="accuracy scores .* this model is 'speech-seq2seq': use --metric wer"):
        evaluate(str(tiny_whisper), [AccuracyConfig(dataset=str(tmp_path / "nowhere"))])


def test_efficiency_measures_whisper_latency(tiny_whisper):
    from hfcompress.evaluate import EfficiencyConfig, evaluate

    rep = evaluate(str(tiny_whisper), [EfficiencyConfig(warmup=0, runs=1, latency_seq_len=4, peak_rss="inprocess",
                                                        measure_disk=False)])
    by = {r["metric"]: r["value"] for r in rep["results"]}
    assert by["latency_ms"] > 0 and by["peak_rss_bytes"] is not None


def test_cli_defaults_to_wer_for_speech(tiny_whisper, tmp_path):
    import argparse

    from hfcompress.cli.evaluate import configs_from_args

    ns = argparse.Namespace(metric=None, **{k: None for k in (
        "dataset", "dataset_config", "split", "dataset_revision", "text_column", "text_pair_column", "image_column",
        "audio_column", "normalizer", "max_new_tokens", "num_beams", "label_column", "max_samples", "hub_metrics",
        "max_tokens", "seq_len", "stride", "add_bos", "batch_size", "latency_batch_size", "latency_seq_len", "runs",
        "warmup", "gen_tokens", "no_generate", "peak_rss")})
    ns.dataset = "fixtures/espeak-sentences"
    assert [c.method for c in configs_from_args(ns, "speech-seq2seq")] == ["wer", "efficiency"]
    ns.dataset = None
    assert [c.method for c in configs_from_args(ns, "seq2seq-lm")] == ["efficiency"]


# ------------------------------------------------------------------ real assets
@pytest.mark.real
def test_real_whisper_transcribes_espeak_test_clips():
    """The converted Whisper tiny.en transcribes unseen-voice espeak-ng clips (quality, not just loading)."""
    from hfcompress.assets import SPEECH_DATASET, WHISPER, ensure_asset
    from hfcompress.evaluate import evaluate
    from hfcompress.evaluate.speech import WERConfig

    try:
        data = ensure_asset(SPEECH_DATASET)
    except UsageError as exc:  # espeak-ng missing: say so (CI installs it in .ci/run)
        pytest.fail(str(exc))
    report = evaluate(str(ensure_asset(WHISPER)), [WERConfig(dataset=str(data), max_samples=12, latency_clips=0)])
    by = {r["metric"]: r for r in report["results"]}
    # Measured on 30 test clips (unseen Scottish / Lancashire espeak voices): WER 0.58, CER 0.27; an
    # untrained or mis-converted Whisper scores WER ~1 and CER well above 0.5.
    assert by["wer"]["value"] < 0.8 and by["cer"]["value"] < 0.45, by["wer"]["details"]["examples_shown"]


def test_compressed_whisper_card_carries_wer_through_the_hub(hub_env, tiny_whisper, tmp_path):
    """compress (int8 + WER on a Hub audio dataset) -> push -> pull: the pulled folder loads and its
    card's model-index carries WER and CER on that dataset, not the speed figures."""
    from hfcompress.evaluate.speech import WERConfig
    from hfcompress.quantize import QuantoInt8Config
    from hfcompress.testing.hub import compress_push_pull

    data = "fixtures/tiny-audio-card"
    measured, results = compress_push_pull(
        hub_env, tiny_whisper, [QuantoInt8Config(), WERConfig(dataset=data, max_new_tokens=6, batch_size=4,
                                                              latency_clips=1)],
        (_audio_dataset(tmp_path / "ds"), data), "whisper-int8-card", tmp_path)
    assert {r.metric_type for r in results} == {"wer", "cer"}
    for r in results:
        assert (r.dataset_name, r.task_type) == (data, "automatic-speech-recognition")
        assert r.metric_value == pytest.approx(measured[r.metric_type]["value"], abs=1e-4)
