"""The transfer-learning section: a torchvision backbone with a new head, trained three ways.

Modes: ``scratch`` (random backbone, everything trained), ``frozen`` (pretrained backbone frozen; the
head trains on backbone features computed once) and ``finetune`` (pretrained backbone, everything
trained). Pretrained weights come from ImageNet (torchvision's weights API), a checkpoint file, or the
toolkit's own pretraining on a source task (``weights="pretrain"``), which works offline.

The comparison is the ``grid`` parameter (default: ``backbones`` x ``modes``); :mod:`helpers.engine.experiment`
runs it with :func:`train_one`, one run per call. Starting weights are made or loaded once per backbone,
``weights`` value and image size by :class:`BackboneWeights`, however many configurations use them.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from helpers.data.fashion import ImageSet, load_splits, select_classes, subsample
from helpers.data.imagefolder import COLORS, ImageFolderError, load_folder_splits, scan_image_folder
from helpers.engine.config import (
    ConfigError,
    Section,
    check_choice,
    check_choices,
    check_classes_param,
    check_fraction,
    check_positive,
    check_training,
    fail,
)
from helpers.engine.experiment import experiment_table, run_settings
from helpers.engine.metrics import evaluate
from helpers.engine.training import checkpointing, fit, predict, resolve_device
from helpers.escape import md_code, md_text
from helpers.models.networks import count_parameters, init_weights
from helpers.reporting import metrics_file
from helpers.sections.backbones import (  # noqa: F401  (the section's names for its notebook and tests)
    BACKBONES,
    MIN_IMAGE_SIZE,
    BackboneWeights,
    TransferNet,
    WeightsUnavailableError,
    build_backbone,
    build_transfer_model,
    channel_stats,
    get_weights,
    imagenet_weights,
    load_weights,
    pretrain,
    save_weights,
)

MODES = ("scratch", "frozen", "finetune")
WEIGHT_SOURCES = ("pretrain", "imagenet", "none")
# The Fashion-MNIST target task when ``classes`` is None: the odd classes, so that the default pretraining on
# the even ones (``source_classes``) never sees a target class. A folder's default is all of its classes.
FASHION_TARGET_CLASSES = [1, 3, 5, 7, 9]
# What each profile sets for parameters left as None ("all": no cap).
PROFILES = {
    "smoke": {"epochs": 1, "image_size": 32, "labels_per_class": 10, "val_per_class": 10, "test_per_class": 10,
              "pretrain_epochs": 1, "pretrain_per_class": 20},
    "quick": {"epochs": 10, "image_size": 32, "labels_per_class": 100, "val_per_class": 100, "test_per_class": None,
              "pretrain_epochs": 2, "pretrain_per_class": 1000},
    "full": {"epochs": 10, "image_size": 64, "labels_per_class": 100, "val_per_class": 300, "test_per_class": None,
             "pretrain_epochs": 3, "pretrain_per_class": "all"},
}
# The notebook's parameters cell, in order.
PARAMETERS = ("profile", "seed", "data_dir", "output_dir", "dataset", "classes", "source_classes", "grid", "backbones",
              "modes", "repeats", "evaluate_test", "backbone", "mode", "weights", "image_size", "color",
              "labels_per_class", "val_per_class", "test_per_class", "val_fraction", "epochs", "frozen_epochs",
              "batch_size", "optimizer", "lr", "momentum", "weight_decay", "head_hidden", "head_dropout", "init",
              "pretrain_epochs", "pretrain_per_class", "pretrain_batch_size", "pretrain_lr", "device", "checkpoint_every",
              "author_name", "author_id", "course")
# What a grid configuration may set.
RUN_PARAMETERS = ("backbone", "mode", "weights", "image_size", "epochs", "frozen_epochs", "batch_size", "optimizer",
                  "lr", "momentum", "weight_decay", "head_hidden", "head_dropout", "init")


def _check_cap(name: str, value) -> None:
    if value != "all":
        check_positive(name, value, integer=True)


def _check_dataset(p: dict) -> None:
    """``dataset`` and ``classes``: Fashion-MNIST's default target classes, or a folder's classes (all by default)."""
    dataset = p["dataset"]
    if not isinstance(dataset, str) or (dataset != "fashion_mnist" and not Path(dataset).expanduser().is_dir()):
        fail("dataset", dataset, "'fashion_mnist' or an existing folder in the ImageFolder layout "
             "(train/<class>/*.png, test/<class>/*.png, optionally val/<class>/*.png)")
    if dataset == "fashion_mnist":
        if p.get("classes") is None:
            p["classes"] = list(FASHION_TARGET_CLASSES)
        return
    try:
        names = list(scan_image_folder(dataset)["train"])
    except ImageFolderError as exc:
        raise ConfigError(f"parameter dataset={dataset!r}: {exc}") from None
    if len(names) < 2:
        fail("dataset", dataset, f"a folder with at least 2 classes (it has {len(names)}: {names})")
    bad = [c for c in p.get("classes") or [] if c >= len(names)]
    if bad:
        raise ConfigError(f"parameter classes={p['classes']!r}: the folder has {len(names)} classes "
                          f"({', '.join(names)}), so there is no class {bad[0]}; allowed: None (all of them) or "
                          f"distinct indices 0..{len(names) - 1} of its sorted class names")


def validate(p: dict) -> None:
    """Report-level checks (shared ones are in :mod:`helpers.engine.config`); the default ``grid`` is ``backbones`` x
    ``modes``, and ``classes`` None means 1, 3, 5, 7, 9 for Fashion-MNIST and every class of a folder."""
    _check_dataset(p)
    p["source_classes"] = check_classes_param(p["source_classes"])
    if p["grid"] is None:
        p["backbones"] = check_choices("backbones", p["backbones"], BACKBONES)
        p["modes"] = check_choices("modes", p["modes"], MODES)
        p["grid"] = {"backbone": p["backbones"], "mode": p["modes"]}
    for key in ("labels_per_class", "val_per_class", "pretrain_per_class"):
        _check_cap(key, p[key])
    for key in ("pretrain_epochs", "pretrain_batch_size"):
        check_positive(key, p[key], integer=True)
    check_positive("pretrain_lr", p["pretrain_lr"])
    check_choice("color", p["color"], COLORS)


def check_run(s: dict) -> None:
    """The settings of one run (base parameters, or base + a grid configuration)."""
    check_training(s)
    check_choice("backbone", s["backbone"], BACKBONES)
    check_choice("mode", s["mode"], MODES)
    weights = s["weights"]
    if not isinstance(weights, str) or (weights not in WEIGHT_SOURCES and not Path(weights).expanduser().is_file()):
        fail("weights", weights, "'pretrain', 'imagenet', 'none' or the path of an existing checkpoint file")
    size = s["image_size"]
    if isinstance(size, bool) or not isinstance(size, int) or size < MIN_IMAGE_SIZE:
        fail("image_size", size, f"an integer >= {MIN_IMAGE_SIZE} (pixels)")
    if s.get("frozen_epochs") is not None:
        check_positive("frozen_epochs", s["frozen_epochs"], integer=True)
    check_positive("head_hidden", s["head_hidden"], integer=True)
    check_fraction("head_dropout", s["head_dropout"], low_open=False)
    if weights == "pretrain" and s.get("dataset") == "fashion_mnist":
        overlap = sorted(set(s["source_classes"] or range(10)) & set(s.get("classes") or range(10)))
        if overlap:
            raise ConfigError(f"parameters source_classes={s['source_classes']!r} and classes={s.get('classes')!r} "
                              f"share {overlap}; the pretraining task must not see the target classes")


SECTION = Section("transfer", PARAMETERS, PROFILES, validate, check_run, RUN_PARAMETERS,
                  choices={"backbone": BACKBONES, "mode": MODES, "weights": WEIGHT_SOURCES, "color": COLORS},
                  fixed=("dataset", "color"), epoch_keys=("epochs", "frozen_epochs", "pretrain_epochs"))


def load_task(*, dataset: str = "fashion_mnist", data_dir=None, classes=None, image_size: int = 32,
              color: str = "auto", labels_per_class=None, val_per_class=None, test_per_class=None,
              val_fraction: float = 0.15, seed: int = 0) -> dict:
    """Train/validation/test sets of a task, with at most ``labels_per_class`` training labels per class.

    ``dataset`` is ``"fashion_mnist"`` (``classes`` picks a subset) or a folder in the ImageFolder layout
    (read at ``image_size`` pixels; ``classes`` None keeps all of its classes; its ``val/`` images, when it has
    them, are the validation set). Caps are numbers of images per class; ``"all"`` or None keeps all.
    Returns ``{"train", "val", "test", "source", "validation", "cache"}``, ``validation`` saying where it came
    from and ``cache`` whether Fashion-MNIST's decoded files came from the cache (None for a folder).
    """
    if dataset == "fashion_mnist":
        splits = load_splits(data_dir=data_dir, classes=classes, val_fraction=val_fraction, seed=seed)
        splits["validation"] = f"{val_fraction:.0%} of the training images held out"
    else:
        splits = load_folder_splits(dataset, image_size=image_size, color=color, val_fraction=val_fraction, seed=seed)
        if classes is not None:
            splits = {k: select_classes(v, classes) if isinstance(v, ImageSet) else v for k, v in splits.items()}
    return {"train": subsample(splits["train"], per_class=labels_per_class, seed=seed),
            "val": subsample(splits["val"], per_class=val_per_class, seed=seed),
            "test": subsample(splits["test"], per_class=test_per_class, seed=seed), "source": splits["source"],
            "validation": splits["validation"], "cache": splits.get("cache")}


def feature_set(module: nn.Module, data: ImageSet, *, batch_size: int = 256, device="auto") -> ImageSet:
    """``module``'s outputs for every image, as an ImageSet of feature vectors (what :func:`fit` needs)."""
    return ImageSet(predict(module, data.X, batch_size=batch_size, device=device), data.y,
                    list(data.class_names))


