"""helpers.sections.cnn: one CNN run from its settings (architecture overrides, optimizer, initialisation, augmentation),
the comparisons' configurations and checks, augmentation on/off, the data behind the figures."""

from __future__ import annotations

import math

import matplotlib
import nbformat
import pandas as pd
import pytest
import torch
from torch import nn

from helpers.cli.runner import notebook_path
from helpers.data.augment import Augment
from helpers.data.fashion import CLASS_NAMES, load_splits
from helpers.engine.config import ConfigError, augment_from
from helpers.engine.experiment import best_config, run_experiment
from helpers.models.networks import count_parameters
from helpers.reporting import observations
from helpers.reporting.plots import plot_feature_maps
from helpers.sections import cnn, make_config
from tests.conftest import fake_image_set

matplotlib.use("Agg")
pytestmark = pytest.mark.usefixtures("torch_single_thread")

SUBSET = [1, 3, 5, 7, 9]
SUBSET_NAMES = ["Trouser", "Dress", "Sandal", "Sneaker", "Ankle boot"]
AUGMENT = Augment(rotation=10, noise_std=0.05, hflip=True, brightness=0.2, contrast=0.2)


def notebook_namespace() -> dict:
    """The CNN notebook's parameters cell run as the notebook runs it: name -> default."""
    nb = nbformat.read(str(notebook_path("cnn")), as_version=4)
    cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    namespace: dict = {}
    exec(cell.source, namespace)
    return {k: v for k, v in namespace.items() if not k.startswith("__")}


NAMESPACE = notebook_namespace()


def config(**changes):
    """make_config of the notebook's defaults in the smoke profile, with ``changes``."""
    return make_config("cnn", NAMESPACE, **{"profile": "smoke", "device": "cpu", **changes})


CFG = config()
GRID_BASE, SEARCH_BASE = cnn.stage_base(CFG, "grid"), cnn.stage_base(CFG, "search")


def count(model: nn.Module, kind: type) -> int:
    return sum(isinstance(m, kind) for m in model.modules())


def settings(base=GRID_BASE, **changes) -> dict:
    return {**base, "epochs": 1, "batch_size": 16, **changes}


def one_step(s: dict, n: int = 16, num_classes: int = 10):
    """Train the run of settings ``s`` for exactly one step (one epoch of one batch) with the engine's train_one."""
    data = fake_image_set(n)
    data.y = data.y % num_classes
    data.class_names = list(CLASS_NAMES[:num_classes])
    return cnn.train_one({**s, "epochs": 1, "batch_size": n}, train=data, val=None, seed=0)


# --- the first comparison: the course CNN with pooling x normalization ----------------------------------------


@pytest.mark.parametrize("pool", ["max", "avg"])
@pytest.mark.parametrize("norm", cnn.NORMS)
def test_course_cnn_variants_build_and_train_one_step(pool, norm):
    s = settings(pool=pool, norm=norm)
    model = cnn.build_model(s, num_classes=10, seed=0)
    assert count(model, nn.MaxPool2d if pool == "max" else nn.AvgPool2d) == 2
    assert count(model, nn.AvgPool2d if pool == "max" else nn.MaxPool2d) == 0
    assert count(model, nn.BatchNorm2d) == (2 if norm == "batch_norm" else 0)
    # norm "dropout": no batch norm, grid_dropout after every block and every hidden dense layer
    assert [m.p for m in model.modules() if isinstance(m, nn.Dropout2d)] == ([0.2] * 2 if norm == "dropout" else [])
    assert [m.p for m in model.modules() if isinstance(m, nn.Dropout)] == ([0.2] * 2 if norm == "dropout" else [])
    assert [m.out_channels for m in model.modules() if isinstance(m, nn.Conv2d)] == [8, 12]
    assert [m.out_features for m in model.modules() if isinstance(m, nn.Linear)] == [128, 32, 10]
    out = one_step(s)
    model = out["model"]
    assert len(out["history"]) == 1 and math.isfinite(out["history"][0]["train_loss"])
    assert model(torch.rand(3, 1, 28, 28)).shape == (3, 10)


