"""PGD on the input embeddings of a tiny model: the perturbation stays inside its epsilon ball, the attacked
loss is never below the clean loss, and the success rate equals a brute-force recount through the model's
ordinary forward pass; plus the cached per-language evaluation of text perturbations and the attack."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from fastxlt.robustness.attack import AttackConfig, attack_features, embeddings_forward, pgd_batch
from fastxlt.tasks.base import PairExample, get_task
from fastxlt.tasks.features import ops_for


@pytest.fixture(scope="module")
def nli_model(tiny_encoder):
    """The 2-layer tiny encoder with a freshly initialised NLI head (xnli's)."""
    from fastxlt.models.encoder import load_encoder, load_tokenizer
    from fastxlt.models.transfer import TransferModel

    torch.manual_seed(0)
    model = TransferModel(load_encoder(tiny_encoder), [get_task("xnli")]).eval()
    return model, load_tokenizer(tiny_encoder)


def _batch(tokenizer, n: int = 24):
    """Pair examples of varied length, their features and one right-padded batch."""
    spec = get_task("xnli")
    words = ["alpha", "beta", "gamma", "delta", "zeta", "theta", "kappa"]
    examples = [PairExample(" ".join(words[: 1 + i % 7]), " ".join(words[i % 5:]), i % 3) for i in range(n)]
    ops = ops_for(spec)
    features = ops.featurize(spec, examples, tokenizer, 64)
    return spec, ops, features, ops.collate(features, tokenizer)


def test_clean_forward_through_embeddings_equals_the_model(nli_model):
    model, tokenizer = nli_model
    _, _, _, batch = _batch(tokenizer)
    with torch.no_grad():
        _, reference = model(head="nli", input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        through_embeddings = embeddings_forward(model, "nli", batch["input_ids"], batch["attention_mask"])
    torch.testing.assert_close(through_embeddings, reference)


@pytest.mark.parametrize("norm,epsilon", [("l2", 2.0), ("linf", 0.05)])
def test_pgd_stays_in_the_ball_and_raises_the_loss(nli_model, norm, epsilon):
    model, tokenizer = nli_model
    _, _, _, batch = _batch(tokenizer)
    ids, mask, labels = batch["input_ids"], batch["attention_mask"], batch["labels"]
    delta, _, adv_logits, clean_loss, adv_loss = pgd_batch(model, "nli", ids, mask, labels, AttackConfig(epsilon, norm, steps=5))
    if norm == "l2":
        assert delta.flatten(1).norm(dim=1).max() <= epsilon * (1 + 1e-5)
    else:
        assert delta.abs().max() <= epsilon * (1 + 1e-6)
    assert delta[mask == 0].abs().max() == 0  # padding is never perturbed
    with torch.no_grad():  # recomputed independently: the model's own forward for the clean loss
        _, clean_logits = model(head="nli", input_ids=ids, attention_mask=mask)
        recomputed = F.cross_entropy(embeddings_forward(model, "nli", ids, mask, delta), labels, reduction="none")
    reference_clean = F.cross_entropy(clean_logits, labels, reduction="none")
    torch.testing.assert_close(clean_loss, reference_clean, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(adv_loss, recomputed, atol=1e-5, rtol=1e-5)
    assert (recomputed >= reference_clean - 1e-5).all()
    assert (recomputed > reference_clean + 1e-4).float().mean() > 0.5  # the ascent does raise the loss


def test_success_rate_matches_a_brute_force_recount(nli_model):
    model, tokenizer = nli_model
    spec, ops, features, batch = _batch(tokenizer)
    ids, mask = batch["input_ids"], batch["attention_mask"]
    # Gold labels the model gets right for most examples, so that there is something to flip.
    with torch.no_grad():
        _, logits = model(head="nli", input_ids=ids, attention_mask=mask)
    predicted = logits.argmax(-1)
    gold = torch.where(torch.arange(len(features)) % 4 == 0, (predicted + 1) % 3, predicted)
    features = [{**f, "label": int(g)} for f, g in zip(features, gold)]
    config = AttackConfig(epsilon=3.0, norm="l2", steps=5)
    outcome = attack_features(model, "nli", ops, features, tokenizer, config, batch_tokens=100_000)
    delta, *_ = pgd_batch(model, "nli", ids, mask, gold, config)
    with torch.no_grad():
        adversarial = embeddings_forward(model, "nli", ids, mask, delta).argmax(-1)
    correct = [i for i in range(len(features)) if predicted[i] == gold[i]]
    flipped = [i for i in correct if adversarial[i] != gold[i]]
    assert outcome.clean_predictions == predicted.tolist()
    assert outcome.adversarial_predictions == adversarial.tolist()
    assert 0 < len(flipped)
    assert outcome.success_rate == pytest.approx(len(flipped) / len(correct))
    # epsilon 0 is the identity: nothing flips
    zero = attack_features(model, "nli", ops, features, tokenizer, AttackConfig(0.0, "l2", steps=3))
    assert zero.adversarial_predictions == zero.clean_predictions and zero.success_rate == 0.0


def test_perturbed_evaluation_per_language_is_cached(nli_model, shared_data, tmp_path):
    """Text perturbations and PGD through evaluate_perturbations on a few real XNLI dev pairs per language."""
    from fastxlt.evaluation.zero_shot import evaluate_task
    from fastxlt.robustness import parse_perturbations
    from fastxlt.robustness.evaluate import evaluate_perturbations

    model, tokenizer = nli_model
    data = tmp_path / "xnli"
    (data / "xtreme_format").mkdir(parents=True)
    for language in ("en", "de", "sw"):  # a dozen pairs per language, written by the test
        lines = (shared_data / "xnli" / "xtreme_format" / f"dev-{language}.tsv").read_text(encoding="utf-8").splitlines()
        (data / "xtreme_format" / f"dev-{language}.tsv").write_text("\n".join(lines[:12]) + "\n", encoding="utf-8")
    spec = get_task("xnli")
    clean = evaluate_task(model, tokenizer, spec, languages=["de", "sw"], split="validation", out_dir=tmp_path / "eval",
                          model_id="tiny", data_dir=str(data), max_length=64)
    clean_bytes = (tmp_path / "eval" / "xnli" / "de.json").read_bytes()
    perturbations = parse_perturbations("char:0.3,code_switch_to_en:0.5,code_switch_from_en:0.5,pgd:3")
    run = lambda: evaluate_perturbations(  # noqa: E731
        model, tokenizer, spec, perturbations, languages=["de", "sw"], split="validation", out_dir=tmp_path / "eval",
        model_id="tiny", clean_scores=clean["languages"], seed=7, data_dir=str(data), max_length=64,
        muse_dir=str(shared_data / "muse"),
    )
    results = run()
    assert set(results) == {"char:0.3", "code_switch_to_en:0.5", "code_switch_from_en:0.5", "pgd:3"}
    char_de = results["char:0.3"]["languages"]["de"]
    assert char_de["clean"] == clean["languages"]["de"]["accuracy"]
    assert char_de["drop"] == pytest.approx(char_de["clean"] - char_de["perturbed"]) and char_de["changed"] > 0.5
    assert results["code_switch_to_en:0.5"]["unavailable"] == {"sw": results["code_switch_to_en:0.5"]["unavailable"]["sw"]}
    assert results["code_switch_to_en:0.5"]["languages"]["sw"]["perturbed"] is None
    assert results["code_switch_from_en:0.5"]["languages"]["de"]["source_language"] == "en"
    pgd = results["pgd:3"]["languages"]["de"]
    assert pgd["clean"] == pytest.approx(clean["languages"]["de"]["accuracy"]) and 0 <= pgd["success_rate"] <= 1
    cached = tmp_path / "eval" / "xnli" / "char-0.3-seed7" / "de.json"
    stamp = cached.stat().st_mtime_ns
    assert run() == results and cached.stat().st_mtime_ns == stamp  # the second run reads the cache
    clean_file = tmp_path / "eval" / "xnli" / "de.json"
    assert clean_file.read_bytes() == clean_bytes  # the clean results are never touched


def test_fastxlt_eval_perturb_end_to_end(tiny_encoder, shared_data, tmp_path, capsys):
    """``fastxlt-eval --perturb``: per-language files under eval/<arm>/<task>/<perturbation>/, results in
    results.json, unavailable languages named; a bad spec is one line and exit status 2."""
    from fastxlt.cli import eval_main
    from fastxlt.models.encoder import load_encoder, load_tokenizer
    from fastxlt.models.transfer import TransferModel, save_phase_outputs
    from fastxlt.utils.io import read_json

    torch.manual_seed(1)
    run = tmp_path / "run"
    model = TransferModel(load_encoder(tiny_encoder), [get_task("xnli")])
    save_phase_outputs(model, run / "target" / "baseline" / "model", load_tokenizer(tiny_encoder))
    data = tmp_path / "xnli"
    (data / "xtreme_format").mkdir(parents=True)
    for language in ("de", "sw"):
        lines = (shared_data / "xnli" / "xtreme_format" / f"dev-{language}.tsv").read_text(encoding="utf-8").splitlines()
        (data / "xtreme_format" / f"dev-{language}.tsv").write_text("\n".join(lines[:12]) + "\n", encoding="utf-8")
    common = ["--model", str(run), "--task", "xnli", "--data", str(data), "--languages", "de,sw", "--split", "validation",
              "--max-length", "64", "--output", str(tmp_path / "out"), "--muse", str(shared_data / "muse")]
    assert eval_main(common + ["--perturb", "word_order:0.5,code_switch_to_en:0.4,pgd_linf:0.05", "--perturb-seed", "3"]) == 0
    printed = capsys.readouterr().out
    assert "sw: not evaluated: no MUSE en-sw dictionary" in " ".join(printed.split())
    assert (tmp_path / "out" / "eval" / "baseline" / "xnli" / "word_order-0.5-seed3" / "sw.json").is_file()
    saved = read_json(tmp_path / "out" / "results.json")["arms"]["baseline"]["tasks"]["xnli"]["perturbations"]
    assert set(saved) == {"word_order:0.5", "code_switch_to_en:0.4", "pgd_linf:0.05"}
    assert set(saved["pgd_linf:0.05"]["languages"]["de"]) >= {"clean", "perturbed", "drop", "success_rate"}
    assert eval_main(common + ["--perturb", "char:7"]) == 2
    error = capsys.readouterr().err.strip()
    assert "strength is a share" in error and "\n" not in error
