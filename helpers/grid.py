"""Configuration grids: train each configuration, tabulate, pick the best, retrain it and test once."""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import pandas as pd

from .data import ImageSet, concat
from .metrics import evaluate
from .models import count_parameters
from .training import History, fit


def run_grid(configs: list[dict], *, build_model: Callable[[dict], object], train: ImageSet, val: ImageSet,
             fit_kwargs: Callable[[dict], dict] | dict, seed: int = 0, device="auto") -> dict:
    """Train every configuration and return ``{"table", "histories", "models"}``.

    Each configuration is a dict with a unique ``name``; ``build_model(config)`` makes a fresh model and
    ``fit_kwargs`` (a dict, or a function of the configuration) gives the arguments of :func:`fit`.
    A configuration whose loss becomes NaN is kept in the table with its ``status``; the rest go on.
    The table has one row per configuration, sorted by validation accuracy (best first).
    """
    names = [c.get("name") for c in configs]
    if not configs:
        raise ValueError("configs: the grid is empty; give at least one configuration")
    if None in names or len(set(names)) != len(names):
        raise ValueError(f"configs: every configuration needs a unique 'name' (got {names})")
    rows, histories, models = [], {}, {}
    for config in configs:
        model = build_model(config)
        kwargs = fit_kwargs(config) if callable(fit_kwargs) else dict(fit_kwargs)
        start = time.perf_counter()
        history = fit(model, train, val, seed=seed, device=device, desc=config["name"], **kwargs)
        seconds = time.perf_counter() - start
        histories[config["name"]], models[config["name"]] = history, model
        rows.append(grid_row(config, history, model, seconds))
    table = pd.DataFrame(rows).sort_values("val_acc", ascending=False, na_position="last").reset_index(drop=True)
    return {"table": table, "histories": histories, "models": models}


def grid_row(config: dict, history: History, model, seconds: float) -> dict:
    last = history[-1] if history else {}
    nan = math.nan
    row = {"name": config["name"]}
    row.update({k: v for k, v in config.items() if k != "name"})
    row.update({
        "params": count_parameters(model)["trainable"],
        "epochs_run": len(history),
        "train_loss": last.get("train_loss", nan),
        "train_acc": last.get("train_acc", nan),
        "val_loss": last.get("val_loss", nan) if last.get("val_loss") is not None else nan,
        "val_acc": last.get("val_acc", nan) if last.get("val_acc") is not None else nan,
        "best_epoch": history.best_epoch,
        "seconds": seconds,
        "status": history.stop_reason,
    })
    return row


def best_config(table: pd.DataFrame, configs: list[dict]) -> dict:
    """The configuration with the highest validation accuracy (ties: the faster one)."""
    ok = table.dropna(subset=["val_acc"])
    if ok.empty:
        raise RuntimeError("every configuration of the grid failed; see the 'status' column")
    name = ok.sort_values(["val_acc", "seconds"], ascending=[False, True]).iloc[0]["name"]
    return next(c for c in configs if c["name"] == name)


def retrain_and_test(config: dict, *, build_model: Callable[[dict], object], train: ImageSet, val: ImageSet,
                     test: ImageSet, fit_kwargs: Callable[[dict], dict] | dict, seed: int = 0, device="auto") -> dict:
    """Retrain ``config`` on train + validation, then evaluate once on the test set.

    Returns ``{"model", "history", "test", "seconds"}`` where ``test`` is :func:`helpers.metrics.evaluate`'s dict.
    """
    model = build_model(config)
    kwargs = fit_kwargs(config) if callable(fit_kwargs) else dict(fit_kwargs)
    start = time.perf_counter()
    history = fit(model, concat(train, val), None, seed=seed, device=device, desc=f"{config['name']} (final)", **kwargs)
    seconds = time.perf_counter() - start
    if history.stop_reason != "completed":
        raise RuntimeError(f"retraining {config['name']} failed: {history.stop_reason}")
    return {"model": model, "history": history, "test": evaluate(model, test, device=device), "seconds": seconds}


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
    for col in ("train_acc", "val_acc", "test_acc"):
        if col in view:
            view[col] = (view[col] * 100).round(2)
    for col in ("train_loss", "val_loss", "test_loss"):
        if col in view:
            view[col] = view[col].round(4)
    if "seconds" in view:
        view["seconds"] = view["seconds"].round(1)
    if "status" in view and (view["status"] == "completed").all():
        view = view.drop(columns="status")  # a column of "completed" only takes width from a full page
    if "name" in view:
        view = view.set_index("name")
    return view.rename(columns=lambda c: HEADERS.get(c, c.replace("_", " ")))
