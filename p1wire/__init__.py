"""The wire format of an ingest batch, defined once for the edge and the server.

No Django imports: the edge builds batches with this module and the server validates
them against the same field table, so a field added here reaches both sides at once.

A batch is ``{"samples": [sample, ...]}`` with an optional ``"device_id"`` that must
name the token's own device. A sample is a flat JSON object; every timestamp is ISO
8601 with a UTC offset.
"""

from __future__ import annotations

from typing import Any, Final

# Kinds say how a value is checked; they are shared by the edge normaliser and the
# server's validation so that both reject the same things.
TIMESTAMP: Final = "timestamp"  # ISO 8601 with an offset
POWER: Final = "power"  # finite float, any sign (export is negative)
REGISTER: Final = "register"  # finite float >= 0 (meter registers never go negative)
MEASURE: Final = "measure"  # finite float (voltage, current)
TARIFF: Final = "tariff"  # integer 1..4

REQUIRED_FIELDS: Final = ("ts", "power_w", "energy_import_kwh")

# Order matters: it is the column order of the server's insert statement.
SAMPLE_FIELDS: Final[dict[str, str]] = {
    "ts": TIMESTAMP,
    "power_w": POWER,
    "energy_import_kwh": REGISTER,
    "energy_export_kwh": REGISTER,
    "energy_import_t1_kwh": REGISTER,
    "energy_import_t2_kwh": REGISTER,
    "energy_export_t1_kwh": REGISTER,
    "energy_export_t2_kwh": REGISTER,
    "power_l1_w": POWER,
    "power_l2_w": POWER,
    "power_l3_w": POWER,
    "voltage_l1_v": MEASURE,
    "voltage_l2_v": MEASURE,
    "voltage_l3_v": MEASURE,
    "current_l1_a": MEASURE,
    "current_l2_a": MEASURE,
    "current_l3_a": MEASURE,
    "tariff": TARIFF,
    "average_power_15m_w": POWER,
    "monthly_power_peak_w": POWER,
    "monthly_power_peak_ts": TIMESTAMP,
    "gas_m3": REGISTER,
    "gas_ts": TIMESTAMP,
}

OPTIONAL_FIELDS: Final = tuple(f for f in SAMPLE_FIELDS if f not in REQUIRED_FIELDS)

# A timestamp as RFC 3339 writes it (the schema's date-time), in the years the
# platform answers for: 2000 to 2099. Both sides check it; the year is the text's own.
TIMESTAMP_PATTERN: Final = (
    r"^20\d{2}-(?:(?:0[13578]|1[02])-(?:0[1-9]|[12]\d|3[01])|(?:0[469]|11)-(?:0[1-9]|[12]\d|30)"
    r"|02-(?:0[1-9]|1\d|2\d))T(?:[01]\d|2[0-3]):[0-5]\d:[0-5]\d(?:\.\d+)?"
    r"(?:Z|[+-](?:[01]\d|2[0-3]):[0-5]\d)$"
)

TARIFF_RANGE: Final = range(1, 5)
# Largest magnitude of any number: far beyond any meter (1e15 W, 1e15 kWh) yet far below
# float overflow, so sums and differences of stored values stay finite in rollups.
MAX_MAGNITUDE: Final = 1e15


def batch_payload(samples: list[dict[str, Any]], device_id: str | None = None) -> dict:
    """The JSON body of one POST /v1/ingest: samples as the edge spooled them."""
    body: dict[str, Any] = {"samples": samples}
    if device_id is not None:
        body["device_id"] = device_id
    return body


# The meter's own monthly maxima, read from its raw telegram (edgeclient.telegram):
# POST {server}/v1/meter-history. Not samples: one body per read, keyed on the server by
# (device, month), so a repeated or retried body changes nothing.
METER_HISTORY_PATH: Final = "/v1/meter-history"
# A Fluvius meter keeps 13 closed months; the running month comes on top.
METER_HISTORY_MAX_MONTHS: Final = 14


def meter_history_payload(
    read_at: str,
    months: list[dict[str, Any]],
    current: dict[str, Any] | None = None,
    device_id: str | None = None,
) -> dict:
    """The JSON body of one POST /v1/meter-history.

    ``read_at``: when the telegram was read (ISO 8601 with an offset). ``months``: the
    closed months of 0-0:98.1.0, each ``{"month": "YYYY-MM", "peak_kw": float,
    "peak_ts": ISO 8601 or null}``. ``current``: the running month's 1-0:1.6.0 in the
    same form, or null.
    """
    body: dict[str, Any] = {"read_at": read_at, "months": months, "current": current}
    if device_id is not None:
        body["device_id"] = device_id
    return body
