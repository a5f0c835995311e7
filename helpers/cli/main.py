"""Command line: ``python -m helpers run [SECTION ...] [options]`` (also installed as ``fashion-report``)."""

from __future__ import annotations

import argparse
import atexit
import json
import os
import sys
import time
from pathlib import Path

from helpers import atomic
from helpers.cache import ENV_DIR, ENV_SWITCH
from helpers.cli import check_command as grading_command
from helpers.cli import course_commands, handin_command
from helpers.cli.batch import run_batch
from helpers.cli.parameters import (  # noqa: F401  (parse_value, load_yaml_parameters: the package's parsing API here too)
    check_section,
    load_yaml_parameters,
    parse_value,
    read_parameters_file,
    section_parameters,
    typed_parameter,
    unknown_parameters,
)
from helpers.cli.runner import (
    FORMATS,
    SECTIONS,
    CourseError,
    CourseFolder,
    notebook_parameters,
    run_section,
    write_index,
)
from helpers.cli.verify_report import verify_folder
from helpers.engine.config import PROFILE_NAMES, ConfigError
from helpers.paths import PROJECT_ROOT
from helpers.sections import get_section
from helpers.textfiles import InputError


def parameters_help() -> str:
    lines = ["sections and their notebook parameters (name = default  # meaning):"]
    for section, (nb, title) in SECTIONS.items():
        lines.append(f"\n  {section}: {title} (notebooks/{nb})")
        try:
            params = notebook_parameters(section)
        except Exception as exc:  # a missing or unreadable notebook should not break --help
            lines.append(f"    (parameters unavailable: {exc})")
            continue
        for p in params.values():
            lines.append(f"    {p['name']} = {p['default']}" + (f"  # {p['help']}" if p.get("help") else ""))
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m helpers", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Produce Fashion-MNIST course reports: papermill runs each section's notebook, nbconvert "
                    "and headless Chromium export it to HTML and PDF, reports/index.html links them.",
        epilog=parameters_help())
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run report sections (all four when none is named)",
                         formatter_class=argparse.RawDescriptionHelpFormatter, epilog=parameters_help())
    run.add_argument("sections", nargs="*", metavar="SECTION", help=f"any of: {', '.join(SECTIONS)} (default: all)")
    run.add_argument("--profile", choices=PROFILE_NAMES, default=None,
                     help="smoke: seconds on a subset; quick: minutes on a CPU; full: the course settings "
                          "(default: each notebook's own, quick)")
    run.add_argument("--output-dir", type=Path, default=PROJECT_ROOT / "reports", help="default: reports/")
    run.add_argument("--folder", type=Path, default=None, metavar="DIR",
                     help="a student's folder (with course.json; default: the working folder when it has one): run "
                          "its own notebooks as they are into DIR/reports")
    run.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                     help="set a notebook parameter, e.g. -p classes '[1, 3, 5, 7, 9]' (repeatable)")
    run.add_argument("-f", "--parameters-file", type=Path, help="YAML file of parameters (name: value)")
    run.add_argument("--check", action="store_true",
                     help="check the parameters (and a --batch file's rows) as each notebook will, every grid "
                          "configuration included, print them and exit: 0 when valid, 2 otherwise; nothing runs")
    run.add_argument("--no-input", action="store_true", help="hide code cells in the HTML/PDF reports")
    run.add_argument("--formats", default="html,pdf", help="comma-separated: html, pdf (default: html,pdf)")
    run.add_argument("--batch", type=Path, help="CSV or YAML of parameter sets, one report folder per row")
    run.add_argument("--jobs", type=int, default=1, help="batch rows run at once (default 1); with --executor dask "
                     "and no --scheduler: the local cluster's worker processes (on a CUDA machine: one per GPU)")
    run.add_argument("--executor", choices=("local", "dask"), default="local",
                     help="where batch rows run: local (threads here, the default) or dask (tasks on a Dask cluster)")
    run.add_argument("--scheduler", metavar="ADDRESS", default=None,
                     help="--executor dask: the scheduler to use, e.g. tcp://10.0.0.5:8786 (default: "
                          "$DASK_SCHEDULER_ADDRESS, else a local cluster of --jobs workers)")
    run.add_argument("--retries", type=int, default=2,
                     help="--executor dask: times a row is started again when its worker is lost (default 2)")
    run.add_argument("--row-timeout", type=float, default=None, metavar="SECONDS",
                     help="stop a batch row (all its sections together) after this many seconds")
    run.add_argument("--quiet", action="store_true", help="print only the summary (no progress line)")
    run.add_argument("--resume", action="store_true",
                     help="continue an interrupted run: finished configurations are read back from their checkpoints, "
                          "an interrupted one continues from its last epoch; a batch skips rows already complete")
    run.add_argument("--timeout", type=float, default=None, metavar="SECONDS",
                     help="stop a section (a batch row: each of its sections) after this many seconds; its partial "
                          "notebook is kept and it is reported as timed out")
    run.add_argument("--cache-dir", type=Path, default=None, metavar="FOLDER",
                     help="the cache of work done once (data decoding, transfer pretraining, finished training runs), "
                          "shared by a batch's rows and reruns (default: $HELPERS_CACHE_DIR, else OUTPUT_DIR/.cache)")
    run.add_argument("--no-cache", action="store_true",
                     help="compute everything and keep nothing in the cache (also: HELPERS_CACHE=off)")
    run.add_argument("--shared-cache", action="store_true",
                     help="also read cache entries other users made (also: HELPERS_CACHE_SHARED=1): whoever can write "
                          "the cache folder then decides your results; by default only your own entries are read")
    sub.add_parser("params", help="list every section's parameters and defaults")
    verify = sub.add_parser("verify", help="check hand-ins: the page against metrics.json, both against a rerun",
                            description="Checks each report under REPORT_DIR (a section, a report of several "
                            "sections, or a batch folder of hand-ins): its fingerprint, its data digest (Fashion-MNIST's "
                            "known one), its HTML against its metrics.json, then reruns the toolkit's notebook with the "
                            "recorded parameters (no path of the hand-in: the data are the instructor's) and compares "
                            "every number, the page and the timings. One OK or FAIL line per report; exit status 1 "
                            "when any fails. Run it as `fashion-report verify` or `python -P -m helpers verify`: plain "
                            "`python -m helpers` imports a helpers/ folder of the current folder first.")
    verify.add_argument("report_dir", type=Path, metavar="REPORT_DIR")
    verify.add_argument("--tolerance", type=float, default=1e-6,
                        help="relative difference allowed when the rerun's device or versions differ from the "
                             "report's (default 1e-6); on the same machine and versions numbers must be equal")
    verify.add_argument("--timeout", type=float, default=None, metavar="SECONDS",
                        help="stop a rerun after this many seconds: the report is a FAIL (default: no limit)")
    verify.add_argument("--reference-data", type=Path, default=None, metavar="FOLDER",
                        help="the Fashion-MNIST copy reruns read, accepted even if it is not the known data set "
                             "(default: $FASHION_MNIST_DIR, data/, Debian's folder, which must hold the real one)")
    verify.add_argument("--data-root", type=Path, default=None, metavar="FOLDER",
                        help="the instructor's copies of image-folder data sets, by folder name (a report whose "
                             "dataset is a folder is otherwise not verifiable)")
    verify.add_argument("--metrics-only", action="store_true",
                        help="a report without its HTML is checked on metrics.json alone, not failed")
    course_commands.add_parsers(sub)
    handin_command.add_parser(sub)
    grading_command.add_parser(sub)
    return parser


