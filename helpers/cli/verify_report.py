"""``verify``, one report at a time: read its ``metrics.json`` and page as data, check the fingerprint, the data
digest and the page against the numbers, then (when nothing has failed it yet) rerun the toolkit's notebook with
its parameters, paths replaced, and compare numbers, page and timings with the rerun's.

Each report is checked on its own: one that cannot be read, fails to rerun or runs out of time is a ``FAIL`` line
with its reasons, and the next is checked. Nothing of a hand-in is imported, executed or unpickled: its notebook
is not the one rerun (the toolkit's is), and no file it names is opened.
"""

from __future__ import annotations

import functools
import re
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from helpers.cli.kernels import KernelDied, SectionTimeout
from helpers.cli.runner import SECTIONS, notebook_parameters, notebook_path
from helpers.cli.verify import data_problems, environment_changes, rerun, timing_problems
from helpers.cli.verify_compare import compare_pages, uncompared_cells
from helpers.cli.verify_html import parse_page
from helpers.cli.verify_inputs import Unreadable, find_reports, load_metrics, load_page, rerun_parameters
from helpers.cli.verify_inputs import reference_data as find_reference
from helpers.cli.verify_page import page_problems
from helpers.reporting.export import export_html
from helpers.reporting.fingerprint import check_fingerprint, differences, digest

MAX_LINES = 12  # reasons shown per report; the rest are counted
# Control characters and bidirectional overrides in a folder name or a quoted value would redraw the grader's
# terminal or reorder the line; they are shown as escapes.
UNPRINTABLE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def printable(line: str) -> str:
    """``line`` with every control character and direction override written as an escape, on one line."""
    return UNPRINTABLE.sub(lambda m: f"\\u{ord(m.group()):04x}", line.replace("\n", "\\n"))


@dataclass
class Settings:
    """What the instructor chose for a whole ``verify`` run."""

    reference: object  # helpers.cli.verify_inputs.Reference
    data_root: Path | None = None
    tolerance: float = 1e-6
    timeout: float | None = None
    metrics_only: bool = False
    reruns: dict = field(default_factory=dict)  # parameters digest -> (metrics, page, error): reports that share them


@dataclass
class Outcome:
    """The verdict on one report: ``ok``, its heading line (the report's folder) and the lines printed under it."""

    ok: bool
    head: str
    lines: list[str]


@functools.cache
def _declared(section: str) -> dict:
    """The toolkit notebook's parameters (read once per section, however many reports there are)."""
    return notebook_parameters(section)


@functools.cache
def _uncompared(section: str) -> frozenset[str]:
    return uncompared_cells(notebook_path(section))


def _strip(metrics: dict, replaced: list[str]) -> dict:
    """metrics.json without what the rerun was not given as recorded (paths it replaced) nor can repeat."""
    out = dict(metrics)
    out["parameters"] = {k: v for k, v in (metrics.get("parameters") or {}).items() if k not in replaced}
    if "cnn_metrics" in replaced:
        out.pop("cnn_comparison", None)  # read from another report, which the rerun does not read
    return out


def _run_once(metrics: dict, params: dict, *, no_input: bool, settings: Settings):
    """The rerun's metrics.json and page, shared by every report with the same section and parameters; or the
    reason it failed."""
    key = digest([metrics["section"], params, no_input])
    if key in settings.reruns:
        return settings.reruns[key]
    # lazy on purpose: papermill takes a second to import, and only a rerun needs it
    from papermill.exceptions import PapermillExecutionError

    result = (None, None, None)
    with tempfile.TemporaryDirectory(prefix="verify-") as tmp:
        try:
            start = time.perf_counter()
            again = rerun(metrics, workdir=Path(tmp), parameters=params, timeout=settings.timeout)
            if settings.timeout and time.perf_counter() - start > settings.timeout:
                raise SectionTimeout  # the limit passed while the kernel was still starting: nothing was stopped
            author = " ".join(str(params.get(k) or "") for k in ("author_name", "author_id")).strip()
            html = export_html(Path(tmp) / f"{metrics['section']}.ipynb", Path(tmp) / "rerun.html", no_input=no_input,
                               author=author)
            result = (again, parse_page(html.read_text(encoding="utf-8")), None)
        except SectionTimeout:
            result = (None, None, f"the rerun timed out after {settings.timeout:g} s (--timeout)")
        except PapermillExecutionError as exc:
            result = (None, None, f"the rerun failed in cell {exc.exec_count}: {exc.ename}: {str(exc.evalue)[:200]}")
        except KernelDied as exc:
            result = (None, None, f"the rerun's kernel died: {exc}")
        except (OSError, ValueError, KeyError, RuntimeError) as exc:
            result = (None, None, f"the rerun failed: {type(exc).__name__}: {str(exc)[:200]}")
    settings.reruns[key] = result
    return result


