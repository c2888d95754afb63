"""Paper-style tables as LaTeX (``fastxlt report --latex``): a booktabs ``tabular`` to paste into a paper.

Written by hand rather than through ``DataFrame.to_latex``, which needs jinja2 and escapes nothing by default;
here every cell is escaped, and the report's ``±`` and ``Δ`` become math (booktabs is the one package it needs).
"""

from __future__ import annotations

import pandas as pd

# LaTeX's special characters, and the report's symbols: one pass over the text, so no replacement is re-escaped
_ESCAPES = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
            "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "±": r"$\pm$", "Δ": r"$\Delta$"}
_TABLE = str.maketrans(_ESCAPES)


def escape(text: object) -> str:
    """One cell's text, safe inside a tabular."""
    return str(text).translate(_TABLE)


def to_latex(frame: pd.DataFrame, caption: str = "") -> str:
    """A ``table`` with a booktabs ``tabular``: the index as the first column, numbers right-aligned."""
    header = [frame.index.name or ""] + [str(column) for column in frame.columns]
    lines = [r"\begin{table}[t]", r"\centering", r"\small",
             r"\begin{tabular}{l" + "r" * len(frame.columns) + "}", r"\toprule",
             " & ".join(escape(cell) for cell in header) + r" \\", r"\midrule"]  # fmt: skip
    for index, row in frame.iterrows():
        lines.append(" & ".join(escape(cell) for cell in [index, *row.tolist()]) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    if caption:
        lines.append(rf"\caption{{{escape(caption)}}}")
    lines.append(r"\end{table}")
    return "\n".join(lines) + "\n"
