"""helpers.engine.experiment: grid expansion, the experiment runner (repeats, test evaluation), the choice of the best
configuration, retraining, the configuration records and the report tables."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch
from torch import nn

from helpers.data.fashion import ImageSet
from helpers.engine import experiment
from helpers.engine.experiment import GridError, expand_grid
from helpers.engine.metrics import evaluate
from helpers.engine.training import History, fit
from helpers.reporting import observations, report

NAMES = ["a", "b", "c"]
VARYING = ("optimizer", "lr", "hidden_sizes", "activation", "augment", "init")


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


def train_linear(s, *, train, val, seed, desc=""):
    """A ``train_one`` for the engine: a linear classifier trained with SGD from the run's settings."""
    torch.manual_seed(seed)
    model = Linear(s.get("blow_up", False))
    history = fit(model, train, val, num_epochs=s["epochs"], batch_size=16, lr=s["lr"], optimizer="sgd", seed=seed,
                  progress=False, device="cpu", desc=desc)
    return {"model": model, "history": history}


BASE = {"epochs": 3, "lr": 0.1}
CONFIGS = [{"name": "small lr", "lr": 1e-4}, {"name": "nan", "lr": 0.1, "blow_up": True},
           {"name": "large lr", "lr": 0.5}]
TRAIN, VAL, TEST = blobs(90, 0), blobs(30, 1), blobs(30, 2)


def run(configs=CONFIGS, **kwargs):
    return experiment.run_experiment(configs, base=BASE, train_one=train_linear, train=TRAIN, val=VAL, seed=0,
                                     device="cpu", **kwargs)


@pytest.fixture(scope="module")
def result():
    return run()


# --- grid expansion ---------------------------------------------------------------------------------------


def test_mapping_expands_to_the_cartesian_product_in_order():
    configs = expand_grid({"optimizer": ["adam", "sgd"], "lr": [0.1, 0.01]}, varying=VARYING)
    assert [(c["optimizer"], c["lr"]) for c in configs] == [("adam", 0.1), ("adam", 0.01), ("sgd", 0.1), ("sgd", 0.01)]
    assert [c["name"] for c in configs] == ["adam + lr 0.1", "adam + lr 0.01", "sgd + lr 0.1", "sgd + lr 0.01"]
    assert experiment.varied_parameters(configs) == ["optimizer", "lr"]


def test_explicit_list_with_and_without_names():
    configs = expand_grid([{"name": "wide", "hidden_sizes": [64]}, {"hidden_sizes": [16, 8], "activation": "tanh"},
                           {"augment": False}, {"init": None}], varying=VARYING)
    assert configs == [{"name": "wide", "hidden_sizes": [64]},
                       {"name": "hidden_sizes 16-8 + tanh", "hidden_sizes": [16, 8], "activation": "tanh"},
                       {"name": "augment off", "augment": False}, {"name": "init default", "init": None}]
    assert experiment.varied_parameters(configs) == ["hidden_sizes", "activation", "augment", "init"]


@pytest.mark.parametrize("key", ["classes", "data_dir", "profile", "seed", "repeats"])
def test_a_fixed_parameter_cannot_vary(key):
    for grid in ({key: [1, 2]}, [{key: 1}]):
        with pytest.raises(GridError) as info:
            expand_grid(grid, varying=VARYING)
        message = str(info.value)
        assert f"{key!r} cannot vary between runs" in message and "fixed for the whole report" in message


def test_an_unknown_parameter_is_refused_with_the_allowed_list():
    with pytest.raises(GridError) as info:
        expand_grid({"optimizer": ["adam"], "colour": ["red"]}, varying=VARYING, name="search")
    message = str(info.value)
    assert message.startswith("parameter search:") and "'colour' is not a parameter of a run" in message
    assert f"allowed: {', '.join(VARYING)}" in message