def test_default_grid_covers_every_pair():
    assert CFG.grid == {"pool": ["max", "avg"], "norm": ["batch_norm", "dropout"]}
    assert [c["name"] for c in CFG.grid_configs] == ["max + batch_norm", "max + dropout", "avg + batch_norm",
                                                      "avg + dropout"]
    assert GRID_BASE["architecture"] == "course" and GRID_BASE["epochs"] == CFG.grid_epochs == 1
    model = cnn.build_model({**GRID_BASE, **CFG.grid_configs[3]}, num_classes=5, seed=0)
    assert model(torch.rand(2, 1, 28, 28)).shape == (2, 5)


def test_builds_are_seeded():
    a, b = (cnn.build_model(settings(), num_classes=10, seed=3) for _ in range(2))
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    c = cnn.build_model(settings(), num_classes=10, seed=4)
    assert not all(torch.equal(p, q) for p, q in zip(a.parameters(), c.parameters()))


def test_grid_of_optimizers_and_initialisations():
    cfg = config(grid={"optimizer": ["sgd", "adam"], "init": ["xavier", "he"]})
    assert [c["name"] for c in cfg.grid_configs] == ["sgd + xavier", "sgd + he", "adam + xavier", "adam + he"]
    assert cfg.lr is None  # each optimizer's own peak learning rate
    assert [cnn.resolve_lr(cfg.lr, c["optimizer"]) for c in cfg.grid_configs] == [0.05, 0.05, 1e-3, 1e-3]
    assert cnn.resolve_lr(0.2, "adam") == 0.2


def test_train_one_passes_the_run_settings_to_fit(monkeypatch):
    calls = []

    def fake_fit(model, train, val, **kwargs):
        calls.append(kwargs)
        from helpers.engine.training import History

        return History()

    monkeypatch.setattr(cnn, "fit", fake_fit)
    data = fake_image_set(8)
    cnn.train_one(settings(optimizer="sgd", lr=None, epochs=2), train=data, val=None, seed=5)
    cnn.train_one(settings(optimizer="adam", lr=None, momentum=0.0, augment=False), train=data, val=None, seed=0)
    cnn.train_one(settings(optimizer="sgd", momentum=0.0, augment_with=None), train=data, val=None, seed=0)
    sgd, adam, plain = calls
    assert (sgd["optimizer"], sgd["lr"], sgd["nesterov"], sgd["num_epochs"], sgd["seed"]) == ("sgd", 0.05, True, 2, 5)
    assert sgd["augment"] == augment_from(CFG) and sgd["weight_decay"] == CFG.weight_decay
    assert sgd["label_smoothing"] == CFG.label_smoothing and sgd["schedule"] == CFG.schedule
    assert (adam["optimizer"], adam["lr"], adam["nesterov"], adam["augment"]) == ("adam", 1e-3, False, None)
    assert not plain["nesterov"] and plain["augment"] is None  # no momentum: plain SGD; augment_with=None wins


def test_run_augmentation_switch():
    assert cnn.run_augmentation(settings()) == augment_from(CFG)
    assert cnn.run_augmentation(settings(augment=False)) is None
    assert cnn.run_augmentation(settings(augment_with=Augment(hflip=True))) == Augment(hflip=True)
    off = {f"aug_{k}": 0 for k in ("rotation", "noise_std", "brightness", "contrast", "crop_padding", "erasing")}
    assert cnn.run_augmentation(settings(augment=True, aug_hflip=False, **off)) is None


# --- the stronger CNN and its search ----------------------------------------------------------------------------


