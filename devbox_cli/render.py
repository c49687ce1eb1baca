"""The one place that talks to rich: tables, key/value views, progress and the error panel.

JSON output goes to stdout as plain `json.dumps` (stable for CI scripts); everything
human-facing goes through rich. rich is imported lazily so fast paths never pay for it.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from devbox_cli.errors import DevboxError


def _console(stderr: bool = False) -> Any:
    from rich.console import Console

    return Console(stderr=stderr, highlight=False, soft_wrap=True)


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")
    sys.stdout.flush()


def print_json_line(data: Any) -> None:
    """One compact JSON line, flushed: for output a script reads while the command runs."""
    sys.stdout.write(json.dumps(data, separators=(",", ":"), default=str) + "\n")
    sys.stdout.flush()


def print_table(
    columns: Sequence[str],
    rows: Sequence[Sequence[Any]],
    *,
    empty: str = "",
    wide: bool = False,
    drop: Sequence[str] = (),
) -> None:
    """A table on stdout, one line per row; `empty` is shown instead when there are no rows.

    On a terminal (or wherever $COLUMNS is set) the table fits its width, as `docker ps`
    does: the columns named in `drop` go first, in that order, while the rest would not
    fit, then what is still too long is cut short with an ellipsis. `wide` keeps every
    column whole; so does output to a pipe or file."""
    if not rows:
        if empty:
            _console(stderr=True).print(empty, style="dim", markup=False)
        return
    from rich.table import Table

    cells = [["" if v is None else str(v) for v in row] for row in rows]
    console = _console()
    fit = not wide and fits()
    keep = list(range(len(columns)))
    if fit:
        widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
        for name in drop:
            if sum(widths[i] for i in keep) + len(keep) - 1 <= console.width:
                break
            if name in columns:
                keep.remove(columns.index(name))
    else:
        console.width = max(console.width, 1 << 12)
    table = Table(box=None, header_style="bold", pad_edge=False, collapse_padding=True)
    for i in keep:
        table.add_column(columns[i], no_wrap=True, overflow="ellipsis" if fit else "fold")
    for row in cells:
        table.add_row(*(row[i] for i in keep))
    console.print(table)


def fits() -> bool:
    """Whether output is cut to the terminal's width: on a terminal, or when $COLUMNS says."""
    return sys.stdout.isatty() or bool(os.environ.get("COLUMNS"))


def column_printer(
    columns: Sequence[tuple[str, int | None]], *, drop: Sequence[str] = ()
) -> Callable[[Sequence[str], bool], None]:
    """Aligned columns printed a line at a time (for a log that is followed): prints the
    header, returns `emit(cells, alert)`. Each column keeps its width; the one of width None
    takes what the terminal has left (at least MIN_REST). Where fits(), the columns named in
    `drop` go first, in that order, while the line would not fit, then cells are cut short;
    elsewhere every column is kept and nothing is cut. An alert line is red on a terminal
    (bold where NO_COLOR is set)."""
    from rich.text import Text

    console = _console()
    cut = fits()
    keep = list(range(len(columns)))

    def fixed() -> int:
        return sum(columns[i][1] or 0 for i in keep) + len(keep) - 1

    for name in drop if cut else ():
        if fixed() + MIN_REST <= console.width:
            break
        keep = [i for i in keep if columns[i][0] != name]
    rest = max(MIN_REST, console.width - fixed()) if cut else None
    widths = [(i, columns[i][1] or rest) for i in keep]

    def line(cells: Sequence[str]) -> str:
        out = []
        for i, width in widths:
            cell = cells[i]
            if width is None:
                out.append(cell)
                continue
            if cut and len(cell) > width:
                cell = cell[: width - 1] + "…"
            out.append(cell.ljust(width))
        return " ".join(out).rstrip()

    def emit(cells: Sequence[str], alert: bool = False) -> None:
        style = ("bold" if console.no_color else "red") if alert else ""
        console.print(Text(line(cells), style=style), crop=False, soft_wrap=True)
        sys.stdout.flush()

    console.print(Text(line([name for name, _ in columns]), style="bold"), soft_wrap=True)
    return emit