@pytest.mark.parametrize("grid, fragment", [
    ({}, "empty"),
    ([], "empty"),
    ({"lr": 0.1}, "'lr' needs a non-empty list of values, got 0.1"),
    ({"lr": "0.1"}, "'lr' needs a non-empty list of values"),
    ({"lr": []}, "'lr' needs a non-empty list of values"),
    ({"lr": {"a": 1}}, "'lr' needs a non-empty list of values"),
    ("adam", "expected a mapping parameter -> list of values, or a list of mappings"),
    ([{"lr": 0.1}, "sgd"], "item 2 is 'sgd'"),
    ({"lr": [0.1, 0.1]}, "'lr 0.1' appear more than once"),
    ([{"lr": 0.1}, {"lr": 0.1}], "'lr 0.1' appear more than once"),
    ([{"name": "x", "lr": 0.1}, {"name": "x", "lr": 0.2}], "'x' appear more than once"),
])
def test_bad_grids_are_refused(grid, fragment):
    with pytest.raises(GridError, match="parameter grid") as info:
        expand_grid(grid, varying=VARYING)
    assert fragment in str(info.value)


def test_same_values_under_different_names_are_two_configurations():
    configs = expand_grid([{"name": "x", "lr": 0.1}, {"name": "y", "lr": 0.1}], varying=VARYING)
    assert [c["name"] for c in configs] == ["x", "y"]


# --- running a grid ---------------------------------------------------------------------------------------


def test_grid_keeps_the_failed_run_and_goes_on(result):
    table = result["table"].set_index("name")
    assert set(table.index) == {"small lr", "nan", "large lr"}
    assert table.loc["nan", "status"].startswith("non-finite loss")
    assert math.isnan(table.loc["nan", "val_acc"]) and table.loc["nan", "epochs_run"] == 0
    assert (table.loc[["small lr", "large lr"], "status"] == "completed").all()
    assert (table.loc[["small lr", "large lr"], "epochs_run"] == 3).all()  # the base's epochs
    assert table.loc["small lr", "params"] == 36 * 3 + 3
    assert list(result["histories"]["large lr"].column("epoch")) == [1, 2, 3]
    assert set(result["models"]) == {"small lr", "nan", "large lr"}
    # the varied parameters are columns of their own; a configuration that does not set one shows the base's
    assert table.loc["large lr", "lr"] == "0.5" and table.loc["nan", "blow_up"] == "on"
    assert table.loc["large lr", "blow_up"] == "default"
    assert result["varied"] == ["lr", "blow_up"] and result["per_class"] == {}


def test_grid_table_sorted_best_first_failed_last(result):
    table = result["table"]
    assert table["name"].iloc[-1] == "nan"
    assert table["val_acc"].iloc[0] >= table["val_acc"].iloc[1]
    # the row's numbers are the last epoch of that configuration's history
    row = table.set_index("name").loc["large lr"]
    assert row["val_acc"] == result["histories"]["large lr"][-1]["val_acc"]
    assert row["train_loss"] == result["histories"]["large lr"][-1]["train_loss"]


def test_seeded_runs_repeat_exactly(result):
    again = run([CONFIGS[2]])
    assert again["histories"]["large lr"].column("val_loss") == result["histories"]["large lr"].column("val_loss")


def test_evaluate_test_must_be_known_and_all_needs_the_test_set():
    with pytest.raises(GridError, match="evaluate_test='some' is not allowed; allowed: 'best', 'all'"):
        run([CONFIGS[0]], evaluate_test="some")
    with pytest.raises(ValueError, match="needs the test set"):
        run([CONFIGS[0]], evaluate_test="all")


def test_evaluate_test_all_gives_test_accuracy_and_per_class_per_configuration():
    configs = [CONFIGS[0], CONFIGS[2]]
    out = run(configs, test=TEST, evaluate_test="all")
    table = out["table"].set_index("name")
    for name in ("small lr", "large lr"):
        truth = evaluate(out["models"][name], TEST, device="cpu")
        assert table.loc[name, "test_acc"] == pytest.approx(truth["accuracy"])
        assert table.loc[name, "test_loss"] == pytest.approx(truth["loss"])
        assert out["per_class"][name] == pytest.approx(dict(zip(NAMES, truth["per_class"]["accuracy"])))
    assert table.loc["large lr", "test_acc"] > 0.9  # three separable classes
    records = {r["name"]: r for r in experiment.configuration_records(out)}
    assert records["large lr"]["test_per_class"] == out["per_class"]["large lr"]
    assert records["large lr"]["test_acc"] == table.loc["large lr", "test_acc"]
    # test results are shown, but the choice of the best still uses validation accuracy
    assert experiment.best_config(out["table"], configs)["name"] == out["table"]["name"].iloc[0]
    assert "test acc %" in experiment.experiment_table(out).columns
    assert "chosen on validation accuracy" in observations.experiment_observations(out)


