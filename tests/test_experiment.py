"""helpers.grid: the grid runner, the choice of the best configuration, retraining, and the report table."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch
from torch import nn

from helpers import grid
from helpers.data import ImageSet

NAMES = ["a", "b", "c"]


def blobs(n: int, seed: int) -> ImageSet:
    """Three separable classes: each lights up its own third of a 6x6 image."""
    gen = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 3
    X = torch.rand(n, 1, 6, 6, generator=gen) * 0.2
    for k in range(3):
        X[y == k, :, 2 * k:2 * k + 2, :] += 0.8
    return ImageSet(X.clamp(0, 1), y, list(NAMES))


class Linear(nn.Module):
    def __init__(self, blow_up: bool = False):
        super().__init__()
        self.lin = nn.Linear(36, 3)
        self.blow_up = blow_up

    def forward(self, x):
        out = self.lin(x.flatten(1))
        return out * float("nan") if self.blow_up and self.training else out


CONFIGS = [{"name": "small lr", "lr": 1e-4}, {"name": "nan", "lr": 0.1, "blow_up": True},
           {"name": "large lr", "lr": 0.5}]


def run(configs=CONFIGS):
    train, val = blobs(90, 0), blobs(30, 1)
    return grid.run_grid(configs, build_model=lambda c: Linear(c.get("blow_up", False)), train=train, val=val,
                         fit_kwargs=lambda c: {"num_epochs": 3, "batch_size": 16, "lr": c["lr"], "optimizer": "sgd",
                                               "progress": False},
                         seed=0, device="cpu")


@pytest.fixture(scope="module")
def result():
    return run()


def test_grid_keeps_the_failed_run_and_goes_on(result):
    table = result["table"].set_index("name")
    assert set(table.index) == {"small lr", "nan", "large lr"}
    assert table.loc["nan", "status"].startswith("non-finite loss")
    assert math.isnan(table.loc["nan", "val_acc"]) and table.loc["nan", "epochs_run"] == 0
    assert (table.loc[["small lr", "large lr"], "status"] == "completed").all()
    assert (table.loc[["small lr", "large lr"], "epochs_run"] == 3).all()
    assert table.loc["small lr", "params"] == 36 * 3 + 3
    assert list(result["histories"]["large lr"].column("epoch")) == [1, 2, 3]


def test_grid_table_sorted_best_first_failed_last(result):
    table = result["table"]
    assert table["name"].iloc[-1] == "nan"
    assert table["val_acc"].iloc[0] >= table["val_acc"].iloc[1]
    # the row's numbers are the last epoch of that configuration's history
    row = table.set_index("name").loc["large lr"]
    assert row["val_acc"] == result["histories"]["large lr"][-1]["val_acc"]


def test_best_config_is_the_best_completed_one(result):
    best = grid.best_config(result["table"], CONFIGS)
    assert best is next(c for c in CONFIGS if c["name"] == result["table"]["name"].iloc[0])
    assert best["name"] == "large lr"  # 1e-4 barely moves the weights in 3 epochs


def test_best_config_when_every_run_failed():
    table = pd.DataFrame({"name": ["x"], "val_acc": [math.nan], "seconds": [1.0], "status": ["non-finite loss"]})
    with pytest.raises(RuntimeError, match="every configuration"):
        grid.best_config(table, [{"name": "x"}])


def test_best_config_ties_go_to_the_faster_run():
    table = pd.DataFrame({"name": ["slow", "fast"], "val_acc": [0.9, 0.9], "seconds": [5.0, 2.0]})
    assert grid.best_config(table, [{"name": "slow"}, {"name": "fast"}])["name"] == "fast"


@pytest.mark.parametrize("configs, message", [([], "empty"), ([{"name": "a"}, {"name": "a"}], "unique"),
                                              ([{"lr": 0.1}], "unique")])
def test_bad_grids_are_refused(configs, message):
    with pytest.raises(ValueError, match=message):
        run(configs)


def test_retrain_and_test_trains_on_train_plus_validation():
    train, val, test = blobs(90, 0), blobs(30, 1), blobs(30, 2)
    out = grid.retrain_and_test({"name": "x"}, build_model=lambda c: Linear(), train=train, val=val, test=test,
                                fit_kwargs={"num_epochs": 2, "batch_size": 16, "lr": 0.5, "progress": False},
                                device="cpu")
    assert len(out["history"]) == 2 and out["history"][0].get("val_acc") is None
    assert out["test"]["accuracy"] > 0.9  # three separable classes
    assert out["seconds"] > 0


def test_retrain_that_fails_says_so():
    train, val, test = blobs(30, 0), blobs(9, 1), blobs(9, 2)
    with pytest.raises(RuntimeError, match="retraining x failed: non-finite"):
        grid.retrain_and_test({"name": "x"}, build_model=lambda c: Linear(blow_up=True), train=train, val=val,
                              test=test, fit_kwargs={"num_epochs": 1, "progress": False}, device="cpu")


def test_results_table_headers_percentages_and_status(result):
    columns = ["name", "lr", "params", "train_loss", "train_acc", "val_loss", "val_acc", "best_epoch", "seconds",
               "status"]
    view = grid.results_table(result["table"], columns)
    assert view.index.name == "name" and list(view.index) == list(result["table"]["name"])
    assert list(view.columns) == ["lr", "parameters", "train loss", "train acc %", "val loss", "val acc %",
                                  "best epoch (val loss)", "seconds", "status"]  # a run failed: status is shown
    first = result["table"].iloc[0]
    assert view["val acc %"].iloc[0] == round(first["val_acc"] * 100, 2)
    assert view["val loss"].iloc[0] == round(first["val_loss"], 4)
    done = grid.results_table(result["table"][result["table"]["status"] == "completed"], columns)
    assert "status" not in done.columns  # all completed: the column would only take width


def test_results_table_spaces_unknown_headers_and_converts_test_accuracy():
    table = pd.DataFrame({"name": ["m"], "conv_dropout": [0.1], "test_acc": [0.9345], "test_loss": [0.123456]})
    view = grid.results_table(table, ["name", "conv_dropout", "test_acc", "test_loss", "missing"])
    assert list(view.columns) == ["conv dropout", "test acc %", "test loss"]
    assert view.iloc[0].tolist() == [0.1, 93.45, 0.1235]
