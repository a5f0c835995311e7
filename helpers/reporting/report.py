"""Report plumbing: provenance, the author block, the test-set block, and the one call that ends every report.

The metrics file is :mod:`helpers.reporting.metrics_file`'s and the observations are
:mod:`helpers.reporting.observations`'; :func:`finish` writes the one and shows the provenance appendix.

Every value a sentence or table takes from the run (author fields, configuration and class names, parameter
values, statuses) is the student's text: it goes in through :func:`md_text` or :func:`md_code`
(:mod:`helpers.escape`), which the notebooks use too, so it shows as the characters given and never as markup.
"""

from __future__ import annotations

import datetime as dt
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from IPython.display import Markdown

from helpers.cache import describe
from helpers.engine.config import PROJECT_ROOT
from helpers.engine.experiment import distinct_models, varied_parameters
from helpers.engine.metrics import confident_mistakes, pair_examples
from helpers.engine.speed import cpu_info
from helpers.engine.training import deterministic_cuda, resolve_device
from helpers.escape import md_code, md_text
from helpers.models.networks import summarize
from helpers.reporting import plots
from helpers.reporting.metrics_file import build_metrics, read_metrics, write_metrics


def git_revision(root: Path = PROJECT_ROOT) -> str:
    """Short commit hash, with ``-dirty`` when the work tree has changes; ``unknown`` outside git."""
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True,
                             timeout=10)
        if rev.returncode != 0:
            return "unknown"
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return rev.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def environment(device="auto") -> dict:
    """Versions, device and machine facts for the appendix and ``metrics.json``."""
    # lazy on purpose: only their versions are needed, and scikit-learn and torchvision take seconds to import
    import matplotlib
    import sklearn
    import torchvision

    dev = resolve_device(device)
    cpu_model, cpu_flags = cpu_info()
    info = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "numpy": np.__version__,
        "pandas": pd.__version__,
        "scikit-learn": sklearn.__version__,
        "matplotlib": matplotlib.__version__,
        "platform": platform.platform(),
        "processor": platform.machine(),
        # the model and instruction set decide the arithmetic: two x86_64 CPUs need not give the same numbers
        "cpu_model": cpu_model,
        "cpu_flags": cpu_flags,
        "cpu_threads": torch.get_num_threads(),
        "device": str(dev),
        "device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else platform.machine(),
        "git_revision": git_revision(),
        "determinism": (deterministic_cuda() if dev.type == "cuda" else
                        "same seed, same machine and versions: the same numbers (checked by python -m helpers verify)"),
        "date": dt.datetime.now().isoformat(timespec="seconds"),
    }
    return info


class Stopwatch:
    """Wall time since creation."""

    def __init__(self):
        self.start = time.perf_counter()

    @property
    def seconds(self) -> float:
        """Seconds since the stopwatch was made."""
        return time.perf_counter() - self.start


def replaced_report(output_dir) -> str | None:
    """A warning when ``output_dir`` already holds a finished report (its ``metrics.json``) that this run is about
    to replace, naming the folder and when that report was made; None when there is none. (``run`` says so itself
    and clears the old ``metrics.json`` first; a notebook run cell by cell in JupyterLab does not go through it.)"""
    path = Path(output_dir) / "metrics.json" if output_dir else None
    if path is None or not path.is_file():
        return None
    try:
        made = (json.loads(path.read_text(encoding="utf-8")).get("environment") or {}).get("date")
    except (OSError, ValueError, AttributeError):
        made = None
    if not isinstance(made, str):
        made = dt.datetime.fromtimestamp(path.stat().st_mtime).isoformat(timespec="seconds")
    return (f"warning: this run replaces the report in {path.parent} made at {made}: its metrics.json, figures and "
            "pages are overwritten as the cells run (set output_dir in the parameters cell to keep it)")


def author_block(*, cfg, title: str | None = None) -> str:
    """Markdown author block of a report (with a level-1 title when ``title`` is given). When the report's output
    folder already holds another run's report, :func:`replaced_report`'s warning goes to stderr first, so the
    notebook's first output says so (stderr: what a rerun elsewhere would not repeat, which verify leaves aside)."""
    warning = replaced_report(getattr(cfg, "output_dir", None))
    if warning:
        print(warning, file=sys.stderr)
    return (
        (f"# {title}\n\n" if title else "")
        + f"**Author:** {md_text(cfg.author_name)} ({md_text(cfg.author_id)})  \n"
        f"**Course:** {md_text(cfg.course)}  \n"
        f"**Profile:** {md_code(cfg.profile)}"
        + (" (every epoch count capped at 2: a check that each cell runs, not a result)" if cfg.profile == "smoke"
           else "")
        + f" · **seed:** {md_text(cfg.seed)} · **date:** {dt.date.today().isoformat()}"
    )


