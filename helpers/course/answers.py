"""A student's answers in a course notebook: the question and answer cells, "unanswered", and the citations that
fill an answer with the run's own numbers.

A question cell is a markdown cell tagged ``question`` whose metadata names the question (``{"question": {"id":
"q1", "points": 4}}``); the student's answer is the markdown cell tagged ``answer`` with the same question id. An
answer is unanswered when its source, stripped, is empty or :data:`ANSWER_PLACEHOLDER`.

An answer may cite the run's numbers: ``{mlp.best.test.accuracy:.2%}`` is a dotted path whose first part is a
section, looked up in that section's ``metrics.json`` (list items by ``[i]`` or by a configuration's name,
``{mlp.configurations[adam-none].val_acc:.1%}``), with an optional format spec; ``{{`` and ``}}`` are literal
braces. The notebook keeps the template; the report shows the number (:func:`report_cells`, at export), so the
prose never disagrees with the run it sits in. A name that does not exist is a :class:`CitationError` naming it
and the closest names that do.
"""

from __future__ import annotations

import difflib
import json
import re
from pathlib import Path

import nbformat

from helpers.escape import md_text
from helpers.reporting.fingerprint import ANSWER_TAG, QUESTION_TAG, answer_sources, cell_question_id

ANSWER_PLACEHOLDER = "_Write your answer here._"
# what the report shows for an unanswered question (the notebook keeps the placeholder)
NOT_ANSWERED = "**Not answered yet.**"
# {{ and }} are literal braces; {path[:spec]} a citation, whose path starts with a name (so "{1, 3}" is text)
CITATION = re.compile(r"\{\{|\}\}|\{(?P<path>[A-Za-z_][\w-]*(?:\.[\w-]+|\[[^\[\]{}]*\])*)(?::(?P<spec>[^{}]*))?\}")
STEP = re.compile(r"\.(?P<key>[\w-]+)|\[(?P<item>[^\[\]]*)\]")
CLOSEST = 3  # names suggested when a citation names none that exists

__all__ = ["ANSWER_PLACEHOLDER", "ANSWER_TAG", "NOT_ANSWERED", "QUESTION_TAG", "CitationError", "answers",
           "cite", "fill_citations", "questions", "read_notebook", "report_cells", "section_metrics", "unanswered",
           "unanswered_questions"]


class CitationError(ValueError):
    """A citation whose name does not exist in the run's ``metrics.json`` (the message names it and the closest
    names that do), or whose format does not fit its value."""


def read_notebook(path: str | Path):
    """The notebook at ``path`` (nbformat 4)."""
    return nbformat.read(str(path), as_version=4)


def questions(nb) -> list[dict]:
    """The question cells of ``nb`` in order: ``{"id", "points", "index", "source"}`` (``index``: the cell's
    position)."""
    out = []
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "markdown" and QUESTION_TAG in cell.get("metadata", {}).get("tags", []):
            meta = cell.metadata.get("question") or {}
            out.append({"id": cell_question_id(cell), "points": meta.get("points"), "index": i,
                        "source": cell.source})
    return out


def answers(nb) -> dict[str, str]:
    """``{question id: answer source}`` of ``nb``'s answer cells, as written (the template, not the numbers)."""
    return answer_sources(nb)


def unanswered(source: str | None) -> bool:
    """Whether an answer's source says nothing: empty, blank, or still :data:`ANSWER_PLACEHOLDER`."""
    text = (source or "").strip()
    return not text or text == ANSWER_PLACEHOLDER


def unanswered_questions(nb) -> list[str]:
    """The ids of ``nb``'s questions with no answer cell, or an unanswered one, in question order."""
    given = answers(nb)
    return [q["id"] for q in questions(nb) if unanswered(given.get(q["id"]))]


def section_metrics(reports: str | Path, sections) -> dict[str, dict]:
    """Each of ``sections``' ``metrics.json`` under the folder ``reports`` (``reports/<section>/metrics.json``),
    read when a citation first needs it; a section without one maps to ``{}``."""
    return _LazyMetrics(Path(reports), list(sections))


class _LazyMetrics(dict):
    """``{section: metrics}`` that reads a section's file on first use (an answer in ``mlp`` citing ``cnn``
    reads ``cnn``'s, and nothing is read for a notebook that cites nothing)."""

    def __init__(self, reports: Path, sections: list[str]):
        super().__init__()
        self.reports, self.sections = reports, sections

    def __missing__(self, section: str) -> dict:
        path = self.reports / section / "metrics.json"
        try:
            value = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
        except (OSError, ValueError) as exc:
            raise CitationError(f"{path} cannot be read ({exc})") from None
        self[section] = value
        return value

    def __contains__(self, section) -> bool:
        return section in self.sections


