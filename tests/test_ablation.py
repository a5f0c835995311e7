"""helpers.reporting.ablation: the CNN report's ablation table, read from the file the benchmark writes and the
toolkit ships, with a caption that says where it was measured and how this run's recipe differs."""

from __future__ import annotations

import json

import pytest

from helpers.reporting import ablation
from helpers.sections import make_config
from tests.test_config import notebook_namespace

CNN = {k: v for k, v in notebook_namespace("cnn").items() if not k.startswith("__")}

SCRIPT_INGREDIENTS = ("test-time mirror images", "flips in training", "label smoothing 0.1",
                      "training without dropout (conv 0.05, head 0.3 instead)",
                      "Nesterov SGD, one-cycle (Adam 1e-3 instead)", "bfloat16 (float32 instead)",
                      "six convolutions (the compact network instead)")


def record(**changes) -> dict:
    rows = [{"without": "nothing (the whole recipe)", "accuracy_mean": 93.0, "accuracy_std": 0.1, "change": 0.0,
             "seconds_median": 250.0, "seconds_min": 200.0},
            {"without": "label smoothing 0.1", "accuracy_mean": 92.5, "accuracy_std": 0.2, "change": -0.5,
             "seconds_median": 210.0, "seconds_min": 210.0},
            {"without": "bfloat16 (float32 instead)", "accuracy_mean": 93.1, "accuracy_std": float("nan"),
             "change": 0.1, "seconds_median": 400.0, "seconds_min": 380.0}]
    quick = make_config("cnn", **{**CNN, "profile": "quick"})
    return {"epochs": 4, "seeds": 2, "profile": "quick", "date": "2026-12-03", "command": "python scripts/x.py",
            "machine": {"cpu_model": "AMD EPYC", "cores": 2, "torch": "2.14.1"}, "recipe": ablation.recipe_of(quick),
            "rows": rows, **changes}


def test_the_table_shows_each_ingredients_change_and_cost():
    """The fastest seed's time (other work only adds to a wall time); a file without it shows the median."""
    frame = ablation.ablation_frame(record())
    assert list(frame.columns) == ["taken out", "test accuracy", "change (points)", "wall time"]
    assert frame.to_dict(orient="records") == [
        {"taken out": "nothing (the whole recipe)", "test accuracy": "93.00% ± 0.10", "change (points)": "",
         "wall time": "200 s"},
        {"taken out": "label smoothing 0.1", "test accuracy": "92.50% ± 0.20", "change (points)": "-0.50",
         "wall time": "210 s (1.05x)"},
        {"taken out": "bfloat16 (float32 instead)", "test accuracy": "93.10%", "change (points)": "+0.10",
         "wall time": "380 s (1.90x)"}]
    medians = record(rows=[{k: v for k, v in r.items() if k != "seconds_min"} for r in record()["rows"]])
    assert list(ablation.ablation_frame(medians)["wall time"]) == ["250 s", "210 s (0.84x)", "400 s (1.60x)"]


def test_the_caption_says_where_it_was_measured_and_what_this_run_changed():
    quick = make_config("cnn", **{**CNN, "profile": "quick"})
    same = ablation.ablation_caption(record(), quick)
    assert "not by this run" in same and "seeds 0-1" in same and "AMD EPYC" in same and "2026\\-12\\-03" in same
    assert "This run uses the recipe measured" in same and "differs" not in same
    adam = make_config("cnn", **{**CNN, "profile": "quick", "optimizer": "adam", "label_smoothing": 0.0})
    changed = ablation.ablation_caption(record(), adam)
    assert "**This run's recipe differs from the one measured**" in changed
    assert "`optimizer` `adam` (measured with `sgd`)" in changed
    assert "`label_smoothing` `0.0` (measured with `0.1`)" in changed
    # the search's dropouts make the final configuration: a run with other ones is told so
    dropout = make_config("cnn", **{**CNN, "profile": "quick", "head_dropouts": [0.3]})
    assert "`head_dropouts` `[0.3]` (measured with `[0.0]`)" in ablation.ablation_caption(record(), dropout)
    # the table's runs train the search's first configuration; a run whose search chose another is told so
    first, other = quick.search_configs[:2]
    assert "search chose" not in ablation.ablation_caption(record(), quick, best=first)
    chose = ablation.ablation_caption(record(), quick, best={**other, "name": "<b>x</b>"})
    assert "This run's search chose **\\<b\\>x\\</b\\>**" in chose and "**conv\\_dropout 0 \\+ dense\\_dropout 0" in chose


def test_a_hostile_or_missing_file_is_a_sentence_not_markup(tmp_path):
    path = tmp_path / "cnn_ablation.json"
    hostile = record(machine={"cpu_model": "<script>alert(1)</script> ![x](file:///etc/passwd)"}, date="`$x$`")
    path.write_text(json.dumps(hostile))
    caption, frame = ablation.ablation_report(None, path)
    assert "<script>" not in caption and "\\<script\\>" in caption and "\\!\\[x\\]" in caption and len(frame) == 3
    for broken in ("{", "[]", json.dumps({"rows": []}), json.dumps({"rows": [{"accuracy_mean": 1}]})):
        path.write_text(broken)
        caption, frame = ablation.ablation_report(None, path)
        assert frame is None and caption.startswith("No measured ablation ships")
    caption, frame = ablation.ablation_report(None, tmp_path / "absent.json")
    assert frame is None and "`absent.json`" in caption
    assert [type(o).__name__ for o in ablation.report_outputs(None, tmp_path / "absent.json")] == ["Markdown"]
    path.write_text(json.dumps(record()))
    assert [type(o).__name__ for o in ablation.report_outputs(None, path)] == ["Markdown", "DataFrame"]


def test_the_shipped_table_is_the_benchmarks_for_the_notebooks_own_recipe():
    """The file the CNN report reads: every ingredient the benchmark takes out, for the recipe the notebook trains
    in quick. A change to that recipe fails here until the benchmark is run again (README, Performance)."""
    shipped = ablation.load_ablation()
    assert shipped is not None, "helpers/reporting/cnn_ablation.json is missing or unreadable"
    assert [r["without"] for r in shipped["rows"]] == ["nothing (the whole recipe)", *SCRIPT_INGREDIENTS]
    assert shipped["seeds"] >= 2 and shipped["epochs"] >= 2 and shipped["profile"] == "quick"
    quick = make_config("cnn", **{**CNN, "profile": "quick"})
    assert "This run uses the recipe measured" in ablation.ablation_caption(shipped, quick)
    for row in shipped["rows"][1:]:
        assert row["change"] == pytest.approx(row["accuracy_mean"] - shipped["rows"][0]["accuracy_mean"])
