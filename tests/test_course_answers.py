"""A student's answers: read from the notebook, "unanswered", citations filled from metrics.json (a name that does
not exist is an error naming it), shown in the report as text (no markup, no links), and digested apart from the
code so that answers never break verification while edits after the run are named."""

from __future__ import annotations

import json

import nbformat
import pytest

from helpers.course import answers
from helpers.course.answers import ANSWER_PLACEHOLDER, NOT_ANSWERED, CitationError, fill_citations, report_cells
from helpers.reporting import fingerprint as fp
from helpers.reporting.export import export_html

METRICS = {"mlp": {"section": "mlp", "best": {"name": "adam-none", "test": {"accuracy": 0.81234, "loss": 0.5}},
                   "configurations": [{"name": "adam-none", "val_acc": 0.75}, {"name": "rmsprop-none", "val_acc": 0.7}]},
           "cnn": {}}


def course_notebook(answer: str = ANSWER_PLACEHOLDER, second: str = "I compared both.") -> nbformat.NotebookNode:
    """A notebook as `start` makes it: a parameters cell, code, and two questions each followed by its answer."""
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell('profile = "smoke"  # the profile', metadata={"tags": ["parameters"]}),
        nbformat.v4.new_markdown_cell("## The grid"),
        nbformat.v4.new_code_cell("x = 1"),
        nbformat.v4.new_markdown_cell("### Question q1: Which? (4 points)\n\nSay which.",
                                      metadata={"tags": ["question"], "question": {"id": "q1", "points": 4}}),
        nbformat.v4.new_markdown_cell(answer, metadata={"tags": ["answer"], "question": {"id": "q1"}}),
        nbformat.v4.new_markdown_cell("### Question q2: Why? (3 points)\n\nSay why.",
                                      metadata={"tags": ["question"], "question": {"id": "q2", "points": 3}}),
        nbformat.v4.new_markdown_cell(second, metadata={"tags": ["answer"], "question": {"id": "q2"}}),
        nbformat.v4.new_markdown_cell("## Observations"),
    ]
    return nb


def test_answers_and_unanswered_questions_are_read_from_their_cells():
    nb = course_notebook(answer="  \n")
    assert [q["id"] for q in answers.questions(nb)] == ["q1", "q2"] and answers.questions(nb)[0]["points"] == 4
    assert answers.answers(nb) == {"q1": "  \n", "q2": "I compared both."}
    assert answers.unanswered_questions(nb) == ["q1"]
    assert answers.unanswered(ANSWER_PLACEHOLDER) and answers.unanswered(f"\n {ANSWER_PLACEHOLDER}\n")
    assert not answers.unanswered("_Write your answer here._ Adam won.")


def test_a_citation_shows_the_runs_number_in_its_format():
    text = ("Adam reached {mlp.best.test.accuracy:.2%} on the test set; {mlp.configurations[rmsprop-none].val_acc:.1%}"
            " for RMSprop, {mlp.configurations[0].val_acc} first; {{braces}} and {1, 3, 5} stay text.")
    assert fill_citations(text, METRICS) == ("Adam reached 81.23% on the test set; 70.0% for RMSprop, 0.75 first; "
                                             "{braces} and {1, 3, 5} stay text.")
    # a name is the student's text: shown as characters, not markup
    assert fill_citations("{mlp.best.name}", METRICS) == "adam\\-none"


@pytest.mark.parametrize("citation, named", [
    ("{mlp.best.tset.accuracy}", ["mlp.best has no 'tset'", "closest: mlp.best.test"]),
    ("{mpl.best.test.accuracy}", ["'mpl' is not a section", "closest: mlp"]),
    ("{mlp.configurations[adam].val_acc}", ["mlp.configurations has no 'adam'", "mlp.configurations[adam-none]"]),
    ("{mlp.best.test}", ["names a group of values", "mlp.best.test.accuracy"]),
    ("{mlp.best.name:.2%}", ["the format '.2%' does not fit 'adam-none'"]),
    ("{cnn.best.test.accuracy}", ["cnn has no metrics.json yet"]),
])
def test_a_name_that_does_not_exist_is_an_error_naming_it_and_the_closest(citation, named):
    with pytest.raises(CitationError) as caught:
        fill_citations(f"I got {citation}.", METRICS)
    assert all(part in str(caught.value) for part in named), str(caught.value)


def test_section_metrics_are_read_from_the_folders_reports(tmp_path):
    (tmp_path / "mlp").mkdir()
    (tmp_path / "mlp" / "metrics.json").write_text(json.dumps(METRICS["mlp"]))
    metrics = answers.section_metrics(tmp_path, ["mlp", "cnn"])
    assert fill_citations("{mlp.best.test.accuracy:.1%}", metrics) == "81.2%"
    with pytest.raises(CitationError, match="cnn has no metrics.json yet"):
        fill_citations("{cnn.best.name}", metrics)
    with pytest.raises(CitationError, match="'transfer' is not a section"):
        fill_citations("{transfer.best.name}", metrics)


