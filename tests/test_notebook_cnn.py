"""The CNN notebook executed by papermill in the smoke profile on fixture data: all classes, a student's
assignment (class subset 1, 3, 5, 7, 9 with Xavier initialisation, average pooling, Adam and 10-degree rotation),
and grids of its own (optimizer x initialisation, then a search over two architectures)."""

from __future__ import annotations

import json
import re

import nbformat
import papermill
import pytest

from helpers.cli.main import main
from helpers.cli.runner import NOTEBOOKS_DIR, notebook_parameters, notebook_path
from tests.consistency import assert_repeats, check_test_result

FIGURES = ("samples", "augmentation_preview", "pooling_grid_val_accuracy", "pooling_grid_curves",
           "search_val_accuracy", "search_curves", "augmentation_curves", "final_curves", "confusion_matrix",
           "per_class_accuracy", "feature_maps")
SUBSET_NAMES = ["Trouser", "Dress", "Sandal", "Sneaker", "Ankle boot"]
# Two small architectures for the search, and their parameter counts worked out by hand (10 classes):
# one 3x3 conv of 4 channels with batch norm (no conv bias), 2x2 max pooling to 14x14, a dense layer of 8 ...
SMALL = {"blocks": [{"channels": 4}], "dense": [8]}
SMALL_PARAMS = (4 * 9 + 2 * 4) + (4 * 14 * 14 * 8 + 8) + (8 * 10 + 10)
# ... and two 3x3 convs (4, then 8 channels) without batch norm, 2x2 average pooling, no hidden dense layer.
TWO_CONVS = {"blocks": [{"channels": [4, 8], "pool": "avg", "norm": "none"}], "dense": []}
TWO_CONVS_PARAMS = (4 * 9 + 4) + (4 * 8 * 9 + 8) + (8 * 14 * 14 * 10 + 10)


def execute(folder, **params):
    out = folder / "executed.ipynb"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HELPERS_PROGRESS", "0")  # the kernel inherits it: no progress bars in the outputs
        papermill.execute_notebook(str(notebook_path("cnn")), str(out), parameters=params, cwd=str(NOTEBOOKS_DIR),
                                   progress_bar=False)
    return nbformat.read(str(out), as_version=4), json.loads((folder / "out" / "metrics.json").read_text())


def smoke_parameters(data_dir, folder) -> dict:
    return {"profile": "smoke", "data_dir": str(data_dir), "output_dir": str(folder / "out"),
            "author_name": "Ada Lovelace", "author_id": "A-42"}


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory, fake_data_dir):
    tmp = tmp_path_factory.mktemp("cnn_smoke")
    nb, metrics = execute(tmp, **smoke_parameters(fake_data_dir, tmp))
    return nb, metrics, tmp / "out"


def test_a_second_run_gives_the_same_metrics(smoke_run, tmp_path, fake_data_dir, monkeypatch):
    """Same parameters and seed in a second kernel, the cache off so that it trains: the same numbers."""
    monkeypatch.setenv("HELPERS_CACHE", "off")
    execute(tmp_path, **smoke_parameters(fake_data_dir, tmp_path))
    assert_repeats(smoke_run[2] / "metrics.json", tmp_path / "out" / "metrics.json")


@pytest.fixture(scope="module")
def subset_run(tmp_path_factory, fake_data_dir):
    tmp = tmp_path_factory.mktemp("cnn_subset")
    nb, metrics = execute(tmp, profile="smoke", data_dir=str(fake_data_dir), output_dir=str(tmp / "out"),
                          classes=[1, 3, 5, 7, 9], init="xavier", optimizer="adam", poolings=["avg"],
                          norms=["batch_norm"], hidden_sizes=[32], aug_rotation=10.0, batch_size=100,
                          final_augment="flip")
    return nb, metrics, tmp / "out"


@pytest.fixture(scope="module")
def grid_run(tmp_path_factory, fake_data_dir):
    tmp = tmp_path_factory.mktemp("cnn_grid")
    nb, metrics = execute(tmp, profile="smoke", data_dir=str(fake_data_dir), output_dir=str(tmp / "out"),
                          grid={"optimizer": ["sgd", "adam"], "init": ["xavier", "he"]},
                          search={"architecture": [SMALL, TWO_CONVS]}, final_epochs=1)
    return nb, metrics, tmp / "out"


def outputs_text(nb) -> str:
    return "\n".join(o.get("data", {}).get("text/markdown", "") + o.get("data", {}).get("text/plain", "")
                     + o.get("text", "") for c in nb.cells for o in c.get("outputs", []))


