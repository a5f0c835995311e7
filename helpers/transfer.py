"""The transfer-learning section: a torchvision backbone with a new head, trained three ways.

Modes: ``scratch`` (random backbone, everything trained), ``frozen`` (pretrained backbone frozen; the
head trains on backbone features computed once) and ``finetune`` (pretrained backbone, everything
trained). Pretrained weights come from ImageNet (torchvision's weights API), a checkpoint file, or the
toolkit's own pretraining on a source task (``weights="pretrain"``), which works offline.
"""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd
import torch
from torch import nn
from torch.nn import functional as F

from .config import ConfigError, check_choice, check_choices, check_classes_param, check_fraction, check_positive, fail
from .data import ImageSet, load_splits, select_classes, subsample
from .experiment import grid_row, results_table
from .imagefolder import COLORS, load_folder_splits
from .metrics import evaluate
from .models import count_parameters
from .training import OPTIMIZERS, fit, predict_logits

BACKBONES = ("resnet18", "mobilenet_v3_small", "vgg11")
MODES = ("scratch", "frozen", "finetune")
WEIGHT_SOURCES = ("pretrain", "imagenet", "none")
MIN_IMAGE_SIZE = 32  # the backbones halve the image five times
CHECKPOINT_FORMAT = "helpers.transfer/1"
# What each profile sets for parameters left as None ("all": no cap).
PROFILES = {
    "smoke": {"epochs": 1, "image_size": 32, "labels_per_class": 10, "val_per_class": 10, "test_per_class": 10,
              "pretrain_epochs": 1, "pretrain_per_class": 20},
    "quick": {"epochs": 10, "image_size": 32, "labels_per_class": 100, "val_per_class": 100, "test_per_class": None,
              "pretrain_epochs": 2, "pretrain_per_class": 1000},
    "full": {"epochs": 10, "image_size": 64, "labels_per_class": 100, "val_per_class": 300, "test_per_class": None,
             "pretrain_epochs": 3, "pretrain_per_class": "all"},
}


class WeightsUnavailableError(RuntimeError):
    """Pretrained weights that cannot be had (offline, or a checkpoint for another backbone)."""


def _check_cap(name: str, value) -> None:
    if value != "all":
        check_positive(name, value, integer=True)


def validate(p: dict) -> None:
    """The transfer notebook's own parameter checks (shared ones are in :mod:`helpers.config`)."""
    dataset = p["dataset"]
    if not isinstance(dataset, str) or (dataset != "fashion_mnist" and not Path(dataset).expanduser().is_dir()):
        fail("dataset", dataset, "'fashion_mnist' or an existing folder in the ImageFolder layout "
             "(train/<class>/*.png, test/<class>/*.png)")
    p["backbones"] = check_choices("backbones", p["backbones"], BACKBONES)
    p["modes"] = check_choices("modes", p["modes"], MODES)
    weights = p["weights"]
    if not isinstance(weights, str) or (weights not in WEIGHT_SOURCES and not Path(weights).expanduser().is_file()):
        fail("weights", weights, "'pretrain', 'imagenet', 'none' or the path of an existing checkpoint file")
    p["source_classes"] = check_classes_param(p["source_classes"])
    if dataset == "fashion_mnist" and weights == "pretrain":
        overlap = sorted(set(p["source_classes"] or range(10)) & set(p.get("classes") or range(10)))
        if overlap:
            raise ConfigError(f"parameters source_classes={p['source_classes']!r} and classes={p.get('classes')!r} "
                              f"share {overlap}; the pretraining task must not see the target classes")
    size = p["image_size"]
    if isinstance(size, bool) or not isinstance(size, int) or size < MIN_IMAGE_SIZE:
        fail("image_size", size, f"an integer >= {MIN_IMAGE_SIZE} (pixels)")
    for key in ("labels_per_class", "val_per_class", "pretrain_per_class"):
        _check_cap(key, p[key])
    for key in ("head_hidden", "pretrain_epochs", "pretrain_batch_size"):
        check_positive(key, p[key], integer=True)
    if p.get("frozen_epochs") is not None:
        check_positive("frozen_epochs", p["frozen_epochs"], integer=True)
    check_positive("pretrain_lr", p["pretrain_lr"])
    check_fraction("head_dropout", p["head_dropout"], low_open=False)
    check_fraction("momentum", p["momentum"], low_open=False)
    check_choice("optimizer", p["optimizer"], OPTIMIZERS)
    check_choice("color", p["color"], COLORS)


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
    (read at ``image_size`` pixels). Caps are numbers of images per class; ``"all"`` or None keeps all.
    Returns ``{"train", "val", "test", "source"}``.
    """
    if dataset == "fashion_mnist":
        splits = load_splits(data_dir=data_dir, classes=classes, val_fraction=val_fraction, seed=seed)
    else:
        splits = load_folder_splits(dataset, image_size=image_size, color=color, val_fraction=val_fraction, seed=seed)
        if classes is not None:
            splits = {k: select_classes(v, classes) if k != "source" else v for k, v in splits.items()}
    return {"train": _cap(splits["train"], labels_per_class, seed), "val": _cap(splits["val"], val_per_class, seed),
            "test": _cap(splits["test"], test_per_class, seed), "source": splits["source"]}


def feature_set(module: nn.Module, data: ImageSet, *, batch_size: int = 256, device="auto") -> ImageSet:
    """``module``'s outputs for every image, as an ImageSet of feature vectors (what :func:`fit` needs)."""
    return ImageSet(predict_logits(module, data.X, batch_size=batch_size, device=device), data.y,
                    list(data.class_names))


