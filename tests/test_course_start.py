"""``fashion-report start``: a student's folder that opens in JupyterLab (valid nbformat 4), holds the student's
parameters (fixed + variant + profile) in each notebook's parameters cell with its comments, each question after its
heading followed by an answer cell, and never lets a student's name or id become markup, code or a path."""

from __future__ import annotations

import ast
import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from helpers.cli.runner import SECTIONS, notebook_path
from helpers.course.assignment import headings, load_assignment, parameters_cell
from helpers.course.folder import ANSWER_PLACEHOLDER, FolderError, make_folder, py_literal, set_parameters
from helpers.course.variants import variant_for

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "notebooks" / "assignments" / "course" / "fmnist_hw1.yaml"
NOTEBOOKS = {s: notebook_path(s) for s in SECTIONS}
HOSTILE = 'Ada "<img src=x onerror=alert(1)>" *$x$* [a](javascript:x) \u202e\n# heading'


@pytest.fixture(scope="module")
def hw1():
    return load_assignment(EXAMPLE, NOTEBOOKS)


def fashion_report(*args, cwd=ROOT):
    """The command as the README shows it (``fashion-report`` is ``python -m helpers``)."""
    return subprocess.run([sys.executable, "-m", "helpers", *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, timeout=600, env={**os.environ, "HELPERS_PROGRESS": "0"})


def cell_values(nb) -> dict:
    """The parameters cell of a notebook as {name: value}."""
    tree = ast.parse(nb.cells[parameters_cell(nb)].source)
    return {n.targets[0].id: ast.literal_eval(n.value) for n in tree.body if isinstance(n, ast.Assign)}


def test_start_makes_the_folder_as_the_readme_shows(tmp_path, hw1):
    folder = tmp_path / "hw1"
    done = fashion_report("start", EXAMPLE, "--name", "Ada Lovelace", "--id", "0042", "-o", folder)
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in folder.iterdir()) == ["01_mlp_grid.ipynb", "02_cnn_comparison.ipynb", "README.md",
                                                        "assignment.yaml", "course.json", "reports"]
    assert (folder / "assignment.yaml").read_bytes() == EXAMPLE.read_bytes()
    course = json.loads((folder / "course.json").read_text())
    variant = variant_for(hw1, "0042")
    assert course["format"] == 1 and course["student"] == {"name": "Ada Lovelace", "id": "0042"}
    assert course["assignment"] == {"id": "fmnist-hw1", "title": hw1.title,
                                    "digest": hashlib.sha256(EXAMPLE.read_bytes()).hexdigest()}
    assert course["variant"] == variant and course["profile"] == "smoke" and course["sections"] == ["mlp", "cnn"]
    assert course["parameters"]["cnn"]["init"] == variant["cnn.init"]
    assert "init" not in course["parameters"]["mlp"]  # cnn.init is the CNN's alone
    assert course["parameters"]["mlp"]["classes"] == variant["classes"]  # classes: every section declaring it
    for section, name in (("mlp", "01_mlp_grid.ipynb"), ("cnn", "02_cnn_comparison.ipynb")):
        nb = nbformat.read(folder / name, as_version=4)
        nbformat.validate(nb)
        values = cell_values(nb)
        assert {k: values[k] for k in course["parameters"][section]} == course["parameters"][section]
        assert values["output_dir"] == f"reports/{section}" and values["profile"] == "smoke"
        assert nb.cells[0].metadata["tags"] == ["course"] and "Run All" in nb.cells[0].source
        # the toolkit's own text stays as it is: verify compares the page with a rerun of the toolkit's notebook
        assert nb.cells[1].source == nbformat.read(NOTEBOOKS[section], as_version=4).cells[0].source
        params = nb.cells[parameters_cell(nb)].source.splitlines()
        assert max(map(len, params)) <= 88  # nothing runs off the right edge in JupyterLab or the PDF
        wrapped = [line for line in params if line.startswith("#   ")]
        assert wrapped and all(len(line.split()) > 2 for line in wrapped)  # no word left alone on a line
    readme = (folder / "README.md").read_text()
    assert "jupyter lab" in readme and "fashion-report run" in readme and "fashion-report handin" in readme


