"""A class roster as a spreadsheet exports it, and the ``students.csv`` that ``assign`` makes of it.

A roster is a CSV file with at least the columns ``name`` and ``id`` (any case, spaces around them ignored), read as
the toolkit reads every batch file (:mod:`helpers.textfiles`): UTF-8 with or without Excel's byte-order mark,
``,``, ``;`` or tab as separator (or Excel's ``sep=`` line), another encoding refused by name. Every cell is text:
id ``0042`` stays ``0042``. Two rows with one id, or with names that differ only in case or Unicode form (their
report folders would be one folder on macOS and Windows), are refused naming both lines. A column named after a
variant axis (``cnn.init``) pins that student's value.
"""

from __future__ import annotations

import csv
import io
import json
import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

from helpers.course.variants import balance, rule_indices
from helpers.reporting.summary import spreadsheet_safe
from helpers.textfiles import MAX_BATCH_BYTES, InputError, read_text

SEPARATORS = (",", ";", "\t")
SEP_LINE = re.compile(r'"?sep=(.)"?')  # Excel's first line naming the separator
IDENTITY = ("name", "id")
# direction overrides and isolates reorder what follows them on screen; a name keeps none of them
BIDI = {*map(chr, range(0x202A, 0x202F)), *map(chr, range(0x2066, 0x206A)), "\ufeff"}


class RosterError(InputError):
    """A roster (or students.csv) that cannot be read; the message names the file, the line and the problem."""


@dataclass(frozen=True)
class Student:
    """One roster row: its line, the student's name and id (text), and its other cells by column name."""

    line: int
    name: str
    id: str
    cells: dict = field(default_factory=dict)


def separator(header_line: str) -> str:
    """The separator of a CSV file: the one of ``,``, ``;``, tab found most often outside quotes in its header."""
    outside = "".join(part for i, part in enumerate(header_line.split('"')) if i % 2 == 0)
    best = max(SEPARATORS, key=outside.count)
    return best if outside.count(best) else ","


def clean(text: str) -> str:
    """A cell as one line of text: direction controls dropped, every run of white space one space."""
    return " ".join("".join(ch for ch in text if ch not in BIDI).split())


def name_key(name: str) -> str:
    """What a case-insensitive, normalisation-insensitive file system sees of a name."""
    return unicodedata.normalize("NFC", unicodedata.normalize("NFD", name).casefold())


def header_names(cells: list[str], source: str) -> list[str]:
    """Header cells as column names: invisible characters and spaces dropped, ``Name``/``ID`` read as ``name``/``id``;
    a column given twice is refused."""
    names: list[str] = []
    for i, cell in enumerate(cells, 1):
        name = "".join(ch for ch in cell if unicodedata.category(ch) != "Cf").strip()
        name = name.lower() if name.lower() in IDENTITY else name
        if name and name in names:
            raise RosterError(f"{source}: column {name!r} appears twice in the header (columns "
                              f"{names.index(name) + 1} and {i}); keep one")
        names.append(name)
    missing = [c for c in IDENTITY if c not in names]
    if missing:
        raise RosterError(f"{source}: no column {' or '.join(missing)} in the header {[n for n in names if n]}; a "
                          "roster has at least the columns name and id")
    return names


def read_roster(path: str | Path, what: str = "roster") -> list[Student]:
    """The students of a roster CSV, in file order; :class:`RosterError` naming the file, line and problem."""
    path = Path(path)
    source = f"{what} {path}"
    try:
        text = read_text(path, what=what, limit=MAX_BATCH_BYTES)
    except InputError as exc:
        raise RosterError(str(exc)) from None
    first = re.split(r"\r\n|\r|\n", text, maxsplit=1)[0]
    hint = SEP_LINE.fullmatch(first.strip())
    sep = hint[1] if hint else separator(first)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=sep, strict=True)
    students: list[Student] = []
    try:
        if hint:
            next(reader)
        names = header_names(next(reader, []), source)
        while (cells := next(reader, None)) is not None:
            if any(c.strip() for c in cells):
                students.append(roster_row(reader.line_num, names, cells, source))
    except csv.Error as exc:
        raise RosterError(f"{source}: line {reader.line_num}: {exc}; a value holding {sep!r}, a quote or a line "
                          "break is written in double quotes, a quote in it doubled") from None
    if not students:
        raise RosterError(f"{source} has no students (a header line with name and id, then one row per student)")
    refuse_duplicates(students, source)
    return students


