"""Run report sections: papermill executes each notebook, nbconvert/Chromium export it, an index links them.

A section's folder is written by one run at a time (:mod:`helpers.cli.folderlock`), and its executed notebook, which a
student may open and edit, is replaced only when it is what the toolkit last wrote (:func:`keep_edited_notebook`).
"""

from __future__ import annotations

import hashlib
import html
import json
import os
import tempfile
import time
import traceback
from pathlib import Path

from helpers import atomic
from helpers.cli import kernels  # kernels.execute, looked up at each run (tests replace it)
from helpers.cli.folderlock import FolderBusy, FolderLock
from helpers.cli.kernels import KernelDied, SectionTimeout
from helpers.course.answers import CitationError, report_cells, section_metrics
from helpers.engine.progress import PROGRESS_FILE_ENV, Watcher
from helpers.paths import NOTEBOOKS as SECTIONS  # section -> (notebook file, title)
from helpers.paths import NOTEBOOKS_DIR, notebook_path  # the checkout's notebooks/, or the installed copy's
from helpers.reporting.export import ExportError, export_html, export_pdf
from helpers.reporting.fingerprint import NOTEBOOK_ENV  # the kernel's fingerprint digests the notebook run
from helpers.reporting.metrics_file import read_metrics
from helpers.textfiles import InputError, read_text

FORMATS = ("html", "pdf")
COURSE_FILE = "course.json"  # what makes a folder a student's folder (written by `fashion-report start`)
COURSE_FORMAT = 1
MAX_COURSE_BYTES = 1024 * 1024
# index.html shows text and links and loads nothing (the reports it links have their own policy)
INDEX_POLICY = "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'"


def notebook_parameters(section: str) -> dict:
    """The notebook's ``parameters`` cell as papermill reads it: name -> {default, help, ...}."""
    # lazy on purpose: papermill takes seconds to import, and a run that reads no notebook needs it not
    import papermill

    return papermill.inspect_notebook(str(notebook_path(section)))


def split_parameters(section: str, params: dict) -> tuple[dict, list[str]]:
    """Keep the parameters this section's notebook declares; return (kept, unknown names)."""
    known = notebook_parameters(section)
    return {k: v for k, v in params.items() if k in known}, [k for k in params if k not in known]


def notebook_record(executed: Path) -> Path:
    """The file beside an executed notebook that holds the SHA-256 of what the toolkit last wrote there
    (``writing`` while a run is writing it)."""
    return executed.with_name(f".{executed.name}.written")


def file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def keep_edited_notebook(executed: Path, *, log=print, section: str = "") -> Path | None:
    """Move ``executed`` aside when it is not what the toolkit last wrote, so that the run about to overwrite it
    loses nobody's work; returns where it went (None when it was left to be overwritten, or is absent).

    The kept copy is named ``<name>.edited-YYYYmmdd-HHMMSS.ipynb`` (``.interrupted-`` when the run writing it
    was stopped before it finished: its last cells may be missing) and a line says so. A notebook the toolkit
    wrote and nobody changed since is overwritten without a word.
    """
    if not executed.exists():
        return None
    record = notebook_record(executed)
    try:
        written = record.read_text().strip()
    except OSError:
        written = ""
    if written == file_digest(executed):
        return None
    kind = "interrupted" if written == "writing" else "edited"
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(executed.stat().st_mtime))
    aside = executed.with_name(f"{executed.stem}.{kind}-{stamp}{executed.suffix}")
    n = 1
    while aside.exists():  # never over an earlier kept copy
        n += 1
        aside = executed.with_name(f"{executed.stem}.{kind}-{stamp}-{n}{executed.suffix}")
    os.replace(executed, aside)
    why = {"interrupted": "was left by a run that did not finish",
           "edited": "was changed since the toolkit wrote it" if written else
           "was not written by this toolkit's last run here"}[kind]
    log(f"[{section}] {executed} {why}: kept as {aside.name}; this run writes a new {executed.name}")
    return aside


