"""Run report sections: papermill executes each notebook, nbconvert/Chromium export it, an index links them.

A section's folder is written by one run at a time (:mod:`helpers.cli.folderlock`), and its executed notebook, which a
student may open and edit, is replaced only when it is what the toolkit last wrote (:func:`keep_edited_notebook`).
"""

from __future__ import annotations

import hashlib
import html
import json
import os
import time
import traceback
from pathlib import Path

from helpers import atomic
from helpers.cli.folderlock import FolderBusy, FolderLock
from helpers.paths import NOTEBOOKS_DIR  # the checkout's notebooks/, or the installed copy's

SECTIONS = {
    "mlp": ("01_mlp_grid.ipynb", "MLP optimizer × regularizer grid"),
    "cnn": ("02_cnn_comparison.ipynb", "CNN pooling × normalization comparison"),
    "transfer": ("03_transfer_learning.ipynb", "Transfer learning"),
    "autoencoder": ("04_autoencoder.ipynb", "Denoising autoencoder"),
}
FORMATS = ("html", "pdf")
# index.html shows text and links and loads nothing (the reports it links have their own policy)
INDEX_POLICY = "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'"


def notebook_path(section: str) -> Path:
    return NOTEBOOKS_DIR / SECTIONS[section][0]


def notebook_parameters(section: str) -> dict:
    """The notebook's ``parameters`` cell as papermill reads it: name -> {default, help, ...}."""
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
                progress: bool = True) -> dict:
    """Execute one section into ``output_dir/section`` and export it.

    Never raises for a failing notebook: the partial notebook (with papermill's error cell) is kept,
    exported as far as possible, and the returned status says what failed: ``failed`` (an error in a cell),
    ``timed out`` (past ``timeout`` seconds), ``kernel died`` (killed, or out of memory), ``busy`` (another
    run is writing the folder: nothing in it was touched, and the error names that run). With ``resume``,
    runs finished before an interruption are read back from their checkpoints instead of trained again.
    With ``progress``, a live line on standard error (:class:`helpers.engine.progress.Watcher`) follows the run.
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
                           resume=resume, timeout=timeout, progress=progress)
    finally:
        lock.release()


def _run_locked(section: str, *, out: Path, parameters: dict, no_input: bool, formats, log, resume: bool,
                timeout: float | None, progress: bool) -> dict:
    """:func:`run_section` once the folder is this run's."""
    import tempfile

    from papermill.exceptions import PapermillExecutionError

    from helpers.reporting.export import ExportError, export_html, export_pdf
    from helpers.cli.kernels import KernelDied, SectionTimeout, execute
    from helpers.engine.progress import ENV, Watcher

    executed = out / f"{section}.ipynb"
    params = {**parameters, "output_dir": str(out.resolve())}
    status = {"section": section, "title": SECTIONS[section][1], "folder": str(out), "notebook": str(executed),
              "status": "ok", "error": None, "files": {"notebook": executed.name}}
    keep_edited_notebook(executed, log=log, section=section)
    # a metrics.json left by an earlier run in this folder must not speak for this one if it fails early
    (out / "metrics.json").unlink(missing_ok=True)
    record = notebook_record(executed)
    atomic.write_text(record, "writing\n")  # papermill writes the notebook cell by cell from here on
    os.environ["HELPERS_PROGRESS"] = "0"  # the kernel inherits it: no progress bars inside reports
    # the kernel inherits it too: helpers.engine.experiment.train_run continues from checkpoints (out of the parameters,
    # so a resumed report records the same parameters as an uninterrupted one)
    os.environ["HELPERS_RESUME"] = "1" if resume else "0"
    start = time.perf_counter()
    log(f"[{section}] running {notebook_path(section).name} -> {executed}")
    handle, events = tempfile.mkstemp(prefix=f"{section}-progress-", suffix=".jsonl")
    os.close(handle)
    os.environ[ENV] = events  # the kernel writes its training progress there
    watcher = Watcher(section, notebook=notebook_path(section), executed=executed, events=Path(events))
    try:
        if progress:
            watcher.__enter__()
        execute(notebook_path(section), executed, parameters=params, cwd=NOTEBOOKS_DIR, timeout=timeout)
    except PapermillExecutionError as exc:
        status.update(status="failed", error=f"cell {exc.exec_count}: {exc.ename}: {exc.evalue}")
    except SectionTimeout as exc:
        status.update(status="timed out", error=str(exc))
    except KernelDied as exc:
        status.update(status="kernel died", error=str(exc))
    except Exception as exc:  # an unreadable notebook...: still report, never stop the others
        status.update(status="failed", error=f"{type(exc).__name__}: {exc}")
        traceback.print_exc()
    finally:
        if progress:
            watcher.stop()
        os.environ.pop(ENV, None)
        Path(events).unlink(missing_ok=True)
        if executed.exists():  # what the toolkit wrote, to tell a later edit from it (keep_edited_notebook)
            atomic.write_text(record, file_digest(executed) + "\n")
    status["seconds"] = time.perf_counter() - start
    metrics = out / "metrics.json"
    metrics_data = json.loads(metrics.read_text()) if metrics.exists() else {}
    # the PDF header names the author: the run's own values (notebook defaults included) when it got that far
    named = {**parameters, **metrics_data.get("parameters", {})}
    author = " ".join(str(named.get(k) or "") for k in ("author_name", "author_id")).strip()
    if executed.exists():
        if "html" in formats or "pdf" in formats:
            try:
                html_path = export_html(executed, out / f"{section}.html", no_input=no_input, author=author)
                status["files"]["html"] = html_path.name
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
    if metrics_data:
        status["headline"] = headline(metrics_data)
        status["files"]["metrics"] = metrics.name
    log(f"[{section}] {status['status']} in {status['seconds']:.0f} s" + (f": {status['error']}" if status["error"] else ""))
    return status


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
