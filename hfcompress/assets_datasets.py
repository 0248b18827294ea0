"""Datasets built here, laid out as Hub dataset repos (README.md card with ``configs`` + parquet).

* ``fixtures/espeak-sentences`` — English sentences spoken by ``espeak-ng``, 16 kHz PCM WAV in an
  ``audio`` column (``datasets.Audio``) with the sentence in ``text``. Split ``train`` (text from
  ``fixtures/enwiki-sample``, four voices) for calibration / distillation; split ``test`` (text from
  ``Salesforce/wikitext`` test, two *other* voices) for word error rate.
* ``fixtures/digits`` — scikit-learn's 1,797 8×8 handwritten digits, upsampled to 32×32 RGB PNG
  (``image``, ``datasets.Image``) with ``label`` (``ClassLabel`` "0".."9"); seeded 80/20 split
  into ``train`` / ``test``.

Both are deterministic (seeded) and built by ``hfcompress assets`` into the asset cache
(:func:`hfcompress.assets.ensure_asset`); ``hfcompress hub seed`` serves them on a local Hub.
"""

from __future__ import annotations

import json
import random
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from .errors import UsageError

SPEECH_DATASET = "fixtures/espeak-sentences"
DIGITS_DATASET = "fixtures/digits"
SAMPLING_RATE = 16_000
SEED = 1234
#: split -> (source text dataset, voices, clips)
SPEECH_SPLITS: dict[str, tuple[str, tuple[str, ...], int]] = {
    "train": ("fixtures/enwiki-sample", ("en-us", "en-gb-x-rp", "en-us+f3", "en-gb+m3"), 300),
    "test": ("Salesforce/wikitext", ("en-gb-scotland", "en-gb-x-gbclan+f2"), 100),
}
SPEEDS = (135, 150, 165)  # words per minute
PITCHES = (35, 50, 65)
MIN_WORDS, MAX_WORDS, MAX_SECONDS = 5, 16, 6.0
_SENTENCE = re.compile(r"^[A-Z][A-Za-z ,'\-]+\.$")


