"""Observations: the Markdown bullet points a report draws from its own numbers.

The generic ones (any comparison: best, fastest, gaps, each factor, run-to-run spread; any test result: the most
confused pair and the hardest class) and each section's own (transfer modes, augmentation on/off, the
autoencoder's denoising and epochs). Every value taken from the run (configuration and class names, statuses) goes
in through :func:`md_text` or :func:`md_code`, so it shows as the characters given and never as markup.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from helpers.engine.experiment import ranked, run_settings, spread_observations
from helpers.engine.grid import config_name
from helpers.escape import md_code, md_text


@dataclass(frozen=True)
class Evidence:
    """What one comparison's numbers can tell apart: ``num_classes`` (guessing scores ``1 / num_classes``) and
    ``val_size``, the validation images each accuracy was measured on; ``profile`` names the settings. Unknown
    (None) values claim nothing: no chance level, no noise (the observations then read as before)."""

    num_classes: int | None = None
    val_size: int | None = None
    profile: str | None = None

    @classmethod
    def of(cls, result: Mapping | None, final: dict | None = None) -> Evidence:
        """The evidence of :func:`helpers.engine.experiment.run_experiment`'s ``result`` (its ``num_classes``,
        ``val_size`` and ``profile``), the classes counted from ``final``'s test result where it has none."""
        result = result or {}
        k = result.get("num_classes")
        if not k and final is not None and "per_class" in final.get("test", {}):
            k = len(final["test"]["per_class"])
        return cls(k or None, result.get("val_size") or None, result.get("profile"))

    @property
    def chance(self) -> float | None:
        """The accuracy of guessing, ``1 / num_classes``."""
        return 1 / self.num_classes if self.num_classes else None

    def noise(self, p: float) -> float:
        """How far two accuracies near ``p``, each on ``val_size`` images, differ by chance alone (about 95%):
        ``2 * sqrt(2 p (1 - p) / n)``; 0 when the number of images is unknown."""
        if not self.val_size or not math.isfinite(p):
            return 0.0
        p = min(max(p, 0.0), 1.0)
        return 2 * math.sqrt(2 * p * (1 - p) / self.val_size)

    def within_noise(self, diff: float, p: float) -> bool:
        """Whether a difference ``diff`` between two accuracies near ``p`` is smaller than :meth:`noise`."""
        return abs(diff) < self.noise(p)

    def noise_clause(self, p: float) -> str:
        """``the noise of N validation images (about ±X%)``."""
        return f"the noise of {self.val_size:,} validation images (about ±{self.noise(p):.1%})"


def single_prediction(final: dict | None) -> int | None:
    """The column of the final model's test confusion matrix when it is the only non-empty one (the model puts
    every test image in one class), else None."""
    cm = (final or {}).get("test", {}).get("confusion_matrix")
    if cm is None:
        return None
    used = np.flatnonzero(np.asarray(cm).sum(0))
    return int(used[0]) if len(used) == 1 and np.asarray(cm).sum() > 0 else None


def chance_line(best_val: float, evidence: Evidence, final: dict | None = None) -> str | None:
    """The "At chance level" bullet when the best validation accuracy is below 1.5 times chance or the final
    model predicts one class for every test image; None otherwise (or when the number of classes is unknown)."""
    one = single_prediction(final)
    if evidence.chance is None or (best_val >= 1.5 * evidence.chance and one is None):
        return None
    names = list(final["test"]["per_class"]["class"]) if one is not None and "per_class" in final["test"] else []
    clause = (f"; the final model predicts {md_text(names[one])} for every test image" if one is not None and
              one < len(names) else "")
    profile = f"{md_code(evidence.profile)} settings" if evidence.profile else "these settings"
    return (f"- **At chance level:** the best validation accuracy, {best_val:.2%}, is about what guessing gives with "
            f"{evidence.num_classes} classes ({evidence.chance:.0%}){clause}; the models have not learned yet "
            f"({profile}), so nothing here ranks the configurations or shows an effect.")


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


def best_line(best, worst, count: int, evidence: Evidence, at_chance: bool) -> str:
    """The best configuration's bullet: above the weakest by how much, and whether that is more than noise."""
    line = f"- **Best configuration:** {md_code(best['name'])} with {best['val_acc']:.2%} validation accuracy"
    if at_chance or count < 2:
        return line + "."
    diff = best["val_acc"] - worst["val_acc"]
    line += f", {diff:.2%} above the weakest ({md_code(worst['name'])}, {worst['val_acc']:.2%})"
    if evidence.within_noise(diff, best["val_acc"]):
        return line + f", within {evidence.noise_clause(best['val_acc'])}: the ranking is not reliable."
    return line + "."


