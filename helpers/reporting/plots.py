"""Figures drawn from data. Each function takes data (and an ``ax`` or ``fig``) and returns the Figure.

Nothing here uses pyplot's global state except to create a figure when none is given. Every text drawn (titles,
labels, legend entries, tick labels) goes through :func:`literal`: names and values come from the student's
parameters, and matplotlib would read ``$...$`` in them as mathtext (an unbalanced ``$\\alpha$_{`` stops the
report with a parse error).
"""

from __future__ import annotations

import io
import math
import struct
from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from helpers.data.fashion import subsample

FIGSIZE_WIDE = (11, 4)
SAVED_DPI = 150  # the figure files, and what a notebook shows
INLINE_DPI = 100  # matplotlib-inline's default: the on-page size a figure keeps


def literal(text) -> str:
    """``text`` drawn as the characters given: every ``$`` escaped, so that matplotlib never parses it as mathtext
    (an escaped ``\\$`` is drawn as ``$``, and a ``\\$`` already in the text stays as it was)."""
    return str(text).replace("$", r"\$")


def _literals(texts) -> list[str]:
    return [literal(t) for t in texts]


def _ax(ax, figsize=(6, 4)):
    if ax is None:
        fig, ax = plt.subplots(figsize=figsize, layout="constrained")
    return ax.figure, ax


def _point_if_single(epochs) -> dict:
    """A marker for a one-epoch run, whose line would have no length and not show at all."""
    return {"marker": "o"} if len(epochs) == 1 else {}


def plot_curves(histories: dict, *, metric: str = "loss", ax=None, title: str | None = None, ylabel: str | None = None):
    """Train (dashed) and validation (solid) ``metric`` per epoch for each named history.

    ``ylabel`` overrides the default axis label (cross-entropy loss or accuracy), e.g. for an autoencoder's MSE.
    """
    fig, ax = _ax(ax)
    colors = sns.color_palette("tab10", n_colors=max(len(histories), 1))
    for color, (name, history) in zip(colors, histories.items()):
        epochs = [r["epoch"] for r in history]
        mk = _point_if_single(epochs)
        ax.plot(epochs, [r[f"train_{metric}"] for r in history], "--", color=color, alpha=0.8, lw=1.3, **mk)
        val = [r.get(f"val_{metric}") for r in history]
        if any(v is not None for v in val):
            ax.plot(epochs, val, "-", color=color, lw=1.8, label=literal(name), **mk)
        else:
            ax.lines[-1].set_label(literal(name))
    ax.set_xlabel("epoch")
    ax.set_ylabel(literal(ylabel or ("cross-entropy loss" if metric == "loss" else "accuracy")))
    ax.set_title(literal(title or f"{metric}: training (dashed) vs validation (solid)"))
    ax.grid(alpha=0.3)
    if histories:
        ax.legend(fontsize=8, loc="best")
    return fig


def plot_learning_curves(histories: dict, *, fig=None, title: str = "Learning curves"):
    """Loss and accuracy side by side for every history."""
    fig = fig or plt.figure(figsize=FIGSIZE_WIDE, layout="constrained")
    ax_loss, ax_acc = fig.subplots(1, 2)
    with_val = any(r.get("val_loss") is not None for h in histories.values() for r in h)
    how = "dashed: train, solid: validation" if with_val else "training set"
    plot_curves(histories, metric="loss", ax=ax_loss, title=f"Loss ({how})")
    plot_curves(histories, metric="acc", ax=ax_acc, title=f"Accuracy ({how})")
    fig.suptitle(literal(title))
    return fig


