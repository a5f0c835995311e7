"""The autoencoder section: a denoising autoencoder and a classifier on its encoder.

The autoencoder (an MLP such as 784-512-256-64-256-512-784, or a small convolutional one) learns to
rebuild clean images from noisy copies; its encoder then feeds a classifier, frozen or fine-tuned.
:func:`fit_autoencoder` returns the same per-epoch history as :func:`helpers.engine.training.fit`
(``epoch, train_loss, val_loss, lr, seconds``; losses are mean squared errors per pixel).
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from helpers.data.augment import gaussian_noise
from helpers.engine.config import (
    Section,
    check_bool,
    check_choice,
    check_classes_param,
    check_fraction,
    check_nonnegative,
    check_positive,
    check_sizes,
    check_training,
    fail,
    register_section,
)
from helpers.data.fashion import ImageSet, load_splits, select_classes
from helpers.escape import md_code, md_text
from helpers.engine.experiment import run_row
from helpers.engine.metrics import evaluate
from helpers.models.networks import init_weights
from helpers.engine.training import History, checkpointing, fit, predict_logits

KINDS = ("mlp", "conv")
ENCODER_MODES = ("finetune", "frozen")
# What each profile sets for parameters left as None (per_class: images kept per class, None = all).
PROFILES = {
    "smoke": {"epochs": 1, "classifier_epochs": 1, "epoch_options": [1, 2], "train_per_class": 30,
              "test_per_class": 10, "tsne_samples": 60},
    "quick": {"epochs": 5, "classifier_epochs": 6, "epoch_options": [1, 6, 20], "train_per_class": 2000,
              "test_per_class": None, "tsne_samples": 800},
    "full": {"epochs": 20, "classifier_epochs": 10, "epoch_options": [2, 10, 30], "train_per_class": None,
             "test_per_class": None, "tsne_samples": 2000},
}
PARAMETERS = ("profile", "seed", "data_dir", "output_dir", "grid", "architectures", "repeats", "evaluate_test", "kind",
              "hidden_sizes", "bottleneck", "noise_std", "epochs", "classifier_epochs", "batch_size", "lr", "optimizer",
              "init", "classes", "ae_classes", "encoder", "classifier_hidden", "classifier_dropout", "compare",
              "epoch_options", "tsne_samples", "val_fraction", "stratified", "train_per_class", "test_per_class",
              "cnn_metrics", "device", "checkpoint_every", "author_name", "author_id", "course")
RUN_PARAMETERS = ("kind", "hidden_sizes", "bottleneck", "noise_std", "epochs", "classifier_epochs", "batch_size", "lr",
                  "optimizer", "init", "encoder", "classifier_hidden", "classifier_dropout")


def validate(p: dict) -> None:
    """Report-level checks; the default ``grid`` is one configuration per entry of ``architectures``."""
    p["ae_classes"] = check_classes_param(p["ae_classes"])
    if p["ae_classes"] is not None and not set(p["classes"] or range(10)) <= set(p["ae_classes"]):
        fail("ae_classes", p["ae_classes"], f"None or a list that contains every one of classes={p['classes']!r}")
    if p["grid"] is None:
        archs = p["architectures"]
        if not isinstance(archs, dict) or not archs:
            fail("architectures", archs, 'a dict of name -> sizes, e.g. {"thin": [128, 32], "thick": [600, 550, 512]}')
        sizes = {str(k): check_sizes(f"architectures[{k!r}]", v) for k, v in archs.items()}  # the last is the code
        p["architectures"] = sizes
        p["grid"] = [{"name": k, "hidden_sizes": v[:-1], "bottleneck": v[-1]} for k, v in sizes.items()]
    p["epoch_options"] = check_sizes("epoch_options", p["epoch_options"], allow_empty=True)
    check_positive("tsne_samples", p["tsne_samples"], integer=True)
    check_bool("compare", p["compare"])
    if p["cnn_metrics"] is not None and not isinstance(p["cnn_metrics"], str):
        fail("cnn_metrics", p["cnn_metrics"], "None or the path of the CNN report's metrics.json")


def check_run(s: dict) -> None:
    """The settings of one autoencoder + classifier run."""
    check_training(s)
    check_choice("kind", s["kind"], KINDS)
    s["hidden_sizes"] = check_sizes("hidden_sizes", s["hidden_sizes"], allow_empty=s["kind"] == "mlp")
    check_positive("bottleneck", s["bottleneck"], integer=True)
    check_nonnegative("noise_std", s["noise_std"])
    check_positive("classifier_epochs", s["classifier_epochs"], integer=True)
    check_choice("encoder", s["encoder"], ENCODER_MODES)
    s["classifier_hidden"] = check_sizes("classifier_hidden", s["classifier_hidden"], allow_empty=True)
    check_fraction("classifier_dropout", s["classifier_dropout"], low_open=False)


SECTION = register_section(Section("autoencoder", PARAMETERS, PROFILES, validate, check_run, RUN_PARAMETERS,
                                   choices={"kind": KINDS, "encoder": ENCODER_MODES}))


def load_data(*, data_dir=None, classes=None, ae_classes=None, val_fraction: float = 0.15, stratified: bool = True,
              seed: int = 0, train_per_class: int | None = None, test_per_class: int | None = None) -> dict:
    """One train/validation/test split, seen whole by the autoencoder and by class subset by the classifier.

    The autoencoder uses ``ae_classes`` (None: all ten; labels unused); the classifier uses ``classes``,
    which must be among them. Both take their validation and test images from the same held-out sets,
    so the classifier is never tested on images the autoencoder trained on.
    Returns ``{"ae": {"train", "val", "test"}, "clf": {...}, "source"}``.
    """
    splits = load_splits(data_dir=data_dir, classes=ae_classes, val_fraction=val_fraction, stratified=stratified,
                         seed=seed, train_per_class=train_per_class, test_per_class=test_per_class)
    subset = None if classes is None else [list(ae_classes).index(c) if ae_classes else c for c in classes]
    ae = {k: splits[k] for k in ("train", "val", "test")}
    return {"ae": ae, "clf": {k: select_classes(v, subset) for k, v in ae.items()}, "source": splits["source"]}


class AutoEncoder(nn.Module):
    """``decoder(encoder(x))``; images (N, C, H, W) in [0, 1] in, reconstructions (sigmoid) out."""

    def __init__(self, encoder: nn.Module, decoder: nn.Module, code_size: int):
        super().__init__()
        self.encoder, self.decoder, self.code_size = encoder, decoder, code_size

    def forward(self, x):
        return self.decoder(self.encoder(x))


def _mlp(sizes, *, last_activation: nn.Module | None) -> list[nn.Module]:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes, sizes[1:])):
        layers.append(nn.Linear(a, b))
        layers.append(last_activation if i == len(sizes) - 2 and last_activation is not None else nn.ReLU())
    return layers


def build_autoencoder(kind: str = "mlp", *, hidden_sizes=(512, 256), bottleneck: int = 64, image_size: int = 28,
                      channels: int = 1) -> AutoEncoder:
    """A denoising autoencoder with ReLU layers and a mirrored decoder.

    Parameters
    ----------
    kind : {"mlp", "conv"}
        ``mlp``: fully connected, ``hidden_sizes`` are units (784-512-256-64-256-512-784 by default).
        ``conv``: ``hidden_sizes`` are channels of stride-2 3x3 convolutions, then a linear bottleneck;
        the decoder uses transposed convolutions.
    bottleneck : int
        Size of the code (ReLU activated).
    """
    check_choice("kind", kind, KINDS)
    hidden_sizes = list(hidden_sizes)
    pixels = channels * image_size * image_size
    if kind == "mlp":
        sizes = [pixels, *hidden_sizes, bottleneck]
        encoder = nn.Sequential(nn.Flatten(), *_mlp(sizes, last_activation=nn.ReLU()))
        decoder = nn.Sequential(*_mlp(sizes[::-1], last_activation=nn.Sigmoid()),
                                nn.Unflatten(1, (channels, image_size, image_size)))
        return AutoEncoder(encoder, decoder, bottleneck)
    if not hidden_sizes:
        raise ValueError("hidden_sizes=[]: a convolutional autoencoder needs at least one convolution")
    spatial, enc = [image_size], []
    for c_in, c_out in zip([channels, *hidden_sizes], hidden_sizes):
        enc += [nn.Conv2d(c_in, c_out, 3, stride=2, padding=1), nn.ReLU()]
        spatial.append((spatial[-1] + 1) // 2)
    flat = hidden_sizes[-1] * spatial[-1] ** 2
    encoder = nn.Sequential(*enc, nn.Flatten(), nn.Linear(flat, bottleneck), nn.ReLU())
    dec: list[nn.Module] = [nn.Linear(bottleneck, flat), nn.ReLU(),
                            nn.Unflatten(1, (hidden_sizes[-1], spatial[-1], spatial[-1]))]
    outs = [channels, *hidden_sizes][::-1]  # channel counts from the innermost layer outwards
    for i, (c_in, c_out) in enumerate(zip(outs, outs[1:])):
        size_in, size_out = spatial[-1 - i], spatial[-2 - i]
        dec += [nn.ConvTranspose2d(c_in, c_out, 3, stride=2, padding=1, output_padding=size_out - 2 * size_in + 1),
                nn.Sigmoid() if i == len(hidden_sizes) - 1 else nn.ReLU()]
    return AutoEncoder(encoder, nn.Sequential(*dec), bottleneck)


def add_noise(X: torch.Tensor, std: float, *, seed: int | None = None, generator=None) -> torch.Tensor:
    """``X`` plus Gaussian noise of ``std`` (pixel units), clipped to [0, 1]; ``std=0`` returns ``X``."""
    if not std:
        return X
    if generator is None:
        generator = torch.Generator(device=X.device).manual_seed(0 if seed is None else seed)
    return gaussian_noise(X, std=std, generator=generator)


class Denoising:
    """The autoencoder's task for :func:`helpers.engine.training.fit`: rebuild each clean batch from a noisy copy (MSE).

    Fresh noise is drawn for every training batch; the validation images get one fixed noisy copy (from
    ``seed``), so validation losses of different epochs compare like with like. No accuracy.
    """

    def __init__(self, noise_std: float, *, seed: int = 0):
        self.noise_std, self.seed, self._fixed = noise_std, seed, {}

    def batch(self, xb, yb, generator):
        return add_noise(xb, self.noise_std, generator=generator), xb

    def loss(self, out, target):
        return nn.functional.mse_loss(out, target)

    def correct(self, out, target):
        return None

    def evaluate(self, model, data: ImageSet, *, device) -> tuple[float, None]:
        if id(data) not in self._fixed:
            self._fixed[id(data)] = (data, add_noise(data.X, self.noise_std, seed=self.seed))
        noisy = self._fixed[id(data)][1]
        return nn.functional.mse_loss(predict_logits(model, noisy, device=device), data.X).item(), None


def fit_autoencoder(model: AutoEncoder, train: ImageSet, val: ImageSet | None = None, *, num_epochs: int,
                    batch_size: int = 100, lr: float = 1e-3, optimizer: str = "adam", noise_std: float = 0.3,
                    seed: int = 0, device="auto", progress: bool | None = None, desc: str = "autoencoder",
                    **checkpoints) -> History:
    """Train ``model`` to rebuild clean images from noisy ones with :func:`helpers.engine.training.fit` and the
    :class:`Denoising` task; the history's losses are MSE per pixel (no accuracies)."""
    return fit(model, train, val, num_epochs=num_epochs, batch_size=batch_size, optimizer=optimizer, lr=lr, seed=seed,
               device=device, progress=progress, desc=desc, task=Denoising(noise_std, seed=seed + 1), **checkpoints)


