"""The head registry: every trainable family has a head, and each head keeps the module layout that saved
``heads.pt`` files were written with (their state-dict keys are these parameter names, under the head key).

Heads live in their family's module and register a factory (``fastxlt.tasks.head_registry``); a head whose
attributes are renamed or reordered would no longer load the heads of finished runs, so the expected names,
shapes and submodules are written out here. Milliseconds: a stand-in encoder config, no weights loaded.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch import nn

from fastxlt.models.heads import MaskedLMHead, make_head
from fastxlt.retrieval.dual_encoder import DualEncoderHead
from fastxlt.tasks.base import Family, all_tasks, get_task
from fastxlt.tasks.features import FAMILY_OPS
from fastxlt.tasks.head_registry import HEAD_FACTORIES, head_factory
from fastxlt.tasks.multiple_choice import MultipleChoiceHead
from fastxlt.tasks.pair_classification import ClassificationHead
from fastxlt.tasks.span_qa import SpanHead
from fastxlt.tasks.tagging import TokenTaggingHead

HIDDEN, VOCAB = 8, 20

# family -> (a task, head class, [(submodule, type)], [(parameter, shape)]), in registration order
EXPECTED = {
    Family.PAIR_CLASSIFICATION: ("xnli", ClassificationHead, [("dropout", "Dropout"), ("dense", "Linear"), ("out_proj", "Linear")],
                                 [("dense.weight", (8, 8)), ("dense.bias", (8,)), ("out_proj.weight", (3, 8)), ("out_proj.bias", (3,))]),
    Family.SPAN_QA: ("xquad", SpanHead, [("qa_outputs", "Linear")], [("qa_outputs.weight", (2, 8)), ("qa_outputs.bias", (2,))]),
    Family.TOKEN_TAGGING: ("panx", TokenTaggingHead, [("dropout", "Dropout"), ("classifier", "Linear")],
                           [("classifier.weight", (7, 8)), ("classifier.bias", (7,))]),
    Family.MULTIPLE_CHOICE: ("xcopa", MultipleChoiceHead, [("dense", "Linear"), ("dropout", "Dropout"), ("scorer", "Linear")],
                             [("dense.weight", (8, 8)), ("dense.bias", (8,)), ("scorer.weight", (1, 8)), ("scorer.bias", (1,))]),
    Family.MASKED_LM: ("synth-mlm", MaskedLMHead, [("dense", "Linear"), ("layer_norm", "LayerNorm")],
                       [("bias", (20,)), ("dense.weight", (8, 8)), ("dense.bias", (8,)), ("layer_norm.weight", (8,)),
                        ("layer_norm.bias", (8,))]),
    Family.RETRIEVAL: ("squad_retrieval", DualEncoderHead, [], []),
}  # fmt: skip


def stand_in_encoder() -> SimpleNamespace:
    """Enough of an encoder for make_head: a config with the sizes and the word embeddings to tie to."""
    config = SimpleNamespace(hidden_size=HIDDEN, hidden_dropout_prob=0.1, layer_norm_eps=1e-5)
    embeddings = nn.Embedding(VOCAB, HIDDEN)
    return SimpleNamespace(config=config, get_input_embeddings=lambda: embeddings)


def test_every_family_with_tasks_has_a_head_and_ops():
    families = {spec.family for spec in all_tasks().values()}  # loads the plugin list: every family registers
    assert families == set(Family)
    assert set(HEAD_FACTORIES) == families and set(FAMILY_OPS) == families and set(EXPECTED) == families


@pytest.mark.parametrize("family", list(EXPECTED), ids=lambda family: family.value)
def test_make_head_keeps_the_saved_layout(family):
    task, head_class, submodules, parameters = EXPECTED[family]
    spec = get_task(task)
    assert spec.family is family
    head = make_head(spec, stand_in_encoder(), "cls")
    assert type(head) is head_class
    assert [(name, type(module).__name__) for name, module in head.named_children()] == submodules
    assert [(name, tuple(tensor.shape)) for name, tensor in head.state_dict().items()] == parameters


def test_a_head_is_the_same_for_the_same_seed():
    spec = get_task("xnli")
    torch.manual_seed(0)
    first = make_head(spec, stand_in_encoder(), "mean").state_dict()
    torch.manual_seed(0)
    second = make_head(spec, stand_in_encoder(), "mean").state_dict()
    assert all(torch.equal(first[name], second[name]) for name in first)


def test_a_family_without_a_head_is_named():
    spec = get_task("xnli")
    saved = HEAD_FACTORIES.pop(spec.family)
    try:
        with pytest.raises(NotImplementedError, match="task 'xnli': family 'pair_classification' has no head yet"):
            head_factory(spec)
    finally:
        HEAD_FACTORIES[spec.family] = saved


@pytest.mark.parametrize("task", ["xnli", "xcopa"])
def test_an_unknown_pooling_is_refused(task):
    with pytest.raises(ValueError, match="unknown pooling 'max'"):
        make_head(get_task(task), stand_in_encoder(), "max")
