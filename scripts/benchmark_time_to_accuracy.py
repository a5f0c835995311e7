"""Time to accuracy: the CNN section's final model at a ladder of epoch budgets, each over several seeds.

Nobody publishes how long a CPU takes to reach a given Fashion-MNIST test accuracy; this measures it for the
recipe the CNN section's final retraining uses (its ``profile``'s settings: the search architecture, Nesterov SGD
with a one-cycle schedule, label smoothing, flips, bfloat16 where the CPU computes it, test-time mirror images),
trained on all 60,000 training images (train + validation, as the section retrains) and tested once per run on
the 10,000 test images. For each budget it prints the wall time of a run (median over the seeds, training and
testing) and the test accuracy (mean ± std and the worst seed), then the smallest budget whose mean reaches
each target. Beside it, the seed reports' best CNN recipe (report 003: 93.04% after 100 epochs of a three-block
CNN, Adam, batch 64, brightness/contrast jitter through torchvision's ``DataLoader``) is timed per epoch on the
same machine, and the ratio of the two times is the one the README quotes.

``--ablation-epochs E`` also trains the recipe at budget E with one ingredient taken out at a time, over the
same seeds: what each ingredient buys, as the CNN report's ablation table shows it (``--ablation-out
helpers/reporting/cnn_ablation.json`` writes the file the toolkit ships and the report reads).

    python scripts/benchmark_time_to_accuracy.py                                # budgets 2,4,6,8,12 x 5 seeds
    python scripts/benchmark_time_to_accuracy.py --epochs 4,8 --seeds 3 --ablation-epochs 8 --json tta.json
    python scripts/benchmark_time_to_accuracy.py --epochs 1 --seeds 2 --train-per-class 20 --test-per-class 10

Every accuracy is a mean over seeds; one lucky seed proves nothing. Times depend on the machine (its name is
printed and recorded); compare budgets and recipes side by side in one run.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as helpers/__init__.py, before torch is first imported
os.environ.setdefault("HELPERS_PROGRESS", "0")  # one line per run here instead of the progress bars

import nbformat  # noqa: E402
import torch  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run from a checkout without installing
sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchmark_pipeline import hand_loop, torchvision_root  # noqa: E402

from helpers.data import fashion as data  # noqa: E402
from helpers.engine.config import augment_from  # noqa: E402
from helpers.engine.speed import cpu_info  # noqa: E402
from helpers.engine.training import seed_everything  # noqa: E402
from helpers.models.architecture import build_from_spec  # noqa: E402
from helpers.reporting.ablation import recipe_of  # noqa: E402
from helpers.sections import cnn, make_config  # noqa: E402

TARGETS = (93.0, 94.0, 94.5, 95.0)
# One ingredient of the recipe taken out at a time: what the CNN report's ablation table lists.
INGREDIENTS = {
    "test-time mirror images": {"test_flip": "none"},
    "flips in training": {"final_augment": "none"},
    "label smoothing 0.1": {"label_smoothing": 0.0},
    "training without dropout (conv 0.05, head 0.3 instead)": {"conv_dropouts": [0.05], "head_dropouts": [0.3]},
    "Nesterov SGD, one-cycle (Adam 1e-3 instead)": {"optimizer": "adam", "lr": 0.001},
    "bfloat16 (float32 instead)": {"precision": "fp32"},
    "six convolutions (the compact network instead)": {"search_architecture": "compact"},
}
# The seed reports' best CNN: report 003 (notebooks/assignments/cnn/003_e1_custom_three_block.yaml).
SEED_RECIPE = {"file": "notebooks/assignments/cnn/003_e1_custom_three_block.yaml", "epochs": 100, "accuracy": 93.04,
               "train_images": 48_000, "batch_size": 64, "optimizer": "adam", "lr": 1e-3, "brightness": 0.2,
               "contrast": 0.2}


def notebook_parameters() -> dict:
    """The CNN notebook's parameters cell as the notebook defines it (plain literals)."""
    nb = nbformat.read(str(ROOT / "notebooks" / "02_cnn_comparison.ipynb"), as_version=4)
    cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    namespace: dict = {}
    exec(cell.source, namespace)  # the toolkit's own notebook, not user input
    return {k: v for k, v in namespace.items() if not k.startswith("__")}


def recipe_config(*, profile: str, epochs: int, seed: int, data_dir=None, overrides: dict | None = None):
    """The CNN section's configuration with ``final_epochs=epochs`` and ``seed``, ``overrides`` applied."""
    return make_config("cnn", notebook_parameters(), profile=profile, final_epochs=epochs, seed=seed,
                       data_dir=data_dir, **(overrides or {}))


def final_run(cfg, splits: dict) -> dict:
    """The section's final retraining (its search's first configuration) on train + validation, tested once.
    Every run trains: with no output folder a run neither reads nor writes the run cache or checkpoints (a run
    the cache served, from an earlier benchmark or report, would time a copy, not a training)."""
    t0 = time.perf_counter()
    final = cnn.retrain_final(cfg.search_configs[0], cfg=cfg, base={**cnn.stage_base(cfg, "search"), "output_dir": None},
                              augmentation=augment_from(cfg), train=splits["train"], val=splits["val"],
                              test=splits["test"])
    return {"seconds": time.perf_counter() - t0, "train_seconds": final["seconds"],
            "accuracy": 100 * final["test"]["accuracy"], "precision": final["history"].precision,
            "cache": final.get("cache")}