def gap_line(ok: pd.DataFrame, best, evidence: Evidence, at_chance: bool) -> str:
    """The train/validation gap of the best; the widest gap named as overfitting only when it stands out from the
    noise and from the best's own gap."""
    gap = ok["train_acc"] - ok["val_acc"]
    widest = ok.loc[gap.idxmax()]
    best_gap, widest_gap = best["train_acc"] - best["val_acc"], widest["train_acc"] - widest["val_acc"]
    line = f"- **Train/validation gap** of the best: {best_gap:+.2%} (train {best['train_acc']:.2%})"
    if at_chance:
        return line + "."
    noise = evidence.noise(widest["val_acc"])
    if widest_gap > noise and widest_gap - best_gap > noise:
        return line + (f"; the widest gap is {md_code(widest['name'])} ({widest_gap:+.2%}), the clearest sign of "
                       "overfitting in the grid.")
    return line + (f"; the gaps differ by less than the noise (about ±{noise:.1%}): no configuration stands out as "
                   "overfitting.")


def loss_line(h, at_chance: bool) -> str | None:
    """Where the best configuration's validation loss was lowest, and (above chance) what that suggests."""
    be, last = h.best_epoch, h[-1]
    lowest = min(r["val_loss"] for r in h if r["val_loss"] is not None)
    if be is not None and be < last["epoch"]:
        verdict = ("" if at_chance else
                   f": later epochs {'overfit' if last['val_loss'] > lowest * 1.02 else 'changed it little'}")
        return (f"- **Validation loss** of the best was lowest at epoch {be} of {last['epoch']} ({lowest:.4f}) and "
                f"ended at {last['val_loss']:.4f}{verdict}.")
    if be is not None:
        return (f"- **Validation loss** of the best was still falling at the last epoch ({be})"
                + ("." if at_chance else ": more epochs might help."))
    return None


def grid_observations(table: pd.DataFrame, histories: dict, *, final: dict | None = None,
                      evidence: Evidence | None = None) -> str:
    """Markdown bullet points drawn from the grid table, the histories and the final test result; ``evidence``
    (:class:`Evidence`) says when the results are at chance level or differences within noise, and then nothing
    stronger is said."""
    evidence = evidence or Evidence()
    ok = table.dropna(subset=["val_acc"])
    if ok.empty:
        return "- Every configuration failed; see the status column."
    # the same choice as experiment.best_config, so the test-set line names the retrained model
    best = ranked(ok).iloc[0]
    worst = ok.iloc[ok["val_acc"].values.argmin()]
    fastest = ok.iloc[ok["seconds"].values.argmin()]
    slowest = ok.iloc[ok["seconds"].values.argmax()]
    chance = chance_line(float(ok["val_acc"].max()), evidence, final)
    lines = [chance] if chance else []
    lines.append(best_line(best, worst, len(ok), evidence, chance is not None))
    lines.append(f"- **Fastest:** {md_code(fastest['name'])} ({fastest['seconds']:.1f} s); the slowest, "
                 f"{md_code(slowest['name'])}, "
                 f"took {slowest['seconds'] / max(fastest['seconds'], 1e-9):.1f}x as long ({slowest['seconds']:.1f} s).")
    lines.append(gap_line(ok, best, evidence, chance is not None))
    h = histories.get(best["name"])
    if h:
        lines.append(loss_line(h, chance is not None))
    failed = table[table["status"] != "completed"]
    for _, row in failed.iterrows():
        lines.append(f"- {md_code(row['name'])} stopped early: {md_text(row['status'])}.")
    if final is not None:
        test = final["test"]
        lines.append(f"- **Test set:** retrained on train + validation, {md_code(best['name'])} scores "
                     f"{test['accuracy']:.2%} accuracy (loss {test['loss']:.4f}).")
        lines += class_lines(test)
    return "\n".join(line for line in lines if line)


