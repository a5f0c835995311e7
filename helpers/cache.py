"""Work done once: a content-addressed store of results that many reports share.

A class batch runs the same report for many students. Three kinds of work in it are the same from row to row
and are computed once, then read back: the data set's decoding (``data``), the transfer section's source-task
pretraining (``pretraining``) and finished training runs (``runs``: a row identical to one already run, or a
rerun, trains nothing). An entry is a folder named by its key::

    <cache dir>/<kind>/<key[:2]>/<key>/   the entry's files, and meta.json (what the key was made of, each
                                           file's SHA-256, when it was made and how long the work took)
    <cache dir>/tmp/                       entries being written (renamed into place when complete)

The key is the SHA-256 of a canonical JSON of everything that determines the result: the settings, digests
of the data it learnt from, the seed, a digest of this package's source, the library versions and the device
type. A changed setting, data file, line of ``helpers`` or torch version is another key, so a stale result is
never served. An entry is written into ``tmp/`` and renamed into place whole, so two processes (batch rows at
once, even on machines sharing the folder) never see half an entry; when both make the same entry the first
rename wins and the other's copy (the same result) is dropped.

The folder is ``$HELPERS_CACHE_DIR`` (``python -m helpers run`` sets it from ``--cache-dir``, else
``<--output-dir>/.cache``), else ``reports/.cache`` in the project. ``HELPERS_CACHE=off`` (``--no-cache``)
turns the cache off: nothing is read or written.

An entry decides a result only when it can be trusted (:mod:`helpers.cache_trust`): by default only the reading
user's own entries are read (``HELPERS_CACHE_SHARED=1``, ``--shared-cache``, trusts everyone who can write the
folder), and an entry whose files do not match the digests written at its creation is computed again and
replaced. Entries get the modes the user's umask gives, so the group can read them under umask 002. They record
no one's name, id, folder or machine: a report that reads another's entry shows only its key and date.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import io
import json
import math
import os
import re
import secrets
import shutil
import stat
import warnings
import weakref
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy
import torch

from helpers import cache_trust as trust
from helpers.paths import PROJECT_ROOT

ENV_DIR = "HELPERS_CACHE_DIR"
ENV_SWITCH = "HELPERS_CACHE"
OFF_WORDS = ("off", "0", "no", "false")
DEFAULT_DIR = PROJECT_ROOT / "reports" / ".cache"
# raised when an entry's layout changes, so old entries are simply never asked for (2: digests in meta.json, and
# no producer's name, id, folder or host)
FORMAT = 2
META = trust.META
ENV_SHARED = trust.ENV_SHARED
KIND = re.compile(r"[a-z][a-z_]{0,31}")
KEY = re.compile(r"[0-9a-f]{64}")


def enabled() -> bool:
    """Whether the cache is on (``HELPERS_CACHE`` is not ``off``)."""
    return os.environ.get(ENV_SWITCH, "on").strip().lower() not in OFF_WORDS


def cache_dir() -> Path:
    """The cache folder: ``$HELPERS_CACHE_DIR``, else ``reports/.cache`` in the project."""
    return Path(os.environ.get(ENV_DIR) or DEFAULT_DIR).expanduser()


def row_environment() -> dict[str, str]:
    """What a batch row's process needs in its environment to use this process's cache: the folder (absolute) and
    the switch. Rows started here inherit them; a row on another machine (a Dask worker) must be given them, and
    shares the work when the folder is on a file system both machines see."""
    return {ENV_DIR: str(cache_dir().resolve()), ENV_SWITCH: "on" if enabled() else "off",
            ENV_SHARED: "1" if trust.shared() else "0"}


def canonical(obj) -> str:
    """One text for JSON-like data whatever its key order (other values by their ``str``)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def make_key(parts: Mapping) -> str:
    """The entry key of ``parts``: 64 hex digits of SHA-256 over their canonical JSON."""
    return hashlib.sha256(canonical(parts).encode()).hexdigest()


