"""The one experiment engine: train each configuration of a ``grid`` (:mod:`helpers.engine.grid`, with repeats),
tabulate, pick the best on validation, and test once (or test every configuration, ``evaluate_test="all"``).

Every section uses it. A section gives one function, ``train_one(settings, *, train, val, seed)``, that
trains a single run from a flat dict of settings and returns ``{"model", "history", ...}``; the engine
does the rest the same way everywhere (order, seeds, NaN handling, tables, repeats, test evaluation).

A ``grid`` is either a mapping ``parameter -> list of values`` (their cartesian product) or a list of
mappings (explicit configurations); each configuration overrides the report's base parameters.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping

import numpy as np
import pandas as pd

from helpers.data.fashion import ImageSet, concat
from helpers.engine.grid import (
    GridError,
    config_name,
    expand_grid,  # noqa: F401  (experiment.expand_grid, as notebooks and tests call it)
    value_label,
)
from helpers.engine.metrics import evaluate
from helpers.engine.parallel import plan_workers, train_runs
from helpers.engine.progress import emit
from helpers.engine.runcache import run_cache_parts, train_run  # noqa: F401  (run_cache_parts: experiment's API too)
from helpers.escape import md_code
from helpers.models.networks import count_parameters

EVALUATE_TEST = ("best", "all")
# Result columns averaged over repeats (a ``_std`` column beside each when repeats > 1).
METRICS = ("train_loss", "train_acc", "val_loss", "val_acc", "test_loss", "test_acc", "best_epoch", "seconds")


def settings_of(config: Mapping, base: Mapping) -> dict:
    """One run's full settings: the base parameters with the configuration's values over them."""
    return {**base, **{k: v for k, v in config.items() if k != "name"}}


def run_settings(configs: list[dict], *, base: Mapping) -> list[dict]:
    """Each configuration's full settings (:func:`settings_of`)."""
    return [settings_of(c, base) for c in configs]


def varied_parameters(configs: list[dict]) -> list[str]:
    """The parameters that some configuration sets, in first-seen order."""
    return list(dict.fromkeys(k for c in configs for k in c if k != "name"))


