"""Autoencoders: a denoising autoencoder (fully connected or convolutional, with a mirrored decoder) and a
classifier on its encoder. What they learn from is :mod:`helpers.sections.autoencoder`'s.
"""

from __future__ import annotations

from torch import nn

KINDS = ("mlp", "conv")


class AutoEncoder(nn.Module):
    """``decoder(encoder(x))``; images (N, C, H, W) in [0, 1] in, reconstructions (sigmoid) out."""

    def __init__(self, encoder: nn.Module, decoder: nn.Module, code_size: int):
        super().__init__()
        self.encoder, self.decoder, self.code_size = encoder, decoder, code_size

    def forward(self, x):
        """The reconstruction of ``x``."""
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
    if kind not in KINDS:
        raise ValueError(f"kind={kind!r}: allowed: {', '.join(KINDS)}")
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


class EncoderClassifier(nn.Module):
    """``head(encoder(x))``; the encoder is shared with the autoencoder unless copied."""

    def __init__(self, encoder: nn.Module, head: nn.Module):
        super().__init__()
        self.encoder, self.head = encoder, head

    def forward(self, x):
        """The class logits of ``x``."""
        return self.head(self.encoder(x))


def make_classifier_head(code_size: int, num_classes: int, *, hidden_sizes=(), dropout: float = 0.0) -> nn.Sequential:
    """[Linear -> ReLU -> Dropout?] per hidden size, then Linear(num_classes)."""
    layers: list[nn.Module] = []
    width = code_size
    for size in hidden_sizes:
        layers += [nn.Linear(width, size), nn.ReLU()] + ([nn.Dropout(dropout)] if dropout else [])
        width = size
    return nn.Sequential(*layers, nn.Linear(width, num_classes))