def test_parameters_cell_is_tagged_and_every_parameter_is_listed_with_its_meaning(capsys):
    nb = nbformat.read(str(notebook_path("cnn")), as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert "parameters" in code[0].metadata.get("tags", [])
    assert all(not c.get("outputs") for c in code), "notebooks are committed without outputs"
    # what a student reads before choosing values: `python -m helpers params` gives each parameter papermill can set,
    # its default and its unit or meaning
    assert main(["params"]) == 0
    block = capsys.readouterr().out.split("\n  cnn: ", 1)[1].split("\n\n", 1)[0]
    listed = dict(re.findall(r"^    (\w+) = (.*)$", block, re.M))
    assert set(listed) == set(notebook_parameters("cnn"))
    assert [name for name, rest in listed.items() if not re.search(r"  # \S", rest)] == [], "no unit or meaning"
    for name in ("optimizer", "init", "poolings", "norms", "augment", "classes", "final_epochs", "conv_dropouts"):
        assert name in listed, name


def test_smoke_writes_metrics_figures_and_records_parameters(smoke_run):
    nb, metrics, out = smoke_run
    assert nb.metadata.papermill.parameters["profile"] == "smoke"
    assert nb.metadata.papermill.parameters["author_name"] == "Ada Lovelace"
    assert metrics["section"] == "cnn" and metrics["profile"] == "smoke"
    p = metrics["parameters"]
    assert p["author_id"] == "A-42" and p["init"] == "default" and p["optimizer"] == "sgd" and p["lr"] is None
    assert p["final_epochs"] > 0 and p["train_per_class"] == 40  # the notebook leaves both None: the smoke profile
    assert metrics["data"]["sizes"]["train"] + metrics["data"]["sizes"]["val"] == 200
    configs = metrics["configurations"]  # the first comparison: pooling x normalization
    assert [(c["pool"], c["norm"]) for c in sorted(configs, key=lambda c: c["name"])] == [
        ("avg", "batch_norm"), ("avg", "dropout"), ("max", "batch_norm"), ("max", "dropout")]
    assert all(c["seconds"] > 0 and c["params"] > 0 for c in configs)
    search_names = {c["name"] for c in metrics["search"]["configurations"]}
    assert metrics["best"]["name"] in search_names and len(search_names) == 2
    assert len(metrics["augmentation"]["configurations"]) == 2
    assert metrics["final"]["epochs"] == p["final_epochs"] == len(metrics["final"]["history"])
    assert metrics["final"]["augmentation"] == p["final_augmentation"] == p["augmentation"]  # smoke: "same"
    assert metrics["best"]["latency"]["parameters"] == metrics["final"]["parameters"]
    test = metrics["best"]["test"]
    check_test_result(test, metrics["data"]["class_names"], metrics["data"]["sizes"]["test"])
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
    assert "peak learning rate 0.05" in text  # sgd's default
    assert "**Best configuration:**" in text and "**pool:**" in text and "**norm:**" in text
    assert f"`{metrics['best']['name']}` scores {metrics['best']['test']['accuracy']:.2%}" in text
    assert all(o.get("output_type") != "error" for c in nb.cells for o in c.get("outputs", []))


def test_assignment_with_class_subset(subset_run):
    nb, metrics, out = subset_run
    recorded = nb.metadata.papermill.parameters
    assert recorded["classes"] == [1, 3, 5, 7, 9] and recorded["init"] == "xavier" and "lr" not in recorded
    p = metrics["parameters"]
    assert p["classes"] == [1, 3, 5, 7, 9] and p["optimizer"] == "adam" and p["lr"] is None
    assert "peak learning rate 0.001" in outputs_text(nb)  # adam's default
    assert p["augmentation"].startswith("rotation=10.0")
    assert metrics["final"]["augmentation"] == "hflip=True"
    assert "augmentation hflip=True" in outputs_text(nb)
    assert metrics["data"]["class_names"] == SUBSET_NAMES and metrics["data"]["classes"] == [1, 3, 5, 7, 9]
    assert [c["name"] for c in metrics["configurations"]] == ["avg + batch_norm"]
    assert metrics["best"]["config"]["dense"] == [32] and metrics["best"]["config"]["name"] == metrics["best"]["name"]
    test = metrics["best"]["test"]
    assert len(test["confusion_matrix"]) == 5 and sum(map(sum, test["confusion_matrix"])) == 50
    assert list(test["per_class_accuracy"]) == SUBSET_NAMES
    assert set(SUBSET_NAMES) <= set(test["classification_report"])
    assert "T-shirt/top" not in json.dumps(test)
    text = outputs_text(nb)
    assert "5 classes (Trouser, Dress, Sandal, Sneaker, Ankle boot)" in text
    assert (out / "confusion_matrix.png").stat().st_size > 5_000


def test_grid_and_architecture_search(grid_run):
    nb, metrics, out = grid_run
    configs = metrics["configurations"]
    assert len(configs) == 4
    assert sorted((c["optimizer"], c["init"]) for c in configs) == [
        ("adam", "he"), ("adam", "xavier"), ("sgd", "he"), ("sgd", "xavier")]
    assert all("pool" not in c and "val_acc" in c and "val_acc_std" not in c for c in configs)  # one seed each
    search = {c["name"]: c for c in metrics["search"]["configurations"]}
    assert set(search) == {"architecture conv 4, fc 8", "architecture conv 4+8, fc none"}
    assert search["architecture conv 4, fc 8"]["architecture"] == SMALL  # the spec itself, as given
    assert search["architecture conv 4, fc 8"]["params"] == SMALL_PARAMS
    assert search["architecture conv 4+8, fc none"]["params"] == TWO_CONVS_PARAMS
    best = metrics["best"]
    assert best["config"]["architecture"] in (SMALL, TWO_CONVS) and best["name"] in search
    assert metrics["final"]["parameters"] == search[best["name"]]["params"] == best["latency"]["parameters"]
    assert metrics["final"]["epochs"] == 1
    text = outputs_text(nb)
    assert "The first comparison compares **4** configurations varying `optimizer`, `init`" in text
    assert "The search compares **2** configurations varying `architecture`" in text
    assert "**optimizer:**" in text and "**init:**" in text
    assert f"Total params: {SMALL_PARAMS:,}" in text or f"Total params: {TWO_CONVS_PARAMS:,}" in text
    assert all(o.get("output_type") != "error" for c in nb.cells for o in c.get("outputs", []))
    assert (out / "search_val_accuracy.png").stat().st_size > 5_000