def image_sizes(configs: list[dict], *, base: Mapping) -> list[int]:
    """The distinct ``image_size`` values of the runs, ascending (a folder is read once, at the largest)."""
    return sorted({s["image_size"] for s in run_settings(configs, base=base)})


def train_one(s: Mapping, *, train: ImageSet, val: ImageSet | None, seed: int, desc: str = "transfer",
              weights: BackboneWeights | None = None) -> dict:
    """Train one run from its settings (the engine's ``train_one``): ``{"model", "history", "row"}``.

    ``s`` holds ``backbone``, ``mode``, ``weights``, ``image_size``, ``epochs``, ``frozen_epochs`` (None: ``epochs``),
    ``batch_size``, ``optimizer``, ``lr``, ``momentum``, ``weight_decay``, ``head_hidden``, ``head_dropout``,
    ``init`` and ``device``. ``weights`` (a :class:`BackboneWeights`, shared by all runs of a comparison: see
    :func:`make_train_one`) gives the starting weights of the frozen and fine-tuned runs and the input
    normalisation of every mode (without it, ``"pretrain"`` is refused and other weights are loaded per run);
    ``scratch`` always starts from random weights. ``init`` re-initialises the layers that do not come from
    weights: the whole network in scratch mode, the new head in the others. Every mode starts from the same
    head. The frozen run computes the backbone features of the training and validation images once and
    trains the head alone on them, for ``frozen_epochs``; the returned model is still the whole network
    (frozen backbone and trained head), so it runs on images. ``row`` holds the table's extra columns:
    ``weights`` (described in full), ``weights_label`` (short) and ``frozen_params``.
    """
    weights = weights if weights is not None else BackboneWeights()  # no source task, nothing kept between runs
    backbone, mode, spec, size = s["backbone"], s["mode"], s["weights"], s["image_size"]
    device = resolve_device(s.get("device", "auto"))
    start_from = None if mode == "scratch" else weights.get(spec, backbone, size)
    norm = weights.norm(spec, backbone, size, train)  # the same inputs in every mode
    torch.manual_seed(seed)  # the same head initialisation in every mode
    model = build_transfer_model(backbone, train.num_classes, image_size=size, norm=norm, weights=start_from,
                                 head_hidden=s["head_hidden"], head_dropout=s["head_dropout"])
    init = s.get("init", "default")
    if mode == "scratch":
        init_weights(model.backbone, init, seed=seed)
    init_weights(model.head, init, seed=seed)
    fit_args = {"batch_size": s["batch_size"], "optimizer": s["optimizer"], "lr": s["lr"],
                "momentum": s.get("momentum", 0.9), "weight_decay": s.get("weight_decay", 0.0), "seed": seed,
                "device": device, "desc": desc, **checkpointing(s)}
    model.to(device)
    if mode == "frozen":
        model.freeze_backbone()
        extractor = model.feature_extractor()
        feats = {k: feature_set(extractor, d, device=device) if d is not None else None
                 for k, d in (("train", train), ("val", val))}
        history = fit(model.head, feats["train"], feats["val"], num_epochs=s.get("frozen_epochs") or s["epochs"],
                      **fit_args)
    else:
        history = fit(model, train, val, num_epochs=s["epochs"], **fit_args)
    # "weights" describes them in full (metrics.json); "weights_label" is the table's short name
    row = {"weights": start_from["source"] if start_from else "random",
           "weights_label": start_from.get("label", start_from["source"]) if start_from else "random",
           "frozen_params": count_parameters(model)["frozen"]}
    return {"model": model, "history": history, "row": row}