def run_section(section: str, *, output_dir: Path, parameters: dict, no_input: bool = False,
                formats=FORMATS, log=print, resume: bool = False, timeout: float | None = None,
                progress: bool = True, source: Path | None = None, workdir: Path | None = None,
                prepare=None) -> dict:
    """Execute one section into ``output_dir/section`` and export it.

    Never raises for a failing notebook: the partial notebook (with papermill's error cell) is kept,
    exported as far as possible, and the returned status says what failed: ``failed`` (an error in a cell, or an
    answer citing a name that does not exist), ``timed out`` (past ``timeout`` seconds), ``kernel died`` (killed,
    or out of memory), ``busy`` (another run is writing the folder: nothing in it was touched, and the error names
    that run). With ``resume``, runs finished before an interruption are read back from their checkpoints instead
    of trained again. With ``progress``, a live line on standard error (:class:`helpers.engine.progress.Watcher`)
    follows the run. ``source`` is the notebook run (default: the toolkit's, :func:`notebook_path`), in the folder
    ``workdir`` (default: the toolkit's notebooks/); ``prepare`` changes the executed notebook in memory before
    export (a student's folder: :meth:`CourseFolder.options`).
    """
    out = Path(output_dir) / section
    lock = FolderLock(out)
    try:
        lock.acquire()
    except FolderBusy as exc:
        log(f"[{section}] refused: {exc}")
        return {"section": section, "title": SECTIONS[section][1], "folder": str(out),
                "notebook": str(out / f"{section}.ipynb"), "status": "busy", "error": str(exc), "files": {},
                "seconds": 0.0}
    try:
        if lock.note:
            log(f"[{section}] {lock.note}")
        return _run_locked(section, out=out, parameters=parameters, no_input=no_input, formats=formats, log=log,
                           resume=resume, timeout=timeout, progress=progress,
                           source=Path(source) if source else notebook_path(section),
                           workdir=Path(workdir) if workdir else NOTEBOOKS_DIR, prepare=prepare)
    finally:
        lock.release()


def _run_locked(section: str, *, out: Path, parameters: dict, no_input: bool, formats, log, resume: bool,
                timeout: float | None, progress: bool, source: Path, workdir: Path, prepare) -> dict:
    """:func:`run_section` once the folder is this run's."""
    executed = out / f"{section}.ipynb"
    status = {"section": section, "title": SECTIONS[section][1], "folder": str(out), "notebook": str(executed),
              "status": "ok", "error": None, "files": {"notebook": executed.name}}
    keep_edited_notebook(executed, log=log, section=section)
    if (out / "metrics.json").exists():  # a report is never replaced without a word
        log(f"[{section}] replaces the report in {out} (its notebook, pages, figures and metrics.json)")
    # a metrics.json left by an earlier run in this folder must not speak for this one if it fails early
    (out / "metrics.json").unlink(missing_ok=True)
    start = time.perf_counter()
    log(f"[{section}] running {source.name} -> {executed}")
    status.update(_execute(section, source, executed, parameters={**parameters, "output_dir": str(out.resolve())},
                           workdir=workdir, resume=resume, timeout=timeout, progress=progress))
    status["seconds"] = time.perf_counter() - start
    metrics = out / "metrics.json"
    metrics_data = read_metrics(metrics)
    # the PDF header names the author: the run's own values (notebook defaults included) when it got that far
    named = {**parameters, **metrics_data.get("parameters", {})}
    author = " ".join(str(named.get(k) or "") for k in ("author_name", "author_id")).strip()
    if executed.exists():
        _export(section, out, status, formats=formats, no_input=no_input, author=author, prepare=prepare, log=log)
    if metrics_data:
        status["headline"] = headline(metrics_data)
        status["files"]["metrics"] = metrics.name
    log(f"[{section}] {status['status']} in {status['seconds']:.0f} s" + (f": {status['error']}" if status["error"] else ""))
    return status


def _execute(section: str, source: Path, executed: Path, *, parameters: dict, workdir: Path, resume: bool,
             timeout: float | None, progress: bool) -> dict:
    """Run ``source`` into ``executed`` with papermill; ``{}``, or the status and error it ended with."""
    # lazy on purpose: papermill, as in notebook_parameters
    from papermill.exceptions import PapermillExecutionError

    record = notebook_record(executed)
    atomic.write_text(record, "writing\n")  # papermill writes the notebook cell by cell from here on
    # the kernel inherits these: no progress bars inside reports; helpers.engine.experiment.train_run continues from
    # checkpoints (out of the parameters, so a resumed report records the same parameters as an uninterrupted one);
    # the fingerprint digests the notebook that ran (a student's folder's own, not the toolkit's)
    os.environ.update({"HELPERS_PROGRESS": "0", "HELPERS_RESUME": "1" if resume else "0",
                       NOTEBOOK_ENV: str(source.resolve())})
    handle, events = tempfile.mkstemp(prefix=f"{section}-progress-", suffix=".jsonl")
    os.close(handle)
    os.environ[PROGRESS_FILE_ENV] = events  # the kernel writes its training progress there
    watcher = Watcher(section, notebook=source, executed=executed, events=Path(events))
    try:
        if progress:
            watcher.__enter__()
        kernels.execute(source, executed, parameters=parameters, cwd=workdir, timeout=timeout)
        return {}
    except PapermillExecutionError as exc:
        return {"status": "failed", "error": f"cell {exc.exec_count}: {exc.ename}: {exc.evalue}"}
    except SectionTimeout as exc:
        return {"status": "timed out", "error": str(exc)}
    except KernelDied as exc:
        return {"status": "kernel died", "error": str(exc)}
    except Exception as exc:  # an unreadable notebook...: still report, never stop the others
        traceback.print_exc()
        return {"status": "failed", "error": f"{type(exc).__name__}: {exc}"}
    finally:
        if progress:
            watcher.stop()
        for name in (PROGRESS_FILE_ENV, NOTEBOOK_ENV):
            os.environ.pop(name, None)
        Path(events).unlink(missing_ok=True)
        if executed.exists():  # what the toolkit wrote, to tell a later edit from it (keep_edited_notebook)
            atomic.write_text(record, file_digest(executed) + "\n")


