"""The assignment file and ``fashion-report assign``: every error names the key, the value and what is allowed; a
30-student roster gives every value of every axis an equal share ±1 whatever its ids; pins hold; the same input
gives the same bytes; ``students.csv`` is safe to open in a spreadsheet and is what ``run --batch`` reads."""

from __future__ import annotations

import csv
import io
import os
import random
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from helpers.cli.runner import SECTIONS, notebook_path
from helpers.course.assignment import AssignmentError, load_assignment
from helpers.course.roster import RosterError, Student, assign, read_roster, students_csv
from helpers.course.variants import rule_indices, student_number, variant_for

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "notebooks" / "assignments" / "course" / "fmnist_hw1.yaml"
NOTEBOOKS = {s: notebook_path(s) for s in SECTIONS}
ENV = {**os.environ, "HELPERS_PROGRESS": "0"}


@pytest.fixture(scope="module")
def hw1():
    return load_assignment(EXAMPLE, NOTEBOOKS)


def fashion_report(*args, cwd=ROOT):
    """The command as the README shows it (``fashion-report`` is ``python -m helpers``)."""
    return subprocess.run([sys.executable, "-m", "helpers", *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, timeout=600, env=ENV)


def write_roster(path: Path, ids, extra: dict | None = None) -> Path:
    columns = ["name", "id", *(extra or {})]
    lines = [",".join(columns)] + [",".join([f"Student {i}", str(sid), *((extra or {})[c][i] for c in extra or {})])
                                   for i, sid in enumerate(ids)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def assert_balanced(hw1, variants):
    for axis, values in hw1.variants.items():
        counts = Counter(repr(v[axis]) for v in variants)
        share = len(variants) / len(values)
        assert set(counts) == {repr(v) for v in values}, axis
        assert all(abs(n - share) <= 1 for n in counts.values()), (axis, counts)


def students(ids):
    return [Student(line=i + 2, name=f"Student {i}", id=str(sid)) for i, sid in enumerate(ids)]


@pytest.mark.parametrize("ids", [
    [str(2024001 + i) for i in range(30)],                       # consecutive roll numbers
    [str(n) for n in random.Random(7).sample(range(10**6), 30)],  # random, not consecutive
    [f"B20{chr(65 + i % 26)}{i:03d}" for i in range(30)],         # letters and digits: hashed
    [str(n).zfill(6) for n in range(17, 47)],                     # leading zeros: still numbers 17..46
], ids=["consecutive", "random", "strings", "zero-padded"])
def test_thirty_students_share_every_value_of_every_axis_equally(hw1, ids):
    variants, moved, warnings = assign(hw1, students(ids))
    assert_balanced(hw1, variants)
    assert not warnings
    rule = [variant_for(hw1, sid) for sid in ids]
    assert {sid for sid, v, r in zip(ids, variants, rule) if v != r} == set(moved)
    assert len(moved) <= len(ids) // 3  # the fewest moves, not a reshuffle


def test_the_rule_is_a_pure_function_of_the_id(hw1):
    assert student_number("fmnist-hw1", "0042") == 42
    assert variant_for(hw1, "0042") == variant_for(hw1, "42") == variant_for(hw1, " 42 ")
    assert variant_for(hw1, "B20BB0030") == variant_for(hw1, "B20BB0030")
    # consecutive ids walk the first axis: any 3 consecutive ones hold xavier, he and normal once each
    for start in (1, 1000, 2024001):
        assert sorted(variant_for(hw1, str(n))["cnn.init"] for n in range(start, start + 3)) == ["he", "normal",
                                                                                                  "xavier"]
    # 12 consecutive ids (3 x 2 x 2) hold every combination once
    combos = {tuple(rule_indices(hw1.id, [3, 2, 2], n)) for n in range(500, 512)}
    assert len(combos) == 12


def test_pins_are_kept_and_the_rest_balanced(hw1):
    ids = [str(3000 + 7 * i) for i in range(30)]
    pins = {i: "he" for i in range(8)}  # 8 of 30 pinned to he: an equal share is 10
    roster = [Student(line=i + 2, name=f"S{i}", id=sid, cells={"cnn.init": pins[i]} if i in pins else {})
              for i, sid in enumerate(ids)]
    variants, moved, warnings = assign(hw1, roster)
    assert all(variants[i]["cnn.init"] == "he" for i in pins)
    assert_balanced(hw1, variants)
    assert not warnings
    # too many pins on one value: the pins win, and the command says balance was impossible
    roster = [Student(line=i + 2, name=f"S{i}", id=sid, cells={"cnn.pool": "avg"} if i < 20 else {})
              for i, sid in enumerate(ids)]
    variants, _, warnings = assign(hw1, roster)
    assert sum(v["cnn.pool"] == "avg" for v in variants) == 20
    assert len(warnings) == 1 and "cnn.pool" in warnings[0]


def test_a_pin_that_is_not_a_value_is_refused_naming_what_is_allowed(hw1, tmp_path):
    roster = write_roster(tmp_path / "r.csv", ["1", "2"], {"cnn.init": ["he", "kaiming"]})
    with pytest.raises(RosterError, match=r"line 3, cnn.init: 'kaiming' is not a value.*xavier, he, normal"):
        assign(hw1, read_roster(roster), "roster")
    roster = write_roster(tmp_path / "r.csv", ["1"], {"classes": ['"[0,2,4,6,8]"']})
    variants, _, _ = assign(hw1, read_roster(roster))
    assert variants[0]["classes"] == [0, 2, 4, 6, 8]


def test_a_roster_as_spreadsheets_export_it(tmp_path):
    excel = tmp_path / "excel.csv"  # Excel "CSV UTF-8" in a European locale: BOM, ';', CRLF, header in capitals
    excel.write_bytes("\ufeffName ;ID;Email\r\nJosé Ñúñez;0042;j@x\r\n李雷;007;\r\n;;\r\n".encode())
    rows = read_roster(excel)
    assert [(s.name, s.id) for s in rows] == [("José Ñúñez", "0042"), ("李雷", "007")]
    assert rows[0].line == 2
    cp1252 = tmp_path / "ansi.csv"
    cp1252.write_bytes("name,id\nJosé,1\n".encode("cp1252"))
    with pytest.raises(RosterError, match="not UTF-8.*Windows-1252.*CSV UTF-8"):
        read_roster(cp1252)
    utf16 = tmp_path / "unicode.csv"
    utf16.write_bytes("name\tid\nA\t1\n".encode("utf-16"))
    with pytest.raises(RosterError, match="UTF-16"):
        read_roster(utf16)


@pytest.mark.parametrize("text, message", [
    ("name,id\nAda,1\nada,2\n", r"lines 2 and 3 have the same name \('Ada' and 'ada'\)"),
    ("name,id\nAda,1\nBob,1\n", r"lines 2 and 3 have the same id"),
    ("name,student\nAda,1\n", r"no column id"),
    ("name,id\nAda,\n", r"line 2: no id"),
    ("name,id,name\nAda,1,x\n", r"column 'name' appears twice"),
    ("name,id\nAda,1,extra\n", r"line 2: 3 cells but the header has 2 columns"),
    ("name,id\n", r"has no students"),
])
def test_a_roster_that_cannot_be_trusted_is_refused_by_line(tmp_path, text, message):
    path = tmp_path / "roster.csv"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(RosterError, match=message):
        read_roster(path)


def test_students_csv_is_the_same_bytes_and_safe_in_a_spreadsheet(hw1):
    roster = [Student(2, "=HYPERLINK(\"http://evil\",\"x\")", "1"), Student(3, "@SUM(A1)", "-2"),
              Student(4, "Ada;=1+1", "0042")]
    variants, _, _ = assign(hw1, roster)
    data = students_csv(hw1, roster, variants)
    assert data == students_csv(hw1, roster, assign(hw1, roster)[0])
    rows = list(csv.DictReader(io.StringIO(data.decode("utf-8-sig"))))
    assert [r["name"] for r in rows] == ["'=HYPERLINK(\"http://evil\",\"x\")", "'@SUM(A1)", "Ada;'=1+1"]
    assert [r["id"] for r in rows] == ["1", "-2", "0042"]  # a number is not a formula; ids stay text
    assert rows[0]["cnn.grid"] == '{"norm": ["batch_norm", "dropout"]}' and rows[0]["profile"] == "smoke"
    assert list(rows[0])[:5] == ["name", "id", "cnn.init", "cnn.pool", "classes"]


@pytest.mark.parametrize("edit, message", [
    (("id: fmnist-hw1", "id: Fmnist HW1"), r"id 'Fmnist HW1'; allowed: lower-case letters"),
    (("profile: smoke", "profile: fast"), r"profile 'fast'; allowed: smoke, quick, full"),
    (("\nrubric:", "\ngrading:"), r"unknown key\(s\) grading; .*allowed: id, title"),
    (("  cnn.pool:", "  cnn.pooling:"), r"variants.cnn.pooling: no section of cnn has a parameter 'pooling'"),
    (("  cnn.pool:", "  mlp.pool:"), r"variants.mlp.pool: no section of mlp has a parameter 'pool'"),
    (("after: \"The grid\"", "after: \"The Grid\""), r"questions\[0\].after 'The Grid' is not a heading of the mlp "
                                                     r"notebook; allowed: .*'The grid'"),
    (("  - id: q2", "  - id: q1"), r"questions\[1\].id 'q1' is used by an earlier question"),
    (("    points: 3\n    section: mlp", "    points: many\n    section: mlp"), r"points 'many'; allowed: a number"),
    (("    activation: relu", "    activation: relu\n    activation: tanh"), r"key 'activation' is given twice"),
    (("    lr: 0.001\n  cnn:", "    lr: 0.001\n    output_dir: /tmp\n  cnn:"), r"sections.mlp.output_dir: set by"),
    (("    architecture: course", "    architecture: course\n    pool: max"), r"sections.cnn.pool fixes it"),
    (("  mlp:\n", "  mlp:\n    colour: red\n"), r"sections.mlp.colour: the mlp notebook has no parameter 'colour'"),
])
def test_every_assignment_error_names_the_key_the_value_and_what_is_allowed(tmp_path, edit, message):
    text = EXAMPLE.read_text(encoding="utf-8")
    assert edit[0] in text
    path = tmp_path / "a.yaml"
    path.write_text(text.replace(edit[0], edit[1], 1), encoding="utf-8")
    with pytest.raises(AssignmentError, match=message):
        load_assignment(path, NOTEBOOKS)


def test_the_example_is_checked_by_the_parameter_validation_in_every_variant(tmp_path):
    """``assign`` checks each section's parameters in every variant as ``run --check`` does: a value no section
    allows is refused with the variant and the allowed values, before any file is written."""
    bad = tmp_path / "a.yaml"
    bad.write_text(EXAMPLE.read_text().replace("[xavier, he, normal]", "[xavier, he, orthogonal]"))
    roster = write_roster(tmp_path / "roster.csv", range(1, 4))
    done = fashion_report("assign", roster, bad, "-o", tmp_path / "students.csv")
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert "sections.cnn with cnn.init='orthogonal'" in done.stderr and "orthogonal" in done.stderr
    assert not (tmp_path / "students.csv").exists()


def test_assign_through_the_command(tmp_path, hw1):
    """``fashion-report assign roster.csv ASSIGNMENT.yaml -o students.csv`` as the README gives it: 30 rows, balanced,
    the same bytes twice; a student whose row differs from the rule gets it with ``start --roster``."""
    ids = [str(n) for n in random.Random(3).sample(range(20200000, 20209999), 30)]
    roster = write_roster(tmp_path / "roster.csv", ids)
    out = tmp_path / "students.csv"
    done = fashion_report("assign", roster, EXAMPLE, "-o", out)
    assert done.returncode == 0, done.stderr
    first = out.read_bytes()
    assert fashion_report("assign", roster, EXAMPLE, "-o", out).returncode == 0 and out.read_bytes() == first
    rows = read_roster(out, "students file")
    assert [s.id for s in rows] == ids
    variants = assign(hw1, rows)[0]
    assert variants == assign(hw1, rows)[0]
    assert_balanced(hw1, variants)
    assert "cnn.init: xavier 10, he 10, normal 10" in done.stdout, done.stdout


def test_students_csv_is_a_batch_file_run_accepts(tmp_path):
    roster = write_roster(tmp_path / "roster.csv", range(1, 31))
    out = tmp_path / "students.csv"
    assert fashion_report("assign", roster, EXAMPLE, "-o", out).returncode == 0
    done = fashion_report("run", "--batch", out, "--check")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "30 of 30 rows valid" in done.stdout + done.stderr
