"""Every parameter file in notebooks/assignments/ (one per experiment of the seed course reports) goes through the
command the README gives a student, ``python -m helpers run SECTION -f FILE``: each is validated by that command's
``--check`` in every profile (the same parsing, and the same make_config the notebook calls, without a kernel),
and one per section is executed in the smoke profile."""

from __future__ import annotations

import ast
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from helpers.cli.main import main
from helpers.cli.runner import NOTEBOOKS_DIR, SECTIONS
from helpers.engine.config import PROFILE_NAMES
from helpers.sections import smoke_values as smoke_cap
from tests.consistency import check_test_result, page_text

ROOT = Path(__file__).resolve().parent.parent
# one section's parameter files; assignments/course/ holds whole assignments (tests/test_course_*.py)
ASSIGNMENTS = sorted(p for p in (NOTEBOOKS_DIR / "assignments").glob("*/*.yaml") if p.parent.name in SECTIONS)
# executed in smoke, one per section: the CNN one has `schedule: none`, the MLP one `none` among its activations
SMOKE = {"mlp": "001_e1_activation_50_units", "cnn": "002_e1_augmentation", "transfer": "000_e3_frozen_resnet18",
         "autoencoder": "002_e6_epochs"}


def file_values(path: Path, profile: str) -> dict:
    """What the file asks for, as its section's notebook should receive it in ``profile``."""
    values = yaml.safe_load(path.read_text())
    return smoke_cap(values) if profile == "smoke" else values


def grid_size(grid) -> int:
    return len(grid) if isinstance(grid, list) else math.prod(len(v) for v in grid.values())


def resolved(stdout: str) -> dict:
    """The ``name = value`` lines ``run --check`` prints, as values."""
    return {m[1]: ast.literal_eval(m[2]) for m in re.finditer(r"^  (\w+) = (.*)$", stdout, re.M)}


def test_the_readme_table_lists_every_assignment_file():
    readme = (ROOT / "README.md").read_text()
    listed = set(re.findall(r"^\| `(\w+)` \| `([\w.]+\.yaml)` \|", readme, re.M))
    assert listed == {(p.parent.name, p.name) for p in ASSIGNMENTS}
    assert {p.parent.name for p in ASSIGNMENTS} == set(SECTIONS)


@pytest.mark.parametrize("profile", PROFILE_NAMES)
@pytest.mark.parametrize("path", ASSIGNMENTS, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_every_assignment_is_valid_through_the_command(path, profile, capsys):
    """``run SECTION -f FILE --profile P --check`` in this process: exit 0, every value of the file resolved as the
    file gives it (``schedule: none`` the word, not None), and its grid expanded into as many configurations."""
    code = main(["run", path.parent.name, "-f", str(path), "--profile", profile, "--check"])
    out = capsys.readouterr()
    assert code == 0, out.err
    values, printed = file_values(path, profile), resolved(out.out)
    assert printed["profile"] == profile
    assert {k: printed.get(k) for k in values} == values
    assert f"  grid: {grid_size(values['grid'])} configuration(s): " in out.out


def test_the_check_runs_as_a_command_and_names_a_bad_value(tmp_path):
    """The same check as its own process, as a student types it; a value the parameter does not allow exits 2
    with the ConfigError (no traceback, no kernel)."""
    env = {**os.environ, "HELPERS_PROGRESS": "0"}
    path = NOTEBOOKS_DIR / "assignments" / "cnn" / f"{SMOKE['cnn']}.yaml"
    done = subprocess.run([sys.executable, "-m", "helpers", "run", "cnn", "-f", str(path), "--profile", "smoke",
                           "--check"], cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr
    assert resolved(done.stdout)["schedule"] == "none" and "cnn: valid" in done.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text(path.read_text().replace("schedule: none", "schedule: sometimes"))
    done = subprocess.run([sys.executable, "-m", "helpers", "run", "cnn", "-f", str(bad), "--check"], cwd=ROOT,
                          capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert "error: cnn: " in done.stderr and "schedule='sometimes' is not allowed; allowed: 'none'" in done.stderr


@pytest.mark.parametrize("section", SECTIONS)
def test_one_assignment_per_section_runs_in_smoke_through_the_command(section, tmp_path, fake_data_dir):
    path = NOTEBOOKS_DIR / "assignments" / section / f"{SMOKE[section]}.yaml"
    done = subprocess.run([sys.executable, "-m", "helpers", "run", section, "-f", str(path), "--profile", "smoke",
                           "--output-dir", str(tmp_path), "--formats", "html", "-p", "data_dir", str(fake_data_dir)],
                          cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "HELPERS_PROGRESS": "0"})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    metrics = json.loads((tmp_path / section / "metrics.json").read_text())
    values = file_values(path, "smoke")
    # the notebook received the file's values (the word none included), capped as the smoke profile caps them
    assert {k: metrics["parameters"].get(k) for k in values} == values and metrics["profile"] == "smoke"
    assert len(metrics["configurations"]) == grid_size(values["grid"])
    varied = list(values["grid"]) if isinstance(values["grid"], dict) else []
    for row in metrics["configurations"]:
        assert all(k in row for k in varied), f"every varied parameter has its own column: {varied}"
    assert (tmp_path / section / f"{section}.html").stat().st_size > 10_000
    test = metrics["best"]["test"]
    check_test_result(test, metrics["data"]["class_names"], metrics["data"]["sizes"]["test"])
    # what the student and the grader read is what metrics.json holds: the report's test result, the index's column
    # and the command's summary line
    page = page_text((tmp_path / section / f"{section}.html").read_text())
    shown = re.findall(r"test accuracy (\d+\.\d\d%) ?, test loss (\d+\.\d{4})", page)
    assert shown and set(shown) == {(f"{test['accuracy']:.2%}", f"{test['loss']:.4f}")}, shown
    assert f" {test['accuracy']:.2%} " in page_text((tmp_path / "index.html").read_text())
    assert f"test accuracy {test['accuracy']:.2%}" in done.stdout
