"""Transfer learning: input adaptation, backbones and heads, freezing, feature caching, weights, the modes."""

from __future__ import annotations

import copy
from urllib.error import URLError

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from torch import nn

from helpers.data.fashion import ImageSet, select_classes
from helpers.engine import experiment
from helpers.engine.config import ConfigError
from helpers.engine.metrics import evaluate
from helpers.engine.training import fit
from helpers.reporting import observations
from helpers.sections import backbones, make_config, transfer
from tests.conftest import fake_image_set

SIZE = 32  # the smallest image size the backbones accept


@pytest.fixture(scope="module")
def tiny():
    """Five classes, 30 training and 15 validation images of 28x28."""
    data = select_classes(fake_image_set(90, seed=3), [1, 3, 5, 7, 9])
    return data[:30], data[30:]


def test_input_adapter_makes_three_normalized_channels_of_the_right_size():
    adapter = backbones.InputAdapter(SIZE, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    out = adapter(torch.full((4, 1, 28, 28), 0.75))
    assert out.shape == (4, 3, SIZE, SIZE)
    assert torch.allclose(out, torch.ones_like(out), atol=1e-5)  # (0.75 - 0.5) / 0.25
    rgb = torch.rand(2, 3, 64, 64)
    assert adapter(rgb).shape == (2, 3, SIZE, SIZE)  # larger images are downsampled
    same = backbones.InputAdapter(64)(rgb)
    assert torch.allclose(same, (rgb - same.new_tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
                          / same.new_tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1), atol=1e-5)


@pytest.mark.parametrize("name, width", [("resnet18", 512), ("mobilenet_v3_small", 576)])
def test_backbones_give_features_and_the_course_head_gives_logits(name, width):
    torch.manual_seed(0)
    model = transfer.build_transfer_model(name, 5, image_size=SIZE, head_hidden=256, head_dropout=0.5).eval()
    x = torch.rand(2, 1, 28, 28)
    assert model.feature_extractor()(x).shape == (2, width)
    assert model(x).shape == (2, 5)
    head = model.head
    assert [type(m) for m in head] == [nn.Linear, nn.ReLU, nn.Dropout, nn.Linear]
    assert (head[0].in_features, head[0].out_features, head[3].out_features) == (width, 256, 5)
    assert head[2].p == 0.5


def test_unknown_backbone_is_refused():
    with pytest.raises(ConfigError, match="backbone"):
        transfer.build_backbone("alexnet")


def test_frozen_backbone_really_stays_frozen(tiny):
    train, val = tiny
    torch.manual_seed(0)
    model = transfer.build_transfer_model("resnet18", 5, image_size=SIZE).freeze_backbone()
    before = {k: v.clone() for k, v in model.backbone.state_dict().items()}  # weights and batch-norm statistics
    head_before = copy.deepcopy(model.head.state_dict())
    counts = transfer.count_parameters(model)
    assert counts["trainable"] == sum(p.numel() for p in model.head.parameters())
    assert counts["frozen"] == sum(p.numel() for p in model.backbone.parameters())
    model.train()
    assert not model.backbone.training and model.head.training
    fit(model, train, val, num_epochs=1, batch_size=8, optimizer="sgd", lr=0.01, progress=False, device="cpu")
    after = model.backbone.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert any(not torch.equal(head_before[k], v) for k, v in model.head.state_dict().items())


def test_cached_features_train_the_head_exactly_as_running_the_backbone(tiny):
    train, val = tiny
    torch.manual_seed(0)
    model = transfer.build_transfer_model("resnet18", 5, image_size=SIZE, head_dropout=0.5).freeze_backbone()
    head = copy.deepcopy(model.head)
    args = {"num_epochs": 2, "batch_size": 8, "optimizer": "sgd", "lr": 0.01, "seed": 1, "progress": False,
            "device": "cpu"}
    slow = fit(model, train, val, **args)  # the backbone runs on every batch
    extractor = model.feature_extractor()
    feats = {k: transfer.feature_set(extractor, d, device="cpu") for k, d in (("train", train), ("val", val))}
    assert feats["train"].X.shape == (len(train), 512) and torch.equal(feats["train"].y, train.y)
    fast = fit(head, feats["train"], feats["val"], **args)  # features computed once
    for a, b in zip(slow, fast):
        for key in ("train_loss", "train_acc", "val_loss", "val_acc"):
            assert a[key] == pytest.approx(b[key], abs=1e-4)
    for k, v in model.head.state_dict().items():
        assert torch.allclose(v, head.state_dict()[k], atol=1e-4)


def test_imagenet_offline_error_says_how_to_get_the_weights(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "hub"))

    def offline(url, dst, *args, **kwargs):
        raise URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(transfer.WeightsUnavailableError) as info:
        transfer.get_weights("imagenet", "resnet18")
    message = str(info.value)
    assert "resnet18-f37072fd.pth" in message and str(tmp_path / "hub" / "checkpoints") in message
    assert "weights='pretrain'" in message and "weights='none'" in message and "network" in message