def roster_row(line: int, names: list[str], cells: list[str], source: str) -> Student:
    """One roster row as a :class:`Student` (``line``: where it ends; a quoted cell may hold a line break)."""
    extra = [c for c in cells[len(names):] if c.strip()]
    if extra:
        raise RosterError(f"{source}: line {line}: {len(cells)} cells but the header has {len(names)} columns: "
                          f"{extra[0][:40]!r} has no column")
    row = {n: clean(c) for n, c in zip(names, cells) if n}
    for column in IDENTITY:
        if not row.get(column):
            raise RosterError(f"{source}: line {line}: no {column}; every student needs a name and an id")
    return Student(line=line, name=row["name"], id=row["id"],
                   cells={k: v for k, v in row.items() if k not in IDENTITY and v})


def refuse_duplicates(students: list[Student], source: str) -> None:
    """Two rows with one id (case aside), or one name (case and Unicode form aside), are refused by line."""
    for what, key in (("id", lambda s: s.id.casefold()), ("name", lambda s: name_key(s.name))):
        seen: dict[str, Student] = {}
        for s in students:
            other = seen.setdefault(key(s), s)
            if other is not s:
                why = ("one student counted twice, or two sharing an id" if what == "id" else
                       "their report folders would be one folder on macOS and Windows; add what tells them apart")
                raise RosterError(f"{source}: lines {other.line} and {s.line} have the same {what} "
                                  f"({getattr(other, what)!r} and {getattr(s, what)!r}): {why}")


def cell_text(value) -> str:
    """A value as one cell: text as is, None as ``None``, anything else as compact JSON (``[1, 3, 5]``)."""
    if isinstance(value, str):
        return value
    return "None" if value is None else json.dumps(value, separators=(", ", ": "), sort_keys=True)


def pinned_index(values: list, text: str, where: str) -> int:
    """The index in ``values`` of a roster cell pinning an axis; :class:`RosterError` listing the allowed cells."""
    shown = [cell_text(v) for v in values]
    wanted = re.sub(r"\s+", "", text.removeprefix("'"))
    for i, cell in enumerate(shown):
        if wanted == re.sub(r"\s+", "", cell):
            return i
    raise RosterError(f"{where}: {text!r} is not a value of this axis; allowed: {', '.join(shown)}")


def assign(assignment, students: list[Student], source: str = "roster") -> tuple[list[dict], list[str], list[str]]:
    """Each student's variant: the rule's (:func:`~helpers.course.variants.variant_for`), a value the roster pins,
    then the fewest moves that give every value of every axis an equal share ±1.

    Returns (variants in roster order, ids of the students whose variant is not the rule's, warnings)."""
    axes = {a: len(v) for a, v in assignment.variants.items()}
    rule = [rule_indices(assignment.id, list(axes.values()), s.id) for s in students]
    indices, pins = [list(r) for r in rule], []
    for s, row in zip(students, indices):
        pinned = set()
        for j, axis in enumerate(axes):
            if s.cells.get(axis):
                row[j] = pinned_index(assignment.variants[axis], s.cells[axis], f"{source}: line {s.line}, {axis}")
                pinned.add(j)
        pins.append(pinned)
    final, warnings = balance(assignment.id, axes, [s.id for s in students], indices, pins)
    variants = [{a: assignment.variants[a][i] for a, i in zip(axes, row)} for row in final]
    moved = [s.id for s, row, r in zip(students, final, rule) if row != r]
    return variants, moved, warnings


def students_csv(assignment, students: list[Student], variants: list[dict]) -> bytes:
    """``students.csv``: ``name, id``, the variant's axes, then what ``run --batch`` reads to run the row (its
    ``sections``, the ``profile``, and each section's fixed parameters as ``section.parameter``). UTF-8 with the
    byte-order mark Excel needs to read it as UTF-8; a cell a spreadsheet would run as a formula is neutralised
    (:func:`~helpers.reporting.summary.spreadsheet_safe`). The same input gives the same bytes."""
    fixed = [(s, p) for s, params in assignment.sections.items() for p in params]
    header = ["name", "id", *assignment.variants, "sections", "profile", *(f"{s}.{p}" for s, p in fixed)]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(header)
    for s, variant in zip(students, variants):
        row = [s.name, s.id, *(cell_text(variant[a]) for a in assignment.variants), " ".join(assignment.sections),
               assignment.profile, *(cell_text(assignment.sections[sec][p]) for sec, p in fixed)]
        writer.writerow([spreadsheet_safe(c) for c in row])
    return "\ufeff".encode() + out.getvalue().encode("utf-8")
