"""The autoencoder section: a denoising autoencoder and a classifier on its encoder.

The autoencoder (an MLP such as 784-512-256-64-256-512-784, or a small convolutional one) learns to
rebuild clean images from noisy copies; its encoder then feeds a classifier, frozen or fine-tuned. The networks
are :mod:`helpers.models.autoencoders`'; the observations :mod:`helpers.reporting.observations`'.
:func:`fit_autoencoder` trains with the engine's one loop (:func:`helpers.engine.training.fit` and the
:class:`Denoising` task) and returns the same per-epoch history as :func:`helpers.engine.training.fit`
(``epoch, train_loss, val_loss, lr, seconds``; losses are mean squared errors per pixel).
"""

from __future__ import annotations

import copy
import math
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from helpers.data.augment import gaussian_noise
from helpers.data.fashion import ImageSet, load_splits, select_classes
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
)
from helpers.engine.experiment import history_row
from helpers.engine.metrics import evaluate
from helpers.engine.training import History, checkpointing, fit, predict
from helpers.escape import md_code, md_text
from helpers.models.autoencoders import KINDS, AutoEncoder, EncoderClassifier, build_autoencoder, make_classifier_head
from helpers.models.networks import init_weights
from helpers.paths import PROJECT_ROOT
from helpers.reporting import metrics_file
from helpers.sections.transfer import feature_set

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


SECTION = Section("autoencoder", PARAMETERS, PROFILES, validate, check_run, RUN_PARAMETERS,
                  choices={"kind": KINDS, "encoder": ENCODER_MODES}, fixed=("ae_classes", "cnn_metrics"),
                  epoch_keys=("epochs", "classifier_epochs", "epoch_options"),
                  volatile=("ae_seconds", "ae_seconds_mean", "ae_seconds_std", "cnn_metrics"))


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
        """A noisy copy of the batch as input, the clean batch as target."""
        return add_noise(xb, self.noise_std, generator=generator), xb

    def loss(self, out, target):
        """Mean squared error per pixel."""
        return nn.functional.mse_loss(out, target)

    def correct(self, out, target):
        """No accuracy: rebuilding images has no right answer to count."""
        return None

    def evaluate(self, model, data: ImageSet, *, device) -> tuple[float, None]:
        """The MSE of ``model``'s reconstructions of ``data``'s fixed noisy copy, and no accuracy."""
        if id(data) not in self._fixed:
            self._fixed[id(data)] = (data, add_noise(data.X, self.noise_std, seed=self.seed))
        noisy = self._fixed[id(data)][1]
        return nn.functional.mse_loss(predict(model, noisy, device=device), data.X).item(), None


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
    return noisy, predict(model, noisy, device=device)


def reconstruction_mse(model: AutoEncoder, data: ImageSet, *, noise_std: float, seed: int = 0, device="auto") -> dict:
    """Mean squared error per pixel: ``mse`` (reconstruction vs clean) and ``noisy_mse`` (noisy vs clean)."""
    noisy, recon = reconstruct(model, data.X, noise_std=noise_std, seed=seed, device=device)
    return {"mse": nn.functional.mse_loss(recon, data.X).item(), "noisy_mse": nn.functional.mse_loss(noisy, data.X).item()}


def latent_codes(model: AutoEncoder, X: torch.Tensor, *, device="auto") -> np.ndarray:
    """The encoder's codes of clean images, (N, code size)."""
    return predict(model.encoder, X, device=device).numpy()


def project(codes: np.ndarray, *, method: str = "pca", seed: int = 0) -> np.ndarray:
    """2-D projection of codes: ``pca`` (linear) or ``tsne`` (perplexity capped for small samples)."""
    check_choice("method", method, ("pca", "tsne"))
    codes = np.asarray(codes, dtype=np.float32)
    if method == "pca":
        # lazy on purpose: scikit-learn takes a second to import, and only the embedding figure needs it
        from sklearn.decomposition import PCA

        return PCA(n_components=2, random_state=seed).fit_transform(codes)
    # lazy on purpose: scikit-learn, as above
    from sklearn.manifold import TSNE

    perplexity = float(min(30.0, max(2.0, (len(codes) - 1) / 3)))
    return TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(codes)


def train_classifier(ae: AutoEncoder, train: ImageSet, val: ImageSet, test: ImageSet, *, num_epochs: int,
                     encoder: str = "finetune", hidden_sizes=(), dropout: float = 0.0, batch_size: int = 100,
                     lr: float = 1e-3, seed: int = 0, device="auto", desc: str = "encoder + classifier",
                     **checkpoints) -> dict:
    """Train a classifier on a copy of ``ae``'s encoder (``frozen``: on its cached codes) and test it.

    Returns ``{"model", "history", "test", "seconds"}`` (``test`` is :func:`helpers.engine.metrics.evaluate`'s dict).
    """
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
        """One run: the autoencoder of ``s``, then the classifier on its encoder (remembered by settings and seed)."""
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
    """A table row for a :func:`train_classifier` result (:func:`helpers.engine.experiment.history_row`, plus test)."""
    row = {"name": name, **history_row(result["history"], seconds=result["seconds"])}
    row.update({"test_acc": result["test"]["accuracy"], "test_loss": result["test"]["loss"]})
    return row


