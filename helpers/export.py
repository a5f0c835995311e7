"""Executed notebook -> HTML (nbconvert, the project's offline template) -> PDF (headless Chromium or WeasyPrint)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import nbformat

TEMPLATE_DIR = Path(__file__).resolve().parent / "templates"
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")
# macOS keeps browsers in app bundles, not on PATH
MACOS_APP_DIRS = (Path("/Applications"), Path.home() / "Applications")
MACOS_APPS = ("Google Chrome.app/Contents/MacOS/Google Chrome", "Chromium.app/Contents/MacOS/Chromium")
# What Chromium writes when its sandbox cannot start: as a non-root user in a container without user namespaces
# (Docker's default seccomp profile), or where the setuid helper is missing.
SANDBOX_ERRORS = ("No usable sandbox", "Operation not permitted", "setuid sandbox", "Failed to move to new namespace")
# Without these, Chromium keeps trying to reach Google's services, which a closed network refuses.
CHROMIUM_FLAGS = ("--headless", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--disable-extensions", "--disable-quic",
                  "--no-pdf-header-footer", "--run-all-compositor-stages-before-draw", "--virtual-time-budget=15000")


class ExportError(RuntimeError):
    """A format that could not be produced (the reason is in the message)."""


def notebook_title(nb) -> str:
    """The first markdown heading of the notebook or its first display output."""
    for cell in nb.cells:
        sources = [cell.source] if cell.cell_type == "markdown" else [
            o.get("data", {}).get("text/markdown", "") for o in cell.get("outputs", [])]
        for text in sources:
            for line in str(text).splitlines():
                if line.startswith("# "):
                    return line[2:].strip()
    return "Report"


def export_html(notebook_path: str | Path, html_path: str | Path, *, no_input: bool = False,
                author: str = "") -> Path:
    """Write a self-contained HTML report (figures inline as base64, no network needed to view it)."""
    from nbconvert import HTMLExporter

    nb = nbformat.read(str(notebook_path), as_version=4)
    exporter = HTMLExporter(template_name="report", extra_template_basedirs=[str(TEMPLATE_DIR)],
                            exclude_input=no_input, exclude_input_prompt=no_input, exclude_output_prompt=no_input)
    # papermill's injected-parameters cell is provenance, not narrative: show it only with the code
    if no_input:
        nb.cells = [c for c in nb.cells if "injected-parameters" not in c.metadata.get("tags", [])]
    resources = {"report_title": notebook_title(nb), "report_author": author,
                 "metadata": {"name": Path(notebook_path).stem}}
    body, _ = exporter.from_notebook_node(nb, resources=resources)
    html_path = Path(html_path)
    html_path.parent.mkdir(parents=True, exist_ok=True)
    html_path.write_text(body, encoding="utf-8")
    return html_path


def chromium_candidates() -> list[str]:
    """Where Chromium is looked for, in order: ``$CHROMIUM`` alone when it is set, else the usual command names on
    ``PATH``, then the macOS app bundles (Google Chrome, Chromium) in ``/Applications`` and ``~/Applications``."""
    if os.environ.get("CHROMIUM"):
        # an explicit choice is never silently replaced by another browser
        return [os.environ["CHROMIUM"]]
    return [*CHROMIUM_NAMES, *(str(folder / app) for folder in MACOS_APP_DIRS for app in MACOS_APPS)]


def find_chromium() -> str | None:
    """The first of :func:`chromium_candidates` that is an executable (a name on ``PATH`` or a path), else None."""
    return next((p for p in map(shutil.which, chromium_candidates()) if p), None)


def running_as_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


def _print_to_pdf(chromium: str, html_path: Path, pdf_path: Path, *, no_sandbox: bool, timeout: int):
    pdf_path.unlink(missing_ok=True)
    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
        cmd = [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--print-to-pdf={pdf_path}"]
        if no_sandbox:
            cmd.append("--no-sandbox")
        cmd.append(html_path.resolve().as_uri())
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    return done, pdf_path.exists() and pdf_path.stat().st_size > 0


def chromium_pdf(html_path: Path, pdf_path: Path, *, chromium: str, timeout: int = 180) -> tuple[Path, str | None]:
    """Print ``html_path`` with headless Chromium; returns (pdf path, a note when it needed ``--no-sandbox``).

    As root Chromium refuses to start with its sandbox, so it runs with ``--no-sandbox`` from the start. As any
    other user it runs sandboxed first; when that makes no PDF (inside a container the sandbox often cannot start:
    "No usable sandbox", "Operation not permitted") it runs once more with ``--no-sandbox`` and the note says why.
    The page printed is the report this toolkit just wrote, read from a local file.
    """
    html_path, pdf_path = Path(html_path), Path(pdf_path)
    as_root = running_as_root()
    done, ok = _print_to_pdf(chromium, html_path, pdf_path, no_sandbox=as_root, timeout=timeout)
    if ok:
        return pdf_path, None
    first = f"exit {done.returncode}: {tail(done.stderr)}"
    if as_root:
        raise ExportError(f"Chromium made no PDF ({first})")
    done, ok = _print_to_pdf(chromium, html_path, pdf_path, no_sandbox=True, timeout=timeout)
    if not ok:
        raise ExportError(f"Chromium made no PDF, neither with its sandbox ({first}) nor with --no-sandbox "
                          f"(exit {done.returncode}: {tail(done.stderr)})")
    why = "its sandbox cannot start here" if sandbox_failed(first) else f"it failed with its sandbox ({first})"
    return pdf_path, (f"PDF printed by Chromium with --no-sandbox: {why} (usual for a non-root user in a container; "
                      "see the README, 'PDFs')")


def sandbox_failed(stderr: str) -> bool:
    """Whether Chromium's error output says its sandbox could not start."""
    return any(hint.lower() in stderr.lower() for hint in SANDBOX_ERRORS)


