"""The command line's Rich output: literal text, and never wrapped or cut when piped.

Every ``predictq`` command prints through these, so a script reading a pipe gets whole lines
(no wrapping at 80 columns, no IDs cut to ``fe6e57…``), and names, paths, messages and install
hints print as they are: no Rich markup eats ``[flower]`` and no ``:key:`` becomes an emoji.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import typer
from rich.console import Console
from rich.table import Column, Table

__all__ = ["PIPED_WIDTH", "echo_json", "make_console", "make_table"]

# The width of piped output: wide enough that no line is ever wrapped. A terminal keeps its own
# width (tables then fold long cells onto more lines, never cut them).
PIPED_WIDTH = 10_000


def make_console(*, stderr: bool = False) -> Console:
    """A Console that prints text literally (no markup, emoji or highlighting) and, when its
    stream is not a terminal, never wraps. The stream is looked up at print time, as Rich does."""
    stream = sys.stderr if stderr else sys.stdout
    return Console(stderr=stderr, width=None if stream.isatty() else PIPED_WIDTH,
                   markup=False, emoji=False, highlight=False)  # fmt: skip


def make_table(*headers: str, title: str | None = None) -> Table:
    """A table whose cells fold onto more lines on a narrow terminal instead of being cut."""
    return Table(*(Column(h, overflow="fold") for h in headers), title=title)


def echo_json(document: Any) -> None:
    """One JSON document on one line of stdout, for ``--json``: no Rich, no wrapping."""
    typer.echo(json.dumps(document))
