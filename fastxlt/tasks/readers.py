"""Readers for the file layouts that sentence-level datasets are published in.

Each reader turns one file into plain Python rows (lists or dicts of strings) and knows nothing
about tasks or labels: the task adapters map columns to examples. What the readers do own is
the failure mode. A missing file raises ``DataNotFoundError`` naming the path; a file that does not
have the layout it claims raises ``CorruptDataError`` naming the file and the 1-based line number,
so that a user with a truncated download learns where it broke instead of training on half a file.

Layouts:

- TSV with a header row (GLUE ``train.tsv`` / ``dev_matched.tsv``, the original SNLI/MultiNLI/XNLI
  ``.txt``/``.tsv`` releases, PAWS-X ``x-final``, Hugging Face exports ``id sentence1 sentence2 label``):
  :func:`read_tsv_with_header`.
- TSV without a header (XTREME ``{split}-{lang}.tsv``; test files have their label column stripped):
  :func:`read_tsv_columns`.
- JSON lines and parquet (the original MultiNLI/SNLI/ANLI ``.jsonl`` files and hub exports):
  :func:`read_jsonl`, :func:`read_parquet`.
- One label per line (gold labels kept apart from an unlabelled file): :func:`read_label_file`,
  attached with :func:`attach_labels`.

Quoting is off in every TSV reader: the GLUE and XTREME files contain bare ``"`` characters inside
sentences, and the reference loaders split on tabs only, so ``csv`` quoting rules would merge rows.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol, TypeVar

from fastxlt.errors import CorruptDataError, DataNotFoundError

logger = logging.getLogger(__name__)


def invalid_utf8_line(path: Path) -> tuple[int, str]:
    """(1-based line, reason) of the first byte of ``path`` that is not UTF-8; (0, '') if there is none.

    Text-mode readers decode in blocks, so the line they last yielded is not where the bad byte is;
    decoding the raw bytes gives its exact offset, and the newlines before it give its line.
    """
    data = path.read_bytes()
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as error:
        return data.count(b"\n", 0, error.start) + 1, error.reason
    return 0, ""


def utf8_error(path: Path, error: UnicodeDecodeError | None = None) -> CorruptDataError:
    """The one-line error for a file that is not UTF-8, naming the file and the line of the first bad byte."""
    line, reason = invalid_utf8_line(path)
    if not line:  # the decoder disagreed with a whole-file decode (cannot happen for plain UTF-8)
        return CorruptDataError(f"{path}: invalid UTF-8 ({error.reason if error else 'unknown'}); the file must be UTF-8 text")
    return CorruptDataError(f"{path}:{line}: invalid UTF-8 byte ({reason}); the file must be UTF-8 text (re-save or re-download it)")


def _require_file(path: Path, layout: str) -> None:
    if not path.is_file():
        raise DataNotFoundError(f"{layout} file not found: {path}; check the path or the data_dir/layout you passed")


def _lines(path: Path, layout: str) -> Iterator[tuple[int, str]]:
    """(1-based line number, line without its line break), splitting on '\\n' only.

    Only '\\n' ends a line: a stray '\\r' or U+2028 inside a sentence stays in the text instead of
    silently breaking one row into two.
    """
    _require_file(path, layout)
    try:
        with path.open(encoding="utf-8-sig", newline="\n") as handle:
            for number, line in enumerate(handle, start=1):
                yield number, line.rstrip("\n").removesuffix("\r")
    except UnicodeDecodeError as error:
        raise utf8_error(path, error) from None


def read_tsv_columns(path: str | Path, num_columns: Sequence[int], *, layout: str = "XTREME tsv") -> list[list[str]]:
    """Read a header-less TSV whose rows all have the same column count, one of ``num_columns``.

    The first row fixes the count: an XTREME file is either labelled (premise, hypothesis, label)
    or stripped of labels (premise, hypothesis), never a mix. Empty lines are skipped.
    """
    path = Path(path)
    rows: list[list[str]] = []
    expected: int | None = None
    for number, line in _lines(path, layout):
        if not line:
            continue
        fields = line.split("\t")
        if expected is None:
            if len(fields) not in num_columns:
                allowed = " or ".join(str(n) for n in num_columns)
                raise CorruptDataError(
                    f"{path}:{number}: expected {allowed} tab-separated columns ({layout}), found {len(fields)}"
                )
            expected = len(fields)
        elif len(fields) != expected:
            raise CorruptDataError(
                f"{path}:{number}: expected {expected} tab-separated columns like line 1, found {len(fields)}"
            )
        rows.append(fields)
    return rows


def read_tsv_with_header(
    path: str | Path,
    columns: Sequence[str],
    *,
    optional: Sequence[str] = (),
    skip_malformed: bool = False,
    layout: str = "tsv",
) -> list[dict[str, str | None]]:
    """Read a TSV with a header row; return, per row, the requested ``columns`` by name.

    Columns in ``optional`` may be absent from the header (GLUE test files have no label column);
    they come back as None. A row whose field count differs from the header's is corrupt, unless
    ``skip_malformed`` is set: the original GLUE QQP ``train.tsv`` has a few rows broken by newlines
    inside questions, which the GLUE reference loaders skip; they are skipped and counted in a warning.
    """
    path = Path(path)
    lines = _lines(path, layout)
    header = _read_header(path, lines, layout)
    index = _column_index(path, header, columns, optional)
    rows: list[dict[str, str | None]] = []
    skipped = 0
    for number, line in lines:
        if not line:
            continue
        fields = line.split("\t")
        if len(fields) != len(header):
            if skip_malformed:
                skipped += 1
                continue
            raise CorruptDataError(
                f"{path}:{number}: expected {len(header)} tab-separated columns like the header, found {len(fields)}"
            )
        rows.append({name: (fields[i] if i is not None else None) for name, i in index.items()})
    if skipped:
        logger.warning("skipped %d malformed rows of %s (wrong column count)", skipped, path)
    return rows


def _read_header(path: Path, lines: Iterator[tuple[int, str]], layout: str) -> list[str]:
    for _, line in lines:
        return line.split("\t")
    raise CorruptDataError(f"{path} is empty; a {layout} file starts with a header row")


def _column_index(
    path: Path, header: list[str], columns: Sequence[str], optional: Sequence[str]
) -> dict[str, int | None]:
    missing = [name for name in columns if name not in header and name not in optional]
    if missing:
        raise CorruptDataError(
            f"{path}: header lacks column(s) {', '.join(missing)} (has {', '.join(header)}); is this the right layout?"
        )
    return {name: (header.index(name) if name in header else None) for name in columns}


def read_jsonl(path: str | Path, columns: Sequence[str], *, optional: Sequence[str] = ()) -> list[dict[str, Any]]:
    """Read a JSON-lines file; return, per object, the requested ``columns`` (``optional`` ones may be absent)."""
    path = Path(path)
    rows: list[dict[str, Any]] = []
    for number, line in _lines(path, "jsonl"):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            message = f"{path}:{number}: not valid JSON ({error.msg}); the file may be truncated"
            raise CorruptDataError(message) from None
        if not isinstance(record, dict):
            raise CorruptDataError(f"{path}:{number}: expected a JSON object per line, found {type(record).__name__}")
        missing = [name for name in columns if name not in record and name not in optional]
        if missing:
            raise CorruptDataError(f"{path}:{number}: record lacks key(s) {', '.join(missing)}")
        rows.append({name: record.get(name) for name in columns})
    return rows


def read_parquet(path: str | Path, columns: Sequence[str], *, optional: Sequence[str] = ()) -> list[dict[str, Any]]:
    """Read the requested ``columns`` of a parquet file (e.g. a shard of a hub dataset) as row dicts."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(path)
    _require_file(path, "parquet")
    try:
        available = set(pq.read_schema(path).names)
        missing = [name for name in columns if name not in available and name not in optional]
        if missing:
            raise CorruptDataError(
                f"{path}: parquet lacks column(s) {', '.join(missing)} (has {', '.join(sorted(available))})"
            )
        table = pq.read_table(path, columns=[name for name in columns if name in available])
    except (pa.ArrowException, OSError) as error:
        raise CorruptDataError(f"{path} is not a readable parquet file ({error}); re-download it") from None
    rows = table.to_pylist()
    for row in rows:
        for name in columns:
            row.setdefault(name, None)
    return rows


