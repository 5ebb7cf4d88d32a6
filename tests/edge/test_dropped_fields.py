"""A reading is never lost for one optional value: real payload shapes, then the Poller.

Sources of the payloads (each copied from the file or report named, changed only where
the comment says):
- HA: home-assistant/core tests/components/homewizard/fixtures/ (HWE-P1-unavailable-exports,
  HWE-P1-zero-values, v2/HWE-P1/measurement.json).
- HWE: homewizard/python-homewizard-energy tests/v1/fixtures/HWE-P1/ (data.json,
  data_single_phase.json), itself the HomeWizard API documentation's example
  (api-documentation.homewizard.com, /docs/v1/measurement).
- Placeholder gas times as DSMR meters without a gas meter send them, reported in
  ndokter/dsmr_parser#120 (Sagemcom T211: ``0-1:24.2.1(632525252525S)(00000.000)``),
  dsmrreader/dsmr-reader#361 (Iskra AM550: ``0-1:24.2.1(700101010000W)(00000000)``),
  dsmrreader/dsmr-reader#811 and #1922 (``000101000000W``, clocks never set), and a
  garbled gas time in dsmrreader/dsmr-reader#269 (``681027002758S``).
"""

from __future__ import annotations

import copy
import logging
from datetime import UTC, datetime

import pytest

from edgeclient.normalise import Problem, normalise_reading
from edgeclient.poller import SPOOLED, Poller
from edgeclient.spool import Spool
from tests.edge.recorded_meter import recorded_meter

EDGE_NOW = datetime(2024, 6, 28, 12, 12, 40, tzinfo=UTC)

# HA HWE-P1-unavailable-exports/data.json: a P1 meter whose answer has no export registers.
HA_NO_EXPORTS_V1 = {
    "wifi_ssid": "My Wi-Fi",
    "wifi_strength": 100,
    "unique_id": "00112233445566778899AABBCCDDEEFF",
    "total_power_import_kwh": 13779.338,
    "total_power_import_t1_kwh": 10830.511,
    "total_power_import_t2_kwh": 2948.827,
    "total_power_import_t3_kwh": 2948.827,
    "total_power_import_t4_kwh": 2948.827,
    "active_power_w": -123,
    "active_power_l1_w": -123,
    "active_power_l2_w": 456,
    "active_power_l3_w": 123.456,
}

# HWE tests/v1/fixtures/HWE-P1/data.json (the API documentation's 3-phase example).
HWE_DATA_V1 = {
    "wifi_ssid": "My Wi-Fi",
    "wifi_strength": 100,
    "smr_version": 50,
    "meter_model": "ISKRA  2M550T-101",
    "unique_id": "4E47475955",
    "active_tariff": 2,
    "total_power_import_kwh": 13779.338,
    "total_power_import_t1_kwh": 10830.511,
    "total_power_import_t2_kwh": 2948.827,
    "total_power_export_kwh": 0,
    "total_power_export_t1_kwh": 0,
    "total_power_export_t2_kwh": 0,
    "active_power_w": -543,
    "active_power_l1_w": -676,
    "active_power_l2_w": 133,
    "active_power_l3_w": 0,
    "active_current_l1_a": -4,
    "active_current_l2_a": 2,
    "active_current_l3_a": 0,
    "active_frequency_hz": 50,
    "voltage_sag_l1_count": 1,
    "voltage_sag_l2_count": 1,
    "voltage_sag_l3_count": 0,
    "voltage_swell_l1_count": 0,
    "voltage_swell_l2_count": 0,
    "voltage_swell_l3_count": 0,
    "any_power_fail_count": 4,
    "long_power_fail_count": 5,
    "total_gas_m3": 2569.646,
    "gas_timestamp": 210606140010,
    "gas_unique_id": "4E474C5944",
    "active_power_average_w": 123.000,
    "montly_power_peak_w": 1111.000,
    "montly_power_peak_timestamp": 230101080010,
    "external": [
        {
            "unique_id": "4E474C5944",
            "type": "gas_meter",
            "timestamp": 210606140010,
            "value": 111.111,
            "unit": "m3",
        },
        {
            "unique_id": "4E475347",
            "type": "water_meter",
            "timestamp": 210606140010,
            "value": 444.444,
            "unit": "m3",
        },
    ],
}

