"""Executed notebook -> HTML (nbconvert, the project's offline template) -> PDF (headless Chromium or WeasyPrint)."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import nbformat

TEMPLATE_DIR = Path(__file__).resolve().parent / "templates"
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")
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


def find_chromium() -> str | None:
    env = os.environ.get("CHROMIUM")
    if env and Path(env).exists():
        return env
    return next((p for p in map(shutil.which, CHROMIUM_NAMES) if p), None)


def chromium_pdf(html_path: Path, pdf_path: Path, *, chromium: str, timeout: int = 180) -> Path:
    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
        cmd = [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--print-to-pdf={pdf_path}"]
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            cmd.append("--no-sandbox")  # Chromium refuses to start as root with its sandbox on
        cmd.append(html_path.resolve().as_uri())
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if not pdf_path.exists() or pdf_path.stat().st_size == 0:
        raise ExportError(f"Chromium made no PDF (exit {done.returncode}): {done.stderr.strip()[-500:]}")
    return pdf_path


def weasyprint_pdf(html_path: Path, pdf_path: Path) -> Path:
    try:
        import weasyprint
    except (ImportError, OSError) as exc:  # OSError: the Pango libraries are missing
        raise ExportError(f"WeasyPrint is not usable ({exc})") from exc
    weasyprint.HTML(filename=str(html_path)).write_pdf(str(pdf_path))
    return pdf_path


def export_pdf(html_path: str | Path, pdf_path: str | Path, *, engine: str = "auto") -> tuple[Path, str]:
    """Print the HTML report to PDF; returns (path, engine used).

    ``engine``: ``auto`` (Chromium when found, else WeasyPrint), ``chromium`` or ``weasyprint``.
    Raises :class:`ExportError` saying what to install when neither works.
    """
    html_path, pdf_path = Path(html_path), Path(pdf_path)
    pdf_path.unlink(missing_ok=True)
    reasons = []
    chromium = find_chromium() if engine in ("auto", "chromium") else None
    if chromium:
        try:
            return chromium_pdf(html_path, pdf_path, chromium=chromium), "chromium"
        except (ExportError, subprocess.TimeoutExpired) as exc:
            reasons.append(str(exc))
    elif engine in ("auto", "chromium"):
        reasons.append("no Chromium found (looked for " + ", ".join(CHROMIUM_NAMES) + " and $CHROMIUM)")
    if engine in ("auto", "weasyprint"):
        try:
            return weasyprint_pdf(html_path, pdf_path), "weasyprint"
        except ExportError as exc:
            reasons.append(str(exc))
    raise ExportError("; ".join(reasons) + ". Install Chromium (Debian/Ubuntu: apt-get install chromium) or "
                      "WeasyPrint (pip install weasyprint) to get PDFs; the HTML report is complete without them.")