# --- repeats ----------------------------------------------------------------------------------------------

# validation accuracy of each (quality, seed): "good" and "fair" differ by less than their spread,
# "clear" leads "fair" by far more than it
FAKE_ACC = {("good", 0): 0.80, ("good", 1): 0.84, ("fair", 0): 0.81, ("fair", 1): 0.79,
            ("clear", 0): 0.95, ("clear", 1): 0.96}


def fake_train_one(s, *, train, val, seed, desc=""):
    """No training: a one-epoch history with the accuracy of FAKE_ACC and a fixed linear model."""
    acc = FAKE_ACC[(s["quality"], seed)]
    history = History([{"epoch": 1, "train_loss": 1.0 + seed, "train_acc": acc + 0.05, "val_loss": 1.0 - acc,
                        "val_acc": acc, "seconds": 0.01}])
    torch.manual_seed(seed)
    return {"model": nn.Sequential(nn.Flatten(), nn.Linear(36, 3)), "history": history}


def run_fake(qualities, **kwargs):
    configs = expand_grid({"quality": qualities, "sizes": [[16, 8]]}, varying=("quality", "sizes"))
    return experiment.run_experiment(configs, base={}, train_one=fake_train_one, train=TRAIN, val=VAL, repeats=2,
                                     device="cpu", **kwargs)


def test_repeats_give_mean_and_std_columns():
    out = run_fake(["fair", "good"], seed=0)
    table = out["table"].set_index("quality")
    assert list(out["table"]["quality"]) == ["good", "fair"]  # sorted by the mean
    assert table.loc["good", "val_acc"] == pytest.approx(0.82)
    assert table.loc["good", "val_acc_std"] == pytest.approx(math.sqrt(((0.80 - 0.82) ** 2 + (0.84 - 0.82) ** 2) / 1))
    assert table.loc["fair", "val_acc"] == pytest.approx(0.80)
    assert table.loc["fair", "val_acc_std"] == pytest.approx(0.0141421, rel=1e-4)
    assert table.loc["good", "train_loss"] == pytest.approx(1.5) and table.loc["good", "train_loss_std"] > 0.7
    assert (table["repeats"] == 2).all() and (table["status"] == "completed").all()
    assert (table["params"] == 36 * 3 + 3).all()
    assert [(r["name"], r["seed"]) for r in out["runs"]] == [
        ("fair + sizes 16-8", 0), ("fair + sizes 16-8", 1), ("good + sizes 16-8", 0), ("good + sizes 16-8", 1)]
    # histories are the first repeat's
    assert out["histories"]["good + sizes 16-8"][-1]["val_acc"] == 0.80
    shown = experiment.experiment_table(out)
    assert shown.loc[("good", "16-8"), "val acc %"] == "82.00±2.83"


def test_repeats_use_consecutive_seeds_from_seed():
    out = run_fake(["clear"], seed=0)
    assert [r["seed"] for r in out["runs"]] == [0, 1]
    with pytest.raises(KeyError):  # FAKE_ACC has seeds 0 and 1 only: seed=1 asks for seed 2
        run_fake(["clear"], seed=1)


def test_configuration_records_with_repeats():
    out = run_fake(["fair", "good"], seed=0, test=TEST, evaluate_test="all")
    records = experiment.configuration_records(out)
    assert [r["name"] for r in records] == ["good + sizes 16-8", "fair + sizes 16-8"]
    good = records[0]
    assert good["quality"] == "good" and good["sizes"] == [16, 8]  # real values, not the table's text
    assert good["val_acc_mean"] == pytest.approx(0.82) and good["val_acc_std"] == pytest.approx(0.0282843, rel=1e-4)
    for key in ("train_loss", "train_acc", "val_loss", "val_acc", "test_loss", "test_acc", "seconds"):
        assert f"{key}_mean" in good and f"{key}_std" in good and key not in good
    assert good["repeats"] == 2 and good["params"] == 111
    assert set(good["test_per_class"]) == set(NAMES)
    assert all(0 <= v <= 1 for v in good["test_per_class"].values())