def make_train_one(weights: BackboneWeights):
    """:func:`train_one` bound to a comparison's :class:`BackboneWeights` (what ``run_experiment`` calls)."""
    return functools.partial(train_one, weights=weights)


def comparison_view(result: dict):
    """The comparison table for display: the varied parameters as the index, the weights each run started from,
    trainable vs frozen parameters, accuracies in percent, seconds."""
    # validation loss is in the curves; fewer columns keep the table within an A4 page. The weights column is the
    # short label: their full description (source classes, images, epochs) is in the text above the table.
    columns = ("weights_label", "params", "frozen_params", "epochs_run", "train_acc", "val_acc", "test_acc",
               "test_loss", "seconds", "status")
    view = experiment_table(result, columns=columns)
    view = view.rename(columns={"weights label": "backbone weights", "parameters": "trainable", "frozen params": "frozen"})
    if "frozen" in view:  # averaged over repeats it would read as a float
        view["frozen"] = view["frozen"].round().astype("int64")
    return view


def weights_notes(pretrained: BackboneWeights, needs: list[dict]) -> str:
    """The report's paragraphs on the weights each backbone starts from (``needs``: :meth:`BackboneWeights.prepare`'s
    list): each pretraining's own sentence, or where the other weights came from."""
    if not needs:
        return "Every run starts from random weights (scratch mode or `weights='none'`)."
    return "\n\n".join(pretrained.describe(n["backbone"], n["image_size"]) if n["weights"] == "pretrain" else
                       f"{md_code(n['backbone'])}: {md_text(n['loaded']['source'])}" for n in needs)


