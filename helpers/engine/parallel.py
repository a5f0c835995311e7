"""Independent runs of a comparison trained side by side in worker processes, where that is faster and changes no
number.

A small network (an MLP, the course CNN, an autoencoder) trains fastest on one CPU thread
(:data:`helpers.engine.speed.SMALL_STEP_FLOPS`), so one run leaves the other cores idle. On a machine with several
cores, several such runs at once use them: on a 2-core CPU two MLP runs side by side each keep the speed of one
alone. Every run seeds itself and trains on one thread whether it runs here or in a worker, so the numbers are
those of the runs one after another. Large runs (the strong CNN) use every thread themselves and stay in turn, as
do runs on an accelerator and runs whose ``train_one`` cannot be sent to another process.

``HELPERS_WORKERS`` caps the workers (``1`` runs everything in turn); the default is the cores this process may
use, and no more than torch's threads (a batch run gives each row its share).
"""

from __future__ import annotations

import multiprocessing
import os
import pickle
from collections.abc import Callable, Mapping
from concurrent.futures import ProcessPoolExecutor

import torch

from helpers.data.fashion import ImageSet
from helpers.engine.progress import emit
from helpers.engine.runcache import train_run
from helpers.engine.speed import SMALL_STEP_FLOPS, step_flops
from helpers.engine.training import resolve_device

ENV = "HELPERS_WORKERS"
# Starting a worker (a Python process importing torch) takes seconds: a comparison with less training than this
# (images x epochs over all its runs: a smoke run, a subset) is done sooner in turn.
MIN_IMAGES = 500_000


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def worker_limit() -> int:
    value = os.environ.get(ENV, "").strip()
    if value:
        try:
            return max(1, int(value))
        except ValueError:
            raise ValueError(f"{ENV}={value!r}: allowed: a whole number >= 1") from None
    return max(1, min(available_cores(), torch.get_num_threads()))


def plan_workers(train_one: Callable, settings: list[Mapping], *, train: ImageSet) -> int:
    """How many processes train these runs: 1 (in turn, in this process) unless every run is a small CPU step,
    there is enough training to pay for starting workers (:data:`MIN_IMAGES`), ``train_one`` names a
    ``build_model`` to size them by, and it can be sent to a worker."""
    limit = min(worker_limit(), len(settings))
    build = getattr(train_one, "build_model", None)
    if limit < 2 or build is None or sum(s.get("epochs", 1) for s in settings) * len(train) < MIN_IMAGES:
        return 1
    for s in settings:
        if resolve_device(s.get("device", "auto")).type != "cpu":
            return 1
        flops = step_flops(build(s, num_classes=train.num_classes), train.X[:1], s["batch_size"])
        if flops is None or flops >= SMALL_STEP_FLOPS:
            return 1
    try:
        pickle.dumps(train_one)
    except Exception:  # a closure (the autoencoder binds its data): train in turn
        return 1
    return limit


def _init_worker() -> None:
    torch.set_num_threads(1)  # every run here is small: one thread each, as in turn


def _train(job: dict) -> dict:
    emit("run", index=job.pop("index"), total=job.pop("total"), name=job.pop("name"))
    return train_run(**job)


def train_runs(jobs: list[dict], *, workers: int) -> list[dict]:
    """:func:`helpers.engine.runcache.train_run` for each job (its keyword arguments plus ``index``, ``total`` and
    ``name`` for the progress line), in ``workers`` processes; results in the jobs' order."""
    if workers < 2:
        return [_train(dict(job)) for job in jobs]
    # spawn, not fork: a forked copy of a process whose OpenMP threads are running can hang
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_init_worker) as pool:
        return list(pool.map(_train, jobs))
