"""The hand-in PDF: a title page, then each question on its own page or pages, for a grader who grades page by page.

A question's pages hold its text, the student's answer (citations filled in, or "Not answered yet") and what the
run shows about it: the outputs (figures, tables, the toolkit's Markdown) of the cells of the subsection where the
question sits, the one under the heading the question's ``after`` names, up to the next heading of the same or a
higher level. Code is hidden unless ``with_code``. Every page carries a running header, the student's name and id
on the left and the question on the right (CSS ``string-set``, which WeasyPrint draws in the page's margin boxes),
and :func:`render_handin_pdf` reads the page map {question id: [first page, last page]} off WeasyPrint's laid-out
pages (each question's anchor), so it is exactly what the PDF shows.

Everything the student wrote or the run produced is escaped where it is interpolated (:mod:`helpers.escape`): a
name, an id or an answer holding HTML shows the characters. Answers are Markdown rendered with raw HTML escaped; a
table output keeps its table elements and text only; images are ``data:`` URLs checked to be base64; WeasyPrint
reads nothing but ``data:`` and files of the folder's reports (:func:`helpers.reporting.export.local_fetcher`).
Figures never break across pages and are scaled to the page.
"""

from __future__ import annotations

import base64
import binascii
import html
import re
from datetime import datetime
from html.parser import HTMLParser
from typing import TYPE_CHECKING

import mistune

from helpers.course.assignment import headings
from helpers.escape import css_string, html_text, shorten
from helpers.reporting.export import local_fetcher

if TYPE_CHECKING:  # handin imports this module; the type alone is needed here
    from helpers.course.handin import Handin

HEADER_LIMIT = 70  # characters of each half of the running header (one line)
IMAGE_TYPES = ("image/png", "image/jpeg", "image/svg+xml")
WIDGET = "application/vnd.jupyter.widget-view+json"  # a progress bar: nothing on paper
TABLE_TAGS = frozenset({"table", "thead", "tbody", "tfoot", "tr", "th", "td", "caption"})
HIDDEN_TAGS = frozenset({"style", "script", "template", "title", "head", "noscript", "iframe", "object", "svg"})
# raw HTML in an answer is shown as text; javascript:, file: and other harmful links are disarmed (mistune's default)
MARKDOWN = mistune.create_markdown(escape=True, plugins=["table", "strikethrough"])
STYLE = """
@page { size: A4; margin: 24mm 15mm 18mm 15mm;
  @top-left { content: STUDENT_HEADER; font: 8pt sans-serif; color: #333; width: 45%; vertical-align: bottom;
              padding-bottom: 3mm; }
  @top-right { content: string(question, first); font: 8pt sans-serif; color: #333; width: 55%;
               text-align: right; vertical-align: bottom; padding-bottom: 3mm; }
  @bottom-right { content: "page " counter(page) " of " counter(pages); font: 8pt sans-serif; color: #555; } }
html { font: 10pt/1.4 "DejaVu Sans", sans-serif; color: #111; }
section.title { string-set: question attr(data-runner); }
section.question { break-before: page; string-set: question attr(data-runner); }
h1 { font-size: 18pt; margin: 0 0 4mm; } h2 { font-size: 14pt; margin: 0 0 3mm; }
h3 { font-size: 11pt; margin: 5mm 0 2mm; border-bottom: 0.5pt solid #999; break-after: avoid; }
h4 { font-size: 10pt; margin: 3mm 0 1mm; break-after: avoid; }
.qtext { background: #f3f3f3; padding: 2mm 3mm; border-left: 2pt solid #777; }
.answer { padding: 0 1mm; overflow-wrap: anywhere; }
.missing { color: #a00; font-weight: bold; }
figure { margin: 0 0 4mm; break-inside: avoid; text-align: center; }
img { max-width: 100%; max-height: 200mm; height: auto; object-fit: contain; }  /* width: the notebook's */
table { border-collapse: collapse; font-size: 8pt; margin: 0 0 4mm; max-width: 100%; }
th, td { border: 0.5pt solid #bbb; padding: 0.5mm 1.5mm; text-align: right; overflow-wrap: break-word; }
tr { break-inside: avoid; }
table.facts th, table.facts td, table.toc th, table.toc td { text-align: left; font-size: 10pt; }
pre { font-size: 7.5pt; white-space: pre-wrap; overflow-wrap: anywhere; background: #f7f7f7; padding: 1.5mm; }
a.page::after { content: target-counter(attr(href), page); }
.note { color: #555; font-style: italic; }
"""


