from __future__ import annotations

import math
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import p1wire as wire
from edgeclient.normalise import (
    Problem,
    SampleRejected,
    meter_time_to_utc,
    normalise,
    normalise_reading,
)
from tests.edge.conftest import load_fixture

EDGE_NOW = datetime(2024, 6, 28, 12, 12, 40, tzinfo=UTC)


def _server_accepts(sample: dict) -> bool:
    """The contract: the server's own validation takes what the normaliser gives."""
    from telemetry.validation import validate_samples

    accepted, errors = validate_samples([sample], now=EDGE_NOW)
    assert errors == []
    return bool(accepted)


def test_every_sample_has_exactly_the_wire_fields_in_wire_order():
    sample = normalise(load_fixture("v2-measurement-1phase-nl.json"), api="v2", now=EDGE_NOW)
    assert list(sample) == list(wire.SAMPLE_FIELDS)


def test_v1_belgian_three_phase_maps_every_field_including_the_montly_typo():
    payload = load_fixture("v1-data-3phase-belgian-gas.json")
    sample = normalise(payload, api="v1", now=EDGE_NOW)
    assert sample == {
        "ts": "2024-06-28T12:12:40+00:00",  # v1 firmware sends no telegram time
        "power_w": 2543.0,
        "energy_import_kwh": 13779.338,
        "energy_export_kwh": 4162.461,
        "energy_import_t1_kwh": 10830.511,
        "energy_import_t2_kwh": 2948.827,
        "energy_export_t1_kwh": 1285.951,
        "energy_export_t2_kwh": 2876.51,
        "power_l1_w": 676.0,
        "power_l2_w": 1733.0,
        "power_l3_w": 134.0,
        "voltage_l1_v": 231.2,
        "voltage_l2_v": 229.8,
        "voltage_l3_v": 232.0,
        "current_l1_a": 2.92,
        "current_l2_a": 7.54,
        "current_l3_a": 0.58,
        "tariff": 2,
        "average_power_15m_w": 1873.0,
        "monthly_power_peak_w": 4311.0,
        # 240104181500 is 18:15 Belgian winter time (UTC+1).
        "monthly_power_peak_ts": "2024-01-04T17:15:00+00:00",
        "gas_m3": 2569.646,
        "gas_ts": "2024-01-15T18:35:00+00:00",
    }
    assert _server_accepts(sample)


def test_v2_belgian_three_phase_takes_gas_from_the_external_list():
    payload = load_fixture("v2-measurement-3phase-belgian-gas.json")
    sample = normalise(payload, api="v2", now=EDGE_NOW)
    assert sample["ts"] == "2024-06-28T12:12:34+00:00"  # 14:12:34 summer time
    assert sample["power_w"] == -2543.0
    assert sample["tariff"] == 1
    assert sample["average_power_15m_w"] == 123.0
    assert sample["monthly_power_peak_w"] == 3911.0
    assert sample["monthly_power_peak_ts"] == "2024-06-04T08:15:00+00:00"
    assert (sample["gas_m3"], sample["gas_ts"]) == (2569.646, "2024-06-28T12:10:00+00:00")
    assert (sample["current_l1_a"], sample["voltage_l3_v"]) == (-3.71, 236.9)
    assert _server_accepts(sample)


@pytest.mark.parametrize(
    ("fixture", "api"),
    [("v1-data-1phase-nl.json", "v1"), ("v2-measurement-1phase-nl.json", "v2")],
)
def test_missing_totals_are_the_sum_of_the_tariff_registers(fixture, api):
    sample = normalise(load_fixture(fixture), api=api, now=EDGE_NOW)
    assert sample["energy_import_kwh"] == 13779.338
    assert sample["energy_export_kwh"] == 4162.461
    assert sample["power_w"] == -678.0
    assert sample["power_l2_w"] is None and sample["gas_m3"] is None
    assert _server_accepts(sample)