def local_data_hint(task: str = "<task>", what: str = "the task's files in their original layout") -> str:
    """How a user points a task at local files, in the words of the command line and the config file
    (``data_dir`` is the Python argument's name, which a user of either never sees)."""
    return f"pass --data DIR (fastxlt-eval) or set data.{task}: DIR (config), a folder with {what}, to read local files"


def read_label_file(path: str | Path) -> list[str]:
    """Read gold labels kept in their own file, one per line (e.g. ``DERIVED_test_labels.txt`` for XNLI test).

    Trailing empty lines are ignored; an empty line between labels is corrupt because it would shift
    every later label onto the wrong example.
    """
    path = Path(path)
    labels = [line.strip() for _, line in _lines(path, "label")]
    while labels and not labels[-1]:
        labels.pop()
    for number, label in enumerate(labels, start=1):
        if not label:
            raise CorruptDataError(f"{path}:{number}: empty label line; the file must hold exactly one label per line")
    return labels


def attach_labels(
    rows: Sequence[Sequence[str]], labels: Sequence[str], *, rows_path: Path, labels_path: Path
) -> list[list[str]]:
    """Append the i-th label to the i-th header-less row; the two files must have the same length.

    A length mismatch means the label file belongs to another split or release, so it is refused
    rather than zipped to the shorter length.
    """
    if len(labels) != len(rows):
        raise CorruptDataError(
            f"{labels_path} has {len(labels)} labels but {rows_path} has {len(rows)} rows; "
            "use the label file that belongs to this split"
        )
    return [[*row, label] for row, label in zip(rows, labels)]


