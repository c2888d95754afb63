"""The task record and the registry.

A task is a small declarative record (``TaskSpec``): its name, family, languages, splits, label set,
metric, the head it trains, and where its data comes from (a Hugging Face hub dataset and/or local
files in the original published layout). Adding a task is one ``register(TaskSpec(...))`` call plus,
at most, one adapter function that turns a source into the family's example type.
"""

from __future__ import annotations

import enum
import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, TypeVar

from fastxlt.errors import UnknownLanguageError, UnknownTaskError


class Family(str, enum.Enum):
    """Task families; each has its own example type, features, head, loss and decoding."""

    PAIR_CLASSIFICATION = "pair_classification"
    MULTIPLE_CHOICE = "multiple_choice"
    SPAN_QA = "span_qa"
    TOKEN_TAGGING = "token_tagging"
    RETRIEVAL = "retrieval"
    MASKED_LM = "masked_lm"


@dataclass(frozen=True)
class PairExample:
    """One (sentence pair or single sentence) classification example; label -1 = unlabelled."""

    text_a: str
    text_b: str | None
    label: int


@dataclass(frozen=True)
class TextExample:
    """One raw text for masked language modelling."""

    text: str


# An adapter reads one split of one language of a task and returns the family's examples.
# data_dir is None for the hub and a directory of local files in the task's original layout otherwise.
Adapter = Callable[["TaskSpec", str, str, "Path | None"], list[Any]]


@dataclass(frozen=True)
class TaskSpec:
    """Everything the pipeline needs to know about a task.

    ``head`` names the head the task trains: tasks that share a head key (SNLI, MNLI and the ANLI
    rounds in ANLI+) share one head. ``train_language`` is the language of the training data
    (English for every task of the recipe). ``dev_split`` is what early stopping reads.
    """

    name: str
    family: Family
    languages: tuple[str, ...]
    splits: tuple[str, ...]
    metric: str
    adapter: Adapter
    labels: tuple[str, ...] = ()
    head: str = ""
    train_language: str = "en"
    dev_split: str = "validation"
    test_split: str = "test"
    hub_id: str | None = None
    description: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    # Languages the task reads when asked for by name but that "all" leaves out: XTREME-R's additions to an
    # XTREME task (UD-POS lt, pl, ...), so that "all" keeps meaning the XTREME list the published numbers use.
    extra_languages: tuple[str, ...] = ()

    @property
    def head_key(self) -> str:
        return self.head or self.name

    @property
    def num_labels(self) -> int:
        return len(self.labels)

    def check_language(self, language: str) -> str:
        if language not in self.languages and language not in self.extra_languages:
            raise UnknownLanguageError(
                f"task '{self.name}' has no language '{language}'; "
                f"choose from {', '.join(sorted(self.languages + self.extra_languages))}"
            )
        return language

    def check_split(self, split: str) -> str:
        if split not in self.splits:
            raise UnknownTaskError(
                f"task '{self.name}' has no split '{split}'; choose from {', '.join(self.splits)}"
            )
        return split

    def resolve_languages(self, languages: str | list[str] | tuple[str, ...] | None) -> list[str]:
        """'all' / None -> every language of the task; a list or a comma string is checked one by one."""
        if languages is None or languages == "all" or languages == ["all"]:
            return list(self.languages)
        if isinstance(languages, str):
            languages = [part.strip() for part in languages.split(",") if part.strip()]
        return [self.check_language(language) for language in languages]

    def data_files(self, split: str, language: str, data_dir: str | Path | None) -> list[Path] | None:
        """The local files that ``load`` reads for this split and language (None: the hub, or an adapter
        that cannot tell). Raises ``DataNotFoundError`` when they are missing, as ``load`` would, but
        without reading them: the pre-flight check and the evaluation cache's fingerprint use it."""
        self.check_split(split)
        self.check_language(language)
        locate = getattr(self.adapter, "data_files", None)
        if data_dir is None or locate is None:
            return None
        return list(locate(self, split, language, Path(data_dir)))

    def load(self, split: str, language: str, data_dir: str | Path | None = None) -> list[Any]:
        """Read one split of one language, from local files when data_dir is given, else the hub."""
        self.check_split(split)
        self.check_language(language)
        return self.adapter(self, split, language, Path(data_dir) if data_dir is not None else None)


_REGISTRY: dict[str, TaskSpec] = {}


def register(spec: TaskSpec, *, replace: bool = False) -> TaskSpec:
    """Add a task to the registry (user tasks plug in the same way as the built-in ones)."""
    if spec.name in _REGISTRY and not replace:
        raise ValueError(f"task '{spec.name}' is already registered; pass replace=True to override it")
    _REGISTRY[spec.name] = spec
    return spec


def get_task(name: str) -> TaskSpec:
    _ensure_builtin_tasks()
    try:
        return _REGISTRY[name]
    except KeyError:
        known = ", ".join(sorted(_REGISTRY))
        raise UnknownTaskError(f"unknown task '{name}'; known tasks: {known}") from None


def all_tasks() -> dict[str, TaskSpec]:
    _ensure_builtin_tasks()
    return dict(_REGISTRY)


PLUGINS = "fastxlt.plugins"  # the module that imports every built-in task family (and so registers it)


def _ensure_builtin_tasks() -> None:
    """Load the built-in task families (``fastxlt.plugins`` lists them), which register themselves here.

    Why by name: the families sit above the registry (docs/design.md, "Layers") and import it to register,
    so the registry imports none of them; like an entry point, it names the plugin list and loads it on the
    first lookup. A caller that imported only this module still finds ``get_task("xnli")``, and one that
    never looks a task up does not pay for torch and every family.
    """
    importlib.import_module(PLUGINS)


_Entry = TypeVar("_Entry")


def family_entry(table: Mapping[Family, _Entry], spec: TaskSpec, missing: str) -> _Entry:
    """What a family registered in ``table`` (its ``FAMILY_OPS``, its head factory) for ``spec``'s family.

    A family registers when its module is imported, so a miss loads the plugin list first; a family still
    absent raises NotImplementedError naming the task, its family and ``missing`` ("has no head yet").
    """
    if spec.family not in table:
        _ensure_builtin_tasks()
    try:
        return table[spec.family]
    except KeyError:
        raise NotImplementedError(f"task '{spec.name}': family '{spec.family.value}' {missing}") from None
