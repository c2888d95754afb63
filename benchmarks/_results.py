"""What every benchmark records beside its timings, and how it appends its CSV rows.

Imported by the benchmarks of this package (run as ``python -m benchmarks.NAME``, or as a file, which puts the
repository root first on ``sys.path`` instead of this folder); the leading underscore keeps ``make bench`` and the
smoke tests from running it as a benchmark.
"""

from __future__ import annotations

import csv
import os
import platform
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Where CSV rows and set-up caches go instead of benchmarks/results/ and .cache/ (the smoke tests set it).
OUT_ENV = "FASTXLT_BENCH_OUT"
SMOKE_HELP = "seconds-long run on tiny sizes: checks that the script still works, measures nothing"


def module_command(script: str) -> list[str]:
    """The command that runs benchmark ``script`` (its ``__file__``) again as a module, for worker processes;
    run it with ``cwd=ROOT``."""
    return [sys.executable, "-m", f"benchmarks.{Path(script).stem}"]


def results_path(filename: str) -> Path:
    """``benchmarks/results/<filename>``, or ``$FASTXLT_BENCH_OUT/<filename>`` when that is set."""
    base = os.environ.get(OUT_ENV)
    return (Path(base) if base else ROOT / "benchmarks" / "results") / filename


def cache_dir(name: str) -> Path:
    """``.cache/<name>`` for set-up artefacts (trained heads, graphs), under ``$FASTXLT_BENCH_OUT`` when set."""
    base = os.environ.get(OUT_ENV)
    return (Path(base) / "cache" if base else ROOT / ".cache") / name


def skip(reason: str) -> int:
    """A smoke run that cannot run here (no data, no model): one ``SKIP`` line the smoke test reads."""
    print(f"SKIP {reason}")
    return 0


def device_name() -> str:
    """The GPU when CUDA is present, else the CPU's model name."""
    try:
        import torch

        if torch.cuda.is_available():
            return torch.cuda.get_device_name()
    except ImportError:
        pass
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "cpu"


def machine() -> dict[str, str]:
    """Device, load and Python: other processes on the machine skew every timing, so the load is recorded."""
    return {"device": device_name(), "load_1min": f"{os.getloadavg()[0]:.2f}", "python": platform.python_version()}


def append_rows(path: Path, fields: list[str], rows: list[dict]) -> None:
    """Append ``rows`` to the CSV at ``path``, writing the header when the file is new. A file written with other
    columns (an older version of the benchmark) is kept as ``<name>.previous.csv`` and a new one started, so that no
    row lands under the wrong header."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        with path.open(newline="") as handle:
            header = next(csv.reader(handle), None)
        if header != fields:
            previous = path.with_suffix(".previous.csv")
            path.replace(previous)
            print(f"note: {path.name} had other columns; kept as {previous.name}, starting a new file")
    new_file = not path.exists()
    with path.open("a", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields, extrasaction="ignore")
        if new_file:
            writer.writeheader()
        writer.writerows(rows)
