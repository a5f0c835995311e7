"""`fashion-report run` inside a student's folder: the folder's own notebook runs as it is (its parameters cell),
into the folder's reports/; answers survive every rerun, show in place in the report with their citations filled,
"not answered yet" where there is none; a citation of a name that does not exist fails the section with its
name; a -p that contradicts course.json is refused; and the honest report verifies."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from helpers.cli.runner import notebook_path
from helpers.course.answers import ANSWER_PLACEHOLDER, answers, fill_citations, section_metrics
from helpers.course.folder import example_citation
from helpers.reporting import fingerprint as fp

ROOT = Path(__file__).resolve().parent.parent
PARAMETERS = {"profile": "smoke", "optimizers": ["adam"], "regularizers": ["none", "dropout"],
              "author_name": "Ada <b>Lovelace</b>", "author_id": "42"}
ANSWER = "Adam reached {mlp.best.test.accuracy:.2%} on the test set <script>alert(1)</script>."

pytestmark = pytest.mark.slow


def make_folder(folder: Path, data_dir: Path) -> Path:
    """A student's folder as `fashion-report start` makes it (see the hand-in design): course.json and the mlp
    notebook with its parameters set, a first cell for JupyterLab, and two questions each with its answer cell."""
    nb = nbformat.read(str(notebook_path("mlp")), as_version=4)
    params = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    params.source += "".join(f"\n{k} = {v!r}" for k, v in {**PARAMETERS, "data_dir": str(data_dir),
                                                            "output_dir": "reports/mlp"}.items())
    cells = [nbformat.v4.new_markdown_cell("## Homework 1\n\nRun All ...", metadata={"tags": ["course"]})]
    for cell in nb.cells:
        cells.append(cell)
        heading = cell.source.splitlines()[0] if cell.cell_type == "markdown" and cell.source else ""
        for qid, after, answer in (("q1", "## The grid", ANSWER), ("q2", "## Learning curves", ANSWER_PLACEHOLDER)):
            if heading == after:
                cells.append(nbformat.v4.new_markdown_cell(
                    f"### Question {qid}: Which optimizer? (4 points)\n\nCompare them.",
                    metadata={"tags": ["question"], "question": {"id": qid, "points": 4}, "editable": False}))
                cells.append(nbformat.v4.new_markdown_cell(answer, metadata={"tags": ["answer"],
                                                                             "question": {"id": qid}}))
    nb.cells = cells
    folder.mkdir(parents=True)
    nbformat.write(nb, str(folder / "01_mlp_grid.ipynb"))
    (folder / "reports").mkdir()
    course = {"format": 1, "assignment": {"id": "fmnist-hw1", "title": "Homework 1", "digest": "0" * 64},
              "student": {"name": PARAMETERS["author_name"], "id": "42"}, "variant": {}, "profile": "smoke",
              "sections": ["mlp"], "parameters": {"mlp": {k: v for k, v in PARAMETERS.items() if k != "profile"}}}
    (folder / "course.json").write_text(json.dumps(course))
    return folder


def run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HELPERS_PROGRESS": "0"}
    return subprocess.run([sys.executable, "-m", "helpers", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=900)


@pytest.fixture(scope="module")
def folder(tmp_path_factory, fake_data_dir):
    folder = make_folder(tmp_path_factory.mktemp("student") / "hw1", fake_data_dir)
    toolkit_report = ROOT / "reports" / "mlp" / "metrics.json"
    before = toolkit_report.stat().st_mtime_ns if toolkit_report.exists() else None
    done = run(["run", "--formats", "html"], cwd=folder)  # inside the folder, as the README says
    assert done.returncode == 0, done.stdout + done.stderr
    assert (toolkit_report.stat().st_mtime_ns if toolkit_report.exists() else None) == before  # not the toolkit's
    return folder


def page(folder: Path) -> str:
    return (folder / "reports" / "mlp" / "mlp.html").read_text(encoding="utf-8")


def test_the_folder_runs_into_its_own_reports_with_its_parameters_cell(folder):
    metrics = json.loads((folder / "reports" / "mlp" / "metrics.json").read_text())
    assert metrics["parameters"]["optimizers"] == ["adam"] and metrics["profile"] == "smoke"
    assert metrics["parameters"]["author_id"] == "42"
    assert metrics["fingerprint"]["notebook"] == fp.notebook_digest(notebook_path("mlp"))  # the same code
    assert metrics["fingerprint"]["answers"] == fp.answers_digest(folder / "01_mlp_grid.ipynb")
    assert (folder / "reports" / "index.html").exists() and (folder / "reports" / "run.json").exists()


def test_the_report_shows_questions_answers_and_what_the_run_measured(folder):
    metrics = json.loads((folder / "reports" / "mlp" / "metrics.json").read_text())
    html = page(folder)
    assert f"Adam reached {metrics['best']['test']['accuracy']:.2%} on the test set" in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html  # the student's text, shown literally
    assert "Not answered yet." in html and "Question q1: Which optimizer?" in html
    assert "What the run measured" in html
    # in place: each question after its heading, its answer under it
    assert html.index("The grid") < html.index("Question q1") < html.index("Adam reached") < html.index(
        "Learning curves") < html.index("Question q2") < html.index("Not answered yet.")
    executed = nbformat.read(str(folder / "reports" / "mlp" / "mlp.ipynb"), as_version=4)
    assert answers(executed) == {"q1": ANSWER, "q2": ANSWER_PLACEHOLDER}  # the notebook keeps the template


def test_the_first_cells_example_citation_shows_the_runs_test_accuracy(folder):
    metrics = section_metrics(folder / "reports", ["mlp"])
    shown = fill_citations(example_citation("mlp"), metrics)
    assert shown == f"{metrics['mlp']['best']['test']['accuracy']:.2%}"


def test_a_contradicting_parameter_is_refused_and_a_bad_citation_fails_the_section_by_name(folder):
    done = run(["run", "--folder", str(folder.parent)], cwd=folder.parent)
    assert done.returncode != 0 and "no course.json" in done.stderr
    done = run(["run", "--folder", str(folder), "-p", "optimizers", '["sgd"]'], cwd=folder.parent)
    assert done.returncode != 0 and "optimizers" in done.stderr and "['sgd']" in done.stderr
    assert "['adam']" in done.stderr, done.stderr
    source = folder / "01_mlp_grid.ipynb"
    nb = nbformat.read(str(source), as_version=4)
    answer = next(c for c in nb.cells if "answer" in c.metadata.get("tags", []) and c.metadata.question.id == "q1")
    answer.source = "I got {mlp.best.test.acuracy:.2%}."
    nbformat.write(nb, str(source))
    written = source.read_bytes()
    try:
        done = run(["run", "--formats", "html", "--resume"], cwd=folder)
        assert done.returncode == 1
        assert "mlp.best.test has no 'acuracy'" in done.stdout and "closest: mlp.best.test.accuracy" in done.stdout
        assert "answer to q1" in done.stdout and "replaces the report" in done.stdout
        assert (folder / "reports" / "mlp" / "metrics.json").exists()  # nothing else lost
        assert not (folder / "reports" / "mlp" / "mlp.html").exists()  # no page with another run's numbers
        assert source.read_bytes() == written  # the answers, exactly as written
    finally:
        answer.source = ANSWER
        nbformat.write(nb, str(source))
    done = run(["run", "--formats", "html", "--resume"], cwd=folder)
    assert done.returncode == 0, done.stdout + done.stderr
    assert answers(nbformat.read(str(folder / "reports" / "mlp" / "mlp.ipynb"), as_version=4))["q1"] == ANSWER


def test_an_honest_report_with_answers_verifies(folder, fake_data_dir):
    done = subprocess.run([sys.executable, "-P", "-m", "helpers", "verify", str(folder / "reports" / "mlp"),
                           "--reference-data", str(fake_data_dir)], cwd=ROOT, capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == 0 and "OK" in done.stdout, done.stdout + done.stderr
