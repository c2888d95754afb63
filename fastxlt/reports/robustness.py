"""The robustness section of a report: how much each setting loses under perturbation, language by language,
and whether adversarial intermediate training loses less than standard intermediate training.

Numbers come from the run directory alone: ``results.json`` (``tasks.<task>.perturbations["name:strength"]``,
written by ``fastxlt/robustness/evaluate.py``) for the clean / perturbed scores and, for the intervals, the
per-language files ``eval/<arm>/<task>/<name>-<strength>-seed<seed>/<lang>.json``, which keep per-example
metric rows of both passes on the same examples (``clean_example_scores``, ``example_scores``).

- *drop* = clean - perturbed (score points; positive = the perturbation hurts). Mean and standard deviation
  over seeds; a paired bootstrap over test examples (``fastxlt.reports.stats``: each replicate rescores the
  clean and the perturbed pass on the same resampled indices, seeds averaged inside the replicate).
- *drop difference* = drop(adversarial) - drop(standard) for two cells equal on every other axis and seed
  (negative = adversarial intermediate training is more robust). Pairing axis: ``adversarial`` (a grid's
  ``phases.intermediate.adversarial`` axis), else any axis whose values include ``null``. One replicate
  draws indices once per language and rescores the four passes (clean/perturbed x adversarial/standard) on
  them: ``rng = default_rng(seed)``, then per language in table order ``rng.integers(0, n, (replicates, n))``.

Outputs: ``robustness.csv`` (one row per cell x task x perturbation x language), ``robustness_drops.csv`` and
``robustness_differences.csv`` (the tables' seed means and intervals, for pages built from committed files),
Markdown tables and one heatmap figure per context x task (settings side by side, perturbations x languages).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from fastxlt.reports.collect import COLLAPSED, NONE, Cell, Collection  # noqa: E402
from fastxlt.reports.compare import layout, setting_label  # noqa: E402
from fastxlt.reports.figures import slug  # noqa: E402
from fastxlt.reports.stats import (  # noqa: E402
    CONFIDENCE, DEFAULT_REPLICATES, DEFAULT_SEED, Delta, PairedSample, combine, paired_bootstrap, percentile_interval,
    resample_indices, resampled_sums, score_from_sums, seed_summary,
)
from fastxlt.reports.tables import context_title, to_markdown  # noqa: E402
from fastxlt.utils.io import read_json, write_text_atomic  # noqa: E402

PAIRING_AXIS = "adversarial"
STANDARD = "null"  # the grid's label for a null axis value: standard (non-adversarial) training
AVERAGE = "average"
CSV_COLUMNS = ("model", "intermediate", PAIRING_AXIS, "target", "seed", "task", "perturbation", "language", "clean",
               "perturbed", "drop", "success_rate", "changed", "edit_rate", "coverage", "examples", "unavailable",
               "cell_id", "arm")  # fmt: skip
DPI = 110
DROPS_CSV = "robustness_drops.csv"
DIFFERENCES_CSV = "robustness_differences.csv"


@dataclass(frozen=True)
class Rows:
    """Per-example metric rows of one cell, task, perturbation and language: clean and perturbed (n x k)."""

    clean: np.ndarray
    perturbed: np.ndarray


# ------------------------------------------------------------------------------------------ collecting


def robustness_frame(collection: Collection) -> pd.DataFrame:
    """Tidy rows: one per cell x task x perturbation x language, with the cell's axes."""
    records = []
    axis_names = collection.axis_names
    for cell in collection.cells:
        for task, task_results in cell.results.get("tasks", {}).items():
            for key, perturbation in (task_results.get("perturbations") or {}).items():
                for language, result in perturbation.get("languages", {}).items():
                    record = {axis: str(cell.axes.get(axis, "")) if axis != "seed" else cell.axes.get(axis)
                              for axis in axis_names}  # fmt: skip
                    record.update(
                        task=task, metric=task_results.get("metric", "accuracy"), perturbation=key, language=language,
                        clean=result.get("clean"), perturbed=result.get("perturbed"), drop=result.get("drop"),
                        success_rate=result.get("success_rate"), changed=result.get("changed"),
                        edit_rate=result.get("edit_rate"), coverage=result.get("coverage"),
                        examples=result.get("examples"), unavailable=result.get("unavailable"),
                        cell_id=cell.cell_id, arm=cell.arm, folder=_folder(perturbation, key),
                    )  # fmt: skip
                    record["target"] = record.get("target") or task
                    records.append(record)
    return pd.DataFrame.from_records(records)


