"""Child processes that do not outlive the process that started them.

The demo and the chaos run start their children in sessions of their own, so a Ctrl-C
reaches only the parent, which then stops them in order. If the parent itself is killed
(SIGKILL, the OOM killer, a CI timeout), nothing would stop them: a server would keep
its port and the next `make demo` would find it taken. On Linux the kernel can send a
signal to a child when its parent dies (prctl PR_SET_PDEATHSIG); elsewhere this does
nothing. The signal is tied to the thread that started the child, so children must be
started from a thread that lives as long as the process (the main thread here).
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
from collections.abc import Callable

PR_SET_PDEATHSIG = 1


def _load_prctl() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


# Looked up once in the parent: between fork and exec the child should do no more than
# one call.
_PRCTL = _load_prctl()


def stop_with_parent(signum: int = signal.SIGTERM) -> Callable[[], None] | None:
    """A ``preexec_fn`` for subprocess.Popen: the child gets ``signum`` when this process
    dies; None where the platform cannot do it."""
    if _PRCTL is None:
        return None
    parent = os.getpid()
    prctl = _PRCTL

    def preexec() -> None:
        prctl(PR_SET_PDEATHSIG, int(signum), 0, 0, 0)
        if os.getppid() != parent:  # the parent died before the call: too late to ask
            os.kill(os.getpid(), signum)

    return preexec


def stop_process(process: subprocess.Popen, timeout_s: float, signum: int = signal.SIGTERM) -> bool:
    """Send ``signum`` to a running process and wait for it; SIGKILL after ``timeout_s``.

    Returns True when it had to be killed (it ignored the signal or hung).
    """
    if process.poll() is not None:
        return False
    process.send_signal(signum)
    try:
        process.wait(timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        return True
    return False
