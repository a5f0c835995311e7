"""Checks that a report's numbers agree with each other, for the notebook and command tests: the test accuracy is
the one its saved confusion matrix gives, each class's accuracy that of its row, and the page shows the number
metrics.json holds. Each can fail where a range check (``0 <= accuracy <= 1``) cannot."""

from __future__ import annotations

import html
import re

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

