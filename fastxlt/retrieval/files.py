"""Reading the retrieval data sources: plain text lines, hub parquet files, and the hub itself.

Both tasks read three kinds of source (LASER/BUCC files, XTREME files, the ``google/xtreme`` hub
dataset or a local copy of its parquet files), so the low-level readers live here, each raising a
one-line ``fastxlt.errors`` exception that names the file and the fix.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastxlt.errors import CorruptDataError, DataNotFoundError

HUB_DATASET = "google/xtreme"


def read_lines(path: Path) -> list[str]:
    """Lines of a UTF-8 text file, without line ends; only ``\\n`` separates lines.

    ``str.splitlines`` would also split on characters such as U+2028 that can occur inside a
    sentence and would shift every following line of a line-aligned corpus.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataNotFoundError(f"missing data file {path}; check --data") from None
    except UnicodeDecodeError as error:
        raise CorruptDataError(
            f"{path} is not UTF-8 text ({error.reason} at byte {error.start}); re-download it"
        ) from None
    if not text:
        return []
    return [line.rstrip("\r") for line in text.removesuffix("\n").split("\n")]


def read_tab_columns(path: Path, columns: int) -> list[list[str]]:
    """Tab-separated lines with at least ``columns`` fields (the extra tabs stay in the last field)."""
    rows = []
    for number, line in enumerate(read_lines(path), start=1):
        if not line.strip():
            continue
        fields = line.split("\t", columns - 1)
        if len(fields) < columns:
            raise CorruptDataError(
                f"{path}:{number} has {len(fields)} tab-separated field(s), expected {columns}; check the file layout"
            )
        rows.append(fields)
    return rows


def hub_parquet_files(data_dir: Path, config: str, split: str) -> list[Path]:
    """Parquet files of one config/split in a local copy of the hub dataset (``config/split-*.parquet``)."""
    folder = data_dir / config
    return sorted(folder.glob(f"{split}-*.parquet")) + sorted(folder.glob(f"{split}.parquet"))


def read_parquet_rows(files: list[Path], columns: tuple[str, ...]) -> list[dict[str, Any]]:
    import pyarrow.parquet as pq

    rows: list[dict[str, Any]] = []
    for path in files:
        try:
            table = pq.read_table(path)
        except Exception as error:  # pyarrow raises several types for a damaged file
            raise CorruptDataError(f"cannot read parquet file {path}: {_first_line(error)}") from None
        missing = [name for name in columns if name not in table.column_names]
        if missing:
            raise CorruptDataError(f"{path} lacks column(s) {', '.join(missing)}; expected the {HUB_DATASET} layout")
        rows.extend(table.select(list(columns)).to_pylist())
    return rows


def load_hub_rows(config: str, split: str, columns: tuple[str, ...]) -> list[dict[str, Any]]:
    """Rows of ``google/xtreme`` / ``config`` / ``split`` from the Hugging Face hub (or its cache)."""
    try:
        import datasets

        dataset = datasets.load_dataset(HUB_DATASET, config, split=split)
    except Exception as error:  # offline, unknown config, network: all mean "no hub data here"
        raise DataNotFoundError(
            f"cannot load {HUB_DATASET} '{config}' ({split}) from the hub: {_first_line(error)}; "
            "pass --data DIR with local files"
        ) from None
    return [{name: row[name] for name in columns} for row in dataset]


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
