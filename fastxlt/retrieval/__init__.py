"""Sentence retrieval with the intermediate encoder: Tatoeba and BUCC 2018 (no target fine-tuning).

Modules, in the order data flows through them:

* ``languages``  ISO 639-1 <-> LASER codes, default language lists.
* ``files``      low-level readers (text lines, hub parquet, the hub) with one-line errors.
* ``embed``      ``SentenceEncoder`` protocol and its torch backend (layer, pooling, L2 norm, batching).
* ``search``     exact inner-product kNN: one blocked pass for both directions, and FAISS.
* ``margin``     margin scoring and "max" bitext mining.
* ``tatoeba``    Tatoeba readers (LASER / XTREME / hub layouts) and accuracy.
* ``bucc``       BUCC readers, mining with id expansion, threshold tuned on dev, F1 on test.
* ``protocols``  named presets (the paper's and the usual alternatives).

The command line (``fastxlt-eval --retrieval``, ``python -m fastxlt.cli.retrieval``) lives with every other one, in
``fastxlt.cli.retrieval``.
"""
