"""Whether a cache entry may decide a result (:mod:`helpers.cache`): whose it is, whether it is whole, and whether
its files are the ones written when it was made.

An entry is read back *instead of* computing, so whoever can write a cache folder decides the results of everyone
who reads it: a planted ``arrays.pt`` with every test label 0 would be a report's test set. Hence:

- **Whose**: by default only entries of the reading user are read (the entry folder, its ``meta.json`` and every
  file owned by this uid). Another user's entry is left alone and the work is computed here. Reading other users'
  entries is an explicit choice, ``HELPERS_CACHE_SHARED=1`` (``--shared-cache``): it means trusting everyone who
  can write the folder, and so it is refused (other users' entries are not read) where a folder of the cache is
  writable by every user of the machine.
- **Readable**: an entry this user cannot read (permissions, a file vanishing) is computed instead, not an error.
- **Whole**: an entry is a real folder (no symbolic links in it or in its place) of regular files, each listed
  in ``meta.json`` with its SHA-256; a file that is missing, extra, changed or not a regular file (a FIFO would
  block the reader), a ``meta.json`` that is not JSON or is larger than a real one, or one made for another key,
  make the entry *damaged*: it is computed again and replaced.

The digests protect against damage (a truncated copy, a disk error, a file edited by hand) and naive planting;
they are not a signature: anyone who can write an entry can also write a matching digest. That is why other
users' entries are not read by default. This module imports nothing of the package.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from pathlib import Path

META = "meta.json"
META_LIMIT = 1 << 20  # a real meta.json is a few kB: a larger one is not parsed (a 100 MB JSON costs seconds)
ENV_SHARED = "HELPERS_CACHE_SHARED"
YES_WORDS = ("1", "on", "yes", "true")


class Untrusted(Exception):  # noqa: N818 (a verdict, not a failure: the work is computed instead)
    """Why an entry is not read. ``leave``: not ours to replace (another user's, or one this user cannot read,
    which may be whole for its owner); otherwise damaged, and replaced by the work computed again."""

    def __init__(self, reason: str, *, leave: bool = False):
        super().__init__(reason)
        self.leave = leave


def shared() -> bool:
    """Whether other users' entries are read (``HELPERS_CACHE_SHARED`` is ``1``/``on``/``yes``/``true``)."""
    return os.environ.get(ENV_SHARED, "").strip().lower() in YES_WORDS


def my_uid() -> int | None:
    """This process's user id; None where there are none (Windows: no ownership is checked there)."""
    return os.geteuid() if hasattr(os, "geteuid") else None


def owner_of(path: Path) -> int:
    """The uid owning ``path`` itself (a symbolic link's own owner, not its target's)."""
    return os.lstat(path).st_uid


def sha256_file(path: Path) -> str:
    """SHA-256 of a regular file's bytes, refusing to follow a symbolic link planted in its place."""
    h = hashlib.sha256()
    with _open_regular(path) as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_regular(path: Path, limit: int | None = None) -> bytes:
    """The bytes of a regular file (not a link, FIFO or device), at most ``limit`` of them."""
    with _open_regular(path) as f:
        size = os.fstat(f.fileno()).st_size
        if limit is not None and size > limit:
            raise Untrusted(f"{Path(path).name} is {size:,} bytes, more than a real one ({limit:,} at most)")
        return f.read()


def _open_regular(path: Path):
    # no following a link put in the file's place, and no waiting on a FIFO (O_NONBLOCK opens it at once)
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
    f = os.fdopen(fd, "rb")
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        f.close()
        raise Untrusted(f"{Path(path).name} is not a regular file")
    return f


def world_writable(folders) -> Path | None:
    """The first of ``folders`` that every user may write to (sticky or not: anyone can add an entry), or None."""
    for folder in folders:
        try:
            if os.stat(folder).st_mode & stat.S_IWOTH:
                return Path(folder)
        except OSError:
            continue
    return None


def _contents(entry: Path) -> tuple[list[Path], list[str]]:
    """The entry's folders (itself first) and files (relative names); any link or special file is damage."""
    folders, files = [entry], []
    for here, dirs, names in os.walk(entry, followlinks=False, onerror=_raise):
        for name in dirs + names:
            path = Path(here) / name
            mode = os.lstat(path).st_mode
            if stat.S_ISDIR(mode):
                folders.append(path)
            elif stat.S_ISREG(mode):
                files.append(path.relative_to(entry).as_posix())
            else:
                kind = "a symbolic link" if stat.S_ISLNK(mode) else "not a regular file"
                raise Untrusted(f"{path.relative_to(entry)} is {kind}")
    return folders, files


