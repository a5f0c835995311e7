"""Which CPU settings make training faster: one training step of the course MLP and the strong CNN, timed under
each setting against a float32 baseline with torch's default threads, side by side in one run.

Settings: intra-op threads (1 vs torch's default), fused optimizer kernels, channels-last memory layout (the
CNN), ``torch.compile`` (inductor; its compile time is reported apart and counted in ``with compile``),
bfloat16 mixed precision (``torch.autocast``), and the toolkit's float32 path on this CPU held to AVX2 (torch's
``ATEN_CPU_CAPABILITY`` and oneDNN's ``ONEDNN_MAX_CPU_ISA``, in a process of its own): what a laptop without AVX-512
or bfloat16 hardware, most students' laptops, runs at the same clock. Each row is the median images per second of
``--rounds`` rounds that alternate the settings, so a busy machine slows them all alike; ratios are to the row
``baseline``.
What :func:`helpers.engine.training.fit` does with the answers is in the README's performance section.

    python scripts/benchmark_cpu_settings.py
    python scripts/benchmark_cpu_settings.py --models cnn --rounds 5 --json cpu.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as helpers/__init__.py, before torch is imported

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from helpers.engine.training import native_bf16  # noqa: E402
from helpers.models.architecture import build_from_spec  # noqa: E402
from helpers.models.networks import build_mlp  # noqa: E402

MODELS = {
    "mlp": {"batch_size": 64, "optimizer": "adam", "lr": 1e-3, "steps": 300},
    "cnn": {"batch_size": 128, "optimizer": "sgd", "lr": 0.05, "steps": 20},
}
# name -> overrides of the baseline (threads None = torch's default; channels_last applies to the CNN)
SETTINGS = {
    "baseline": {},
    "1 thread": {"threads": 1},
    "fused optimizer": {"fused": True},
    "1 thread + fused": {"threads": 1, "fused": True},
    "channels-last": {"channels_last": True},
    "torch.compile": {"compile": True},
    "bf16 autocast": {"bf16": True},
    "channels-last + bf16 + fused": {"channels_last": True, "bf16": True, "fused": True},
    "channels-last + fused": {"channels_last": True, "fused": True},  # precision="fp32" on this CPU
    # what precision="auto" trains on a CPU without bfloat16 hardware: float32, channels-last, fused
    "AVX2 only: channels-last + fused": {"channels_last": True, "fused": True, "isa": "avx2"},
}
# The environment that holds torch's own kernels and oneDNN's (convolutions) to each instruction set; both are
# read when torch loads, so such a setting runs in a process of its own.
ISA_ENV = {"avx2": {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"}}


def build(name: str, channels_last: bool) -> torch.nn.Module:
    torch.manual_seed(0)
    if name == "mlp":
        return build_mlp(hidden_sizes=[256, 128, 64], activation="tanh", num_classes=10)
    model = build_from_spec("strong")  # the toolkit builds it channels-last
    return model if channels_last else model.to(memory_format=torch.contiguous_format)


def in_process_of_its_own(name: str, setting: str) -> tuple[float, float, str]:
    """:func:`images_per_second` of ``setting`` in a new Python process with the setting's instruction set, and
    the instruction set torch used there (a CPU that lacks it, e.g. an ARM one, runs its own: the row says so)."""
    env = {**os.environ, **ISA_ENV[SETTINGS[setting]["isa"]]}
    out = subprocess.run([sys.executable, __file__, "--one", name, setting, "--steps", str(MODELS[name]["steps"])],
                         env=env, capture_output=True, text=True, check=True).stdout
    return tuple(json.loads(out.splitlines()[-1]))  # (images/s, warm-up seconds, capability)


def images_per_second(name: str, X: torch.Tensor, y: torch.Tensor, *, threads=None, fused=False,
                      channels_last=False, compile=False, bf16=False, warmup: int = 3) -> tuple[float, float]:
    """(images/s over the timed steps, seconds spent compiling/warming up) for one setting."""
    spec = MODELS[name]
    default_threads = torch.get_num_threads()
    torch.set_num_threads(threads or default_threads)
    try:
        model = build(name, channels_last and name == "cnn")
        kwargs = {"fused": True} if fused else {}
        if spec["optimizer"] == "sgd":
            opt = torch.optim.SGD(model.parameters(), lr=spec["lr"], momentum=0.9, nesterov=True, **kwargs)
        else:
            opt = torch.optim.Adam(model.parameters(), lr=spec["lr"], **kwargs)
        forward = torch.compile(model) if compile else model
        loss_fn = torch.nn.CrossEntropyLoss()
        bs = spec["batch_size"]
        batches = len(X) // bs

        def step(i):
            xb, yb = X[(i % batches) * bs:(i % batches + 1) * bs], y[(i % batches) * bs:(i % batches + 1) * bs]
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                loss = loss_fn(forward(xb), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        t0 = time.perf_counter()
        for i in range(warmup):
            step(i)
        warm = time.perf_counter() - t0
        t0 = time.perf_counter()
        for i in range(spec["steps"]):
            step(warmup + i)
        return spec["steps"] * bs / (time.perf_counter() - t0), warm
    finally:
        torch.set_num_threads(default_threads)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="mlp,cnn")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--settings", default=",".join(SETTINGS), help="comma-separated names of SETTINGS")
    parser.add_argument("--json", default=None)
    parser.add_argument("--one", nargs=2, metavar=("MODEL", "SETTING"), help=argparse.SUPPRESS)
    parser.add_argument("--steps", type=int, default=None, help="timed steps per setting (default: the model's)")
    args = parser.parse_args(argv)
    names = [m for m in args.models.split(",") if m]
    chosen = [s for s in args.settings.split(",") if s]
    unknown = [m for m in names if m not in MODELS] + [s for s in chosen if s not in SETTINGS]
    if unknown:
        parser.error(f"unknown {', '.join(unknown)}; models: {', '.join(MODELS)}; settings: {', '.join(SETTINGS)}")
    gen = torch.Generator().manual_seed(0)
    X, y = torch.rand(4096, 1, 28, 28, generator=gen), torch.randint(0, 10, (4096,), generator=gen)
    if args.steps:
        for name in MODELS:
            MODELS[name] = {**MODELS[name], "steps": args.steps}
    if args.one:  # one setting, in the process in_process_of_its_own started: its result on the last line
        name, setting = args.one
        options = {k: v for k, v in SETTINGS[setting].items() if k != "isa"}
        print(json.dumps([*images_per_second(name, X, y, **options), torch.backends.cpu.get_cpu_capability()]))
        return {}
    print(f"{os.cpu_count()} cores, torch {torch.__version__}, default threads {torch.get_num_threads()}, "
          f"CPU capability {torch.backends.cpu.get_cpu_capability()}, bf16 in hardware: "
          f"{native_bf16(torch.device('cpu'))}", flush=True)
    results = {}
    for name in names:
        rates = {s: [] for s in chosen}
        warmups = {s: [] for s in chosen}
        capability = {}  # of the settings run in a process of their own
        for _ in range(args.rounds):
            for s in chosen:
                if "isa" in SETTINGS[s]:
                    rate, warm, capability[s] = in_process_of_its_own(name, s)
                else:
                    rate, warm = images_per_second(name, X, y, **SETTINGS[s])
                rates[s].append(rate)
                warmups[s].append(warm)
        median = {s: statistics.median(v) for s, v in rates.items()}
        base = median.get("baseline") or next(iter(median.values()))
        results[name] = {s: {"images_per_second": median[s], "vs_baseline": median[s] / base,
                             "warmup_seconds": max(warmups[s]),
                             **({"cpu_capability": capability[s]} if s in capability else {})} for s in chosen}
        print(f"\n{name} (batch {MODELS[name]['batch_size']}, {MODELS[name]['optimizer']}): images/s, x baseline")
        for s, r in results[name].items():
            extra = f"  (compile + warm-up {r['warmup_seconds']:.1f} s)" if "compile" in s else ""
            extra += f"  (torch's CPU capability there: {r['cpu_capability']})" if "cpu_capability" in r else ""
            print(f"  {s:<30} {r['images_per_second']:9.0f}  {r['vs_baseline']:5.2f}x{extra}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
