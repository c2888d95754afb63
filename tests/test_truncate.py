"""``fastxlt truncate``: the first N layers of a pretrained encoder, the model-size proxy of question 4.

Reference: the full encoder's own ``hidden_states[N]`` (BERT / XLM-R have no final norm, so the truncated
encoder's last hidden state must be exactly the full one's after layer N).
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from fastxlt.models.encoder import load_encoder, load_tokenizer
from fastxlt.models.truncate import PROVENANCE_FILENAME


def _hidden(model_dir, text: str, **kwargs):
    tokenizer = load_tokenizer(str(model_dir))
    batch = tokenizer([text], return_tensors="pt")
    with torch.no_grad():
        return load_encoder(str(model_dir)).eval()(**batch, **kwargs)


@pytest.mark.parametrize("layers", [1, 2])
def test_truncated_encoder_outputs_the_full_encoders_hidden_state_after_layer_n(tmp_path, synthetic_model, layers):
    out = tmp_path / f"L{layers}"
    done = subprocess.run([sys.executable, "-m", "fastxlt.cli", "truncate", "--model", str(synthetic_model),
                           "--layers", str(layers), "--out", str(out)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    text = "Zero-shot transfer keeps the pretrained weights."
    full = _hidden(synthetic_model, text, output_hidden_states=True)
    cut = _hidden(out, text)
    torch.testing.assert_close(cut.last_hidden_state, full.hidden_states[layers])
    config = json.loads((out / "config.json").read_text())
    assert config["num_hidden_layers"] == layers
    assert json.loads((out / PROVENANCE_FILENAME).read_text())["kept_layers"] == layers


def test_more_layers_than_the_model_has_is_one_line(tmp_path, synthetic_model):
    done = subprocess.run([sys.executable, "-m", "fastxlt.cli", "truncate", "--model", str(synthetic_model),
                           "--layers", "99", "--out", str(tmp_path / "x")], capture_output=True, text=True)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "keep between 1 and" in done.stderr
    assert not (tmp_path / "x").exists()