def load(args, seed: int) -> dict:
    return data.load_splits(data_dir=args.data_dir, val_fraction=0.15, seed=seed,
                            train_per_class=args.train_per_class, test_per_class=args.test_per_class)


def runs(args, *, budgets: list[int], overrides: dict | None = None, label: str = "recipe") -> list[dict]:
    """One final run per budget and seed: ``{"label", "epochs", "seed", "seconds", "accuracy", ...}``."""
    rows = []
    for seed in range(args.seeds):
        splits = load(args, seed)
        for epochs in budgets:
            cfg = recipe_config(profile=args.profile, epochs=epochs, seed=seed, data_dir=args.data_dir,
                                overrides=overrides)
            row = {"label": label, "epochs": epochs, "seed": seed, **final_run(cfg, splits)}
            rows.append(row)
            print(f"  {label}: {epochs} epochs, seed {seed}: {row['accuracy']:.2f}% in {row['seconds']:.1f} s",
                  flush=True)
    return rows


def summarize(rows: list[dict]) -> list[dict]:
    """Per (label, budget): median seconds, mean, std and min accuracy over the seeds."""
    out = []
    for key in sorted({(r["label"], r["epochs"]) for r in rows}, key=lambda k: (k[0] != "recipe", k[0], k[1])):
        acc = [r["accuracy"] for r in rows if (r["label"], r["epochs"]) == key]
        secs = [r["seconds"] for r in rows if (r["label"], r["epochs"]) == key]
        # the fastest seed's time too: other work on the machine only ever adds to a run's wall time
        out.append({"label": key[0], "epochs": key[1], "seeds": len(acc), "seconds_median": statistics.median(secs),
                    "seconds_min": min(secs),
                    "accuracy_mean": statistics.fmean(acc),
                    "accuracy_std": statistics.stdev(acc) if len(acc) > 1 else float("nan"),
                    "accuracy_min": min(acc)})
    return out


def reached(summary: list[dict], targets=TARGETS) -> dict[str, dict | None]:
    """For each target accuracy, the smallest budget of the recipe whose mean reaches it (None: none does)."""
    ladder = sorted((s for s in summary if s["label"] == "recipe"), key=lambda s: s["epochs"])
    return {f"{t:.1f}": next(({"epochs": s["epochs"], "seconds_median": s["seconds_median"]}
                              for s in ladder if s["accuracy_mean"] >= t), None) for t in targets}


def seed_recipe_epoch_seconds(args, *, steps: int, warmup: int = 5) -> dict:
    """Report 003's pipeline timed here: images per second over ``steps`` batches, as seconds per epoch."""
    import yaml  # lazy: only this timing reads the assignment file
    from torchvision import datasets, transforms

    spec = yaml.safe_load((ROOT / SEED_RECIPE["file"]).read_text())["architecture"]
    seed_everything(0)
    model = build_from_spec(spec).to(memory_format=torch.contiguous_format)  # the default layout, as a course has it
    tmp = torchvision_root(args.data_dir)
    try:
        jitter = transforms.ColorJitter(brightness=SEED_RECIPE["brightness"], contrast=SEED_RECIPE["contrast"])
        train = datasets.FashionMNIST(tmp.name, train=True, download=False,
                                      transform=transforms.Compose([jitter, transforms.ToTensor()]))
        loader = torch.utils.data.DataLoader(train, batch_size=SEED_RECIPE["batch_size"], shuffle=True)
        endless = (batch for _ in itertools.count() for batch in loader)  # a small data set runs out of batches
        rate = hand_loop(model, endless, {"optimizer": SEED_RECIPE["optimizer"], "lr": SEED_RECIPE["lr"],
                                         "batch_size": SEED_RECIPE["batch_size"]}, steps=steps, warmup=warmup)
    finally:
        tmp.cleanup()
    epoch = SEED_RECIPE["train_images"] / rate
    return {"images_per_second": rate, "epoch_seconds": epoch, "epochs": SEED_RECIPE["epochs"],
            "total_seconds": epoch * SEED_RECIPE["epochs"], "accuracy": SEED_RECIPE["accuracy"], "steps": steps}


def table(summary: list[dict]) -> str:
    lines = ["| recipe | epochs | seeds | wall time (median) | test accuracy (mean ± std) | worst seed |",
             "| --- | --- | --- | --- | --- | --- |"]
    for s in summary:
        lines.append(f"| {s['label']} | {s['epochs']} | {s['seeds']} | {s['seconds_median']:.1f} s | "
                     f"{s['accuracy_mean']:.2f}% ± {s['accuracy_std']:.2f} | {s['accuracy_min']:.2f}% |")
    return "\n".join(lines)


