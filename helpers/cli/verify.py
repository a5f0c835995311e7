"""Can a report's numbers be trusted? Fingerprints written with every ``metrics.json``; the digests, comparisons
and rerun that ``verify`` (:mod:`helpers.cli.verify_report`) builds on.

A fingerprint holds four short digests: of the parameters, of the notebook (its cells' source), of the data (for
Fashion-MNIST, of the four files' decoded contents, so any copy of the real data set gives
:data:`FASHION_MNIST_DIGEST`), and of the results (``metrics.json`` without what changes from run to run:
timings, dates, paths). A ``metrics.json`` whose numbers were edited no longer matches its results digest; a
notebook changed after the run no longer matches its notebook digest. The recipe is public, so a forger can
compute the digests again: the fingerprint catches careless edits, the rerun and the page's comparison with it
catch the rest (a seal no student can recompute would need a secret the toolkit does not have).
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import re
from pathlib import Path

from helpers.data.fashion import FASHION_MNIST_MD5

# What may differ between two identical runs: how long things took, when, where the files went, what only
# describes the machine, and whether a result was computed or read from the cache (the same numbers either way).
VOLATILE = frozenset({
    "seconds", "seconds_mean", "seconds_std", "wall_seconds", "retrain_seconds", "ae_seconds", "ae_seconds_mean",
    "ae_seconds_std", "date", "output_dir", "checkpoint", "ms_per_image_batch1", "images_per_second", "cnn_metrics",
    "environment", "fingerprint", "source", "cache",
})
# Differences in these mean the rerun could not be exact, so numbers are compared within a tolerance.
ENVIRONMENT_KEYS = ("device", "device_name", "torch", "torchvision", "numpy", "python", "processor")


def digest(obj) -> str:
    """A short, stable digest of JSON-like data (16 hex digits of SHA-256 over its sorted JSON)."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def stable(obj):
    """``obj`` without its :data:`VOLATILE` keys, at any depth."""
    if isinstance(obj, dict):
        return {k: stable(v) for k, v in obj.items() if k not in VOLATILE}
    if isinstance(obj, list):
        return [stable(v) for v in obj]
    return obj


def notebook_digest(path: str | Path) -> str:
    """Digest of a notebook's cells (type and source), not of its outputs or metadata."""
    path = Path(path)
    stat = path.stat()
    return _notebook_digest(str(path), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=16)
def _notebook_digest(path: str, mtime_ns: int, size: int) -> str:
    """:func:`notebook_digest`, read once per version of the file (verify checks hundreds of reports against the
    same notebook)."""
    import nbformat

    nb = nbformat.read(path, as_version=4)
    return digest([[c.cell_type, c.source] for c in nb.cells])


def fashion_mnist_digest(files: dict) -> str:
    """Digest of the four Fashion-MNIST files :func:`helpers.data.fashion.find_data` found, over their decoded contents
    (:func:`helpers.data.fashion.contents_md5`): the same for .gz or raw files, Zalando's or Debian's compression."""
    from helpers.data.fashion import contents_md5

    return digest(contents_md5(files))


def folder_digest(root: str | Path) -> str | None:
    """Digest of every file of a folder (an image-folder data set): names and bytes, in path order."""
    root = Path(root)
    files = sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else []
    if not files:
        return None
    h = hashlib.sha256()
    for f in files:
        h.update(f.name.encode())
        h.update(f.read_bytes())
    return h.hexdigest()[:16]


def data_digest(source: str | Path | None) -> str | None:
    """Digest of the data a report read: :func:`fashion_mnist_digest` of a folder holding the four IDX files,
    else :func:`folder_digest`. Computed where the report runs, from the folder it read."""
    if not source:
        return None
    from helpers.data.fashion import DataNotFoundError, find_data

    try:
        return fashion_mnist_digest(find_data(source))
    except (DataNotFoundError, OSError, ValueError, EOFError):
        return folder_digest(source)


# What a report made from the real Fashion-MNIST records as its data digest, whichever copy it read.
FASHION_MNIST_DIGEST = digest({stem: md5["idx"] for stem, md5 in FASHION_MNIST_MD5.items()})


