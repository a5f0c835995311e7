"""The hand-in: a student's folder checked and packed into one zip a grader can page through and trust.

:func:`check_folder` reads the folder that ``start`` made and ``run`` filled (``course.json``, ``assignment.yaml``,
``reports/run.json`` and ``reports/<section>/``) and lists what stops a hand-in: a section that failed, timed out
or never ran, a file missing, a parameter that differs from the student's assignment (named, with both values), an
``assignment.yaml`` changed since ``start``, an answer changed after its run (the report would show the older
text), a citation naming no number of the run, and whatever ``report_check`` finds (the command line passes
``verify``'s checks made without a rerun: the fingerprint, the page against ``metrics.json``). An unanswered
question is a warning, not a refusal. :func:`write_handin` then writes the zip (:mod:`helpers.atomic`: whole or not
at all): each section's HTML, PDF and ``metrics.json``, ``answers.json``, ``course.json``, ``assignment.yaml``, the
hand-in PDF (:mod:`helpers.course.handin_pdf`) and ``handin.json``, the manifest with the SHA-256 of every other
file and the page map {question id: [first page, last page]}.
"""

from __future__ import annotations

import hashlib
import json
import re
import stat
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from helpers import atomic
from helpers.course import answers as cells
from helpers.course.assignment import Assignment, AssignmentError, load_assignment
from helpers.course.handin_pdf import render_handin_pdf

FORMAT = 1
MAX_JSON_BYTES = 64 * 2**20  # a metrics.json or executed notebook larger than this is no report of the toolkit's
# what run.json calls a section that did not finish, and what a student should do about it
NOT_FINISHED = {"failed": "run it again once the error is fixed", "timed out": "run it again with more time (--timeout)",
                "kernel died": "run it again (the kernel ran out of memory or was stopped)",
                "busy": "wait for the other run to finish, then run it again"}
# a section's files in the zip: the section's folder name first, then the file (no other path gets in)
SECTION_FILES = ("{s}.html", "{s}.pdf", "metrics.json")
ReportCheck = Callable[[str, Path, dict], list]


class HandinError(Exception):
    """A folder that is no student folder, or one that cannot be handed in (the message says why)."""


@dataclass
class Section:
    """One section's report in the folder: ``reports/<name>/``, its ``metrics.json`` and executed notebook."""

    name: str
    folder: Path
    metrics: dict
    notebook: object  # nbformat.NotebookNode: the executed notebook the HTML and PDF were made from


@dataclass
class Handin:
    """What :func:`check_folder` found: the folder's records, the sections' reports, the answers, and the problems
    (refusals) and warnings."""

    root: Path
    course: dict
    assignment: Assignment | None = None
    sections: dict[str, Section] = field(default_factory=dict)
    answers: dict[str, str] = field(default_factory=dict)  # question id -> the answer as written (the template)
    shown: dict[str, str] = field(default_factory=dict)  # question id -> Markdown shown (citations filled)
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Whether nothing stops the hand-in."""
        return not self.problems

    @property
    def student(self) -> dict:
        """``{"name", "id"}`` as ``start`` recorded them."""
        return self.course.get("student") or {}


def read_json(path: Path, what: str):
    """A JSON file of at most :data:`MAX_JSON_BYTES` (a regular file, not a link), or :class:`HandinError`."""
    try:
        info = path.lstat()
    except FileNotFoundError:
        raise HandinError(f"{what} {path} does not exist") from None
    if not stat.S_ISREG(info.st_mode):
        raise HandinError(f"{what} {path} is not a regular file (a link or a folder): hand in the file itself")
    if info.st_size > MAX_JSON_BYTES:
        raise HandinError(f"{what} {path} is {info.st_size / 2**20:,.0f} MB; a report's is far smaller")
    try:
        return json.loads(path.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise HandinError(f"{what} {path} is not readable JSON ({str(exc)[:200]})") from None


def read_course(root: Path) -> dict:
    """The folder's ``course.json``; :class:`HandinError` when ``root`` is no student folder."""
    if not (root / "course.json").exists():
        raise HandinError(f"{root} has no course.json: run handin inside the folder `fashion-report start` made")
    course = read_json(root / "course.json", "course.json")
    if not isinstance(course, dict) or not isinstance(course.get("student"), dict) \
            or not isinstance(course.get("sections"), list) or not isinstance(course.get("parameters"), dict):
        raise HandinError(f"{root / 'course.json'} lacks student, sections or parameters: it was edited, or not "
                          "made by `fashion-report start`")
    return course


def run_statuses(reports: Path) -> dict[str, dict]:
    """``{section: run.json's record}`` of the last ``run`` (empty when there is no ``run.json``)."""
    if not (reports / "run.json").exists():
        return {}
    records = read_json(reports / "run.json", "run.json")
    records = records if isinstance(records, list) else []
    return {r["section"]: r for r in records if isinstance(r, dict) and isinstance(r.get("section"), str)}