# What runs, shows or checks reports but computes nothing that is cached (the command line, batches, kernels,
# export, figures, the metrics layout, verify, progress, and the plain-file helpers): a change to them keeps the
# cache valid. Whole rooms by folder, single modules by path, relative to the package.
NOT_COMPUTING_ROOMS = ("cli", "reporting")
NOT_COMPUTING = frozenset({"__init__.py", "__main__.py", "atomic.py", "cache_trust.py", "escape.py", "paths.py",
                           "textfiles.py", "engine/progress.py"})


def computes(relative: str) -> bool:
    """Whether the module at ``relative`` (a path inside the package) can change a cached result."""
    return relative not in NOT_COMPUTING and relative.split("/", 1)[0] not in NOT_COMPUTING_ROOMS


@functools.cache
def code_digest() -> str:
    """Digest of the package's Python source that computes results: a change to any such line of ``helpers``
    (:func:`computes`) makes every key new."""
    root = Path(__file__).resolve().parent
    h = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*.py") if computes(p.relative_to(root).as_posix())):
        h.update(str(path.relative_to(root)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


def environment_parts(dev: torch.device) -> dict:
    """What every key holds besides the work's own settings: format, code, versions, type of the device ``dev``
    (resolved by the caller: :func:`helpers.engine.training.resolve_device`)."""
    import torchvision  # lazy: only a run's key needs its version, and importing it takes a second

    return {"format": FORMAT, "code": code_digest(), "torch": torch.__version__, "torchvision": torchvision.__version__,
            "numpy": numpy.__version__, "device": dev.type,
            # two GPU models may round differently; CPUs of one build give the same numbers
            "device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else None}


# tensor -> (weak reference, version counter, digest): a data set is hashed once per process however many
# runs use it; the version counter changes when the tensor is written to in place.
_digests: dict[int, tuple[weakref.ref, int, str]] = {}


def tensor_digest(t: torch.Tensor) -> str:
    """Digest of a tensor's dtype, shape and bytes (memoized while the tensor lives unchanged)."""
    known = _digests.get(id(t))
    if known and known[0]() is t and known[1] == t._version:
        return known[2]
    flat = t.detach().cpu().contiguous().reshape(-1)
    h = hashlib.sha256(f"{flat.dtype}{tuple(t.shape)}".encode())
    if flat.numel():
        h.update(flat.view(torch.uint8).numpy())
    value = h.hexdigest()[:16]
    _digests[id(t)] = (weakref.ref(t), t._version, value)
    return value


def data_digest(data) -> str | None:
    """Digest of an :class:`~helpers.data.fashion.ImageSet` (images, labels, class names); None for None."""
    if data is None:
        return None
    return make_key([tensor_digest(data.X), tensor_digest(data.y), list(data.class_names)])[:16]


def file_digest(path: str | Path) -> str:
    """SHA-256 (16 hex digits) of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


def entry_path(kind: str, key: str) -> Path:
    """``<cache dir>/<kind>/<key[:2]>/<key>``; a kind or key of another form (``..``, a slash) is an error, so no
    name can lead out of the cache folder."""
    if not (isinstance(kind, str) and KIND.fullmatch(kind)) or not (isinstance(key, str) and KEY.fullmatch(key)):
        raise ValueError(f"cache entry kind {kind!r} / key {key!r}: a kind is lowercase letters, a key 64 lowercase "
                         "hex digits (helpers.cache.make_key)")
    return cache_dir() / kind / key[:2] / key


# entry path -> its verified meta.json, from lookup() to load() and hit_record() (read once, checked once)
_trusted: dict[str, dict] = {}


def lookup(kind: str, key: str) -> Path | None:
    """The entry ``key`` of ``kind`` when there is one that can be trusted (:func:`helpers.cache_trust.check`),
    else None (also when the cache is off). A damaged entry is discarded, so that the work computed again takes
    its place; another user's is left alone; either way a warning names it and why."""
    if not enabled():
        return None
    entry = entry_path(kind, key)
    try:
        meta = trust.check(entry, kind=kind, key=key, root=cache_dir())
    except trust.Untrusted as why:
        warnings.warn(f"cache entry {entry} not used: {why}; computing it here", stacklevel=2)
        if not why.leave:
            discard(entry)
        return None
    if meta is None:
        return None
    _trusted[str(entry)] = meta
    return entry


def _verified_meta(entry: Path) -> dict:
    meta = _trusted.get(str(entry))
    if meta is None:  # not looked up in this process: check it now
        parts = Path(entry).parts
        meta = trust.check(Path(entry), kind=parts[-3], key=parts[-1], root=Path(entry).parents[2])
        if meta is None:
            raise trust.Untrusted("gone")
    return meta


def load(entry: Path, name: str):
    """``torch.load`` of an entry's file (tensors and plain data only), or None with a warning when it cannot be
    read or is not the file the entry was made with (a disk error, a file changed by hand): the caller then
    computes the work again. The bytes are read once, checked against the digest and loaded from memory, so the
    file cannot change between the check and the load."""
    try:
        meta = _verified_meta(entry)
        data = trust.read_regular(Path(entry) / name)
        if hashlib.sha256(data).hexdigest() != meta["digests"].get(name):
            raise trust.Untrusted(f"{name} does not match its digest")
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many kinds for a damaged file
        leave = isinstance(exc, trust.Untrusted) and exc.leave  # not looked up, another user's: not ours
        warnings.warn(f"cache entry {entry} not used ({type(exc).__name__}: {exc}); computing it again",
                      stacklevel=2)
        if not leave:
            discard(entry)
        return None


def discard(entry: Path) -> None:
    """Take a damaged entry out of the cache (renamed away first, so readers see it whole or not at all), so
    that the work computed again is stored in its place. A link or file planted in an entry's place is removed
    itself (never what a link points to)."""
    _trusted.pop(str(entry), None)
    trash = cache_dir() / "tmp" / f"discarded-{Path(entry).name[:12]}-{os.getpid()}-{secrets.token_hex(4)}"
    try:
        trash.parent.mkdir(parents=True, exist_ok=True)
        os.rename(entry, trash)
    except OSError:  # gone already (another process discarded it), or not ours to remove
        return
    try:
        shutil.rmtree(trash) if stat.S_ISDIR(os.lstat(trash).st_mode) else trash.unlink()
    except OSError:  # a lookup never fails for want of a clean-up: what is left in tmp/ harms no reader
        pass


def read_meta(entry: Path) -> dict:
    """An entry's ``meta.json`` as on disk (unchecked: :func:`lookup` decides whether to use the entry)."""
    return json.loads(trust.read_regular(Path(entry) / META, trust.META_LIMIT))


def producer(*, output_dir=None, author_name=None, author_id=None, seconds: float | None = None) -> dict:
    """What an entry records of the run that made it: when, and how long the work took.

    ``output_dir``, ``author_name`` and ``author_id`` are accepted and *not recorded*: an entry may be read by
    another student's run, whose report must not show this one's name, id, folder or machine."""
    del output_dir, author_name, author_id
    return {"created": dt.datetime.now().isoformat(timespec="seconds"), "seconds": seconds}


def _provenance(made_by: Mapping | None) -> dict:
    """The fields of a producer record that may be written or shown (a planted ``meta.json`` may hold more)."""
    made_by = made_by if isinstance(made_by, Mapping) else {}
    created = made_by.get("created")
    seconds = made_by.get("seconds")
    ok_seconds = isinstance(seconds, (int, float)) and not isinstance(seconds, bool) and math.isfinite(seconds)
    return {"created": created if isinstance(created, str) and re.fullmatch(r"[0-9T:.+\- ]{10,32}", created) else None,
            "seconds": float(seconds) if ok_seconds and seconds >= 0 else None}


def store(kind: str, key: str, write: Callable[[Path], None], *, parts: Mapping, made_by: Mapping) -> Path | None:
    """Make entry ``key`` of ``kind``: ``write(folder)`` fills a private folder, which is then renamed into place.

    The finished entry's ``meta.json`` lists each file's SHA-256, and its folders and files get the modes the
    user's umask gives (not ``mkdtemp``'s 0700: under umask 002 the group can read it). Returns the entry's path
    (a trusted entry already there is kept, a damaged one replaced), or None when the cache is off or cannot be
    written (a warning says why: a read-only or full cache folder must not fail the report that made the work).
    """
    if not enabled():
        return None
    final = entry_path(kind, key)
    try:
        if trust.check(final, kind=kind, key=key, root=cache_dir()) is not None:
            return final
    except trust.Untrusted as why:
        if why.leave:  # another user's (or unreadable): not ours to replace (lookup said so already)
            return None
        discard(final)
    tmp = None
    try:
        staging = cache_dir() / "tmp"
        staging.mkdir(parents=True, exist_ok=True)
        tmp = staging / f"{kind}-{key[:12]}-{os.getpid()}-{secrets.token_hex(6)}"
        os.mkdir(tmp, 0o777)  # the umask applies: this is the mode every folder of the entry gets when complete
        dir_mode = os.stat(tmp).st_mode & 0o777
        os.chmod(tmp, 0o700)  # private while it is written
        write(tmp)
        meta = {"kind": kind, "key": key, "parts": parts, "producer": _provenance(made_by),
                "digests": trust.digests(tmp)}
        (tmp / META).write_text(json.dumps(meta, indent=1, default=str))
        trust.set_modes(tmp, dir_mode)
        final.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.rename(tmp, final)  # atomic: readers see no entry or a whole one
        except OSError:
            if not (final / META).is_file():  # not another process's complete entry: a real failure
                raise
        return final
    except (OSError, trust.Untrusted) as exc:
        warnings.warn(f"cache entry {kind}/{key[:12]} not written to {cache_dir()}: {exc}", stacklevel=2)
        return None
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


def link_or_copy(src: Path, dst: Path) -> None:
    """``dst`` as a hard link to ``src`` (no second copy on one disk), else a copy. Checkpoints are replaced,
    never written in place (:func:`helpers.engine.checkpoints.save_checkpoint`), so a linked file is never changed."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.unlink(missing_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def copy_files(src: Path, dst: Path, names=("last.pt", "best.pt")) -> list[Path]:
    """Copy (or link) the files called ``names`` under ``src``, at any depth, to the same places under ``dst``."""
    copied = []
    for path in sorted(p for name in names for p in Path(src).rglob(name)):
        target = Path(dst) / path.relative_to(src)
        link_or_copy(path, target)
        copied.append(target)
    return copied


def hit_record(entry: Path) -> dict:
    """``metrics.json``'s note on a result read from the cache: the entry, when it was made and how long the work
    took, and whether it was this user's own (``own``) or another's from a shared cache. No name, id, folder or
    machine of whoever made it."""
    meta = _verified_meta(entry)
    return {"hit": True, "key": meta["key"][:16], "entry": str(entry), "own": bool(meta.get("own", True)),
            "produced_by": _provenance(meta.get("producer"))}


def miss_record(key: str, entry: Path | None) -> dict:
    """The note on a result computed here (``stored``: whether it is now in the cache)."""
    return {"hit": False, "key": key[:16], "stored": entry is not None, "entry": str(entry) if entry else None}


def off_record() -> dict:
    """The note when the cache is off (the same in every run, so two runs without it compare equal)."""
    return {"hit": False, "enabled": False}


def describe(record: Mapping | None) -> str:
    """One phrase for a report: where a result came from. Only the entry's key and date, and whether it was the
    reader's own: never who made it (older records' names, folders and hosts are not shown either)."""
    if not record or not record.get("hit"):
        return "computed in this run"
    made = _provenance(record.get("produced_by"))
    whose = "an earlier run of the same user" if record.get("own", True) else "another user's run (a shared cache)"
    return f"read from the cache (entry {record['key']}, made by {whose} on {made['created'] or '?'})"


def callable_name(fn) -> str:
    """``helpers.sections.mlp.train_one`` for a function (the inner function of a ``functools.partial``)."""
    fn = fn.func if isinstance(fn, functools.partial) else fn
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', type(fn).__name__)}"