def cnn_comparison(path: str | Path | None, classes) -> tuple[dict | None, str]:
    """The CNN report's test results for the same classes, and a note on why they are missing if they are.

    ``path`` is the CNN report's metrics.json (None: ``reports/cnn/metrics.json`` of the project), read with
    :func:`helpers.reporting.metrics_file.read_metrics`; its ``data.classes`` and ``best.test`` (``accuracy``,
    ``per_class_accuracy``) are used.
    """
    path = Path(path) if path else PROJECT_ROOT / "reports" / "cnn" / "metrics.json"
    if not path.is_file():
        return None, f"no CNN report at {path}: run the CNN notebook with classes={classes} for a side-by-side."
    try:
        metrics = metrics_file.read_metrics(path)
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


def data_sentence(splits: dict) -> str:
    """Where the images were read from and what each stage learns from, as the report's sentence."""
    ae, clf = splits["ae"], splits["clf"]
    return (f"Data read from {md_code(splits['source'])}. Autoencoder: **{len(ae['train']):,}** training and "
            f"**{len(ae['val']):,}** validation images of {ae['train'].num_classes} classes. Classifier: "
            f"**{len(clf['train']):,}** training, **{len(clf['val']):,}** validation and **{len(clf['test']):,}** test "
            f"images of {md_text(', '.join(clf['train'].class_names))}.")


def cnn_sentence(cnn: dict | None, note: str) -> str:
    """The report's sentence on the CNN report beside this one (:func:`cnn_comparison`'s pair)."""
    if cnn is None:
        return f"No side-by-side: {md_text(note)}"
    return (f"CNN: {md_code(cnn['name'])} ({md_text(cnn['profile'])} profile), {md_text(note)}. "
            "Test accuracy per class:")


def side_by_side(cnn: dict, test: dict) -> pd.DataFrame:
    """Test accuracy per class (and ``overall``) of the CNN report and of the encoder + classifier, in percent."""
    side = pd.DataFrame({"CNN report": cnn["per_class_accuracy"],
                         "encoder + classifier": dict(zip(test["per_class"]["class"], test["per_class"]["accuracy"]))})
    side.loc["overall"] = [cnn["accuracy"], test["accuracy"]]
    return (side * 100).round(2)


# --- the comparison of classifier epochs --------------------------------------------------------------------

EPOCH_COLUMNS = ["name", "epochs_run", "train_loss", "train_acc", "val_loss", "val_acc", "best_epoch", "test_acc",
                 "seconds"]


def epoch_comparison(ae: AutoEncoder, classifier: dict, cfg, *, train: ImageSet, val: ImageSet,
                     test: ImageSet) -> tuple[dict, pd.DataFrame]:
    """The classifier on ``ae``'s encoder trained for each of ``cfg.epoch_options`` epochs (none without
    ``cfg.compare``); the run of ``cfg.classifier_epochs`` is ``classifier`` itself, not trained again.

    Returns ``({"<n> epochs": train_classifier result}, table)``, one :func:`classifier_row` per run.
    """
    runs = {}
    for n in (cfg.epoch_options if cfg.compare else []):
        runs[f"{n} epochs"] = classifier if n == cfg.classifier_epochs else train_classifier(
            ae, train, val, test, num_epochs=n, encoder=cfg.encoder, hidden_sizes=cfg.classifier_hidden,
            dropout=cfg.classifier_dropout, batch_size=cfg.batch_size, lr=cfg.lr, seed=cfg.seed, device=cfg.device,
            desc=f"classifier, {n} epochs")
    return runs, pd.DataFrame([classifier_row(name, r) for name, r in runs.items()])


def tsne_sample(n: int, size: int, *, seed: int = 0) -> np.ndarray:
    """Indices of at most ``size`` of ``n`` codes, drawn without replacement from ``seed`` (t-SNE's sample)."""
    return np.random.default_rng(seed).choice(n, size=min(size, n), replace=False)


# --- metrics.json ---------------------------------------------------------------------------------------------


def main_name(cfg) -> str:
    """The report's main model, e.g. ``mlp autoencoder 512-256-64 + classifier (finetune)``."""
    return f"{cfg.kind} autoencoder {'-'.join(map(str, [*cfg.hidden_sizes, cfg.bottleneck]))} + classifier ({cfg.encoder})"


def metrics_parts(cfg, *, splits: dict, ae_history: History, recon: dict, classifier: dict, epoch_table: pd.DataFrame,
                  cnn: dict | None, cnn_note: str) -> dict:
    """The autoencoder section's ``data``, ``best``, ``final``, ``extra`` and ``volatile`` for
    :func:`helpers.reporting.report.finish`: both stages' data, the main model's test result, the
    autoencoder's and the classifier's histories, the epoch comparison and the CNN side-by-side."""
    data = {**metrics_file.data_record(splits["clf"], cfg=cfg), "ae_classes": cfg.ae_classes or list(range(10)),
            "ae_sizes": metrics_file.split_sizes(splits["ae"]), "source": splits["source"]}
    extra = {"autoencoder": {"history": ae_history, "test_mse": recon["mse"], "noisy_input_mse": recon["noisy_mse"],
                             "seconds": ae_history.seconds},
             "classifier": {"history": classifier["history"], "seconds": classifier["seconds"], "encoder": cfg.encoder},
             "epochs": epoch_table,
             "cnn_comparison": None if cnn is None else {"cnn_accuracy": cnn["accuracy"], "note": cnn_note}}
    return {"data": data, "best": {"name": main_name(cfg)},
            "final": {"test": classifier["test"], "seconds": classifier["seconds"]}, "extra": extra,
            "volatile": SECTION.volatile}
