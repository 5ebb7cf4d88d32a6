"""From a HomeWizard P1 payload (API v1 or v2) to one canonical wire sample.

Pure: no Django, no I/O, no clock reads. The edge's clock comes in as ``now`` so the
repeated DST hour and the "no meter timestamp" case are decided by the caller's time,
and tests can pin it.

Rules that are not obvious from the field table:
- A reading is never lost for one optional value. An optional value that is unusable
  (not a number, not finite, out of range, a negative register, an unparseable time, a
  DSMR "no time" placeholder) is left out of the sample (None) and reported in
  ``Normalised.dropped`` with its ``Problem``; the rest of the reading is kept.
- Only the required values reject a reading (SampleRejected, with a typed ``problem``):
  ``power_w`` and the import register (the total, or the sum of the tariff registers
  when the device leaves the total out, as the 1-phase payloads do). Export registers
  are optional: a meter without them gives ``energy_export_kwh`` None.
- ``ts`` here is the meter's own telegram time when it is usable, else ``now``; which
  time a sample finally carries is the poller's decision (edgeclient.sampletime), from
  ``Normalised.meter_time`` and the history of readings.
- Meter timestamps are Belgian local time without a zone; in the repeated autumn hour
  the candidate closest to the edge's ``now`` wins.
- A gas register of 0 that comes with a placeholder gas time is no reading either: DSMR
  meters without a gas meter send ``0-1:24.2.1(632525252525S)(00000.000)``.

Placeholders seen in the field (v1 sends YYMMDDhhmmss as a number, v2 as ISO 8601):
- 632525252525: Sagemcom T211 without a gas meter (ndokter/dsmr_parser#120 and #125;
  openHAB's DSMR binding names it INVALID_METER_VALUE in CosemDate).
- 700101010000 (2070-01-01 01:00): Iskra AM550 without a gas meter
  (dsmrreader/dsmr-reader#361, #470).
- 000101000000, 000101010000, 000101000001 (2000-01-01): meters whose clock was never
  set and empty power-failure logs (dsmrreader/dsmr-reader#811, #1922; nrocco/smeterd#11).
- 0: a dongle that has no time for a value.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, Literal
from zoneinfo import ZoneInfo

import p1wire as wire

BRUSSELS = ZoneInfo("Europe/Brussels")
ApiVersion = Literal["v1", "v2"]

# Float sums of registers with three decimals pick up noise in the 1e-12 range; a
# register moving back by less than this is the same reading.
_REGISTER_EPSILON_KWH = 1e-6
_EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
# A gas or peak timestamp tells when the meter last saw that value: never later than
# now. A day of slack covers a meter clock that is off by hours (and the DST hour);
# later than that is a placeholder such as 2070-01-01.
OPTIONAL_TS_MAX_AHEAD = timedelta(days=1)
_PLACEHOLDER_DIGITS = frozenset(
    {"632525252525", "700101010000", "700101000000", "000101000000", "000101010000",
     "000101000001", "000000000000"}
)  # fmt: skip
# The same placeholders once parsed (v2 sends ISO 8601 strings), and the Unix epoch.
_PLACEHOLDER_TIMES = frozenset(
    {datetime(2070, 1, 1, 1), datetime(2070, 1, 1), datetime(2000, 1, 1),
     datetime(2000, 1, 1, 1), datetime(2000, 1, 1, 0, 0, 1), datetime(1970, 1, 1),
     datetime(1970, 1, 1, 1)}
)  # fmt: skip
_SHOWN_CHARS = 40

_V1_NAMES: Mapping[str, str] = {
    "power_w": "active_power_w",
    "energy_import_kwh": "total_power_import_kwh",
    "energy_export_kwh": "total_power_export_kwh",
    "energy_import_t1_kwh": "total_power_import_t1_kwh",
    "energy_import_t2_kwh": "total_power_import_t2_kwh",
    "energy_export_t1_kwh": "total_power_export_t1_kwh",
    "energy_export_t2_kwh": "total_power_export_t2_kwh",
    "power_l1_w": "active_power_l1_w",
    "power_l2_w": "active_power_l2_w",
    "power_l3_w": "active_power_l3_w",
    "voltage_l1_v": "active_voltage_l1_v",
    "voltage_l2_v": "active_voltage_l2_v",
    "voltage_l3_v": "active_voltage_l3_v",
    "current_l1_a": "active_current_l1_a",
    "current_l2_a": "active_current_l2_a",
    "current_l3_a": "active_current_l3_a",
    "tariff": "active_tariff",
    "average_power_15m_w": "active_power_average_w",
    "monthly_power_peak_w": "montly_power_peak_w",  # sic: the device's spelling
    "monthly_power_peak_ts": "montly_power_peak_timestamp",
    "gas_m3": "total_gas_m3",
    "gas_ts": "gas_timestamp",
    "ts": "timestamp",  # not sent by v1 firmware
}
_V2_NAMES: Mapping[str, str] = {
    **{name: name for name in wire.SAMPLE_FIELDS},
    "ts": "timestamp",
    "monthly_power_peak_ts": "monthly_power_peak_timestamp",
    "gas_m3": "",  # v2 reports gas only in the external list
    "gas_ts": "",
}
_TARIFF_REGISTERS = (1, 2, 3, 4)


class Problem(StrEnum):
    """Why a value was not usable; the spool counts drops and quarantine causes by it."""

    MISSING = "missing"
    NOT_AN_OBJECT = "not_an_object"
    NOT_A_NUMBER = "not_a_number"
    NOT_FINITE = "not_finite"
    OUT_OF_RANGE = "out_of_range"
    NEGATIVE_REGISTER = "negative_register"
    WENT_BACKWARDS = "went_backwards"
    NOT_A_TIMESTAMP = "not_a_timestamp"
    PLACEHOLDER = "placeholder"  # a DSMR "no value / no time" marker
    BEFORE_2000 = "before_2000"
    IN_FUTURE = "in_future"


class SampleRejected(ValueError):
    """The payload cannot become a sample; ``field`` names the wire field at fault and
    ``problem`` says why, for code (``reason`` is the sentence for people)."""

    def __init__(self, field: str, reason: str, problem: Problem) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason
        self.problem = problem


@dataclass(frozen=True)
class Dropped:
    """An optional value left out of a sample: why, and what the meter sent (shortened)."""

    problem: Problem
    value: str


@dataclass(frozen=True)
class Normalised:
    sample: dict[str, Any]  # every wire.SAMPLE_FIELDS key, in wire order
    dropped: Mapping[str, Dropped] = field(default_factory=dict)  # wire field -> why
    meter_time: datetime | None = None  # the meter's telegram time (UTC), when usable
    meter_time_problem: Dropped | None = None  # why a timestamp the meter sent was not


class _Unusable(Exception):
    def __init__(self, problem: Problem, detail: str, field: str | None = None) -> None:
        super().__init__(detail)
        self.problem = problem
        self.detail = detail
        self.field = field


def normalise(
    payload: Mapping[str, Any],
    *,
    api: ApiVersion,
    now: datetime,
    previous_import_kwh: float | None = None,
    tz: ZoneInfo = BRUSSELS,
) -> dict[str, Any]:
    """The sample alone (see ``normalise_reading``, which also says what was dropped)."""
    return normalise_reading(
        payload, api=api, now=now, previous_import_kwh=previous_import_kwh, tz=tz
    ).sample


def normalise_reading(
    payload: Mapping[str, Any],
    *,
    api: ApiVersion,
    now: datetime,
    previous_import_kwh: float | None = None,
    tz: ZoneInfo = BRUSSELS,
) -> Normalised:
    """The canonical sample, the optional values dropped from it, and the meter's time.

    ``previous_import_kwh`` is the total import register of the previous accepted sample;
    a lower register now is rejected (a meter register never runs backwards).
    Raises SampleRejected when a required value is missing or unusable.
    """
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("now must be timezone-aware")
    if not isinstance(payload, Mapping):
        raise SampleRejected("payload", "must be a JSON object", Problem.NOT_AN_OBJECT)
    if api not in ("v1", "v2"):
        raise ValueError(f"api must be v1 or v2, got {api!r}")
    names = _V1_NAMES if api == "v1" else _V2_NAMES
    sample: dict[str, Any] = dict.fromkeys(wire.SAMPLE_FIELDS)
    dropped: dict[str, Dropped] = {}

    for name, kind in wire.SAMPLE_FIELDS.items():
        source = names.get(name, "")
        raw = payload.get(source) if source and name != "ts" else None
        if raw is None:
            continue
        try:
            sample[name] = _value(kind, raw, now, tz)
        except _Unusable as bad:
            _drop_or_reject(name, bad, dropped, _shown(raw))

    for prefix in ("energy_import", "energy_export"):
        total = f"{prefix}_kwh"
        if sample[total] is None and total not in dropped:
            try:
                sample[total] = _sum_of_tariffs(payload, prefix, api, sample, dropped)
            except _Unusable as bad:
                _drop_or_reject(total, bad, dropped, bad.detail)

    v1_gas_sent = api == "v1" and (
        payload.get("total_gas_m3") is not None or payload.get("gas_timestamp") is not None
    )
    if not v1_gas_sent:
        _gas_from_external(payload, sample, dropped, now, tz)
    _drop_untimed_zero_gas(sample, dropped)

    meter_time, meter_time_problem = _meter_time(payload.get(names["ts"]), now, tz)
    sample["ts"] = _iso(meter_time or now)
    for name in wire.REQUIRED_FIELDS:
        if sample[name] is None:
            raise SampleRejected(name, "is missing from the device's answer", Problem.MISSING)
    if (
        previous_import_kwh is not None
        and sample["energy_import_kwh"] < previous_import_kwh - _REGISTER_EPSILON_KWH
    ):
        raise SampleRejected(
            "energy_import_kwh",
            f"went backwards from {previous_import_kwh} to {sample['energy_import_kwh']}",
            Problem.WENT_BACKWARDS,
        )
    return Normalised(sample, dropped, meter_time, meter_time_problem)


def meter_identity(payload: Any) -> str | None:
    """The smart meter's ``unique_id`` (v1 and v2), when the device sends one."""
    if not isinstance(payload, Mapping):
        return None
    unique_id = payload.get("unique_id")
    return unique_id if isinstance(unique_id, str) and unique_id else None


