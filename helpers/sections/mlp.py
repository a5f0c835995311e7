"""The MLP section: what one run of a fully connected network is, and the checks of its settings.

The comparison itself is the ``grid`` parameter (default: ``optimizers`` x ``regularizers``, the course's
optimizer x regularization grid); :mod:`helpers.engine.experiment` runs it with :func:`train_one`.
"""

from __future__ import annotations

import torch

from helpers.data.fashion import ImageSet
from helpers.engine.config import (
    ConfigError,
    Section,
    check_choice,
    check_choices,
    check_fraction,
    check_nonnegative,
    check_positive,
    check_sizes,
    check_training,
    fail,
)
from helpers.engine.optim import OPTIMIZERS, resolve_lr
from helpers.engine.training import checkpointing, fit
from helpers.models.networks import ACTIVATIONS, build_mlp, init_weights

REGULARIZERS = ("none", "batch_norm", "dropout", "l1")
# Peak learning rates of the default one-cycle schedule when lr is None. Measured here (ReLU 256-128-64 with batch
# norm, batch 128, 8 epochs on 60,000 images, seed 0): Adam at 0.005 gave 89.8% test accuracy (0.003 at batch 64:
# 89.8%, no schedule at 0.001: 88.6%), while RMSprop at 0.005 fell to 38-72% validation accuracy in the grid and
# at 0.001 gave 90.0%.
DEFAULT_LR = {"sgd": 0.05, "adam": 5e-3, "adamw": 5e-3, "rmsprop": 1e-3}
# What each profile sets for parameters left as None (per_class: images kept per class, None = all).
PROFILES = {
    "smoke": {"epochs": 2, "train_per_class": 40, "test_per_class": 20},
    "quick": {"epochs": 8, "train_per_class": None, "test_per_class": None},
    "full": {"epochs": 30, "train_per_class": None, "test_per_class": None},
}
# The notebook's parameters cell, in order.
PARAMETERS = ("profile", "seed", "data_dir", "output_dir", "grid", "optimizers", "regularizers", "repeats",
              "evaluate_test", "hidden_sizes", "activation", "optimizer", "regularizer", "epochs", "batch_size", "lr",
              "momentum", "weight_decay", "dropout", "l1_weight", "schedule", "label_smoothing", "init", "patch_size",
              "patch_features", "val_fraction", "stratified", "classes", "train_per_class", "test_per_class",
              "device", "checkpoint_every", "author_name", "author_id", "course")
# What a grid configuration may set.
RUN_PARAMETERS = ("hidden_sizes", "activation", "optimizer", "regularizer", "epochs", "batch_size", "lr", "momentum",
                  "weight_decay", "dropout", "l1_weight", "schedule", "label_smoothing", "init", "patch_size",
                  "patch_features")


def validate(p: dict) -> None:
    """Report-level checks; the default ``grid`` is ``optimizers`` x ``regularizers``."""
    if p["grid"] is None:
        p["optimizers"] = check_choices("optimizers", p["optimizers"], OPTIMIZERS)
        p["regularizers"] = check_choices("regularizers", p["regularizers"], REGULARIZERS)
        p["grid"] = {"optimizer": p["optimizers"], "regularizer": p["regularizers"]}


def check_run(s: dict) -> None:
    """The settings of one run (base parameters, or base + a grid configuration)."""
    check_training(s, lr_optional=True)
    s["hidden_sizes"] = check_sizes("hidden_sizes", s["hidden_sizes"], allow_empty=True)
    check_choice("activation", s["activation"], tuple(ACTIVATIONS))
    check_choice("regularizer", s["regularizer"], REGULARIZERS)
    check_fraction("dropout", s["dropout"], low_open=False)
    check_nonnegative("l1_weight", s["l1_weight"])
    if s["patch_size"] is not None:
        check_positive("patch_size", s["patch_size"], integer=True)
        if 28 % s["patch_size"]:
            fail("patch_size", s["patch_size"], "None or a divisor of 28: 1, 2, 4, 7, 14, 28")
        check_positive("patch_features", s["patch_features"], integer=True)
    if s["regularizer"] == "dropout" and not s["dropout"]:
        raise ConfigError("parameter dropout=0 is not allowed with regularizer 'dropout'; allowed: a number in (0, 1)")


SECTION = Section("mlp", PARAMETERS, PROFILES, validate, check_run, RUN_PARAMETERS,
                  choices={"activation": tuple(ACTIVATIONS), "regularizer": REGULARIZERS})


def build_model(s: dict, *, num_classes: int, seed: int | None = None):
    """The MLP of one run's settings, its initial weights drawn from ``seed``."""
    if seed is not None:
        torch.manual_seed(seed)
    reg = s["regularizer"]
    model = build_mlp(hidden_sizes=s["hidden_sizes"], activation=s["activation"], num_classes=num_classes,
                      batch_norm=reg == "batch_norm", dropout=s["dropout"] if reg == "dropout" else 0.0,
                      patch_size=s["patch_size"], patch_features=s["patch_features"])
    return init_weights(model, s["init"])


def train_one(s: dict, *, train: ImageSet, val: ImageSet | None, seed: int, desc: str = "mlp") -> dict:
    """Train one MLP run from its settings: ``{"model", "history"}`` (the engine's ``train_one``)."""
    model = build_model(s, num_classes=train.num_classes, seed=seed)
    history = fit(model, train, val, num_epochs=s["epochs"], batch_size=s["batch_size"], optimizer=s["optimizer"],
                  lr=resolve_lr(s["lr"], s["optimizer"], DEFAULT_LR), momentum=s["momentum"], weight_decay=s["weight_decay"],
                  l1=s["l1_weight"] if s["regularizer"] == "l1" else 0.0, schedule=s["schedule"],
                  label_smoothing=s["label_smoothing"], seed=seed, device=s["device"], desc=desc, **checkpointing(s))
    return {"model": model, "history": history}


def training_summary(cfg) -> str:
    """The report's sentence on the training settings every run takes unless its configuration sets them."""
    if cfg.lr is None:
        lr = "peak learning rate per optimizer: " + ", ".join(f"{k} {v:g}" for k, v in DEFAULT_LR.items())
    else:
        lr = f"learning rate {cfg.lr:g}"
    return (f"Training: optimizer **{cfg.optimizer}** ({lr}; schedule {cfg.schedule}), batch size {cfg.batch_size}, "
            f"{cfg.epochs} epochs, activation {cfg.activation}, weight decay {cfg.weight_decay:g}, label smoothing "
            f"{cfg.label_smoothing:g}, where a configuration does not set these itself.")


train_one.build_model = build_model  # sizes its runs for helpers.engine.parallel
