"""Another machine is not another result. Training does not repeat bit for bit across CPUs: the same parameters
and seed gave transfer ``quick`` 92.58% on an AMD EPYC and 92.96% on an Intel Xeon, both recorded as ``x86_64``
on ``cpu``. So a rerun is compared exactly only where what decides the arithmetic matches (CPU model and its
instruction set: AVX2, AVX-512, AMX, bfloat16 in hardware; GPU model; thread count; precision; torch version), and
otherwise statistically: each number within ``k`` standard deviations of the spread that seeds give for that
configuration on the grader's machine (measured with :func:`measure_spread`, never assumed).
"""

from __future__ import annotations

import math
import os
import statistics
from collections.abc import Callable

from helpers.engine.speed import FLAGS, cpu_info  # noqa: F401  (the facts this module compares)

ARITHMETIC = ("cpu_model", "cpu_flags", "device", "gpu", "threads", "precision", "torch")
# the numbers a rerun is judged on: the headline, and each configuration's validation accuracy
JUDGED = ("best.test.accuracy",)


def this_machine(precision: str | None = None) -> dict:
    """What decides the arithmetic on the grader's machine (see the module docstring)."""
    import torch  # lazy on purpose: torch takes seconds to import, and only a rerun needs this

    model, flags = cpu_info()
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"cpu_model": model, "cpu_flags": flags, "device": "cuda" if gpu else "cpu", "gpu": gpu,
            "threads": torch.get_num_threads() or os.cpu_count(), "precision": precision, "torch": torch.__version__}


def recorded_machine(metrics: dict) -> dict:
    """The same facts as a report recorded them; a fact it does not record is None (and then never matches)."""
    env = metrics.get("environment") if isinstance(metrics.get("environment"), dict) else {}
    final = metrics.get("final") if isinstance(metrics.get("final"), dict) else {}
    device = env.get("device")
    return {"cpu_model": env.get("cpu_model"), "cpu_flags": env.get("cpu_flags"), "device": device,
            "gpu": env.get("device_name") if device and device != "cpu" else None,
            "threads": env.get("cpu_threads"), "precision": final.get("precision") or env.get("precision"),
            "torch": env.get("torch")}


def same_arithmetic(recorded: dict, here: dict) -> tuple[bool, list[str]]:
    """Whether a rerun here can repeat the report bit for bit, and what differs or is unknown."""
    differs = []
    for key in ARITHMETIC:
        a, b = recorded.get(key), here.get(key)
        if key == "gpu" and a is None and b is None:
            continue
        if key == "precision" and (a is None or b is None):  # a property of the run (the same parameters give the
            continue                                          # same choice), compared where both name it
        if a is None:
            differs.append(f"{key} not recorded by the report")
        elif a != b:
            differs.append(f"{key}: {a} (report) vs {b} (here)")
    return not differs, differs


def judged_values(metrics: dict) -> dict[str, float]:
    """The numbers a rerun is judged on: the test accuracy and every configuration's validation accuracy."""
    out = {}
    test = ((metrics.get("best") or {}).get("test") or {}) if isinstance(metrics.get("best"), dict) else {}
    if isinstance(test.get("accuracy"), (int, float)):
        out["best.test.accuracy"] = float(test["accuracy"])
    for key in ("configurations",) + tuple(k for k, v in metrics.items() if isinstance(v, dict) and "configurations" in v):
        records = metrics.get(key) if key == "configurations" else metrics[key].get("configurations")
        for r in records if isinstance(records, list) else []:
            value = r.get("val_acc", r.get("val_acc_mean")) if isinstance(r, dict) else None
            if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                out[f"{key} {r.get('name')!r} val_acc"] = float(value)
    return out


def measure_spread(run: Callable[[int], dict], seeds: list[int]) -> dict[str, tuple[float, float]]:
    """Run one configuration once per seed here (``run(seed) -> metrics``) and return, for each judged number,
    its mean and standard deviation over the seeds (the spread an honest rerun may differ by)."""
    values: dict[str, list[float]] = {}
    for seed in seeds:
        for key, value in judged_values(run(seed)).items():
            values.setdefault(key, []).append(value)
    return {k: (statistics.fmean(v), statistics.stdev(v) if len(v) > 1 else math.nan) for k, v in values.items()}


def compare(report: dict, rerun: dict, *, exact: bool, spread: dict[str, tuple[float, float]] | None = None,
            k: float = 3.0, test_size: int | None = None) -> tuple[bool, list[str]]:
    """A report's judged numbers against its rerun's: equal when ``exact``; otherwise within ``k`` standard
    deviations of the seed spread (times sqrt 2: both numbers carry it), and never closer than one test image
    can make. Returns (agrees, one line per number)."""
    mine, theirs = judged_values(report), judged_values(rerun)
    lines, ok = [], True
    for key in sorted(set(mine) & set(theirs)):
        a, b = mine[key], theirs[key]
        if exact:
            agree = a == b
            lines.append(f"{key}: report {a:.4f}, rerun {b:.4f}: {'equal' if agree else 'DIFFERENT'} (same machine)")
        elif a == b:
            agree, std = True, (spread or {}).get(key, (math.nan, math.nan))[1]
            lines.append(f"{key}: report {a:.4f}, rerun {b:.4f}: equal"
                         + (f" (seeds here spread {std:.4f})" if math.isfinite(std) else ""))
        else:
            std = (spread or {}).get(key, (math.nan, math.nan))[1]
            floor = 1.0 / test_size if test_size else 0.0
            allowed = max(k * math.sqrt(2) * std if math.isfinite(std) else math.nan, floor)
            if not math.isfinite(allowed):
                lines.append(f"{key}: report {a:.4f}, rerun {b:.4f}: no spread measured, not judged")
                continue
            agree = abs(a - b) <= allowed
            lines.append(f"{key}: report {a:.4f}, rerun {b:.4f}, difference {abs(a - b):.4f}; seeds here spread "
                         f"{std:.4f} (std), allowed {allowed:.4f}: {'within' if agree else 'OUTSIDE'} the spread")
        ok &= agree
    missing = sorted(set(mine) - set(theirs))
    if missing:
        ok = False
        lines.append(f"the rerun has no {', '.join(missing[:3])}")
    return ok, lines
