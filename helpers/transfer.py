"""The transfer-learning section: a torchvision backbone with a new head, trained three ways.

Modes: ``scratch`` (random backbone, everything trained), ``frozen`` (pretrained backbone frozen; the
head trains on backbone features computed once) and ``finetune`` (pretrained backbone, everything
trained). Pretrained weights come from ImageNet (torchvision's weights API), a checkpoint file, or the
toolkit's own pretraining on a source task (``weights="pretrain"``), which works offline.

The comparison is the ``grid`` parameter (default: ``backbones`` x ``modes``); :mod:`helpers.experiment`
runs it with :func:`train_one`, one run per call. Starting weights are made or loaded once per backbone,
``weights`` value and image size by :class:`BackboneWeights`, however many configurations use them.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Mapping
from pathlib import Path

import pandas as pd
import torch
from torch import nn
from torch.nn import functional as F

from .config import (
    ConfigError,
    Section,
    check_choice,
    check_choices,
    check_classes_param,
    check_fraction,
    check_positive,
    check_training,
    fail,
    register_section,
)
from .data import ImageSet, load_splits, select_classes, subsample
from .imagefolder import COLORS, ImageFolderError, load_folder_splits, scan_image_folder
from .models import count_parameters, init_weights
from .training import fit, predict_logits, resolve_device

BACKBONES = ("resnet18", "mobilenet_v3_small", "vgg11")
MODES = ("scratch", "frozen", "finetune")
WEIGHT_SOURCES = ("pretrain", "imagenet", "none")
MIN_IMAGE_SIZE = 32  # the backbones halve the image five times
CHECKPOINT_FORMAT = "helpers.transfer/1"
IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
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
              "pretrain_epochs", "pretrain_per_class", "pretrain_batch_size", "pretrain_lr", "device", "author_name",
              "author_id", "course")
# What a grid configuration may set.
RUN_PARAMETERS = ("backbone", "mode", "weights", "image_size", "epochs", "frozen_epochs", "batch_size", "optimizer",
                  "lr", "momentum", "weight_decay", "head_hidden", "head_dropout", "init")


class WeightsUnavailableError(RuntimeError):
    """Pretrained weights that cannot be had (offline, or a checkpoint for another backbone)."""


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
    """Report-level checks (shared ones are in :mod:`helpers.config`); the default ``grid`` is ``backbones`` x
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


SECTION = register_section(Section("transfer", PARAMETERS, PROFILES, validate, check_run, RUN_PARAMETERS))


class InputAdapter(nn.Module):
    """Grayscale to three channels, resize to ``image_size`` and normalise with the weights' mean and std."""

    def __init__(self, image_size: int, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)):
        super().__init__()
        self.image_size = image_size
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))

    def forward(self, x):
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        if tuple(x.shape[-2:]) != (self.image_size, self.image_size):
            x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False,
                              antialias=x.shape[-1] > self.image_size)
        return (x - self.mean) / self.std


def build_backbone(name: str) -> tuple[nn.Module, int]:
    """A torchvision model without its classifier, and the width of the features it returns."""
    import torchvision

    check_choice("backbone", name, BACKBONES)
    model = torchvision.models.get_model(name, weights=None)
    if name.startswith("resnet"):
        width, model.fc = model.fc.in_features, nn.Identity()
    elif name.startswith("vgg"):  # global pooling instead of the 7x7 grid sized for 224-pixel images
        width, model.avgpool, model.classifier = 512, nn.AdaptiveAvgPool2d(1), nn.Identity()
    else:
        width, model.classifier = model.classifier[0].in_features, nn.Identity()
        # torchvision's MobileNet batch norms average over ~100 steps (momentum 0.01), tuned for long ImageNet runs;
        # after a short pretraining their running statistics would still be the initial ones.
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.momentum = 0.1
    return model, width


def make_head(in_features: int, num_classes: int, *, hidden: int = 256, dropout: float = 0.5) -> nn.Sequential:
    """The course's head: Linear(hidden) -> ReLU -> Dropout -> Linear(num_classes)."""
    return nn.Sequential(nn.Linear(in_features, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, num_classes))