def appendix(env: dict, *, seconds: float, params: dict, metrics_file: str | Path | None = None):
    """Provenance table for the report's appendix; with ``metrics_file``, its fingerprint too.

    Returned styled (the table is its ``.data``): a plain DataFrame of more than 60 rows is shown cut to ten,
    and long values cut at 50 characters, which would hide the parameters a grader wants to read. Unlike a
    DataFrame, a Styler does not escape its cells: they are escaped here (the values are the student's).
    """
    rows = dict(env)
    rows["wall time"] = f"{seconds:.1f} s"
    metrics = read_metrics(metrics_file) if metrics_file else {}
    fp = metrics.get("fingerprint")
    rows.update(cache_rows(metrics))
    if fp:
        rows["fingerprint"] = (f"{fp['short']} (parameters {fp['parameters']}, notebook {fp['notebook']}, data "
                               f"{fp['data']}, results {fp['results']}); check with: fashion-report verify FOLDER")
    # one row per parameter: a single joined string would be cut off by pandas' column width
    rows.update({f"parameter {k}": repr(v) for k, v in params.items() if not k.endswith("_configs")})
    frame = pd.DataFrame({"value": [str(v) for v in rows.values()]}, index=list(rows))
    frame.index.name = "item"
    return (frame.style.format(escape="html").format_index(escape="html", axis=0)
            .format_index(escape="html", axis=1).set_properties(**{"text-align": "left"}))


def cache_rows(metrics: dict) -> dict:
    """The appendix's lines on the cache: what this report read from it instead of computing, and from which runs."""
    record = metrics.get("cache")
    if not record:
        return {}
    if not record.get("enabled"):
        return {"cache": "off: everything was computed in this run"}
    rows = {"cache": f"{record['dir']}: {record['runs_from_cache']} training run(s) read from it, "
                     f"{record['runs_trained']} trained here"}
    for run in record["runs"]:
        if run.get("hit"):
            rows[f"cache: run {run['name']}" + (f" (seed {run['seed']})" if "seed" in run else "")] = describe(run)
    data = (metrics.get("data") or {}).get("cache")
    if data and data.get("hit"):
        rows["cache: data"] = "decoded IDX files " + describe(data)
    for label, pre in (metrics.get("pretraining") or {}).items():
        if (pre.get("cache") or {}).get("hit"):
            rows[f"cache: pretraining {label}"] = describe(pre["cache"])
    return rows


def grid_summary(configs: list[dict], *, repeats: int = 1, evaluate_test: str = "best", what: str = "The grid") -> str:
    """One sentence saying what the comparison varies, how many runs it makes and how the test set is used."""
    varied = varied_parameters(configs)
    runs = len(configs) * repeats
    text = (f"{what} compares **{len(configs)}** configuration{'s' * (len(configs) != 1)}"
            + (f" varying {', '.join(md_code(v) for v in varied)}" if varied else "")
            + (f", each trained with {repeats} seeds ({runs} runs)" if repeats > 1 else "") + ". ")
    text += ("Every configuration is also evaluated on the test set for comparison; the choice of the final model "
             "still uses validation accuracy only." if evaluate_test == "all" else
             "The choice uses validation accuracy; only the chosen configuration sees the test set.")
    return text


def finish(cfg, *, clock: Stopwatch, data: dict, result: dict | None = None, best: dict | None = None,
           final: dict | None = None, latency: dict | None = None, extra: dict | None = None, volatile=()):
    """The end of every report: write its ``metrics.json`` (:func:`helpers.reporting.metrics_file.build_metrics`
    with this machine's :func:`environment` and the wall time so far) and return the provenance :func:`appendix`,
    fingerprint included. ``extra`` is the section's own part of the file (its module's ``metrics_extra``);
    ``volatile`` the section's own keys its fingerprint leaves out (its ``SECTION.volatile``)."""
    env = environment(cfg.device)
    metrics_file = write_metrics(cfg.output_dir, build_metrics(
        cfg=cfg, data=data, result=result, best=best, final=final, latency=latency, extra=extra, env=env,
        seconds=clock.seconds), volatile=volatile)
    return appendix(env, seconds=clock.seconds, params=dict(cfg), metrics_file=metrics_file)


def data_sentence(splits: dict, *, names: bool = False) -> str:
    """Where the images were read from and the split sizes (with ``names``, the class names too), as a sentence."""
    train, val, test = splits["train"], splits["val"], splits["test"]
    classes = train.class_names
    return (f"Data read from {md_code(splits['source'])}. Split sizes: **{len(train):,}** training, "
            f"**{len(val):,}** validation, **{len(test):,}** test images; {len(classes)} classes"
            + (f" ({md_text(', '.join(classes))})." if names else "."))


def architecture_summaries(configs: list[dict], *, base, build, limit: int = 4, label: str = "",
                           input_size=(1, 1, 28, 28), depth: int = 3, caption=None) -> str:
    """A layer table (:func:`helpers.models.networks.summarize`) per distinct architecture among ``configs`` (the
    first ``limit``), each under its title (prefixed with ``label``; followed by ``caption(model)`` when given),
    for the notebook to print."""
    return "\n".join(f"{label}{title}{f': {caption(model)}' if caption else ''}\n"
                     f"{summarize(model, input_size=input_size, depth=depth)}"
                     for title, model in distinct_models(configs, base=base, build=build, limit=limit))