def test_default_search_and_its_networks():
    assert SEARCH_BASE["architecture"] == "strong" and SEARCH_BASE["epochs"] == CFG.search_epochs
    assert CFG.search == {"conv_dropout": [0.1], "dense_dropout": [0.3], "dense": [[32], [64]]}
    assert len(CFG.search_configs) == 2 and len({c["name"] for c in CFG.search_configs}) == 2
    model = cnn.build_model({**SEARCH_BASE, **CFG.search_configs[-1]}, num_classes=10, seed=0)
    assert [m.p for m in model.modules() if isinstance(m, nn.Dropout2d)] == [0.1] * 3
    assert [m.p for m in model.modules() if isinstance(m, nn.Dropout)] == [0.3]
    assert [m.out_features for m in model.modules() if isinstance(m, nn.Linear)] == [64, 10]
    assert count(model, nn.Conv2d) == 6 and count(model, nn.BatchNorm2d) == 6
    assert count_parameters(model)["trainable"] == 361_322  # the strong preset with the search's head of 64
    out = one_step({**SEARCH_BASE, **CFG.search_configs[0]})
    assert math.isfinite(out["history"][0]["train_loss"])


def test_search_of_architectures():
    small = {"blocks": [{"channels": 4}], "dense": [8]}
    wide = {"blocks": [{"channels": [8, 8], "pool": "avg"}, {"channels": 16}], "dense": []}
    cfg = config(search={"architecture": [small, wide]})
    assert [c["name"] for c in cfg.search_configs] == ["architecture conv 4, fc 8", "architecture conv 8+8/16, fc none"]
    base = cnn.stage_base(cfg, "search")
    models = [cnn.build_model({**base, **c}, num_classes=10, seed=0) for c in cfg.search_configs]
    assert [count(m, nn.Conv2d) for m in models] == [1, 3]
    assert [m.out_features for m in models[1].modules() if isinstance(m, nn.Linear)] == [10]
    assert count_parameters(models[0])["total"] == (4 * 9) + 2 * 4 + (4 * 14 * 14 * 8 + 8) + (8 * 10 + 10)


def test_compare_augmentation_reuses_the_search_run():
    train, val = fake_image_set(64, seed=0), fake_image_set(32, seed=1)
    base = settings(batch_size=32)
    configs = [{"name": "max + batch_norm", "pool": "max", "norm": "batch_norm"}]
    search = run_experiment(configs, base=base, train_one=cnn.train_one, train=train, val=val, device="cpu")
    result = cnn.compare_augmentation(configs[0], search, base=base, train=train, val=val, device="cpu")
    on, off = "max + batch_norm + augmentation", "max + batch_norm, no augmentation"
    assert set(result["table"]["name"]) == {on, off} and len(result["table"]) == 2
    assert result["histories"][on] is search["histories"]["max + batch_norm"]  # augment=True: the search's run
    assert dict(zip(result["table"]["name"], result["table"]["augment"])) == {on: True, off: False}
    # the premise of the reuse: a seeded run repeats exactly
    again = run_experiment([{**configs[0], "name": on, "augment": True}], base=base, train_one=cnn.train_one,
                           train=train, val=val, device="cpu")
    for key in ("train_loss", "val_loss"):
        assert again["histories"][on].column(key) == search["histories"]["max + batch_norm"].column(key)
    text = observations.augmentation_observations(result["table"])
    row = result["table"].set_index("name")
    assert f"{row.loc[on, 'val_acc']:.2%} on" in text and f"({row.loc[off, 'val_acc']:.2%} off" in text


# --- initialisation ---------------------------------------------------------------------------------------------


def weights(model, kind=nn.Linear):
    """The layer of ``kind`` with the most weights (the 1152 x 64 hidden layer), so statistics are tight."""
    return max((m for m in model.modules() if isinstance(m, kind)), key=lambda m: m.weight.numel())


def strong(init="default", seed=1):
    return cnn.build_model(settings(SEARCH_BASE, init=init), num_classes=10, seed=seed)


