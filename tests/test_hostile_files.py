"""Nothing a reader depends on is lost: the HTML, the PDF, run.json and index.html are replaced only by complete
files (a full disk stood in by a file-size limit), a report folder is written by one run at a time, and an
executed notebook that someone edited is kept, not overwritten."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

from helpers.cli import runner
from helpers.reporting import export

ROOT = Path(__file__).resolve().parent.parent
POSIX = pytest.mark.skipif(os.name != "posix", reason="resource limits, fcntl and signals are POSIX")


def notebook(path: Path, text: str = "first", *, big: int = 0) -> Path:
    nb = new_notebook()
    nb.cells = [new_markdown_cell(f"# Report\n\n{text}"),
                new_code_cell("x = 1", outputs=[new_output("stream", name="stdout", text="y" * big)])]
    nbformat.write(nb, str(path))
    return path


def limited(code: str, limit: int, tmp_path: Path) -> subprocess.CompletedProcess:
    """Run ``code`` in a new interpreter whose files cannot grow past ``limit`` bytes (a full disk): writing past
    it fails with EFBIG instead of the signal that would kill the process."""
    prelude = ("import resource, signal\nsignal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
               f"import helpers.reporting.export, helpers.cli.runner, helpers.cli.main\n"
               f"resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, {limit}))\n")
    return subprocess.run([sys.executable, "-c", prelude + code], cwd=ROOT, capture_output=True, text=True,
                          timeout=300, env={**os.environ, "HELPERS_PROGRESS": "0"})


@POSIX
def test_html_export_on_a_full_disk_leaves_the_previous_report(tmp_path):
    good = export.export_html(notebook(tmp_path / "old.ipynb", "the previous good report"), tmp_path / "r.html")
    before = good.read_bytes()
    notebook(tmp_path / "new.ipynb", "a bigger new report", big=300_000)
    call = f"helpers.reporting.export.export_html({str(tmp_path / 'new.ipynb')!r}, {str(good)!r})"
    done = limited(call, 200_000, tmp_path)
    assert done.returncode != 0 and "File too large" in done.stderr, done.stderr[-2000:]
    assert good.read_bytes() == before  # not a truncated 200,000-byte file
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary file left


@POSIX
def test_pdf_export_on_a_full_disk_or_a_failing_printer_leaves_the_previous_pdf(tmp_path, monkeypatch):
    pytest.importorskip("weasyprint")
    html = export.export_html(notebook(tmp_path / "r.ipynb", "text " * 20_000), tmp_path / "r.html")
    pdf = tmp_path / "r.pdf"
    pdf.write_bytes(b"%PDF-1.4\n% the previous good PDF\n%%EOF\n")
    before = pdf.read_bytes()
    call = f"helpers.reporting.export.export_pdf({str(html)!r}, {str(pdf)!r}, engine='weasyprint')"
    done = limited(call, 20_000, tmp_path)
    assert done.returncode != 0, done.stderr[-2000:]
    assert pdf.read_bytes() == before
    # a printer that fails: the old PDF is not deleted first
    broken = tmp_path / "bin" / "chromium"
    broken.parent.mkdir()
    broken.write_text("#!/bin/sh\necho 'cannot open display' >&2\nexit 1\n")
    broken.chmod(0o755)
    monkeypatch.setenv("CHROMIUM", str(broken))
    with pytest.raises(export.ExportError):
        export.export_pdf(html, pdf, engine="chromium")
    assert pdf.read_bytes() == before


def test_a_truncated_pdf_is_not_taken_for_a_complete_one(tmp_path):
    whole = tmp_path / "whole.pdf"
    whole.write_bytes(b"%PDF-1.7\n" + b"x" * 5000 + b"\nstartxref\n12\n%%EOF\n")
    cut = tmp_path / "cut.pdf"
    cut.write_bytes(whole.read_bytes()[:3000])
    assert export.complete_pdf(whole) and not export.complete_pdf(cut)
    assert not export.complete_pdf(tmp_path / "missing.pdf")


@POSIX
def test_index_and_run_json_on_a_full_disk_keep_the_previous_ones(tmp_path):
    out = tmp_path / "reports"
    (out / "mlp").mkdir(parents=True)
    index, run_json = out / "index.html", out / "run.json"
    index.write_text("<html>previous index</html>")
    run_json.write_text(json.dumps([{"previous": "run"}]))
    before = index.read_text(), run_json.read_text()
    status = {"section": "mlp", "title": "MLP", "folder": str(out / "mlp"), "status": "ok", "error": None,
              "files": {}, "seconds": 1.0}
    # index.html: a page with a long error line, past the limit
    done = limited(f"helpers.cli.runner.write_index(__import__('pathlib').Path({str(out)!r}), "
                   f"[{{**{status!r}, 'error': 'e' * 20000}}])", 8192, tmp_path)
    assert done.returncode != 0 and index.read_text() == before[0], done.stderr[-1500:]
    # run.json, written by the command itself (its sections replaced by one that returns a long status)
    code = (f"import helpers.cli.main as c\nc.run_section = lambda s, **k: {{**{status!r}, 'notebook': 'n' * 20000}}\n"
            f"c.main(['run', 'mlp', '--output-dir', {str(out)!r}, '--quiet'])")
    done = limited(code, 8192, tmp_path)
    assert done.returncode != 0, done.stdout[-1500:] + done.stderr[-1500:]
    assert run_json.read_text() == before[1]


def test_index_has_a_policy_and_escapes_the_status(tmp_path):
    page = runner.write_index(tmp_path, [{"section": "mlp", "title": "<b>t</b>", "status": "<img src=x onerror=1>",
                                          "error": None, "files": {}, "seconds": 1.0}]).read_text()
    assert "Content-Security-Policy" in page and "<img src=x" not in page and "&lt;img src=x" in page


# --- one run at a time in a folder --------------------------------------------------------------------------------

HOLDER = """
import sys, time
from helpers.cli.folderlock import FolderLock
lock = FolderLock(sys.argv[1]).acquire()
print("locked", flush=True)
time.sleep(300)
"""


def hold(folder: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(folder)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc


@pytest.fixture
def fake_kernel(monkeypatch):
    """``kernels.execute`` replaced by one that writes an executed notebook at once (and counts its calls)."""
    from helpers.cli import kernels

    calls = []

    def execute(notebook_path, executed, *, parameters, cwd, timeout=None):
        calls.append(parameters)
        notebook(Path(executed), f"run {len(calls)}")

    monkeypatch.setattr(kernels, "execute", execute)
    monkeypatch.setenv("HELPERS_PROGRESS", "0")
    monkeypatch.setenv("HELPERS_RESUME", "0")
    return calls


def run(tmp_path, said):
    return runner.run_section("mlp", output_dir=tmp_path, parameters={"profile": "smoke"}, formats=("html",),
                              log=said.append, progress=False)


@POSIX
def test_a_second_run_into_a_folder_being_written_is_refused_naming_the_first(tmp_path, fake_kernel):
    folder = tmp_path / "mlp"
    folder.mkdir()
    (folder / "metrics.json").write_text('{"section": "mlp", "from": "the first run"}')
    first = hold(folder)
    try:
        said = []
        status = run(tmp_path, said)
    finally:
        first.kill()
        first.wait()
    assert status["status"] == "busy" and fake_kernel == []  # nothing ran
    assert (folder / "metrics.json").read_text() == '{"section": "mlp", "from": "the first run"}'
    assert not (folder / "mlp.ipynb").exists() and not (folder / "mlp.html").exists()
    message = status["error"]
    assert f"pid {first.pid}" in message and socket.gethostname() in message
    assert "-c" in message and re.search(r"since \d{4}-\d\d-\d\dT\d\d:\d\d", message), message
    assert any("refused" in line for line in said)


@POSIX
def test_a_lock_left_by_a_killed_run_is_taken_over_with_a_note(tmp_path, fake_kernel):
    folder = tmp_path / "mlp"
    first = hold(folder)
    first.send_signal(signal.SIGKILL)  # killed: no cleanup ran, its record is still in the lock file
    first.wait()
    assert str(first.pid) in (folder / ".helpers-run.lock").read_text()
    said = []
    status = run(tmp_path, said)
    assert status["status"] == "ok" and len(fake_kernel) == 1
    note = next(line for line in said if "took over" in line)
    assert f"pid {first.pid}" in note and "no longer running" in note
    said.clear()
    assert run(tmp_path, said)["status"] == "ok" and not any("took over" in line for line in said)  # released


def test_a_planted_lock_record_is_shown_as_plain_text(tmp_path):
    from helpers.cli.folderlock import FolderBusy, FolderLock

    folder = tmp_path / "handed-in"
    folder.mkdir()
    (folder / ".helpers-run.lock").write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                                          "command": "\x1b]0;owned\x07" + "x" * 10_000 + "\n$ rm",
                                                          "started": "\x1b[2J"}))
    with FolderLock(folder) as mine:  # its pid runs (this process) but it holds no lock: taken over
        assert "took over" in mine.note and "\x1b" not in mine.note and "\n" not in mine.note
        assert len(mine.note) < 1000
        with pytest.raises(FolderBusy, match="being written by pid"):
            FolderLock(folder).acquire()


# --- an executed notebook edited since the toolkit wrote it is kept ----------------------------------------------

def test_an_edited_notebook_is_kept_and_an_untouched_one_overwritten(tmp_path, fake_kernel):
    folder = tmp_path / "mlp"
    said = []
    run(tmp_path, said)
    run(tmp_path, said)  # the toolkit's own notebook, unchanged: overwritten without a word
    assert not list(folder.glob("mlp.*-*.ipynb")) and not any("kept as" in line for line in said)
    edited = nbformat.read(str(folder / "mlp.ipynb"), as_version=4)
    edited.cells.append(new_markdown_cell("My conclusions, written by hand."))
    nbformat.write(edited, str(folder / "mlp.ipynb"))
    run(tmp_path, said)
    [kept] = folder.glob("mlp.edited-*.ipynb")
    assert re.fullmatch(r"mlp\.edited-\d{8}-\d{6}\.ipynb", kept.name)
    assert "My conclusions" in kept.read_text() and "My conclusions" not in (folder / "mlp.ipynb").read_text()
    assert any("was changed since the toolkit wrote it" in line and kept.name in line for line in said)
    # a second edit, kept beside the first (never over it)
    (folder / "mlp.ipynb").write_text((folder / "mlp.ipynb").read_text().replace("run 3", "run 3, edited"))
    run(tmp_path, said)
    assert len(list(folder.glob("mlp.edited-*.ipynb"))) == 2


def test_a_notebook_the_toolkit_did_not_record_is_kept(tmp_path, fake_kernel):
    folder = tmp_path / "mlp"
    folder.mkdir()
    notebook(folder / "mlp.ipynb", "from an older version of the toolkit, or copied in by hand")
    said = []
    run(tmp_path, said)
    [kept] = folder.glob("mlp.edited-*.ipynb")
    assert "copied in by hand" in kept.read_text()
    assert any("kept as" in line for line in said)


KILLED_MID_RUN = """
import os, signal, sys
from pathlib import Path
import nbformat
from nbformat.v4 import new_markdown_cell, new_notebook
from helpers.cli import kernels
from helpers.cli import runner

def execute(notebook_path, executed, *, parameters, cwd, timeout=None):
    nb = new_notebook()
    nb.cells = [new_markdown_cell("# Report\\n\\nhalf written")]
    nbformat.write(nb, str(executed))
    os.kill(os.getpid(), signal.SIGKILL)  # as a laptop shut mid-run: no finally, no cleanup

kernels.execute = execute
runner.run_section("mlp", output_dir=Path(sys.argv[1]), parameters={}, formats=("html",), progress=False)
"""


@POSIX
def test_a_notebook_left_by_a_killed_run_is_kept_as_interrupted(tmp_path, fake_kernel):
    done = subprocess.run([sys.executable, "-c", KILLED_MID_RUN, str(tmp_path)], cwd=ROOT, capture_output=True,
                          text=True, timeout=120, env={**os.environ, "HELPERS_PROGRESS": "0"})
    assert done.returncode == -signal.SIGKILL, done.stderr[-2000:]
    said = []
    assert run(tmp_path, said)["status"] == "ok"
    [kept] = (tmp_path / "mlp").glob("mlp.interrupted-*.ipynb")
    assert "half written" in kept.read_text()
    assert any("did not finish" in line and kept.name in line for line in said)
    assert any("took over the lock" in line for line in said)
