"""Evaluation results as data: accuracy, loss, confusion matrix, reports, confused pairs."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import torch

from helpers.data.fashion import ImageSet
from helpers.engine.training import predict, predict_batch, resolve_device
from helpers.models.networks import count_parameters


def evaluate(model, data: ImageSet, *, batch_size: int = 1024, device="auto") -> dict:
    """Evaluate ``model`` on ``data``.

    Returns a dict with ``accuracy``, ``loss``, ``y_true``, ``y_pred``, ``confidence`` (softmax of the
    predicted class), ``confusion_matrix`` (ndarray, rows = true class), ``report`` (DataFrame),
    ``per_class`` (DataFrame) and ``most_confused`` (DataFrame).
    """
    logits = predict(model, data.X, batch_size=batch_size, device=device)
    return summarize_predictions(logits, data.y, data.class_names)


def summarize_predictions(logits: torch.Tensor, y: torch.Tensor, class_names) -> dict:
    """:func:`evaluate`'s dict from a classifier's logits and the true labels ``y``."""
    probs = logits.softmax(1)
    y_true = y.numpy()
    y_pred = probs.argmax(1).numpy()
    labels = list(range(len(class_names)))
    from sklearn.metrics import confusion_matrix  # lazy: a second per command that only reads metrics files

    cm = confusion_matrix(y_true, y_pred, labels=labels)
    return {
        "accuracy": float((y_pred == y_true).mean()),
        "loss": float(torch.nn.functional.cross_entropy(logits, y).item()),
        "y_true": y_true,
        "y_pred": y_pred,
        "confidence": probs.max(1).values.numpy(),
        "confusion_matrix": cm,
        "report": report_frame(y_true, y_pred, class_names),
        "per_class": per_class_accuracy(cm, class_names),
        "most_confused": most_confused(cm, class_names),
    }


def report_frame(y_true, y_pred, class_names) -> pd.DataFrame:
    """scikit-learn's classification report as a DataFrame (precision, recall, f1, support).

    The ``accuracy`` row is laid out as scikit-learn's printed report lays it out: the accuracy under ``f1-score``,
    no precision or recall (NaN: it has none), and the number of images as its support (``output_dict`` repeats the
    accuracy in all three columns and gives no support, which a table then shows as 0)."""
    from sklearn.metrics import classification_report  # lazy: see summarize_predictions

    report = classification_report(y_true, y_pred, labels=list(range(len(class_names))), target_names=list(class_names),
                                   output_dict=True, zero_division=0)
    frame = pd.DataFrame(report).T
    if "accuracy" in frame.index:
        frame.loc["accuracy", ["precision", "recall"]] = np.nan
        frame.loc["accuracy", "support"] = len(y_true)
    frame["support"] = frame["support"].astype(int)
    return frame


def per_class_accuracy(cm: np.ndarray, class_names) -> pd.DataFrame:
    """One row per class of the confusion matrix ``cm``: ``class``, ``accuracy`` (recall), ``correct``, ``support``."""
    support = cm.sum(1)
    acc = np.divide(np.diag(cm), support, out=np.zeros(len(cm)), where=support > 0)
    return pd.DataFrame({"class": list(class_names), "accuracy": acc, "correct": np.diag(cm), "support": support})


def most_confused(cm: np.ndarray, class_names, *, top: int = 5) -> pd.DataFrame:
    """Off-diagonal cells of the confusion matrix, largest first (true class, predicted class, count)."""
    off = cm.copy()
    np.fill_diagonal(off, 0)
    order = np.argsort(off, axis=None)[::-1][:top]
    rows = []
    for flat in order:
        i, j = np.unravel_index(flat, off.shape)
        if off[i, j] == 0:
            break
        rows.append({"true": class_names[i], "predicted": class_names[j], "count": int(off[i, j]),
                     "share_of_true": off[i, j] / max(cm[i].sum(), 1), "true_index": int(i), "pred_index": int(j)})
    return pd.DataFrame(rows, columns=["true", "predicted", "count", "share_of_true", "true_index", "pred_index"])


def confident_mistakes(result: dict, *, top: int = 16) -> np.ndarray:
    """Indices of the wrong predictions made with the highest confidence."""
    wrong = np.flatnonzero(result["y_pred"] != result["y_true"])
    return wrong[np.argsort(-result["confidence"][wrong])][:top]


def pair_examples(result: dict, true_index: int, pred_index: int, *, top: int = 6) -> np.ndarray:
    """Indices of samples of class ``true_index`` predicted as ``pred_index``."""
    hits = np.flatnonzero((result["y_true"] == true_index) & (result["y_pred"] == pred_index))
    return hits[:top]


def history_frame(history) -> pd.DataFrame:
    """A training history (one dict per epoch) as a DataFrame, one row per epoch."""
    return pd.DataFrame(list(history))


@torch.no_grad()  # as predictions are made: no autograd graph
def inference_latency(model, X: torch.Tensor, *, large_batch: int = 1024, rounds: int = 20, device="auto") -> dict:
    """How fast the trained model answers, on ``device``: milliseconds per image at batch size 1 (median of
    ``rounds`` single-image calls) and images per second at ``large_batch``, with its size.

    Returns ``{"device", "ms_per_image_batch1", "images_per_second", "large_batch", "parameters", "size_mb"}``.
    """
    device = resolve_device(device)
    was_training = model.training
    model.eval().to(device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    one = X[:1].to(device)
    big = X[:large_batch].to(device)
    predict_batch(model, one)  # warm-up: the first call pays for allocation and kernel selection
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        predict_batch(model, one)
        sync()
        times.append(time.perf_counter() - t0)
    predict_batch(model, big)
    sync()
    t0 = time.perf_counter()
    reps = 3
    for _ in range(reps):
        predict_batch(model, big)
    sync()
    per_image_batch = (time.perf_counter() - t0) / (reps * len(big))
    model.train(was_training)
    size = sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()])
    return {"device": str(device), "ms_per_image_batch1": float(np.median(times) * 1000),
            "images_per_second": float(1 / per_image_batch), "large_batch": len(big),
            "parameters": count_parameters(model)["total"], "size_mb": size / 2**20,
            "test_flip": bool(getattr(model, "test_flip", False))}


def latency_frame(latency: dict) -> pd.DataFrame:
    """The latency dict as a two-column table for a report."""
    rows = {"device": latency["device"], "parameters": f"{latency['parameters']:,}",
            "model size": f"{latency['size_mb']:.2f} MB",
            "latency, batch of 1": f"{latency['ms_per_image_batch1']:.2f} ms per image"
                                   + (" (with its mirror image)" if latency.get("test_flip") else ""),
            f"throughput, batch of {latency['large_batch']}": f"{latency['images_per_second']:,.0f} images/s"}
    return pd.DataFrame({"value": list(rows.values())}, index=pd.Index(list(rows), name="inference"))
