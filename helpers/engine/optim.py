"""Optimizers, learning-rate schedules and the L1 penalty that :func:`helpers.engine.training.fit` trains with."""

from __future__ import annotations

import torch
from torch import nn

OPTIMIZERS = ("sgd", "adam", "adamw", "rmsprop")
SCHEDULES = ("none", "step", "cosine", "onecycle")


def resolve_lr(lr: float | None, optimizer: str, defaults: dict[str, float]) -> float:
    """``lr`` itself, or ``defaults[optimizer]`` (a section's peak learning rate per optimizer) when it is None."""
    if lr is not None:
        return lr
    return defaults.get(optimizer, defaults["sgd"])


def make_optimizer(name: str, params, *, lr: float, weight_decay: float = 0.0, momentum: float = 0.9,
                   nesterov: bool = False) -> torch.optim.Optimizer:
    """A new optimizer ``name`` (any of :data:`OPTIMIZERS`, any case) of ``params``; refuses an unknown name or
    ``lr <= 0``. ``momentum`` and ``nesterov`` apply to SGD only."""
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
