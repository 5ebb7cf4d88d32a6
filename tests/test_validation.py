"""The lean batch validation, as a pure function with an injected clock."""

from __future__ import annotations

from datetime import timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import p1wire as wire
from telemetry.validation import _rows_checked_one_by_one, validate_samples
from tests.samples import BASE_TS, sample

NOW = BASE_TS + timedelta(hours=1)


def errors_of(samples) -> list[tuple]:
    columns, errors = validate_samples(samples, now=NOW)
    assert not (columns and errors)
    return [(e["index"], e["field"]) for e in errors]


def test_valid_batch_becomes_columns_in_wire_order():
    columns, errors = validate_samples([sample(BASE_TS), sample(NOW)], now=NOW)
    assert errors == []
    assert columns[0] == [BASE_TS, NOW]
    assert columns[1] == [1250.5, 1250.5]


def test_only_required_fields_is_enough():
    minimal = {
        "ts": BASE_TS.isoformat(),
        "power_w": 0,
        "energy_import_kwh": 1,
    }
    columns, errors = validate_samples([minimal], now=NOW)
    assert errors == []
    assert columns[1] == [0.0]
    assert type(columns[1][0]) is float  # ints become floats for the float8 column
    assert columns[4] is None  # no sample has energy_import_t1_kwh


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("power_w", float("nan")),
        ("power_w", float("inf")),
        ("power_w", float("-inf")),
        ("power_w", True),
        ("power_w", "100"),
        ("power_w", 10**20),
        ("power_w", -1e20),
        ("energy_import_kwh", 1.7e308),
        ("energy_import_kwh", -0.001),
        ("gas_m3", -1),
        ("tariff", 5),
        ("tariff", 0),
        ("tariff", 1.0),
        ("voltage_l1_v", [230]),
        ("ts", "2026-03-01T00:00:00"),
        ("ts", "1999-12-31T23:59:59+00:00"),
        ("ts", "yesterday"),
        ("ts", 1700000000),
        ("monthly_power_peak_ts", "2026-02-14 18:15"),
        ("energy_export_kwh", -1),
    ],
)
def test_bad_value_is_named_by_index_and_field(field, value):
    good = sample(BASE_TS)
    bad = {**sample(BASE_TS + timedelta(seconds=1)), field: value}
    assert errors_of([good, bad]) == [(1, field)]


@pytest.mark.parametrize("how", ["absent", "null"])
def test_export_register_is_optional(how):
    # Real P1 dongles on meters without export registers send neither register.
    samples = [sample(BASE_TS), sample(BASE_TS + timedelta(seconds=1))]
    if how == "absent":
        del samples[1]["energy_export_kwh"]
    else:
        samples[1]["energy_export_kwh"] = None
    columns, errors = validate_samples(samples, now=NOW)
    assert errors == []
    assert columns[list(wire.SAMPLE_FIELDS).index("energy_export_kwh")] == [2000.0, None]


def test_required_fields_are_time_power_and_import():
    assert wire.REQUIRED_FIELDS == ("ts", "power_w", "energy_import_kwh")


@pytest.mark.parametrize("field", ["ts", "power_w", "energy_import_kwh"])
def test_required_field_sent_as_null_is_named(field):
    assert errors_of([{**sample(BASE_TS), field: None}]) == [(0, field)]


def test_missing_required_field_is_named():
    incomplete = sample(BASE_TS)
    del incomplete["energy_import_kwh"]
    assert errors_of([incomplete]) == [(0, "energy_import_kwh")]


def test_unknown_field_is_named():
    assert errors_of([sample(BASE_TS, montly_power_peak_w=1.0)]) == [(0, "montly_power_peak_w")]


def test_timestamp_more_than_five_minutes_ahead_is_rejected():
    ahead = NOW + timedelta(minutes=5, seconds=1)
    just_in_time = NOW + timedelta(minutes=5)
    assert errors_of([sample(ahead)]) == [(0, "ts")]
    assert errors_of([sample(just_in_time)]) == []


