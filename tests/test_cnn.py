"""helpers.cnn: the grid and strong CNNs, initialisation, augmentation data, class subsets and parameters."""

from __future__ import annotations

import math

import matplotlib
import pandas as pd
import pytest
import torch
from torch import nn

from helpers import cnn, report
from helpers.augment import Augment
from helpers.config import ConfigError, augment_from, make_config
from helpers.data import CLASS_NAMES, load_splits
from helpers.grid import best_config, run_grid
from helpers.plots import plot_feature_maps
from helpers.training import fit
from tests.conftest import fake_image_set

matplotlib.use("Agg")
pytestmark = pytest.mark.usefixtures("torch_single_thread")

SUBSET = [1, 3, 5, 7, 9]
SUBSET_NAMES = ["Trouser", "Dress", "Sandal", "Sneaker", "Ankle boot"]
AUGMENT = Augment(rotation=10, noise_std=0.05, hflip=True, brightness=0.2, contrast=0.2)


def count(model: nn.Module, kind: type) -> int:
    return sum(isinstance(m, kind) for m in model.modules())


def one_step(model: nn.Module, n: int = 16, num_classes: int = 10, **overrides):
    """Train ``model`` for exactly one step (one epoch of one batch) with the notebook's fit arguments."""
    data = fake_image_set(n)
    data.y = data.y % num_classes
    kwargs = cnn.make_fit_kwargs(epochs=1, batch_size=n, optimizer="sgd", lr=0.05, augment=AUGMENT,
                                 weight_decay=5e-4, label_smoothing=0.1)({"name": "test"})
    kwargs.update(overrides)
    return fit(model, data, None, progress=False, device="cpu", **kwargs)


# --- the pooling x normalization grid CNN -----------------------------------------------------------


@pytest.mark.parametrize("pool", cnn.POOLINGS)
@pytest.mark.parametrize("norm", cnn.NORMS)
def test_grid_cnn_variants_build_and_train_one_step(pool, norm):
    model = cnn.build_grid_cnn(pool=pool, norm=norm, dropout=0.2, seed=0)
    assert count(model, nn.MaxPool2d if pool == "max" else nn.AvgPool2d) == 2
    assert count(model, nn.AvgPool2d if pool == "max" else nn.MaxPool2d) == 0
    assert count(model, nn.BatchNorm2d) == (2 if norm == "batch_norm" else 0)
    assert count(model, nn.Dropout2d) == (2 if norm == "dropout" else 0)
    assert count(model, nn.Conv2d) == 2 and [m.out_channels for m in model.modules() if isinstance(m, nn.Conv2d)] == [8, 12]
    assert [m.out_features for m in model.modules() if isinstance(m, nn.Linear)] == [128, 32, 10]
    before = [p.detach().clone() for p in model.parameters()]
    history = one_step(model)
    assert len(history) == 1 and math.isfinite(history[0]["train_loss"])
    assert all(not torch.equal(a, b) for a, b in zip(before, model.parameters()) if b.requires_grad)
    assert model(torch.rand(3, 1, 28, 28)).shape == (3, 10)


def test_grid_configs_cover_every_pair():
    configs = cnn.grid_configs(poolings=["max", "avg"], norms=["batch_norm", "dropout"])
    assert [c["name"] for c in configs] == ["max + batch_norm", "max + dropout", "avg + batch_norm", "avg + dropout"]
    build = cnn.make_grid_builder(num_classes=5, seed=0)
    assert build(configs[3])(torch.rand(2, 1, 28, 28)).shape == (2, 5)


def test_builders_are_seeded():
    a, b = cnn.build_grid_cnn(seed=3), cnn.build_grid_cnn(seed=3)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


# --- the strong CNN and its search ------------------------------------------------------------------


