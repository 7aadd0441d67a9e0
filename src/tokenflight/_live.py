"""Progress of `tokenflight demo` and `bench`: live on a terminal, plain lines elsewhere.

With the ``cli`` extra (``rich``) and a terminal, progress is one live line redrawn in
place and the summary a table; without rich, or when the output is a file or a pipe,
progress is a plain line every few seconds and the summary aligned text.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TextIO

__all__ = ["Progress", "live_progress", "print_summary"]

#: Seconds between two plain progress lines.
PLAIN_EVERY = 5.0

Fields = Sequence[tuple[str, str]]


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
        line = "   ".join(f"{name} {value}" for name, value in fields)
        if self._live is not None:
            from rich.text import Text

            self._live.update(Text(line))
            return
        now = time.monotonic()
        if self._printed is None or now - self._printed >= PLAIN_EVERY:
            self._printed = now
            print("  " + line, file=self._out, flush=True)

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
    console = _rich_console(out)
    if console is None:
        width = max((len(name) for name, _ in rows), default=0)
        lines = [f"  {name:<{width}}  {value}" for name, value in rows]
        print("\n".join(["", title, *lines]), file=out, flush=True)
        return
    from rich.table import Table

    table = Table(title=title, title_justify="left", show_header=False)
    table.add_column(style="bold")
    table.add_column()
    for name, value in rows:
        table.add_row(name, value)
    console.print(table)
