"""helpers.grading's parts on small made-up data: the arithmetic of a metrics.json, reading hostile archives,
similarity, the rubric, the machine comparison and the rerun selection. No kernel starts."""

from __future__ import annotations

import io
import json
import shutil
import stat
import zipfile

import pytest

from helpers.grading import arithmetic, machines, similarity
from helpers.grading.handins import Limits, read_handin
from helpers.grading.lines import Graded
from helpers.grading.rerun import parse_mode, select
from helpers.grading.rubric import parse_rubric, score


def metrics(correct=(18, 15, 12, 19, 10), per_class=20) -> dict:
    """A consistent report of five classes: each class's errors go to the next class."""
    n = len(correct)
    cm = [[0] * n for _ in range(n)]
    for i, c in enumerate(correct):
        cm[i][i], cm[i][(i + 1) % n] = c, per_class - c
    names = [f"c{i}" for i in range(n)]
    cols = [sum(r[j] for r in cm) for j in range(n)]
    report = {names[i]: {"precision": cm[i][i] / cols[i], "recall": cm[i][i] / per_class, "f1-score": 0.5,
                         "support": per_class} for i in range(n)}
    return {"section": "mlp", "data": {"sizes": {"test": n * per_class}, "class_names": names, "classes": None},
            "configurations": [{"name": "a", "val_acc": 0.7, "val_loss": 0.9, "seconds": 1.0, "status": "completed"},
                               {"name": "b", "val_acc": 0.6, "val_loss": 0.8, "seconds": 1.0, "status": "completed"}],
            "best": {"name": "a", "test": {"accuracy": sum(correct) / (n * per_class), "confusion_matrix": cm,
                                           "per_class_accuracy": {names[i]: correct[i] / per_class for i in range(n)},
                                           "classification_report": report}},
            "wall_seconds": 10.0}


def test_honest_numbers_hold_together():
    assert arithmetic.arithmetic_problems(metrics()) == []
    assert arithmetic.timing_problems(metrics()) == []


def test_an_accuracy_raised_half_a_point_is_no_count_of_images():
    m = metrics()
    m["best"]["test"]["accuracy"] += 0.0025
    problems = arithmetic.arithmetic_problems(m)
    assert any("no count out of the 100 test images" in p for p in problems)
    assert any("trace/total = 74/100" in p for p in problems)


def test_a_made_up_confusion_matrix_is_named():
    m = metrics()
    m["best"]["test"]["confusion_matrix"][0] = [19, 0, 0, 0, 0]  # row sums to 19, trace changed
    problems = " | ".join(arithmetic.arithmetic_problems(m))
    assert "counts 99 images; the test set has 100" in problems
    assert "row 'c0' of the confusion matrix sums to 19" in problems
    assert "per_class_accuracy['c0'] = 0.9000; the confusion matrix gives 19/19" in problems


def test_the_best_configuration_must_be_the_tables_first():
    m = metrics()
    m["best"]["name"] = "b"
    assert "ranks 'a' first" in arithmetic.best_problems(m)[0]


def test_means_and_spreads_follow_from_the_seeds():
    m = metrics()
    m["configurations"][0].update(val_acc_mean=0.7, val_acc_std=0.01, runs=[{"val_acc": 0.6}, {"val_acc": 0.8}])
    assert "2 seeds give 0.7000 ± 0.1414" in arithmetic.spread_problems(m)[0]


def test_timings_beyond_the_wall_time_are_named():
    m = metrics()
    m["configurations"][0]["seconds"] = 100.0
    assert "more than the report's wall time" in arithmetic.timing_problems(m)[0]


def zip_bytes(members: dict[str, bytes], links: tuple[str, ...] = ()) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            info = zipfile.ZipInfo(name)
            info.external_attr = ((stat.S_IFLNK if name in links else stat.S_IFREG) | 0o644) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, data)
    return buf.getvalue()


def test_hostile_archive_members_are_refused_by_name(tmp_path):
    m = json.dumps(metrics()).encode()
    path = tmp_path / "handin-1.zip"
    path.write_bytes(zip_bytes({"mlp/metrics.json": m, "../../evil.json": b"{}", "/etc/passwd.json": b"{}",
                                "mlp/link.html": b"/etc/shadow"}, links=("mlp/link.html",)))
    h = read_handin(path)
    text = " | ".join(h.problems)
    assert "'../../evil.json': its path leaves the archive" in text
    assert "'/etc/passwd.json': its path leaves the archive" in text
    assert "'mlp/link.html': a symbolic link" in text
    assert list(h.sections) == ["mlp"] and not h.broken


