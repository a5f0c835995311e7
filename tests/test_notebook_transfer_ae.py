"""The transfer-learning and autoencoder notebooks executed by papermill in the smoke profile on fixture data."""

from __future__ import annotations

import json

import nbformat
import papermill
import pytest

from helpers.cli.runner import NOTEBOOKS_DIR, notebook_path
from helpers.engine.config import Config, ConfigError
from tests.consistency import assert_repeats, check_test_result

TRANSFER_FIGURES = ("samples", "pretraining_curves", "learning_curves", "learning_curves_overlay", "test_accuracy",
                    "per_class_comparison", "confusion_matrix", "per_class_accuracy")
AE_FIGURES = ("reconstruction_curves", "reconstructions", "latent_pca", "latent_tsne", "classifier_curves",
              "confusion_matrix", "per_class_accuracy", "architecture_reconstruction_curves",
              "architecture_classifier_curves", "epochs_curves")
TARGET_NAMES = ["Trouser", "Dress", "Sandal", "Sneaker", "Ankle boot"]


def execute(section, tmp_path, **params):
    out = tmp_path / f"{section}.ipynb"
    papermill.execute_notebook(str(notebook_path(section)), str(out), parameters=params, cwd=str(NOTEBOOKS_DIR),
                               progress_bar=False)
    return nbformat.read(str(out), as_version=4)


def markdown_text(nb) -> str:
    return "\n".join(o.get("data", {}).get("text/markdown", "") for c in nb.cells for o in c.get("outputs", []))


@pytest.fixture(scope="module", autouse=True)
def no_progress_bars():
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HELPERS_PROGRESS", "0")  # the kernels inherit it
        yield


def transfer_parameters(data_dir, output_dir) -> dict:
    return {"profile": "smoke", "data_dir": str(data_dir), "output_dir": str(output_dir),
            "author_name": "Ada Lovelace", "author_id": "A-42"}


def ae_parameters(data_dir, output_dir, cnn_metrics) -> dict:
    return {"profile": "smoke", "data_dir": str(data_dir), "output_dir": str(output_dir),
            "cnn_metrics": str(cnn_metrics), "author_name": "Ada Lovelace"}


@pytest.fixture(scope="module")
def transfer_run(tmp_path_factory, fake_data_dir):
    tmp = tmp_path_factory.mktemp("transfer_smoke")
    nb = execute("transfer", tmp, **transfer_parameters(fake_data_dir, tmp / "out"))
    return nb, tmp / "out"


@pytest.fixture(scope="module")
def ae_run(tmp_path_factory, fake_data_dir):
    tmp = tmp_path_factory.mktemp("ae_smoke")
    cnn = tmp / "cnn_metrics.json"
    cnn.write_text(json.dumps({"profile": "full", "data": {"classes": [1, 3, 5, 7, 9]},
                               "best": {"name": "max + batch_norm", "test": {
                                   "accuracy": 0.9, "per_class_accuracy": {n: 0.9 for n in TARGET_NAMES}}}}))
    nb = execute("autoencoder", tmp, **ae_parameters(fake_data_dir, tmp / "out", cnn))
    return nb, tmp / "out"


def test_a_second_transfer_run_gives_the_same_metrics(transfer_run, tmp_path, fake_data_dir, monkeypatch):
    """Same parameters and seed in a second kernel, the cache off so that it trains: the same numbers."""
    monkeypatch.setenv("HELPERS_CACHE", "off")
    execute("transfer", tmp_path, **transfer_parameters(fake_data_dir, tmp_path / "out"))
    assert_repeats(transfer_run[1] / "metrics.json", tmp_path / "out" / "metrics.json")


def test_a_second_autoencoder_run_gives_the_same_metrics(ae_run, tmp_path, fake_data_dir, monkeypatch):
    """As for transfer: the autoencoder, its classifier on the codes and the comparison with the CNN report."""
    monkeypatch.setenv("HELPERS_CACHE", "off")
    out = ae_run[1]
    execute("autoencoder", tmp_path, **ae_parameters(fake_data_dir, tmp_path / "out", out.parent / "cnn_metrics.json"))
    assert_repeats(out / "metrics.json", tmp_path / "out" / "metrics.json")


GRIDS = {"transfer": {"mode": ["frozen", "finetune"], "lr": [0.001, 0.01]},
         "autoencoder": {"hidden_sizes": [[32], [64, 32]], "bottleneck": [8]}}