def plot_history_grid(histories: dict, *, ncols: int = 4, fig=None, title: str = "Learning curves per configuration"):
    """One small loss panel (with accuracy on a twin axis) per configuration."""
    n = len(histories)
    ncols = max(1, min(ncols, n))  # three configurations: three wide panels, not four narrow ones
    nrows = math.ceil(n / ncols)
    fig = fig or plt.figure(figsize=(3.2 * ncols, 2.7 * nrows), layout="constrained")
    axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel()
    for ax, (name, history) in zip(axes, histories.items()):
        epochs = [r["epoch"] for r in history]
        mk = _point_if_single(epochs)
        ax.plot(epochs, [r["train_loss"] for r in history], "--", color="C0", label="train loss", **mk)
        if history and history[0].get("val_loss") is not None:
            ax.plot(epochs, [r["val_loss"] for r in history], "-", color="C0", label="val loss", **mk)
        ax.set_xlabel("epoch")
        ax.set_ylabel("loss", color="C0")
        ax.set_title(literal(name), fontsize=9)
        twin = ax.twinx()
        twin.plot(epochs, [r["train_acc"] for r in history], "--", color="C1", label="train acc", **mk)
        if history and history[0].get("val_acc") is not None:
            twin.plot(epochs, [r["val_acc"] for r in history], "-", color="C1", label="val acc", **mk)
        twin.set_ylabel("accuracy", color="C1")
        ax.grid(alpha=0.3)
    for ax in axes[n:]:
        ax.set_visible(False)
    if n:
        handles = [plt.Line2D([], [], color=c, ls=ls) for c in ("C0", "C1") for ls in ("--", "-")]
        fig.legend(handles, ["train loss", "val loss", "train acc", "val acc"], loc="outside lower center",
                   ncols=4, fontsize=8)
    fig.suptitle(literal(title))
    return fig


def plot_confusion_matrix(cm: np.ndarray, class_names, *, normalize: bool = True, ax=None,
                          title: str = "Confusion matrix (test set)"):
    """Heatmap of a confusion matrix; rows are true classes. ``normalize`` shows row shares."""
    fig, ax = _ax(ax, figsize=(7.5, 6.2))
    data = cm / np.maximum(cm.sum(1, keepdims=True), 1) if normalize else cm
    sns.heatmap(data, annot=True, fmt=".2f" if normalize else "d", cmap="Blues", cbar=True, ax=ax,
                xticklabels=_literals(class_names), yticklabels=_literals(class_names), annot_kws={"fontsize": 7},
                square=True, vmin=0, vmax=1 if normalize else None)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(literal(title + (" - share of each true class" if normalize else "")))
    ax.tick_params(axis="x", rotation=45)
    ax.tick_params(axis="y", rotation=0)
    return fig


def plot_per_class_accuracy(per_class, *, ax=None, title: str = "Per-class test accuracy"):
    """Horizontal bars from the ``per_class`` DataFrame of :func:`helpers.engine.metrics.evaluate`."""
    fig, ax = _ax(ax, figsize=(6.5, 0.35 * len(per_class) + 1.2))
    order = per_class.sort_values("accuracy")
    ax.barh(_literals(order["class"]), order["accuracy"], color="C0")
    for y, acc in enumerate(order["accuracy"]):
        ax.text(min(acc, 0.98), y, f"{acc:.1%}", va="center", ha="right", color="white", fontsize=8)
    ax.set_xlim(0, 1)
    ax.set_xlabel("accuracy")
    ax.set_ylabel("class")
    ax.set_title(literal(title))
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
                ax.set_title(literal(titles[i]), fontsize=7, color=(title_colors[i] if title_colors else "black"))
    fig.suptitle(literal(title))
    return fig


def plot_class_samples(data, *, per_class: int = 2, seed: int = 0, title: str = "Two training images per class"):
    """``per_class`` images of each class of ``data`` (an :class:`~helpers.data.fashion.ImageSet`, drawn from
    ``seed``), ten to a row, each titled with its class."""
    sample = subsample(data, per_class=per_class, seed=seed)
    return plot_image_grid(sample.X, [data.class_names[i] for i in sample.y], ncols=10, title=title)


def plot_augmentation_preview(preview, labels, class_names, *, copies: int = 3, title: str = ""):
    """Each image in a row with its ``copies`` augmented versions (``preview`` as
    :func:`helpers.sections.cnn.augmentation_preview` lays them out; ``labels`` the originals' classes)."""
    titles = [f"{class_names[c]}\n{'original' if k == 0 else f'augmented {k}'}" for c in labels for k in range(copies + 1)]
    return plot_image_grid(preview, titles, ncols=copies + 1, title=title)


def plot_reconstruction_loss(histories: dict, *, title: str = "Reconstruction loss (dashed: train, noisy inputs; "
                                                              "solid: validation)"):
    """Train (dashed) and validation (solid) reconstruction loss (MSE per pixel) per epoch of each autoencoder."""
    return plot_curves(histories, metric="loss", ylabel="MSE per pixel", title=title)


