"""helpers.models.networks: builders, parameter counts, initialisation and summaries."""

from __future__ import annotations

import copy
import math
import re

import pytest
import torch
from torch import nn

from helpers.data.fashion import to_patches
from helpers.models.networks import (
    ACTIVATIONS,
    PatchEmbed,
    Patchify,
    Standardize,
    build_cnn,
    build_mlp,
    check_init,
    conv_block,
    count_parameters,
    init_weights,
    summarize,
)

pytestmark = pytest.mark.usefixtures("torch_single_thread")


@pytest.fixture(autouse=True)
def seeded():
    torch.manual_seed(0)


def count(model: nn.Module, kind: type) -> int:
    return sum(isinstance(m, kind) for m in model.modules())


def batch(n: int = 8, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 28, 28, generator=g), torch.randint(0, 10, (n,), generator=g)


def one_step(model: nn.Module, lr: float = 0.05) -> float:
    """One SGD step on a random batch; checks that every trainable parameter moved."""
    X, y = batch()
    before = [p.detach().clone() for p in model.parameters()]
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    model.train()
    loss = nn.functional.cross_entropy(model(X), y)
    opt.zero_grad()
    loss.backward()
    opt.step()
    assert math.isfinite(loss.item())
    # weights all get a gradient (a bias right before batch norm has none, in exact arithmetic)
    moved = [not torch.equal(b, p) for b, p in zip(before, model.parameters(), strict=True) if p.ndim > 1]
    assert moved and all(moved), "every weight gets a gradient"
    return loss.item()


# --- MLP ----------------------------------------------------------------------------------------------


def test_mlp_parameter_counts_of_the_reports():
    assert count_parameters(build_mlp(hidden_sizes=(256, 128, 64), activation="tanh")) == {
        "total": 242_762, "trainable": 242_762, "frozen": 0}
    assert count_parameters(build_mlp(hidden_sizes=(256, 128, 64), activation="tanh", batch_norm=True))["total"] \
        == 243_658


def test_count_parameters_frozen():
    model = build_mlp(hidden_sizes=(16,))
    model[2].weight.requires_grad_(False)  # Standardize, Flatten, Linear(784, 16)
    assert count_parameters(model) == {"total": 784 * 16 + 16 + 16 * 10 + 10, "trainable": 16 + 170,
                                       "frozen": 784 * 16}


def test_mlp_structure_and_output():
    model = build_mlp(hidden_sizes=(32, 16), activation="relu", batch_norm=True, dropout=0.3)
    kinds = [type(m) for m in model]
    assert kinds == [Standardize, nn.Flatten,
                     nn.Linear, nn.BatchNorm1d, nn.ReLU, nn.Dropout,
                     nn.Linear, nn.BatchNorm1d, nn.ReLU, nn.Dropout,
                     nn.Linear]
    assert [m.p for m in model if isinstance(m, nn.Dropout)] == [0.3, 0.3]
    assert model[-1].out_features == 10
    assert model(batch()[0]).shape == (8, 10)
    one_step(model)


@pytest.mark.parametrize("name", list(ACTIVATIONS))
def test_mlp_activations(name):
    model = build_mlp(hidden_sizes=(8, 8, 8), activation=name)
    assert count(model, ACTIVATIONS[name]) == 3
    assert count(model, nn.Dropout) == 0 and count(model, nn.BatchNorm1d) == 0
    assert model(batch()[0]).shape == (8, 10)


def test_mlp_without_standardize_and_other_sizes():
    model = build_mlp(in_features=12, hidden_sizes=(), num_classes=3, standardize=False)
    assert [type(m) for m in model] == [nn.Flatten, nn.Linear]
    assert model(torch.rand(5, 3, 2, 2)).shape == (5, 3)


def test_standardize_uses_fashion_statistics():
    x = torch.full((1, 1, 2, 2), 0.2860 + 0.3530)
    assert torch.allclose(Standardize()(x), torch.ones_like(x))


def test_patchify_only_reorders_the_pixels():
    X = batch()[0]
    assert torch.equal(Patchify(4)(X), to_patches(X, 4).flatten(1))
    assert Patchify(7)(X).shape == (8, 784) and torch.equal(Patchify(7)(X).sort(1).values, X.flatten(1).sort(1).values)


