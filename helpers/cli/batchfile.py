"""A batch file as rows of parameters, and the report folder each row's name gives.

Batch files come from spreadsheets: Excel's "CSV UTF-8" starts with a byte-order mark, a European Excel separates
with ``;``, headers get trailing spaces or capitals, the last lines are empty cells, a quoted cell holds a line
break. Each is read as the instructor meant; what cannot be (another encoding, a column given twice, a row with more
cells than the header) is refused by name, the whole file when no row can be trusted, else the row alone. Names are
any script's (李雷, José, Ólafur); their folders are safe on every file system and never share one folder on a
case-insensitive one (macOS, Windows).
"""

from __future__ import annotations

import csv
import hashlib
import io
import re
import unicodedata
from pathlib import Path

import yaml

from helpers.cli.parameters import TEXT_PARAMETERS, load_yaml_parameters, typed_parameter
from helpers.textfiles import (
    BATCH,
    MAX_BATCH_BYTES,
    PARAMETER_SET,
    InputError,
    check,
    compose,
    construct,
    measure,
    read_text,
)

TEXT_COLUMNS = ("name", "sections", "id")  # the row's own columns: a name "yes", an id "0123" stay text
SEPARATORS = (",", ";", "\t")  # ";" where the decimal mark is a comma (Excel in most of Europe)
DECIMAL_COMMA = re.compile(r"[+-]?\d+,\d+")  # 0,001 in a ";" file: the number 0.001
SEP_LINE = re.compile(r'"?sep=(.)"?')  # Excel's first line naming the separator, e.g. sep=;
MAX_FOLDER_BYTES = 96  # UTF-8 bytes (file systems allow 255): room for a suffix, and paths stay short
# Windows device names, a folder it cannot create or open under any extension (superscript digits included)
WINDOWS_RESERVED = {"CON", "PRN", "AUX", "NUL", *(f"{d}{n}" for d in ("COM", "LPT") for n in "123456789¹²³")}


def read_batch(path: str | Path, declared: dict | None = None) -> list[tuple[int, dict]]:
    """Rows of a batch file as (line number, parameters).

    Every cell is typed by the notebook parameter it fills (``declared``, papermill's inspection): identifiers
    stay text (student id ``0123`` is not the octal 83, ``yes`` not True); an empty CSV cell leaves that
    parameter at its default. A row that cannot be read is ``{"__error__": why}`` (a YAML item that is not a
    mapping: ``{"__invalid__": item}``); a file that cannot be read at all raises SystemExit naming the file, the
    problem and what to do.
    """
    declared = {**(declared or {}), **{k: {"default": "''"} for k in TEXT_COLUMNS}}
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".yaml", ".yml"):
        raise SystemExit(f"error: batch file {path}: use .csv, .yaml or .yml")
    try:
        text = read_text(path, what="batch file", limit=MAX_BATCH_BYTES)
        rows = csv_rows(text, f"batch file {path}", declared) if suffix == ".csv" else yaml_rows(
            text, f"batch file {path}", declared)
    except InputError as exc:
        raise SystemExit(f"error: {exc}") from None
    if not rows:
        raise SystemExit(f"error: batch file {path} has no rows (a header line, then one row per student)")
    return rows


def separator(header_line: str) -> str:
    """The separator of a CSV file, from its header line: the one of ``,``, ``;``, tab found most outside quotes."""
    outside = "".join(part for i, part in enumerate(header_line.split('"')) if i % 2 == 0)
    counts = {s: outside.count(s) for s in SEPARATORS}
    best = max(SEPARATORS, key=lambda s: counts[s])  # ties go to the comma (first)
    return best if counts[best] else ","


def column_names(header: list[str], declared: dict, source: str) -> list[str]:
    """Header cells as parameter names: invisible characters and spaces around them dropped, ``Name`` read as
    ``name`` when that is a parameter; a column given twice is refused, naming both."""
    names = []
    for i, cell in enumerate(header, 1):
        name = "".join(ch for ch in cell if unicodedata.category(ch) != "Cf").strip()
        name = name.lower() if name not in declared and name.lower() in declared else name
        if name and name in names:
            raise InputError(f"{source}: column {name!r} appears twice in the header (columns {names.index(name) + 1} "
                             f"and {i}); keep one")
        names.append(name)
    return names


def csv_rows(text: str, source: str, declared: dict) -> list[tuple[int, dict]]:
    """The rows of a CSV batch file's text (see :func:`read_batch`); a row of empty cells is skipped."""
    first = re.split(r"\r\n|\r|\n", text, maxsplit=1)[0]  # old Mac Excel ends lines with CR alone
    hint = SEP_LINE.fullmatch(first.strip())
    sep = hint[1] if hint else separator(first)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=sep, strict=True)
    try:
        if hint:
            next(reader)
        names = column_names(next(reader, []), declared, source)
        rows = []
        while True:
            line = reader.line_num + 1  # where the row starts: a quoted cell may hold line breaks
            cells = next(reader, None)
            if cells is None:
                return rows
            if any(c.strip() for c in cells):
                rows.append((line, csv_row(names, cells, sep, declared, typed_parameter)))
    except csv.Error as exc:  # an unbalanced quote would swallow the rows after it
        raise InputError(f"{source}: line {reader.line_num}: {exc}; a value holding {sep!r}, a quote or a line "
                         "break is written in double quotes, a quote in it doubled") from None


