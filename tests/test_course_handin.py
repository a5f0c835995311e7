"""``fashion-report handin``: a student's folder (``start``, answers written, ``run``) checked and packed; the
hand-in PDF read page by page; each refusal names what is wrong."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import zipfile
from pathlib import Path

import nbformat
import pytest

from helpers.cli.main import main

ASSIGNMENT = """\
id: hw-test
title: "Homework <T>: a small grid"
profile: smoke
sections:
  mlp:
    grid: {optimizer: [adam], regularizer: [none, dropout]}
variants:
  mlp.activation: [relu, tanh]
questions:
  - id: q1
    title: "Which regularizer won?"
    text: "Compare the two regularizers of your grid, citing their validation accuracies."
    points: 4
    section: mlp
    after: "The grid"
  - id: q2
    title: "Where does the best model fail?"
    text: "Name the two classes the final model confuses most often and say why they look alike."
    points: 3
    section: mlp
    after: "The best configuration on the test set"
  - id: q3
    title: "Learning curves"
    text: "Is there any sign of overfitting in the learning curves?"
    points: 2
    section: mlp
    after: "Learning curves"
"""
NAME, STUDENT_ID = "Ada <b>Lovelace</b>", "2024/017"
ANSWERS = {
    "q1": "Dropout won: the best test accuracy is {mlp.best.test.accuracy:.2%}. <script>alert(1)</script> "
          "and {{literal braces}}.",
    "q2": "Shirts and T-shirts look alike at 28 by 28 pixels. " * 40,  # long enough to need a second page
}
QUESTION_TEXT = {"q1": "Compare the two regularizers of your grid", "q2": "Name the two classes the final model",
                 "q3": "Is there any sign of overfitting"}
POPPLER = shutil.which("pdftotext") is not None


def write_answers(notebook: Path, answers: dict[str, str]) -> None:
    """Type ``answers`` into the answer cells of ``notebook``, as a student would in JupyterLab."""
    nb = nbformat.read(notebook, as_version=4)
    for cell in nb.cells:
        qid = (cell.metadata.get("question") or {}).get("id")
        if "answer" in cell.metadata.get("tags", []) and qid in answers:
            cell.source = answers[qid]
    nbformat.write(nb, notebook)


@pytest.fixture(scope="module")
def student(tmp_path_factory, fake_data_dir) -> Path:
    """A student's folder after ``start``, answers to q1 and q2 (q3 left unanswered) and ``run``."""
    root = tmp_path_factory.mktemp("handin")
    (root / "hw.yaml").write_text(ASSIGNMENT)
    folder = root / "ada"
    assert main(["start", str(root / "hw.yaml"), "--name", NAME, "--id", STUDENT_ID, "-o", str(folder)]) == 0
    write_answers(folder / "01_mlp_grid.ipynb", ANSWERS)
    code = main(["run", "--folder", str(folder), "--quiet", "--no-cache", "-p", "data_dir", str(fake_data_dir)])
    assert code == 0, (folder / "reports" / "run.json").read_text()
    return folder


def copy(folder: Path, to: Path) -> Path:
    shutil.copytree(folder, to, ignore=shutil.ignore_patterns("checkpoints", "handin-*.zip"))
    return to


def handin(folder: Path, capsys, *more: str) -> tuple[int, str]:
    code = main(["handin", "--folder", str(folder), *more])
    out = capsys.readouterr()
    return code, out.out + out.err


@pytest.fixture(scope="module")
def archive(student, tmp_path_factory) -> Path:
    """The hand-in zip of an honest folder."""
    out = tmp_path_factory.mktemp("zip") / "ada.zip"
    assert main(["handin", "--folder", str(student), "-o", str(out)]) == 0
    return out


def pdf_pages(pdf: Path) -> list[str]:
    """The text of each page of ``pdf``, whitespace squashed (pdftotext)."""
    count = int(re.search(r"Pages:\s+(\d+)", subprocess.run(["pdfinfo", str(pdf)], capture_output=True,
                                                               text=True, check=True).stdout)[1])
    return [" ".join(subprocess.run(["pdftotext", "-f", str(n), "-l", str(n), str(pdf), "-"], capture_output=True,
                                    text=True, check=True).stdout.split()) for n in range(1, count + 1)]