def test_the_report_fills_answers_shows_unanswered_and_keeps_the_template_in_the_notebook(tmp_path):
    nb = course_notebook(second="Test accuracy {mlp.best.test.accuracy:.2%}.")
    path = tmp_path / "mlp.ipynb"
    nbformat.write(nb, str(path))
    html = export_html(path, tmp_path / "mlp.html", prepare=lambda n: report_cells(n, METRICS)).read_text()
    assert "Test accuracy 81.23%." in html and NOT_ANSWERED.strip("*") in html
    assert "What the run measured" in html and "Observations" not in html
    assert nbformat.read(str(path), as_version=4).cells[6].source == "Test accuracy {mlp.best.test.accuracy:.2%}."
    nb.cells[6].source = "Accuracy {mlp.best.accuracy}."
    with pytest.raises(CitationError, match="answer to q2: .*mlp.best has no 'accuracy'"):
        report_cells(nb, METRICS)


def test_an_answer_is_text_on_the_page_its_html_and_links_disarmed(tmp_path):
    from helpers.cli.verify_html import parse_page

    hostile = ("My answer <script>alert(1)</script> <img src=x onerror=alert(1)> [run](javascript:alert(1)) "
               "[mine](file:///etc/passwd) [site](https://example.com) ![pic](https://example.com/p.png)")
    path = tmp_path / "mlp.ipynb"
    nbformat.write(course_notebook(answer=hostile), str(path))
    html = export_html(path, tmp_path / "mlp.html").read_text()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html and "<script>" not in html
    assert "onerror=alert(1)&gt;" in html and "<img src=x" not in html
    assert 'href="javascript' not in html and 'href="file' not in html
    answer = html.split("celltag_answer", 1)[1].split("</div>", 1)[0]
    assert "href=" not in answer and "<img" not in answer
    assert "site (https://example.com)" in html and "[image: pic]" in html
    assert parse_page(html).active == []  # nothing on the page loads or links to anything


def test_the_notebook_digest_covers_code_but_not_parameters_markdown_or_answers(tmp_path):
    base = tmp_path / "base.ipynb"
    nbformat.write(course_notebook(), str(base))
    digest = fp.notebook_digest(base)

    def variant(change) -> str:
        nb = course_notebook()
        change(nb)
        path = tmp_path / f"v{len(list(tmp_path.iterdir()))}.ipynb"
        nbformat.write(nb, str(path))
        return path

    same = [lambda nb: setattr(nb.cells[0], "source", 'profile = "quick"'),  # the parameters have their own digest
            lambda nb: setattr(nb.cells[4], "source", "Adam won."),  # an answer
            lambda nb: nb.cells.insert(3, nbformat.v4.new_markdown_cell("a note")),
            lambda nb: nb.cells.insert(1, nbformat.v4.new_code_cell(
                "output_dir = 'x'", metadata={"tags": ["injected-parameters"]}))]
    assert all(fp.notebook_digest(variant(change)) == digest for change in same)
    assert fp.notebook_digest(variant(lambda nb: setattr(nb.cells[2], "source", "x = 2"))) != digest
    answered = variant(lambda nb: setattr(nb.cells[4], "source", "Adam won."))
    assert fp.answers_digest(answered) != fp.answers_digest(base) and fp.answers_digest(base)
    plain = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x = 1")])
    nbformat.write(plain, str(tmp_path / "plain.ipynb"))
    assert fp.answers_digest(tmp_path / "plain.ipynb") is None  # a toolkit notebook's fingerprint has no answers


def test_verify_names_answers_edited_after_the_run_apart_from_code(tmp_path, monkeypatch, fake_data_dir):
    ran = tmp_path / "01_mlp_grid.ipynb"
    nbformat.write(course_notebook(answer="Adam won."), str(ran))
    monkeypatch.setenv(fp.NOTEBOOK_ENV, str(ran))  # what `run` tells the kernel: the notebook that runs
    metrics = {"section": "mlp", "parameters": {"profile": "smoke"}, "data": {"source": str(fake_data_dir)},
               "best": {"name": "x"}}
    metrics["fingerprint"] = fp.fingerprint(metrics, notebook=tmp_path / "toolkit.ipynb")
    assert metrics["fingerprint"]["answers"] == fp.answers_digest(ran)
    toolkit = tmp_path / "toolkit.ipynb"
    nbformat.write(course_notebook(), str(toolkit))  # the toolkit's own: no answers, other parameters
    executed = tmp_path / "mlp.ipynb"
    nbformat.write(course_notebook(answer="Adam won."), str(executed))
    assert fp.check_fingerprint(metrics, notebook=toolkit, executed=executed) == []
    nbformat.write(course_notebook(answer="RMSprop won."), str(executed))
    problems = fp.check_fingerprint(metrics, notebook=toolkit, executed=executed)
    assert len(problems) == 1 and "answers were edited after the run" in problems[0], problems
    nb = course_notebook(answer="Adam won.")
    nb.cells[2].source = "x = 2"
    nbformat.write(nb, str(executed))
    problems = fp.check_fingerprint(metrics, notebook=toolkit, executed=executed)
    assert not any("answers" in p for p in problems)
    nb = course_notebook(answer="Adam won.")
    nb.cells[2].source = "x = 2"
    nbformat.write(nb, str(ran))
    metrics["fingerprint"] = fp.fingerprint(metrics, notebook=toolkit)
    problems = fp.check_fingerprint(metrics, notebook=toolkit, executed=executed)
    assert any("code cell 2" in p and "x = 2" in p for p in problems), problems
