"""The synthetic tasks in the registry: ``synth-nli``, ``synth-para``, ``synth-mlm``, ``synth-bitext``.

Like the real recipe: training data in English only, validation and test sets in every language
(parallel across languages, as XNLI / PAWS-X), and raw text in every language for masked LM.
``synth-bitext`` is the pretraining's alignment objective: (English sentence, its translation) pairs of
every synthetic language, trained as a dual encoder with in-batch negatives (see ``load_bitext``).
Adapters ignore ``data_dir`` and generate from the default world; ``spec.extra`` holds the seed and
the split sizes, so a bigger or smaller world is a ``register(replace(spec, extra=...), replace=True)``.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from fastxlt.errors import UnknownLanguageError
from fastxlt.retrieval.dual_encoder import DEV_METRIC as RETRIEVAL_METRIC
from fastxlt.retrieval.dual_encoder import RetrievalExample
from fastxlt.synthetic.semantics import NLI_LABELS, PARA_LABELS
from fastxlt.synthetic.world import DEFAULT_SEED, LANGUAGES, SPLITS, NliItem, ParaItem, get_world
from fastxlt.tasks.base import Family, PairExample, TaskSpec, TextExample, register

PAIR_SIZES = {"train": 4000, "validation": 500, "test": 500}
MLM_SIZES = {"train": 4000, "validation": 200, "test": 200}
BITEXT_SIZES = {"train": 4000, "validation": 100, "test": 100}  # translation pairs per synthetic language


def split_size(spec: TaskSpec, split: str) -> int:
    return int(spec.extra["sizes"][split])


def _check_train_language(spec: TaskSpec, split: str, language: str) -> None:
    if split == "train" and language != spec.train_language:
        raise UnknownLanguageError(
            f"task '{spec.name}' has training data in '{spec.train_language}' only (zero-shot transfer); "
            f"use split 'validation' or 'test' for '{language}'"
        )


@lru_cache(maxsize=32)
def _nli_items(seed: int, split: str, size: int) -> list[NliItem]:
    return get_world(seed).nli_items(split, size)


@lru_cache(maxsize=32)
def _para_items(seed: int, split: str, size: int) -> list[ParaItem]:
    return get_world(seed).para_items(split, size)


def load_nli(spec: TaskSpec, split: str, language: str, data_dir: Path | None) -> list[PairExample]:
    """Premise / hypothesis pairs; label 0 entailment, 1 neutral, 2 contradiction."""
    _check_train_language(spec, split, language)
    seed = spec.extra["seed"]
    world = get_world(seed)
    return [
        PairExample(world.render(item.premise, language), world.render(item.hypothesis, language), item.label)
        for item in _nli_items(seed, split, split_size(spec, split))
    ]


def load_para(spec: TaskSpec, split: str, language: str, data_dir: Path | None) -> list[PairExample]:
    """Sentence pairs; label 1 same meaning, 0 close but different (swapped roles, changed value...)."""
    _check_train_language(spec, split, language)
    seed = spec.extra["seed"]
    world = get_world(seed)
    return [
        PairExample(world.render(item.first, language), world.render(item.second, language), item.label)
        for item in _para_items(seed, split, split_size(spec, split))
    ]


def load_mlm(spec: TaskSpec, split: str, language: str, data_dir: Path | None) -> list[TextExample]:
    """Raw text in ``language``, with some code-switched and parallel lines (see ``World.mlm_texts``)."""
    world = get_world(spec.extra["seed"])
    return [TextExample(text) for text in world.mlm_texts(language, split, split_size(spec, split))]


def load_bitext(spec: TaskSpec, split: str, language: str, data_dir: Path | None) -> list[RetrievalExample]:
    """(English sentence, its translation) pairs for every synthetic language, as dual-encoder examples.

    Why it exists: measured on the default world, masked LM alone (800 or 2,400 steps, with code-switched
    and parallel documents) leaves the tiny encoder's languages apart -- English -> xd sentence retrieval
    with mean pooling finds the translation first for 1-3% of sentences at the last layer -- and an
    English-trained head then transfers to some languages by chance only. XLM-R gets its alignment from
    scale; the tiny model gets it from this objective (translation ranking, as in LaBSE and post-pretraining
    alignment), trained beside MLM in the pretraining phase. The pairs come from the ``parallel_pairs``
    meanings of ``split`` (never the test items of ``synth-para`` / ``synth-nli``, which are pairs of meanings
    hashed on their own); ``language`` is the English side, the only one a phase asks for.
    """
    _check_train_language(spec, split, language)
    seed, size = spec.extra["seed"], split_size(spec, split)
    world = get_world(seed)
    return [
        RetrievalExample(english, translation, None, f"{code}:{index}")
        for code in LANGUAGES if code != spec.train_language
        for index, (english, translation) in enumerate(world.parallel_pairs(code, split, size))
    ]


def load_parallel(language: str, split: str = "test", size: int = 500, seed: int = DEFAULT_SEED) -> list[tuple[str, str]]:
    """``synth-parallel``: (English, ``language``) translation pairs, for retrieval (Tatoeba/BUCC-like) runs."""
    if language not in LANGUAGES:
        raise UnknownLanguageError(f"synthetic language '{language}' does not exist; choose from {', '.join(LANGUAGES)}")
    return get_world(seed).parallel_pairs(language, split, size)


SYNTH_NLI = register(
    TaskSpec(
        name="synth-nli",
        family=Family.PAIR_CLASSIFICATION,
        languages=LANGUAGES,
        splits=SPLITS,
        metric="accuracy",
        adapter=load_nli,
        labels=NLI_LABELS,
        head="synth-nli",
        description="synthetic NLI over the embedded world (intermediate task of the default run)",
        extra={"seed": DEFAULT_SEED, "sizes": dict(PAIR_SIZES), "synthetic": True},
    )
)
SYNTH_PARA = register(
    TaskSpec(
        name="synth-para",
        family=Family.PAIR_CLASSIFICATION,
        languages=LANGUAGES,
        splits=SPLITS,
        metric="accuracy",
        adapter=load_para,
        labels=PARA_LABELS,
        head="synth-para",
        description="synthetic PAWS-like paraphrase detection (target task of the default run)",
        extra={"seed": DEFAULT_SEED, "sizes": dict(PAIR_SIZES), "synthetic": True},
    )
)
SYNTH_MLM = register(
    TaskSpec(
        name="synth-mlm",
        family=Family.MASKED_LM,
        languages=LANGUAGES,
        splits=SPLITS,
        metric="perplexity",
        adapter=load_mlm,
        head="mlm",
        description="raw synthetic multilingual text, partly code-switched and parallel (MLM phase)",
        extra={"seed": DEFAULT_SEED, "sizes": dict(MLM_SIZES), "synthetic": True},
    )
)
SYNTH_BITEXT = register(
    TaskSpec(
        name="synth-bitext",
        family=Family.RETRIEVAL,
        languages=("en",),
        splits=SPLITS,
        metric=RETRIEVAL_METRIC,
        adapter=load_bitext,
        head="dual_encoder",
        description="synthetic translation pairs of every language, a dual encoder's in-batch ranking (pretraining alignment)",
        extra={"seed": DEFAULT_SEED, "sizes": dict(BITEXT_SIZES), "synthetic": True},
    )
)
