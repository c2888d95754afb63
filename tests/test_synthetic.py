"""The synthetic world of the embedded default: determinism, labels, languages, tokenizer, tiny model.

Labels are checked against a brute-force model checker written here from the definitions (enumerate
every assignment of the world-state variables a pair mentions; entailment = the hypothesis holds in
every world where the premise holds, contradiction = no world satisfies both, paraphrase = both hold
in exactly the same worlds), independent of the per-variable shortcut in ``semantics``.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from fastxlt.errors import UnknownLanguageError
from fastxlt.synthetic import build_default_assets
from fastxlt.synthetic import tasks as synth_tasks
from fastxlt.synthetic.languages import CONTENT_CONCEPTS
from fastxlt.synthetic.model import build_tiny_encoder, tiny_xlmr_config
from fastxlt.synthetic.semantics import NAMES, PROPERTY_DIMENSIONS, Count, Prop, Rel
from fastxlt.synthetic.tokenizer import train_tokenizer
from fastxlt.synthetic.world import DEFAULT_SEED, LANGUAGES, World, split_of
from fastxlt.tasks.base import Family, PairExample, TextExample

SAMPLE = 300  # items per split checked by the brute-force model checker


# ---- an independent brute-force model checker -------------------------------------------------------
def _key(clause) -> tuple:
    if isinstance(clause, Prop):
        dimension = next(d for d, values in PROPERTY_DIMENSIONS.items() if clause.value in values)
        return ("prop", clause.person, dimension), PROPERTY_DIMENSIONS[dimension]
    if isinstance(clause, Rel):
        return ("rel", clause.agent, clause.verb, clause.patient), (False, True)
    return ("count", clause.person, clause.verb, clause.noun), tuple(range(10))


def _truth(clause, values: np.ndarray) -> np.ndarray:
    """Truth of one clause in every enumerated world, given its variable's value in each world."""
    if isinstance(clause, Prop):
        true = values == clause.value
    elif isinstance(clause, Rel):
        true = values.astype(bool)
    elif clause.number is None:
        true = values >= 1
    else:
        true = values == clause.number
    return ~true if clause.negated else true


def _worlds(*texts) -> tuple[np.ndarray, ...]:
    """Truth arrays (one per text, AND of its clauses) over every joint assignment of the variables."""
    domains: dict[tuple, tuple] = {}
    for text in texts:
        for clause in text:
            key, domain = _key(clause)
            domains[key] = domain
    keys = list(domains)
    grid = np.indices([len(domains[key]) for key in keys]).reshape(len(keys), -1)
    columns = {key: np.array(domains[key], dtype=object)[grid[i]] for i, key in enumerate(keys)}
    truths = []
    for text in texts:
        truth = np.ones(grid.shape[1], dtype=bool)
        for clause in text:
            truth &= _truth(clause, columns[_key(clause)[0]]).astype(bool)
        truths.append(truth)
    return tuple(truths)


def brute_nli_label(premise, hypothesis) -> int:
    p, h = _worlds(premise, hypothesis)
    assert p.any(), "a premise must be satisfiable"
    if not (p & h).any():
        return 2
    return 0 if not (p & ~h).any() else 1


def brute_equivalent(first, second) -> bool:
    a, b = _worlds(first, second)
    return bool((a == b).all())


# ---- fixtures -----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def world() -> World:
    return World()


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    return build_default_assets(tmp_path_factory.mktemp("synthetic-assets"), seed=0)


# ---- determinism ----------------------------------------------------------------------------------------
def test_same_seed_same_data_other_seed_other_data():
    first, again, other = World(7), World(7), World(8)
    assert first.nli_items("train", 200) == again.nli_items("train", 200)
    assert first.para_items("test", 100) == again.para_items("test", 100)
    assert first.mlm_texts("xb", "train", 300) == again.mlm_texts("xb", "train", 300)
    assert [first.render(i.premise, "xc") for i in first.nli_items("test", 50)] == [
        again.render(i.premise, "xc") for i in again.nli_items("test", 50)
    ]
    assert first.nli_items("train", 200) != other.nli_items("train", 200)
    assert first.language("xa").words != other.language("xa").words
    assert first.language("en").words == other.language("en").words  # English is English