def test_non_object_sample_is_named():
    assert errors_of([sample(BASE_TS), 42]) == [(1, None)]


def test_repeated_ts_with_same_values_is_accepted_once_per_row():
    twin = sample(BASE_TS)
    same_instant = dict(twin, ts="2026-03-01T01:00:00+01:00")
    columns, errors = validate_samples([twin, same_instant], now=NOW)
    assert errors == []
    assert len(columns[0]) == 2  # the database keeps one; the answer counts one duplicate


def test_repeated_ts_with_other_values_is_rejected():
    assert errors_of([sample(BASE_TS), sample(BASE_TS, power_w=1.0)]) == [(1, "ts")]


def test_error_list_is_bounded():
    bad = [sample(BASE_TS + timedelta(seconds=i), power_w="x") for i in range(500)]
    assert len(errors_of(bad)) == 100


def test_field_present_in_some_samples_only_is_null_elsewhere():
    partial = sample(BASE_TS)
    del partial["gas_m3"]
    columns, errors = validate_samples([partial, sample(NOW)], now=NOW)
    assert errors == []
    gas = list(wire.SAMPLE_FIELDS).index("gas_m3")
    assert columns[gas] == [None, 3210.123]


@pytest.mark.parametrize("position", [0, 499, 999])
def test_one_bad_value_in_a_large_batch_is_found_wherever_it_is(position):
    batch = [sample(BASE_TS + timedelta(seconds=i)) for i in range(1000)]
    batch[position]["voltage_l2_v"] = float("nan")
    assert errors_of(batch) == [(position, "voltage_l2_v")]


_ODD_VALUES = [
    None,
    0,
    -1,
    10**16,
    1.5,
    -0.0,
    float("nan"),
    float("inf"),
    True,
    "1.0",
    [],
    "2026-03-01T00:00:00",
    "2026-03-01T00:00:00+02:00",
    "1999-01-01T00:00:00Z",
    # A column's timestamps are matched joined by newlines: one holding a newline must
    # still be refused, whether it ends in one or holds two.
    "2026-03-01T00:00:00Z\n",
    "2026-03-01T00:00:00Z\n2026-03-01T00:00:01Z",
    3,
    7,
]


@settings(max_examples=300, deadline=None)
@given(
    size=st.integers(min_value=1, max_value=6),
    edits=st.lists(
        st.tuples(
            st.integers(min_value=0, max_value=5),
            st.sampled_from([*list(wire.SAMPLE_FIELDS), "bogus"]),
            st.sampled_from([*_ODD_VALUES, "<drop>", "<repeat-ts>", "<reorder>"]),
        ),
        max_size=3,
    ),
)
def test_fast_path_agrees_with_the_sample_by_sample_check(size, edits):
    batch = [sample(BASE_TS + timedelta(seconds=i)) for i in range(size)]
    for index, field, value in edits:
        target = batch[index % size]
        if value == "<drop>":
            target.pop(field, None)
        elif value == "<reorder>":
            # The same fields in another order: the columns must not move.
            reordered = dict(reversed(target.items()))
            target.clear()
            target.update(reordered)
        elif value == "<repeat-ts>":
            # batch[0] may have lost its ts to an earlier "<drop>" edit.
            target["ts"] = batch[0].get("ts", sample(BASE_TS)["ts"])
        else:
            target[field] = value
    columns, errors = validate_samples(batch, now=NOW)
    rows, slow_errors = _rows_checked_one_by_one(batch, now=NOW)
    assert [(e["index"], e["field"]) for e in errors] == [
        (e["index"], e["field"]) for e in slow_errors
    ]
    if not errors:
        width = len(wire.SAMPLE_FIELDS)
        as_rows = [
            [None if columns[f] is None else columns[f][i] for f in range(width)]
            for i in range(len(columns[0]))
        ]
        assert as_rows == rows
