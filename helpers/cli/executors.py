"""Where a batch's rows run: threads on this machine (``--executor local``) or tasks on a Dask cluster
(``--executor dask``), with one progress line for the whole batch either way.

Every row is still its own ``python -m helpers run`` process (:func:`helpers.cli.rows.run_row`); a Dask task only
starts it and waits, so a worker holds one row at a time (one thread per worker) and a row that dies takes no
worker down. A worker lost mid-row is the scheduler's to notice: it starts the row again elsewhere, the row's
process having died with its worker. Who can reach the cluster (127.0.0.1 only, TLS) is
:mod:`helpers.cli.dask_security`'s business.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor, as_completed
from contextlib import contextmanager
from pathlib import Path

import torch

from helpers.cli.dask_security import LOOPBACK, check_scheduler, listen, local_security
from helpers.cli.rows import ATTEMPTS, run_row

TOPIC = "fashion-batch"  # Dask event topic on which tasks announce that a row has started


def duration(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 60} min {seconds % 60:02d} s" if seconds >= 60 else f"{seconds} s"


class Progress:
    """Counts of the batch's rows (done, running, failed, waiting) and a time estimate, as one line.

    On a terminal the line is redrawn in place on standard error; otherwise (a log file) it is printed once per
    change. Each finished row also gets its own line on standard output. Thread-safe: executors call it from
    worker threads and from Dask's event loop.
    """

    def __init__(self, total: int, slots: int, *, stream=None):
        self.total, self.slots = total, max(1, slots)
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.running: dict[str, float] = {}  # name -> when it started
        self.ended: set[str] = set()  # rows whose process has ended, their result not yet in
        self.seconds: list[float] = []  # wall time of each finished row
        self.failed = 0
        self.lock = threading.Lock()

    def started(self, name: str) -> None:
        with self.lock:
            self.running[name] = time.perf_counter()
            self._draw()

    def event(self, event: str, name: str) -> None:
        """A row's ``start`` or ``end`` as announced by its Dask task."""
        if event == "start":
            self.started(name)
        else:
            with self.lock:
                self.ended.add(name)
                self.running.pop(name, None)

    def finished(self, result: dict) -> None:
        with self.lock:
            self.running.pop(result["name"], None)
            self.ended.discard(result["name"])
            self.seconds.append(result.get("seconds") or 0.0)
            self.failed += result["status"] != "ok"
            if self.tty:
                self.stream.write("\r\033[K")
            detail = f" ({result['error']})" if result.get("error") else ""
            print(f"line {result['line']}: {result['name']}: {result['status']}{detail}", flush=True)
            self._draw()

    def estimate(self) -> float | None:
        """Seconds left: the mean wall time of a finished row for every row not started, the rest of it for every
        row running, shared between the slots; None before any row has finished."""
        if not self.seconds:
            return None
        mean = sum(self.seconds) / len(self.seconds)
        now = time.perf_counter()
        waiting = self.total - len(self.seconds) - len(self.running) - len(self.ended)
        left = waiting * mean + sum(max(0.0, mean - (now - t)) for t in self.running.values())
        return left / min(self.slots, max(1, waiting + len(self.running)))

    def line(self) -> str:
        done = len(self.seconds)
        waiting = self.total - done - len(self.running) - len(self.ended)
        left = self.estimate()
        eta = "" if done == self.total else "; estimating time left" if left is None else f"; ~{duration(left)} left"
        return (f"[batch] {done}/{self.total} done ({self.failed} failed), {len(self.running)} running, "
                f"{waiting} waiting{eta}")

    def _draw(self) -> None:
        if self.tty:
            self.stream.write("\r\033[K" + self.line())
        else:
            self.stream.write(self.line() + "\n")
        self.stream.flush()

    def tick(self) -> None:
        """Redraw (on a terminal) so the estimate counts down between events."""
        if self.tty:
            with self.lock:
                self._draw()

    def close(self) -> None:
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()


@contextmanager
def ticking(progress: Progress, every: float = 1.0):
    stop = threading.Event()

    def loop():
        while not stop.wait(every):
            progress.tick()

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield progress
    finally:
        stop.set()
        progress.close()