def reconstruct(model: AutoEncoder, X: torch.Tensor, *, noise_std: float, seed: int = 0, device="auto"):
    """Noisy copies of ``X`` (fixed by ``seed``) and the model's reconstructions of them: ``(noisy, recon)``."""
    noisy = add_noise(X, noise_std, seed=seed)
    return noisy, predict_logits(model, noisy, device=device)


def reconstruction_mse(model: AutoEncoder, data: ImageSet, *, noise_std: float, seed: int = 0, device="auto") -> dict:
    """Mean squared error per pixel: ``mse`` (reconstruction vs clean) and ``noisy_mse`` (noisy vs clean)."""
    noisy, recon = reconstruct(model, data.X, noise_std=noise_std, seed=seed, device=device)
    return {"mse": nn.functional.mse_loss(recon, data.X).item(), "noisy_mse": nn.functional.mse_loss(noisy, data.X).item()}


def latent_codes(model: AutoEncoder, X: torch.Tensor, *, device="auto") -> np.ndarray:
    """The encoder's codes of clean images, (N, code size)."""
    return predict_logits(model.encoder, X, device=device).numpy()


def project(codes: np.ndarray, *, method: str = "pca", seed: int = 0) -> np.ndarray:
    """2-D projection of codes: ``pca`` (linear) or ``tsne`` (perplexity capped for small samples)."""
    check_choice("method", method, ("pca", "tsne"))
    codes = np.asarray(codes, dtype=np.float32)
    if method == "pca":
        from sklearn.decomposition import PCA

        return PCA(n_components=2, random_state=seed).fit_transform(codes)
    from sklearn.manifold import TSNE

    perplexity = float(min(30.0, max(2.0, (len(codes) - 1) / 3)))
    return TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(codes)


