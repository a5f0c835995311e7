"""``fashion-report check`` from start to end: read and check the class (:func:`helpers.grading.grade.read_class`),
rerun those asked for (:func:`helpers.grading.rerun.rerun_class`), score by the rubric, and write ``grades.csv``
(the grader's marks merged back), the class page and every student's feedback (HTML and PDF) into ``out``.
"""

from __future__ import annotations

import json
import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

from helpers.atomic import write_text
from helpers.grading.assignment import load_assignment
from helpers.grading.grade import ClassResult, Options, Tools, read_class, score_class
from helpers.grading.pages import class_figures, class_page, feedback_page, write_feedback
from helpers.grading.rerun import rerun_class
from helpers.grading.sheet import read_marks, write_sheet


@dataclass
class Written:
    """What ``check`` wrote and how long it took."""

    grades: Path
    index: Path
    result: ClassResult
    seconds: float
    problems: list[str]


def _feedback(item: tuple) -> str | None:
    out, g, page, pdf = item
    return write_feedback(out, g, page, pdf=pdf)


def check_class(handins: str | Path, roster: str | Path, assignment: str | Path, *, out: str | Path | None = None,
                rubric: str | Path | None = None, options: Options | None = None, tools: Tools | None = None,
                log=print) -> Written:
    """Grade a class (see the module docstring); ``out`` defaults to ``HANDINS/../<folder>-graded``, beside the
    hand-ins. Raises :class:`~helpers.textfiles.InputError` for an assignment, roster, rubric or grade sheet that
    cannot be read; never for a hand-in."""
    start, t = time.perf_counter(), os.times()
    cpu_before = t.user + t.system + t.children_user + t.children_system
    options, tools = options or Options(), tools or Tools()
    handins = Path(handins)
    out = Path(out) if out is not None else handins.resolve().parent / f"{handins.resolve().name}-graded"
    out.mkdir(parents=True, exist_ok=True)
    the_assignment = load_assignment(assignment)
    result = read_class(handins, Path(roster), Path(assignment), out, options, tools,
                        Path(rubric) if rubric else None)
    result.rerun = rerun_class(result, options, tools, out) if options.rerun != "none" else {"mode": "none"}
    score_class(result, the_assignment)
    marks = read_marks(out / "grades.csv", result.rubric)  # before anything is written: the grader's marks stay
    rows = write_sheet(out / "grades.csv", result.graded, result.rubric, marks)
    problems = []
    title = f"{the_assignment.title} ({the_assignment.id})"
    pages = [(out, g, feedback_page(g, result.rubric, row, assignment=title), options.pdf)
             for g, row in zip(result.graded, rows)]
    bar = tqdm(total=len(pages), desc="feedback pages", unit="student", disable=not options.progress)
    if options.pdf and options.jobs > 1 and len(pages) > 8:  # WeasyPrint takes a second a page: in parallel
        with ProcessPoolExecutor(max_workers=options.jobs) as pool:
            for error in pool.map(_feedback, pages, chunksize=4):
                problems += [error] if error else []
                bar.update()
    else:
        for item in pages:
            error = _feedback(item)
            problems += [error] if error else []
            bar.update()
    bar.close()
    figures = class_figures(out, result.graded, result.rubric, rows)
    index = out / "index.html"
    write_text(index, class_page(result.graded, rows, result.rubric, result.pairs, title=title, rerun=result.rerun,
                                 figures=figures))
    write_text(out / "check.json", json.dumps({"assignment": the_assignment.id, "rerun": result.rerun,
                                               "pairs": [p.as_dict() for p in result.pairs],
                                               "students": [g.as_dict() for g in result.graded]},
                                              indent=1, default=str))
    seconds = time.perf_counter() - start
    t = os.times()
    cpu = t.user + t.system + t.children_user + t.children_system - cpu_before
    flagged = sum(bool(g.flags) for g in result.graded)
    log(f"check: {len(result.graded)} students, {flagged} flagged, {len(result.pairs)} similar pairs, in "
        f"{seconds:.1f} s ({cpu:.1f} s of CPU); grades: {out / 'grades.csv'}; class page: {index}")
    for p in problems[:10]:
        log(f"  {p}")
    return Written(out / "grades.csv", index, result, seconds, problems)
