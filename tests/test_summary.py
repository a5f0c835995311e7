"""The class summary of a batch (summary.csv, figures, index.html in a real browser) on a batch folder written by
the test, and the planning and progress pieces of the executors (which workers, which resources, how long)."""

from __future__ import annotations

import base64
import csv
import hashlib
import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from helpers.cli.executors import Progress, gpu_ids, host_slots, local_worker_specs, row_resources
from helpers.cli.rows import row_complete
from helpers.reporting.export import find_chromium
from helpers.reporting.summary import accuracy_bins, accuracy_by_value, class_table, differing_parameters, write_summary

CHROMIUM = find_chromium()
COMMON = {"profile": "smoke", "optimizers": ["adam"], "data_dir": "/data"}
STUDENTS = [  # name, id, pooling, init, test accuracy (None: the row failed)
    ("Ada Lovelace", "0123", "max", "xavier", 0.91),
    ("Bob Byte", "0042", "avg", "xavier", 0.87),
    ("Cy Typo", "C3", "max", "he", 0.89),
    ("Dee Fail", "D4", "avg", "bogus", None),
]


def write_row(out: Path, folder: str, accuracy: float | None) -> None:
    """What ``python -m helpers run cnn`` leaves in a row's folder: run.json, index.html, the section's files."""
    section = out / folder / "cnn"
    section.mkdir(parents=True)
    (out / folder / "index.html").write_text("<html></html>")
    (section / "cnn.html").write_text("<html></html>")
    files = {"html": "cnn.html"}
    if accuracy is not None:
        (section / "metrics.json").write_text(json.dumps({"section": "cnn", "profile": "smoke", "best": {
            "name": "max + batch_norm", "test": {"accuracy": accuracy}}}))
        (section / "cnn.pdf").write_bytes(b"%PDF-1.4")
        files.update(pdf="cnn.pdf", metrics="metrics.json")
    (out / folder / "run.json").write_text(json.dumps([{"section": "cnn", "status": "ok" if accuracy else "failed",
                                                        "seconds": 12.5, "files": files}]))


@pytest.fixture(scope="module")
def batch_folder(tmp_path_factory):
    out = tmp_path_factory.mktemp("class")
    results = []
    for line, (name, sid, pooling, init, acc) in enumerate(STUDENTS, start=2):
        folder = name.replace(" ", "_")
        write_row(out, folder, acc)
        results.append({"line": line, "name": folder, "sections": ["cnn"], "status": "ok" if acc else "failed",
                        "params": {**COMMON, "author_name": name, "author_id": sid, "poolings": [pooling],
                                   "init": init},
                        "error": "" if acc else "cnn: cell 3: ConfigError: parameter init='bogus': unknown",
                        "seconds": 30.0 + line, "attempts": 1, "worker": "tcp://127.0.0.1:1234"})
    results.append({"line": 6, "name": "", "sections": [], "params": {"author_id": "E5"}, "status": "bad row",
                    "error": "line 6: no 'name' (or author_id/author_name) to name its report folder"})
    files = write_summary(out, results, source="class.csv")
    return out, files


def test_summary_csv_has_one_row_per_student_with_varied_parameters_and_headlines(batch_folder):
    out, files = batch_folder
    with files["csv"].open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["name"] for r in rows] == ["Ada Lovelace", "Bob Byte", "Cy Typo", "Dee Fail", ""]
    assert rows[0]["id"] == "0123" and rows[1]["id"] == "0042"  # identifiers stay text
    # only what differs between rows; the common profile, optimizers and data_dir are not columns
    assert {"poolings", "init"} <= set(rows[0]) and not {"profile", "optimizers", "data_dir"} & set(rows[0])
    assert rows[0]["poolings"] == '["max"]' and rows[2]["init"] == "he"
    assert float(rows[0]["cnn test accuracy"]) == 0.91 and rows[0]["cnn best"] == "max + batch_norm"
    assert rows[3]["status"] == "failed" and "init='bogus'" in rows[3]["error"] and rows[3]["cnn test accuracy"] == ""
    assert rows[4]["status"] == "bad row" and "no 'name'" in rows[4]["error"]
    assert rows[0]["wall_seconds"] == "32.0" and rows[0]["attempts"] == "1"
    assert rows[0]["cnn pdf"] == "Ada_Lovelace/cnn/cnn.pdf" and rows[3]["cnn pdf"] == ""  # links only to files made


