"""Files written whole or not at all.

Every file the toolkit writes for a reader (a report's HTML and PDF, ``metrics.json``, ``run.json``, an index, a
class summary) goes to a temporary file in the same folder first and is renamed over the old one only when it is
complete: a full disk, a killed run or an exception leaves the previous good file as it was, never a truncated one.

The temporary file is created with :func:`os.open` and mode 0o666, so the finished file gets the permissions the
user's umask gives (``tempfile.mkstemp`` would make it 0600: another user of a shared folder could not read it).
This module imports nothing of the package.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path


def _temporary_name(path: Path) -> Path:
    # hidden, in the same folder (a rename within one file system is atomic), unique per writer
    return path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")


@contextlib.contextmanager
def atomic_path(path: str | Path):
    """Yield a temporary path beside ``path`` for a writer that wants a file name (a PDF printer, ``savefig``);
    it replaces ``path`` when the block ends without an exception and is removed otherwise.

    The writer must create the file itself; the block fails when it did not (nothing was written)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temporary_name(path)
    try:
        yield tmp
        if not tmp.is_file():
            raise OSError(f"nothing was written to {path}")
        _match_umask(tmp)
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def _match_umask(path: Path) -> None:
    """Give a file that another program made the mode a new file would get (0o666 less the umask)."""
    probe = _temporary_name(path)
    fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        mode = os.fstat(fd).st_mode & 0o777
    finally:
        os.close(fd)
        probe.unlink()
    os.chmod(path, mode)


def write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (see the module docstring); returns ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temporary_name(path)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # the umask applies, as for open(path, "w")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    return path


def write_text(path: str | Path, text: str, *, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically (see the module docstring); returns ``path``."""
    return write_bytes(path, text.encode(encoding))
