"""Honest observations (issue 20, part 7): at chance level nothing is ranked, differences within the noise of the
validation images are said to tell nothing, and overfitting is named only when a gap stands out."""

from __future__ import annotations

import numpy as np
import pandas as pd

from helpers.engine.metrics import report_frame
from helpers.reporting import observations, report
from helpers.reporting.observations import Evidence

OVERCLAIMS = ("leads by", "lowered validation accuracy by", "raised validation accuracy by",
              "clearest sign of overfitting", "above the weakest", "later epochs overfit", "more epochs might help")


def smoke_cnn():
    """What the smoke CNN run gave: two configurations at 10% (every image taken for a Coat), 0.39 points apart in
    their train/validation gaps, an augmentation table at 10% both ways."""
    table = pd.DataFrame({"name": ["32", "64"], "channels": ["32", "64"], "width": ["a", "b"],
                          "val_acc": [0.10, 0.10], "train_acc": [0.1039, 0.10], "val_loss": [2.30, 2.31],
                          "seconds": [3.0, 5.0], "status": ["completed"] * 2})
    classes = [f"class {k}" for k in range(10)]
    cm = np.zeros((10, 10), dtype=int)
    cm[:, 4] = 10  # every test image predicted as class 4
    final = {"test": {"accuracy": 0.10, "loss": 2.30, "confusion_matrix": cm,
                      "most_confused": pd.DataFrame({"true": ["class 0"], "predicted": ["class 4"], "count": [10],
                                                     "share_of_true": [1.0]}),
                      "per_class": pd.DataFrame({"class": classes, "accuracy": [0.0] * 4 + [1.0] + [0.0] * 5})}}
    result = {"table": table, "histories": {}, "varied": ["channels", "width"], "val_size": 30, "num_classes": 10,
              "profile": "smoke"}
    augmentation = {"table": pd.DataFrame({"name": ["on", "off"], "augment": [True, False], "val_acc": [0.10, 0.10],
                                           "train_acc": [0.09, 0.10], "epochs_run": [2, 2]})}
    return result, final, augmentation


def test_the_smoke_cnn_is_at_chance_level_and_nothing_is_ranked():
    result, final, augmentation = smoke_cnn()
    text = observations.experiment_observations(result, final=final, augmentation=augmentation)
    first = text.splitlines()[0]
    assert first.startswith("- **At chance level:** the best validation accuracy, 10.00%, is about what guessing "
                            "gives with 10 classes (10%); the final model predicts class 4 for every test image")
    assert "`smoke` settings" in first and "nothing here ranks the configurations" in first
    for claim in OVERCLAIMS:
        assert claim not in text, claim
    assert "no effect can be claimed" in text


def test_a_gap_within_noise_is_not_called_overfitting():
    # a 0.39-point wider gap on 1,000 validation images: the noise there is about ±2.6 points
    table = pd.DataFrame({"name": ["a", "b"], "val_acc": [0.80, 0.79], "train_acc": [0.82, 0.8139],
                          "seconds": [1.0, 2.0], "status": ["completed"] * 2})
    text = observations.grid_observations(table, {}, evidence=Evidence(num_classes=10, val_size=1000))
    assert "clearest sign of overfitting" not in text
    assert "no configuration stands out as overfitting" in text
    assert "within the noise of 1,000 validation images (about ±3.6%): the ranking is not reliable" in text
    # the same gap on 100,000 images stands out
    text = observations.grid_observations(table.assign(train_acc=[0.82, 0.86]), {},
                                          evidence=Evidence(num_classes=10, val_size=100_000))
    assert "the clearest sign of overfitting in the grid" in text and "ranking is not reliable" not in text


def test_a_factor_and_augmentation_within_noise_tell_nothing():
    table = pd.DataFrame({"name": ["max + bn", "avg + bn"], "pool": ["max", "avg"], "val_acc": [0.85, 0.84],
                          "train_acc": [0.9, 0.9], "seconds": [1.0, 1.0], "status": ["completed"] * 2})
    text = observations.factor_observations(table, ["pool"], evidence=Evidence(10, 9000))
    assert "the difference (1.00%) is within the noise of 9,000 validation images (about ±1.1%)" in text
    assert "leads by" not in text
    assert "leads by 1.00%" in observations.factor_observations(table, ["pool"], evidence=Evidence(10, 90_000))
    aug = pd.DataFrame({"name": ["on", "off"], "augment": [True, False], "val_acc": [0.85, 0.86],
                        "train_acc": [0.86, 0.95], "epochs_run": [3, 3]})
    text = observations.augmentation_observations(aug, evidence=Evidence(10, 9000))
    assert "changed validation accuracy by -1.00% (86.00% off, 85.00% on) after 3 epochs, within the noise" in text
    assert "lowered" not in text and "harder to fit" in text  # the train accuracy did fall by more than noise


def test_noise_is_the_documented_formula():
    assert round(Evidence(10, 30).noise(0.1), 3) == 0.155
    assert round(Evidence(10, 9000).noise(0.85), 4) == 0.0106
    assert Evidence().noise(0.5) == 0.0 and Evidence().chance is None


def test_the_classification_table_shows_the_accuracy_row_blank_and_escapes_names():
    frame = report_frame(np.array([0, 1, 1, 0]), np.array([0, 0, 0, 0]), ["<b>a</b>", "b"])
    html = report.classification_table({"report": frame}).to_html()
    assert "nan" not in html.lower() and "&lt;b&gt;a&lt;/b&gt;" in html
    row = html[html.index(">accuracy<"):].split("</tr>")[0]
    assert row.count('class="data row2') == 4 and "0.500" in row and ">4<" in row
    assert row.count("></td>") == 2  # precision and recall: blank


def test_a_notebook_replacing_a_finished_report_says_so(tmp_path, capsys):
    (tmp_path / "metrics.json").write_text('{"environment": {"date": "2026-12-01T10:00:00"}}')
    cfg = type("Cfg", (), {"author_name": "A", "author_id": "1", "course": "c", "profile": "smoke", "seed": 0,
                           "output_dir": str(tmp_path)})()
    report.author_block(cfg=cfg)
    err = capsys.readouterr().err
    assert f"this run replaces the report in {tmp_path} made at 2026-12-01T10:00:00" in err
    (tmp_path / "metrics.json").unlink()
    report.author_block(cfg=cfg)
    assert capsys.readouterr().err == ""