def head_share(model: TransferNet) -> str:
    """``N parameters, of which the head has M``: the caption of a transfer model's summary."""
    return (f"{count_parameters(model)['total']:,} parameters, of which the head has "
            f"{sum(p.numel() for p in model.head.parameters()):,}")


def final_result(result: dict, best: dict, *, base: Mapping, test: ImageSet, device="auto") -> dict:
    """The best configuration's model from the comparison (not retrained: few labels are the point), tested once:
    ``{"model", "history", "test", "seconds", "settings"}`` as :func:`helpers.engine.experiment.retrain_and_test`
    returns (``seconds`` None: there was no retraining)."""
    model = result["models"][best["name"]]
    return {"model": model, "history": result["histories"][best["name"]],
            "test": evaluate(model, test, device=device), "seconds": None, "settings": {**base, **best}}


def data_record(task: dict, *, cfg, source: dict | None) -> dict:
    """``metrics.json``'s ``data``: the target task's (:func:`helpers.reporting.metrics_file.data_record`), the data
    set and where the validation images came from, and the source task of the pretraining (None without one)."""
    return {**metrics_file.data_record(task, cfg=cfg), "dataset": cfg.dataset, "validation": task["validation"],
            "pretraining": None if source is None else {
                "classes": cfg.source_classes, "class_names": source["train"].class_names,
                "sizes": metrics_file.split_sizes({"train": source["train"], "val": source["val"]})}}


def metrics_extra(pretrained: BackboneWeights, needs: list[dict]) -> dict:
    """The transfer section's own part of ``metrics.json``: each pretraining, the weights each backbone started
    from (``needs``: :meth:`BackboneWeights.prepare`'s list) and what the final model is."""
    weights_used = {f"{n['backbone']} / {n['weights']}" + (f" / {n['image_size']} px" if n["image_size"] else ""):
                    n["loaded"]["source"] for n in needs}
    return {"pretraining": pretrained.records(), "starting_weights": weights_used,
            "final_model": "the best configuration's model from the comparison (chosen on validation accuracy), "
                           "not retrained"}


def summary_builder(num_classes: int):
    """A function of one configuration's settings that builds its model as the comparison trains it (without
    weights), for the architecture summaries of the report."""
    def build(settings: Mapping) -> nn.Module:
        return build_transfer_model(settings["backbone"], num_classes, image_size=settings["image_size"],
                                    head_hidden=settings["head_hidden"], head_dropout=settings["head_dropout"])
    return build
