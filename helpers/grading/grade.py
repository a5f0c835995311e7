"""``check``, the whole class: read and check every hand-in (in parallel processes, a progress bar for the class),
match each to its roster row, compare them with each other, rerun those asked for, score them by the rubric and
write the grade sheet and the pages.

It runs again safely: ``OUT/.check-state.json`` keeps each hand-in's checks by its file's name, size and time, the
roster row and the assignment, so a second ``check`` checks only new or changed hand-ins (``force`` checks all
again), and the grader's marks in ``grades.csv`` are read back before it is written again. One hand-in that cannot
be read is a line of its own; nothing of a hand-in stops the class.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from helpers import atomic
from helpers.grading import similarity
from helpers.grading.assignment import Assignment, Enrolled, enrolled, load_assignment
from helpers.grading.checks import handin_lines
from helpers.grading.handins import HandIn, find_handins, page_text, read_handin
from helpers.grading.lines import Graded, failed, passed
from helpers.grading.pages import student_folder
from helpers.grading.rubric import Rubric, apply, load_rubric, parse_rubric

STATE = ".check-state.json"
# parameters that say who ran a report and where it went, not what was run
IDENTITY = ("author_name", "author_id", "course", "output_dir", "data_dir")
STATE_FORMAT = 1


@dataclass
class Tools:
    """What ``check`` gets from the command line's room: ``page_problems(html, metrics, name)`` (verify's reading
    of a page against ``metrics.json``) and ``run_rows(rows, timeout)`` (reruns through ``run --batch``'s
    executors; see :mod:`.rerun`); ``here()`` the grader's machine (:func:`.machines.this_machine`)."""

    page_problems: Callable | None = None
    run_rows: Callable | None = None
    here: Callable | None = None


@dataclass
class Options:
    """The grader's choices (each a command-line option of ``check``)."""

    rerun: str = "none"
    seed: int | None = None
    timeout: float | None = None
    spread_seeds: int = 5
    k: float = 3.0
    similarity_threshold: float = 0.5
    ngram: int = 5
    results_tolerance: float = 1e-6
    read_pdfs: bool = False
    jobs: int = 2
    force: bool = False
    pdf: bool = True
    progress: bool = True


@dataclass
class Context:
    """What every worker needs: the assignment, the roster by id, the tools."""

    assignment: Assignment
    students: dict[str, Enrolled]
    tools: Tools
    ngram: int = 5
    questions_text: str = ""
    out: Path | None = None  # where each student's copy of the pages they handed in goes
    read_pdfs: bool = False


_CONTEXT: Context | None = None  # set in each worker process by _init


def _init(context: Context) -> None:
    global _CONTEXT
    _CONTEXT = context


def match(h: HandIn, students: dict[str, Enrolled]) -> Enrolled | None:
    """The roster row of a hand-in: by the id it records, else by an id in its file name (``handin-<id>.zip``)."""
    sid = str(h.student.get("id") or "")
    if sid in students:
        return students[sid]
    stem = re.sub(r"\.zip$", "", h.source.name, flags=re.I)
    for candidate in (stem, stem.removeprefix("handin-")):
        if candidate in students:
            return students[candidate]
    return None


def features(h: HandIn, ctx: Context) -> dict:
    """What the class-wide steps need of a hand-in: result vectors, answers and their n-grams, rubric facts."""
    vectors = {s: similarity.result_vector(sec.metrics) for s, sec in h.sections.items() if sec.metrics}
    own = " ".join(page_text(sec.html) for sec in h.sections.values() if sec.html)
    grams = similarity.answer_grams(h.answers, ctx.questions_text, own, n=ctx.ngram)
    sections = {}
    for s, sec in h.sections.items():
        m = sec.metrics or {}
        tables = [len(v["configurations"]) for v in [m, *m.values()] if isinstance(v, dict)
                  and isinstance(v.get("configurations"), list)]
        sections[s] = {"finished": bool(((m.get("best") or {}).get("test") or {}).get("accuracy") is not None),
                       "profile_ok": (m.get("parameters") or {}).get("profile") == ctx.assignment.profile,
                       "configurations": max(tables, default=0)}
    return {"vectors": vectors, "answers": h.answers, "grams": grams, "sections": sections,
            "words": {q: len(similarity.words(t)) for q, t in h.answers.items()},
            "metrics": {s: sec.metrics for s, sec in h.sections.items() if sec.metrics}}


