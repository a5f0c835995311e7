"""``fashion-report assign`` and ``fashion-report start``: an instructor's roster to ``students.csv``, and a student's
working folder. The work is :mod:`helpers.course`'s; this module hands it what only the command line knows (each
section's notebook, and the parameter check ``run --check`` makes) and turns its errors into one line each."""

from __future__ import annotations

import sys
from pathlib import Path

from helpers import atomic
from helpers.cli.runner import SECTIONS, notebook_path
from helpers.course.assignment import load_assignment
from helpers.course.folder import make_folder
from helpers.course.roster import assign, read_roster, students_csv
from helpers.course.variants import shares, variant_for
from helpers.textfiles import InputError


def add_parsers(sub) -> None:
    """Add the ``assign`` and ``start`` sub-commands to ``sub`` (argparse sub-parsers)."""
    p = sub.add_parser("assign", help="give each student of a roster their variant of an assignment: students.csv",
                       description="Reads ROSTER (a CSV with at least the columns name and id, as a spreadsheet "
                       "exports it; a column named after a variant axis, e.g. cnn.init, pins that student's value) "
                       "and writes one row per student: name, id, their variant, and what `run --batch` needs to run "
                       "the row. Every value of every axis goes to an equal share of the class (±1).")
    p.add_argument("roster", type=Path, metavar="ROSTER")
    p.add_argument("assignment", type=Path, metavar="ASSIGNMENT.yaml")
    p.add_argument("-o", "--output", type=Path, required=True, metavar="students.csv")
    p.set_defaults(course_command=assign_command)
    p = sub.add_parser("start", help="make a student's working folder for an assignment",
                       description="Makes FOLDER: the assignment's notebooks with your parameters (the fixed ones and "
                       "your variant) filled in and its questions in place, a README saying what to do next, and "
                       "reports/ for your runs. Open it with `jupyter lab FOLDER`.")
    p.add_argument("assignment", type=Path, metavar="ASSIGNMENT.yaml")
    p.add_argument("--name", help="your name, as the report shows it (default with --roster: the row's)")
    p.add_argument("--id", required=True, dest="student_id", help="your student id (your variant follows from it)")
    p.add_argument("--roster", type=Path, metavar="students.csv",
                   help="the instructor's students.csv: your variant is your row's (when it was moved or pinned)")
    p.add_argument("-o", "--output", type=Path, required=True, metavar="FOLDER")
    p.add_argument("--force", action="store_true", help="write into a FOLDER that is not empty")
    p.set_defaults(course_command=start_command)


def load(path: Path, check_section):
    """The assignment at ``path``, checked against the toolkit's notebooks and, through ``check_section(section,
    parameters, output_dir)`` (``run --check``'s), every section's parameters in every variant."""
    return load_assignment(path, {s: notebook_path(s) for s in SECTIONS},
                           lambda section, parameters: check_section(section, parameters, Path("reports")))


def text_argument(option: str, value: str) -> str:
    """A command-line text as the student typed it, refused when it is not valid text (undecodable bytes)."""
    value = " ".join(value.split())
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"{option}: not valid UTF-8 text") from None
    if not value:
        raise ValueError(f"{option}: empty")
    return value


def assign_command(args, check_section) -> int:
    """``assign ROSTER ASSIGNMENT -o students.csv``."""
    assignment = load(args.assignment, check_section)
    students = read_roster(args.roster)
    variants, moved, warnings = assign(assignment, students, f"roster {args.roster}")
    atomic.write_bytes(args.output, students_csv(assignment, students, variants))
    for w in warnings:
        print(f"warning: {w}", file=sys.stderr)
    print(f"{len(students)} students, assignment {assignment.id}: wrote {args.output}")
    for axis, values in assignment.variants.items():
        counts = shares(values, [v[axis] for v in variants])
        print(f"  {axis}: " + ", ".join(f"{value} {n}" for value, n in counts.items()))
    if moved:
        print(f"{len(moved)} student(s) differ from the rule their id gives (pinned, or moved to balance the class); "
              f"they start with `fashion-report start ... --roster {args.output.name} --id ID`: "
              + ", ".join(moved))
    return 0


def start_command(args, check_section) -> int:
    """``start ASSIGNMENT --name NAME --id ID -o FOLDER [--roster students.csv] [--force]``."""
    assignment = load(args.assignment, check_section)
    sid = text_argument("--id", args.student_id)
    name = text_argument("--name", args.name) if args.name is not None else None
    variant = variant_for(assignment, sid)
    if args.roster is not None:
        rows = [s for s in read_roster(args.roster, "students file") if s.id == sid]
        if not rows:
            raise ValueError(f"no row with id {sid!r} in {args.roster}; check the id, or leave out --roster")
        (variant,), _, _ = assign(assignment, rows, f"students file {args.roster}")
        name = name or rows[0].name.removeprefix("'")
    if name is None:
        raise ValueError("--name is required (or --roster with your row)")
    course = make_folder(assignment, {"name": name, "id": sid}, variant, args.output,
                         {s: notebook_path(s) for s in assignment.sections}, force=args.force)
    print(f"made {args.output} for {name} ({sid}), assignment {assignment.id}; variant: "
          + (", ".join(f"{a}={v}" for a, v in variant.items()) or "none"))
    print(f"next: jupyter lab {args.output}   (or: cd {args.output} && fashion-report run; then fashion-report handin)")
    return 0 if course.exists() else 1


def run(args, check_section) -> int:
    """Run the ``assign`` or ``start`` command ``args`` names, checking parameters with ``check_section`` (``run
    --check``'s, passed in by :mod:`helpers.cli.main`, which imports this module); an input error exits 2 with one
    line."""
    try:
        return args.course_command(args, check_section)
    except (InputError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
