"""The robustness package's one-line errors, in a module of their own so that every layer of the package
(scripts, segmentation, dictionaries, the registry) can raise them without importing each other."""

from __future__ import annotations

from fastxlt.errors import ConfigError


class PerturbationError(ConfigError):
    """An unknown perturbation, a bad strength, or a perturbation that cannot run on a task."""


class MissingLibraryError(PerturbationError):
    """A segmentation or script-conversion library that a language needs is not installed."""


EXTRA = "pip install 'fastxlt[robustness]'"


def require(module: str, purpose: str, package: str | None = None):
    """Import ``module`` or refuse in one line: a perturbation must not fall back to a worse segmentation
    silently, because the drop it measures would then depend on what happened to be installed."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingLibraryError(f"{purpose} needs the '{package or module}' package: {EXTRA}") from None
