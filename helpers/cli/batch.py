"""Batch runs for an instructor: one report folder per row of a CSV or YAML file of parameter sets.

Each row runs as its own ``python -m helpers run`` process, so a crash in one cannot take the others
down. Where the rows run is the executor's business (:mod:`helpers.cli.executors`: threads on this machine, or
tasks on a Dask cluster); what they produce is summed up for the class by :mod:`helpers.reporting.summary`.
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

from helpers.cli.batchfile import folder_key, folder_name, read_batch  # noqa: F401  (read_batch: the batch API here too)
from helpers.cli.executors import run_dask, run_local
from helpers.cli.parameters import check_section, section_parameters, unknown_parameters
from helpers.cli.rows import ATTEMPTS, row_complete
from helpers.cli.runner import SECTIONS, notebook_parameters
from helpers.engine.config import ConfigError
from helpers.reporting.summary import write_summary

RESERVED = ("name", "sections", "profile")
# what a row takes from the batch's environment even on a Dask worker started elsewhere: the batch's cache (shared
# by its rows) and where the data is
ROW_ENV = ("HELPERS_CACHE_DIR", "HELPERS_CACHE", "HELPERS_CACHE_SHARED", "FASHION_MNIST_DIR")


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
    if "id" in params:  # students.csv's column: the student's id, shown in the author block
        params.setdefault("author_id", str(params["id"]))
        del params["id"]
    unknown = unknown_parameters(params, {s: notebook_parameters(s) for s in row_sections})
    if unknown:
        raise BatchRowError(f"line {line}: unknown parameter(s) {', '.join(unknown)} for {', '.join(row_sections)}")
    if "author_name" not in params and "name" in row:
        params["author_name"] = str(row["name"])
    return folder, row_sections, params


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
    parameters file carries them, :func:`helpers.cli.parameters.check_section` for each of its sections). Prints one line per
    row; returns 0 when every row is valid, else 2."""
    pending, settled = plan_batch(rows, sections=sections, common=common, output_dir=output_dir)
    for r in settled:
        print(f"error: {r['error']}")
    valid = 0
    for r in pending:
        params = json.loads(json.dumps(r["params"], default=str))  # what the row's -f file will hold
        try:
            for section in r["sections"]:
                check_section(section, section_parameters(section, params, notebook_parameters(section)),
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
