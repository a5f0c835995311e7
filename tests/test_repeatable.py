"""Same parameters and seed, two processes: the same metrics.json, number for number (timings, dates and paths
aside). Each section's smoke profile runs twice, each run in its own papermill kernel."""

from __future__ import annotations

import json
import math

import papermill
import pytest

from helpers.cli.runner import NOTEBOOKS_DIR, SECTIONS, notebook_path

# What may differ between two identical runs: how long things took, when, and where the files went.
VOLATILE = {"seconds", "seconds_mean", "seconds_std", "wall_seconds", "retrain_seconds", "ae_seconds", "ae_seconds_mean",
            "ae_seconds_std", "date", "output_dir", "checkpoint", "ms_per_image_batch1", "images_per_second",
            "cnn_metrics"}


def differences(a, b, path="") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        return [d for k in sorted(set(a) | set(b)) if k not in VOLATILE
                for d in differences(a.get(k), b.get(k), f"{path}.{k}")]
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return [f"{path}: {len(a)} vs {len(b)} items"]
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in differences(x, y, f"{path}[{i}]")]
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return []
    return [] if a == b else [f"{path}: {a!r} vs {b!r}"]


def test_differences_finds_an_edited_number():
    a = {"best": {"test": {"accuracy": 0.91}}, "wall_seconds": 3.0}
    assert differences(a, {"best": {"test": {"accuracy": 0.91}}, "wall_seconds": 9.0}) == []
    assert differences(a, {"best": {"test": {"accuracy": 0.92}}, "wall_seconds": 3.0}) == [
        ".best.test.accuracy: 0.91 vs 0.92"]


@pytest.mark.parametrize("section", list(SECTIONS))
def test_two_runs_give_the_same_metrics(section, tmp_path, fake_data_dir):
    metrics = []
    for run in ("first", "second"):
        out = tmp_path / run
        papermill.execute_notebook(str(notebook_path(section)), str(tmp_path / f"{run}.ipynb"),
                                   parameters={"profile": "smoke", "data_dir": str(fake_data_dir),
                                               "output_dir": str(out), "seed": 3},
                                   cwd=str(NOTEBOOKS_DIR), progress_bar=False)
        metrics.append(json.loads((out / "metrics.json").read_text()))
    assert metrics[0]["configurations"], "the comparison ran"
    assert differences(metrics[0], metrics[1]) == []
