"""The class summary of a batch: ``summary.csv``, figures of the class's results, and ``index.html``.

One row per student: name, id, the parameters assigned to them (those that differ between rows), each section's
headline (test accuracy, best configuration, from its ``metrics.json``), status with the actual error, wall time
and links to the reports. The page works offline (CSS and the few lines of JS that sort the table are inline).
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import math
import re
import time
from pathlib import Path

import numpy as np
import pandas as pd

from helpers.atomic import atomic_path, write_text
from helpers.paths import NOTEBOOKS as SECTIONS  # section -> (notebook file, title)
from helpers.reporting.metrics_file import read_metrics

IDENTITY = ("name", "author_name", "author_id")  # who the row is, not what was assigned
FIGURE_FORMATS = ("png", "svg")
# a cell a spreadsheet would run as a formula (OWASP "CSV injection"): =HYPERLINK(...), =cmd|' /C calc'!A0, @SUM(...)
FORMULA_START = ("=", "+", "-", "@", "\t", "\r", "\n")
NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")
# a spreadsheet set to another separator (";" in most of Europe) starts a cell after any ",", ";" or tab in a cell
INNER_FORMULA = re.compile(r"([,;\t]\s*)(?=[=@]|[+-](?![\d.]))")


def spreadsheet_safe(value):
    """A ``summary.csv`` cell no spreadsheet runs: text starting with ``=``, ``+``, ``-``, ``@``, a tab or a line
    break gets a leading ``'`` (shown as text, the quote hidden), and so does every part of it after a ``,``, ``;``
    or tab that would start a formula where the spreadsheet splits cells there (``Ada;=1+1``). Numbers stay numbers,
    ``-0.5`` and ``"-3"`` included (a number is not a formula), as do lists of them (``[-0.5, -1]``)."""
    if not isinstance(value, str):
        return value
    value = INNER_FORMULA.sub(r"\1'", value)
    return "'" + value if value.startswith(FORMULA_START) and not NUMBER.fullmatch(value) else value


def shown(value) -> str:
    """A parameter value as one cell: text as is, anything else as compact JSON (``["none"]``)."""
    return value if isinstance(value, str) else json.dumps(value, separators=(", ", ": "))


def differing_parameters(results: list[dict]) -> list[str]:
    """Parameters whose value differs between rows (a row without one has the notebook's default), in the order
    they first appear; identity columns (name, id) aside. Rows refused before running (``bad row``) do not count:
    what they hold may be anything."""
    ran = [r for r in results if r["status"] != "bad row"] or results
    names: list[str] = []
    for r in ran:
        names += [k for k in r.get("params", {}) if k not in names and k not in IDENTITY]
    return [k for k in names if len({shown(r.get("params", {}).get(k, "")) for r in ran}) > 1]


def sections_of(results: list[dict]) -> list[str]:
    """The sections any batch row ran, in the toolkit's section order."""
    used = {s for r in results for s in r.get("sections", [])}
    return [s for s in SECTIONS if s in used]


def row_seconds(r: dict, folder: Path) -> float | None:
    """The row's wall time: as measured when it ran, else (a row complete from an earlier run) its sections'."""
    if r.get("seconds") is not None:
        return round(r["seconds"], 1)
    run = folder / "run.json"
    return round(sum(s.get("seconds", 0) for s in json.loads(run.read_text())), 1) if run.exists() else None


def class_table(output_dir: Path, results: list[dict]) -> pd.DataFrame:
    """One row per batch row: identity, varied parameters, each section's headline, status, time and links
    (paths relative to ``output_dir``, only to files that exist)."""
    output_dir = Path(output_dir)
    varied, sections = differing_parameters(results), sections_of(results)
    records = []
    for r in results:
        params = r.get("params", {})
        folder = output_dir / r["name"] if r.get("name") else None
        rec = {"line": r["line"], "name": params.get("author_name") or params.get("name") or r.get("name", ""),
               "id": params.get("author_id", ""), **{k: shown(params.get(k, "")) for k in varied}}
        for s in sections:
            metrics = read_metrics(folder / s) if folder and s in r.get("sections", []) else {}
            test = (metrics.get("best") or {}).get("test") or {}
            rec[f"{s} test accuracy"] = test.get("accuracy")
            rec[f"{s} best"] = (metrics.get("best") or {}).get("name", "")
        rec.update(status=r["status"], error=r.get("error") or "", wall_seconds=row_seconds(r, folder)
                   if folder else None, attempts=r.get("attempts"), worker=r.get("worker", ""))
        rec["report"] = f"{r['name']}/index.html" if folder and (folder / "index.html").exists() else ""
        for s in sections:
            for kind in ("html", "pdf"):
                rel = f"{r['name']}/{s}/{s}.{kind}" if folder else ""
                rec[f"{s} {kind}"] = rel if folder and (output_dir / rel).exists() else ""
        records.append(rec)
    table = pd.DataFrame.from_records(records)
    # a format no row was exported to (PDF with --formats html) would be a column of blanks
    table = table.drop(columns=[c for c in table.columns if c.endswith((" html", " pdf")) and not table[c].any()])
    if "attempts" in table:
        table["attempts"] = table["attempts"].astype("Int64")  # a count, not 1.0 (rows never started have none)
    return table


def accuracy_columns(table: pd.DataFrame) -> dict[str, str]:
    """Section -> its test-accuracy column, for the sections where some row has a number."""
    return {c.removesuffix(" test accuracy"): c for c in table.columns
            if c.endswith(" test accuracy") and table[c].notna().any()}


def accuracy_bins(values: pd.Series) -> list[float]:
    """Histogram edges in percent on a round step (1, 2, 5, 10 points) giving at most 12 bins."""
    low, high = float(values.min()), float(values.max())
    step = next((s for s in (1, 2, 5, 10) if (high - low) / s <= 12), 20)
    start, stop = math.floor(low / step) * step, math.floor(high / step) * step + step
    return [start + i * step for i in range(int(round((stop - start) / step)) + 1)]


def plot_accuracy_distribution(table: pd.DataFrame):
    """Histogram of each section's test accuracy across the class (percent), one panel per section."""
    # lazy on purpose: matplotlib takes a second to import, and only the class figures need it
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    cols = accuracy_columns(table)
    fig = Figure(figsize=(4.6 * max(1, len(cols)), 3.4), layout="constrained")
    axes = fig.subplots(1, max(1, len(cols)), squeeze=False)[0]
    for ax, (section, col) in zip(axes, cols.items()):
        values = table[col].dropna() * 100
        ax.hist(values, bins=accuracy_bins(values), color="#4c78a8", edgecolor="white")
        ax.axvline(values.median(), color="#e45756", linestyle="--", label=f"median {values.median():.1f}%")
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))  # students come whole
        ax.set(title=f"{section} ({len(values)} students)", xlabel="test accuracy (%)", ylabel="students")
        ax.legend(loc="best", fontsize=8, framealpha=0.9)
    fig.suptitle("Distribution of test accuracy across the class")
    return fig