# HA v2/HWE-P1/measurement.json.
HA_MEASUREMENT_V2 = {
    "protocol_version": 50,
    "meter_model": "ISKRA  2M550T-101",
    "unique_id": "4E6576657220476F6E6E61204C657420596F7520446F776E",
    "timestamp": "2024-06-28T14:12:34",
    "tariff": 2,
    "energy_import_kwh": 13779.338,
    "energy_import_t1_kwh": 10830.511,
    "energy_import_t2_kwh": 2948.827,
    "energy_export_kwh": 1234.567,
    "energy_export_t1_kwh": 234.567,
    "energy_export_t2_kwh": 1000,
    "power_w": -543,
    "power_l1_w": -676,
    "power_l2_w": 133,
    "power_l3_w": 0,
    "current_a": 6,
    "current_l1_a": -4,
    "current_l2_a": 2,
    "current_l3_a": 0,
    "average_power_15m_w": 123.0,
    "monthly_power_peak_w": 1111.0,
    "monthly_power_peak_timestamp": "2024-06-04T10:11:22",
    "external": [
        {
            "unique_id": "4E6576657220676F6E6E612072756E2061726F756E64",
            "type": "gas_meter",
            "timestamp": "2024-06-28T14:00:00",
            "value": 2569.646,
            "unit": "m3",
        },
        {
            "unique_id": "616E642064657365727420796F75",
            "type": "water_meter",
            "timestamp": "2024-06-28T14:05:00",
            "value": 123.456,
            "unit": "m3",
        },
    ],
}


def _server_accepts(sample: dict) -> bool:
    from telemetry.validation import validate_samples

    accepted, errors = validate_samples([sample], now=EDGE_NOW)
    assert errors == []
    return bool(accepted)


def _problems(result) -> dict[str, Problem]:
    return {name: drop.problem for name, drop in result.dropped.items()}


def _v1_without_gas_meter(stamp) -> dict:
    """HWE data.json as a meter without a gas meter answers: register 0, placeholder time."""
    payload = copy.deepcopy(HWE_DATA_V1)
    payload |= {"total_gas_m3": 0.0, "gas_timestamp": stamp}
    payload["external"][0] |= {"value": 0.0, "timestamp": stamp}
    return payload


def test_a_meter_without_export_registers_gives_a_sample_without_export():
    result = normalise_reading(HA_NO_EXPORTS_V1, api="v1", now=EDGE_NOW)
    assert result.sample["energy_import_kwh"] == 13779.338
    assert result.sample["energy_export_kwh"] is None
    assert result.sample["power_w"] == -123.0
    assert result.dropped == {}  # absent is not unusable: nothing to report
    assert _server_accepts(result.sample)
    # The same meter over API v2: the device leaves out what the meter does not send.
    v2 = {k: v for k, v in HA_MEASUREMENT_V2.items() if not k.startswith("energy_export")}
    result = normalise_reading(v2, api="v2", now=EDGE_NOW)
    assert (result.sample["energy_export_kwh"], result.dropped) == (None, {})
    assert _server_accepts(result.sample)


@pytest.mark.parametrize(
    "stamp",
    [632525252525, "632525252525", 700101010000, "700101010000", 101000000, "000101000000", 0,
     "0"],
)  # fmt: skip
def test_a_placeholder_gas_time_drops_the_gas_reading_and_keeps_the_electricity(stamp):
    result = normalise_reading(_v1_without_gas_meter(stamp), api="v1", now=EDGE_NOW)
    sample = result.sample
    assert (sample["gas_ts"], sample["gas_m3"]) == (None, None)
    assert _problems(result) == {"gas_ts": Problem.PLACEHOLDER, "gas_m3": Problem.PLACEHOLDER}
    assert sample["power_w"] == -543.0
    assert sample["energy_import_kwh"] == 13779.338
    assert sample["monthly_power_peak_ts"] == "2023-01-01T07:00:10+00:00"
    assert _server_accepts(sample)


@pytest.mark.parametrize(
    "stamp",
    # The last: 632525252525 (dsmr_parser#120) written out the way v2 writes a time.
    ["2070-01-01T01:00:00", "2000-01-01T00:00:00", "2063-25-25T25:25:25"],
)
def test_a_placeholder_gas_time_in_the_v2_external_list_is_dropped(stamp):
    payload = copy.deepcopy(HA_MEASUREMENT_V2)
    payload["external"][0] |= {"timestamp": stamp, "value": 0}
    result = normalise_reading(payload, api="v2", now=EDGE_NOW)
    assert _problems(result) == {"gas_ts": Problem.PLACEHOLDER, "gas_m3": Problem.PLACEHOLDER}
    assert result.sample["power_w"] == -543.0
    assert result.sample["ts"] == "2024-06-28T12:12:34+00:00"


