"""Training: devices, seeding, prediction and the ``fit`` loop (optimizers and schedules are in
:mod:`helpers.engine.optim`, checkpoints in :mod:`helpers.engine.checkpoints`).

``fit`` returns a :class:`History`, a list with one dict per epoch (skorch style):
``epoch, train_loss, train_acc, val_loss, val_acc, lr, seconds``.
"""

from __future__ import annotations

import contextlib
import math
import os
import random
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch import nn

from helpers.data.augment import Augment
from helpers.data.fashion import ImageSet, batch_indices
from helpers.engine.checkpoints import load_checkpoint, restore_state, save_epoch
from helpers.engine.optim import l1_penalty, make_optimizer, make_scheduler
from helpers.engine.progress import batch_due, emit
from helpers.engine.speed import PRECISIONS, SMALL_STEP_FLOPS, autocast_dtype, native_bf16, step_flops, training_threads  # noqa: F401

DEVICES = ("auto", "cpu", "cuda", "mps")


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``auto`` picks CUDA, then Apple's MPS, then the CPU."""
    if isinstance(device, torch.device):
        return device
    name = str(device).split(":")[0]
    if name not in DEVICES:
        raise ValueError(f"device={device!r}: unknown; allowed: {', '.join(DEVICES)}")
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    return torch.device(device)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA) so a run repeats; on CUDA also ask for deterministic kernels."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    torch.cuda.manual_seed_all(seed)
    if torch.cuda.is_available():
        deterministic_cuda()


