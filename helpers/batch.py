"""Batch runs for an instructor: one report folder per row of a CSV or YAML file of parameter sets.

Each row runs as its own ``python -m helpers run`` process, so a crash in one cannot take the others
down. Where the rows run is the executor's business (:mod:`helpers.executors`: threads on this machine, or
tasks on a Dask cluster); what they produce is summed up for the class by :mod:`helpers.summary`.
"""

from __future__ import annotations

import csv
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

import yaml

from .runner import SECTIONS, notebook_parameters

RESERVED = ("name", "sections", "profile")
ATTEMPTS = "attempts.jsonl"  # one line per start of a row: a row started again lost its worker
PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>
# what a row takes from the batch's environment even on a Dask worker started elsewhere: the batch's cache (shared
# by its rows) and where the data is
ROW_ENV = ("HELPERS_CACHE_DIR", "HELPERS_CACHE", "FASHION_MNIST_DIR")
# bound in the parent: the child between fork and exec should call nothing that may take a lock
_LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None


class BatchRowError(ValueError):
    """A row that cannot be run; the message starts with its line number."""


def read_batch(path: str | Path, declared: dict | None = None) -> list[tuple[int, dict]]:
    """Rows of a batch file as (line number, parameters).

    Every cell is typed by the notebook parameter it fills (``declared``, papermill's inspection): identifiers
    stay text (student id ``0123`` is not the octal 83, ``yes`` not True); an empty CSV cell leaves that
    parameter at its default.
    """
    from .cli import load_yaml_parameters, typed_parameter

    # the row's own columns are text too: a student named "yes" or "0123" keeps that name and folder
    declared = {**(declared or {}), **{k: {"default": "''"} for k in ("name", "sections")}}
    path = Path(path)
    if not path.exists():
        raise SystemExit(f"error: batch file {path} does not exist")
    if path.suffix.lower() == ".csv":
        with path.open(newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            rows = []
            for row in reader:
                values = {k.strip(): typed_parameter(k.strip(), v, declared) for k, v in row.items()
                          if k is not None and v is not None and v.strip() != ""}
                rows.append((reader.line_num, values))
            return rows
    if path.suffix.lower() in (".yaml", ".yml"):
        node = yaml.compose(path.read_text(encoding="utf-8"))
        if isinstance(node, yaml.MappingNode):  # {rows: [...]}
            node = next((v for k, v in node.value if k.value == "rows"), None)
        if not isinstance(node, yaml.SequenceNode):
            raise SystemExit(f"error: {path}: expected a list of parameter sets (one per student)")
        loader = yaml.SafeLoader("")
        return [(item.start_mark.line + 1, load_yaml_parameters(item, declared) if isinstance(item, yaml.MappingNode)
                 else {"__invalid__": loader.construct_object(item, deep=True)}) for item in node.value]
    raise SystemExit(f"error: batch file {path}: use .csv, .yaml or .yml")


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", str(text)).strip("_") or "row"


def check_row(line: int, row: dict, sections: list[str]) -> tuple[str, list[str], dict]:
    """Return (folder name, sections, parameters) or raise :class:`BatchRowError`."""
    if "__invalid__" in row:
        raise BatchRowError(f"line {line}: expected name: value pairs, got {row['__invalid__']!r}")
    name = row.get("name") or row.get("author_id") or row.get("author_name")
    if not name:
        raise BatchRowError(f"line {line}: no 'name' (or author_id/author_name) to name its report folder")
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
    return slug(name), row_sections, params


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


def row_command(folder: Path, sections: list[str], params: dict, *, no_input: bool, formats, resume: bool = False,
                timeout: float | None = None) -> list[str]:
    """The ``python -m helpers run`` command line of one row."""
    cmd = [sys.executable, "-m", "helpers", "run", *sections, "--output-dir", str(folder), "--formats", ",".join(formats)]
    if resume:
        cmd.append("--resume")
    if timeout:
        cmd += ["--timeout", str(timeout)]
    for k, v in params.items():
        cmd += ["-p", k, json.dumps(v) if not isinstance(v, str) else v]
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
    cmd = row_command(folder, sections, params, no_input=no_input, formats=formats, resume=resume or attempt > 1,
                      timeout=timeout)
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

    Each row is a dict: line, name (its folder), sections, params; settled ones also carry status and error.
    """
    pending, settled, seen = [], [], set()
    for line, row in rows:
        try:
            name, row_sections, params = check_row(line, {**common, **row}, sections)
            if name in seen:
                raise BatchRowError(f"line {line}: name {name!r} is used by an earlier row")
            seen.add(name)
        except BatchRowError as exc:
            settled.append({"line": line, "name": slug(row.get("name", "")) if row.get("name") else "",
                            "sections": [], "params": {k: v for k, v in {**common, **row}.items() if k != "__invalid__"},
                            "status": "bad row", "error": str(exc)})
            continue
        entry = {"line": line, "name": name, "sections": row_sections, "params": params}
        if resume and row_complete(output_dir / name, row_sections):
            settled.append({**entry, "status": "ok", "folder": name, "error": "", "note": "complete already (--resume)"})
        else:
            pending.append(entry)
    return pending, settled


def run_batch(path, *, sections: list[str], output_dir: Path, common: dict, no_input: bool, formats, jobs: int,
              resume: bool = False, timeout: float | None = None, executor: str = "local",
              scheduler: str | None = None, retries: int = 2, row_timeout: float | None = None) -> int:
    """Run every row; a bad row is reported by line number and the others go on. Returns the exit status.

    ``executor`` is ``local`` (``jobs`` threads here) or ``dask`` (tasks on the cluster at ``scheduler``, or on a
    local cluster of ``jobs`` workers). Either way the batch folder ends with ``summary.csv`` and ``index.html``.
    """
    from .executors import run_dask, run_local
    from .summary import write_summary

    rows = read_batch(path, {k: v for sec in SECTIONS for k, v in notebook_parameters(sec).items()})
    output_dir = Path(output_dir).resolve()  # workers elsewhere do not share this process's working folder
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
