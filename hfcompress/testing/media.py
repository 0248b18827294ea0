"""Tiny processors and synthetic image / audio datasets for the vision and speech test models.

::

    from hfcompress.testing.media import tiny_processor, write_image_dataset, write_audio_dataset
    processor = tiny_processor("vit", model.config)              # ViTImageProcessor at the model's size
    write_image_dataset(tmp_path / "shapes", rows=12)            # data/train-*.parquet: image, label
    write_audio_dataset(tmp_path / "tones", rows=12)             # data/train-*.parquet: audio (WAV), text

The datasets are laid out as Hub dataset repos (parquet under ``data/``, the ``datasets``
features in the schema metadata), so ``load_dataset(folder)`` and a push to the local Hub serve
them like any Hub dataset. Contents are deterministic (seeded): images of colored squares whose
label is the square's color; tones whose text spells the pitch. Plumbing data, never quality claims.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

from .models import tiny_tokenizer

#: sampling rate of the synthetic audio and the tiny Whisper feature extractor
SAMPLING_RATE = 16000
WORDS = ("low", "mid", "high")


def tiny_processor(kind: str, config: Any, tokenizer: Any = None) -> Any:
    """The processor of a tiny vision (``"vit"``) or speech (``"whisper"``) model built from ``config``.

    Whisper: a feature extractor with ``config.num_mel_bins`` mel bins whose padded length is the
    encoder's ``2 * max_source_positions`` frames (1 s at 16 kHz), and a character-level tokenizer.
    """
    if kind == "vit":
        from transformers import ViTImageProcessor

        return ViTImageProcessor(size={"height": config.image_size, "width": config.image_size})
    if kind == "whisper":
        from transformers import WhisperFeatureExtractor, WhisperProcessor

        frames = 2 * config.max_source_positions
        fe = WhisperFeatureExtractor(feature_size=config.num_mel_bins, sampling_rate=SAMPLING_RATE,
                                     hop_length=SAMPLING_RATE // frames, chunk_length=1)
        return WhisperProcessor(feature_extractor=fe, tokenizer=tokenizer or tiny_tokenizer(config.vocab_size))
    raise ValueError(f"no tiny processor for {kind!r}: use 'vit' or 'whisper'")


def _write(folder: Path, columns: dict[str, list[Any]], features: Any, split: str = "train") -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table(columns)
    table = table.replace_schema_metadata({"huggingface": json.dumps({"info": {"features": features.to_dict()}})})
    (folder / "data").mkdir(parents=True, exist_ok=True)
    pq.write_table(table, folder / "data" / f"{split}-00000-of-00001.parquet")
    return folder


def write_image_dataset(folder: str | Path, rows: int = 12, size: int = 32, seed: int = 0,
                        image_column: str = "image", label_column: str | None = "label", split: str = "train") -> Path:
    """``rows`` PNG images of a colored square on noise; ``label`` = the color (red / green / blue)."""
    import datasets
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    images, labels = [], []
    for i in range(rows):
        label = i % 3
        pixels = rng.integers(0, 64, (size, size, 3), dtype=np.uint8)
        a = int(rng.integers(0, size // 2))
        pixels[a: a + size // 2, a: a + size // 2, label] = 255
        buf = io.BytesIO()
        Image.fromarray(pixels).save(buf, format="PNG")
        images.append({"bytes": buf.getvalue(), "path": f"{i}.png"})
        labels.append(label)
    cols: dict[str, list[Any]] = {image_column: images}
    feats: dict[str, Any] = {image_column: datasets.Image()}
    if label_column:
        cols[label_column] = labels
        feats[label_column] = datasets.ClassLabel(names=["red", "green", "blue"])
    return _write(Path(folder), cols, datasets.Features(feats), split)


def wav_bytes(wave: Any, rate: int = SAMPLING_RATE) -> bytes:
    """16-bit PCM mono WAV bytes of a float waveform in [-1, 1]."""
    import wave as wavemod

    import numpy as np

    buf = io.BytesIO()
    with wavemod.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes((np.clip(wave, -1, 1) * 32767).astype("<i2").tobytes())
    return buf.getvalue()


def write_audio_dataset(folder: str | Path, rows: int = 12, seconds: float = 0.5, rate: int = SAMPLING_RATE,
                        seed: int = 0, audio_column: str = "audio", text_column: str = "text",
                        split: str = "train") -> Path:
    """``rows`` WAV clips of a noisy tone; ``text`` spells its pitch (e.g. "a low tone")."""
    import datasets
    import numpy as np

    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    audio, texts = [], []
    for i in range(rows):
        k = i % 3
        wave = 0.5 * np.sin(2 * np.pi * (220 * (k + 1)) * t) + 0.05 * rng.standard_normal(t.size)
        audio.append({"bytes": wav_bytes(wave, rate), "path": f"{i}.wav"})
        texts.append(f"a {WORDS[k]} tone")
    feats = datasets.Features({audio_column: datasets.Audio(sampling_rate=rate), text_column: datasets.Value("string")})
    return _write(Path(folder), {audio_column: audio, text_column: texts}, feats, split)


_DATASETS: dict[str, Any] = {}


def cached_dataset(kind: str) -> str:
    """A synthetic ``"image"`` or ``"audio"`` dataset folder, written once per process (a temporary
    directory removed at exit): the calibration data of the matrix's vision / speech cells."""
    import tempfile

    if kind not in _DATASETS:
        tmp = tempfile.TemporaryDirectory(prefix=f"hfcompress-{kind}-")
        writer = write_image_dataset if kind == "image" else write_audio_dataset
        writer(Path(tmp.name))
        _DATASETS[kind] = tmp
    return _DATASETS[kind].name
