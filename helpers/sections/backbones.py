"""Backbones for transfer learning: torchvision networks with a new head, and where their starting weights
come from (ImageNet through torchvision's weights API, a checkpoint file, or the toolkit's own pretraining on a
source task, which works offline). :class:`BackboneWeights` makes or loads each set of weights once.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from urllib.error import URLError

import torch
from torch import nn
from torch.nn import functional as F

from helpers import cache
from helpers.data.fashion import ImageSet
from helpers.engine.config import check_choice
from helpers.engine.experiment import run_settings
from helpers.engine.training import History, fit, resolve_device
from helpers.escape import md_code, md_text

BACKBONES = ("resnet18", "mobilenet_v3_small", "vgg11")
CHECKPOINT_FORMAT = "helpers.sections.transfer/1"
IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
MIN_IMAGE_SIZE = 32  # the backbones halve the image five times


class WeightsUnavailableError(RuntimeError):
    """Pretrained weights that cannot be had (offline, or a checkpoint for another backbone)."""



class InputAdapter(nn.Module):
    """Grayscale to three channels, resize to ``image_size`` and normalise with the weights' mean and std."""

    def __init__(self, image_size: int, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)):
        super().__init__()
        self.image_size = image_size
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))

    def forward(self, x):
        """The batch ``x`` (N, 1 or 3, H, W) as the backbone takes it: three channels, resized, normalised."""
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        if tuple(x.shape[-2:]) != (self.image_size, self.image_size):
            x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False,
                              antialias=x.shape[-1] > self.image_size)
        return (x - self.mean) / self.std


def build_backbone(name: str) -> tuple[nn.Module, int]:
    """A torchvision model without its classifier, and the width of the features it returns."""
    import torchvision  # lazy: a second to import, needed only where a backbone is built

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
        """The logits of the batch ``x``."""
        return self.head(self.backbone(self.adapter(x)))

    def feature_extractor(self) -> nn.Sequential:
        """Adapter and backbone as one module (sharing this model's layers)."""
        return nn.Sequential(self.adapter, self.backbone)

    def freeze_backbone(self) -> TransferNet:
        """Stop training the backbone (no gradients, batch-norm statistics fixed); returns this model."""
        for p in self.backbone.parameters():
            p.requires_grad_(False)
        self.frozen = True
        self.backbone.eval()
        return self

    def train(self, mode: bool = True):
        """``nn.Module.train``, keeping a frozen backbone in evaluation mode; returns this model."""
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
    from torchvision.models import get_model_weights  # lazy: as torchvision in build_backbone

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


