"""The simulated meter's answers, in the HomeWizard API v1 and v2 field names.

Field sets, names and number kinds follow recorded device answers (sources in
edgeclient/fixtures/README.md): power in whole watts (the telegram has kW with three
decimals), registers with three decimals, counters and the tariff as integers, and no
``timestamp`` in v1 (real v1 firmware sends none). Timestamps are what the device sends:
Belgian local time without a zone (v2 ISO 8601, v1 YYMMDDhhmmss as a number), so the edge
has to do the same conversion as for a real meter, DST fold included.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from edgeclient.household import Telegram
from edgeclient.simprofiles import (
    GAS_PLACEHOLDER_V1,
    GAS_PLACEHOLDER_V2,
    UNSET_CLOCK_LOCAL,
    Profile,
)

PRODUCT_TYPE = "HWE-P1"
PRODUCT_NAME = "P1 Meter"
FIRMWARE_VERSION = "6.0200"
V2_API_VERSION = "2.0.0"
METER_MODEL = "Fluvius 3-phase (simulated)"
METER_MODEL_1PHASE = "Fluvius 1-phase (simulated)"
GAS_UNIQUE_ID = "4730303339303031373030363734343139"
WATER_UNIQUE_ID = "3153414731313030303736363136"
WIFI_SSID = "Simulated Wi-Fi"


@dataclass(frozen=True)
class Stamp:
    """The meter's idea of the telegram time, as the answer states it."""

    local: datetime | None  # zone-less local time; None for an unset clock's constant
    trusted: bool  # False when the meter's clock is unset or stuck

    def v2(self) -> str:
        if self.local is None:
            return UNSET_CLOCK_LOCAL
        return self.local.isoformat(timespec="seconds")


def device_info(serial: str, api: str) -> dict[str, Any]:
    return {
        "product_name": PRODUCT_NAME,
        "product_type": PRODUCT_TYPE,
        "serial": serial,
        "firmware_version": FIRMWARE_VERSION,
        "api_version": "v1" if api == "v1" else V2_API_VERSION,
    }


def system_info(api: str, uptime_s: int) -> dict[str, Any]:
    """GET /api/system (v2) or /api/v1/system (v1), as documented."""
    if api == "v1":
        return {"cloud_enabled": True}
    return {
        "wifi_ssid": WIFI_SSID,
        "wifi_rssi_db": -77,
        "cloud_enabled": True,
        "uptime_s": uptime_s,
        "status_led_brightness_pct": 100,
        "api_v1_enabled": True,
    }


def local(second: int, tz: ZoneInfo) -> datetime:
    return datetime.fromtimestamp(second, tz).replace(tzinfo=None)


def _v1_stamp(second: int, tz: ZoneInfo) -> int:
    return int(local(second, tz).strftime("%y%m%d%H%M%S"))


def _v2_stamp(second: int, tz: ZoneInfo) -> str:
    return local(second, tz).isoformat(timespec="seconds")


def _watts(value: float) -> int:
    return round(value)


def _peak_watts(value: float) -> float:
    # The meter reports its averages in kW with three decimals: whole watts, sent as
    # 123.000 (a JSON float) in the recorded answers.
    return float(round(value))


def _phases(
    t: Telegram, profile: Profile
) -> tuple[tuple[int, ...], tuple[float, ...], tuple[float, ...]]:
    """Per-phase watts, volts, amps; a 1-phase meter carries the whole load on L1."""
    if profile.phases == 1:
        return (_watts(t.power_w),), (), ()
    watts = tuple(_watts(p) for p in t.phase_power_w)
    # Fluvius meters give the current with two decimals (1-0:31.7.0(002.18*A)).
    amps = tuple(round(a, 2) for a in t.phase_current_a)
    return watts, t.phase_voltage_v, amps


