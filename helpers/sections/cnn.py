"""The CNN section: a first comparison (``grid``, default pooling x normalization on the course's small CNN),
a stronger CNN tuned by a ``search`` of the same form, augmentation on/off, and the data behind the
activation-map and augmentation figures.

Architectures are data (:mod:`helpers.models.architecture`): the presets ``course`` (the small network of the course
exercises), ``strong`` (three blocks of two 3x3 convolutions, the headline model) and ``compact`` (half its
operations), or any spec of blocks and a
dense head. ``pool``, ``norm``, ``conv_dropout``, ``dense`` and ``dense_dropout`` override every block (or the
head) of the stage's architecture, so a grid can vary them without writing out a whole spec.
"""

from __future__ import annotations

import pandas as pd
import torch
from torch import nn

from helpers.data.augment import Augment
from helpers.data.fashion import ImageSet
from helpers.engine import optim
from helpers.engine.config import (
    ConfigError,
    Section,
    augment_from,
    check_bool,
    check_choice,
    check_choices,
    check_fraction,
    check_positive,
    check_sizes,
    check_training,
    fail,
)
from helpers.engine.experiment import configuration_records, retrain_and_test, run_experiment
from helpers.engine.training import PRECISIONS, checkpointing, fit, set_test_flip
from helpers.escape import md_text
from helpers.models.architecture import BLOCK_POOLS, ArchitectureError, build_from_spec, check_architecture, with_overrides
from helpers.models.networks import count_parameters, init_weights
from helpers.reporting import metrics_file

NORMS = ("batch_norm", "dropout", "none")
# Peak learning rates that suit each optimizer with the default one-cycle schedule (Adam's is the
# usual 1e-3; SGD with momentum tolerates far larger steps on a batch-normalised network).
DEFAULT_LR = {"sgd": 0.05, "adam": 1e-3, "adamw": 1e-3, "rmsprop": 1e-3}

# What each profile sets for parameters left as None. *_per_class caps the images per class: train/test
# for the whole run (smoke), grid/search for the training images of the first comparison and the search (the
# validation set stays whole, so the comparisons are measured on the same images).
# final_augment: quick and full retrain with flips only. Measured here on all 60,000 images (seed 0): the course
# augmentation (rotation, noise, brightness/contrast, 2-pixel shifts) held the 0.3M-parameter CNN to 92.9%
# training and 92.62% test accuracy after 30 epochs, while flips alone gave 96.7% training and 93.66% test
# accuracy in 20 epochs; the first comparison, the search and the on/off comparison keep the aug_* augmentation.
# The strong network (six convolutions) reached 94.4% validation accuracy on the 51,000/9,000 split after 12
# epochs with flips (94.6% with test-time flips; the compact network 93.4-93.5% after 10 or 14), so quick retrains
# for 12 epochs and full, with the time bfloat16 saves, for 30.
# quick searches the conv dropout only: the best configuration had 128 hidden units in every quick and full
# search run here, and two fewer runs keep the section under 10 minutes on a 2-core CPU. Its head has no dropout:
# on the 51,000/9,000 split the final recipe without any dropout reached 94.11/94.32% validation accuracy after 4
# epochs (seeds 0/1) against 93.56/93.81% with conv 0.05 and head 0.3, and 94.43% against 94.06% after 8 (seed 0);
# so quick compares no dropout with a little, and the recipe's first configuration has none.
PROFILES = {
    "smoke": {"train_per_class": 40, "test_per_class": 20, "grid_per_class": None, "search_per_class": None,
              "grid_epochs": 1, "search_epochs": 1, "final_epochs": 3, "final_augment": "same",
              "conv_dropouts": [0.1], "head_dropouts": [0.3], "hidden_sizes": [32, 64]},
    "quick": {"train_per_class": None, "test_per_class": None, "grid_per_class": 3000, "search_per_class": 1500,
              "grid_epochs": 4, "search_epochs": 3, "final_epochs": 12, "final_augment": "flip",
              "conv_dropouts": [0.0, 0.1], "head_dropouts": [0.0], "hidden_sizes": [128]},
    "full": {"train_per_class": None, "test_per_class": None, "grid_per_class": None, "search_per_class": 2000,
             "grid_epochs": 15, "search_epochs": 6, "final_epochs": 30, "final_augment": "flip",
             "conv_dropouts": [0.1, 0.25], "head_dropouts": [0.3, 0.5], "hidden_sizes": [64, 128]},
}
# Which models predict with the mirror image averaged in (test-time augmentation): the final model only (the
# comparisons stay as the course runs them), every run, or none. The final retraining runs with "all".
TEST_FLIPS = ("final", "all", "none")
# What the final retraining augments with: the aug_* augmentation of the other runs, flips only, or nothing.
FINAL_AUGMENTS = ("same", "flip", "none")
AUG_FIELDS = ("aug_rotation", "aug_noise_std", "aug_hflip", "aug_brightness", "aug_contrast", "aug_crop_padding",
              "aug_erasing")