def meter_time_to_utc(local: datetime, now: datetime, tz: ZoneInfo = BRUSSELS) -> datetime:
    """A zone-less meter time as UTC; the repeated DST hour is resolved with ``now``.

    A time in the spring-forward gap cannot come from a correct meter; zoneinfo maps it
    with the pre-transition offset, which keeps it in order with its neighbours.
    """
    first = local.replace(tzinfo=tz, fold=0).astimezone(UTC)
    second = local.replace(tzinfo=tz, fold=1).astimezone(UTC)
    if first == second:
        return first
    return min((first, second), key=lambda candidate: abs(candidate - now))


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat()


def _shown(raw: Any) -> str:
    text = repr(raw)
    return text if len(text) <= _SHOWN_CHARS else text[: _SHOWN_CHARS - 3] + "..."


def _drop_or_reject(name: str, bad: _Unusable, dropped: dict[str, Dropped], shown: str) -> None:
    if name in wire.REQUIRED_FIELDS:
        raise SampleRejected(bad.field or name, bad.detail, bad.problem) from None
    dropped[name] = Dropped(bad.problem, shown)


def _value(kind: str, raw: Any, now: datetime, tz: ZoneInfo) -> Any:
    if kind == wire.TIMESTAMP:
        return _iso(_timestamp(raw, now, tz))
    if kind == wire.TARIFF:
        return _tariff(raw)
    return _number(raw, register=kind == wire.REGISTER)


