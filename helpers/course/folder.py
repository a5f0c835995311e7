"""A student's working folder (``fashion-report start``): the assignment's notebooks with the student's parameters
filled in and its questions in place, ready for JupyterLab or for ``fashion-report run`` inside it::

    FOLDER/
      course.json          who, which assignment (id, title, SHA-256 of its file), the variant and each section's parameters
      assignment.yaml      the instructor's file, byte for byte
      README.md            what to do next
      01_mlp_grid.ipynb …  the assignment's sections only, copied from the toolkit's notebooks
      reports/             where this folder's runs write (never the toolkit's reports/)

The student's name and id are text from outside: they are escaped wherever a notebook or the README shows them, are
written into the parameters cell as Python string literals, and never name a path (FOLDER is the only one).
"""

from __future__ import annotations

import ast
import copy
import io
import json
import textwrap
import tokenize
from collections.abc import Mapping
from pathlib import Path

import nbformat

from helpers.atomic import write_bytes, write_text
from helpers.course.answers import ANSWER_PLACEHOLDER  # one text, read back by answers.py
from helpers.course.assignment import (
    Assignment,
    Question,
    headings,
    parameters_cell,
    read_notebook,
    source,
    subsection_end,
)
from helpers.escape import md_code, md_text

FORMAT = 1
# rough wall time of one notebook on a laptop CPU (minutes), for the first cell's "about N minutes" (smoke measured
# with papermill on 2 busy cores: mlp 1 min, cnn 3 min)
MINUTES = {"smoke": {"mlp": 1, "cnn": 3}, "quick": {"mlp": 5, "cnn": 10}, "full": {"mlp": 60, "cnn": 120}}
DEFAULT_MINUTES = {"smoke": 2, "quick": 10, "full": 120}


class FolderError(ValueError):
    """A student folder that cannot be made here (a non-empty FOLDER without ``--force``, a file in the way)."""


def py_literal(value) -> str:
    """``value`` (None, bool, number, text, list, dict) as a Python literal; text in double quotes with every
    character that is not printable (controls, direction overrides) escaped, so the cell shows what it holds."""
    if value is None or isinstance(value, (bool, int)):
        return repr(value)
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise ValueError(f"{value!r} cannot be written as a literal")
        return repr(value)
    if isinstance(value, str):
        def char(ch: str) -> str:
            if ch in '"\\':
                return "\\" + ch
            return ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii")
        return '"' + "".join(map(char, value)) + '"'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(map(py_literal, value)) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{py_literal(k)}: {py_literal(v)}" for k, v in value.items()) + "}"
    raise ValueError(f"{value!r} ({type(value).__name__}) is not a notebook parameter value")


def set_parameters(cell_source: str, values: Mapping) -> str:
    """The parameters cell's source with the literal of each name in ``values`` replaced, comments kept; a name the
    cell does not assign raises ValueError naming it."""
    lines = cell_source.splitlines(keepends=True)
    spans = {}
    for node in ast.parse(cell_source).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            spans[node.targets[0].id] = node.value
    missing = [k for k in values if k not in spans]
    if missing:
        raise ValueError(f"the parameters cell has no {', '.join(missing)}; it assigns {', '.join(spans)}")
    for name in sorted(values, key=lambda k: (spans[k].lineno, spans[k].col_offset), reverse=True):
        node, literal = spans[name], py_literal(values[name])
        if ast.literal_eval(literal) != values[name]:
            raise ValueError(f"parameter {name}: {values[name]!r} does not survive as a literal")
        first = lines[node.lineno - 1].encode()  # ast offsets count UTF-8 bytes
        last = lines[node.end_lineno - 1].encode()
        joined = first[:node.col_offset] + literal.encode() + last[node.end_col_offset:]
        lines[node.lineno - 1:node.end_lineno] = [joined.decode()]
    return "".join(lines)


# JupyterLab shows about 120 characters of code at 1400 px and a section's PDF about 95: a longer line's comment
# moves above it, wrapped.
CODE_WIDTH = 88


def balanced_wrap(text: str, width: int, first: str, rest: str) -> list[str]:
    """``text`` on as few lines of at most ``width`` as textwrap needs, but of even lengths: no word left alone
    on a last line."""
    def wrap(w):
        return textwrap.wrap(text, width=w, initial_indent=first, subsequent_indent=rest, break_long_words=False,
                             break_on_hyphens=False)

    lines = wrap(width)
    shortest = (len(text) + len(first) + len(rest) * (len(lines) - 1)) // max(1, len(lines))
    for w in range(shortest, width):
        if len(even := wrap(w)) == len(lines):
            return even
    return lines


