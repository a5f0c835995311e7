"""Executed notebook -> HTML (nbconvert, the project's offline template) -> PDF (headless Chromium or WeasyPrint).

A report is read on a grader's machine, and the values in it (names, parameters, paths) are the student's: besides
the escaping where each value is interpolated (:mod:`helpers.escape`), the page defends itself. Its
Content-Security-Policy lets it load nothing but its own inline styles and ``data:`` images and fonts, and run no
script (the template has none: the report is the same with JavaScript off); Markdown outputs, and a course
notebook's question and answer cells (the student's text), are rendered with raw HTML escaped and
``javascript:``/``file:`` links disarmed (an answer's links and images show as text: the page links to
nothing); Chromium prints it with JavaScript and the network off; WeasyPrint reads no URL but ``data:`` and files
inside the report's own folder. Every file is written whole or not at all (:mod:`helpers.atomic`).
"""

from __future__ import annotations

import functools
import mimetypes
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from urllib.parse import unquote, urlsplit
from urllib.request import url2pathname

import nbformat

from helpers import atomic
from helpers.escape import css_string, shorten

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
                  "--no-pdf-header-footer", "--run-all-compositor-stages-before-draw", "--virtual-time-budget=15000",
                  # the report needs no network: every host name resolves to nothing, every request goes to a
                  # closed port. (Headless Chromium has no switch that turns JavaScript off and still prints;
                  # the page's Content-Security-Policy does that: see print_copy.)
                  "--disable-remote-fonts", "--no-service-autorun",
                  "--host-resolver-rules=MAP * ~NOTFOUND", "--proxy-server=http://127.0.0.1:9",
                  "--proxy-bypass-list=<-loopback>", "--disable-features=Translate,MediaRouter,OptimizationHints")
# What the exported page may load: its own inline styles and data: images and fonts; no script, frame, object,
# form target or remote anything. A missed escape then cannot run code or read a file:// in the grader's browser.
CONTENT_SECURITY_POLICY = ("default-src 'none'; img-src data:; style-src 'unsafe-inline'; font-src data:; "
                           "base-uri 'none'; form-action 'none'")
HEADER_LIMIT = 90  # characters of the title or author in the PDF's running header (one line)
# Markdown cells whose text is not the toolkit's: a course notebook's questions and the student's answers
STUDENT_TAGS = frozenset({"question", "answer"})
# The toolkit's own observations, titled as what they are beside a student's answers (issue 20)
OBSERVATIONS = re.compile(r"^(#{2,3}) Observations[ \t]*$", re.MULTILINE)
MEASURED = r"\1 What the run measured"


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


def student_cell(cell) -> bool:
    """Whether a markdown cell holds text the toolkit did not write (a question or a student's answer)."""
    return bool(STUDENT_TAGS & set(cell.get("metadata", {}).get("tags", [])))


@functools.cache
def report_exporter_class():
    """nbconvert's HTML exporter, rendering the Markdown of cell *outputs* (where the run's values are) and of
    question and answer cells (:func:`student_cell`) with raw HTML escaped and ``javascript:``, ``vbscript:``,
    ``file:`` and ``data:`` links made harmless; in an answer, a link shows as its text and address and an image
    as its description, so the page links to and loads nothing. The notebook's other Markdown cells, written by
    the toolkit, render as nbconvert renders them."""
    # lazy on purpose: nbconvert takes seconds to import, and only an export needs it
    from jinja2 import pass_context
    from nbconvert import HTMLExporter
    from nbconvert.filters.markdown_mistune import IPythonRenderer, MarkdownWithMath

    class TextLinks(IPythonRenderer):
        def link(self, text, url, title=None):
            return f"{text} ({self.escape_html(url)})" if url and url != text else text

        def image(self, text, url, title=None):
            return f"[image: {text or self.escape_html(url)}]"

    class ReportExporter(HTMLExporter):
        @pass_context  # the template filter gets the cell being rendered
        def markdown2html(self, context, source):
            cell = context.get("cell") or {}
            if cell.get("cell_type") == "markdown" and not student_cell(cell):
                return super().markdown2html(context, source)
            kind = TextLinks if cell.get("cell_type") == "markdown" else IPythonRenderer
            renderer = kind(escape=True, allow_harmful_protocols=False, anchor_link_text=self.anchor_link_text,
                            exclude_anchor_links=self.exclude_anchor_links, **self.lexer_options)
            return MarkdownWithMath(renderer=renderer).render(source)

    return ReportExporter


def retitle_observations(nb) -> None:
    """Title the toolkit's observations "What the run measured" (in memory), so that a grader holds a student's
    answers against what the run measured; every report gets the same title, the rerun ``verify`` exports too."""
    for cell in nb.cells:
        if cell.cell_type == "markdown" and not student_cell(cell):
            cell.source = OBSERVATIONS.sub(MEASURED, cell.source)


