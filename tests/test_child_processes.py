"""A child started with stop_with_parent ends when its parent is killed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from p1common.child_processes import stop_process, stop_with_parent
from tests.waiting import process_gone, wait_until

# The parent starts a child that sleeps, prints its pid and then waits to be killed.
PARENT = """
import subprocess, sys, time
from p1common.child_processes import stop_process, stop_with_parent
child = subprocess.Popen(
    [sys.executable, "-c", "import time; time.sleep(600)"],
    start_new_session=True,
    preexec_fn=stop_with_parent() if sys.argv[1] == "yes" else None,
)
print(child.pid, flush=True)
time.sleep(600)
"""

ROOT = Path(__file__).resolve().parent.parent


def child_of_killed_parent(use_it: str) -> int:
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT, use_it], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    child = int(parent.stdout.readline())
    parent.kill()
    parent.wait()
    return child


@pytest.mark.skipif(stop_with_parent() is None, reason="PR_SET_PDEATHSIG is Linux only")
def test_a_child_ends_when_its_parent_is_killed():
    child = child_of_killed_parent("yes")
    wait_until(lambda: process_gone(child), what=f"child {child} to end after its parent's SIGKILL")


def test_without_it_the_child_would_survive():
    child = child_of_killed_parent("no")
    try:
        assert not process_gone(child)
    finally:
        os.kill(child, signal.SIGKILL)


IGNORES_SIGTERM = (
    "import signal, time\n"
    "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    "print(1, flush=True)\n"
    "time.sleep(600)\n"
)


def test_stop_process_kills_what_ignores_the_signal():
    stubborn = subprocess.Popen([sys.executable, "-c", IGNORES_SIGTERM], stdout=subprocess.PIPE)
    stubborn.stdout.readline()  # the handler is in place
    assert stop_process(stubborn, 0.5) is True
    assert stubborn.returncode == -signal.SIGKILL
    polite = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    assert stop_process(polite, 10) is False
    assert polite.returncode == -signal.SIGTERM
    assert stop_process(polite, 10) is False  # already gone: nothing to do
