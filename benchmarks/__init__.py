"""The benchmarks, a package so that each runs as ``python -m benchmarks.NAME`` from the repository root.

Run as a module, a benchmark finds installed packages first: run as a file, its own folder would come first on
``sys.path`` and a script named like a distribution (``kernels.py`` once shadowed the ``kernels`` package that
transformers imports) would be imported in its place. ``tests/test_module_names.py`` keeps names from colliding.
"""