def check_one(path: Path, ctx: Context | None = None) -> dict:
    """Read and check one hand-in; returns ``{"graded": Graded as data, "features": ...}``. Never raises."""
    ctx = ctx or _CONTEXT
    g = Graded("", path.name, path.name, status="broken")
    try:
        h = read_handin(path)
        student = match(h, ctx.students)
        if student is None:
            g = Graded(str(h.student.get("name") or ""), str(h.student.get("id") or path.name), path.name, h.digest,
                       "unknown student")
            g.lines = [failed("identity", f"{path.name}: student id {h.student.get('id') or 'none recorded'!r} is "
                                          "not on the roster", "not on the roster")]
            return {"graded": g.as_dict(), "features": {}}
        g = Graded(student.name, student.id, path.name, h.digest, "broken" if h.broken else "checked",
                   student.variant)
        g.lines = handin_lines(h, ctx.assignment, student, ctx.tools.page_problems, read_pdfs=ctx.read_pdfs)
        feats = {} if h.broken else features(h, ctx)
        g.accuracy = {s: m["best"]["test"]["accuracy"] for s, m in feats.get("metrics", {}).items()
                      if isinstance(((m.get("best") or {}).get("test") or {}).get("accuracy"), (int, float))}
        g.reports = keep_pages(h, g, ctx.out)
        return {"graded": g.as_dict(), "features": feats}
    except Exception as exc:  # one hostile hand-in is a line, never a stopped class
        g.status = "broken"
        g.lines = [failed("hand-in", f"{path.name} could not be checked: {type(exc).__name__}: {str(exc)[:200]}",
                          "hand-in unreadable")]
        return {"graded": g.as_dict(), "features": {}}


def keep_pages(h: HandIn, g: Graded, out: Path | None) -> dict[str, str]:
    """Copy the pages a grader reads (each section's HTML, ``handin.pdf``) to ``out/students/<id>/handin/`` under
    fixed names (no path of the hand-in is used); returns name -> path relative to ``out``."""
    if out is None or not h.pages:
        return {}
    rel = f"{student_folder(g)}/handin"
    (out / rel).mkdir(parents=True, exist_ok=True)
    for name, data in h.pages.items():  # whole or not at all, without fsync: a copy, written again by --force
        tmp = out / rel / f".{name}.tmp"
        tmp.write_bytes(data)
        os.replace(tmp, out / rel / name)
    return {name.rsplit(".", 1)[0] if name.endswith(".html") else name: f"{rel}/{name}" for name in h.pages}


def stat_key(path: Path, student_row: str, assignment: Assignment) -> str:
    """What decides whether a hand-in must be checked again."""
    info = path.lstat()
    return f"{path.name}:{info.st_size}:{info.st_mtime_ns}:{assignment.digest[:16]}:{student_row}"


def load_state(out: Path) -> dict:
    """The previous run's checks by :func:`stat_key` (empty when none, or unreadable)."""
    try:
        state = json.loads((out / STATE).read_text(encoding="utf-8"))
        return state.get("checked", {}) if state.get("format") == STATE_FORMAT else {}
    except (OSError, ValueError):
        return {}


def check_all(paths: list[Path], ctx: Context, options: Options, previous: dict, roster_key: str) -> dict[str, dict]:
    """Every hand-in's result by its :func:`stat_key`, reused from ``previous`` unless new, changed or forced."""
    keys = {p: stat_key(p, roster_key, ctx.assignment) for p in paths}
    done = {k: previous[k] for p, k in keys.items() if k in previous and not options.force}
    todo = [p for p, k in keys.items() if k not in done]
    bar = tqdm(total=len(paths), desc="checking hand-ins", unit="hand-in", disable=not options.progress,
               initial=len(paths) - len(todo))
    if len(todo) > 8 and options.jobs > 1:
        with ProcessPoolExecutor(max_workers=options.jobs, initializer=_init, initargs=(ctx,)) as pool:
            for p, result in zip(todo, pool.map(check_one, todo, chunksize=4)):
                done[keys[p]] = result
                bar.update()
    else:
        for p in todo:
            done[keys[p]] = check_one(p, ctx)
            bar.update()
    bar.close()
    return {keys[p]: done[keys[p]] for p in paths}


def questions_text(assignment: Assignment) -> str:
    """The questions' titles and texts: words an answer may repeat without copying anyone."""
    return " ".join(f"{getattr(q, 'title', '')} {getattr(q, 'text', '')}" for q in assignment.questions)


@dataclass
class ClassResult:
    """What ``check`` produced: every student's record, the similarity pairs, the rubric, and what was rerun."""

    graded: list[Graded]
    pairs: list[similarity.Pair] = field(default_factory=list)
    rubric: Rubric | None = None
    features: dict = field(default_factory=dict)  # student id -> features
    rerun: dict = field(default_factory=dict)


