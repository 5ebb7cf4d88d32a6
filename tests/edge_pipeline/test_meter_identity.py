"""run_edge asks the device at HW_P1_HOST what it is (GET /api) and refuses anything but
a P1 meter in one line, exit code 2 (issue 11, point 6).

A kWh meter or an Energy Socket answers with an import register and a power too
(tests/edge/scripted_meter.py cites their recorded answers), so without the check their
readings would be spooled as the household's grid connection. A meter that is only
unreachable at start must not stop the edge.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator

import pytest

from edgeclient.spool import Spool
from p1common.processes import ROOT
from tests.edge.scripted_meter import ScriptedMeter
from tests.edge_pipeline.conftest import bound_socket
from tests.waiting import wait_until

EXIT_TIMEOUT_S = 30


@pytest.fixture
def scripted() -> Iterator[list[ScriptedMeter]]:
    started: list[ScriptedMeter] = []
    yield started
    for meter in started:
        meter.stop()


def start_scripted(started: list[ScriptedMeter], **options) -> ScriptedMeter:
    meter = ScriptedMeter(api="v1", **options).start()
    started.append(meter)
    return meter


@pytest.fixture
def edge_only_env(spool_path) -> Iterator[dict[str, str]]:
    # No server needed: uploads fail (nothing listens), which is beside the point here.
    closed = bound_socket()
    yield {
        "VPS_INGEST_URL": f"http://127.0.0.1:{closed.getsockname()[1]}",
        "VPS_DEVICE_TOKEN": "unused",
        "EDGE_SPOOL_PATH": str(spool_path),
        "POLL_INTERVAL_S": "0.2",
        "UPLOAD_INTERVAL_S": "60",
        "HW_P1_API": "v1",
    }
    closed.close()


def spooled(path) -> int:
    if not path.exists():
        return 0
    with Spool(path, create=False) as spool:
        return spool.depth()


def free_port() -> tuple[socket.socket, int]:
    """A port nothing listens on (connections refused) until the socket is closed."""
    sock = bound_socket()
    return sock, sock.getsockname()[1]


@pytest.mark.parametrize("product", ["HWE-KWH1", "HWE-SKT", "HWE-WTR"])
def test_another_homewizard_product_is_refused_at_start_in_one_line(
    scripted, start_edge, edge_only_env, spool_path, product
):
    meter = start_scripted(scripted, product=product)
    edge = start_edge(edge_only_env | {"HW_P1_HOST": meter.address})
    assert edge.process.wait(EXIT_TIMEOUT_S) == 2
    [line] = edge.log.wait_closed()  # one line, nothing else
    assert line.startswith(f"CommandError: HW_P1_HOST={meter.address} is a HomeWizard ")
    assert line.endswith(f"({product}), not a P1 meter (HWE-P1): point HW_P1_HOST at the P1 meter")
    assert spooled(spool_path) == 0


def test_a_meter_unreachable_at_start_is_identified_when_it_answers(
    start_simulator, start_edge, edge_only_env, spool_path
):
    closed, port = free_port()
    edge = start_edge(edge_only_env | {"HW_P1_HOST": f"127.0.0.1:{port}"})
    edge.log.wait_for("meter not answering GET /api")
    with Spool(spool_path, create=False) as spool:
        assert spool.status().meter_down_since is not None  # edge_status says so
    assert edge.process.poll() is None  # still running, still asking
    assert spooled(spool_path) == 0

    closed.close()
    start_simulator("v1", "--port", str(port))
    edge.log.wait_for(rf"meter at 127\.0\.0\.1:{port} is a HWE-P1, serial ")
    wait_until(lambda: spooled(spool_path) >= 3, what="readings spooled")
    with Spool(spool_path, create=False) as spool:
        assert spool.status().meter_down_since is None
    assert edge.terminate() == 0


def test_a_device_that_turns_out_not_to_be_a_meter_stops_the_edge_before_any_reading(
    scripted, start_edge, edge_only_env, spool_path
):
    closed, port = free_port()
    edge = start_edge(edge_only_env | {"HW_P1_HOST": f"127.0.0.1:{port}"})
    edge.log.wait_for("meter not answering GET /api")
    closed.close()
    start_scripted(scripted, product="HWE-KWH1", port=port)
    assert edge.process.wait(EXIT_TIMEOUT_S) == 2
    assert "(HWE-KWH1), not a P1 meter" in edge.log.wait_closed()[-1]
    assert spooled(spool_path) == 0  # its kWh readings never reached the spool


def test_after_an_outage_another_product_pauses_the_readings_until_the_meter_is_back(
    start_simulator, scripted, start_edge, edge_only_env, spool_path
):
    closed, port = free_port()
    closed.close()
    sim = start_simulator("v1", "--port", str(port))
    edge = start_edge(edge_only_env | {"HW_P1_HOST": f"127.0.0.1:{port}"})
    edge.log.wait_for("run_edge started")  # the spool exists from here on
    wait_until(lambda: spooled(spool_path) >= 3, what="readings spooled")
    sim.stop()
    edge.log.wait_for("meter unreachable")
    kept = spooled(spool_path)
    # The address now belongs to an Energy Socket (a DHCP lease handed on, say): the
    # edge keeps running (its backlog must still upload), takes nothing from it, and
    # says so once and in the spool's meter state for edge_status.
    socket_meter = start_scripted(scripted, product="HWE-SKT", port=port)
    edge.log.wait_for(r"\(HWE-SKT\), not a P1 meter")
    with Spool(spool_path, create=False) as spool:
        assert "not a P1 meter" in (spool.status().meter_error or "")
    assert edge.process.poll() is None
    assert spooled(spool_path) == kept  # nothing from the socket, nothing lost
    socket_meter.stop()
    # The P1 meter comes back at its address: asked again, it is read again.
    start_simulator("v1", "--port", str(port))
    edge.log.wait_for("the P1 meter answers again")
    wait_until(lambda: spooled(spool_path) > kept, what="readings after the meter came back")
    with Spool(spool_path, create=False) as spool:
        assert spool.status().meter_error is None
    assert edge.terminate() == 0
    assert len(edge.log.matching("not a P1 meter")) == 1


def test_python_m_edgeclient_run_refuses_another_product_with_exit_2_too(
    scripted, edge_only_env, spool_path
):
    # The systemd unit's RestartPreventExitStatus=2 relies on it: the same exit code
    # and line as manage.py run_edge (issue 12, point 5).
    meter = start_scripted(scripted, product="HWE-KWH1")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("P1_", "DJANGO_"))}
    result = subprocess.run(
        [sys.executable, "-m", "edgeclient", "run"],
        cwd=ROOT, env=env | edge_only_env | {"HW_P1_HOST": meter.address},
        capture_output=True, text=True, timeout=EXIT_TIMEOUT_S,
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"CommandError: HW_P1_HOST={meter.address} is a HomeWizard kWh Meter (1-phase) "
        "(HWE-KWH1), not a P1 meter (HWE-P1): point HW_P1_HOST at the P1 meter"
    ]
    assert spooled(spool_path) == 0
