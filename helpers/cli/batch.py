"""Batch runs for an instructor: one report folder per row of a CSV or YAML file of parameter sets.

Each row runs as its own ``python -m helpers run`` process, so a crash in one cannot take the others
down. Where the rows run is the executor's business (:mod:`helpers.cli.executors`: threads on this machine, or
tasks on a Dask cluster); what they produce is summed up for the class by :mod:`helpers.reporting.summary`.
"""

from __future__ import annotations

import ctypes
import json
import os
import re
import signal
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

from helpers.atomic import write_text
from helpers.cli.batchfile import folder_key, folder_name, read_batch  # noqa: F401  (read_batch: the batch API here too)
from helpers.cli.runner import SECTIONS, notebook_parameters

RESERVED = ("name", "sections", "profile")
ATTEMPTS = "attempts.jsonl"  # one line per start of a row: a row started again lost its worker
ROW_PARAMETERS = "row-parameters.json"  # what the batch hands the row's command (never its command line)
PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>
# what a row takes from the batch's environment even on a Dask worker started elsewhere: the batch's cache (shared
# by its rows) and where the data is
ROW_ENV = ("HELPERS_CACHE_DIR", "HELPERS_CACHE", "HELPERS_CACHE_SHARED", "FASHION_MNIST_DIR")
# bound in the parent: the child between fork and exec should call nothing that may take a lock
_LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None


class BatchRowError(ValueError):
    """A row that cannot be run; the message starts with its line number."""


def check_row(line: int, row: dict, sections: list[str]) -> tuple[str, list[str], dict]:
    """Return (folder name, sections, parameters) or raise :class:`BatchRowError`."""
    if "__error__" in row:
        raise BatchRowError(f"line {line}: {row['__error__']}")
    if "__invalid__" in row:
        raise BatchRowError(f"line {line}: expected name: value pairs, got {str(row['__invalid__'])[:200]!r}")
    name = row.get("name") or row.get("author_id") or row.get("author_name")
    if not name:
        raise BatchRowError(f"line {line}: no 'name' (or author_id/author_name) to name its report folder")
    folder = folder_name(name)
    if not folder:
        raise BatchRowError(f"line {line}: name {name!r} has no letter or digit to name its report folder")
    row_sections = row.get("sections", sections)
    if isinstance(row_sections, str):
        row_sections = [s.strip() for s in re.split(r"[;, ]+", row_sections) if s.strip()]
    bad = [s for s in row_sections if s not in SECTIONS]
    if bad:
        raise BatchRowError(f"line {line}: unknown section(s) {', '.join(bad)}; allowed: {', '.join(SECTIONS)}")
    params = {k: v for k, v in row.items() if k not in RESERVED or k == "profile"}
    declared = set().union(*(notebook_parameters(s) for s in row_sections))
    unknown = [k for k in params if k not in declared]
    if unknown:
        raise BatchRowError(f"line {line}: unknown parameter(s) {', '.join(unknown)} for {', '.join(row_sections)}")
    if "author_name" not in params and "name" in row:
        params["author_name"] = str(row["name"])
    return folder, row_sections, params


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
    complete report (:func:`row_complete`). ``env`` adds to the environment the row inherits (:data:`ROW_ENV`).
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


def plan_batch(rows: list[tuple[int, dict]], *, sections: list[str], common: dict, output_dir: Path,
               resume: bool = False) -> tuple[list[dict], list[dict]]:
    """Split the rows into (rows to run, rows already settled: bad ones, and complete ones under ``--resume``).

    Each row is a dict: line, name (its folder), sections, params; settled ones also carry status and error. Two
    rows whose folders differ only by case or Unicode normalisation (Ada, ada) are refused: a case-insensitive file
    system (macOS's, Windows') would give them one folder.
    """
    pending, settled, seen = [], [], {}
    for line, row in rows:
        try:
            name, row_sections, params = check_row(line, {**common, **row}, sections)
            if folder_key(name) in seen:
                first, first_name = seen[folder_key(name)]
                same = "is" if first_name == name else f"differs only by case or accents from {first_name!r},"
                raise BatchRowError(f"line {line}: folder {name!r} {same} used by line {first}: on a case-insensitive "
                                    "file system (macOS, Windows) they would share one folder; give one another name")
            seen[folder_key(name)] = (line, name)
        except BatchRowError as exc:
            settled.append({"line": line, "name": "", "sections": [],
                            "params": {k: v for k, v in {**common, **row}.items() if not k.startswith("__")},
                            "status": "bad row", "error": str(exc)})
            continue
        entry = {"line": line, "name": name, "sections": row_sections, "params": params}
        if resume and row_complete(output_dir / name, row_sections):
            settled.append({**entry, "status": "ok", "folder": name, "error": "", "note": "complete already (--resume)"})
        else:
            pending.append(entry)
    return pending, settled


