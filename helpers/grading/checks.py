"""The checks of one hand-in that need no rerun, each a feedback line: whose it is, whether it is the right
assignment (parameters = the roster row's variant and the fixed settings, the profile, every section present and
finished), whether its files are the ones packed (manifest and fingerprint digests), whether the page shows what
``metrics.json`` holds, whether the numbers hold together (:mod:`.arithmetic`), and the data digest.

``page_problems(html, metrics, name) -> [problems]`` is handed in (``verify``'s page reader lives in the command
line's room); everything else is the toolkit's own fingerprint recipe (:mod:`helpers.reporting.fingerprint`).
"""

from __future__ import annotations

import math
import re
import subprocess
from collections.abc import Callable

from helpers.grading import arithmetic
from helpers.grading.assignment import Assignment, Enrolled, expected_parameters
from helpers.grading.handins import HandIn
from helpers.grading.lines import Line, failed, note, passed
from helpers.paths import notebook_path
from helpers.reporting.fingerprint import FASHION_MNIST_DIGEST, check_fingerprint, digest
from helpers.sections import SECTIONS

MAX_SHOWN = 6  # problems listed per line; the rest counted


def _listed(problems: list[str]) -> str:
    shown = "; ".join(p[:300] for p in problems[:MAX_SHOWN])
    return shown + (f"; ... and {len(problems) - MAX_SHOWN} more" if len(problems) > MAX_SHOWN else "")


def _same(a, b) -> bool:
    """Recorded and assigned values alike: equal, a tuple as its list, NaN as NaN, True never as 1."""
    a, b = (list(v) if isinstance(v, tuple) else v for v in (a, b))
    if isinstance(a, bool) != isinstance(b, bool):
        return False
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return a == b


def identity_lines(h: HandIn, student: Enrolled) -> list[Line]:
    """Whether the hand-in and its reports name the roster's student."""
    recorded = h.student.get("id")
    lines = []
    if recorded is not None and str(recorded) != student.id:
        lines.append(failed("identity", f"the hand-in names student id {recorded!r}, the roster row {student.id!r}",
                            "another student's id"))
    authors = {s: str((sec.metrics or {}).get("parameters", {}).get("author_id")) for s, sec in h.sections.items()
               if (sec.metrics or {}).get("parameters", {}).get("author_id") is not None}
    wrong = {s: a for s, a in authors.items() if a != student.id}
    if wrong:
        lines.append(failed("identity", "the reports' author is not this student: " + ", ".join(
            f"{s} author_id {a!r}" for s, a in wrong.items()) + f" (roster id {student.id!r})", "report of another author"))
    if not lines:
        lines.append(passed("identity", f"hand-in and reports name {student.name} ({student.id})"))
    return lines


def assignment_lines(h: HandIn, assignment: Assignment, student: Enrolled) -> list[Line]:
    """The right assignment: its id and digest, the sections, the profile and every parameter."""
    lines = []
    aid, adigest = h.assignment.get("id"), h.assignment.get("digest")
    if aid is not None and aid != assignment.id:
        lines.append(failed("assignment", f"handed in for assignment {aid!r}, not {assignment.id!r}", "other assignment"))
    elif adigest is not None and adigest != assignment.digest:
        lines.append(failed("assignment", f"made from another version of {assignment.id}'s file (sha256 "
                            f"{adigest[:12]}, the grader's {assignment.digest[:12]})", "other assignment version"))
    missing = [s for s in list(assignment.sections) if s not in h.sections]
    unfinished = [s for s in list(assignment.sections) if s in h.sections and not _finished(h.sections[s].metrics)]
    if missing or unfinished:
        lines.append(failed("sections", ", ".join([f"{s} missing" for s in missing] + [f"{s} not finished" for s in
                                                                                         unfinished]),
                            "missing section" if missing else "unfinished section"))
    else:
        lines.append(passed("sections", f"every section of the assignment is there and finished: "
                                        f"{', '.join(list(assignment.sections))}"))
    recorded = {s: (sec.metrics or {}).get("parameters") or {} for s, sec in h.sections.items()}
    expected = expected_parameters(assignment, student.variant)
    profile_off = [s for s in recorded if s in expected and recorded[s].get("profile") != assignment.profile]
    if profile_off:
        lines.append(failed("profile", ", ".join(f"{s} ran profile {recorded[s].get('profile')!r}" for s in
                                                  profile_off) + f"; the assignment asks for {assignment.profile!r}",
                            "wrong profile"))
    diffs = [f"{s}.{k} = {recorded[s].get(k, '(not recorded)')!r:.60}, assigned {v!r:.60}"
             for s, want in expected.items() if s in recorded for k, v in want.items()
             if k != "profile" and not _same(recorded[s].get(k), v)]
    axes = {a.rpartition(".")[2] for a in assignment.variants}
    if diffs:
        variant = any(d.split(" = ", 1)[0].split(".", 1)[1] in axes for d in diffs)
        lines.append(failed("parameters", _listed(diffs), "wrong variant" if variant else "parameters changed"))
    elif recorded:
        shown = ", ".join(f"{a} = {v!r}" for a, v in student.variant.items())
        lines.append(passed("parameters", f"the runs used the assignment's settings and this student's variant "
                                          f"({shown or 'none'})"))
    return lines


def _finished(metrics: dict | None) -> bool:
    best = (metrics or {}).get("best")
    return isinstance(best, dict) and isinstance(best.get("test"), dict) and best["test"].get("accuracy") is not None