def test_spread_observations_when_the_leaders_cannot_be_told_apart():
    out = run_fake(["fair", "good"], seed=0)
    text = experiment.spread_observations(out["table"])
    assert "over 2 seeds" in text
    assert "`good + sizes 16-8` leads `fair + sizes 16-8` by 2.00%" in text
    assert "less than their spread (2.83%)" in text and "cannot tell them apart" in text
    assert "cannot tell them apart" in observations.experiment_observations(out)


def test_spread_observations_when_the_leader_is_clear():
    out = run_fake(["fair", "clear"], seed=0)
    text = experiment.spread_observations(out["table"])
    assert "`clear + sizes 16-8` leads `fair + sizes 16-8` by 15.50%" in text
    assert "more than their spread" in text and "cannot tell them apart" not in text


def test_no_spread_observations_without_repeats(result):
    assert experiment.spread_observations(result["table"]) == ""


# --- the best configuration and the final retraining -----------------------------------------------------


def test_best_config_is_the_best_completed_one(result):
    best = experiment.best_config(result["table"], CONFIGS)
    assert best is next(c for c in CONFIGS if c["name"] == result["table"]["name"].iloc[0])
    assert best["name"] == "large lr"  # 1e-4 barely moves the weights in 3 epochs


def test_best_config_when_every_run_failed():
    table = pd.DataFrame({"name": ["x"], "val_acc": [math.nan], "seconds": [1.0], "status": ["non-finite loss"]})
    with pytest.raises(RuntimeError, match="every configuration"):
        experiment.best_config(table, [{"name": "x"}])


def test_best_config_ties_go_to_the_lower_loss_then_the_grid_order_never_the_clock():
    table = pd.DataFrame({"name": ["slow", "fast"], "val_acc": [0.9, 0.9], "val_loss": [0.3, 0.4],
                          "seconds": [5.0, 2.0]})
    assert experiment.best_config(table, [{"name": "slow"}, {"name": "fast"}])["name"] == "slow"
    same = table.assign(val_loss=0.3)
    assert experiment.best_config(same, [{"name": "slow"}, {"name": "fast"}])["name"] == "slow"
    assert experiment.best_config(same[::-1], [{"name": "slow"}, {"name": "fast"}])["name"] == "fast"


def test_retrain_and_test_trains_on_train_plus_validation():
    seen = {}

    def train_one(s, *, train, val, seed, desc=""):
        seen.update(n=len(train), val=val, seed=seed)
        return train_linear(s, train=train, val=val, seed=seed)

    out = experiment.retrain_and_test({"name": "x", "lr": 0.5}, base=BASE, train_one=train_one, train=TRAIN, val=VAL,
                                      test=TEST, seed=4, device="cpu", epochs=2)
    assert seen == {"n": len(TRAIN) + len(VAL), "val": None, "seed": 4}
    assert out["settings"] == {"epochs": 2, "lr": 0.5}  # the configuration over the base, overrides over both
    assert len(out["history"]) == 2 and out["history"][0].get("val_acc") is None
    assert out["test"]["accuracy"] > 0.9  # three separable classes
    assert out["seconds"] > 0


def test_retrain_that_fails_says_so():
    with pytest.raises(RuntimeError, match="retraining x failed: non-finite"):
        experiment.retrain_and_test({"name": "x", "blow_up": True}, base=BASE, train_one=train_linear, train=TRAIN,
                                    val=VAL, test=TEST, device="cpu", epochs=1)


# --- tables ------------------------------------------------------------------------------------------------


def test_results_table_headers_percentages_and_status(result):
    columns = ["name", "lr", "params", "train_loss", "train_acc", "val_loss", "val_acc", "best_epoch", "seconds",
               "status"]
    view = experiment.results_table(result["table"], columns)
    assert view.index.name == "name" and list(view.index) == list(result["table"]["name"])
    assert list(view.columns) == ["lr", "parameters", "train loss", "train acc %", "val loss", "val acc %",
                                  "best epoch (val loss)", "seconds", "status"]  # a run failed: status is shown
    first = result["table"].iloc[0]
    assert view["val acc %"].iloc[0] == round(first["val_acc"] * 100, 2)
    assert view["val loss"].iloc[0] == round(first["val_loss"], 4)
    done = experiment.results_table(result["table"][result["table"]["status"] == "completed"], columns)
    assert "status" not in done.columns  # all completed: the column would only take width