def test_adapter_output_is_the_seeded_world_rendered():
    fresh = World(DEFAULT_SEED)  # a new World, not the cached one the adapter uses
    items = fresh.para_items("test", synth_tasks.SYNTH_PARA.extra["sizes"]["test"])
    examples = synth_tasks.SYNTH_PARA.load("test", "xd")
    assert [(e.text_a, e.text_b, e.label) for e in examples] == [
        (fresh.render(i.first, "xd"), fresh.render(i.second, "xd"), i.label) for i in items
    ]


def test_data_do_not_depend_on_the_python_hash_seed():
    """Same bytes in two fresh interpreters with different string-hash salts."""
    script = (
        "import hashlib; from fastxlt.synthetic.world import World; w = World(3); "
        "text = [w.render(i.premise, 'xe') + w.render(i.hypothesis, 'xc') for i in w.nli_items('train', 300)]; "
        "text += w.mlm_texts('xa', 'validation', 100); print(hashlib.sha256('|'.join(text).encode()).hexdigest())"
    )
    root = Path(__file__).resolve().parents[1]
    digests = {
        subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, check=True, cwd=root,
            env={**os.environ, "PYTHONHASHSEED": salt, "PYTHONPATH": str(root)},
        ).stdout.strip()
        for salt in ("1", "2")
    }
    assert len(digests) == 1


# ---- labels ----------------------------------------------------------------------------------------------
def test_labels_are_balanced(world):
    nli = Counter(item.label for item in world.nli_items("train", 900))
    para = Counter(item.label for item in world.para_items("train", 900))
    assert nli == {0: 300, 1: 300, 2: 300}
    assert sorted(para.values()) == [450, 450]


@pytest.mark.parametrize("split", ["train", "test"])
def test_nli_labels_match_brute_force_semantics(world, split):
    items = world.nli_items(split, SAMPLE)
    assert [brute_nli_label(i.premise, i.hypothesis) for i in items] == [i.label for i in items]


@pytest.mark.parametrize("split", ["train", "validation"])
def test_paraphrase_labels_match_brute_force_semantics(world, split):
    items = world.para_items(split, SAMPLE)
    assert [int(brute_equivalent(i.first, i.second)) for i in items] == [i.label for i in items]
    assert all(i.first != i.second for i in items)  # a positive is never the same text twice


def test_brute_force_checker_on_hand_made_cases():
    """The oracle itself, on cases whose answer is known from the English sentences."""
    has3 = Count("Anna", "have", "dog", 3)
    assert brute_nli_label((has3,), (Count("Anna", "have", "dog"),)) == 0  # 3 dogs -> dogs
    assert brute_nli_label((Count("Anna", "have", "dog"),), (has3,)) == 1  # dogs -/-> 3 dogs
    assert brute_nli_label((has3,), (Count("Anna", "have", "dog", 5),)) == 2
    assert brute_nli_label((Prop("Anna", "tall", negated=True),), (Prop("Anna", "short"),)) == 0
    assert brute_nli_label((Prop("Anna", "happy", negated=True),), (Prop("Anna", "sad"),)) == 1
    assert brute_nli_label((Rel("Anna", "help", "Marco"),), (Rel("Marco", "help", "Anna"),)) == 1
    assert brute_equivalent((Rel("Anna", "help", "Marco"),), (Rel("Anna", "help", "Marco", passive=True),))
    assert not brute_equivalent((Rel("Anna", "help", "Marco"),), (Rel("Marco", "help", "Anna", passive=True),))


def test_every_kind_of_edit_occurs(world):
    """The hard cases are there: role swaps among non-paraphrases, voice changes among paraphrases."""
    items = world.para_items("train", 1000)
    swapped = sum(
        1
        for i in items
        if i.label == 0
        and any(isinstance(c, Rel) and Rel(c.patient, c.verb, c.agent, c.negated, c.passive) in i.first for c in i.second)
    )
    voice = sum(
        1
        for i in items
        if i.label == 1 and any(isinstance(c, Rel) and Rel(c.agent, c.verb, c.patient, c.negated, not c.passive) in i.first for c in i.second)
    )
    assert swapped > 30 and voice > 100


