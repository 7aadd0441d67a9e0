"""Progress of `tokenflight demo` and `bench`: live on a terminal, plain lines elsewhere.

With the ``cli`` extra (``rich``) and a terminal, progress is one live line redrawn in
place and the summary a table; without rich, or when the output is a file or a pipe,
progress is a plain line every few seconds and the summary aligned text.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TextIO

__all__ = ["Progress", "live_progress", "print_summary", "print_table"]

#: Seconds between two plain progress lines.
PLAIN_EVERY = 5.0

Fields = Sequence[tuple[str, str]]


def _joined(fields: Fields) -> str:
    return "   ".join(f"{name} {value}" for name, value in fields)


def _one_line(text: str) -> Any:
    """A rich `Text` kept to one line (cut with an ellipsis): a live line must not wrap."""
    from rich.text import Text

    return Text(text, no_wrap=True, overflow="ellipsis")


class _Following:
    """A renderable that asks for its fields each time rich redraws it."""

    def __init__(self, fields: Callable[[], Fields]) -> None:
        self._fields = fields

    def __rich__(self) -> Any:
        return _one_line(_joined(self._fields()))


def _rich_console(out: TextIO) -> Any | None:
    """A rich `Console` on ``out`` when it is a terminal and rich is installed, else None."""
    if not out.isatty():
        return None
    try:
        from rich.console import Console
    except ImportError:
        return None
    return Console(file=out, highlight=False)


class Progress:
    """Shows the latest progress fields: redrawn live, or printed every `PLAIN_EVERY` s."""

    def __init__(self, out: TextIO, live: Any | None) -> None:
        self._out = out
        self._live = live
        self._printed: float | None = None

    @property
    def is_live(self) -> bool:
        """Whether progress is redrawn in place (rich on a terminal)."""
        return self._live is not None

    def update(self, fields: Fields) -> None:
        """Show ``fields`` (name, value pairs) as the current progress."""
        line = _joined(fields)
        if self._live is not None:
            self._live.update(_one_line(line))
            return
        now = time.monotonic()
        if self._printed is None or now - self._printed >= PLAIN_EVERY:
            self._printed = now
            print("  " + line, file=self._out, flush=True)

    def follow(self, fields: Callable[[], Fields]) -> None:
        """Redraw from ``fields()`` on each live refresh (a clock keeps ticking); plain: nothing.

        ``fields`` runs on rich's refresh thread: it should only read values.
        """
        if self._live is not None:
            self._live.update(_Following(fields))

    def line(self, text: str) -> None:
        """Print ``text`` as a line of its own, above the live progress."""
        if self._live is not None:
            self._live.console.print(text, markup=False, highlight=False)
        else:
            print(text, file=self._out, flush=True)


@contextmanager
def live_progress(out: TextIO) -> Iterator[Progress]:
    """A `Progress` on ``out`` for the duration of the block; the live line is removed."""
    console = _rich_console(out)
    if console is None:
        yield Progress(out, None)
        return
    from rich.live import Live

    with Live(console=console, refresh_per_second=4, transient=True) as live:
        yield Progress(out, live)


def print_summary(out: TextIO, title: str, rows: Fields) -> None:
    """Print a two-column summary: a table with rich on a terminal, aligned text elsewhere."""
    _print_table(out, title, None, rows)


def print_table(
    out: TextIO, title: str, header: Sequence[str], rows: Sequence[Sequence[str]]
) -> None:
    """Print a table with a header: with rich on a terminal, aligned text elsewhere."""
    _print_table(out, title, header, rows)


def _print_table(
    out: TextIO, title: str, header: Sequence[str] | None, rows: Sequence[Sequence[str]]
) -> None:
    lines = [header, *rows] if header is not None else list(rows)
    columns = len(lines[0]) if lines else 0
    console = _rich_console(out)
    if console is None:
        widths = [max(len(line[i]) for line in lines) for i in range(columns)]
        text = [
            "  " + "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True))
            for line in lines
        ]
        print("\n".join(["", title, *(line.rstrip() for line in text)]), file=out, flush=True)
        return
    from rich.table import Table

    table = Table(title=title, title_justify="left", show_header=header is not None)
    for i in range(columns):
        table.add_column(header[i] if header is not None else "", style="bold" if i == 0 else None)
    for row in rows:
        table.add_row(*row)
    console.print(table)
