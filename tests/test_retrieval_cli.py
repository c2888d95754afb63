"""``fastxlt-eval --retrieval``: end to end with a tiny saved model on Tatoeba and BUCC fixtures."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from fastxlt.cli import retrieval as cli
from fastxlt.synthetic.model import build_tiny_encoder
from fastxlt.synthetic.tokenizer import train_tokenizer

WORDS = "sun moon star river stone tree bird fish cloud rain snow wind fire leaf road hill lake sea".split()


def random_sentences(seed: int, n: int) -> list[str]:
    rng = np.random.default_rng(seed)
    sentences = {" ".join(rng.choice(WORDS, size=int(rng.integers(3, 9)))) for _ in range(3 * n)}
    return sorted(sentences)[:n]


def retrieval_argv(task: str, model: Path, data: Path, languages: str, output: Path | None = None, *extra: str) -> list[str]:
    """The command line of ``fastxlt-eval --retrieval TASK`` on a model and a data folder."""
    argv = ["--retrieval", task, "--model", str(model), "--data", str(data), "--languages", languages]
    return argv + (["--output", str(output)] if output is not None else []) + list(extra)


@pytest.fixture(autouse=True)
def one_thread():
    """The tiny model runs many small ops: one thread avoids thread-barrier waits on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("tiny-encoder")
    tokenizer = train_tokenizer(random_sentences(0, 400), vocab_size=80, out_dir=folder)
    build_tiny_encoder(
        tokenizer, seed=3, out_dir=folder, hidden_size=32, num_layers=4, num_heads=2, intermediate_size=64
    )
    return folder