def plot_epoch_stops(runs: dict, *, title: str = "Where each run stops"):
    """The learning curves of the longest of ``runs`` (name -> ``{"history": ...}``, the same seed, so each shorter
    run is its beginning), a dotted line where each shorter run stops."""
    longest = max(runs.values(), key=lambda r: len(r["history"]))
    fig = plot_learning_curves({f"{len(longest['history'])} epochs": longest["history"]}, title=title)
    return mark_epochs(fig, {f"stop after {len(r['history'])}": len(r["history"]) for r in runs.values()
                             if r is not longest})


def plot_feature_maps(maps, images=None, *, row_titles=None, max_maps: int = 8, fig=None,
                      title: str = "Feature maps of the first conv block", cmap: str = "viridis"):
    """One row per image: the input (when ``images`` is given), then its first ``max_maps`` feature maps.

    Parameters
    ----------
    maps : array or tensor, (N, C, H, W)
        Activations, e.g. from :func:`helpers.sections.cnn.feature_maps`. Each map is scaled to its own range,
        so weak and strong channels are both visible.
    images : array or tensor, (N, 1, H, W), optional
        The inputs, drawn in gray in [0, 1].
    row_titles : list of str, optional
        A label per image (e.g. its class), written beside the row.
    """
    maps = np.asarray(maps.detach().cpu() if hasattr(maps, "detach") else maps)
    n, c = maps.shape[:2]
    shown = min(c, max_maps)
    ncols = shown + (images is not None)
    fig = fig or plt.figure(figsize=(1.3 * ncols + 0.6, 1.35 * n + 0.7), layout="constrained")
    axes = np.atleast_2d(fig.subplots(n, ncols, squeeze=False))
    if images is not None:
        images = np.asarray(images.detach().cpu() if hasattr(images, "detach") else images)
    for i in range(n):
        col = 0
        if images is not None:
            axes[i, 0].imshow(images[i, 0] if images.ndim == 4 else images[i], cmap="gray", vmin=0, vmax=1)
            col = 1
        for j in range(shown):
            axes[i, col + j].imshow(maps[i, j], cmap=cmap)
        for j, ax in enumerate(axes[i]):
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title("input" if images is not None and j == 0 else f"channel {j + 1 - col}", fontsize=8)
        if row_titles is not None:
            axes[i, 0].set_ylabel(literal(row_titles[i]), fontsize=8)
    fig.suptitle(literal(title))
    return fig


def plot_grid_results(table, *, x: str = "name", y: str = "val_acc", ax=None, title: str = "Validation accuracy"):
    """Bar chart of one column of a grid table."""
    fig, ax = _ax(ax, figsize=(7, 0.4 * len(table) + 1.2))
    order = table.sort_values(y)
    err = order[f"{y}_std"] if f"{y}_std" in order else None  # run-to-run spread when there are repeats
    ax.barh(_literals(order[x]), order[y], color="C2", xerr=err, ecolor="0.3", capsize=3)
    ends = order[y] + (err.fillna(0) if err is not None else 0)  # labels right of the error bars
    lo = float(order[y].min())
    ax.set_xlim(max(0.0, lo - 0.05), min(1.0, float(ends.max()) + 0.02))
    for i, (v, end) in enumerate(zip(order[y], ends)):
        ax.text(end, i, f" {v:.2%}", va="center", fontsize=8)
    ax.set_xlabel(y.replace("_", " ") + (" (mean ± std over seeds)" if err is not None else ""))
    ax.set_title(literal(title))
    return fig


