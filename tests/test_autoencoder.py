"""The denoising autoencoder: shapes, noise, training history, latent projections, classifier, CNN side-by-side."""

from __future__ import annotations

import json

import matplotlib
import numpy as np
import pytest
import torch
from torch import nn

from helpers.data.fashion import select_classes
from helpers.engine.config import ConfigError
from helpers.reporting import observations, plots
from helpers.sections import autoencoder as ae_mod
from helpers.sections import make_config
from tests.conftest import fake_image_set

matplotlib.use("Agg")


@pytest.fixture(scope="module")
def sets():
    data = fake_image_set(150, seed=4)
    return data[:100], data[100:]


def test_mlp_autoencoder_has_the_course_shape():
    model = ae_mod.build_autoencoder("mlp", hidden_sizes=[512, 256], bottleneck=64)
    widths = [m.out_features for m in model.modules() if isinstance(m, nn.Linear)]
    assert widths == [512, 256, 64, 256, 512, 784]
    assert all(isinstance(m, (nn.ReLU, nn.Sigmoid, nn.Linear, nn.Flatten, nn.Unflatten, nn.Sequential, type(model)))
               for m in model.modules())
    x = torch.rand(3, 1, 28, 28)
    out = model(x)
    assert out.shape == x.shape and 0 <= out.min() and out.max() <= 1  # sigmoid output
    assert model.encoder(x).shape == (3, 64) and (model.encoder(x) >= 0).all()  # ReLU code
    assert model.code_size == 64


@pytest.mark.parametrize("channels", [[8, 16], [4, 8, 8]])
def test_conv_autoencoder_rebuilds_the_input_size(channels):
    model = ae_mod.build_autoencoder("conv", hidden_sizes=channels, bottleneck=10)
    x = torch.rand(2, 1, 28, 28)
    assert model.encoder(x).shape == (2, 10)
    assert model(x).shape == (2, 1, 28, 28)


def test_noise_is_clipped_seeded_and_of_the_right_size():
    X = torch.full((200, 1, 28, 28), 0.5)
    assert ae_mod.add_noise(X, 0.0) is X
    a, b = ae_mod.add_noise(X, 0.1, seed=1), ae_mod.add_noise(X, 0.1, seed=1)
    assert torch.equal(a, b) and not torch.equal(a, ae_mod.add_noise(X, 0.1, seed=2))
    assert (a - X).std().item() == pytest.approx(0.1, rel=0.05)
    strong = ae_mod.add_noise(X, 2.0, seed=0)
    assert strong.min() == 0 and strong.max() == 1
    assert torch.equal(X, torch.full_like(X, 0.5))  # the input is left alone


def test_training_history_and_reconstruction_error(sets):
    train, val = sets
    torch.manual_seed(0)
    model = ae_mod.build_autoencoder("mlp", hidden_sizes=[64], bottleneck=16)
    history = ae_mod.fit_autoencoder(model, train, val, num_epochs=4, batch_size=20, lr=3e-3, noise_std=0.2,
                                     progress=False, device="cpu")
    assert [r["epoch"] for r in history] == [1, 2, 3, 4]
    # the one training loop's history: accuracies are None for a reconstruction task
    assert set(history[0]) == {"epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds"}
    assert history[0]["train_acc"] is None and history[0]["val_acc"] is None
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert history[-1]["val_loss"] < history[0]["val_loss"]
    recon = ae_mod.reconstruction_mse(model, val, noise_std=0.2, device="cpu")
    assert recon["mse"] == pytest.approx(history[-1]["val_loss"], rel=0.2)  # same noise level, other draw
    assert recon["noisy_mse"] > 0
    noisy, rebuilt = ae_mod.reconstruct(model, val.X[:5], noise_std=0.2, seed=3, device="cpu")
    assert noisy.shape == rebuilt.shape == (5, 1, 28, 28)


def test_latent_codes_and_projections(sets):
    train, _ = sets
    model = ae_mod.build_autoencoder("mlp", hidden_sizes=[32], bottleneck=8)
    codes = ae_mod.latent_codes(model, train.X[:40], device="cpu")
    assert codes.shape == (40, 8)
    pca = ae_mod.project(codes, method="pca")
    assert pca.shape == (40, 2) and pca[:, 0].var() >= pca[:, 1].var() - 1e-9
    assert ae_mod.project(codes, method="tsne", seed=0).shape == (40, 2)
    assert ae_mod.project(codes[:6], method="tsne").shape == (6, 2)  # perplexity capped for tiny samples
    with pytest.raises(ConfigError, match="method"):
        ae_mod.project(codes, method="umap")
    fig = plots.plot_projection(pca, train.y[:40].numpy(), train.class_names, title="PCA")
    assert fig.axes[0].get_title() == "PCA" and len(fig.axes[0].collections) == 10
    fig = plots.plot_reconstructions(train.X[:4], train.X[:4], train.X[:4], col_titles=list("abcd"))
    assert len(fig.axes) == 12 and fig.axes[0].get_ylabel() == "clean"


