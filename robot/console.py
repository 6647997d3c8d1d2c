"""Console helpers shared by every entry point: a rich progress bar and tables (no torch here)."""

from __future__ import annotations

from typing import Iterable, Sequence

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

console = Console(stderr=True)


def progress() -> Progress:
    """A progress bar for long steps: description, bar, n/N, elapsed, remaining, and a free-text status."""
    return Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        TimeRemainingColumn(), TextColumn("{task.fields[status]}"), console=console, transient=False,
    )


def table(title: str, columns: Sequence[str], rows: Iterable[Sequence[object]]) -> Table:
    t = Table(title=title)
    for c in columns:
        t.add_column(str(c))
    for r in rows:
        t.add_row(*[f"{x:.3g}" if isinstance(x, float) else str(x) for x in r])
    return t


def print_table(title: str, columns: Sequence[str], rows: Iterable[Sequence[object]]) -> None:
    Console().print(table(title, columns, rows))
