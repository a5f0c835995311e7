"""Observations: the Markdown bullet points a report draws from its own numbers.

The generic ones (any comparison: best, fastest, gaps, each factor, run-to-run spread; any test result: the most
confused pair and the hardest class) and each section's own (transfer modes, augmentation on/off, the
autoencoder's denoising and epochs). Every value taken from the run (configuration and class names, statuses) goes
in through :func:`md_text` or :func:`md_code`, so it shows as the characters given and never as markup.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from helpers.engine.experiment import ranked, run_settings, spread_observations
from helpers.engine.grid import config_name
from helpers.escape import md_code, md_text


def hardest_class(per_class: pd.DataFrame) -> str:
    """The bullet naming the hardest and the easiest class of a test result's ``per_class`` table."""
    pc = per_class.sort_values("accuracy")
    return (f"- **Hardest class:** {md_text(pc.iloc[0]['class'])} ({pc.iloc[0]['accuracy']:.1%}); "
            f"easiest: {md_text(pc.iloc[-1]['class'])} ({pc.iloc[-1]['accuracy']:.1%}).")


def class_lines(test: dict, *, images: str = "images") -> list[str]:
    """The bullets on a test result's classes: the most confused pair (when any image was misclassified), then
    :func:`hardest_class`. ``images`` names what the share counts (``"test images"``)."""
    lines = []
    mc = test["most_confused"]
    if len(mc):
        top = mc.iloc[0]
        lines.append(f"- **Most confused:** {md_text(top['true'])} taken for {md_text(top['predicted'])} "
                     f"{top['count']} times ({top['share_of_true']:.1%} of the {md_text(top['true'])} {images}).")
    lines.append(hardest_class(test["per_class"]))
    return lines


def grid_observations(table: pd.DataFrame, histories: dict, *, final: dict | None = None) -> str:
    """Markdown bullet points drawn from the grid table, the histories and the final test result."""
    ok = table.dropna(subset=["val_acc"])
    lines = []
    if ok.empty:
        return "- Every configuration failed; see the status column."
    # the same choice as experiment.best_config, so the test-set line names the retrained model
    best = ranked(ok).iloc[0]
    worst = ok.iloc[ok["val_acc"].values.argmin()]
    fastest = ok.iloc[ok["seconds"].values.argmin()]
    slowest = ok.iloc[ok["seconds"].values.argmax()]
    lines.append(f"- **Best configuration:** {md_code(best['name'])} with {best['val_acc']:.2%} validation accuracy, "
                 f"{best['val_acc'] - worst['val_acc']:.2%} above the weakest ({md_code(worst['name'])}, "
                 f"{worst['val_acc']:.2%}).")
    lines.append(f"- **Fastest:** {md_code(fastest['name'])} ({fastest['seconds']:.1f} s); the slowest, "
                 f"{md_code(slowest['name'])}, "
                 f"took {slowest['seconds'] / max(fastest['seconds'], 1e-9):.1f}x as long ({slowest['seconds']:.1f} s).")
    gap = ok["train_acc"] - ok["val_acc"]
    widest = ok.loc[gap.idxmax()]
    lines.append(f"- **Train/validation gap** of the best: {best['train_acc'] - best['val_acc']:+.2%} "
                 f"(train {best['train_acc']:.2%}); the widest gap is {md_code(widest['name'])} "
                 f"({widest['train_acc'] - widest['val_acc']:+.2%}), the clearest sign of overfitting in the grid.")
    h = histories.get(best["name"])
    if h:
        be = h.best_epoch
        last = h[-1]
        lowest = min(r["val_loss"] for r in h if r["val_loss"] is not None)
        if be is not None and be < last["epoch"]:
            lines.append(f"- **Validation loss** of the best was lowest at epoch {be} of {last['epoch']} "
                         f"({lowest:.4f}) and ended at {last['val_loss']:.4f}: later epochs "
                         f"{'overfit' if last['val_loss'] > lowest * 1.02 else 'changed it little'}.")
        elif be is not None:
            lines.append(f"- **Validation loss** of the best was still falling at the last epoch ({be}): "
                         "more epochs might help.")
    failed = table[table["status"] != "completed"]
    for _, row in failed.iterrows():
        lines.append(f"- {md_code(row['name'])} stopped early: {md_text(row['status'])}.")
    if final is not None:
        test = final["test"]
        lines.append(f"- **Test set:** retrained on train + validation, {md_code(best['name'])} scores "
                     f"{test['accuracy']:.2%} accuracy (loss {test['loss']:.4f}).")
        lines += class_lines(test)
    return "\n".join(lines)