# --- the figures of a comparison -------------------------------------------------------------------------------


def comparison_figures(result: dict, output_dir, *, files: dict, what: str | None = None, metric: str = "val_acc") -> None:
    """Draw and save the figures of one comparison (:func:`helpers.engine.experiment.run_experiment`'s result), one
    per kind named in ``files`` (kind -> file name without ``.png``), in that order:

    ``accuracy`` (``metric`` of each configuration at the last epoch), ``small_multiples`` (a panel of curves per
    configuration), ``overlay`` (every configuration's curves on one figure) and ``per_class`` (test accuracy per
    class and configuration; skipped when no configuration was tested). ``what`` names the comparison in the
    titles, e.g. "First comparison: learning curves".
    """
    word = "Test" if metric == "test_acc" else "Validation"
    titles = ({"accuracy": f"{word} accuracy per configuration (last epoch)", "overlay": "All configurations",
               "small_multiples": "Learning curves per configuration",
               "per_class": "Test accuracy per class and configuration"} if what is None else
              {"accuracy": f"{what}: {word.lower()} accuracy (last epoch)", "overlay": f"{what}: learning curves",
               "small_multiples": f"{what}: learning curves per configuration",
               "per_class": f"{what}: test accuracy per class"})
    draw = {"accuracy": lambda title: plots.plot_grid_results(result["table"], y=metric, title=title),
            "small_multiples": lambda title: plots.plot_history_grid(result["histories"], ncols=4, title=title),
            "overlay": lambda title: plots.plot_learning_curves(result["histories"], title=title),
            "per_class": lambda title: (plots.plot_per_class_comparison(result["per_class"], title=title)
                                        if result["per_class"] else None)}
    for kind, name in files.items():
        fig = draw[kind](titles[kind])
        if fig is not None:
            plots.save_figure(fig, output_dir, name)


# --- the test-set block: the figures and tables every section shows for its tested model ----------------------


def confusion_matrix_figure(test: dict, class_names, *, model: str, output_dir) -> None:
    """Draw and save (``confusion_matrix.png``) the test set's confusion matrix of ``model``."""
    fig = plots.plot_confusion_matrix(test["confusion_matrix"], class_names, title=f"Confusion matrix, {model} (test set)")
    plots.save_figure(fig, output_dir, "confusion_matrix")


def per_class_figure(test: dict, *, model: str, output_dir) -> None:
    """Draw and save (``per_class_accuracy.png``) the test accuracy of each class."""
    fig = plots.plot_per_class_accuracy(test["per_class"], title=f"Per-class test accuracy, {model}")
    plots.save_figure(fig, output_dir, "per_class_accuracy")


def classification_table(test: dict):
    """The test set's classification report (:func:`helpers.engine.metrics.report_frame`) as the report shows it:
    three decimals, and the ``accuracy`` row's precision and recall, which it has none of, blank rather than NaN.
    Styled for that, so its class names are escaped here (a Styler does not escape; they may be a folder's names)."""
    return (test["report"].style.format(precision=3, na_rep="", escape="html")
            .format_index(escape="html", axis=0).format_index(escape="html", axis=1))


def confused_pairs(test: dict, images, class_names, *, output_dir, pairs: int = 3) -> pd.DataFrame:
    """The most-confused class pairs as a table (returned, for the cell to show), and examples of the first
    ``pairs`` of them drawn and saved (``confused_examples.png``)."""
    table = test["most_confused"]
    idx = [i for _, p in table.head(pairs).iterrows()
           for i in pair_examples(test, p["true_index"], p["pred_index"])]
    titles = [f"{class_names[test['y_true'][i]]}\n→ {class_names[test['y_pred'][i]]}" for i in idx]
    if idx:
        fig = plots.plot_image_grid(images[idx], titles, ncols=6,
                                    title="Examples of the most-confused pairs (true → predicted)")
        plots.save_figure(fig, output_dir, "confused_examples")
    return table[["true", "predicted", "count", "share_of_true"]].round(3)


def confident_mistakes_figure(test: dict, images, class_names, *, output_dir, name: str, title: str,
                              top: int = 16, ncols: int = 8) -> Markdown | None:
    """Draw and save (``name.png``) the ``top`` wrong predictions made with the highest confidence, captioned
    true → predicted (confidence); a sentence instead when no test image was misclassified."""
    idx = confident_mistakes(test, top=top)
    if not len(idx):
        return Markdown("No test image was misclassified.")
    titles = [f"{class_names[test['y_true'][i]]}\n→ {class_names[test['y_pred'][i]]} ({test['confidence'][i]:.0%})"
              for i in idx]
    plots.save_figure(plots.plot_image_grid(images[idx], titles, ncols=ncols, title=title), output_dir, name)
    return None
