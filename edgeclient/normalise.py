"""From a HomeWizard P1 payload (API v1 or v2) to one canonical wire sample.

Pure: no Django, no I/O, no clock reads. The edge's clock comes in as ``now`` so the
repeated DST hour and the "no meter timestamp" case are decided by the caller's time,
and tests can pin it.

Rules that are not obvious from the field table:
- ``ts`` is the meter's own telegram timestamp when present, so two polls of one
  telegram give the same sample and the server de-duplicates them.
- Meter timestamps are Belgian local time without a zone; in the repeated autumn hour
  the candidate closest to the edge's ``now`` wins.
- A total register the device leaves out is the sum of its tariff registers (the 1-phase
  v2 payload only carries t1/t2).
- A tariff outside 1..4 becomes None: it is informative, not worth losing a reading for.
- Any other present value that is not what its wire kind demands rejects the sample,
  so the edge never spools what the server would refuse.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Literal
from zoneinfo import ZoneInfo

from edgeclient import wire

BRUSSELS = ZoneInfo("Europe/Brussels")
ApiVersion = Literal["v1", "v2"]

# Float sums of registers with three decimals pick up noise in the 1e-12 range; a
# register moving back by less than this is the same reading.
_REGISTER_EPSILON_KWH = 1e-6
_EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)

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
    "ts": "timestamp",  # not sent by v1 firmware; the simulator adds it
}
_V2_NAMES: Mapping[str, str] = {
    **{name: name for name in wire.SAMPLE_FIELDS},
    "ts": "timestamp",
    "monthly_power_peak_ts": "monthly_power_peak_timestamp",
    "gas_m3": "",  # v2 reports gas only in the external list
    "gas_ts": "",
}
_TARIFF_REGISTERS = (1, 2, 3, 4)


class SampleRejected(ValueError):
    """The payload cannot become a sample; ``field`` names the wire field at fault."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


def normalise(
    payload: Mapping[str, Any],
    *,
    api: ApiVersion,
    now: datetime,
    previous_import_kwh: float | None = None,
    tz: ZoneInfo = BRUSSELS,
) -> dict[str, Any]:
    """The canonical sample (every wire.SAMPLE_FIELDS key, None where absent).

    ``previous_import_kwh`` is the total import register of the previous accepted sample;
    a lower register now is rejected (a meter register never runs backwards).
    Raises SampleRejected.
    """
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("now must be timezone-aware")
    if not isinstance(payload, Mapping):
        raise SampleRejected("payload", "must be a JSON object")
    if api not in ("v1", "v2"):
        raise ValueError(f"api must be v1 or v2, got {api!r}")
    names = _V1_NAMES if api == "v1" else _V2_NAMES
    sample: dict[str, Any] = dict.fromkeys(wire.SAMPLE_FIELDS)

    for field, kind in wire.SAMPLE_FIELDS.items():
        source = names.get(field, "")
        raw = payload.get(source) if source else None
        if raw is None:
            continue
        if kind == wire.TIMESTAMP:
            sample[field] = _timestamp(field, raw, now, tz)
        elif kind == wire.TARIFF:
            sample[field] = _tariff(raw)
        else:
            sample[field] = _number(field, raw, register=kind == wire.REGISTER)

    for prefix in ("energy_import", "energy_export"):
        if sample[f"{prefix}_kwh"] is None:
            sample[f"{prefix}_kwh"] = _sum_of_tariffs(payload, names, prefix, api)

    if api == "v2" or sample["gas_m3"] is None:
        _gas_from_external(payload, sample, api, now, tz)

    if sample["ts"] is None:
        sample["ts"] = _iso(now)
    for field in wire.REQUIRED_FIELDS:
        if sample[field] is None:
            raise SampleRejected(field, "is missing from the device's answer")
    if (
        previous_import_kwh is not None
        and sample["energy_import_kwh"] < previous_import_kwh - _REGISTER_EPSILON_KWH
    ):
        raise SampleRejected(
            "energy_import_kwh",
            f"went backwards from {previous_import_kwh} to {sample['energy_import_kwh']}",
        )
    return sample


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