def run_experiment(configs: list[dict], *, base: Mapping, train_one: Callable, train: ImageSet, val: ImageSet | None,
                   test: ImageSet | None = None, repeats: int = 1, seed: int = 0, evaluate_test: str = "best",
                   device="auto", keep_models: bool = True) -> dict:
    """Train every configuration ``repeats`` times (seeds ``seed``, ``seed + 1``, ...) and tabulate.

    Returns ``{"table", "histories", "models", "runs", "per_class", "varied", "configs", ...}``: ``table`` has one
    row per configuration (every varied parameter as its own column, the last epoch's losses and accuracies,
    best epoch, seconds; means with a ``_std`` column beside each when ``repeats`` > 1), sorted by validation
    accuracy. With ``evaluate_test="all"`` each run is also evaluated on ``test`` (``test_acc``, ``test_loss``,
    and ``per_class``: configuration -> class -> accuracy); selection still uses validation only.
    ``histories``, ``models`` and ``outputs`` (all that ``train_one`` returned) hold the first repeat of each
    configuration.
    """
    if evaluate_test not in EVALUATE_TEST:
        raise GridError(f"parameter evaluate_test={evaluate_test!r} is not allowed; allowed: 'best', 'all'")
    if evaluate_test == "all" and test is None:
        raise ValueError("evaluate_test='all' needs the test set")
    varied = varied_parameters(configs)
    rows, histories, models, runs, per_class, outputs = [], {}, {}, [], {}, {}
    # small CPU runs train side by side in worker processes, with the numbers they give in turn (helpers.engine.parallel)
    jobs = [{"train_one": train_one, "settings": settings_of(config, base), "train": train, "val": val,
             "seed": seed + r, "desc": config["name"], "index": number * repeats + r + 1,
             "total": len(configs) * repeats, "name": config["name"]}
            for number, config in enumerate(configs) for r in range(repeats)]
    workers = plan_workers(train_one, [job["settings"] for job in jobs], train=train)
    done = iter(train_runs(jobs, workers=workers)) if workers > 1 else None
    for number, config in enumerate(configs):
        settings = settings_of(config, base)
        rep_rows, rep_class = [], []
        for r in range(repeats):
            if done is not None:
                out = next(done)
                seconds = out.get("seconds") or out["history"].seconds
            else:
                start = time.perf_counter()
                emit("run", index=number * repeats + r + 1, total=len(configs) * repeats, name=config["name"])
                out = train_run(train_one, settings, train=train, val=val, seed=seed + r, desc=config["name"])
                # a run from the cache keeps the training time of the run that produced it
                seconds = out.get("seconds") if (out.get("cache") or {}).get("hit") else time.perf_counter() - start
            history, model = out["history"], out["model"]
            row = history_row(history, seconds=seconds, extra=out.get("row"))
            row["params"] = count_parameters(model)["trainable"]
            if evaluate_test == "all":
                result = out.get("test") or evaluate(model, test, device=device)
                row["test_acc"], row["test_loss"] = result["accuracy"], result["loss"]
                rep_class.append(dict(zip(result["per_class"]["class"], result["per_class"]["accuracy"])))
            runs.append({"name": config["name"], "repeat": r, "seed": seed + r, "history": history,
                         "cache": out.get("cache"),
                         **{k: row[k] for k in row if k in METRICS or k == "status"}})
            rep_rows.append(row)
            if r == 0:
                histories[config["name"]] = history
                if keep_models:
                    models[config["name"]] = model
                    outputs[config["name"]] = out
        rows.append({"name": config["name"], **{k: value_label(config[k]) if k in config else value_label(base.get(k))
                                                  for k in varied}, **aggregate(rep_rows)})
        if rep_class:
            per_class[config["name"]] = {c: float(np.mean([d[c] for d in rep_class])) for c in rep_class[0]}
    table = pd.DataFrame(rows).sort_values("val_acc", ascending=False, na_position="last", kind="stable")
    return {"table": table.reset_index(drop=True), "histories": histories, "models": models, "runs": runs,
            "per_class": per_class, "outputs": outputs, "varied": varied, "configs": configs, "repeats": repeats,
            "evaluate_test": evaluate_test,
            # what the observations need to tell a result from chance and noise (helpers.reporting.observations)
            "val_size": len(val) if val is not None else None, "num_classes": getattr(train, "num_classes", None),
            "profile": base.get("profile")}


def history_row(history, *, seconds: float, extra: Mapping | None = None) -> dict:
    """The results of one run: the last epoch's numbers, the best (lowest validation loss) epoch, time, status."""
    last = history[-1] if history else {}

    def num(key):
        v = last.get(key)
        return math.nan if v is None else float(v)

    row = {"epochs_run": len(history), "train_loss": num("train_loss"), "train_acc": num("train_acc"),
           "val_loss": num("val_loss"), "val_acc": num("val_acc"),
           "best_epoch": history.best_epoch if history.best_epoch is not None else math.nan,
           "seconds": seconds, "status": history.stop_reason}
    row.update(extra or {})
    return row


def aggregate(rows: list[dict]) -> dict:
    """One row from the repeats of a configuration: means of the metrics (``_std`` beside them when > 1 run)."""
    out = dict(rows[0])
    if len(rows) == 1:
        return out
    for key in rows[0]:
        values = [r.get(key) for r in rows]
        # the metrics, and any float a section adds (e.g. reconstruction error); counts such as parameters are
        # the same in every repeat and keep their one value
        if key in METRICS or all(isinstance(v, float) for v in values):
            arr = np.array([np.nan if v is None else v for v in values], dtype=float)
            out[key] = float(np.nanmean(arr)) if np.isfinite(arr).any() else math.nan
            out[f"{key}_std"] = float(np.nanstd(arr, ddof=1)) if np.isfinite(arr).sum() > 1 else math.nan
    bad = [r["status"] for r in rows if r.get("status") != "completed"]
    out["status"] = bad[0] if bad else "completed"
    out["repeats"] = len(rows)
    return out