def test_splits_are_disjoint(world):
    train = set(world.nli_items("train", 2000))
    test = world.nli_items("test", 300)
    assert all(split_of(item) == "test" for item in test)
    assert not train & set(test)


# ---- languages ---------------------------------------------------------------------------------------------
def test_every_language_has_validation_and_test_and_only_english_trains():
    for spec in (synth_tasks.SYNTH_NLI, synth_tasks.SYNTH_PARA):
        assert spec.family is Family.PAIR_CLASSIFICATION and spec.languages == LANGUAGES
        assert len(LANGUAGES) >= 5 and LANGUAGES[0] == "en"
        for language in LANGUAGES:
            for split in ("validation", "test"):
                examples = spec.load(split, language)
                assert len(examples) == spec.extra["sizes"][split]
                assert all(isinstance(e, PairExample) and e.text_a and e.text_b for e in examples)
                assert {e.label for e in examples} == set(range(spec.num_labels))
        assert len(spec.load("train", "en")) == spec.extra["sizes"]["train"]
        with pytest.raises(UnknownLanguageError, match="only"):
            spec.load("train", "xb")
    mlm = synth_tasks.SYNTH_MLM
    assert mlm.family is Family.MASKED_LM
    for language in LANGUAGES:
        texts = mlm.load("validation", language)
        assert len(texts) == mlm.extra["sizes"]["validation"] and all(isinstance(t, TextExample) for t in texts)


def test_test_sets_are_parallel_across_languages():
    """Same labels in the same order in every language (the same meanings said differently)."""
    labels = {lang: [e.label for e in synth_tasks.SYNTH_NLI.load("test", lang)] for lang in LANGUAGES}
    assert all(labels[lang] == labels["en"] for lang in LANGUAGES)


def _anchors(text: str) -> Counter:
    return Counter(w for w in text.split() if w in NAMES or w.isdigit())


def test_languages_differ_in_surface_form_but_share_anchors(world):
    meanings = world.sentence_meanings("test", 200)
    rendered = {lang: [world.render(m, lang) for m in meanings] for lang in LANGUAGES}
    for lang in LANGUAGES:
        # the names and numbers are the same, with the same counts, in every translation
        assert all(_anchors(ours) == _anchors(en) for ours, en in zip(rendered[lang], rendered["en"]))
    vocabularies = {
        lang: {w for text in texts for w in text.split() if w not in NAMES and not w.isdigit() and w != "."}
        for lang, texts in rendered.items()
    }
    for a in LANGUAGES:
        for b in LANGUAGES:
            if a < b:
                assert sum(x != y for x, y in zip(rendered[a], rendered[b])) == len(meanings)
                overlap = len(vocabularies[a] & vocabularies[b]) / len(vocabularies[a] | vocabularies[b])
                assert overlap < 0.1, (a, b, overlap)


def test_english_sentences_read_as_english(world):
    say = world.language("en").render
    assert say((Count("Anna", "have", "dog", 3),)) == "Anna has 3 dogs ."
    assert say((Count("Anna", "buy", "house", None, negated=True),)) == "Anna does not buy houses ."
    assert say((Prop("Lena", "tall", negated=True), Rel("Omar", "teach", "Lena", passive=True))) == (
        "Lena is not tall and Lena is taught by Omar ."
    )
    assert say((Rel("Omar", "meet", "Lena", negated=True, passive=True),)) == "Lena is not met by Omar ."


def test_word_orders_differ(world):
    """SVO, SOV and VSO: where the verb of "Anna helps Marco" goes."""
    clause = (Rel("Anna", "help", "Marco"),)
    positions = {}
    for lang in LANGUAGES:
        words = world.render(clause, lang).split()
        verb = world.language(lang).words["help"]
        positions[lang] = next(i for i, w in enumerate(words) if w.startswith(verb))
    assert world.render(clause, "en") == "Anna helps Marco ."
    assert positions["xc"] == 0  # VSO
    assert positions["xb"] > [w for w in world.render(clause, "xb").split()].index("Marco")  # SOV
    assert len(set(positions.values())) >= 3


