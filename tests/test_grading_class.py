"""``check`` over a small made-up class: honest hand-ins get full marks, each forged one is flagged for its own
reason, the grade sheet is safe for a spreadsheet, hidden criteria stay hidden, the grader's marks survive a second
``check``, and a second ``check`` reads only what changed. The hand-ins are made here with the toolkit's own
fingerprint recipe (no kernel starts); the page check is a stand-in for verify's."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import zipfile
from pathlib import Path

import pytest

from helpers.grading import grade
from helpers.grading.classcheck import check_class
from helpers.grading.grade import Options, Tools
from helpers.paths import notebook_path
from helpers.reporting.fingerprint import FASHION_MNIST_DIGEST, digest, notebook_digest, parameters_digest, stable
from helpers.sections import SECTIONS

ASSIGNMENT = """\
id: test-hw
title: "Test homework"
profile: smoke
sections:
  mlp: {lr: 0.001}
  cnn: {lr: 0.002}
variants:
  init: [xavier, he]
questions:
  - {id: q1, title: "Why?", text: "Explain the learning curves in your own words.", points: 3, section: mlp,
     after: "The grid"}
rubric:
  criteria:
    - {id: present, kind: sections_present, sections: [mlp, cnn], points: 4}
    - {id: answered, kind: questions_answered, min_words: 5, points: 1}
    - {id: verify, kind: verify_passed, points: 4}
    - {id: alike, kind: no_similarity_flag, points: 2}
    - {id: own-variant, kind: parameters_match_variant, hidden: true, points: 2}
    - {id: written, kind: hand_graded, questions: [q1], points: 3}
"""
RESULTS = {"xavier": (18, 15, 12, 19, 10), "he": (17, 16, 11, 18, 12)}


def report(section: str, init: str, student: tuple[str, str], correct=None) -> dict:
    """A consistent metrics.json of five classes with a valid fingerprint for the toolkit's notebook."""
    correct = correct or RESULTS[init]
    n = len(correct)
    cm = [[0] * n for _ in range(n)]
    for i, c in enumerate(correct):
        cm[i][i], cm[i][(i + 1) % n] = c, 20 - c
    names = [f"c{i}" for i in range(n)]
    lr = 0.001 if section == "mlp" else 0.002
    m = {"section": section, "parameters": {"profile": "smoke", "lr": lr, "init": init, "author_name": student[0],
                                            "author_id": student[1], "seed": 0},
         "data": {"sizes": {"test": 100}, "class_names": names},
         "configurations": [{"name": "a", "val_acc": 0.7, "val_loss": 0.9, "seconds": 1.0, "status": "completed"},
                            {"name": "b", "val_acc": 0.6, "val_loss": 1.0, "seconds": 1.0, "status": "completed"}],
         "histories": {"a": [{"epoch": 1, "train_loss": 1.0 + sum(correct) / 1000, "val_acc": 0.7}]},
         "best": {"name": "a", "test": {"accuracy": sum(correct) / 100, "confusion_matrix": cm,
                                        "per_class_accuracy": {names[i]: correct[i] / 20 for i in range(n)}}},
         "environment": {"device": "cpu", "processor": "x86_64"}, "wall_seconds": 5.0}
    seal(m)
    return m


def seal(m: dict) -> None:
    """The fingerprint the run writes (recomputed after an edit, as a careful forger would)."""
    vol = SECTIONS[m["section"]].volatile
    fp = {"parameters": parameters_digest(m["parameters"], vol),
          "notebook": notebook_digest(notebook_path(m["section"])), "data": FASHION_MNIST_DIGEST}
    m["fingerprint"] = fp
    fp["results"] = digest(stable(m, vol))
    fp["short"] = digest({k: fp[k] for k in ("parameters", "notebook", "data", "results")})[:12]


def handin(path: Path, student: tuple[str, str], init: str, answer: str, *, edit=None, drop=()) -> None:
    files = {"answers.json": json.dumps({"q1": answer}).encode(),
             "course.json": json.dumps({"student": {"name": student[0], "id": student[1]}}).encode()}
    for section in ("mlp", "cnn"):
        if section in drop:
            continue
        m = report(section, init, student)
        files[f"{section}/metrics.json"] = json.dumps(m).encode()
        files[f"{section}/{section}.html"] = b"<html><body>a page</body></html>"
    if edit:
        edit(files)
    manifest = {"format": 1, "assignment": {"id": "test-hw"}, "student": {"name": student[0], "id": student[1]},
                "files": {p: hashlib.sha256(d).hexdigest() for p, d in files.items()}}
    files["handin.json"] = json.dumps(manifest).encode()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    path.write_bytes(buf.getvalue())


def answer(seed: int) -> str:
    words = "loss curve epoch optimizer falls rises stays flat noisy smooth early late because while".split()
    return " ".join(words[(seed * 7 + i * (seed + 3)) % len(words)] for i in range(30))