def _raise(exc: OSError):
    raise exc


def _check_owners(entry: Path, paths, *, root: Path) -> None:
    """Untrusted (left alone) unless every path is this user's, or the cache is shared and not writable by everyone."""
    me = my_uid()
    if me is None:
        return
    if shared():
        chain = [root / p for p in reversed(entry.relative_to(root).parents)]  # root, root/<kind>, root/<kind>/<ab>
        loose = world_writable([*chain, *(entry / p for p in paths)])
        if loose is not None and any(owner_of(entry / p) != me for p in paths):
            raise Untrusted(f"a shared cache, but {loose} is writable by every user of this machine, so anyone "
                            "could have made it (make the folder group-writable only)", leave=True)
        return
    if any(owner_of(entry / p) != me for p in paths):
        raise Untrusted(f"made by another user; only your own entries are read unless the cache is shared "
                        f"({ENV_SHARED}=1 or --shared-cache: trusting everyone who can write {root})", leave=True)


def check(entry: Path, *, kind: str, key: str, root: Path) -> dict | None:
    """The verified ``meta.json`` of ``entry``, None when there is no entry, or :class:`Untrusted` saying why not.

    Any error reading it (permissions, a vanished file) is :class:`Untrusted` too: a lookup that cannot read an
    entry computes the work instead of failing.
    """
    entry, root = Path(entry), Path(root)
    try:
        mode = os.lstat(entry).st_mode
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise Untrusted(f"cannot be read ({type(exc).__name__})", leave=True) from None
    if stat.S_ISLNK(mode):
        raise Untrusted("a symbolic link, not an entry folder")
    if not stat.S_ISDIR(mode):
        raise Untrusted("not a folder")
    try:
        _check_owners(entry, [Path(".")], root=root)  # before reading anything in it
        folders, files = _contents(entry)
        _check_owners(entry, [f.relative_to(entry) for f in folders[1:]] + [Path(f) for f in files], root=root)
        if META not in files:
            raise Untrusted(f"no {META}")
        try:
            meta = json.loads(read_regular(entry / META, META_LIMIT).decode("utf-8"))
        except (ValueError, RecursionError) as exc:  # not UTF-8, not JSON, or nested past the parser's depth
            raise Untrusted(f"{META} is not JSON ({type(exc).__name__})") from None
        digests = meta.get("digests") if isinstance(meta, dict) else None
        if not isinstance(digests, dict) or meta.get("kind") != kind or meta.get("key") != key:
            raise Untrusted(f"{META} is not this entry's (no digests, or another kind or key)")
        listed, present = set(digests), set(files) - {META}
        if listed != present:
            odd = sorted(listed ^ present)[:3]
            raise Untrusted(f"its files are not those its {META} lists: {', '.join(odd)}")
        for name in sorted(listed):
            if sha256_file(entry / name) != digests[name]:
                raise Untrusted(f"{name} does not match its digest (changed or damaged since it was written)")
        meta["own"] = my_uid() is None or owner_of(entry) == my_uid()
        return meta
    except OSError as exc:  # unreadable (another user's 0700 folder), or changed under us
        raise Untrusted(f"cannot be read ({type(exc).__name__}: {exc.strerror or exc})", leave=True) from None


def digests(folder: Path) -> dict[str, str]:
    """SHA-256 of every regular file under ``folder`` (relative names), for a new entry's ``meta.json``."""
    folders, files = _contents(Path(folder))
    return {name: sha256_file(Path(folder) / name) for name in sorted(files) if name != META}


def set_modes(folder: Path, dir_mode: int) -> None:
    """Give a finished entry the modes the user's umask gives (``dir_mode``, files without the execute bits), so
    that readers the umask admits (the group under umask 002) can read it."""
    folders, files = _contents(Path(folder))
    for name in files:
        os.chmod(Path(folder) / name, dir_mode & 0o666)
    for path in reversed(folders):  # the entry's own folder last: until then it stays private
        os.chmod(path, dir_mode)