def plot_reconstructions(clean, noisy, recon, *, fig=None, title: str = "Clean, noisy and reconstructed test images",
                         row_titles=("clean", "noisy input", "reconstruction"), col_titles=None):
    """Three rows of images (N, 1, H, W) or (N, H, W) in [0, 1]: clean, noisy and reconstructed, column by column."""
    rows = [np.asarray(r.detach().cpu() if hasattr(r, "detach") else r) for r in (clean, noisy, recon)]
    rows = [r[:, 0] if r.ndim == 4 and r.shape[1] == 1 else r.transpose(0, 2, 3, 1) if r.ndim == 4 else r for r in rows]
    n = len(rows[0])
    fig = fig or plt.figure(figsize=(1.3 * n + 0.8, 4.4), layout="constrained")
    axes = np.atleast_2d(fig.subplots(3, n, squeeze=False))
    for i, (images, label) in enumerate(zip(rows, row_titles)):
        for j, ax in enumerate(axes[i]):
            ax.imshow(images[j], cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0 and col_titles is not None:
                ax.set_title(literal(col_titles[j]), fontsize=7)
        axes[i, 0].set_ylabel(literal(label), fontsize=9)
    fig.suptitle(literal(title))
    return fig


def plot_projection(points, labels, class_names, *, ax=None, title: str = "2-D projection of the latent codes",
                    xlabel: str = "component 1", ylabel: str = "component 2"):
    """Scatter of 2-D points (N, 2) coloured by class index ``labels``, with a legend of class names."""
    fig, ax = _ax(ax, figsize=(6.5, 5.5))
    points, labels = np.asarray(points), np.asarray(labels)
    colors = sns.color_palette("tab10", n_colors=max(len(class_names), 1))
    for k, name in enumerate(class_names):
        mask = labels == k
        ax.scatter(points[mask, 0], points[mask, 1], s=6, alpha=0.6, color=colors[k % len(colors)],
                   label=literal(name))
    ax.set_xlabel(literal(xlabel))
    ax.set_ylabel(literal(ylabel))
    ax.set_title(literal(title))
    ax.legend(fontsize=7, markerscale=2.5, loc="best")
    return fig


def mark_epochs(fig, marks: dict, *, color: str = "gray"):
    """Dotted vertical lines at the given epochs on every axis of ``fig``; returns the figure.

    ``marks`` maps a label to an epoch, e.g. where shorter runs of the same seeded training stop.
    """
    for ax in fig.axes:
        for label, epoch in marks.items():
            ax.axvline(epoch, color=color, ls=":", lw=1.2)
            ax.annotate(literal(label), (epoch, 1), xycoords=("data", "axes fraction"), xytext=(2, -10),
                        textcoords="offset points", fontsize=7, color=color, rotation=90, va="top")
    return fig


def save_figure(fig, output_dir: str | Path, name: str) -> None:
    """Save ``fig`` as ``output_dir/name.png`` (150 dpi), and in a notebook show that file as the figure.

    Returns nothing on purpose: it is the last line of many notebook cells, and a returned path would be
    printed into the report under every figure.
    """
    path = Path(output_dir) / f"{name}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=SAVED_DPI, bbox_inches="tight")
    path.write_bytes(buffer.getvalue())
    if "inline" in matplotlib.get_backend():
        _show_saved(fig, buffer.getvalue())


def _show_saved(fig, png: bytes) -> None:
    """In a notebook, show the PNG just saved instead of letting the inline backend draw the figure again.

    Drawing is most of a figure's cost (two passes each for ``bbox_inches="tight"``), and every report figure is
    both saved and shown: showing the saved file halves it. The width keeps the inline backend's on-page size
    (its 100 dpi), so the page looks as before, with a sharper image for the PDF.
    """
    from IPython.display import Image, display  # only ever in a kernel, where IPython is loaded already

    width = struct.unpack(">I", png[16:20])[0]  # PNG header: the IHDR width, big-endian
    plt.close(fig)
    display(Image(data=png, format="png", width=round(width * INLINE_DPI / SAVED_DPI)))


def plot_per_class_comparison(per_class: dict, *, ax=None, title: str = "Test accuracy per class and configuration"):
    """Heatmap of test accuracy: one row per configuration, one column per class (values in percent)."""
    frame = pd.DataFrame(per_class).T * 100
    frame.index, frame.columns = _literals(frame.index), _literals(frame.columns)
    fig, ax = _ax(ax, figsize=(min(1.0 * frame.shape[1] + 3.5, 11), 0.45 * len(frame) + 2))
    sns.heatmap(frame, annot=True, fmt=".1f", cmap="viridis", cbar_kws={"label": "test accuracy %"}, ax=ax,
                annot_kws={"fontsize": 7})
    ax.set_xlabel("class")
    ax.set_ylabel("configuration")
    ax.set_title(literal(title))
    ax.tick_params(axis="x", labelrotation=45)
    return fig