def _same(a, b) -> bool:
    """Equal as JSON values (a tuple and a list with the same items are)."""
    return json.dumps(a, sort_keys=True, default=str) == json.dumps(b, sort_keys=True, default=str)


def parameter_problems(section: str, recorded: dict, expected: dict) -> list[str]:
    """Each parameter ``course.json`` sets for ``section`` that the run recorded with another value."""
    problems = []
    for name, value in expected.items():
        if name not in recorded:
            problems.append(f"{section}: parameter {name} is not recorded in metrics.json; course.json (your "
                            f"assignment) sets {value!r}")
        elif not _same(recorded[name], value):
            problems.append(f"{section}: parameter {name} is {recorded[name]!r} in the report but {value!r} in "
                            "course.json (your assignment): put the assignment's value back in the parameters cell "
                            "and run the section again")
    return problems


def load_section(h: Handin, name: str, record: dict | None, report_check: ReportCheck | None) -> Section | None:
    """Check one section's report (see the module docstring); its problems go to ``h.problems``."""
    folder = h.root / "reports" / name
    if record is not None and record.get("status") != "ok":
        status = str(record.get("status"))
        error = f" ({str(record.get('error'))[:300]})" if record.get("error") else ""
        h.problems.append(f"{name}: the section {status}{error}: "
                          f"{NOT_FINISHED.get(status, 'run it again')} (`fashion-report run {name}`)")
        return None
    wanted = [f.format(s=name) for f in SECTION_FILES] + [f"{name}.ipynb"]
    missing = [f for f in wanted if not (folder / f).is_file() or (folder / f).is_symlink()]
    if missing:
        ran = "has not been run" if not folder.exists() else f"lacks {', '.join(missing)} in {folder}"
        h.problems.append(f"{name}: the section {ran}: run it (`fashion-report run {name}`, or Run All in JupyterLab "
                          "then `fashion-report run` for the report)")
        return None
    try:
        metrics = read_json(folder / "metrics.json", f"{name}'s metrics.json")
        notebook = cells.read_notebook(folder / f"{name}.ipynb")
    except (HandinError, ValueError, OSError) as exc:
        h.problems.append(f"{name}: {exc}")
        return None
    if not isinstance(metrics, dict) or metrics.get("section") != name:
        h.problems.append(f"{name}: {folder / 'metrics.json'} is not the {name} section's report")
        return None
    expected = {**(h.course["parameters"].get(name) or {}), "profile": h.course.get("profile")}
    expected = {k: v for k, v in expected.items() if v is not None}
    h.problems += parameter_problems(name, metrics.get("parameters") or {}, expected)
    if report_check is not None:
        h.problems += [f"{name}: {p}" for p in report_check(name, folder, metrics)]
    return Section(name, folder, metrics, notebook)


def answer_problems(h: Handin, notebooks: Mapping[str, str]) -> None:
    """Collect the answers (from the executed notebooks, which the reports show), fill their citations, and note
    unanswered questions and answers the folder's own notebook has changed since the run."""
    questions = [q for q in h.assignment.questions if q.section in h.sections]
    metrics = {s: sec.metrics for s, sec in h.sections.items()}
    ran = {s: cells.answers(sec.notebook) for s, sec in h.sections.items()}
    now = {}
    for s in h.sections:
        path = h.root / notebooks[s] if s in notebooks else None
        try:
            if path is not None and path.is_file():
                now[s] = cells.answers(cells.read_notebook(path))
        except (ValueError, OSError) as exc:  # nbformat's errors are ValueErrors
            h.problems.append(f"{s}: {notebooks[s]} cannot be read ({str(exc)[:200]}): restore it")
    for q in questions:
        source = ran[q.section].get(q.id)
        h.answers[q.id] = source or ""
        if q.section in now and q.id in now[q.section] and now[q.section][q.id] != source \
                and not (cells.unanswered(source) and cells.unanswered(now[q.section][q.id])):
            h.problems.append(f"{q.id}: the answer in {notebooks[q.section]} was changed after the run: the report "
                              f"shows the earlier text; run the section again (`fashion-report run {q.section}`) "
                              "so that it shows this one")
        if cells.unanswered(source):
            h.warnings.append(f"{q.id} ({q.title}) is not answered: the hand-in shows \"not answered yet\"")
            h.shown[q.id] = ""
            continue
        try:
            h.shown[q.id] = cells.fill_citations(source, metrics)
        except cells.CitationError as exc:
            h.problems.append(f"{q.id}: {exc}")