@pytest.mark.parametrize("p, features", [(4, 16), (7, 8)])
def test_patch_mlp_embeds_each_patch_with_one_shared_layer(p, features):
    model = build_mlp(patch_size=p, patch_features=features, hidden_sizes=(32,), activation="relu", standardize=False)
    embed = model[0]
    assert isinstance(embed, PatchEmbed)
    X = batch()[0]
    patches = (28 // p) ** 2
    assert embed(X).shape == (8, patches * features)
    assert model[1].in_features == patches * features
    assert model(X).shape == (8, 10)
    # one linear layer of p*p inputs and `features` outputs, the same for every patch
    assert torch.allclose(embed(X).detach().reshape(8, patches, features),
                          torch.relu(to_patches(X, p) @ embed.proj.weight.detach().T + embed.proj.bias.detach()), atol=1e-6)
    # not a reordering of the pixels: the parameters are those of the shared layer and a hidden layer of its width
    plain = count_parameters(build_mlp(hidden_sizes=(32,), standardize=False))["total"]
    patched = count_parameters(model)["total"]
    assert patched == (p * p * features + features) + (patches * features * 32 + 32) + (32 * 10 + 10)
    assert patched != plain
    one_step(model)


def test_patch_embed_codes_identical_patches_identically():
    X = torch.zeros(1, 1, 28, 28)
    X[0, 0, :7, :7] = torch.rand(7, 7)
    X[0, 0, 7:14, 7:14] = X[0, 0, :7, :7]  # patch (1, 1) repeats patch (0, 0)
    codes = PatchEmbed(7, 5)(X).detach().reshape(16, 5)
    assert torch.allclose(codes[0], codes[5], atol=1e-6)
    assert not torch.allclose(codes[0], codes[1])  # an empty patch gets another code


def test_patch_mlp_bad_patch_size():
    with pytest.raises(ValueError, match="patch_size=5"):
        build_mlp(patch_size=5)(batch()[0])


@pytest.mark.parametrize("kwargs,pattern", [
    ({"activation": "swish"}, "activation='swish': unknown; allowed: relu, tanh, sigmoid, leaky_relu, none"),
    ({"dropout": 1.0}, "dropout=1.0"),
    ({"dropout": -0.1}, "dropout=-0.1"),
])
def test_mlp_bad_arguments(kwargs, pattern):
    with pytest.raises(ValueError, match=re.escape(pattern)):
        build_mlp(**kwargs)


# --- CNN ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("pool,pool_type", [("max", nn.MaxPool2d), ("avg", nn.AvgPool2d)])
@pytest.mark.parametrize("batch_norm", [True, False])
@pytest.mark.parametrize("dropout", [0.0, 0.25])
def test_cnn_builds_and_trains_one_step(pool, pool_type, batch_norm, dropout):
    model = build_cnn(blocks=[{"channels": 4}, {"channels": 8, "convs": 2}], hidden_sizes=(16,), head_dropout=0.1,
                      pool=pool, batch_norm=batch_norm, dropout=dropout)
    assert count(model, nn.Conv2d) == 3
    assert count(model, pool_type) == 2
    assert count(model, nn.BatchNorm2d) == (3 if batch_norm else 0)
    assert count(model, nn.Dropout2d) == (2 if dropout else 0)
    assert count(model, nn.Dropout) == 1
    # conv biases are redundant before batch norm
    assert all((m.bias is None) == batch_norm for m in model.modules() if isinstance(m, nn.Conv2d))
    # 28 -> 14 -> 7 after two 2x2 poolings: 8 * 7 * 7 features into the head
    assert [m for m in model.modules() if isinstance(m, nn.Linear)][0].in_features == 8 * 7 * 7
    assert model(batch()[0]).shape == (8, 10)
    one_step(model)


def test_building_a_cnn_leaves_batch_norm_statistics_alone():
    model = build_cnn(blocks=[{"channels": 4}, {"channels": 4}])
    assert model.training
    for bn in (m for m in model.modules() if isinstance(m, nn.BatchNorm2d)):
        assert int(bn.num_batches_tracked) == 0
        assert torch.equal(bn.running_mean, torch.zeros(4)) and torch.equal(bn.running_var, torch.ones(4))


def test_cnn_pooled_down_to_one_pixel():
    model = build_cnn(blocks=[{"channels": 2}] * 4, hidden_sizes=())  # 28 -> 14 -> 7 -> 3 -> 1
    assert model[-1].in_features == 2
    assert model(batch()[0]).shape == (8, 10)


def test_block_overrides_defaults():
    model = build_cnn(blocks=[{"channels": 4, "pool": "avg"}, {"channels": 4, "pool": None}], pool="max",
                      hidden_sizes=())
    assert count(model, nn.AvgPool2d) == 1 and count(model, nn.MaxPool2d) == 0
    assert model[-1].in_features == 4 * 14 * 14


def test_conv_block_layers():
    block = conv_block(1, 6, kernel=5, convs=2, pool="max", pool_size=3, pool_stride=2, dropout=0.2,
                       activation="leaky_relu")
    assert [type(m) for m in block] == [nn.Conv2d, nn.BatchNorm2d, nn.LeakyReLU, nn.Conv2d, nn.BatchNorm2d,
                                        nn.LeakyReLU, nn.MaxPool2d, nn.Dropout2d]
    assert block[0].padding == (2, 2)  # "same" padding by default
    assert block(torch.zeros(2, 1, 28, 28)).shape == (2, 6, 13, 13)


@pytest.mark.parametrize("kwargs,pattern", [
    ({"blocks": [{"channels": 4, "pool": "min"}]}, "pool='min': unknown; allowed: max, avg"),
    ({"blocks": [{"channels": 4}], "activation": "gelu"}, "activation='gelu': unknown"),
    ({"blocks": []}, "at least one conv block"),
    ({"blocks": [{"pool": "max"}]}, "'channels' is required"),
    ({"blocks": [{"channels": 2}] * 5}, "shrink a 28x28 image to nothing"),
    ({"blocks": [{"channels": 2, "batch_norm": False}] * 5}, "shrink a 28x28 image to nothing"),
    ({"blocks": [{"channels": 2, "kernel": 5, "padding": 0, "pool": None}] * 7}, "shrink a 28x28 image"),
])
def test_cnn_bad_arguments(kwargs, pattern):
    with pytest.raises(ValueError, match=re.escape(pattern)):
        build_cnn(**kwargs)


# --- initialisation --------------------------------------------------------------------------------------


def big_mlp() -> nn.Module:
    torch.manual_seed(0)
    return build_mlp(hidden_sizes=(512, 256), activation="relu")


def linears(model):
    return [m for m in model.modules() if isinstance(m, nn.Linear)]


def test_init_xavier_bound():
    model = init_weights(big_mlp(), "xavier", seed=0)
    for layer in linears(model):
        bound = math.sqrt(6 / (layer.in_features + layer.out_features))
        w = layer.weight.detach()
        assert w.abs().max() <= bound
        assert w.abs().max() > 0.98 * bound  # uniform over the whole interval
        assert abs(float(w.std()) - bound / math.sqrt(3)) < 0.03 * bound
        assert torch.count_nonzero(layer.bias) == 0


def test_init_he_std():
    model = init_weights(big_mlp(), "he", seed=0)
    for layer in linears(model):
        expected = math.sqrt(2 / layer.in_features)
        assert abs(float(layer.weight.detach().std()) - expected) < 0.05 * expected
        assert abs(float(layer.weight.detach().mean())) < 0.05 * expected
        assert torch.count_nonzero(layer.bias) == 0


def test_init_normal_std():
    model = init_weights(big_mlp(), "normal", std=0.05, seed=0)
    for layer in linears(model):
        assert abs(float(layer.weight.detach().std()) - 0.05) < 0.003
        assert torch.count_nonzero(layer.bias) == 0


def test_init_default_leaves_weights_unchanged():
    model = big_mlp()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert init_weights(model, "default", seed=1) is model
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    # PyTorch's own init (Kaiming uniform with a=sqrt(5)): bound 1/sqrt(fan_in), not the He std
    first = linears(model)[0]
    assert first.weight.abs().max() <= 1 / math.sqrt(784)


def test_init_layer_types_and_seed():
    model = build_cnn(blocks=[{"channels": 4, "batch_norm": False}], hidden_sizes=(16,))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    init_weights(model, "normal", layer_types=("conv",), seed=0)
    after = model.state_dict()
    conv = next(k for k in after if k.endswith("weight") and after[k].ndim == 4)
    lin = [k for k in after if k.endswith("weight") and after[k].ndim == 2]
    assert not torch.equal(before[conv], after[conv])
    assert all(torch.equal(before[k], after[k]) for k in lin)
    a = init_weights(big_mlp(), "he", seed=3)
    b = init_weights(big_mlp(), "he", seed=3)
    assert torch.equal(linears(a)[0].weight, linears(b)[0].weight)


@pytest.mark.parametrize("kwargs,pattern", [
    ({"scheme": "glorot"}, "init='glorot': unknown; allowed: default, xavier, he, normal"),
    ({"scheme": "he", "layer_types": ("linear", "rnn")}, "layer_types='rnn': unknown"),
])
def test_init_bad_arguments(kwargs, pattern):
    with pytest.raises(ValueError, match=re.escape(pattern)):
        init_weights(build_mlp(hidden_sizes=(4,)), **kwargs)


def test_init_per_layer_type():
    torch.manual_seed(0)
    reference = build_cnn(blocks=[{"channels": 64, "batch_norm": False}], hidden_sizes=(512,))
    model = copy.deepcopy(reference)
    init_weights(model, {"linear": "normal", "conv": "he"}, seed=0)
    conv = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    hidden = linears(model)[0]  # 64 * 14 * 14 inputs: tight statistics
    assert float(hidden.weight.detach().std()) == pytest.approx(0.02, rel=0.02)
    assert abs(float(hidden.weight.detach().mean())) < 1e-3
    assert float(conv.weight.detach().std()) == pytest.approx(math.sqrt(2 / (1 * 3 * 3)), rel=0.1)  # He: fan-in 9
    assert all(torch.count_nonzero(m.bias) == 0 for m in linears(model) + [conv])
    # a layer type left out keeps PyTorch's own initialisation
    only_linear = init_weights(copy.deepcopy(reference), {"linear": "normal"}, seed=0)
    conv_before = next(m for m in reference.modules() if isinstance(m, nn.Conv2d))
    conv_after = next(m for m in only_linear.modules() if isinstance(m, nn.Conv2d))
    assert torch.equal(conv_before.weight, conv_after.weight) and torch.equal(conv_before.bias, conv_after.bias)
    assert float(linears(only_linear)[0].weight.detach().std()) == pytest.approx(0.02, rel=0.02)
    # seeded: the same mapping and seed give the same weights
    again = init_weights(copy.deepcopy(reference), {"linear": "normal", "conv": "he"}, seed=0)
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), again.parameters()))