MIN_REST = 12


def print_names(names: Iterable[str]) -> None:
    """One name a line on stdout, nothing else: `-q` output, for scripts."""
    sys.stdout.write("".join(f"{n}\n" for n in names))
    sys.stdout.flush()


def print_fields(fields: Sequence[tuple[str, Any]]) -> None:
    """A key/value view of one object."""
    from rich.table import Table

    table = Table(box=None, show_header=False, pad_edge=False)
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    for key, value in fields:
        table.add_row(key, "" if value is None else str(value))
    _console().print(table)


def print_success(message: str) -> None:
    _console(stderr=True).print(f"[green]✓[/green] {_escape(message)}")


def print_note(message: str) -> None:
    _console(stderr=True).print(message, style="dim", markup=False)


def print_warning(message: str) -> None:
    _console(stderr=True).print(f"[yellow]warning:[/yellow] {_escape(message)}")


def print_error(err: DevboxError) -> None:
    console = _console(stderr=True)
    console.print(f"[bold red]error:[/bold red] {_escape(err.message)}")
    if err.hint:
        console.print(f"[dim]hint:[/dim] {_escape(err.hint)}")


@contextmanager
def progress(message: str) -> Iterator[Any]:
    """A spinner on a terminal; silent elsewhere. Yields an `update(text)` callable."""
    if not sys.stderr.isatty():
        yield lambda _text: None
        return
    console = _console(stderr=True)
    with console.status(_escape(message)) as status:
        yield lambda text: status.update(_escape(text))


@contextmanager
def steps(title: str) -> Iterator[tuple[Callable[[str], None], Callable[[str], None]]]:
    """A long job's progress on stderr: yields `step(text)` (a line each, kept) and
    `detail(text)` (the latest output under a spinner, on a terminal only). Off a terminal
    the steps are plain lines, `title: text`, and details are dropped."""
    if not sys.stderr.isatty():
        err = sys.stderr

        def plain(text: str) -> None:
            err.write(f"{title}: {text}\n")
            err.flush()

        yield plain, lambda _text: None
        return
    console = _console(stderr=True)
    with console.status(_escape(title)) as status:
        current = [title]

        def step(text: str) -> None:
            console.print(f"[cyan]•[/cyan] {_escape(text)}")
            current[0] = text
            status.update(_escape(text))

        def detail(text: str) -> None:
            width = max(20, console.width - len(current[0]) - 8)
            status.update(f"{_escape(current[0])} [dim]{_escape(text[:width])}[/dim]")

        yield step, detail


LARGE_TRANSFER = 8 << 20


@contextmanager
def transfer(description: str) -> Iterator[Callable[[int, int | None], None] | None]:
    """A progress bar of bytes moved, on a terminal and once a transfer is large. Yields an
    `update(done, total)` callable (total None: not known), or None when not on a terminal
    (so the copy need not even count)."""
    if not sys.stderr.isatty():
        yield None
        return
    bar: list[Any] = []

    def update(done: int, total: int | None) -> None:
        if not bar:
            if done < LARGE_TRANSFER:
                return
            from rich.progress import (
                BarColumn,
                DownloadColumn,
                Progress,
                TextColumn,
                TransferSpeedColumn,
            )

            progress = Progress(
                TextColumn(_escape(description)),
                BarColumn(),
                DownloadColumn(),
                TransferSpeedColumn(),
                console=_console(stderr=True),
                transient=True,
            )
            progress.start()
            bar.extend([progress, progress.add_task(description, total=total)])
        bar[0].update(bar[1], completed=done, total=total)

    try:
        yield update
    finally:
        if bar:
            bar[0].stop()


def format_bytes(size: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size} B"


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)