# ------------------------------------------------------------------ parquet in Hub layout
def write_parquet(rows: dict[str, list[Any]], features: Any, path: Path) -> None:
    """``rows`` as a parquet file whose schema carries ``features`` (so ``datasets`` restores
    the ``Audio`` / ``Image`` / ``ClassLabel`` types) — without encoding through ``datasets``."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = features.arrow_schema
    table = pa.Table.from_pydict(rows, schema=schema)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path, compression="zstd")


def _card(yaml: str, body: str) -> str:
    return f"---\n{yaml.strip()}\n---\n{body.strip()}\n"


# ------------------------------------------------------------------ speech
def espeak_binary() -> str:
    """Path of ``espeak-ng``; a one-line error with the fix when it is missing."""
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise UsageError("espeak-ng is not installed, and the speech dataset is synthesized with it: "
                         "run `apt-get install -y espeak-ng` (Debian/Ubuntu), then `hfcompress assets`")
    return exe


def _clean(line: str) -> list[str]:
    """Sentences of one line of raw Wikipedia / WikiText text, fit to be spoken and scored."""
    if "@" in line or "=" in line:
        return []
    line = re.sub(r" ([,.;:!?)])", r"\1", line.strip())
    line = re.sub(r" (n't|'s|'re|'ve|'d|'ll|'m)\b", r"\1", line)
    out = []
    for s in re.split(r"(?<=[.!?])\s+", line):
        s = s.strip()
        n = len(s.split())
        if MIN_WORDS <= n <= MAX_WORDS and _SENTENCE.match(s) and ".." not in s and not re.search(r"\b[A-Z]\.", s):
            out.append(s)
    return out


def source_sentences(repo_id: str, datasets_dir: Path) -> list[str]:
    """Candidate sentences (deduplicated, in file order) from a local text dataset repo."""
    import pyarrow.parquet as pq

    files = sorted((datasets_dir / repo_id).rglob("*.parquet"))
    if not files:
        raise UsageError(f"no parquet files for {repo_id} under {datasets_dir}: set HFCOMPRESS_DATASETS "
                         "to the shared datasets folder")
    seen: dict[str, None] = {}
    for f in files:
        for text in pq.read_table(f, columns=["text"]).column("text").to_pylist():
            for line in (text or "").split("\n"):
                for s in _clean(line):
                    seen.setdefault(s, None)
    return list(seen)


def speak(text: str, voice: str, speed: int, pitch: int, workdir: Path) -> Any:
    """``text`` spoken by espeak-ng, as float32 samples at 16 kHz."""
    from .audio import resample, wav_to_array

    out = workdir / "clip.wav"
    subprocess.run([espeak_binary(), "-v", voice, "-s", str(speed), "-p", str(pitch), "-w", str(out), "--", text],
                   check=True, capture_output=True, timeout=60)
    x, rate = wav_to_array(out.read_bytes(), f"espeak-ng output for voice {voice}")
    return trim_silence(resample(x, rate, SAMPLING_RATE), SAMPLING_RATE)


def trim_silence(x: Any, rate: int, threshold: float = 1e-3, margin_s: float = 0.1) -> Any:
    """``x`` without the leading/trailing samples below ``threshold``, keeping ``margin_s`` of each."""
    import numpy as np

    loud = np.flatnonzero(np.abs(x) >= threshold)
    if loud.size == 0:
        return x
    margin = int(margin_s * rate)
    return x[max(0, loud[0] - margin): loud[-1] + 1 + margin]


def espeak_version() -> str:
    r = subprocess.run([espeak_binary(), "--version"], capture_output=True, text=True, check=True, timeout=30)
    return " ".join(r.stdout.split())


def build_speech_dataset(dest: Path, datasets_dir: Path) -> None:
    """Synthesize :data:`SPEECH_DATASET` into ``dest`` (README.md + ``data/{split}-*.parquet``)."""
    from datasets import Audio, Features, Value

    from .audio import array_to_wav

    version = espeak_version()
    features = Features({"audio": Audio(sampling_rate=SAMPLING_RATE), "text": Value("string"),
                         "voice": Value("string"), "speed": Value("int32"), "pitch": Value("int32")})
    stats = {}
    with tempfile.TemporaryDirectory() as tmp:
        for split, (source, voices, n) in SPEECH_SPLITS.items():
            rng = random.Random(f"{SEED}-{split}")
            sentences = source_sentences(source, datasets_dir)
            rng.shuffle(sentences)
            rows: dict[str, list[Any]] = {k: [] for k in features}
            seconds = 0.0
            for s in sentences:
                if len(rows["text"]) == n:
                    break
                voice, speed, pitch = voices[len(rows["text"]) % len(voices)], rng.choice(SPEEDS), rng.choice(PITCHES)
                x = speak(s, voice, speed, pitch, Path(tmp))
                if len(x) > MAX_SECONDS * SAMPLING_RATE:
                    continue
                seconds += len(x) / SAMPLING_RATE
                rows["audio"].append({"bytes": array_to_wav(x, SAMPLING_RATE), "path": f"{split}-{len(rows['text']):04d}.wav"})
                rows["text"].append(s)
                rows["voice"].append(voice)
                rows["speed"].append(speed)
                rows["pitch"].append(pitch)
            if len(rows["text"]) < n:
                raise UsageError(f"only {len(rows['text'])} sentences of {source} fit the speech dataset "
                                 f"({n} wanted): check the shared datasets folder")
            write_parquet(rows, features, dest / "data" / f"{split}-00000-of-00001.parquet")
            stats[split] = (source, voices, n, seconds, len(sentences))
    lines = "\n".join(
        f"| `{split}` | {n} | {seconds / 60:.1f} min | `{source}` ({pool} candidate sentences) | "
        f"{', '.join(f'`{v}`' for v in voices)} |"
        for split, (source, voices, n, seconds, pool) in stats.items())
    yaml = f"""
license: cc-by-sa-3.0
language: [en]
pretty_name: English sentences spoken by espeak-ng (16 kHz)
task_categories: [automatic-speech-recognition]
tags: [synthetic, espeak-ng, hfcompress]
configs:
- config_name: default
  data_files:
  - split: train
    path: data/train-*
  - split: test
    path: data/test-*
dataset_info:
  features:
  - name: audio
    dtype:
      audio:
        sampling_rate: {SAMPLING_RATE}
  - name: text
    dtype: string
  - name: voice
    dtype: string
  - name: speed
    dtype: int32
  - name: pitch
    dtype: int32
"""
    body = f"""
# espeak-sentences: synthetic English speech for Whisper evaluation and calibration

Built by `hfcompress assets` (`hfcompress/assets_datasets.py`, `build_speech_dataset`), offline
and deterministically (seed {SEED}), with {version}.

| split | clips | audio | text source | voices |
|---|---|---|---|---|
{lines}

How each clip was made:
1. Sentences: lines of the source split are split at `.`/`!`/`?`; a sentence is kept when it has
   {MIN_WORDS}–{MAX_WORDS} words, only letters, spaces, commas, apostrophes and hyphens, and ends with
   a period (no digits, no WikiText `@-@` markup, no initials). WikiText's tokenized spacing
   (` ,` / ` 's`) is undone first. The candidates are shuffled with `random.Random("{SEED}-<split>")`.