def factor_observations(table: pd.DataFrame, factors, *, metric: str = "val_acc", labels: dict | None = None,
                        evidence: Evidence | None = None, at_chance: bool = False) -> str:
    """Markdown bullets comparing the mean ``metric`` of each level of each factor (a column of a grid table).

    For a pooling x normalization grid, ``factors=("pool", "norm")`` says, e.g., that max pooling averaged
    1.2 points more validation accuracy than average pooling across the normalization choices; a difference
    within the noise of the validation images (``evidence``, :class:`Evidence`), or any at chance level
    (``at_chance``), is said to tell nothing.
    """
    evidence = evidence or Evidence()
    ok = table.dropna(subset=[metric])
    lines = []
    for factor in factors:
        if factor not in ok or ok[factor].nunique() < 2:
            continue
        means = ok.groupby(factor)[metric].mean().sort_values(ascending=False)
        name = md_text((labels or {}).get(factor, factor))
        parts = ", ".join(f"{md_code(level)} {value:.2%}" for level, value in means.items())
        head = f"- **{name}:** mean {metric.replace('_', ' ')} {parts}; "
        d, mean = means.iloc[0] - means.iloc[-1], float(means.mean())
        if at_chance:
            lines.append(head + "at chance level, this comparison cannot tell them apart.")
        elif evidence.within_noise(d, mean):
            lines.append(head + f"the difference ({d:.2%}) is within {evidence.noise_clause(mean)}: this comparison "
                                "cannot tell them apart.")
        else:
            lines.append(head + f"{md_code(means.index[0])} leads by {d:.2%} over {md_code(means.index[-1])}.")
    return "\n".join(lines)


def experiment_observations(result: dict, *, final: dict | None = None, metric: str = "val_acc",
                            augmentation: dict | None = None) -> str:
    """Every observation on one comparison: the grid's own, each factor's average effect (two or more varied
    parameters), and, with repeats, whether the leaders differ by more than the run-to-run spread; then, given the
    ``augmentation`` on/off comparison (:func:`helpers.sections.cnn.compare_augmentation`), its bullets, judged
    with the same :class:`Evidence`."""
    evidence = Evidence.of(result, final)
    ok = result["table"].dropna(subset=["val_acc"])
    at_chance = not ok.empty and chance_line(float(ok["val_acc"].max()), evidence, final) is not None
    parts = [grid_observations(result["table"], result["histories"], final=final, evidence=evidence)]
    if len(result["varied"]) >= 2:
        parts.append(factor_observations(result["table"], result["varied"], metric=metric, evidence=evidence,
                                         at_chance=at_chance))
    if not at_chance:  # at chance level no ranking is said, even within the spread
        parts.append(spread_observations(result["table"], metric=metric))
    if result.get("evaluate_test") == "all":
        parts.append("- **Test accuracy of every configuration** is shown for comparison only: the configuration "
                     "reported as the result was still chosen on validation accuracy.")
    if augmentation:
        parts.append(augmentation_observations(augmentation["table"], evidence=evidence))
    return "\n".join(p for p in parts if p)


# --- the CNN section: augmentation on/off -----------------------------------------------------------------


def augmentation_observations(table: pd.DataFrame, *, evidence: Evidence | None = None) -> str:
    """Markdown bullets on the augmentation on/off table of :func:`helpers.sections.cnn.compare_augmentation`;
    ``evidence`` (:class:`Evidence`, the search's) says when the difference is within noise or at chance level, and
    then no effect is claimed."""
    evidence = evidence or Evidence()
    rows = {bool(r["augment"]): r for _, r in table.iterrows()}
    if set(rows) != {True, False}:
        return ""
    on, off = rows[True], rows[False]
    diff, epochs = on["val_acc"] - off["val_acc"], int(on["epochs_run"])
    mean = (on["val_acc"] + off["val_acc"]) / 2
    at_chance = evidence.chance is not None and max(on["val_acc"], off["val_acc"]) < 1.5 * evidence.chance
    measured = f"({off['val_acc']:.2%} off, {on['val_acc']:.2%} on) after {epochs} epoch{'s' if epochs != 1 else ''}"
    if at_chance:
        first = (f"- **Augmentation** changed validation accuracy by {diff:+.2%} {measured}, at chance level "
                 f"(guessing gives {evidence.chance:.0%}): no effect can be claimed.")
    elif evidence.within_noise(diff, mean):
        first = (f"- **Augmentation** changed validation accuracy by {diff:+.2%} {measured}, within "
                 f"{evidence.noise_clause(mean)}: no effect can be claimed.")
    else:
        first = (f"- **Augmentation** {'raised' if diff > 0 else 'lowered'} validation accuracy by {abs(diff):.2%} "
                 f"{measured}.")
    train_diff = off["train_acc"] - on["train_acc"]
    harder = (not at_chance and train_diff > 0
              and not evidence.within_noise(train_diff, (on["train_acc"] + off["train_acc"]) / 2))
    second = (f"- **Training accuracy** with augmentation {on['train_acc']:.2%} vs {off['train_acc']:.2%} without; "
              f"train - validation gap {on['train_acc'] - on['val_acc']:+.2%} on, "
              f"{off['train_acc'] - off['val_acc']:+.2%} off"
              + (": the augmented images are harder to fit, which is how augmentation holds back overfitting."
                 if harder else "."))
    return "\n".join([first, second])


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