@pytest.mark.parametrize("encoder", ["frozen", "finetune"])
def test_classifier_on_the_encoder_leaves_the_autoencoder_alone(sets, encoder):
    train, val = (select_classes(s, [1, 3, 5, 7, 9]) for s in sets)
    model = ae_mod.build_autoencoder("mlp", hidden_sizes=[32], bottleneck=8)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = ae_mod.train_classifier(model, train, val, val, num_epochs=2, encoder=encoder, hidden_sizes=[16],
                                     dropout=0.1, batch_size=10, device="cpu")
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    clf = result["model"]
    assert clf(val.X[:3]).shape == (3, 5) and len(result["history"]) == 2
    changed = any(not torch.equal(before[f"encoder.{k}"], v) for k, v in clf.encoder.state_dict().items())
    assert changed == (encoder == "finetune")
    row = ae_mod.classifier_row("x", result)
    assert row["test_acc"] == result["test"]["accuracy"] and row["epochs_run"] == 2


def test_load_data_maps_the_classifier_subset(fake_data_dir):
    out = ae_mod.load_data(data_dir=fake_data_dir, classes=[7, 1], ae_classes=[1, 5, 7], val_fraction=0.2)
    assert out["ae"]["train"].class_names == ["Trouser", "Sandal", "Sneaker"]
    assert out["clf"]["test"].class_names == ["Sneaker", "Trouser"]
    assert len(out["clf"]["train"]) == out["ae"]["train"].class_counts()[[0, 2]].sum()


def test_cnn_comparison_reads_the_same_classes_only(tmp_path):
    path = tmp_path / "metrics.json"
    assert ae_mod.cnn_comparison(path, [1, 3])[0] is None
    path.write_text("{not json")
    assert "not a CNN metrics file" in ae_mod.cnn_comparison(path, [1, 3])[1]
    path.write_text(json.dumps({"profile": "full", "data": {"classes": [1, 3]},
                                "best": {"name": "cnn", "test": {"accuracy": 0.97, "per_class_accuracy": {"a": 1}}}}))
    cnn, note = ae_mod.cnn_comparison(path, [1, 3])
    assert cnn["accuracy"] == 0.97 and cnn["per_class_accuracy"] == {"a": 1} and str(path) in note
    cnn, note = ae_mod.cnn_comparison(path, [1, 5])
    assert cnn is None and "not comparable" in note


def _params(**changes):
    base = {"profile": "smoke", "seed": 0, "kind": "mlp", "hidden_sizes": [512, 256], "bottleneck": 64,
            "noise_std": 0.3, "epochs": None, "classifier_epochs": None, "batch_size": 100, "lr": 0.001,
            "classes": [1, 3, 5, 7, 9], "ae_classes": None, "encoder": "finetune", "classifier_hidden": [],
            "classifier_dropout": 0.0, "compare": True, "architectures": {"thin": [128, 32]}, "epoch_options": None,
            "tsne_samples": None, "train_per_class": None, "test_per_class": None, "cnn_metrics": None,
            "grid": None, "optimizer": "adam", "init": "default", "repeats": 1, "evaluate_test": "best"}
    return {**base, **changes}


def test_config_fills_the_profile_and_rejects_bad_values():
    cfg = make_config("autoencoder", **_params())
    assert (cfg.epochs, cfg.classifier_epochs, cfg.epoch_options) == (1, 1, [1, 2])
    for changes, name in [({"kind": "vae"}, "kind"), ({"architectures": {"x": []}}, "architectures"),
                          ({"architectures": [[64, 8]]}, "architectures"), ({"ae_classes": [1, 3]}, "ae_classes"),
                          ({"encoder": "thawed"}, "encoder"), ({"noise_std": -0.1}, "noise_std"),
                          ({"bottleneck": 0}, "bottleneck"), ({"grid": {"ae_classes": [[1]]}}, "ae_classes"),
                          ({"grid": {"lr": [0.001, -1.0]}}, "configuration 2"), ({"grid": {"depth": [1]}}, "depth")]:
        with pytest.raises(ConfigError, match=name):
            make_config("autoencoder", **_params(**changes))
    grid = make_config("autoencoder", **_params(grid={"epochs": [2, 10, 20], "lr": [0.001, 0.01]})).grid_configs
    assert [(c["epochs"], c["lr"]) for c in grid] == [(2, 0.001), (2, 0.01), (2, 0.001), (2, 0.01), (2, 0.001),
                                                       (2, 0.01)]  # smoke caps the epochs at 2
    default = make_config("autoencoder", **_params()).grid_configs
    assert default == [{"name": "thin", "hidden_sizes": [128], "bottleneck": 32}]


