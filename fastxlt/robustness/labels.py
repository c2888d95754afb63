"""Which perturbations keep which task's gold label, and the refusal of those that do not.

Why: a robustness drop is only meaningful when the perturbed example still has the gold label. PAWS-X
pairs are paraphrases or not *because of* word order (same words, swapped roles), so shuffling the words
of one sentence can turn a paraphrase into a non-paraphrase: the model would be scored against a label
the text no longer has. The full perturbation x task table, with the reasoning per cell, is in
docs/robustness.md; only the pairs below change labels.
"""

from __future__ import annotations

from typing import Iterable

from fastxlt.robustness.errors import PerturbationError

LABEL_CHANGING: dict[tuple[str, str], str] = {
    ("pawsx", "word_order"): "PAWS-X pairs differ by word order, so shuffling a sentence can turn a paraphrase "
                             "into a non-paraphrase",
}
FORCE_FLAG = "--allow-label-changing"


def label_changing_reason(task: str, name: str) -> str | None:
    """Why perturbation ``name`` can change ``task``'s labels (None when it keeps them)."""
    return LABEL_CHANGING.get((task, name))


def check_label_preserving(task: str, names: Iterable[str], allow: bool = False) -> None:
    """Refuse, in one line, a perturbation that can change the task's labels, unless ``allow`` (for analysis)."""
    for name in names:
        reason = label_changing_reason(task, name)
        if reason and not allow:
            raise PerturbationError(f"{name} is refused on {task}: {reason}; {FORCE_FLAG} forces it for analysis")
