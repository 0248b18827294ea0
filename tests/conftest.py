"""Shared fixtures. The Hub-server fixtures come from the ``hfcompress.testing.hub`` plugin."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

if importlib.util.find_spec("hfcompress.testing.hub") is not None:
    pytest_plugins = ["hfcompress.testing.hub"]

SHARED_DATASETS = Path(__file__).resolve().parents[1].parent / "shared" / "hub" / "datasets"


@pytest.fixture(scope="session")
def shared_datasets() -> Path:
    """``../shared/hub/datasets`` (real data laid out as Hub dataset repos)."""
    if not SHARED_DATASETS.is_dir():
        pytest.skip(f"{SHARED_DATASETS} not found")
    return SHARED_DATASETS


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> dict[str, Path]:
    """Folders of tiny random models of every family (see hfcompress.testing.models)."""
    from hfcompress.testing.models import TINY, save_tiny

    root = tmp_path_factory.mktemp("tiny")
    return {family: save_tiny(family, root / family) for family in TINY}


@pytest.fixture(scope="session")
def smollm2_path() -> Path:
    """The real SmolLM2-135M-Instruct folder (built by `make assets`)."""
    from hfcompress.assets import SMOLLM2, ensure_asset

    return ensure_asset(SMOLLM2)


@pytest.fixture(scope="session")
def minilm_path() -> Path:
    """The real all-MiniLM-L6-v2 folder (built by `make assets`)."""
    from hfcompress.assets import MINILM, ensure_asset

    return ensure_asset(MINILM)


@pytest.fixture(autouse=True)
def _isolated_secrets():
    """Secrets registered by one in-process CLI call (e.g. a fuzzed ``--token perplexity``) must
    not redact words in the next test's output: the registry is process-wide by design."""
    from hfcompress import secrets

    saved = set(secrets._KNOWN)
    yield
    secrets._KNOWN.clear()
    secrets._KNOWN.update(saved)