PARAMETERS = ("profile", "seed", "data_dir", "output_dir", "classes", "grid", "poolings", "norms", "search",
              "conv_dropouts", "head_dropouts", "hidden_sizes", "repeats", "evaluate_test", "architecture",
              "search_architecture", "pool", "norm", "conv_dropout", "dense", "dense_dropout", "grid_dropout",
              "optimizer", "lr", "momentum", "weight_decay", "init", "schedule", "label_smoothing", "batch_size",
              "augment", *AUG_FIELDS, "grid_epochs", "search_epochs", "final_epochs", "final_augment",
              "grid_per_class", "search_per_class", "val_fraction", "stratified", "train_per_class", "test_per_class",
              "precision", "test_flip", "device", "checkpoint_every", "author_name", "author_id", "course")
RUN_PARAMETERS = ("architecture", "pool", "norm", "conv_dropout", "dense", "dense_dropout", "grid_dropout", "optimizer",
                  "lr", "momentum", "weight_decay", "init", "schedule", "label_smoothing", "batch_size", "epochs",
                  "augment", *AUG_FIELDS, "precision", "test_flip")
# What each comparison's runs take from the report's parameters (the first comparison trains the course CNN for
# grid_epochs, the search the stronger CNN for search_epochs).
STAGES = {"grid": {"epochs": "grid_epochs"},
          "search": {"architecture": "search_architecture", "epochs": "search_epochs"}}


def resolve_lr(lr: float | None, optimizer: str) -> float:
    """``lr`` itself, or the optimizer's default peak learning rate (:data:`DEFAULT_LR`) when it is None."""
    return optim.resolve_lr(lr, optimizer, DEFAULT_LR)


def _check_dropouts(name: str, values) -> list[float]:
    if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__") or not list(values):
        fail(name, values, "a non-empty list of numbers in [0, 1)")
    values = list(values)
    for v in values:
        check_fraction(f"{name} (item)", v, low_open=False)
    if len(set(values)) != len(values):
        fail(name, values, "each value at most once")
    return values