def test_each_question_closes_the_part_its_heading_opens_with_an_answer_cell(tmp_path, hw1):
    make_folder(hw1, {"name": "Ada", "id": "7"}, variant_for(hw1, "7"), tmp_path / "f", NOTEBOOKS)
    for section, name in (("mlp", "01_mlp_grid.ipynb"), ("cnn", "02_cnn_comparison.ipynb")):
        cells = nbformat.read(tmp_path / "f" / name, as_version=4).cells
        for q in (q for q in hw1.questions if q.section == section):
            at = next(i for i, c in enumerate(cells) if c.metadata.get("question", {}).get("id") == q.id)
            question, answer = cells[at], cells[at + 1]
            # inside the part its heading opens (after the heading, no heading of that level or higher between),
            # and last in it: the next cell is another question or a heading of that level or higher
            start = next(i for i, c in enumerate(cells) if q.after in [t for _, t in headings(c)])
            level = min(n for n, _ in headings(cells[start]))
            assert start < at and not any(n <= level for c in cells[start + 1:at] for n, _ in headings(c))
            after = cells[at + 2] if at + 2 < len(cells) else None
            assert after is None or after.metadata.get("tags") == ["question"] or any(
                n <= level for n, _ in headings(after))
            assert question.metadata == {"tags": ["question"], "question": {"id": q.id, "points": q.points},
                                         "editable": False, "deletable": False}
            assert question.source.startswith(f"### Question {q.id}: ")
            assert f"({q.points} points)" in question.source
            assert answer.cell_type == "markdown" and answer.source == ANSWER_PLACEHOLDER
            assert answer.metadata == {"tags": ["answer"], "question": {"id": q.id}}
    cells = nbformat.read(tmp_path / "f" / "02_cnn_comparison.ipynb", as_version=4).cells
    heading = next(i for i, c in enumerate(cells) if c.source.startswith("## The first comparison"))
    q3 = next(i for i, c in enumerate(cells) if c.metadata.get("question", {}).get("id") == "q3")
    # below the comparison's results: its code cells come first
    assert q3 > heading + 1 and any(c.cell_type == "code" for c in cells[heading + 1:q3])


def test_a_hostile_name_is_text_everywhere_and_never_a_path(tmp_path, hw1):
    folder = tmp_path / "f"
    done = fashion_report("start", EXAMPLE, "--name", HOSTILE, "--id", "../../etc/x", "-o", folder)
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f"]
    shown = " ".join(HOSTILE.split())  # one line
    course = json.loads((folder / "course.json").read_text())
    assert course["student"] == {"name": shown, "id": "../../etc/x"}
    nb = nbformat.read(folder / "01_mlp_grid.ipynb", as_version=4)
    assert cell_values(nb)["author_name"] == shown
    assert "\u202e" not in nb.cells[parameters_cell(nb)].source  # the override is an escape in the code
    first = nb.cells[0].source
    name = first.split("Notebook of **", 1)[1].split("** (id ", 1)[0]
    assert not re.search(r"(?<!\\)[<*$\[#]", name)  # every markup character of the name escaped
    assert "\\<img" in first and "\\*\\$x\\$\\*" in first and "\\[U\\+202E\\]" in first
    assert "\\[a\\]\\(javascript\\:x\\)" in first
    assert "\\# heading" in (folder / "README.md").read_text()


def test_a_non_empty_folder_is_refused_unless_forced(tmp_path, hw1):
    folder = tmp_path / "f"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    done = fashion_report("start", EXAMPLE, "--name", "Ada", "--id", "1", "-o", folder)
    assert done.returncode == 2 and "is not empty" in done.stderr and "--force" in done.stderr
    assert sorted(p.name for p in folder.iterdir()) == ["notes.txt"]
    make_folder(hw1, {"name": "Ada", "id": "1"}, {}, folder, NOTEBOOKS, force=True)
    assert (folder / "notes.txt").read_text() == "mine" and (folder / "course.json").exists()
    with pytest.raises(FolderError, match="not a folder"):
        make_folder(hw1, {"name": "Ada", "id": "1"}, {}, folder / "notes.txt", NOTEBOOKS)


def test_start_with_the_roster_takes_the_row(tmp_path, hw1):
    """A student whose row is not what the rule gives (a pin) gets the row with ``--roster``, the rule without."""
    rule = variant_for(hw1, "5")
    other = next(v for v in hw1.variants["cnn.init"] if v != rule["cnn.init"])
    roster = tmp_path / "roster.csv"
    roster.write_text(f"name,id,cnn.init\nAda,5,{other}\nBob,6,\n", encoding="utf-8")
    students = tmp_path / "students.csv"
    assert fashion_report("assign", roster, EXAMPLE, "-o", students).returncode == 0
    done = fashion_report("start", EXAMPLE, "--id", "5", "--roster", students, "-o", tmp_path / "ada")
    assert done.returncode == 0, done.stderr
    course = json.loads((tmp_path / "ada" / "course.json").read_text())
    assert course["variant"]["cnn.init"] == other and course["student"]["name"] == "Ada"
    done = fashion_report("start", EXAMPLE, "--id", "9", "--name", "Eve", "--roster", students, "-o", tmp_path / "e")
    assert done.returncode == 2 and "no row with id '9'" in done.stderr


def test_parameters_cell_literals_are_replaced_and_comments_kept():
    src = 'profile = "quick"  # smoke | quick\nname = "x"  # who\nclasses = None  # e.g. [1, 3]\n'
    out = set_parameters(src, {"classes": [1, 3], "name": 'José "\u202e"', "profile": "smoke"})
    assert out.splitlines()[0] == 'profile = "smoke"  # smoke | quick'
    assert out.splitlines()[2] == "classes = [1, 3]  # e.g. [1, 3]"
    assert ast.literal_eval(out.splitlines()[1].split("=", 1)[1].split("  #")[0].strip()) == 'José "\u202e"'
    with pytest.raises(ValueError, match="has no epochs"):
        set_parameters(src, {"epochs": 3})
    for value in (None, True, 0.001, -3, "a\\b\n", {"linear": "normal", "conv": ["he", 1.5]}):
        assert ast.literal_eval(py_literal(value)) == value
