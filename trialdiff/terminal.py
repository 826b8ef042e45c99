"""Render a diff report on a terminal with rich: a table, one row per changed field.

On a console narrower than NARROW, or too narrow for a tracked path whole in the field column,
each change is a block of lines instead.

Word diffs are highlighted when colour is on, and shown as [-old-]{+new+} markers when it is
off (NO_COLOR) or the output is not a terminal. A field path is never folded inside a word:
the field column is at least as wide as the longest path (or run of a site key without a
space), as far as the console's width allows.
"""

from __future__ import annotations

from collections.abc import Sequence
from io import StringIO
from typing import TYPE_CHECKING, Final

from .fields import LOCATION_PREFIX
from .present import ARROW, Edit, ItemLine, ItemLines, Presented, Values, WordDiff, short
from .render import visible
from .report import DiffReport, heading, summary
from .worddiff import Segment, marked

if TYPE_CHECKING:
    from rich.console import Console
    from rich.text import Text

VALUE_WIDTH: Final = 60  # a value on its own
ITEM_WIDTH: Final = 90  # an item added or removed
LABEL_WIDTH: Final = 50  # the item whose inside changed
EDIT_WIDTH: Final = 40  # each side of an inner edit
# The old → new column keeps this much when paths are long: at 80 columns the field column
# then fits the registry's longest path (design.interventionModelDescription, 35).
MIN_CHANGE_WIDTH: Final = 16
# Below this many columns the four columns leave no room for values (at 30, one character
# each): each change is printed as a block instead.
NARROW: Final = 60
_STYLES: Final = {"+": "green", "-": "red", "~": "yellow", "delete": "red strike",
                  "insert": "bold green", "major": "bold red", "minor": "yellow", "info": "dim"}
_MARKS: Final = {"added": "+", "removed": "-", "reworded": "~", "changed": "~"}


def _append_words(cell: Text, words: Sequence[Segment], plain: bool) -> None:
    """Append a word diff: styled when colour is on, [-…-]{+…+} markers when it is not."""
    for index, segment in enumerate(words):
        if index:
            cell.append(" ")
        text = " ".join(map(visible, segment.words))
        if segment.op == "equal" or not plain:
            cell.append(text, None if segment.op == "equal" else _STYLES[segment.op])
        else:
            cell.append(marked([Segment(segment.op, (text,))]))


def _edit_text(edit: Edit) -> str:
    """Return one inner edit as `contacts[0].phone: a → b`."""
    old, new = edit.texts(EDIT_WIDTH)
    return f"{visible(edit.at)}: {old} {ARROW} {new}"


def _append_line(cell: Text, line: ItemLine, plain: bool) -> None:
    """Append one item line: its mark, then the item, its word diff or its edits."""
    if line.op == "edit":
        edit = line.edits[0]
        mark = "+" if edit.op == "added" else "-" if edit.op == "removed" else "~"
        cell.append(f"{mark} ", _STYLES[mark])
        cell.append(_edit_text(edit), _STYLES[mark])
        return
    mark = _MARKS[line.op]
    cell.append(f"{mark} ", _STYLES[mark])
    if line.op == "reworded":
        _append_words(cell, line.words, plain)
    elif line.op == "changed":
        edits = "; ".join(_edit_text(e) for e in line.edits)
        cell.append(f"{short(line.item, LABEL_WIDTH)}: {edits}", _STYLES[mark])
    else:
        cell.append(short(line.item, ITEM_WIDTH), _STYLES[mark])


def change_cell(row: Presented, plain: bool) -> Text:
    """Return the change column of a row: old → new, a word diff, or item lines; then facts."""
    from rich.text import Text

    cell = Text()
    match row.body:
        case WordDiff(segments):
            _append_words(cell, segments, plain)
        case ItemLines(lines):
            for index, line in enumerate(lines):
                if index:
                    cell.append("\n")
                _append_line(cell, line, plain)
        case Values() as values:
            old, new = values.texts(VALUE_WIDTH)
            cell.append(f"{old} {ARROW} {new}")
    if row.notes:
        cell.append("\n(" + "; ".join(visible(n) for n in row.notes) + ")", "italic")
    return cell


def _path_width(report: DiffReport, console_width: int) -> int | None:
    """Return the field column's least width, its longest unbreakable run as room allows.

    None when the console is too narrow for a table, or for a tracked path (not a site's key,
    which may fold where it has no space) whole in the field column: then blocks are printed.
    """
    if console_width < NARROW:
        return None
    from rich.cells import cell_len

    # In cells, not characters: a CJK site name's characters take two columns each.
    runs = [(row.path.startswith(LOCATION_PREFIX), cell_len(word)) for row in report.rows
            for word in visible(row.path).split()]
    kinds = max(len(row.kind) for row in report.rows)
    # Borders (5), the kind and severity columns, and the padding of all four (8).
    room = console_width - 5 - max(kinds, 4) - len("severity") - 8 - MIN_CHANGE_WIDTH
    if any(not site and length > room for site, length in runs):
        return None
    return max(1, min(max(length for _, length in runs), room))


def render_report(report: DiffReport, console: Console) -> None:
    """Print a report with rich; plain markers when colour is off or not on a terminal."""
    from rich.table import Table
    from rich.text import Text

    # No colour system: TERM=dumb, where styles would vanish and deleted words read as kept.
    plain = console.no_color or console.color_system is None or not console.is_terminal
    # One line each, however narrow the console (a pipe is 80 columns): grep finds them whole.
    console.print(Text(visible(heading(report)), "bold"), soft_wrap=True)
    console.print(Text(summary(report)), soft_wrap=True)
    if not report.rows:
        return
    path_width = _path_width(report, console.width)
    if path_width is None:
        _render_stacked(report, console, plain)
        return
    table = Table(show_header=True, header_style="bold", expand=True, show_lines=True)
    # The width is a floor for the ratio share, so a path word is never folded in two.
    table.add_column("field", ratio=3, overflow="fold", width=path_width)
    table.add_column("kind", no_wrap=True)
    table.add_column("severity", no_wrap=True)
    table.add_column(f"old {ARROW} new", ratio=5, overflow="fold")
    for row in report.rows:
        table.add_row(Text(visible(row.path)), Text(row.kind),
                      Text(row.severity, _STYLES[row.severity]), change_cell(row, plain))
    console.print(table)


def _render_stacked(report: DiffReport, console: Console, plain: bool) -> None:
    """Print each row as a block (path; kind and severity; the change): no room for a table."""
    from rich.text import Text

    for row in report.rows:
        console.print()
        console.print(Text(visible(row.path), "bold"), soft_wrap=True)  # whole, for grep
        line = Text(f"  {row.kind} \u00b7 ")
        line.append(row.severity, _STYLES[row.severity])
        console.print(line)
        for part in change_cell(row, plain).wrap(console, max(1, console.width - 2)):
            part.rstrip()
            console.print(Text("  ") + part, soft_wrap=True)


def report_text(report: DiffReport, width: int = 100) -> str:
    """Return a report as plain text (no colour, markers for word diffs) at a width."""
    from rich.console import Console

    console = Console(file=StringIO(), width=width, no_color=True, force_terminal=False,
                      highlight=False)
    render_report(report, console)
    return console.file.getvalue()  # type: ignore[attr-defined,no-any-return]