def validate(p: dict) -> None:
    """Report-level checks; the default ``grid`` is ``poolings`` x ``norms``, the default ``search`` is
    ``conv_dropouts`` x ``head_dropouts`` x ``hidden_sizes``. Adds ``augmentation`` and ``final_augmentation``
    (descriptions of the augmentation of the comparisons and of the final retraining)."""
    if p["grid"] is None:
        p["poolings"] = check_choices("poolings", p["poolings"], tuple(b for b in BLOCK_POOLS if b != "none"))
        p["norms"] = check_choices("norms", p["norms"], NORMS)
        p["grid"] = {"pool": p["poolings"], "norm": p["norms"]}
    if p["search"] is None:
        conv = _check_dropouts("conv_dropouts", p["conv_dropouts"])
        head = _check_dropouts("head_dropouts", p["head_dropouts"])
        hidden = check_sizes("hidden_sizes", p["hidden_sizes"])
        if len(set(hidden)) != len(hidden):
            fail("hidden_sizes", hidden, "each size at most once")
        p["search"] = {"conv_dropout": conv, "dense_dropout": head, "dense": [[h] for h in hidden]}
    for key in ("grid_epochs", "search_epochs", "final_epochs"):
        check_positive(key, p[key], integer=True)
    for key in ("grid_per_class", "search_per_class"):
        if p.get(key) is not None:
            check_positive(key, p[key], integer=True)
    try:
        check_architecture(p["search_architecture"], name="search_architecture")
    except ArchitectureError as exc:
        raise ConfigError(f"parameter {exc}") from None
    aug = augment_from(p)
    final = final_augmentation(p["final_augment"], aug, use_augment=p["augment"])  # checks final_augment
    p["augmentation"] = aug.describe() if p["augment"] else "none"
    p["final_augmentation"] = final.describe() if final is not None else "none"


def check_run(s: dict) -> None:
    """The settings of one CNN run: training settings, architecture (with its overrides), augmentation."""
    check_training(s, lr_optional=True)
    if s.get("pool") is not None:
        check_choice("pool", s["pool"], BLOCK_POOLS)
    if s.get("norm") is not None:
        check_choice("norm", s["norm"], NORMS)
    for key in ("conv_dropout", "dense_dropout", "grid_dropout"):
        if s.get(key) is not None:
            check_fraction(key, s[key], low_open=False)
    if s.get("dense") is not None:
        s["dense"] = check_sizes("dense", s["dense"] if isinstance(s["dense"], list) else [s["dense"]],
                                 allow_empty=True)
    try:
        check_architecture(run_architecture(s))
    except ArchitectureError as exc:
        raise ConfigError(f"parameter {exc}") from None
    check_choice("precision", s["precision"], PRECISIONS)
    check_choice("test_flip", s["test_flip"], TEST_FLIPS)
    check_bool("augment", s["augment"])
    aug = augment_from(s)  # raises ConfigError naming the aug_* parameter
    if s["augment"] and not aug.active:
        raise ConfigError("parameter augment=True is not allowed with every aug_* value off; "
                          "allowed: augment=False, or at least one aug_* value set")


SECTION = Section("cnn", PARAMETERS, PROFILES, validate, check_run, RUN_PARAMETERS,
                  grids=("grid", "search"), stages=STAGES,
                  choices={"pool": BLOCK_POOLS, "norm": NORMS, "precision": PRECISIONS, "test_flip": TEST_FLIPS,
                           "final_augment": FINAL_AUGMENTS},
                  epoch_keys=("epochs", "grid_epochs", "search_epochs", "final_epochs"))


def stage_base(cfg, stage: str) -> dict:
    """The base settings of a comparison's runs: the report's parameters with the stage's architecture and epochs."""
    return {**cfg, **{k: cfg[src] for k, src in STAGES[stage].items()}}


def final_augmentation(choice: str, augment: Augment, *, use_augment: bool) -> Augment | None:
    """The augmentation of the final retraining (None for none): ``augment`` itself when ``choice`` is
    ``"same"`` and augmentation is on, horizontal flips only for ``"flip"``, nothing for ``"none"``."""
    check_choice("final_augment", choice, FINAL_AUGMENTS)
    if choice == "flip":
        return Augment(hflip=True)
    return augment if choice == "same" and use_augment and augment.active else None


# --- one run --------------------------------------------------------------------------------------------