def pretrain(backbone: str, train: ImageSet, val: ImageSet | None, *, image_size: int, num_epochs: int,
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
    history = fit(model, train, val, num_epochs=num_epochs, batch_size=batch_size, optimizer=optimizer, lr=lr,
                  seed=seed, device=device, desc=f"pretraining {backbone}")
    source = f"pretrained on {', '.join(train.class_names)} ({len(train):,} images, {len(history)} epochs)"
    weights = {"state_dict": {k: v.detach().cpu().clone() for k, v in model.backbone.state_dict().items()},
               "mean": mean, "std": std, "source": source, "label": "source-task pretraining"}
    return {"weights": weights, "model": model, "history": history, "seconds": time.perf_counter() - start}


class BackboneWeights:
    """The starting weights of a comparison's runs, each made or loaded once however many runs use it.

    Weights are kept per (backbone, ``weights`` value, image size); the image size matters only for the
    toolkit's own pretraining (``"pretrain"``), which trains the backbone on ``source`` (``{"train", "val"}``
    ImageSets of the source task) with the pretraining settings given here, and saves each result into
    ``save_dir`` (when given) for reuse as ``weights="<path>"``. ImageNet weights and checkpoints are loaded
    once per backbone.

    A pretraining is also kept in the cache (:mod:`helpers.cache`, kind ``pretraining``), keyed by the backbone,
    image size, pretraining settings, a digest of the source images, the code and versions: a second report with
    the same settings (another row of a class batch, a rerun) reads the weights back instead of pretraining.
    ``made_by`` (report folder and author) is recorded with the entries this object makes.
    """

    def __init__(self, source: Mapping | None = None, *, num_epochs: int = 1, batch_size: int = 128, lr: float = 1e-3,
                 head_hidden: int = 256, head_dropout: float = 0.5, seed: int = 0, device="auto",
                 save_dir: str | Path | None = None, image_size: int | None = None, made_by: Mapping | None = None):
        self.source = source
        self.made_by = dict(made_by or {})
        self.settings = {"num_epochs": num_epochs, "batch_size": batch_size, "lr": lr, "head_hidden": head_hidden,
                         "head_dropout": head_dropout, "seed": seed, "device": device}
        self.save_dir = Path(save_dir) if save_dir else None
        self.image_size = image_size  # the report's own image size: its checkpoints and labels keep the short names
        self.loaded: dict[tuple, dict | None] = {}
        self.pretrained: dict[tuple[str, int], dict] = {}  # (backbone, image size) -> pretrain()'s result
        self._source_norm = None

    @classmethod
    def from_config(cls, cfg: Mapping, source: Mapping | None = None) -> BackboneWeights:
        """The weights of a report: pretraining settings from ``cfg``, checkpoints into ``output_dir/checkpoints``."""
        return cls(source, num_epochs=cfg["pretrain_epochs"], batch_size=cfg["pretrain_batch_size"], lr=cfg["pretrain_lr"],
                   head_hidden=cfg["head_hidden"], head_dropout=cfg["head_dropout"], seed=cfg["seed"],
                   device=cfg["device"], save_dir=Path(cfg["output_dir"]) / "checkpoints", image_size=cfg["image_size"],
                   made_by={k: cfg.get(k) for k in ("output_dir", "author_name", "author_id")})

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
                out = self._pretrain(backbone, image_size)
                if self.save_dir is not None:
                    out["path"] = save_weights(self.save_dir / self.checkpoint_name(backbone, image_size),
                                               out["weights"], backbone=backbone)
                self.pretrained[(backbone, image_size)] = out
                self.loaded[key] = out["weights"]
            else:
                self.loaded[key] = get_weights(spec, backbone)
        return self.loaded[key]

    def pretrain_parts(self, backbone: str, image_size: int) -> dict:
        """Everything that decides a pretraining's result (its cache key's parts): the backbone, image size,
        pretraining settings, digests of the source images, code, versions and device type."""
        self._need_source()
        return {"what": "pretraining", "backbone": backbone, "image_size": image_size,
                "settings": {k: v for k, v in self.settings.items() if k != "device"},
                "source_train": cache.data_digest(self.source["train"]),
                "source_val": cache.data_digest(self.source.get("val")),
                **cache.environment_parts(resolve_device(self.settings["device"]))}

    def _pretrain(self, backbone: str, image_size: int) -> dict:
        """:func:`pretrain`'s result, read from the cache when the same pretraining was done before; ``cache``
        says which (:func:`helpers.cache.hit_record`), ``seconds`` is the producing run's time for a cached one."""
        parts = self.pretrain_parts(backbone, image_size) if cache.enabled() else None
        key = cache.make_key(parts) if parts else None
        entry = cache.lookup("pretraining", key) if key else None
        saved = cache.load(entry, "weights.pt") if entry is not None else None
        if saved is not None:
            history = History(saved["history"])
            history.stop_reason = saved["stop_reason"]
            return {"weights": saved["weights"], "model": None, "history": history, "seconds": saved["seconds"],
                    "cache": cache.hit_record(entry)}
        out = pretrain(backbone, self.source["train"], self.source.get("val"), image_size=image_size, **self.settings)
        if key is None:
            return {**out, "cache": cache.off_record()}
        saved = {"weights": out["weights"], "history": [dict(r) for r in out["history"]],
                 "stop_reason": out["history"].stop_reason, "seconds": out["seconds"]}
        stored = cache.store("pretraining", key, lambda tmp: torch.save(saved, tmp / "weights.pt"), parts=parts,
                             made_by=cache.producer(seconds=out["seconds"], **self.made_by))
        return {**out, "cache": cache.miss_record(key, stored)}

    def cache_key(self, settings: Mapping):
        """What a run's starting weights add to its cache key (:func:`helpers.engine.runcache.bound_parts`): the
        pretraining's key, the ImageNet weights' name, a checkpoint file's digest; None for random weights.
        Scratch runs count too: with ``"pretrain"`` their inputs are normalised with the source images' stats."""
        spec, backbone, size = settings.get("weights"), settings.get("backbone"), settings.get("image_size")
        if spec == "pretrain":
            return {"pretrain": cache.make_key(self.pretrain_parts(backbone, size)) if self.source is not None else None}
        if spec == "imagenet":
            return {"imagenet": backbone}  # torchvision's version is in every key
        if isinstance(spec, str) and spec != "none" and Path(spec).expanduser().is_file():
            return {"checkpoint": cache.file_digest(Path(spec).expanduser())}
        return None

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
        """The file name of a pretraining's weights (the image size in it unless it is the report's own)."""
        short = image_size == self.image_size
        return f"pretrained_{backbone}.pt" if short else f"pretrained_{backbone}_{image_size}px.pt"

    def label(self, backbone: str, image_size: int) -> str:
        """``resnet18`` at the report's own image size, ``resnet18 @ 64 px`` at another."""
        return backbone if image_size == self.image_size else f"{backbone} @ {image_size} px"

    def describe(self, backbone: str, image_size: int) -> str:
        """The report's sentence on one pretraining: what it learnt, how well, where it is saved, and whether it
        was done in this run or read from the cache (and from which run)."""
        p = self.pretrained[(backbone, image_size)]
        acc = p["history"][-1]["val_acc"] if p["history"] else None
        text = (f"{md_code(self.label(backbone, image_size))} {md_text(p['weights']['source'])}: source validation "
                "accuracy ") + (
            f"**{acc:.2%}**" if acc is not None else "not measured")
        if (p.get("cache") or {}).get("hit"):
            text += (f"; not pretrained again here: {md_text(cache.describe(p['cache']))}, where it took "
                     f"{p['seconds']:.1f} s")
        else:
            text += f" in {p['seconds']:.1f} s"
        return text + (f". Saved to {md_code(p['path'])} (pass it as `weights` to reuse it)." if p.get("path") else ".")

    def records(self) -> dict:
        """``metrics.json``'s ``pretraining``: per pretrained backbone (and image size), what it learnt and how long."""
        return {self.label(b, size): {"backbone": b, "image_size": size, "source": p["weights"]["source"],
                                      "seconds": p["seconds"], "history": p["history"],
                                      "val_acc": p["history"][-1]["val_acc"] if p["history"] else None,
                                      "checkpoint": str(p["path"]) if p.get("path") else None,
                                      "cache": p.get("cache")}
                for (b, size), p in self.pretrained.items()}