def page_problems(html: str, metrics: dict, name: str) -> list[str]:
    return [f"{name}: headline shows 99.00%"] if "EDITED" in html else []


@pytest.fixture()
def klass(tmp_path):
    (tmp_path / "hw.yaml").write_text(ASSIGNMENT)
    students = [("Ada", "001", "xavier"), ("Bob", "002", "he"), ("=HYPERLINK(\"x\")", "003", "xavier"),
                ("Dan", "004", "he"), ("Eve", "005", "xavier"), ("Fay", "006", "he"), ("Gus", "007", "xavier"),
                ("Hal", "008", "he"), ("Ivy", "009", "xavier")]
    (tmp_path / "students.csv").write_text("name,id,init\n" + "".join(
        f'"{n.replace(chr(34), chr(34) * 2)}",{i},{v}\n' for n, i, v in students))
    folder = tmp_path / "handins"
    folder.mkdir()
    for k, (name, sid, init) in enumerate(students[:3]):
        handin(folder / f"handin-{sid}.zip", (name, sid), init, answer(k))

    def forge_matrix(files):
        m = json.loads(files["mlp/metrics.json"])
        m["best"]["test"]["confusion_matrix"][0] = [20, 0, 0, 0, 0]
        seal(m)
        files["mlp/metrics.json"] = json.dumps(m).encode()

    def edit_page(files):
        files["cnn/cnn.html"] = b"<html><body>EDITED</body></html>"

    def copied(files):  # Ada's results, made to look like Dan's variant
        for s in ("mlp", "cnn"):
            m = report(s, "xavier", ("Dan", "004"))
            m["parameters"]["init"] = "he"
            seal(m)
            files[f"{s}/metrics.json"] = json.dumps(m).encode()

    handin(folder / "handin-004.zip", ("Dan", "004"), "he", answer(0), edit=copied)
    handin(folder / "handin-005.zip", ("Eve", "005"), "xavier", answer(4), edit=forge_matrix)
    handin(folder / "handin-006.zip", ("Fay", "006"), "xavier", answer(5))  # ran the wrong variant
    handin(folder / "handin-007.zip", ("Gus", "007"), "xavier", answer(6), edit=edit_page)
    handin(folder / "handin-008.zip", ("Hal", "008"), "he", answer(7), drop=("cnn",))
    (folder / "handin-009.zip").write_bytes(b"PK\x03\x04 cut short")
    return tmp_path


def run(klass, **kw) -> dict[str, dict]:
    options = Options(pdf=False, progress=False, **kw)
    check_class(klass / "handins", klass / "students.csv", klass / "hw.yaml", out=klass / "graded", options=options,
                tools=Tools(page_problems=page_problems), log=lambda *_: None)
    text = (klass / "graded" / "grades.csv").read_text(encoding="utf-8-sig")
    return {r["id"]: r for r in csv.DictReader(io.StringIO(text))}


def test_a_class_is_graded_as_a_grader_would_want(klass):
    rows = run(klass)
    assert [rows[i]["total"] for i in ("002", "003")] == ["13", "13"]  # full marks (hand marks aside)
    assert rows["002"]["flags"] == rows["003"]["flags"] == ""
    # the copy's numbers are those of every hand-in of Ada's variant: only the one claiming other parameters is
    # named; who copied whose answers no file can tell, so Ada is named in that pair too, for the grader to read
    assert rows["001"]["flags"] == "similar answers"
    # a flag is for the grader to read: the pair's criterion is left empty for them on both sides, not zeroed
    assert rows["001"]["alike"] == rows["004"]["alike"] == "" and rows["001"]["total"] == "11"
    assert rows["004"]["flags"] == "similar results; similar answers"
    assert "numbers do not add up" in rows["005"]["flags"]
    assert rows["006"]["flags"] == "wrong variant"
    assert rows["007"]["flags"] == "page differs from metrics.json"
    assert rows["008"]["flags"] == "missing section" and rows["008"]["present"] == "2"
    assert rows["009"]["flags"] == "hand-in unreadable" and rows["009"]["status"] == "broken"
    assert list(rows["001"])[:2] == ["name", "id"] and "q1 (hand)" in rows["001"]
    assert rows["003"]["name"].startswith("'=HYPERLINK")  # a spreadsheet shows it, never runs it


def test_feedback_hides_hidden_criteria_and_names_the_reason(klass):
    run(klass)
    fay = (klass / "graded" / "students" / "006" / "feedback.html").read_text()
    assert "own-variant" not in fay and "init" not in fay  # the hidden criterion and its check
    gus = (klass / "graded" / "students" / "007" / "feedback.html").read_text()
    assert "headline shows 99.00%" in gus
    index = (klass / "graded" / "index.html").read_text()
    assert "Content-Security-Policy" in index and "=HYPERLINK(&quot;x&quot;)" in index
    assert "Similar hand-ins (" in index