def ablation_rows(summary: list[dict], epochs: int) -> list[dict]:
    """Each ingredient's row: the accuracy and time without it against the whole recipe's at ``epochs``."""
    whole = next((s for s in summary if s["label"] == "recipe" and s["epochs"] == epochs), None)
    if whole is None:
        return []
    keep = ("accuracy_mean", "accuracy_std", "seconds_median", "seconds_min")
    out = [{"without": "nothing (the whole recipe)", **{k: whole[k] for k in keep}, "change": 0.0}]
    for label in INGREDIENTS:  # in the order the table lists them
        row = next((s for s in summary if s["label"] == label and s["epochs"] == epochs), None)
        if row is not None:
            out.append({"without": label, **{k: row[k] for k in keep},
                        "change": row["accuracy_mean"] - whole["accuracy_mean"]})
    return out


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", default="2,4,6,8,12", help="comma-separated budgets of the final retraining")
    parser.add_argument("--seeds", type=int, default=5, help="seeds 0..N-1 per budget (default 5)")
    parser.add_argument("--profile", default="quick", choices=("quick", "full"), help="the section's settings")
    parser.add_argument("--ablation-epochs", type=int, default=None,
                        help="also train this budget with each ingredient taken out (over the same seeds)")
    parser.add_argument("--ablation-out", default=None, help="write the ablation table (JSON) here")
    parser.add_argument("--seed-recipe-steps", type=int, default=100,
                        help="batches of report 003's pipeline timed for its per-epoch time (0: skip)")
    parser.add_argument("--train-per-class", type=int, default=None, help="cap the training images (tests)")
    parser.add_argument("--test-per-class", type=int, default=None, help="cap the test images (tests)")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--json", default=None, help="also write every run and the summary to this file")
    args = parser.parse_args(argv)
    try:
        budgets = sorted({int(e) for e in args.epochs.split(",") if e.strip()})
    except ValueError:
        parser.error(f"--epochs {args.epochs!r}: comma-separated whole numbers, e.g. 2,4,8")
    if not budgets or budgets[0] < 1 or args.seeds < 1:
        parser.error("--epochs and --seeds: at least one budget >= 1 and one seed")
    if args.ablation_epochs is not None and args.ablation_epochs < 1:
        parser.error("--ablation-epochs: a whole number >= 1")
    model, flags = cpu_info()
    machine = {"cpu_model": model or platform.processor() or platform.machine(), "cores": os.cpu_count(),
               "threads": torch.get_num_threads(), "torch": torch.__version__,
               "bf16": "avx512_bf16" in flags or "amx_bf16" in flags}
    print(f"{machine['cpu_model']}, {machine['cores']} cores, torch {machine['torch']}; profile {args.profile}, "
          f"budgets {budgets}, seeds 0-{args.seeds - 1}", flush=True)
    rows = runs(args, budgets=sorted(set(budgets) | ({args.ablation_epochs} if args.ablation_epochs else set())))
    if args.ablation_epochs:
        for label, overrides in INGREDIENTS.items():
            rows += runs(args, budgets=[args.ablation_epochs], overrides=overrides, label=label)
    summary = summarize(rows)
    result = {"machine": machine, "profile": args.profile, "seeds": args.seeds, "runs": rows, "summary": summary,
              "reached": reached(summary)}
    print("\n" + table(summary) + "\n")
    for target, hit in result["reached"].items():
        print(f"mean test accuracy >= {target}%: " + (f"{hit['epochs']} epochs, {hit['seconds_median']:.1f} s"
                                                      if hit else "not reached by these budgets"))
    if args.seed_recipe_steps:
        seed = seed_recipe_epoch_seconds(args, steps=args.seed_recipe_steps)
        result["seed_recipe"] = seed
        print(f"\nreport 003's recipe here: {seed['images_per_second']:.0f} images/s, {seed['epoch_seconds']:.1f} s per "
              f"epoch, {seed['total_seconds'] / 60:.1f} min for its {seed['epochs']} epochs ({seed['accuracy']}%)")
        hit = result["reached"].get("93.0")
        if hit:
            result["ratio_to_seed_recipe"] = hit["seconds_median"] / seed["total_seconds"]
            print(f"time to 93.0%: {hit['seconds_median']:.1f} s = 1/{1 / result['ratio_to_seed_recipe']:.0f} of "
                  "the seed recipe's time")
    if args.ablation_epochs:
        result["ablation"] = {"epochs": args.ablation_epochs, "seeds": args.seeds, "profile": args.profile,
                              "machine": machine, "date": time.strftime("%Y-%m-%d", time.gmtime()),
                              "command": (f"python scripts/benchmark_time_to_accuracy.py --epochs {args.epochs} "
                                          f"--seeds {args.seeds} --profile {args.profile} "
                                          f"--ablation-epochs {args.ablation_epochs}"),
                              "recipe": recipe_of(recipe_config(profile=args.profile, epochs=args.ablation_epochs,
                                                                seed=0, data_dir=args.data_dir)),
                              "rows": ablation_rows(summary, args.ablation_epochs)}
        if args.ablation_out:
            Path(args.ablation_out).write_text(json.dumps(result["ablation"], indent=1) + "\n")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
    return result


if __name__ == "__main__":
    main()
