"""Does the page a grader reads say what ``metrics.json`` says? A parsed report (:mod:`helpers.cli.verify_html`) is
compared with it here, and with the rerun's page in :mod:`helpers.cli.verify_compare`:

* with ``metrics.json``: the headline (best configuration, test accuracy and loss), the latency table, the
  classification report (the per-class table), every comparison table's rows, the injected parameters and the
  appendix's parameters and fingerprint. Each disagreement names the number, where the page shows it and what
  ``metrics.json`` holds.
* with the rerun's own page (the toolkit's notebook run again, exported by the toolkit): every cell's outputs,
  word by word and number by number, apart from what honestly changes from run to run (timings, dates, paths, the
  cache's notes, the appendix, which the first comparison covers). A cell, a table row or a sentence edited,
  added or removed shows up here even where the first comparison does not look.
"""

from __future__ import annotations

import ast
import math
import re

from helpers.cli.verify_html import Page
from helpers.engine.metrics import latency_frame

HEADLINE = re.compile(r"test accuracy (?P<acc>[-\d.]+%), test loss (?P<loss>[-\d.naif]+)")
# table column -> (metrics key, scale, decimals shown) as helpers.engine.experiment.results_table writes them
GRID_COLUMNS = {"train loss": ("train_loss", 1, 4), "val loss": ("val_loss", 1, 4), "test loss": ("test_loss", 1, 4),
                "train acc %": ("train_acc", 100, 2), "val acc %": ("val_acc", 100, 2),
                "test acc %": ("test_acc", 100, 2), "parameters": ("params", 1, 0),
                "best epoch (val loss)": ("best_epoch", 1, 0)}
MAX_GRID_ROWS = 5000  # configurations a page's comparison tables show at most (a course grid has tens)
NUMBER = re.compile(r"[-+]?\d[\d,]*(?:\.\d+)?(?:e[-+]?\d+)?%?")


def shown_value(text: str) -> float | None:
    """The number a table cell or token shows ("1,234", "93.50%", "0.27 ms per image"), else None."""
    match = NUMBER.search(text or "")
    if not match:
        return None
    try:
        return float(match.group(0).replace(",", "").rstrip("%"))
    except ValueError:
        return None


def _number(obj) -> float | None:
    return float(obj) if isinstance(obj, (int, float)) and not isinstance(obj, bool) else None


def cell_place(name: str, page: Page, cell_index: int) -> str:
    """Where a finding is: the report's ``name`` and the cell's label, e.g. ``Ada/mlp cell [4]``."""
    return f"{name} {page.cells[cell_index].label(cell_index)}"


def _outputs(page: Page, mime: str | None = None):
    for i, cell in enumerate(page.cells):
        for out in cell.outputs:
            if cell.kind == "code" and (mime is None or out.mime == mime):
                yield i, out


def headline_problems(page: Page, metrics: dict, name: str) -> list[str]:
    """Each "NAME: test accuracy A%, test loss L" on the page against ``best`` of metrics.json."""
    best = metrics.get("best") if isinstance(metrics.get("best"), dict) else {}
    test = best.get("test") if isinstance(best.get("test"), dict) else {}
    acc, loss = _number(test.get("accuracy")), _number(test.get("loss"))
    if acc is None:
        return []
    problems, found = [], 0
    for i, out in _outputs(page, "text/markdown"):
        # every one: a headline-like author name before the real one must not stand in for it
        for match in HEADLINE.finditer(out.text):
            found += 1
            where = f"{cell_place(name, page, i)}, headline"
            if match["acc"] != f"{acc:.2%}":
                problems.append(f"{where}: test accuracy {match['acc']}; metrics.json best.test.accuracy = {acc!r} "
                                f"({acc:.2%})")
            if loss is not None and match["loss"] != f"{loss:.4f}":
                problems.append(f"{where}: test loss {match['loss']}; metrics.json best.test.loss = {loss!r}")
            before = out.text[:match.start()]
            shown = next((s for s in out.strong if s and before.startswith(s)), None)
            if shown is not None and shown != best.get("name"):
                problems.append(f"{where}: best configuration {shown!r}; metrics.json best.name = "
                                f"{best.get('name')!r}")
    if found:
        return problems
    return [f"{name}: no headline 'test accuracy …, test loss …' found; metrics.json best.test.accuracy = {acc!r} "
            "(the page does not show the result it records)"]


