"""OpenAPI components of the capacity and realtime endpoints (see capacity.reports)."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiParameter

from capacity import reports
from p1common.openapi import (
    BOOLEAN,
    DATETIME,
    INTEGER,
    NUMBER,
    STRING,
    component,
    nullable,
    obj,
)
from telemetry import segments
from telemetry.models import RegisterBreak
from telemetry.openapi import MOMENT, sample_field_schema

MONTH = {**STRING, "pattern": r"^\d{4}-\d{2}$", "example": "2026-03"}
# What a month or day parameter may name: rules.FIRST_YEAR to rules.LAST_YEAR (2000-2099).
MONTH_PARAM = {**STRING, "pattern": r"^20\d{2}-(0[1-9]|1[0-2])$", "example": "2026-03"}
DAY_PARAM = {
    **STRING,
    "format": "date",
    "pattern": r"^20\d{2}-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])$",
    "example": "2026-03-01",
}
KW = {**NUMBER, "description": "kW"}

QUARTER = component(
    "Quarter",
    obj(
        {
            "start": DATETIME,
            "kw": nullable({**KW, "description": "Quarter power (kW); null: no samples."}),
            "coverage": {**NUMBER, "description": "Share of the quarter its samples cover."},
            "incomplete": {**BOOLEAN, "description": "Samples cover less than 90%."},
            "sample_count": INTEGER,
        }
    ),
)
METER_PEAK = nullable(
    obj(
        {"kw": KW, "ts": nullable(DATETIME)},
        description="The meter's own monthly peak as it last reported it; null: none.",
    )
)
REALTIME = component(
    "Realtime",
    obj(
        {
            "device_id": STRING,
            "timezone": STRING,
            "latest": nullable(
                obj(
                    {name: sample_field_schema(name) for name in reports._LATEST_FIELDS},
                    description="The latest sample; null: the device sent none yet.",
                )
            ),
            "age_s": nullable({**NUMBER, "description": "Seconds since the latest sample."}),
        },
        {
            "quarter": obj(
                {
                    "start": DATETIME,
                    "end": DATETIME,
                    "average_so_far_kw": KW,
                    "projected_kw": KW,
                    "threshold_kw": KW,
                    "headroom_w": NUMBER,
                    "exceeds_threshold": BOOLEAN,
                },
                description="The running quarter; absent when there is no sample.",
            ),
            "month": obj(
                {
                    "month": MONTH,
                    "peak_so_far_kw": nullable(KW),
                    "billed_peak_so_far_kw": KW,
                },
                description="The month's peak before the running quarter.",
            ),
        },
    ),
)
REGISTER_BREAK = component(
    "RegisterBreak",
    obj(
        {
            "ts": {**DATETIME, "description": "The first sample of the new register segment."},
            "previous_ts": {**DATETIME, "description": "The last sample before the step."},
            "kind": {
                **STRING,
                "enum": [RegisterBreak.WENT_DOWN, RegisterBreak.IMPOSSIBLE_STEP],
                "description": (
                    "went-down: a register decreased (a replaced meter restarts near 0); "
                    "impossible-step: it rose faster than "
                    f"{segments.MAX_HOUSEHOLD_POWER_W / 1000:g} kW, far above any "
                    "household connection (another meter)."
                ),
            },
            "previous_import_kwh": NUMBER,
            "import_kwh": NUMBER,
            "previous_export_kwh": nullable(NUMBER),
            "export_kwh": nullable(NUMBER),
            "import_step_kwh": {**NUMBER, "description": "import_kwh - previous_import_kwh."},
            "export_step_kwh": nullable(NUMBER),
            "unmeasured_s": {
                **NUMBER,
                "description": "Seconds across the step: no energy is counted for them.",
            },
        },
        description=(
            "A register discontinuity. The step is not consumption: quarters, peaks and "
            "series count energy only inside register segments."
        ),
    ),
)
REGISTER_BREAKS = component(
    "RegisterBreaks",
    obj(
        {
            "device_id": STRING,
            "timezone": STRING,
            "register_breaks": {
                "type": "array",
                "items": REGISTER_BREAK,
                "maxItems": reports.REGISTER_BREAKS_MAX,
                "description": "Oldest first.",
            },
        }
    ),
)
MONTH_REPORT = component(
    "MonthReport",
    obj(
        {
            "device_id": STRING,
            "month": MONTH,
            "timezone": STRING,
            "peak": nullable(obj({"kw": KW, "quarter_start": DATETIME, "incomplete": BOOLEAN})),
            "billed_peak_kw": {**KW, "description": "max(peak, 2.5 kW)."},
            "rolling_average": obj(
                {
                    "kw": KW,
                    "months": {
                        "type": "array",
                        "items": obj(
                            {
                                "month": MONTH,
                                "peak_kw": nullable(KW),
                                "billed_kw": KW,
                                "missing": BOOLEAN,
                            }
                        ),
                    },
                }
            ),
            "meter_reported_peak": METER_PEAK,
            "completeness": obj(
                {
                    "quarters_expected": INTEGER,
                    "quarters_with_data": INTEGER,
                    "quarters_complete": INTEGER,
                    "ratio": NUMBER,
                }
            ),
            "top_quarters": {"type": "array", "items": QUARTER},
            "estimated_cost": nullable(
                obj(
                    {"price_eur_per_kw_year": NUMBER, "yearly_eur": NUMBER, "monthly_eur": NUMBER},
                    description="At the 12-month average; null: the device has no price.",
                )
            ),
            "register_breaks": {
                "type": "array",
                "items": REGISTER_BREAK,
                "description": "Register breaks whose new segment starts in the month.",
            },
        }
    ),
)
MONTH_TABLE = component(
    "MonthTable",
    obj(
        {
            "device_id": STRING,
            "timezone": STRING,
            "months": {
                "type": "array",
                "description": "Newest first.",
                "items": obj(
                    {
                        "month": MONTH,
                        "peak_kw": nullable(KW),
                        "peak_quarter_start": nullable(DATETIME),
                        "billed_peak_kw": KW,
                        "meter_reported_peak": METER_PEAK,
                    }
                ),
            },
        }
    ),
)
DAY_QUARTERS = component(
    "DayQuarters",
    obj(
        {
            "device_id": STRING,
            "date": {**STRING, "format": "date"},
            "timezone": STRING,
            "quarters": {
                "type": "array",
                "description": "Every quarter of the local day: 92, 96 or 100.",
                "items": QUARTER,
            },
        }
    ),
)

MONTH_PATH_PARAM = OpenApiParameter(
    "month",
    MONTH_PARAM,
    OpenApiParameter.PATH,
    description="A calendar month in the device's zone, YYYY-MM, 2000 to 2099.",
)
MONTHS_PARAMS = [
    OpenApiParameter("end", MONTH_PARAM, description="The newest month; default: this month."),
    OpenApiParameter(
        "count",
        {**INTEGER, "minimum": 1, "maximum": reports.MONTH_TABLE_MAX, "default": 13},
        description="How many months.",
    ),
]
DATE_PARAM = OpenApiParameter(
    "date", DAY_PARAM, required=True, description="A local day, YYYY-MM-DD, 2000 to 2099."
)
BREAKS_PARAMS = [
    OpenApiParameter("start", MOMENT, description="From this moment on; default: the first."),
    OpenApiParameter("end", MOMENT, description="Before this moment; default: no end."),
]