def check_folder(root: str | Path, *, notebooks: Mapping[str, str] | None = None,
                 report_check: ReportCheck | None = None) -> Handin:
    """Check the student folder ``root`` for a hand-in (see the module docstring).

    ``notebooks``: section -> the file name of its notebook in the folder (``01_mlp_grid.ipynb``), to see
    answers changed since the run; ``report_check(section, report folder, metrics) -> [problem]``: checks of a
    report the course room cannot make itself (``verify``'s). Raises :class:`HandinError` when ``root`` is no
    student folder; every other problem is listed in the result."""
    root = Path(root)
    h = Handin(root, read_course(root))
    try:
        h.assignment = load_assignment(root / "assignment.yaml")
    except AssignmentError as exc:
        raise HandinError(f"{exc}") from None
    recorded = (h.course.get("assignment") or {}).get("digest")
    if h.assignment.digest != recorded:
        h.problems.append(f"assignment.yaml was changed after `start` (SHA-256 {h.assignment.digest[:16]}..., "
                          f"course.json records {str(recorded)[:16]}...): put the instructor's file back")
    statuses = run_statuses(root / "reports")
    for name in h.course["sections"]:
        section = load_section(h, str(name), statuses.get(name), report_check)
        if section is not None:
            h.sections[section.name] = section
    answer_problems(h, notebooks or {})
    return h


def safe_name(text: str) -> str:
    """``text`` as a file name part: letters, digits, ``.``, ``_`` and ``-`` kept, every other run one ``_``."""
    return re.sub(r"[^A-Za-z0-9_-]+", "_", str(text)).strip("_") or "student"


def default_output(h: Handin) -> Path:
    """``handin-<id>.zip`` in the folder."""
    return h.root / f"handin-{safe_name(h.student.get('id', ''))}.zip"


def sha256(data: bytes) -> str:
    """The SHA-256 of ``data``, in hex."""
    return hashlib.sha256(data).hexdigest()


def archive_files(h: Handin, pdf: bytes) -> dict[str, bytes]:
    """``{path in the zip: bytes}`` of every file but the manifest: fixed names, no path outside the zip's root."""
    files = {"handin.pdf": pdf,
             "answers.json": json.dumps(h.answers, indent=1, ensure_ascii=False).encode(),
             "course.json": (h.root / "course.json").read_bytes(),
             "assignment.yaml": h.assignment.data}
    for name, section in h.sections.items():
        for pattern in SECTION_FILES:
            file = pattern.format(s=name)
            files[f"{name}/{file}"] = (section.folder / file).read_bytes()
    return files


def manifest(h: Handin, files: dict[str, bytes], pages: dict, *, with_code: bool, date: datetime) -> dict:
    """``handin.json``: what was handed in, by whom, for which assignment, the digest of every file, the page map."""
    a = h.assignment
    return {"format": FORMAT,
            "assignment": {"id": a.id, "title": a.title, "digest": a.digest},
            "student": {"name": h.student.get("name"), "id": h.student.get("id")},
            "variant": h.course.get("variant") or {}, "profile": h.course.get("profile"),
            "sections": list(h.sections),
            "fingerprints": {s: (sec.metrics.get("fingerprint") or {}).get("short") for s, sec in h.sections.items()},
            "questions": [{"id": q.id, "title": q.title, "points": q.points, "section": q.section,
                           "answered": not cells.unanswered(h.answers.get(q.id))}
                          for q in a.questions if q.id in h.answers],
            "pages": pages, "with_code": with_code, "date": date.isoformat(timespec="seconds"),
            "files": {path: sha256(data) for path, data in sorted(files.items())}}


def write_zip(path: Path, files: dict[str, bytes], date: datetime) -> Path:
    """Write ``files`` as a zip at ``path``, atomically: plain files (mode 0644), no links, no folders."""
    stamp = date.timetuple()[:6]
    with atomic.atomic_path(path) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            if name.startswith("/") or ".." in name.split("/") or "\\" in name:
                raise HandinError(f"refused a path outside the archive's root: {name!r}")
            info = zipfile.ZipInfo(name, date_time=stamp)
            info.external_attr = (stat.S_IFREG | 0o644) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, data)
    return path


def write_handin(h: Handin, output: str | Path | None = None, *, with_code: bool = False,
                 date: datetime | None = None) -> tuple[Path, dict]:
    """Write the hand-in zip of a checked folder (``output``, default :func:`default_output`); returns its path and
    its manifest. Raises :class:`HandinError` when the check found problems."""
    if not h.ok:
        raise HandinError("not handed in: " + "; ".join(h.problems))
    date = date or datetime.now(UTC)
    pdf, pages = render_handin_pdf(h, with_code=with_code, date=date)
    files = archive_files(h, pdf)
    meta = manifest(h, files, pages, with_code=with_code, date=date)
    files["handin.json"] = json.dumps(meta, indent=1, ensure_ascii=False).encode()
    path = Path(output) if output is not None else default_output(h)
    return write_zip(path, files, date), meta
