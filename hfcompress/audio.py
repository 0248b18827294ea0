"""Audio without an audio stack: PCM WAV bytes <-> float32 arrays, resampling, dataset columns.

``datasets`` 5.x decodes its ``Audio`` feature through ``torchcodec`` (and FFmpeg), which is not
installed here. hfcompress reads audio columns undecoded (``Audio(decode=False)``: ``{"bytes",
"path"}``) and decodes PCM WAV with the standard library; a value that is already decoded
(``{"array", "sampling_rate"}``) is accepted too. Usage::

    from hfcompress.audio import audio_column
    arrays = audio_column(ds, "audio", sampling_rate=16_000)   # list of float32 numpy arrays
"""

from __future__ import annotations

import io
import wave
from math import gcd
from pathlib import Path
from typing import Any

from .errors import UsageError


def wav_to_array(data: bytes, where: str = "audio") -> tuple[Any, int]:
    """Mono float32 samples in [-1, 1] and the sampling rate of PCM WAV ``data`` (8/16/32-bit)."""
    import numpy as np

    if data[:4] != b"RIFF":  # another container (flac, mp3, ...): datasets' decoder, where installed
        return _decode_other(data, where)
    try:
        with wave.open(io.BytesIO(data)) as w:
            channels, width, rate = w.getnchannels(), w.getsampwidth(), w.getframerate()
            frames = w.readframes(w.getnframes())
    except (wave.Error, EOFError) as exc:
        raise UsageError(f"{where} is not a PCM WAV file ({exc}): store 16-bit PCM WAV bytes, or install "
                         "torchcodec and pass decoded audio") from None
    if width == 1:
        x = (np.frombuffer(frames, dtype=np.uint8).astype(np.float32) - 128.0) / 128.0
    elif width == 2:
        x = np.frombuffer(frames, dtype="<i2").astype(np.float32) / 32768.0
    elif width == 4:
        x = np.frombuffer(frames, dtype="<i4").astype(np.float32) / 2147483648.0
    else:
        raise UsageError(f"{where}: {8 * width}-bit WAV is not supported: store 16-bit PCM")
    if channels > 1:
        x = x.reshape(-1, channels).mean(axis=1)
    return x.astype(np.float32), rate


def _decode_other(data: bytes, where: str) -> tuple[Any, int]:
    import numpy as np

    try:
        import datasets

        decoded = datasets.Audio().decode_example({"bytes": data, "path": None})
    except ImportError:
        raise UsageError(f"{where} is not WAV and no audio decoder is installed: store the audio as 16-bit PCM WAV, "
                         "or pip install torchcodec") from None
    x = np.asarray(decoded["array"], dtype=np.float32)
    return (x.mean(axis=0) if x.ndim > 1 else x), int(decoded["sampling_rate"])


def array_to_wav(x: Any, rate: int) -> bytes:
    """16-bit PCM mono WAV bytes of float samples in [-1, 1]."""
    import numpy as np

    pcm = (np.clip(np.asarray(x, dtype=np.float32), -1.0, 1.0) * 32767.0).round().astype("<i2")
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(int(rate))
        w.writeframes(pcm.tobytes())
    return buf.getvalue()


def resample(x: Any, rate: int, target: int) -> Any:
    """Polyphase resampling (``scipy.signal.resample_poly``) from ``rate`` to ``target`` Hz."""
    import numpy as np

    if rate == target:
        return np.asarray(x, dtype=np.float32)
    try:
        from scipy.signal import resample_poly
    except ImportError:
        raise UsageError(f"audio at {rate} Hz must be resampled to {target} Hz, which needs scipy: "
                         "pip install scipy") from None
    g = gcd(int(rate), int(target))
    return resample_poly(np.asarray(x, dtype=np.float32), target // g, rate // g).astype(np.float32)


def decode_audio(value: Any, sampling_rate: int | None = None, where: str = "audio") -> Any:
    """One audio cell (``{"bytes", "path"}``, ``{"array", "sampling_rate"}``, bytes or a path) as a
    float32 array, resampled to ``sampling_rate`` when given."""
    x, rate = decode_audio_rate(value, where)
    return resample(x, rate, sampling_rate) if sampling_rate else x


def decode_audio_rate(value: Any, where: str = "audio") -> tuple[Any, int]:
    """One audio cell (see :func:`decode_audio`) as a mono float32 array and its sampling rate."""
    import numpy as np

    rate: int
    if isinstance(value, dict) and value.get("array") is not None:
        x, rate = np.asarray(value["array"], dtype=np.float32), int(value["sampling_rate"])
    elif isinstance(value, dict) and value.get("bytes"):
        x, rate = wav_to_array(value["bytes"], where)
    elif isinstance(value, dict) and value.get("path") and Path(value["path"]).is_file():
        x, rate = wav_to_array(Path(value["path"]).read_bytes(), where)
    elif isinstance(value, (bytes, bytearray)):
        x, rate = wav_to_array(bytes(value), where)
    elif isinstance(value, (str, Path)) and Path(value).is_file():
        x, rate = wav_to_array(Path(value).read_bytes(), where)
    elif hasattr(value, "get_all_samples"):  # a torchcodec AudioDecoder
        samples = value.get_all_samples()
        x, rate = samples.data.mean(0).numpy().astype(np.float32), int(samples.sample_rate)
    else:
        raise UsageError(f"{where} holds no audio (got {type(value).__name__}): pass an audio column")
    if x.ndim > 1:
        x = x.mean(axis=0 if x.shape[0] < x.shape[-1] else -1)
    return x, rate


def audio_column(ds: Any, column: str, sampling_rate: int | None = None) -> list[Any]:
    """Every row of ``column`` decoded (see :func:`decode_audio`), without torchcodec."""
    from datasets import Audio

    if column not in ds.column_names:
        raise UsageError(f"dataset has no audio column {column!r}: available columns are "
                         f"{', '.join(ds.column_names)} (pass --audio-column)")
    if isinstance(ds.features.get(column), Audio):
        ds = ds.cast_column(column, Audio(decode=False))
    return [decode_audio(v, sampling_rate, where=f"row {i} of column {column!r}")
            for i, v in enumerate(ds[column])]
