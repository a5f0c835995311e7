"""Which hand-ins are rerun (``--rerun none|sample:N|flagged|all``; a sample is drawn with a recorded seed), and
what a rerun's result means for a student (:mod:`.machines`). The reruns themselves run where ``run --batch``
runs its rows (locally or on a Dask cluster, each with a time limit): the command line hands in ``run_rows``.

A rerun that fails or times out is a line for that student; the others go on.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from pathlib import Path

from helpers import atomic
from helpers.grading.lines import Graded, Line, failed, note, passed
from helpers.grading.machines import compare, measure_spread, recorded_machine, same_arithmetic

MODES = ("none", "sample:N", "flagged", "all")


def parse_mode(text: str) -> tuple[str, int]:
    """``none``, ``sample:N``, ``flagged`` or ``all`` as (mode, N); ValueError naming the allowed forms."""
    mode, _, count = text.partition(":")
    if mode in ("none", "flagged", "all") and not count:
        return mode, 0
    if mode == "sample" and count.isdigit() and int(count) > 0:
        return mode, int(count)
    raise ValueError(f"--rerun {text!r}: use one of {', '.join(MODES)} (N a positive whole number)")


def select(graded: list[Graded], mode: str, count: int, seed: int) -> list[str]:
    """The ids of the students to rerun: none, a sample of ``count`` drawn with ``seed``, the flagged ones (each
    flag but a missing hand-in), or all that were checked."""
    candidates = [g for g in graded if g.status == "checked"]
    if mode == "all":
        return [g.id for g in candidates]
    if mode == "flagged":
        return [g.id for g in candidates if g.flags]
    if mode == "sample":
        ids = sorted(g.id for g in candidates)
        return sorted(random.Random(seed).sample(ids, min(count, len(ids))))
    return []


RunRows = Callable[[list[dict], float | None], dict[str, tuple[dict | None, str | None]]]


def rerun_lines(reports: dict[str, dict], results: dict[str, tuple[dict | None, str | None]], *, here: dict,
                spreads: dict[str, dict], k: float) -> list[Line]:
    """Feedback lines for one student's rerun: ``reports`` section -> the hand-in's metrics, ``results`` section
    -> (the rerun's metrics, or why it has none), ``spreads`` section -> the seed spread measured here."""
    lines = []
    for section, metrics in reports.items():
        again, error = results.get(section, (None, "not rerun"))
        if again is None:
            lines.append(failed("rerun", f"{section}: {error}", "rerun failed"))
            continue
        exact, differs = same_arithmetic(recorded_machine(metrics), here)
        size = ((metrics.get("data") or {}).get("sizes") or {}).get("test")
        ok, detail = compare(metrics, again, exact=exact, spread=spreads.get(section), k=k, test_size=size)
        how = "compared exactly (same arithmetic)" if exact else ("judged statistically: " + "; ".join(differs[:3]))
        text = f"{section}: {how}. " + " | ".join(detail[:6])
        lines.append(passed("rerun", text) if ok else failed("rerun", text, "rerun differs"))
    return lines or [note("rerun", "nothing to rerun")]


def _params_key(section: str, metrics: dict) -> str:
    params = {k: v for k, v in (metrics.get("parameters") or {}).items()
              if k not in ("seed", "output_dir", "author_name", "author_id", "course", "data_dir")}
    return json.dumps([section, params], sort_keys=True, default=str)


def plan(result, ids: list[str], spread_seeds: int, here: dict) -> tuple[list[dict], dict]:
    """The rows to run: each selected student's sections, and for each distinct configuration whose rerun cannot
    be exact here, ``spread_seeds`` more seeds (the spread it is judged within). Returns (rows, spread rows by
    configuration key)."""
    rows, spread = [], {}
    for sid in ids:
        for section, metrics in ((result.features.get(sid) or {}).get("metrics") or {}).items():
            rows.append({"key": f"{sid}/{section}", "section": section, "metrics": metrics})
            exact, _ = same_arithmetic(recorded_machine(metrics), here)
            key = _params_key(section, metrics)
            if exact or key in spread or spread_seeds < 2:
                continue
            seed = int((metrics.get("parameters") or {}).get("seed") or 0)
            spread[key] = []
            for s in range(1, spread_seeds + 1):
                again = {**metrics, "parameters": {**metrics["parameters"], "seed": seed + 1000 + s}}
                spread[key].append(f"spread/{len(spread)}/{s}")
                rows.append({"key": spread[key][-1], "section": section, "metrics": again})
    return rows, spread


REMEMBERED = ".check-reruns.json"


def remembered(out: Path | None) -> dict:
    """The reruns of earlier ``check`` runs: ``{"seed": the sample's seed, "done": {hand-in digest: lines}}``."""
    try:
        return json.loads((out / REMEMBERED).read_text(encoding="utf-8")) if out else {}
    except (OSError, ValueError):
        return {}


def rerun_class(result, options, tools, out: Path | None = None) -> dict:
    """Rerun the students ``options.rerun`` selects and add each one's rerun lines; returns what was done (mode,
    seed, who) for the class page. Needs ``tools.run_rows`` and ``tools.here``. A hand-in rerun by an earlier
    ``check`` into ``out`` is not rerun again (unless ``options.force``): its lines are reused, and a sample
    without ``--seed`` reuses the earlier sample's seed."""
    mode, count = parse_mode(options.rerun)
    before = {} if options.force else remembered(out)
    seed = options.seed if options.seed is not None else before.get("seed")
    seed = seed if seed is not None else random.SystemRandom().randrange(10**6)
    ids = select(result.graded, mode, count, seed)
    done = {"mode": options.rerun, "seed": seed if mode == "sample" else None, "students": ids}
    by_id = {g.id: g for g in result.graded}
    memory = before.get("done", {})
    fresh = [sid for sid in ids if by_id[sid].digest not in memory]
    here = tools.here() if tools.here and fresh else {}
    rows, spread = plan(result, fresh, options.spread_seeds, here)
    ran = tools.run_rows(rows, options.timeout) if rows else {}
    spreads = {key: measured([r for r in (ran.get(k, (None, None))[0] for k in keys) if r is not None])
               for key, keys in spread.items()}
    for sid in ids:
        g = by_id[sid]
        if sid in fresh:
            reports = (result.features.get(sid) or {}).get("metrics") or {}
            results = {s: ran.get(f"{sid}/{s}", (None, "not rerun")) for s in reports}
            section_spreads = {s: spreads.get(_params_key(s, m), {}) for s, m in reports.items()}
            memory[g.digest] = [x.as_dict() for x in rerun_lines(reports, results, here=here,
                                                                  spreads=section_spreads, k=options.k)]
        g.lines += [Line(**x) for x in memory[g.digest]]
        g.rerun = {"seed": done["seed"]}
    if out is not None:
        atomic.write_text(out / REMEMBERED, json.dumps({"seed": seed, "done": memory}))
    done["machine"] = here
    return done


def measured(runs: list[dict]) -> dict[str, tuple[float, float]]:
    """Mean and standard deviation of each judged number over the spread runs (:func:`.machines.measure_spread`
    with the runs already made)."""
    runs_left = iter(runs)
    return measure_spread(lambda _seed: next(runs_left), list(range(len(runs))))