def test_check_init_values():
    assert check_init("he") == "he"
    assert check_init({"conv": "xavier"}) == {"conv": "xavier"}
    with pytest.raises(ValueError, match=re.escape("init layer type='rnn': unknown; allowed: linear, conv")):
        check_init({"rnn": "he"})
    with pytest.raises(ValueError, match=re.escape("init['conv']='glorot': unknown; allowed: default, xavier")):
        check_init({"conv": "glorot"})
    for bad in ({}, 3, None):
        with pytest.raises(ValueError, match="or a mapping of layer type"):
            check_init(bad)
    with pytest.raises(ValueError, match="init layer type='rnn'"):
        init_weights(build_mlp(hidden_sizes=(4,)), {"rnn": "he"})


# --- summary --------------------------------------------------------------------------------------------


def test_summary_contains_total_params():
    model = build_mlp(hidden_sizes=(256, 128, 64), activation="tanh")
    model.train()
    text = str(summarize(model))
    assert "Total params: 242,762" in text
    assert "Trainable params: 242,762" in text
    assert model.training  # summarize restores the mode


def test_summary_of_cnn():
    model = build_cnn(blocks=[{"channels": 4}], hidden_sizes=(8,)).eval()
    total = count_parameters(model)["total"]
    text = str(summarize(model, depth=2))
    assert f"Total params: {total:,}" in text
    assert not model.training


@pytest.mark.skipif(not (torch.cuda.is_available() or (getattr(torch.backends, "mps", None)
                                                       and torch.backends.mps.is_available())),
                    reason="needs CUDA or MPS")
def test_summary_leaves_a_model_on_its_accelerator():
    device = "cuda" if torch.cuda.is_available() else "mps"
    model = build_mlp(hidden_sizes=(8,)).to(device)
    summarize(model)
    assert next(model.parameters()).device.type == device


def test_summary_leaves_a_cpu_model_where_it_is_and_in_its_mode():
    model = build_mlp(hidden_sizes=(8,)).eval()
    summarize(model)
    assert next(model.parameters()).device.type == "cpu" and not model.training