def _external(t: Telegram, profile: Profile, api: str, tz: ZoneInfo) -> list[dict[str, Any]]:
    stamp = _v2_stamp if api == "v2" else _v1_stamp
    devices: list[dict[str, Any]] = []
    if profile.gas == "meter":
        devices.append(
            {
                "unique_id": GAS_UNIQUE_ID,
                "type": "gas_meter",
                "timestamp": stamp(t.gas_second, tz),
                "value": t.gas_m3,
                "unit": "m3",
            }
        )
    elif profile.gas == "placeholder":
        devices.append(
            {
                "unique_id": GAS_UNIQUE_ID,
                "type": "gas_meter",
                "timestamp": GAS_PLACEHOLDER_V2 if api == "v2" else GAS_PLACEHOLDER_V1,
                "value": 0.0,
                "unit": "m3",
            }
        )
    if profile.water_meter:
        devices.append(
            {
                "unique_id": WATER_UNIQUE_ID,
                "type": "water_meter",
                "timestamp": stamp(t.gas_second, tz),
                "value": t.water_m3,
                "unit": "m3",
            }
        )
    return devices


def v2_measurement(
    t: Telegram, tz: ZoneInfo, unique_id: str, profile: Profile, stamp: Stamp
) -> dict[str, Any]:
    """GET /api/measurement; layout of the documented 3-phase and 1-phase examples."""
    watts, volts, amps = _phases(t, profile)
    one_phase = profile.phases == 1
    payload: dict[str, Any] = {
        "protocol_version": 50,
        "meter_model": METER_MODEL_1PHASE if one_phase else METER_MODEL,
        "unique_id": unique_id,
        "timestamp": stamp.v2(),
    }
    if not one_phase:
        payload["tariff"] = t.tariff
    if profile.totals:
        payload["energy_import_kwh"] = round(sum(t.import_kwh), 3)
    payload["energy_import_t1_kwh"] = t.import_kwh[0]
    payload["energy_import_t2_kwh"] = t.import_kwh[1]
    if profile.export_registers:
        if profile.totals:
            payload["energy_export_kwh"] = round(sum(t.export_kwh), 3)
        payload["energy_export_t1_kwh"] = t.export_kwh[0]
        payload["energy_export_t2_kwh"] = t.export_kwh[1]
    payload["power_w"] = _watts(t.power_w)
    for index, watt in enumerate(watts, 1):
        payload[f"power_l{index}_w"] = watt
    if one_phase:
        # The documented 1-phase answer stops at the power: no voltage, current or
        # capacity-tariff fields.
        return payload
    for index, volt in enumerate(volts, 1):
        payload[f"voltage_l{index}_v"] = volt
    payload["current_a"] = round(sum(abs(a) for a in amps), 2)
    for index, amp in enumerate(amps, 1):
        payload[f"current_l{index}_a"] = amp
    payload.update(_fail_counts())
    payload["average_power_15m_w"] = _peak_watts(t.average_power_15m_w)
    if t.monthly_power_peak_second is not None and t.monthly_power_peak_w is not None:
        payload["monthly_power_peak_w"] = _peak_watts(t.monthly_power_peak_w)
        payload["monthly_power_peak_timestamp"] = _v2_stamp(t.monthly_power_peak_second, tz)
    external = _external(t, profile, "v2", tz)
    if external:
        payload["external"] = external
    return payload


