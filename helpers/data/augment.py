"""Augmentation of whole batches of image tensors (N, C, H, W) in [0, 1].

Every transform draws one random value per image from an explicit ``torch.Generator``,
so a seeded run is repeatable and no per-sample Python loop sits on the training path.
All transforms are off by default.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F


def _uniform(n: int, low: float, high: float, generator, device) -> torch.Tensor:
    return torch.rand(n, generator=generator, device=device) * (high - low) + low


@dataclass(frozen=True)
class Augment:
    """Batch augmentation settings; call with ``(X, generator)`` to transform a batch.

    Parameters
    ----------
    rotation : float
        Maximum rotation in degrees (uniform in [-rotation, rotation]).
    noise_std : float
        Standard deviation of additive Gaussian noise (pixel units, images in [0, 1]).
    hflip : bool
        Flip half of the images left-right.
    brightness, contrast : float
        Jitter strength: brightness adds U(-b, b); contrast scales around the image mean by U(1-c, 1+c).
    crop_padding : int
        Random crop after zero padding by this many pixels (a shift of up to that many pixels).
    erasing : float
        Probability of erasing one random rectangle (2-20% of the area) per image.
    """

    rotation: float = 0.0
    noise_std: float = 0.0
    hflip: bool = False
    brightness: float = 0.0
    contrast: float = 0.0
    crop_padding: int = 0
    erasing: float = 0.0

    def __post_init__(self):
        for name in ("rotation", "noise_std", "brightness", "contrast", "crop_padding"):
            if getattr(self, name) < 0:
                raise ValueError(f"augment {name}={getattr(self, name)!r}: must be >= 0")
        if not 0 <= self.erasing <= 1:
            raise ValueError(f"augment erasing={self.erasing!r}: a probability, allowed 0..1")
        if not 0 <= self.contrast < 1:
            raise ValueError(f"augment contrast={self.contrast!r}: allowed 0 <= contrast < 1")

    @property
    def active(self) -> bool:
        """Whether any transform is on."""
        return any(bool(v) for v in asdict(self).values())

    def describe(self) -> str:
        """The transforms that are on, as ``name=value, ...`` (``none`` when none is)."""
        on = {k: v for k, v in asdict(self).items() if v}
        return ", ".join(f"{k}={v}" for k, v in on.items()) or "none"

    def __call__(self, X: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        if not self.active:
            return X
        if self.hflip:
            X = random_hflip(X, generator=generator)
        if self.rotation or self.crop_padding:
            X = random_affine(X, degrees=self.rotation, shift=self.crop_padding, generator=generator)
        if self.brightness or self.contrast:
            X = color_jitter(X, brightness=self.brightness, contrast=self.contrast, generator=generator)
        if self.noise_std:
            X = gaussian_noise(X, std=self.noise_std, generator=generator)
        if self.erasing:
            X = random_erasing(X, p=self.erasing, generator=generator)
        return X


def random_hflip(X: torch.Tensor, *, generator=None) -> torch.Tensor:
    """``X`` with each image flipped left-right with probability 1/2."""
    flip = torch.rand(len(X), generator=generator, device=X.device) < 0.5
    return torch.where(flip[:, None, None, None], X.flip(-1), X)


def random_affine(X: torch.Tensor, *, degrees: float = 0.0, shift: int = 0, generator=None) -> torch.Tensor:
    """Rotate by U(-degrees, degrees) and shift by up to ``shift`` whole pixels, in one resampling.

    A shift with zero fill is what "random crop with padding" does, without padding the batch.
    """
    n, _, h, w = X.shape
    angle = _uniform(n, -degrees, degrees, generator, X.device) * (math.pi / 180)
    cos, sin = torch.cos(angle), torch.sin(angle)
    # integer pixel shifts, expressed in the [-1, 1] coordinates affine_grid uses
    tx = torch.randint(-shift, shift + 1, (n,), generator=generator, device=X.device) * (2.0 / w)
    ty = torch.randint(-shift, shift + 1, (n,), generator=generator, device=X.device) * (2.0 / h)
    theta = torch.stack([torch.stack([cos, -sin, tx], 1), torch.stack([sin, cos, ty], 1)], 1)
    grid = F.affine_grid(theta.to(X.dtype), list(X.shape), align_corners=False)
    mode = "bilinear" if degrees else "nearest"
    return F.grid_sample(X, grid, mode=mode, padding_mode="zeros", align_corners=False)


def color_jitter(X: torch.Tensor, *, brightness: float = 0.0, contrast: float = 0.0, generator=None) -> torch.Tensor:
    """``X`` with each image's contrast scaled by U(1-contrast, 1+contrast) around its mean, then U(-brightness,
    brightness) added, clipped to [0, 1]."""
    n = len(X)
    c = _uniform(n, 1 - contrast, 1 + contrast, generator, X.device).view(n, 1, 1, 1)
    b = _uniform(n, -brightness, brightness, generator, X.device).view(n, 1, 1, 1)
    mean = X.mean(dim=(1, 2, 3), keepdim=True)
    return ((X - mean) * c + mean + b).clamp_(0, 1)


def gaussian_noise(X: torch.Tensor, *, std: float, generator=None) -> torch.Tensor:
    """``X`` plus Gaussian noise of standard deviation ``std``, clipped to [0, 1]."""
    noise = torch.randn(X.shape, generator=generator, device=X.device, dtype=X.dtype)
    return (X + std * noise).clamp_(0, 1)


def random_erasing(X: torch.Tensor, *, p: float = 0.5, area=(0.02, 0.2), generator=None) -> torch.Tensor:
    """Zero one random rectangle in a fraction ``p`` of the images (masks built by broadcasting)."""
    n, _, h, w = X.shape
    dev = X.device
    frac = _uniform(n, area[0], area[1], generator, dev)
    aspect = torch.exp(_uniform(n, math.log(0.3), math.log(3.3), generator, dev))
    eh = (torch.sqrt(frac * h * w * aspect)).clamp(1, h).long()
    ew = (torch.sqrt(frac * h * w / aspect)).clamp(1, w).long()
    top = (torch.rand(n, generator=generator, device=dev) * (h - eh + 1)).long()
    left = (torch.rand(n, generator=generator, device=dev) * (w - ew + 1)).long()
    rows = torch.arange(h, device=dev).view(1, h, 1)
    cols = torch.arange(w, device=dev).view(1, 1, w)
    inside = ((rows >= top.view(n, 1, 1)) & (rows < (top + eh).view(n, 1, 1))
              & (cols >= left.view(n, 1, 1)) & (cols < (left + ew).view(n, 1, 1)))
    chosen = torch.rand(n, generator=generator, device=dev) < p
    mask = (inside & chosen.view(n, 1, 1)).unsqueeze(1)
    return X.masked_fill(mask, 0.0)
