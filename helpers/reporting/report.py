"""Report plumbing: provenance, the metrics file, the author block and observations from the numbers.

Every value a sentence or table takes from the run (author fields, configuration and class names, parameter
values, statuses) is the student's text: it goes in through :func:`md_text` or :func:`md_code`
(:mod:`helpers.escape`), which the notebooks use too, so it shows as the characters given and never as markup.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import platform
import subprocess
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from helpers.engine.config import PROJECT_ROOT
from helpers.escape import md_code, md_text
from helpers.engine.training import deterministic_cuda, resolve_device


def git_revision(root: Path = PROJECT_ROOT) -> str:
    """Short commit hash, with ``-dirty`` when the work tree has changes; ``unknown`` outside git."""
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True,
                             timeout=10)
        if rev.returncode != 0:
            return "unknown"
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return rev.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def environment(device="auto") -> dict:
    """Versions, device and machine facts for the appendix and ``metrics.json``."""
    import matplotlib
    import sklearn
    import torchvision

    dev = resolve_device(device)
    info = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "numpy": np.__version__,
        "pandas": pd.__version__,
        "scikit-learn": sklearn.__version__,
        "matplotlib": matplotlib.__version__,
        "platform": platform.platform(),
        "processor": platform.machine(),
        "cpu_threads": torch.get_num_threads(),
        "device": str(dev),
        "device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else platform.machine(),
        "git_revision": git_revision(),
        "determinism": (deterministic_cuda() if dev.type == "cuda" else
                        "same seed, same machine and versions: the same numbers (checked by python -m helpers verify)"),
        "date": dt.datetime.now().isoformat(timespec="seconds"),
    }
    return info


class Stopwatch:
    """Wall time since creation."""

    def __init__(self):
        self.start = time.perf_counter()

    @property
    def seconds(self) -> float:
        return time.perf_counter() - self.start


def to_jsonable(obj):
    """Convert numpy, torch and pandas values to plain JSON types (NaN becomes null)."""
    if isinstance(obj, dict) or hasattr(obj, "items") and not isinstance(obj, (pd.DataFrame, pd.Series)):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, pd.DataFrame):
        return [to_jsonable(r) for r in obj.to_dict(orient="records")]
    if isinstance(obj, pd.Series):
        return to_jsonable(obj.to_dict())
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, torch.Tensor):
        return to_jsonable(obj.tolist())
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return to_jsonable(obj.item())
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, Path):
        return str(obj)
    return obj


def write_metrics(output_dir: str | Path, payload: dict, name: str = "metrics.json") -> Path:
    """Write ``payload`` as JSON; a section's metrics (with a ``section``) get their fingerprint
    (:func:`helpers.cli.verify.fingerprint`), which ``python -m helpers verify`` checks."""
    data = to_jsonable(payload)
    if "section" in data:
        from helpers.cli.runner import SECTIONS, notebook_path
        from helpers.cli.verify import fingerprint

        data["fingerprint"] = fingerprint(data, notebook=notebook_path(data["section"])
                                          if data["section"] in SECTIONS else None)
    path = Path(output_dir) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2))
    tmp.replace(path)  # never a half-written metrics.json (a full disk, a killed run)
    return path


def author_block(*, cfg, title: str | None = None) -> str:
    """Markdown author block of a report (with a level-1 title when ``title`` is given)."""
    return (
        (f"# {title}\n\n" if title else "")
        + f"**Author:** {md_text(cfg.author_name)} ({md_text(cfg.author_id)})  \n"
        f"**Course:** {md_text(cfg.course)}  \n"
        f"**Profile:** {md_code(cfg.profile)}"
        + (" (every epoch count capped at 2: a check that each cell runs, not a result)" if cfg.profile == "smoke"
           else "")
        + f" · **seed:** {md_text(cfg.seed)} · **date:** {dt.date.today().isoformat()}"
    )


def split_sizes(splits: dict) -> dict:
    return {name: len(s) for name, s in splits.items()}


def grid_observations(table: pd.DataFrame, histories: dict, *, final: dict | None = None) -> str:
    """Markdown bullet points drawn from the grid table, the histories and the final test result."""
    ok = table.dropna(subset=["val_acc"])
    lines = []
    if ok.empty:
        return "- Every configuration failed; see the status column."
    from helpers.engine.experiment import ranked

    # the same choice as experiment.best_config, so the test-set line names the retrained model
    best = ranked(ok).iloc[0]
    worst = ok.iloc[ok["val_acc"].values.argmin()]
    fastest = ok.iloc[ok["seconds"].values.argmin()]
    slowest = ok.iloc[ok["seconds"].values.argmax()]
    lines.append(f"- **Best configuration:** {md_code(best['name'])} with {best['val_acc']:.2%} validation accuracy, "
                 f"{best['val_acc'] - worst['val_acc']:.2%} above the weakest ({md_code(worst['name'])}, "
                 f"{worst['val_acc']:.2%}).")
    lines.append(f"- **Fastest:** {md_code(fastest['name'])} ({fastest['seconds']:.1f} s); the slowest, "
                 f"{md_code(slowest['name'])}, "
                 f"took {slowest['seconds'] / max(fastest['seconds'], 1e-9):.1f}x as long ({slowest['seconds']:.1f} s).")
    gap = ok["train_acc"] - ok["val_acc"]
    widest = ok.loc[gap.idxmax()]
    lines.append(f"- **Train/validation gap** of the best: {best['train_acc'] - best['val_acc']:+.2%} "
                 f"(train {best['train_acc']:.2%}); the widest gap is {md_code(widest['name'])} "
                 f"({widest['train_acc'] - widest['val_acc']:+.2%}), the clearest sign of overfitting in the grid.")
    h = histories.get(best["name"])
    if h:
        be = h.best_epoch
        last = h[-1]
        lowest = min(r["val_loss"] for r in h if r["val_loss"] is not None)
        if be is not None and be < last["epoch"]:
            lines.append(f"- **Validation loss** of the best was lowest at epoch {be} of {last['epoch']} "
                         f"({lowest:.4f}) and ended at {last['val_loss']:.4f}: later epochs "
                         f"{'overfit' if last['val_loss'] > lowest * 1.02 else 'changed it little'}.")
        elif be is not None:
            lines.append(f"- **Validation loss** of the best was still falling at the last epoch ({be}): "
                         "more epochs might help.")
    failed = table[table["status"] != "completed"]
    for _, row in failed.iterrows():
        lines.append(f"- {md_code(row['name'])} stopped early: {md_text(row['status'])}.")
    if final is not None:
        test = final["test"]
        lines.append(f"- **Test set:** retrained on train + validation, {md_code(best['name'])} scores "
                     f"{test['accuracy']:.2%} accuracy (loss {test['loss']:.4f}).")
        mc = test["most_confused"]
        if len(mc):
            top = mc.iloc[0]
            lines.append(f"- **Most confused:** {md_text(top['true'])} taken for {md_text(top['predicted'])} "
                         f"{top['count']} times ({top['share_of_true']:.1%} of the {md_text(top['true'])} images).")
        pc = test["per_class"].sort_values("accuracy")
        lines.append(f"- **Hardest class:** {md_text(pc.iloc[0]['class'])} ({pc.iloc[0]['accuracy']:.1%}); "
                     f"easiest: {md_text(pc.iloc[-1]['class'])} ({pc.iloc[-1]['accuracy']:.1%}).")
    return "\n".join(lines)


def factor_observations(table: pd.DataFrame, factors, *, metric: str = "val_acc", labels: dict | None = None) -> str:
    """Markdown bullets comparing the mean ``metric`` of each level of each factor (a column of a grid table).

    For a pooling x normalization grid, ``factors=("pool", "norm")`` says, e.g., that max pooling averaged
    1.2 points more validation accuracy than average pooling across the normalization choices.
    """
    ok = table.dropna(subset=[metric])
    lines = []
    for factor in factors:
        if factor not in ok or ok[factor].nunique() < 2:
            continue
        means = ok.groupby(factor)[metric].mean().sort_values(ascending=False)
        name = md_text((labels or {}).get(factor, factor))
        parts = ", ".join(f"{md_code(level)} {value:.2%}" for level, value in means.items())
        lines.append(f"- **{name}:** mean {metric.replace('_', ' ')} {parts}; {md_code(means.index[0])} leads by "
                     f"{means.iloc[0] - means.iloc[-1]:.2%} over {md_code(means.index[-1])}.")
    return "\n".join(lines)


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


def appendix(env: dict, *, seconds: float, params: dict, metrics_file: str | Path | None = None):
    """Provenance table for the report's appendix; with ``metrics_file``, its fingerprint too.

    Returned styled (the table is its ``.data``): a plain DataFrame of more than 60 rows is shown cut to ten,
    and long values cut at 50 characters, which would hide the parameters a grader wants to read. Unlike a
    DataFrame, a Styler does not escape its cells: they are escaped here (the values are the student's).
    """
    rows = dict(env)
    rows["wall time"] = f"{seconds:.1f} s"
    metrics = read_metrics(metrics_file) if metrics_file else {}
    fp = metrics.get("fingerprint")
    rows.update(cache_rows(metrics))
    if fp:
        rows["fingerprint"] = (f"{fp['short']} (parameters {fp['parameters']}, notebook {fp['notebook']}, data "
                               f"{fp['data']}, results {fp['results']}); check with: fashion-report verify FOLDER")
    # one row per parameter: a single joined string would be cut off by pandas' column width
    rows.update({f"parameter {k}": repr(v) for k, v in params.items() if not k.endswith("_configs")})
    frame = pd.DataFrame({"value": [str(v) for v in rows.values()]}, index=list(rows))
    frame.index.name = "item"
    return (frame.style.format(escape="html").format_index(escape="html", axis=0)
            .format_index(escape="html", axis=1).set_properties(**{"text-align": "left"}))


def cache_record(result: dict | None, *, final: dict | None = None) -> dict:
    """``metrics.json``'s ``cache``: whether the cache was on, its folder, and per training run whether it was
    trained here or read from the cache and which run produced it (:mod:`helpers.cache`). The data's and each
    pretraining's own notes are under ``data.cache`` and ``pretraining.<backbone>.cache``. Every ``cache`` key is
    left out of the fingerprint and of ``verify``'s comparison: a result from the cache has the same numbers."""
    from helpers import cache

    runs = [{"name": r["name"], "repeat": r["repeat"], "seed": r["seed"], **(r.get("cache") or cache.off_record())}
            for r in (result or {}).get("runs", [])]
    if final is not None and final.get("cache") is not None:
        runs.append({"name": "final retraining", **final["cache"]})
    return {"enabled": cache.enabled(), "dir": str(cache.cache_dir()) if cache.enabled() else None,
            "runs_from_cache": sum(1 for r in runs if r.get("hit")),
            "runs_trained": sum(1 for r in runs if not r.get("hit")), "runs": runs}


def cache_rows(metrics: dict) -> dict:
    """The appendix's lines on the cache: what this report read from it instead of computing, and from which runs."""
    from helpers.cache import describe

    record = metrics.get("cache")
    if not record:
        return {}
    if not record.get("enabled"):
        return {"cache": "off: everything was computed in this run"}
    rows = {"cache": f"{record['dir']}: {record['runs_from_cache']} training run(s) read from it, "
                     f"{record['runs_trained']} trained here"}
    for run in record["runs"]:
        if run.get("hit"):
            rows[f"cache: run {run['name']}" + (f" (seed {run['seed']})" if "seed" in run else "")] = describe(run)
    data = (metrics.get("data") or {}).get("cache")
    if data and data.get("hit"):
        rows["cache: data"] = "decoded IDX files " + describe(data)
    for label, pre in (metrics.get("pretraining") or {}).items():
        if (pre.get("cache") or {}).get("hit"):
            rows[f"cache: pretraining {label}"] = describe(pre["cache"])
    return rows


def experiment_observations(result: dict, *, final: dict | None = None, metric: str = "val_acc") -> str:
    """Every observation on one comparison: the grid's own, each factor's average effect (two or more varied
    parameters), and, with repeats, whether the leaders differ by more than the run-to-run spread."""
    from helpers.engine.experiment import spread_observations

    parts = [grid_observations(result["table"], result["histories"], final=final)]
    if len(result["varied"]) >= 2:
        parts.append(factor_observations(result["table"], result["varied"], metric=metric))
    parts.append(spread_observations(result["table"], metric=metric))
    if result.get("evaluate_test") == "all":
        parts.append("- **Test accuracy of every configuration** is shown for comparison only: the configuration "
                     "reported as the result was still chosen on validation accuracy.")
    return "\n".join(p for p in parts if p)


def build_metrics(*, cfg, data: dict, result: dict | None = None, best: dict | None = None, final: dict | None = None,
                  latency: dict | None = None, extra: dict | None = None, env: dict, seconds: float) -> dict:
    """The one layout of every section's ``metrics.json`` (read back with :func:`read_metrics`).

    ``configurations`` has one row per configuration of the section's main comparison with every varied
    parameter under its own name; ``best`` names the configuration tested and holds its test results.
    """
    from helpers.engine.experiment import configuration_records

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


def read_metrics(path: str | Path) -> dict:
    """A section's ``metrics.json`` as written by :func:`build_metrics` (empty dict when there is none)."""
    path = Path(path)
    if path.is_dir():
        path = path / "metrics.json"
    return json.loads(path.read_text()) if path.exists() else {}


def grid_summary(configs: list[dict], *, repeats: int = 1, evaluate_test: str = "best", what: str = "The grid") -> str:
    """One sentence saying what the comparison varies, how many runs it makes and how the test set is used."""
    from helpers.engine.experiment import varied_parameters

    varied = varied_parameters(configs)
    runs = len(configs) * repeats
    text = (f"{what} compares **{len(configs)}** configuration{'s' * (len(configs) != 1)}"
            + (f" varying {', '.join(md_code(v) for v in varied)}" if varied else "")
            + (f", each trained with {repeats} seeds ({runs} runs)" if repeats > 1 else "") + ". ")
    text += ("Every configuration is also evaluated on the test set for comparison; the choice of the final model "
             "still uses validation accuracy only." if evaluate_test == "all" else
             "The choice uses validation accuracy; only the chosen configuration sees the test set.")
    return text


def data_record(splits: dict, *, cfg, names=("train", "val", "test")) -> dict:
    """``metrics.json``'s ``data``: where the images came from, split sizes, classes."""
    train = splits[names[0]]
    record = {"source": str(splits.get("source")), "sizes": split_sizes({k: splits[k] for k in names}),
              "classes": cfg.get("classes") or list(range(train.num_classes)), "class_names": list(train.class_names)}
    if splits.get("cache") is not None:  # whether the decoded files came from the cache (helpers.cache)
        record["cache"] = splits["cache"]
    return record
