"""SNLI in the InferSent layout (s1/s2/labels per split), as ../shared/data/snli/infersent_format has it."""

from __future__ import annotations

import pytest

from fastxlt.errors import CorruptDataError
from fastxlt.tasks.base import get_task


def test_real_snli_dev_and_test_read_in_the_infersent_layout(shared_data):
    root = shared_data / "snli" / "infersent_format"
    spec = get_task("snli")
    for split, suffix, count in (("validation", "dev", 9842), ("test", "test", 9824)):
        examples = spec.load(split, "en", shared_data / "snli")
        assert len(examples) == count
        first = [(root / f"{name}.{suffix}").read_text(encoding="utf-8").splitlines()[0].strip() for name in ("s1", "s2", "labels")]
        assert (examples[0].text_a, examples[0].text_b) == (first[0], first[1])
        assert spec.labels[examples[0].label] == first[2]


def test_infersent_files_of_different_lengths_are_refused(tmp_path):
    (tmp_path / "s1.dev").write_text("a b .\nc d .\n")
    (tmp_path / "s2.dev").write_text("a .\n")
    (tmp_path / "labels.dev").write_text("entailment\nneutral\n")
    with pytest.raises(CorruptDataError, match="differ in length"):
        get_task("snli").load("validation", "en", tmp_path)
