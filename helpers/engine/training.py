"""Training: devices, seeding, optimizers, schedules, checkpoints and the ``fit`` loop.

``fit`` returns a :class:`History`, a list with one dict per epoch (skorch style):
``epoch, train_loss, train_acc, val_loss, val_acc, lr, seconds``.
"""

from __future__ import annotations

import contextlib
import math
import os
import random
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from helpers.data.augment import Augment
from helpers.data.fashion import ImageSet, batch_indices
from helpers.engine.progress import batch_due, emit
from helpers.engine.speed import PRECISIONS, SMALL_STEP_FLOPS, autocast_dtype, native_bf16, step_flops, training_threads  # noqa: F401

OPTIMIZERS = ("sgd", "adam", "adamw", "rmsprop")
SCHEDULES = ("none", "step", "cosine", "onecycle")
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
    # Bars help in JupyterLab but are noise in an exported report; the CLI sets this variable.
    return os.environ.get("HELPERS_PROGRESS", "1") != "0"


def make_optimizer(name: str, params, *, lr: float, weight_decay: float = 0.0, momentum: float = 0.9,
                   nesterov: bool = False) -> torch.optim.Optimizer:
    name = name.lower()
    if name not in OPTIMIZERS:
        raise ValueError(f"optimizer={name!r}: unknown; allowed: {', '.join(OPTIMIZERS)}")
    if not lr > 0:
        raise ValueError(f"lr={lr!r}: must be > 0")
    params = list(params)
    # One fused kernel per step instead of a handful of small ops per parameter tensor: 20% more images/s for the
    # course MLP on a CPU (the same update, summed in another order). RMSprop has no fused kernel; foreach batches
    # its ops instead.
    fast = {"fused": True} if _fused_ok(params) else {}
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, nesterov=nesterov and momentum > 0,
                               weight_decay=weight_decay, **fast)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, **fast)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, **fast)
    return torch.optim.RMSprop(params, lr=lr, weight_decay=weight_decay, momentum=0.0, foreach=bool(fast))


def _fused_ok(params) -> bool:
    """Whether torch's fused optimizer kernels take these parameters (floating point, on the CPU or CUDA)."""
    return bool(params) and all(isinstance(p, torch.Tensor) and p.is_floating_point()
                                and p.device.type in ("cpu", "cuda") for p in params)


def make_scheduler(name: str, optimizer, *, total_steps: int, steps_per_epoch: int, lr: float,
                   step_epochs: int = 10, gamma: float = 0.1):
    """A scheduler stepped once per batch (``none`` gives None)."""
    if name not in SCHEDULES:
        raise ValueError(f"schedule={name!r}: unknown; allowed: {', '.join(SCHEDULES)}")
    if name == "none":
        return None
    if name == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=max(1, step_epochs * steps_per_epoch), gamma=gamma)
    if name == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, total_steps))
    # a warm-up of at least two steps: OneCycleLR divides by the warm-up's length (a few-batch smoke run)
    total = max(4, total_steps)
    return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=total,
                                               pct_start=min(0.5, max(0.25, 2.0 / total)))


def l1_penalty(model: nn.Module) -> torch.Tensor:
    """Sum of absolute weights (biases and norm layers excluded)."""
    return sum(p.abs().sum() for n, p in model.named_parameters() if p.ndim > 1 and p.requires_grad)


class History(list):
    """Per-epoch dicts, plus why training stopped and the best validation epoch."""

    stop_reason: str = "completed"
    precision: str = "fp32"  # what fit trained in, and on how many CPU threads
    threads: int | None = None

    def column(self, key: str) -> list:
        return [row.get(key) for row in self]

    @property
    def best_epoch(self) -> int | None:
        rows = [r for r in self if r.get("val_loss") is not None and math.isfinite(r["val_loss"])]
        return min(rows, key=lambda r: r["val_loss"])["epoch"] if rows else None

    @property
    def seconds(self) -> float:
        return float(sum(r["seconds"] for r in self))


