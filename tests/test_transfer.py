"""Transfer learning: input adaptation, backbones and heads, freezing, feature caching, weights, the modes."""

from __future__ import annotations

import copy
from urllib.error import URLError

import pandas as pd
import pytest
import torch
from torch import nn

from helpers import transfer
from helpers.config import ConfigError, make_config
from helpers.data import ImageSet, select_classes
from helpers.training import fit
from tests.conftest import fake_image_set

SIZE = 32  # the smallest image size the backbones accept


@pytest.fixture(scope="module")
def tiny():
    """Five classes, 30 training and 15 validation images of 28x28."""
    data = select_classes(fake_image_set(90, seed=3), [1, 3, 5, 7, 9])
    return data[:30], data[30:]


def test_input_adapter_makes_three_normalized_channels_of_the_right_size():
    adapter = transfer.InputAdapter(SIZE, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    out = adapter(torch.full((4, 1, 28, 28), 0.75))
    assert out.shape == (4, 3, SIZE, SIZE)
    assert torch.allclose(out, torch.ones_like(out), atol=1e-5)  # (0.75 - 0.5) / 0.25
    rgb = torch.rand(2, 3, 64, 64)
    assert adapter(rgb).shape == (2, 3, SIZE, SIZE)  # larger images are downsampled
    same = transfer.InputAdapter(64)(rgb)
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


def test_pretrain_then_compare_the_modes(tiny):
    train, val = tiny
    source = ImageSet(train.X.flip(-1), train.y, [f"source {i}" for i in range(5)])
    pre = transfer.pretrain("resnet18", source, None, image_size=SIZE, epochs=1, batch_size=16, seed=0)
    assert len(pre["history"]) == 1 and len(pre["weights"]["mean"]) == 3
    assert pre["weights"]["mean"][0] == pytest.approx(float(source.X.mean()), abs=1e-5)
    result = transfer.run_modes("resnet18", modes=["scratch", "frozen", "finetune"], weights=pre["weights"],
                                train=train, val=val, test=val, image_size=SIZE, epochs=1, batch_size=16)
    table = result["table"].set_index("mode")
    assert list(table.index) == ["scratch", "frozen", "finetune"]
    assert table.loc["scratch", "weights"] == "random" and "source 0" in table.loc["frozen", "weights"]
    assert table.loc["frozen", "params"] == sum(p.numel() for p in result["models"]["resnet18 / frozen"].head.parameters())
    assert table.loc["frozen", "frozen_params"] > 0 == table.loc["finetune", "frozen_params"]
    assert (table["seconds"] > 0).all() and table["test_acc"].between(0, 1).all()
    assert set(result["tests"]) == set(result["histories"]) == set(table["name"])
    text = transfer.observations(result["table"], best_test=result["tests"]["resnet18 / frozen"],
                                 pretrain_info={"source": "x", "val_acc": 0.5, "seconds": 1.0})
    assert "Best by validation accuracy" in text and "faster than fine-tuning" in text


def _params(**changes):
    base = {"profile": "smoke", "seed": 0, "dataset": "fashion_mnist", "classes": [1, 3, 5, 7, 9],
            "source_classes": [0, 2, 4, 6, 8], "backbones": ["resnet18"], "weights": "pretrain",
            "modes": ["scratch", "frozen", "finetune"], "image_size": None, "color": "auto", "labels_per_class": None,
            "val_per_class": None, "test_per_class": None, "epochs": None, "batch_size": 32, "optimizer": "sgd",
            "lr": 0.001, "momentum": 0.9, "head_hidden": 256, "head_dropout": 0.5, "pretrain_epochs": None,
            "pretrain_per_class": None, "pretrain_batch_size": 128, "pretrain_lr": 0.001}
    return {**base, **changes}


def test_config_fills_the_profile_and_rejects_bad_values(tmp_path):
    cfg = make_config("transfer", **_params())
    assert (cfg.image_size, cfg.epochs, cfg.labels_per_class) == (32, 1, 10)
    assert make_config("transfer", **_params(profile="full")).pretrain_per_class == "all"
    for changes, name in [({"backbones": ["alexnet"]}, "backbones"), ({"modes": []}, "modes"),
                          ({"classes": [0, 1, 3]}, "source_classes"), ({"image_size": 16}, "image_size"),
                          ({"weights": str(tmp_path / "nope.pt")}, "weights"), ({"labels_per_class": 0}, "labels_per_class"),
                          ({"dataset": str(tmp_path / "missing")}, "dataset"), ({"head_dropout": 1.0}, "head_dropout")]:
        with pytest.raises(ConfigError, match=name):
            make_config("transfer", **_params(**changes))



def test_comparison_view_short_weights_percent_and_headers():
    table = pd.DataFrame({
        "name": ["r / scratch", "r / frozen", "r / imagenet"],
        "weights": ["random", "pretrained on T-shirt/top, Coat (5,000 images, 2 epochs)",
                    "ImageNet (ResNet18_Weights.IMAGENET1K_V1)"],
        "weights_label": ["random", "source-task pretraining", "ImageNet"],
        "params": [100, 10, 100], "frozen_params": [0, 90, 0], "epochs_run": [3, 3, 3], "train_acc": [0.9, 0.7, 0.95],
        "val_acc": [0.85, 0.7, 0.9], "val_loss": [0.4, 0.8, 0.3], "test_acc": [0.8456, 0.7, 0.9],
        "test_loss": [0.41234, 0.8, 0.3], "seconds": [10.0, 1.0, 12.0]})
    view = transfer.comparison_view(table)
    assert list(view["weights"]) == ["random", "source-task pretraining", "ImageNet"]
    assert list(view.columns) == ["weights", "trainable", "frozen", "epochs", "train acc %", "val acc %",
                                  "test acc %", "test loss", "seconds"]
    assert view.loc["r / scratch", "test acc %"] == 84.56 and view.loc["r / scratch", "test loss"] == 0.4123