2. Speech: `espeak-ng -v <voice> -s <speed> -p <pitch> -w clip.wav -- "<sentence>"`; voices rotate
   through the split's list; speed (words per minute) is drawn from {list(SPEEDS)} and pitch from
   {list(PITCHES)}. espeak-ng writes 22,050 Hz 16-bit mono.
3. Resampled to {SAMPLING_RATE} Hz with `scipy.signal.resample_poly` (320/441) and stored as 16-bit
   PCM WAV bytes in the `audio` column, with leading/trailing silence (|x| < 0.001) trimmed to
   0.1 s; clips longer than {MAX_SECONDS:.0f} s are skipped.

The `test` voices appear in no `train` clip and the `test` text comes from another corpus, so a
model calibrated or distilled on `train` is scored on unseen speakers and sentences. This is
synthetic speech: word error rates here are not comparable with figures on human speech.

Columns: `audio` (`datasets.Audio`, 16 kHz), `text` (the sentence as written), `voice`, `speed`, `pitch`.
Decoding `audio` with `datasets` needs `torchcodec`; hfcompress reads the WAV bytes itself
(`hfcompress.audio.audio_column`). License: the text is Wikipedia's (CC BY-SA 3.0).
"""
    (dest / "README.md").write_text(_card(yaml, body))


# ------------------------------------------------------------------ digits
DIGITS_SIZE = 32


def digits_images() -> tuple[list[Any], list[int]]:
    """scikit-learn's 8×8 digits as 32×32 RGB PIL images (bilinear upsampling) and labels."""
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise UsageError("the digits dataset comes from scikit-learn, which is not installed: "
                         "pip install scikit-learn (or `make install`)") from None
    import numpy as np
    from PIL import Image

    d = load_digits()
    images = []
    for img in d.images:
        g = Image.fromarray((np.asarray(img) * (255.0 / 16.0)).round().astype(np.uint8), mode="L")
        images.append(g.resize((DIGITS_SIZE, DIGITS_SIZE), Image.BILINEAR).convert("RGB"))
    return images, [int(t) for t in d.target]


def _png(img: Any) -> bytes:
    import io

    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=False)
    return buf.getvalue()


def build_digits_dataset(dest: Path) -> None:
    """:data:`DIGITS_DATASET` into ``dest``: seeded 80/20 train/test split, README card."""
    import sklearn
    from datasets import ClassLabel, Features, Image

    images, labels = digits_images()
    order = list(range(len(labels)))
    random.Random(SEED).shuffle(order)
    n_test = len(order) // 5
    splits = {"train": sorted(order[n_test:]), "test": sorted(order[:n_test])}
    features = Features({"image": Image(), "label": ClassLabel(names=[str(i) for i in range(10)])})
    for split, idx in splits.items():
        rows = {"image": [{"bytes": _png(images[i]), "path": f"{split}-{i:04d}.png"} for i in idx],
                "label": [labels[i] for i in idx]}
        write_parquet(rows, features, dest / "data" / f"{split}-00000-of-00001.parquet")
    names = json.dumps([str(i) for i in range(10)])
    yaml = f"""
license: cc-by-4.0
pretty_name: Handwritten digits (scikit-learn / UCI), 32x32 RGB
task_categories: [image-classification]
tags: [hfcompress]
configs:
- config_name: default
  data_files:
  - split: train
    path: data/train-*
  - split: test
    path: data/test-*
dataset_info:
  features:
  - name: image
    dtype: image
  - name: label
    dtype:
      class_label:
        names: {names}
"""
    body = f"""
# digits: 1,797 handwritten digits as a Hub image-classification dataset

Built by `hfcompress assets` (`hfcompress/assets_datasets.py`, `build_digits_dataset`) from
`sklearn.datasets.load_digits()` (scikit-learn {sklearn.__version__}, which ships the data: no
download). The data is the test set of the UCI "Optical Recognition of Handwritten Digits"
dataset (Alpaydin & Kaynak, 1998; CC BY 4.0): 8×8 images of 4-bit (0–16) counts.

Each image is scaled to 0–255, upsampled to {DIGITS_SIZE}×{DIGITS_SIZE} with PIL bilinear
resampling, converted to RGB and stored as PNG (`image`); `label` is the digit (`ClassLabel`
"0".."9"). Split: the indices are shuffled with `random.Random({SEED})`; the first
{n_test} form `test`, the other {len(order) - n_test} `train`; rows keep the original order.
"""
    (dest / "README.md").write_text(_card(yaml, body))