def _with_rerun(metrics: dict, page, params: dict, replaced: list[str], settings: Settings) -> tuple[list, list]:
    """Problems and notes from comparing a report with its rerun."""
    again, their_page, error = _run_once(metrics, params, no_input=page is not None and not page.has_input,
                                         settings=settings)
    if error:
        return [error], []
    notes, problems = [], []
    changed = environment_changes(metrics.get("environment") or {}, again.get("environment") or {})
    if changed:
        notes.append(f"rerun on another machine or versions ({'; '.join(changed)}): numbers compared within "
                     f"{settings.tolerance:g}")
    diffs = differences(_strip(metrics, replaced), _strip(again, replaced),
                        tolerance=settings.tolerance if changed else 0.0)
    if diffs:
        problems.append(f"{len(diffs)} number(s) of metrics.json differ from the rerun's:")
        width = max(len(d[0]) for d in diffs[:MAX_LINES])
        problems += [f"  {where:<{width}}  report {str(a):>14.14}  rerun {str(b):>14.14}" for where, a, b in
                     diffs[:MAX_LINES]]
        if len(diffs) > MAX_LINES:
            problems.append(f"  ... and {len(diffs) - MAX_LINES} more")
    same_device = (metrics.get("environment") or {}).get("device") == (again.get("environment") or {}).get("device")
    line, slow = timing_problems(metrics, again, same_device=same_device)
    notes.append(line)
    problems += slow
    if page is not None:
        mine, theirs = metrics.get("environment") or {}, again.get("environment") or {}
        # figures are the same bytes only where the same fonts and matplotlib drew them: the same machine
        figures = not changed and all(mine.get(k) == theirs.get(k) for k in ("platform", "matplotlib"))
        problems += compare_pages(page, their_page, f"{metrics['section']}.html",
                                  tolerance=settings.tolerance if changed else 0.0, figures=figures,
                                  uncompared=_uncompared(metrics["section"]))
        if not figures:
            notes.append("figures not compared: the rerun ran on another machine or versions")
    if not problems:
        notes.append(("the rerun gives every number of the report exactly" if not changed else
                      "the rerun agrees within the tolerance")
                     + (f", and {metrics['section']}.html shows what the rerun's page shows" if page is not None
                        else ""))
    return problems, notes


def verify_report(folder: Path, settings: Settings) -> Outcome:
    """Check the report in one section folder (see the module docstring)."""
    path = folder / "metrics.json"
    if not path.exists() and not path.is_symlink():
        pages = [f"{s}.html" for s in SECTIONS if (folder / f"{s}.html").exists()]
        return Outcome(False, f"{folder}", [f"{', '.join(pages)} without a metrics.json: its numbers cannot be "
                                            "checked"])
    try:
        metrics = load_metrics(path)
    except Unreadable as exc:
        return Outcome(False, f"{folder}", [str(exc)])
    section = metrics["section"]
    head = f"{folder} ({section}, fingerprint {str((metrics.get('fingerprint') or {}).get('short', '-'))[:12]})"
    problems = check_fingerprint(metrics, notebook=notebook_path(section), executed=folder / f"{section}.ipynb")
    problems += data_problems(metrics, settings.reference)
    page, notes = None, []
    page_path = folder / f"{section}.html"
    if page_path.exists() or page_path.is_symlink():
        try:
            page = load_page(page_path)
            problems += page_problems(page, metrics, page_path.name)
        except Unreadable as exc:
            problems.append(str(exc))
    elif settings.metrics_only:
        notes.append(f"HTML not checked: no {page_path.name} (--metrics-only)")
    else:
        problems.append(f"no {page_path.name}: what the grader reads is not checked (hand in the HTML, or verify "
                        "with --metrics-only to check metrics.json alone)")
    if problems:
        return Outcome(False, head, problems + ["not rerun: the problems above already fail it"])
    with tempfile.TemporaryDirectory(prefix="verify-params-") as scratch:
        params, replaced, why = rerun_parameters(metrics, _declared(section), reference=settings.reference,
                                                 data_root=settings.data_root, scratch=Path(scratch))
    if why:
        return Outcome(False, head, [f"not verifiable: {why}"])
    more, rerun_notes = _with_rerun(metrics, page, params, replaced, settings)
    return Outcome(not more, head, more + notes + rerun_notes)


def verify_folder(folder: str | Path, *, tolerance: float = 1e-6, log=print, timeout: float | None = None,
                  reference_data: str | Path | None = None, data_root: str | Path | None = None,
                  metrics_only: bool = False) -> bool:
    """Verify every report under ``folder`` (a section, a report of several, a batch of them): one ``OK`` or
    ``FAIL`` line each, its reasons indented below. Returns True when all are OK.

    ``reference_data``: the Fashion-MNIST copy reruns read and reports must have been made from (default: the
    toolkit's own places, and it must be the real Fashion-MNIST); ``data_root``: the instructor's copies of image
    folders, by name; ``timeout``: seconds per rerun; ``metrics_only``: a report without its HTML is not a FAIL."""
    folder = Path(folder)
    reports = find_reports(folder) if folder.is_dir() else []
    if not reports:
        log(f"error: no report (metrics.json or <section>.html) under {folder}")
        return False
    settings = Settings(find_reference(reference_data), Path(data_root).expanduser() if data_root else None,
                        tolerance, timeout, metrics_only)
    log(settings.reference.describe())
    if any((r / f"{s}.pdf").exists() for r in reports for s in SECTIONS):
        log("PDFs are not read: a PDF can say anything; grade from the HTML, which is checked here")
    ok = True
    for report in reports:
        try:
            outcome = verify_report(report, settings)
        except Exception as exc:  # one hostile report must not stop the others: it fails, with the reason
            outcome = Outcome(False, str(report), [f"verify could not check it: {type(exc).__name__}: {exc}"[:300]])
        ok &= outcome.ok
        log(printable(f"{'OK  ' if outcome.ok else 'FAIL'} {outcome.head}"))
        for line in outcome.lines[:MAX_LINES + 4]:
            log(printable(f"     {line}"))
        if len(outcome.lines) > MAX_LINES + 4:
            log(f"     ... and {len(outcome.lines) - MAX_LINES - 4} more")
    return ok