def check_batch(rows: list[tuple[int, dict]], *, sections: list[str], common: dict, output_dir: Path) -> int:
    """``--batch FILE --check``: each row as its own command would check it (its parameters as the row's
    parameters file carries them, :func:`helpers.cli.main.check_section` for each of its sections). Prints one line per
    row; returns 0 when every row is valid, else 2."""
    from helpers.cli.main import check_section
    from helpers.engine.config import ConfigError

    pending, settled = plan_batch(rows, sections=sections, common=common, output_dir=output_dir)
    for r in settled:
        print(f"error: {r['error']}")
    valid = 0
    for r in pending:
        params = json.loads(json.dumps(r["params"], default=str))  # what the row's -f file will hold
        try:
            for section in r["sections"]:
                check_section(section, {k: v for k, v in params.items() if k in notebook_parameters(section)},
                              output_dir / r["name"])
        except ConfigError as exc:
            print(f"error: line {r['line']}: {r['name']}: {section}: {exc}")
            continue
        valid += 1
        print(f"line {r['line']}: {r['name']}: valid ({', '.join(r['sections'])})")
    print(f"batch check: {valid} of {len(rows)} rows valid; nothing was run")
    return 0 if valid == len(rows) else 2


def run_batch(path, *, sections: list[str], output_dir: Path, common: dict, no_input: bool, formats, jobs: int,
              resume: bool = False, timeout: float | None = None, executor: str = "local",
              scheduler: str | None = None, retries: int = 2, row_timeout: float | None = None,
              check: bool = False) -> int:
    """Run every row; a bad row is reported by line number and the others go on. Returns the exit status.

    ``executor`` is ``local`` (``jobs`` threads here) or ``dask`` (tasks on the cluster at ``scheduler``, or on a
    local cluster of ``jobs`` workers). Either way the batch folder ends with ``summary.csv`` and ``index.html``.
    With ``check``, nothing runs and nothing is written: :func:`check_batch`.
    """
    from helpers.cli.executors import run_dask, run_local
    from helpers.reporting.summary import write_summary

    rows = read_batch(path, {k: v for sec in SECTIONS for k, v in notebook_parameters(sec).items()})
    output_dir = Path(output_dir).resolve()  # workers elsewhere do not share this process's working folder
    if check:
        return check_batch(rows, sections=sections, common=common, output_dir=output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    pending, settled = plan_batch(rows, sections=sections, common=common, output_dir=output_dir, resume=resume)
    for r in settled:
        print(f"error: {r['error']}" if r["status"] == "bad row" else f"line {r['line']}: {r['name']}: complete "
              "already, skipped")
    for r in pending:  # a fresh count of starts: --retries is per batch run
        (output_dir / r["name"] / ATTEMPTS).unlink(missing_ok=True)
    options = {"no_input": no_input, "formats": formats, "resume": resume, "timeout": timeout,
               "row_timeout": row_timeout, "retries": retries,
               "env": {k: os.environ[k] for k in ROW_ENV if k in os.environ}}
    start = time.perf_counter()
    if executor == "dask":
        done = run_dask(pending, output_dir=output_dir, jobs=jobs, scheduler=scheduler, options=options)
    else:
        done = run_local(pending, output_dir=output_dir, jobs=jobs, options=options)
    results = sorted(settled + done, key=lambda r: r["line"])
    files = write_summary(output_dir, results, source=Path(path).name)
    bad = [r for r in results if r["status"] != "ok"]
    print(f"batch: {len(results) - len(bad)} of {len(results)} rows ok in {time.perf_counter() - start:.0f} s; "
          f"summary: {files['csv']}; index: {files['html']}")
    return 1 if bad else 0