def run_architecture(s: dict) -> dict:
    """The architecture spec of one run's settings, its overrides applied. ``norm="dropout"`` means no batch
    norm and dropout (``conv_dropout``, else ``grid_dropout``) after every block and in the head."""
    dropout_norm = s.get("norm") == "dropout"
    rate = s.get("grid_dropout", 0.2)
    conv_dropout = s.get("conv_dropout")
    dense_dropout = s.get("dense_dropout")
    if dropout_norm:
        conv_dropout = rate if conv_dropout is None else conv_dropout
        dense_dropout = rate if dense_dropout is None else dense_dropout
    elif s.get("norm") is not None and conv_dropout is None:
        conv_dropout = 0.0  # batch_norm / none in the first comparison: no dropout, as in the course exercise
        dense_dropout = 0.0 if dense_dropout is None else dense_dropout
    return with_overrides(check_architecture(s["architecture"]), pool=s.get("pool"), norm=s.get("norm"),
                          conv_dropout=conv_dropout, dense=s.get("dense"), dense_dropout=dense_dropout)


def build_model(s: dict, *, num_classes: int, seed: int | None = None) -> nn.Sequential:
    """The CNN of one run's settings (channels-last), its initial weights drawn from ``seed``."""
    if seed is not None:
        torch.manual_seed(seed)
    model = init_weights(build_from_spec(run_architecture(s), num_classes=num_classes), s["init"])
    return set_test_flip(model, s.get("test_flip") == "all")


def run_augmentation(s: dict) -> Augment | None:
    """The augmentation of one run: ``s["augment_with"]`` when present (the final retraining's, None for none),
    else the aug_* values when ``augment`` is on."""
    if "augment_with" in s:
        return s["augment_with"]
    aug = augment_from(s)
    return aug if s["augment"] and aug.active else None


def train_one(s: dict, *, train: ImageSet, val: ImageSet | None, seed: int, desc: str = "cnn") -> dict:
    """Train one CNN run from its settings: ``{"model", "history"}`` (the engine's ``train_one``)."""
    model = build_model(s, num_classes=train.num_classes, seed=seed)
    history = fit(model, train, val, num_epochs=s["epochs"], batch_size=s["batch_size"], optimizer=s["optimizer"],
                  lr=resolve_lr(s["lr"], s["optimizer"]), momentum=s["momentum"],
                  nesterov=s["optimizer"] == "sgd" and s["momentum"] > 0, weight_decay=s["weight_decay"],
                  schedule=s["schedule"], label_smoothing=s["label_smoothing"], augment=run_augmentation(s),
                  seed=seed, device=s["device"], desc=desc, precision=s.get("precision", "fp32"), **checkpointing(s))
    return {"model": model, "history": history}


# The columns of the augmentation on/off table (:func:`compare_augmentation`).
AUGMENTATION_COLUMNS = ["name", "augment", "train_loss", "train_acc", "val_loss", "val_acc", "best_epoch", "seconds"]


def compare_augmentation(config: dict, search_result: dict, *, base: dict, train: ImageSet, val: ImageSet,
                         repeats: int = 1, seed: int = 0, device="auto") -> dict:
    """``config`` trained with augmentation on and off: ``{"table", "histories"}``.

    The search (``search_result``, from :func:`helpers.engine.experiment.run_experiment` on the same ``train``, ``val``
    and ``base``) already trained ``config`` with the run's setting, and a seeded run repeats exactly, so only
    the other setting is trained here; its row and history are reused.
    """
    use = bool({**base, **config}["augment"])
    on = {**config, "name": f"{config['name']} + augmentation", "augment": True}
    off = {**config, "name": f"{config['name']}, no augmentation", "augment": False}
    done, todo = (on, off) if use else (off, on)
    other = run_experiment([todo], base=base, train_one=train_one, train=train, val=val, repeats=repeats, seed=seed,
                           device=device)
    table = search_result["table"]
    reused = table[table["name"] == config["name"]].assign(name=done["name"], augment=done["augment"])
    merged = pd.concat([reused, other["table"].assign(augment=todo["augment"])], ignore_index=True)
    merged = merged.sort_values("val_acc", ascending=False, na_position="last").reset_index(drop=True)
    histories = {done["name"]: search_result["histories"][config["name"]], todo["name"]: other["histories"][todo["name"]]}
    return {"table": merged, "histories": histories}