def _export(section: str, out: Path, status: dict, *, formats, no_input: bool, author: str, prepare, log) -> None:
    """HTML and PDF of the executed notebook, as ``formats`` ask; ``status`` records the files and what failed.

    An answer citing a name that does not exist fails the section with that message, and its pages from an
    earlier run are removed (they would show another run's numbers); the notebook and metrics.json stay."""
    executed = out / f"{section}.ipynb"
    if "html" in formats or "pdf" in formats:
        try:
            html_path = export_html(executed, out / f"{section}.html", no_input=no_input, author=author,
                                    prepare=prepare)
            status["files"]["html"] = html_path.name
        except CitationError as exc:
            status.update(status="failed", error=str(exc))
            for kind in FORMATS:
                (out / f"{section}.{kind}").unlink(missing_ok=True)
            return
        except Exception as exc:  # nbconvert errors are varied; the notebook itself is kept
            status["export_error"] = f"HTML: {exc}"
    if "pdf" in formats and "html" in status["files"]:
        try:
            pdf, engine = export_pdf(out / f"{section}.html", out / f"{section}.pdf",
                                     log=lambda line: log(f"[{section}] {line}"))
            status["files"]["pdf"] = pdf.name
            status["pdf_engine"] = engine
        except (ExportError, OSError) as exc:
            status["export_error"] = f"PDF not made: {exc}"
            log(f"[{section}] {status['export_error']}")
    if "html" not in formats:
        (out / f"{section}.html").unlink(missing_ok=True)
        status["files"].pop("html", None)


class CourseError(ValueError):
    """A student's folder that cannot be run as asked (the message says what and why)."""


class CourseFolder:
    """A student's folder (``course.json``, the assignment's notebooks, ``reports/``), run by ``fashion-report run``
    inside it or with ``--folder``: its own notebooks, with the parameters in their parameters cells (a ``-p``
    that contradicts ``course.json`` is refused: the hand-in checks them), into its own ``reports/``, never the
    toolkit's."""

    def __init__(self, folder: Path, course: dict):
        self.folder, self.course = Path(folder), course
        self.reports = self.folder / "reports"

    @classmethod
    def find(cls, folder: Path | None = None) -> CourseFolder | None:
        """The student's folder ``folder`` (an error when it has no ``course.json``), else the working folder when
        it has one, else None."""
        where = Path(folder) if folder is not None else Path.cwd()
        path = where / COURSE_FILE
        if not path.is_file():
            if folder is None:
                return None
            raise CourseError(f"--folder {folder}: no {COURSE_FILE} there (a student's folder is made by "
                              "`fashion-report start`)")
        try:
            course = json.loads(read_text(path, what="course file", limit=MAX_COURSE_BYTES))
        except (InputError, ValueError) as exc:
            raise CourseError(f"{path}: {exc}") from None
        if not isinstance(course, dict) or course.get("format") != COURSE_FORMAT:
            raise CourseError(f"{path}: not a course file of format {COURSE_FORMAT} (remake the folder with "
                              "`fashion-report start`)")
        bad = [s for s in course.get("sections") or [] if s not in SECTIONS]
        if bad or not course.get("sections"):
            raise CourseError(f"{path}: sections {course.get('sections')!r}; allowed: {', '.join(SECTIONS)}")
        return cls(where.resolve(), course)

    @property
    def sections(self) -> list[str]:
        """The assignment's sections, in its order."""
        return list(self.course["sections"])

    def fixed(self, section: str) -> dict:
        """The parameters ``course.json`` gives ``section`` (fixed and variant, profile included)."""
        fixed = dict((self.course.get("parameters") or {}).get(section) or {})
        if self.course.get("profile"):
            fixed.setdefault("profile", self.course["profile"])
        return fixed

    def plan(self, sections: list[str], params: dict, *, batch: Path | None = None) -> list[str]:
        """The sections to run (default: the assignment's); refuses a section the assignment lacks, a parameter
        that contradicts ``course.json`` (naming both values) and a batch (a folder is one student's)."""
        if batch is not None:
            raise CourseError(f"--batch {batch}: a student's folder runs its own notebooks once; run batches "
                              "outside it")
        sections = list(sections) or self.sections
        extra = [s for s in sections if s not in self.sections]
        if extra:
            raise CourseError(f"section(s) {', '.join(extra)} are not part of this assignment; its sections: "
                              f"{', '.join(self.sections)}")
        for section in sections:
            for name, value in params.items():
                fixed = self.fixed(section)
                if name in fixed and fixed[name] != value:
                    raise CourseError(f"{name} = {value!r} contradicts this folder's assignment ({section}: {name} = "
                                      f"{fixed[name]!r} in {COURSE_FILE}); a hand-in must use the assignment's "
                                      "parameters")
        missing = [SECTIONS[s][0] for s in sections if not self.notebook(s).is_file()]
        if missing:
            raise CourseError(f"{', '.join(missing)} missing from {self.folder} (remake it with `fashion-report "
                              "start`, or restore the notebook)")
        return sections

    def notebook(self, section: str) -> Path:
        """The folder's own copy of ``section``'s notebook."""
        return self.folder / SECTIONS[section][0]

    def options(self, section: str) -> dict:
        """:func:`run_section`'s options for ``section``: the folder's notebook, run in the folder, its answers'
        citations filled from the folder's reports at export."""
        def prepare(nb):
            report_cells(nb, section_metrics(self.reports, self.sections))

        return {"source": self.notebook(section), "workdir": self.folder, "prepare": prepare}

    def index_title(self) -> str:
        """The title of the folder's reports/index.html: the assignment's title and the student."""
        assignment, student = self.course.get("assignment") or {}, self.course.get("student") or {}
        return " · ".join(str(v) for v in (assignment.get("title"), student.get("name"), student.get("id")) if v)