class TransferNet(nn.Module):
    """``head(backbone(adapter(x)))``; a frozen backbone stays in evaluation mode (batch-norm statistics fixed)."""

    def __init__(self, adapter: InputAdapter, backbone: nn.Module, head: nn.Module):
        super().__init__()
        self.adapter, self.backbone, self.head = adapter, backbone, head
        self.frozen = False

    def forward(self, x):
        return self.head(self.backbone(self.adapter(x)))

    def feature_extractor(self) -> nn.Sequential:
        """Adapter and backbone as one module (sharing this model's layers)."""
        return nn.Sequential(self.adapter, self.backbone)

    def freeze_backbone(self) -> TransferNet:
        for p in self.backbone.parameters():
            p.requires_grad_(False)
        self.frozen = True
        self.backbone.eval()
        return self

    def train(self, mode: bool = True):
        super().train(mode)
        if self.frozen:
            self.backbone.eval()
        return self


def build_transfer_model(backbone: str, num_classes: int, *, image_size: int, weights: dict | None = None,
                         norm: tuple | None = None, head_hidden: int = 256, head_dropout: float = 0.5) -> TransferNet:
    """A :class:`TransferNet`; ``weights`` is a dict from :func:`load_weights` (None: random backbone).

    The input normalisation is ``norm`` (mean, std per channel) if given, else the weights', else ImageNet's.
    """
    body, width = build_backbone(backbone)
    if weights:
        body.load_state_dict(weights["state_dict"])
    mean, std = norm or ((weights["mean"], weights["std"]) if weights else ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)))
    return TransferNet(InputAdapter(image_size, mean, std), body,
                       make_head(width, num_classes, hidden=head_hidden, dropout=head_dropout))


def _matching(state: dict, backbone: str, origin: str) -> dict:
    """The entries of ``state`` that fit the backbone (classifier weights of the source task are dropped)."""
    target = build_backbone(backbone)[0].state_dict()
    kept = {k: v for k, v in state.items() if k in target and tuple(v.shape) == tuple(target[k].shape)}
    missing = sorted(set(target) - set(kept))
    if missing:
        raise WeightsUnavailableError(f"{origin} does not fit backbone {backbone!r}: {len(missing)} of its "
                                      f"{len(target)} tensors are missing or have other shapes (e.g. {missing[0]!r})")
    return kept


def imagenet_weights(backbone: str) -> dict:
    """torchvision's ImageNet weights (downloaded once into the torch hub cache)."""
    from urllib.error import URLError

    from torchvision.models import get_model_weights

    enum = get_model_weights(backbone).DEFAULT
    file_name = Path(enum.url).name
    cache = Path(torch.hub.get_dir()) / "checkpoints"
    try:
        state = enum.get_state_dict(progress=False, check_hash=True, weights_only=True)
    except (URLError, OSError, RuntimeError) as exc:
        raise WeightsUnavailableError(
            f"weights='imagenet': the ImageNet weights of {backbone} ({enum}) could not be loaded "
            f"({type(exc).__name__}: {exc}). Either run once with network access, or download {enum.url} "
            f"elsewhere and put the file {file_name} into {cache}/ ; or pass weights='pretrain' (the toolkit "
            "pretrains the backbone on the Fashion-MNIST source classes, offline), weights='none' (random "
            "backbone) or weights='<path of a checkpoint file>'."
        ) from exc
    transforms = enum.transforms()
    return {"state_dict": _matching(state, backbone, f"ImageNet weights {file_name}"), "mean": list(transforms.mean),
            "std": list(transforms.std), "source": f"ImageNet ({enum})", "label": "ImageNet"}


