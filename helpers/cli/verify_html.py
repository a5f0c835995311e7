"""What a grader reads, read back: a report's HTML parsed into its cells, their outputs and tables (the standard
library's ``html.parser``; nothing in the page is run or fetched), for :mod:`helpers.cli.verify_page` to compare with
``metrics.json`` and :mod:`helpers.cli.verify_compare` with the rerun's page.

nbconvert writes every notebook cell as a ``div.jp-Cell`` whose ``id`` is ``cell-id=<the cell's id>``, its code
in ``.jp-InputArea-editor`` and each output in a ``.jp-OutputArea-output`` carrying its ``data-mime-type``. The
rerun's notebook has the same cell ids (it is the same toolkit notebook), so the two pages line up cell by cell.
Whatever else a hand-in's page carries (script, frames, event handlers, remote images, text outside the cells) is
recorded too: it is what a browser could show or do beyond the numbers read here.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from dataclasses import dataclass, field
from html.parser import HTMLParser

VOID = frozenset({"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "param", "source",
                  "track", "wbr"})
# Elements the toolkit's export never writes: each can run code, load something or navigate, so a page holding one
# may show the grader more, or other, than the text read here.
ACTIVE_TAGS = frozenset({"script", "iframe", "frame", "frameset", "object", "embed", "applet", "form", "base", "link",
                         "portal", "noscript", "template", "svg", "math", "audio", "video", "source", "track",
                         "input", "button", "select", "textarea", "dialog", "marquee"})
URL_ATTRIBUTES = frozenset({"href", "src", "srcset", "action", "formaction", "data", "poster", "background",
                            "xlink:href", "ping", "lowsrc", "dynsrc"})
HIDING_STYLE = re.compile(r"display\s*:\s*none|visibility\s*:\s*hidden|font-size\s*:\s*0|opacity\s*:\s*0(?![.\d])"
                          r"|url\s*\(|expression\s*\(|content\s*:|position\s*:\s*(absolute|fixed)|clip|transform",
                          re.I)


MAX_TABLE_CELLS = 200_000  # a report's largest table (a grid of hundreds of configurations) has a few thousand


@dataclass
class Table:
    """A ``<table>`` as text: its header rows and body rows (row and column spans repeated into every cell they
    cover), and how many leading cells of a body row are ``<th>`` (the index of a pandas table)."""

    header: list[list[str]] = field(default_factory=list)
    rows: list[list[str]] = field(default_factory=list)
    index_width: int = 0
    truncated: bool = False  # past MAX_TABLE_CELLS: laid out only so far

    @property
    def columns(self) -> list[str]:
        """The data columns' names: the non-empty header text above each column past the index, joined."""
        width = max((len(r) for r in self.header + self.rows), default=0)
        names = []
        for j in range(self.index_width, width):
            parts = [r[j] for r in self.header if j < len(r) and r[j]]
            names.append(" ".join(dict.fromkeys(parts)))
        return names

    def records(self) -> list[tuple[tuple[str, ...], dict[str, str]]]:
        """Each body row as (its index labels, {column name: cell text})."""
        cols = self.columns
        return [(tuple(r[:self.index_width]), dict(zip(cols, r[self.index_width:]))) for r in self.rows]


@dataclass
class Output:
    """One output of a cell: its MIME type (``image`` for a figure), text, tables, the ``<strong>`` texts and its
    figures' digests."""

    mime: str
    text: str = ""
    tables: list[Table] = field(default_factory=list)
    strong: list[str] = field(default_factory=list)
    images: list[str] = field(default_factory=list)  # a digest of each inline figure
    html_parts: list[str] = field(default_factory=list)


@dataclass
class Cell:
    """A notebook cell as the page shows it."""

    id: str
    kind: str  # "code" or "markdown"
    tags: tuple[str, ...] = ()
    prompt: str = ""
    source: str = ""
    outputs: list[Output] = field(default_factory=list)

    def label(self, position: int) -> str:
        """How a message names this cell: by its prompt (``cell [3]``), else by ``position`` counted from 1."""
        return f"cell {self.prompt}" if self.prompt else f"cell {position + 1}"


@dataclass
class Page:
    """A parsed report page."""

    cells: list[Cell] = field(default_factory=list)
    styles: list[str] = field(default_factory=list)
    inline_styles: list[str] = field(default_factory=list)
    active: list[str] = field(default_factory=list)
    stray_text: str = ""
    has_input: bool = False

    def cell(self, cell_id: str) -> Cell | None:
        """The cell whose id is ``cell_id``; None when the page has none."""
        return next((c for c in self.cells if c.id == cell_id), None)


