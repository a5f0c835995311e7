"""The MLP notebook executed by papermill in the smoke profile, on fixture data and on the real data."""

from __future__ import annotations

import json

import nbformat
import papermill
import pytest

from helpers.cli.runner import NOTEBOOKS_DIR, notebook_path
from helpers.data.fashion import DataNotFoundError, find_data
from tests.conftest import MLP_SMOKE_REPORT
from tests.consistency import assert_repeats, check_test_result

FIGURES = ("samples", "grid_val_accuracy", "learning_curves", "learning_curves_overlay", "confusion_matrix",
           "per_class_accuracy", "confused_examples")
SUBSET_NAMES = ["Trouser", "Dress", "Sandal", "Sneaker", "Ankle boot"]


def execute(tmp_path, **params):
    tmp_path.mkdir(parents=True, exist_ok=True)
    out = tmp_path / "executed.ipynb"
    papermill.execute_notebook(str(notebook_path("mlp")), str(out), parameters=params, cwd=str(NOTEBOOKS_DIR),
                               progress_bar=False)
    return nbformat.read(str(out), as_version=4)


def smoke_parameters(data_dir, output_dir) -> dict:
    return {"profile": "smoke", "data_dir": str(data_dir), "output_dir": str(output_dir),
            "optimizers": ["adam", "rmsprop"], "author_name": "Ada Lovelace", "author_id": "A-42"}


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory, fake_data_dir):
    tmp = tmp_path_factory.mktemp("mlp_smoke")
    nb = execute(tmp, **smoke_parameters(fake_data_dir, tmp / "out"))
    return nb, tmp / "out"


def test_a_second_run_gives_the_same_metrics(smoke_run, tmp_path, fake_data_dir, monkeypatch):
    """Same parameters and seed in a second kernel, the cache off so that it trains: the same numbers."""
    monkeypatch.setenv("HELPERS_CACHE", "off")
    execute(tmp_path, **smoke_parameters(fake_data_dir, tmp_path / "out"))
    assert_repeats(smoke_run[1] / "metrics.json", tmp_path / "out" / "metrics.json")