def test_mlm_text_has_code_switched_and_parallel_lines(world):
    texts = world.mlm_texts("xb", "train", 600, max_sentences=1)  # one sentence per text: easy to classify
    english_stems = tuple(set(world.language("en").words.values()) - {"and", "is", "by", "not", "does"})
    parallel = [t for t in texts if t.count(" .") == 2]
    mixed = [t for t in texts if t.count(" .") == 1 and any(w.startswith(english_stems) for w in t.split())]
    assert 0.3 * len(texts) < len(parallel) < 0.5 * len(texts)  # MLM_PARALLEL = 0.4
    # MLM_CODE_SWITCH = 0.4, less the code-switched lines whose coin flips borrowed no stem at all
    assert 0.25 * len(texts) < len(mixed) < 0.5 * len(texts)
    # the English side comes first, then its translation
    english = world.language("en")
    assert all(t.split(" . ")[0].split()[1] in {*english.words.values(), *english.forms.values()} for t in parallel)
    documents = world.mlm_texts("xb", "train", 300)
    assert max(t.count(" .") for t in documents) > 2  # several sentences per document by default


def _trigrams(words) -> set[str]:
    return {f"_{w}_"[i : i + 3] for w in words for i in range(len(w))}


def test_cognate_languages_look_closer_to_english_than_distant_ones(world):
    english = _trigrams(world.language("en").words[c] for c in CONTENT_CONCEPTS)
    share = {}
    for lang in LANGUAGES[1:]:
        ours = _trigrams(world.language(lang).words[c] for c in CONTENT_CONCEPTS)
        share[lang] = len(ours & english) / len(ours | english)
    assert share["xa"] > 2 * max(share["xb"], share["xd"])  # xa: 80% cognates; xb, xd: none


def test_parallel_pairs(world):
    pairs = synth_tasks.load_parallel("xd", "test", 50)
    assert len(pairs) == 50 and len({en for en, _ in pairs}) > 40
    assert all(_anchors(en) == _anchors(xx) for en, xx in pairs)
    with pytest.raises(UnknownLanguageError):
        synth_tasks.load_parallel("zz")


def test_bitext_pairs_every_language_with_english_translations(world):
    """synth-bitext: English queries, their translations as candidates, each synthetic language equally,
    from the parallel meanings of the split asked for (train and validation disjoint)."""
    spec = synth_tasks.SYNTH_BITEXT
    assert spec.family is Family.RETRIEVAL and spec.languages == ("en",) and spec.head_key == "dual_encoder"
    size = spec.extra["sizes"]["validation"]
    examples = spec.load("validation", "en")
    others = [lang for lang in LANGUAGES if lang != "en"]
    assert len(examples) == size * len(others)
    assert Counter(ex.candidate_id.split(":")[0] for ex in examples) == {lang: size for lang in others}
    meanings = world.sentence_meanings("validation", size, purpose="parallel")
    for example in examples:
        lang, index = example.candidate_id.split(":")
        meaning = meanings[int(index)]
        assert example.query == world.render(meaning, "en") and example.candidate == world.render(meaning, lang)
        assert _anchors(example.query) == _anchors(example.candidate) and example.candidate_context is None
    train_meanings = set(world.sentence_meanings("train", 1000, purpose="parallel"))
    assert not train_meanings & set(meanings)
    assert all(split_of(m) == "validation" for m in meanings)
    with pytest.raises(UnknownLanguageError, match="no language 'xd'"):
        spec.load("train", "xd")


def test_registered_in_the_registry_when_it_loads():
    try:
        from fastxlt.tasks.base import get_task

        spec = get_task("synth-nli")
    except ImportError:
        pytest.skip("fastxlt.tasks.pair_classification is not in the tree yet")
    assert spec is synth_tasks.SYNTH_NLI and spec.labels == ("entailment", "neutral", "contradiction")
    assert get_task("synth-para").head_key == "synth-para"