def test_an_honest_folder_is_handed_in_with_a_warning_for_the_unanswered_question(student, tmp_path, capsys):
    folder = copy(student, tmp_path / "ada")
    code, out = handin(folder, capsys)
    assert code == 0, out
    assert "warning: q3 (Learning curves) is not answered" in out
    assert (folder / "handin-2024_017.zip").is_file()  # the id made safe for a file name
    assert not [w for w in out.splitlines() if w.startswith("warning") and ("q1" in w or "q2" in w)]


def test_the_zip_holds_the_reports_answers_and_a_manifest_whose_digests_match(archive, student):
    with zipfile.ZipFile(archive) as zf:
        infos = {i.filename: i for i in zf.infolist()}
        files = {name: zf.read(name) for name in infos}
    assert set(files) == {"handin.json", "handin.pdf", "answers.json", "course.json", "assignment.yaml",
                          "mlp/mlp.html", "mlp/mlp.pdf", "mlp/metrics.json"}
    for name, info in infos.items():  # plain files inside the root: no link, no absolute or parent path
        assert not name.startswith("/") and ".." not in name.split("/")
        assert stat.S_ISREG(info.external_attr >> 16) and not stat.S_ISLNK(info.external_attr >> 16)
    manifest = json.loads(files["handin.json"])
    assert manifest["format"] == 1 and manifest["sections"] == ["mlp"]
    assert manifest["student"] == {"name": NAME, "id": STUDENT_ID}
    course = json.loads((student / "course.json").read_text())
    assert manifest["assignment"] == {**course["assignment"]}
    assert manifest["assignment"]["digest"] == hashlib.sha256(files["assignment.yaml"]).hexdigest()
    assert manifest["files"] == {n: hashlib.sha256(d).hexdigest() for n, d in files.items() if n != "handin.json"}
    assert files["mlp/metrics.json"] == (student / "reports" / "mlp" / "metrics.json").read_bytes()
    answers = json.loads(files["answers.json"])
    assert answers["q1"] == ANSWERS["q1"] and answers["q2"] == ANSWERS["q2"]  # as written: the template
    pages = manifest["pages"]
    assert list(pages) == ["q1", "q2", "q3"] and pages["q1"][0] == 2  # the title page first
    for a, b in zip(list(pages.values()), list(pages.values())[1:]):
        assert a[0] <= a[1] and b[0] == a[1] + 1  # each question on pages of its own, in assignment order
    assert pages["q2"][1] > pages["q2"][0]  # the long answer and its figures take more than one page


@pytest.mark.skipif(not POPPLER, reason="pdftotext (poppler-utils) is not installed: the PDF's pages are not read")
def test_each_question_is_on_its_pages_only_and_every_page_has_the_header(archive, tmp_path):
    with zipfile.ZipFile(archive) as zf:
        manifest = json.loads(zf.read("handin.json"))
        (tmp_path / "handin.pdf").write_bytes(zf.read("handin.pdf"))
    texts = pdf_pages(tmp_path / "handin.pdf")
    assert manifest["pages"]["q3"][1] == len(texts)
    for number, text in enumerate(texts, 1):
        assert f"{NAME} (id {STUDENT_ID})" in text, (number, text[:300])  # the name's HTML shows as characters
        assert f"page {number} of {len(texts)}" in text
    for qid, (first, last) in manifest["pages"].items():
        for number, text in enumerate(texts, 1):
            mine = first <= number <= last
            assert (QUESTION_TEXT[qid] in text) == (number == first), (qid, number)
            assert (f"Question {qid}:" in text) == mine, (qid, number, text[:200])  # the running header
    metrics = json.loads(zipfile.ZipFile(archive).read("mlp/metrics.json"))
    q1 = texts[manifest["pages"]["q1"][0] - 1]
    assert f"the best test accuracy is {metrics['best']['test']['accuracy']:.2%}" in q1  # the run's number
    assert "<script>alert(1)</script>" in q1 and "{literal braces}" in q1  # raw HTML shows literally
    assert "Not answered yet" in texts[manifest["pages"]["q3"][0] - 1]
    assert "Homework <T>: a small grid" in texts[0] and "hw-test" in texts[0] and "smoke" in texts[0]
    assert "run_experiment(" not in " ".join(texts)  # code hidden by default


