"""The CNN section: a pooling x normalization grid, a stronger CNN tuned by a small search, augmentation,
initialisation and optimizer choices, and the data behind the activation-map and augmentation figures.

Two architectures:

* the *grid CNN*, the small network of the course exercises: two conv layers (8 then 12 channels, kernels
  5 and 4, no padding), each followed by a 4x4 pooling window with stride 2, then fully connected layers
  of 128 and 32 units; pooling (max / avg) and regularization (batch norm / dropout) vary;
* the *strong CNN* of the headline number: three blocks of 3x3 conv -> batch norm -> ReLU (32, 64 and
  two 128-channel convs), each ending in 2x2 max pooling and dropout, then one hidden layer
  (about 0.3M parameters with 64 hidden units).

Both are built in PyTorch's channels-last memory layout, which oneDNN's CPU convolutions run about 1.5x
faster than the default layout at these sizes (and which costs nothing elsewhere).
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
import torch
from torch import nn

from .augment import Augment
from .config import (
    ConfigError,
    augment_from,
    check_bool,
    check_choice,
    check_choices,
    check_fraction,
    check_nonnegative,
    check_positive,
    check_sizes,
    fail,
)
from .data import ImageSet, subsample
from .experiment import run_grid
from .models import INITS, build_cnn, init_weights
from .training import SCHEDULES

POOLINGS = ("max", "avg")
NORMS = ("batch_norm", "dropout", "none")
OPTIMIZERS = ("sgd", "adam")
# Peak learning rates that suit each optimizer with the default one-cycle schedule (Adam's is the
# usual 1e-3; SGD with momentum tolerates far larger steps on a batch-normalised network).
DEFAULT_LR = {"sgd": 0.05, "adam": 1e-3}

# The course exercise's small network: valid convolutions, overlapping 4x4/2 pooling.
GRID_BLOCKS = ({"channels": 8, "kernel": 5}, {"channels": 12, "kernel": 4})
GRID_POOL = {"pool_size": 4, "pool_stride": 2, "padding": 0}
GRID_HIDDEN = (128, 32)
# The strong network: 3x3 "same" convolutions, 2x2 max pooling after each block (28 -> 14 -> 7 -> 3).
STRONG_CHANNELS = (32, 64, 128)

# What each profile sets for parameters left as None. *_per_class caps the images per class: train/test
# for the whole run (smoke), grid/search for the training images of the pooling grid and the dropout/hidden
# search (the validation set stays whole, so the comparisons are measured on the same images).
# final_augment: full retrains with flips only. Measured here on all 60,000 images (seed 0): the course
# augmentation (rotation, noise, brightness/contrast, 2-pixel shifts) held the 0.3M-parameter CNN to 92.9%
# training and 92.62% test accuracy after 30 epochs, while flips alone gave 96.7% training and 93.66% test
# accuracy in 20 epochs; the pooling grid, the search and the on/off comparison keep the aug_* augmentation.
# quick searches the conv dropout only: the best configuration had 128 hidden units in every quick and full
# search run here, and two fewer runs keep the section under 10 minutes on a 2-core CPU.
PROFILES = {
    "smoke": {"train_per_class": 40, "test_per_class": 20, "grid_per_class": None, "search_per_class": None,
              "grid_epochs": 1, "search_epochs": 1, "final_epochs": 3, "final_augment": "same",
              "conv_dropouts": [0.1], "head_dropouts": [0.3], "hidden_sizes": [32, 64]},
    "quick": {"train_per_class": None, "test_per_class": None, "grid_per_class": 3000, "search_per_class": 1500,
              "grid_epochs": 4, "search_epochs": 3, "final_epochs": 10, "final_augment": "same",
              "conv_dropouts": [0.05, 0.2], "head_dropouts": [0.3], "hidden_sizes": [128]},
    "full": {"train_per_class": None, "test_per_class": None, "grid_per_class": None, "search_per_class": 2000,
             "grid_epochs": 15, "search_epochs": 6, "final_epochs": 20, "final_augment": "flip",
             "conv_dropouts": [0.1, 0.25], "head_dropouts": [0.3, 0.5], "hidden_sizes": [64, 128]},
}
# What the final retraining augments with: the aug_* augmentation of the other runs, flips only, or nothing.
FINAL_AUGMENTS = ("same", "flip", "none")


def resolve_lr(lr: float | None, optimizer: str) -> float | None:
    """``lr`` itself, or the optimizer's default peak learning rate (:data:`DEFAULT_LR`) when it is None.

    An unknown optimizer leaves ``lr`` as it is, so that validation names the optimizer, not the rate.
    """
    if lr is not None:
        return lr
    return DEFAULT_LR.get(optimizer, DEFAULT_LR["sgd"])


def _check_dropouts(name: str, values) -> list[float]:
    if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__") or not list(values):
        fail(name, values, "a non-empty list of numbers in [0, 1)")
    values = list(values)
    for v in values:
        check_fraction(f"{name} (item)", v, low_open=False)
    if len(set(values)) != len(values):
        fail(name, values, "each value at most once")
    return values


def _check_optional_count(name: str, value) -> None:
    if value is not None:
        check_positive(name, value, integer=True)


def validate(p: dict) -> None:
    """The CNN notebook's own parameter checks (shared ones are in :mod:`helpers.config`).

    Normalises list parameters in place and adds ``augmentation`` (a description of the
    :class:`~helpers.augment.Augment` built from the ``aug_*`` values, or ``"none"`` when off).
    """
    p["poolings"] = check_choices("poolings", p["poolings"], POOLINGS)
    p["norms"] = check_choices("norms", p["norms"], NORMS)
    check_choice("optimizer", p["optimizer"], OPTIMIZERS)
    check_choice("init", p["init"], INITS)
    check_choice("schedule", p["schedule"], SCHEDULES)
    check_fraction("momentum", p["momentum"], low_open=False)
    check_nonnegative("weight_decay", p["weight_decay"])
    check_fraction("label_smoothing", p["label_smoothing"], low_open=False)
    check_fraction("grid_dropout", p["grid_dropout"], low_open=False)
    for key in ("grid_epochs", "search_epochs", "final_epochs"):
        check_positive(key, p[key], integer=True)
    for key in ("grid_per_class", "search_per_class"):
        _check_optional_count(key, p.get(key))
    p["conv_dropouts"] = _check_dropouts("conv_dropouts", p["conv_dropouts"])
    p["head_dropouts"] = _check_dropouts("head_dropouts", p["head_dropouts"])
    p["hidden_sizes"] = check_sizes("hidden_sizes", p["hidden_sizes"])
    if len(set(p["hidden_sizes"])) != len(p["hidden_sizes"]):
        fail("hidden_sizes", p["hidden_sizes"], "each size at most once")
    check_bool("augment", p["augment"])
    aug = augment_from(p)  # raises ConfigError naming the aug_* parameter
    if p["augment"] and not aug.active:
        raise ConfigError("parameter augment=True is not allowed with every aug_* value off; "
                          "allowed: augment=False, or at least one aug_* value set")
    p["augmentation"] = aug.describe() if p["augment"] else "none"
    final = final_augmentation(p["final_augment"], aug, use_augment=p["augment"])  # checks final_augment
    p["final_augmentation"] = final.describe() if final is not None else "none"


def final_augmentation(choice: str, augment: Augment, *, use_augment: bool) -> Augment | None:
    """The augmentation of the final retraining (None for none): ``augment`` itself when ``choice`` is
    ``"same"`` and augmentation is on, horizontal flips only for ``"flip"``, nothing for ``"none"``."""
    check_choice("final_augment", choice, FINAL_AUGMENTS)
    if choice == "flip":
        return Augment(hflip=True)
    return augment if choice == "same" and use_augment and augment.active else None


# --- models -----------------------------------------------------------------------------------------


def to_channels_last(model: nn.Module) -> nn.Module:
    """Store the model's 4-d weights channels-last; convolutions then produce channels-last outputs.

    Single-channel NCHW images already satisfy the channels-last layout, so the data pipeline needs no change.
    """
    return model.to(memory_format=torch.channels_last)


def build_grid_cnn(*, pool: str = "max", norm: str = "batch_norm", num_classes: int = 10, dropout: float = 0.2,
                   init: str = "default", seed: int | None = None) -> nn.Sequential:
    """The small exercise CNN with one pooling and one regularization choice.

    Parameters
    ----------
    pool : {"max", "avg"}
        Pooling of both conv blocks (4x4 window, stride 2).
    norm : {"batch_norm", "dropout", "none"}
        ``batch_norm`` after each convolution, or ``dropout`` (channel dropout after each block and
        ordinary dropout in the head, rate ``dropout``), or neither.
    num_classes : int
        Output logits.
    dropout : float
        Dropout rate of the ``dropout`` variant.
    init : {"default", "xavier", "he", "normal"}
        Weight initialisation (:func:`helpers.models.init_weights`).
    seed : int, optional
        Seeds the initial weights, so every configuration of a grid starts from a repeatable draw.

    Returns
    -------
    torch.nn.Sequential
        The model, channels-last.
    """
    check_choice("pool", pool, POOLINGS)
    check_choice("norm", norm, NORMS)
    if seed is not None:
        torch.manual_seed(seed)
    rate = dropout if norm == "dropout" else 0.0
    model = build_cnn(blocks=[dict(b) for b in GRID_BLOCKS], num_classes=num_classes, hidden_sizes=GRID_HIDDEN,
                      head_dropout=rate, pool=pool, batch_norm=norm == "batch_norm", dropout=rate, **GRID_POOL)
    return to_channels_last(init_weights(model, init, seed=seed))


def build_strong_cnn(*, num_classes: int = 10, conv_dropout: float = 0.1, head_dropout: float = 0.3,
                     hidden_size: int = 64, pool: str = "max", channels: Sequence[int] = STRONG_CHANNELS,
                     init: str = "default", seed: int | None = None) -> nn.Sequential:
    """The three-block CNN of the headline result.

    Blocks are ``[3x3 conv -> batch norm -> ReLU] x n -> 2x2 pool -> channel dropout``, with one conv in the
    first two blocks and two in the last (as in the best course report), then ``Linear(hidden_size) -> ReLU
    -> Dropout -> Linear(num_classes)``. With the default channels and 64 hidden units: 315,050 parameters.

    Parameters
    ----------
    num_classes : int
        Output logits.
    conv_dropout, head_dropout : float
        Dropout after each conv block (whole channels) and after the hidden layer.
    hidden_size : int
        Units of the hidden fully connected layer.
    pool : {"max", "avg"}
        Pooling after each block.
    channels : sequence of int
        Channels of the blocks; the last block has two convolutions.
    init : {"default", "xavier", "he", "normal"}
        Weight initialisation (:func:`helpers.models.init_weights`).
    seed : int, optional
        Seeds the initial weights.

    Returns
    -------
    torch.nn.Sequential
        The model, channels-last.
    """
    check_choice("pool", pool, POOLINGS)
    if seed is not None:
        torch.manual_seed(seed)
    blocks = [{"channels": c} for c in channels]
    blocks[-1]["convs"] = 2
    model = build_cnn(blocks=blocks, num_classes=num_classes, hidden_sizes=(hidden_size,), head_dropout=head_dropout,
                      kernel=3, pool=pool, pool_size=2, batch_norm=True, dropout=conv_dropout)
    return to_channels_last(init_weights(model, init, seed=seed))


def grid_configs(*, poolings: Sequence[str], norms: Sequence[str]) -> list[dict]:
    """One configuration per (pooling, regularization), named like ``max + batch_norm``."""
    return [{"name": f"{pool} + {norm}", "pool": pool, "norm": norm} for pool in poolings for norm in norms]


def search_configs(*, conv_dropouts: Sequence[float], head_dropouts: Sequence[float],
                   hidden_sizes: Sequence[int]) -> list[dict]:
    """The strong CNN's dropout x hidden-size search, named like ``drop 0.1/0.3, fc 64``."""
    return [{"name": f"drop {cd:g}/{hd:g}, fc {h}", "conv_dropout": cd, "head_dropout": hd, "hidden_size": h}
            for cd in conv_dropouts for hd in head_dropouts for h in hidden_sizes]