def test_strong_cnn_shape_size_and_one_step():
    model = cnn.build_strong_cnn(seed=0)
    assert sum(p.numel() for p in model.parameters()) == 315_050  # about the course report's 315,148
    assert count(model, nn.Conv2d) == 4 and count(model, nn.BatchNorm2d) == 4 and count(model, nn.MaxPool2d) == 3
    x, shapes = torch.zeros(1, 1, 28, 28), []
    for layer in model.eval():
        x = layer(x)
        if isinstance(layer, nn.Sequential):
            shapes.append(tuple(x.shape[1:]))
    assert shapes == [(32, 14, 14), (64, 7, 7), (128, 3, 3)]
    model.train()
    # channels-last weights: the layout oneDNN's CPU convolutions run fastest
    conv = next(m for m in model.modules() if isinstance(m, nn.Conv2d) and m.in_channels > 1)
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    history = one_step(model)
    assert math.isfinite(history[0]["train_loss"])


def test_search_configs_and_builder():
    configs = cnn.search_configs(conv_dropouts=[0.1, 0.2], head_dropouts=[0.3], hidden_sizes=[64, 128])
    assert len(configs) == 4 and len({c["name"] for c in configs}) == 4
    build = cnn.make_strong_builder(num_classes=10, seed=0)
    model = build(configs[-1])
    assert [m.p for m in model.modules() if isinstance(m, nn.Dropout2d)] == [0.2] * 3
    assert [m.p for m in model.modules() if isinstance(m, nn.Dropout)] == [0.3]
    assert [m.out_features for m in model.modules() if isinstance(m, nn.Linear)] == [128, 10]


def test_fit_kwargs_augmentation_switch():
    make = cnn.make_fit_kwargs(epochs=2, batch_size=32, optimizer="adam", lr=1e-3, augment=AUGMENT, use_augment=False)
    assert make({"name": "x"})["augment"] is None
    on, off = cnn.augmentation_configs({"name": "best", "hidden_size": 64})
    assert make(on)["augment"] is AUGMENT and make(off)["augment"] is None
    assert on["hidden_size"] == 64 and on["name"] != off["name"]
    sgd = cnn.make_fit_kwargs(epochs=1, batch_size=8, optimizer="sgd", lr=0.05)({"name": "x"})
    assert sgd["nesterov"] and sgd["augment"] is None
    with pytest.raises(ValueError, match="no augmentation"):
        make = cnn.make_fit_kwargs(epochs=1, batch_size=8, optimizer="sgd", lr=0.05, augment=None)
        make(on)


def test_compare_augmentation_reuses_the_search_run():
    train, val = fake_image_set(64, seed=0), fake_image_set(32, seed=1)
    build = cnn.make_grid_builder(num_classes=10, seed=0)
    config = {"name": "max + batch_norm", "pool": "max", "norm": "batch_norm"}
    kwargs = cnn.make_fit_kwargs(epochs=1, batch_size=32, optimizer="sgd", lr=0.05, augment=AUGMENT)
    search = run_grid([config], build_model=build, train=train, val=val, fit_kwargs=kwargs, device="cpu")
    result = cnn.compare_augmentation(config, search, use_augment=True, build_model=build, train=train, val=val,
                                      fit_kwargs=kwargs, device="cpu")
    on, off = (c["name"] for c in cnn.augmentation_configs(config))
    assert set(result["table"]["name"]) == {on, off} and len(result["table"]) == 2
    assert result["histories"][on] is search["histories"][config["name"]]
    assert dict(zip(result["table"]["name"], result["table"]["augment"])) == {on: True, off: False}
    # the premise of the reuse: a seeded run repeats exactly
    again = run_grid([{**config, "name": on, "augment": True}], build_model=build, train=train, val=val,
                     fit_kwargs=kwargs, device="cpu")
    for key in ("train_loss", "val_loss"):
        assert again["histories"][on].column(key) == search["histories"][config["name"]].column(key)
    text = cnn.augmentation_observations(result["table"])
    row = result["table"].set_index("name")
    assert f"{row.loc[on, 'val_acc']:.2%} on" in text and f"({row.loc[off, 'val_acc']:.2%} off" in text