# ---- tokenizer ---------------------------------------------------------------------------------------------
def test_tokenizer_round_trip_special_ids_and_pair_template(assets, world):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(assets)
    assert [tokenizer.bos_token_id, tokenizer.pad_token_id, tokenizer.eos_token_id, tokenizer.unk_token_id] == [0, 1, 2, 3]
    assert tokenizer.convert_ids_to_tokens([0, 1, 2, 3]) == ["<s>", "<pad>", "</s>", "<unk>"]
    assert tokenizer.mask_token_id == len(tokenizer) - 1
    for lang in LANGUAGES:
        for example in synth_tasks.SYNTH_PARA.load("validation", lang)[:50]:
            ids = tokenizer(example.text_a)["input_ids"]
            assert tokenizer.decode(ids, skip_special_tokens=True) == example.text_a
            assert tokenizer.unk_token_id not in ids
    a, b = "Anna helps Marco .", "Marco is helped by Anna ."
    ids_a = tokenizer(a, add_special_tokens=False)["input_ids"]
    ids_b = tokenizer(b, add_special_tokens=False)["input_ids"]
    pair = tokenizer(a, b)
    assert pair["input_ids"] == [0] + ids_a + [2, 2] + ids_b + [2]
    assert "token_type_ids" not in pair
    masked = tokenizer("Anna <mask> Marco .")["input_ids"]
    assert tokenizer.mask_token_id in masked and tokenizer.unk_token_id not in masked


def test_tokenizer_training_is_deterministic(tmp_path, world):
    texts = [t for lang in LANGUAGES for t in world.mlm_texts(lang, "train", 400)]
    train_tokenizer(texts, 300, tmp_path / "a")
    train_tokenizer(texts, 300, tmp_path / "c")
    first = json.loads((tmp_path / "a" / "tokenizer.json").read_text())
    again = json.loads((tmp_path / "c" / "tokenizer.json").read_text())
    assert first == again
    assert len(first["model"]["vocab"]) + len(first["added_tokens"]) - 4 <= 300  # specials are in the vocab too


# ---- tiny model ------------------------------------------------------------------------------------------------
def test_tiny_model_loads_with_automodel_and_runs_a_pair(assets):
    from transformers import AutoModel, AutoTokenizer

    model = AutoModel.from_pretrained(assets)
    tokenizer = AutoTokenizer.from_pretrained(assets)
    assert type(model).__name__ == "XLMRobertaModel"
    assert model.config.vocab_size == len(tokenizer) and model.config.pad_token_id == 1
    assert model.config.max_position_embeddings == 128 + 2
    batch = tokenizer(["Anna helps Marco ."], ["Marco is helped by Anna ."], padding="max_length", max_length=128, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state
    assert hidden.shape == (1, 128, model.config.hidden_size) and torch.isfinite(hidden).all()


def test_tiny_encoder_is_deterministic_per_seed(assets):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(assets)
    before = torch.random.get_rng_state()
    first, again, other = (build_tiny_encoder(tokenizer, seed) for seed in (3, 3, 4))
    assert torch.equal(torch.random.get_rng_state(), before)  # the global RNG is untouched
    weights = lambda m: m.embeddings.word_embeddings.weight  # noqa: E731
    assert torch.equal(weights(first), weights(again)) and not torch.equal(weights(first), weights(other))
    assert tiny_xlmr_config(500, num_layers=2).num_hidden_layers == 2


def test_build_default_assets_skips_work_when_present(assets):
    stamps = {p.name: p.stat().st_mtime_ns for p in assets.iterdir()}
    assert {"config.json", "tokenizer.json", "model.safetensors"} <= set(stamps)
    assert build_default_assets(assets) == assets
    assert {p.name: p.stat().st_mtime_ns for p in assets.iterdir()} == stamps


def test_sentences_fit_the_default_max_length(assets, world):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(assets)
    examples = synth_tasks.SYNTH_NLI.load("test", "xc") + synth_tasks.SYNTH_PARA.load("test", "xb")
    lengths = [len(tokenizer(e.text_a, e.text_b)["input_ids"]) for e in examples]
    assert max(lengths) <= 128
    assert not any(re.search(r"\s{2,}", e.text_a) for e in examples)
