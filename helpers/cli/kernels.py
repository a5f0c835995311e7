"""Running a notebook with papermill under watch: a time limit for the whole section, and a clear account of a
kernel that died (killed from outside, out of memory) or was stopped.

papermill's own ``execution_timeout`` limits each cell; a section's limit is for all of them together, so a
timer kills the kernel process when it runs out, and the partial notebook (papermill saves after every cell)
is kept.
"""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import threading
import time
from pathlib import Path

from jupyter_client.manager import AsyncKernelManager


class SectionTimeout(RuntimeError):
    """The section ran past its time limit and its kernel was stopped."""


class KernelDied(RuntimeError):
    """The kernel process ended in the middle of the notebook (killed, or out of memory)."""


def _kernel_manager(holder: dict):
    """A kernel manager class that hands each kernel it starts to ``holder`` (for the watchdog).

    Where the platform has Unix sockets the kernel talks over IPC in a private temporary folder: no TCP port is
    opened on the machine (a shared login node), kernels started together cannot collide on ports, and the
    kernel has no "running over TCP without encryption" to warn about.
    """

    class WatchedKernelManager(AsyncKernelManager):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            if os.name == "posix":
                holder["ipc_dir"] = tempfile.mkdtemp(prefix="fashion-kernel-")  # mode 0700: this user's only
                self.transport = "ipc"
                self.ip = os.path.join(holder["ipc_dir"], "k")
            holder["km"] = self

    return WatchedKernelManager


def kernel_pid(km) -> int | None:
    """The process id of ``km``'s kernel, or None when it has no local process (not started, or remote)."""
    process = getattr(getattr(km, "provisioner", None), "process", None)
    return getattr(process, "pid", None)


def execute(notebook: str | Path, output: str | Path, *, parameters: dict, cwd: str | Path,
            timeout: float | None = None) -> None:
    """papermill's ``execute_notebook`` with a limit of ``timeout`` seconds for the whole notebook.

    Raises papermill's ``PapermillExecutionError`` for an error in a cell, :class:`SectionTimeout` when the limit
    stopped it, :class:`KernelDied` when the kernel ended for any other reason.
    """
    # lazy on purpose: papermill and its kernels take seconds to import, and only running a notebook needs them
    import papermill
    from nbclient.exceptions import DeadKernelError

    holder: dict = {}
    expired = threading.Event()
    finished = threading.Event()  # the notebook ended: the watchdog has nothing left to stop

    def stop():
        expired.set()
        # the limit can pass while the kernel is still starting: keep trying until its process exists
        while not finished.is_set():
            pid = kernel_pid(holder.get("km"))
            if pid:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                return
            finished.wait(0.2)

    timer = threading.Timer(timeout, stop) if timeout else None
    if timer:
        timer.daemon = True
        timer.start()
    start = time.perf_counter()
    try:
        papermill.execute_notebook(str(notebook), str(output), parameters=parameters, cwd=str(cwd), progress_bar=False,
                                   log_output=False, kernel_manager_class=_kernel_manager(holder),
                                   # the notebook is finished and saved when the kernel is shut down: stopping it
                                   # at once saves the second or so a graceful exit waits, for every section run
                                   shutdown_kernel="immediate",
                                   # the kernel application's own log lines (jupyter_client interrupts every kernel
                                   # before shutting it down, and the kernel then logs "KeyboardInterrupt caught")
                                   # say nothing a student can act on; errors in cells still reach the report
                                   extra_arguments=["--IPKernelApp.log_level=CRITICAL"])
    except Exception as exc:
        # lazy on purpose: papermill, as in execute
        from papermill.exceptions import PapermillExecutionError

        if expired.is_set():
            raise SectionTimeout(f"stopped after {timeout:g} s (--timeout); the partial notebook is kept") from None
        if isinstance(exc, PapermillExecutionError) and "DeadKernel" not in exc.ename:
            raise
        if isinstance(exc, (DeadKernelError, PapermillExecutionError)) or "kernel died" in str(exc).lower():
            raise KernelDied(f"the kernel died after {time.perf_counter() - start:.0f} s (killed from outside, or out "
                             "of memory: try a smaller profile or batch size); the partial notebook is kept") from None
        raise
    finally:
        finished.set()
        if timer:
            timer.cancel()
        if holder.get("ipc_dir"):
            shutil.rmtree(holder["ipc_dir"], ignore_errors=True)
