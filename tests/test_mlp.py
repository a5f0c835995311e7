"""helpers.sections.mlp: one MLP run from its settings (regularizer, patching, initialisation) and what it passes to fit."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from helpers.engine.training import History
from helpers.models.networks import PatchEmbed, count_parameters
from helpers.sections import make_config, mlp
from tests.conftest import fake_image_set
from tests.test_config import MLP

pytestmark = pytest.mark.usefixtures("torch_single_thread")

CFG = make_config("mlp", **{**MLP, "device": "cpu"})


def settings(**changes) -> dict:
    return {**CFG, "hidden_sizes": [32, 16], "activation": "relu", **changes}


def kinds(model) -> list[type]:
    return [type(m) for m in model.modules() if not isinstance(m, (nn.Sequential, PatchEmbed))]


@pytest.mark.parametrize("regularizer", mlp.REGULARIZERS)
def test_regularizer_shapes_the_network(regularizer):
    model = mlp.build_model(settings(regularizer=regularizer, dropout=0.25), num_classes=10, seed=0)
    assert sum(isinstance(m, nn.BatchNorm1d) for m in model.modules()) == (2 if regularizer == "batch_norm" else 0)
    assert [m.p for m in model.modules() if isinstance(m, nn.Dropout)] == ([0.25] * 2 if regularizer == "dropout"
                                                                          else [])
    assert [m.out_features for m in model.modules() if isinstance(m, nn.Linear)] == [32, 16, 10]
    if regularizer == "l1":  # a penalty in the loss, not a layer
        assert kinds(model) == kinds(mlp.build_model(settings(regularizer="none"), num_classes=10))


def test_builds_are_seeded_and_initialised():
    a, b = (mlp.build_model(settings(), num_classes=10, seed=2) for _ in range(2))
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    normal = mlp.build_model(settings(hidden_sizes=[512], init={"linear": "normal"}), num_classes=10, seed=0)
    first = next(m for m in normal.modules() if isinstance(m, nn.Linear))
    assert first.weight.detach().std().item() == pytest.approx(0.02, rel=0.03)
    assert torch.count_nonzero(first.bias) == 0


def test_patch_size_puts_a_shared_patch_layer_first():
    model = mlp.build_model(settings(patch_size=7, patch_features=8), num_classes=5, seed=0)
    embed = next(m for m in model.modules() if isinstance(m, PatchEmbed))
    assert embed.proj.in_features == 49 and embed.proj.out_features == 8
    assert model(torch.rand(3, 1, 28, 28)).shape == (3, 5)
    plain = mlp.build_model(settings(), num_classes=5, seed=0)
    # 16 patches x 8 features = 128 inputs to the first hidden layer instead of 784 pixels
    assert count_parameters(plain)["total"] - count_parameters(model)["total"] == (784 - 128) * 32 - (49 * 8 + 8)


def test_train_one_passes_the_run_settings_to_fit(monkeypatch):
    calls = []

    def fake_fit(model, train, val, **kwargs):
        calls.append(kwargs)
        return History()

    monkeypatch.setattr(mlp, "fit", fake_fit)
    data = fake_image_set(8)
    for regularizer in ("l1", "none"):
        out = mlp.train_one(settings(regularizer=regularizer, l1_weight=1e-4, optimizer="sgd", momentum=0.5,
                                     weight_decay=1e-3, lr=0.2, epochs=3), train=data, val=None, seed=7)
        assert out["model"](data.X[:2]).shape == (2, 10)
    l1, none = calls
    assert l1["l1"] == 1e-4 and none["l1"] == 0.0  # the L1 penalty only for the l1 configurations
    assert (l1["optimizer"], l1["lr"], l1["momentum"], l1["weight_decay"]) == ("sgd", 0.2, 0.5, 1e-3)
    assert (l1["num_epochs"], l1["seed"], l1["device"]) == (3, 7, "cpu")


def test_lr_none_takes_each_optimizers_own_peak(monkeypatch):
    """The notebook's lr None: RMSprop at Adam's 0.005 collapsed in the quick grid (38-72% validation accuracy), so
    each optimizer trains at its own peak, and the report says which."""
    calls = []
    monkeypatch.setattr(mlp, "fit", lambda model, train, val, **kwargs: calls.append(kwargs) or History())
    data = fake_image_set(8)
    for optimizer in ("adam", "rmsprop", "sgd", "adamw"):
        mlp.train_one(settings(optimizer=optimizer, lr=None), train=data, val=None, seed=0)
    mlp.train_one(settings(optimizer="rmsprop", lr=0.02), train=data, val=None, seed=0)
    assert [c["lr"] for c in calls] == [0.005, 0.001, 0.05, 0.005, 0.02]
    text = mlp.training_summary(make_config("mlp", **{**MLP, "lr": None, "optimizers": ["adam", "rmsprop"]}))
    assert "adam 0.005, adamw 0.005, rmsprop 0.001" in text and "schedule onecycle" in text
    assert "learning rate 0.02;" in mlp.training_summary(make_config("mlp", **{**MLP, "lr": 0.02}))


def test_train_one_trains():
    train, val = fake_image_set(60, seed=0), fake_image_set(30, seed=1)
    out = mlp.train_one(settings(epochs=2, batch_size=20), train=train, val=val, seed=0)
    assert [r["epoch"] for r in out["history"]] == [1, 2] and out["history"].stop_reason == "completed"
    assert all(math.isfinite(r["val_loss"]) for r in out["history"])