def ranked(table: pd.DataFrame) -> pd.DataFrame:
    """The completed configurations, best first: highest validation accuracy, ties to the lower validation loss,
    then to the earlier configuration of the grid. Never by time, which differs between two runs of one report."""
    ok = table.dropna(subset=["val_acc"])
    keys = ["val_acc", "val_loss"] if "val_loss" in ok else ["val_acc"]
    return ok.sort_values(keys, ascending=[False, True][:len(keys)], kind="stable", na_position="last")


def best_config(table: pd.DataFrame, configs: list[dict]) -> dict:
    """The configuration ranked first by :func:`ranked`."""
    ok = ranked(table)
    if ok.empty:
        raise RuntimeError("every configuration failed; see the 'status' column")
    name = ok.iloc[0]["name"]
    return next(c for c in configs if c["name"] == name)


def retrain_and_test(config: dict, *, base: Mapping, train_one: Callable, train: ImageSet, val: ImageSet | None,
                     test: ImageSet, seed: int = 0, device="auto", **overrides) -> dict:
    """Retrain ``config`` on train + validation (``overrides`` such as ``epochs`` win), then test it once.

    Returns ``{"model", "history", "test", "seconds", "settings"}``.
    """
    settings = {**settings_of(config, base), **overrides}
    data = concat(train, val) if val is not None and len(val) else train
    start = time.perf_counter()
    emit("run", index=1, total=1, name=f"{config['name']} (final)")
    out = train_run(train_one, settings, train=data, val=None, seed=seed, desc=f"{config['name']} (final)",
                    tag="final")
    seconds = out.get("seconds") if (out.get("cache") or {}).get("hit") else time.perf_counter() - start
    if out["history"].stop_reason != "completed":
        raise RuntimeError(f"retraining {config['name']} failed: {out['history'].stop_reason}")
    return {"model": out["model"], "history": out["history"], "seconds": seconds, "settings": settings,
            "cache": out.get("cache"),
            "test": out.get("test") or evaluate(out["model"], test, device=device)}


def configuration_records(result: dict) -> list[dict]:
    """``metrics.json``'s ``configurations``: per configuration, every varied parameter under its own name
    (its real value, not the table's text) and the results (``_mean``/``_std`` when repeats > 1)."""
    by_name = {c["name"]: c for c in result["configs"]}
    records = []
    for row in result["table"].to_dict(orient="records"):
        config = by_name[row["name"]]
        rec = {"name": row["name"], **{k: config[k] for k in result["varied"] if k in config}}
        for key, value in row.items():
            if key == "name" or key in result["varied"]:
                continue
            if f"{key}_std" in row:
                key = f"{key}_mean"
            rec[key] = value
        if row["name"] in result["per_class"]:
            rec["test_per_class"] = result["per_class"][row["name"]]
        records.append(rec)
    return records


def spread_observations(table: pd.DataFrame, *, metric: str = "val_acc") -> str:
    """With repeats: whether the leading configurations differ by more than the run-to-run spread."""
    std = f"{metric}_std"
    ok = table.dropna(subset=[metric])
    if std not in ok or len(ok) < 2:
        return ""
    ok = ok.sort_values(metric, ascending=False, kind="stable")
    first, second = ok.iloc[0], ok.iloc[1]
    diff, spread = first[metric] - second[metric], max(first[std], second[std])
    runs = int(first.get("repeats", 0))
    typical = float(np.nanmean(ok[std]))
    line = (f"- **Run-to-run spread:** over {runs} seeds the standard deviation of {metric.replace('_', ' ')} is "
            f"{typical:.2%} on average. {md_code(first['name'])} leads {md_code(second['name'])} by {diff:.2%}, ")
    if not math.isfinite(spread) or diff <= spread:
        line += (f"less than their spread ({spread:.2%}): this grid cannot tell them apart; more repeats or "
                 "epochs would be needed to rank them.")
    else:
        line += f"more than their spread ({spread:.2%})."
    close = [r["name"] for _, r in ok.iloc[1:].iterrows() if first[metric] - r[metric] <= max(first[std], r[std])]
    if len(close) > 1:
        line += f" Within the spread of the best: {', '.join(md_code(n) for n in close)}."
    return line