def augmentation_configs(config: dict) -> list[dict]:
    """``config`` with augmentation on and off (the ``augment`` key overrides the run's setting)."""
    return [{**config, "name": f"{config['name']} + augmentation", "augment": True},
            {**config, "name": f"{config['name']}, no augmentation", "augment": False}]


def compare_augmentation(config: dict, search_result: dict, *, use_augment: bool, build_model, train: ImageSet,
                         val: ImageSet, fit_kwargs, seed: int = 0, device="auto") -> dict:
    """``config`` trained with augmentation on and off: ``{"table", "histories"}`` as :func:`helpers.grid.run_grid`.

    The search (``search_result``, from :func:`helpers.grid.run_grid` on the same ``train``, ``val`` and
    ``fit_kwargs``) already trained ``config`` with the run's setting (``use_augment``), and a seeded run
    repeats exactly, so only the other setting is trained here; its row and history are reused.
    """
    on, off = augmentation_configs(config)
    done, todo = (on, off) if use_augment else (off, on)
    other = run_grid([todo], build_model=build_model, train=train, val=val, fit_kwargs=fit_kwargs, seed=seed,
                     device=device)
    table = search_result["table"]
    reused = table[table["name"] == config["name"]].assign(name=done["name"], augment=done["augment"])
    merged = pd.concat([reused, other["table"]], ignore_index=True)
    merged = merged.sort_values("val_acc", ascending=False, na_position="last").reset_index(drop=True)
    histories = {done["name"]: search_result["histories"][config["name"]], todo["name"]: other["histories"][todo["name"]]}
    return {"table": merged, "histories": histories}