def headline(metrics: dict) -> dict:
    """Best configuration, test accuracy and wall time from a section's ``metrics.json``."""
    best = metrics.get("best") or {}
    test = best.get("test") or {}
    return {"best": best.get("name"), "test_accuracy": test.get("accuracy"),
            "wall_seconds": metrics.get("wall_seconds"), "profile": metrics.get("profile")}


def write_index(output_dir: Path, results: list[dict], *, title: str = "Fashion-MNIST course report") -> Path:
    """``index.html``: one row per section with its headline numbers and links to its files."""
    rows = []
    for r in results:
        h = r.get("headline") or {}
        acc = f"{h['test_accuracy']:.2%}" if h.get("test_accuracy") is not None else "–"
        links = " · ".join(f'<a href="{html.escape(r["section"])}/{html.escape(name)}">{kind}</a>'
                           for kind, name in r["files"].items() if (Path(output_dir) / r["section"] / name).exists())
        cls = "ok" if r["status"] == "ok" else "failed"
        err = f'<div class="err">{html.escape(r["error"])}</div>' if r.get("error") else ""
        note = f'<div class="note">{html.escape(r["export_error"])}</div>' if r.get("export_error") else ""
        rows.append(f"<tr><td>{html.escape(r['title'])}</td><td class='{cls}'>{html.escape(r['status'])}{err}{note}</td>"
                    f"<td>{html.escape(str(h.get('profile') or '–'))}</td>"
                    f"<td>{html.escape(str(h.get('best') or '–'))}</td><td>{acc}</td>"
                    f"<td>{r.get('seconds', 0):.0f} s</td><td>{links}</td></tr>")
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta http-equiv="Content-Security-Policy" content="{INDEX_POLICY}">
<meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font-family: sans-serif; margin: 2em auto; max-width: 1000px; color: #222; }}
table {{ border-collapse: collapse; width: 100%; }} th, td {{ border-bottom: 1px solid #ddd; padding: 6px 8px;
text-align: left; vertical-align: top; }} th {{ background: #f4f4f4; }} .ok {{ color: #176c2e; }}
.failed {{ color: #b00020; font-weight: bold; }} .err, .note {{ font-weight: normal; font-size: 85%; color: #555; }}
</style></head><body>
<h1>{html.escape(title)}</h1>
<p>Generated {time.strftime('%Y-%m-%d %H:%M')}. Each section links to its report (HTML, PDF), the executed notebook and
its <code>metrics.json</code>.</p>
<table><thead><tr><th>Section</th><th>Status</th><th>Profile</th><th>Best configuration</th><th>Test accuracy</th>
<th>Wall time</th><th>Files</th></tr></thead><tbody>
{''.join(rows)}
</tbody></table></body></html>
"""
    return atomic.write_text(Path(output_dir) / "index.html", page)