def _number(field: str, raw: Any, *, register: bool) -> float:
    # bool is an int in Python but never a meter reading.
    if isinstance(raw, bool) or not isinstance(raw, int | float):
        raise SampleRejected(field, f"must be a number, got {raw!r}")
    try:
        value = float(raw)
    except OverflowError:  # an int beyond float range
        raise SampleRejected(field, "is out of range") from None
    if not math.isfinite(value):
        raise SampleRejected(field, f"must be finite, got {raw!r}")
    if abs(value) > wire.MAX_MAGNITUDE:
        raise SampleRejected(field, f"is out of range, got {raw!r}")
    if register and value < 0:
        raise SampleRejected(field, f"is a register and must not be negative, got {raw!r}")
    return value


def _tariff(raw: Any) -> int | None:
    if isinstance(raw, bool) or not isinstance(raw, int | float):
        return None
    if not math.isfinite(raw) or raw != int(raw) or int(raw) not in wire.TARIFF_RANGE:
        return None
    return int(raw)


def _timestamp(field: str, raw: Any, now: datetime, tz: ZoneInfo) -> str:
    parsed = _parse_meter_time(field, raw)
    moment = meter_time_to_utc(parsed, now, tz) if parsed.tzinfo is None else parsed.astimezone(UTC)
    if moment < _EARLIEST:
        raise SampleRejected(field, f"is before 2000: {raw!r}")
    return _iso(moment)


def _parse_meter_time(field: str, raw: Any) -> datetime:
    """v2: ISO 8601 without zone; v1: YYMMDDhhmmss as a number (or digit string)."""
    if isinstance(raw, bool):
        raise SampleRejected(field, f"is not a timestamp: {raw!r}")
    if isinstance(raw, int) or (isinstance(raw, str) and raw.isdigit()):
        digits = str(raw).zfill(12)
        if len(digits) != 12:
            raise SampleRejected(field, f"expected YYMMDDhhmmss, got {raw!r}")
        try:
            return datetime.strptime(digits, "%y%m%d%H%M%S")
        except ValueError:
            raise SampleRejected(field, f"expected YYMMDDhhmmss, got {raw!r}") from None
    if isinstance(raw, str):
        try:
            return datetime.fromisoformat(raw)
        except ValueError:
            raise SampleRejected(field, f"is not an ISO 8601 timestamp: {raw!r}") from None
    raise SampleRejected(field, f"is not a timestamp: {raw!r}")


def _sum_of_tariffs(
    payload: Mapping[str, Any], names: Mapping[str, str], prefix: str, api: ApiVersion
) -> float | None:
    total = 0.0
    found = False
    for tariff in _TARIFF_REGISTERS:
        field = f"{prefix}_t{tariff}_kwh"
        source = names.get(field) or _tariff_source(field, api)
        raw = payload.get(source)
        if raw is None:
            continue
        total += _number(field, raw, register=True)
        found = True
    if total > wire.MAX_MAGNITUDE:
        raise SampleRejected(f"{prefix}_kwh", "is out of range: the sum of its tariff registers")
    # Round away float-sum noise so the same registers always give the same total.
    return round(total, 6) if found else None


def _tariff_source(field: str, api: ApiVersion) -> str:
    # t3/t4 are not wire fields but count towards the total when a meter has them.
    if api == "v2":
        return field
    return field.replace("energy_", "total_power_")


def _gas_from_external(
    payload: Mapping[str, Any],
    sample: dict[str, Any],
    api: ApiVersion,
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
        sample["gas_m3"] = _number("gas_m3", device["value"], register=True)
        stamp = device.get("timestamp")
        sample["gas_ts"] = None if stamp is None else _timestamp("gas_ts", stamp, now, tz)
        return