def factor_observations(table: pd.DataFrame, factors, *, metric: str = "val_acc", labels: dict | None = None) -> str:
    """Markdown bullets comparing the mean ``metric`` of each level of each factor (a column of a grid table).

    For a pooling x normalization grid, ``factors=("pool", "norm")`` says, e.g., that max pooling averaged
    1.2 points more validation accuracy than average pooling across the normalization choices.
    """
    ok = table.dropna(subset=[metric])
    lines = []
    for factor in factors:
        if factor not in ok or ok[factor].nunique() < 2:
            continue
        means = ok.groupby(factor)[metric].mean().sort_values(ascending=False)
        name = md_text((labels or {}).get(factor, factor))
        parts = ", ".join(f"{md_code(level)} {value:.2%}" for level, value in means.items())
        lines.append(f"- **{name}:** mean {metric.replace('_', ' ')} {parts}; {md_code(means.index[0])} leads by "
                     f"{means.iloc[0] - means.iloc[-1]:.2%} over {md_code(means.index[-1])}.")
    return "\n".join(lines)


def experiment_observations(result: dict, *, final: dict | None = None, metric: str = "val_acc") -> str:
    """Every observation on one comparison: the grid's own, each factor's average effect (two or more varied
    parameters), and, with repeats, whether the leaders differ by more than the run-to-run spread."""
    parts = [grid_observations(result["table"], result["histories"], final=final)]
    if len(result["varied"]) >= 2:
        parts.append(factor_observations(result["table"], result["varied"], metric=metric))
    parts.append(spread_observations(result["table"], metric=metric))
    if result.get("evaluate_test") == "all":
        parts.append("- **Test accuracy of every configuration** is shown for comparison only: the configuration "
                     "reported as the result was still chosen on validation accuracy.")
    return "\n".join(p for p in parts if p)


# --- the CNN section: augmentation on/off -----------------------------------------------------------------


def augmentation_observations(table: pd.DataFrame) -> str:
    """Markdown bullets on the augmentation on/off table of :func:`helpers.sections.cnn.compare_augmentation`."""
    rows = {bool(r["augment"]): r for _, r in table.iterrows()}
    if set(rows) != {True, False}:
        return ""
    on, off = rows[True], rows[False]
    diff = on["val_acc"] - off["val_acc"]
    lines = [f"- **Augmentation** {'raised' if diff > 0 else 'lowered'} validation accuracy by {abs(diff):.2%} "
             f"({off['val_acc']:.2%} off, {on['val_acc']:.2%} on) after {int(on['epochs_run'])} epochs.",
             f"- **Training accuracy** with augmentation {on['train_acc']:.2%} vs {off['train_acc']:.2%} without; "
             f"train - validation gap {on['train_acc'] - on['val_acc']:+.2%} on, {off['train_acc'] - off['val_acc']:+.2%} "
             "off" + (": the augmented images are harder to fit, which is how augmentation holds back overfitting."
                      if on["train_acc"] < off["train_acc"] else ".")]
    return "\n".join(lines)


# --- the transfer section: modes, pretraining ---------------------------------------------------------------


def _group_label(settings: Mapping, keys: list[str]) -> str:
    return config_name({k: settings[k] for k in keys}) if keys else str(settings["backbone"])


