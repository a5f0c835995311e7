"""The page a grader reads against the rerun's page (the toolkit's notebook run again and exported by the
toolkit): every cell's outputs, word by word and number by number, its figures, styles and any text outside
the cells, apart from what honestly changes from run to run (timings, dates, paths, the cache's notes, the
appendix, which :mod:`helpers.cli.verify_page` checks against ``metrics.json``). A cell, a table row, a sentence or a
figure edited, added or removed shows up here even where the comparison with ``metrics.json`` does not look.
"""

from __future__ import annotations

import re

import nbformat

from helpers.cli.verify_html import MAX_TABLE_CELLS, Output, Page, Table
from helpers.cli.verify_page import NUMBER, cell_place, shown_value

TIMING = re.compile(r"[-+]?\d[\d,]*(?:\.\d+)?(?:e[-+]?\d+)?\s*(?:ms|s|sec|seconds|min|minutes|h|hours|images/s|x|×)"
                    r"(?![\w%/])", re.I)
DATE = re.compile(r"\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2})?)?")
# A sentence that names configurations by their speed ("Fastest: `32` (1.2 s); the slowest, `64`, …"): which ones it
# names changes from run to run, so none of its words or numbers is compared (the times are not claims either).
TIMING_ORDERED = re.compile(r"\b(?:fastest|slowest)\b", re.I)
VOLATILE_COLUMN = re.compile(r"second|time|wall|date|latency|throughput", re.I)
VOLATILE_ROW = re.compile(r"latency|throughput|wall time|date|fingerprint|cache|git|platform|processor|cpu_threads",
                          re.I)
# pandas' Styler names its tables T_<5 random hex digits> and lists one selector per styled cell
STYLER_CELLS = re.compile(r"#T_[0-9a-f]{5}_row\d+_col\d+\s*,?\s*")
STYLER_ID = re.compile(r"\bT_[0-9a-f]{5}(?=_|\b)")
# Cells of the toolkit's notebooks whose output depends on something verify replaces or leaves out by design:
# the appendix (machine, dates, paths; its parameters and fingerprint are checked against metrics.json) and the
# autoencoder's side-by-side with another report (a path the hand-in names, which verify does not read).
UNCOMPARED_SOURCES = ("report.appendix(", "report.finish(", "cnn_metrics")  # finish: h2's new appendix call
# Cells of a student's folder's notebook that the toolkit's has not: papermill's injected parameters, the course's
# first cell, each question and the student's answer (words, not results: the fingerprint digests the answers, and
# the folder's parameters cell holds the student's values, which metrics.json records and the rerun is given)
STUDENT_TAGS = frozenset({"injected-parameters", "course", "question", "answer"})


def _tokens(text: str, numbers_only: bool = False) -> list[str]:
    """What of a text an honest rerun repeats: words and numbers, except timings, dates and paths. A sentence with
    a timing keeps only its other numbers (which run was fastest changes between runs), and one that names
    configurations by their speed (:data:`TIMING_ORDERED`) nothing; with ``numbers_only``
    every sentence does, and the clause that tells of the cache is left out (the rerun computes what the report
    may have read from the cache, and says so in other words)."""
    tokens = []
    for sentence in re.split(r"(?<=[.!?])\s+|\n", DATE.sub(" ", text)):
        low = sentence.lower()
        if "cache" in low:
            k = low.index("cache")
            sentence = sentence[:max(sentence.rfind(";", 0, k), sentence.rfind(":", 0, k), 0)]
        masked = TIMING.sub(" ", sentence)
        if masked != sentence and TIMING_ORDERED.search(sentence):
            continue
        words = [w.strip(".,;:()[]'\"") for w in masked.split()]
        words = [w for w in words if w and not w.startswith(("/", "~", "file:")) and ":\\" not in w]
        tokens += [w for w in words if NUMBER.fullmatch(w)] if numbers_only or masked != sentence else words
    return tokens


def _cache_told(*texts: str) -> bool:
    return any("cache" in t.lower() for t in texts)


def _same_tokens(a: list[str], b: list[str], tolerance: float) -> bool:
    """Token lists that agree: equal, or, with a ``tolerance`` (a rerun on another machine), numbers within it
    relatively or within one unit of the last digit shown."""
    if a == b or not tolerance or len(a) != len(b):
        return a == b
    for x, y in zip(a, b):
        u, v = shown_value(x), shown_value(y)
        if x == y:
            continue
        if u is None or v is None or not NUMBER.fullmatch(x) or not NUMBER.fullmatch(y):
            return False
        digits = len(y.rstrip("%").partition(".")[2])
        if abs(u - v) > max(tolerance * abs(v), 1.01 * 10 ** -digits):
            return False
    return True


