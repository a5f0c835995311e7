"""One row of a batch, run as its own ``python -m helpers run`` process (:func:`run_row`), wherever the executor
(:mod:`helpers.cli.executors`) runs it; and whether a row's folder holds its finished reports (:func:`row_complete`).
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

from helpers.atomic import write_text

ATTEMPTS = "attempts.jsonl"  # one line per start of a row: a row started again lost its worker
ROW_PARAMETERS = "row-parameters.json"  # what the batch hands the row's command (never its command line)
PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>
# bound in the parent: the child between fork and exec should call nothing that may take a lock
_LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None


def row_complete(folder: Path, sections: list[str]) -> bool:
    """Whether a row's folder holds a finished run of every one of its sections: each ``ok`` in the ``run.json`` its
    run wrote, with its ``metrics.json`` and every file that run listed (the HTML, the PDF) present."""
    summary = folder / "run.json"
    if not summary.exists():
        return False
    done = {r["section"]: r for r in json.loads(summary.read_text())}
    return all(done.get(s, {}).get("status") == "ok" and (folder / s / "metrics.json").exists()
               and all((folder / s / name).exists() for name in done[s].get("files", {}).values())
               for s in sections)


def _die_with_parent(parent: int) -> None:
    """In the row's process, before it starts: be killed when the process that started it ends.

    A Dask worker that is killed (or whose machine goes) would otherwise leave its row running, still writing the
    report folder while the scheduler runs the same row again elsewhere. The row's kernel follows the row: jupyter
    kernels end when their parent does (``JPY_PARENT_PID``).
    """
    _LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the parent ended between fork and prctl
        os._exit(1)


def write_row_parameters(folder: Path, params: dict) -> Path:
    """Write a row's parameters to ``folder/row-parameters.json`` for its command's ``-f``; return the path.

    Through a file, a value is never read as an option of the command (a name ``-Ada``, a value
    ``--output-dir=/tmp/x``), and arrives with the type the batch file gave it (JSON, ASCII-escaped so any name
    travels)."""
    return write_text(Path(folder) / ROW_PARAMETERS, json.dumps(params, indent=1, default=str) + "\n")


def row_command(folder: Path, sections: list[str], parameters_file: Path, *, no_input: bool, formats,
                resume: bool = False, timeout: float | None = None) -> list[str]:
    """The ``python -m helpers run`` command line of one row: its parameters come from ``parameters_file``
    (:func:`write_row_parameters`); every other word is the batch's own, each option given as ``--option=value``."""
    cmd = [sys.executable, "-m", "helpers", "run", *sections, f"--output-dir={folder}",
           f"--formats={','.join(formats)}", f"--parameters-file={parameters_file}"]
    if resume:
        cmd.append("--resume")
    if timeout:
        cmd.append(f"--timeout={timeout}")
    if no_input:
        cmd.append("--no-input")
    return cmd


def record_attempt(folder: Path, worker: str) -> int:
    """Note one more start of this row in ``folder/attempts.jsonl``; return how many starts there have been.

    The file lives in the row's folder, so every worker (on any machine sharing the output folder) counts the same
    starts: a row whose worker was lost is started again by the scheduler, and the count bounds ``--retries``.
    """
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / ATTEMPTS).open("a") as f:
        f.write(json.dumps({"worker": worker, "pid": os.getpid(), "time": time.time()}) + "\n")
    return len((folder / ATTEMPTS).read_text().splitlines())


def run_row(folder: Path, sections: list[str], params: dict, *, no_input: bool, formats, threads: int,
            resume: bool = False, timeout: float | None = None, row_timeout: float | None = None,
            retries: int | None = None, worker: str = "local", env: dict | None = None) -> dict:
    """Run one row as its own ``python -m helpers run`` process; return what became of it.

    ``timeout`` limits each section (the command's ``--timeout``), ``row_timeout`` the whole row. A start after the
    first means the row's earlier worker was lost: it continues from its checkpoints (``--resume``), and after
    ``retries`` such restarts the row is given up as ``worker lost``. The row is ``ok`` only when its folder holds a
    complete report (:func:`row_complete`). ``env`` adds to the environment the row inherits
    (:data:`helpers.cli.batch.ROW_ENV`).
    """
    folder = Path(folder)
    attempt = record_attempt(folder, worker)
    base = {"folder": folder.name, "worker": worker, "attempts": attempt}
    if retries is not None and attempt > retries + 1:
        return {**base, "status": "worker lost", "seconds": 0.0,
                "error": f"its worker was lost {attempt - 1} times (--retries {retries}); see {folder.name}/{ATTEMPTS}"}
    cmd = row_command(folder, sections, write_row_parameters(folder, params), no_input=no_input, formats=formats,
                      resume=resume or attempt > 1, timeout=timeout)
    env = {**os.environ, **(env or {}), "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
           "HELPERS_PROGRESS": "0"}
    start = time.perf_counter()
    with (folder / "run.log").open("w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env,
                                preexec_fn=partial(_die_with_parent, os.getpid()) if _LIBC else None)
        try:
            code = proc.wait(timeout=row_timeout)
        except subprocess.TimeoutExpired:
            proc.kill()  # its kernel ends with it
            proc.wait()
            return {**base, "status": "timed out", "seconds": time.perf_counter() - start,
                    "error": f"row stopped after {row_timeout:g} s (--row-timeout); partial reports are kept"}
    seconds = time.perf_counter() - start
    if code != 0:
        return {**base, "status": "failed", "seconds": seconds, "error": row_error(folder, code)}
    if not row_complete(folder, sections):
        return {**base, "status": "failed", "seconds": seconds,
                "error": f"exit 0 but the report folder is incomplete; see {folder.name}/run.log"}
    return {**base, "status": "ok", "seconds": seconds, "error": ""}


def row_error(folder: Path, code: int) -> str:
    """Why a row failed, in its own words: each failed section's error (from the ``run.json`` its run wrote), or
    the last ``error:`` line of its log when it stopped before running any section."""
    summary = folder / "run.json"
    if summary.exists():
        failed = [r for r in json.loads(summary.read_text()) if r.get("status") != "ok"]
        if failed:
            return "; ".join(f"{r['section']}: {r.get('error') or r['status']}" for r in failed)
    log = folder / "run.log"
    lines = log.read_text(errors="replace").splitlines() if log.exists() else []
    errors = [ln for ln in lines if ln.startswith("error:")]
    return errors[-1] if errors else f"exit {code}; see {folder.name}/run.log"
