"""helpers.engine.metrics: evaluation of known logits, reports, per-class accuracy and confusions."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support
from torch import nn

from helpers.data.fashion import ImageSet
from helpers.engine.metrics import (
    confident_mistakes,
    evaluate,
    history_frame,
    inference_latency,
    latency_frame,
    most_confused,
    pair_examples,
    per_class_accuracy,
    report_frame,
    summarize_predictions,
)

pytestmark = pytest.mark.usefixtures("torch_single_thread")

NAMES = ["ant", "bee", "cat", "dog"]
# true class, predicted class, and the logit of the prediction (others are 0): a known outcome
CASES = [
    (0, 0, 3.0), (0, 0, 2.0), (0, 1, 5.0), (0, 1, 1.0), (0, 2, 0.5),   # ant: 2 right, 2 -> bee, 1 -> cat
    (1, 1, 4.0), (1, 1, 4.0), (1, 1, 1.0),                            # bee: all right
    (2, 2, 2.0), (2, 0, 4.0), (2, 0, 2.5), (2, 0, 1.5),               # cat: 1 right, 3 -> ant
    (3, 3, 6.0), (3, 3, 1.0), (3, 2, 3.0),                            # dog: 2 right, 1 -> cat
]
Y_TRUE = np.array([c[0] for c in CASES])
Y_PRED = np.array([c[1] for c in CASES])


def known_logits() -> torch.Tensor:
    logits = torch.zeros(len(CASES), len(NAMES))
    for i, (_, pred, value) in enumerate(CASES):
        logits[i, pred] = value
    return logits


@pytest.fixture(scope="module")
def result() -> dict:
    """``evaluate`` of an identity "model" whose inputs are the logits themselves."""
    data = ImageSet(known_logits(), torch.from_numpy(Y_TRUE), list(NAMES))
    return evaluate(nn.Identity(), data, batch_size=4, device="cpu")


def test_accuracy_loss_and_predictions(result):
    assert result["accuracy"] == pytest.approx(8 / 15)
    np.testing.assert_array_equal(result["y_true"], Y_TRUE)
    np.testing.assert_array_equal(result["y_pred"], Y_PRED)
    logits = known_logits()
    log_probs = logits.log_softmax(1)
    expected_loss = -log_probs[torch.arange(len(CASES)), torch.from_numpy(Y_TRUE)].mean().item()
    assert result["loss"] == pytest.approx(expected_loss, rel=1e-6)
    # confidence: softmax probability of the predicted class, e^v / (e^v + 3)
    values = np.array([c[2] for c in CASES])
    np.testing.assert_allclose(result["confidence"], np.exp(values) / (np.exp(values) + 3), rtol=1e-6)


def test_confusion_matrix_matches_sklearn(result):
    cm = result["confusion_matrix"]
    np.testing.assert_array_equal(cm, confusion_matrix(Y_TRUE, Y_PRED, labels=[0, 1, 2, 3]))
    np.testing.assert_array_equal(cm, [[2, 2, 1, 0], [0, 3, 0, 0], [3, 0, 1, 0], [0, 0, 1, 2]])
    assert cm.sum() == len(CASES)


def test_confusion_matrix_keeps_unpredicted_and_absent_classes():
    out = summarize_predictions(torch.tensor([[5.0, 0, 0], [4.0, 0, 0]]), torch.tensor([0, 1]), ["a", "b", "c"])
    np.testing.assert_array_equal(out["confusion_matrix"], [[1, 0, 0], [1, 0, 0], [0, 0, 0]])
    assert out["per_class"]["accuracy"].tolist() == [1.0, 0.0, 0.0]  # class c has no samples: 0, not NaN
    assert out["report"].loc["c", "support"] == 0


def test_report_frame(result):
    report = result["report"]
    assert isinstance(report, pd.DataFrame)
    assert list(report.index) == NAMES + ["accuracy", "macro avg", "weighted avg"]
    assert {"precision", "recall", "f1-score", "support"} <= set(report.columns)
    precision, recall, f1, support = precision_recall_fscore_support(Y_TRUE, Y_PRED, labels=[0, 1, 2, 3],
                                                                     zero_division=0)
    np.testing.assert_allclose(report.loc[NAMES, "precision"], precision)
    np.testing.assert_allclose(report.loc[NAMES, "recall"], recall)
    np.testing.assert_allclose(report.loc[NAMES, "f1-score"], f1)
    assert report.loc[NAMES, "support"].tolist() == support.tolist() == [5, 3, 4, 3]
    assert report["support"].dtype.kind == "i"
    # by hand: bee is predicted 5 times, 3 of them right; cat recall 1/4
    assert report.loc["bee", "precision"] == pytest.approx(3 / 5)
    assert report.loc["cat", "recall"] == pytest.approx(1 / 4)
    # the accuracy row as scikit-learn prints it: the accuracy once, over every image, no precision or recall
    assert report.loc["accuracy", "f1-score"] == pytest.approx(8 / 15) and report.loc["accuracy", "support"] == 15
    assert report.loc["accuracy", ["precision", "recall"]].isna().all()
    assert report.loc["macro avg", "recall"] == pytest.approx(np.mean([2 / 5, 1, 1 / 4, 2 / 3]))
    assert report.loc["macro avg", "support"] == 15


def test_report_frame_direct_call():
    frame = report_frame(np.array([0, 1, 1]), np.array([0, 1, 0]), ["x", "y"])
    assert frame.loc["x", "precision"] == pytest.approx(0.5)
    assert frame.loc["y", "recall"] == pytest.approx(0.5)


def test_per_class_accuracy(result):
    table = result["per_class"]
    assert list(table.columns) == ["class", "accuracy", "correct", "support"]
    assert table["class"].tolist() == NAMES
    np.testing.assert_allclose(table["accuracy"], [2 / 5, 1.0, 1 / 4, 2 / 3])
    assert table["correct"].tolist() == [2, 3, 1, 2]
    assert table["support"].tolist() == [5, 3, 4, 3]
    direct = per_class_accuracy(result["confusion_matrix"], NAMES)
    pd.testing.assert_frame_equal(direct, table)


def test_most_confused_ordering(result):
    table = result["most_confused"]
    assert list(table.columns) == ["true", "predicted", "count", "share_of_true", "true_index", "pred_index"]
    # cat->ant 3, ant->bee 2, then the two single confusions (ant->cat, dog->cat)
    assert table[["true", "predicted", "count"]].values.tolist()[:2] == [["cat", "ant", 3], ["ant", "bee", 2]]
    assert table["count"].tolist() == [3, 2, 1, 1]
    assert set(map(tuple, table[["true", "predicted"]].values.tolist()[2:])) == {("ant", "cat"), ("dog", "cat")}
    np.testing.assert_allclose(table["share_of_true"][:2], [3 / 4, 2 / 5])
    assert table[["true_index", "pred_index"]].values.tolist()[:2] == [[2, 0], [0, 1]]
    assert (table["true_index"] != table["pred_index"]).all()  # never the diagonal


def test_most_confused_top_and_perfect():
    cm = np.array([[5, 1, 4], [2, 5, 0], [9, 3, 5]])
    top2 = most_confused(cm, ["a", "b", "c"], top=2)
    assert top2["count"].tolist() == [9, 4]
    assert top2[["true", "predicted"]].values.tolist() == [["c", "a"], ["a", "c"]]
    assert len(most_confused(cm, ["a", "b", "c"], top=10)) == 5  # only the non-zero off-diagonal cells
    empty = most_confused(np.diag([3, 4]), ["a", "b"])
    assert len(empty) == 0 and "count" in empty.columns


def test_confident_mistakes_ordering(result):
    idx = confident_mistakes(result)
    # wrong predictions, highest softmax confidence first: logits 5.0, 4.0, 3.0, 2.5, 1.5, 1.0, 0.5
    assert idx.tolist() == [2, 9, 14, 10, 11, 3, 4]
    assert np.all(result["y_pred"][idx] != result["y_true"][idx])
    assert np.all(np.diff(result["confidence"][idx]) <= 0)
    assert confident_mistakes(result, top=2).tolist() == [2, 9]


def test_pair_examples(result):
    assert pair_examples(result, 2, 0).tolist() == [9, 10, 11]
    assert pair_examples(result, 2, 0, top=1).tolist() == [9]
    assert pair_examples(result, 1, 3).tolist() == []


def test_history_frame():
    frame = history_frame([{"epoch": 1, "train_loss": 0.5}, {"epoch": 2, "train_loss": 0.25}])
    assert frame["train_loss"].tolist() == [0.5, 0.25] and len(frame) == 2


def test_evaluate_real_model_on_fake_data(fake_sets):
    """A trained model on the shared fake data: the result's parts agree with each other."""
    from helpers.engine.training import fit
    from helpers.models.networks import build_mlp

    torch.manual_seed(0)
    model = build_mlp(hidden_sizes=(32,), activation="relu")
    fit(model, fake_sets["train"], num_epochs=3, batch_size=32, progress=False, device="cpu")
    out = evaluate(model, fake_sets["test"], device="cpu")
    cm = out["confusion_matrix"]
    assert cm.shape == (10, 10) and cm.sum() == 100
    assert out["accuracy"] == pytest.approx(np.trace(cm) / 100)
    assert out["accuracy"] > 0.5
    accuracy_row = out["report"].loc["accuracy"]  # laid out as scikit-learn prints it: no precision or recall
    assert accuracy_row["f1-score"] == pytest.approx(out["accuracy"]) and accuracy_row["support"] == 100
    assert np.isnan(accuracy_row["precision"]) and np.isnan(accuracy_row["recall"])
    assert out["per_class"]["support"].tolist() == [10] * 10


def test_inference_latency_measures_the_model_and_restores_its_mode():
    from helpers.models.networks import build_mlp, count_parameters

    model = build_mlp(hidden_sizes=(16,), activation="relu", batch_norm=True).train()
    X = torch.rand(40, 1, 28, 28)
    out = inference_latency(model, X, large_batch=32, rounds=3, device="cpu")
    assert set(out) == {"device", "ms_per_image_batch1", "images_per_second", "large_batch", "parameters", "size_mb",
                        "test_flip"}
    assert out["device"] == "cpu" and out["large_batch"] == 32
    assert out["ms_per_image_batch1"] > 0 and out["images_per_second"] > 0
    assert out["parameters"] == count_parameters(model)["total"] == 784 * 16 + 16 + 2 * 16 + 16 * 10 + 10
    # float32 weights plus the batch-norm and standardisation buffers
    assert out["size_mb"] * 2**20 == sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()])
    assert model.training
    assert inference_latency(model, X[:5], large_batch=32, rounds=1, device="cpu")["large_batch"] == 5  # all there is
    frame = latency_frame(out)
    assert frame.loc["parameters", "value"] == f"{out['parameters']:,}"
    assert frame.loc["device", "value"] == "cpu" and "throughput, batch of 32" in frame.index