@pytest.mark.parametrize("section", ["transfer", "autoencoder"])
def test_parameters_cell_first_and_no_committed_outputs(section, tmp_path):
    nb = nbformat.read(str(notebook_path(section)), as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert "parameters" in code[0].metadata.get("tags", [])
    assert all(not c.get("outputs") for c in code), "notebooks are committed without outputs"

    def run_first_cells(**injected) -> dict:
        """The parameters cell, papermill's injected values, then the next cell, in one namespace, as in the kernel."""
        namespace: dict = {}
        exec(code[0].source, namespace)
        namespace.update(profile="smoke", data_dir="unused", output_dir=str(tmp_path / "out"), **injected)
        exec(code[1].source, namespace)
        return namespace

    # the cell after the parameters makes the config: the grid given is the grid compared (a module of that name
    # imported there would hide it) ...
    configs = [v for v in run_first_cells(grid=GRIDS[section]).values() if isinstance(v, Config)]
    assert len(configs) == 1 and configs[0].grid == GRIDS[section] and configs[0].profile == "smoke"
    # ... and refuses a bad value there, naming it, before any data are read or anything is trained
    with pytest.raises(ConfigError, match="repeats"):
        run_first_cells(repeats=0)


def test_transfer_smoke_report(transfer_run):
    nb, out = transfer_run
    params = nb.metadata.papermill.parameters
    assert params["profile"] == "smoke" and params["author_name"] == "Ada Lovelace"
    m = json.loads((out / "metrics.json").read_text())
    assert (m["section"], m["profile"], m["seed"]) == ("transfer", "smoke", 0)
    p = m["parameters"]
    assert (p["epochs"], p["image_size"], p["labels_per_class"], p["weights"]) == (1, 32, 10, "pretrain")
    assert p["grid"] == {"backbone": ["resnet18"], "mode": ["scratch", "frozen", "finetune"]}
    assert (m["repeats"], m["evaluate_test"]) == (1, "all")
    assert m["data"]["classes"] == [1, 3, 5, 7, 9] and m["data"]["class_names"] == TARGET_NAMES
    assert m["data"]["sizes"] == {"train": 50, "val": 15, "test": 50}
    assert m["data"]["pretraining"]["classes"] == [0, 2, 4, 6, 8] and m["data"]["dataset"] == "fashion_mnist"
    rows = {r["mode"]: r for r in m["configurations"]}
    assert set(rows) == {"scratch", "frozen", "finetune"}
    assert rows["frozen"]["params"] < rows["finetune"]["params"] and rows["frozen"]["frozen_params"] > 0
    assert rows["scratch"]["weights"] == "random" and "T-shirt/top" in rows["finetune"]["weights"]
    assert all(r["seconds"] > 0 for r in rows.values())
    # ten test images of each class: a row's test accuracy is the mean of its per-class accuracies
    assert all(r["test_acc"] == pytest.approx(sum(r["test_per_class"].values()) / 5) for r in rows.values())
    assert all(set(r["test_per_class"]) == set(TARGET_NAMES) for r in rows.values())
    assert set(m["histories"]) == {r["name"] for r in rows.values()} == {"resnet18 + scratch", "resnet18 + frozen",
                                                                        "resnet18 + finetune"}
    best = m["best"]
    by_name = {r["name"]: r for r in m["configurations"]}
    assert best["name"] in by_name and best["config"]["mode"] in rows
    # the comparison's own model is the final one: its test accuracy is the table's
    assert best["test"]["accuracy"] == pytest.approx(by_name[best["name"]]["test_acc"])
    assert by_name[best["name"]]["val_acc"] == max(r["val_acc"] for r in m["configurations"])
    assert sum(map(sum, best["test"]["confusion_matrix"])) == 50
    assert set(best["test"]["per_class_accuracy"]) == set(TARGET_NAMES)
    assert best["latency"]["ms_per_image_batch1"] > 0 and "not retrained" in m["final_model"]
    assert list(m["pretraining"]) == ["resnet18"] and m["pretraining"]["resnet18"]["history"]
    assert m["environment"]["torch"] and m["wall_seconds"] > 0
    assert (out / "checkpoints" / "pretrained_resnet18.pt").is_file()
    for name in TRANSFER_FIGURES:
        assert (out / f"{name}.png").stat().st_size > 5_000, name
    text = markdown_text(nb)
    assert "Ada Lovelace" in text and "**Best configuration:**" in text and "against training from scratch" in text
    assert f"{best['test']['accuracy']:.2%}" in text and "chosen on validation accuracy" in text


def test_transfer_reuses_its_saved_checkpoint(transfer_run, tmp_path, fake_data_dir):
    _, out = transfer_run
    execute("transfer", tmp_path, profile="smoke", data_dir=str(fake_data_dir), output_dir=str(tmp_path / "out"),
            weights=str(out / "checkpoints" / "pretrained_resnet18.pt"), modes=["frozen"])
    m = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert m["pretraining"] == {} and m["data"]["pretraining"] is None
    assert [r["mode"] for r in m["configurations"]] == ["frozen"]
    assert "checkpoint pretrained_resnet18.pt" in m["configurations"][0]["weights"]


def test_transfer_with_a_grid_of_its_own(tmp_path, fake_data_dir):
    """Any run setting may vary; pretraining is still done once; evaluate_test='best' tests only the chosen one."""
    nb = execute("transfer", tmp_path, profile="smoke", data_dir=str(fake_data_dir), output_dir=str(tmp_path / "out"),
                 grid={"mode": ["frozen", "finetune"], "lr": [0.001, 0.01]}, frozen_epochs=2, evaluate_test="best")
    out = tmp_path / "out"
    m = json.loads((out / "metrics.json").read_text())
    configs = {r["name"]: r for r in m["configurations"]}
    assert set(configs) == {"frozen + lr 0.001", "frozen + lr 0.01", "finetune + lr 0.001", "finetune + lr 0.01"}
    assert {(r["mode"], r["lr"]) for r in configs.values()} == {(a, b) for a in ("frozen", "finetune")
                                                                for b in (0.001, 0.01)}
    assert all("test_acc" not in r for r in configs.values())  # only the chosen configuration saw the test set
    assert [len(m["histories"][n]) for n in ("frozen + lr 0.001", "finetune + lr 0.001")] == [2, 1]
    assert list(m["pretraining"]) == ["resnet18"]  # one pretraining for the four configurations
    assert m["best"]["name"] in configs
    check_test_result(m["best"]["test"], TARGET_NAMES, 50)
    assert (out / "val_accuracy.png").is_file() and not (out / "per_class_comparison.png").exists()
    text = markdown_text(nb)
    assert "compares **4** configurations varying `mode`, `lr`" in text and "**lr:** mean val acc" in text


def test_transfer_on_a_three_class_folder_without_classes(tmp_path, fake_data_dir):
    """A folder's classes all count when classes is None; its val/ images are the validation set."""
    import numpy as np
    from PIL import Image

    root, rng = tmp_path / "pets", np.random.default_rng(0)
    for split, n in (("train", 6), ("val", 2), ("test", 3)):
        for k, name in enumerate(("cat", "dog", "fox")):
            for i in range(n):
                (root / split / name).mkdir(parents=True, exist_ok=True)
                pixels = rng.integers(0, 40, (24, 24, 3)) + 60 * k
                Image.fromarray(pixels.astype(np.uint8), mode="RGB").save(root / split / name / f"{i}.png")
    execute("transfer", tmp_path, profile="smoke", data_dir=str(fake_data_dir), output_dir=str(tmp_path / "out"),
            dataset=str(root), modes=["scratch", "frozen"])
    m = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert m["parameters"]["classes"] is None
    assert m["data"]["class_names"] == ["cat", "dog", "fox"] and m["data"]["classes"] == [0, 1, 2]
    assert m["data"]["sizes"] == {"train": 18, "val": 6, "test": 9} and m["data"]["validation"] == "val/ folder"
    assert len(m["best"]["test"]["confusion_matrix"]) == 3 and list(m["pretraining"]) == ["resnet18"]


def test_autoencoder_smoke_report(ae_run):
    nb, out = ae_run
    assert nb.metadata.papermill.parameters["profile"] == "smoke"
    m = json.loads((out / "metrics.json").read_text())
    assert (m["section"], m["profile"]) == ("autoencoder", "smoke")
    assert (m["parameters"]["epochs"], m["parameters"]["classifier_epochs"]) == (1, 1)
    assert m["data"]["classes"] == [1, 3, 5, 7, 9] and m["data"]["class_names"] == TARGET_NAMES
    assert m["data"]["ae_sizes"]["train"] + m["data"]["ae_sizes"]["val"] == 200  # 10 classes x 20 fake images
    assert m["data"]["sizes"]["test"] == 50
    assert len(m["autoencoder"]["history"]) == 1 and 0 < m["autoencoder"]["test_mse"] < 1
    assert m["autoencoder"]["history"][0]["train_acc"] is None  # the one loop's history; no accuracy here
    archs = {r["name"]: r for r in m["configurations"]}
    assert set(archs) == {"thin", "course", "thick"} and archs["thick"]["ae_params"] > archs["thin"]["ae_params"]
    assert archs["thin"]["hidden_sizes"] == [128] and archs["thin"]["bottleneck"] == 32
    assert [r["epochs_run"] for r in m["epochs"]] == [1, 2]
    assert m["cnn_comparison"]["cnn_accuracy"] == 0.9
    test = m["best"]["test"]
    check_test_result(test, TARGET_NAMES, 50)
    for name in AE_FIGURES:
        assert (out / f"{name}.png").stat().st_size > 5_000, name
    text = markdown_text(nb)
    assert "**Denoising:**" in text and "**Against the CNN report:**" in text and "Ada Lovelace" in text


@pytest.mark.parametrize("section, name, value", [("transfer", "backbones", ["alexnet"]),
                                                  ("autoencoder", "kind", "vae")])
def test_bad_parameters_stop_in_the_config_cell(tmp_path, fake_data_dir, section, name, value):
    with pytest.raises(papermill.PapermillExecutionError) as info:
        execute(section, tmp_path, profile="smoke", data_dir=str(fake_data_dir), output_dir=str(tmp_path / "out"),
                **{name: value})
    assert info.value.ename == "ConfigError" and name in info.value.evalue and "allowed" in info.value.evalue
    assert not (tmp_path / "out" / "metrics.json").exists()