def collect_parameters(args, declared: dict | None = None) -> dict:
    """``-f`` file then ``-p`` values, each typed by the notebook parameter it fills (``declared``)."""
    params = {}
    try:
        if args.parameters_file:
            params.update(read_parameters_file(Path(args.parameters_file), declared))
        params.update({name: typed_parameter(name, value, declared) for name, value in args.parameter})
    except InputError as exc:
        raise SystemExit(f"error: {exc}") from None
    if args.profile:
        if params.get("profile") not in (None, args.profile):
            raise SystemExit(f"error: --profile {args.profile} and parameter profile={params['profile']!r} disagree; "
                             "give the profile once (allowed: " + ", ".join(PROFILE_NAMES) + ")")
        params["profile"] = args.profile
    return params


def route_parameters(sections: list[str], params: dict) -> dict[str, dict]:
    """Give each section the parameters its notebook declares; a name no section knows is an error."""
    declared = {s: notebook_parameters(s) for s in sections}
    unknown = unknown_parameters(params, declared)
    if unknown:
        allowed = sorted({k for d in declared.values() for k in d})
        raise SystemExit(f"error: unknown parameter(s) {', '.join(unknown)} for section(s) {', '.join(sections)}; "
                         f"allowed: {', '.join(allowed)}, or SECTION.NAME for one section alone")
    return {s: section_parameters(s, params, declared[s]) for s in sections}


