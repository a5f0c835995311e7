"""One run at a time in a report folder.

A run holds an operating-system lock on ``<folder>/.helpers-run.lock`` (``fcntl.flock``; on Windows
``msvcrt.locking``) from before it touches anything in the folder until it has exported its report. The file
records who holds it (process id, host, command, start time), so that a second run into the same folder is
refused naming the first. The operating system releases the lock of a process that ends in any way (an exception,
Ctrl-C, ``kill -9``, out of memory): a record whose lock is free was left by a run that no longer runs, and it is
taken over with a note. Where the file system offers no lock (some network file systems), the record alone
decides: a live process on this host, or any process on another host, keeps the folder.

This module imports nothing of the package but :mod:`helpers.escape`.
"""

from __future__ import annotations

import datetime as dt
import errno
import json
import os
import shlex
import socket
import sys
from pathlib import Path

from helpers.escape import shorten, visible

LOCK_NAME = ".helpers-run.lock"
RECORD_LIMIT = 64 * 1024  # bytes of a record read back (a planted lock file cannot fill the screen)
WINDOWS_LOCK_OFFSET = 1 << 20  # msvcrt locks bytes: one byte far past the record, so the record stays readable

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None
try:
    import msvcrt
except ImportError:  # everywhere else
    msvcrt = None


class FolderBusy(RuntimeError):
    """Another run is writing the folder; the message names it."""


def holder_record() -> dict:
    """Who this process is, as written into a lock file."""
    argv = getattr(sys, "orig_argv", None) or [sys.executable, *sys.argv]
    return {"pid": os.getpid(), "host": socket.gethostname(), "command": shlex.join(argv),
            "started": dt.datetime.now().isoformat(timespec="seconds")}


def describe(record: dict | None) -> str:
    """A holder in words: ``pid 4242 on host lab-3 since 2026-11-02T10:00:00 (python -m helpers run mlp)``.

    The record may come from a file handed in with a report: every field is shown as plain, one-line text."""
    if not record:
        return "another run (which has not written its details yet)"
    field = {k: shorten(visible(record.get(k, "?")), 300) for k in ("pid", "host", "started", "command")}
    return f"pid {field['pid']} on host {field['host']} since {field['started']} ({field['command']})"


def pid_running(pid) -> bool:
    """Whether process ``pid`` runs on this machine (True when that cannot be told safely)."""
    if not isinstance(pid, int) or pid <= 0:
        return False
    if os.name == "nt":  # os.kill(pid, 0) would terminate it there
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _os_lock(fd: int) -> bool | None:
    """Take the OS lock without waiting: True when taken, False when another process holds it, None when this file
    system has no locks."""
    busy = (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK, getattr(errno, "EDEADLK", errno.EAGAIN))
    try:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        elif msvcrt is not None:
            os.lseek(fd, WINDOWS_LOCK_OFFSET, os.SEEK_SET)
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        else:
            return None
        return True
    except OSError as exc:
        return False if exc.errno in busy else None


def _read(fd: int) -> dict | None:
    os.lseek(fd, 0, os.SEEK_SET)
    data = os.read(fd, RECORD_LIMIT)
    try:
        record = json.loads(data.decode("utf-8", errors="replace")) if data.strip(b"\0 \n") else None
    except ValueError:
        return {"command": "unreadable lock record " + repr(data[:80])}
    return record if isinstance(record, dict) else None


def _write(fd: int, record: dict | None) -> None:
    os.ftruncate(fd, 0)
    if record:
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, json.dumps(record).encode("utf-8"))
        os.fsync(fd)


class FolderLock:
    """The lock of one report folder, held from :meth:`acquire` until :meth:`release` (or use ``with``).

    ``note`` says, when not None, that a lock left by a run that no longer runs was taken over.
    """

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self.fd: int | None = None
        self.note: str | None = None

    def acquire(self) -> FolderLock:
        """Take the folder, or raise :class:`FolderBusy` naming the run that has it (the folder is left as it was,
        but for the lock file itself)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            taken = _os_lock(fd)
            previous = _read(fd)
            mine = holder_record()
            here = previous and previous.get("host") == mine["host"]
            if taken is False or (taken is None and previous and (not here or pid_running(previous.get("pid")))):
                raise FolderBusy(f"{self.folder} is being written by {describe(previous)}; wait for it to finish, "
                                 "or give this run another --output-dir (a lock left by a run that has ended is "
                                 f"taken over by itself; {self.path} holds the record)")
            if previous:
                gone = ("no longer running" if here and not pid_running(previous.get("pid"))
                        else "no longer holding it")
                self.note = f"took over the lock of {self.folder} left by {describe(previous)}, {gone}"
            _write(fd, mine)
        except BaseException:
            os.close(fd)
            raise
        self.fd = fd
        return self

    def release(self) -> None:
        """Clear the record and let the folder go (the OS lock goes with the closed file)."""
        if self.fd is None:
            return
        try:
            _write(self.fd, None)
        except OSError:
            pass  # a record left behind is taken over by the next run, with a note
        finally:
            os.close(self.fd)
            self.fd = None

    def __enter__(self) -> FolderLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
