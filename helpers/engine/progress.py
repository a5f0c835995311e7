"""Live progress of a report being made, in the terminal that made it.

Two sides. Inside the notebook's kernel, :func:`emit` appends small JSON events (which run of a comparison,
epoch, batch, running loss and accuracy) to the file named by ``HELPERS_PROGRESS_FILE``; nothing is written when
it is not set (JupyterLab, tests), and nothing reaches the report. In the command, :class:`Watcher` reads those
events and papermill's record of which cell runs, and shows one line that updates in place on a terminal
(stage, cells done, run, epoch, batch, loss, time left), or one plain line per stage when the output is a file.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import threading
import time
from pathlib import Path

PROGRESS_FILE_ENV = "HELPERS_PROGRESS_FILE"  # the variable naming the events file
_last_batch = [0.0]


def batch_due() -> bool:
    """Whether a batch event would be recorded now (so the loop reads its running loss only then)."""
    return bool(os.environ.get(PROGRESS_FILE_ENV)) and time.monotonic() - _last_batch[0] >= 0.5


def emit(kind: str, **event) -> None:
    """Record one progress event for the command that runs this notebook (batches: at most twice a second)."""
    path = os.environ.get(PROGRESS_FILE_ENV)
    if not path:
        return
    now = time.monotonic()
    if kind == "batch":
        if now - _last_batch[0] < 0.5:
            return
        _last_batch[0] = now
    try:
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps({"kind": kind, "time": time.time(), **event}) + "\n")
    except OSError:
        pass  # progress is a courtesy: never let it stop a report


def read_events(path: Path, offset: int) -> tuple[list[dict], int]:
    """Events appended to ``path`` since byte ``offset``, and the new offset."""
    try:
        with open(path, encoding="utf-8") as f:
            f.seek(offset)
            text = f.read()
    except OSError:
        return [], offset
    complete = text[:text.rfind("\n") + 1]
    events = []
    for line in complete.splitlines():
        try:
            events.append(json.loads(line))
        except ValueError:
            continue
    return events, offset + len(complete.encode("utf-8"))


def cell_state(notebook: Path) -> tuple[int, int, int | None]:
    """From papermill's output notebook: (cells done, code cells, index of the running cell)."""
    try:
        cells = json.loads(notebook.read_text(encoding="utf-8"))["cells"]
    except (OSError, ValueError, KeyError):
        return 0, 0, None
    code = [i for i, c in enumerate(cells) if c.get("cell_type") == "code"]
    status = [cells[i].get("metadata", {}).get("papermill", {}).get("status") for i in code]
    running = next((code[k] for k, s in enumerate(status) if s == "running"), None)
    return sum(s == "completed" for s in status), len(code), running


def headings(notebook: Path) -> list[tuple[int, str]]:
    """(cell index, heading text) of each markdown heading of the notebook."""
    try:
        cells = json.loads(notebook.read_text(encoding="utf-8"))["cells"]
    except (OSError, ValueError, KeyError):
        return []
    out = []
    for i, c in enumerate(cells):
        if c.get("cell_type") == "markdown":
            source = "".join(c.get("source", []))
            for line in source.splitlines():
                if line.startswith("#"):
                    out.append((i, line.lstrip("#").strip()))
                    break
    return out


def minutes(seconds: float) -> str:
    """``seconds`` as ``m:ss`` (negative counts as 0)."""
    seconds = max(0, int(seconds))
    return f"{seconds // 60}:{seconds % 60:02d}"