def test_an_archive_of_only_refused_members_says_why_it_holds_no_report(tmp_path):
    path = tmp_path / "handin-3.zip"
    path.write_bytes(zip_bytes({"../mlp/metrics.json": json.dumps(metrics()).encode()}))
    broken = read_handin(path).broken
    assert broken.startswith("no report in it") and "'../mlp/metrics.json': its path leaves the archive" in broken


def test_an_archive_unpacking_beyond_the_limit_is_refused(tmp_path):
    path = tmp_path / "bomb.zip"
    path.write_bytes(zip_bytes({"a.json": b"0" * 2_000_000}))
    h = read_handin(path, Limits(total=1_000_000))
    assert "would unpack to 2 MB; at most 1 MB" in h.broken


def test_a_broken_archive_is_one_line_not_an_exception(tmp_path):
    path = tmp_path / "handin-2.zip"
    path.write_bytes(zip_bytes({"mlp/metrics.json": b"{}"})[:40])
    assert "is not a readable zip archive" in read_handin(path).broken


def test_a_file_changed_after_packing_is_named(tmp_path):
    m = json.dumps(metrics()).encode()
    manifest = {"files": {"mlp/metrics.json": "0" * 64}, "student": {"name": "A", "id": "1"}}
    path = tmp_path / "h.zip"
    path.write_bytes(zip_bytes({"mlp/metrics.json": m, "handin.json": json.dumps(manifest).encode()}))
    h = read_handin(path)
    assert h.problems == ["mlp/metrics.json was changed after the hand-in was packed: its sha256 is not the one "
                          "handin.json records"]
    assert h.student == {"name": "A", "id": "1"}


def test_links_in_a_folder_hand_in_are_refused(tmp_path):
    folder = tmp_path / "s1" / "mlp"
    folder.mkdir(parents=True)
    (folder / "metrics.json").write_text(json.dumps(metrics()))
    (folder / "mlp.html").symlink_to("/etc/hostname")
    h = read_handin(tmp_path / "s1")
    assert any("'mlp/mlp.html': a symbolic link" in p for p in h.problems)
    assert h.sections["mlp"].html is None


def test_identical_results_with_other_parameters_are_named():
    vector, parts = similarity.result_vector(metrics())
    other, _ = similarity.result_vector(metrics(correct=(17, 15, 12, 19, 10)))
    items = [{"id": "1", "section": "mlp", "assigned": {"init": "he"}, "vector": vector, "parts": parts},
             {"id": "2", "section": "mlp", "assigned": {"init": "xavier"}, "vector": vector, "parts": parts},
             {"id": "3", "section": "mlp", "assigned": {"init": "he"}, "vector": vector, "parts": parts},
             {"id": "4", "section": "mlp", "assigned": {"init": "normal"}, "vector": other, "parts": parts}]
    pairs = similarity.result_pairs(items)
    # 1 and 3 ran the same parameters: the same numbers are expected; 2 claims others and has their numbers
    assert [(p.a, p.b, p.one_sided) for p in pairs] == [("2", "1", True)]
    assert "the confusion matrix" in pairs[0].evidence[0] and "init 'xavier' vs 'he'" in pairs[0].evidence[0]
    two = similarity.result_pairs(items[:2])
    assert [(p.a, p.b, p.one_sided) for p in two] == [("1", "2", False), ("2", "1", False)]


def test_copied_answers_are_a_pair_and_the_question_text_is_not():
    question = "explain in your own words why the validation accuracy of adam was higher than that of rmsprop"
    copied = "I think the learning rate warm up made adam converge quickly because the curve flattens after two epochs"
    texts = {"1": f"{question}. {copied}", "2": f"{question}. Mine: {copied}",
             "3": f"{question}. Dropout regularised the network so validation loss stayed lower than training loss",
             "4": f"{question}. The schedule decayed too fast and the optimiser stalled on a plateau early on"}
    items = [{"id": k, "answers": {"q1": t}, "grams": similarity.answer_grams({"q1": t}, question, "", n=4)}
             for k, t in texts.items()]
    pairs = similarity.answer_pairs(items, threshold=0.5, n=4, common=0.6)
    assert [(p.a, p.b) for p in pairs] == [("1", "2")]
    assert "learning rate warm up made adam converge quickly" in pairs[0].evidence[0]


