"""The robustness error, in a module of its own so the lowest modules (``scripts``) can raise it without
importing the registry that imports them."""

from __future__ import annotations

from fastxlt.errors import ConfigError


class PerturbationError(ConfigError):
    """An unknown perturbation, a bad strength, or a perturbation that cannot run on a task."""
