"""The command line on fixture data in the smoke profile: folders, files, index, failures, batches, PDF."""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from helpers.cli.main import parse_value, route_parameters
from helpers.cli.runner import SECTIONS
from helpers.reporting.export import find_chromium

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = find_chromium()
NO_CHROMIUM = "no Chromium on this machine (Debian: apt-get install chromium); PDF export cannot be checked"
NO_PDFTOPPM = "pdftoppm (poppler-utils) is missing; PDF pages cannot be rendered"


def cli(*args, cwd=ROOT, timeout=900):
    env = {**os.environ, "HELPERS_PROGRESS": "0"}
    return subprocess.run([sys.executable, "-m", "helpers", *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout, env=env)


def test_parse_value_types_like_papermill():
    assert parse_value("3") == 3 and parse_value("0.5") == 0.5 and parse_value("1e-3") == 0.001
    assert parse_value("True") is True and parse_value("None") is None
    assert parse_value("[1, 3, 5]") == [1, 3, 5]
    assert parse_value("Ada Lovelace") == "Ada Lovelace"
    # a grid or an architecture spec
    assert parse_value('{"lr": [0.1, 0.01], "optimizer": [adam, sgd]}') == {"lr": [0.1, 0.01], "optimizer": ["adam", "sgd"]}
    assert parse_value("{blocks: [{channels: 8}], dense: [32]}") == {"blocks": [{"channels": 8}], "dense": [32]}


def test_unknown_parameter_is_refused_before_running():
    with pytest.raises(SystemExit, match="unknown parameter.*colour.*allowed:"):
        route_parameters(["mlp"], {"colour": "red"})


def test_help_lists_sections_and_parameters():
    done = cli("run", "--help")
    assert done.returncode == 0
    for section in SECTIONS:
        assert f"{section}:" in done.stdout
    assert "optimizers = " in done.stdout and "profile = " in done.stdout


def test_bad_section_and_format():
    assert "unknown section" in cli("run", "gan").stderr
    assert "--formats" in cli("run", "mlp", "--formats", "docx").stderr


@pytest.fixture(scope="module")
def all_sections_run(tmp_path_factory, fake_data_dir):
    """Every section in smoke profile; the MLP one is made to fail by a bad value only it declares."""
    out = tmp_path_factory.mktemp("reports")
    # an earlier, successful run left its metrics in the MLP folder: the failed rerun must not show them
    (out / "mlp").mkdir()
    (out / "mlp" / "metrics.json").write_text(json.dumps({"profile": "quick", "best": {"name": "stale",
                                                                                      "test": {"accuracy": 0.99}}}))
    done = cli("run", "--profile", "smoke", "--output-dir", out, "--formats", "html", "-p", "data_dir", fake_data_dir,
               "-p", "optimizers", '["adam", "adagrad"]', "-p", "author_name", "Ada Lovelace")
    return done, out


def test_failing_section_does_not_stop_the_others(all_sections_run):
    done, out = all_sections_run
    assert done.returncode == 1, done.stdout + done.stderr
    assert "FAILED: mlp" in done.stdout
    partial = out / "mlp" / "mlp.ipynb"
    assert partial.exists() and "ConfigError" in partial.read_text()
    assert (out / "mlp" / "mlp.html").exists()  # the partial notebook is still exported
    assert not (out / "mlp" / "metrics.json").exists()
    assert "stale" not in (out / "index.html").read_text() and "99.00%" not in (out / "index.html").read_text()
    for section in SECTIONS:
        if section == "mlp":
            continue
        folder = out / section
        assert (folder / f"{section}.ipynb").exists(), done.stdout
        assert (folder / f"{section}.html").exists()
        metrics = json.loads((folder / "metrics.json").read_text())
        assert metrics["profile"] == "smoke"
        assert list(folder.glob("*.png")), f"{section} wrote no figures"


def test_index_links_every_section(all_sections_run):
    _, out = all_sections_run
    index = (out / "index.html").read_text()
    for section, (_, title) in SECTIONS.items():
        assert title in index
    assert index.count(">failed<") == 1
    assert index.count("<td>smoke</td>") == 3  # the profile of each section that ran (the failed one has none)
    for href in re.findall(r'href="([^"]+)"', index):
        assert (out / href).exists(), href


@pytest.mark.skipif(CHROMIUM is None, reason=NO_CHROMIUM)
def test_index_renders_in_a_real_browser_and_links_resolve(all_sections_run, tmp_path):
    """Headless Chromium loads index.html; every link of the rendered DOM points at an existing file."""
    _, out = all_sections_run
    cmd = [CHROMIUM, "--headless", "--disable-gpu", "--no-first-run", "--disable-background-networking",
           "--disable-component-update", "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom",
           (out / "index.html").as_uri()]
    if os.geteuid() == 0:
        cmd.insert(1, "--no-sandbox")
    dom = subprocess.run(cmd, capture_output=True, text=True, timeout=120).stdout
    assert "<table>" in dom and "Transfer learning" in dom
    links = re.findall(r'href="([^"]+)"', dom)
    assert len(links) >= 3 * len(SECTIONS) - 1
    for href in links:
        assert (out / href).resolve().exists(), href


@pytest.mark.skipif(CHROMIUM is None, reason=NO_CHROMIUM)
@pytest.mark.skipif(shutil.which("pdftoppm") is None, reason=NO_PDFTOPPM)
def test_pdf_pages_are_not_blank(tmp_path, fake_data_dir):
    import numpy as np
    from PIL import Image

    done = cli("run", "mlp", "--profile", "smoke", "--output-dir", tmp_path, "--no-input", "-p", "data_dir",
               fake_data_dir, "-p", "optimizers", '["adam"]', "-p", "author_name", "Ada Lovelace")
    assert done.returncode == 0, done.stdout + done.stderr
    pdf = tmp_path / "mlp" / "mlp.pdf"
    info = subprocess.run(["pdfinfo", str(pdf)], capture_output=True, text=True).stdout
    pages = int(re.search(r"Pages:\s+(\d+)", info).group(1))
    # title + data, grid + curves, test results, confusion pairs + appendix: 4 to 15 A4 pages without code
    assert 4 <= pages <= 15, pages
    subprocess.run(["pdftoppm", "-png", "-r", "30", str(pdf), str(tmp_path / "page")], check=True)
    images = sorted(tmp_path.glob("page*.png"))
    assert len(images) == pages
    for image in images:
        gray = np.asarray(Image.open(image).convert("L"))
        assert (gray < 200).mean() > 0.005, f"{image.name} looks blank"
    text = subprocess.run(["pdftotext", str(pdf), "-"], capture_output=True, text=True).stdout
    assert "Ada Lovelace" in text and f"of {pages}" in text  # running header and page numbers
    # every page's header names the author: the -p value and the notebook's default author_id
    for page in range(2, pages + 1):
        text = subprocess.run(["pdftotext", "-f", str(page), "-l", str(page), str(pdf), "-"], capture_output=True,
                              text=True).stdout
        assert "Ada Lovelace Student ID" in text and f"Page {page} of {pages}" in text, page


def test_batch_runs_rows_and_reports_a_bad_row(tmp_path, fake_data_dir):
    """A class file as Excel saves it (a byte-order mark, CRLF): rows named in any script, values that look like
    options, a formula for a spreadsheet; a bad row is reported and the others run."""
    batch = tmp_path / "students.csv"
    batch.write_text(
        "name,author_id,sections,optimizers,regularizers\n"
        '-Ada,"=HYPERLINK(""http://x"")",mlp,"[""adam""]","[""none""]"\n'
        "Bad Row,B2,mlp,adam,\"[\"\"none\"\"]\"\n"
        "李雷,--output-dir=/tmp/x,mlp,\"[\"\"adam\"\"]\",\"[\"\"none\"\"]\"\n", encoding="utf-8-sig", newline="\r\n")
    done = cli("run", "--batch", batch, "--profile", "smoke", "--output-dir", tmp_path / "out", "--formats", "html",
               "-p", "data_dir", fake_data_dir, "--jobs", "2")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "line 3" in done.stdout  # the row with a plain string where a list is needed
    for folder, name, sid in (("Ada", "-Ada", '=HYPERLINK("http://x")'), ("李雷", "李雷", "--output-dir=/tmp/x")):
        metrics = json.loads((tmp_path / "out" / folder / "mlp" / "metrics.json").read_text())
        assert (metrics["parameters"]["author_name"], metrics["parameters"]["author_id"]) == (name, sid)
    index = (tmp_path / "out" / "index.html").read_text()
    assert "Ada/index.html" in index and "李雷/index.html" in index and "Bad Row" in index
    # the bad row's own error, not "exit 1; see run.log"
    assert "ConfigError" in index and "optimizers" in index and "exit 1" not in index
    with (tmp_path / "out" / "summary.csv").open(newline="", encoding="utf-8") as f:
        rows = {r["name"]: r for r in csv.DictReader(f)}
    # what a spreadsheet would run is text there: a leading quote
    assert rows["李雷"]["status"] == "ok" and rows["'-Ada"]["id"] == "'" + '=HYPERLINK("http://x")'


def test_a_batch_is_checked_row_by_row_without_running_or_writing(tmp_path, capsys):
    from helpers.cli.main import main

    batch = tmp_path / "students.csv"
    batch.write_text("name,schedule,lr,optimizers\nAda,none,0.1,[adam]\nBob,sometimes,0.1,[adam]\nCy,,-1,\n"
                     "ada,none,0.1,[adam]\n")
    code = main(["run", "mlp", "--batch", str(batch), "--profile", "smoke", "--output-dir", str(tmp_path / "out"),
                 "--check"])
    out = capsys.readouterr().out
    assert code == 2
    assert "line 2: Ada: valid (mlp)" in out
    assert re.search(r"error: line 3: Bob: mlp: .*schedule='sometimes' is not allowed", out)
    assert re.search(r"error: line 4: Cy: mlp: .*lr=-1 is not allowed", out)
    assert re.search(r"error: line 5: folder 'ada' differs only by case .* from 'Ada', used by line 2", out)
    assert "batch check: 1 of 4 rows valid; nothing was run" in out
    assert not (tmp_path / "out").exists()


def test_the_command_exits_with_mains_status_after_the_exit_handlers(tmp_path):
    """``command`` skips the interpreter's module teardown, not what was registered to run at exit."""
    marker = tmp_path / "handler-ran"
    script = ("import atexit, helpers.cli.main as m\n"
              f"atexit.register(lambda: open({str(marker)!r}, 'w').write('ran'))\n"
              "m.main = lambda: 3\n"
              "m.command()\n"
              "raise SystemExit('not reached')\n")
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 3 and "not reached" not in done.stderr, done.stderr
    assert marker.read_text() == "ran"