# --- initialisation -----------------------------------------------------------------------------------


def weights(model, kind=nn.Linear):
    """The first layer of ``kind`` with many weights (the 1152 x 64 hidden layer), so statistics are tight."""
    return max((m for m in model.modules() if isinstance(m, kind)), key=lambda m: m.weight.numel())


def test_init_default_keeps_pytorch_weights():
    torch.manual_seed(0)
    plain = cnn.build_strong_cnn(seed=1)
    again = cnn.build_strong_cnn(init="default", seed=1)
    assert all(torch.equal(p, q) for p, q in zip(plain.parameters(), again.parameters()))
    layer = weights(plain)
    bound = 1 / math.sqrt(layer.in_features)  # PyTorch's kaiming_uniform(a=sqrt(5)) bound
    assert layer.weight.abs().max() <= bound and layer.bias.abs().max() > 0


@pytest.mark.parametrize("scheme", ["xavier", "he", "normal"])
def test_init_schemes_change_the_weights_as_named(scheme):
    default = cnn.build_strong_cnn(seed=1)
    model = cnn.build_strong_cnn(init=scheme, seed=1)
    layer, conv = weights(model), weights(model, nn.Conv2d)
    fan_in, fan_out = layer.in_features, layer.out_features
    std = layer.weight.std().item()
    assert not torch.equal(layer.weight, weights(default).weight)
    assert torch.count_nonzero(layer.bias) == 0  # biases are zeroed by every named scheme
    if scheme == "xavier":
        bound = math.sqrt(6 / (fan_in + fan_out))
        assert layer.weight.abs().max() <= bound
        assert std == pytest.approx(bound / math.sqrt(3), rel=0.03)
    elif scheme == "he":
        assert std == pytest.approx(math.sqrt(2 / fan_in), rel=0.03)
        conv_fan_in = conv.weight[0].numel()
        assert conv.weight.std().item() == pytest.approx(math.sqrt(2 / conv_fan_in), rel=0.05)
    else:
        assert std == pytest.approx(0.02, rel=0.03) and abs(layer.weight.mean().item()) < 1e-3
    # the initialisation survives the conversion to channels-last
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)


# --- augmentation --------------------------------------------------------------------------------------


def test_augmentation_keeps_shape_dtype_and_range():
    X = fake_image_set(32).X
    out = AUGMENT(X.clone(), torch.Generator().manual_seed(0))
    assert out.shape == X.shape and out.dtype == X.dtype
    assert out.min() >= 0 and out.max() <= 1
    assert not torch.equal(out, X)


def test_augmentation_preview_layout():
    X = fake_image_set(5).X
    preview = cnn.augmentation_preview(X, AUGMENT, copies=3, seed=0)
    assert preview.shape == (20, 1, 28, 28)
    assert torch.equal(preview[::4], X)  # each row starts with the untouched original
    assert preview.min() >= 0 and preview.max() <= 1
    assert not torch.equal(preview[1], X[0])
    again = cnn.augmentation_preview(X, AUGMENT, copies=3, seed=0)
    assert torch.equal(preview, again)  # seeded
    flip_only = cnn.augmentation_preview(X, Augment(hflip=True), copies=4, seed=0).reshape(5, 5, 1, 28, 28)
    for original, versions in zip(X, flip_only):
        assert all(torch.equal(v, original) or torch.equal(v, original.flip(-1)) for v in versions[1:])


# --- class subsets -------------------------------------------------------------------------------------