def check_command(sections: list[str], routed: dict[str, dict], output_dir: Path) -> int:
    """``run --check``: each section's resolved parameters and grid configurations, or its error; 0 or 2."""
    failed = []
    for section in sections:
        try:
            cfg = check_section(section, routed[section], output_dir)
        except ConfigError as exc:
            print(f"error: {section}: {exc}", file=sys.stderr)
            failed.append(section)
            continue
        print(f"{section}: valid ({SECTIONS[section][0]}); resolved parameters:")
        for name in notebook_parameters(section):
            print(f"  {name} = {cfg.get(name)!r}")
        for grid in get_section(section).grids:
            names = [c["name"] for c in cfg[f"{grid}_configs"]]
            print(f"  {grid}: {len(names)} configuration(s): {', '.join(names)}")
    return 2 if failed else 0


def check_writable(folder: Path) -> None:
    """Refuse, before anything runs, an output folder that cannot be made or written (a file in the way, no
    permission, a full disk), rather than losing a run's results at its end."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / ".write-test"
        probe.write_bytes(b"x" * 4096)
        probe.unlink()
    except OSError as exc:
        raise SystemExit(f"error: cannot write to --output-dir {folder}: {exc.strerror or exc}; choose another folder "
                         "or free some space (reports already in it are left as they are)") from None


def use_cache(args) -> None:
    """Where this command and everything it starts (report kernels, batch rows, which inherit the environment)
    keep their cache: ``--cache-dir``, else an inherited ``$HELPERS_CACHE_DIR`` (a batch row gets its batch's),
    else ``OUTPUT_DIR/.cache``; ``--no-cache`` turns it off (see :mod:`helpers.cache`)."""
    if args.cache_dir is not None or not os.environ.get(ENV_DIR):
        os.environ[ENV_DIR] = str((args.cache_dir or args.output_dir / ".cache").expanduser().resolve())
    if args.no_cache:
        os.environ[ENV_SWITCH] = "off"
    if getattr(args, "shared_cache", False):
        os.environ["HELPERS_CACHE_SHARED"] = "1"  # helpers.cache_trust: other users' entries are read too


def run_command(args) -> int:
    sections = args.sections or list(SECTIONS)
    bad = [s for s in sections if s not in SECTIONS]
    if bad:
        raise SystemExit(f"error: unknown section(s) {', '.join(bad)}; allowed: {', '.join(SECTIONS)}")
    formats = [f.strip() for f in args.formats.split(",") if f.strip()]
    if not formats or any(f not in FORMATS for f in formats):
        raise SystemExit(f"error: --formats {args.formats!r}; allowed: a comma-separated list of {', '.join(FORMATS)}")
    if args.jobs < 1:
        raise SystemExit(f"error: --jobs {args.jobs}: must be >= 1")
    if args.retries < 0 or (args.row_timeout is not None and args.row_timeout <= 0):
        raise SystemExit("error: --retries must be >= 0 and --row-timeout > 0 seconds")
    declared = {k: v for s in sections for k, v in notebook_parameters(s).items()}
    params = collect_parameters(args, declared)
    try:  # inside a student's folder: its notebooks, its parameters, its reports/
        course = CourseFolder.find(args.folder)
        sections = course.plan(args.sections, params, batch=args.batch) if course else sections
    except CourseError as exc:
        raise SystemExit(f"error: {exc}") from None
    if course:
        args.output_dir = course.reports
    if args.check and not args.batch:
        return check_command(sections, route_parameters(sections, params), args.output_dir)
    if not args.check:  # a check writes nothing, and leaves this process's environment as it was
        use_cache(args)
    if args.batch:
        if not args.check:
            check_writable(args.output_dir)
        return run_batch(args.batch, sections=sections, output_dir=args.output_dir, common=params,
                         no_input=args.no_input, formats=formats, jobs=args.jobs, resume=args.resume,
                         timeout=args.timeout, executor=args.executor, scheduler=args.scheduler,
                         retries=args.retries, row_timeout=args.row_timeout, check=args.check)
    routed = route_parameters(sections, params)
    check_writable(args.output_dir)
    start = time.perf_counter()
    if args.timeout is not None and args.timeout <= 0:
        raise SystemExit(f"error: --timeout {args.timeout:g}: must be > 0 seconds")
    quiet = {"log": lambda *_: None, "progress": False} if args.quiet else {}
    results = [run_section(s, output_dir=args.output_dir, parameters=routed[s], no_input=args.no_input,
                           formats=formats, resume=args.resume, timeout=args.timeout, **quiet,
                           **(course.options(s) if course else {})) for s in sections]
    index = write_index(args.output_dir, results, **({"title": course.index_title()} if course else {}))
    # what each section ended as, for a batch row's summary (and for anyone scripting around the command)
    atomic.write_text(args.output_dir / "run.json", json.dumps(results, indent=1, default=str))
    print(f"\nSummary ({time.perf_counter() - start:.0f} s in all); index: {index}")
    for r in results:
        h = r.get("headline") or {}
        acc = f", test accuracy {h['test_accuracy']:.2%}" if h.get("test_accuracy") is not None else ""
        print(f"  {r['section']:<12} {r['status']:<7} {r['seconds']:6.0f} s{acc}  {r['folder']}"
              + (f"\n               {r['error']}" if r["error"] else "")
              + (f"\n               {r['export_error']}" if r.get("export_error") else ""))
    failed = [r["section"] for r in results if r["status"] != "ok"]
    if failed:
        print(f"FAILED: {', '.join(failed)} (their partial notebooks are kept in their folders)")
    return 1 if failed else 0


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "params":
        print(parameters_help())
        return 0
    if args.command == "handin":
        return handin_command.run(args)
    if args.command == "check":
        return grading_command.run(args)
    if args.command in ("assign", "start"):
        return course_commands.run(args, check_section)
    if args.command == "verify":
        os.environ["HELPERS_PROGRESS"] = "0"
        if args.timeout is not None and args.timeout <= 0:
            raise SystemExit(f"error: --timeout {args.timeout:g}: must be > 0 seconds")
        return 0 if verify_folder(args.report_dir, tolerance=args.tolerance, timeout=args.timeout,
                                  reference_data=args.reference_data, data_root=args.data_root,
                                  metrics_only=args.metrics_only) else 1
    return run_command(args)


def command() -> None:
    """The ``fashion-report`` command and ``python -m helpers``: :func:`main`, then a quick exit.

    An interpreter that has loaded torch spends about a second at exit freeing its modules one by one, on every
    command. What must run at exit (the handlers registered with :mod:`atexit`, temporary folders among them) runs
    here first; then the process ends with main's exit status.
    """
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    atexit._run_exitfuncs()  # the interpreter's own exit step (a documented module's undocumented name: 3.x)
    os._exit(code if isinstance(code, int) else 0 if code is None else 1)


if __name__ == "__main__":
    sys.exit(main())
