"""Plain-text tables for the benchmark's console output.

python -c "from bench.report import print_table; print_table('t', ['a'], [['1']])"
"""

from __future__ import annotations


def format_table(title: str, header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows, strict=True)]
    line = "  ".join("-" * w for w in widths)
    body = [_row(header, widths), line, *(_row(r, widths) for r in rows)]
    return "\n".join([f"\n{title}", *body])


def _row(cells: list[str], widths: list[int]) -> str:
    first = str(cells[0]).ljust(widths[0])
    rest = (str(cell).rjust(width) for cell, width in zip(cells[1:], widths[1:], strict=True))
    return "  ".join([first, *rest])


def print_table(title: str, header: list[str], rows: list[list[str]]) -> None:
    print(format_table(title, header, rows), flush=True)