def augmentation_observations(table: pd.DataFrame) -> str:
    """Markdown bullets on the augmentation on/off table of :func:`compare_augmentation`."""
    rows = {bool(r["augment"]): r for _, r in table.iterrows()}
    if set(rows) != {True, False}:
        return ""
    on, off = rows[True], rows[False]
    diff = on["val_acc"] - off["val_acc"]
    lines = [f"- **Augmentation** {'raised' if diff > 0 else 'lowered'} validation accuracy by {abs(diff):.2%} "
             f"({off['val_acc']:.2%} off, {on['val_acc']:.2%} on) after {int(on['epochs_run'])} epochs.",
             f"- **Training accuracy** with augmentation {on['train_acc']:.2%} vs {off['train_acc']:.2%} without; "
             f"train - validation gap {on['train_acc'] - on['val_acc']:+.2%} on, {off['train_acc'] - off['val_acc']:+.2%} "
             "off" + (": the augmented images are harder to fit, which is how augmentation holds back overfitting."
                      if on["train_acc"] < off["train_acc"] else ".")]
    return "\n".join(lines)


def make_grid_builder(*, num_classes: int, dropout: float = 0.2, init: str = "default", seed: int | None = None):
    """A ``build_model(config)`` for :func:`helpers.grid.run_grid` over :func:`grid_configs`."""
    def build(config: dict) -> nn.Sequential:
        return build_grid_cnn(pool=config["pool"], norm=config["norm"], num_classes=num_classes, dropout=dropout,
                              init=init, seed=seed)
    return build