def save_weights(path: str | Path, weights: dict, *, backbone: str) -> Path:
    """Save backbone weights (a dict as :func:`pretrain` gives) for :func:`load_weights`; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"format": CHECKPOINT_FORMAT, "backbone": backbone, "state_dict": weights["state_dict"],
                "mean": list(weights["mean"]), "std": list(weights["std"]), "source": weights["source"]}, path)
    return path


def load_weights(path: str | Path, backbone: str) -> dict:
    """Backbone weights from a checkpoint of :func:`save_weights` or a torchvision state dict (ImageNet norms)."""
    path = Path(path).expanduser()
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch.load raises many types for a file that is not a checkpoint
        raise WeightsUnavailableError(f"weights={str(path)!r}: not a readable checkpoint ({type(exc).__name__}: {exc})")
    if isinstance(ckpt, dict) and ckpt.get("format") == CHECKPOINT_FORMAT:
        if ckpt["backbone"] != backbone:
            raise WeightsUnavailableError(f"weights={str(path)!r} holds a {ckpt['backbone']} backbone, not {backbone}")
        return {"state_dict": _matching(ckpt["state_dict"], backbone, str(path)), "mean": ckpt["mean"],
                "std": ckpt["std"], "source": f"{ckpt['source']} (checkpoint {path.name})",
                "label": f"checkpoint {path.name}"}
    state = ckpt.get("model", ckpt.get("state_dict", ckpt)) if isinstance(ckpt, dict) else None
    if not isinstance(state, dict):
        raise WeightsUnavailableError(f"weights={str(path)!r}: expected a state dict, found {type(ckpt).__name__}")
    return {"state_dict": _matching(state, backbone, str(path)), "mean": [0.485, 0.456, 0.406],
            "std": [0.229, 0.224, 0.225], "source": f"checkpoint {path.name}", "label": f"checkpoint {path.name}"}


def get_weights(spec: str, backbone: str) -> dict | None:
    """Weights named by the ``weights`` parameter: ``"imagenet"``, ``"none"`` (None) or a checkpoint path.

    ``"pretrain"`` needs source data and a training run: call :func:`pretrain` instead.
    """
    if spec == "pretrain":
        raise ValueError("weights='pretrain' comes from pretrain(backbone, source_train, ...), not get_weights")
    if spec == "none":
        return None
    return imagenet_weights(backbone) if spec == "imagenet" else load_weights(spec, backbone)


def channel_stats(X: torch.Tensor) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of images (N, C, H, W), repeated to three channels for grayscale."""
    mean, std = X.mean(dim=(0, 2, 3)), X.std(dim=(0, 2, 3)).clamp_min(1e-3)
    reps = 3 if len(mean) == 1 else 1
    return mean.repeat(reps).tolist(), std.repeat(reps).tolist()


def pretrain(backbone: str, train: ImageSet, val: ImageSet | None, *, image_size: int, epochs: int,
             batch_size: int = 128, lr: float = 1e-3, optimizer: str = "adam", head_hidden: int = 256,
             head_dropout: float = 0.5, seed: int = 0, device="auto") -> dict:
    """Train a backbone (with a throw-away head) on a source task.

    Returns ``{"weights", "model", "history", "seconds"}``; ``weights`` is what :func:`load_weights` gives.
    """
    mean, std = channel_stats(train.X)
    torch.manual_seed(seed)
    model = build_transfer_model(backbone, train.num_classes, image_size=image_size, norm=(mean, std),
                                 head_hidden=head_hidden, head_dropout=head_dropout)
    start = time.perf_counter()
    history = fit(model, train, val, num_epochs=epochs, batch_size=batch_size, optimizer=optimizer, lr=lr,
                  seed=seed, device=device, desc=f"pretraining {backbone}")
    source = f"pretrained on {', '.join(train.class_names)} ({len(train):,} images, {len(history)} epochs)"
    weights = {"state_dict": {k: v.detach().cpu().clone() for k, v in model.backbone.state_dict().items()},
               "mean": mean, "std": std, "source": source, "label": "source-task pretraining"}
    return {"weights": weights, "model": model, "history": history, "seconds": time.perf_counter() - start}


def _cap(data: ImageSet, cap, seed: int) -> ImageSet:
    return data if cap in (None, "all") else subsample(data, per_class=cap, seed=seed)