@pytest.fixture(scope="module")
def tatoeba_dir(tmp_path_factory) -> Path:
    """German in LASER's layout, Swahili in XTREME's (sorted English + gold). The "English" side is
    the same text as the source, so any deterministic encoder must retrieve every pair."""
    folder = tmp_path_factory.mktemp("tatoeba")
    german = random_sentences(1, 60)
    (folder / "tatoeba.deu-eng.deu").write_text("\n".join(german) + "\n", encoding="utf-8")
    (folder / "tatoeba.deu-eng.eng").write_text("\n".join(german) + "\n", encoding="utf-8")
    swahili = random_sentences(2, 50)
    shuffled = np.random.default_rng(5).permutation(len(swahili))
    (folder / "sw-en.sw").write_text("\n".join(swahili) + "\n", encoding="utf-8")
    (folder / "sw-en.en").write_text("\n".join(swahili[i] for i in shuffled) + "\n", encoding="utf-8")
    gold = np.argsort(shuffled)  # English line holding source line i
    (folder / "sw-en.gold").write_text("\n".join(map(str, gold)) + "\n", encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def bucc_dir(tmp_path_factory) -> Path:
    """Official BUCC layout: each English pool holds copies of some source sentences among others."""
    folder = tmp_path_factory.mktemp("bucc")
    for split, seed in (("sample", 10), ("training", 20)):
        sentences = random_sentences(seed, 240)
        source, planted, others = sentences[:120], sentences[:50], sentences[120:]
        src = [(f"de-{seed}{i:04d}", s) for i, s in enumerate(source)]
        trg = [(f"en-{seed}{i:04d}", s) for i, s in enumerate(planted + others)]
        stem = folder / f"de-en.{split}"
        Path(f"{stem}.de").write_text("".join(f"{i}\t{s}\n" for i, s in src), encoding="utf-8")
        Path(f"{stem}.en").write_text("".join(f"{i}\t{s}\n" for i, s in trg), encoding="utf-8")
        Path(f"{stem}.gold").write_text("".join(f"{src[i][0]}\t{trg[i][0]}\n" for i in range(50)), encoding="utf-8")
    return folder


def test_tatoeba_end_to_end(model_dir, tatoeba_dir, tmp_path, capsys):
    argv = retrieval_argv("tatoeba", model_dir, tatoeba_dir, "de,swh", tmp_path, "--batch-tokens", "128")
    assert cli.main(argv) == 0
    written = json.loads((tmp_path / "tatoeba-xtreme-layer2-mean.json").read_text())
    assert written["layer"] == 2 and written["num_layers"] == 4 and written["pooling"] == "mean"
    assert {lang: s["accuracy"] for lang, s in written["languages"].items()} == {"de": 100.0, "sw": 100.0}
    assert written["languages"]["sw"]["layout"] == "xtreme" and written["mean"] == 100.0
    table = capsys.readouterr().out
    assert "de" in table and "100.00" in table and "mean" in table


def test_protocol_and_overrides_reach_the_encoder(model_dir, tatoeba_dir, tmp_path):
    args = cli.build_parser().parse_args(retrieval_argv(
        "tatoeba", model_dir, tatoeba_dir, "de", tmp_path, "--protocol", "cls", "--layer", "-1", "--direction", "en-xx"))
    result = cli.run_retrieval(args)
    assert (result["protocol"], result["layer"], result["pooling"], result["direction"]) == ("cls", 4, "cls", "en-xx")
    assert Path(result["output_file"]).name == "tatoeba-cls-layer4-cls-en-xx.json"
    assert result["languages"]["de"]["accuracy"] == 100.0


def test_bucc_end_to_end(model_dir, bucc_dir, tmp_path):
    args = cli.build_parser().parse_args(retrieval_argv("bucc", model_dir, bucc_dir, "de", tmp_path))
    result = cli.run_retrieval(args)
    scores = json.loads(Path(result["output_file"]).read_text())["languages"]["de"]
    assert (scores["tune_split"], scores["eval_split"]) == ("sample", "training")
    # exact copies (cosine 1) stand out even for a random-init encoder; its near-uniform similarities
    # let a few other pairs win the margin, so not all of them
    assert scores["dev_f1"] >= 90.0 and scores["f1"] >= 90.0 and result["mean"] == scores["f1"]
    assert 0 < scores["predicted"] <= 120 and 0 <= scores["threshold"] < 2


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--languages", "xx-klingon"], "unknown Tatoeba language"),
        (["--languages", "fr"], "no Tatoeba files for 'fr'"),
        (["--layer", "9"], "layer 9 is out of range for a 4-layer encoder"),
        (["--protocol", "margin", "--data", "/nonexistent/dir"], "does not exist"),
    ],
)
def test_bad_input_is_one_line_on_stderr(model_dir, tatoeba_dir, tmp_path, capsys, extra, message):
    argv = retrieval_argv("tatoeba", model_dir, tatoeba_dir, "de", tmp_path, *extra)
    assert cli.main(argv) == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith("fastxlt-eval: error:") and message in error
    assert not list(tmp_path.glob("*.json"))


def test_missing_model_is_a_checkpoint_error(tatoeba_dir, tmp_path, capsys):
    argv = retrieval_argv("tatoeba", tmp_path / "no-model", tatoeba_dir, "de")
    assert cli.main(argv) == 2
    assert "does not exist" in capsys.readouterr().err


def test_arguments_join_a_parser_that_already_has_the_shared_ones():
    parser = argparse.ArgumentParser()
    parser.add_argument("--model")
    parser.add_argument("--data")
    parser.add_argument("--languages", default="all")
    parser.add_argument("--output")
    parser.add_argument("--batch-tokens", type=int, default=16384)
    cli.add_retrieval_arguments(parser)
    args = parser.parse_args(["--retrieval", "bucc", "--model", "m", "--pooling", "cls", "--layer", "3"])
    assert (args.retrieval, args.model, args.pooling, args.layer, args.protocol) == ("bucc", "m", "cls", 3, "xtreme")


def test_fastxlt_eval_dispatches_to_retrieval(model_dir, tatoeba_dir, tmp_path):
    from fastxlt.cli import eval_main

    argv = retrieval_argv("tatoeba", model_dir, tatoeba_dir, "de", tmp_path)
    assert eval_main(argv) == 0
    assert (
        json.loads((tmp_path / "tatoeba-xtreme-layer2-mean.json").read_text())["languages"]["de"]["accuracy"] == 100.0
    )