def first_existing(data_dir: Path, relative_paths: Sequence[str]) -> list[Path]:
    """The files of the first relative path (``*`` globs shards) that exists under ``data_dir``; [] if none.

    Task layouts list the places a split's file may live, most specific first; readers take the first hit.
    """
    for relative in relative_paths:
        found = sorted(data_dir.glob(relative)) if "*" in relative else [data_dir / relative]
        found = [path for path in found if path.is_file()]
        if found:
            return found
    return []


class FileLayout(Protocol):
    """A way a dataset's files may be laid out: where each split of a language lives (``find``), and its name."""

    name: str

    def find(self, data_dir: Path, split: str, language: str) -> tuple[list[Path], list[str]]:
        """The files of this split that exist (possibly none) and the relative paths tried."""
        ...


LayoutT = TypeVar("LayoutT", bound=FileLayout)


def locate_files(layouts: Sequence[LayoutT], task: str, split: str, language: str, data_dir: Path) -> tuple[LayoutT, list[Path]]:
    """The first of ``layouts`` with files for this split under ``data_dir``, and those files.

    Every task family finds its files this way, so a missing file gets the same one-line error everywhere: the
    paths tried and the layouts that would have been read.
    """
    if not data_dir.is_dir():
        raise DataNotFoundError(f"data directory '{data_dir}' for task '{task}' does not exist; pass the folder that holds its files")
    tried: list[str] = []
    for layout in layouts:
        files, attempted = layout.find(data_dir, split, language)
        tried += attempted
        if files:
            return layout, files
    shown = ", ".join(tried[:8]) + (f" (+{len(tried) - 8} more)" if len(tried) > 8 else "")
    raise DataNotFoundError(
        f"no {split} file for task '{task}' language '{language}' under {data_dir} (looked for {shown}); put the files "
        f"there in one of the layouts ({', '.join(layout.name for layout in layouts)})"
    )


def load_hub_dataset(path: str, config: str | None, split: str) -> Any:
    """A split of a Hugging Face hub dataset (or its cache); offline, missing or renamed becomes one line that
    says how to read local files instead. Every task family's hub source loads through here."""
    import datasets  # slow to import: only when a hub source is actually read

    try:
        return datasets.load_dataset(path, config, split=split)
    except Exception as error:  # the hub or the cache: offline, missing, renamed...
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise DataNotFoundError(
            f"cannot load {path} ({config or 'default'}, {split}) from the Hugging Face hub ({reason}); "
            + local_data_hint()
        ) from error
