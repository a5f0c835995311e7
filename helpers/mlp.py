"""The MLP section: optimizer x regularizer configurations, their models and training arguments."""

from __future__ import annotations

from .config import check_choice, check_choices, check_fraction, check_nonnegative, check_sizes
from .models import ACTIVATIONS, build_mlp
from .training import OPTIMIZERS, SCHEDULES

REGULARIZERS = ("none", "batch_norm", "dropout", "l1")
# What each profile sets for parameters left as None (per_class: images kept per class, None = all).
PROFILES = {
    "smoke": {"epochs": 2, "train_per_class": 40, "test_per_class": 20},
    "quick": {"epochs": 8, "train_per_class": None, "test_per_class": None},
    "full": {"epochs": 30, "train_per_class": None, "test_per_class": None},
}


def validate(p: dict) -> None:
    """The MLP notebook's own parameter checks (shared ones are in :mod:`helpers.config`)."""
    p["optimizers"] = check_choices("optimizers", p["optimizers"], OPTIMIZERS)
    p["regularizers"] = check_choices("regularizers", p["regularizers"], REGULARIZERS)
    p["hidden_sizes"] = check_sizes("hidden_sizes", p["hidden_sizes"])
    check_choice("activation", p["activation"], tuple(ACTIVATIONS))
    check_choice("schedule", p.get("schedule", "none"), SCHEDULES)
    check_fraction("dropout", p["dropout"])
    check_nonnegative("l1_weight", p["l1_weight"])


def grid_configs(*, optimizers, regularizers) -> list[dict]:
    """One configuration per (optimizer, regularizer), named like ``adam + batch_norm``."""
    return [{"name": f"{opt} + {reg}", "optimizer": opt, "regularizer": reg}
            for opt in optimizers for reg in regularizers]


def make_builder(*, hidden_sizes, activation: str, dropout: float, num_classes: int, patch_size=None):
    """A ``build_model(config)`` for :func:`helpers.grid.run_grid`."""
    def build(config: dict):
        reg = config["regularizer"]
        return build_mlp(hidden_sizes=hidden_sizes, activation=activation, num_classes=num_classes,
                         batch_norm=reg == "batch_norm", dropout=dropout if reg == "dropout" else 0.0,
                         patch_size=patch_size)
    return build


def make_fit_kwargs(*, epochs: int, batch_size: int, lr: float, l1_weight: float, schedule: str = "none"):
    """A ``fit_kwargs(config)`` for :func:`helpers.grid.run_grid`: the L1 penalty only where named."""
    def kwargs(config: dict) -> dict:
        return {"num_epochs": epochs, "batch_size": batch_size, "optimizer": config["optimizer"], "lr": lr,
                "l1": l1_weight if config["regularizer"] == "l1" else 0.0, "schedule": schedule}
    return kwargs