class _TablesOnly(HTMLParser):
    """A table output (a DataFrame's HTML) reduced to table elements and escaped text: no attribute but a small
    ``colspan``/``rowspan``, no style, script, link or image."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.out: list[str] = []
        self.hidden = 0

    def handle_starttag(self, tag, attrs):
        if tag in HIDDEN_TAGS:
            self.hidden += 1
        elif tag in TABLE_TAGS and not self.hidden:
            spans = "".join(f' {k}="{int(v)}"' for k, v in attrs
                            if k in ("colspan", "rowspan") and v and v.isdigit() and int(v) <= 100)
            self.out.append(f"<{tag}{spans}>")

    def handle_endtag(self, tag):
        if tag in HIDDEN_TAGS:
            self.hidden = max(self.hidden - 1, 0)
        elif tag in TABLE_TAGS and not self.hidden:
            self.out.append(f"</{tag}>")

    def handle_data(self, data):
        if not self.hidden:
            self.out.append(html_text(data))


def tables_only(text: str) -> str:
    """``text`` (HTML) as :class:`_TablesOnly` keeps it."""
    parser = _TablesOnly()
    parser.feed(text)
    parser.close()
    return "".join(parser.out)


def _text(value) -> str:
    """An output's value as one string (nbformat may store a list of lines)."""
    return "".join(value) if isinstance(value, list) else str(value)


def figure(mime: str, value, width=None) -> str:
    """An image output as a ``<figure>`` with a checked ``data:`` URL ("" when the data are not an image's), at the
    on-page ``width`` the notebook recorded for it (a whole number of pixels, or none)."""
    text = _text(value)
    try:
        if mime == "image/svg+xml":
            data = text.encode("utf-8")
        else:
            data = base64.b64decode(re.sub(r"\s+", "", text), validate=True)
    except (binascii.Error, ValueError, UnicodeEncodeError):
        return ""
    size = f' width="{width}"' if isinstance(width, int) and not isinstance(width, bool) and 0 < width < 10_000 else ""
    return f'<figure><img alt=""{size} src="data:{mime};base64,{base64.b64encode(data).decode()}"></figure>'


def render_output(output) -> str:
    """One cell output on paper: an image, a table, the toolkit's Markdown or plain text; streams, errors and
    widgets are left out."""
    if output.get("output_type") not in ("display_data", "execute_result"):
        return ""
    data = output.get("data") or {}
    if WIDGET in data:
        return ""
    for mime in IMAGE_TYPES:
        if mime in data:
            shown = (output.get("metadata") or {}).get(mime)
            return figure(mime, data[mime], width=shown.get("width") if isinstance(shown, dict) else None)
    if "text/html" in data and "<table" in _text(data["text/html"]).lower():
        return f'<div class="table">{tables_only(_text(data["text/html"]))}</div>'
    if "text/markdown" in data:
        return f'<div class="md">{MARKDOWN(_text(data["text/markdown"]))}</div>'
    if "text/plain" in data:
        return f"<pre>{html.escape(_text(data['text/plain']))}</pre>"
    return ""


def subsection(nb, after: str) -> list | None:
    """The cells under the heading ``after`` up to the next heading of its level or higher, question and answer
    cells left out; None when the notebook has no such heading."""
    cells = nb.cells
    start = next((i for i, c in enumerate(cells) if any(t == after for _, t in headings(c))), None)
    if start is None:
        return None
    level = min(n for n, t in headings(cells[start]) if t == after)
    out = []
    for cell in cells[start + 1:]:
        tags = cell.get("metadata", {}).get("tags", [])
        if "question" in tags or "answer" in tags:
            continue
        if any(n <= level for n, _ in headings(cell)):
            break
        out.append(cell)
    return out


def run_shows(nb, after: str, *, with_code: bool) -> str:
    """What the run shows about a question: the outputs of its subsection (see :func:`subsection`)."""
    cells = subsection(nb, after)
    if cells is None:
        return f'<p class="note">The report has no heading {html_text(after)}: nothing of the run to show.</p>'
    parts = []
    for cell in cells:
        if cell.cell_type == "markdown":
            parts += [f"<h4>{html_text(text)}</h4>" for _, text in headings(cell)]
            continue
        if with_code and cell.cell_type == "code" and cell.source.strip():
            parts.append(f'<pre class="code">{html.escape(cell.source)}</pre>')
        parts += [r for r in map(render_output, cell.get("outputs", [])) if r]
    return "\n".join(parts) or '<p class="note">This part of the run shows no figure or table.</p>'


def paragraphs(text: str) -> str:
    """Plain text (the assignment's question) as escaped paragraphs."""
    return "".join(f"<p>{html_text(p.strip())}</p>" for p in re.split(r"\n\s*\n", text) if p.strip())


