"""A child started with stop_with_parent ends when its parent is killed; the process
harness (p1common.processes) names a child that is not ready, stops children in order
and reads the simulator's settings line."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from edgeclient.simulator import SETTINGS_LINE_PREFIX
from p1common.child_processes import stop_process, stop_with_parent
from p1common.processes import (
    SIMULATOR_PREFIX,
    ChildFailed,
    ChildStack,
    parse_simulator_line,
    start_child,
    start_simulator,
)
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


# -- the process harness (p1common.processes) ------------------------------------------


def test_a_child_that_exits_before_its_ready_line_is_named_with_its_last_lines():
    child = start_child("early-exit", [sys.executable, "-c", "print('config missing')"], os.environ)
    with pytest.raises(ChildFailed) as failed:
        child.wait_for_line("^ready$", timeout_s=30)
    message = str(failed.value)
    assert message.startswith(f"early-exit (pid {child.pid}) exited (0) before a line matching")
    assert message.endswith("config missing")


def test_a_child_silent_past_the_deadline_is_named_with_its_last_lines():
    code = "import time; print('starting', flush=True); time.sleep(600)"
    with ChildStack() as stack:
        child = stack.add(start_child("slow", [sys.executable, "-c", code], os.environ))
        child.wait_for_line("^starting$")
        with pytest.raises(ChildFailed, match=r"^slow \(pid \d+\) did not answer: .*\nstarting$"):
            child.wait_for_line("^ready$", timeout_s=0.2)
    assert child.returncode == -signal.SIGTERM


# Each child appends its name to a file when SIGTERM reaches it, then exits.
RECORDS_ITS_STOP = (
    "import signal, sys, time\n"
    "def stop(*_):\n"
    "    open(sys.argv[1], 'a').write(sys.argv[2] + '\\n')\n"
    "    sys.exit(0)\n"
    "signal.signal(signal.SIGTERM, stop)\n"
    "print('ready', flush=True)\n"
    "time.sleep(600)\n"
)


def test_a_child_stack_stops_its_children_in_the_reverse_order_of_their_start(tmp_path: Path):
    record = tmp_path / "stopped"
    with ChildStack() as stack:
        for name in ("server", "meter", "edge"):
            command = [sys.executable, "-c", RECORDS_ITS_STOP, str(record), name]
            stack.add(start_child(name, command, os.environ)).wait_for_line("^ready$")
        children = list(stack.children)
    assert record.read_text().splitlines() == ["edge", "meter", "server"]
    assert [child.returncode for child in children] == [0, 0, 0]


def test_the_simulator_states_its_settings_in_one_line_that_the_harness_reads(tmp_path: Path):
    assert SETTINGS_LINE_PREFIX == SIMULATOR_PREFIX
    sim = start_simulator(api="both", cert_dir=tmp_path / "certs")
    try:
        lines = sim.child.log.text().splitlines()
    finally:
        sim.stop()
    machine = [line for line in lines if line.startswith(SIMULATOR_PREFIX)]
    assert len(machine) == 1
    assert parse_simulator_line(machine[0]) == sim.settings
    # The lines for people say the same as the one for programs.
    people = dict(line.strip().split("=", 1) for line in lines if line.startswith("  HW_P1_"))
    assert people == sim.settings.env
    assert f" on {sim.address} (api both, " in lines[0]
    assert sim.settings.env["HW_P1_HOST"] == sim.address
    assert Path(sim.settings.env["HW_P1_CA_FILE"]).is_file()
    assert sim.settings.meter_env() == sim.settings.env | {"HW_P1_API": "v2"}
