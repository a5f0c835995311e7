"""Training throughput of the strong CNN: the course reports' torchvision pipeline vs the toolkit's.

Trains the ``strong`` CNN preset (:mod:`helpers.architecture`) for a fixed number of steps, with augmentation on, three ways:

* ``torchvision``: ``torchvision.datasets.FashionMNIST`` with per-sample ``torchvision.transforms``
  (RandomHorizontalFlip, RandomRotation, ColorJitter, ToTensor, Gaussian noise) through a ``DataLoader``,
  the model in PyTorch's default memory layout and a hand-written training loop (how the course reports did it);
* ``torchvision + channels-last``: the same loader with the toolkit's model layout, to separate what the
  data pipeline gains from what the model layout gains;
* ``toolkit``: :func:`helpers.training.fit` on the in-memory tensors with batch augmentation
  (:class:`helpers.augment.Augment`) and the channels-last model.

Same batch size, optimizer (SGD, Nesterov momentum, one-cycle), label smoothing and augmentation strengths in all.
The ways are run in turn ``--repeats`` times and the median images per second is reported, since a shared
CPU makes single timings noisy. Downloads are impossible offline, so torchvision is pointed at a temporary
``FashionMNIST/raw`` folder holding the found IDX files (symlinked, or unpacked where they are gzipped:
torchvision reads only the unpacked files).

    python scripts/benchmark_pipeline.py --steps 50 --batch-size 128
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

# As helpers/__init__.py does, and for both ways alike: OpenMP threads wait passively instead of spinning,
# which only takes effect before torch is first imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

from helpers import data  # noqa: E402
from helpers.architecture import build_from_spec  # noqa: E402
from helpers.augment import Augment  # noqa: E402
from helpers.training import fit, seed_everything  # noqa: E402


class AddGaussianNoise:
    """``transforms.Lambda``-style noise, as a class so DataLoader workers can pickle it."""

    def __init__(self, std: float):
        self.std = std

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return (x + self.std * torch.randn_like(x)).clamp(0, 1)


def torchvision_root(data_dir=None) -> tempfile.TemporaryDirectory:
    """A temporary folder with ``FashionMNIST/raw`` holding the four IDX files torchvision expects."""
    tmp = tempfile.TemporaryDirectory(prefix="fmnist_tv_")
    raw = Path(tmp.name) / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for path in data.find_data(data_dir).values():
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as src, open(raw / path.stem, "wb") as dst:
                shutil.copyfileobj(src, dst)
        else:
            (raw / path.name).symlink_to(path.resolve())
    return tmp


def course_loader(root: str, args):
    """torchvision FashionMNIST with per-sample transforms through a DataLoader."""
    from torchvision import datasets, transforms

    transform = transforms.Compose([
        transforms.RandomHorizontalFlip(),
        transforms.RandomRotation(args.rotation),
        transforms.ColorJitter(brightness=args.brightness, contrast=args.contrast),
        transforms.ToTensor(),
        AddGaussianNoise(args.noise_std),
    ])
    train = datasets.FashionMNIST(root, train=True, transform=transform, download=False)
    return torch.utils.data.DataLoader(train, batch_size=args.batch_size, shuffle=True, num_workers=args.num_workers,
                                       drop_last=True)


def run_course(loader, *, channels_last: bool, args) -> float:
    """Images per second of a hand-written loop over ``loader`` (timed after ``args.warmup`` steps)."""
    seed_everything(args.seed)
    model = strong_cnn(args.seed)
    if not channels_last:
        model = model.to(memory_format=torch.contiguous_format)
    steps = args.warmup + args.steps
    opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9, nesterov=True, weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=steps, pct_start=0.25)
    loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=0.1)
    model.train()
    total, correct, start = 0.0, 0, None
    for step, (xb, yb) in enumerate(loader):
        if step == args.warmup:
            start = time.perf_counter()
        if step == steps:
            break
        logits = model(xb)
        loss = loss_fn(logits, yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        total += loss.item()
        correct += (logits.argmax(1) == yb).sum().item()
    return args.steps * args.batch_size / (time.perf_counter() - start)


def strong_cnn(seed: int):
    torch.manual_seed(seed)
    return build_from_spec("strong")


def run_toolkit(train: data.ImageSet, *, args) -> float:
    """Images per second of :func:`helpers.training.fit` over exactly ``args.steps`` batches (after a warm-up fit)."""
    augment = Augment(rotation=args.rotation, noise_std=args.noise_std, hflip=True, brightness=args.brightness,
                      contrast=args.contrast)
    kwargs = {"batch_size": args.batch_size, "optimizer": "sgd", "lr": args.lr, "momentum": 0.9, "nesterov": True,
              "weight_decay": 5e-4, "schedule": "onecycle", "label_smoothing": 0.1, "augment": augment,
              "seed": args.seed, "device": "cpu", "progress": False}
    model = strong_cnn(args.seed)
    g = torch.Generator().manual_seed(args.seed)
    order = torch.randperm(len(train), generator=g)
    fit(model, train[order[:args.warmup * args.batch_size]], None, num_epochs=1, **kwargs)
    history = fit(model, train[order[:args.steps * args.batch_size]], None, num_epochs=1, **kwargs)
    return args.steps * args.batch_size / history.seconds


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=50, help="timed training steps per run")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps before each run")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3, help="runs of each way, in turn; the median is reported")
    parser.add_argument("--num-workers", type=int, default=0, help="DataLoader workers (0: the DataLoader default)")
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--rotation", type=float, default=5.0, help="degrees")
    parser.add_argument("--noise-std", type=float, default=0.02)
    parser.add_argument("--brightness", type=float, default=0.1)
    parser.add_argument("--contrast", type=float, default=0.1)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's choice)")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None, help="also write the results to this file")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    train = data.load_fashion_mnist(args.data_dir)["train"]
    if max(args.steps, args.warmup) * args.batch_size > len(train):
        parser.error(f"--steps (and --warmup) x --batch-size must fit in one epoch of {len(train):,} images")
    root = torchvision_root(args.data_dir)
    ways = {
        "torchvision": lambda: run_course(course_loader(root.name, args), channels_last=False, args=args),
        "torchvision + channels-last": lambda: run_course(course_loader(root.name, args), channels_last=True,
                                                          args=args),
        "toolkit": lambda: run_toolkit(train, args=args),
    }
    print(f"strong CNN, batch {args.batch_size}, {args.steps} timed steps after {args.warmup}, augmentation on, "
          f"{torch.get_num_threads()} torch threads (OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}), "
          f"DataLoader workers {args.num_workers}, {args.repeats} repeats", flush=True)
    rates = {name: [] for name in ways}
    for repeat in range(args.repeats):
        for name, run in ways.items():
            rates[name].append(run())
            print(f"  repeat {repeat + 1}: {name:<28} {rates[name][-1]:8.0f} images/s", flush=True)
    root.cleanup()
    median = {name: statistics.median(r) for name, r in rates.items()}
    result = {"images_per_second": median, "runs": rates,
              "ratio_toolkit_vs_torchvision": median["toolkit"] / median["torchvision"],
              "ratio_toolkit_vs_torchvision_channels_last": median["toolkit"] / median["torchvision + channels-last"],
              "settings": {**vars(args), "torch_threads": torch.get_num_threads(),
                           "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY")}}
    print("median images/s: " + ", ".join(f"{k} {v:.0f}" for k, v in median.items()))
    print(f"toolkit / torchvision (course pipeline):        {result['ratio_toolkit_vs_torchvision']:.2f}x")
    print(f"toolkit / torchvision with the same model layout: {result['ratio_toolkit_vs_torchvision_channels_last']:.2f}x")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