def read_class(handins: Path, roster: Path, assignment_path: Path, out: Path, options: Options,
               tools: Tools, rubric_path: Path | None = None) -> ClassResult:
    """Check every hand-in of the class (no rerun): the records, pairs and rubric, not yet written."""
    assignment = load_assignment(assignment_path)
    rubric = load_rubric(rubric_path, list(assignment.questions)) if rubric_path else parse_rubric(
        assignment.rubric, list(assignment.questions))
    students = {s.id: s for s in enrolled(roster, assignment)}
    ctx = Context(assignment, students, tools, options.ngram, questions_text(assignment), out, options.read_pdfs)
    paths = find_handins(handins, exclude=out)

    roster_key = hashlib.sha256(json.dumps({k: s.variant for k, s in students.items()}, sort_keys=True,
                                           default=str).encode()).hexdigest()[:16] + f":pdf{int(options.read_pdfs)}"
    results = check_all(paths, ctx, options, {} if options.force else load_state(out), roster_key)
    atomic.write_text(out / STATE, json.dumps({"format": STATE_FORMAT, "checked": results}, default=str))
    graded, feats, seen = [], {}, {}
    for key, r in results.items():
        g = Graded.from_dict(r["graded"])
        if g.id in seen and g.status != "unknown student":
            g.lines.append(failed("hand-in", f"a second hand-in for id {g.id} ({g.handin}); {seen[g.id]} is graded",
                                  "second hand-in"))
            g.status, g.id = "duplicate", f"{g.id} ({g.handin})"
        seen.setdefault(g.id, g.handin)
        graded.append(g)
        feats[g.id] = r["features"]
    for s in students.values():
        if s.id not in seen:
            g = Graded(s.name, s.id, status="missing", variant=s.variant)
            g.lines = [failed("hand-in", "no hand-in found for this student", "no hand-in")]
            graded.append(g)
    order = {sid: i for i, sid in enumerate(students)}
    graded.sort(key=lambda g: (order.get(g.id, len(order)), g.id))
    result = ClassResult(graded, rubric=rubric, features=feats)
    result.pairs = class_pairs(result, assignment, options)
    mark_pairs(result)
    return result


def class_pairs(result: ClassResult, assignment: Assignment, options: Options) -> list[similarity.Pair]:
    """Identical results from different recorded parameters (impossible for honest runs; a student who ran the
    wrong variant honestly is the parameters check's business), and overlapping answers, across the class."""
    items, answers = [], []
    for g in result.graded:
        f = result.features.get(g.id) or {}
        for section, (vector, parts) in (f.get("vectors") or {}).items():
            recorded = ((f.get("metrics") or {}).get(section) or {}).get("parameters") or {}
            items.append({"id": g.id, "section": section, "vector": vector, "parts": parts,
                          "assigned": {k: v for k, v in recorded.items() if k not in IDENTITY}})
        if f.get("grams"):
            answers.append({"id": g.id, "answers": f["answers"], "grams": f["grams"]})
    return (similarity.result_pairs(items, tolerance=options.results_tolerance)
            + similarity.answer_pairs(answers, threshold=options.similarity_threshold, n=options.ngram))


def mark_pairs(result: ClassResult) -> None:
    """Add a similarity line to each student a pair names (or one saying none was found). The line names no other
    student (it is the student's feedback): who and what is on the class page, with the evidence."""
    found: dict[tuple[str, str], list[str]] = {}
    for p in result.pairs:
        what = (f"{p.where}: the results are those of another hand-in run with other parameters" if p.kind == "results"
                else f"answer {p.where}: {p.score:.0%} of its word n-grams are in another student's answer")
        for me in (p.a,) if p.one_sided else (p.a, p.b):
            found.setdefault((me, p.kind), []).append(what)
    for g in result.graded:
        if g.status != "checked":
            continue
        for kind in ("results", "answers"):
            if (g.id, kind) in found:
                text = "; ".join(dict.fromkeys(found[(g.id, kind)]))
                g.lines.append(failed("similarity", f"{text} (for the grader to read)", f"similar {kind}"))
        if not any(k[0] == g.id for k in found):
            g.lines.append(passed("similarity", "no other hand-in has the same results or overlapping answers"))


def score_class(result: ClassResult, assignment: Assignment) -> None:
    """Every student's points by the rubric."""
    ids = [q.id for q in assignment.questions]
    for g in result.graded:
        f = result.features.get(g.id) or {}
        facts = {"sections": f.get("sections", {}), "answers": f.get("words", {}), "questions": ids,
                 "similar": any(x.check == "similarity" and x.ok is False for x in g.lines)}
        apply(result.rubric, g, facts)


def environment_note(here: dict) -> str:
    """A line naming the grader's machine (for the class page)."""
    return ", ".join(f"{k} {v}" for k, v in here.items() if v not in (None, [], ""))

