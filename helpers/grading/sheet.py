"""``grades.csv``: one row per student, in roster order, named so that a gradebook import needs no editing:
``name, id``, the points of each criterion ``check`` scores, one column per hand-graded question (empty until the
grader fills it), ``total``, ``flags`` (each a short reason, ``; ``-separated; empty when none), ``status`` and
``comments`` (the grader's, shown in the feedback).

The grader's columns (hand-graded questions, comments, and a criterion's cell that a flag left empty for the
grader, see :data:`~helpers.grading.rubric.GRADER_DECIDES`) are read back from the previous ``grades.csv`` and kept
as written: ``check`` never overwrites them. Ids stay text; every cell a spreadsheet would run as a formula is
neutralised (:func:`helpers.reporting.summary.spreadsheet_safe`). CRLF line ends, UTF-8 with a byte-order mark
(what Excel needs to read UTF-8).
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

from helpers.atomic import write_text
from helpers.course.roster import separator
from helpers.grading.lines import Graded
from helpers.grading.rubric import GRADER_DECIDES, Rubric
from helpers.reporting.summary import spreadsheet_safe
from helpers.textfiles import read_text

COMMENTS = "comments"


def hand_column(question: str) -> str:
    """The grade sheet's column of a hand-graded question."""
    return f"{question} (hand)"


def columns(rubric: Rubric) -> list[str]:
    """The header of ``grades.csv``."""
    return (["name", "id"] + [c.id for c in rubric.auto] + [hand_column(q) for q in rubric.hand]
            + ["total", "flags", "status", COMMENTS])


def read_marks(path: Path, rubric: Rubric) -> dict[str, dict[str, str]]:
    """The grader's entries of an existing ``grades.csv``: student id -> {column: text as written}, only the
    hand-graded columns and comments, only where something was written. A file that cannot be read raises
    :class:`~helpers.textfiles.InputError` (``check`` stops: the grader's marks are never silently dropped)."""
    if not path.exists():
        return {}
    text = read_text(path, what="grade sheet", limit=16 * 2**20)
    first = text.split("\n", 1)[0]
    # a spreadsheet may save it with its locale's separator (";" in most of Europe)
    reader = csv.DictReader(io.StringIO(text, newline=""), delimiter=separator(first))
    keep = [hand_column(q) for q in rubric.hand] + [COMMENTS] + grader_criteria(rubric)
    marks = {}
    for row in reader:
        sid = _unquote(row.get("id") or "")
        entries = {k: row[k] for k in keep if (row.get(k) or "").strip()}
        if sid and entries:
            marks[sid] = entries
    return marks


def _unquote(cell: str) -> str:
    """A cell as the toolkit wrote it, its neutralising quote removed."""
    return cell[1:] if cell.startswith("'") and len(cell) > 1 and cell[1] in "=+-@\t\r\n" else cell


def grader_criteria(rubric: Rubric) -> list[str]:
    """The criteria columns a flag may leave for the grader."""
    return [c.id for c in rubric.auto if c.kind in GRADER_DECIDES]


def _mark(column: str, text: str, most: float, problems: list[str]) -> float | None:
    """The grader's mark in a cell as a number (a problem noted when it is no number or above ``most``)."""
    text = (text or "").strip()
    if not text:
        return None
    try:
        value = float(text.replace(",", "."))
    except ValueError:
        problems.append(f"{column} {text!r} is not a number")
        return None
    if value > most:
        problems.append(f"{column} {value:g} is more than its {most:g} points")
    return value


def hand_points(entries: dict[str, str], rubric: Rubric) -> tuple[float, list[str]]:
    """The sum of the grader's numeric marks and the problems (a mark that is no number, or above the maximum)."""
    problems: list[str] = []
    marks = [_mark(hand_column(q), entries.get(hand_column(q)), most, problems) for q, most in rubric.hand.items()]
    return sum(m for m in marks if m is not None), problems


def row_of(g: Graded, rubric: Rubric, entries: dict[str, str]) -> dict:
    """One row of the sheet (before neutralising): a criterion left for the grader takes the grader's mark."""
    hand, problems = hand_points(entries, rubric)
    points = {}
    for c in rubric.auto:
        value = g.points.get(c.id)
        if value is None and c.kind in GRADER_DECIDES and g.status == "checked":
            value = _mark(c.id, entries.get(c.id), c.points, problems)
        points[c.id] = value
    row = {"name": g.name, "id": g.id, **points}
    row.update({hand_column(q): entries.get(hand_column(q), "") for q in rubric.hand})
    auto = sum(v for v in points.values() if isinstance(v, (int, float)))
    flags = g.flags + [f"grade sheet: {p}" for p in problems]
    row.update(total=round(auto + hand, 2), flags="; ".join(flags), status=g.status,
               comments=entries.get(COMMENTS, ""))
    return row


def write_sheet(path: Path, graded: list[Graded], rubric: Rubric, marks: dict[str, dict[str, str]]) -> list[dict]:
    """Write ``grades.csv`` (see the module docstring); returns the rows as written (before neutralising)."""
    header = columns(rubric)
    rows = [row_of(g, rubric, marks.get(g.id, {})) for g in graded]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow([spreadsheet_safe(h) for h in header])
    for row in rows:
        writer.writerow([_cell(row.get(h)) for h in header])
    write_text(path, "\ufeff" + out.getvalue())
    return rows


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:g}"
    return str(spreadsheet_safe(value)) if isinstance(value, str) else str(value)