@pytest.mark.skipif(not POPPLER, reason="pdftotext (poppler-utils) is not installed: the PDF's pages are not read")
def test_with_code_shows_the_code_of_the_questions_cells(student, tmp_path, capsys):
    folder = copy(student, tmp_path / "ada")
    code, out = handin(folder, capsys, "--with-code", "-o", str(tmp_path / "code.zip"))
    assert code == 0, out
    with zipfile.ZipFile(tmp_path / "code.zip") as zf:
        (tmp_path / "handin.pdf").write_bytes(zf.read("handin.pdf"))
        pages = json.loads(zf.read("handin.json"))["pages"]
    texts = pdf_pages(tmp_path / "handin.pdf")
    assert "run_experiment(" in " ".join(texts[pages["q1"][0] - 1:pages["q1"][1]])


def refused(folder: Path, capsys) -> str:
    code, out = handin(folder, capsys)
    assert code == 1, out
    assert "not handed in" in out and not list(folder.glob("handin-*.zip"))
    return out


def test_a_failed_or_timed_out_section_is_refused_by_name(student, tmp_path, capsys):
    for status in ("failed", "timed out"):
        folder = copy(student, tmp_path / status.replace(" ", "_"))
        run = json.loads((folder / "reports" / "run.json").read_text())
        run[0].update(status=status, error="cell 9: RuntimeError: out of memory")
        (folder / "reports" / "run.json").write_text(json.dumps(run))
        out = refused(folder, capsys)
        assert f"mlp: the section {status} (cell 9: RuntimeError: out of memory)" in out


def test_a_missing_section_is_refused(student, tmp_path, capsys):
    folder = copy(student, tmp_path / "ada")
    shutil.rmtree(folder / "reports" / "mlp")
    (folder / "reports" / "run.json").unlink()
    assert "mlp: the section has not been run" in refused(folder, capsys)


def test_a_parameter_other_than_the_assignments_is_named_with_both_values(student, tmp_path, capsys):
    folder = copy(student, tmp_path / "ada")
    course = json.loads((folder / "course.json").read_text())
    theirs = course["parameters"]["mlp"]["activation"]
    other = "tanh" if theirs == "relu" else "relu"
    course["parameters"]["mlp"]["activation"] = other  # the report ran another variant than the assignment's
    (folder / "course.json").write_text(json.dumps(course))
    out = refused(folder, capsys)
    assert f"mlp: parameter activation is {theirs!r} in the report but {other!r} in course.json" in out


def test_an_edited_number_is_refused_by_the_fingerprint_and_the_page_check(student, tmp_path, capsys):
    folder = copy(student, tmp_path / "metrics")
    path = folder / "reports" / "mlp" / "metrics.json"
    metrics = json.loads(path.read_text())
    metrics["best"]["test"]["accuracy"] = 0.935
    path.write_text(json.dumps(metrics))
    assert "mlp: metrics.json was changed after the run" in refused(folder, capsys)

    folder = copy(student, tmp_path / "page")
    page = folder / "reports" / "mlp" / "mlp.html"
    shown = f"{json.loads((folder / 'reports' / 'mlp' / 'metrics.json').read_text())['best']['test']['accuracy']:.2%}"
    text = page.read_text()
    assert f"<strong>{shown}</strong>" in text
    page.write_text(text.replace(f"<strong>{shown}</strong>", "<strong>93.50%</strong>", 1))
    out = refused(folder, capsys)
    assert "mlp: mlp.html" in out and "93.50%" in out


