"""Text perturbations that need no model: character noise and local word-order shuffles.

Both work on grapheme clusters (``fastxlt.robustness.scripts``) and touch only the language's own
letters and words; digits, punctuation, spaces and foreign-script words (Latin names in Chinese text)
stay as they are.

- Character noise, strength = the share of the language's own letter clusters affected. Each chosen
  cluster is swapped with its neighbour in the same word, dropped, followed by an inserted letter, or
  substituted by a letter; inserted and substituted letters come from the language's own alphabet, in
  the script of the cluster they replace or follow (kana for kana, Hangul for Hangul, never Latin in
  Thai), upper-cased like the original. ``char`` mixes the four operations uniformly; ``char_swap``,
  ``char_drop``, ``char_insert`` and ``char_substitute`` apply one. Under ``char`` a swap or drop that
  would not change or would empty a word (a one-cluster word, a run of one letter) becomes a
  substitution; under ``char_swap`` / ``char_drop`` such a cluster stays as it is.
- Word order, strength = the share of windows of ``WINDOW`` consecutive words whose words are permuted
  (about that share of the words moves); separators stay in place.
"""

from __future__ import annotations

import random

from fastxlt.robustness.scripts import Alphabet, alphabet, graphemes, is_word_char_cluster, segment_units
from fastxlt.robustness.seeding import affected_count

CHAR_OPERATIONS = ("swap", "drop", "insert", "substitute")
WINDOW = 3


def char_noise(text: str, language: str, strength: float, rng: random.Random, operations=CHAR_OPERATIONS) -> str:
    """``text`` with ``strength`` of its own-script letter clusters swapped, dropped, followed by an insertion
    or substituted (one operation drawn from ``operations`` per chosen cluster)."""
    if strength <= 0:
        return text
    letters = alphabet(language)
    clusters = graphemes(text)
    scripts = [letters.script_of(c) for c in clusters]
    own = [i for i, script in enumerate(scripts) if script is not None]
    chosen = sorted(rng.sample(own, affected_count(rng, strength, len(own))))
    out = list(clusters)
    for i in chosen:
        operation = rng.choice(operations)
        partner = _swap_partner(i, clusters, scripts)
        if operation == "swap" and partner is None or operation == "drop" and _word_length(i, clusters) < 2:
            if len(operations) == 1:
                continue  # char_swap / char_drop only swap or drop: this cluster cannot be
            operation = "substitute"
        if operation == "swap":
            out[i], out[partner] = out[partner], out[i]
        elif operation == "drop":
            out[i] = ""
        elif operation == "insert":
            out[i] = out[i] + _letter(letters, scripts[i], clusters[i], rng)
        else:
            out[i] = _letter(letters, scripts[i], clusters[i], rng, avoid=clusters[i])
    return "".join(out)


def _letter(letters: Alphabet, script: str, like: str, rng: random.Random, avoid: str | None = None) -> str:
    """A letter of the language's alphabet in ``script``, differing from ``avoid`` (a substitution changes)."""
    for _ in range(8):
        letter = letters.cased_choice(script, like, rng.choice)
        if letter != avoid:
            return letter
    return letter


def _swap_partner(i: int, clusters: list[str], scripts: list[str | None]) -> int | None:
    """The next (else the previous) own-letter cluster of the same word that differs from cluster ``i``."""
    for j in (i + 1, i - 1):
        if 0 <= j < len(clusters) and scripts[j] is not None and clusters[j] != clusters[i]:
            return j
    return None


def _word_length(i: int, clusters: list[str]) -> int:
    """Clusters in the word around cluster ``i``."""
    start = i
    while start > 0 and is_word_char_cluster(clusters[start - 1]):
        start -= 1
    end = i + 1
    while end < len(clusters) and is_word_char_cluster(clusters[end]):
        end += 1
    return end - start


def word_order(text: str, language: str, strength: float, rng: random.Random, segmenter=None,
               window: int = WINDOW) -> str:
    """``text`` with the words of ``strength`` of its windows of ``window`` consecutive words permuted.

    ``segmenter(text, language) -> [(piece, is_word)]`` defaults to ``segment_units`` (the documented,
    model-free segmentation); ``scripts.tokenizer_segmenter(tokenizer)`` uses the model's pieces."""
    if strength <= 0:
        return text
    parts = (segmenter or segment_units)(text, language)
    word_slots = [i for i, (_, is_word) in enumerate(parts) if is_word]
    windows = [word_slots[k : k + window] for k in range(0, len(word_slots), window)]
    windows = [w for w in windows if len({parts[i][0] for i in w}) > 1]  # a permutation must change something
    out = [piece for piece, _ in parts]
    for slots in rng.sample(windows, affected_count(rng, strength, len(windows))):
        words = [parts[i][0] for i in slots]
        shuffled = list(words)
        while shuffled == words:
            rng.shuffle(shuffled)
        for slot, word in zip(slots, shuffled):
            out[slot] = word
    return "".join(out)
