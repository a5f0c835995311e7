"""Batch runs for an instructor: one report folder per row of a CSV or YAML file of parameter sets.

Each row runs as its own ``python -m helpers run`` process, so a crash in one cannot take the others
down, and ``--jobs N`` runs N rows at once (torch threads shared out between them).
"""

from __future__ import annotations

import csv
import html
import json
import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml

from .runner import SECTIONS, notebook_parameters

RESERVED = ("name", "sections", "profile")


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
    """Whether a row's folder holds a finished run of every one of its sections (for ``--resume``)."""
    summary = folder / "run.json"
    if not summary.exists():
        return False
    done = {r["section"]: r for r in json.loads(summary.read_text())}
    return all(done.get(s, {}).get("status") == "ok" and (folder / s / "metrics.json").exists() for s in sections)


def _run_row(folder: Path, sections: list[str], params: dict, *, no_input: bool, formats, threads: int,
             resume: bool = False, timeout: float | None = None) -> int:
    cmd = [sys.executable, "-m", "helpers", "run", *sections, "--output-dir", str(folder), "--formats", ",".join(formats)]
    if resume:
        cmd.append("--resume")
    if timeout:
        cmd += ["--timeout", str(timeout)]
    for k, v in params.items():
        cmd += ["-p", k, json.dumps(v) if not isinstance(v, str) else v]
    if no_input:
        cmd.append("--no-input")
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / "run.log").open("w") as log:
        return subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=env).returncode


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


def run_batch(path, *, sections: list[str], output_dir: Path, common: dict, no_input: bool, formats, jobs: int,
              resume: bool = False, timeout: float | None = None) -> int:
    """Run every row; a bad row is reported by line number and the others go on. Returns the exit status."""
    rows = read_batch(path, {k: v for sec in SECTIONS for k, v in notebook_parameters(sec).items()})
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    threads = max(1, (os.cpu_count() or 1) // jobs)
    results, pending = [], []
    seen = set()
    for line, row in rows:
        try:
            name, row_sections, params = check_row(line, {**common, **row}, sections)
            if name in seen:
                raise BatchRowError(f"line {line}: name {name!r} is used by an earlier row")
            seen.add(name)
            if resume and row_complete(output_dir / name, row_sections):
                results.append({"line": line, "name": name, "status": "ok", "folder": name,
                                "detail": "complete already (--resume)"})
                print(f"line {line}: {name}: complete already, skipped")
                continue
            pending.append((line, name, row_sections, params))
        except BatchRowError as exc:
            results.append({"line": line, "name": str(row.get("name", "")), "status": "bad row", "detail": str(exc)})
            print(f"error: {exc}")
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = {pool.submit(_run_row, output_dir / name, secs, params, no_input=no_input, formats=formats,
                               threads=threads, resume=resume, timeout=timeout): (line, name)
                   for line, name, secs, params in pending}
        for future, (line, name) in futures.items():
            code = future.result()
            status = "ok" if code == 0 else "failed"
            results.append({"line": line, "name": name, "status": status, "folder": name,
                            "detail": "" if code == 0 else row_error(output_dir / name, code)})
            print(f"line {line}: {name}: {status}")
    results.sort(key=lambda r: r["line"])
    write_batch_index(output_dir, results, source=Path(path).name)
    bad = [r for r in results if r["status"] != "ok"]
    print(f"batch: {len(results) - len(bad)} of {len(results)} rows ok; index: {output_dir / 'index.html'}")
    return 1 if bad else 0


def write_batch_index(output_dir: Path, results: list[dict], *, source: str) -> Path:
    def link(r):
        return f'<a href="{html.escape(r["folder"])}/index.html">report</a>' if r.get("folder") else ""

    rows = "".join(
        f"<tr><td>{r['line']}</td><td>{html.escape(r['name'])}</td><td>{html.escape(r['status'])}</td>"
        f"<td>{link(r)}</td><td>{html.escape(r.get('detail', ''))}</td></tr>" for r in results)
    page = (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>Batch {html.escape(source)}</title>"
            "<style>body{font-family:sans-serif;max-width:1000px;margin:2em auto}td,th{padding:4px 8px;"
            "border-bottom:1px solid #ddd;text-align:left}</style></head><body>"
            f"<h1>Batch run of {html.escape(source)}</h1><table><tr><th>line</th><th>name</th><th>status</th>"
            f"<th>report</th><th>detail</th></tr>{rows}</table></body></html>")
    path = output_dir / "index.html"
    path.write_text(page, encoding="utf-8")
    return path
