"""The CNN notebook executed by papermill in the smoke profile on fixture data: all classes, and a student's
assignment (class subset 1, 3, 5, 7, 9 with Xavier initialisation, average pooling, Adam and 10-degree rotation)."""

from __future__ import annotations

import json

import nbformat
import papermill
import pytest

from helpers.runner import NOTEBOOKS_DIR, notebook_path

FIGURES = ("samples", "augmentation_preview", "pooling_grid_val_accuracy", "pooling_grid_curves",
           "search_val_accuracy", "search_curves", "augmentation_curves", "final_curves", "confusion_matrix",
           "per_class_accuracy", "feature_maps")
SUBSET_NAMES = ["Trouser", "Dress", "Sandal", "Sneaker", "Ankle boot"]


def execute(folder, **params):
    out = folder / "executed.ipynb"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HELPERS_PROGRESS", "0")  # the kernel inherits it: no progress bars in the outputs
        papermill.execute_notebook(str(notebook_path("cnn")), str(out), parameters=params, cwd=str(NOTEBOOKS_DIR),
                                   progress_bar=False)
    return nbformat.read(str(out), as_version=4), json.loads((folder / "out" / "metrics.json").read_text())


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory, fake_data_dir):
    tmp = tmp_path_factory.mktemp("cnn_smoke")
    nb, metrics = execute(tmp, profile="smoke", data_dir=str(fake_data_dir), output_dir=str(tmp / "out"),
                          author_name="Ada Lovelace", author_id="A-42")
    return nb, metrics, tmp / "out"


@pytest.fixture(scope="module")
def subset_run(tmp_path_factory, fake_data_dir):
    tmp = tmp_path_factory.mktemp("cnn_subset")
    nb, metrics = execute(tmp, profile="smoke", data_dir=str(fake_data_dir), output_dir=str(tmp / "out"),
                          classes=[1, 3, 5, 7, 9], init="xavier", optimizer="adam", poolings=["avg"],
                          norms=["batch_norm"], hidden_sizes=[32], aug_rotation=10.0, batch_size=100,
                          final_augment="flip")
    return nb, metrics, tmp / "out"


def outputs_text(nb) -> str:
    return "\n".join(o.get("data", {}).get("text/markdown", "") + o.get("data", {}).get("text/plain", "")
                     + o.get("text", "") for c in nb.cells for o in c.get("outputs", []))


def test_parameters_cell_is_tagged_and_commented():
    nb = nbformat.read(str(notebook_path("cnn")), as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert "parameters" in code[0].metadata.get("tags", [])
    assert all(not c.get("outputs") for c in code), "notebooks are committed without outputs"
    lines = [ln for ln in code[0].source.splitlines() if "=" in ln]
    assert all("  # " in ln for ln in lines), "every parameter has a unit or meaning comment"
    for name in ("optimizer", "init", "poolings", "norms", "augment", "classes", "final_epochs", "conv_dropouts"):
        assert any(ln.startswith(f"{name} =") for ln in lines), name
    assert 'make_config(\n    "cnn"' in code[1].source


def test_smoke_writes_metrics_figures_and_records_parameters(smoke_run):
    nb, metrics, out = smoke_run
    assert nb.metadata.papermill.parameters["profile"] == "smoke"
    assert nb.metadata.papermill.parameters["author_name"] == "Ada Lovelace"
    assert metrics["section"] == "cnn" and metrics["profile"] == "smoke"
    p = metrics["parameters"]
    assert p["author_id"] == "A-42" and p["init"] == "default" and p["optimizer"] == "sgd" and p["lr"] == 0.05
    assert p["final_epochs"] == 3 and p["train_per_class"] == 40  # filled in from the smoke profile
    assert metrics["data"]["sizes"]["train"] + metrics["data"]["sizes"]["val"] == 200
    assert {c["name"] for c in metrics["pooling_grid"]["configurations"]} == {
        "max + batch_norm", "max + dropout", "avg + batch_norm", "avg + dropout"}
    assert all(c["seconds"] > 0 for c in metrics["pooling_grid"]["configurations"])
    search_names = {c["name"] for c in metrics["search"]["configurations"]}
    assert metrics["best"]["name"] in search_names and len(search_names) == 2
    assert len(metrics["augmentation"]["configurations"]) == 2
    assert metrics["best"]["epochs"] == 3 and len(metrics["best"]["history"]) == 3
    assert metrics["best"]["augmentation"] == p["final_augmentation"] == p["augmentation"]  # smoke: "same"
    test = metrics["best"]["test"]
    assert 0.0 <= test["accuracy"] <= 1.0
    assert len(test["confusion_matrix"]) == 10 and sum(map(sum, test["confusion_matrix"])) == 100
    assert set(test["per_class_accuracy"]) == set(metrics["data"]["class_names"])
    assert metrics["environment"]["torch"] and metrics["wall_seconds"] > 0
    for name in FIGURES + (("confident_mistakes",) if test["accuracy"] < 1 else ()):
        assert (out / f"{name}.png").stat().st_size > 5_000, name


def test_report_text_comes_from_the_run(smoke_run):
    nb, metrics, _ = smoke_run
    text = outputs_text(nb)
    assert "Ada Lovelace" in text
    assert f"test accuracy **{metrics['best']['test']['accuracy']:.2%}**" in text
    assert "**Best configuration:**" in text and "**Pooling:**" in text and "**Regularization:**" in text
    assert f"`{metrics['best']['name']}` scores {metrics['best']['test']['accuracy']:.2%}" in text
    assert all(o.get("output_type") != "error" for c in nb.cells for o in c.get("outputs", []))


def test_assignment_with_class_subset(subset_run):
    nb, metrics, out = subset_run
    recorded = nb.metadata.papermill.parameters
    assert recorded["classes"] == [1, 3, 5, 7, 9] and recorded["init"] == "xavier" and "lr" not in recorded
    p = metrics["parameters"]
    assert p["classes"] == [1, 3, 5, 7, 9] and p["optimizer"] == "adam" and p["lr"] == 0.001  # adam's default
    assert p["augmentation"].startswith("rotation=10.0")
    assert metrics["best"]["augmentation"] == "hflip=True"
    assert "augmentation hflip=True" in outputs_text(nb)
    assert metrics["data"]["class_names"] == SUBSET_NAMES and metrics["data"]["classes"] == [1, 3, 5, 7, 9]
    assert [c["name"] for c in metrics["pooling_grid"]["configurations"]] == ["avg + batch_norm"]
    assert metrics["best"]["config"]["hidden_size"] == 32 and metrics["best"]["config"]["name"] == metrics["best"]["name"]
    test = metrics["best"]["test"]
    assert len(test["confusion_matrix"]) == 5 and sum(map(sum, test["confusion_matrix"])) == 50
    assert list(test["per_class_accuracy"]) == SUBSET_NAMES
    assert set(SUBSET_NAMES) <= set(test["classification_report"])
    assert "T-shirt/top" not in json.dumps(test)
    text = outputs_text(nb)
    assert "5 classes (Trouser, Dress, Sandal, Sneaker, Ankle boot)" in text
    assert (out / "confusion_matrix.png").stat().st_size > 5_000
