"""The one table every benchmark prints: a title line, then a Markdown table of rows."""

from __future__ import annotations

from collections.abc import Sequence


def print_table(title: str, rows: Sequence[Sequence[str]], header: Sequence[str]) -> None:
    """Print ``title`` and ``rows`` under ``header`` as a Markdown table, columns aligned."""
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows, strict=True)]

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    print(f"\n{title}\n")
    print(line(header))
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in rows:
        print(line(row))