def rerun_as(folder: Path, metrics: dict) -> None:
    """Write ``metrics`` as the report's metrics.json with the fingerprint a run of the folder's notebook as it is
    now would have given it (what a student gets by running a changed notebook)."""
    from helpers.reporting import fingerprint as fp

    metrics.pop("fingerprint", None)
    metrics["fingerprint"] = fp.fingerprint(metrics, notebook=folder / "01_mlp_grid.ipynb")
    (folder / "reports" / "mlp" / "metrics.json").write_text(json.dumps(metrics))


def test_an_edited_code_cell_is_refused_by_its_number(student, tmp_path, capsys):
    folder = copy(student, tmp_path / "code")
    for path in (folder / "01_mlp_grid.ipynb", folder / "reports" / "mlp" / "mlp.ipynb"):
        nb = nbformat.read(path, as_version=4)
        cell = next(c for c in nb.cells if c.cell_type == "code" and "report.per_class_figure" in c.source)
        cell.source += "\ntest_result['accuracy'] = 0.99  # a better number"
        nbformat.write(nb, path)
    rerun_as(folder, json.loads((folder / "reports" / "mlp" / "metrics.json").read_text()))
    out = refused(folder, capsys)
    assert "mlp: the notebook 01_mlp_grid.ipynb was changed after the run" in out
    assert re.search(r"code cell \d+ \('report\.per_class_figure\(test_result.*differs from the toolkit's", out), out


def test_code_edited_in_the_executed_notebook_after_an_honest_run_is_refused_by_its_number(student, tmp_path, capsys):
    """The run was the toolkit's (its fingerprint matches), but the notebook the pages are made from was edited."""
    folder = copy(student, tmp_path / "shown")
    path = folder / "reports" / "mlp" / "mlp.ipynb"
    nb = nbformat.read(path, as_version=4)
    cell = next(c for c in nb.cells if c.cell_type == "code" and "report.per_class_figure" in c.source)
    cell.source += "\ntest_result['accuracy'] = 0.99  # shown, never run"
    nbformat.write(nb, path)
    out = refused(folder, capsys)
    assert re.search(r"mlp: mlp\.ipynb was edited after the run: code cell \d+ \('report\.per_class_figure", out), out


def test_a_report_run_with_another_variant_is_refused_by_name(student, tmp_path, capsys):
    folder = copy(student, tmp_path / "variant")
    metrics = json.loads((folder / "reports" / "mlp" / "metrics.json").read_text())
    theirs = json.loads((folder / "course.json").read_text())["parameters"]["mlp"]["activation"]
    other = "tanh" if theirs == "relu" else "relu"
    metrics["parameters"]["activation"] = other  # the parameters cell edited to another student's variant, and run
    rerun_as(folder, metrics)
    out = refused(folder, capsys)
    assert f"mlp: parameter activation is {other!r} in the report but {theirs!r} in course.json" in out


def test_an_answer_changed_after_the_run_and_a_wrong_citation_are_refused(student, tmp_path, capsys):
    folder = copy(student, tmp_path / "ada")
    write_answers(folder / "01_mlp_grid.ipynb", {"q1": "A better answer, written after the run."})
    assert "q1: the answer in 01_mlp_grid.ipynb was changed after the run" in refused(folder, capsys)

    executed = folder / "reports" / "mlp" / "mlp.ipynb"
    write_answers(executed, {"q1": "{mlp.best.test.acuracy:.2%}"})
    write_answers(folder / "01_mlp_grid.ipynb", {"q1": "{mlp.best.test.acuracy:.2%}"})
    out = refused(folder, capsys)
    assert "q1: {mlp.best.test.acuracy}" in out and "mlp.best.test.accuracy" in out  # the closest name


def test_a_folder_without_course_json_is_not_a_student_folder(tmp_path, capsys):
    code, out = handin(tmp_path, capsys)
    assert code == 2 and "has no course.json" in out


RUBRIC = """\
criteria:
  - {id: present, kind: sections_present, sections: [mlp], points: 4}
  - {id: answered, kind: questions_answered, min_words: 5, points: 3}
  - {id: verify, kind: verify_passed, points: 4}
  - {id: alike, kind: no_similarity_flag, points: 2}
  - {id: own-variant, kind: parameters_match_variant, hidden: true, points: 2}
  - {id: written, kind: hand_graded, points: 9}
"""


