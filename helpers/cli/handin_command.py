"""``fashion-report handin [-o FILE]``: check the student folder it runs in and pack the hand-in zip
(:mod:`helpers.course.handin`), with ``verify``'s checks that need no rerun (the fingerprint, the page against
``metrics.json``) applied to every section's report."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from helpers.cli.runner import SECTIONS, notebook_path
from helpers.cli.verify_inputs import Unreadable, load_page
from helpers.cli.verify_page import page_problems
from helpers.course.handin import HandinError, check_folder, write_handin
from helpers.reporting.fingerprint import check_fingerprint


def add_parser(sub) -> argparse.ArgumentParser:
    """Add the ``handin`` command to the ``sub`` parsers of ``fashion-report``."""
    parser = sub.add_parser(
        "handin", help="check this student folder and pack the hand-in zip (PDF per question, reports, answers)",
        description="Run inside the folder `fashion-report start` made, after `fashion-report run`. Refuses, saying "
                    "what is wrong, when a section failed, timed out or is missing, when a parameter differs from "
                    "your assignment's (course.json), or when a report's fingerprint or page does not match its "
                    "metrics.json; warns for unanswered questions. Writes one zip: each section's HTML, PDF and "
                    "metrics.json, your answers, handin.pdf (each question on its own pages) and handin.json "
                    "(the manifest: every file's SHA-256 and the question -> pages map). Exit status 0 when "
                    "handed in, 1 when refused, 2 when the folder is no student folder.")
    parser.add_argument("-o", "--output", type=Path, default=None, metavar="FILE",
                        help="the zip to write (default: handin-<id>.zip in the folder)")
    parser.add_argument("--with-code", action="store_true", help="show the code of each question's cells in handin.pdf")
    parser.add_argument("--folder", type=Path, default=Path("."), metavar="FOLDER",
                        help="the student folder (default: the current folder)")
    return parser


def report_check(section: str, folder: Path, metrics: dict) -> list[str]:
    """``verify``'s checks of one report made without a rerun: its fingerprint against the toolkit's notebook and
    its HTML page against its ``metrics.json``."""
    # the executed notebook beside it: a changed code cell is named by its number and first words
    problems = check_fingerprint(metrics, notebook=notebook_path(section), executed=folder / f"{section}.ipynb")
    page = folder / f"{section}.html"
    try:
        problems += page_problems(load_page(page), metrics, page.name)
    except Unreadable as exc:
        problems.append(str(exc))
    return problems


def run(args) -> int:
    """``handin``: 0 when the zip was written, 1 when the folder was refused (each reason printed), 2 when it is no
    student folder."""
    notebooks = {s: nb for s, (nb, _title) in SECTIONS.items()}
    try:
        handin = check_folder(args.folder, notebooks=notebooks, report_check=report_check)
    except HandinError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for warning in handin.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    if not handin.ok:
        print(f"error: not handed in; fix these and run handin again ({len(handin.problems)}):", file=sys.stderr)
        for problem in handin.problems:
            print(f"  - {problem}", file=sys.stderr)
        return 1
    path, manifest = write_handin(handin, args.output, with_code=args.with_code)
    pages = ", ".join(f"{q} p. {a}" + (f"-{b}" if b != a else "") for q, (a, b) in manifest["pages"].items())
    print(f"handed in: {path} ({len(manifest['files']) + 1} files; handin.pdf: {pages or 'no questions'})")
    return 0