def export_html(notebook_path: str | Path, html_path: str | Path, *, no_input: bool = False,
                author: str = "", prepare=None) -> Path:
    """Write a self-contained HTML report (figures inline as base64, no network needed to view it), atomically.

    ``author`` is shown in the PDF's running header, escaped as a CSS string (it is the student's text).
    ``prepare``, when given, changes the notebook in memory before it is rendered (a course notebook's answers:
    :func:`helpers.course.answers.report_cells` fills in their citations); what it raises is raised here, and
    nothing is written then."""
    nb = nbformat.read(str(notebook_path), as_version=4)
    retitle_observations(nb)
    if prepare is not None:
        prepare(nb)
    exporter = report_exporter_class()(template_name="report", extra_template_basedirs=[str(TEMPLATE_DIR)],
                                       exclude_input=no_input, exclude_input_prompt=no_input,
                                       exclude_output_prompt=no_input)
    # papermill's injected-parameters cell is provenance, not narrative: show it only with the code
    if no_input:
        nb.cells = [c for c in nb.cells if "injected-parameters" not in c.metadata.get("tags", [])]
    title = notebook_title(nb)
    resources = {"report_title": title, "report_author": author, "content_security_policy": CONTENT_SECURITY_POLICY,
                 "report_title_css": css_string(shorten(title, HEADER_LIMIT)),
                 "report_author_css": css_string(shorten(author, HEADER_LIMIT)),
                 "metadata": {"name": Path(notebook_path).stem}}
    body, _ = exporter.from_notebook_node(nb, resources=resources)
    # a full disk or a killed run leaves the previous report, never a truncated one
    return atomic.write_text(html_path, body)


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
    """Whether this process runs as root (Chromium refuses to start its sandbox for root)."""
    return hasattr(os, "geteuid") and os.geteuid() == 0


def complete_pdf(path: Path) -> bool:
    """Whether ``path`` holds a whole PDF (its header and, near the end, its end-of-file marker): a printer that ran
    out of disk may leave a file that is neither."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(5)
            f.seek(max(size - 2048, 0))
            return head == b"%PDF-" and b"%%EOF" in f.read()
    except OSError:
        return False


def policy_meta() -> str:
    """The ``<meta>`` element that sets the report's Content-Security-Policy."""
    return f'<meta http-equiv="Content-Security-Policy" content="{CONTENT_SECURITY_POLICY}">'


def print_copy(html_path: Path) -> Path | None:
    """A hidden copy of ``html_path`` beside it that starts with the report's Content-Security-Policy, for a page
    that does not (a report from :func:`export_html` does: None then, and the page itself is printed).

    The policy is what keeps Chromium from running the page's scripts and loading ``file://`` frames or images
    while it prints; it goes first in the document (after the doctype), before anything the page holds."""
    text = Path(html_path).read_text(encoding="utf-8", errors="replace")
    policy = re.escape(CONTENT_SECURITY_POLICY)
    first = (r"\ufeff?\s*(<!doctype[^>]*>\s*)?(<html[^>]*>\s*)?(<head[^>]*>\s*)?<meta\s+(http-equiv=\"Content-Security-"
             rf'Policy"\s+content="{policy}"|content="{policy}"\s+http-equiv="Content-Security-Policy")\s*/?>')
    if re.match(first, text, flags=re.IGNORECASE):
        return None
    head = re.match(r"\ufeff?\s*<!doctype[^>]*>", text, flags=re.IGNORECASE)
    at = head.end() if head else 0
    copy = Path(html_path).with_name(f".{Path(html_path).name}.print.html")
    atomic.write_text(copy, text[:at] + policy_meta() + text[at:])
    return copy