def pairing_axis(frame: pd.DataFrame, collection: Collection) -> str | None:
    """The axis whose ``null`` value is standard training: ``adversarial`` (a grid stores the dotted
    ``phases.intermediate.adversarial``), else any axis with a null value."""
    names = [axis for axis in collection.axis_names if axis in frame.columns]
    for axis in names:
        if axis == PAIRING_AXIS or axis.endswith("." + PAIRING_AXIS):
            return axis
    for axis in names:
        if axis in frame.columns and axis != "seed" and (frame[axis].astype(str) == STANDARD).any():
            return axis
    return None


def _folder(perturbation: dict[str, Any], key: str) -> str:
    """The cache folder of a perturbation's per-language files (``Perturbation.folder``)."""
    name, _, strength = key.partition(":")
    return f"{perturbation.get('name', name)}-{float(perturbation.get('strength', strength or 0)):g}-seed{perturbation.get('seed', 0)}"


def example_rows(cell_dir: Path, arm: str, task: str, folder: str, language: str) -> Rows | None:
    """Both passes' per-example rows of one perturbed evaluation, None when the file has none."""
    saved = _read(cell_dir / "eval" / arm / task / folder / f"{language}.json")
    clean, perturbed = saved.get("clean_example_scores"), saved.get("example_scores")
    if not clean or not perturbed or len(clean) != len(perturbed):
        return None
    return Rows(np.asarray(clean, dtype=np.float64), np.asarray(perturbed, dtype=np.float64))


@lru_cache(maxsize=8192)
def _read(path: Path) -> dict[str, Any]:
    try:
        saved = read_json(path) if path.is_file() else {}
    except ValueError:
        return {}  # a damaged file gives no interval, not a crash
    return saved if isinstance(saved, dict) else {}


def _rows_of(row: pd.Series, cells: dict[tuple[str, str], Cell]) -> Rows | None:
    cell = cells[(row["cell_id"], row["arm"])]
    return example_rows(cell.directory, cell.arm, row["task"], row["folder"], row["language"])


# ------------------------------------------------------------------------------------------ bootstrap


def drop_difference_replicates(metric: str, adversarial: Sequence[Rows], standard: Sequence[Rows],
                               draws: np.ndarray) -> tuple[float, np.ndarray]:  # fmt: skip
    """(seed-averaged full-set difference of drops, seed-averaged replicates) of one language; seed i of
    ``adversarial`` is paired with seed i of ``standard``, all four passes rescored on the same draws."""
    n = draws.shape[1]
    values, replicates = [], []
    for adv, std in zip(adversarial, standard, strict=True):
        passes = (adv.clean, adv.perturbed, std.clean, std.perturbed)
        if any(rows.shape[0] != n for rows in passes):
            raise ValueError("a paired bootstrap needs the same test examples in every pass")
        full = [float(score_from_sums(metric, rows.sum(axis=0), n)) for rows in passes]
        values.append((full[0] - full[1]) - (full[2] - full[3]))
        scored = [score_from_sums(metric, resampled_sums(rows, draws), n) for rows in passes]
        replicates.append((scored[0] - scored[1]) - (scored[2] - scored[3]))
    return float(np.mean(values)), np.mean(replicates, axis=0)