def deterministic_cuda() -> str:
    """What PyTorch needs to repeat a CUDA run: deterministic cuDNN kernels, no autotuning, deterministic
    algorithms (warning, not failing, for an operation that has none; cuBLAS's workspace set for it).
    Returns the setting as the report's appendix states it."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False
    torch.use_deterministic_algorithms(True, warn_only=True)
    return ("deterministic algorithms on (an operation without a deterministic CUDA kernel warns in the notebook "
            "and may vary in the last digits)")


def progress_enabled() -> bool:
    """Whether :func:`fit` shows a progress bar by default (not when ``HELPERS_PROGRESS=0``)."""
    # Bars help in JupyterLab but are noise in an exported report; the CLI sets this variable.
    return os.environ.get("HELPERS_PROGRESS", "1") != "0"


class History(list):
    """Per-epoch dicts, plus why training stopped and the best validation epoch."""

    stop_reason: str = "completed"
    precision: str = "fp32"  # what fit trained in, and on how many CPU threads
    threads: int | None = None

    def column(self, key: str) -> list:
        """The values of ``key``, one per epoch (None where an epoch lacks it)."""
        return [row.get(key) for row in self]

    @property
    def best_epoch(self) -> int | None:
        """The epoch of the lowest finite validation loss; None without one."""
        rows = [r for r in self if r.get("val_loss") is not None and math.isfinite(r["val_loss"])]
        return min(rows, key=lambda r: r["val_loss"])["epoch"] if rows else None

    @property
    def seconds(self) -> float:
        """Training time of all epochs together, in seconds."""
        return float(sum(r["seconds"] for r in self))


def set_test_flip(model: nn.Module, on: bool = True) -> nn.Module:
    """Make :func:`predict` (validation, test, latency) average each image's prediction with its mirror image's
    (test-time augmentation, for labels that survive a left-right flip as clothing's do); returns ``model``."""
    model.test_flip = bool(on)
    return model


def predict_batch(model: nn.Module, xb: torch.Tensor) -> torch.Tensor:
    """The model's logits for one batch, as evaluation computes them (with the mirror image, see :func:`set_test_flip`)."""
    if not getattr(model, "test_flip", False):
        return model(xb)
    # log of the mean probability: still logits (softmax gives the averaged probabilities back)
    both = torch.stack([model(xb).float().log_softmax(1), model(xb.flip(-1)).float().log_softmax(1)])
    return torch.logsumexp(both, 0) - math.log(2)


@torch.no_grad()
def predict(model: nn.Module, X: torch.Tensor, *, batch_size: int = 1024, device="auto") -> torch.Tensor:
    """The model's outputs for ``X`` in evaluation mode, batch by batch, returned on the CPU: a classifier's
    logits (with :func:`set_test_flip`, averaged over each image and its mirror image), an autoencoder's
    reconstructions, an encoder's codes."""
    device = resolve_device(device)
    was_training = model.training
    model.eval()
    out = [predict_batch(model, X[i:i + batch_size].to(device, non_blocking=True)).float().cpu()
           for i in range(0, len(X), batch_size)]
    model.train(was_training)
    return torch.cat(out) if out else torch.empty(0)


def loss_and_accuracy(model, data: ImageSet, *, batch_size: int = 1024, device="auto") -> tuple[float, float]:
    """Mean cross-entropy and accuracy of a classifier on ``data``."""
    logits = predict(model, data.X, batch_size=batch_size, device=device)
    loss = nn.functional.cross_entropy(logits, data.y).item()
    return loss, (logits.argmax(1) == data.y).float().mean().item()


class Classification:
    """What :func:`fit` trains by default: cross-entropy on the labels, with accuracy counted.

    Another task (the autoencoder's denoising) gives the same four hooks: ``batch`` turns a batch of images and
    labels into inputs and targets, ``loss`` and ``correct`` (None when accuracy has no meaning) score the
    model's output, ``evaluate`` gives ``(loss, accuracy)`` on a whole set.
    """

    def __init__(self, label_smoothing: float = 0.0):
        self.loss_fn = nn.CrossEntropyLoss(label_smoothing=label_smoothing)

    def batch(self, xb, yb, generator):
        """The model's inputs and targets for a batch: the images and labels as they are."""
        return xb, yb

    def loss(self, out, target):
        """The batch's cross-entropy (a scalar tensor)."""
        return self.loss_fn(out, target)

    def correct(self, out, target):
        """How many of the batch's predictions are right (a tensor)."""
        return (out.argmax(1) == target).sum()

    def evaluate(self, model, data: ImageSet, *, device) -> tuple[float, float | None]:
        """``(loss, accuracy)`` on a whole set (:func:`loss_and_accuracy`)."""
        return loss_and_accuracy(model, data, device=device)


@dataclass(frozen=True)
class FitSettings:
    """How :func:`fit` trains; every field is also a keyword of :func:`fit`.

    Parameters
    ----------
    num_epochs, batch_size : int
        Passes over ``train`` and images per step (both >= 1).
    optimizer : {"sgd", "adam", "adamw", "rmsprop"}
        With ``lr``, ``weight_decay``, ``momentum`` and ``nesterov`` (SGD), see :func:`make_optimizer`.
    l1 : float
        Weight of the L1 penalty on weights added to the loss.
    schedule : {"none", "step", "cosine", "onecycle"}
        Learning-rate schedule, stepped every batch.
    label_smoothing : float
        Of the default :class:`Classification` task; ``augment`` (an :class:`Augment`) transforms each batch.
    patience : int, optional
        Early stopping: stop after this many epochs without a lower validation loss.
    checkpoint_dir : path, optional
        Writes ``last.pt`` every epoch (for resuming), ``best.pt`` at each new lowest validation loss
        and ``epoch_NNN.pt`` every ``checkpoint_every`` epochs.
    resume_from : path, optional
        A ``last.pt`` (or ``epoch_NNN.pt``) to continue from; training goes on up to ``num_epochs``.
    resume : bool
        Continue from ``checkpoint_dir``'s ``last.pt`` when there is one: a run interrupted after its epoch k
        goes on from epoch k + 1 (the same numbers as an uninterrupted run), a finished run is not trained again.
    restore_best : bool
        Load the weights of the lowest-validation-loss epoch at the end.
    progress : bool, optional
        Show a progress bar (default: :func:`progress_enabled`); ``desc`` labels it and the progress events.
        ``seed`` seeds dropout, shuffling and augmentation.
    precision : {"fp32", "auto", "bf16"}
        ``auto`` trains convolutional networks in bfloat16 mixed precision where the hardware has it
        (:func:`autocast_dtype`); ``history.precision`` says what was used.
    """

    num_epochs: int
    batch_size: int = 64
    optimizer: str = "adam"
    lr: float = 1e-3
    weight_decay: float = 0.0
    momentum: float = 0.9
    nesterov: bool = False
    l1: float = 0.0
    schedule: str = "none"
    label_smoothing: float = 0.0
    augment: Augment | None = None
    patience: int | None = None
    checkpoint_dir: str | Path | None = None
    checkpoint_every: int = 0
    resume_from: str | Path | None = None
    resume: bool = False
    restore_best: bool = False
    seed: int = 0
    progress: bool | None = None
    desc: str = "training"
    precision: str = "fp32"

    def __post_init__(self):
        if self.num_epochs < 1 or self.batch_size < 1:
            raise ValueError(f"num_epochs={self.num_epochs!r}, batch_size={self.batch_size!r}: both must be >= 1")


def fit(model: nn.Module, train: ImageSet, val: ImageSet | None = None, settings: FitSettings | None = None, *,
        task=None, device="auto", **options) -> History:
    """Train ``model`` on ``train`` and return the per-epoch :class:`History`.

    Parameters
    ----------
    settings : FitSettings, optional
        How to train; ``options`` (any :class:`FitSettings` field, e.g. ``num_epochs=3, lr=0.01``) give it or
        override its fields.
    task : optional
        What is learned (default :class:`Classification`, with ``label_smoothing``); the autoencoder passes
        its denoising task, so every section trains with this one loop.
    device : str or torch.device
        See :func:`resolve_device`.

    A non-finite loss stops training; ``history.stop_reason`` says where.
    """
    s = replace(settings, **options) if settings is not None else FitSettings(**options)
    device = resolve_device(device)
    model.to(device)
    saved_threads = torch.get_num_threads()
    flops = step_flops(model, train.X[:1].to(device), s.batch_size)
    torch.set_num_threads(training_threads(flops, device=device))
    amp = autocast_dtype(s.precision, device, flops)
    try:
        return _fit(model, train, val, s, task=task, device=device, amp=amp)
    finally:
        torch.set_num_threads(saved_threads)


def _patience_spent(history: History, epoch: int, patience: int | None) -> str | None:
    """The stop reason when ``patience`` epochs have passed since the best one by ``epoch``, else None."""
    if patience is not None and history.best_epoch is not None and epoch - history.best_epoch >= patience:
        return f"early stopping at epoch {epoch}: no lower validation loss for {patience} epochs"
    return None


def _resume(s: FitSettings, history: History, **state) -> tuple[float, int]:
    """Restore the checkpoint ``s`` names, if any, into ``history`` and ``state`` (:func:`restore_state`'s
    objects); returns the best validation loss so far and the first epoch still to train."""
    path = s.resume_from
    if s.resume and path is None and s.checkpoint_dir is not None and (Path(s.checkpoint_dir) / "last.pt").exists():
        path = Path(s.checkpoint_dir) / "last.pt"
    if path is None:
        return math.inf, 1
    ckpt = load_checkpoint(path)
    restore_state(ckpt, history=history, **state)
    reached = history[-1]["epoch"] if history else 0
    history.stop_reason = _patience_spent(history, reached, s.patience) or history.stop_reason
    # a run that had stopped already must not train on past its stop
    done = s.num_epochs if history.stop_reason != "completed" else ckpt["epoch"]
    return ckpt["best_val_loss"], done + 1


def _optimization(model: nn.Module, s: FitSettings, steps_per_epoch: int) -> tuple:
    """The optimizer of the model's trainable parameters and its schedule (None for ``none``)."""
    opt = make_optimizer(s.optimizer, [p for p in model.parameters() if p.requires_grad], lr=s.lr,
                         weight_decay=s.weight_decay, momentum=s.momentum, nesterov=s.nesterov)
    return opt, make_scheduler(s.schedule, opt, total_steps=s.num_epochs * steps_per_epoch,
                               steps_per_epoch=steps_per_epoch, lr=s.lr)


def _generators(seed: int, device: torch.device) -> tuple[torch.Generator, torch.Generator]:
    """The generators of shuffling and of augmentation (one and the same on the CPU), saved in checkpoints."""
    gen = torch.Generator().manual_seed(seed)
    # augmentation draws on the device holding the batch (CUDA or MPS need a generator of their own)
    return gen, torch.Generator(device=device).manual_seed(seed + 1) if device.type != "cpu" else gen


def _epoch_bar(s: FitSettings, start: int):
    """The tqdm progress bar over the epochs still to train."""
    from tqdm.auto import tqdm  # lazy on purpose: tqdm.auto looks for IPython and widgets when imported

    return tqdm(range(start, s.num_epochs + 1), desc=s.desc, unit="epoch", leave=False,
                disable=not (progress_enabled() if s.progress is None else s.progress))


def _epoch_row(epoch: int, total_loss: torch.Tensor, correct: torch.Tensor | None, seen: int, *, lr: float) -> dict:
    """The history row of a trained epoch from its running sums; validation scores and time still to fill in."""
    total_loss, correct = total_loss.item(), None if correct is None else correct.item()
    return {"epoch": epoch, "train_loss": total_loss / seen, "train_acc": None if correct is None else correct / seen,
            "val_loss": None, "val_acc": None, "lr": lr}


def _fit(model, train: ImageSet, val: ImageSet | None, s: FitSettings, *, task, device: torch.device,
         amp: torch.dtype | None) -> History:
    """The training loop of :func:`fit` (threads and precision chosen already); returns the history."""
    augment = s.augment or Augment()
    seed_everything(s.seed)
    steps_per_epoch = math.ceil(len(train) / s.batch_size)
    opt, sched = _optimization(model, s, steps_per_epoch)
    task = task or Classification(s.label_smoothing)
    gen, aug_gen = _generators(s.seed, device)
    history = History()
    history.precision, history.threads = "bf16 mixed" if amp is not None else "fp32", torch.get_num_threads()
    state = {"model": model, "optimizer": opt, "scheduler": sched, "generators": (gen, aug_gen), "device": device}
    best_loss, start = _resume(s, history, **state)
    # Keeping the whole set on the accelerator avoids a host-to-device copy per batch.
    X_train, y_train, best_state = train.X.to(device), train.y.to(device), None
    # On the CPU a per-batch check costs nothing and names the batch; an accelerator is checked once per epoch.
    check_each_batch = device.type == "cpu"
    # float32 runs enter no autocast context at all: nothing added to their hot path
    autocast = (lambda: torch.autocast(device.type, dtype=amp)) if amp is not None else contextlib.nullcontext
    acc_dtype = torch.float32 if device.type == "mps" else torch.float64  # MPS has no float64
    bar = _epoch_bar(s, start)
    for epoch in bar:
        model.train()
        t0 = time.perf_counter()
        # Running sums stay on the device: reading them (.item()) waits for the accelerator, so it happens only
        # when a progress line is due and at the end of the epoch, not on every batch.
        total_loss = torch.zeros((), dtype=acc_dtype, device=device)
        correct, seen, failed = torch.zeros((), dtype=torch.long, device=device), 0, None
        for step, idx in enumerate(batch_indices(len(train), batch_size=s.batch_size, shuffle=True, generator=gen)):
            idx = idx.to(device)
            xb, yb = task.batch(augment(X_train[idx], aug_gen), y_train[idx], aug_gen)
            with autocast():
                logits = model(xb)
                loss = task.loss(logits, yb)
            if s.l1:
                loss = loss + s.l1 * l1_penalty(model)
            if check_each_batch and not torch.isfinite(loss):
                failed = f"non-finite loss ({loss.item()}) at epoch {epoch}, batch {step + 1}"
                break
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if sched is not None:
                sched.step()
            total_loss += loss.detach() * len(yb)
            hits = task.correct(logits, yb)
            correct = None if hits is None or correct is None else correct + hits
            seen += len(yb)
            if batch_due():
                emit("batch", desc=s.desc, epoch=epoch, num_epochs=s.num_epochs, step=step + 1, steps=steps_per_epoch,
                     loss=total_loss.item() / seen, acc=None if correct is None else correct.item() / seen)
        if not failed and not math.isfinite(total_loss.item()):
            failed = f"non-finite loss in epoch {epoch}"
        if failed:
            history.stop_reason = failed
            break
        row = _epoch_row(epoch, total_loss, correct, seen, lr=opt.param_groups[0]["lr"])
        if val is not None and len(val):
            row["val_loss"], row["val_acc"] = task.evaluate(model, val, device=device)
        row["seconds"] = time.perf_counter() - t0
        history.append(row)
        bar.set_postfix({k: f"{row[k]:.3f}" for k in ("train_loss", "train_acc", "val_loss", "val_acc")
                         if row[k] is not None})
        improved = row["val_loss"] is not None and row["val_loss"] < best_loss
        if improved:
            best_loss = row["val_loss"]
            if s.restore_best:
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        if s.checkpoint_dir:
            save_epoch(Path(s.checkpoint_dir), history=history, epoch=epoch, best_loss=best_loss, improved=improved,
                       every=s.checkpoint_every, **state)
        if stopped := _patience_spent(history, epoch, s.patience):
            history.stop_reason = stopped
            break
    bar.close()
    if s.restore_best and best_state is not None:
        model.load_state_dict(best_state)
    return history


def checkpointing(s, sub: str | None = None) -> dict:
    """The checkpoint keywords of :func:`fit` (a dict) from a run's settings (set by
    :func:`helpers.engine.experiment.train_run`): ``checkpoint_dir`` (``sub`` names a second training of the same
    run, e.g. the autoencoder's classifier), ``resume`` and ``checkpoint_every``. Empty settings give none."""
    folder = s.get("checkpoint_dir")
    return {"checkpoint_dir": (Path(folder) / sub if sub else Path(folder)) if folder else None,
            "resume": bool(s.get("resume")), "checkpoint_every": s.get("checkpoint_every") or 0}
