"""A new ``unique_id`` is a meter change: logged once, recorded, register check reset.

The answers are HomeWizard API v1 data (tests/edge/test_dropped_fields.py, HWE_DATA_V1,
from python-homewizard-energy's fixture); the second meter is the grid operator's
replacement, whose registers start near zero. Served through the real HomeWizardClient.
"""

from __future__ import annotations

import copy
import logging

from edgeclient.poller import REJECTED, SPOOLED, Poller
from edgeclient.spool import Spool
from tests.edge.recorded_meter import recorded_meter
from tests.edge.test_dropped_fields import HWE_DATA_V1

OLD_ID = "4E47475955"
NEW_ID = "3153414733313030303133373832"  # a Sagemcom T211 (Fluvius) unique_id


def _answer(unique_id: str | None, import_kwh: float, power_w: int) -> dict:
    payload = copy.deepcopy(HWE_DATA_V1)
    payload |= {
        "total_power_import_kwh": import_kwh,
        "total_power_import_t1_kwh": import_kwh,
        "total_power_import_t2_kwh": 0,
        "active_power_w": power_w,
    }
    if unique_id is None:
        del payload["unique_id"]
    else:
        payload["unique_id"] = unique_id
    return payload


def _swap(unique_ids: tuple[str | None, str | None]) -> list[dict]:
    old, new = unique_ids
    return [
        _answer(old, 13779.338, 500),
        _answer(old, 13779.339, 510),
        _answer(new, 0.012, 430),  # the new meter, registers from (near) zero
        _answer(new, 0.013, 440),
    ]


def _poll(poller: Poller, clock, count: int) -> list[str]:
    states = []
    for _ in range(count):
        states.append(poller.step().state)
        clock.advance(2)
    return states


def test_a_new_unique_id_resets_the_register_check_at_once(tmp_path, clock, caplog, cert_root):
    caplog.set_level(logging.INFO, logger="edgeclient.poller")
    with (
        recorded_meter(_swap((OLD_ID, NEW_ID)), api="v1", cert_dir=cert_root) as meter,
        Spool(tmp_path / "spool.sqlite3", clock=clock) as spool,
    ):
        poller = Poller(meter, spool, now=lambda: clock.moment)
        assert _poll(poller, clock, 4) == [SPOOLED] * 4
        status = spool.status()
        imports = [p.sample["energy_import_kwh"] for p in spool.oldest(10)]
    assert imports == [13779.338, 13779.339, 0.012, 0.013]
    assert status.quarantined == 0
    assert (status.meter_unique_id, status.previous_meter_unique_id) == (NEW_ID, OLD_ID)
    assert status.meter_changes == 1
    assert status.meter_changed_at == clock.now - 4  # at the third poll
    changed = [r.getMessage() for r in caplog.records if "meter changed" in r.getMessage()]
    assert len(changed) == 1 and OLD_ID in changed[0] and NEW_ID in changed[0]


def test_without_a_unique_id_a_lower_register_is_still_quarantined(tmp_path, clock, cert_root):
    # The contrast: nothing says the meter changed, so the backwards check holds.
    with (
        recorded_meter(_swap((None, None)), api="v1", cert_dir=cert_root) as meter,
        Spool(tmp_path / "spool.sqlite3", clock=clock) as spool,
    ):
        poller = Poller(meter, spool, now=lambda: clock.moment)
        assert _poll(poller, clock, 4) == [SPOOLED, SPOOLED, REJECTED, REJECTED]
        assert spool.status().meter_changes == 0


def test_a_meter_swapped_while_the_edge_was_stopped_is_noticed_at_start(tmp_path, clock, cert_root):
    path = tmp_path / "spool.sqlite3"
    answers = _swap((OLD_ID, NEW_ID))
    for part in (answers[:2], answers[2:]):  # run_edge, stopped, started again
        with (
            recorded_meter(part, api="v1", cert_dir=cert_root) as meter,
            Spool(path, clock=clock) as spool,
        ):
            assert _poll(Poller(meter, spool, now=lambda: clock.moment), clock, 2) == [SPOOLED] * 2
    with Spool(path) as spool:
        status = spool.status()
    assert (status.meter_unique_id, status.previous_meter_unique_id) == (NEW_ID, OLD_ID)
    assert status.meter_changes == 1
