"""Checkpoints of :func:`helpers.engine.training.fit`: what one holds, writing it atomically, reading it back.

A checkpoint is a dict of tensors and plain data (``torch.load(..., weights_only=True)`` reads it): the model,
optimizer and scheduler states, the history so far, the best validation loss and every random generator's
state, so that a run resumed after its epoch k goes on exactly as the uninterrupted run would.
"""

from __future__ import annotations

from pathlib import Path

import torch


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be read; the message names the file and what to do."""


def save_checkpoint(path: Path, **state) -> Path:
    """Write ``state`` to ``path`` (its folder made if needed) and return ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    tmp.replace(path)  # atomic, so an interrupted save never leaves a half-written checkpoint
    return path


def load_checkpoint(path: str | Path, map_location="cpu") -> dict:
    """The dict saved in a checkpoint written by :func:`helpers.engine.training.fit` (tensors and plain data only).

    Raises :class:`CheckpointError` for a file that cannot be read.
    """
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # truncated, overwritten, not a checkpoint: torch raises many kinds
        # torch's own message is long and suggests weights_only=False, which is not the way out here
        reason = f"{type(exc).__name__}: {str(exc).splitlines()[0][:80] if str(exc) else 'unreadable'}"
        raise CheckpointError(f"checkpoint {path} cannot be read ({reason}); delete it (or its folder) and run again, "
                              "or run without --resume to start afresh") from None


def save_epoch(folder: Path, *, model, optimizer, scheduler, history, epoch: int, best_loss: float, improved: bool,
               every: int, generators: tuple, device: torch.device) -> None:
    """Write the checkpoints of a finished epoch into ``folder``: ``last.pt`` (the whole training state),
    ``best.pt`` (weights only) when the validation loss ``improved``, ``epoch_NNN.pt`` every ``every`` epochs.

    ``generators`` is ``(data, augmentation)``; the second is saved only when it is a generator of its own.
    """
    gen, aug_gen = generators
    state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
             "scheduler": scheduler.state_dict() if scheduler is not None else {}, "epoch": epoch,
             "history": list(history), "best_val_loss": best_loss, "rng_data": gen.get_state(),
             "stop_reason": history.stop_reason,
             "rng_torch": torch.get_rng_state(),
             "rng_aug": aug_gen.get_state() if aug_gen is not gen else None,
             "rng_cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None}
    save_checkpoint(folder / "last.pt", **state)
    if improved:
        save_checkpoint(folder / "best.pt", model=model.state_dict(), epoch=epoch, val_loss=best_loss)
    if every and epoch % every == 0:
        save_checkpoint(folder / f"epoch_{epoch:03d}.pt", **state)


def restore_state(ckpt: dict, *, model, optimizer, scheduler, history, generators: tuple,
                  device: torch.device) -> None:
    """Put a checkpoint of :func:`save_epoch` back: weights, optimizer and scheduler states, the history (and its
    ``stop_reason``) and the random generators (``(data, augmentation)``, torch's and CUDA's). Returns None."""
    gen, aug_gen = generators
    model.load_state_dict(ckpt["model"])
    optimizer.load_state_dict(ckpt["optimizer"])
    if scheduler is not None and ckpt.get("scheduler"):
        scheduler.load_state_dict(ckpt["scheduler"])
    history.extend(ckpt["history"])
    history.stop_reason = ckpt.get("stop_reason", "completed")
    gen.set_state(ckpt["rng_data"])
    torch.set_rng_state(ckpt["rng_torch"])
    # on CUDA, augmentation draws from its own generator and dropout from the CUDA generator
    if aug_gen is not gen and ckpt.get("rng_aug") is not None:
        aug_gen.set_state(ckpt["rng_aug"])
    if device.type == "cuda" and ckpt.get("rng_cuda") is not None:
        torch.cuda.set_rng_state(ckpt["rng_cuda"], device)