def test_rubric_partial_credit_and_hidden_criteria():
    rubric = parse_rubric({"criteria": [
        {"id": "present", "kind": "sections_present", "sections": ["mlp", "cnn"], "points": 4},
        {"id": "acc", "kind": "test_accuracy", "section": "mlp", "at_least": 0.8, "from": 0.6, "points": 2},
        {"id": "own", "kind": "parameters_match_variant", "points": 2, "hidden": True},
        {"id": "hand", "kind": "hand_graded", "questions": ["q1"], "points": 4}]}, [{"id": "q1", "points": 4}])
    g = Graded("A", "1", accuracy={"mlp": 0.7})
    facts = {"sections": {"mlp": {"finished": True, "profile_ok": True}, "cnn": {"finished": False}}}
    assert score(rubric.criteria[0], g, facts) == 2.0
    assert score(rubric.criteria[1], g, facts) == pytest.approx(1.0)
    assert rubric.hand == {"q1": 4.0} and rubric.total == 12
    assert rubric.hidden_checks() == {"parameters"}


def test_a_rerun_on_another_machine_is_judged_within_the_measured_spread():
    report = {"best": {"test": {"accuracy": 0.9258}}}
    assert machines.compare(report, {"best": {"test": {"accuracy": 0.9296}}}, exact=True)[0] is False
    runs = iter([{"best": {"test": {"accuracy": a}}} for a in (0.9260, 0.9290, 0.9275)])
    spread = machines.measure_spread(lambda seed: next(runs), [1, 2, 3])
    ok, lines = machines.compare(report, {"best": {"test": {"accuracy": 0.9296}}}, exact=False, spread=spread,
                                 test_size=10000)
    assert ok and "within the spread" in lines[0]
    ok, lines = machines.compare(report, {"best": {"test": {"accuracy": 0.9358}}}, exact=False, spread=spread,
                                 test_size=10000)
    assert not ok and "OUTSIDE" in lines[0]


def test_two_x86_64_machines_with_other_cpus_are_not_the_same_arithmetic():
    recorded = machines.recorded_machine({"environment": {"processor": "x86_64", "device": "cpu", "cpu_threads": 2,
                                                          "torch": "2.4"}})
    here = {"cpu_model": "AMD EPYC", "cpu_flags": ["avx2"], "device": "cpu", "gpu": None, "threads": 2,
            "torch": "2.4"}
    same, why = machines.same_arithmetic(recorded, here)
    assert not same and "cpu_model not recorded by the report" in why
    assert machines.same_arithmetic(dict(here), here) == (True, [])
    model, flags = machines.cpu_info("model name\t: Intel Xeon\nflags\t: fpu avx2 avx512f amx_tile\n")
    assert model == "Intel Xeon" and flags == ["amx_tile", "avx2", "avx512f"]


def test_rerun_selection_is_seeded_and_recorded():
    graded = [Graded(str(i), str(i)) for i in range(30)]
    graded[4].lines = []
    assert parse_mode("sample:5") == ("sample", 5)
    with pytest.raises(ValueError, match="none, sample:N, flagged, all"):
        parse_mode("some")
    first, again = select(graded, "sample", 5, seed=7), select(graded, "sample", 5, seed=7)
    assert first == again and len(first) == 5
    assert select(graded, "none", 0, 1) == [] and len(select(graded, "all", 0, 1)) == 30


def test_the_example_assignments_rubric_is_read():
    from pathlib import Path

    from helpers.course.assignment import load_assignment

    example = load_assignment(Path(__file__).resolve().parent.parent / "notebooks/assignments/course/fmnist_hw1.yaml")
    rubric = parse_rubric(example.rubric, list(example.questions))
    assert rubric.total == example.rubric["total"] == 42
    assert rubric.hand == {q.id: q.points for q in example.questions}
    assert rubric.hidden_checks() == {"parameters"}


@pytest.mark.skipif(shutil.which("pdftotext") is None, reason="needs poppler's pdftotext")
def test_a_pdf_showing_another_accuracy_is_named(tmp_path):
    from helpers.grading.checks import pdf_lines
    from helpers.grading.handins import HandIn, Section
    from helpers.reporting.export import weasyprint_pdf

    page = tmp_path / "mlp.html"
    page.write_text("<html><body><p><b>adam</b> (1,234 parameters): test accuracy <b>74.50%</b>, test loss "
                    "<b>0.8123</b></p></body></html>")
    pdf = weasyprint_pdf(page, tmp_path / "mlp.pdf").read_bytes()
    h = HandIn(tmp_path, "folder", sections={"mlp": Section("mlp", metrics(), pdf=True)}, pdfs={"mlp": pdf})
    (line,) = pdf_lines(h)
    assert line.ok is False and "mlp.pdf shows test accuracy 74.50%; metrics.json best.test.accuracy = 74.00%" \
        in line.text
