"""Plot functions: each returns a titled, labelled figure, draws into a given ``ax``, and shows the data it is given."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from helpers.reporting import plots  # noqa: E402


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def history(n_epochs: int = 4, *, with_val: bool = True) -> list[dict]:
    rows = []
    for e in range(1, n_epochs + 1):
        row = {"epoch": e, "train_loss": 1.0 / e, "train_acc": 0.5 + 0.1 * e}
        if with_val:
            row.update(val_loss=1.2 / e, val_acc=0.45 + 0.1 * e)
        rows.append(row)
    return rows


HISTORIES = {"adam + none": history(), "rmsprop + dropout": history(3)}
NAMES = [f"class {i}" for i in range(4)]


def titled_axes(fig: Figure) -> list:
    """The visible axes that carry a title (suptitle aside)."""
    return [ax for ax in fig.axes if ax.get_visible() and ax.get_title()]


def test_plot_curves_one_legend_entry_per_history_and_labels():
    fig = plots.plot_curves(HISTORIES, metric="acc", title="Accuracy")
    ax = fig.axes[0]
    assert isinstance(fig, Figure)
    assert ax.get_title() == "Accuracy"
    assert ax.get_xlabel() == "epoch" and ax.get_ylabel() == "accuracy"
    assert [t.get_text() for t in ax.get_legend().get_texts()] == list(HISTORIES)
    # a train and a validation line per history, with the history's values
    assert len(ax.lines) == 2 * len(HISTORIES)
    np.testing.assert_allclose(ax.lines[1].get_ydata(), [r["val_acc"] for r in HISTORIES["adam + none"]])


def test_plot_curves_without_validation_still_labels_each_history():
    fig = plots.plot_curves({"final": history(with_val=False)}, metric="loss")
    ax = fig.axes[0]
    assert len(ax.lines) == 1
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["final"]
    assert ax.get_ylabel() == "cross-entropy loss"


def test_one_epoch_runs_are_drawn_as_points():
    fig = plots.plot_curves({"smoke": history(1)})
    assert all(line.get_marker() == "o" for line in fig.axes[0].lines)
    fig = plots.plot_history_grid({"smoke": history(1)})
    assert all(line.get_marker() == "o" for ax in fig.axes for line in ax.lines)
    assert all(line.get_marker() in ("None", None, "") for line in plots.plot_curves(HISTORIES).axes[0].lines)


def test_plot_curves_draws_into_the_given_ax_and_custom_ylabel():
    fig, (left, right) = plt.subplots(1, 2)
    out = plots.plot_curves(HISTORIES, metric="loss", ax=right, ylabel="MSE")
    assert out is fig
    assert not left.lines and len(right.lines) == 4
    assert right.get_ylabel() == "MSE"


def test_plot_learning_curves_has_loss_and_accuracy_panels():
    fig = plots.plot_learning_curves(HISTORIES, title="Grid")
    assert fig.get_suptitle() == "Grid"
    assert [ax.get_ylabel() for ax in fig.axes] == ["cross-entropy loss", "accuracy"]
    assert all(ax.get_xlabel() == "epoch" for ax in fig.axes)
    assert "validation" in fig.axes[0].get_title()
    final = plots.plot_learning_curves({"final": history(with_val=False)})
    assert [ax.get_title() for ax in final.axes] == ["Loss (training set)", "Accuracy (training set)"]


def test_plot_history_grid_one_panel_per_configuration_hides_the_rest():
    hist = {f"config {i}": history() for i in range(5)}
    fig = plots.plot_history_grid(hist, ncols=4, title="Per configuration")
    panels = [ax for ax in fig.axes if ax.get_visible() and ax.get_title()]
    assert [ax.get_title() for ax in panels] == list(hist)
    assert all(ax.get_xlabel() == "epoch" for ax in panels)
    assert fig.get_suptitle() == "Per configuration"
    assert len(fig.legends) == 1


@pytest.mark.parametrize("normalize", [True, False])
def test_plot_confusion_matrix_values_and_labels(normalize):
    cm = np.array([[8, 2, 0, 0], [1, 9, 0, 0], [0, 0, 5, 5], [0, 0, 0, 10]])
    fig = plots.plot_confusion_matrix(cm, NAMES, normalize=normalize, title="CM")
    ax = fig.axes[0]
    assert ax.get_xlabel() == "predicted class" and ax.get_ylabel() == "true class"
    assert ax.get_title().startswith("CM")
    assert [t.get_text() for t in ax.get_xticklabels()] == NAMES
    cells = [t.get_text() for t in ax.texts]
    assert len(cells) == cm.size
    # rows are true classes: the first row shares are 0.80 0.20 0.00 0.00
    expected = ["0.80", "0.20", "0.00", "0.00"] if normalize else ["8", "2", "0", "0"]
    assert cells[:4] == expected


def test_plot_confusion_matrix_empty_row_does_not_divide_by_zero():
    cm = np.array([[0, 0], [3, 1]])
    fig = plots.plot_confusion_matrix(cm, ["a", "b"])
    assert [t.get_text() for t in fig.axes[0].texts] == ["0.00", "0.00", "0.75", "0.25"]


def test_plot_per_class_accuracy_sorted_bars_with_labels():
    per_class = pd.DataFrame({"class": NAMES, "accuracy": [0.9, 0.5, 0.75, 1.0]})
    fig = plots.plot_per_class_accuracy(per_class, title="Per class")
    ax = fig.axes[0]
    widths = [p.get_width() for p in ax.patches]
    assert widths == sorted(widths) == [0.5, 0.75, 0.9, 1.0]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["class 1", "class 2", "class 0", "class 3"]
    assert ax.get_xlabel() == "accuracy" and ax.get_title() == "Per class"


@pytest.mark.parametrize("shape", [(6, 1, 8, 8), (6, 8, 8)])
def test_plot_image_grid_shows_each_image_with_its_title(shape):
    images = np.random.default_rng(0).random(shape)
    titles = [f"img {i}" for i in range(6)]
    fig = plots.plot_image_grid(images, titles, ncols=4, title="Samples")
    shown = [ax for ax in fig.axes if ax.images]
    assert len(shown) == 6 and len(fig.axes) == 8  # two empty slots in a 2 x 4 grid
    assert [ax.get_title() for ax in shown] == titles
    np.testing.assert_allclose(shown[0].images[0].get_array(), images[0].reshape(8, 8))
    assert fig.get_suptitle() == "Samples"


def test_plot_feature_maps_input_column_and_channel_titles():
    maps = np.random.default_rng(0).random((3, 12, 6, 6))
    images = np.random.default_rng(1).random((3, 1, 6, 6))
    fig = plots.plot_feature_maps(maps, images, row_titles=["a", "b", "c"], max_maps=4, title="Maps")
    assert len(fig.axes) == 3 * 5
    top = [ax.get_title() for ax in fig.axes[:5]]
    assert top == ["input", "channel 1", "channel 2", "channel 3", "channel 4"]
    assert [fig.axes[5 * i].get_ylabel() for i in range(3)] == ["a", "b", "c"]
    assert fig.get_suptitle() == "Maps"


def test_plot_grid_results_one_bar_per_row_labelled_with_its_value():
    table = pd.DataFrame({"name": ["a", "b", "c"], "val_acc": [0.8, 0.9, 0.85]})
    fig = plots.plot_grid_results(table, title="Validation")
    ax = fig.axes[0]
    assert [p.get_width() for p in ax.patches] == [0.8, 0.85, 0.9]
    assert [t.get_text().strip() for t in ax.texts] == ["80.00%", "85.00%", "90.00%"]
    assert ax.get_xlabel() == "val acc" and ax.get_title() == "Validation"


def test_plot_grid_results_error_bars_with_repeats():
    table = pd.DataFrame({"name": ["a", "b"], "val_acc": [0.8, 0.9], "val_acc_std": [0.02, 0.01]})
    fig = plots.plot_grid_results(table, title="Validation")
    ax = fig.axes[0]
    assert [p.get_width() for p in ax.patches] == [0.8, 0.9]
    assert ax.get_xlabel() == "val acc (mean ± std over seeds)"
    # one horizontal error bar per bar, mean ± std wide
    segments = [seg for c in ax.collections for seg in c.get_segments()]
    assert sorted(round(float(seg[1][0] - seg[0][0]), 6) for seg in segments) == [0.02, 0.04]


def test_plot_per_class_comparison_one_row_per_configuration_in_percent():
    per_class = {"adam": {"Shirt": 0.5, "Bag": 0.9}, "sgd": {"Shirt": 0.625, "Bag": 1.0}}
    fig = plots.plot_per_class_comparison(per_class, title="Per class")
    ax = fig.axes[0]
    assert ax.get_title() == "Per class" and ax.get_xlabel() == "class" and ax.get_ylabel() == "configuration"
    assert [t.get_text() for t in ax.get_yticklabels()] == ["adam", "sgd"]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["Shirt", "Bag"]
    assert [t.get_text() for t in ax.texts] == ["50.0", "90.0", "62.5", "100.0"]


def test_plot_reconstructions_three_labelled_rows():
    rng = np.random.default_rng(0)
    clean, noisy, recon = (rng.random((5, 1, 8, 8)) for _ in range(3))
    fig = plots.plot_reconstructions(clean, noisy, recon, col_titles=list("vwxyz"))
    assert len(fig.axes) == 15
    assert [fig.axes[5 * i].get_ylabel() for i in range(3)] == ["clean", "noisy input", "reconstruction"]
    assert [ax.get_title() for ax in fig.axes[:5]] == list("vwxyz")
    assert fig.get_suptitle()


def test_plot_projection_colours_each_class_and_labels_axes():
    points = np.arange(20, dtype=float).reshape(10, 2)
    labels = np.array([0, 1, 2, 3, 0, 1, 2, 3, 0, 1])
    fig = plots.plot_projection(points, labels, NAMES, title="PCA", xlabel="PC 1", ylabel="PC 2")
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == NAMES
    assert [len(c.get_offsets()) for c in ax.collections] == [3, 3, 2, 2]
    assert (ax.get_xlabel(), ax.get_ylabel(), ax.get_title()) == ("PC 1", "PC 2", "PCA")


def test_mark_epochs_draws_a_line_per_mark_on_every_axis():
    fig = plots.plot_learning_curves(HISTORIES)
    before = [len(ax.lines) for ax in fig.axes]
    out = plots.mark_epochs(fig, {"5 epochs": 2, "10 epochs": 3})
    assert out is fig
    assert [len(ax.lines) for ax in fig.axes] == [n + 2 for n in before]
    assert all({t.get_text() for t in ax.texts} >= {"5 epochs", "10 epochs"} for ax in fig.axes)


def test_save_figure_writes_a_png_and_returns_nothing(tmp_path):
    fig = plots.plot_curves(HISTORIES)
    assert plots.save_figure(fig, tmp_path / "new" / "folder", "curves") is None
    png = tmp_path / "new" / "folder" / "curves.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_every_plot_function_titles_its_figure():
    """A report figure without a title is a defect: check each function's default output."""
    cm = np.eye(4, dtype=int) * 5
    per_class = pd.DataFrame({"class": NAMES, "accuracy": [0.9, 0.5, 0.75, 1.0]})
    images = np.zeros((4, 1, 8, 8))
    figs = {
        "curves": plots.plot_curves(HISTORIES),
        "confusion": plots.plot_confusion_matrix(cm, NAMES),
        "per_class": plots.plot_per_class_accuracy(per_class),
        "grid_results": plots.plot_grid_results(pd.DataFrame({"name": ["a"], "val_acc": [0.5]})),
        "projection": plots.plot_projection(np.zeros((4, 2)), np.arange(4), NAMES),
        "learning": plots.plot_learning_curves(HISTORIES),
        "history_grid": plots.plot_history_grid(HISTORIES),
        "per_class_comparison": plots.plot_per_class_comparison({"a": {"x": 0.5}}),
        "feature_maps": plots.plot_feature_maps(np.zeros((2, 3, 4, 4))),
        "reconstructions": plots.plot_reconstructions(images, images, images),
    }
    for name, fig in figs.items():
        assert fig.get_suptitle() or titled_axes(fig), name