def latency_problems(page: Page, metrics: dict, name: str) -> list[str]:
    """The latency table against ``best.latency``, formatted as the toolkit formats it."""
    latency = (metrics.get("best") or {}).get("latency") if isinstance(metrics.get("best"), dict) else None
    if not isinstance(latency, dict):
        return []
    try:
        expected = {k: str(v) for k, v in latency_frame(latency)["value"].items()}
    except (KeyError, TypeError, ValueError):
        return [f"{name}: metrics.json best.latency is malformed ({sorted(latency)[:8]})"]
    for i, out in _outputs(page, "text/html"):
        for table in out.tables:
            rows = {labels[0]: cells.get("value", "") for labels, cells in table.records() if labels}
            if "latency, batch of 1" not in rows:
                continue
            problems = [f"{cell_place(name, page, i)}, latency table, {row!r}: shows {rows.get(row)!r}; metrics.json "
                        f"best.latency gives {value!r}" for row, value in expected.items() if rows.get(row) != value]
            extra = sorted(set(rows) - set(expected))
            return problems + ([f"{cell_place(name, page, i)}, latency table: rows {extra} that metrics.json does not "
                                "have"] if extra else [])
    return [f"{name}: no latency table found; metrics.json best.latency.ms_per_image_batch1 = "
            f"{latency.get('ms_per_image_batch1')!r}"]


def report_problems(page: Page, metrics: dict, name: str) -> list[str]:
    """The classification report (the per-class table) against ``best.test.classification_report``."""
    best = metrics.get("best") if isinstance(metrics.get("best"), dict) else {}
    report = (best.get("test") or {}).get("classification_report") if isinstance(best.get("test"), dict) else None
    if not isinstance(report, dict):
        return []
    for i, out in _outputs(page, "text/html"):
        for table in out.tables:
            if not {"precision", "recall", "f1-score"} <= set(table.columns):
                continue
            where, problems = f"{cell_place(name, page, i)}, classification report", []
            shown = {labels[0]: cells for labels, cells in table.records() if labels}
            if set(shown) != set(report):
                problems.append(f"{where}: rows {sorted(shown)}; metrics.json has {sorted(report)}")
            for label in sorted(set(shown) & set(report)):
                row = report[label] if isinstance(report[label], dict) else {}
                for column, text in shown[label].items():
                    value, want = shown_value(text), _number(row.get(column))
                    if want is not None and (value is None or abs(value - round(want, 3)) > 1e-9):
                        problems.append(f"{where}, {label} {column}: shows {text!r}; metrics.json "
                                        f"best.test.classification_report[{label!r}][{column!r}] = {want!r}")
            return problems
    return [f"{name}: no classification report (per-class table) found; metrics.json has one for {len(report)} rows"]


def _candidates(obj, path: str = "") -> list[tuple[str, dict]]:
    """Every configuration record in metrics.json (a dict with val_acc and val_loss), with where it is."""
    found = []
    if isinstance(obj, dict):
        if "val_acc" in obj and "val_loss" in obj:
            found.append((path, obj))
        for k, v in obj.items():
            if k != "histories":
                found += _candidates(v, f"{path}.{k}" if path else str(k))
    elif isinstance(obj, list):
        for j, v in enumerate(obj):
            found += _candidates(v, f"{path}[{j}]")
    return found


def _cell_agrees(text: str, record: dict, column: str) -> bool | None:
    """Whether a grid cell shows the record's value (None: the record has no such value to compare)."""
    key, scale, digits = GRID_COLUMNS[column]
    want = _number(record.get(key))
    if want is None:
        return None
    mean, _, std = text.partition("±")
    value = shown_value(mean)
    if value is None:
        return False
    close = abs(value - want * scale) <= 0.5 * 10 ** -digits + 1e-9 * max(1.0, abs(want * scale))
    spread = _number(record.get(f"{key}_std"))
    if std and spread is not None:
        close &= (shown_value(std) is not None and abs(shown_value(std) - spread * scale) <= 0.5 * 10 ** -digits + 1e-9)
    return close