def _print_to_pdf(chromium: str, html_path: Path, pdf_path: Path, *, no_sandbox: bool, timeout: int):
    pdf_path.unlink(missing_ok=True)
    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
        cmd = [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--print-to-pdf={pdf_path}"]
        if no_sandbox:
            cmd.append("--no-sandbox")
        cmd.append(html_path.resolve().as_uri())
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    return done, complete_pdf(pdf_path)


def chromium_pdf(html_path: Path, pdf_path: Path, *, chromium: str, timeout: int = 180) -> tuple[Path, str | None]:
    """Print ``html_path`` with headless Chromium; returns (pdf path, a note when it needed ``--no-sandbox``).

    As root Chromium refuses to start with its sandbox, so it runs with ``--no-sandbox`` from the start. As any
    other user it runs sandboxed first; when that makes no PDF (inside a container the sandbox often cannot start:
    "No usable sandbox", "Operation not permitted") it runs once more with ``--no-sandbox`` and the note says why.
    The page printed is the report this toolkit just wrote, read from a local file, with JavaScript and the
    network off (:data:`CHROMIUM_FLAGS`, :func:`print_copy`). The PDF replaces ``pdf_path`` only when it is
    complete.
    """
    html_path, pdf_path = Path(html_path), Path(pdf_path)
    copy = print_copy(html_path)
    try:
        return _chromium_pdf(copy or html_path, pdf_path, chromium=chromium, timeout=timeout)
    finally:
        if copy is not None:
            copy.unlink(missing_ok=True)


def _chromium_pdf(html_path: Path, pdf_path: Path, *, chromium: str, timeout: int) -> tuple[Path, str | None]:
    as_root = running_as_root()
    with atomic.atomic_path(pdf_path) as tmp:
        done, ok = _print_to_pdf(chromium, html_path, tmp, no_sandbox=as_root, timeout=timeout)
        if ok:
            return pdf_path, None
        first = f"exit {done.returncode}: {tail(done.stderr)}"
        if as_root:
            raise ExportError(f"Chromium made no PDF ({first})")
        done, ok = _print_to_pdf(chromium, html_path, tmp, no_sandbox=True, timeout=timeout)
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
    """The last ``limit`` characters of ``text`` without surrounding blanks (a program's error output, for a message)."""
    return text.strip()[-limit:]


def inside(path: Path, folder: Path) -> bool:
    """Whether ``path``, with its links followed, is a file inside ``folder`` (also with links followed)."""
    try:
        resolved, root = path.resolve(strict=True), folder.resolve(strict=True)
    except (OSError, RuntimeError):  # missing, or a loop of links
        return False
    return resolved.is_file() and root in resolved.parents


def local_fetcher(folder: Path):
    """A WeasyPrint URL fetcher that reads ``data:`` URLs and files inside ``folder`` and refuses everything else
    (``file:`` elsewhere, ``http(s):``, ``ftp:``): the report's images, stylesheets, fonts, ``<object>``,
    ``<embed>`` and attachments (``rel=attachment``) all come through it, so no other file of the grader's machine
    ends up in the PDF. A refused URL is left out of the page (WeasyPrint warns and goes on)."""
    # lazy on purpose: WeasyPrint loads Pango and fonts (a second), and only a PDF needs it
    import weasyprint.urls as urls

    folder = Path(folder)

    def check(url: str) -> Path | None:
        """None for a data: URL, the file's resolved path for an allowed file: URL; raises for the rest."""
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme == "data":
            return None
        if scheme == "file" and parts.netloc in ("", "localhost"):
            path = Path(url2pathname(unquote(parts.path)))
            if inside(path, folder):
                return path.resolve()
        raise ValueError(f"refused {url[:200]!r}: a report may use data: URLs and files inside {folder} only")

    def response(url: str, path: Path) -> tuple[bytes, str]:
        # read the file that was checked (not the URL again, which a link swapped meanwhile could redirect)
        return path.read_bytes(), mimetypes.guess_type(path.name)[0] or "application/octet-stream"

    if hasattr(urls, "URLFetcher"):  # WeasyPrint >= 68: a class whose fetch() returns a response

        class LocalFetcher(urls.URLFetcher):
            def fetch(self, url, headers=None):
                path = check(url)
                if path is None:
                    return super().fetch(url, headers)
                body, mime = response(url, path)
                return urls.URLFetcherResponse(path.as_uri(), body, {"Content-Type": mime})

        return LocalFetcher(allowed_protocols=("data", "file"))

    def fetcher(url, *args, **kwargs):  # older WeasyPrint: a function returning a dict
        path = check(url)
        if path is None:
            return urls.default_url_fetcher(url, *args, **kwargs)
        body, mime = response(url, path)
        return {"string": body, "mime_type": mime, "redirected_url": path.as_uri()}

    return fetcher


def weasyprint_pdf(html_path: Path, pdf_path: Path) -> Path:
    """Print ``html_path`` with WeasyPrint, reading nothing outside its folder (:func:`local_fetcher`); the PDF
    replaces ``pdf_path`` only when it is complete."""
    try:
        # lazy on purpose: WeasyPrint loads Pango and fonts (a second), and only a PDF needs it
        import weasyprint
    except (ImportError, OSError) as exc:  # OSError: the Pango libraries are missing
        raise ExportError(f"WeasyPrint is not usable ({exc})") from exc
    html_path = Path(html_path)
    document = weasyprint.HTML(filename=str(html_path), url_fetcher=local_fetcher(html_path.resolve().parent))
    with atomic.atomic_path(pdf_path) as tmp:
        document.write_pdf(str(tmp))
    return Path(pdf_path)


def export_pdf(html_path: str | Path, pdf_path: str | Path, *, engine: str = "auto",
               log=None) -> tuple[Path, str]:
    """Print the HTML report to PDF; returns (path, engine used).

    ``engine``: ``auto`` (Chromium when found, else WeasyPrint), ``chromium`` or ``weasyprint``. The engine
    returned is ``chromium --no-sandbox`` when Chromium's sandbox could not start and the page was printed without
    it; ``log`` (default: standard error) then gets a line saying so. Raises :class:`ExportError` saying what to
    install when neither works. A PDF from an earlier run stays as it was until a new one is complete.
    """
    html_path, pdf_path = Path(html_path), Path(pdf_path)
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
