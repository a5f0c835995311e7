"""Figures drawn from data. Each function takes data (and an ``ax`` or ``fig``) and returns the Figure.

Nothing here uses pyplot's global state except to create a figure when none is given.
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import seaborn as sns

FIGSIZE_WIDE = (11, 4)


def _ax(ax, figsize=(6, 4)):
    if ax is None:
        fig, ax = plt.subplots(figsize=figsize, layout="constrained")
    return ax.figure, ax


def plot_curves(histories: dict, *, metric: str = "loss", ax=None, title: str | None = None):
    """Train (dashed) and validation (solid) ``metric`` per epoch for each named history."""
    fig, ax = _ax(ax)
    colors = sns.color_palette("tab10", n_colors=max(len(histories), 1))
    for color, (name, history) in zip(colors, histories.items()):
        epochs = [r["epoch"] for r in history]
        ax.plot(epochs, [r[f"train_{metric}"] for r in history], "--", color=color, alpha=0.8, lw=1.3)
        val = [r.get(f"val_{metric}") for r in history]
        if any(v is not None for v in val):
            ax.plot(epochs, val, "-", color=color, lw=1.8, label=name)
        else:
            ax.lines[-1].set_label(name)
    ax.set_xlabel("epoch")
    ax.set_ylabel("cross-entropy loss" if metric == "loss" else "accuracy")
    ax.set_title(title or f"{metric}: training (dashed) vs validation (solid)")
    ax.grid(alpha=0.3)
    if histories:
        ax.legend(fontsize=8, loc="best")
    return fig


def plot_learning_curves(histories: dict, *, fig=None, title: str = "Learning curves"):
    """Loss and accuracy side by side for every history."""
    fig = fig or plt.figure(figsize=FIGSIZE_WIDE, layout="constrained")
    ax_loss, ax_acc = fig.subplots(1, 2)
    plot_curves(histories, metric="loss", ax=ax_loss, title="Loss (dashed: train, solid: validation)")
    plot_curves(histories, metric="acc", ax=ax_acc, title="Accuracy (dashed: train, solid: validation)")
    fig.suptitle(title)
    return fig


def plot_history_grid(histories: dict, *, ncols: int = 4, fig=None, title: str = "Learning curves per configuration"):
    """One small loss panel (with accuracy on a twin axis) per configuration."""
    n = len(histories)
    nrows = math.ceil(n / ncols)
    fig = fig or plt.figure(figsize=(3.2 * ncols, 2.7 * nrows), layout="constrained")
    axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel()
    for ax, (name, history) in zip(axes, histories.items()):
        epochs = [r["epoch"] for r in history]
        ax.plot(epochs, [r["train_loss"] for r in history], "--", color="C0", label="train loss")
        if history and history[0].get("val_loss") is not None:
            ax.plot(epochs, [r["val_loss"] for r in history], "-", color="C0", label="val loss")
        ax.set_xlabel("epoch")
        ax.set_ylabel("loss", color="C0")
        ax.set_title(name, fontsize=9)
        twin = ax.twinx()
        twin.plot(epochs, [r["train_acc"] for r in history], "--", color="C1", label="train acc")
        if history and history[0].get("val_acc") is not None:
            twin.plot(epochs, [r["val_acc"] for r in history], "-", color="C1", label="val acc")
        twin.set_ylabel("accuracy", color="C1")
        ax.grid(alpha=0.3)
    for ax in axes[n:]:
        ax.set_visible(False)
    if n:
        handles = [plt.Line2D([], [], color=c, ls=ls) for c in ("C0", "C1") for ls in ("--", "-")]
        fig.legend(handles, ["train loss", "val loss", "train acc", "val acc"], loc="outside lower center",
                   ncols=4, fontsize=8)
    fig.suptitle(title)
    return fig


def plot_confusion_matrix(cm: np.ndarray, class_names, *, normalize: bool = True, ax=None,
                          title: str = "Confusion matrix (test set)"):
    """Heatmap of a confusion matrix; rows are true classes. ``normalize`` shows row shares."""
    fig, ax = _ax(ax, figsize=(7.5, 6.2))
    data = cm / np.maximum(cm.sum(1, keepdims=True), 1) if normalize else cm
    sns.heatmap(data, annot=True, fmt=".2f" if normalize else "d", cmap="Blues", cbar=True, ax=ax,
                xticklabels=class_names, yticklabels=class_names, annot_kws={"fontsize": 7}, square=True,
                vmin=0, vmax=1 if normalize else None)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(title + (" - share of each true class" if normalize else ""))
    ax.tick_params(axis="x", rotation=45)
    ax.tick_params(axis="y", rotation=0)
    return fig


def plot_per_class_accuracy(per_class, *, ax=None, title: str = "Per-class test accuracy"):
    """Horizontal bars from the ``per_class`` DataFrame of :func:`helpers.metrics.evaluate`."""
    fig, ax = _ax(ax, figsize=(6.5, 0.35 * len(per_class) + 1.2))
    order = per_class.sort_values("accuracy")
    ax.barh(order["class"], order["accuracy"], color="C0")
    for y, acc in enumerate(order["accuracy"]):
        ax.text(min(acc, 0.98), y, f"{acc:.1%}", va="center", ha="right", color="white", fontsize=8)
    ax.set_xlim(0, 1)
    ax.set_xlabel("accuracy")
    ax.set_ylabel("class")
    ax.set_title(title)
    return fig


def plot_image_grid(images, titles=None, *, ncols: int = 8, fig=None, title: str = "", cmap: str = "gray",
                    title_colors=None):
    """Images (N, 1, H, W) or (N, H, W) in a grid with optional per-image titles."""
    images = np.asarray(images.detach().cpu() if hasattr(images, "detach") else images)
    if images.ndim == 4:
        images = images[:, 0] if images.shape[1] == 1 else images.transpose(0, 2, 3, 1)
    n = len(images)
    ncols = max(1, min(ncols, n))
    nrows = max(1, math.ceil(n / ncols))
    fig = fig or plt.figure(figsize=(1.45 * ncols, 1.65 * nrows + 0.5), layout="constrained")
    axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel()
    for i, ax in enumerate(axes):
        ax.axis("off")
        if i < n:
            ax.imshow(images[i], cmap=cmap, vmin=0, vmax=1)
            if titles is not None:
                ax.set_title(titles[i], fontsize=7, color=(title_colors[i] if title_colors else "black"))
    fig.suptitle(title)
    return fig


def plot_grid_results(table, *, x: str = "name", y: str = "val_acc", ax=None, title: str = "Validation accuracy"):
    """Bar chart of one column of a grid table."""
    fig, ax = _ax(ax, figsize=(7, 0.4 * len(table) + 1.2))
    order = table.sort_values(y)
    ax.barh(order[x].astype(str), order[y], color="C2")
    lo = float(order[y].min())
    ax.set_xlim(max(0.0, lo - 0.05), min(1.0, float(order[y].max()) + 0.02))
    for i, v in enumerate(order[y]):
        ax.text(v, i, f" {v:.2%}", va="center", fontsize=8)
    ax.set_xlabel(y.replace("_", " "))
    ax.set_title(title)
    return fig


def save_figure(fig, output_dir: str | Path, name: str) -> Path:
    """Save ``fig`` as ``output_dir/name.png`` (150 dpi) and return the path."""
    path = Path(output_dir) / f"{name}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=150, bbox_inches="tight")
    return path