def test_observations_speak_from_the_numbers(sets):
    train, val = (select_classes(s, [1, 3, 5]) for s in sets)
    model = ae_mod.build_autoencoder("mlp", hidden_sizes=[16], bottleneck=4)
    history = ae_mod.fit_autoencoder(model, train, val, num_epochs=2, noise_std=0.2, progress=False, device="cpu")
    clf = ae_mod.train_classifier(model, train, val, val, num_epochs=1, device="cpu")
    text = observations.autoencoder_observations(ae_history=history, recon={"mse": 0.02, "noisy_mse": 0.04},
                                                 classifier=clf, cnn={"accuracy": 0.9})
    assert "removes 50%" in text and f"{clf['test']['accuracy']:.2%}" in text and "CNN" in text
    hardest = clf["test"]["per_class"].sort_values("accuracy").iloc[0]
    assert f"- **Hardest class:** {hardest['class']} ({hardest['accuracy']:.1%}); easiest:" in text
    assert np.isfinite(clf["test"]["loss"])


def test_epoch_comparison_reuses_the_main_classifier_and_makes_one_row_per_run(sets):
    train, val = (select_classes(s, [1, 3, 5]) for s in sets)
    model = ae_mod.build_autoencoder("mlp", hidden_sizes=[16], bottleneck=4)
    cfg = make_config("autoencoder", **_params(classes=[1, 3, 5], device="cpu"))
    clf = ae_mod.train_classifier(model, train, val, val, num_epochs=cfg.classifier_epochs, device="cpu")
    runs, table = ae_mod.epoch_comparison(model, clf, cfg, train=train, val=val, test=val)
    assert list(runs) == [f"{n} epochs" for n in cfg.epoch_options] == ["1 epochs", "2 epochs"]
    assert runs[f"{cfg.classifier_epochs} epochs"] is clf  # the main classifier is not trained again
    assert list(table["epochs_run"]) == [1, 2] and list(table.columns[:2]) == ["name", "epochs_run"]
    assert set(ae_mod.EPOCH_COLUMNS) <= set(table.columns)
    skipped = make_config("autoencoder", **_params(classes=[1, 3, 5], device="cpu", compare=False))
    assert ae_mod.epoch_comparison(model, clf, skipped, train=train, val=val, test=val)[1].empty


def test_side_by_side_is_per_class_and_overall_in_percent(sets):
    train, val = (select_classes(s, [1, 3]) for s in sets)
    model = ae_mod.build_autoencoder("mlp", hidden_sizes=[16], bottleneck=4)
    clf = ae_mod.train_classifier(model, train, val, val, num_epochs=1, device="cpu")
    names = list(clf["test"]["per_class"]["class"])
    side = ae_mod.side_by_side({"accuracy": 0.5, "per_class_accuracy": {n: 0.25 for n in names}}, clf["test"])
    assert list(side.index) == [*names, "overall"] and side.loc["overall", "CNN report"] == 50.0
    assert side.loc["overall", "encoder + classifier"] == round(clf["test"]["accuracy"] * 100, 2)


def test_epoch_marks_on_every_axis():
    history = [{"epoch": e, "train_loss": 1 / e, "val_loss": 1.2 / e, "train_acc": 0.5, "val_acc": 0.5} for e in (1, 2, 3)]
    fig = plots.plot_learning_curves({"run": history})
    before = [len(ax.lines) for ax in fig.axes]
    assert plots.mark_epochs(fig, {"stop after 1": 1, "stop after 2": 2}) is fig
    assert [len(ax.lines) for ax in fig.axes] == [n + 2 for n in before]


ACCELERATOR = "cuda" if torch.cuda.is_available() else (
    "mps" if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available() else None)


@pytest.mark.skipif(ACCELERATOR is None, reason="needs CUDA or MPS")
def test_denoising_trains_on_the_accelerator(sets):
    # the noise is drawn on the device holding the batch (a CPU generator there used to crash on MPS)
    train, val = sets
    model = ae_mod.build_autoencoder("mlp", hidden_sizes=[32], bottleneck=8)
    history = ae_mod.fit_autoencoder(model, train, val, num_epochs=1, batch_size=20, noise_std=0.2,
                                     progress=False, device=ACCELERATOR)
    assert history.stop_reason == "completed" and next(model.parameters()).device.type == ACCELERATOR