def test_class_figures_are_drawn_titled_and_saved(batch_folder):
    out, files = batch_folder
    stems = {p.stem for p in files["figures"]}
    assert stems == {"accuracy_distribution", "accuracy_by_poolings", "accuracy_by_init"}
    for stem in stems:
        assert (out / f"{stem}.png").stat().st_size > 5000
        svg = (out / f"{stem}.svg").read_text()
        assert "test accuracy (%)" in svg.replace("&#37;", "%") or "test accuracy" in svg
    page = files["html"].read_text()
    assert "src='accuracy_by_poolings.png'" in page


def test_accuracy_grouped_by_assigned_value():
    table = class_table(Path("/nonexistent"), [])
    assert table.empty
    import pandas as pd

    table = pd.DataFrame({"init": ["he", "xavier", "he"], "cnn test accuracy": [0.8, 0.9, 0.6]})
    groups = accuracy_by_value(table, "init", "cnn test accuracy").set_index("init")
    assert groups.loc["he", "students"] == 2 and groups.loc["he", "mean"] == pytest.approx(0.7)
    assert groups.loc["xavier", "max"] == 0.9
    assert accuracy_bins(pd.Series([61.0, 74.0])) == [60, 62, 64, 66, 68, 70, 72, 74, 76]


def test_differing_parameters_compare_rows_with_defaults():
    rows = [{"status": "ok", "params": {"seed": 1, "author_id": "a"}}, {"status": "ok", "params": {"author_id": "b"}},
            {"status": "ok", "params": {"lr": 0.1}}, {"status": "failed", "params": {"lr": 0.1}},
            {"status": "bad row", "params": {"colour": "red"}}]
    # seed set on one row only (the others take the default) is varied; author_id is identity, not assignment
    assert differing_parameters(rows) == ["seed", "lr"]


def test_page_links_resolve_and_it_needs_nothing_online(batch_folder):
    out, files = batch_folder
    page = files["html"].read_text()
    refs = re.findall(r"(?:href|src)='([^']+)'", page) + re.findall(r'(?:href|src)="([^"]+)"', page)
    assert len(refs) >= 4 * 3
    for ref in refs:
        assert (out / ref).exists(), ref
    assert "http://" not in page and "https://" not in page  # no CDN: inline CSS and JS only


def chromium_dom(page: Path, tmp_path: Path) -> str:
    cmd = [CHROMIUM, "--headless", "--disable-gpu", "--no-first-run", "--disable-background-networking",
           "--disable-component-update", "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}",
           "--virtual-time-budget=2000", "--dump-dom", page.as_uri()]
    if os.geteuid() == 0:
        cmd.insert(1, "--no-sandbox")
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120).stdout


