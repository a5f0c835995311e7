"""Checks that a report's numbers agree with each other, for the notebook and command tests: the test accuracy is
the one its saved confusion matrix gives, each class's accuracy that of its row, and the page shows the number
metrics.json holds. Each can fail where a range check (``0 <= accuracy <= 1``) cannot."""

from __future__ import annotations

import html
import json
import math
import re
from pathlib import Path

import pytest


def check_test_result(test: dict, class_names: list[str], test_size: int | None = None) -> None:
    """``test`` (a ``best.test`` block of metrics.json) agrees with its own confusion matrix (rows: true class):
    ``accuracy`` is the diagonal over the whole, ``per_class_accuracy[name]`` the diagonal over the name's row (in
    class order), and the matrix counts ``test_size`` images when given."""
    cm = test["confusion_matrix"]
    assert len(cm) == len(class_names) and all(len(row) == len(class_names) for row in cm)
    total = sum(map(sum, cm))
    if test_size is not None:
        assert total == test_size
    assert test["accuracy"] == pytest.approx(sum(cm[i][i] for i in range(len(cm))) / total)
    assert list(test["per_class_accuracy"]) == list(class_names)
    assert [test["per_class_accuracy"][name] for name in class_names] == pytest.approx(
        [row[i] / sum(row) if sum(row) else 0.0 for i, row in enumerate(cm)])


def page_text(page: str) -> str:
    """An exported report's text as a reader sees it: tags dropped, entities decoded, blanks collapsed."""
    page = re.sub(r"<(script|style)\b.*?</\1>", " ", page, flags=re.S | re.I)
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", page)))



# What may differ between two identical runs: how long things took, when, where the files went, and whether the
# cache was on (the second run of a repeat trains with it off, so it computes every number itself).
VOLATILE = {"seconds", "seconds_mean", "seconds_std", "wall_seconds", "retrain_seconds", "ae_seconds", "ae_seconds_mean",
            "ae_seconds_std", "date", "output_dir", "checkpoint", "ms_per_image_batch1", "images_per_second",
            "cnn_metrics", "cache"}


def differences(a, b, path="") -> list[str]:
    """Where two metrics.json differ, :data:`VOLATILE` keys aside (``.best.test.accuracy: 0.91 vs 0.92``)."""
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


def assert_repeats(first: Path, second: Path) -> None:
    """Two runs' metrics.json files hold the same numbers (a comparison ran, and nothing but timings differs)."""
    a, b = (json.loads(Path(p).read_text()) for p in (first, second))
    assert a["configurations"], "the comparison ran"
    assert b["cache"]["runs_trained"] > 0 and not b["cache"].get("runs_from_cache"), "the second run trained"
    assert differences(a, b) == []