def test_imagenet_weights_from_the_hub_cache(tmp_path, monkeypatch):
    """A file already in the cache is used without the network (here a stand-in with random weights)."""
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "hub"))
    monkeypatch.setattr(torch.hub, "download_url_to_file", lambda *a, **k: pytest.fail("tried to download"))
    import torchvision

    full = torchvision.models.resnet18(weights=None)  # with the 1000-class fc, as the real file has
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    torch.save(full.state_dict(), tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth")
    weights = transfer.get_weights("imagenet", "resnet18")
    assert weights["mean"] == pytest.approx([0.485, 0.456, 0.406]) and "ImageNet" in weights["source"]
    assert "fc.weight" not in weights["state_dict"]
    model = transfer.build_transfer_model("resnet18", 3, image_size=SIZE, weights=weights)
    assert torch.equal(model.backbone.conv1.weight, full.conv1.weight)


def test_checkpoints_round_trip_and_mismatches_fail(tmp_path):
    torch.manual_seed(0)
    model = transfer.build_transfer_model("resnet18", 5, image_size=SIZE)
    weights = {"state_dict": model.backbone.state_dict(), "mean": [0.3] * 3, "std": [0.2] * 3, "source": "test"}
    path = transfer.save_weights(tmp_path / "ckpt" / "b.pt", weights, backbone="resnet18")
    loaded = transfer.get_weights(str(path), "resnet18")
    assert loaded["mean"] == [0.3] * 3 and "test" in loaded["source"]
    clone = transfer.build_transfer_model("resnet18", 2, image_size=SIZE, weights=loaded)
    assert torch.equal(clone.backbone.layer4[1].conv2.weight, model.backbone.layer4[1].conv2.weight)
    assert torch.allclose(clone.adapter.mean.flatten(), torch.full((3,), 0.3))
    with pytest.raises(transfer.WeightsUnavailableError, match="resnet18 backbone, not mobilenet_v3_small"):
        transfer.load_weights(path, "mobilenet_v3_small")
    torch.save(model.backbone.state_dict(), tmp_path / "plain.pt")  # a torchvision-style state dict
    assert transfer.load_weights(tmp_path / "plain.pt", "resnet18")["mean"] == [0.485, 0.456, 0.406]
    with pytest.raises(transfer.WeightsUnavailableError, match="does not fit backbone"):
        transfer.load_weights(tmp_path / "plain.pt", "mobilenet_v3_small")
    (tmp_path / "junk.pt").write_text("not a checkpoint")
    with pytest.raises(transfer.WeightsUnavailableError, match="not a readable checkpoint"):
        transfer.load_weights(tmp_path / "junk.pt", "resnet18")
    assert transfer.get_weights("none", "resnet18") is None


def _settings(**changes):
    """One run's settings, as the engine gives them to train_one (base parameters with a configuration over them)."""
    base = {"backbone": "resnet18", "mode": "finetune", "weights": "pretrain", "image_size": SIZE, "epochs": 1,
            "frozen_epochs": None, "batch_size": 16, "optimizer": "sgd", "lr": 0.01, "momentum": 0.9,
            "weight_decay": 0.0, "head_hidden": 32, "head_dropout": 0.5, "init": "default", "device": "cpu"}
    return {**base, **changes}


@pytest.fixture()
def source(tiny):
    """A source task of other 'classes' (the images mirrored) for the toolkit's own pretraining."""
    train, val = tiny
    names = [f"source {i}" for i in range(5)]
    return {"train": ImageSet(train.X.flip(-1), train.y, names), "val": ImageSet(val.X.flip(-1), val.y, names)}


@pytest.fixture()
def count_pretraining(monkeypatch):
    """transfer.pretrain, counting its calls as (backbone, image size)."""
    calls, real = [], transfer.pretrain

    def counted(backbone, *args, **kwargs):
        calls.append((backbone, kwargs["image_size"]))
        return real(backbone, *args, **{**kwargs, "num_epochs": 1})

    monkeypatch.setattr(backbones, "pretrain", counted)  # BackboneWeights calls it there
    return calls


def test_train_one_in_each_mode(tiny, source, count_pretraining, tmp_path):
    train, val = tiny
    weights = transfer.BackboneWeights(source, num_epochs=1, batch_size=16, head_hidden=32, device="cpu",
                                       save_dir=tmp_path, image_size=SIZE)
    out = {m: transfer.train_one(_settings(mode=m, frozen_epochs=3 if m == "frozen" else None), train=train, val=val,
                                 seed=0, weights=weights) for m in transfer.MODES}
    assert count_pretraining == [("resnet18", SIZE)]  # made once, for frozen and finetune
    assert (tmp_path / "pretrained_resnet18.pt").is_file()
    pre = weights.get("pretrain", "resnet18", SIZE)
    frozen = out["frozen"]["model"]
    assert all(torch.equal(v, pre["state_dict"][k]) for k, v in frozen.backbone.state_dict().items())
    assert len(out["frozen"]["history"]) == 3 and len(out["finetune"]["history"]) == 1
    for m, o in out.items():
        assert o["model"].eval()(val.X[:4]).shape == (4, 5), m  # every model runs on images, the frozen one too
        assert o["history"][-1]["val_acc"] is not None
    rows = {m: o["row"] for m, o in out.items()}
    assert rows["scratch"]["weights"] == rows["scratch"]["weights_label"] == "random"
    assert "source 0" in rows["frozen"]["weights"] and rows["frozen"]["weights_label"] == "source-task pretraining"
    assert rows["frozen"]["frozen_params"] == sum(p.numel() for p in frozen.backbone.parameters())
    assert rows["finetune"]["frozen_params"] == 0 == rows["scratch"]["frozen_params"]
    # every mode normalises its inputs alike (the source images' statistics)
    assert all(torch.equal(o["model"].adapter.mean, frozen.adapter.mean) for o in out.values())
    # the frozen run's head trained on cached features; its evaluation on images agrees with its last epoch
    assert evaluate(frozen, val, device="cpu")["accuracy"] == pytest.approx(out["frozen"]["history"][-1]["val_acc"])


def test_same_head_start_in_every_mode_and_init_of_the_new_layers(tiny):
    train, val = tiny
    heads = {}
    for mode, init in (("scratch", "default"), ("frozen", "default"), ("finetune", "he"), ("scratch", "he")):
        torch.manual_seed(0)
        s = _settings(mode=mode, weights="none", init=init, epochs=1, lr=1e-12)  # lr ~0: weights stay as initialised
        heads[mode, init] = transfer.train_one(s, train=train, val=val, seed=3)["model"]
    a, b = heads["scratch", "default"].head[0].weight, heads["frozen", "default"].head[0].weight
    assert torch.allclose(a, b, atol=1e-6)
    he_ft, he_sc = heads["finetune", "he"], heads["scratch", "he"]
    assert torch.allclose(he_ft.head[0].weight, he_sc.head[0].weight, atol=1e-6)
    assert not torch.allclose(he_ft.head[0].weight, a, atol=1e-3)
    assert float(he_ft.head[0].bias.detach().abs().max()) < 1e-6  # init zeroes biases
    conv = heads["scratch", "he"].backbone.conv1.weight  # scratch: the backbone too
    assert not torch.allclose(conv, heads["scratch", "default"].backbone.conv1.weight, atol=1e-3)


def test_pretrain_needs_a_source():
    with pytest.raises(ValueError, match="source task"):
        transfer.BackboneWeights().get("pretrain", "resnet18", SIZE)


def test_pretraining_is_done_once_for_all_configurations(tiny, source, count_pretraining):
    train, val = tiny
    weights = transfer.BackboneWeights(source, num_epochs=1, batch_size=16, head_hidden=32, device="cpu")
    configs = experiment.expand_grid({"mode": ["scratch", "frozen", "finetune"], "lr": [0.01, 0.05]},
                                     varying=transfer.RUN_PARAMETERS)
    base = _settings(epochs=1)
    needs = weights.prepare(configs, base=base)
    assert [(n["backbone"], n["weights"], n["image_size"]) for n in needs] == [("resnet18", "pretrain", SIZE)]
    result = experiment.run_experiment(configs, base=base, train_one=transfer.make_train_one(weights), train=train,
                                       val=val, test=val, repeats=2, seed=0, evaluate_test="all", device="cpu")
    assert count_pretraining == [("resnet18", SIZE)]  # 6 configurations x 2 repeats, one pretraining
    assert len(result["table"]) == 6 and set(result["models"]) == {c["name"] for c in configs}
    # another image size is another pretraining (the source images are resized to it)
    sizes = experiment.expand_grid({"image_size": [SIZE, 40]}, varying=transfer.RUN_PARAMETERS)
    experiment.run_experiment(sizes, base=_settings(mode="frozen"), train_one=transfer.make_train_one(weights),
                              train=train, val=val, device="cpu")
    assert count_pretraining == [("resnet18", SIZE), ("resnet18", 40)]
    assert set(weights.records()) == {"resnet18", "resnet18 @ 40 px"}  # the first size keeps the short name


def _params(**changes):
    """The transfer notebook's parameters cell (smoke profile)."""
    base = {"profile": "smoke", "seed": 0, "data_dir": None, "output_dir": None, "dataset": "fashion_mnist",
            "classes": None, "source_classes": [0, 2, 4, 6, 8], "grid": None, "backbones": ["resnet18"],
            "modes": ["scratch", "frozen", "finetune"], "repeats": 1, "evaluate_test": "all", "backbone": "resnet18",
            "mode": "finetune", "weights": "pretrain", "image_size": None, "color": "auto", "labels_per_class": None,
            "val_per_class": None, "test_per_class": None, "val_fraction": 0.15, "epochs": None,
            "frozen_epochs": None, "batch_size": 32, "optimizer": "sgd", "lr": 0.001, "momentum": 0.9,
            "weight_decay": 0.0, "head_hidden": 256, "head_dropout": 0.5, "init": "default", "pretrain_epochs": None,
            "pretrain_per_class": None, "pretrain_batch_size": 128, "pretrain_lr": 0.001, "device": "auto",
            "checkpoint_every": 0, "author_name": "A", "author_id": "1", "course": "C"}
    return {**base, **changes}


def test_parameters_match_the_notebook():
    import papermill

    from helpers.cli.runner import notebook_path

    assert tuple(papermill.inspect_notebook(str(notebook_path("transfer")))) == transfer.PARAMETERS


def test_config_fills_the_profile_and_rejects_bad_values(tmp_path):
    cfg = make_config("transfer", _params())
    assert (cfg.image_size, cfg.epochs, cfg.labels_per_class) == (32, 1, 10)
    assert cfg.classes == [1, 3, 5, 7, 9]  # Fashion-MNIST's target task when classes is None
    assert make_config("transfer", _params(profile="full")).pretrain_per_class == "all"
    for changes, name in [({"backbones": ["alexnet"]}, "backbones"), ({"modes": []}, "modes"),
                          ({"classes": [0, 1, 3]}, "source_classes"), ({"image_size": 16}, "image_size"),
                          ({"weights": str(tmp_path / "nope.pt")}, "weights"), ({"labels_per_class": 0}, "labels_per_class"),
                          ({"dataset": str(tmp_path / "missing")}, "dataset"), ({"head_dropout": 1.0}, "head_dropout"),
                          ({"grid": {"mode": ["warm"]}}, "grid configuration 1 .*mode"),
                          ({"grid": {"lr": [0.01, -1]}}, "grid configuration 2 .*lr"),
                          ({"grid": {"classes": [[1, 3]]}}, "fixed for the whole report"),
                          ({"grid": {"pretrain_epochs": [1, 2]}}, "not a parameter of a run"),
                          ({"grid": {"image_size": [32, 24]}}, "image_size"),
                          ({"grid": {"frozen_epochs": [0]}}, "frozen_epochs"),
                          ({"weight_decay": -1}, "weight_decay"), ({"init": "orthogonal"}, "init")]:
        with pytest.raises(ConfigError, match=name):
            make_config("transfer", _params(**changes))


def test_default_grid_is_backbones_by_modes():
    cfg = make_config("transfer", _params(backbones=["resnet18", "mobilenet_v3_small"], modes=["frozen", "finetune"]))
    assert cfg.grid == {"backbone": ["resnet18", "mobilenet_v3_small"], "mode": ["frozen", "finetune"]}
    assert [(c["backbone"], c["mode"]) for c in cfg.grid_configs] == [
        ("resnet18", "frozen"), ("resnet18", "finetune"), ("mobilenet_v3_small", "frozen"),
        ("mobilenet_v3_small", "finetune")]
    # with a grid, backbones and modes are not used; backbone and mode are the base of every configuration
    cfg = make_config("transfer", _params(grid={"lr": [0.001, 0.01]}, modes=[], backbone="vgg11", mode="frozen"))
    assert [c["name"] for c in cfg.grid_configs] == ["lr 0.001", "lr 0.01"]
    assert (cfg.backbone, cfg.mode) == ("vgg11", "frozen")


def test_a_grid_of_learning_rates(tiny, source, tmp_path):
    train, val = tiny
    cfg = make_config("transfer", _params(grid={"lr": [0.001, 0.05]}, mode="frozen", head_hidden=32, device="cpu",
                                          output_dir=str(tmp_path)))
    weights = transfer.BackboneWeights.from_config(cfg, source)
    result = experiment.run_experiment(cfg.grid_configs, base=cfg, train_one=transfer.make_train_one(weights),
                                       train=train, val=val, test=val, evaluate_test="all", device="cpu")
    table = result["table"].set_index("name")
    assert set(table.index) == {"lr 0.001", "lr 0.05"} and result["varied"] == ["lr"]
    assert (table["frozen_params"] > 0).all() and table["test_acc"].between(0, 1).all()
    view = transfer.comparison_view(result)
    assert view.index.names == ["lr"] and list(view.index) == list(result["table"]["lr"])
    assert list(view.columns) == ["backbone weights", "trainable", "frozen", "epochs", "train acc %", "val acc %",
                                  "test acc %", "test loss", "seconds"]
    assert (view["backbone weights"] == "source-task pretraining").all()
    best = experiment.best_config(result["table"], cfg.grid_configs)
    test_result = evaluate(result["models"][best["name"]], val, device="cpu")
    text = observations.transfer_observations(result, base=cfg, best=best, test_result=test_result, pretrained=weights)
    assert "**Best configuration:**" in text and "**Pretraining** (`resnet18`)" in text
    assert (tmp_path / "checkpoints" / "pretrained_resnet18.pt").is_file()
    assert f"{test_result['accuracy']:.2%} test accuracy" in text and "not retrained" in text
    assert "against training from scratch" not in text  # mode does not vary here


def test_mode_observations_compare_each_group_with_scratch():
    configs = experiment.expand_grid({"mode": ["scratch", "frozen", "finetune"], "lr": [0.01, 0.1]},
                                     varying=transfer.RUN_PARAMETERS)
    acc = {"scratch": 0.5, "frozen": 0.7, "finetune": 0.8}
    rows = [{"name": c["name"], "mode": c["mode"], "lr": str(c["lr"]), "val_acc": acc[c["mode"]] - c["lr"],
             "test_acc": acc[c["mode"]] + c["lr"], "params": 10 if c["mode"] == "frozen" else 100,
             "frozen_params": 90 if c["mode"] == "frozen" else 0, "seconds": 1.0 if c["mode"] == "frozen" else 4.0}
            for c in configs]
    result = {"table": pd.DataFrame(rows), "varied": ["mode", "lr"], "configs": configs}
    lines = observations.mode_observations(result, base={"backbone": "resnet18"})
    assert len(lines) == 6
    assert lines[0] == ("- `lr 0.01`: **frozen** scores 71.00% test accuracy, +20.00% against training from scratch "
                        "(51.00%) with the same labels.")
    assert "trains 10 parameters (10.0% of the model) in 1.0 s, 4.0x faster than fine-tuning (4.0 s), for -10.00% " \
           "test accuracy" in lines[2]
    assert lines[3].startswith("- `lr 0.1`:")


def write_png(path, value, mode="L", size=(20, 20)):
    path.parent.mkdir(parents=True, exist_ok=True)
    shape = size if mode == "L" else (*size, 3)
    Image.fromarray(np.full(shape, value, dtype=np.uint8), mode=mode).save(path)


def make_folder(root, classes=("cat", "dog", "fox"), n_train=8, n_test=3, n_val=0):
    """root/{train,test[,val]}/<class>/<i>.png, class k a flat image of grey level 30 + 80 k (with noise)."""
    rng = np.random.default_rng(0)
    for split, n in (("train", n_train), ("test", n_test), ("val", n_val)):
        for k, name in enumerate(classes):
            for i in range(n):
                write_png(root / split / name / f"{i}.png", int(30 + 80 * k + rng.integers(0, 20)))
    return root


def test_a_three_class_folder_without_classes(tmp_path):
    root = make_folder(tmp_path / "animals")
    cfg = make_config("transfer", _params(dataset=str(root), classes=None, weights="none", mode="frozen",
                                          grid={"lr": [0.01]}, labels_per_class="all", val_per_class="all",
                                          test_per_class=None, head_hidden=16, device="cpu"))
    assert cfg.classes is None
    task = transfer.load_task(dataset=cfg.dataset, classes=cfg.classes, image_size=SIZE, labels_per_class="all",
                              val_per_class="all", val_fraction=cfg.val_fraction, seed=0)
    assert task["train"].class_names == ["cat", "dog", "fox"] and len(task["test"]) == 9
    assert task["train"].X.shape[1:] == (1, SIZE, SIZE) and task["validation"] == "held out from train/"
    result = experiment.run_experiment(cfg.grid_configs, base=cfg, train_one=transfer.train_one, train=task["train"],
                                       val=task["val"], test=task["test"], evaluate_test="all", device="cpu")
    assert list(result["per_class"]["lr 0.01"]) == ["cat", "dog", "fox"]
    # the old Fashion-MNIST default would name classes the folder does not have: refused before anything trains
    with pytest.raises(ConfigError, match=r"classes=\[1, 3, 5, 7, 9\].*3 classes \(cat, dog, fox\)"):
        make_config("transfer", _params(dataset=str(root), classes=[1, 3, 5, 7, 9]))
    cfg = make_config("transfer", _params(dataset=str(root), classes=[2, 0]))
    picked = transfer.load_task(dataset=cfg.dataset, classes=cfg.classes, image_size=SIZE, val_fraction=0.25)
    assert picked["train"].class_names == ["fox", "cat"]


def test_a_val_folder_is_the_validation_set(tmp_path):
    root = make_folder(tmp_path / "animals", n_train=6, n_test=2, n_val=4)
    task = transfer.load_task(dataset=str(root), image_size=SIZE, labels_per_class="all", val_per_class="all")
    assert task["validation"] == "val/ folder"
    assert (len(task["train"]), len(task["val"]), len(task["test"])) == (18, 12, 6)  # train/ is not split
    assert task["val"].class_counts().tolist() == [4, 4, 4]
    capped = transfer.load_task(dataset=str(root), image_size=SIZE, labels_per_class=2, val_per_class=3)
    assert (len(capped["train"]), len(capped["val"])) == (6, 9)
