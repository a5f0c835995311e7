"""CNN architectures as data: a list of conv blocks and a dense head, checked before anything trains.

A spec looks like (YAML)::

    blocks:
      - {channels: [8], kernel: 5, padding: 2, pool: avg, norm: batch_norm, dropout: 0.0}
      - {channels: [12], kernel: 4, padding: 1, pool: avg, norm: batch_norm}
    dense: [128, 32]
    dense_dropout: 0.0

``channels`` is one number or a list (one convolution per entry, in order); ``pool`` is ``max``, ``avg`` or
``none`` with a ``pool_size`` window and ``pool_stride`` (default: the window); ``norm`` is ``batch_norm`` or
``none``; ``dropout`` drops whole channels after the block. Named presets (:data:`PRESETS`) are specs too.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from helpers.models.networks import ACTIVATIONS, POOLINGS, Standardize

BLOCK_KEYS = ("channels", "kernel", "padding", "pool", "pool_size", "pool_stride", "norm", "dropout")
SPEC_KEYS = ("blocks", "dense", "dense_dropout", "activation")
BLOCK_POOLS = ("max", "avg", "none")
BLOCK_NORMS = ("batch_norm", "none")
BLOCK_DEFAULTS = {"kernel": 3, "padding": None, "pool": "max", "pool_size": 2, "pool_stride": None,
                  "norm": "batch_norm", "dropout": 0.0}

PRESETS = {
    # The course exercise's small network: valid 5x5 and 4x4 convolutions (8 and 12 channels), each followed by
    # an overlapping 4x4 pooling window with stride 2, then fully connected layers of 128 and 32 units.
    "course": {"blocks": [{"channels": [8], "kernel": 5, "padding": 0, "pool": "max", "pool_size": 4,
                           "pool_stride": 2, "norm": "batch_norm", "dropout": 0.0},
                          {"channels": [12], "kernel": 4, "padding": 0, "pool": "max", "pool_size": 4,
                           "pool_stride": 2, "norm": "batch_norm", "dropout": 0.0}],
               "dense": [128, 32], "dense_dropout": 0.0, "activation": "relu"},
    # The network of the headline number: three blocks of two 3x3 "same" convolutions (32, 64, 128 channels),
    # 2x2 max pooling after each (28 -> 14 -> 7 -> 3), channel dropout, one hidden layer of 128. On the
    # 51,000/9,000 split, 12 epochs with flips: 94.4% validation accuracy (94.6% with test-time flips), where
    # "compact" reached 93.4-93.5% after 10, 14 or (with shifts and erasing) 30 epochs; it costs twice the
    # compact network's operations.
    "strong": {"blocks": [{"channels": [32, 32], "kernel": 3, "padding": 1, "pool": "max", "pool_size": 2,
                           "norm": "batch_norm", "dropout": 0.1},
                          {"channels": [64, 64], "kernel": 3, "padding": 1, "pool": "max", "pool_size": 2,
                           "norm": "batch_norm", "dropout": 0.1},
                          {"channels": [128, 128], "kernel": 3, "padding": 1, "pool": "max", "pool_size": 2,
                           "norm": "batch_norm", "dropout": 0.1}],
               "dense": [128], "dense_dropout": 0.3, "activation": "relu"},
    # The strong network of earlier versions: one convolution in each of the first two blocks (32, 64, then two
    # of 128), one hidden layer of 64; half the operations.
    "compact": {"blocks": [{"channels": [32], "kernel": 3, "padding": 1, "pool": "max", "pool_size": 2,
                            "norm": "batch_norm", "dropout": 0.1},
                           {"channels": [64], "kernel": 3, "padding": 1, "pool": "max", "pool_size": 2,
                            "norm": "batch_norm", "dropout": 0.1},
                           {"channels": [128, 128], "kernel": 3, "padding": 1, "pool": "max", "pool_size": 2,
                            "norm": "batch_norm", "dropout": 0.1}],
                "dense": [64], "dense_dropout": 0.3, "activation": "relu"},
}


class ArchitectureError(ValueError):
    """A spec that cannot be built; the message names the block and the key."""


def _int(where: str, key: str, value, *, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ArchitectureError(f"{where}: {key}={value!r} is not allowed; allowed: an integer >= {low}")
    return value


def _rate(where: str, key: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
        raise ArchitectureError(f"{where}: {key}={value!r} is not allowed; allowed: a number in [0, 1)")
    return float(value)


def check_architecture(spec, *, image_size: int = 28, name: str = "architecture") -> dict:
    """The spec (or a preset's name) completed with defaults, as a dict; refuses a bad one naming the block and key.

    The feature-map size is followed block by block, so a kernel or pooling window larger than its input
    is caught here rather than as a shape error in the middle of training.
    """
    if isinstance(spec, str):
        if spec not in PRESETS:
            raise ArchitectureError(f"{name}={spec!r}: unknown preset; allowed: {', '.join(PRESETS)}, or a mapping "
                                    "with blocks and dense")
        spec = PRESETS[spec]
    if not isinstance(spec, dict):
        raise ArchitectureError(f"{name}={spec!r}: expected a preset name ({', '.join(PRESETS)}) or a mapping with "
                                f"keys {', '.join(SPEC_KEYS)}")
    unknown = [k for k in spec if k not in SPEC_KEYS]
    if unknown:
        raise ArchitectureError(f"{name}: unknown key {unknown[0]!r}; allowed: {', '.join(SPEC_KEYS)}")
    blocks = spec.get("blocks")
    if not isinstance(blocks, list) or not blocks:
        raise ArchitectureError(f"{name}: blocks={blocks!r} is not allowed; allowed: a non-empty list of blocks")
    activation = spec.get("activation", "relu")
    if activation not in ACTIVATIONS:
        raise ArchitectureError(f"{name}: activation={activation!r} is not allowed; allowed: {', '.join(ACTIVATIONS)}")
    size, out_blocks = image_size, []
    for i, block in enumerate(blocks, 1):
        checked, size = _check_block(block, size, where=f"{name} block {i}")
        out_blocks.append(checked)
    dense = spec.get("dense", [])
    if isinstance(dense, int) and not isinstance(dense, bool):
        dense = [dense]
    if not isinstance(dense, list):
        raise ArchitectureError(f"{name}: dense={dense!r} is not allowed; allowed: a list of positive integers")
    dense = [_int(name, "dense", d, low=1) for d in dense]
    return {"blocks": out_blocks, "dense": dense, "dense_dropout": _rate(name, "dense_dropout",
                                                                          spec.get("dense_dropout", 0.0)),
            "activation": activation}


def _check_block(block, size: int, *, where: str) -> tuple[dict, int]:
    """One block of a spec completed with defaults, and the feature-map size after it (from ``size`` before)."""
    if not isinstance(block, dict):
        raise ArchitectureError(f"{where}: {block!r} is not a mapping of {', '.join(BLOCK_KEYS)}")
    unknown = [k for k in block if k not in BLOCK_KEYS]
    if unknown:
        raise ArchitectureError(f"{where}: unknown key {unknown[0]!r}; allowed: {', '.join(BLOCK_KEYS)}")
    b = {**BLOCK_DEFAULTS, **block}
    if "channels" not in block:
        raise ArchitectureError(f"{where}: 'channels' is required (a positive integer or a list of them)")
    channels = b["channels"] if isinstance(b["channels"], list) else [b["channels"]]
    if not channels:
        raise ArchitectureError(f"{where}: channels=[] is not allowed; allowed: positive integers")
    b["channels"] = [_int(where, "channels", c, low=1) for c in channels]
    b["kernel"] = _int(where, "kernel", b["kernel"], low=1)
    b["padding"] = b["kernel"] // 2 if b["padding"] is None else _int(where, "padding", b["padding"], low=0)
    for _ in b["channels"]:
        if b["kernel"] > size + 2 * b["padding"]:
            raise ArchitectureError(f"{where}: kernel={b['kernel']} is larger than its {size}x{size} input "
                                    f"(padding {b['padding']}); use a smaller kernel, more padding or less pooling")
        size = size + 2 * b["padding"] - b["kernel"] + 1
    if b["pool"] not in BLOCK_POOLS:
        raise ArchitectureError(f"{where}: pool={b['pool']!r} is not allowed; allowed: {', '.join(BLOCK_POOLS)}")
    if b["norm"] not in BLOCK_NORMS:
        raise ArchitectureError(f"{where}: norm={b['norm']!r} is not allowed; allowed: {', '.join(BLOCK_NORMS)}")
    b["dropout"] = _rate(where, "dropout", b["dropout"])
    if b["pool"] != "none":
        b["pool_size"] = _int(where, "pool_size", b["pool_size"], low=1)
        b["pool_stride"] = b["pool_size"] if b["pool_stride"] is None else _int(where, "pool_stride",
                                                                                b["pool_stride"], low=1)
        if b["pool_size"] > size:
            raise ArchitectureError(f"{where}: pool_size={b['pool_size']} is larger than its {size}x{size} input")
        size = (size - b["pool_size"]) // b["pool_stride"] + 1
    return b, size


def with_overrides(spec, *, pool=None, norm=None, conv_dropout=None, dense=None, dense_dropout=None) -> dict:
    """``spec`` with the grid's shorthands applied to every block: ``pool`` (max/avg/none), ``norm``
    (``batch_norm``, ``none``, or ``dropout`` = no batch norm and ``conv_dropout`` in every block and the
    head), ``conv_dropout``, and the head's ``dense`` sizes and ``dense_dropout``. None leaves a value as is."""
    spec = copy.deepcopy(PRESETS[spec] if isinstance(spec, str) else spec)
    for b in spec["blocks"]:
        if pool is not None:
            b["pool"] = pool
        if norm is not None:
            b["norm"] = "batch_norm" if norm == "batch_norm" else "none"
        if conv_dropout is not None:
            b["dropout"] = conv_dropout
    if dense is not None:
        spec["dense"] = list(dense) if isinstance(dense, (list, tuple)) else [dense]
    if dense_dropout is not None:
        spec["dense_dropout"] = dense_dropout
    return spec


def build_from_spec(spec, *, num_classes: int = 10, in_channels: int = 1, image_size: int = 28,
                    standardize: bool = True) -> nn.Sequential:
    """The network of a spec: one ``nn.Sequential`` per block, then Flatten and the dense head (logits out)."""
    spec = check_architecture(spec, image_size=image_size)
    act = ACTIVATIONS[spec["activation"]]
    layers: list[nn.Module] = [Standardize()] if standardize else []
    channels = in_channels
    for b in spec["blocks"]:
        block: list[nn.Module] = []
        for out in b["channels"]:
            block.append(nn.Conv2d(channels, out, b["kernel"], padding=b["padding"], bias=b["norm"] != "batch_norm"))
            if b["norm"] == "batch_norm":
                block.append(nn.BatchNorm2d(out))
            block.append(act())
            channels = out
        if b["pool"] != "none":
            block.append(POOLINGS[b["pool"]](b["pool_size"], stride=b["pool_stride"]))
        if b["dropout"]:
            block.append(nn.Dropout2d(b["dropout"]))
        layers.append(nn.Sequential(*block))
    with torch.no_grad():
        probe = nn.Sequential(*layers).eval()
        width = probe(torch.zeros(1, in_channels, image_size, image_size)).numel()
    layers.append(nn.Flatten())
    for size in spec["dense"]:
        layers += [nn.Linear(width, size), act()]
        if spec["dense_dropout"]:
            layers.append(nn.Dropout(spec["dense_dropout"]))
        width = size
    layers.append(nn.Linear(width, num_classes))
    # channels-last: oneDNN's CPU convolutions run about 1.5x faster in it at these sizes
    return nn.Sequential(*layers).to(memory_format=torch.channels_last)
