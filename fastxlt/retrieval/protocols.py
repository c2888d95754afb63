"""Named retrieval protocols: the paper's, and the alternatives people compare against.

A protocol fixes how sentences are embedded (which hidden layer, which pooling) and how candidates are
scored (cosine or margin). ``--layer`` and ``--pooling`` on the command line override a preset.

* ``xtreme`` (alias ``paper``): XTREME's protocol as used by X-STILTs (Hu et al., 2020; Phang et al.,
  2020): hidden state 14 of 24 (the same relative depth for other encoders), mean pooling over
  non-padding tokens, cosine nearest neighbour for Tatoeba; BUCC with the ratio margin, k=4 in both
  directions, "max" retrieval.
* ``cls``: the same with the first token's hidden state instead of the mean.
* ``margin``: Tatoeba re-ranked with the ratio margin (k=4), as LASER evaluates it.
* ``last-layer``: the last hidden layer, mean pooling (what a sentence encoder normally exposes).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from fastxlt.errors import ConfigError


@dataclass(frozen=True)
class RetrievalProtocol:
    name: str
    description: str
    layer: int | None = None  # None: round(14 / 24 * num_layers); -1: the last layer
    pooling: str = "mean"
    tatoeba_scoring: str = "cosine"
    margin: str = "ratio"  # margin used by BUCC, and by Tatoeba when tatoeba_scoring == "margin"
    k: int = 4

    def with_overrides(self, *, layer: int | None = None, pooling: str | None = None) -> RetrievalProtocol:
        """The preset with the command line's --layer / --pooling applied."""
        changes = {}
        if layer is not None:
            changes["layer"] = layer
        if pooling is not None:
            changes["pooling"] = pooling
        return replace(self, **changes) if changes else self


PROTOCOLS: dict[str, RetrievalProtocol] = {
    "xtreme": RetrievalProtocol(
        "xtreme", "XTREME / X-STILTs: layer 14 of 24 (scaled), mean pooling, cosine; BUCC ratio margin k=4"
    ),
    "cls": RetrievalProtocol("cls", "as xtreme, but first-token (CLS) pooling", pooling="cls"),
    "margin": RetrievalProtocol(
        "margin", "as xtreme, but Tatoeba ranked by the ratio margin (k=4)", tatoeba_scoring="margin"
    ),
    "last-layer": RetrievalProtocol("last-layer", "as xtreme, but the last hidden layer", layer=-1),
}
ALIASES = {"paper": "xtreme", "default": "xtreme"}


def get_protocol(name: str) -> RetrievalProtocol:
    key = ALIASES.get(name, name)
    if key not in PROTOCOLS:
        raise ConfigError(f"unknown retrieval protocol '{name}'; choose from {', '.join(PROTOCOLS)}")
    return PROTOCOLS[key]
