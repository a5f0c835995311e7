"""What each ingredient of the CNN section's final recipe buys: the ablation table the CNN report shows.

Training the recipe once per ingredient taken out, over several seeds, costs about an hour on a 2-core CPU, more
than a report run can spend; so ``scripts/benchmark_time_to_accuracy.py --ablation-epochs E --ablation-out
helpers/reporting/cnn_ablation.json`` measures it once and the toolkit ships the result. The report says so in
the table's caption (machine, date, seeds, budget, command) and names every setting in which this run's recipe
differs from the one measured, so the table is never mistaken for a number of this run.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path

import pandas as pd

from helpers.escape import md_code, md_text

ABLATION_FILE = Path(__file__).with_name("cnn_ablation.json")
# The settings that make the final recipe: the benchmark records them, and the report names those this run changed.
RECIPE_KEYS = ("profile", "search_architecture", "conv_dropouts", "head_dropouts", "hidden_sizes", "optimizer", "lr",
               "schedule", "momentum", "weight_decay", "label_smoothing", "batch_size", "final_augment", "precision",
               "test_flip", "init")


def recipe_of(cfg: Mapping) -> dict:
    """The settings of ``cfg`` (a CNN section configuration) that make its final recipe."""
    return {k: cfg.get(k) for k in RECIPE_KEYS}


def load_ablation(path: str | Path = ABLATION_FILE) -> dict | None:
    """The measured ablation (the benchmark's ``--ablation-out``), or None when the file is absent or not one."""
    try:
        record = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    rows = record.get("rows") if isinstance(record, dict) else None
    if not isinstance(rows, list) or not rows or not all(isinstance(r, dict) and "without" in r for r in rows):
        return None
    return record


def _number(value) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def ablation_frame(record: Mapping) -> pd.DataFrame:
    """One row per ingredient taken out (the whole recipe first): test accuracy as mean ± std over the seeds, the
    change against the whole recipe in points, the wall time of a run and its ratio to the whole recipe's.

    The time is the fastest seed's (``seconds_min``; the median where a file has no minimum): other work on the
    machine only ever adds to a run's wall time, and the accuracy does not depend on it."""
    rows = record["rows"]
    key = "seconds_min" if all("seconds_min" in r for r in rows) else "seconds_median"
    whole_seconds = _number(rows[0].get(key))
    out = []
    for r in rows:
        mean, std, secs = (_number(r.get(k)) for k in ("accuracy_mean", "accuracy_std", key))
        out.append({"taken out": str(r["without"]),
                    "test accuracy": f"{mean:.2f}%" + ("" if math.isnan(std) else f" ± {std:.2f}"),
                    "change (points)": "" if r is rows[0] else f"{_number(r.get('change')):+.2f}",
                    "wall time": f"{secs:.0f} s" + ("" if r is rows[0] or not whole_seconds
                                                    else f" ({secs / whole_seconds:.2f}x)")})
    return pd.DataFrame(out)


def ablation_caption(record: Mapping, cfg: Mapping | None = None, *, best: Mapping | None = None) -> str:
    """Markdown: where the table's numbers come from, and how this run's recipe differs from the one measured
    (``best``: the configuration this run's search chose, named when it is not the one the table's runs train)."""
    machine = record.get("machine") or {}
    seeds = record.get("seeds")
    text = (f"Measured once for the toolkit, not by this run: the final recipe retrained on all 60,000 training "
            f"images for {md_text(record.get('epochs'))} epochs, each row over seeds 0-{_seeds_last(seeds)} "
            f"(mean ± std of the test accuracy), with one ingredient taken out at a time; on "
            f"{md_text(machine.get('cpu_model', 'an unnamed CPU'))} ({md_text(machine.get('cores', '?'))} cores, torch "
            f"{md_text(machine.get('torch', '?'))}) on {md_text(record.get('date', 'an unrecorded date'))}, by "
            f"{md_code(record.get('command', 'scripts/benchmark_time_to_accuracy.py'))}. A change smaller than about "
            f"two standard deviations is within what another seed gives. A time is that machine's, for the fastest "
            f"seed's run.")
    if cfg is not None and isinstance(record.get("recipe"), Mapping):
        measured, here = record["recipe"], recipe_of(cfg)
        changed = [f"{md_code(k)} {md_code(here[k])} (measured with {md_code(measured.get(k))})"
                   for k in RECIPE_KEYS if k in measured and measured.get(k) != here[k]]
        if changed:
            text += (" **This run's recipe differs from the one measured** in " + ", ".join(changed) +
                     ": what each ingredient buys here may differ.")
        else:
            text += (f" This run uses the recipe measured (for {md_text(cfg.get('final_epochs'))} epochs, where the "
                     f"table's runs trained for {md_text(record.get('epochs'))}).")
    first = (cfg.get("search_configs") or [None])[0] if cfg is not None else None
    if best is not None and first is not None and best.get("name") != first.get("name"):
        # the benchmark trains the search's first configuration; a search may choose another one
        text += (f" This run's search chose **{md_text(best.get('name'))}**; the table's runs train the search's "
                 f"first configuration, **{md_text(first.get('name'))}**.")
    return text


def _seeds_last(seeds) -> str:
    n = _number(seeds)
    return str(int(n) - 1) if n == n and n >= 1 else "?"


def ablation_report(cfg: Mapping | None, path: str | Path = ABLATION_FILE, *,
                    best: Mapping | None = None) -> tuple[str, pd.DataFrame | None]:
    """The CNN report's ablation: its caption (Markdown) and table, or a sentence saying none is shipped."""
    record = load_ablation(path)
    if record is None:
        return (f"No measured ablation ships with this copy of the toolkit ({md_code(Path(path).name)} is absent or "
                "unreadable); `scripts/benchmark_time_to_accuracy.py --ablation-epochs 4 --ablation-out` writes it.",
                None)
    return ablation_caption(record, cfg, best=best), ablation_frame(record)


def report_outputs(cfg: Mapping | None, path: str | Path = ABLATION_FILE, *, best: Mapping | None = None) -> list:
    """What the CNN report's cell shows (``display(*report_outputs(cfg, best=best))``): the caption, then the table
    if any."""
    from IPython.display import Markdown  # only where a report is shown

    caption, table = ablation_report(cfg, path, best=best)
    return [Markdown(caption)] + ([] if table is None else [table.set_index("taken out")])  # rows named, not numbered