def test_results_table_spaces_unknown_headers_and_converts_test_accuracy():
    table = pd.DataFrame({"name": ["m"], "conv_dropout": [0.1], "test_acc": [0.9345], "test_loss": [0.123456]})
    view = experiment.results_table(table, ["name", "conv_dropout", "test_acc", "test_loss", "missing"])
    assert list(view.columns) == ["conv dropout", "test acc %", "test loss"]
    assert view.iloc[0].tolist() == [0.1, 93.45, 0.1235]


def test_experiment_table_indexes_by_the_varied_parameters():
    grid = expand_grid({"lr": [0.5, 0.05]}, varying=("lr",))
    out = run(grid)
    view = experiment.experiment_table(out)
    assert view.index.names == ["lr"] and set(view.index) == {"0.5", "0.05"}
    assert "val acc %" in view.columns and "name" not in view.columns
    # configurations named in the grid show their names too
    named = experiment.experiment_table(run([{"name": "fast", "lr": 0.5}, {"name": "slow", "lr": 0.05}]))
    assert named.index.names == ["name", "lr"] and set(named.index) == {("fast", "0.5"), ("slow", "0.05")}


def test_distinct_models_one_summary_per_architecture():
    configs = expand_grid({"width": [4, 8], "lr": [0.1, 0.01]}, varying=("width", "lr"))
    models = experiment.distinct_models(configs, base={"width": 2}, build=lambda s: nn.Linear(36, s["width"]))
    assert [m.out_features for _, m in models] == [4, 8]
    assert models[0][0] == "Architecture of width 4 + lr 0.1, width 4 + lr 0.01"
    assert len(experiment.distinct_models(configs, base={}, build=lambda s: nn.Linear(36, s["width"]), limit=1)) == 1


# --- the report around it -----------------------------------------------------------------------------------


def test_grid_summary_counts_configurations_runs_and_test_use():
    configs = expand_grid({"optimizer": ["adam", "sgd"], "lr": [0.1, 0.01]}, varying=VARYING)
    text = report.grid_summary(configs, repeats=3, evaluate_test="all")
    assert "**4** configurations varying `optimizer`, `lr`, each trained with 3 seeds (12 runs)" in text
    assert "also evaluated on the test set" in text
    one = report.grid_summary(configs[:1], what="The search")
    assert one.startswith("The search compares **1** configuration varying") and "only the chosen" in one


def test_metrics_file_holds_the_configurations(tmp_path):
    from helpers.engine.config import Config

    out = run_fake(["fair", "good"], seed=0)
    cfg = Config({"section": "mlp", "profile": "smoke", "seed": 0, "repeats": 2, "evaluate_test": "best",
                  "grid": {"quality": ["fair", "good"]}, "grid_configs": out["configs"]})
    best = experiment.best_config(out["table"], out["configs"])
    payload = report.build_metrics(cfg=cfg, data={"sizes": {"train": 90}}, result=out, best=best, env={"torch": "x"},
                                   seconds=1.5)
    report.write_metrics(tmp_path, payload)
    back = report.read_metrics(tmp_path)
    assert back["repeats"] == 2 and back["best"]["name"] == "good + sizes 16-8" and back["best"]["test"] is None
    assert "grid_configs" not in back["parameters"] and back["parameters"]["grid"] == {"quality": ["fair", "good"]}
    assert [c["name"] for c in back["configurations"]] == ["good + sizes 16-8", "fair + sizes 16-8"]
    assert back["configurations"][0]["sizes"] == [16, 8] and back["configurations"][0]["val_acc_mean"] == pytest.approx(0.82)
    assert set(back["histories"]) == {"good + sizes 16-8", "fair + sizes 16-8"}
    assert report.read_metrics(tmp_path / "missing") == {}
