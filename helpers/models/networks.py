"""Model builders (MLP, CNN), weight initialisation and summaries."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torchinfo import summary

from helpers.data.fashion import to_patches

ACTIVATIONS = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "leaky_relu": nn.LeakyReLU,
    "none": nn.Identity,
}
POOLINGS = {"max": nn.MaxPool2d, "avg": nn.AvgPool2d}
INITS = ("default", "xavier", "he", "normal")
# Fashion-MNIST training-set pixel mean and std (images in [0, 1]); standardising inside the
# model keeps checkpoints self-contained and the data pipeline free of per-sample transforms.
FASHION_MEAN, FASHION_STD = 0.2860, 0.3530


def _choice(name: str, value, allowed) -> None:
    if value not in allowed:
        raise ValueError(f"{name}={value!r}: unknown; allowed: {', '.join(map(str, allowed))}")


class Standardize(nn.Module):
    """(x - mean) / std with fixed buffers."""

    def __init__(self, mean: float = FASHION_MEAN, std: float = FASHION_STD):
        super().__init__()
        self.register_buffer("mean", torch.tensor(float(mean)))
        self.register_buffer("std", torch.tensor(float(std)))

    def forward(self, x):
        return (x - self.mean) / self.std


class Patchify(nn.Module):
    """Cut images into non-overlapping p x p patches, flattened patch by patch."""

    def __init__(self, patch_size: int):
        super().__init__()
        self.patch_size = patch_size

    def forward(self, x):
        return to_patches(x, self.patch_size).flatten(1)


class PatchEmbed(nn.Module):
    """One linear layer shared by every p x p patch (then the activation), the patch codes concatenated.

    Unlike a reordering of the pixels, which an MLP cannot tell from the original order, this changes what
    the next layers see: each patch is summarised by the same ``features`` learned detectors.
    """

    def __init__(self, patch_size: int, features: int, *, channels: int = 1, activation: str = "relu"):
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Linear(channels * patch_size * patch_size, features)
        self.act = ACTIVATIONS[activation]()

    def forward(self, x):
        return self.act(self.proj(to_patches(x, self.patch_size))).flatten(1)


def build_mlp(*, in_features: int = 784, hidden_sizes: Sequence[int] = (256, 128, 64), num_classes: int = 10,
              activation: str = "tanh", batch_norm: bool = False, dropout: float = 0.0,
              patch_size: int | None = None, patch_features: int = 16, image_size: int = 28,
              standardize: bool = True) -> nn.Sequential:
    """Fully connected classifier: [Linear -> BatchNorm? -> activation -> Dropout?] per hidden layer.

    With ``patch_size`` the image is first cut into p x p patches, each mapped by one shared linear layer to
    ``patch_features`` values (:class:`PatchEmbed`). The output layer gives logits; softmax lives in the loss
    (CrossEntropyLoss), not the model.
    """
    _choice("activation", activation, ACTIVATIONS)
    if not 0 <= dropout < 1:
        raise ValueError(f"dropout={dropout!r}: allowed 0 <= dropout < 1")
    layers: list[nn.Module] = [Standardize()] if standardize else []
    width = in_features
    if patch_size:
        channels = in_features // (image_size * image_size) or 1
        layers.append(PatchEmbed(patch_size, patch_features, channels=channels, activation=activation))
        width = (image_size // patch_size) ** 2 * patch_features
    else:
        layers.append(nn.Flatten())
    for size in hidden_sizes:
        layers.append(nn.Linear(width, size))
        if batch_norm:
            layers.append(nn.BatchNorm1d(size))
        layers.append(ACTIVATIONS[activation]())
        if dropout:
            layers.append(nn.Dropout(dropout))
        width = size
    layers.append(nn.Linear(width, num_classes))
    return nn.Sequential(*layers)


def conv_block(in_channels: int, out_channels: int, *, kernel: int = 3, padding: int | None = None, convs: int = 1,
               pool: str | None = "max", pool_size: int = 2, pool_stride: int | None = None,
               batch_norm: bool = True, dropout: float = 0.0, activation: str = "relu") -> nn.Sequential:
    """[Conv -> BatchNorm? -> activation] x convs -> Pool? -> Dropout?"""
    _choice("activation", activation, ACTIVATIONS)
    if pool is not None:
        _choice("pool", pool, POOLINGS)
    padding = kernel // 2 if padding is None else padding
    layers: list[nn.Module] = []
    for i in range(convs):
        layers.append(nn.Conv2d(in_channels if i == 0 else out_channels, out_channels, kernel, padding=padding,
                                bias=not batch_norm))
        if batch_norm:
            layers.append(nn.BatchNorm2d(out_channels))
        layers.append(ACTIVATIONS[activation]())
    if pool is not None:
        layers.append(POOLINGS[pool](pool_size, stride=pool_stride or pool_size))
    if dropout:
        layers.append(nn.Dropout2d(dropout))
    return nn.Sequential(*layers)


def build_cnn(*, blocks: Sequence[dict], in_channels: int = 1, image_size: int = 28, num_classes: int = 10,
              hidden_sizes: Sequence[int] = (128,), head_dropout: float = 0.0, activation: str = "relu",
              standardize: bool = True, **block_defaults) -> nn.Sequential:
    """Convolutional classifier: conv blocks, then a fully connected head.

    ``blocks`` is a list of dicts of :func:`conv_block` arguments (``channels`` is required);
    ``block_defaults`` (e.g. ``pool="avg"``, ``batch_norm=False``, ``dropout=0.25``) apply to every block
    unless the block says otherwise.
    """
    if not blocks:
        raise ValueError("blocks: at least one conv block is needed")
    features: list[nn.Module] = [Standardize()] if standardize else []
    channels = in_channels
    for i, spec in enumerate(blocks):
        spec = {**block_defaults, **spec}
        if "channels" not in spec:
            raise ValueError(f"blocks[{i}]={spec!r}: 'channels' is required")
        out = spec.pop("channels")
        features.append(conv_block(channels, out, activation=activation, **spec))
        channels = out
    body = nn.Sequential(*features)
    body.eval()  # probe the output size without updating batch-norm statistics or drawing dropout masks
    try:
        with torch.no_grad():
            flat = body(torch.zeros(1, in_channels, image_size, image_size)).numel()
    except RuntimeError:  # a pooling layer got an input smaller than its window
        flat = 0
    finally:
        body.train()
    if flat == 0:
        raise ValueError(f"blocks shrink a {image_size}x{image_size} image to nothing; use less pooling or padding")
    head: list[nn.Module] = [nn.Flatten()]
    width = flat
    for size in hidden_sizes:
        head += [nn.Linear(width, size), ACTIVATIONS[activation]()]
        if head_dropout:
            head.append(nn.Dropout(head_dropout))
        width = size
    head.append(nn.Linear(width, num_classes))
    return nn.Sequential(*body, *head)


LAYER_KINDS = {"linear": (nn.Linear,), "conv": (nn.Conv1d, nn.Conv2d, nn.Conv3d)}


def check_init(value, name: str = "init") -> str | dict:
    """An initialisation: a scheme name for every layer, or ``{layer type: scheme}`` (e.g. ``{linear: normal,
    conv: he}``, layer types ``linear`` and ``conv``; a type left out keeps PyTorch's default)."""
    if isinstance(value, str):
        _choice(name, value, INITS)
        return value
    if isinstance(value, dict) and value:
        for kind, scheme in value.items():
            _choice(f"{name} layer type", kind, LAYER_KINDS)
            _choice(f"{name}[{kind!r}]", scheme, INITS)
        return dict(value)
    raise ValueError(f"{name}={value!r}: unknown; allowed: one of {', '.join(INITS)}, or a mapping of layer type "
                     f"({', '.join(LAYER_KINDS)}) to one of them")


def init_weights(model: nn.Module, scheme: str | dict = "default", *,
                 layer_types: Sequence[str] = ("linear", "conv"), std: float = 0.02,
                 seed: int | None = None) -> nn.Module:
    """Re-initialise weights of the named layer types in place; biases are zeroed.

    ``default`` keeps PyTorch's own (Kaiming-uniform) initialisation; ``xavier`` is Glorot uniform,
    ``he`` Kaiming normal (fan-in, ReLU gain), ``normal`` N(0, std^2). ``scheme`` may also map layer types
    to schemes, e.g. ``{"linear": "normal", "conv": "he"}``.
    """
    if isinstance(scheme, dict):
        check_init(scheme)
        if seed is not None:
            torch.manual_seed(seed)
        for kind, each in scheme.items():
            init_weights(model, each, layer_types=(kind,), std=std)
        return model
    _choice("init", scheme, INITS)
    kinds = LAYER_KINDS
    for t in layer_types:
        _choice("layer_types", t, kinds)
    if scheme == "default":
        return model
    types = tuple(c for t in layer_types for c in kinds[t])
    if seed is not None:
        torch.manual_seed(seed)
    for module in model.modules():
        if isinstance(module, types):
            if scheme == "xavier":
                nn.init.xavier_uniform_(module.weight)
            elif scheme == "he":
                nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
            else:
                nn.init.normal_(module.weight, 0.0, std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
    return model


def count_parameters(model: nn.Module) -> dict:
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"total": total, "trainable": trainable, "frozen": total - trainable}


def summarize(model: nn.Module, input_size=(1, 1, 28, 28), *, depth: int = 3, verbose: int = 0):
    """torchinfo summary (printable; ``str(summary)`` is the familiar layer table)."""
    was_training = model.training
    # on the model's own device: torchinfo moves the model to the device it is given, and a trained model
    # on CUDA or MPS must stay there
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    result = summary(model, input_size=input_size, depth=depth, verbose=verbose, device=device,
                     col_names=("output_size", "num_params"), row_settings=("var_names",))
    model.train(was_training)
    return result