def set_test_flip(model: nn.Module, on: bool = True) -> nn.Module:
    """Make :func:`predict_logits` (validation, test, latency) average each image's prediction with its mirror
    image's: test-time augmentation for data whose labels survive a left-right flip (clothing does)."""
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
def predict_logits(model: nn.Module, X: torch.Tensor, *, batch_size: int = 1024, device="auto") -> torch.Tensor:
    """Logits for ``X`` in evaluation mode, batch by batch, returned on the CPU (with :func:`set_test_flip`, the
    average over each image and its mirror image)."""
    device = resolve_device(device)
    was_training = model.training
    model.eval()
    out = [predict_batch(model, X[i:i + batch_size].to(device, non_blocking=True)).float().cpu()
           for i in range(0, len(X), batch_size)]
    model.train(was_training)
    return torch.cat(out) if out else torch.empty(0)


def loss_and_accuracy(model, data: ImageSet, *, batch_size: int = 1024, device="auto") -> tuple[float, float]:
    logits = predict_logits(model, data.X, batch_size=batch_size, device=device)
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
        return xb, yb

    def loss(self, out, target):
        return self.loss_fn(out, target)

    def correct(self, out, target):
        return (out.argmax(1) == target).sum()

    def evaluate(self, model, data: ImageSet, *, device) -> tuple[float, float | None]:
        return loss_and_accuracy(model, data, device=device)