def squash(text: str) -> str:
    """Whitespace runs as one space, no space at either end."""
    return " ".join(text.split())


class _Parser(HTMLParser):
    """Builds a :class:`Page`; forgiving, as a browser is: an end tag with no open element is ignored, and one that
    closes an outer element closes those inside it too."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.page = Page()
        self.stack: list[tuple[str, str | None]] = []  # (tag, role) of the open elements
        # how many of each tag and role are open: a hostile page nested a million deep is still read in linear time
        self.open: Counter = Counter()
        self.cell: Cell | None = None
        self.output: Output | None = None
        self.tables: list[tuple[Table, list]] = []  # open tables and their raw rows of (text, header, colspan, rowspan)
        self.td: list | None = None
        self.strong: list[str] | None = None
        self.style: list[str] | None = None
        self.buffers = {"input": [], "prompt": [], "stray": []}
        self.skip = 0  # inside <script>, <title>, ...: text not read

    def handle_starttag(self, tag, attrs):
        attrs = [(k.lower(), v or "") for k, v in attrs]
        self._check_active(tag, attrs)
        a = dict(attrs)
        classes = a.get("class", "").split()
        role = self._role(tag, a, classes)
        if tag not in VOID:
            self.stack.append((tag, role))
            self.open[tag] += 1
            self.open[("role", role)] += 1
        elif tag == "img" and self.output is not None:
            self.output.html_parts.append("[image]")
            src = a.get("src", "")
            self.output.images.append(hashlib.sha256(src.encode()).hexdigest()[:16])

    def _role(self, tag: str, a: dict, classes: list[str]) -> str | None:
        if tag == "style":
            self.style = []
            return "style"
        if tag in ("script", "title", "noscript", "template", "textarea"):
            self.skip += 1
            return "skip"
        if tag == "div" and "jp-Cell" in classes and a.get("id", "").startswith("cell-id="):
            self._close_cell()
            kind = "markdown" if "jp-MarkdownCell" in classes else "code"
            tags = tuple(c[len("celltag_"):] for c in classes if c.startswith("celltag_"))
            self.cell = Cell(id=a["id"][len("cell-id="):], kind=kind, tags=tags)
            return "cell"
        if self.cell is None:
            return None
        if "jp-InputArea-editor" in classes:
            self.page.has_input = True
            return "input"
        if "jp-InputPrompt" in classes:
            return "prompt"
        if "jp-OutputPrompt" in classes:
            return "skip_prompt"
        if "jp-MarkdownOutput" in classes:  # a markdown cell's tags are on its rendered output
            self.cell.tags += tuple(c[len("celltag_"):] for c in classes if c.startswith("celltag_"))
        if self.output is None and ("jp-OutputArea-output" in classes or "jp-MarkdownOutput" in classes):
            mime = "image" if "jp-RenderedImage" in classes else a.get("data-mime-type", "")
            self.output = Output(mime=mime)
            self.cell.outputs.append(self.output)
            return "output"
        if self.output is None:
            return None
        if tag == "table":
            self.tables.append((Table(), []))
            return "table"
        if tag == "tr" and self.tables:
            self.tables[-1][1].append((self.open["thead"] > 0, []))
            return "tr"
        if tag in ("td", "th") and self.tables and self.tables[-1][1]:
            self.td = [[], tag == "th", _span(a.get("colspan")), _span(a.get("rowspan"))]
            self.tables[-1][1][-1][1].append(self.td)
            return "td"
        if tag in ("strong", "b"):
            self.strong = []
            return "strong"
        return None

    def _check_active(self, tag: str, attrs: list[tuple[str, str]]):
        found = self.page.active
        if tag in ACTIVE_TAGS:
            found.append(f"<{tag}> element")
        if tag == "meta" and any(k == "http-equiv" and v.lower() == "refresh" for k, v in attrs):
            found.append("<meta http-equiv=refresh> (navigates away)")
        for k, v in attrs:
            if k.startswith("on"):
                found.append(f"event handler {k}= on <{tag}>")
            elif k in URL_ATTRIBUTES and not (tag == "img" and k == "src" and v.startswith("data:image/")) \
                    and not (tag == "a" and k == "href" and v.startswith("#")):
                found.append(f"<{tag} {k}={v[:60]!r}> (loads or links to something outside the page)")
            elif k == "style":
                self.page.inline_styles.append(squash(v))
                if HIDING_STYLE.search(v):
                    found.append(f"<{tag} style={v[:60]!r}> (hides, moves or adds text)")

    def handle_endtag(self, tag):
        if not self.open[tag]:
            return
        while self.stack:
            t, role = self._pop()
            self._end(role)
            if t == tag:
                break

    def _pop(self) -> tuple[str, str | None]:
        tag, role = self.stack.pop()
        self.open[tag] -= 1
        self.open[("role", role)] -= 1
        return tag, role

    def _end(self, role):
        if role == "style":
            self.page.styles.append(squash("".join(self.style or [])))
            self.style = None
        elif role == "skip":
            self.skip -= 1
        elif role == "cell":
            self._close_cell()
        elif role == "input" and self.cell is not None:
            self.cell.source = "".join(self.buffers["input"]).strip("\n")
            self.buffers["input"] = []
        elif role == "prompt" and self.cell is not None:
            match = re.search(r"\[\s*(\d+)\s*\]", "".join(self.buffers["prompt"]))
            self.cell.prompt = f"[{match.group(1)}]" if match else self.cell.prompt
            self.buffers["prompt"] = []
        elif role == "output" and self.output is not None:
            self.output.text = squash("".join(self.output.html_parts))
            self.output = None
        elif role == "table" and self.tables:
            table, raw = self.tables.pop()
            _fill(table, raw)
            if self.output is not None:
                self.output.tables.append(table)
        elif role == "td":
            self.td = None
            if self.output is not None:
                self.output.html_parts.append(" ")
        elif role == "strong" and self.strong is not None and self.output is not None:
            self.output.strong.append(squash("".join(self.strong)))
            self.strong = None
        elif role == "tr" and self.output is not None:
            self.output.html_parts.append("\n")

    def _close_cell(self):
        if self.cell is not None:
            self.page.cells.append(self.cell)
        self.cell, self.output = None, None

    def handle_data(self, data):
        if self.style is not None:
            self.style.append(data)
            return
        if self.skip:
            return
        if self.open[("role", "input")]:
            self.buffers["input"].append(data)
        elif self.open[("role", "prompt")]:
            self.buffers["prompt"].append(data)
        elif self.output is not None:
            self.output.html_parts.append(data)
            if self.td is not None:
                self.td[0].append(data)
            if self.strong is not None:
                self.strong.append(data)
        elif not self.open[("role", "skip_prompt")]:  # outside the cells, or in a cell outside its code and outputs
            self.buffers["stray"].append(data)

    def close(self):
        super().close()
        while self.stack:
            self._end(self._pop()[1])
        self._close_cell()
        self.page.stray_text = squash("".join(self.buffers["stray"]))


def _span(value: str) -> int:
    try:
        return max(1, min(int(value), 10_000))  # a hostile span of 10**9 must not make a huge grid
    except (TypeError, ValueError):
        return 1


def _fill(table: Table, raw: list) -> None:
    """Lay out the raw rows on a grid: a cell spanning rows or columns fills each position it covers."""
    pending: dict[tuple[int, int], tuple[str, bool]] = {}  # (row, column) filled from a rowspan above
    budget = MAX_TABLE_CELLS
    for i, (in_head, cells) in enumerate(raw):
        row: list[tuple[str, bool]] = []
        for text, header, colspan, rowspan in cells:
            while (i, len(row)) in pending:
                row.append(pending.pop((i, len(row))))
            j, value = len(row), squash("".join(text))
            rowspan = min(rowspan, len(raw) - i)  # a span past the table's last row fills nothing
            budget -= colspan * rowspan
            if budget < 0:  # no report has such a table: keep what was laid out, and say so
                table.truncated = True
                return
            for dj in range(colspan):
                row.append((value, header))
                for di in range(1, rowspan):
                    pending[(i + di, j + dj)] = (value, header)
        while (i, len(row)) in pending:
            row.append(pending.pop((i, len(row))))
        if in_head:
            table.header.append([v for v, _ in row])
            continue
        table.rows.append([v for v, _ in row])
        leading = next((k for k, (_, header) in enumerate(row) if not header), len(row))
        table.index_width = max(table.index_width, leading)


def parse_page(text: str) -> Page:
    """The :class:`Page` of an exported report's HTML (any text: a malformed page is read as far as it goes)."""
    parser = _Parser()
    parser.feed(text)
    parser.close()
    return parser.page
