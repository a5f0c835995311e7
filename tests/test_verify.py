"""``python -m helpers verify``: an untouched report passes, an edited metrics.json or a changed notebook is
caught, and the differences are listed."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from helpers.cli.runner import notebook_path
from helpers.cli.verify_report import verify_folder
from helpers.reporting.fingerprint import check_fingerprint, differences

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def report(mlp_smoke_report):
    """A report folder with ``mlp/{metrics.json, mlp.html, mlp.ipynb}`` (the session's shared report: copied
    before any edit)."""
    return mlp_smoke_report


def test_metrics_carry_a_fingerprint_that_the_appendix_shows(report):
    metrics = json.loads((report / "mlp" / "metrics.json").read_text())
    fp = metrics["fingerprint"]
    assert set(fp) == {"parameters", "notebook", "data", "results", "short"} and all(fp.values())
    assert check_fingerprint(metrics, notebook=notebook_path("mlp")) == []
    nb = nbformat.read(str(report / "mlp" / "mlp.ipynb"), as_version=4)
    assert fp["short"] in json.dumps([c.get("outputs") for c in nb.cells])


def test_an_untouched_report_verifies(report, fake_data_dir):
    lines = []
    assert verify_folder(report, log=lines.append, reference_data=fake_data_dir)  # the fake data: named, accepted
    assert lines[1].startswith("OK") and any("exactly" in line for line in lines)


def test_an_edited_number_is_caught_and_shown(report, tmp_path, fake_data_dir):
    edited = tmp_path / "edited"
    shutil.copytree(report, edited)
    path = edited / "mlp" / "metrics.json"
    metrics = json.loads(path.read_text())
    metrics["best"]["test"]["accuracy"] = 0.99
    path.write_text(json.dumps(metrics))
    assert any("changed after the run" in p for p in check_fingerprint(metrics, notebook=notebook_path("mlp")))
    done = subprocess.run([sys.executable, "-P", "-m", "helpers", "verify", str(edited), "--reference-data",
                           str(fake_data_dir)], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "FAIL" in done.stdout and "best.test.accuracy" in done.stdout and "0.99" in done.stdout


def test_a_notebook_changed_after_the_run_is_caught(report, tmp_path):
    metrics = json.loads((report / "mlp" / "metrics.json").read_text())
    nb = nbformat.read(str(notebook_path("mlp")), as_version=4)
    nb.cells[-1].source += "\nprint('one more line')"
    changed = tmp_path / "changed.ipynb"
    nbformat.write(nb, str(changed))
    assert any("notebook" in p and "changed after the run" in p for p in check_fingerprint(metrics, notebook=changed))


def test_differences_within_a_tolerance_only_when_asked():
    a, b = {"x": [0.5, 1.0], "seconds": 1.0}, {"x": [0.5 + 1e-9, 1.0], "seconds": 5.0}
    assert differences(a, b) == [("x[0]", 0.5, 0.5 + 1e-9)]
    assert differences(a, b, tolerance=1e-6) == []


def test_which_configuration_was_fastest_is_not_compared_with_the_rerun():
    from helpers.cli.verify_compare import _tokens

    best = "Best configuration: 32 with 10.00% validation accuracy. "
    report = best + "Fastest: 32 (1.2 s); the slowest, 64, took 2.8x as long (3.4 s)."
    rerun = best + "Fastest: 64 (0.9 s); the slowest, 32, took 1.4x as long (1.3 s)."
    assert _tokens(report) == _tokens(rerun) == ["Best", "configuration", "32", "with", "10.00%", "validation",
                                                 "accuracy"]
    # a sentence with a timing that ranks nothing by speed still has its other numbers compared
    assert _tokens("the frozen backbone trains 1,234 parameters in 3.1 s") == ["1,234"]