def csv_row(names: list[str], cells: list[str], sep: str, declared: dict, typed) -> dict:
    """One CSV row's parameters, or ``{"__error__": why}``."""
    extra = [c for c in cells[len(names):] if c.strip()]
    if extra:
        return {"__error__": f"{len(cells)} cells but the header has {len(names)} columns (a value holding "
                             f"{sep!r} must be in double quotes): {extra[0][:40]!r} has no column"}
    values = {}
    for name, cell in zip(names, cells):
        if not cell.strip():
            continue
        if not name:
            return {"__error__": f"{cell[:40]!r} is in a column without a name in the header"}
        if len(cell) > PARAMETER_SET.chars:
            return {"__error__": f"column {name}: {len(cell):,} characters; at most {PARAMETER_SET.chars:,}"}
        if sep == ";" and name not in TEXT_PARAMETERS and DECIMAL_COMMA.fullmatch(cell.strip()):
            cell = cell.replace(",", ".")
        try:
            values[name] = typed(name, cell, declared)
        except InputError as exc:
            return {"__error__": f"column {name}: {exc}"}
    return values


def yaml_rows(text: str, source: str, declared: dict) -> list[tuple[int, dict]]:
    """The rows of a YAML batch file's text: a list of mappings, or ``{rows: [...]}``; each row within
    :data:`helpers.textfiles.PARAMETER_SET` and the rows together within :data:`helpers.textfiles.BATCH`, aliases
    expanded, before any is built."""
    node = compose(text, source)
    if isinstance(node, yaml.MappingNode):  # {rows: [...]}
        node = next((v for k, v in node.value if k.value == "rows"), None)
    if not isinstance(node, yaml.SequenceNode):
        raise InputError(f"{source}: expected a list of parameter sets (one per student)")
    sizes: dict = {}
    rows, nodes, chars = [], 0, 0
    for item in node.value:
        line = item.start_mark.line + 1
        try:
            measure(item, f"line {line}", sizes)
            check(item, f"line {line}", PARAMETER_SET, sizes)
        except InputError as exc:  # this row alone: the others are read
            rows.append((line, {"__error__": str(exc).removeprefix(f"line {line}: ")}))
            continue
        nodes, chars = nodes + sizes[id(item)][0], chars + sizes[id(item)][1]
        if nodes > BATCH.nodes or chars > BATCH.chars:
            raise InputError(f"{source}: YAML aliases expand the rows to more than {BATCH.nodes:,} nodes or "
                             f"{BATCH.chars:,} characters (at line {line}); refused before any row is built")
        try:
            if isinstance(item, yaml.MappingNode):
                rows.append((line, load_yaml_parameters(item, declared, f"line {line}")))
            else:
                rows.append((line, {"__invalid__": construct(item)}))
        except InputError as exc:
            rows.append((line, {"__error__": str(exc).removeprefix(f"line {line}: ")}))
    return rows


def folder_name(text) -> str:
    """The report folder of a row named ``text``; "" when the name has no letter or digit.

    Letters, marks and digits of every script are kept (李雷, José, Ólafur), as are symbols such as emoji; every run
    of anything else (spaces, punctuation, control characters) becomes one ``_``, and invisible characters
    (zero-width spaces, direction overrides) are dropped. The name is NFC, so José typed either way is one folder.
    So a folder never holds ``/``, ``..``, NUL or a control character, nor starts with a dot or dash; a Windows
    device name (``CON``, ``nul``, ``COM1``) gets a trailing ``_``; past :data:`MAX_FOLDER_BYTES` the name is cut and
    ends with a hash of the whole, so two long names keep two folders.
    """
    text = unicodedata.normalize("NFC", str(text))
    out: list[str] = []
    for ch in text:
        kind = unicodedata.category(ch)
        if kind == "Cf":
            continue
        if kind[0] in "LMN" or kind == "So":
            out.append(ch)
        elif out and out[-1] != "_":
            out.append("_")
    name = "".join(out).strip("_")
    if len(name.encode()) > MAX_FOLDER_BYTES:
        digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:10]
        while len(name.encode()) > MAX_FOLDER_BYTES - len(digest) - 1:
            name = name[:-1]
        name = f"{name.rstrip('_')}_{digest}"
    return f"{name}_" if name.upper() in WINDOWS_RESERVED else name


def folder_key(folder: str) -> str:
    """What a case-insensitive, normalisation-insensitive file system (macOS, Windows) sees of a folder name: two
    rows whose keys are equal would write one folder."""
    return unicodedata.normalize("NFC", unicodedata.normalize("NFD", folder).casefold())
