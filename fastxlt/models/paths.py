"""Where a model's encoder lives: a hub name, a Hugging Face directory, or a fastxlt run or phase directory.

Why a module of its own: both :mod:`.family` (which reads a model's type before loading it) and
:mod:`.encoder` (which loads it) resolve paths, and neither should import the other for it.
"""

from __future__ import annotations

from pathlib import Path

from fastxlt.errors import CheckpointError

ENCODER_DIRNAME = "encoder"


def resolve_encoder_path(name_or_path: str | Path) -> str:
    """Map a fastxlt run directory or phase directory to the HF encoder directory inside it.

    A hub name (``xlm-roberta-large``) or a plain Hugging Face directory is returned unchanged.
    """
    path = Path(name_or_path)
    if not path.exists():
        if str(name_or_path).startswith((".", "/")) or path.suffix:
            raise CheckpointError(
                f"model path '{name_or_path}' does not exist; pass a hub name, a Hugging Face directory or a fastxlt run"
            )
        return str(name_or_path)  # a hub name
    if (path / "config.json").is_file():
        return str(path)
    if (path / ENCODER_DIRNAME / "config.json").is_file():
        return str(path / ENCODER_DIRNAME)
    # a run directory: prefer the last phase that saved an encoder
    candidates = sorted(path.glob(f"**/{ENCODER_DIRNAME}/config.json"), key=lambda p: p.stat().st_mtime)
    if candidates:
        return str(candidates[-1].parent)
    raise CheckpointError(
        f"'{name_or_path}' holds no encoder (no config.json); point at a Hugging Face model directory or a fastxlt run"
    )