def test_init_default_keeps_pytorch_weights():
    plain, again = strong(seed=1), strong(seed=1)
    assert all(torch.equal(p, q) for p, q in zip(plain.parameters(), again.parameters()))
    layer = weights(plain)
    bound = 1 / math.sqrt(layer.in_features)  # PyTorch's kaiming_uniform(a=sqrt(5)) bound
    assert layer.weight.abs().max() <= bound and layer.bias.abs().max() > 0


@pytest.mark.parametrize("scheme", ["xavier", "he", "normal"])
def test_init_schemes_change_the_weights_as_named(scheme):
    default = strong()
    model = strong(scheme)
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


def test_init_per_layer_type():
    default, model = strong(), strong({"linear": "normal", "conv": "he"})
    layer, conv = weights(model), weights(model, nn.Conv2d)
    assert layer.weight.std().item() == pytest.approx(0.02, rel=0.03)
    assert conv.weight.std().item() == pytest.approx(math.sqrt(2 / conv.weight[0].numel()), rel=0.05)
    only_linear = strong({"linear": "normal"})
    assert torch.equal(weights(only_linear, nn.Conv2d).weight, weights(default, nn.Conv2d).weight)
    assert weights(only_linear).weight.std().item() == pytest.approx(0.02, rel=0.03)
    cfg = config(init={"linear": "normal", "conv": "he"})
    assert cfg.init == {"linear": "normal", "conv": "he"}
    with pytest.raises(ConfigError, match="init layer type='rnn': unknown; allowed: linear, conv"):
        config(init={"rnn": "he"})


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
    model = strong()
    five = cnn.build_model(settings(SEARCH_BASE), num_classes=len(SUBSET), seed=0)
    assert five(splits["test"].X[:4]).shape == (4, 5)
    assert count_parameters(model)["total"] - count_parameters(five)["total"] == 5 * (128 + 1)
    history = one_step(settings(), num_classes=5)["history"]
    assert math.isfinite(history[0]["train_loss"])


# --- feature maps ---------------------------------------------------------------------------------------


def test_feature_maps_of_the_first_block():
    model = strong().train()
    X = fake_image_set(3).X
    maps = cnn.feature_maps(model, X)
    assert maps.shape == (3, 32, 28, 28)  # full resolution: read before the pooling
    assert maps.min() >= 0  # after the ReLU
    assert model.training  # the mode is restored
    assert cnn.feature_maps(model, X, block=2).shape == (3, 128, 7, 7)
    assert cnn.feature_maps(cnn.build_model(settings(), num_classes=10), X).shape == (3, 8, 24, 24)
    with pytest.raises(ValueError, match="block=3"):
        cnn.feature_maps(model, X, block=3)
    fig = plot_feature_maps(maps, X, row_titles=["a", "b", "c"], max_maps=4, title="maps")
    assert fig._suptitle.get_text() == "maps" and len(fig.axes) == 3 * 5
    assert fig.axes[0].get_title() == "input" and fig.axes[0].get_ylabel() == "a"


# --- parameters ------------------------------------------------------------------------------------------


def test_config_fills_profile_values():
    cfg = config(profile="quick", optimizer="adam", init="xavier", classes=SUBSET)
    assert cfg.final_epochs == cnn.PROFILES["quick"]["final_epochs"] and cfg.lr is None
    assert cfg.classes == SUBSET and cfg.init == "xavier"
    assert augment_from(cfg) == Augment(rotation=5.0, noise_std=0.02, hflip=True, brightness=0.1, contrast=0.1)
    assert "rotation=5.0" in cfg.augmentation
    assert config(augment=False).augmentation == "none"
    assert cfg.final_augment == "flip" and cfg.final_augmentation == "hflip=True"
    assert config(profile="smoke").final_augment == "same"
    full = config(profile="full")
    assert full.final_augment == "flip" and full.final_augmentation == "hflip=True"
    assert "rotation=5.0" in full.augmentation  # the comparisons keep the aug_* augmentation
    assert config(final_augment="none").final_augmentation == "none"
    assert cnn.resolve_lr(None, "adam") == 1e-3 and cnn.resolve_lr(None, "sgd") == 0.05