def test_parameters_cell_is_tagged():
    nb = nbformat.read(str(notebook_path("mlp")), as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert "parameters" in code[0].metadata.get("tags", [])
    assert all(not c.get("outputs") for c in code), "notebooks are committed without outputs"


def test_smoke_writes_metrics_figures_and_records_parameters(smoke_run, fake_data_dir):
    nb, out = smoke_run
    assert nb.metadata.papermill.parameters["profile"] == "smoke"
    assert nb.metadata.papermill.parameters["author_name"] == "Ada Lovelace"
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["section"] == "mlp" and metrics["profile"] == "smoke"
    assert metrics["parameters"]["author_id"] == "A-42"
    assert metrics["parameters"]["epochs"] == 2  # filled in from the smoke profile
    assert metrics["data"]["sizes"]["train"] + metrics["data"]["sizes"]["val"] == 200
    assert len(metrics["configurations"]) == 8  # 2 optimizers x 4 regularizers
    names = {c["name"] for c in metrics["configurations"]}
    assert "rmsprop + batch_norm" in names
    assert metrics["best"]["name"] in names
    check_test_result(metrics["best"]["test"], metrics["data"]["class_names"], metrics["data"]["sizes"]["test"])
    cm = metrics["best"]["test"]["confusion_matrix"]
    assert len(cm) == 10 and sum(map(sum, cm)) == metrics["data"]["sizes"]["test"]
    assert set(metrics["best"]["test"]["per_class_accuracy"]) == set(metrics["data"]["class_names"])
    assert metrics["environment"]["torch"] and metrics["wall_seconds"] > 0
    for name in FIGURES:
        if name == "confused_examples" and not metrics["best"]["test"]["most_confused"]:
            continue  # a model without mistakes has no confused pairs to show
        assert (out / f"{name}.png").stat().st_size > 5_000, name


def test_report_text_comes_from_the_run(smoke_run):
    nb, out = smoke_run
    metrics = json.loads((out / "metrics.json").read_text())
    text = "\n".join(o.get("data", {}).get("text/markdown", "") for c in nb.cells for o in c.get("outputs", []))
    assert "Ada Lovelace" in text
    assert f"{metrics['best']['test']['accuracy']:.2%}" in text
    assert "**Best configuration:**" in text


@pytest.mark.parametrize("name, value, expected", [
    ("optimizers", ["adam", "adagrad"], "optimizers"),
    ("profile", "fast", "profile"),
    ("classes", [1, 3, 3], "repeated"),
    ("grid", {"lr": [0.01, -1]}, "grid configuration 2 (lr -1): parameter lr=-1"),
])
def test_bad_parameters_stop_before_training(tmp_path, fake_data_dir, name, value, expected):
    params = {"profile": "smoke", "data_dir": str(fake_data_dir), "output_dir": str(tmp_path / "out"), name: value}
    with pytest.raises(papermill.PapermillExecutionError) as info:
        execute(tmp_path, **params)
    assert info.value.ename == "ConfigError"
    assert expected in info.value.evalue and "allowed" in info.value.evalue
    assert info.value.exec_count == 3  # parameters, papermill's injected parameters, then the check
    assert not (tmp_path / "out" / "metrics.json").exists()


@pytest.fixture(scope="module")
def grid_run(tmp_path_factory, fake_data_dir):
    """A grid of its own (depth x activation), two seeds per configuration, every configuration tested, on a class
    subset."""
    tmp = tmp_path_factory.mktemp("mlp_grid")
    nb = execute(tmp, profile="smoke", data_dir=str(fake_data_dir), output_dir=str(tmp / "out"),
                 classes=[1, 3, 5, 7, 9], grid={"hidden_sizes": [[16], [16, 8]], "activation": ["relu", "tanh"]},
                 repeats=2, evaluate_test="all")
    return nb, json.loads((tmp / "out" / "metrics.json").read_text()), tmp / "out"


def test_class_subset_names_in_metrics(grid_run):
    _, metrics, _ = grid_run
    assert metrics["data"]["class_names"] == SUBSET_NAMES
    assert len(metrics["best"]["test"]["confusion_matrix"]) == 5


def test_grid_with_repeats_and_every_configuration_tested(grid_run):
    nb, metrics, out = grid_run
    assert metrics["repeats"] == 2 and metrics["evaluate_test"] == "all"
    configs = metrics["configurations"]
    assert sorted((c["hidden_sizes"], c["activation"]) for c in configs) == [
        ([16], "relu"), ([16], "tanh"), ([16, 8], "relu"), ([16, 8], "tanh")]
    for c in configs:
        assert 0 <= c["val_acc_mean"] <= 1 and c["val_acc_std"] >= 0 and "val_acc" not in c
        assert 0 <= c["test_acc_mean"] <= 1 and c["repeats"] == 2
        assert list(c["test_per_class"]) == SUBSET_NAMES
    assert [c["val_acc_mean"] for c in configs] == sorted((c["val_acc_mean"] for c in configs), reverse=True)
    # the best is chosen on validation accuracy (ties: the faster), not on the test accuracies shown beside it
    top = max(c["val_acc_mean"] for c in configs)
    assert metrics["best"]["name"] in {c["name"] for c in configs if c["val_acc_mean"] == top}
    text = "\n".join(o.get("data", {}).get("text/markdown", "") for c in nb.cells for o in c.get("outputs", []))
    assert "**4** configurations varying `hidden_sizes`, `activation`, each trained with 2 seeds (8 runs)" in text
    assert "**Run-to-run spread:** over 2 seeds" in text
    assert "**Test accuracy of every configuration** is shown for comparison only" in text
    assert (out / "per_class_comparison.png").stat().st_size > 5_000


def _real_data_reason():
    try:
        find_data()
    except DataNotFoundError:
        return "the real Fashion-MNIST is not on this machine (bash run.sh data gets it)"
    return None


@pytest.mark.slow
@pytest.mark.skipif(_real_data_reason() is not None, reason=str(_real_data_reason()))
def test_smoke_profile_on_real_data(tmp_path):
    execute(tmp_path, profile="smoke", output_dir=str(tmp_path / "out"))
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["data"]["sizes"]["train"] + metrics["data"]["sizes"]["val"] == 400  # 40 per class
    assert "fashion-mnist" in metrics["data"]["source"].lower() or "data" in metrics["data"]["source"]
    # even 2 epochs on 340 real images beat chance (10%) by far
    assert metrics["best"]["test"]["accuracy"] > 0.4


def test_interactive_run_gives_the_papermill_numbers(tmp_path, fake_data_dir, mlp_smoke_report, monkeypatch):
    """Top to bottom as in JupyterLab (nbclient, edited parameters cell, progress bars on) vs papermill (the
    session's shared report of the same parameters); both with the cache off, so each computes its numbers."""
    from nbclient import NotebookClient

    params = {**MLP_SMOKE_REPORT, "data_dir": str(fake_data_dir)}
    nb = nbformat.read(str(notebook_path("mlp")), as_version=4)
    cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    cell.source += "".join(f"\n{k} = {v!r}" for k, v in {**params, "output_dir": str(tmp_path / "ui_out")}.items())
    monkeypatch.delenv("HELPERS_PROGRESS", raising=False)
    monkeypatch.setenv("HELPERS_CACHE", "off")  # the kernel inherits both
    NotebookClient(nb, resources={"metadata": {"path": str(NOTEBOOKS_DIR)}}).execute()
    a = json.loads((mlp_smoke_report / "mlp" / "metrics.json").read_text())
    b = json.loads((tmp_path / "ui_out" / "metrics.json").read_text())
    assert a["best"]["test"] == b["best"]["test"]
    assert [c["val_acc"] for c in a["configurations"]] == [c["val_acc"] for c in b["configurations"]]
