"""Can a report's numbers be trusted? Fingerprints written with every ``metrics.json``, and ``verify``, which
re-executes a report's section from what it recorded and compares every number.

A fingerprint holds four short digests: of the parameters, of the notebook (its cells' source), of the data
files, and of the results (``metrics.json`` without what changes from run to run: timings, dates, paths). A
``metrics.json`` whose numbers were edited no longer matches its results digest; a notebook changed after
the run no longer matches its notebook digest; and the rerun shows whether the code gives those numbers.
"""

from __future__ import annotations

import hashlib
import json
import math
import tempfile
from pathlib import Path

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
    import nbformat

    nb = nbformat.read(str(path), as_version=4)
    return digest([[c.cell_type, c.source] for c in nb.cells])


def data_digest(source: str | Path | None) -> str | None:
    """Digest of the data files a report read: the four Fashion-MNIST IDX files, or every file of a folder."""
    if not source:
        return None
    from .data import DataNotFoundError, find_data

    try:
        files = sorted(find_data(source).values())
    except (DataNotFoundError, OSError, ValueError):
        root = Path(source)
        files = sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else []
    if not files:
        return None
    h = hashlib.sha256()
    for f in files:
        h.update(Path(f).name.encode())
        h.update(Path(f).read_bytes())
    return h.hexdigest()[:16]


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
    """Problems found without rerunning: numbers edited after the run, a notebook changed since."""
    fp = metrics.get("fingerprint")
    if not fp:
        return ["no fingerprint: this report was made before fingerprints were recorded"]
    problems = []
    if digest(stable(metrics)) != fp.get("results"):
        problems.append("metrics.json was changed after the run: its numbers no longer match the results "
                        f"fingerprint {fp.get('results')}")
    if fp.get("notebook") and Path(notebook).exists() and notebook_digest(notebook) != fp["notebook"]:
        problems.append(f"the notebook {Path(notebook).name} was changed after the run (fingerprint "
                        f"{fp['notebook']}, now {notebook_digest(notebook)})")
    data = data_digest((metrics.get("data") or {}).get("source"))
    if fp.get("data") and data and data != fp["data"]:
        problems.append(f"the data at {metrics['data']['source']} differ from the run's (fingerprint {fp['data']})")
    return problems


def rerun(metrics: dict, *, workdir: Path) -> dict:
    """Execute the report's section again with its recorded parameters; the new ``metrics.json``.

    The cache is off for the rerun (and nothing is resumed): every run is trained again, or the rerun would only
    read back the numbers it is meant to check."""
    import os

    from .cache import ENV_SWITCH
    from .kernels import execute
    from .runner import NOTEBOOKS_DIR, notebook_parameters, notebook_path

    section = metrics["section"]
    declared = notebook_parameters(section)
    params = {k: v for k, v in metrics["parameters"].items() if k in declared and k != "output_dir"}
    out = workdir / section
    before = {k: os.environ.get(k) for k in (ENV_SWITCH, "HELPERS_RESUME")}
    os.environ.update({ENV_SWITCH: "off", "HELPERS_RESUME": "0"})  # the kernel inherits them
    try:
        execute(notebook_path(section), workdir / f"{section}.ipynb", parameters={**params, "output_dir": str(out)},
                cwd=NOTEBOOKS_DIR)
    finally:
        for k, v in before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return json.loads((out / "metrics.json").read_text())


def verify_folder(folder: str | Path, *, tolerance: float = 1e-6, log=print) -> bool:
    """Verify every ``metrics.json`` under ``folder`` (a section, a report with several, or a batch of them).

    Prints what was checked and every difference; returns True when all agree.
    """
    from .runner import notebook_path

    files = sorted(Path(folder).rglob("metrics.json"))
    if not files:
        log(f"error: no metrics.json under {folder}")
        return False
    ok = True
    for path in files:
        metrics = json.loads(path.read_text())
        label = str(path.parent)
        problems = check_fingerprint(metrics, notebook=notebook_path(metrics["section"]))
        with tempfile.TemporaryDirectory(prefix="verify-") as tmp:
            again = rerun(metrics, workdir=Path(tmp))
        changed = environment_changes(metrics.get("environment") or {}, again.get("environment") or {})
        diffs = differences(metrics, again, tolerance=tolerance if changed else 0.0)
        fine = not diffs and not [p for p in problems if not p.startswith("no fingerprint")]
        ok &= fine
        log(f"{'OK  ' if fine else 'FAIL'} {label} ({metrics['section']}, fingerprint "
            f"{(metrics.get('fingerprint') or {}).get('short', '-')})")
        for p in problems:
            log(f"     {p}")
        if changed:
            log(f"     rerun on another machine or versions ({'; '.join(changed)}): numbers compared within "
                f"{tolerance:g}")
        if diffs:
            width = max(len(d[0]) for d in diffs[:40])
            log(f"     {len(diffs)} number(s) differ from the rerun:")
            log(f"     {'where':<{width}}  {'report':>14}  {'rerun':>14}")
            for where, a, b in diffs[:40]:
                log(f"     {where:<{width}}  {str(a):>14.14}  {str(b):>14.14}")
            if len(diffs) > 40:
                log(f"     ... and {len(diffs) - 40} more")
        elif not changed:
            log("     the rerun gives every number of the report exactly")
    return ok