def test_the_graders_marks_survive_a_second_check(klass):
    run(klass)
    path = klass / "graded" / "grades.csv"
    rows = list(csv.reader(io.StringIO(path.read_text(encoding="utf-8-sig"))))
    header = rows[0]
    bob = next(r for r in rows if r[1] == "002")
    bob[header.index("q1 (hand)")] = "2.5"
    bob[header.index("comments")] = "clear curves"
    ada = next(r for r in rows if r[1] == "001")
    ada[header.index("alike")] = "2"  # the grader read the pair: Ada's answers were copied, not hers the copy
    out = io.StringIO()
    csv.writer(out, delimiter=";").writerows(rows)  # saved again by a European spreadsheet
    path.write_text("\ufeff" + out.getvalue(), encoding="utf-8")
    again = run(klass)
    assert again["002"]["q1 (hand)"] == "2.5" and again["002"]["comments"] == "clear curves"
    assert again["002"]["total"] == "15.5"
    assert again["001"]["alike"] == "2" and again["001"]["total"] == "13" and again["004"]["alike"] == ""
    assert "clear curves" in (klass / "graded" / "students" / "002" / "feedback.html").read_text()


def test_a_second_check_reads_only_what_changed(klass, monkeypatch):
    run(klass)
    seen = []
    original = grade.check_one
    monkeypatch.setattr(grade, "check_one", lambda path, ctx=None: seen.append(path.name) or original(path, ctx))
    handin(klass / "handins" / "handin-002.zip", ("Bob", "002"), "he", answer(1) + " more words")
    run(klass)
    assert seen == ["handin-002.zip"]
    seen.clear()
    run(klass, force=True, jobs=1)
    assert len(seen) == 9


def test_reruns_are_judged_within_the_spread_measured_here(klass):
    """Reruns through a stand-in executor: the grader's machine differs from what the reports record, so each
    number is judged within the spread of the extra seeds; a failed rerun is that student's line only."""
    calls = []

    def run_rows(rows, timeout):
        calls.append([r["key"] for r in rows])
        out = {}
        for r in rows:
            m = json.loads(json.dumps(r["metrics"]))
            seed = m["parameters"]["seed"]
            m["best"]["test"]["accuracy"] += {0: 0.01, 1001: 0.0, 1002: 0.02, 1003: 0.01}.get(seed, 0.0)
            out[r["key"]] = (None, "the rerun timed out after 5 s") if r["key"].startswith("002/") else (m, None)
        return out

    here = {"cpu_model": "Grader CPU", "cpu_flags": ["avx2"], "device": "cpu", "gpu": None, "threads": 2,
            "precision": None, "torch": "x"}
    options = Options(pdf=False, progress=False, rerun="all", timeout=5, spread_seeds=3)
    written = check_class(klass / "handins", klass / "students.csv", klass / "hw.yaml", out=klass / "graded",
                          options=options, tools=Tools(page_problems=page_problems, run_rows=run_rows,
                                                       here=lambda: here), log=lambda *_: None)
    rerun = written.result.rerun
    assert rerun["mode"] == "all" and len(rerun["students"]) == 8  # every hand-in checked (the broken one aside)
    # one call for the class (the executor spreads it); 3 more seeds for each of the 4 configurations (2 sections
    # x 2 variants): students who ran the same configuration share its spread
    assert len(calls) == 1 and sum(k.startswith("spread/") for k in calls[0]) == 3 * 4
    for sid in rerun["students"]:
        g = next(x for x in written.result.graded if x.id == sid)
        lines = [x for x in g.lines if x.check == "rerun"]
        assert len(lines) == (1 if sid == "008" else 2)  # Hal handed in no CNN
        if sid == "002":
            assert all(not x.ok and "timed out" in x.text for x in lines)
        else:
            assert all(x.ok and "judged statistically" in x.text and "within the spread" in x.text for x in lines)


def test_a_second_check_does_not_rerun_what_it_reran(klass):
    calls = []

    def run_rows(rows, timeout):
        calls.append(len(rows))
        return {r["key"]: (r["metrics"], None) for r in rows}

    tools = Tools(page_problems=page_problems, run_rows=run_rows, here=lambda: {"cpu_model": "x"})
    for _ in range(2):
        written = check_class(klass / "handins", klass / "students.csv", klass / "hw.yaml", out=klass / "graded",
                              options=Options(pdf=False, progress=False, rerun="sample:3"), tools=tools,
                              log=lambda *_: None)
        assert sum(x.check == "rerun" for g in written.result.graded for x in g.lines) >= 3
    assert len(calls) == 1  # the second check reused the first one's sample (its seed) and its reruns