def save_checkpoint(path: Path, **state) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    tmp.replace(path)  # atomic, so an interrupted save never leaves a half-written checkpoint
    return path


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be read; the message names the file and what to do."""


def load_checkpoint(path: str | Path, map_location="cpu") -> dict:
    """Load a checkpoint written by :func:`fit` (tensors and plain data only)."""
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # truncated, overwritten, not a checkpoint: torch raises many kinds
        # torch's own message is long and suggests weights_only=False, which is not the way out here
        reason = f"{type(exc).__name__}: {str(exc).splitlines()[0][:80] if str(exc) else 'unreadable'}"
        raise CheckpointError(f"checkpoint {path} cannot be read ({reason}); delete it (or its folder) and run again, "
                              "or run without --resume to start afresh") from None


def fit(model: nn.Module, train: ImageSet, val: ImageSet | None = None, *, num_epochs: int, batch_size: int = 64,
        optimizer: str = "adam", lr: float = 1e-3, weight_decay: float = 0.0, momentum: float = 0.9,
        nesterov: bool = False, l1: float = 0.0, schedule: str = "none", label_smoothing: float = 0.0,
        augment: Augment | None = None, patience: int | None = None, checkpoint_dir: str | Path | None = None,
        checkpoint_every: int = 0, resume_from: str | Path | None = None, resume: bool = False,
        restore_best: bool = False,
        seed: int = 0, device="auto", progress: bool | None = None, desc: str = "training",
        task=None, precision: str = "fp32") -> History:
    """Train ``model`` on ``train`` and return the per-epoch history.

    Parameters
    ----------
    l1 : float
        Weight of the L1 penalty on weights added to the loss.
    schedule : {"none", "step", "cosine", "onecycle"}
        Learning-rate schedule, stepped every batch.
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

    task : optional
        What is learned (default :class:`Classification`, with ``label_smoothing``); the autoencoder passes
        its denoising task, so every section trains with this one loop.

    precision : {"fp32", "auto", "bf16"}
        ``auto`` trains convolutional networks in bfloat16 mixed precision where the hardware has it
        (:func:`autocast_dtype`); ``history.precision`` says what was used.

    A non-finite loss stops training; ``history.stop_reason`` says where.
    """
    if num_epochs < 1 or batch_size < 1:
        raise ValueError(f"num_epochs={num_epochs!r}, batch_size={batch_size!r}: both must be >= 1")
    device = resolve_device(device)
    model.to(device)
    saved_threads = torch.get_num_threads()
    flops = step_flops(model, train.X[:1].to(device), batch_size)
    torch.set_num_threads(training_threads(flops, device=device))
    amp = autocast_dtype(precision, device, flops)
    try:
        return _fit(model, train, val, num_epochs=num_epochs, batch_size=batch_size, optimizer=optimizer, lr=lr,
                    weight_decay=weight_decay, momentum=momentum, nesterov=nesterov, l1=l1, schedule=schedule,
                    label_smoothing=label_smoothing, augment=augment, patience=patience,
                    checkpoint_dir=checkpoint_dir, checkpoint_every=checkpoint_every, resume_from=resume_from,
                    resume=resume, restore_best=restore_best, seed=seed, device=device, progress=progress,
                    desc=desc, task=task, amp=amp)
    finally:
        torch.set_num_threads(saved_threads)


def _fit(model, train, val, *, num_epochs, batch_size, optimizer, lr, weight_decay, momentum, nesterov, l1, schedule,
         label_smoothing, augment, patience, checkpoint_dir, checkpoint_every, resume_from, resume, restore_best, seed,
         device, progress, desc, task, amp) -> History:
    augment = augment or Augment()
    seed_everything(seed)
    opt = make_optimizer(optimizer, [p for p in model.parameters() if p.requires_grad], lr=lr,
                         weight_decay=weight_decay, momentum=momentum, nesterov=nesterov)
    steps_per_epoch = math.ceil(len(train) / batch_size)
    sched = make_scheduler(schedule, opt, total_steps=num_epochs * steps_per_epoch, steps_per_epoch=steps_per_epoch,
                           lr=lr)
    task = task or Classification(label_smoothing)
    gen = torch.Generator().manual_seed(seed)  # shuffling and augmentation, saved in checkpoints
    # augmentation draws on the device holding the batch (CUDA or MPS need a generator of their own)
    aug_gen = torch.Generator(device=device).manual_seed(seed + 1) if device.type != "cpu" else gen
    history, best_loss, start = History(), math.inf, 1
    history.precision, history.threads = "bf16 mixed" if amp is not None else "fp32", torch.get_num_threads()
    if resume and resume_from is None and checkpoint_dir is not None and (Path(checkpoint_dir) / "last.pt").exists():
        resume_from = Path(checkpoint_dir) / "last.pt"
    if resume_from is not None:
        ckpt = load_checkpoint(resume_from)
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        if sched is not None and ckpt.get("scheduler"):
            sched.load_state_dict(ckpt["scheduler"])
        history.extend(ckpt["history"])
        history.stop_reason = ckpt.get("stop_reason", "completed")
        last = history[-1]["epoch"] if history else 0
        if patience is not None and history.best_epoch is not None and last - history.best_epoch >= patience:
            history.stop_reason = f"early stopping at epoch {last}: no lower validation loss for {patience} epochs"
        if history.stop_reason != "completed":
            ckpt["epoch"] = num_epochs  # it had stopped already: resuming must not train on past its stop
        best_loss, start = ckpt["best_val_loss"], ckpt["epoch"] + 1
        gen.set_state(ckpt["rng_data"])
        torch.set_rng_state(ckpt["rng_torch"])
        # on CUDA, augmentation draws from its own generator and dropout from the CUDA generator
        if aug_gen is not gen and ckpt.get("rng_aug") is not None:
            aug_gen.set_state(ckpt["rng_aug"])
        if device.type == "cuda" and ckpt.get("rng_cuda") is not None:
            torch.cuda.set_rng_state(ckpt["rng_cuda"], device)
    # Keeping the whole set on the accelerator avoids a host-to-device copy per batch.
    X_train, y_train = train.X.to(device), train.y.to(device)
    ckpt_dir = Path(checkpoint_dir) if checkpoint_dir else None
    best_state = None
    # On the CPU a per-batch check costs nothing and names the batch; an accelerator is checked once per epoch.
    check_each_batch = device.type == "cpu"
    # float32 runs enter no autocast context at all: nothing added to their hot path
    autocast = (lambda: torch.autocast(device.type, dtype=amp)) if amp is not None else contextlib.nullcontext
    acc_dtype = torch.float32 if device.type == "mps" else torch.float64  # MPS has no float64
    show = progress_enabled() if progress is None else progress
    from tqdm.auto import tqdm

    bar = tqdm(range(start, num_epochs + 1), desc=desc, disable=not show, leave=False, unit="epoch")
    for epoch in bar:
        model.train()
        t0 = time.perf_counter()
        # Running sums stay on the device: reading them (.item()) waits for the accelerator, so it happens only
        # when a progress line is due and at the end of the epoch, not on every batch.
        total_loss = torch.zeros((), dtype=acc_dtype, device=device)
        correct, seen, failed = torch.zeros((), dtype=torch.long, device=device), 0, None
        for step, idx in enumerate(batch_indices(len(train), batch_size=batch_size, shuffle=True, generator=gen)):
            idx = idx.to(device)
            xb, yb = task.batch(augment(X_train[idx], aug_gen), y_train[idx], aug_gen)
            with autocast():
                logits = model(xb)
                loss = task.loss(logits, yb)
            if l1:
                loss = loss + l1 * l1_penalty(model)
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
                emit("batch", desc=desc, epoch=epoch, epochs=num_epochs, step=step + 1, steps=steps_per_epoch,
                     loss=total_loss.item() / seen, acc=None if correct is None else correct.item() / seen)
        if not failed and not math.isfinite(total_loss.item()):
            failed = f"non-finite loss in epoch {epoch}"
        if failed:
            history.stop_reason = failed
            break
        total_loss, correct = total_loss.item(), None if correct is None else correct.item()
        row = {"epoch": epoch, "train_loss": total_loss / seen, "train_acc": None if correct is None else correct / seen,
               "val_loss": None, "val_acc": None, "lr": opt.param_groups[0]["lr"]}
        if val is not None and len(val):
            row["val_loss"], row["val_acc"] = task.evaluate(model, val, device=device)
        row["seconds"] = time.perf_counter() - t0
        history.append(row)
        bar.set_postfix({k: f"{row[k]:.3f}" for k in ("train_loss", "train_acc", "val_loss", "val_acc")
                         if row[k] is not None})
        improved = row["val_loss"] is not None and row["val_loss"] < best_loss
        if improved:
            best_loss = row["val_loss"]
            if restore_best:
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        if ckpt_dir is not None:
            state = {"model": model.state_dict(), "optimizer": opt.state_dict(),
                     "scheduler": sched.state_dict() if sched is not None else {}, "epoch": epoch,
                     "history": list(history), "best_val_loss": best_loss, "rng_data": gen.get_state(),
                     "stop_reason": history.stop_reason,
                     "rng_torch": torch.get_rng_state(),
                     "rng_aug": aug_gen.get_state() if aug_gen is not gen else None,
                     "rng_cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None}
            save_checkpoint(ckpt_dir / "last.pt", **state)
            if improved:
                save_checkpoint(ckpt_dir / "best.pt", model=model.state_dict(), epoch=epoch, val_loss=best_loss)
            if checkpoint_every and epoch % checkpoint_every == 0:
                save_checkpoint(ckpt_dir / f"epoch_{epoch:03d}.pt", **state)
        if patience is not None and history.best_epoch is not None and epoch - history.best_epoch >= patience:
            history.stop_reason = f"early stopping at epoch {epoch}: no lower validation loss for {patience} epochs"
            break
    bar.close()
    if restore_best and best_state is not None:
        model.load_state_dict(best_state)
    return history


def checkpointing(s, sub: str | None = None) -> dict:
    """The checkpoint arguments of :func:`fit` from a run's settings (set by :func:`helpers.engine.experiment.train_run`):
    ``checkpoint_dir`` (``sub`` names a second training of the same run, e.g. the autoencoder's classifier),
    ``resume`` and ``checkpoint_every``. Empty settings give no checkpoints."""
    folder = s.get("checkpoint_dir")
    return {"checkpoint_dir": (Path(folder) / sub if sub else Path(folder)) if folder else None,
            "resume": bool(s.get("resume")), "checkpoint_every": s.get("checkpoint_every") or 0}