@pytest.mark.parametrize(
    ("fixture", "api"),
    [("v1-data-missing-fields.json", "v1"), ("v2-measurement-missing-fields.json", "v2")],
)
def test_missing_optional_fields_become_none_and_a_bad_tariff_becomes_none(fixture, api):
    result = normalise_reading(load_fixture(fixture), api=api, now=EDGE_NOW)
    sample = result.sample
    assert {n: d.problem for n, d in result.dropped.items()} == {"tariff": Problem.OUT_OF_RANGE}
    assert sample["ts"] == "2024-06-28T12:12:40+00:00"  # no meter time: the edge clock
    assert sample["tariff"] is None
    assert sample["energy_import_kwh"] == 8331.774
    assert sample["energy_export_kwh"] == 0.0
    assert all(sample[f] is None for f in wire.OPTIONAL_FIELDS if not f.startswith("energy_"))
    assert _server_accepts(sample)


def test_a_payload_without_power_is_rejected_naming_the_field():
    with pytest.raises(SampleRejected) as excinfo:
        normalise(load_fixture("v1-data-no-power.json"), api="v1", now=EDGE_NOW)
    assert excinfo.value.field == "power_w"


def _v2(**changes):
    payload = load_fixture("v2-measurement-3phase-belgian-gas.json")
    payload.update(changes)
    return {k: v for k, v in payload.items() if v is not ...}


@pytest.mark.parametrize(
    ("payload", "field", "problem", "reason"),
    [
        (_v2(power_w=math.nan), "power_w", Problem.NOT_FINITE, "finite"),
        (_v2(power_w=math.inf), "power_w", Problem.NOT_FINITE, "finite"),
        (_v2(power_w=1.5e15), "power_w", Problem.OUT_OF_RANGE, "out of range"),
        (_v2(energy_import_kwh=10**400), "energy_import_kwh", Problem.OUT_OF_RANGE, "out of range"),
        (_v2(energy_import_kwh=..., energy_import_t1_kwh=9e14, energy_import_t2_kwh=9e14),
         "energy_import_kwh", Problem.OUT_OF_RANGE, "out of range"),
        (_v2(power_w="523"), "power_w", Problem.NOT_A_NUMBER, "number"),
        (_v2(power_w=True), "power_w", Problem.NOT_A_NUMBER, "number"),
        (_v2(energy_import_kwh=-1.5), "energy_import_kwh", Problem.NEGATIVE_REGISTER, "negative"),
        # Without a total, the import register is the sum of its tariffs: one bad tariff
        # leaves no import register, and the field at fault is named.
        (_v2(energy_import_kwh=..., energy_import_t1_kwh=-3), "energy_import_t1_kwh",
         Problem.NEGATIVE_REGISTER, "negative"),
        (_v2(power_w=...), "power_w", Problem.MISSING, "missing"),
        (_v2(energy_import_kwh=..., energy_import_t1_kwh=..., energy_import_t2_kwh=...),
         "energy_import_kwh", Problem.MISSING, "missing"),
    ],
)  # fmt: skip
def test_a_bad_required_value_rejects_the_sample_naming_field_and_problem(
    payload, field, problem, reason
):
    with pytest.raises(SampleRejected) as excinfo:
        normalise(payload, api="v2", now=EDGE_NOW)
    assert excinfo.value.field == field
    assert excinfo.value.problem is problem
    assert reason in excinfo.value.reason


