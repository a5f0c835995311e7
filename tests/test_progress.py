"""What a student sees while a report is made: a live line on a terminal (stage, cells, run, epoch, loss), one
plain line per stage in a log file, nothing with --quiet; the reports themselves carry no progress output."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from helpers.engine.progress import Watcher, emit

ROOT = Path(__file__).resolve().parent.parent
ONE_CONFIG = ["-p", "optimizers", "[adam]", "-p", "regularizers", "[none]"]
SLOW = ["-p", "epochs", "12", "-p", "batch_size", "4", *ONE_CONFIG]


def command(tmp_path, fake_data_dir, *extra):
    return [sys.executable, "-m", "helpers", "run", "mlp", "--profile", "quick", "--formats", "html", "--output-dir",
            str(tmp_path), "-p", "data_dir", str(fake_data_dir), *SLOW, *extra]


@pytest.mark.skipif(shutil.which("script") is None, reason="needs script(1) for a pseudo-terminal")
def test_a_terminal_gets_one_live_line_with_stage_and_epochs(tmp_path, fake_data_dir):
    log = tmp_path / "typescript"
    inner = " ".join(shlex.quote(a) for a in command(tmp_path / "out", fake_data_dir))
    subprocess.run(["script", "-qc", f"COLUMNS=200 {inner}", str(log)], cwd=ROOT, timeout=600,
                   env={**os.environ, "HELPERS_PROGRESS": "0"}, stdout=subprocess.DEVNULL, check=True)
    text = log.read_bytes().decode(errors="replace")  # bytes: read_text would turn every \r into \n
    updates = text.split("\r")
    assert len(updates) > 5, "the line is rewritten in place"
    assert any("The grid" in u and "run 1/1" in u and "epoch " in u and "loss " in u for u in updates)
    assert any("left in this comparison" in u for u in updates)
    assert "Kernel is running over TCP" not in text


def test_a_log_file_gets_one_plain_line_per_stage(tmp_path, fake_data_dir):
    quick = [*command(tmp_path / "out", fake_data_dir)[:-len(SLOW)], *ONE_CONFIG, "-p", "epochs", "2"]  # no need to be slow
    done = subprocess.run(quick, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "\r" not in done.stderr
    stages = [line for line in done.stderr.splitlines() if line.startswith("[mlp] ") and "(cell " in line]
    assert any("Data" in s for s in stages) and any("The grid" in s for s in stages)
    assert len(stages) == len(set(s.split(" ", 2)[2] for s in stages)), "each stage once"
    nb = json.loads((tmp_path / "out" / "mlp" / "mlp.ipynb").read_text())
    outputs = json.dumps([c.get("outputs") for c in nb["cells"]])
    assert "epoch 1/2" not in outputs and "it/s" not in outputs  # the report carries no progress


def test_quiet_prints_only_the_summary(tmp_path, fake_data_dir):
    done = subprocess.run([*command(tmp_path / "out", fake_data_dir)[:-len(SLOW)], "--quiet", "-p", "epochs", "1"],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0 and "(cell " not in done.stderr and "[mlp] running" not in done.stdout
    assert "Summary" in done.stdout


def test_events_are_written_only_where_asked(tmp_path, monkeypatch):
    monkeypatch.delenv("HELPERS_PROGRESS_FILE", raising=False)
    emit("run", index=1, total=2, name="x")  # no file: nothing happens
    events = tmp_path / "events.jsonl"
    monkeypatch.setenv("HELPERS_PROGRESS_FILE", str(events))
    monkeypatch.setenv("COLUMNS", "200")
    emit("run", index=1, total=2, name="adam + none")
    emit("batch", desc="adam + none", epoch=2, num_epochs=4, step=5, steps=10, loss=0.5, acc=0.8)
    notebook = tmp_path / "nb.ipynb"
    notebook.write_text(json.dumps({"cells": [
        {"cell_type": "markdown", "source": ["## The grid"]},
        {"cell_type": "code", "source": [], "metadata": {"papermill": {"status": "running"}}}]}))
    lines = []

    class Stream:
        def write(self, text):
            lines.append(text)

        def flush(self):
            pass

        def isatty(self):
            return True

    watcher = Watcher("mlp", notebook=notebook, executed=notebook, events=events, stream=Stream())
    watcher.update()
    shown = "".join(lines)
    assert "The grid" in shown and "run 1/2 adam + none" in shown and "epoch 2/4" in shown and "batch 5/10" in shown
    assert "loss 0.500 acc 80.0%" in shown and "left in this comparison" in shown