def drop_difference(metric: str, samples: dict[str, tuple[Sequence[Rows], Sequence[Rows]]], *,
                    replicates: int = DEFAULT_REPLICATES, seed: int = DEFAULT_SEED,
                    confidence: float = CONFIDENCE) -> dict[str, Delta]:  # fmt: skip
    """Per language (``{lang: (adversarial seeds, standard seeds)}``, in order) and ``average``: the drop
    difference with its paired-bootstrap interval (draws as the module docstring says)."""
    rng = np.random.default_rng(seed)
    deltas: dict[str, Delta] = {}
    for language, (adversarial, standard) in samples.items():
        n = adversarial[0].clean.shape[0]
        value, reps = drop_difference_replicates(metric, adversarial, standard, resample_indices(rng, n, replicates))
        deltas[language] = Delta(value, *percentile_interval(reps, confidence), reps)
    if deltas:
        deltas[AVERAGE] = combine(list(deltas.values()), confidence)
    return deltas


def drop_intervals(metric: str, per_language: dict[str, list[Rows]], *, replicates: int, seed: int) -> dict[str, Delta]:
    """The drop (clean - perturbed) of each language and their average, as paired-bootstrap deltas."""
    samples = {lang: PairedSample([r.clean for r in rows], [r.perturbed for r in rows]) for lang, rows in per_language.items()}
    deltas = paired_bootstrap(metric, samples, replicates=replicates, seed=seed)
    return {lang: delta for lang, delta in deltas.items() if lang != "average (non-English)"}


# ------------------------------------------------------------------------------------------ summary


@dataclass
class Summary:
    """Drop per context x task x perturbation x setting x language, and the adversarial-vs-standard differences."""

    drops: pd.DataFrame  # context, task, perturbation, setting, language, drop, std, seeds, low, high, success_rate
    differences: pd.DataFrame  # context, task, perturbation, comparison, language, value, low, high, seeds
    unavailable: dict[str, dict[str, str]]  # perturbation -> language -> reason
    context_axes: list[str]


def summarise(collection: Collection, frame: pd.DataFrame, *, replicates: int = DEFAULT_REPLICATES,
              seed: int = DEFAULT_SEED) -> Summary:  # fmt: skip
    """Seed means and bootstrap intervals of every drop, and of every adversarial-minus-standard difference."""
    _read.cache_clear()
    lay = layout(collection, frame)
    frame = frame.assign(setting=[setting_label(row, lay) for _, row in frame.iterrows()])
    context_axes = [axis for axis in lay.context_axes if frame[axis].nunique() > 1]
    frame = frame.assign(context=[context_title({a: row[a] for a in context_axes}) for _, row in frame.iterrows()])
    cells = {(cell.cell_id, cell.arm): cell for cell in collection.cells}
    unavailable: dict[str, dict[str, str]] = {}
    for _, row in frame[frame["unavailable"].notna()].iterrows():
        unavailable.setdefault(row["perturbation"], {})[row["language"]] = str(row["unavailable"])
    scored = frame[frame["drop"].notna()]
    drops = _drop_rows(scored, cells, replicates, seed)
    differences = _difference_rows(scored, cells, pairing_axis(frame, collection), lay, replicates, seed)
    return Summary(drops, differences, unavailable, context_axes)


def _drop_rows(scored: pd.DataFrame, cells, replicates: int, seed: int) -> pd.DataFrame:
    records = []
    for (context, task, key, setting), part in scored.groupby(["context", "task", "perturbation", "setting"], sort=False):
        metric = str(part["metric"].iloc[0])
        rows = {lang: [_rows_of(row, cells) for _, row in group.iterrows()] for lang, group in part.groupby("language", sort=False)}
        complete = {lang: r for lang, r in rows.items() if all(x is not None for x in r)}
        intervals = _guarded(lambda: drop_intervals(metric, complete, replicates=replicates, seed=seed)) if complete else {}
        languages = list(dict.fromkeys(part["language"]))
        for language in languages + [AVERAGE]:
            if language == AVERAGE:
                per_seed = part.groupby("seed")["drop"].mean().tolist()  # the language average of each seed
                success = part.groupby("seed")["success_rate"].mean().dropna().tolist()
                interval = intervals.get(AVERAGE) if len(complete) == len(languages) else None
            else:
                chosen = part[part["language"] == language]
                per_seed, success = chosen["drop"].tolist(), chosen["success_rate"].dropna().tolist()
                interval = intervals.get(language)
            mean, std = seed_summary(per_seed)
            records.append({"context": context, "task": task, "perturbation": key, "setting": setting,
                            "language": language, "drop": mean, "std": std, "seeds": len(per_seed),
                            "low": interval.low if interval else np.nan, "high": interval.high if interval else np.nan,
                            "success_rate": float(np.mean(success)) if success else np.nan})  # fmt: skip
    return pd.DataFrame.from_records(records)