def make_strong_builder(*, num_classes: int, init: str = "default", seed: int | None = None):
    """A ``build_model(config)`` for :func:`helpers.grid.run_grid` over :func:`search_configs`."""
    def build(config: dict) -> nn.Sequential:
        return build_strong_cnn(num_classes=num_classes, conv_dropout=config["conv_dropout"],
                                head_dropout=config["head_dropout"], hidden_size=config["hidden_size"], init=init,
                                seed=seed)
    return build


def make_fit_kwargs(*, epochs: int, batch_size: int, optimizer: str, lr: float, augment: Augment | None = None,
                    use_augment: bool = True, momentum: float = 0.9, weight_decay: float = 0.0,
                    schedule: str = "onecycle", label_smoothing: float = 0.0):
    """A ``fit_kwargs(config)`` for :func:`helpers.grid.run_grid` and :func:`helpers.grid.retrain_and_test`.

    Parameters
    ----------
    augment : Augment, optional
        The augmentation used when it is on.
    use_augment : bool
        Whether configurations train with ``augment`` (when one is given); a configuration's own ``augment``
        key (see :func:`augmentation_configs`) overrides it, and asking for augmentation without one is an error.
    optimizer, lr, momentum, weight_decay, schedule, label_smoothing, epochs, batch_size
        As in :func:`helpers.training.fit`; SGD uses Nesterov momentum.
    """
    def kwargs(config: dict) -> dict:
        use = config.get("augment", use_augment and augment is not None and augment.active)
        if use and (augment is None or not augment.active):
            raise ValueError(f"{config['name']}: augmentation asked for but no augmentation is set")
        return {"num_epochs": epochs, "batch_size": batch_size, "optimizer": optimizer, "lr": lr,
                "momentum": momentum, "nesterov": optimizer == "sgd" and momentum > 0,
                "weight_decay": weight_decay, "schedule": schedule, "label_smoothing": label_smoothing,
                "augment": augment if use else None}
    return kwargs