def accuracy_by_value(table: pd.DataFrame, parameter: str, column: str) -> pd.DataFrame:
    """Test accuracy grouped by the value of one assigned parameter: value, students, mean, min, max."""
    data = table[[parameter, column]].dropna()
    grouped = data.groupby(parameter)[column]
    return pd.DataFrame({"students": grouped.size(), "mean": grouped.mean(), "min": grouped.min(),
                         "max": grouped.max()}).reset_index()


def plot_accuracy_by_parameter(table: pd.DataFrame, parameter: str):
    """Test accuracy by the value of ``parameter``, one panel per section: each student a dot, each value's mean a
    bar across its dots (the axis spans the class's results, so small differences show)."""
    # lazy on purpose: matplotlib, as in plot_accuracy_distribution
    from matplotlib.figure import Figure

    cols = accuracy_columns(table)
    fig = Figure(figsize=(4.6 * max(1, len(cols)), 3.4), layout="constrained")
    axes = fig.subplots(1, max(1, len(cols)), squeeze=False)[0]
    for ax, (section, col) in zip(axes, cols.items()):
        groups = accuracy_by_value(table, parameter, col)
        for i, value in enumerate(groups[parameter]):
            ys = (table.loc[table[parameter] == value, col].dropna() * 100).to_numpy()
            xs = i + np.linspace(-0.2, 0.2, len(ys)) if len(ys) > 1 else np.full(len(ys), float(i))  # side by side
            ax.plot(xs, ys, "o", color="#4c78a8", alpha=0.8, label="student" if i == 0 else None)
            ax.hlines(ys.mean(), i - 0.35, i + 0.35, color="#e45756", linewidth=2, label="mean" if i == 0 else None)
        labels = [f"{v}\n({n})" for v, n in zip(groups[parameter], groups["students"])]
        crowded = sum(len(str(v)) for v in groups[parameter]) > 30  # long values would run into each other
        ax.set_xticks(range(len(groups)), labels, rotation=25 if crowded else 0, ha="right" if crowded else "center")
        ax.set_xlim(-0.6, len(groups) - 0.4)
        ax.margins(y=0.15)
        ax.set(title=f"{section}: test accuracy by {parameter}", xlabel=f"{parameter} (students)",
               ylabel="test accuracy (%)")
        ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8)  # beside the panel: never on a dot
    return fig