def retrain_final(config: dict, *, cfg, base: dict, augmentation: Augment, train: ImageSet, val: ImageSet,
                  test: ImageSet) -> dict:
    """``config`` retrained on train + validation for ``final_epochs`` with the final retraining's augmentation
    (:func:`final_augmentation`), predicting with the mirror images averaged in unless ``test_flip`` is none, then
    tested once: :func:`helpers.engine.experiment.retrain_and_test`'s dict."""
    return retrain_and_test(config, base=base, train_one=train_one, train=train, val=val, test=test, seed=cfg.seed,
                            device=cfg.device, epochs=cfg.final_epochs,
                            test_flip="none" if cfg.test_flip == "none" else "all",
                            augment_with=final_augmentation(cfg.final_augment, augmentation, use_augment=cfg.augment))


def data_record(splits: dict, *, cfg, grid_train: ImageSet, search_train: ImageSet) -> dict:
    """``metrics.json``'s ``data``: :func:`helpers.reporting.metrics_file.data_record` and the training images of
    the first comparison and of the search."""
    return {**metrics_file.data_record(splits, cfg=cfg), "grid_train_size": len(grid_train),
            "search_train_size": len(search_train)}


def metrics_extra(cfg, *, search_result: dict, aug_result: dict | None, final: dict) -> dict:
    """The CNN section's own part of ``metrics.json``: the search, the augmentation on/off comparison (None when
    every ``aug_*`` value is off) and the final retraining."""
    return {"search": {"configurations": configuration_records(search_result), "histories": search_result["histories"]},
            "augmentation": None if aug_result is None else {"configurations": aug_result["table"],
                                                             "histories": aug_result["histories"]},
            "final": {"parameters": count_parameters(final["model"])["trainable"], "epochs": len(final["history"]),
                      "augmentation": cfg.final_augmentation, "precision": final["history"].precision,
                      "test_flip": cfg.test_flip != "none", "history": final["history"]}}


def training_summary(cfg) -> str:
    """The report's sentence on the training settings every run takes unless its configuration sets them."""
    return (f"Optimizer **{cfg.optimizer}** (peak learning rate {resolve_lr(cfg.lr, cfg.optimizer):g}, schedule "
            f"{cfg.schedule}), initialisation **{cfg.init}**, batch size {cfg.batch_size}, label smoothing "
            f"{cfg.label_smoothing:g}, weight decay {cfg.weight_decay:g}; augmentation: **{cfg.augmentation}** (final "
            f"retraining: **{cfg.final_augmentation}**), where a configuration does not set these itself.")


def final_summary(final: dict, *, name: str, train_images: int, cfg) -> str:
    """The report's sentence on the final model: parameters, test accuracy and loss, how it was retrained."""
    test, history = final["test"], final["history"]
    return (f"**{md_text(name)}** ({count_parameters(final['model'])['trainable']:,} parameters): test accuracy "
            f"**{test['accuracy']:.2%}**, test loss **{test['loss']:.4f}** after {len(history)} epochs on "
            f"{train_images:,} images, augmentation {cfg.final_augmentation} (final training accuracy "
            f"{history[-1]['train_acc']:.2%}, {final['seconds']:.1f} s, {history.precision} precision"
            + ("; predictions average each test image with its mirror image" if cfg.test_flip != "none" else "")
            + ").")


# --- data behind figures --------------------------------------------------------------------------------


def augmentation_preview(X: torch.Tensor, augment: Augment, *, copies: int = 3, seed: int = 0) -> torch.Tensor:
    """Each image followed by ``copies`` augmented versions: (N * (1 + copies), C, H, W).

    Laid out for :func:`helpers.reporting.plots.plot_image_grid` with ``ncols=1 + copies`` (one image per row).
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


train_one.build_model = build_model  # sizes its runs for helpers.engine.parallel