def fashion_report(*args, cwd: Path) -> subprocess.CompletedProcess:
    """The command as the README shows it (``fashion-report`` is ``python -m helpers``)."""
    env = {**os.environ, "HELPERS_PROGRESS": "0"}
    return subprocess.run([sys.executable, "-m", "helpers", *map(str, args)], cwd=cwd, capture_output=True, text=True,
                          timeout=600, env=env)


def test_check_grades_real_hand_ins_through_the_command(student, archive, tmp_path):
    """`fashion-report assign` and `fashion-report check` as the README shows them, on the hand-in `handin` made
    and on a hostile archive: the real page check (verify's) reads the real pages."""
    (tmp_path / "hw.yaml").write_bytes((student / "assignment.yaml").read_bytes())
    (tmp_path / "rubric.yaml").write_text(RUBRIC)
    theirs = json.loads((student / "course.json").read_text())["parameters"]["mlp"]["activation"]
    other = "tanh" if theirs == "relu" else "relu"
    (tmp_path / "roster.csv").write_text(f'name,id,mlp.activation\n"{NAME}",{STUDENT_ID},\nBob,99,{other}\n')
    done = fashion_report("assign", "roster.csv", "hw.yaml", "-o", "students.csv", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    handins = tmp_path / "handins"
    handins.mkdir()
    shutil.copy(archive, handins / "handin-2024_017.zip")
    with zipfile.ZipFile(handins / "handin-99.zip", "w") as zf:
        zf.writestr("../mlp/metrics.json", "{}")
    done = fashion_report("check", "handins", "--roster", "students.csv", "--assignment", "hw.yaml", "--rubric",
                          "rubric.yaml", "-o", "graded", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    sheet = (tmp_path / "graded" / "grades.csv").read_text(encoding="utf-8-sig")
    rows = {r["id"]: r for r in csv.DictReader(io.StringIO(sheet))}
    ada, bob = rows[STUDENT_ID], rows["99"]
    assert ada["status"] == "checked" and ada["present"] == "4" and ada["alike"] == "2" and ada["own-variant"] == "2"
    assert ada["answered"] == "2"  # q3 was left unanswered
    # the fixture's data are not Fashion-MNIST: that, and nothing else, fails the integrity checks
    feedback = (tmp_path / "graded" / "students" / "2024_017" / "feedback.html").read_text()
    failed = re.findall(r"<li class='line-bad'><b>([^<]+)</b>", feedback)
    assert failed == ["data"] and ada["verify"] == "0" and ada["flags"] == "not Fashion-MNIST", (failed, ada)
    assert "&lt;b&gt;Lovelace&lt;/b&gt;" in feedback and "<b>Lovelace</b>" not in feedback
    assert (tmp_path / "graded" / "students" / "2024_017" / "feedback.pdf").stat().st_size > 1000
    assert bob["status"] == "broken" and bob["total"] == "0"
    bob_page = (tmp_path / "graded" / "students" / "99" / "feedback.html").read_text()
    assert "&#x27;../mlp/metrics.json&#x27;: its path leaves the archive" in bob_page or \
        "'../mlp/metrics.json': its path leaves the archive" in bob_page
    assert not (tmp_path / "mlp").exists()
    index = (tmp_path / "graded" / "index.html").read_text()
    assert "students/2024_017/feedback.html" in index and "handin/mlp.html" in index


def test_a_figure_keeps_the_width_its_notebook_shows_and_nothing_else_from_the_metadata():
    from helpers.course.handin_pdf import render_output

    png = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="
    shown = {"output_type": "display_data", "data": {"image/png": png}, "metadata": {"image/png": {"width": 711}}}
    assert '<img alt="" width="711" src="data:image/png;base64,' in render_output(shown)
    for hostile in ('711" onerror="alert(1)', 1e9, True, -5, [711]):
        shown["metadata"]["image/png"]["width"] = hostile
        page = render_output(shown)
        assert "width=" not in page and "onerror" not in page and page.startswith("<figure><img")