class Watcher:
    """Shows a section's progress while papermill runs it (start it, then ``stop()`` when the notebook ends)."""

    def __init__(self, section: str, *, notebook: Path, executed: Path, events: Path, stream=None,
                 interactive: bool | None = None, interval: float = 0.5):
        self.section, self.executed, self.events = section, executed, events
        self.stream = stream or sys.stderr
        self.interactive = self.stream.isatty() if interactive is None else interactive
        self.interval, self.offset, self.stage = interval, 0, None
        self.marks = headings(notebook)
        self.run: dict = {}
        self.batch: dict = {}
        self.run_started: float | None = None
        self.training_cell: int | None = None
        self._cells_key, self._cells = None, (0, 0, None)
        self.start = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self.width = 0

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self.stop()

    def stop(self) -> None:
        """Stop the watching thread, show the last state and clear the terminal line; returns None."""
        self._stop.set()
        self._thread.join(timeout=5)
        self.update()
        if self.interactive and self.width:
            self.stream.write("\r" + " " * self.width + "\r")
            self.stream.flush()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.update()

    def update(self) -> None:
        """Read new events and the notebook's cell state, then write the progress line (or a new stage's line)."""
        events, self.offset = read_events(self.events, self.offset)
        done, total, running = self.cells()
        for e in events:
            if e["kind"] == "run":
                self.run, self.batch, self.run_started = e, {}, e["time"]
            elif e["kind"] in ("batch", "epoch"):
                self.batch = e
            self.training_cell = running
        if running != self.training_cell:  # that training is over: its numbers are not this cell's
            self.run, self.batch = {}, {}
        stage = self.stage
        if running is not None:
            stage = next((text for i, text in reversed(self.marks) if i <= running), stage)
        elapsed = minutes(time.monotonic() - self.start)
        if not self.interactive:
            if stage and stage != self.stage:
                self.stream.write(f"[{self.section}] {elapsed} {stage} (cell {done + 1}/{total})\n")
                self.stream.flush()
            self.stage = stage
            return
        self.stage = stage
        line = f"[{self.section}] {elapsed} {stage or 'starting'} · cell {min(done + 1, total or 1)}/{total or '?'}"
        line += self.training_text()
        line = line[:max(20, os_columns() - 1)]
        self.stream.write("\r" + line.ljust(self.width))
        self.stream.flush()
        self.width = len(line)

    def cells(self) -> tuple[int, int, int | None]:
        """:func:`cell_state`, parsed again only when papermill has saved the notebook since (it saves once per
        cell): parsing a notebook full of figures twice a second would take CPU from the training it reports on."""
        try:
            stat = self.executed.stat()
            key = (stat.st_mtime_ns, stat.st_size)
        except OSError:
            return 0, 0, None
        if key != self._cells_key:
            self._cells_key, self._cells = key, cell_state(self.executed)
        return self._cells

    def training_text(self) -> str:
        """`` · run 2/8 adam + dropout · epoch 3/8 · batch 120/800 · loss 0.41 acc 85.2% · ~3:10 left``."""
        r, b = self.run, self.batch
        ours = bool(r and b and r["name"] in b.get("desc", ""))
        text = f" · run {r['index']}/{r['total']} {r['name']}" if r else ""
        if b and not ours:
            text = f" · {b.get('desc', 'training')}"
        if b:
            text += f" · epoch {b['epoch']}/{b['num_epochs']}"
            if b.get("step"):
                text += f" · batch {b['step']}/{b['steps']}"
            if b.get("loss") is not None:
                text += f" · loss {b['loss']:.3f}" + (f" acc {b['acc']:.1%}" if b.get("acc") is not None else "")
        if ours and b.get("steps") and self.run_started:
            # time left in this comparison: this run's pace so far, for its rest and for the runs still to come
            done = (b["epoch"] - 1) + b.get("step", b["steps"]) / b["steps"]
            spent = b["time"] - self.run_started
            if done > 0:
                run_total = spent / done * b["num_epochs"]
                left = run_total - spent + run_total * (r["total"] - r["index"])
                text += f" · ~{minutes(left)} left in this comparison"
        return text


def os_columns() -> int:
    """The terminal's width in characters (120 where it cannot be told)."""
    columns = shutil.get_terminal_size(fallback=(120, 24)).columns
    return columns if columns >= 40 else 120  # a pseudo-terminal may report 0
