"""One training run with its checkpoints and its place in the cache: :func:`train_run`, which the grid engine
(:mod:`helpers.engine.experiment`) and its worker processes (:mod:`helpers.engine.parallel`) call for every run,
and the parts of a run's cache key (:func:`run_cache_parts`)."""

from __future__ import annotations

import functools
import os
import shutil
import time
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path

from helpers import cache
from helpers.data.fashion import ImageSet
from helpers.engine.checkpoints import CheckpointError
from helpers.engine.training import resolve_device

# Settings that do not change what a run computes: its checkpoints are the same whatever they say.
NOT_COMPUTED = ("checkpoint_dir", "resume", "output_dir", "author_name", "author_id", "course", "device")
# Also left out of a run's cache key: where the data were read (their content is in the key), and the report's
# comparison as a whole (a run's own values are in its settings), so one configuration of two different grids,
# or of two students' reports, is trained once.
NOT_CACHED = ("data_dir", "grid", "search", "repeats", "evaluate_test", "checkpoint_every")


def run_cache_parts(train_one: Callable, settings: Mapping, *, train: ImageSet, val: ImageSet | None, seed: int,
                    tag: str = "") -> dict:
    """Everything that decides a run's result, for its key in the cache (:mod:`helpers.cache`): which
    ``train_one``, the settings that compute, the seed, digests of the training and validation data and of
    any data or starting weights ``train_one`` is bound to, the code, versions and device type."""
    return {"what": "run", "train_one": cache.callable_name(train_one),
            "settings": {k: v for k, v in settings.items() if k not in NOT_COMPUTED + NOT_CACHED}, "seed": seed,
            "tag": tag, "train": cache.data_digest(train), "val": cache.data_digest(val),
            "bound": bound_parts(train_one, settings),
            **cache.environment_parts(resolve_device(settings.get("device", "auto")))}


def _finished(out: Mapping) -> bool:
    """A run worth keeping: it completed or stopped early by rule (a non-finite loss is not a result to reuse)."""
    reason = str(out["history"].stop_reason)
    return reason == "completed" or reason.startswith("early stopping")


def train_run(train_one: Callable, settings: Mapping, *, train: ImageSet, val: ImageSet | None, seed: int,
              desc: str, tag: str = "") -> dict:
    """``train_one`` for one run, with its checkpoints in ``<output_dir>/checkpoints/runs/<digest>``.

    The folder's name is a digest of everything that determines the run (its settings, seed, data sizes and
    ``tag``), so a changed parameter never continues from a stale checkpoint. With ``HELPERS_RESUME=1`` in the
    environment (``python -m helpers run --resume``) a finished run is read back instead of trained, and an
    interrupted one continues from its last epoch.

    A finished run is also kept in the cache (:mod:`helpers.cache`, kind ``runs``: its ``last.pt``/``best.pt``
    files); a run whose key is there already is not trained: its checkpoints are put into its folder and
    ``train_one`` reads them back as a resumed finished run (the same model, history and numbers). The returned
    dict's ``cache`` says which happened (:func:`helpers.cache.hit_record`, ``miss_record`` or ``off_record``);
    ``seconds`` is the training time, the producing run's for a result from the cache.
    """
    settings = dict(settings)
    if not settings.get("output_dir"):  # no folder for checkpoints: nothing to resume or cache
        return train_one(settings, train=train, val=val, seed=seed, desc=desc)
    # 16 hex digits of the key of what determines the run (the folder names of earlier versions, unchanged)
    key = cache.make_key([{k: v for k, v in settings.items() if k not in NOT_COMPUTED}, seed, len(train),
                          len(val) if val is not None else 0, tag])[:16]
    folder = Path(settings["output_dir"]) / "checkpoints" / "runs" / key
    settings["checkpoint_dir"] = str(folder)
    settings["resume"] = os.environ.get("HELPERS_RESUME") == "1"
    parts = run_cache_parts(train_one, settings, train=train, val=val, seed=seed, tag=tag) if cache.enabled() else None
    ckey = cache.make_key(parts) if parts else None
    entry = cache.lookup("runs", ckey) if ckey else None
    # the report's own checkpoints come first when resuming; the cache serves what is not there
    if entry is not None and not (settings["resume"] and (folder / "last.pt").exists()):
        shutil.rmtree(folder, ignore_errors=True)  # a stale interrupted try must not mix with the entry's files
        cache.copy_files(entry, folder)
        try:
            out = train_one({**settings, "resume": True}, train=train, val=val, seed=seed, desc=desc)
            record = cache.hit_record(entry)
            return {**out, "cache": record, "seconds": (record["produced_by"] or {}).get("seconds")}
        except CheckpointError as exc:  # a damaged entry: train as if it were not there
            warnings.warn(f"cache entry {entry} is unreadable ({exc}); training the run again", stacklevel=2)
            cache.discard(entry)
            shutil.rmtree(folder, ignore_errors=True)
    start = time.perf_counter()
    out = train_one(settings, train=train, val=val, seed=seed, desc=desc)
    seconds = time.perf_counter() - start
    record = cache.off_record()
    if ckey is not None:
        stored = None
        if _finished(out):
            stored = cache.store("runs", ckey, lambda tmp: cache.copy_files(folder, tmp), parts=parts,
                                 made_by=cache.producer(output_dir=settings["output_dir"], seconds=seconds,
                                                        author_name=settings.get("author_name"),
                                                        author_id=settings.get("author_id")))
        record = cache.miss_record(ckey, stored)
    return {**out, "cache": record, "seconds": seconds}


def bound_parts(fn, settings: Mapping) -> list:
    """What a ``train_one`` was bound to that also decides its result, for its runs' keys: data sets it closes
    over (e.g. the autoencoder's own training images) and objects with a ``cache_key(settings)`` method (the
    starting weights of the transfer section)."""
    if isinstance(fn, functools.partial):
        values = [*fn.args, *fn.keywords.values()]
    else:
        values = []
        for cell in getattr(fn, "__closure__", None) or ():
            try:
                values.append(cell.cell_contents)
            except ValueError:  # an empty cell
                continue
    parts = []
    for value in values:
        part = _bound_part(value, settings)
        if part:
            parts.append(part)
    return parts


def _bound_part(value, settings: Mapping):
    if hasattr(value, "cache_key"):
        return value.cache_key(settings)
    if isinstance(value, ImageSet):
        return cache.data_digest(value)
    if isinstance(value, Mapping):
        return {str(k): cache.data_digest(v) for k, v in value.items() if isinstance(v, ImageSet)}
    return None
