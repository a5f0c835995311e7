"""Can a report's numbers be trusted? The data, timing and environment checks and the rerun that ``verify``
(:mod:`helpers.cli.verify_report`) builds on, beside the fingerprint (:mod:`helpers.reporting.fingerprint`).

A fingerprint holds four short digests: of the parameters, of the notebook (its cells' source), of the data (for
Fashion-MNIST, of the four files' decoded contents, so any copy of the real data set gives
:data:`FASHION_MNIST_DIGEST`), and of the results (``metrics.json`` without what changes from run to run:
timings, dates, paths). A ``metrics.json`` whose numbers were edited no longer matches its results digest; a
notebook changed after the run no longer matches its notebook digest. The recipe is public, so a forger can
compute the digests again: the fingerprint catches careless edits, the rerun and the page's comparison with it
catch the rest (a seal no student can recompute would need a secret the toolkit does not have).
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path

from helpers.cache import ENV_SWITCH
from helpers.cli.kernels import execute
from helpers.cli.runner import NOTEBOOKS_DIR, notebook_parameters, notebook_path
from helpers.reporting.fingerprint import FASHION_MNIST_DIGEST
from helpers.reporting.metrics_file import read_metrics

# Differences in these mean the rerun could not be exact, so numbers are compared within a tolerance.
ENVIRONMENT_KEYS = ("device", "device_name", "torch", "torchvision", "numpy", "python", "processor", "cpu_model",
                    "cpu_flags")


def environment_changes(recorded: dict, now: dict) -> list[str]:
    """What differs between the machine and versions of a report and of its rerun."""
    return [f"{k}: {recorded.get(k)} -> {now.get(k)}" for k in ENVIRONMENT_KEYS if recorded.get(k) != now.get(k)]


def data_problems(metrics: dict, reference) -> list[str]:
    """A Fashion-MNIST report's data digest against Fashion-MNIST's known one, or against the copy the instructor
    named with ``--reference-data`` (``reference``: :class:`helpers.cli.verify_inputs.Reference`). An image-folder
    report's digest is compared with the instructor's copy of that folder when the rerun is prepared."""
    recorded = (metrics.get("fingerprint") or {}).get("data")
    if (metrics.get("parameters") or {}).get("dataset", "fashion_mnist") != "fashion_mnist" or not recorded:
        return []
    if reference.chosen:
        return [] if recorded == reference.digest else [
            f"the data the report was made from are not the reference data: their digest is {recorded}, that of "
            f"--reference-data {reference.folder} is {reference.digest}"]
    if recorded != FASHION_MNIST_DIGEST:
        return [f"the data the report was made from are not Fashion-MNIST: their digest is {recorded}, "
                f"Fashion-MNIST's is {FASHION_MNIST_DIGEST} (other files in its data_dir, an edited digest, or a "
                "report from a toolkit that digested the files' bytes: make it again)"]
    if not reference.known:
        return [f"cannot rerun on Fashion-MNIST here: {reference.describe()}; install it (bash run.sh data) or "
                "name a copy with --reference-data"]
    return []


SECONDS = re.compile(r"(^|_)seconds(_mean)?$")


def total_seconds(obj) -> tuple[float, int]:
    """The sum of every ``*seconds`` number in a metrics.json (histories, runs, wall time), and how many."""
    total, count = 0.0, 0
    if isinstance(obj, dict):
        for k, v in obj.items():
            if isinstance(v, (int, float)) and not isinstance(v, bool) and SECONDS.search(str(k)) and math.isfinite(v):
                total, count = total + v, count + 1
            elif isinstance(v, (dict, list)):
                t, c = total_seconds(v)
                total, count = total + t, count + c
    elif isinstance(obj, list):
        for v in obj:
            t, c = total_seconds(v)
            total, count = total + t, count + c
    return total, count


def _ratio(a, b) -> float | None:
    ok = all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in (a, b))
    return (a / b if b > 0 else None) if ok else None


def timing_problems(report: dict, again: dict, *, same_device: bool) -> tuple[str, list[str]]:
    """Latency, throughput and all seconds of a report beside its rerun's: a line saying so, and the problems.

    More than :data:`IMPLAUSIBLE` times faster or slower than the rerun is named: machines differ (a GPU, a busy
    laptop) but not by that much for the same model at batch size 1. The seconds in all are judged so only on the
    same device (a GPU trains a large model far faster than a CPU)."""
    def latency(m, key):
        best = m.get("best") if isinstance(m.get("best"), dict) else {}
        return (best.get("latency") or {}).get(key) if isinstance(best.get("latency"), dict) else None

    parts, problems = [], []
    for key, unit in (("ms_per_image_batch1", "ms/image"), ("images_per_second", "images/s")):
        a, b = latency(report, key), latency(again, key)
        r = _ratio(a, b)
        if r is None:
            continue
        parts.append(f"{key} {a:.4g} {unit} vs rerun {b:.4g} (x{r:.3g})")
        if not 1 / IMPLAUSIBLE <= r <= IMPLAUSIBLE:
            problems.append(f"implausible latency: best.latency.{key} is {a:.4g} {unit}, the rerun's {b:.4g}: "
                            f"{max(r, 1 / r):,.0f}x {'more' if r > 1 else 'less'} than on the grader's machine")
    (a, n), (b, m) = total_seconds(report), total_seconds(again)
    r = _ratio(a, b)
    if r is not None:
        parts.append(f"seconds {a:.4g} s in all ({n} timings) vs rerun {b:.4g} s ({m}) (x{r:.3g})")
        if same_device and not 1 / IMPLAUSIBLE <= r <= IMPLAUSIBLE:
            problems.append(f"implausible timings: {a:.4g} s in all against the rerun's {b:.4g} s on the same device "
                            f"({max(r, 1 / r):,.0f}x)")
    return "timings: " + ("; ".join(parts) or "none recorded"), problems


IMPLAUSIBLE = 100.0


def rerun(metrics: dict, *, workdir: Path, parameters: dict | None = None, timeout: float | None = None) -> dict:
    """Execute the report's section again into ``workdir``; the new ``metrics.json`` (the executed notebook is
    ``workdir/<section>.ipynb``).

    ``parameters`` are what the notebook gets (default: the recorded ones it declares, as they are: for a
    report of one's own; ``verify`` passes :func:`helpers.cli.verify_inputs.rerun_parameters`' instead, which use no
    path of the hand-in). The cache is off for the rerun (and nothing is resumed): every run is trained again, or
    the rerun would only read back the numbers it is meant to check. ``timeout`` (seconds) stops it
    (:class:`helpers.cli.kernels.SectionTimeout`)."""
    section = metrics["section"]
    if parameters is None:
        declared = notebook_parameters(section)
        parameters = {k: v for k, v in metrics["parameters"].items() if k in declared and k != "output_dir"}
    out = workdir / section
    before = {k: os.environ.get(k) for k in (ENV_SWITCH, "HELPERS_RESUME")}
    os.environ.update({ENV_SWITCH: "off", "HELPERS_RESUME": "0"})  # the kernel inherits them
    try:
        execute(notebook_path(section), workdir / f"{section}.ipynb",
                parameters={**parameters, "output_dir": str(out)}, cwd=NOTEBOOKS_DIR, timeout=timeout)
    finally:
        for k, v in before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return read_metrics(out / "metrics.json")