def mode_observations(result: dict, *, base: Mapping) -> list[str]:
    """Per group of configurations that differ only in ``mode``: each pretrained mode against scratch, and the
    frozen backbone's cost against fine-tuning (test accuracy when every configuration was tested, else validation)."""
    table = result["table"]
    if "mode" not in result["varied"]:
        return []
    metric = "test_acc" if "test_acc" in table and table["test_acc"].notna().any() else "val_acc"
    word = "test" if metric == "test_acc" else "validation"
    rows = table.set_index("name")
    others = [k for k in result["varied"] if k != "mode"]
    groups: dict[str, dict[str, pd.Series]] = {}
    for config, s in zip(result["configs"], run_settings(result["configs"], base=base)):
        if config["name"] in rows.index and pd.notna(rows.loc[config["name"], metric]):
            groups.setdefault(_group_label(s, others), {}).setdefault(s["mode"], rows.loc[config["name"]])
    lines = []
    for group, by_mode in groups.items():
        scratch = by_mode.get("scratch")
        for m in ("frozen", "finetune"):
            if m in by_mode and scratch is not None:
                lines.append(f"- {md_code(group)}: **{m}** scores {by_mode[m][metric]:.2%} {word} accuracy, "
                             f"{by_mode[m][metric] - scratch[metric]:+.2%} against training from scratch "
                             f"({scratch[metric]:.2%}) with the same labels.")
        if "frozen" in by_mode and "finetune" in by_mode:
            fr, ft = by_mode["frozen"], by_mode["finetune"]
            lines.append(f"- {md_code(group)}: the frozen backbone trains {fr['params']:,.0f} parameters "
                         f"({fr['params'] / max(fr['params'] + fr['frozen_params'], 1):.1%} of the model) in "
                         f"{fr['seconds']:.1f} s, {ft['seconds'] / max(fr['seconds'], 1e-9):.1f}x faster than "
                         f"fine-tuning ({ft['seconds']:.1f} s), for {fr[metric] - ft[metric]:+.2%} {word} accuracy.")
    return lines


def transfer_observations(result: dict, *, base: Mapping, best: dict | None = None, test_result: dict | None = None,
                          pretrained=None) -> str:
    """Markdown bullet points drawn from the comparison, the pretraining (``pretrained``, a
    :class:`helpers.sections.backbones.BackboneWeights`) and the best configuration's test result.

    The best configuration's test result is that of its model from the comparison (not retrained).
    """
    table = result["table"]
    lines = [experiment_observations(result)]
    lines += mode_observations(result, base=base)
    settings = dict(zip((c["name"] for c in result["configs"]), run_settings(result["configs"], base=base)))
    for _, row in table.iterrows():
        s = settings.get(row["name"], {})
        if s.get("mode") == "frozen" and row["best_epoch"] == row["epochs_run"] and row["train_acc"] < 0.95:
            lines.append(f"- {md_code(row['name'])}: the head still underfits after {row['epochs_run']} epochs (training "
                         f"accuracy {row['train_acc']:.2%}, validation loss still falling); its features are cached, "
                         "so more epochs (`frozen_epochs`) cost seconds.")
    for label, rec in (pretrained.records() if pretrained else {}).items():
        if rec["val_acc"] is not None:
            cached = (rec.get("cache") or {}).get("hit")
            lines.append(f"- **Pretraining** ({md_code(label)}): {md_text(rec['source'])}; source-task validation accuracy "
                         f"{rec['val_acc']:.2%} in {rec['seconds']:.1f} s"
                         + (" (when it was made: this report read it from the cache)." if cached else "."))
    if best is not None and test_result is not None:
        lines.append(f"- **Test set:** {md_code(best['name'])}, chosen on validation accuracy, scores "
                     f"{test_result['accuracy']:.2%} test accuracy (loss {test_result['loss']:.4f}) with its model from "
                     "the comparison (not retrained: the few labels are the point of transfer learning).")
        lines += class_lines(test_result, images="test images")
    if result.get("evaluate_test") == "all":
        lines.append("- **Test accuracy of every configuration** is shown for comparison only: the best configuration "
                     "was chosen on validation accuracy alone.")
    return "\n".join(line for line in lines if line)