def run_local(pending: list[dict], *, output_dir: Path, jobs: int, options: dict) -> list[dict]:
    """Today's executor: ``jobs`` rows at a time in threads here, torch threads shared out between them."""
    threads = max(1, (os.cpu_count() or 1) // jobs)
    with ticking(Progress(len(pending), jobs)) as progress:
        def one(entry):
            progress.started(entry["name"])
            result = {**entry, **run_row(output_dir / entry["name"], entry["sections"], entry["params"],
                                         threads=threads, worker="local", **options)}
            progress.finished(result)  # here, before this thread takes the next row: counts stay true
            return result

        with ThreadPoolExecutor(max_workers=jobs) as pool:
            results = [f.result() for f in as_completed([pool.submit(one, e) for e in pending])]
    return results


# --- Dask ------------------------------------------------------------------------------------------------------

def gpu_ids(visible: str | None, count: int) -> list[str]:
    """The devices a local cluster pins its workers to: ``CUDA_VISIBLE_DEVICES``'s entries (ids or UUIDs) when it
    is set, else ``0 … count-1``; none when it hides every device (empty, ``-1``)."""
    if visible is None:
        return [str(i) for i in range(count)]
    ids = [v.strip() for v in visible.split(",") if v.strip()]
    if not ids or ids[0].startswith("-"):
        return []
    return ids[:count] if count else ids


def local_worker_specs(jobs: int, gpus: list[str], cores: int) -> list[dict]:
    """The workers of a local cluster: name, environment, Dask resources and torch threads of each.

    With GPUs, one worker per GPU, pinned to it with ``CUDA_VISIBLE_DEVICES`` and advertising ``{"GPU": 1}`` (rows
    ask for that resource, so a GPU never runs two rows at once); ``jobs`` does not apply. Without, ``jobs``
    workers. Either way one row per worker, and the cores shared between them.
    """
    count = len(gpus) or jobs
    threads = max(1, cores // count)
    env = {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    if gpus:
        return [{"name": f"gpu{gpu}", "env": {**env, "CUDA_VISIBLE_DEVICES": gpu}, "resources": {"GPU": 1},
                 "threads": threads} for gpu in gpus]
    return [{"name": f"cpu{i}", "env": env, "resources": {}, "threads": threads} for i in range(jobs)]


def row_resources(workers: dict) -> dict | None:
    """What a row asks of a worker: a GPU when any worker of the cluster offers GPUs (``dask worker --resources
    GPU=1``), else nothing. ``workers`` is ``Client.scheduler_info()["workers"]``."""
    return {"GPU": 1} if any(w.get("resources", {}).get("GPU") for w in workers.values()) else None


def host_slots(workers: dict) -> dict[str, int]:
    """Rows that may run at once on each host (its workers' threads together), to share the host's cores out."""
    slots: dict[str, int] = {}
    for w in workers.values():
        slots[w["host"]] = slots.get(w["host"], 0) + int(w.get("nthreads", 1))
    return slots


def visible_gpus() -> list[str]:
    try:
        count = torch.cuda.device_count()
    except Exception:  # no torch build with CUDA: a CPU machine
        count = 0
    return gpu_ids(os.environ.get("CUDA_VISIBLE_DEVICES"), count) if count else []


def start_local_cluster(specs: list[dict], *, retries: int, security=None):
    """A cluster on this machine: a ``LocalCluster`` of CPU workers, or one pinned worker per GPU (``specs`` from
    :func:`local_worker_specs`). ``retries`` becomes the scheduler's ``allowed-failures``: how many lost workers
    a row survives.

    Every server of it (scheduler, nannies, workers and their HTTP servers) listens on 127.0.0.1 only, on free
    ports; with ``security`` (:func:`helpers.cli.dask_security.local_security`) it speaks TLS and nothing else."""
    # lazy on purpose: dask takes seconds to import, and only --executor dask needs it
    import dask
    from distributed import LocalCluster, Nanny, Scheduler, SpecCluster

    protocol = "tls://" if security is not None else "tcp://"
    # the HTTP servers start even without a dashboard (metrics, health): on the loopback, a free port, never 8787.
    # The dashboard itself needs bokeh; without it, none (and no warning about it)
    where = {"host": LOOPBACK, "protocol": protocol, "security": security}
    with dask.config.set({"distributed.scheduler.allowed-failures": retries}):
        if not any(s["resources"] for s in specs):
            return LocalCluster(n_workers=len(specs), threads_per_worker=1, processes=True, dashboard_address=listen(),
                                worker_dashboard_address=listen(), env=specs[0]["env"] if specs else None,
                                scheduler_kwargs={"dashboard": has_bokeh()}, **where)
        workers = {s["name"]: {"cls": Nanny, "options": {"nthreads": 1, "resources": s["resources"], "env": s["env"],
                                                         "dashboard_address": listen(), **where}} for s in specs}
        return SpecCluster(workers=workers, security=security, scheduler={"cls": Scheduler, "options": {
            "dashboard": has_bokeh(), "dashboard_address": listen(), **where}})


def has_bokeh() -> bool:
    return importlib.util.find_spec("bokeh") is not None


def row_task(entry: dict, output_dir: str, options: dict, threads: int | None, slots: dict) -> dict:
    """The Dask task of one row: announce it, run it (:func:`helpers.cli.rows.run_row`), return its result."""
    # lazy on purpose: dask, as in start_local_cluster (this runs on a worker)
    from distributed import get_worker

    worker = get_worker()
    if threads is None:  # a cluster started elsewhere: this host's cores shared by the rows it may run at once
        threads = max(1, (os.cpu_count() or 1) // slots.get(worker.address.split("://")[-1].rsplit(":", 1)[0], 1))
    worker.log_event(TOPIC, {"event": "start", "name": entry["name"]})
    result = run_row(Path(output_dir) / entry["name"], entry["sections"], entry["params"], threads=threads,
                     worker=worker.address, **options)
    # before the result: events from one worker arrive in order, so its next row's start never counts as a third
    worker.log_event(TOPIC, {"event": "end", "name": entry["name"]})
    return {**entry, **result}


def attempts_of(folder: Path) -> int:
    path = folder / ATTEMPTS
    return len(path.read_text().splitlines()) if path.exists() else 0


def run_dask(pending: list[dict], *, output_dir: Path, jobs: int, scheduler: str | None, options: dict) -> list[dict]:
    """Run the rows as tasks on the Dask cluster at ``scheduler`` (or ``DASK_SCHEDULER_ADDRESS``); without an
    address, on a local cluster of ``jobs`` worker processes (one per GPU on a CUDA machine), which only this
    process can reach (:mod:`helpers.cli.dask_security`)."""
    address = scheduler or os.environ.get("DASK_SCHEDULER_ADDRESS")
    if address:
        check_scheduler(address)
        return _run_on(None, address, pending, output_dir=output_dir, jobs=jobs, options=options)
    gpus = visible_gpus()
    specs = local_worker_specs(jobs, gpus, os.cpu_count() or 1)
    if gpus and jobs != len(gpus):
        print(f"note: {len(gpus)} GPU(s): one worker per GPU, --jobs {jobs} does not apply")
    with local_security() as security:
        cluster = start_local_cluster(specs, retries=options["retries"], security=security)
        try:
            return _run_on(cluster, None, pending, output_dir=output_dir, jobs=jobs, options=options,
                           threads=specs[0]["threads"])
        finally:
            cluster.close()


def connect(cluster, address: str | None = None):
    """A ``Client`` of ``cluster`` (started here: its own TLS settings), or of the scheduler at ``address`` (Dask's
    TLS configuration, ``distributed.comm.tls.*``, applies); a scheduler that cannot be reached is a SystemExit
    naming it."""
    # lazy on purpose: dask, as in start_local_cluster
    import dask
    from distributed import Client

    try:
        # how long to try: Dask's connect timeout (30 s; DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT)
        return Client(cluster or address, timeout=dask.config.get("distributed.comm.timeouts.connect"))
    except Exception as exc:  # a wrong address, no scheduler, a TLS handshake refused, another server's bytes
        where = address or "of the local cluster"
        raise SystemExit(f"error: cannot reach the Dask scheduler {'at ' * bool(address)}{where}: "
                         f"{type(exc).__name__}: {exc}"[:600]
                         + "; start one with `dask scheduler` (see README) or leave out --scheduler for a local "
                         "cluster") from None


def _run_on(cluster, address: str | None, pending: list[dict], *, output_dir: Path, jobs: int, options: dict,
            threads: int | None = None) -> list[dict]:
    """:func:`run_dask` on a cluster started here, or on the scheduler at ``address``."""
    # lazy on purpose: dask, as in start_local_cluster
    from distributed import as_completed as dask_completed
    from distributed.scheduler import KilledWorker

    retries = options["retries"]
    results: list[dict] = []
    with connect(cluster, address) as client:
        info = client.scheduler_info()
        workers = info.get("workers", {})
        print(f"dask: scheduler {client.scheduler.address}, {len(workers)} worker(s)"
              + ("" if workers else " (rows wait until workers join)"))
        # a scheduler without bokeh still lists its HTTP service, but shows no dashboard on it (this checkout's
        # environment is the cluster's too, so bokeh here is the best guess for bokeh there)
        if "dashboard" in info.get("services", {}) and has_bokeh():
            print(f"dask: dashboard {client.dashboard_link}")
        resources, slots = row_resources(workers), host_slots(workers)
        progress = Progress(len(pending), sum(slots.values()) or jobs)
        # an event is (time, message); Dask adds the worker's address to the message
        client.subscribe_topic(TOPIC, lambda event: progress.event(event[1]["event"], event[1]["name"]))
        rows: dict[str, dict] = {}  # future key -> row

        def submit(entry):
            future = client.submit(row_task, entry, str(output_dir), options, threads, slots, pure=False,
                                   key=f"row-{entry['name']}-{uuid.uuid4().hex[:8]}", resources=resources)
            rows[future.key] = entry
            return future

        with ticking(progress):
            queue = dask_completed([submit(e) for e in pending])
            for future in queue:
                entry = rows.pop(future.key)
                try:
                    result = future.result()
                except KilledWorker:  # the scheduler gave up on it: start it again while --retries allows
                    tries = attempts_of(output_dir / entry["name"])
                    if tries <= retries:
                        queue.add(submit(entry))
                        continue
                    result = {**entry, "status": "worker lost", "folder": entry["name"], "attempts": tries,
                              "error": f"its worker was lost {tries} times (--retries {retries})"}
                except Exception as exc:  # the task could not even start (a worker without helpers...)
                    result = {**entry, "status": "failed", "folder": entry["name"],
                              "error": f"{type(exc).__name__}: {exc}"}
                results.append(result)
                progress.finished(result)
    return results