def _meter_time(raw: Any, now: datetime, tz: ZoneInfo) -> tuple[datetime | None, Dropped | None]:
    if raw is None:
        return None, None
    try:
        return _timestamp(raw, now, tz), None
    except _Unusable as bad:
        return None, Dropped(bad.problem, _shown(raw))


def _number(raw: Any, *, register: bool) -> float:
    # bool is an int in Python but never a meter reading.
    if isinstance(raw, bool) or not isinstance(raw, int | float):
        raise _Unusable(Problem.NOT_A_NUMBER, f"must be a number, got {_shown(raw)}")
    try:
        value = float(raw)
    except OverflowError:  # an int beyond float range
        raise _Unusable(Problem.OUT_OF_RANGE, "is out of range") from None
    if not math.isfinite(value):
        raise _Unusable(Problem.NOT_FINITE, f"must be finite, got {raw!r}")
    if abs(value) > wire.MAX_MAGNITUDE:
        raise _Unusable(Problem.OUT_OF_RANGE, f"is out of range, got {raw!r}")
    if register and value < 0:
        raise _Unusable(
            Problem.NEGATIVE_REGISTER, f"is a register and must not be negative, got {raw!r}"
        )
    return value


def _tariff(raw: Any) -> int:
    if isinstance(raw, bool) or not isinstance(raw, int | float):
        raise _Unusable(Problem.NOT_A_NUMBER, f"must be a number, got {_shown(raw)}")
    if not math.isfinite(raw) or raw != int(raw) or int(raw) not in wire.TARIFF_RANGE:
        raise _Unusable(Problem.OUT_OF_RANGE, f"must be a tariff from 1 to 4, got {raw!r}")
    return int(raw)