# --- the autoencoder section: denoising, the comparison, epochs ---------------------------------------------


def autoencoder_observations(*, ae_history, recon: dict, classifier: dict, result: dict | None = None,
                             epoch_table=None, cnn: dict | None = None) -> str:
    """Markdown bullet points drawn from the autoencoder's numbers: denoising, reconstruction loss, the encoder +
    classifier, the comparison (``result``, None when skipped: its own bullets and
    :func:`experiment_observations`), the epoch comparison and the CNN report beside it."""
    arch_table = None if result is None else result["table"]
    share = 1 - recon["mse"] / max(recon["noisy_mse"], 1e-12)
    lines = [f"- **Denoising:** the reconstructions are {recon['mse']:.4f} (MSE per pixel) from the clean test "
             f"images, the noisy inputs {recon['noisy_mse']:.4f}: "
             + (f"the autoencoder removes {share:.0%} of the squared error." if share > 0 else
                "the reconstructions are still further from the clean images than the noisy inputs; "
                "the autoencoder needs more training.")]
    val = [r["val_loss"] for r in ae_history if r["val_loss"] is not None]
    if len(val) > 1:
        low = int(np.argmin(val)) + 1
        trend = ("was still falling at the last epoch: more epochs would help" if low == len(val) else
                 f"was lowest at epoch {low} of {len(val)} ({min(val):.4f}), ending at {val[-1]:.4f}")
        lines.append(f"- **Reconstruction loss** on validation images {trend}.")
    h, test = classifier["history"], classifier["test"]
    last = h[-1]
    lines.append(f"- **Encoder + classifier:** {test['accuracy']:.2%} test accuracy; last epoch train "
                 f"{last['train_acc']:.2%} vs validation {last['val_acc']:.2%} ({last['train_acc'] - last['val_acc']:+.2%}"
                 f"), lowest validation loss at epoch {h.best_epoch} of {len(h)}.")
    lines += class_lines(test, images="test images")
    if arch_table is not None and len(arch_table.dropna(subset=["val_acc"])) > 1:
        a = arch_table.dropna(subset=["val_acc"]).set_index("name")
        best, mse = a["val_acc"].idxmax(), a["ae_val_mse"].astype(float).idxmin()
        gap = (a["train_acc"] - a["val_acc"]).idxmax()
        lines.append(f"- **Comparison:** {md_code(best)} classifies best ({a.loc[best, 'val_acc']:.2%} validation); "
                     f"{md_code(mse)} reconstructs best (validation MSE {a.loc[mse, 'ae_val_mse']:.4f}); {md_code(gap)} "
                     "has the widest classifier train/validation gap "
                     f"({a.loc[gap, 'train_acc'] - a.loc[gap, 'val_acc']:+.2%}), the most overfitting.")
    if epoch_table is not None and len(epoch_table) > 1:
        e = epoch_table.sort_values("epochs_run")
        few, many = e.iloc[0], e.iloc[-1]
        lines.append(f"- **Epochs:** after {few['epochs_run']} the training loss is still {few['train_loss']:.3f} "
                     f"(validation accuracy {few['val_acc']:.2%}); after {many['epochs_run']} it is "
                     f"{many['train_loss']:.3f} while the validation loss ends at {many['val_loss']:.3f} "
                     f"(lowest at epoch {many['best_epoch']}): "
                     + ("the longer run overfits." if many["best_epoch"] is not None
                        and many["best_epoch"] < many["epochs_run"] else "no overfitting yet."))
    if cnn is not None:
        lines.append(f"- **Against the CNN report:** {test['accuracy']:.2%} vs {cnn['accuracy']:.2%} on the same "
                     f"classes ({test['accuracy'] - cnn['accuracy']:+.2%}).")
    if result is not None:
        lines.append(experiment_observations(result))
    return "\n".join(lines)