def load_task(*, dataset: str = "fashion_mnist", data_dir=None, classes=None, image_size: int = 32,
              color: str = "auto", labels_per_class=None, val_per_class=None, test_per_class=None,
              val_fraction: float = 0.15, seed: int = 0) -> dict:
    """Train/validation/test sets of a task, with at most ``labels_per_class`` training labels per class.

    ``dataset`` is ``"fashion_mnist"`` (``classes`` picks a subset) or a folder in the ImageFolder layout
    (read at ``image_size`` pixels; ``classes`` None keeps all of its classes; its ``val/`` images, when it has
    them, are the validation set). Caps are numbers of images per class; ``"all"`` or None keeps all.
    Returns ``{"train", "val", "test", "source", "validation"}``, ``validation`` saying where it came from.
    """
    if dataset == "fashion_mnist":
        splits = load_splits(data_dir=data_dir, classes=classes, val_fraction=val_fraction, seed=seed)
        splits["validation"] = f"{val_fraction:.0%} of the training images held out"
    else:
        splits = load_folder_splits(dataset, image_size=image_size, color=color, val_fraction=val_fraction, seed=seed)
        if classes is not None:
            splits = {k: select_classes(v, classes) if isinstance(v, ImageSet) else v for k, v in splits.items()}
    return {"train": _cap(splits["train"], labels_per_class, seed), "val": _cap(splits["val"], val_per_class, seed),
            "test": _cap(splits["test"], test_per_class, seed), "source": splits["source"],
            "validation": splits["validation"]}


def feature_set(module: nn.Module, data: ImageSet, *, batch_size: int = 256, device="auto") -> ImageSet:
    """``module``'s outputs for every image, as an ImageSet of feature vectors (what :func:`fit` needs)."""
    return ImageSet(predict_logits(module, data.X, batch_size=batch_size, device=device), data.y,
                    list(data.class_names))


def run_settings(configs: list[dict], *, base: Mapping) -> list[dict]:
    """Each configuration's full settings: the base parameters with the configuration's values over them."""
    return [{**base, **{k: v for k, v in c.items() if k != "name"}} for c in configs]


def image_sizes(configs: list[dict], *, base: Mapping) -> list[int]:
    """The distinct ``image_size`` values of the runs, ascending (a folder is read once, at the largest)."""
    return sorted({s["image_size"] for s in run_settings(configs, base=base)})


