"""``fashion-report check HANDINS/ --roster students.csv``: grade a class's hand-ins (:mod:`helpers.grading`).

This module is the adapter between the grading room and the command line's: it hands grading what only the
command line has (``verify``'s reading of a page against ``metrics.json``, and reruns through the executors that
``run --batch`` uses, each rerun with the recorded parameters and no path of the hand-in), so that grading never
imports ``helpers.cli``.
"""

from __future__ import annotations

import argparse
import os
import re
import tempfile
from pathlib import Path

from helpers.cache import ENV_SWITCH
from helpers.cli.executors import run_dask, run_local
from helpers.cli.runner import notebook_parameters
from helpers.cli.verify_html import parse_page
from helpers.cli.verify_inputs import Unreadable, load_metrics, reference_data, rerun_parameters
from helpers.cli.verify_page import page_problems as verify_page_problems
from helpers.grading.classcheck import check_class
from helpers.grading.grade import Options, Tools
from helpers.grading.machines import this_machine
from helpers.grading.rerun import parse_mode
from helpers.textfiles import InputError


def page_problems(html: str, metrics: dict, name: str) -> list[str]:
    """What ``verify`` finds on a page against its ``metrics.json`` (no rerun)."""
    return verify_page_problems(parse_page(html), metrics, name)


class Rerunner:
    """``run_rows`` for grading: each row ``{"key", "section", "metrics"}`` run as a ``run --batch`` row (its own
    process, locally or on Dask, ``timeout`` seconds at most), with the recorded parameters, paths replaced by the
    instructor's (:func:`helpers.cli.verify_inputs.rerun_parameters`). Returns key -> (metrics, None) or
    (None, why)."""

    def __init__(self, folder: Path, executor: str, jobs: int, scheduler: str | None, reference: Path | None):
        self.folder, self.executor, self.jobs, self.scheduler = folder, executor, jobs, scheduler
        self.reference = reference_data(reference)

    def __call__(self, rows: list[dict], timeout: float | None) -> dict:
        out, pending = {}, []
        for i, row in enumerate(rows, start=1):
            declared = notebook_parameters(row["section"])
            with tempfile.TemporaryDirectory(prefix="check-") as scratch:
                params, _, why = rerun_parameters(row["metrics"], declared, reference=self.reference,
                                                  data_root=None, scratch=Path(scratch))
            if why:
                out[row["key"]] = (None, f"not rerun: {why}")
                continue
            name = re.sub(r"[^A-Za-z0-9_.-]+", "_", row["key"])[:90] + f"-{i}"
            pending.append({"line": i, "name": name, "sections": [row["section"]], "params": params,
                            "key": row["key"]})
        options = {"no_input": False, "formats": ["html"], "resume": False, "timeout": timeout,
                   "row_timeout": timeout, "retries": 2, "env": {ENV_SWITCH: "off", "HELPERS_RESUME": "0"}}
        self.folder.mkdir(parents=True, exist_ok=True)
        if pending:
            run = run_dask if self.executor == "dask" else run_local
            extra = {"scheduler": self.scheduler} if self.executor == "dask" else {}
            done = run(pending, output_dir=self.folder, jobs=self.jobs, options=options, **extra)
            for r in done:
                out[r["key"]] = self._read(r)
        return out

    def _read(self, r: dict) -> tuple[dict | None, str | None]:
        if r.get("status") != "ok":
            return None, f"the rerun {r.get('status')}: {r.get('error') or ''}".strip()
        try:
            return load_metrics(self.folder / r["name"] / r["sections"][0] / "metrics.json"), None
        except Unreadable as exc:
            return None, f"the rerun wrote no readable metrics.json: {exc}"