def test_class_subset_remaps_labels_and_names(fake_data_dir, fake_sets):
    splits = load_splits(data_dir=fake_data_dir, classes=SUBSET, val_fraction=0.2, seed=0)
    for name in ("train", "val", "test"):
        part = splits[name]
        assert part.class_names == SUBSET_NAMES
        assert set(part.y.tolist()) == set(range(5))
    # every image keeps its picture: a "Dress" (original label 3) is now label 1
    original = fake_sets["test"]
    dresses = original.X[original.y == 3]
    assert torch.equal(splits["test"].X[splits["test"].y == 1], dresses)
    assert [CLASS_NAMES[c] for c in SUBSET] == SUBSET_NAMES
    model = cnn.build_strong_cnn(num_classes=len(SUBSET), seed=0)
    assert model(splits["test"].X[:4]).shape == (4, 5)
    history = one_step(cnn.build_grid_cnn(num_classes=5, seed=0), num_classes=5)
    assert math.isfinite(history[0]["train_loss"])


# --- feature maps ---------------------------------------------------------------------------------------


def test_feature_maps_of_the_first_block():
    model = cnn.build_strong_cnn(seed=0).train()
    X = fake_image_set(3).X
    maps = cnn.feature_maps(model, X)
    assert maps.shape == (3, 32, 28, 28)  # full resolution: read before the pooling
    assert maps.min() >= 0  # after the ReLU
    assert model.training  # the mode is restored
    assert cnn.feature_maps(model, X, block=2).shape == (3, 128, 7, 7)
    assert cnn.feature_maps(cnn.build_grid_cnn(seed=0), X).shape == (3, 8, 24, 24)
    with pytest.raises(ValueError, match="block=3"):
        cnn.feature_maps(model, X, block=3)
    fig = plot_feature_maps(maps, X, row_titles=["a", "b", "c"], max_maps=4, title="maps")
    assert fig._suptitle.get_text() == "maps" and len(fig.axes) == 3 * 5
    assert fig.axes[0].get_title() == "input" and fig.axes[0].get_ylabel() == "a"


# --- parameters ------------------------------------------------------------------------------------------


def params(**changes) -> dict:
    base = {"profile": "smoke", "seed": 0, "data_dir": None, "output_dir": None, "classes": None, "optimizer": "sgd",
            "lr": cnn.resolve_lr(None, changes.get("optimizer", "sgd")), "momentum": 0.9, "weight_decay": 5e-4,
            "init": "default", "schedule": "onecycle", "label_smoothing": 0.1, "batch_size": 128,
            "poolings": ["max", "avg"], "norms": ["batch_norm", "dropout"], "grid_dropout": 0.2,
            "conv_dropouts": None, "head_dropouts": None, "hidden_sizes": None, "augment": True, "aug_rotation": 5.0,
            "aug_noise_std": 0.02, "aug_hflip": True, "aug_brightness": 0.1, "aug_contrast": 0.1,
            "aug_crop_padding": 0, "aug_erasing": 0.0, "grid_epochs": None, "search_epochs": None,
            "final_epochs": None, "final_augment": None, "grid_per_class": None, "search_per_class": None,
            "val_fraction": 0.15, "stratified": True, "train_per_class": None, "test_per_class": None, "device": "cpu",
            "author_name": "A", "author_id": "1", "course": "DL"}
    return {**base, **changes}


def test_config_fills_profile_values_and_lr():
    cfg = make_config("cnn", **params(profile="quick", optimizer="adam", init="xavier", classes=SUBSET))
    assert cfg.final_epochs == cnn.PROFILES["quick"]["final_epochs"] and cfg.lr == 1e-3
    assert cfg.classes == SUBSET and cfg.init == "xavier"
    assert augment_from(cfg) == Augment(rotation=5.0, noise_std=0.02, hflip=True, brightness=0.1, contrast=0.1)
    assert "rotation=5.0" in cfg.augmentation
    assert make_config("cnn", **params(augment=False)).augmentation == "none"
    assert cfg.final_augment == "same" and cfg.final_augmentation == cfg.augmentation
    full = make_config("cnn", **params(profile="full"))
    assert full.final_augment == "flip" and full.final_augmentation == "hflip=True"
    assert "rotation=5.0" in full.augmentation  # the comparisons keep the aug_* augmentation
    assert make_config("cnn", **params(final_augment="none")).final_augmentation == "none"
    assert cnn.resolve_lr(0.2, "adam") == 0.2 and cnn.resolve_lr(None, "sgd") == 0.05


