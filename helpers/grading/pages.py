"""What ``check`` shows: the class page ``index.html`` (sortable, offline, the flags highlighted, links to each
hand-in and feedback page, the similarity pairs, the distributions of totals and of each section's accuracy by
variant) and each student's ``feedback.html`` (every check the student may see, the points, the grader's
comments; nothing of a hidden criterion) and its PDF.

Every value shown is escaped (:func:`helpers.escape.html_text`: also invisible and direction-changing characters);
each page carries the class page's Content-Security-Policy (its own sort script, allowed by its digest, and
nothing else runs or loads); PDFs are printed by WeasyPrint reading no file outside the student's folder
(:func:`helpers.reporting.export.weasyprint_pdf`).
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from urllib.parse import quote

import pandas as pd

from helpers.atomic import write_text
from helpers.escape import html_text as esc
from helpers.grading.lines import Graded
from helpers.grading.rubric import Rubric
from helpers.grading.sheet import COMMENTS, hand_column
from helpers.reporting.export import ExportError, weasyprint_pdf
from helpers.reporting.summary import CSS, SORT_JS, class_page_policy, plot_accuracy_by_parameter, save_figure_files

EXTRA_CSS = """
tr.flagged td { background: #fff4e5; } td.flags { color: #b00020; font-size: 12px; max-width: 30em; }
.line-ok::before { content: "\\2713  "; color: #176c2e; } .line-bad::before { content: "\\2717  "; color: #b00020; }
.line-note::before { content: "\\2022  "; color: #555; } li { margin: 0.3em 0; } .ev { font-size: 12px; color: #444; }
ul.checks { list-style: none; padding-left: 0; } td.name, td.links { white-space: nowrap; }
table.grades { font-size: 13px; } table.grades th { white-space: normal; vertical-align: bottom; font-size: 12px; }
table.grades td { padding: 4px 6px; } table.grades td.num { min-width: 2.5em; }
@page { size: A4; margin: 16mm; }
"""


def student_folder(g: Graded) -> str:
    """The folder (relative to the output) of a student's feedback: their id, made safe for any file system."""
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", g.id).strip("._") or "student"
    return f"students/{safe[:80]}"


def _head(title: str) -> str:
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta http-equiv="Content-Security-Policy" '
            f'content="{class_page_policy()}"><meta charset="utf-8"><title>{esc(title)}</title>'
            f"<style>{CSS}{EXTRA_CSS}</style></head><body>")


def feedback_page(g: Graded, rubric: Rubric, row: dict, *, assignment: str) -> str:
    """A student's ``feedback.html``: points (hidden criteria left out), the grader's comments and every
    visible check line."""
    hidden = rubric.hidden_checks()
    shown = [c for c in rubric.auto if not c.hidden]
    points = "".join(f"<tr><td>{esc(c.id)}</td><td class='num'>{_points(row.get(c.id))}</td>"
                     f"<td class='num'>{c.points:g}</td></tr>" for c in shown)
    points += "".join(f"<tr><td>{esc(q)} (graded by hand)</td><td class='num'>{esc(row.get(hand_column(q)) or '–')}"
                      f"</td><td class='num'>{most:g}</td></tr>" for q, most in rubric.hand.items())
    lines = "".join(f"<li class='line-{'ok' if x.ok else 'note' if x.ok is None else 'bad'}'><b>{esc(x.check)}</b>: "
                    f"{esc(x.text)}</li>" for x in g.lines if x.check not in hidden)
    comments = esc(row.get(COMMENTS) or "") or "<i>none yet</i>"
    return (_head(f"Feedback: {g.name}") + f"<h1>Feedback: {esc(g.name)} ({esc(g.id)})</h1>"
            f"<p class='stats'>{esc(assignment)}; hand-in {esc(g.handin or 'none')}; status {esc(g.status)}; "
            f"checked {time.strftime('%Y-%m-%d %H:%M')}.</p><h2>Points</h2><table><thead><tr><th>criterion</th>"
            f"<th>points</th><th>of</th></tr></thead><tbody>{points}</tbody></table>"
            f"<h2>Grader's comments</h2><p>{comments}</p><h2>Checks</h2><ul class='checks'>{lines}</ul></body></html>\n")


def _points(value) -> str:
    return f"{value:g}" if isinstance(value, (int, float)) else "– (for the grader)"


def _hist(values: list[float], title: str, xlabel: str):
    from matplotlib.figure import Figure  # lazy on purpose: matplotlib only when a page is drawn

    fig = Figure(figsize=(4.6, 3.2), layout="constrained")
    ax = fig.subplots()
    ax.hist(values, bins=min(20, max(5, len(set(values)))), color="#4c78a8", edgecolor="white")
    ax.set(title=title, xlabel=xlabel, ylabel="students")
    return fig


def class_figures(out: Path, graded: list[Graded], rubric: Rubric, rows: list[dict]) -> list[tuple[str, str]]:
    """The distribution of totals and each section's accuracy by each variant axis; (title, png name)."""
    figures = []
    totals = [r["total"] for r, g in zip(rows, graded) if g.status == "checked"]
    if totals:
        auto = sum(c.points for c in rubric.auto)
        title = f"Totals ({auto:g} points by check" + (f", {sum(rubric.hand.values()):g} by hand)" if rubric.hand
                                                        else ")")
        figures.append(("Totals across the class", _hist(totals, title, "points")))
    table = pd.DataFrame([{**{a: v if isinstance(v, str) else repr(v) for a, v in g.variant.items()},
                           **{f"{s} test accuracy": a for s, a in g.accuracy.items()}}
                          for g in graded if g.status == "checked"])
    for axis in sorted({a for g in graded for a in g.variant}):
        if axis in table and table[axis].nunique() > 1 and any(c.endswith(" test accuracy") for c in table):
            figures.append((f"Test accuracy by {axis}", plot_accuracy_by_parameter(table, axis)))
    out_list = []
    for i, (title, fig) in enumerate(figures):
        png, _ = save_figure_files(fig, out, f"figure_{i + 1}")
        out_list.append((title, png.name))
    return out_list


def class_page(graded: list[Graded], rows: list[dict], rubric: Rubric, pairs: list, *, title: str, rerun: dict,
               figures: list[tuple[str, str]]) -> str:
    """The class page (see the module docstring)."""
    first, rest = ["name", "id", "status", "total", "flags"], [c.id for c in rubric.auto] + [
        hand_column(q) for q in rubric.hand]
    head = "".join(f"<th title='click to sort'>{esc(c)}</th>" for c in first) + "<th>hand-in</th><th>feedback</th>" \
        + "".join(f"<th title='click to sort'>{esc(c)}</th>" for c in rest)
    body = []
    for g, row in zip(graded, rows):
        fb = f"{student_folder(g)}/feedback.html"
        links = (f"<td class='links'>{_handin_link(g)}</td><td class='links'><a href='{quote(fb)}'>HTML</a><br>"
                 f"<a href='{quote(fb[:-4])}pdf'>PDF</a></td>")
        cells = [_cell(c, row.get(c)) for c in first] + [links] + [_cell(c, row.get(c)) for c in rest]
        body.append(f"<tr class='{'flagged' if g.flags else ''}'>{''.join(cells)}</tr>")
    figs = "".join(f"<figure><img src='{quote(png)}' alt='{esc(t)}'><figcaption>{esc(t)}</figcaption></figure>"
                   for t, png in figures)
    counts = pd.Series([g.status for g in graded]).value_counts().to_dict() if graded else {}
    flagged = sum(bool(g.flags) for g in graded)
    rerun_text = (f"rerun: {esc(rerun.get('mode'))}" + (f" (seed {rerun['seed']})" if rerun.get("seed") is not None
                                                        else "") + f", {len(rerun.get('students', []))} students")
    return (_head(f"Grades: {title}") + f"<h1>Grades: {esc(title)}</h1><p class='stats'>{len(graded)} students: "
            + ", ".join(f"{n} {esc(s)}" for s, n in counts.items()) + f"; {flagged} flagged. {rerun_text}. "
            f"Generated {time.strftime('%Y-%m-%d %H:%M')}; the same numbers as <a href='grades.csv'>grades.csv</a>. "
            f"Click a column header to sort.</p>{figs}<div class='scroll'><table class='sortable grades'><thead>"
            f"<tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table></div>{_pairs_html(pairs, graded)}"
            f"<script>{SORT_JS}</script></body></html>\n")


def _cell(column: str, value) -> str:
    if isinstance(value, (int, float)):
        return f"<td class='num' data-v='{value}'>{value:g}</td>"
    kind = "flags" if column == "flags" else "name" if column == "name" else ""
    return f"<td class='{kind}'>{esc(value or '')}</td>"


def _handin_link(g: Graded) -> str:
    """Links to the student's copy of what they handed in (see :func:`helpers.grading.grade.keep_pages`)."""
    order = sorted(g.reports, key=lambda name: (name.endswith(".pdf"), name))  # the sections' pages, then the PDF
    return "<br>".join(f"<a href='{quote(g.reports[name])}'>{esc(name)}</a>" for name in order)


def _pairs_html(pairs: list, graded: list[Graded]) -> str:
    if not pairs:
        return "<h2>Similar hand-ins</h2><p>None found at the thresholds chosen.</p>"
    folder = {g.id: student_folder(g) for g in graded}
    items = "".join(
        f"<li><b>{esc(p.kind)}</b> ({esc(p.where)}, score {p.score:.3g}): "
        f"<a href='{quote(folder.get(p.a, ''))}/feedback.html'>{esc(p.a)}</a> and "
        f"<a href='{quote(folder.get(p.b, ''))}/feedback.html'>{esc(p.b)}</a><div class='ev'>"
        f"{'<br>'.join(esc(e) for e in p.evidence)}</div></li>" for p in pairs)
    return f"<h2>Similar hand-ins ({len(pairs)} pairs, for the grader to read)</h2><ul>{items}</ul>"


def write_feedback(out: Path, g: Graded, page: str, *, pdf: bool) -> str | None:
    """Write a student's ``feedback.html`` and, when asked and changed, its PDF; the PDF's error or None."""
    folder = out / student_folder(g)
    folder.mkdir(parents=True, exist_ok=True)
    html_path = folder / "feedback.html"
    unchanged = html_path.exists() and _body(html_path.read_text(encoding="utf-8")) == _body(page)
    write_text(html_path, page)
    if not pdf or (unchanged and (folder / "feedback.pdf").exists()):
        return None
    try:
        weasyprint_pdf(html_path, folder / "feedback.pdf")
    except (ExportError, OSError, ValueError) as exc:
        return f"feedback.pdf of {g.id}: {exc}"
    return None


def _body(page: str) -> str:
    """A page without its date (what decides whether its PDF must be printed again)."""
    return re.sub(r"checked \d{4}-\d{2}-\d{2} \d{2}:\d{2}", "", page)

