"""How :func:`helpers.engine.training.fit` uses the hardware: intra-op threads and mixed precision, each chosen from the
size of a training step (counted, never timed, so that a run repeats exactly).

The numbers behind the choices are in the README's performance section (``scripts/benchmark_cpu_settings.py``).
"""

from __future__ import annotations

import platform
from pathlib import Path

import torch
from torch import nn

# Below this many floating-point operations per forward step, a second intra-op thread costs more in
# hand-offs than it computes: measured on a 2-core CPU (scripts/benchmark_pipeline.py and the README's
# performance section), the course MLP at batch 64 (31 MFLOP) trains 2x faster on one thread, the compact CNN at
# batch 128 (3.8 GFLOP) 1.5x faster on two; the cross-over lay between 60 and 150 MFLOP for MLPs and CNNs alike.
SMALL_STEP_FLOPS = 100e6


def step_flops(model: nn.Module, X: torch.Tensor, batch_size: int) -> float | None:
    """Floating-point operations of one forward step (``batch_size`` images like ``X[:1]``), or None if the model
    cannot be counted (torch's FlopCounterMode on a single image in evaluation mode, so batch norm accepts it)."""
    # lazy on purpose: torch's flop counter loads its decompositions (a second), and only sizing a step needs it
    from torch.utils.flop_counter import FlopCounterMode

    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(X[:1])
        return float(counter.get_total_flops()) * batch_size
    except Exception:  # a model that needs other inputs: keep torch's threads rather than fail training
        return None
    finally:
        model.train(was_training)


def training_threads(flops: float | None, *, device: torch.device) -> int:
    """Intra-op threads for a training step of ``flops`` (:func:`step_flops`): one for a small step on the CPU,
    otherwise torch's setting (which a batch run lowers per row). A function of the model and batch size only, so
    a run repeats exactly."""
    threads = torch.get_num_threads()
    if device.type != "cpu" or threads == 1:
        return threads
    return 1 if flops is not None and flops < SMALL_STEP_FLOPS else threads


PRECISIONS = ("auto", "fp32", "bf16")


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` computes bfloat16 in hardware (CUDA from Ampere on; CPUs with AVX512-BF16 or AMX)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        try:
            return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
        except (AttributeError, RuntimeError):
            return False
    return False


def autocast_dtype(precision: str, device: torch.device, flops: float | None) -> torch.dtype | None:
    """The autocast dtype of a training run, or None for float32.

    ``auto`` trains large steps (over :data:`SMALL_STEP_FLOPS`, i.e. convolutional networks) in bfloat16 mixed
    precision where the hardware has it: weights, optimizer and batch-norm statistics stay float32, convolutions
    and matrix products run in bfloat16. ``bf16`` asks for it everywhere (emulated, and slow, without hardware
    support); ``fp32`` never.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision={precision!r}: unknown; allowed: {', '.join(PRECISIONS)}")
    if precision == "fp32" or device.type == "mps":
        return None
    if precision == "bf16":
        return torch.bfloat16
    return torch.bfloat16 if native_bf16(device) and flops is not None and flops >= SMALL_STEP_FLOPS else None


# What decides a CPU's arithmetic beyond its architecture name: two x86_64 CPUs with and without these round
# differently (fused multiply-add, AVX-512 and AMX kernels, bfloat16), so a report records which it had.
FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_tile", "amx_bf16", "fma")


def cpu_info(cpuinfo: str | None = None) -> tuple[str | None, list[str]]:
    """This machine's CPU model and which of :data:`FLAGS` it has (Linux's /proc/cpuinfo; None elsewhere)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(errors="replace")[:200_000]
        except OSError:
            return platform.processor() or None, []
    model = next((line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if line.startswith("model name")),
                 None)
    flags = next((line.split(":", 1)[1].split() for line in cpuinfo.splitlines() if line.startswith("flags")), [])
    return model, sorted(f for f in FLAGS if f in flags)