def run_modes(backbone: str, *, modes, weights: dict | None, train: ImageSet, val: ImageSet, test: ImageSet,
              image_size: int, epochs: int, frozen_epochs: int | None = None, batch_size: int = 32,
              optimizer: str = "sgd", lr: float = 1e-3, momentum: float = 0.9, head_hidden: int = 256,
              head_dropout: float = 0.5, seed: int = 0, device="auto") -> dict:
    """Train ``backbone`` in each mode and test it.

    ``weights`` (from :func:`get_weights`, or ``pretrain(...)["weights"]``) start the frozen
    and fine-tuned runs (and set the input normalisation of all three; without weights it is the training
    images'); ``scratch`` always starts from random weights. The frozen run computes the
    backbone features of the three sets once and trains the head alone on them, for ``frozen_epochs``
    (None: ``epochs``; its epochs are cheap, so a head that still underfits can be given more).

    Returns ``{"table", "histories", "models", "tests"}``: a row per mode (accuracy, loss, trainable and
    frozen parameters, seconds), per-epoch histories, models and :func:`helpers.metrics.evaluate` results.
    """
    rows, histories, models, tests = [], {}, {}, {}
    norm = (weights["mean"], weights["std"]) if weights else channel_stats(train.X)  # the same inputs in every mode
    fit_args = {"num_epochs": epochs, "batch_size": batch_size, "optimizer": optimizer, "lr": lr,
                "momentum": momentum, "seed": seed, "device": device}
    for mode in modes:
        name = f"{backbone} / {mode}"
        torch.manual_seed(seed)  # the same head initialisation in every mode
        model = build_transfer_model(backbone, train.num_classes, image_size=image_size, norm=norm,
                                     weights=None if mode == "scratch" else weights, head_hidden=head_hidden,
                                     head_dropout=head_dropout)
        start = time.perf_counter()
        if mode == "frozen":
            model.freeze_backbone()
            extractor = model.feature_extractor()
            feats = {k: feature_set(extractor, d, device=device) for k, d in (("train", train), ("val", val))}
            history = fit(model.head, feats["train"], feats["val"], desc=name,
                          **{**fit_args, "num_epochs": frozen_epochs or epochs})
            seconds = time.perf_counter() - start
            tests[name] = evaluate(model.head, feature_set(extractor, test, device=device), device=device)
        else:
            history = fit(model, train, val, desc=name, **fit_args)
            seconds = time.perf_counter() - start
            tests[name] = evaluate(model, test, device=device)
        pretrained = mode != "scratch" and weights is not None
        # "weights" describes them in full (metrics.json); "weights_label" is the table's short name
        described = {"weights": weights["source"] if pretrained else "random",
                     "weights_label": weights.get("label", weights["source"]) if pretrained else "random"}
        row = grid_row({"name": name, "backbone": backbone, "mode": mode, **described}, history, model, seconds)
        row.update({"frozen_params": count_parameters(model)["frozen"], "test_acc": tests[name]["accuracy"],
                    "test_loss": tests[name]["loss"]})
        rows.append(row)
        histories[name], models[name] = history, model
    return {"table": pd.DataFrame(rows), "histories": histories, "models": models, "tests": tests}