@pytest.mark.parametrize("name, value", [
    ("poolings", ["max", "min"]), ("norms", []), ("optimizer", "adagrad"), ("init", "glorot"),
    ("aug_rotation", -5), ("conv_dropouts", [0.1, 1.0]), ("hidden_sizes", [64, 64]), ("final_epochs", 0),
    ("label_smoothing", 1.0), ("search_per_class", 2.5), ("augment", "yes"), ("final_augment", "mixup"),
    ("architecture", "tiny"), ("search_architecture", "tiny"), ("pool", "min"), ("dense_dropout", 1.0),
    ("repeats", 0), ("evaluate_test", "some"), ("precision", "fp16"), ("test_flip", "yes"),
])
def test_bad_parameters_name_themselves(name, value):
    with pytest.raises(ConfigError, match=name) as info:
        config(**{name: value})
    assert "allowed" in str(info.value) or "must be" in str(info.value)  # Augment's own messages say "must be"


def test_a_grid_architecture_too_large_is_refused_before_training():
    too_large = {"blocks": [{"channels": 4}, {"channels": 8, "kernel": 20, "padding": 0}], "dense": [16]}
    with pytest.raises(ConfigError) as info:
        config(grid={"optimizer": ["sgd"], "architecture": ["course", too_large]})
    message = str(info.value)
    assert message.startswith("grid configuration 2 (sgd + architecture conv 4/8, fc 16): ")
    assert "block 2: kernel=20 is larger than its 14x14 input" in message
    with pytest.raises(ConfigError, match=r"search configuration 1 \(.*\): parameter architecture block 1: pool='min'"):
        config(search={"architecture": [{"blocks": [{"channels": 4, "pool": "min"}]}]})
    with pytest.raises(ConfigError, match="search_architecture block 2: kernel=20"):
        config(search_architecture=too_large)


def test_a_grid_cannot_vary_what_is_fixed_for_the_report():
    with pytest.raises(ConfigError, match="'classes' cannot vary between runs"):
        config(grid={"classes": [[1, 2]]})
    with pytest.raises(ConfigError, match="'hidden_sizes' is not a parameter of a run; allowed: architecture, pool"):
        config(search={"hidden_sizes": [[32]]})


def test_augment_on_needs_some_augmentation():
    off = {f"aug_{k}": v for k, v in {"rotation": 0, "noise_std": 0, "hflip": False, "brightness": 0, "contrast": 0,
                                      "crop_padding": 0, "erasing": 0}.items()}
    with pytest.raises(ConfigError, match="augment=True"):
        config(**off)
    assert config(augment=False, **off).augmentation == "none"


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
    text = observations.factor_observations(table, ("pool", "norm"), labels={"pool": "Pooling"})
    assert "**Pooling:**" in text and "`max` 88.00%" in text and "`avg` 85.00%" in text
    assert "`bn` leads by 7.00%" in text
    configs = [{"name": n} for n in table["name"]]
    # a tie on accuracy (no validation loss here) goes to the earlier configuration, never to the faster run
    assert best_config(table, configs)["name"] == "max + bn"
    assert "`max + bn`" in observations.grid_observations(table, {}).splitlines()[0]


# --- the benchmark script's torchvision side (the timing itself is not a test) -----------------------------