@pytest.mark.parametrize(
    ("payload", "field", "problem"),
    [
        (_v2(voltage_l1_v=-math.inf), "voltage_l1_v", Problem.NOT_FINITE),
        (_v2(current_l2_a="3.11"), "current_l2_a", Problem.NOT_A_NUMBER),
        (_v2(power_l3_w=2e15), "power_l3_w", Problem.OUT_OF_RANGE),
        (_v2(energy_export_t2_kwh=-0.001), "energy_export_t2_kwh", Problem.NEGATIVE_REGISTER),
        (_v2(energy_export_kwh=math.nan), "energy_export_kwh", Problem.NOT_FINITE),
        (_v2(tariff=7), "tariff", Problem.OUT_OF_RANGE),
        (_v2(tariff="1"), "tariff", Problem.NOT_A_NUMBER),
        (_v2(monthly_power_peak_timestamp="2024-13-01T00:00:00"), "monthly_power_peak_ts",
         Problem.NOT_A_TIMESTAMP),
        (_v2(monthly_power_peak_timestamp="1999-06-01T10:00:00"), "monthly_power_peak_ts",
         Problem.BEFORE_2000),
        (_v2(monthly_power_peak_w=True), "monthly_power_peak_w", Problem.NOT_A_NUMBER),
    ],
)  # fmt: skip
def test_a_bad_optional_value_is_dropped_and_the_reading_kept(payload, field, problem):
    result = normalise_reading(payload, api="v2", now=EDGE_NOW)
    assert result.sample[field] is None
    assert {name: drop.problem for name, drop in result.dropped.items()} == {field: problem}
    # Everything else is the reading as the meter sent it.
    assert result.sample["power_w"] == -2543.0
    assert result.sample["energy_import_kwh"] == 13779.338
    assert result.sample["ts"] == "2024-06-28T12:12:34+00:00"
    assert _server_accepts(result.sample)


def test_an_export_total_summed_from_a_bad_tariff_is_dropped_not_made_up():
    payload = _v2(energy_export_kwh=..., energy_export_t1_kwh=-1)
    result = normalise_reading(payload, api="v2", now=EDGE_NOW)
    # t2 alone would be a register 1285.951 kWh lower: a step, not a reading.
    assert result.sample["energy_export_kwh"] is None
    assert result.sample["energy_export_t2_kwh"] == 2876.51
    assert {n: d.problem for n, d in result.dropped.items()} == {
        "energy_export_t1_kwh": Problem.NEGATIVE_REGISTER,
        "energy_export_kwh": Problem.NEGATIVE_REGISTER,
    }


@pytest.mark.parametrize(
    ("stamp", "problem"),
    [
        ("yesterday", Problem.NOT_A_TIMESTAMP),
        ("1999-12-31T23:00:00", Problem.BEFORE_2000),
        # An unset DSMR clock's factory value (dsmrreader/dsmr-reader#811: 000101010000W).
        ("2000-01-01T01:00:00", Problem.PLACEHOLDER),
        (True, Problem.NOT_A_TIMESTAMP),
    ],
)
def test_an_unusable_meter_timestamp_falls_back_to_the_edge_clock(stamp, problem):
    result = normalise_reading(_v2(timestamp=stamp), api="v2", now=EDGE_NOW)
    assert result.sample["ts"] == EDGE_NOW.isoformat()
    assert result.meter_time is None
    assert result.meter_time_problem is not None
    assert result.meter_time_problem.problem is problem
    assert result.dropped == {}  # the ts is the sample clock's business, not a drop
    assert result.sample["power_w"] == -2543.0


def test_a_usable_meter_timestamp_is_reported_as_the_meter_time():
    result = normalise_reading(_v2(), api="v2", now=EDGE_NOW)
    assert result.meter_time == datetime(2024, 6, 28, 12, 12, 34, tzinfo=UTC)
    assert result.meter_time_problem is None
    v1 = normalise_reading(load_fixture("v1-data-3phase-belgian-gas.json"), api="v1", now=EDGE_NOW)
    assert (v1.meter_time, v1.meter_time_problem) == (None, None)  # v1 sends no time


def test_v1_garbage_timestamp_is_dropped():
    payload = load_fixture("v1-data-3phase-belgian-gas.json")
    payload["montly_power_peak_timestamp"] = 241399999999
    result = normalise_reading(payload, api="v1", now=EDGE_NOW)
    assert result.sample["monthly_power_peak_ts"] is None
    assert result.dropped["monthly_power_peak_ts"].problem is Problem.NOT_A_TIMESTAMP
    assert result.dropped["monthly_power_peak_ts"].value == "241399999999"
    assert result.sample["monthly_power_peak_w"] == 4311.0