class EncoderClassifier(nn.Module):
    """``head(encoder(x))``; the encoder is shared with the autoencoder unless copied."""

    def __init__(self, encoder: nn.Module, head: nn.Module):
        super().__init__()
        self.encoder, self.head = encoder, head

    def forward(self, x):
        return self.head(self.encoder(x))


def make_classifier_head(code_size: int, num_classes: int, *, hidden_sizes=(), dropout: float = 0.0) -> nn.Sequential:
    """[Linear -> ReLU -> Dropout?] per hidden size, then Linear(num_classes)."""
    layers: list[nn.Module] = []
    width = code_size
    for size in hidden_sizes:
        layers += [nn.Linear(width, size), nn.ReLU()] + ([nn.Dropout(dropout)] if dropout else [])
        width = size
    return nn.Sequential(*layers, nn.Linear(width, num_classes))


def train_classifier(ae: AutoEncoder, train: ImageSet, val: ImageSet, test: ImageSet, *, num_epochs: int,
                     encoder: str = "finetune", hidden_sizes=(), dropout: float = 0.0, batch_size: int = 100,
                     lr: float = 1e-3, seed: int = 0, device="auto", desc: str = "encoder + classifier",
                     **checkpoints) -> dict:
    """Train a classifier on a copy of ``ae``'s encoder (``frozen``: on its cached codes) and test it.

    Returns ``{"model", "history", "test", "seconds"}`` (``test`` is :func:`helpers.engine.metrics.evaluate`'s dict).
    """
    import copy

    from helpers.sections.transfer import feature_set

    check_choice("encoder", encoder, ENCODER_MODES)
    torch.manual_seed(seed)
    head = make_classifier_head(ae.code_size, train.num_classes, hidden_sizes=hidden_sizes, dropout=dropout)
    model = EncoderClassifier(copy.deepcopy(ae.encoder).cpu(), head)
    args = {"num_epochs": num_epochs, "batch_size": batch_size, "optimizer": "adam", "lr": lr, "seed": seed,
            "device": device, "desc": desc, **checkpoints}
    start = time.perf_counter()
    if encoder == "frozen":
        for p in model.encoder.parameters():
            p.requires_grad_(False)
        codes = {k: feature_set(model.encoder, d, device=device) for k, d in (("train", train), ("val", val))}
        history = fit(model.head, codes["train"], codes["val"], **args)
    else:
        history = fit(model, train, val, **args)
    seconds = time.perf_counter() - start
    return {"model": model, "history": history, "test": evaluate(model, test, device=device), "seconds": seconds}


