"""Every parameter file in notebooks/assignments/ (one per experiment of the seed course reports) is valid and
runs through its section's notebook in the smoke profile."""

from __future__ import annotations

import json
import math
from pathlib import Path

import papermill
import pytest
import yaml

from helpers.runner import NOTEBOOKS_DIR, notebook_path

ASSIGNMENTS = sorted((NOTEBOOKS_DIR / "assignments").glob("*/*.yaml"))


def load(path: Path) -> dict:
    params = yaml.safe_load(path.read_text())
    assert isinstance(params, dict) and "profile" not in params, f"{path.name}: profile is left to the command line"
    return params


def test_every_section_has_assignments_and_each_names_its_report():
    assert {p.parent.name for p in ASSIGNMENTS} == {"mlp", "cnn", "transfer", "autoencoder"}
    assert len(ASSIGNMENTS) == 31
    for path in ASSIGNMENTS:
        assert path.read_text().startswith("# report 00"), f"{path.name}: first line names the report"


@pytest.mark.parametrize("path", ASSIGNMENTS, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_assignment_runs_in_smoke(path, tmp_path, fake_data_dir):
    section, params = path.parent.name, load(path)
    out = tmp_path / "out"
    papermill.execute_notebook(str(notebook_path(section)), str(tmp_path / "run.ipynb"),
                               parameters={**params, "profile": "smoke", "data_dir": str(fake_data_dir),
                                           "output_dir": str(out)},
                               cwd=str(NOTEBOOKS_DIR), progress_bar=False)
    metrics = json.loads((out / "metrics.json").read_text())
    grid = params.get("grid")
    expected = len(grid) if isinstance(grid, list) else math.prod(len(v) for v in grid.values())
    assert len(metrics["configurations"]) == expected
    varied = list(grid) if isinstance(grid, dict) else []
    for row in metrics["configurations"]:
        assert all(k in row for k in varied), f"every varied parameter has its own column: {varied}"
    assert metrics["best"]["test"]["accuracy"] is not None