def _timestamp(raw: Any, now: datetime, tz: ZoneInfo) -> datetime:
    parsed = _parse_meter_time(raw)
    if parsed.tzinfo is None:
        if parsed in _PLACEHOLDER_TIMES:
            raise _Unusable(Problem.PLACEHOLDER, f"is a no-time placeholder: {_shown(raw)}")
        moment = meter_time_to_utc(parsed, now, tz)
    else:
        moment = parsed.astimezone(UTC)
    if moment < _EARLIEST:
        raise _Unusable(Problem.BEFORE_2000, f"is before 2000: {_shown(raw)}")
    if moment > now + OPTIONAL_TS_MAX_AHEAD:
        raise _Unusable(Problem.IN_FUTURE, f"is more than a day ahead: {_shown(raw)}")
    return moment


def _parse_meter_time(raw: Any) -> datetime:
    """v2: ISO 8601 without zone; v1: YYMMDDhhmmss as a number (or digit string)."""
    if isinstance(raw, bool):
        raise _Unusable(Problem.NOT_A_TIMESTAMP, f"is not a timestamp: {raw!r}")
    if isinstance(raw, int) or (isinstance(raw, str) and raw.isascii() and raw.isdigit()):
        digits = str(raw).zfill(12)
        if not digits.strip("0") or digits in _PLACEHOLDER_DIGITS:  # no int(): any length
            raise _Unusable(Problem.PLACEHOLDER, f"is a no-time placeholder: {_shown(raw)}")
        if len(digits) != 12:
            raise _Unusable(Problem.NOT_A_TIMESTAMP, f"expected YYMMDDhhmmss, got {_shown(raw)}")
        try:
            return datetime.strptime(digits, "%y%m%d%H%M%S")
        except ValueError:
            raise _Unusable(
                Problem.NOT_A_TIMESTAMP, f"expected YYMMDDhhmmss, got {_shown(raw)}"
            ) from None
    if isinstance(raw, str):
        try:
            return datetime.fromisoformat(raw)
        except ValueError:
            # A DSMR placeholder written out as ISO 8601 ("2063-25-25T25:25:25" for
            # 632525252525) is no calendar time but still the meter's "no time" marker.
            digits = "".join(ch for ch in raw if ch.isascii() and ch.isdigit())
            if len(digits) == 14 and digits[2:] in _PLACEHOLDER_DIGITS:
                raise _Unusable(
                    Problem.PLACEHOLDER, f"is a no-time placeholder: {_shown(raw)}"
                ) from None
            raise _Unusable(
                Problem.NOT_A_TIMESTAMP, f"is not an ISO 8601 timestamp: {_shown(raw)}"
            ) from None
    raise _Unusable(Problem.NOT_A_TIMESTAMP, f"is not a timestamp: {_shown(raw)}")