def test_a_real_gas_register_with_a_placeholder_time_keeps_the_register():
    payload = _v1_without_gas_meter(632525252525) | {"total_gas_m3": 2569.646}
    result = normalise_reading(payload, api="v1", now=EDGE_NOW)
    assert (result.sample["gas_m3"], result.sample["gas_ts"]) == (2569.646, None)
    assert _problems(result) == {"gas_ts": Problem.PLACEHOLDER}


def test_a_garbled_gas_time_far_ahead_is_dropped_as_in_the_future():
    # dsmr-reader#269: 0-1:24.2.1(681027002758S)(01023.855*m3), i.e. 2068-10-27.
    payload = copy.deepcopy(HWE_DATA_V1) | {"gas_timestamp": 681027002758, "total_gas_m3": 1023.855}
    result = normalise_reading(payload, api="v1", now=EDGE_NOW)
    assert _problems(result) == {"gas_ts": Problem.IN_FUTURE}
    assert result.sample["gas_m3"] == 1023.855


def test_zero_values_and_absent_phases_are_readings_not_drops():
    # HA HWE-P1-zero-values/data.json (abridged to the fields the wire carries).
    zero = {
        "unique_id": "00112233445566778899AABBCCDDEEFF",
        "active_tariff": 2,
        "total_power_import_kwh": 0.0,
        "total_power_export_kwh": 0.0,
        "active_power_w": 0.0,
        "active_voltage_l1_v": 0.0,
        "active_current_l1_a": 0,
        "total_gas_m3": 0.0,
        "gas_timestamp": 210314112233,
        "active_power_average_w": 0,
        "montly_power_peak_w": 0.0,
        "montly_power_peak_timestamp": 230101080010,
    }
    result = normalise_reading(zero, api="v1", now=EDGE_NOW)
    assert result.dropped == {}
    assert (result.sample["gas_m3"], result.sample["energy_import_kwh"]) == (0.0, 0.0)
    # HWE data_single_phase.json: l2 and l3 are null.
    single = {
        "total_power_import_t1_kwh": 10830.511,
        "total_power_import_t2_kwh": 2948.827,
        "total_power_export_t1_kwh": 1285.951,
        "total_power_export_t2_kwh": 2876.51,
        "active_power_w": -543,
        "active_power_l1_w": -676,
        "active_power_l2_w": None,
        "active_power_l3_w": None,
        "total_gas_m3": 2569.646,
        "gas_timestamp": 210606140010,
    }
    result = normalise_reading(single, api="v1", now=EDGE_NOW)
    assert result.dropped == {}
    assert (result.sample["power_l2_w"], result.sample["energy_export_kwh"]) == (None, 4162.461)


def test_the_poller_spools_every_reading_counts_drops_and_logs_once_an_hour(
    tmp_path, clock, caplog, cert_root
):
    payload = _v1_without_gas_meter(632525252525) | {"total_power_export_kwh": -1}
    # Six telegrams: the power moves, so no poll repeats the one before it.
    payloads = [payload | {"active_power_w": 400 + i} for i in range(6)]
    caplog.set_level(logging.INFO, logger="edgeclient.poller")
    with (
        recorded_meter(payloads, api="v1", cert_dir=cert_root) as meter,
        Spool(tmp_path / "spool.sqlite3", clock=clock) as spool,
    ):
        poller = Poller(meter, spool, now=lambda: clock.moment)
        states = []
        for _ in range(5):
            states.append(poller.step().state)
            clock.advance(2)
        clock.advance(3600)
        states.append(poller.step().state)
        status = spool.status()
        assert spool.depth() == 6
        assert spool.status().quarantined == 0
    assert states == [SPOOLED] * 6
    counts = {(d.field, d.problem): d.count for d in status.dropped_values}
    assert counts == {
        ("gas_ts", "placeholder"): 6,
        ("gas_m3", "placeholder"): 6,
        ("energy_export_kwh", "negative_register"): 6,
    }
    noted = [r.getMessage() for r in caplog.records if "dropped, reading kept" in r.getMessage()]
    # Each field once for the first five polls (10 s), and again an hour later.
    assert sorted(line.split()[2] for line in noted) == sorted(
        ["gas_ts", "gas_m3", "energy_export_kwh"] * 2
    )


def test_a_gas_time_of_thousands_of_digits_is_dropped_not_raised():
    # int() refuses digit strings past 4,300 digits (CPython's conversion limit): the
    # reading must still be kept, with the odd time dropped and counted.
    payload = _v1_without_gas_meter("1" * 5000) | {"total_gas_m3": 2569.646}
    result = normalise_reading(payload, api="v1", now=EDGE_NOW)
    assert result.sample["gas_ts"] is None and result.sample["power_w"] == -543.0
    assert _problems(result)["gas_ts"] is Problem.NOT_A_TIMESTAMP