def make_train_one(ae_sets: dict, test: ImageSet):
    """The engine's ``train_one`` for this section: an autoencoder on ``ae_sets`` (train/val), then a classifier
    on its encoder trained on the engine's ``train``/``val`` and tested on ``test``. The classifier is the run's
    ``model`` and ``history``; the autoencoder, its history and its reconstruction numbers come along.

    Runs are remembered by this ``train_one`` (settings, seed, data), so the report's main run and its twin in the
    grid are trained once; a new call of this function (new data) starts with nothing remembered.
    """
    done: dict = {}

    def train_one(s: dict, *, train: ImageSet, val: ImageSet | None, seed: int, desc: str = "autoencoder") -> dict:
        key = (repr(sorted((k, repr(s[k])) for k in RUN_PARAMETERS)), seed, id(train), id(val))
        if key in done:
            return done[key]
        torch.manual_seed(seed)
        ae = build_autoencoder(s["kind"], hidden_sizes=s["hidden_sizes"], bottleneck=s["bottleneck"],
                               image_size=train.X.shape[-1], channels=train.X.shape[1])
        init_weights(ae, s["init"])
        start = time.perf_counter()
        ae_history = fit_autoencoder(ae, ae_sets["train"], ae_sets["val"], num_epochs=s["epochs"],
                                     batch_size=s["batch_size"], lr=s["lr"], optimizer=s["optimizer"],
                                     noise_std=s["noise_std"], seed=seed, device=s["device"], desc=f"{desc} autoencoder",
                                     **checkpointing(s, "autoencoder"))
        ae_seconds = time.perf_counter() - start
        clf = train_classifier(ae, train, val, test, num_epochs=s["classifier_epochs"], encoder=s["encoder"],
                               hidden_sizes=s["classifier_hidden"], dropout=s["classifier_dropout"],
                               batch_size=s["batch_size"], lr=s["lr"], seed=seed, device=s["device"],
                               desc=f"{desc} classifier", **checkpointing(s, "classifier"))
        last = ae_history[-1] if ae_history else {}
        out = {"model": clf["model"], "history": clf["history"], "ae": ae, "ae_history": ae_history, "classifier": clf,
               "row": {"ae_params": sum(p.numel() for p in ae.parameters()), "ae_train_mse": last.get("train_loss"),
                       "ae_val_mse": last.get("val_loss"), "ae_seconds": ae_seconds}}
        done[key] = out
        return out
    return train_one