def _difference_rows(scored: pd.DataFrame, cells, axis: str | None, lay, replicates: int, seed: int) -> pd.DataFrame:
    """Pair every adversarial cell with the standard cell equal on all other axes (seed included)."""
    records: list[dict[str, Any]] = []
    if axis is None:
        return pd.DataFrame.from_records(records)
    others = [a for a in lay.context_axes + lay.arm_axes + ["seed", "target"] if a in scored.columns and a != axis]
    standard = scored[scored[axis] == STANDARD]
    adversarial = scored[~scored[axis].isin([STANDARD, COLLAPSED, "", NONE])]
    keys = ["context", "task", "perturbation", "intermediate", axis]
    for (context, task, key, intermediate, method), part in adversarial.groupby(keys, sort=False):
        metric = str(part["metric"].iloc[0])
        values: dict[str, list[float]] = {}
        samples: dict[str, tuple[list, list]] = {}
        complete: dict[str, bool] = {}
        for _, row in part.iterrows():
            match = standard[(standard["task"] == task) & (standard["perturbation"] == key) & (standard["language"] == row["language"])]
            for other in others:
                match = match[match[other].astype(str) == str(row[other])]
            if match.empty:
                continue
            base = match.iloc[0]
            values.setdefault(row["language"], []).append(float(row["drop"]) - float(base["drop"]))
            adv_rows, std_rows = _rows_of(row, cells), _rows_of(base, cells)
            pair = samples.setdefault(row["language"], ([], []))
            complete[row["language"]] = complete.get(row["language"], True) and adv_rows is not None and std_rows is not None
            if adv_rows is not None and std_rows is not None:
                pair[0].append(adv_rows)
                pair[1].append(std_rows)
        if not values:
            continue
        usable = {lang: pair for lang, pair in samples.items() if complete.get(lang) and pair[0]}
        intervals = _guarded(lambda: drop_difference(metric, usable, replicates=replicates, seed=seed)) if usable else {}
        comparison = f"{intermediate}: {method} - {STANDARD}"
        averages = np.mean([np.mean(v) for v in values.values()])
        for language in list(values) + [AVERAGE]:
            value = float(averages) if language == AVERAGE else float(np.mean(values[language]))
            interval = intervals.get(language) if language != AVERAGE or len(usable) == len(values) else None
            records.append({"context": context, "task": task, "perturbation": key, "comparison": comparison,
                            "language": language, "value": value,
                            "seeds": len(values[language]) if language != AVERAGE else min(len(v) for v in values.values()),
                            "low": interval.low if interval else np.nan, "high": interval.high if interval else np.nan})  # fmt: skip
    return pd.DataFrame.from_records(records)


def _guarded(compute) -> dict[str, Delta]:
    """Intervals, or none when the passes were scored on different examples (shown as `?`, not a crash)."""
    try:
        return compute()
    except ValueError:
        return {}


# ------------------------------------------------------------------------------------------ tables and figures


def _interval_text(value: float, low: float, high: float) -> str:
    if np.isnan(low):
        return f"{value:+.2f}?"
    star = "*" if low > 0 or high < 0 else ""
    return f"{value:+.2f}{star} [{low:+.2f}, {high:+.2f}]"