def tail(text: str, limit: int = 500) -> str:
    return text.strip()[-limit:]


def weasyprint_pdf(html_path: Path, pdf_path: Path) -> Path:
    try:
        import weasyprint
    except (ImportError, OSError) as exc:  # OSError: the Pango libraries are missing
        raise ExportError(f"WeasyPrint is not usable ({exc})") from exc
    weasyprint.HTML(filename=str(html_path)).write_pdf(str(pdf_path))
    return pdf_path


def export_pdf(html_path: str | Path, pdf_path: str | Path, *, engine: str = "auto",
               log=None) -> tuple[Path, str]:
    """Print the HTML report to PDF; returns (path, engine used).

    ``engine``: ``auto`` (Chromium when found, else WeasyPrint), ``chromium`` or ``weasyprint``. The engine
    returned is ``chromium --no-sandbox`` when Chromium's sandbox could not start and the page was printed without
    it; ``log`` (default: standard error) then gets a line saying so. Raises :class:`ExportError` saying what to
    install when neither works.
    """
    html_path, pdf_path = Path(html_path), Path(pdf_path)
    pdf_path.unlink(missing_ok=True)
    reasons = []
    chromium = find_chromium() if engine in ("auto", "chromium") else None
    if chromium:
        try:
            pdf, note = chromium_pdf(html_path, pdf_path, chromium=chromium)
            if note is None:
                return pdf, "chromium"
            (log or (lambda line: print(line, file=sys.stderr)))(note)
            return pdf, "chromium --no-sandbox"
        except (ExportError, subprocess.TimeoutExpired) as exc:
            reasons.append(str(exc))
    elif engine in ("auto", "chromium") and os.environ.get("CHROMIUM"):
        reasons.append(f"CHROMIUM={os.environ['CHROMIUM']!r} is not an executable file or command")
    elif engine in ("auto", "chromium"):
        reasons.append("no Chromium found (looked for " + ", ".join(CHROMIUM_NAMES) + " on PATH and for Google "
                       "Chrome.app and Chromium.app in /Applications and ~/Applications; $CHROMIUM names another)")
    if engine in ("auto", "weasyprint"):
        try:
            return weasyprint_pdf(html_path, pdf_path), "weasyprint"
        except ExportError as exc:
            reasons.append(str(exc))
    raise ExportError("; ".join(reasons) + ". Install Chromium (Debian/Ubuntu: apt-get install chromium; macOS: "
                      "brew install --cask chromium, or Google Chrome) or WeasyPrint (pip install weasyprint) to get "
                      "PDFs; the HTML report is complete without them.")