def test_an_import_register_that_goes_backwards_is_rejected():
    payload = load_fixture("v2-measurement-3phase-belgian-gas.json")
    with pytest.raises(SampleRejected, match="went backwards") as excinfo:
        normalise(payload, api="v2", now=EDGE_NOW, previous_import_kwh=13779.339)
    assert excinfo.value.field == "energy_import_kwh"
    assert excinfo.value.problem is Problem.WENT_BACKWARDS


def test_an_unchanged_or_growing_import_register_is_accepted():
    payload = load_fixture("v1-data-1phase-nl.json")  # total is a float sum of t1 + t2
    for previous in (13779.338, 10830.511 + 2948.827, 13000.0):
        assert normalise(payload, api="v1", now=EDGE_NOW, previous_import_kwh=previous)


def test_a_naive_edge_clock_is_a_programming_error():
    with pytest.raises(ValueError, match="timezone-aware"):
        normalise({}, api="v2", now=datetime(2024, 6, 28, 12, 0))


# Belgium leaves summer time on 2024-10-27: 02:00-03:00 local happens twice,
# first at UTC+2 (00:00-01:00Z), then at UTC+1 (01:00-02:00Z).
@pytest.mark.parametrize(
    ("edge_now", "expected"),
    [
        (datetime(2024, 10, 27, 0, 30, 2, tzinfo=UTC), "2024-10-27T00:30:00+00:00"),
        (datetime(2024, 10, 27, 1, 30, 2, tzinfo=UTC), "2024-10-27T01:30:00+00:00"),
        # An edge clock a few minutes off still picks the right pass.
        (datetime(2024, 10, 27, 0, 41, 0, tzinfo=UTC), "2024-10-27T00:30:00+00:00"),
        (datetime(2024, 10, 27, 1, 22, 0, tzinfo=UTC), "2024-10-27T01:30:00+00:00"),
    ],
)
def test_the_repeated_dst_hour_is_resolved_with_the_edge_clock(edge_now, expected):
    v2 = _v2(timestamp="2024-10-27T02:30:00")
    assert normalise(v2, api="v2", now=edge_now)["ts"] == expected
    v1 = load_fixture("v1-data-3phase-belgian-gas.json") | {"timestamp": 241027023000}
    assert normalise(v1, api="v1", now=edge_now)["ts"] == expected


def test_times_outside_the_fold_ignore_the_edge_clock():
    far = datetime(2030, 1, 1, tzinfo=UTC)
    assert meter_time_to_utc(datetime(2024, 10, 27, 3, 30), far) == datetime(
        2024, 10, 27, 2, 30, tzinfo=UTC
    )
    # Spring forward (2024-03-31 02:00 -> 03:00): times on both sides stay in order.
    before = meter_time_to_utc(datetime(2024, 3, 31, 1, 59, 59), far)
    after = meter_time_to_utc(datetime(2024, 3, 31, 3, 0, 0), far)
    assert (before.isoformat(), after.isoformat()) == (
        "2024-03-31T00:59:59+00:00",
        "2024-03-31T01:00:00+00:00",
    )


def test_a_timestamp_with_an_offset_is_taken_as_is():
    sample = normalise(_v2(timestamp="2024-06-28T14:12:34+02:00"), api="v2", now=EDGE_NOW)
    assert sample["ts"] == "2024-06-28T12:12:34+00:00"


_value = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**6), max_value=10**6),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=5),
)


@settings(max_examples=300, deadline=None)
@given(
    st.fixed_dictionaries(
        {},
        optional={
            name: _value
            for name in (
                "power_w",
                "energy_import_kwh",
                "energy_export_kwh",
                "energy_import_t1_kwh",
                "energy_export_t2_kwh",
                "voltage_l1_v",
                "tariff",
                "average_power_15m_w",
            )
        },
    )
)
def test_any_payload_gives_a_sample_the_server_accepts_or_a_rejection(payload):
    try:
        result = normalise_reading(payload, api="v2", now=EDGE_NOW)
    except SampleRejected as exc:
        assert exc.field in ("power_w", "energy_import_kwh", "energy_import_t1_kwh")
        return
    assert _server_accepts(result.sample)
    assert all(result.sample[name] is None for name in result.dropped)
