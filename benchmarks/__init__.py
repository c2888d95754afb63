"""The benchmarks, a package: each runs as ``python -m benchmarks.NAME`` from the repository root, or as a file.

Run as a plain file, Python puts the script's own folder first on ``sys.path``, and a script named like a
distribution (``kernels.py`` once shadowed the ``kernels`` package that transformers imports) would be imported in
its place; so each benchmark run as a file replaces that entry with the repository root before importing anything
else. ``tests/test_module_names.py`` keeps names from colliding all the same.
"""
