"""Shared fixtures: where the real data lives, the real multilingual encoder (multilingual-e5-small, built
locally once), the tiny synthetic model built once per session, and the two-layer encoder and run directory
that the export and evaluation tests share."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Triton reads this once, when it is first imported; any test module may import fastxlt.kernels first (as the
# kernel tests' own setdefault assumes they do), so it is set here, before every test module (make test sets it too)
os.environ.setdefault("TRITON_INTERPRET", "1")

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"
ME5_BUILD = REPO_ROOT.parent / "shared" / "tools" / "me5-small" / "build.sh"
ME5_DIR = REPO_ROOT / ".cache" / "me5-small"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is absent")
    return SHARED_DATA


@pytest.fixture(scope="session")
def me5_small() -> Path:
    """multilingual-e5-small as a local Hugging Face directory (.cache/me5-small), built by the shared tool on
    first use (about 15 s; a file lock keeps two xdist workers from building it at once); skips when the tool
    is absent or the build fails. A fresh clone (CI) used to skip every test that needed it."""
    if (ME5_DIR / "config.json").is_file() and (ME5_DIR / "tokenizer.json").is_file():
        return ME5_DIR
    if not ME5_BUILD.is_file():
        pytest.skip(f"multilingual-e5-small is not built and its build tool is absent: {ME5_BUILD}")
    ME5_DIR.parent.mkdir(parents=True, exist_ok=True)
    with open(ME5_DIR.parent / "me5-small.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (ME5_DIR / "tokenizer.json").is_file():
            env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}"}
            built = subprocess.run(["bash", str(ME5_BUILD), str(ME5_DIR)], env=env, capture_output=True, text=True)
            if built.returncode != 0:
                pytest.skip(f"could not build multilingual-e5-small: {built.stderr.strip().splitlines()[-1:]}")
    return ME5_DIR


@pytest.fixture(scope="session")
def synthetic_model(tmp_path_factory) -> Path:
    """Tokenizer + freshly initialised tiny XLM-R of the embedded default world (an HF directory)."""
    from fastxlt.synthetic import build_default_assets

    return build_default_assets(tmp_path_factory.mktemp("synthetic-model"), seed=0)


@pytest.fixture(scope="module")
def tiny_encoder(tmp_path_factory, synthetic_model) -> Path:
    """The synthetic world's tokenizer with a 2-layer, 32-wide XLM-R: seconds to export."""
    from fastxlt.models.encoder import load_tokenizer
    from fastxlt.synthetic.model import build_tiny_encoder

    tokenizer = load_tokenizer(synthetic_model)
    out = tmp_path_factory.mktemp("tiny-encoder")
    build_tiny_encoder(tokenizer, seed=3, out_dir=out, hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64,
                       max_length=128, dropout=0.0)
    tokenizer.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, synthetic_model) -> Path:
    """A run directory as `fastxlt run` leaves it: run/target/baseline/model/{encoder/, heads.pt}."""
    import torch

    from fastxlt.models.encoder import load_encoder, load_tokenizer
    from fastxlt.models.transfer import TransferModel, save_phase_outputs
    from fastxlt.synthetic.model import build_tiny_encoder
    from fastxlt.tasks.base import get_task

    root = tmp_path_factory.mktemp("cli-run")
    tokenizer = load_tokenizer(synthetic_model)
    encoder_dir = root / "tiny-encoder"
    build_tiny_encoder(tokenizer, seed=5, out_dir=encoder_dir, hidden_size=32, num_layers=2, num_heads=2,
                       intermediate_size=64, max_length=128, dropout=0.0)
    torch.manual_seed(0)
    model = TransferModel(load_encoder(encoder_dir), [get_task("synth-para")])
    save_phase_outputs(model, root / "run" / "target" / "baseline" / "model", tokenizer)
    return root / "run"


@pytest.fixture(scope="session")
def tiny_mt5(tmp_path_factory) -> Path:
    """A random 2-layer, 32-wide mT5 (encoder + decoder, as hub mT5 checkpoints ship) with a T5 tokenizer over the
    real SentencePiece test model in ../shared/data (1,000 pieces + mT5's 3 specials and 100 sentinels)."""
    from fastxlt.models.tiny_mt5 import build_tiny_mt5

    spm = SHARED_DATA / "sentencepiece" / "google_sentencepiece_tests" / "test_model.model"
    if not spm.is_file():
        pytest.skip("../shared/data/sentencepiece is absent")
    return build_tiny_mt5(spm, tmp_path_factory.mktemp("tiny-mt5"), seed=0)
