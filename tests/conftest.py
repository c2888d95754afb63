"""Shared fixtures: where the real data lives, and the tiny synthetic model built once per session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is absent")
    return SHARED_DATA


@pytest.fixture(scope="session")
def synthetic_model(tmp_path_factory) -> Path:
    """Tokenizer + freshly initialised tiny XLM-R of the embedded default world (an HF directory)."""
    from fastxlt.synthetic import build_default_assets

    return build_default_assets(tmp_path_factory.mktemp("synthetic-model"), seed=0)