def drop_table(summary: Summary, context: str, task: str, perturbation: str) -> pd.DataFrame:
    """Rows: languages and their average; columns: settings, then adversarial-minus-standard differences."""
    drops = summary.drops
    drops = drops[(drops["context"] == context) & (drops["task"] == task) & (drops["perturbation"] == perturbation)]
    out: dict[str, dict[str, str]] = {}
    for _, row in drops.iterrows():
        text = f"{row['drop']:.2f}" + (f" ± {row['std']:.2f}" if row["seeds"] > 1 and not np.isnan(row["std"]) else "")
        text += " " + ("[no rows]" if np.isnan(row["low"]) else f"[{row['low']:+.2f}, {row['high']:+.2f}]")
        out.setdefault(str(row["language"]), {})[str(row["setting"])] = text
    diffs = summary.differences
    if not diffs.empty:
        diffs = diffs[(diffs["context"] == context) & (diffs["task"] == task) & (diffs["perturbation"] == perturbation)]
        for _, row in diffs.iterrows():
            out.setdefault(str(row["language"]), {})[f"Δ drop {row['comparison']}"] = _interval_text(row["value"], row["low"], row["high"])
    frame = pd.DataFrame.from_dict(out, orient="index").fillna("")
    frame.index.name = "language"
    return frame


def success_table(summary: Summary, context: str, task: str, perturbation: str) -> pd.DataFrame:
    """PGD attack success rate (percent of correctly classified examples flipped), mean ± std over seeds."""
    drops = summary.drops
    rows = drops[(drops["context"] == context) & (drops["task"] == task) & (drops["perturbation"] == perturbation)]
    out: dict[str, dict[str, str]] = {}
    for _, row in rows.iterrows():
        out.setdefault(str(row["language"]), {})[str(row["setting"])] = f"{100 * row['success_rate']:.1f}"
    frame = pd.DataFrame.from_dict(out, orient="index").fillna("")
    frame.index.name = "language"
    return frame


def drop_heatmaps(summary: Summary, context: str, task: str, path: Path) -> Path:
    """One panel per setting (standard and adversarial side by side): perturbations x languages, colour and
    text = mean drop over seeds (the tables' numbers), one colour scale for every panel."""
    rows = summary.drops
    rows = rows[(rows["context"] == context) & (rows["task"] == task)]
    settings = list(dict.fromkeys(rows["setting"]))
    keys = list(dict.fromkeys(rows["perturbation"]))
    languages = list(dict.fromkeys(rows["language"]))
    limit = float(np.nanmax(np.abs(rows["drop"].to_numpy(dtype=float)))) or 1.0
    fig, axes = plt.subplots(1, len(settings), figsize=(1.5 + (0.55 * len(languages) + 1.2) * len(settings), 1.6 + 0.45 * len(keys)),
                             squeeze=False, sharey=True)  # fmt: skip
    image = None
    for ax, setting in zip(axes[0], settings):
        grid = np.full((len(keys), len(languages)), np.nan)
        for _, row in rows[rows["setting"] == setting].iterrows():
            grid[keys.index(row["perturbation"]), languages.index(row["language"])] = row["drop"]
        image = ax.imshow(grid, cmap="RdBu_r", vmin=-limit, vmax=limit, aspect="auto")
        for i in range(len(keys)):
            for j in range(len(languages)):
                if not np.isnan(grid[i, j]):
                    ax.text(j, i, f"{grid[i, j]:.1f}", ha="center", va="center", fontsize=7)
        ax.set_xticks(range(len(languages)), languages, rotation=45, fontsize=8)
        ax.set_yticks(range(len(keys)), keys, fontsize=8)
        ax.set_xlabel("language")
        ax.set_title(setting, fontsize=9)
    axes[0][0].set_ylabel("perturbation")
    fig.colorbar(image, ax=list(axes[0]), label="drop = clean - perturbed (points)")
    fig.suptitle(f"{task}{' | ' + context if context != 'all cells' else ''}: drop under perturbation "
                 "(mean over seeds; blank = unavailable)", fontsize=10, y=1.06)  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    return path


# ------------------------------------------------------------------------------------------ report section


def sample_links(frame: pd.DataFrame, collection: Collection, run_dir: Path, task: str, key: str) -> str:
    """Markdown links to the perturbed-text samples (``<language>.samples.jsonl``, written by the evaluation) of
    one task and perturbation, one per language, from the first cell that has them: a drop is read with its texts."""
    cells = {(cell.cell_id, cell.arm): cell for cell in collection.cells}
    rows = frame[(frame["task"] == task) & (frame["perturbation"] == key)]
    links: dict[str, str] = {}
    for _, row in rows.iterrows():
        cell = cells.get((row["cell_id"], row["arm"]))
        path = None if cell is None else cell.directory / "eval" / cell.arm / task / row["folder"] / f"{row['language']}.samples.jsonl"
        if path is not None and row["language"] not in links and path.is_file():
            links[row["language"]] = f"[{row['language']}]({_relative(path, run_dir)})"
    return " ".join(links.values())