def question_html(h: Handin, q, *, with_code: bool) -> str:
    """One question's pages (see the module docstring)."""
    heading = f"Question {q.id}: {q.title}"
    shown = h.shown.get(q.id)
    answer = MARKDOWN(shown) if shown else '<p class="missing">Not answered yet.</p>'
    section = h.sections[q.section]
    # the points are plain text in the heading: an inline <span> there makes WeasyPrint break after the first word
    return (f'<section class="question" id="q-{html_text(q.id)}" data-runner="{html_text(shorten(heading, HEADER_LIMIT))}">'
            f"<h2>{html_text(heading)} ({q.points:g} points)</h2>"
            f'<div class="qtext">{paragraphs(q.text)}</div>'
            f'<h3>Answer</h3><div class="answer">{answer}</div>'
            f"<h3>What the run shows ({html_text(q.section)}: {html_text(q.after)})</h3>"
            f"{run_shows(section.notebook, q.after, with_code=with_code)}</section>")


def title_html(h: Handin, questions: list, date: datetime) -> str:
    """The title page: assignment, student, sections, profile, date, and the questions with their first page."""
    a, student = h.assignment, h.student
    sections = ", ".join(f"{s} (fingerprint {(sec.metrics.get('fingerprint') or {}).get('short', '-')})"
                         for s, sec in h.sections.items())
    variant = "; ".join(f"{k} = {v}" for k, v in (h.course.get("variant") or {}).items()) or "-"
    facts = [("Assignment", f"{a.title} ({a.id})"), ("Student", student.get("name", "")),
             ("Student id", student.get("id", "")), ("Sections", sections), ("Variant", variant),
             ("Profile", h.course.get("profile", "")), ("Date", date.strftime("%Y-%m-%d %H:%M UTC"))]
    rows = "".join(f"<tr><th>{k}</th><td>{html_text(v)}</td></tr>" for k, v in facts)
    toc = "".join(f"<tr><td>{html_text(q.id)}</td><td>{html_text(q.title)}</td><td>{q.points:g}</td>"
                  f"<td>{'yes' if h.shown.get(q.id) else 'not answered yet'}</td>"
                  f'<td><a class="page" href="#q-{html_text(q.id)}"></a></td></tr>' for q in questions)
    return (f'<section class="title" data-runner="{html_text(shorten("Hand-in: " + a.id, HEADER_LIMIT))}">'
            f"<h1>{html_text(a.title)}</h1><table class='facts'>{rows}</table><h2>Questions</h2>"
            "<table class='toc'><tr><th>Id</th><th>Question</th><th>Points</th><th>Answered</th><th>Page</th></tr>"
            f"{toc}</table></section>")


def handin_html(h: Handin, *, with_code: bool, date: datetime) -> tuple[str, list[str]]:
    """The hand-in as one HTML document, and the ids of its questions in assignment order."""
    questions = [q for q in h.assignment.questions if q.section in h.sections]
    student = h.student
    runner = css_string(shorten(f"{student.get('name', '')} (id {student.get('id', '')})", HEADER_LIMIT))
    body = title_html(h, questions, date) + "".join(question_html(h, q, with_code=with_code) for q in questions)
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{html_text(h.assignment.title)}'
            f"</title><style>{STYLE.replace('STUDENT_HEADER', runner)}</style></head><body>{body}</body></html>",
            [q.id for q in questions])


def page_map(pages, ids: list[str]) -> dict[str, list[int]]:
    """{question id: [first page, last page]} (1-based) of WeasyPrint's laid-out ``pages``: a question starts on
    the page holding its anchor and, each starting on a new page, ends before the next one."""
    first: dict[str, int] = {}
    for number, page in enumerate(pages, 1):
        for anchor in page.anchors:
            if anchor.startswith("q-") and anchor[2:] in ids:
                first.setdefault(anchor[2:], number)
    order = sorted((q for q in ids if q in first), key=lambda q: first[q])
    ends = [first[q] - 1 for q in order[1:]] + [len(pages)]
    return {q: [first[q], max(end, first[q])] for q, end in zip(order, ends)}


def render_handin_pdf(h: Handin, *, with_code: bool = False, date: datetime) -> tuple[bytes, dict[str, list[int]]]:
    """The hand-in PDF of a checked folder and its page map."""
    import weasyprint  # lazy on purpose: loading WeasyPrint (Pango, fonts) takes a second, and only handin needs it

    text, ids = handin_html(h, with_code=with_code, date=date)
    reports = h.root / "reports"
    document = weasyprint.HTML(string=text, base_url=str(reports) + "/",
                               url_fetcher=local_fetcher(reports)).render()
    return document.write_pdf(), page_map(document.pages, ids)
