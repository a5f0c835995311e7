"""``metrics.json``: its one layout, its one writer and its one reader.

A section's notebook hands its results (and the section's own extras, from the section module) to
:func:`build_metrics`; :func:`write_metrics` turns them into plain JSON with the fingerprint and writes the file;
every reader (the runner, ``verify``, the class summary, the autoencoder's side-by-side with the CNN report) goes
through :func:`read_metrics`.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from helpers import cache
from helpers.engine.experiment import configuration_records
from helpers.paths import NOTEBOOKS, notebook_path
from helpers.reporting.fingerprint import fingerprint

FILE_NAME = "metrics.json"


def to_jsonable(obj):
    """Convert numpy, torch and pandas values to plain JSON types (NaN becomes null).

    Told apart by what they can do rather than by their classes: a DataFrame becomes a list of records, a Series a
    dict, and anything with a ``tolist`` (a tensor, an array, a numpy scalar) its plain Python value.
    """
    if hasattr(obj, "to_dict") and hasattr(obj, "columns"):  # a DataFrame
        return [to_jsonable(r) for r in obj.to_dict(orient="records")]
    if hasattr(obj, "to_dict") and hasattr(obj, "index"):  # a Series
        return to_jsonable(obj.to_dict())
    if isinstance(obj, dict) or hasattr(obj, "items"):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if hasattr(obj, "tolist"):  # a tensor, an array or a numpy scalar (np.float64 is also a float: first)
        return to_jsonable(obj.tolist())
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, Path):
        return str(obj)
    return obj


def write_metrics(output_dir: str | Path, payload: dict, name: str = FILE_NAME, *, volatile=()) -> Path:
    """Write ``payload`` as JSON; a section's metrics (with a ``section``) get their fingerprint
    (:func:`helpers.reporting.fingerprint.fingerprint`, leaving out the section's own ``volatile`` keys beside the
    common ones), which ``python -m helpers verify`` checks."""
    data = to_jsonable(payload)
    if "section" in data:
        data["fingerprint"] = fingerprint(data, notebook=notebook_path(data["section"])
                                          if data["section"] in NOTEBOOKS else None, volatile=frozenset(volatile))
    path = Path(output_dir) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2))
    tmp.replace(path)  # never a half-written metrics.json (a full disk, a killed run)
    return path


def read_metrics(path: str | Path) -> dict:
    """A section's ``metrics.json`` (``path`` is the file or its folder) as written by :func:`write_metrics`;
    an empty dict when there is none. A file that is not JSON raises :class:`ValueError`."""
    path = Path(path)
    if path.is_dir():
        path = path / FILE_NAME
    return json.loads(path.read_text()) if path.exists() else {}


def split_sizes(splits: dict) -> dict:
    """Images per split: ``{"train": 850, "val": 150}``."""
    return {name: len(s) for name, s in splits.items()}


def data_record(splits: dict, *, cfg, names=("train", "val", "test")) -> dict:
    """``metrics.json``'s ``data``: where the images came from, split sizes, classes."""
    train = splits[names[0]]
    record = {"source": str(splits.get("source")), "sizes": split_sizes({k: splits[k] for k in names}),
              "classes": cfg.get("classes") or list(range(train.num_classes)), "class_names": list(train.class_names)}
    if splits.get("cache") is not None:  # whether the decoded files came from the cache (helpers.cache)
        record["cache"] = splits["cache"]
    return record


def test_summary(result: dict) -> dict:
    """The JSON-ready part of an evaluation result (no per-sample arrays)."""
    return {
        "accuracy": result["accuracy"],
        "loss": result["loss"],
        "confusion_matrix": result["confusion_matrix"],
        "per_class_accuracy": dict(zip(result["per_class"]["class"], result["per_class"]["accuracy"])),
        "classification_report": result["report"].to_dict(orient="index"),
        "most_confused": result["most_confused"][["true", "predicted", "count"]],
    }


def cache_record(result: dict | None, *, final: dict | None = None) -> dict:
    """``metrics.json``'s ``cache``: whether the cache was on, its folder, and per training run whether it was
    trained here or read from the cache and which run produced it (:mod:`helpers.cache`). The data's and each
    pretraining's own notes are under ``data.cache`` and ``pretraining.<backbone>.cache``. Every ``cache`` key is
    left out of the fingerprint and of ``verify``'s comparison: a result from the cache has the same numbers."""
    runs = [{"name": r["name"], "repeat": r["repeat"], "seed": r["seed"], **(r.get("cache") or cache.off_record())}
            for r in (result or {}).get("runs", [])]
    if final is not None and final.get("cache") is not None:
        runs.append({"name": "final retraining", **final["cache"]})
    return {"enabled": cache.enabled(), "dir": str(cache.cache_dir()) if cache.enabled() else None,
            "runs_from_cache": sum(1 for r in runs if r.get("hit")),
            "runs_trained": sum(1 for r in runs if not r.get("hit")), "runs": runs}


def build_metrics(*, cfg, data: dict, result: dict | None = None, best: dict | None = None, final: dict | None = None,
                  latency: dict | None = None, extra: dict | None = None, env: dict, seconds: float) -> dict:
    """The one layout of every section's ``metrics.json`` (read back with :func:`read_metrics`).

    ``configurations`` has one row per configuration of the section's main comparison with every varied
    parameter under its own name; ``best`` names the configuration tested and holds its test results; ``extra``
    is the section's own part (its module's ``metrics_extra``), between ``best`` and ``cache``.
    """
    payload = {"section": cfg.section, "profile": cfg.profile, "seed": cfg.seed,
               "parameters": {k: v for k, v in cfg.items() if not k.endswith("_configs")}, "data": data,
               "repeats": cfg.get("repeats", 1), "evaluate_test": cfg.get("evaluate_test", "best"),
               "configurations": configuration_records(result) if result else [],
               "histories": result["histories"] if result else {}}
    if best is not None:
        payload["best"] = {"name": best["name"], "config": best,
                           "retrain_seconds": final.get("seconds") if final else None,
                           "test": test_summary(final["test"]) if final else None, "latency": latency}
    payload.update(extra or {})
    payload.update({"cache": cache_record(result, final=final), "environment": env, "wall_seconds": seconds})
    return payload
