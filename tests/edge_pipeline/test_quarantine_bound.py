"""Refused polls through the Poller: one quarantine row per cause, and what edge_status
reports about drops, the quarantine, the meter's identity and its clock.

The meter is the real HomeWizardClient polling a recorded API v1 answer sequence
(tests/edge/recorded_meter.py); edge_status runs as the ``manage.py`` command.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess

from edgeclient.poller import REJECTED, SPOOLED, Poller
from edgeclient.spool import QUARANTINE_MAX_AGE_S, QUARANTINE_MAX_ROWS, Spool
from p1common.processes import ROOT
from tests.edge.conftest import ManualClock, load_fixture
from tests.edge.recorded_meter import recorded_meter
from tests.edge.test_dropped_fields import HWE_DATA_V1
from tests.edge_pipeline.conftest import EDGE_BASE_ENV, manage


def _no_power(import_kwh: float) -> dict:
    # edgeclient/fixtures/HWE-P1/v1-data-no-power.json with a moving register: the
    # message of each refusal differs in nothing, but the payloads do.
    payload = load_fixture("v1-data-no-power.json")
    return payload | {"total_power_import_t1_kwh": import_kwh}


def test_refused_polls_of_one_cause_are_one_quarantine_row_with_a_repeat_count(tmp_path):
    clock = ManualClock()
    answers = [_no_power(5210.004 + i / 1000) for i in range(20)]
    answers.append(copy.deepcopy(HWE_DATA_V1) | {"active_power_w": "n/a"})
    answers.append(copy.deepcopy(HWE_DATA_V1) | {"active_power_w": "unknown"})
    with (
        recorded_meter(answers, api="v1", cert_dir=tmp_path) as meter,
        Spool(tmp_path / "spool.sqlite3", clock=clock) as spool,
    ):
        poller = Poller(meter, spool, now=lambda: clock.moment)
        for _ in answers:
            assert poller.step().state == REJECTED
            clock.advance(2)
        rows = spool.quarantined()
    assert [(row["cause"], row["repeats"]) for row in rows] == [
        ("power_w:not_a_number", 1),
        ("power_w:missing", 19),
    ]
    first = rows[1]
    assert first["last_seen_at"] - first["at"] == 2 * 19
    assert json.loads(first["sample"])["total_power_import_t1_kwh"] == 5210.004


def _edge_status(spool_path) -> dict:
    result = subprocess.run(
        manage("edge_status", "--json"),
        cwd=ROOT,
        env=os.environ | EDGE_BASE_ENV | {"EDGE_SPOOL_PATH": str(spool_path)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode in (0, 1), result.stderr
    return json.loads(result.stdout)


def _edge_status_text(spool_path) -> str:
    result = subprocess.run(
        manage("edge_status"),
        cwd=ROOT,
        env=os.environ | EDGE_BASE_ENV | {"EDGE_SPOOL_PATH": str(spool_path)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    return result.stdout


def test_edge_status_reports_drops_quarantine_meter_identity_and_clock(tmp_path):
    clock = ManualClock()
    no_gas = copy.deepcopy(HWE_DATA_V1) | {"total_gas_m3": 0.0, "gas_timestamp": 632525252525}
    swapped = no_gas | {
        "unique_id": "3153414733313030303133373832",
        "total_power_import_kwh": 0.5,
        "total_power_import_t1_kwh": 0.5,
        "total_power_import_t2_kwh": 0,
    }
    # Two telegrams of the meter without gas (its power moved), two refused, the swap.
    answers = [no_gas, no_gas | {"active_power_w": 12}, _no_power(1.0), _no_power(1.1), swapped]
    path = tmp_path / "spool.sqlite3"
    with (
        recorded_meter(answers, api="v1", cert_dir=tmp_path) as meter,
        Spool(path, clock=clock) as spool,
    ):
        poller = Poller(meter, spool, now=lambda: clock.moment)
        states = []
        for _ in answers:
            states.append(poller.step().state)
            clock.advance(2)
    assert states == [SPOOLED, SPOOLED, REJECTED, REJECTED, SPOOLED]
    report = _edge_status(path)
    assert report["dropped_values"]["gas_ts"]["count"] == 3
    assert report["dropped_values"]["gas_ts"]["problems"] == {"placeholder": 3}
    assert report["dropped_values"]["gas_m3"]["problems"] == {"placeholder": 3}
    assert (report["quarantined"], report["quarantine_repeats"]) == (1, 1)
    assert (report["quarantine_dropped"], report["quarantine_dropped_at"]) == (0, None)
    assert report["quarantine_max_rows"] == QUARANTINE_MAX_ROWS
    assert report["quarantine_max_age_s"] == QUARANTINE_MAX_AGE_S
    assert report["meter_unique_id"] == "3153414733313030303133373832"
    assert report["previous_meter_unique_id"] == "4E47475955"
    assert report["meter_changes"] == 1 and report["meter_changed_at"] is not None
    assert report["meter_clock"] == "absent"  # API v1 sends no timestamp
    assert report["meter_clock_detail"] == "the meter sends no timestamp"
    text = _edge_status_text(path)
    assert "quarantine: 1 samples, 1 repeated refusals folded into them" in text
    assert "dropped values (readings kept): gas_m3 3 (placeholder), gas_ts 3 (placeholder)" in text
    assert "sample time: the edge's clock since" in text
    assert "(absent: the meter sends no timestamp)" in text
    assert "meter id: 3153414733313030303133373832 (meter changed 1 time, last at" in text
