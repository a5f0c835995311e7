"""helpers.models.architecture: CNN specs as data, the presets, the checks before training and the built networks."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from helpers.models.architecture import (
    PRESETS,
    ArchitectureError,
    build_from_spec,
    check_architecture,
    with_overrides,
)
from helpers.models.networks import count_parameters

pytestmark = pytest.mark.usefixtures("torch_single_thread")


def count(model: nn.Module, kind: type) -> int:
    return sum(isinstance(m, kind) for m in model.modules())


def block_shapes(model: nn.Sequential, size: int = 28) -> list[tuple]:
    """The output shape (C, H, W) of each conv block of a built spec."""
    x, shapes = torch.zeros(1, 1, size, size), []
    model.eval()
    with torch.no_grad():
        for layer in model:
            x = layer(x)
            if isinstance(layer, nn.Sequential):
                shapes.append(tuple(x.shape[1:]))
    return shapes


# --- presets ---------------------------------------------------------------------------------------------


def test_course_preset_parameters_and_shapes():
    model = build_from_spec("course")
    assert count_parameters(model)["trainable"] == 20_186
    # valid 5x5 and 4x4 convolutions, each followed by a 4x4 pooling window with stride 2: 28 -> 24 -> 11 -> 8 -> 3
    assert block_shapes(model) == [(8, 11, 11), (12, 3, 3)]
    assert [m.out_features for m in model.modules() if isinstance(m, nn.Linear)] == [128, 32, 10]
    assert count(model, nn.BatchNorm2d) == 2 and count(model, nn.Dropout2d) == 0 and count(model, nn.Dropout) == 0
    assert all(m.bias is None for m in model.modules() if isinstance(m, nn.Conv2d))  # batch norm follows
    assert model(torch.rand(3, 1, 28, 28)).shape == (3, 10)


def test_strong_preset_parameters_and_shapes():
    model = build_from_spec("strong")
    assert count_parameters(model)["trainable"] == 435_754
    assert block_shapes(model) == [(32, 14, 14), (64, 7, 7), (128, 3, 3)]
    assert count(model, nn.Conv2d) == 6 and count(model, nn.MaxPool2d) == 3
    compact = build_from_spec("compact")
    assert count_parameters(compact)["trainable"] == 315_050 and count(compact, nn.Conv2d) == 4
    assert [m.p for m in model.modules() if isinstance(m, nn.Dropout2d)] == [0.1] * 3
    assert [m.p for m in model.modules() if isinstance(m, nn.Dropout)] == [0.3]
    # channels-last weights: the layout oneDNN's CPU convolutions run fastest
    conv = next(m for m in model.modules() if isinstance(m, nn.Conv2d) and m.in_channels > 1)
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)


def test_number_of_classes_changes_only_the_output_layer():
    assert count_parameters(build_from_spec("course", num_classes=5))["total"] == 20_186 - 5 * (32 + 1)
    assert build_from_spec("strong", num_classes=5)(torch.rand(2, 1, 28, 28)).shape == (2, 5)


def test_custom_spec_parameter_count_by_hand():
    spec = {"blocks": [{"channels": [4, 6], "kernel": 3, "padding": 1, "pool": "avg", "norm": "none"}],
            "dense": [16], "activation": "tanh"}
    model = build_from_spec(spec)
    conv1 = 1 * 4 * 3 * 3 + 4  # no batch norm: convolutions keep their bias
    conv2 = 4 * 6 * 3 * 3 + 6
    hidden = (6 * 14 * 14) * 16 + 16  # "same" 3x3 convolutions, one 2x2 average pooling: 28 -> 14
    out = 16 * 10 + 10
    assert count_parameters(model)["total"] == conv1 + conv2 + hidden + out == 19_264
    assert count(model, nn.AvgPool2d) == 1 and count(model, nn.Tanh) == 3 and count(model, nn.BatchNorm2d) == 0


def test_check_fills_defaults():
    spec = check_architecture({"blocks": [{"channels": 8}, {"channels": [16, 16], "kernel": 5}], "dense": 32})
    first, second = spec["blocks"]
    assert first == {"channels": [8], "kernel": 3, "padding": 1, "pool": "max", "pool_size": 2, "pool_stride": 2,
                     "norm": "batch_norm", "dropout": 0.0}
    assert second["channels"] == [16, 16] and second["padding"] == 2  # "same" padding by default
    assert spec["dense"] == [32] and spec["dense_dropout"] == 0.0 and spec["activation"] == "relu"
    assert check_architecture("course")["blocks"][0]["kernel"] == 5


# --- refusals ----------------------------------------------------------------------------------------------


def two_blocks(**second) -> dict:
    return {"blocks": [{"channels": [4]}, {"channels": [8], **second}], "dense": [16]}


@pytest.mark.parametrize("spec, fragment", [
    (two_blocks(stride=2), "architecture block 2: unknown key 'stride'; allowed: channels, kernel, padding, pool"),
    (two_blocks(kernel=20, padding=0), "architecture block 2: kernel=20 is larger than its 14x14 input"),
    (two_blocks(channels=0), "architecture block 2: channels=0 is not allowed; allowed: an integer >= 1"),
    (two_blocks(channels=[8, -1]), "architecture block 2: channels=-1 is not allowed"),
    (two_blocks(channels=[]), "architecture block 2: channels=[] is not allowed"),
    (two_blocks(pool="min"), "architecture block 2: pool='min' is not allowed; allowed: max, avg, none"),
    (two_blocks(dropout=1.0), "architecture block 2: dropout=1.0 is not allowed; allowed: a number in [0, 1)"),
    (two_blocks(dropout=-0.1), "architecture block 2: dropout=-0.1 is not allowed"),
    (two_blocks(norm="layer"), "architecture block 2: norm='layer' is not allowed; allowed: batch_norm, none"),
    (two_blocks(pool_size=20), "architecture block 2: pool_size=20 is larger than its 14x14 input"),
    (two_blocks(kernel=0), "architecture block 2: kernel=0 is not allowed"),
    ({"blocks": [{"kernel": 3}]}, "architecture block 1: 'channels' is required"),
    # 2x2 pooling after every block: 28 -> 14 -> 7 -> 3 -> 1, and nothing left to pool in the fifth
    ({"blocks": [{"channels": 4}] * 5}, "architecture block 5: pool_size=2 is larger than its 1x1 input"),
    ({"blocks": []}, "architecture: blocks=[] is not allowed"),
    ({"blocks": [{"channels": 4}], "head": [8]}, "architecture: unknown key 'head'"),
    ({"blocks": [{"channels": 4}], "dense": [0]}, "architecture: dense=0 is not allowed"),
    ({"blocks": [{"channels": 4}], "dense_dropout": 1}, "architecture: dense_dropout=1 is not allowed"),
    ({"blocks": [{"channels": 4}], "activation": "gelu"}, "architecture: activation='gelu' is not allowed"),
    ("tiny", "architecture='tiny': unknown preset; allowed: course, strong, compact"),
    (5, "architecture=5: expected a preset name (course, strong, compact) or a mapping"),
])
def test_bad_specs_name_the_block_and_key(spec, fragment):
    with pytest.raises(ArchitectureError) as info:
        check_architecture(spec)
    assert fragment in str(info.value)
    with pytest.raises(ArchitectureError):
        build_from_spec(spec)


def test_the_feature_map_is_followed_through_pooling():
    spec = {"blocks": [{"channels": 4, "kernel": 5, "padding": 0, "pool": "none"}] * 6}  # 28 -> 24 -> ... -> 4
    assert build_from_spec(spec, num_classes=3)(torch.rand(1, 1, 28, 28)).shape == (1, 3)
    with pytest.raises(ArchitectureError, match="block 7: kernel=5 is larger than its 4x4 input"):
        check_architecture({"blocks": spec["blocks"] * 2})
    # a smaller image: 16 -> 12 -> 5 -> 2, the course network's second pooling has no room
    with pytest.raises(ArchitectureError, match="block 2: pool_size=4 is larger than its 2x2 input"):
        check_architecture("course", image_size=16)
    assert check_architecture(spec, name="search_architecture")  # the name is only for messages
    with pytest.raises(ArchitectureError, match="^search_architecture block 1"):
        check_architecture({"blocks": [{"channels": 4, "pool": "mean"}]}, name="search_architecture")


# --- overrides ----------------------------------------------------------------------------------------------


def test_overrides_apply_to_every_block_and_leave_the_preset_alone():
    before = copy.deepcopy(PRESETS)
    spec = with_overrides("strong", pool="avg", norm="none", conv_dropout=0.25, dense=[32, 16], dense_dropout=0.5)
    assert PRESETS == before
    assert all(b["pool"] == "avg" and b["norm"] == "none" and b["dropout"] == 0.25 for b in spec["blocks"])
    assert spec["dense"] == [32, 16] and spec["dense_dropout"] == 0.5
    model = build_from_spec(spec)
    assert count(model, nn.AvgPool2d) == 3 and count(model, nn.MaxPool2d) == 0 and count(model, nn.BatchNorm2d) == 0
    assert [m.out_features for m in model.modules() if isinstance(m, nn.Linear)] == [32, 16, 10]
    assert with_overrides("course") == PRESETS["course"]  # None leaves every value as it is
    assert with_overrides("course", dense=64)["dense"] == [64]
    assert all(b["norm"] == "batch_norm" for b in with_overrides("course", norm="batch_norm")["blocks"])
