"""The XTREME-R benchmark (Ruder et al., 2021, arXiv 2104.07412): its tasks, metrics and score, and the suite
that evaluates a model on every XTREME-R task whose data exists (``fastxlt-eval --suite xtreme-r``).

Tasks, languages and metrics are those of the official scorer, google-research/xtreme ``evaluate.py`` at
838c13b69daafb9328785d16caae2711e4012123 (``XTREME_R_TASK2LANGS``, ``METRIC_FUNCTION``):

==========================  =======================  ==============  ======================================
category                    task (scorer's key)      metric          languages (fastxlt.tasks.languages)
==========================  =======================  ==============  ======================================
classification              xnli, xcopa              accuracy        15, 11
structured prediction       udpos, panx (WikiANN)    seqeval F1      38, 48
question answering          xquad, mlqa, tydiqa      (F1 + EM) / 2   12, 7, 9
retrieval                   tatoeba, mewslix,        accuracy,       41, 11, 11
                            lareqa                   mAP@20, mAP@20
==========================  =======================  ==============  ======================================

How the score is computed (the scorer's ``evaluate``): a task's score is the mean over its languages of the
official metric (QA: the mean of the language-averaged F1 and EM, which equals the mean of per-language
(F1 + EM) / 2); the overall score is the mean of the task scores (``all_task``); a category's score is the mean
of its tasks' scores. ``category_mean`` (the mean of the category scores, a leaderboard-style average that
weighs categories equally) is reported beside it, never instead of it.

What fastxlt does differently, and says so in every result (``deviations``):

- The scorer cannot produce an overall score as shipped: LAReQA's language list is empty (so LAReQA has no
  score and ``all_task`` is never computed), XQuAD expects Romanian that ``download_data.sh`` does not fetch,
  and UD-POS expects Wolof that ``train_udpos.sh`` never predicts (its ``--predict_langs`` lacks ``wo``).
  fastxlt scores LAReQA over the 11 XQuAD-R languages, and XQuAD ro / UD-POS wo whenever their files exist.
- Categories follow the paper (retrieval = Tatoeba, Mewsli-X and LAReQA); the scorer's group table leaves
  LAReQA out of every group and lists XCOPA a second time as ``multi_choice``.
- Scores are computed over what exists: a language without its test file (or whose test gold is withheld,
  e.g. PAN-X test in XTREME's download) is skipped and listed; a task is averaged over the languages it has;
  the overall score is over the tasks that have a score. The official scorer refuses all three.

What the suite evaluates. Sequence tasks (xnli ... tydiqa) need a head fine-tuned on the task's English
training data, which ``fastxlt run`` leaves in its phase store: ``--model`` is a run directory (a single
experiment's or a grid's: its cells are grouped by every axis but ``target``, so each group's cells, one per
target task, make up one XTREME-R column) or a phase's model directory. A bare encoder (a Hugging Face directory or
hub name, e.g. multilingual-e5-small) has no heads: its sequence tasks are skipped ("no fine-tuned head") and
only the retrieval tasks run. Retrieval embeds with the encoder before target fine-tuning, as X-STILTs does
(DESIGN.md): the intermediate-phase encoder of an arm, or the pretrained (MLM-phase) encoder of the baseline.
Tatoeba uses the XTREME protocol (``fastxlt.retrieval.protocols``); LAReQA and Mewsli-X call
``fastxlt.retrieval.lareqa`` / ``fastxlt.retrieval.mewsli``, skipped as "not available" when those are absent.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastxlt.config import read_yaml_file
from fastxlt.errors import CheckpointError, ConfigError, CorruptDataError, DataNotFoundError
from fastxlt.evaluation.model_eval import evaluate_models, find_models
from fastxlt.models.encoder import resolve_encoder_path
from fastxlt.models.transfer import read_heads_file
from fastxlt.retrieval.embed import load_sentence_encoder
from fastxlt.retrieval.languages import tatoeba_language
from fastxlt.retrieval.protocols import get_protocol
from fastxlt.retrieval.tatoeba import locate_tatoeba, read_tatoeba, tatoeba_accuracy
from fastxlt.tasks import languages as langs
from fastxlt.tasks.aggregate import task_score
from fastxlt.tasks.base import get_task
from fastxlt.tasks.sanity import check_scorable
from fastxlt.utils.io import read_json, write_json_atomic
from fastxlt.utils.locks import DirectoryLock
from fastxlt.utils.run_layout import CELL_FILENAME, CONFIG_FILENAME, GRID_FILENAME, cell_dir, cell_phase_dirs, is_grid_dir

SUITE = "xtreme-r"

CLASSIFICATION = "classification"
STRUCTURED_PREDICTION = "structured_prediction"
QUESTION_ANSWERING = "question_answering"
RETRIEVAL = "retrieval"

# How a task is evaluated: a fine-tuned head through fastxlt.evaluation.model_eval, or one of the retrieval paths.
HEAD, TATOEBA, LAREQA, MEWSLIX = "head", "tatoeba", "lareqa", "mewslix"


@dataclass(frozen=True)
class SuiteTask:
    """One XTREME-R task: the scorer's key, fastxlt's task name, category, metric, languages and data folders."""

    key: str
    task: str | None  # fastxlt task registry name (None: a retrieval task outside the registry)
    category: str
    metric: str
    languages: tuple[str, ...]
    folders: tuple[str, ...]  # data folders under the data root, tried in order
    kind: str = HEAD


TASKS: tuple[SuiteTask, ...] = (
    SuiteTask("xnli", "xnli", CLASSIFICATION, "accuracy", langs.XTREME_R_XNLI, ("xnli",)),
    SuiteTask("xcopa", "xcopa", CLASSIFICATION, "accuracy", langs.XTREME_R_XCOPA, ("xcopa",)),
    SuiteTask("udpos", "udpos", STRUCTURED_PREDICTION, "f1", langs.XTREME_R_UDPOS, ("ud", "udpos")),
    SuiteTask("panx", "panx", STRUCTURED_PREDICTION, "f1", langs.XTREME_R_PANX, ("panx", "wikiann")),
    SuiteTask("xquad", "xquad", QUESTION_ANSWERING, "(f1+em)/2", langs.XTREME_R_XQUAD, ("xquad",)),
    SuiteTask("mlqa", "mlqa", QUESTION_ANSWERING, "(f1+em)/2", langs.XTREME_R_MLQA, ("mlqa",)),
    SuiteTask("tydiqa", "tydiqa", QUESTION_ANSWERING, "(f1+em)/2", langs.XTREME_R_TYDIQA, ("tydiqa",)),
    SuiteTask("tatoeba", None, RETRIEVAL, "accuracy", langs.XTREME_R_TATOEBA, ("tatoeba",), TATOEBA),
    SuiteTask("mewslix", None, RETRIEVAL, "map@20", langs.XTREME_R_MEWSLIX, ("mewsli_x", "mewslix", "mewsli-x"),
              MEWSLIX),
    SuiteTask("lareqa", None, RETRIEVAL, "map@20", langs.XTREME_R_LAREQA, ("xquad_r", "lareqa"), LAREQA),
)  # fmt: skip
TASKS_BY_KEY = {task.key: task for task in TASKS}
CATEGORIES: dict[str, tuple[str, ...]] = {
    category: tuple(task.key for task in TASKS if task.category == category)
    for category in (CLASSIFICATION, STRUCTURED_PREDICTION, QUESTION_ANSWERING, RETRIEVAL)
}

# The scorer's own problems, listed with every result (see the module docstring).
SCORER_DEVIATIONS = (
    "lareqa: the official scorer's language list is empty (XTREME_R_TASK2LANGS['lareqa'] = []), so it never scores "
    "LAReQA nor an overall score; fastxlt scores it over the 11 XQuAD-R languages, in the retrieval category as in "
    "the paper (the scorer's retrieval group is tatoeba + mewslix only)",
)


# ---------------------------------------------------------------------------------------------- the score


def xtreme_r_score(task_scores: Mapping[str, float | None]) -> dict[str, Any]:
    """The XTREME-R aggregate of per-task scores (each already the language average of the task's metric).

    Returns ``{"tasks", "categories": {name: {"score", "tasks", "missing"}}, "score", "category_mean",
    "missing"}``: ``score`` is the official ``all_task`` (mean of the task scores), over the tasks that have one;
    ``missing`` lists the XTREME-R tasks without a score (then ``score`` is partial, and says so in ``missing``).
    A task whose score is None counts as missing; an unknown task name is an error.
    """
    unknown = sorted(set(task_scores) - set(TASKS_BY_KEY))
    if unknown:
        raise ConfigError(f"not XTREME-R tasks: {', '.join(unknown)}; the tasks are {', '.join(TASKS_BY_KEY)}")
    scored = {key: float(value) for key, value in task_scores.items() if value is not None}
    categories = {}
    for category, keys in CATEGORIES.items():
        present = [scored[key] for key in keys if key in scored]
        categories[category] = {
            "score": _mean(present),
            "tasks": [key for key in keys if key in scored],
            "missing": [key for key in keys if key not in scored],
        }
    category_scores = [c["score"] for c in categories.values() if c["score"] is not None]
    return {
        "tasks": {key: scored[key] for key in TASKS_BY_KEY if key in scored},
        "categories": categories,
        "score": _mean(list(scored.values())),
        "category_mean": _mean(category_scores),
        "missing": [key for key in TASKS_BY_KEY if key not in scored],
    }


def deviations(tasks: Mapping[str, Mapping[str, Any]], skipped_tasks: Mapping[str, str]) -> list[str]:
    """Every way a suite result departs from the official XTREME-R score, one line each.

    ``tasks``: task key -> {"languages": {lang: score}, "skipped_languages": {lang: reason}};
    ``skipped_tasks``: task key -> reason.
    """
    lines = list(SCORER_DEVIATIONS)
    xquad = tasks.get("xquad")
    if xquad is not None:
        if "ro" in xquad["languages"]:
            lines.append("xquad: ro is scored; download_data.sh does not fetch it, so official runs lack it")
    udpos = tasks.get("udpos")
    if udpos is not None and "wo" in udpos["languages"]:
        lines.append("udpos: wo is scored; train_udpos.sh never predicts it, so official runs lack it")
    for key, reason in skipped_tasks.items():
        lines.append(f"{key}: not scored ({reason})")
    for key, result in tasks.items():
        for language, reason in result.get("skipped_languages", {}).items():
            lines.append(f"{key} {language}: not scored ({reason}); {key} is averaged over the languages it has")
    missing = [key for key in TASKS_BY_KEY if key not in tasks]
    if missing and tasks:
        lines.append(f"overall score over {len(tasks)} of {len(TASKS)} tasks (missing: {', '.join(missing)})")
    return lines


def _mean(values: Sequence[float]) -> float | None:
    return float(statistics.fmean(values)) if values else None


# ---------------------------------------------------------------------------------------------- models


@dataclass
class SuiteModel:
    """One column of the suite: the model directory holding each head, and the encoder retrieval embeds with."""

    name: str
    heads: dict[str, Path] = field(default_factory=dict)  # head key -> model directory (encoder/ + heads.pt)
    retrieval_encoder: str = ""


def plan_models(model: str | Path) -> list[SuiteModel]:
    """The columns ``--model`` stands for: a grid run directory, a run or phase model directory, or a bare encoder."""
    path = Path(model)
    if is_grid_dir(path):
        return _grid_models(path)
    try:
        arms = find_models(path) if path.is_dir() else {}
    except CheckpointError:  # no heads.pt anywhere: a bare encoder
        arms = {}
    if arms:  # a phase's model directory (one column; a run directory is a grid's)
        return [SuiteModel(arm, _heads_of(model_dir), str(model_dir / "encoder")) for arm, model_dir in arms.items()]
    return [SuiteModel(name=path.name or str(model), retrieval_encoder=resolve_encoder_path(str(model)))]


def combine_columns(models: Sequence[str]) -> list[SuiteModel]:
    """The columns of several models side by side; a repeated column name is prefixed with its model's name."""
    columns: list[SuiteModel] = []
    for model in (part.strip() for part in models if part.strip()):
        for column in plan_models(model):
            if any(existing.name == column.name for existing in columns):
                column.name = f"{Path(model).name}:{column.name}"
            columns.append(column)
    if not columns:
        raise ConfigError("--model names no model; pass a run, grid or phase directory, or any encoder")
    return columns


def _pretrained(cell_directory: Path) -> str:
    """The pretrained model a cell started from, by its config.yaml (cells written before cell.json recorded it)."""
    config = read_yaml_file(cell_directory / CONFIG_FILENAME) or {}
    name = str((config.get("model") or {}).get("name_or_path") or "")
    if not name or name == "synthetic":
        raise ConfigError(f"{cell_directory}: cannot tell the pretrained encoder; re-run the grid to rewrite its cell.json")
    return name


def _grid_models(grid_dir: Path) -> list[SuiteModel]:
    """A grid: one column per group of done cells that differ only in their target task, named by the axes that
    vary between groups."""
    cells = [read_json(cell_dir(grid_dir, cell_id) / CELL_FILENAME) for cell_id in read_json(grid_dir / GRID_FILENAME)["cells"]
             if (cell_dir(grid_dir, cell_id) / CELL_FILENAME).is_file()]  # the cells trained so far
    varying = [axis for axis in dict.fromkeys(a for cell in cells for a in cell["axes"])
               if axis != "target" and len({cell["axes"].get(axis) for cell in cells}) > 1]  # name columns by these
    columns: dict[str, SuiteModel] = {}
    for cell in cells:
        directory = cell_dir(grid_dir, cell["cell_id"])
        # a single experiment's one arm is named by its intermediate setting (none, snli, ...)
        name = ",".join(f"{axis}={cell['axes'].get(axis)}" for axis in varying) or cell["axes"].get("intermediate") or "grid"
        phases = cell_phase_dirs(grid_dir, cell["cell_id"])
        column = columns.setdefault(name, SuiteModel(name))
        for head, where in _heads_of(phases["target"] / "model").items():
            column.heads.setdefault(head, where)
        if not column.retrieval_encoder:  # the encoder before target training (X-STILTs retrieval)
            before_target = phases.get("intermediate") or phases.get("mlm")
            column.retrieval_encoder = (str(before_target / "model" / "encoder") if before_target
                                        else str(cell.get("pretrained") or _pretrained(directory)))
    if not columns:
        raise DataNotFoundError(f"grid {grid_dir} has no finished cell yet (no cells/*/cell.json); run it first")
    return list(columns.values())


def _heads_of(model_dir: Path) -> dict[str, Path]:
    """Head key -> ``model_dir`` for every head saved in its heads.pt."""
    saved = read_heads_file(model_dir, missing="the cell or phase has not finished")
    return {key.split(".", 1)[0]: Path(model_dir) for key in saved.get("heads", {})}


# ---------------------------------------------------------------------------------------------- the suite


@dataclass(frozen=True)
class SuiteOptions:
    """How every task is run: the evaluation entry points' own settings."""

    max_examples: int | None = None  # the first N examples (queries, for retrieval) of each language
    max_length: int | None = None  # None: each entry point's default
    batch_tokens: int | None = None
    precision: str = "fp32"
    layer: int | None = None  # retrieval: hidden state to pool (None: each task's protocol)
    pooling: str | None = None  # retrieval: token pooling (None: each task's protocol)
    languages: tuple[str, ...] | None = None  # restrict every task to these languages (None: XTREME-R's lists)
    tasks: tuple[str, ...] | None = None  # run only these tasks (scorer keys); the others are listed as skipped

    def __post_init__(self) -> None:
        unknown = [key for key in self.tasks or () if key not in TASKS_BY_KEY]
        if unknown:
            raise ConfigError(f"--task {','.join(unknown)}: not an XTREME-R task; the tasks are {', '.join(TASKS_BY_KEY)}")


def run_suite(model: str | Path, data_root: str | Path, output: str | Path, options: SuiteOptions = SuiteOptions()) -> dict:
    """Evaluate every column of ``model`` on every XTREME-R task; write ``<output>/xtreme-r.json`` and return it.

    ``model`` may name several models, comma-separated (e.g. the XLM-R and the mT5 grid of one study): their
    columns are side by side, a column name that repeats gets its model's folder name in front.
    """
    data_root = Path(data_root)
    if not data_root.is_dir():
        raise DataNotFoundError(f"data root '{data_root}' does not exist; pass --data-root DIR (e.g. ../shared/data)")
    output = Path(output)
    columns = combine_columns(str(model).split(","))
    with DirectoryLock(output, what="suite output directory", fix="use another --output"):
        result = {
            "suite": SUITE, "model": str(model), "data_root": str(data_root),
            "options": {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(options).items()},
            "columns": {column.name: _run_column(column, data_root, output / _safe(column.name), options)
                        for column in columns},
        }  # fmt: skip
        result["output_file"] = str(write_json_atomic(output / f"{SUITE}.json", result))
    return result


def _run_column(column: SuiteModel, data_root: Path, output: Path, options: SuiteOptions) -> dict[str, Any]:
    tasks: dict[str, dict[str, Any]] = {}
    skipped: dict[str, str] = {}
    for task in TASKS:
        outcome = _run_task(task, column, data_root, output, options)
        if isinstance(outcome, str):
            skipped[task.key] = outcome
        else:
            tasks[task.key] = outcome
    aggregate = xtreme_r_score({key: result["score"] for key, result in tasks.items()})
    return {"tasks": tasks, "skipped_tasks": skipped, **{k: aggregate[k] for k in ("categories", "score", "category_mean")},
            "deviations": deviations(tasks, skipped)}  # fmt: skip


def _run_task(task: SuiteTask, column: SuiteModel, data_root: Path, output: Path, options: SuiteOptions) -> dict | str:
    """The task's result, or why it was skipped (a one-line reason)."""
    if options.tasks is not None and task.key not in options.tasks:
        return "not in --task"
    languages = [lang for lang in task.languages if options.languages is None or lang in options.languages]
    if not languages:
        return "none of its languages is in --languages"
    if task.kind == HEAD:
        return _run_head_task(task, column, data_root, output, languages, options)
    if task.kind == TATOEBA:
        return _run_tatoeba(task, column, data_root, languages, options)
    return _run_contract_task(task, column, data_root, languages, options)


def find_data_dir(task: SuiteTask, data_root: Path) -> Path | None:
    """The task's folder under the data root (the first of ``task.folders`` that exists)."""
    for folder in task.folders:
        if (data_root / folder).is_dir():
            return data_root / folder
    return None


def _no_data(task: SuiteTask, data_root: Path) -> str:
    return f"no data under {data_root} (looked for {', '.join(f + '/' for f in task.folders)})"


# ---- sequence tasks: a fine-tuned head


def _run_head_task(
    task: SuiteTask, column: SuiteModel, data_root: Path, output: Path, languages: list[str], options: SuiteOptions
) -> dict | str:
    spec = get_task(task.task)
    data_dir = find_data_dir(task, data_root)
    if spec.head_key not in column.heads:
        present = "" if data_dir is None else (
            f"; {spec.test_split} files for {len(_languages_with_files(spec, data_dir, languages))}/{len(languages)} languages")
        return f"no fine-tuned head (a '{spec.head_key}' head from a target phase on {spec.name}){present}"
    if data_dir is None:
        return _no_data(task, data_root)
    scorable, skipped = _scorable_languages(spec, data_dir, languages)
    if not scorable:
        return _nothing_scorable(spec, data_dir, skipped)
    results = evaluate_models(
        {column.name: column.heads[spec.head_key]}, [spec.name], languages=scorable, split=spec.test_split,
        out_root=output / task.key, data_dirs={spec.name: str(data_dir)}, max_length=options.max_length,
        batch_tokens=options.batch_tokens, name=f"{SUITE}:{task.key}", precision=options.precision,
        max_examples=options.max_examples,
    )  # fmt: skip
    evaluated = results["arms"][column.name]["tasks"][spec.name]
    per_language = {lang: task_score(spec.metric, scores) for lang, scores in evaluated["languages"].items()}
    return {
        "category": task.category, "metric": task.metric, "split": spec.test_split, "source": str(column.heads[spec.head_key]),
        "languages": per_language, "score": _mean(list(per_language.values())), "skipped_languages": skipped,
        "details": evaluated["languages"],
    }  # fmt: skip


def _nothing_scorable(spec, data_dir: Path, skipped: Mapping[str, str]) -> str:
    """Why no language could be scored: the languages whose file exists first (their reasons), then a count."""
    missing = f"no {spec.test_split} file under {data_dir}"
    present = [f"{lang}: {why}" for lang, why in skipped.items() if why != missing]
    absent = sum(why == missing for why in skipped.values())
    return "no scorable language: " + "; ".join(present + ([f"{missing} for {absent} languages"] if absent else []))


def _languages_with_files(spec, data_dir: Path, languages: list[str]) -> list[str]:
    found = []
    for language in languages:
        try:
            spec.data_files(spec.test_split, language, data_dir)
        except DataNotFoundError:
            continue
        found.append(language)
    return found


def _scorable_languages(spec, data_dir: Path, languages: list[str]) -> tuple[list[str], dict[str, str]]:
    """The languages whose test file exists and carries gold; the others with the reason."""
    scorable, skipped = [], {}
    for language in languages:
        try:
            spec.data_files(spec.test_split, language, data_dir)
        except DataNotFoundError:
            skipped[language] = f"no {spec.test_split} file under {data_dir}"
            continue
        try:
            examples = spec.load(spec.test_split, language, data_dir)
            if not _has_gold(examples):
                raise DataNotFoundError("its gold is withheld (XTREME strips test labels)")
            check_scorable(spec, examples, f"{spec.name} {spec.test_split} {language}")  # the whole file, not a prefix
        except (DataNotFoundError, CorruptDataError) as error:
            skipped[language] = str(error).split("; ")[0]
            continue
        scorable.append(language)
    return scorable, skipped


def _has_gold(examples: Sequence[Any]) -> bool:
    """Whether any example carries gold: tags (tagging), a label other than -1 (classification), an answer (QA)."""
    for example in examples:
        if getattr(example, "tags", None) is not None:
            return True
        if getattr(example, "label", -1) != -1:
            return True
        if any(text.strip() for text in getattr(example, "answer_texts", ())):
            return True
    return False


# ---- Tatoeba: the retrieval encoder, XTREME's protocol


def _run_tatoeba(task: SuiteTask, column: SuiteModel, data_root: Path, languages: list[str], options: SuiteOptions) -> dict | str:
    data_dir = find_data_dir(task, data_root)
    if data_dir is None:
        return _no_data(task, data_root)
    sources, skipped = {}, {}
    for language in languages:
        try:
            sources[language] = locate_tatoeba(language, data_dir)
        except DataNotFoundError:
            laser = tatoeba_language(language)[1]
            skipped[language] = f"no tatoeba.{laser}-eng.{laser} / .eng files under {data_dir}"
    if not sources:
        return "no language has its files: " + ", ".join(skipped)
    protocol = get_protocol("xtreme").with_overrides(layer=options.layer, pooling=options.pooling)
    encoder = load_sentence_encoder(
        column.retrieval_encoder, layer=protocol.layer, pooling=protocol.pooling, batch_tokens=options.batch_tokens,
        max_length=options.max_length, precision=options.precision,
    )  # fmt: skip
    per_language, sizes = {}, {}
    for language, source in sources.items():
        pair = read_tatoeba(source)
        count = len(pair.source) if options.max_examples is None else min(options.max_examples, len(pair.source))
        per_language[language] = tatoeba_accuracy(
            encoder.encode(pair.source[:count]), encoder.encode(pair.english), pair.gold[:count],
            scoring=protocol.tatoeba_scoring, direction="xx-en", k=protocol.k, margin=protocol.margin,
        )  # fmt: skip
        sizes[language] = {"queries": count, "candidates": len(pair.english)}
    return {
        "category": task.category, "metric": task.metric, "split": "test", "source": column.retrieval_encoder,
        "languages": per_language, "score": _mean(list(per_language.values())), "skipped_languages": skipped,
        "details": {"protocol": protocol.name, "layer": encoder.layer, "num_layers": encoder.num_layers,
                    "pooling": encoder.pooling, "sizes": sizes},
    }  # fmt: skip


# ---- LAReQA and Mewsli-X: fastxlt.retrieval.lareqa / mewsli (their contract: see the module docstring)


def _run_contract_task(task: SuiteTask, column: SuiteModel, data_root: Path, languages: list[str], options: SuiteOptions) -> dict | str:
    import importlib

    module_name, function = ("lareqa", "evaluate_lareqa") if task.kind == LAREQA else ("mewsli", "evaluate_mewsli")
    try:
        evaluate = getattr(importlib.import_module(f"fastxlt.retrieval.{module_name}"), function)
    except (ImportError, AttributeError):
        return f"not available (fastxlt.retrieval.{module_name}.{function} is not installed)"
    data_dir = find_data_dir(task, data_root)
    if data_dir is None:
        return _no_data(task, data_root)
    settings: dict[str, Any] = {"pooling": options.pooling or "mean", "layer": options.layer}
    if options.max_length is not None:
        settings["max_length"] = options.max_length
    if task.kind == LAREQA:
        settings["max_questions"] = options.max_examples
    outcome = evaluate(column.retrieval_encoder, data_dir, list(languages), **settings)
    per_language = {lang: float(score) for lang, score in (outcome.get("languages") or {}).items()}
    if not per_language:
        return "no language scored: " + "; ".join(f"{k}: {v}" for k, v in (outcome.get("skipped") or {}).items())
    return {
        "category": task.category, "metric": outcome.get("metric", task.metric), "split": "test",
        "source": column.retrieval_encoder, "languages": per_language, "score": _mean(list(per_language.values())),
        "skipped_languages": dict(outcome.get("skipped") or {}), "details": outcome.get("details", {}),
    }  # fmt: skip


# ---------------------------------------------------------------------------------------------- printing


def format_suite(result: Mapping[str, Any]) -> str:
    """The suite's table (tasks by category, one column per model), then what was skipped and every deviation."""
    columns = result["columns"]
    names = list(columns)
    width = max(12, *(len(name) + 2 for name in names))
    header = f"{'XTREME-R':<34}" + "".join(f"{name:>{width}}" for name in names)
    lines = [f"XTREME-R suite  model={result['model']}  data={result['data_root']}", header, "-" * len(header)]
    for category, keys in CATEGORIES.items():
        for key in keys:
            task = TASKS_BY_KEY[key]
            cells = []
            for name in names:
                scored = columns[name]["tasks"].get(key)
                cells.append("-" if scored is None else f"{scored['score']:.2f} ({len(scored['languages'])}/{len(task.languages)})")
            lines.append(f"  {key:<14}{task.metric:<18}" + "".join(f"{cell:>{width}}" for cell in cells))
        values = [columns[name]["categories"][category]["score"] for name in names]
        lines.append(f"{category:<34}" + "".join(f"{_number(v):>{width}}" for v in values))
    lines.append("-" * len(header))
    lines.append(f"{'score (mean of tasks, official)':<34}" + "".join(f"{_number(columns[n]['score']):>{width}}" for n in names))
    lines.append(f"{'mean of categories':<34}" + "".join(f"{_number(columns[n]['category_mean']):>{width}}" for n in names))
    for name in names:
        column = columns[name]
        if column["skipped_tasks"]:
            lines.append(f"skipped ({name}):")
            lines += [f"  {key}: {reason}" for key, reason in column["skipped_tasks"].items()]
        lines.append(f"deviations from the official score ({name}; skipped tasks as above):")
        skipped = tuple(f"{key}: not scored (" for key in column["skipped_tasks"])
        lines += [f"  - {line}" for line in column["deviations"] if not line.startswith(skipped)]
    lines.append(f"results written to {result.get('output_file', '-')}")
    return "\n".join(lines)


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_.=," else "_" for c in name) or "model"