def _sum_of_tariffs(
    payload: Mapping[str, Any],
    prefix: str,
    api: ApiVersion,
    sample: Mapping[str, Any],
    dropped: Mapping[str, Dropped],
) -> float | None:
    """The total register from its tariff registers; _Unusable when one of them is (a sum
    without one tariff would be a register that steps down)."""
    total = 0.0
    found = False
    for tariff in _TARIFF_REGISTERS:
        name = f"{prefix}_t{tariff}_kwh"
        if name in sample:  # t1, t2: wire fields, already checked
            if name in dropped:
                problem = dropped[name].problem
                raise _Unusable(problem, f"tariff register {name} is unusable ({problem})", name)
            value = sample[name]
        else:  # t3/t4 are not wire fields but count towards the total
            raw = payload.get(_tariff_source(name, api))
            try:
                value = None if raw is None else _number(raw, register=True)
            except _Unusable as bad:
                raise _Unusable(bad.problem, bad.detail, name) from None
        if value is None:
            continue
        total += value
        found = True
    if total > wire.MAX_MAGNITUDE:
        raise _Unusable(Problem.OUT_OF_RANGE, "is out of range: the sum of its tariff registers")
    # Round away float-sum noise so the same registers always give the same total.
    return round(total, 6) if found else None


def _tariff_source(name: str, api: ApiVersion) -> str:
    if api == "v2":
        return name
    return name.replace("energy_", "total_power_")


def _gas_from_external(
    payload: Mapping[str, Any],
    sample: dict[str, Any],
    dropped: dict[str, Dropped],
    now: datetime,
    tz: ZoneInfo,
) -> None:
    external = payload.get("external")
    if not isinstance(external, list):
        return
    wanted_id = payload.get("gas_unique_id") or payload.get("unique_gas_id")
    gas_meters = [
        device
        for device in external
        if isinstance(device, Mapping) and device.get("type") == "gas_meter"
    ]
    if wanted_id is not None:
        gas_meters.sort(key=lambda device: device.get("unique_id") != wanted_id)
    for device in gas_meters:
        if device.get("value") is None or device.get("unit", "m3") != "m3":
            continue
        for name, kind, raw in (
            ("gas_m3", wire.REGISTER, device["value"]),
            ("gas_ts", wire.TIMESTAMP, device.get("timestamp")),
        ):
            if raw is None:
                continue
            try:
                sample[name] = _value(kind, raw, now, tz)
            except _Unusable as bad:
                _drop_or_reject(name, bad, dropped, _shown(raw))
        return


def _drop_untimed_zero_gas(sample: dict[str, Any], dropped: dict[str, Dropped]) -> None:
    gas_ts = dropped.get("gas_ts")
    if gas_ts is not None and gas_ts.problem is Problem.PLACEHOLDER and sample["gas_m3"] == 0:
        sample["gas_m3"] = None
        dropped["gas_m3"] = Dropped(Problem.PLACEHOLDER, "0 with a no-time placeholder")
