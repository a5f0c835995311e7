"""The instructor's side of grading: the assignment file and ``students.csv``, read through :mod:`helpers.course`
(the same reading ``assign`` and ``start`` do), and what each student's reports must record.

The roster row is the truth for a student's variant: ``assign`` may have moved a student off the id rule to
balance the class, so the variant is read from the row's axis columns, not computed from the id.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from helpers.course.assignment import Assignment, load_assignment
from helpers.course.roster import RosterError, pinned_index, read_roster
from helpers.course.variants import variant_for

__all__ = ["Assignment", "Enrolled", "load_assignment", "enrolled", "expected_parameters"]


@dataclass
class Enrolled:
    """A roster row as grading uses it: name, id (text), the variant, and why the row's variant is unusable."""

    name: str
    id: str
    line: int
    variant: dict = field(default_factory=dict)
    problem: str = ""


def enrolled(path: str | Path, assignment: Assignment) -> list[Enrolled]:
    """The students of ``students.csv`` (or a plain roster: a student without axis columns gets the id rule's
    variant, :func:`helpers.course.variants.variant_for`). Raises :class:`helpers.course.roster.RosterError`."""
    out = []
    for s in read_roster(path, what="roster"):
        row = Enrolled(s.name, s.id, s.line)
        rule = variant_for(assignment, s.id) if assignment.variants else {}
        for axis, values in assignment.variants.items():
            text = s.cells.get(axis)
            if not text:
                row.variant[axis] = rule[axis]
                continue
            try:
                row.variant[axis] = values[pinned_index(values, text, f"roster line {s.line}, {axis}")]
            except RosterError as exc:
                row.problem = str(exc)
        out.append(row)
    return out


def expected_parameters(assignment: Assignment, variant: dict) -> dict[str, dict]:
    """Section -> the parameters its report must record: the fixed settings, the profile and the variant."""
    return assignment.parameters(variant)