def _names(value, prefix: str) -> list[str]:
    """The names one step below ``value`` (keys, ``[i]``, ``[configuration name]``), as full dotted paths."""
    if isinstance(value, dict):
        return [f"{prefix}.{k}" for k in value]
    if isinstance(value, list):
        named = [f"{prefix}[{v['name']}]" for v in value if isinstance(v, dict) and isinstance(v.get("name"), str)]
        return named or [f"{prefix}[{i}]" for i in range(len(value))]
    return []


def _missing(path: str, where: str, value, step: str) -> CitationError:
    options = _names(value, where)
    wanted = f"{where}.{step}" if isinstance(value, dict) else f"{where}[{step}]"
    close = difflib.get_close_matches(wanted, options, n=CLOSEST, cutoff=0.5) or options[:CLOSEST]
    has = f"{where} is a number or text, with no {step!r}" if not options else f"{where} has no {step!r}"
    return CitationError(f"{{{path}}}: {has}" + (f"; closest: {', '.join(close)}" if close else ""))


def cite(path: str, metrics: dict[str, dict]):
    """The value a citation's dotted ``path`` names in ``metrics`` (``{section: metrics.json}``)."""
    section = re.match(r"[A-Za-z_][\w-]*", path)[0]
    rest = path[len(section):]
    if section not in metrics:
        close = difflib.get_close_matches(section, list(getattr(metrics, "sections", metrics)), n=CLOSEST)
        raise CitationError(f"{{{path}}}: {section!r} is not a section of this folder (write {{{{ and }}}} for "
                            "literal braces)" + (f"; closest: {', '.join(close)}" if close else ""))
    value, where = metrics[section], section
    if not value:
        raise CitationError(f"{{{path}}}: {section} has no metrics.json yet (run it first)")
    for match in STEP.finditer(rest):
        key, item = match["key"], match["item"]
        step = key if key is not None else item
        if isinstance(value, dict) and step in value:
            value, where = value[step], f"{where}.{step}" if key is not None else f"{where}[{step}]"
        elif isinstance(value, list) and (found := _item(value, step)) is not None:
            value, where = found, f"{where}[{step}]"
        else:
            raise _missing(path, where, value, step)
    return value


def _item(items: list, step: str):
    """A list's item by index (``0``, ``-1``) or by its ``name``."""
    if re.fullmatch(r"-?\d+", step.strip()):
        i = int(step)
        return items[i] if -len(items) <= i < len(items) else None
    return next((v for v in items if isinstance(v, dict) and v.get("name") == step), None)


def _shown(path: str, value, spec: str | None) -> str:
    if isinstance(value, (dict, list)):
        raise CitationError(f"{{{path}}} names a group of values, not one: pick one of "
                            + ", ".join(_names(value, path)[:6]))
    if value is None:
        raise CitationError(f"{{{path}}} has no value in this run (null in metrics.json)")
    try:
        text = format(value, spec or "")
    except (TypeError, ValueError) as exc:
        raise CitationError(f"{{{path}:{spec}}}: the format {spec!r} does not fit {value!r} ({exc})") from None
    # a configuration or class name is the student's text: shown as characters, never as markup
    return text if isinstance(value, (int, float)) else md_text(text)


def fill_citations(text: str, metrics: dict[str, dict]) -> str:
    """``text`` with every citation replaced by the number it names (``{{``/``}}`` become braces); raises
    :class:`CitationError` for the first name that does not exist."""
    def replace(match: re.Match) -> str:
        if match["path"] is None:
            return match[0][0]
        return _shown(match["path"], cite(match["path"], metrics), match["spec"])

    return CITATION.sub(replace, text)


def report_cells(nb, metrics: dict[str, dict]) -> None:
    """Make ``nb`` (in memory) what the report shows: each answer with its citations filled in, an unanswered
    one as :data:`NOT_ANSWERED`. Raises :class:`CitationError` naming the question and the citation."""
    for cell in nb.cells:
        if cell.cell_type != "markdown" or ANSWER_TAG not in cell.get("metadata", {}).get("tags", []):
            continue
        if unanswered(cell.source):
            cell.source = NOT_ANSWERED
            continue
        try:
            cell.source = fill_citations(cell.source, metrics)
        except CitationError as exc:
            raise CitationError(f"answer to {cell_question_id(cell) or 'a question'}: {exc}") from None