def comparison_view(table):
    """The comparison table for display: accuracies in percent, trainable vs frozen parameters, seconds."""
    # validation loss is in the curves; one column fewer keeps the table within an A4 page
    columns = ["name", "weights", "params", "frozen_params", "epochs_run", "train_acc", "val_acc", "test_acc",
               "test_loss", "seconds"]
    # the short label: the full description of the weights (source classes, images, epochs) is in the text
    # above the table, and in a column it would squeeze the numbers off a PDF page
    view = results_table(table.assign(weights=table["weights_label"]), columns)
    return view.rename(columns={"parameters": "trainable", "frozen params": "frozen"})


def observations(table, *, best_test: dict, pretrain_info: dict | None = None) -> str:
    """Markdown bullet points drawn from the comparison table and the best run's test result."""
    t = table.set_index("name")
    best = table.loc[table["val_acc"].idxmax()]
    lines = [f"- **Best by validation accuracy:** `{best['name']}` ({best['val_acc']:.2%} validation, "
             f"{best['test_acc']:.2%} test, {best['seconds']:.1f} s)."]
    for b in table["backbone"].unique():
        acc = {m: t.loc[f"{b} / {m}"] for m in MODES if f"{b} / {m}" in t.index}
        if "scratch" in acc:
            for m in ("frozen", "finetune"):
                if m in acc:
                    lines.append(f"- `{b}`: **{m}** scores {acc[m]['test_acc']:.2%} test accuracy, "
                                 f"{acc[m]['test_acc'] - acc['scratch']['test_acc']:+.2%} against training from "
                                 f"scratch ({acc['scratch']['test_acc']:.2%}) with the same labels.")
        if "frozen" in acc and "finetune" in acc:
            fr, ft = acc["frozen"], acc["finetune"]
            lines.append(f"- `{b}`: the frozen backbone trains {fr['params']:,} parameters "
                         f"({fr['params'] / max(fr['params'] + fr['frozen_params'], 1):.1%} of the model) in "
                         f"{fr['seconds']:.1f} s, {ft['seconds'] / max(fr['seconds'], 1e-9):.1f}x faster than "
                         f"fine-tuning ({ft['seconds']:.1f} s), for {fr['test_acc'] - ft['test_acc']:+.2%} accuracy.")
    for _, row in table[table["mode"] == "frozen"].iterrows():
        if row["best_epoch"] == row["epochs_run"] and row["train_acc"] < 0.95:
            lines.append(f"- `{row['name']}`: the head still underfits after {row['epochs_run']} epochs (training accuracy "
                         f"{row['train_acc']:.2%}, validation loss still falling); its features are cached, so more "
                         "epochs (`frozen_epochs`) cost seconds.")
    gap = table["train_acc"] - table["val_acc"]
    widest = table.loc[gap.idxmax()]
    lines.append(f"- **Train/validation gap:** widest for `{widest['name']}` ({gap.max():+.2%}), the clearest "
                 "sign of overfitting the few labels.")
    if pretrain_info:
        lines.append(f"- **Pretraining:** {pretrain_info['source']}; source-task validation accuracy "
                     f"{pretrain_info['val_acc']:.2%} in {pretrain_info['seconds']:.1f} s.")
    mc, pc = best_test["most_confused"], best_test["per_class"].sort_values("accuracy")
    if len(mc):
        top = mc.iloc[0]
        lines.append(f"- **Most confused:** {top['true']} taken for {top['predicted']} {top['count']} times "
                     f"({top['share_of_true']:.1%} of the {top['true']} test images).")
    lines.append(f"- **Hardest class:** {pc.iloc[0]['class']} ({pc.iloc[0]['accuracy']:.1%}); easiest: "
                 f"{pc.iloc[-1]['class']} ({pc.iloc[-1]['accuracy']:.1%}).")
    return "\n".join(lines)