def wrap_comments(cell_source: str, width: int = CODE_WIDTH) -> str:
    """The cell with each line longer than ``width`` that ends in a comment rewritten as the comment, wrapped on
    lines of its own above, then the code: nothing of a parameter's meaning runs off the right edge."""
    comments = {tok.start[0]: tok for tok in tokenize.generate_tokens(io.StringIO(cell_source).readline)
                if tok.type == tokenize.COMMENT}
    out = []
    for number, line in enumerate(cell_source.splitlines(), start=1):
        tok = comments.get(number)
        if tok is None or len(line) <= width or not line[:tok.start[1]].strip():
            out.append(line)
            continue
        code, text = line[:tok.start[1]].rstrip(), tok.string.lstrip("#").strip()
        indent = code[:len(code) - len(code.lstrip())]
        out += balanced_wrap(text, width, f"{indent}# ", f"{indent}#   ")
        out.append(code)
    return "\n".join(out) + ("\n" if cell_source.endswith("\n") else "")


def question_cells(q: Question) -> list[dict]:
    """The read-only question cell and the answer cell under it."""
    points = f"{q.points:g} point{'s' if q.points != 1 else ''}"
    text = "\n\n".join(md_text(p) for p in q.text.split("\n\n") if p.strip())
    question = nbformat.v4.new_markdown_cell(
        f"### Question {q.id}: {md_text(q.title)} ({points})\n\n{text}", id=f"question-{q.id}".replace("_", "-"),
        metadata={"tags": ["question"], "question": {"id": q.id, "points": q.points}, "editable": False,
                  "deletable": False})
    answer = nbformat.v4.new_markdown_cell(ANSWER_PLACEHOLDER, id=f"answer-{q.id}".replace("_", "-"),
                                           metadata={"tags": ["answer"], "question": {"id": q.id}})
    return [question, answer]


def variant_text(variant: Mapping) -> str:
    """``cnn.init `he`, classes `[1, 3]``` for the first cell (values as code, so nothing in them is markup)."""
    return ", ".join(f"{md_text(a)} {md_code(json.dumps(v) if not isinstance(v, str) else v)}"
                     for a, v in variant.items()) or "none (everyone runs the same settings)"


def example_citation(section: str) -> str:
    """A citation every section's run can fill: its final model's test accuracy (shown in the first cell)."""
    return "{" + section + ".best.test.accuracy:.2%}"


def start_cell(assignment: Assignment, section: str, student: Mapping, variant: Mapping) -> dict:
    """The first cell: whose notebook this is and what to do in JupyterLab."""
    minutes = MINUTES.get(assignment.profile, {}).get(section, DEFAULT_MINUTES[assignment.profile])
    text = (f"## {md_text(assignment.title)}\n\n"
            f"Notebook of **{md_text(student['name'])}** (id {md_text(student['id'])}) for assignment "
            f"{md_code(assignment.id)}. Your variant: {variant_text(variant)}.\n\n"
            f"**In JupyterLab:** *Run > Run All Cells* runs this notebook in the {md_code(assignment.profile)} "
            f"profile, about {minutes} minute{'s' if minutes != 1 else ''} on a laptop CPU; its results go to "
            f"{md_code(f'reports/{section}/')} in this folder.\n\n"
            "**Change nothing in the parameters cell** (the first code cell): it holds your assignment's settings, "
            "and the hand-in checks them.\n\n"
            f"Answer each question in the cell under it that says {ANSWER_PLACEHOLDER} (double-click it to edit, "
            "Shift+Enter to show it). An answer can cite the run's numbers, e.g. "
            f"{md_code(example_citation(section))}: the citation stays as written here and shows "
            "the run's number in the report that `fashion-report run` makes. When every section has run, "
            "`fashion-report handin` in this folder packs what you hand in.")
    return nbformat.v4.new_markdown_cell(text, id="course-start", metadata={"tags": ["course"]})


