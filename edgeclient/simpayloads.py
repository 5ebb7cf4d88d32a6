"""The simulated meter's answers, in the HomeWizard API v1 and v2 field names.

Timestamps are what the device sends: Belgian local time without a zone (v2 ISO 8601,
v1 YYMMDDhhmmss as a number), so the edge has to do the same conversion as for a real
meter, DST fold included.
"""

from __future__ import annotations

import random
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from edgeclient.household import Telegram

PRODUCT_TYPE = "HWE-P1"
FIRMWARE_VERSION = "6.0200"
METER_MODEL = "Fluvius 3-phase (simulated)"
GAS_UNIQUE_ID = "4730303339303031373030363734343139"


def device_info(serial: str, api: str) -> dict[str, Any]:
    return {
        "product_type": PRODUCT_TYPE,
        "product_name": "P1 meter" if api == "v1" else "P1 Meter",
        "serial": serial,
        "firmware_version": FIRMWARE_VERSION,
        "api_version": "v1" if api == "v1" else "2.0.0",
    }


def _local(second: int, tz: ZoneInfo) -> datetime:
    return datetime.fromtimestamp(second, tz).replace(tzinfo=None)


def _v1_stamp(second: int, tz: ZoneInfo) -> int:
    return int(_local(second, tz).strftime("%y%m%d%H%M%S"))


def _v2_stamp(second: int, tz: ZoneInfo) -> str:
    return _local(second, tz).isoformat(timespec="seconds")


def v2_measurement(t: Telegram, tz: ZoneInfo, unique_id: str) -> dict[str, Any]:
    (l1, l2, l3), (v1, v2, v3), (a1, a2, a3) = t.phase_power_w, t.phase_voltage_v, t.phase_current_a
    payload: dict[str, Any] = {
        "protocol_version": 50,
        "meter_model": METER_MODEL,
        "unique_id": unique_id,
        "timestamp": _v2_stamp(t.second, tz),
        "tariff": t.tariff,
        "energy_import_kwh": round(sum(t.import_kwh), 3),
        "energy_import_t1_kwh": t.import_kwh[0],
        "energy_import_t2_kwh": t.import_kwh[1],
        "energy_export_kwh": round(sum(t.export_kwh), 3),
        "energy_export_t1_kwh": t.export_kwh[0],
        "energy_export_t2_kwh": t.export_kwh[1],
        "power_w": t.power_w,
        "power_l1_w": l1,
        "power_l2_w": l2,
        "power_l3_w": l3,
        "voltage_l1_v": v1,
        "voltage_l2_v": v2,
        "voltage_l3_v": v3,
        "current_a": round(abs(a1) + abs(a2) + abs(a3), 3),
        "current_l1_a": a1,
        "current_l2_a": a2,
        "current_l3_a": a3,
        "frequency_hz": 50.0,
        "any_power_fail_count": 3,
        "long_power_fail_count": 1,
        "average_power_15m_w": t.average_power_15m_w,
        "external": [
            {
                "unique_id": GAS_UNIQUE_ID,
                "type": "gas_meter",
                "timestamp": _v2_stamp(t.gas_second, tz),
                "value": t.gas_m3,
                "unit": "m3",
            }
        ],
    }
    if t.monthly_power_peak_second is not None:
        payload["monthly_power_peak_w"] = t.monthly_power_peak_w
        payload["monthly_power_peak_timestamp"] = _v2_stamp(t.monthly_power_peak_second, tz)
    return payload


def v1_data(t: Telegram, tz: ZoneInfo, unique_id: str) -> dict[str, Any]:
    (l1, l2, l3), (v1, v2, v3), (a1, a2, a3) = t.phase_power_w, t.phase_voltage_v, t.phase_current_a
    payload: dict[str, Any] = {
        "wifi_ssid": "Simulated Wi-Fi",
        "wifi_strength": 84,
        "smr_version": 50,
        "meter_model": METER_MODEL,
        "unique_id": unique_id,
        # Real v1 firmware sends no telegram time; the simulator does so that a test can
        # match what it served against what the edge stored (see normalise.py).
        "timestamp": _v1_stamp(t.second, tz),
        "active_tariff": t.tariff,
        "total_power_import_kwh": round(sum(t.import_kwh), 3),
        "total_power_import_t1_kwh": t.import_kwh[0],
        "total_power_import_t2_kwh": t.import_kwh[1],
        "total_power_export_kwh": round(sum(t.export_kwh), 3),
        "total_power_export_t1_kwh": t.export_kwh[0],
        "total_power_export_t2_kwh": t.export_kwh[1],
        "active_power_w": t.power_w,
        "active_power_l1_w": l1,
        "active_power_l2_w": l2,
        "active_power_l3_w": l3,
        "active_voltage_l1_v": v1,
        "active_voltage_l2_v": v2,
        "active_voltage_l3_v": v3,
        "active_current_l1_a": a1,
        "active_current_l2_a": a2,
        "active_current_l3_a": a3,
        "active_frequency_hz": 50.0,
        "any_power_fail_count": 3,
        "long_power_fail_count": 1,
        "active_power_average_w": t.average_power_15m_w,
        "total_gas_m3": t.gas_m3,
        "gas_timestamp": _v1_stamp(t.gas_second, tz),
        "gas_unique_id": GAS_UNIQUE_ID,
        "external": [
            {
                "unique_id": GAS_UNIQUE_ID,
                "type": "gas_meter",
                "timestamp": _v1_stamp(t.gas_second, tz),
                "value": t.gas_m3,
                "unit": "m3",
            }
        ],
    }
    if t.monthly_power_peak_second is not None:
        payload["montly_power_peak_w"] = t.monthly_power_peak_w  # sic, as the device
        payload["montly_power_peak_timestamp"] = _v1_stamp(t.monthly_power_peak_second, tz)
    return payload


def garble(payload: dict[str, Any], api: str, rng: random.Random) -> dict[str, Any]:
    """A copy with one value a broken meter or dongle could send."""
    bad = dict(payload)
    power = "power_w" if api == "v2" else "active_power_w"
    total = "energy_import_kwh" if api == "v2" else "total_power_import_kwh"
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