def grid_problems(page: Page, metrics: dict, name: str) -> list[str]:
    """Every row of every comparison table (a "val acc %" column) must be a configuration metrics.json records,
    with the same numbers."""
    records = _candidates(metrics)[:MAX_GRID_ROWS]
    problems, budget = [], MAX_GRID_ROWS
    for i, out in _outputs(page, "text/html"):
        for t, table in enumerate(out.tables):
            columns = [c for c in table.columns if c in GRID_COLUMNS]
            if "val acc %" not in table.columns:
                continue
            budget -= len(table.rows)
            if budget < 0:
                return problems + [f"{name}: more comparison-table rows than a report has ({MAX_GRID_ROWS:,})"]
            for labels, cells in table.records():
                checks = [[_cell_agrees(cells[c], r, c) for c in columns] for _, r in records]
                if any(all(v is not False for v in row) and any(v for v in row) for row in checks):
                    continue
                named = [k for k, (_, r) in enumerate(records)
                         if all(str(label).lower() in str(r.get("name", "")).lower() for label in labels if label)]
                k = named[0] if named else max(range(len(records)), key=lambda n: sum(bool(v) for v in checks[n]),
                                               default=None)
                shown = ", ".join(f"{c} {cells[c]}" for c in columns)
                near = "" if k is None else (f"; the nearest, metrics.json {records[k][0]} "
                                             f"({records[k][1].get('name', '?')}), has " + ", ".join(
                                                 f"{c} {_shown(records[k][1], c)}" for c, v in zip(columns, checks[k])
                                                 if v is False))
                problems.append(f"{cell_place(name, page, i)}, table {t + 1}, row {' / '.join(labels) or '?'}: {shown} "
                                f"is no configuration metrics.json records{near}")
    return problems


def _shown(record: dict, column: str) -> str:
    key, scale, digits = GRID_COLUMNS[column]
    value = _number(record.get(key))
    return "–" if value is None else f"{value * scale:.{digits}f}"


def parameter_problems(page: Page, metrics: dict, name: str) -> list[str]:
    """The injected-parameters cell and the appendix's "parameter X" rows against ``parameters``; the appendix's
    fingerprint against ``fingerprint.short``."""
    params = metrics.get("parameters") if isinstance(metrics.get("parameters"), dict) else {}
    problems = []
    for i, cell in enumerate(page.cells):
        if "injected-parameters" in cell.tags:
            problems += _injected(cell.source, params, f"{cell_place(name, page, i)} (injected parameters)")
    fp = metrics.get("fingerprint") if isinstance(metrics.get("fingerprint"), dict) else {}
    for i, out in _outputs(page, "text/html"):
        for table in out.tables:
            rows = {labels[0]: cells.get("value", "") for labels, cells in table.records() if labels}
            if "fingerprint" not in rows and not any(k.startswith("parameter ") for k in rows):
                continue
            where = f"{cell_place(name, page, i)} (appendix)"
            if fp.get("short") and not rows.get("fingerprint", "").startswith(str(fp["short"])):
                problems.append(f"{where}: fingerprint {rows.get('fingerprint', '(none)')[:40]!r}; metrics.json "
                                f"fingerprint.short = {fp['short']!r}")
            for key, text in rows.items():
                if key.startswith("parameter ") and key[10:] in params and key[10:] != "output_dir" \
                        and text != repr(params[key[10:]]):
                    problems.append(f"{where}: {key} = {text[:60]}; metrics.json has {params[key[10:]]!r:.60}")
    return problems


def _injected(source: str, params: dict, where: str) -> list[str]:
    if len(source) > 2**20:  # papermill's cell of a report's parameters is a few hundred characters
        return [f"{where}: {len(source):,} characters, not the cell papermill writes"]
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return [f"{where}: not the assignments papermill writes"]
    problems = []
    for node in tree.body:
        if not (isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)):
            problems.append(f"{where}: a statement that is not 'name = value' (line {node.lineno})")
            continue
        key = node.targets[0].id
        try:
            value = ast.literal_eval(node.value)
        except (ValueError, TypeError, SyntaxError, RecursionError, MemoryError):
            problems.append(f"{where}: {key} is not a plain value")
            continue
        if key != "output_dir" and key in params and not _same(value, params[key]):
            problems.append(f"{where}: {key} = {value!r:.60}; metrics.json parameters.{key} = {params[key]!r:.60}")
    return problems


def _same(a, b) -> bool:
    if isinstance(a, tuple):
        a = list(a)
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return a == b


def page_problems(page: Page, metrics: dict, name: str) -> list[str]:
    """Everything the page shows that metrics.json contradicts, and anything active in it (script, frames...)."""
    problems = [f"{name} carries {what}: a browser may show more than the text verified here"
                for what in list(dict.fromkeys(page.active))[:5]]
    if len(set(page.active)) > 5:
        problems.append(f"{name}: ... and {len(set(page.active)) - 5} more active or hiding elements")
    for check in (headline_problems, latency_problems, report_problems, grid_problems, parameter_problems):
        problems += check(page, metrics, name)
    return problems