def _benchmark_module():
    import importlib.util

    from helpers.engine.config import PROJECT_ROOT

    spec = importlib.util.spec_from_file_location("benchmark_pipeline", PROJECT_ROOT / "scripts" / "benchmark_pipeline.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    return bench


def test_benchmark_torchvision_pipeline_reads_the_found_files(fake_data_dir, fake_sets):
    bench = _benchmark_module()
    root = bench.torchvision_root(fake_data_dir)
    try:
        loader = bench.course_loader(root.name, {**bench.MODELS["cnn"], "batch_size": 16})
        assert len(loader.dataset) == len(fake_sets["train"])
        assert torch.equal(loader.dataset.targets, fake_sets["train"].y)
        xb, yb = next(iter(loader))
        assert xb.shape == (16, 1, 28, 28) and yb.shape == (16,)
        assert xb.min() >= 0 and xb.max() <= 1
    finally:
        root.cleanup()


@pytest.mark.parametrize("model", ["mlp", "cnn"])
def test_benchmark_runs_every_way_and_gives_both_ratios(fake_data_dir, fake_sets, monkeypatch, model):
    bench = _benchmark_module()
    monkeypatch.setitem(bench.MODELS, model, {**bench.MODELS[model], "steps": 2, "batch_size": 16})
    root = bench.torchvision_root(fake_data_dir)
    try:
        res = bench.benchmark(model, fake_sets["train"], root.name, rounds=1, warmup=1, seed=0, log=lambda s: None)
    finally:
        root.cleanup()
    ways = {"course", "bare", "toolkit"} | ({"toolkit, no aug"} if model == "cnn" else set())
    assert ways <= set(res["images_per_second"]) and all(v > 0 for v in res["images_per_second"].values())
    assert res["fit_vs_bare"] > 0 and res["toolkit_vs_course"] > 0


def test_cpu_settings_benchmark_compares_settings_to_the_baseline(monkeypatch):
    import importlib.util

    from helpers.engine.config import PROJECT_ROOT

    spec = importlib.util.spec_from_file_location("cpu_settings", PROJECT_ROOT / "scripts" / "benchmark_cpu_settings.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    for name in bench.MODELS:
        monkeypatch.setitem(bench.MODELS, name, {**bench.MODELS[name], "steps": 2})
    res = bench.main(["--rounds", "1", "--settings", "baseline,1 thread,channels-last + bf16 + fused"])
    assert set(res) == {"mlp", "cnn"} and res["cnn"]["baseline"]["vs_baseline"] == 1.0
    assert all(r["images_per_second"] > 0 for m in res.values() for r in m.values())
    with pytest.raises(SystemExit):
        bench.main(["--settings", "turbo"])


def test_cpu_settings_benchmark_times_the_avx2_path_as_the_readme_runs_it(tmp_path):
    """The README's AVX2 command, run as written (two steps, one round): the AVX2 row runs in a new process with
    torch's and oneDNN's kernels held to AVX2, where torch reports no bfloat16 hardware, so precision="auto"
    trains in float32 there, as on a laptop without AVX-512."""
    import json
    import os
    import re
    import shlex
    import subprocess
    import sys

    from helpers.engine.config import PROJECT_ROOT

    readme = (PROJECT_ROOT / "README.md").read_text()
    command = re.search(r"`(python scripts/benchmark_cpu_settings.py [^`]*AVX2 only[^`]*)`", readme).group(1)
    args = shlex.split(command.replace("\n", " "))[1:]  # the script and its arguments, as the README gives them
    done = subprocess.run([sys.executable, *args, "--rounds", "1", "--steps", "2", "--json", str(tmp_path / "cpu.json")],
                          cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    rows = json.loads((tmp_path / "cpu.json").read_text())["cnn"]
    assert list(rows) == args[args.index("--settings") + 1].split(",")
    assert rows["AVX2 only: channels-last + fused"]["images_per_second"] > 0 and rows["baseline"]["vs_baseline"] == 1
    assert rows["AVX2 only: channels-last + fused"]["cpu_capability"] != "AVX512"
    assert "torch's CPU capability there" in done.stdout
    probe = ("import torch; from helpers.engine.training import native_bf16; "
             "print(torch.backends.cpu.get_cpu_capability(), native_bf16(torch.device('cpu')))")
    env = {**os.environ, "ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"}
    out = subprocess.run([sys.executable, "-c", probe], env=env, cwd=PROJECT_ROOT, capture_output=True, text=True,
                         check=True).stdout.split()
    assert out[-1] == "False" and out[-2] != "AVX512"  # AVX2 here; a CPU below AVX2 stays below it