def save_figure_files(fig, folder: Path, stem: str) -> list[Path]:
    """Write ``fig`` as ``folder/stem.<ext>`` in each of :data:`FIGURE_FORMATS`, each file whole or not at all;
    return the paths written, in that order."""
    paths = [folder / f"{stem}.{ext}" for ext in FIGURE_FORMATS]
    for path, ext in zip(paths, FIGURE_FORMATS):
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=110, format=ext)
    return paths


def class_figures(output_dir: Path, table: pd.DataFrame) -> list[dict]:
    """Draw and save the class figures; return [{title, png, svg}] (file names in ``output_dir``)."""
    if not accuracy_columns(table):
        return []
    figures = [("accuracy_distribution", "Test accuracy across the class", plot_accuracy_distribution(table))]
    for parameter in [c for c in table.columns if c in varied_columns(table)]:
        if table[parameter].nunique() > 1:
            figures.append((f"accuracy_by_{re.sub(r'[^A-Za-z0-9]+', '_', parameter)}",
                            f"Test accuracy by {parameter}", plot_accuracy_by_parameter(table, parameter)))
    out = []
    for stem, title, fig in figures:
        png, svg = save_figure_files(fig, Path(output_dir), stem)
        out.append({"title": title, "png": png.name, "svg": svg.name})
    return out


def varied_columns(table: pd.DataFrame) -> list[str]:
    """The class table's parameter columns: all but the row's identity, status, timing, links and results."""
    fixed = {"line", "name", "id", "status", "error", "wall_seconds", "attempts", "worker", "report"}
    return [c for c in table.columns if c not in fixed and not re.search(r" (test accuracy|best|html|pdf)$", c)]


SORT_JS = """
document.querySelectorAll('table.sortable th').forEach((th, col) => th.addEventListener('click', () => {
  const body = th.closest('table').tBodies[0], asc = th.dataset.dir !== 'asc';
  th.closest('tr').querySelectorAll('th').forEach(h => delete h.dataset.dir);
  th.dataset.dir = asc ? 'asc' : 'desc';
  const key = tr => { const td = tr.cells[col]; return td.dataset.v !== undefined ? td.dataset.v : td.textContent; };
  const rows = Array.from(body.rows).sort((a, b) => {
    const x = key(a), y = key(b), nx = parseFloat(x), ny = parseFloat(y);
    if (x === '' || y === '') return (x === '') - (y === '');  // blanks last, either way
    const c = (!isNaN(nx) && !isNaN(ny)) ? nx - ny : x.localeCompare(y, undefined, {numeric: true});
    return asc ? c : -c;
  });
  rows.forEach(r => body.appendChild(r));
}));
"""

CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1400px; padding: 0 1em; color: #222; }
table { border-collapse: collapse; font-size: 14px; } th, td { border-bottom: 1px solid #ddd; padding: 5px 8px;
text-align: left; vertical-align: top; } th { background: #f0f0f0; cursor: pointer; user-select: none;
white-space: nowrap; position: sticky; top: 0; } th:hover { background: #e2e8f0; }
th[data-dir=asc]::after { content: " \\25B2"; } th[data-dir=desc]::after { content: " \\25BC"; }
td.num { text-align: right; font-variant-numeric: tabular-nums; } .ok { color: #176c2e; font-weight: bold; }
.bad { color: #b00020; font-weight: bold; } td.err { color: #555; font-size: 12px; min-width: 16em; max-width: 28em; }
.scroll { overflow-x: auto; } figure { display: inline-block; margin: 0 1em 1em 0; } figure img { max-width: 100%; }
figcaption { font-size: 13px; color: #555; } .stats { color: #444; }
"""


def cell(column: str, value) -> str:
    """One ``<td>``: numbers keep a sortable ``data-v``, links link, failures are marked."""
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return "<td data-v=''>–</td>"
    if column.endswith("test accuracy"):
        return f"<td class='num' data-v='{value:.6f}'>{value:.2%}</td>"
    if column == "wall_seconds":
        return f"<td class='num' data-v='{value}'>{value:.0f} s</td>"
    if column == "report" or column.endswith((" html", " pdf")):
        label = "report" if column == "report" else column.rsplit(" ", 1)[1].upper()
        return f"<td><a href='{html.escape(value)}'>{label}</a></td>" if value else "<td data-v=''></td>"
    if column == "status":
        return f"<td class='{'ok' if value == 'ok' else 'bad'}'>{html.escape(value)}</td>"
    if column == "error":
        return f"<td class='err'>{html.escape(value)}</td>"
    return f"<td>{html.escape(str(value))}</td>"


def class_page_policy() -> str:
    """The class page's Content-Security-Policy: its own figures and inline styles, and no script but its own sort
    script (allowed by its digest), so a value that escaped escaping still could not run or load anything."""
    digest = base64.b64encode(hashlib.sha256(SORT_JS.encode()).digest()).decode()
    return (f"default-src 'none'; img-src 'self' data:; style-src 'unsafe-inline'; script-src 'sha256-{digest}'; "
            "base-uri 'none'; form-action 'none'")


def class_page(table: pd.DataFrame, figures: list[dict], *, source: str) -> str:
    """The class's ``index.html``: counts, the figures, the sortable table."""
    head = "".join(f"<th title='click to sort'>{html.escape(c.replace('_', ' '))}</th>" for c in table.columns)
    body = "".join("<tr>" + "".join(cell(c, v) for c, v in zip(table.columns, row)) + "</tr>\n"
                   for row in table.itertuples(index=False))
    ok = int((table["status"] == "ok").sum()) if len(table) else 0
    stats = []
    for section, col in accuracy_columns(table).items():
        acc = table[col].dropna()
        stats.append(f"{html.escape(section)}: median test accuracy {acc.median():.2%} "
                     f"(range {acc.min():.2%} – {acc.max():.2%})")
    figs = "".join(f"<figure><a href='{f['svg']}'><img src='{f['png']}' alt='{html.escape(f['title'])}'></a>"
                   f"<figcaption>{html.escape(f['title'])} (<a href='{f['svg']}'>SVG</a>, "
                   f"<a href='{f['png']}'>PNG</a>)</figcaption></figure>" for f in figures)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta http-equiv="Content-Security-Policy" content="{class_page_policy()}">
<meta charset="utf-8"><title>Class summary: {html.escape(source)}</title>
<style>{CSS}</style></head><body>
<h1>Class summary: {html.escape(source)}</h1>
<p class="stats">{ok} of {len(table)} reports ok. {'; '.join(stats)}. Generated {time.strftime('%Y-%m-%d %H:%M')};
the same table as <a href="summary.csv">summary.csv</a>. Click a column header to sort.</p>
{figs}
<div class="scroll"><table class="sortable"><thead><tr>{head}</tr></thead><tbody>
{body}</tbody></table></div>
<script>{SORT_JS}</script></body></html>
"""


def write_summary(output_dir: Path, results: list[dict], *, source: str) -> dict[str, Path]:
    """Write ``summary.csv``, the figures and ``index.html`` into the batch folder; return their paths."""
    output_dir = Path(output_dir)
    table = class_table(output_dir, results)
    csv_path = output_dir / "summary.csv"
    # every cell and header made safe for a spreadsheet (numeric columns are numbers already); CRLF line ends, as
    # RFC 4180 has them, so that a cell holding a lone CR is quoted too and cannot start a row of its own
    safe = table.rename(columns=spreadsheet_safe)
    for i, dtype in enumerate(safe.dtypes):
        if not pd.api.types.is_numeric_dtype(dtype):
            safe.isetitem(i, safe.iloc[:, i].map(spreadsheet_safe))
    write_text(csv_path, safe.to_csv(index=False, lineterminator="\r\n"))
    figures = class_figures(output_dir, table)
    page = output_dir / "index.html"
    write_text(page, class_page(table, figures, source=source))
    return {"csv": csv_path, "html": page, "figures": [output_dir / f["png"] for f in figures]}
