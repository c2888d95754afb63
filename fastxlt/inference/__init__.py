"""fastxlt.inference: what training, evaluation, retrieval and robustness all need to run a model over data.

Why a package of its own: length-sorted token-budget batching (:mod:`.batching`), the evaluation precision
and batch size (:mod:`.precision`) and batched prediction (:mod:`.predict`) are used by the training loop
(English dev evaluation) as much as by the evaluation layer above it. Living here, below both, they let
``training`` run predictions without importing ``evaluation`` (docs/design.md, layer 5).
"""