def architecture_columns() -> list[str]:
    """The comparison table's result columns (classifier accuracy, autoencoder MSE, test where evaluated)."""
    return ["params", "ae_params", "ae_train_mse", "ae_val_mse", "train_acc", "val_loss", "val_acc", "test_acc",
            "best_epoch", "seconds", "status"]


def classifier_row(name: str, result: dict) -> dict:
    """A table row for a :func:`train_classifier` result (:func:`helpers.engine.experiment.run_row`, plus test)."""
    row = {"name": name, **run_row(result["history"], seconds=result["seconds"])}
    row.update({"test_acc": result["test"]["accuracy"], "test_loss": result["test"]["loss"]})
    return row


def cnn_comparison(path: str | Path, classes) -> tuple[dict | None, str]:
    """The CNN report's test results for the same classes, and a note on why they are missing if they are.

    Reads ``data.classes`` and ``best.test`` (``accuracy``, ``per_class_accuracy``) of its metrics.json.
    """
    path = Path(path)
    if not path.is_file():
        return None, f"no CNN report at {path}: run the CNN notebook with classes={classes} for a side-by-side."
    try:
        metrics = json.loads(path.read_text())
        their_classes, test = metrics["data"]["classes"], metrics["best"]["test"]
        accuracy = float(test["accuracy"])
    except (ValueError, KeyError, TypeError) as exc:
        return None, f"{path} is not a CNN metrics file with data.classes and best.test.accuracy ({exc!r})."
    if list(their_classes) != list(classes):
        return None, f"the CNN report at {path} is for classes {their_classes}, not {list(classes)}: not comparable."
    if not math.isfinite(accuracy):
        return None, f"the CNN report at {path} has no finite test accuracy."
    return {"accuracy": accuracy, "per_class_accuracy": test.get("per_class_accuracy") or {},
            "profile": metrics.get("profile"), "name": metrics["best"].get("name", "best CNN")}, f"read from {path}"