@pytest.mark.parametrize("name, value", [
    ("poolings", ["max", "min"]), ("norms", []), ("optimizer", "rmsprop"), ("init", "glorot"),
    ("aug_rotation", -5), ("conv_dropouts", [0.1, 1.0]), ("hidden_sizes", [64, 64]), ("final_epochs", 0),
    ("label_smoothing", 1.0), ("search_per_class", 2.5), ("augment", "yes"),
    ("final_augment", "mixup"),
])
def test_bad_parameters_name_themselves(name, value):
    with pytest.raises(ConfigError, match=name) as info:
        make_config("cnn", **params(**{name: value}))
    assert "allowed" in str(info.value) or "must be" in str(info.value)  # Augment's own messages say "must be"


def test_augment_on_needs_some_augmentation():
    off = {f"aug_{k}": v for k, v in {"rotation": 0, "noise_std": 0, "hflip": False, "brightness": 0, "contrast": 0,
                                      "crop_padding": 0, "erasing": 0}.items()}
    with pytest.raises(ConfigError, match="augment=True"):
        make_config("cnn", **params(**off))
    assert make_config("cnn", **params(augment=False, **off)).augmentation == "none"


def test_final_augmentation_choices():
    course = Augment(rotation=5.0, hflip=True)
    assert cnn.final_augmentation("same", course, use_augment=True) is course
    assert cnn.final_augmentation("same", course, use_augment=False) is None  # augment=False means none anywhere
    assert cnn.final_augmentation("flip", course, use_augment=False) == Augment(hflip=True)
    assert cnn.final_augmentation("none", course, use_augment=True) is None
    with pytest.raises(ConfigError, match="final_augment"):
        cnn.final_augmentation("cutmix", course, use_augment=True)


# --- observations ------------------------------------------------------------------------------------------


def test_factor_observations_and_best_agree_on_ties():
    table = pd.DataFrame({"name": ["max + bn", "avg + bn", "max + do", "avg + do"], "pool": ["max", "avg"] * 2,
                          "norm": ["bn", "bn", "do", "do"], "val_acc": [0.90, 0.90, 0.86, 0.80],
                          "train_acc": [0.95, 0.92, 0.88, 0.81], "seconds": [5.0, 3.0, 4.0, 2.0],
                          "status": ["completed"] * 4})
    text = report.factor_observations(table, ("pool", "norm"), labels={"pool": "Pooling"})
    assert "**Pooling:**" in text and "`max` 88.00%" in text and "`avg` 85.00%" in text
    assert "`bn` leads by 7.00%" in text
    configs = [{"name": n} for n in table["name"]]
    assert best_config(table, configs)["name"] == "avg + bn"  # tie on accuracy: the faster
    assert "`avg + bn`" in report.grid_observations(table, {}).splitlines()[0]


# --- the benchmark script's torchvision side (the timing itself is not a test) -----------------------------


def test_benchmark_torchvision_pipeline_reads_the_found_files(fake_data_dir, fake_sets):
    import argparse
    import importlib.util

    from helpers.config import PROJECT_ROOT

    spec = importlib.util.spec_from_file_location("benchmark_pipeline", PROJECT_ROOT / "scripts" / "benchmark_pipeline.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    root = bench.torchvision_root(fake_data_dir)
    try:
        args = argparse.Namespace(rotation=5.0, brightness=0.1, contrast=0.1, noise_std=0.02, batch_size=16,
                                  num_workers=0)
        loader = bench.course_loader(root.name, args)
        assert len(loader.dataset) == len(fake_sets["train"])
        assert torch.equal(loader.dataset.targets, fake_sets["train"].y)
        xb, yb = next(iter(loader))
        assert xb.shape == (16, 1, 28, 28) and yb.shape == (16,)
        assert xb.min() >= 0 and xb.max() <= 1
    finally:
        root.cleanup()