def fingerprint(payload: dict, *, notebook: str | Path | None) -> dict:
    """The fingerprint of a JSON-ready ``metrics.json`` payload (see the module docstring)."""
    params = {k: v for k, v in (payload.get("parameters") or {}).items() if k not in VOLATILE}
    parts = {"parameters": digest(params),
             "notebook": notebook_digest(notebook) if notebook and Path(notebook).exists() else None,
             "data": data_digest((payload.get("data") or {}).get("source")),
             "results": digest(stable(payload))}
    parts["short"] = digest(parts)[:12]
    return parts


def differences(a, b, path: str = "", *, tolerance: float = 0.0) -> list[tuple[str, object, object]]:
    """Every number or value that differs between two ``metrics.json`` contents (:data:`VOLATILE` keys aside):
    ``(path, a value, b value)``. Numbers within ``tolerance`` (relative, or absolute near zero) are equal."""
    if isinstance(a, dict) and isinstance(b, dict):
        return [d for k in sorted(set(a) | set(b)) if k not in VOLATILE
                for d in differences(a.get(k), b.get(k), f"{path}.{k}" if path else k, tolerance=tolerance)]
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return [(path, f"{len(a)} items", f"{len(b)} items")]
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in differences(x, y, f"{path}[{i}]", tolerance=tolerance)]
    numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (a, b))
    if numbers and (a == b or math.isclose(a, b, rel_tol=tolerance, abs_tol=tolerance)):
        return []
    return [] if a == b else [(path, a, b)]


def environment_changes(recorded: dict, now: dict) -> list[str]:
    """What differs between the machine and versions of a report and of its rerun."""
    return [f"{k}: {recorded.get(k)} -> {now.get(k)}" for k in ENVIRONMENT_KEYS if recorded.get(k) != now.get(k)]


def check_fingerprint(metrics: dict, *, notebook: str | Path) -> list[str]:
    """Problems found without rerunning: no fingerprint, or one that does not match the parameters, the notebook
    (the toolkit's own, ``notebook``), the results or its own parts.

    A fingerprint catches numbers edited by hand and a notebook changed since; it is no seal. Its recipe is in
    this file, so whoever edits a number can compute the digests again: only the rerun and the page's
    comparison with it catch that (no digest can, without a secret the student does not have)."""
    fp = metrics.get("fingerprint")
    if not isinstance(fp, dict) or not fp:
        return ["no fingerprint: metrics.json does not record what it was made from (removed, or made by a toolkit "
                "from before fingerprints)"]
    missing = [k for k in ("parameters", "notebook", "data", "results", "short") if not fp.get(k)]
    if missing:
        return [f"the fingerprint lacks {', '.join(missing)}: it was edited, or made by another version of the toolkit"]
    problems = []
    params = {k: v for k, v in (metrics.get("parameters") or {}).items() if k not in VOLATILE}
    if digest(params) != fp["parameters"]:
        problems.append(f"the parameters were changed after the run: they no longer match the fingerprint "
                        f"{fp['parameters']}")
    if digest(stable(metrics)) != fp["results"]:
        problems.append("metrics.json was changed after the run: its numbers no longer match the results "
                        f"fingerprint {fp['results']}")
    now = notebook_digest(notebook) if Path(notebook).exists() else None
    if now != fp["notebook"]:
        problems.append(f"the notebook {Path(notebook).name} was changed after the run, or the report was made with "
                        f"another version of it (fingerprint {fp['notebook']}, this toolkit's {now})")
    if digest({k: fp[k] for k in ("parameters", "notebook", "data", "results")})[:12] != fp["short"]:
        problems.append(f"fingerprint.short {fp['short']!r} is not the digest of the fingerprint's parts")
    return problems


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
    import os

    from helpers.cache import ENV_SWITCH
    from helpers.cli.kernels import execute
    from helpers.cli.runner import NOTEBOOKS_DIR, notebook_parameters, notebook_path

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
    return json.loads((out / "metrics.json").read_text())


def verify_folder(folder: str | Path, **options) -> bool:
    """Verify every report under ``folder``; see :func:`helpers.cli.verify_report.verify_folder` for the options."""
    from helpers.cli.verify_report import verify_folder as verify_all

    return verify_all(folder, **options)