@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium on this machine (Debian: apt-get install chromium)")
def test_page_renders_and_a_header_click_sorts_the_table(batch_folder, tmp_path):
    out, files = batch_folder
    dom = chromium_dom(files["html"], tmp_path)
    assert "<table class=\"sortable\">" in dom and "Dee Fail" in dom
    for href in re.findall(r'(?:href|src)="([^"]+)"', dom):
        assert (out / href).exists(), href
    # the same page with a click on the test-accuracy header, twice (ascending, then descending)
    # The page's policy runs no script but its own sort script: a script added to the page (as a value that escaped
    # escaping would add one) does nothing, and the same script admitted by its digest clicks the header.
    column = "cnn test accuracy"
    click = ("const th = [...document.querySelectorAll('th')].find(h => h.textContent === '" + column + "');"
             "th.click(); th.click();")
    page = files["html"].read_text().replace("</body>", f"<script>{click}</script></body>")
    blocked = out / "blocked.html"
    blocked.write_text(page)
    assert 'data-dir="desc"' not in chromium_dom(blocked, tmp_path)
    clicked = out / "clicked.html"
    admitted = "'sha256-" + base64.b64encode(hashlib.sha256(click.encode()).digest()).decode() + "'"
    clicked.write_text(page.replace("script-src ", f"script-src {admitted} ", 1))
    dom = chromium_dom(clicked, tmp_path)
    names = re.findall(r"<tr><td[^>]*>\d+</td><td>([^<]*)</td>", dom)
    assert names[:3] == ["Ada Lovelace", "Cy Typo", "Bob Byte"], names  # 91 %, 89 %, 87 %
    assert 'data-dir="desc"' in dom


def test_row_complete_needs_every_file_its_run_listed(tmp_path):
    write_row(tmp_path, "Ada", 0.9)
    assert row_complete(tmp_path / "Ada", ["cnn"])
    (tmp_path / "Ada" / "cnn" / "cnn.pdf").unlink()  # a row killed while exporting
    assert not row_complete(tmp_path / "Ada", ["cnn"])
    write_row(tmp_path, "Bob", None)
    assert not row_complete(tmp_path / "Bob", ["cnn"])


def test_local_cluster_plans_one_pinned_worker_per_gpu():
    assert gpu_ids(None, 2) == ["0", "1"]
    assert gpu_ids("2,3", 2) == ["2", "3"] and gpu_ids("", 2) == [] and gpu_ids("-1", 1) == []
    specs = local_worker_specs(jobs=1, gpus=["2", "3"], cores=16)
    assert [s["env"]["CUDA_VISIBLE_DEVICES"] for s in specs] == ["2", "3"]
    assert all(s["resources"] == {"GPU": 1} and s["threads"] == 8 for s in specs)
    cpu = local_worker_specs(jobs=3, gpus=[], cores=16)
    assert len(cpu) == 3 and all(s["resources"] == {} and s["env"]["OMP_NUM_THREADS"] == "5" for s in cpu)


def test_rows_ask_for_a_gpu_only_where_workers_offer_them():
    cpu = {"tcp://a:1": {"host": "a", "nthreads": 1, "resources": {}},
           "tcp://a:2": {"host": "a", "nthreads": 1, "resources": {}},
           "tcp://b:1": {"host": "b", "nthreads": 4, "resources": {}}}
    assert row_resources(cpu) is None
    assert host_slots(cpu) == {"a": 2, "b": 4}
    assert row_resources({**cpu, "tcp://g:1": {"host": "g", "nthreads": 1, "resources": {"GPU": 1}}}) == {"GPU": 1}


def test_progress_counts_rows_and_estimates_the_time_left(capsys):
    class Log:  # not a terminal: one line per change
        lines: list[str] = []

        def isatty(self):
            return False

        def write(self, text):
            self.lines.append(text)

        def flush(self):
            pass

    log = Log()
    progress = Progress(total=4, slots=2, stream=log)
    progress.started("a")
    progress.started("b")
    assert progress.line() == "[batch] 0/4 done (0 failed), 2 running, 2 waiting; estimating time left"
    progress.event("end", "a")  # a Dask row's process ended; its result is not in yet
    progress.started("c")
    assert "2 running, 1 waiting" in progress.line()
    progress.finished({"line": 2, "name": "a", "status": "failed", "seconds": 60.0, "error": "boom"})
    assert "line 2: a: failed (boom)" in capsys.readouterr().out
    assert progress.line().startswith("[batch] 1/4 done (1 failed), 2 running, 1 waiting; ~")
    # 1 waiting x 60 s + what is left of the 2 running, over 2 slots: at most 90 s
    assert 0 < progress.estimate() <= 90
