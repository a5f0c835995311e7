"""Same parameters and seed, two processes: the same metrics.json, number for number (timings, dates and paths
aside). Each section's notebook test runs its smoke report a second time in its own kernel, with the cache off,
and compares (``test_a_second_run_gives_the_same_metrics`` in ``test_notebook_*``: the first run is the one those
tests read anyway); here, that the comparison itself catches an edited number."""

from __future__ import annotations

from tests.consistency import differences


def test_differences_finds_an_edited_number():
    a = {"best": {"test": {"accuracy": 0.91}}, "wall_seconds": 3.0}
    assert differences(a, {"best": {"test": {"accuracy": 0.91}}, "wall_seconds": 9.0}) == []
    assert differences(a, {"best": {"test": {"accuracy": 0.92}}, "wall_seconds": 3.0}) == [
        ".best.test.accuracy: 0.91 vs 0.92"]
    assert differences({"h": [1.0, 2.0]}, {"h": [1.0]}) == [".h: 2 vs 1 items"]