def v1_data(t: Telegram, tz: ZoneInfo, unique_id: str, profile: Profile) -> dict[str, Any]:
    """GET /api/v1/data: no telegram time (the v1 API has none), the v1 names."""
    watts, volts, amps = _phases(t, profile)
    one_phase = profile.phases == 1
    payload: dict[str, Any] = {
        "wifi_ssid": WIFI_SSID,
        "wifi_strength": 84,
        "smr_version": 50,
        "meter_model": METER_MODEL_1PHASE if one_phase else METER_MODEL,
    }
    if not one_phase:
        payload["unique_id"] = unique_id
        payload["active_tariff"] = t.tariff
    if profile.totals:
        payload["total_power_import_kwh"] = round(sum(t.import_kwh), 3)
    payload["total_power_import_t1_kwh"] = t.import_kwh[0]
    payload["total_power_import_t2_kwh"] = t.import_kwh[1]
    if profile.export_registers:
        if profile.totals:
            payload["total_power_export_kwh"] = round(sum(t.export_kwh), 3)
        payload["total_power_export_t1_kwh"] = t.export_kwh[0]
        payload["total_power_export_t2_kwh"] = t.export_kwh[1]
    payload["active_power_w"] = _watts(t.power_w)
    for index, watt in enumerate(watts, 1):
        payload[f"active_power_l{index}_w"] = watt
    if one_phase:
        return payload
    for index, volt in enumerate(volts, 1):
        payload[f"active_voltage_l{index}_v"] = volt
    for index, amp in enumerate(amps, 1):
        payload[f"active_current_l{index}_a"] = amp
    payload["active_frequency_hz"] = 50
    payload.update(_fail_counts())
    if profile.gas == "meter":
        payload["total_gas_m3"] = t.gas_m3
        payload["gas_timestamp"] = _v1_stamp(t.gas_second, tz)
        payload["gas_unique_id"] = GAS_UNIQUE_ID
    elif profile.gas == "placeholder":
        payload["total_gas_m3"] = 0.0
        payload["gas_timestamp"] = GAS_PLACEHOLDER_V1
        payload["gas_unique_id"] = GAS_UNIQUE_ID
    payload["active_power_average_w"] = _peak_watts(t.average_power_15m_w)
    if t.monthly_power_peak_second is not None and t.monthly_power_peak_w is not None:
        payload["montly_power_peak_w"] = _peak_watts(t.monthly_power_peak_w)  # sic
        payload["montly_power_peak_timestamp"] = _v1_stamp(t.monthly_power_peak_second, tz)
    external = _external(t, profile, "v1", tz)
    if external:
        payload["external"] = external
    return payload


def _fail_counts() -> dict[str, int]:
    return {
        "voltage_sag_l1_count": 1,
        "voltage_sag_l2_count": 1,
        "voltage_sag_l3_count": 0,
        "voltage_swell_l1_count": 0,
        "voltage_swell_l2_count": 0,
        "voltage_swell_l3_count": 0,
        "any_power_fail_count": 3,
        "long_power_fail_count": 1,
    }


def garble(payload: dict[str, Any], api: str, rng: random.Random) -> dict[str, Any]:
    """A copy with one value a broken meter or dongle could send."""
    bad = dict(payload)
    power = "power_w" if api == "v2" else "active_power_w"
    total = "energy_import_kwh" if api == "v2" else "total_power_import_kwh"
    if total not in bad:
        total = total.replace("_kwh", "_t1_kwh")
    choice = rng.randrange(4)
    if choice == 0:
        bad[power] = float("nan")
    elif choice == 1:
        bad[total] = -abs(bad[total])
    elif choice == 2:
        bad[power] = "garbage"
    else:
        bad[total] = round(bad[total] - 1000.0, 3)  # a register that ran backwards
    return bad


# -- the raw DSMR telegram (GET /api/telegram, /api/v1/telegram) ---------------------------
# Layout of a Fluvius (Belgian) DSMR 5 telegram as printed in dsmrreader/dsmr-reader#1794;
# the CRC is CRC-16/ARC over everything from "/" to "!", as DSMR 5.0.2 prescribes.
_TELEGRAM_HEADER = "/FLU5\\253769484_A"
_CRC_POLY_REFLECTED = 0xA001


def _dsmr_stamp(second: int, tz: ZoneInfo) -> str:
    moment = datetime.fromtimestamp(second, tz)
    return moment.strftime("%y%m%d%H%M%S") + ("S" if moment.dst() else "W")


def _crc16(text: str) -> str:
    crc = 0
    for byte in text.encode("ascii"):
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ _CRC_POLY_REFLECTED if crc & 1 else crc >> 1
    return f"{crc:04X}"


