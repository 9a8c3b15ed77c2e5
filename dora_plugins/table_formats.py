"""The table of :mod:`dora_plugins.table` as text, Markdown, LaTeX, CSV or JSON, and as grouped bars.

Tables go through pytablewriter, which lm-eval brings (its escaping, its alignment); the plot through
matplotlib, an optional extra (``pip install 'dora-plugins[plot]'``) imported only when a plot is drawn.
"""

from __future__ import annotations

import json
from pathlib import Path

from .outputs import replace_files
from .table import COLUMNS, Row

FORMATS = ("text", "markdown", "latex", "csv", "json")


def render(rows: list[Row], fmt: str = "text") -> str:
    """The table as aligned text, Markdown, LaTeX or CSV (pytablewriter, which lm-eval brings), or JSON."""
    if fmt == "json":
        return json.dumps([_record(row) for row in rows], indent=2, ensure_ascii=False)
    import pytablewriter
    from pytablewriter.style import Style
    from pytablewriter.writer import AbstractTableWriter
    from typepy import Integer, RealNumber, String

    headers = ["Run", "Method", *COLUMNS, "Unread", "Protocol"]
    if fmt in ("text", "markdown"):  # one decimal everywhere, "-" where there is no number
        text_writer = pytablewriter.SpaceAlignedTableWriter if fmt == "text" else pytablewriter.MarkdownTableWriter
        writer_class: type[AbstractTableWriter] = text_writer
        matrix: list[list[object]] = [
            [row.run, row.method, *map(_percent, row.cells()), _count(row.unread), row.protocol_text] for row in rows
        ]
        writer = writer_class(headers=headers, value_matrix=matrix, type_hints=[String] * len(headers), margin=1)
        writer.column_styles = [None, None, *[Style(align="right")] * (len(COLUMNS) + 1), None]
        return writer.dumps().rstrip("\n")
    writer_class = pytablewriter.LatexTableWriter if fmt == "latex" else pytablewriter.CsvTableWriter
    digits = 1 if fmt == "latex" else 4  # CSV keeps the numbers for further work
    cells = [[None if value is None else round(value, digits) for value in row.cells()] for row in rows]
    matrix = [
        [row.run, row.method, *numbers, row.unread, row.protocol_text] for row, numbers in zip(rows, cells, strict=True)
    ]
    hints = [String, String, *[RealNumber] * len(COLUMNS), Integer, String]
    return writer_class(headers=headers, value_matrix=matrix, type_hints=hints).dumps().rstrip("\n")


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _count(value: int | None) -> str:
    return "-" if value is None else str(value)


def _record(row: Row) -> dict:
    return {
        "run": row.run, "method": row.method, "scores": row.scores, "average": row.average, "unread": row.unread,
        "protocol": list(row.protocol), "source": row.source,
    }  # fmt: skip


def plot(rows: list[Row], path: Path) -> None:
    """Grouped bars: one group per benchmark (and Avg.), one bar per row, saved as an image at ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    width = 0.8 / max(1, len(rows))
    figure, axes = plt.subplots(figsize=(len(COLUMNS) * (0.8 + 0.15 * len(rows)) + 3.0, 4.5))  # inches; legend right
    for i, row in enumerate(rows):
        heights = [float("nan") if value is None else value for value in row.cells()]
        positions = [column + (i - (len(rows) - 1) / 2) * width for column in range(len(COLUMNS))]
        label = f"{row.run}, {row.method}" + (f" ({row.protocol_text})" if row.protocol else "")
        axes.bar(positions, heights, width, label=label)
    axes.set_xticks(range(len(COLUMNS)), COLUMNS, rotation=20)
    axes.set_ylabel("accuracy (%)")
    axes.set_ylim(0, 100)
    axes.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.0, 1.0))
    figure.tight_layout()
    try:
        replace_files(path.parent, lambda folder: figure.savefig(folder / path.name, dpi=120))
    finally:
        plt.close(figure)