def student_notebook(nb: dict, assignment: Assignment, section: str, values: Mapping, student: Mapping,
                     variant: Mapping) -> dict:
    """A copy of the toolkit's notebook ``nb`` (JSON) for one student: the parameters cell set to ``values``, the
    first cell saying what to do, each question of ``section`` at the end of the part its ``after`` heading
    opens."""
    nb = copy.deepcopy(nb)
    index = parameters_cell(nb)
    cell = nb["cells"][index]
    cell["source"] = wrap_comments(set_parameters(source(cell), values))
    cell["outputs"], cell["execution_count"] = [], None
    questions = [q for q in assignment.questions if q.section == section]
    # each question goes at the end of the subsection its `after` heading opens, below the results it asks about
    cells, at = list(nb["cells"]), {}
    for q in questions:
        start = next((i for i, c in enumerate(cells) if q.after in [t for _, t in headings(c)]), None)
        if start is None:
            raise ValueError(f"no heading {q.after!r} in the {section} notebook for question {q.id}")
        at.setdefault(subsection_end(cells, start), []).append(q)
    for end in sorted(at, reverse=True):  # from the bottom up, so the earlier positions stay where they are
        cells[end:end] = [cell for q in at[end] for cell in question_cells(q)]
    nb["cells"] = [start_cell(assignment, section, student, variant), *cells]
    node = nbformat.from_dict(nb)
    nbformat.validate(node)
    return node


def check_folder(folder: Path, force: bool) -> None:
    """Refuse a FOLDER that is a file, or a folder holding anything, unless ``force``."""
    if folder.exists() and not folder.is_dir():
        raise FolderError(f"{folder} exists and is not a folder; choose another -o")
    if folder.is_dir() and any(folder.iterdir()) and not force:
        raise FolderError(f"{folder} is not empty; choose an empty or new folder, or add --force to write the "
                          "assignment's files into it (notebooks there of the same name are replaced, answers too)")


def readme(assignment: Assignment, student: Mapping, notebooks: list[str]) -> str:
    """The folder's README: whose it is and the three commands that come next."""
    listed = "\n".join(f"- {md_code(n)}" for n in notebooks)
    return (f"# {md_text(assignment.title)}\n\n"
            f"Working folder of **{md_text(student['name'])}** (id {md_text(student['id'])}) for assignment "
            f"{md_code(assignment.id)}, profile {md_code(assignment.profile)}.\n\n{listed}\n\n"
            "What to do next, in this folder:\n\n"
            "1. `jupyter lab .` opens the notebooks: *Run > Run All Cells* in each, then write your answers in the "
            "cells under the questions. Change nothing in the parameters cells.\n"
            "2. Or run them headless: `fashion-report run` (results go to `reports/` here).\n"
            "3. `fashion-report handin` checks your runs and answers and writes the archive you hand in.\n")


def make_folder(assignment: Assignment, student: Mapping, variant: Mapping, folder: str | Path,
                notebooks: Mapping[str, Path], *, force: bool = False) -> Path:
    """Make the working folder of ``student`` ({"name", "id"}) with ``variant`` at ``folder``; return its course.json.

    ``notebooks`` maps each section of the toolkit to its notebook. Raises :class:`FolderError` for a folder that
    cannot be used, ValueError for a notebook the assignment does not fit."""
    folder = Path(folder)
    check_folder(folder, force)
    student = {"name": str(student["name"]), "id": str(student["id"])}
    # the author block shows whose report it is and for which assignment (escaped there, as every author field)
    course = f"{assignment.title} ({assignment.id})"
    parameters = {s: {**p, "author_name": student["name"], "author_id": student["id"], "course": course}
                  for s, p in assignment.parameters(variant).items()}
    made = {}
    for section in assignment.sections:
        values = {**parameters[section], "output_dir": f"reports/{section}"}
        nb = student_notebook(read_notebook(notebooks[section]), assignment, section, values, student, variant)
        made[Path(notebooks[section]).name] = nbformat.writes(nb) + "\n"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "reports").mkdir(exist_ok=True)
    write_bytes(folder / "assignment.yaml", assignment.data)
    for name, text in made.items():
        write_text(folder / name, text)
    write_text(folder / "README.md", readme(assignment, student, list(made)))
    course = {"format": FORMAT, "assignment": {"id": assignment.id, "title": assignment.title,
                                               "digest": assignment.digest},
              "student": student, "variant": dict(variant), "profile": assignment.profile,
              "sections": list(assignment.sections), "parameters": parameters}
    return write_text(folder / "course.json", json.dumps(course, indent=1, ensure_ascii=False) + "\n")