def _history_line(t: Telegram, tz: ZoneInfo) -> str:
    """0-0:98.1.0 as TELEGRAM_FLUVIUS_V171_ALT in ndokter/dsmr_parser's test telegrams
    prints it: the count, the two capture objects, then per month (00:00 on the first
    of the next month, when its maximum's quarter ended, the maximum), oldest first."""
    parts = [f"({len(t.monthly_peak_history)})(1-0:1.6.0)(1-0:1.6.0)"]
    for (year, month), peak_w, second in t.monthly_peak_history:
        nxt_year, nxt_month = (year + 1, 1) if month == 12 else (year, month + 1)
        closes = int(datetime(nxt_year, nxt_month, 1, tzinfo=tz).timestamp())
        parts.append(
            f"({_dsmr_stamp(closes, tz)})({_dsmr_stamp(second, tz)})"
            f"({_peak_watts(peak_w) / 1000:06.3f}*kW)"
        )
    return "0-0:98.1.0" + "".join(parts)


def dsmr_telegram(t: Telegram, tz: ZoneInfo, unique_id: str, profile: Profile, stamp: Stamp) -> str:
    """The telegram behind the answers above, as the meter sent it to the dongle."""
    if stamp.local is None:
        now = "000101010000W"  # the unset clock of dsmrreader/dsmr-reader#811
    else:
        now = _dsmr_stamp(int(stamp.local.replace(tzinfo=tz).timestamp()), tz)
    lines = [_TELEGRAM_HEADER, "", "0-0:96.1.4(50217)", f"0-0:96.1.1({unique_id})"]
    lines.append(f"0-0:1.0.0({now})")
    lines += [f"1-0:1.8.{i}({value:010.3f}*kWh)" for i, value in enumerate(t.import_kwh, 1)]
    if profile.export_registers:
        lines += [f"1-0:2.8.{i}({value:010.3f}*kWh)" for i, value in enumerate(t.export_kwh, 1)]
    lines.append(f"0-0:96.14.0({t.tariff:04d})")
    lines.append(f"1-0:1.4.0({_peak_watts(t.average_power_15m_w) / 1000:06.3f}*kW)")
    if t.monthly_power_peak_second is not None and t.monthly_power_peak_w is not None:
        peak_kw = _peak_watts(t.monthly_power_peak_w) / 1000
        lines.append(
            f"1-0:1.6.0({_dsmr_stamp(t.monthly_power_peak_second, tz)})({peak_kw:06.3f}*kW)"
        )
    if t.monthly_peak_history:
        lines.append(_history_line(t, tz))
    watts, volts, amps = _phases(t, profile)
    total = _watts(t.power_w)
    lines.append(f"1-0:1.7.0({max(total, 0) / 1000:06.3f}*kW)")
    lines.append(f"1-0:2.7.0({max(-total, 0) / 1000:06.3f}*kW)")
    for index, w in enumerate(watts):
        lines.append(f"1-0:{21 + 20 * index}.7.0({max(w, 0) / 1000:06.3f}*kW)")
    for index, w in enumerate(watts):
        lines.append(f"1-0:{22 + 20 * index}.7.0({max(-w, 0) / 1000:06.3f}*kW)")
    for index, v in enumerate(volts):
        lines.append(f"1-0:{32 + 20 * index}.7.0({v:05.1f}*V)")
    for index, a in enumerate(amps):
        lines.append(f"1-0:{31 + 20 * index}.7.0({abs(a):06.2f}*A)")
    lines += ["0-0:96.3.10(1)", "0-0:17.0.0(999.9*kW)", "1-0:31.4.0(999*A)", "0-0:96.13.0()"]
    if profile.gas != "none":
        placeholder = profile.gas == "placeholder"
        gas_time = "632525252525S" if placeholder else _dsmr_stamp(t.gas_second, tz)
        gas_m3 = 0.0 if placeholder else t.gas_m3
        lines += ["0-1:24.1.0(003)", f"0-1:96.1.1({GAS_UNIQUE_ID})", "0-1:24.4.0(1)"]
        lines.append(f"0-1:24.2.3({gas_time})({gas_m3:09.3f}*m3)")
    if profile.water_meter:
        lines += ["0-2:24.1.0(007)", f"0-2:96.1.1({WATER_UNIQUE_ID})"]
        lines.append(f"0-2:24.2.1({_dsmr_stamp(t.gas_second, tz)})({t.water_m3:09.3f}*m3)")
    body = "\r\n".join(lines) + "\r\n!"
    return body + _crc16(body) + "\r\n"