def integrity_lines(h: HandIn, page_problems: Callable[[str, dict, str], list[str]] | None) -> list[Line]:
    """The manifest's digests, each report's fingerprint, its page against metrics.json, its data digest."""
    lines = []
    if h.kind == "zip" or h.manifest is not None:
        lines.append(failed("files", _listed(h.problems), "files changed") if h.problems else
                     passed("files", "every file has the SHA-256 that handin.json records"))
    elif h.problems:
        lines.append(failed("files", _listed(h.problems), "files refused"))
    for name, sec in h.sections.items():
        if sec.metrics is None:
            continue
        vol = SECTIONS[name].volatile if name in SECTIONS else ()
        fp = check_fingerprint(sec.metrics, notebook=notebook_path(name), volatile=vol)
        lines.append(failed("fingerprint", f"{name}: {_listed(fp)}", "fingerprint does not match") if fp else
                     passed("fingerprint", f"{name}: metrics.json matches its fingerprint "
                                           f"{(sec.metrics.get('fingerprint') or {}).get('short')}"))
        data = (sec.metrics.get("fingerprint") or {}).get("data")
        if data != FASHION_MNIST_DIGEST and (sec.metrics.get("parameters") or {}).get("dataset", "fashion_mnist") \
                == "fashion_mnist":
            lines.append(failed("data", f"{name}: the data digest is {data}, Fashion-MNIST's is {FASHION_MNIST_DIGEST}",
                                "not Fashion-MNIST"))
        if sec.html is None:
            lines.append(failed("page", f"{name}: no {name}.html, the page a grader reads", "page missing"))
        elif page_problems is not None:
            found = page_problems(sec.html, sec.metrics, f"{name}.html")
            lines.append(failed("page", _listed(found), "page differs from metrics.json") if found else
                         passed("page", f"{name}.html shows the numbers metrics.json holds"))
    return lines


def answer_lines(h: HandIn, assignment: Assignment) -> list[Line]:
    """The answers handed in (``answers.json``) against those each section's run digested (its fingerprint's
    ``answers``): answers written or changed after the run are named as such, apart from code."""
    lines = []
    for name, sec in h.sections.items():
        recorded = ((sec.metrics or {}).get("fingerprint") or {}).get("answers")
        if not recorded:
            continue
        mine = {q.id: h.answers[q.id] for q in assignment.questions if q.section == name and q.id in h.answers}
        if digest(mine) != recorded:
            lines.append(failed("answers", f"{name}: the answers handed in are not those the run had (fingerprint "
                                           f"{recorded}): written or changed after the run", "answers edited after the run"))
        else:
            lines.append(passed("answers", f"{name}: the answers handed in are those the run had"))
    return lines


PDF_HEADLINE = re.compile(r"test\s+accuracy\s+(?P<acc>-?[\d.]+%),\s+test\s+loss\s+(?P<loss>[-\d.naif]+)")


def pdf_text(data: bytes, timeout: float = 30) -> str | None:
    """A PDF's text by poppler's ``pdftotext`` (the PDF is parsed, nothing in it runs); None without the tool or
    when it fails."""
    try:
        done = subprocess.run(["pdftotext", "-q", "-", "-"], input=data, capture_output=True, timeout=timeout,
                              check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.decode("utf-8", errors="replace") if done.returncode == 0 else None


def pdf_lines(h: HandIn) -> list[Line]:
    """Each section PDF's headline (``test accuracy A%, test loss L``) against metrics.json (``--read-pdfs``)."""
    lines = []
    for name, data in h.pdfs.items():
        test = (((h.sections[name].metrics or {}).get("best") or {}).get("test") or {})
        acc = test.get("accuracy")
        text = pdf_text(data)
        if text is None or not isinstance(acc, (int, float)):
            lines.append(note("pdf", f"{name}.pdf: not read (no pdftotext, or no test accuracy to compare)"))
            continue
        shown = [m["acc"] for m in PDF_HEADLINE.finditer(" ".join(text.split()))]
        wrong = [a for a in shown if a != f"{acc:.2%}"]
        if wrong or not shown:
            lines.append(failed("pdf", f"{name}.pdf shows test accuracy {', '.join(wrong) or 'nowhere'}; metrics.json "
                                       f"best.test.accuracy = {acc:.2%}", "PDF differs from metrics.json"))
        else:
            lines.append(passed("pdf", f"{name}.pdf shows the test accuracy metrics.json holds ({acc:.2%})"))
    return lines


def arithmetic_lines(h: HandIn) -> list[Line]:
    """Each section's numbers checked against each other (:mod:`.arithmetic`), and its timings."""
    lines = []
    for name, sec in h.sections.items():
        if sec.metrics is None:
            continue
        found = arithmetic.arithmetic_problems(sec.metrics)
        lines.append(failed("arithmetic", f"{name}: {_listed(found)}", "numbers do not add up") if found else
                     passed("arithmetic", f"{name}: test accuracy k/N, confusion matrix, per-class accuracies, "
                                          "best configuration and spreads hold together"))
        slow = arithmetic.timing_problems(sec.metrics)
        lines.append(failed("timings", f"{name}: {_listed(slow)}", "implausible timings") if slow else
                     note("timings", f"{name}: {sec.metrics.get('wall_seconds', 0) or 0:.0f} s wall time; the "
                                     "timings are plausible for the recorded machine"))
    return lines


def handin_lines(h: HandIn, assignment: Assignment, student: Enrolled, page_problems: Callable | None, *,
                 read_pdfs: bool = False) -> list[Line]:
    """Every check of one hand-in that needs no rerun, in the order the feedback shows them (the PDFs' headlines
    with ``read_pdfs``: a tenth of a second a PDF)."""
    if h.broken:
        return [failed("hand-in", f"{h.label}: {h.broken}", "hand-in unreadable")]
    return (identity_lines(h, student) + assignment_lines(h, assignment, student) + integrity_lines(h, page_problems)
            + (pdf_lines(h) if read_pdfs else []) + answer_lines(h, assignment) + arithmetic_lines(h))