# --- data behind figures --------------------------------------------------------------------------------


def augmentation_preview(X: torch.Tensor, augment: Augment, *, copies: int = 3, seed: int = 0) -> torch.Tensor:
    """Each image followed by ``copies`` augmented versions: (N * (1 + copies), C, H, W).

    Laid out for :func:`helpers.plots.plot_image_grid` with ``ncols=1 + copies`` (one image per row).
    """
    if copies < 1:
        raise ValueError(f"copies={copies!r}: must be >= 1")
    gen = torch.Generator().manual_seed(seed)
    versions = [X] + [augment(X.clone(), gen) for _ in range(copies)]
    return torch.stack(versions, 1).reshape(-1, *X.shape[1:])


@torch.no_grad()
def feature_maps(model: nn.Sequential, X: torch.Tensor, *, block: int = 0) -> torch.Tensor:
    """Activations of conv block ``block`` (0 = first) for images ``X``, before its pooling: (N, C, H, W).

    The block's last activation layer is read with a forward hook, so the maps are full resolution and
    show what the filters respond to; the model runs in evaluation mode on the CPU.
    """
    blocks = [m for m in model if isinstance(m, nn.Sequential)]
    if not 0 <= block < len(blocks):
        raise ValueError(f"block={block!r}: the model has {len(blocks)} conv blocks (0..{len(blocks) - 1})")
    pools = (nn.MaxPool2d, nn.AvgPool2d)
    layers = list(blocks[block])
    before_pool = [m for m in layers[:next((i for i, m in enumerate(layers) if isinstance(m, pools)), len(layers))]]
    target = before_pool[-1]
    captured = {}
    handle = target.register_forward_hook(lambda _m, _i, out: captured.__setitem__("maps", out.detach()))
    was_training = model.training
    device = next(model.parameters()).device
    model.eval()
    try:
        model(X.to(device))
    finally:
        handle.remove()
        model.train(was_training)
    return captured["maps"].float().cpu().contiguous()


def cap_per_class(data: ImageSet, per_class: int | None, *, seed: int = 0) -> ImageSet:
    """``data`` with at most ``per_class`` images per class (all of it when ``per_class`` is None)."""
    return subsample(data, per_class=per_class, seed=seed) if per_class else data
