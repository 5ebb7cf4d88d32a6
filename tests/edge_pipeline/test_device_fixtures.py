"""Every recorded device variant (edgeclient/fixtures/<variant>/) from the device to the
stored row: the simulator replays the folder's answers (v2 over verified TLS), the real
run_edge process polls it once and uploads to the real server process, and the row in the
database is compared with the folder's expected.json.

run_edge polls as it starts and then every POLL_INTERVAL_S; 60 s keeps the test to that
one poll, so the row count says "stored once" and not "polled once".
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from edgeclient.simulator import P1Simulator, SimulatorConfig
from p1common.processes import ROOT
from tests.edge_pipeline.stored import differences, readings, spool_depth, stored_rows
from tests.waiting import wait_until

db = pytest.mark.django_db(transaction=True)

FIXTURES = ROOT / "edgeclient" / "fixtures"
VARIANTS = sorted(p.name for p in FIXTURES.iterdir() if (p / "expected.json").is_file())
ONE_POLL_INTERVAL_S = "60"
ROW_TIMEOUT_S = 30.0


def meter_env(sim: P1Simulator) -> dict[str, str]:
    assert sim.recording is not None
    if sim.recording.api == "v1":
        return {"HW_P1_HOST": sim.address, "HW_P1_API": "v1"}
    return {
        "HW_P1_HOST": sim.address,
        "HW_P1_API": "v2",
        "HW_P1_TOKEN": sim.token,
        "HW_P1_CA_FILE": str(sim.ca_file),
        "HW_P1_SERIAL": sim.serial,
    }


def test_every_fixture_folder_names_its_source_in_the_readme():
    readme = (FIXTURES / "README.md").read_text()
    assert VARIANTS, "no fixture folders with an expected.json"
    for variant in VARIANTS:
        assert f"`{variant}`" in readme, f"{variant}: no source in edgeclient/fixtures/README.md"
        folder = FIXTURES / variant
        assert (folder / "api.json").is_file()
        assert (folder / "data.json").is_file() != (folder / "measurement.json").is_file()


@db
@pytest.mark.parametrize("variant", VARIANTS)
def test_a_recorded_device_answer_is_stored_once_with_the_expected_values(
    variant, start_edge, edge_env, spool_path, device, tmp_path
):
    folder = FIXTURES / variant
    expected = json.loads((folder / "expected.json").read_text())
    served_log = tmp_path / "served.jsonl"
    config = SimulatorConfig(
        fixture_dir=folder, cert_dir=tmp_path / "certs", readings_log_path=served_log
    )
    with P1Simulator(config) as sim:
        before = datetime.now(UTC)
        edge = start_edge(edge_env | meter_env(sim) | {"POLL_INTERVAL_S": ONE_POLL_INTERVAL_S})
        wait_until(
            lambda: stored_rows(device) or edge.log.matching("rejected|unreachable"),
            ROW_TIMEOUT_S,
            f"{variant}: a stored row (or the edge giving up on the reading)",
        )
        wait_until(lambda: spool_depth(spool_path) == 0, ROW_TIMEOUT_S, "the spool to drain")
        after = datetime.now(UTC)
        assert edge.terminate() == 0
    log = edge.log.text()
    assert len(readings(served_log)) == 1, log  # one poll: the premise of "stored once"
    rows = stored_rows(device)
    assert len(rows) == 1, f"{variant}: {len(rows)} rows stored; edge log:\n{log}"
    row = rows[0]
    want = dict(expected)
    ts_rule = want.pop("ts")
    if ts_rule == "edge-clock":
        # No time in the answer, or one far from the edge's clock: the edge's own time.
        assert before - timedelta(seconds=1) <= row.ts <= after, (
            f"{variant}: ts {row.ts.isoformat()} is not the edge's clock "
            f"({before.isoformat()} .. {after.isoformat()})"
        )
    else:
        want["ts"] = ts_rule
    wrong = differences(row, want)
    assert not wrong, f"{variant}: {wrong}; edge log:\n{log}"


def test_the_fixture_replay_serves_the_folder_verbatim(tmp_path: Path):
    import httpx

    folder = FIXTURES / "v1-no-export"
    with P1Simulator(SimulatorConfig(api="v1", fixture_dir=folder)) as sim:
        base = f"http://{sim.address}"
        data = httpx.get(f"{base}/api/v1/data", timeout=5).json()
        device = httpx.get(f"{base}/api", timeout=5).json()
    assert data == json.loads((folder / "data.json").read_text())
    assert device == json.loads((folder / "api.json").read_text())