# Headers of the report tables; other columns keep their names with spaces for underscores, so that
# a narrow PDF page can wrap a header between words instead of squeezing it.
HEADERS = {"train_acc": "train acc %", "val_acc": "val acc %", "test_acc": "test acc %", "train_loss": "train loss",
           "val_loss": "val loss", "test_loss": "test loss", "best_epoch": "best epoch (val loss)",
           "epochs_run": "epochs", "params": "parameters"}


def results_table(table: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """The columns a report shows, with readable headers, accuracies in percent and rounded losses.

    ``test_acc`` is expected as a fraction, like ``train_acc`` and ``val_acc``. The ``status`` column is
    shown only when some run did not complete (its reason is then in that column).
    """
    view = table[[c for c in columns if c in table.columns]].copy()
    for col, scale, digits in [(c, 100, 2) for c in ("train_acc", "val_acc", "test_acc")] + \
            [(c, 1, 4) for c in ("train_loss", "val_loss", "test_loss")]:
        if col not in view:
            continue
        if f"{col}_std" in table:
            # repeats: mean±std over the seeds, without spaces so that a narrow PDF column keeps it on one line
            # (losses lose a digit for the width the std takes)
            d = digits if scale == 100 else digits - 1
            view[col] = [f"{m * scale:.{d}f}±{s * scale:.{d}f}" if pd.notna(m) else "–"
                         for m, s in zip(table[col], table[f"{col}_std"].fillna(0.0))]
        else:
            view[col] = (view[col] * scale).round(digits)
    if "seconds" in view:
        view["seconds"] = view["seconds"].round(1)
    if "status" in view and (view["status"] == "completed").all():
        view = view.drop(columns="status")  # a column of "completed" only takes width from a full page
    if "name" in view:
        view = view.set_index("name")
    return view.rename(columns=lambda c: HEADERS.get(c, c.replace("_", " ")))


RESULT_COLUMNS = ("params", "train_loss", "train_acc", "val_loss", "val_acc", "test_loss", "test_acc", "best_epoch",
                  "seconds", "status")


def experiment_table(result: dict, columns=RESULT_COLUMNS) -> pd.DataFrame:
    """The report's table of a comparison: the varied parameters as the index (one column each), then results.

    A configuration's name is shown too when it was given in the grid (it then says more than its values).
    """
    table, varied = result["table"], [k for k in result["varied"] if k in result["table"]]
    named = any(c["name"] != config_name({k: v for k, v in c.items() if k != "name"}) for c in result["configs"])
    keys = (["name"] if named or not varied else []) + varied
    view = results_table(table, [*keys, *columns])
    view = view.reset_index() if "name" in keys else view
    index = [HEADERS.get(k, k.replace("_", " ")) for k in keys]
    return view.set_index(index)


def distinct_models(configs: list[dict], *, base, build, limit: int = 4) -> list[tuple[str, object]]:
    """``(title, model)`` for each distinct architecture among the configurations (first ``limit``), so a
    report prints one summary per architecture rather than one per configuration."""
    seen, out = {}, []
    for c in configs:
        model = build(settings_of(c, base))
        key = repr(model)
        if key in seen:
            seen[key].append(c["name"])
            continue
        seen[key] = [c["name"]]
        out.append((key, model))
    return [(f"Architecture of {', '.join(seen[k][:3])}{' ...' if len(seen[k]) > 3 else ''}", m)
            for k, m in out[:limit]]