def add_parser(sub) -> argparse.ArgumentParser:
    """The ``check`` sub-command's options."""
    p = sub.add_parser("check", help="grade a class's hand-ins: grades.csv, a class page, feedback per student",
                       description="Reads every hand-in in HANDINS (handin-<id>.zip archives, their folders, or plain "
                       "report folders) and checks each against the student's row of the roster and the assignment "
                       "(variant, profile, sections), its digests, its page against metrics.json and its numbers "
                       "against each other; compares hand-ins with each other; scores them by the rubric; writes "
                       "grades.csv, index.html and per student feedback.html and .pdf into OUT. Nothing in a hand-in "
                       "is executed. Run it again: only new or changed hand-ins are checked, and the grader's marks "
                       "in grades.csv are kept.")
    p.add_argument("handins", type=Path, metavar="HANDINS")
    p.add_argument("--roster", type=Path, required=True, help="students.csv (from `assign`): name, id, variant")
    p.add_argument("--assignment", type=Path, default=None,
                   help="the assignment file (default: the only *.yaml beside the roster)")
    p.add_argument("--rubric", type=Path, default=None, help="rubric.yaml (default: the assignment's rubric block)")
    p.add_argument("-o", "--output-dir", type=Path, default=None, help="default: HANDINS-graded beside HANDINS")
    p.add_argument("--rerun", default="none", help="none (default), sample:N, flagged or all")
    p.add_argument("--seed", type=int, default=None, help="seed of --rerun sample:N (default: drawn and recorded)")
    p.add_argument("--executor", choices=("local", "dask"), default="local", help="where reruns run (as run --batch)")
    p.add_argument("--scheduler", default=None, help="--executor dask: the scheduler's address")
    p.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1),
                   help="processes checking hand-ins, and reruns at once (default: 2 or the CPU count)")
    p.add_argument("--timeout", type=float, default=None, metavar="SECONDS", help="stop a rerun after this long")
    # three seeds estimate a standard deviation poorly: transfer `quick` gave 0.10 to 0.51 points from three
    # consecutive seeds of six whose std is 0.42 (README "Grading a class"), and a low estimate fails honest students
    p.add_argument("--spread-seeds", type=int, default=5,
                   help="seeds run here per configuration to measure the spread a rerun on another machine is judged "
                        "within (default 5)")
    p.add_argument("--spread-k", type=float, default=3.0, help="standard deviations allowed (default 3)")
    p.add_argument("--similarity-threshold", type=float, default=0.5,
                   help="share of an answer's word n-grams found in another's that flags the pair (default 0.5)")
    p.add_argument("--ngram", type=int, default=5, help="words per n-gram of the answer comparison (default 5)")
    p.add_argument("--results-tolerance", type=float, default=1e-6,
                   help="largest difference between two hand-ins' result numbers that counts as identical")
    p.add_argument("--reference-data", type=Path, default=None, help="the Fashion-MNIST copy reruns read")
    p.add_argument("--read-pdfs", action="store_true",
                   help="also read each section PDF's headline (pdftotext) against metrics.json (~0.1 s a PDF)")
    p.add_argument("--force", action="store_true", help="check every hand-in again, also those checked before")
    p.add_argument("--no-pdf", action="store_true", help="write feedback.html only")
    return p


def run(args) -> int:
    """Run ``check``; 0 when written (flags are for the grader, not an error), 2 for unusable input."""
    try:
        parse_mode(args.rerun)
    except ValueError as exc:
        raise SystemExit(f"error: {exc}") from None
    assignment = args.assignment or _beside(args.roster)
    out = args.output_dir
    options = Options(rerun=args.rerun, seed=args.seed, timeout=args.timeout, spread_seeds=args.spread_seeds,
                      k=args.spread_k, similarity_threshold=args.similarity_threshold, ngram=args.ngram,
                      results_tolerance=args.results_tolerance, read_pdfs=args.read_pdfs, jobs=max(1, args.jobs),
                      force=args.force,
                      pdf=not args.no_pdf)
    rerun_dir = (out or args.handins.resolve().parent / f"{args.handins.resolve().name}-graded") / "reruns"
    tools = Tools(page_problems=page_problems,
                  run_rows=Rerunner(rerun_dir, args.executor, max(1, args.jobs), args.scheduler, args.reference_data),
                  here=this_machine)
    os.environ["HELPERS_PROGRESS"] = "0"
    try:
        check_class(args.handins, args.roster, assignment, out=out, rubric=args.rubric, options=options, tools=tools)
    except InputError as exc:
        print(f"error: {exc}")
        return 2
    return 0


def _beside(roster: Path) -> Path:
    found = sorted(Path(roster).resolve().parent.glob("*.yaml"))
    if len(found) != 1:
        raise SystemExit(f"error: name the assignment file with --assignment ({len(found)} *.yaml beside the roster)")
    return found[0]