def observations(*, ae_history: History, recon: dict, classifier: dict, arch_table=None, epoch_table=None,
                 cnn: dict | None = None) -> str:
    """Markdown bullet points drawn from the run's numbers."""
    share = 1 - recon["mse"] / max(recon["noisy_mse"], 1e-12)
    lines = [f"- **Denoising:** the reconstructions are {recon['mse']:.4f} (MSE per pixel) from the clean test "
             f"images, the noisy inputs {recon['noisy_mse']:.4f}: "
             + (f"the autoencoder removes {share:.0%} of the squared error." if share > 0 else
                "the reconstructions are still further from the clean images than the noisy inputs; "
                "the autoencoder needs more training.")]
    val = [r["val_loss"] for r in ae_history if r["val_loss"] is not None]
    if len(val) > 1:
        low = int(np.argmin(val)) + 1
        trend = ("was still falling at the last epoch: more epochs would help" if low == len(val) else
                 f"was lowest at epoch {low} of {len(val)} ({min(val):.4f}), ending at {val[-1]:.4f}")
        lines.append(f"- **Reconstruction loss** on validation images {trend}.")
    h, test = classifier["history"], classifier["test"]
    last = h[-1]
    lines.append(f"- **Encoder + classifier:** {test['accuracy']:.2%} test accuracy; last epoch train "
                 f"{last['train_acc']:.2%} vs validation {last['val_acc']:.2%} ({last['train_acc'] - last['val_acc']:+.2%}"
                 f"), lowest validation loss at epoch {h.best_epoch} of {len(h)}.")
    mc, pc = test["most_confused"], test["per_class"].sort_values("accuracy")
    if len(mc):
        top = mc.iloc[0]
        lines.append(f"- **Most confused:** {md_text(top['true'])} taken for {md_text(top['predicted'])} {top['count']} "
                     f"times; hardest class {md_text(pc.iloc[0]['class'])} ({pc.iloc[0]['accuracy']:.1%}), easiest "
                     f"{md_text(pc.iloc[-1]['class'])} "
                     f"({pc.iloc[-1]['accuracy']:.1%}).")
    if arch_table is not None and len(arch_table.dropna(subset=["val_acc"])) > 1:
        a = arch_table.dropna(subset=["val_acc"]).set_index("name")
        best, mse = a["val_acc"].idxmax(), a["ae_val_mse"].astype(float).idxmin()
        gap = (a["train_acc"] - a["val_acc"]).idxmax()
        lines.append(f"- **Comparison:** {md_code(best)} classifies best ({a.loc[best, 'val_acc']:.2%} validation); "
                     f"{md_code(mse)} reconstructs best (validation MSE {a.loc[mse, 'ae_val_mse']:.4f}); {md_code(gap)} "
                     "has the widest "
                     f"classifier train/validation gap ({a.loc[gap, 'train_acc'] - a.loc[gap, 'val_acc']:+.2%}), the "
                     "most overfitting.")
    if epoch_table is not None and len(epoch_table) > 1:
        e = epoch_table.sort_values("epochs_run")
        few, many = e.iloc[0], e.iloc[-1]
        lines.append(f"- **Epochs:** after {few['epochs_run']} the training loss is still {few['train_loss']:.3f} "
                     f"(validation accuracy {few['val_acc']:.2%}); after {many['epochs_run']} it is "
                     f"{many['train_loss']:.3f} while the validation loss ends at {many['val_loss']:.3f} "
                     f"(lowest at epoch {many['best_epoch']}): "
                     + ("the longer run overfits." if many["best_epoch"] is not None
                        and many["best_epoch"] < many["epochs_run"] else "no overfitting yet."))
    if cnn is not None:
        lines.append(f"- **Against the CNN report:** {test['accuracy']:.2%} vs {cnn['accuracy']:.2%} on the same "
                     f"classes ({test['accuracy'] - cnn['accuracy']:+.2%}).")
    return "\n".join(lines)