class BackboneWeights:
    """The starting weights of a comparison's runs, each made or loaded once however many runs use it.

    Weights are kept per (backbone, ``weights`` value, image size); the image size matters only for the
    toolkit's own pretraining (``"pretrain"``), which trains the backbone on ``source`` (``{"train", "val"}``
    ImageSets of the source task) with the pretraining settings given here, and saves each result into
    ``save_dir`` (when given) for reuse as ``weights="<path>"``. ImageNet weights and checkpoints are loaded
    once per backbone.
    """

    def __init__(self, source: Mapping | None = None, *, epochs: int = 1, batch_size: int = 128, lr: float = 1e-3,
                 head_hidden: int = 256, head_dropout: float = 0.5, seed: int = 0, device="auto",
                 save_dir: str | Path | None = None, image_size: int | None = None):
        self.source = source
        self.settings = {"epochs": epochs, "batch_size": batch_size, "lr": lr, "head_hidden": head_hidden,
                         "head_dropout": head_dropout, "seed": seed, "device": device}
        self.save_dir = Path(save_dir) if save_dir else None
        self.image_size = image_size  # the report's own image size: its checkpoints and labels keep the short names
        self.loaded: dict[tuple, dict | None] = {}
        self.pretrained: dict[tuple[str, int], dict] = {}  # (backbone, image size) -> pretrain()'s result
        self._source_norm = None

    @classmethod
    def from_config(cls, cfg: Mapping, source: Mapping | None = None) -> BackboneWeights:
        """The weights of a report: pretraining settings from ``cfg``, checkpoints into ``output_dir/checkpoints``."""
        return cls(source, epochs=cfg["pretrain_epochs"], batch_size=cfg["pretrain_batch_size"], lr=cfg["pretrain_lr"],
                   head_hidden=cfg["head_hidden"], head_dropout=cfg["head_dropout"], seed=cfg["seed"],
                   device=cfg["device"], save_dir=Path(cfg["output_dir"]) / "checkpoints", image_size=cfg["image_size"])

    def _need_source(self):
        if self.source is None:
            raise ValueError("weights='pretrain' needs the source task: BackboneWeights(source={'train': ..., "
                             "'val': ...}) (the notebook loads it from source_classes)")

    def get(self, spec: str, backbone: str, image_size: int) -> dict | None:
        """The weights named by ``spec`` for ``backbone`` (None for ``"none"``), made or loaded on first use."""
        if spec == "none":
            return None
        key = (backbone, spec, image_size if spec == "pretrain" else None)
        if key not in self.loaded:
            if spec == "pretrain":
                self._need_source()
                if self.image_size is None:  # the first size pretrained keeps the short names
                    self.image_size = image_size
                out = pretrain(backbone, self.source["train"], self.source.get("val"), image_size=image_size,
                               **self.settings)
                if self.save_dir is not None:
                    out["path"] = save_weights(self.save_dir / self.checkpoint_name(backbone, image_size),
                                               out["weights"], backbone=backbone)
                self.pretrained[(backbone, image_size)] = out
                self.loaded[key] = out["weights"]
            else:
                self.loaded[key] = get_weights(spec, backbone)
        return self.loaded[key]

    def norm(self, spec: str, backbone: str, image_size: int, train: ImageSet) -> tuple[list, list]:
        """The input normalisation of a run, the same in every mode (scratch too): the weights' own (the source
        images' for ``"pretrain"``, ImageNet's for ``"imagenet"``), or the training images' for ``"none"``."""
        if spec == "pretrain":
            self._need_source()
            if self._source_norm is None:
                self._source_norm = channel_stats(self.source["train"].X)
            return self._source_norm
        if spec == "none":
            return channel_stats(train.X)
        if spec == "imagenet":
            return list(IMAGENET_MEAN), list(IMAGENET_STD)
        weights = self.get(spec, backbone, image_size)
        return weights["mean"], weights["std"]

    def prepare(self, configs: list[dict], *, base: Mapping) -> list[dict]:
        """Make or load, before the comparison, every weights its runs start from (not those of scratch runs).

        Returns one ``{"backbone", "weights", "image_size", "loaded"}`` per distinct need, in first-use order.
        """
        needs = {}
        for s in run_settings(configs, base=base):
            if s["mode"] != "scratch" and s["weights"] != "none":
                size = s["image_size"] if s["weights"] == "pretrain" else None
                needs.setdefault((s["backbone"], s["weights"], size), s["image_size"])
        return [{"backbone": b, "weights": spec, "image_size": size,
                 "loaded": self.get(spec, b, run_size)} for (b, spec, size), run_size in needs.items()]

    def checkpoint_name(self, backbone: str, image_size: int) -> str:
        short = image_size == self.image_size
        return f"pretrained_{backbone}.pt" if short else f"pretrained_{backbone}_{image_size}px.pt"

    def label(self, backbone: str, image_size: int) -> str:
        """``resnet18`` at the report's own image size, ``resnet18 @ 64 px`` at another."""
        return backbone if image_size == self.image_size else f"{backbone} @ {image_size} px"

    def records(self) -> dict:
        """``metrics.json``'s ``pretraining``: per pretrained backbone (and image size), what it learnt and how long."""
        return {self.label(b, size): {"backbone": b, "image_size": size, "source": p["weights"]["source"],
                                      "seconds": p["seconds"], "history": p["history"],
                                      "val_acc": p["history"][-1]["val_acc"] if p["history"] else None,
                                      "checkpoint": str(p["path"]) if p.get("path") else None}
                for (b, size), p in self.pretrained.items()}


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
                "device": device, "desc": desc}
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
    from .experiment import experiment_table

    # validation loss is in the curves; fewer columns keep the table within an A4 page. The weights column is the
    # short label: their full description (source classes, images, epochs) is in the text above the table.
    columns = ("weights_label", "params", "frozen_params", "epochs_run", "train_acc", "val_acc", "test_acc",
               "test_loss", "seconds", "status")
    view = experiment_table(result, columns=columns)
    view = view.rename(columns={"weights label": "backbone weights", "parameters": "trainable", "frozen params": "frozen"})
    if "frozen" in view:  # averaged over repeats it would read as a float
        view["frozen"] = view["frozen"].round().astype("int64")
    return view


def _group_label(settings: Mapping, keys: list[str]) -> str:
    from .experiment import config_name

    return config_name({k: settings[k] for k in keys}) if keys else str(settings["backbone"])