def _relative(path: Path, root: Path) -> str:
    try:
        return str(path.resolve().relative_to(root.resolve()))
    except ValueError:
        return str(path)


def write_csv(frame: pd.DataFrame, path: Path) -> Path:
    """``robustness.csv``: known columns first, then any further axes (the internal folder column dropped)."""
    frame = frame.drop(columns=["folder"], errors="ignore")
    dotted = [c for c in frame.columns if c.endswith("." + PAIRING_AXIS)]
    if PAIRING_AXIS not in frame.columns and dotted:  # phases.intermediate.adversarial -> adversarial
        frame = frame.rename(columns={dotted[0]: PAIRING_AXIS})
    ordered = [c for c in CSV_COLUMNS if c in frame.columns] + [c for c in frame.columns if c not in CSV_COLUMNS]
    return write_text_atomic(path, frame[ordered].to_csv(index=False))


def section(collection: Collection, run_dir: Path, *, replicates: int = DEFAULT_REPLICATES,
            seed: int = DEFAULT_SEED) -> list[str]:  # fmt: skip
    """report.md lines of the robustness section (none when no cell has perturbation results); writes
    ``robustness.csv`` and ``figures/robustness_*.png``."""
    frame = robustness_frame(collection)
    if frame.empty:
        return []
    write_csv(frame, run_dir / "robustness.csv")
    summary = summarise(collection, frame, replicates=replicates, seed=seed)
    for name, table in ((DROPS_CSV, summary.drops), (DIFFERENCES_CSV, summary.differences)):
        write_text_atomic(run_dir / name, table.to_csv(index=False, float_format="%.4f"))
    lines = ["", "## Robustness: drop under perturbation", "",
             "Drop = clean - perturbed score (points; positive = the perturbation hurts), mean ± std over seeds, "
             f"with its {CONFIDENCE:.0%} paired-bootstrap interval over test examples ({replicates} replicates, "
             f"seed {seed}). `Δ drop A: m - null` = drop with adversarial method m minus drop with standard "
             "intermediate training A (same other axes and seed; negative = adversarial training is more robust; "
             "`*` = the interval excludes 0, `?` = no per-example rows). `average` is over the languages a "
             "perturbation covers (those without a MUSE dictionary are listed below). Rows per cell: `robustness.csv`."]  # fmt: skip
    groups = [] if summary.drops.empty else summary.drops.groupby(["context", "task"], sort=False)
    if summary.drops.empty:
        lines.append("\nNo perturbation has a score yet (every language unavailable).")
    for (context, task), part in groups:
        for key in dict.fromkeys(part["perturbation"]):
            title = f"{task}, {key}" + ("" if context == "all cells" else f": {context}")
            lines += ["", f"### Drop: {title}", "", to_markdown(drop_table(summary, context, task, key))]
            links = sample_links(frame, collection, run_dir, task, key)
            if links:
                lines += ["", f"What the model was scored on (first examples, one cell): {links}"]
            if part[part["perturbation"] == key]["success_rate"].notna().any():
                lines += ["", f"Attack success rate (%, correctly classified examples flipped): {title}", "",
                          to_markdown(success_table(summary, context, task, key))]  # fmt: skip
        path = drop_heatmaps(summary, context, task, run_dir / "figures" / f"robustness_{slug(task + '_' + context)}.png")
        lines += ["", f"![robustness {task}]({path.relative_to(run_dir)})"]
    for key, languages in summary.unavailable.items():
        reasons = sorted({reason for reason in languages.values()})
        lines.append(f"\n- {key} unavailable in {', '.join(sorted(languages))}: {'; '.join(reasons[:3])}"
                     + (" ..." if len(reasons) > 3 else ""))  # fmt: skip
    return lines
