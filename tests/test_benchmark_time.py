"""scripts/benchmark_time_to_accuracy.py as the README runs it, on a tiny budget: the shape of what it prints and
writes (every run, the per-budget summary, the targets, the ablation, the seed recipe's per-epoch time). No
time is asserted: times belong to the machine."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from helpers.reporting.ablation import ablation_report
from tests.test_ablation import SCRIPT_INGREDIENTS

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "benchmark_time_to_accuracy.py"


def run(args: list[str], cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], cwd=cwd, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "HELPERS_PROGRESS": "0", **(env or {})})


@pytest.mark.slow
def test_the_ladder_the_targets_the_ablation_and_the_seed_recipe(fake_data_dir, tmp_path):
    out, ablation = tmp_path / "bench.json", tmp_path / "ablation.json"
    done = run(["--epochs", "2,1", "--seeds", "2", "--train-per-class", "20", "--test-per-class", "10",
                "--data-dir", str(fake_data_dir), "--ablation-epochs", "1", "--ablation-out", str(ablation),
                "--seed-recipe-steps", "2", "--json", str(out)], cwd=tmp_path,
               env={"HELPERS_CACHE": "on", "HELPERS_CACHE_DIR": str(tmp_path / "cache")})
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads(out.read_text())
    # every run trained: none was served by the run cache (it would time a copy), and none was stored in it, while
    # the cache was on (the decoded data set went in)
    cached = {p.relative_to(tmp_path / "cache").parts[0] for p in (tmp_path / "cache").rglob("meta.json")}
    assert all(r["cache"] is None for r in result["runs"]) and "runs" not in cached and "data" in cached
    ingredients = len(SCRIPT_INGREDIENTS)  # the ones the shipped table lists, in the script's order
    assert len(result["runs"]) == 2 * 2 + ingredients * 2  # every budget and every ingredient, over both seeds
    assert {(r["epochs"], r["seed"]) for r in result["runs"] if r["label"] == "recipe"} == {(1, 0), (1, 1), (2, 0), (2, 1)}
    recipe = [s for s in result["summary"] if s["label"] == "recipe"]
    assert [s["epochs"] for s in recipe] == [1, 2] and all(s["seeds"] == 2 for s in result["summary"])
    for s in result["summary"]:
        assert 0 <= s["accuracy_min"] <= s["accuracy_mean"] <= 100 and s["seconds_median"] > 0
        runs = [r["accuracy"] for r in result["runs"] if (r["label"], r["epochs"]) == (s["label"], s["epochs"])]
        assert s["accuracy_mean"] == pytest.approx(sum(runs) / len(runs)) and s["accuracy_min"] == min(runs)
    assert list(result["reached"]) == ["93.0", "94.0", "94.5", "95.0"]
    # at this size no target is reached; a reached one names its budget
    assert all(v is None or v["epochs"] in (1, 2) for v in result["reached"].values())
    measured = json.loads(ablation.read_text())
    rows = measured["rows"]
    assert measured["recipe"]["optimizer"] == "sgd" and measured["recipe"]["profile"] == "quick"
    assert measured["command"].endswith("--ablation-epochs 1") and len(measured["date"]) == 10
    caption, frame = ablation_report(None, ablation)  # the file the report reads, shown as the CNN report shows it
    assert list(frame["taken out"]) == [r["without"] for r in rows] and "seeds 0-1" in caption
    assert rows[0]["without"] == "nothing (the whole recipe)" and rows[0]["change"] == 0
    assert [r["without"] for r in rows[1:]] == list(SCRIPT_INGREDIENTS)
    assert all(0 < row["seconds_min"] <= row["seconds_median"] for row in rows)
    for row in rows[1:]:
        assert row["change"] == pytest.approx(row["accuracy_mean"] - rows[0]["accuracy_mean"])
    seed = result["seed_recipe"]
    assert seed["epochs"] == 100 and seed["accuracy"] == 93.04 and seed["epoch_seconds"] > 0
    assert seed["total_seconds"] == pytest.approx(100 * seed["epoch_seconds"])
    assert "| recipe | epochs | seeds | wall time (median) |" in done.stdout
    assert "mean test accuracy >= 93.0%" in done.stdout and "report 003's recipe here" in done.stdout


def test_a_bad_budget_is_refused_by_name(tmp_path):
    done = run(["--epochs", "four"], cwd=tmp_path)
    assert done.returncode == 2 and "--epochs" in done.stderr