def mode_observations(result: dict, *, base: Mapping) -> list[str]:
    """Per group of configurations that differ only in ``mode``: each pretrained mode against scratch, and the
    frozen backbone's cost against fine-tuning (test accuracy when every configuration was tested, else validation)."""
    table = result["table"]
    if "mode" not in result["varied"]:
        return []
    metric = "test_acc" if "test_acc" in table and table["test_acc"].notna().any() else "val_acc"
    word = "test" if metric == "test_acc" else "validation"
    rows = table.set_index("name")
    others = [k for k in result["varied"] if k != "mode"]
    groups: dict[str, dict[str, pd.Series]] = {}
    for config, s in zip(result["configs"], run_settings(result["configs"], base=base)):
        if config["name"] in rows.index and pd.notna(rows.loc[config["name"], metric]):
            groups.setdefault(_group_label(s, others), {}).setdefault(s["mode"], rows.loc[config["name"]])
    lines = []
    for group, by_mode in groups.items():
        scratch = by_mode.get("scratch")
        for m in ("frozen", "finetune"):
            if m in by_mode and scratch is not None:
                lines.append(f"- `{group}`: **{m}** scores {by_mode[m][metric]:.2%} {word} accuracy, "
                             f"{by_mode[m][metric] - scratch[metric]:+.2%} against training from scratch "
                             f"({scratch[metric]:.2%}) with the same labels.")
        if "frozen" in by_mode and "finetune" in by_mode:
            fr, ft = by_mode["frozen"], by_mode["finetune"]
            lines.append(f"- `{group}`: the frozen backbone trains {fr['params']:,.0f} parameters "
                         f"({fr['params'] / max(fr['params'] + fr['frozen_params'], 1):.1%} of the model) in "
                         f"{fr['seconds']:.1f} s, {ft['seconds'] / max(fr['seconds'], 1e-9):.1f}x faster than "
                         f"fine-tuning ({ft['seconds']:.1f} s), for {fr[metric] - ft[metric]:+.2%} {word} accuracy.")
    return lines


def observations(result: dict, *, base: Mapping, best: dict | None = None, test_result: dict | None = None,
                 pretrained: BackboneWeights | None = None) -> str:
    """Markdown bullet points drawn from the comparison, the pretraining and the best configuration's test result.

    The generic ones are :mod:`helpers.report`'s (best, fastest, gaps, each factor, run-to-run spread); the
    best configuration's test result is that of its model from the comparison (not retrained).
    """
    from .report import experiment_observations

    table = result["table"]
    lines = [experiment_observations(result)]
    lines += mode_observations(result, base=base)
    settings = dict(zip((c["name"] for c in result["configs"]), run_settings(result["configs"], base=base)))
    for _, row in table.iterrows():
        s = settings.get(row["name"], {})
        if s.get("mode") == "frozen" and row["best_epoch"] == row["epochs_run"] and row["train_acc"] < 0.95:
            lines.append(f"- `{row['name']}`: the head still underfits after {row['epochs_run']} epochs (training "
                         f"accuracy {row['train_acc']:.2%}, validation loss still falling); its features are cached, "
                         "so more epochs (`frozen_epochs`) cost seconds.")
    for label, rec in (pretrained.records() if pretrained else {}).items():
        if rec["val_acc"] is not None:
            lines.append(f"- **Pretraining** (`{label}`): {rec['source']}; source-task validation accuracy "
                         f"{rec['val_acc']:.2%} in {rec['seconds']:.1f} s.")
    if best is not None and test_result is not None:
        lines.append(f"- **Test set:** `{best['name']}`, chosen on validation accuracy, scores "
                     f"{test_result['accuracy']:.2%} test accuracy (loss {test_result['loss']:.4f}) with its model from "
                     "the comparison (not retrained: the few labels are the point of transfer learning).")
        mc, pc = test_result["most_confused"], test_result["per_class"].sort_values("accuracy")
        if len(mc):
            top = mc.iloc[0]
            lines.append(f"- **Most confused:** {top['true']} taken for {top['predicted']} {top['count']} times "
                         f"({top['share_of_true']:.1%} of the {top['true']} test images).")
        lines.append(f"- **Hardest class:** {pc.iloc[0]['class']} ({pc.iloc[0]['accuracy']:.1%}); easiest: "
                     f"{pc.iloc[-1]['class']} ({pc.iloc[-1]['accuracy']:.1%}).")
    if result.get("evaluate_test") == "all":
        lines.append("- **Test accuracy of every configuration** is shown for comparison only: the best configuration "
                     "was chosen on validation accuracy alone.")
    return "\n".join(line for line in lines if line)
