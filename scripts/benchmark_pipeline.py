"""Training throughput, side by side in one run: the course reports' pipeline, a bare loop, the toolkit's ``fit``.

Two models, as the course trains them:

* ``mlp``: the 256-128-64 tanh MLP, Adam, batch 64, no augmentation;
* ``cnn``: the ``strong`` CNN preset (:mod:`helpers.models.architecture`), SGD with Nesterov momentum, batch 128,
  random horizontal flip + 10 degree rotation.

Each is trained three ways on the same images with the same model, batch size and optimizer:

* ``course``: ``torchvision.datasets.FashionMNIST`` with per-sample ``torchvision.transforms``
  (PIL flip and rotation, ``ToTensor``) through a ``DataLoader``, the model in PyTorch's default memory layout and
  a hand-written loop, as the seed reports did;
* ``bare``: a plain loop written by hand on in-memory tensors (shuffle by ``randperm``, index a batch, step) with
  PyTorch's defaults (its threads, its optimizer implementation), the model exactly as the toolkit builds it, and
  no augmentation (for the CNN too, so that it measures the loop, not the augmentation);
* ``toolkit``: :func:`helpers.engine.training.fit` on the in-memory tensors in float32 (batch augmentation on tensors for
  the CNN; ``toolkit, no aug`` is the same without augmentation, the fair partner of ``bare``), and
  ``toolkit, auto`` as the CNN section trains (``precision="auto"``: bfloat16 mixed precision where the CPU
  computes it in hardware; shown only there).

The ways run in turn, ``--rounds`` times, and the median images per second of each is reported, since a shared
CPU makes single timings noisy. Two ratios answer the questions: how much of a bare loop ``fit`` keeps
(``toolkit, no aug`` / ``bare``) and how much faster the toolkit trains than the course pipeline
(``toolkit, auto`` where it is shown, else ``toolkit``, / ``course``; the float32 ratio is printed beside it).
Downloads are impossible offline, so torchvision reads the found IDX files from a temporary ``FashionMNIST/raw``
folder.

    python scripts/benchmark_pipeline.py                 # both models, 3 rounds
    python scripts/benchmark_pipeline.py --models mlp --rounds 5 --json bench.json
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

# As helpers/__init__.py does, and for every way alike: OpenMP threads wait passively instead of spinning,
# which only takes effect before torch is first imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

from helpers.data import fashion as data  # noqa: E402
from helpers.data.augment import Augment  # noqa: E402
from helpers.engine.optim import make_optimizer  # noqa: E402
from helpers.engine.training import autocast_dtype, fit, seed_everything, step_flops  # noqa: E402
from helpers.models.architecture import build_from_spec  # noqa: E402
from helpers.models.networks import build_mlp  # noqa: E402

# What each model is trained with in every way (the MLP as report 000 trains it; the CNN as the strong model).
MODELS = {
    "mlp": {"batch_size": 64, "optimizer": "adam", "lr": 1e-3, "rotation": 0.0, "hflip": False, "steps": 400},
    "cnn": {"batch_size": 128, "optimizer": "sgd", "lr": 0.05, "rotation": 10.0, "hflip": True, "steps": 30},
}


def build(name: str, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    if name == "mlp":
        return build_mlp(hidden_sizes=[256, 128, 64], activation="tanh", num_classes=10)
    return build_from_spec("strong")


def torchvision_root(data_dir=None) -> tempfile.TemporaryDirectory:
    """A temporary folder with ``FashionMNIST/raw`` holding the four IDX files torchvision expects."""
    tmp = tempfile.TemporaryDirectory(prefix="fmnist_tv_")
    raw = Path(tmp.name) / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for path in data.find_data(data_dir).values():
        if path.suffix == ".gz":  # torchvision reads only unpacked files
            with gzip.open(path, "rb") as src, open(raw / path.stem, "wb") as dst:
                shutil.copyfileobj(src, dst)
        else:
            (raw / path.name).symlink_to(path.resolve())
    return tmp


def course_loader(root: str, spec: dict):
    """torchvision FashionMNIST with per-sample PIL transforms through a DataLoader (the DataLoader defaults)."""
    from torchvision import datasets, transforms

    steps = []
    if spec["hflip"]:
        steps.append(transforms.RandomHorizontalFlip())
    if spec["rotation"]:
        steps.append(transforms.RandomRotation(spec["rotation"]))
    train = datasets.FashionMNIST(root, train=True, transform=transforms.Compose([*steps, transforms.ToTensor()]),
                                  download=False)
    return torch.utils.data.DataLoader(train, batch_size=spec["batch_size"], shuffle=True, drop_last=True)


def hand_loop(model, batches, spec: dict, *, steps: int, warmup: int) -> float:
    """Images per second of the loop a course report writes: forward, loss, backward, step, running loss."""
    opt = make_optimizer(spec["optimizer"], model.parameters(), lr=spec["lr"], momentum=0.9,
                         nesterov=spec["optimizer"] == "sgd")
    loss_fn = torch.nn.CrossEntropyLoss()
    model.train()
    start, total = None, 0.0
    for step, (xb, yb) in enumerate(batches):
        if step == warmup:
            start = time.perf_counter()
        if step == warmup + steps:
            break
        loss = loss_fn(model(xb), yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        total += loss.item()
    return steps * spec["batch_size"] / (time.perf_counter() - start)


def run_course(name: str, root: str, spec: dict, *, seed: int, warmup: int) -> float:
    seed_everything(seed)
    model = build(name, seed).to(memory_format=torch.contiguous_format)  # the default layout, as a course has it
    return hand_loop(model, course_loader(root, spec), spec, steps=spec["steps"], warmup=warmup)


def run_bare(name: str, train: data.ImageSet, spec: dict, *, seed: int, warmup: int) -> float:
    seed_everything(seed)
    model = build(name, seed)
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))
    bs = spec["batch_size"]
    batches = ((train.X[idx], train.y[idx]) for idx in order.split(bs))
    return hand_loop(model, batches, spec, steps=spec["steps"], warmup=warmup)


def run_toolkit(name: str, train: data.ImageSet, spec: dict, *, seed: int, warmup: int, augment: bool,
                precision: str = "fp32") -> float:
    """Images per second of :func:`helpers.engine.training.fit` over exactly ``steps`` batches (after a warm-up fit)."""
    aug = Augment(rotation=spec["rotation"], hflip=spec["hflip"]) if augment else None
    kwargs = {"batch_size": spec["batch_size"], "optimizer": spec["optimizer"], "lr": spec["lr"], "momentum": 0.9,
              "nesterov": spec["optimizer"] == "sgd", "augment": aug, "seed": seed, "device": "cpu",
              "progress": False, "precision": precision}
    model = build(name, seed)
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))
    fit(model, train[order[:warmup * spec["batch_size"]]], None, num_epochs=1, **kwargs)
    history = fit(model, train[order[:spec["steps"] * spec["batch_size"]]], None, num_epochs=1, **kwargs)
    return spec["steps"] * spec["batch_size"] / history.seconds


def benchmark(name: str, train: data.ImageSet, root: str, *, rounds: int, warmup: int, seed: int, log=print) -> dict:
    spec = MODELS[name]
    augmented = spec["hflip"] or spec["rotation"]
    ways = {"course": lambda: run_course(name, root, spec, seed=seed, warmup=warmup),
            "bare": lambda: run_bare(name, train, spec, seed=seed, warmup=warmup),
            "toolkit": lambda: run_toolkit(name, train, spec, seed=seed, warmup=warmup, augment=True)}
    if augmented:
        ways["toolkit, no aug"] = lambda: run_toolkit(name, train, spec, seed=seed, warmup=warmup, augment=False)
    # what the CNN section trains with (precision="auto"): bfloat16 mixed precision where the CPU computes it
    auto = autocast_dtype("auto", torch.device("cpu"), step_flops(build(name, seed), train.X[:1], spec["batch_size"]))
    if auto is not None:
        ways["toolkit, auto"] = lambda: run_toolkit(name, train, spec, seed=seed, warmup=warmup, augment=True,
                                                    precision="auto")
    aug_text = f"flip + {spec['rotation']:g}° rotation" if augmented else "no augmentation"
    log(f"{name}: batch {spec['batch_size']}, {spec['optimizer']}, {aug_text} (course, toolkit); "
        f"{spec['steps']} timed steps after {warmup}, {rounds} rounds")
    rates = {way: [] for way in ways}
    for r in range(rounds):
        for way, run in ways.items():
            rates[way].append(run())
            log(f"  round {r + 1}: {way:<16} {rates[way][-1]:9.0f} images/s")
    median = {way: statistics.median(v) for way, v in rates.items()}
    plain = "toolkit, no aug" if augmented else "toolkit"
    best = "toolkit, auto" if "toolkit, auto" in median else "toolkit"
    return {"settings": spec, "images_per_second": median, "rounds": rates,
            "fit_vs_bare": median[plain] / median["bare"], "toolkit_vs_course": median[best] / median["course"],
            "toolkit_fp32_vs_course": median["toolkit"] / median["course"], "toolkit_way": best}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="mlp,cnn", help="comma-separated: mlp, cnn")
    parser.add_argument("--rounds", type=int, default=3, help="runs of each way, in turn; the median is reported")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps before each timed run")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's choice)")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None, help="also write the results to this file")
    args = parser.parse_args(argv)
    names = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in names if m not in MODELS]
    if unknown:
        parser.error(f"--models: unknown {', '.join(unknown)}; allowed: {', '.join(MODELS)}")
    if args.threads:
        torch.set_num_threads(args.threads)
    train = data.load_fashion_mnist(args.data_dir)["train"]
    root = torchvision_root(args.data_dir)
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}", flush=True)
    results = {}
    try:
        for name in names:
            results[name] = benchmark(name, train, root.name, rounds=args.rounds, warmup=args.warmup, seed=args.seed,
                                      log=lambda s: print(s, flush=True))
    finally:
        root.cleanup()
    print("\nmedian images/s and ratios")
    for name, res in results.items():
        rates = ", ".join(f"{k} {v:.0f}" for k, v in res["images_per_second"].items())
        print(f"  {name}: {rates}")
        print(f"  {name}: fit / bare loop {res['fit_vs_bare']:.2f}x, toolkit / course pipeline "
              f"{res['toolkit_vs_course']:.2f}x ({res['toolkit_way']}; in float32 {res['toolkit_fp32_vs_course']:.2f}x)")
    out = {"models": results, "torch": torch.__version__, "threads": torch.get_num_threads(),
           "cores": os.cpu_count(), "rounds": args.rounds}
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()