def _table_differences(mine: Table, theirs: Table, where: str, tolerance: float) -> list[str]:
    if mine.truncated:
        return [f"{where}: a table of more than {MAX_TABLE_CELLS:,} cells, which no report has"]
    if mine.columns != theirs.columns:
        return [f"{where}: columns {mine.columns}; the rerun's table has {theirs.columns}"]
    if len(mine.rows) != len(theirs.rows):
        return [f"{where}: {len(mine.rows)} rows; the rerun's table has {len(theirs.rows)}"]
    out = []
    skip = {j for j, c in enumerate(mine.columns) if VOLATILE_COLUMN.search(c)}
    for (labels, a), (their_labels, b) in zip(mine.records(), theirs.records()):
        row = " / ".join(labels)
        if VOLATILE_ROW.search(row) or VOLATILE_ROW.search(" / ".join(their_labels)):
            continue
        if labels != their_labels:
            out.append(f"{where}: row {row!r} where the rerun has {' / '.join(their_labels)!r}")
            continue
        for j, column in enumerate(mine.columns):
            x, y = a.get(column, ""), b.get(column, "")
            told = _cache_told(x, y)
            if j not in skip and not _same_tokens(_tokens(x, told), _tokens(y, told), tolerance):
                out.append(f"{where}, row {row!r}, {column}: shows {a.get(column)!r}; the rerun shows "
                           f"{b.get(column)!r}")
    return out


def _output_differences(mine: Output, theirs: Output, where: str, tolerance: float, figures: bool) -> list[str]:
    if mine.mime != theirs.mime:
        return [f"{where}: a {mine.mime or 'plain'} output where the rerun has {theirs.mime or 'plain'}"]
    out = []
    if figures and mine.images != theirs.images:
        out.append(f"{where}: a figure that is not the rerun's (the same machine and versions draw the same bytes: "
                   "it was replaced, or drawn with other fonts)")
    if len(mine.tables) != len(theirs.tables):
        out.append(f"{where}: {len(mine.tables)} tables; the rerun has {len(theirs.tables)}")
    for t, (a, b) in enumerate(zip(mine.tables, theirs.tables)):
        out += _table_differences(a, b, f"{where}, table {t + 1}" if len(mine.tables) > 1 else f"{where}, table",
                                  tolerance)
    if not mine.tables and not theirs.tables:
        told = _cache_told(mine.text, theirs.text)
        a, b = _tokens(mine.text, told), _tokens(theirs.text, told)
        if not _same_tokens(a, b, tolerance):
            k = next((k for k, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
            shown, rerun = " ".join(a[max(0, k - 4):k + 5]), " ".join(b[max(0, k - 4):k + 5])
            out.append(f"{where}: '… {shown} …' where the rerun shows '… {rerun} …'")
    return out


def _style(block: str) -> str:
    return STYLER_ID.sub("T_", STYLER_CELLS.sub("", block))


def uncompared_cells(notebook) -> frozenset[str]:
    """The ids of the toolkit notebook's cells that :data:`UNCOMPARED_SOURCES` leaves out (found in the notebook
    itself: a page exported without its code does not show their source)."""
    nb = nbformat.read(str(notebook), as_version=4)
    return frozenset(c.get("id") for c in nb.cells if any(s in c.source for s in UNCOMPARED_SOURCES))


def compare_pages(mine: Page, theirs: Page, name: str, *, tolerance: float = 0.0,
                  uncompared: frozenset[str] = frozenset(), figures: bool = False) -> list[str]:
    """Every difference between a hand-in's page and the rerun's page that an honest rerun would not make
    (numbers within ``tolerance`` when the rerun ran on another machine or versions; the cells ``uncompared``,
    :func:`uncompared_cells`, left out; with ``figures``, every figure too, byte for byte: only where the report
    and the rerun were drawn on the same machine with the same versions)."""
    out = []
    if mine.stray_text != theirs.stray_text:
        out.append(f"{name}: text outside the cells' code and outputs: {mine.stray_text[:80]!r}")
    written = {_style(s) for s in theirs.styles}
    extra_styles = [s for s in mine.styles if _style(s) not in written]
    if extra_styles:
        out.append(f"{name}: {len(extra_styles)} style block(s) the toolkit's export does not write "
                   f"(first: {extra_styles[0][:80]!r})")
    extra_inline = sorted(set(mine.inline_styles) - set(theirs.inline_styles))
    if extra_inline:
        out.append(f"{name}: inline styles the toolkit's export does not write: {extra_inline[:3]}")
    ids = {c.id for c in theirs.cells}
    for i, cell in enumerate(mine.cells):
        if cell.id not in ids and not STUDENT_TAGS & {"injected-parameters", *cell.tags}:
            out.append(f"{cell_place(name, mine, i)}: a cell the toolkit's notebook does not have "
                       f"({' '.join(o.text for o in cell.outputs)[:60]!r})")
    for j, cell in enumerate(theirs.cells):
        if "injected-parameters" in cell.tags or cell.id in uncompared or any(s in cell.source
                                                                               for s in UNCOMPARED_SOURCES):
            continue
        i = next((k for k, c in enumerate(mine.cells) if c.id == cell.id), None)
        if i is None:
            out.append(f"{name} cell {j + 1}: missing (the rerun's page has it: {cell.source[:50]!r})")
            continue
        where = cell_place(name, mine, i)
        if mine.has_input and "parameters" not in cell.tags and cell.source.split() != mine.cells[i].source.split():
            out.append(f"{where}: its code is not the notebook's")
        a = [o for o in mine.cells[i].outputs if "stderr" not in o.mime]
        b = [o for o in cell.outputs if "stderr" not in o.mime]
        if len(a) != len(b):
            out.append(f"{where}: {len(a)} outputs; the rerun's cell has {len(b)}")
        for k, (x, y) in enumerate(zip(a, b)):
            out += _output_differences(x, y, f"{where}, output {k + 1}" if len(a) > 1 else where, tolerance, figures)
    return out
