"""The export's query parameters, parsed and documented once (drf-spectacular)."""

from __future__ import annotations

from datetime import UTC

from django.utils import timezone
from rest_framework import serializers

from integrations.export import DEFAULT_SPAN, KINDS, MAX_SAMPLE_ROWS, MAX_SPAN
from telemetry.serializers import MomentField, QuerySerializer, choice_field


def _days(kind: str) -> int:
    return MAX_SPAN[kind].days


class ExportQuery(QuerySerializer):
    kind = choice_field(
        KINDS,
        help_text=(
            "samples: every stored reading; quarters: every clock quarter (as "
            "/v1/capacity/quarters); months: peaks, 12-month average and energy per "
            f"local month. A range spans at most {_days('samples')} days of samples or "
            f"quarters, {_days('months')} days of months; a samples export holds at most "
            f"{MAX_SAMPLE_ROWS:,} samples (a day of 1 s readings), a range holding more "
            "is refused with 400."
        ),
        error_messages={"invalid_choice": f"Use one of {', '.join(KINDS)}."},
    )
    start = MomentField(
        required=False,
        help_text=(
            f"Default: end minus {DEFAULT_SPAN['samples'].days} day (samples), "
            f"{DEFAULT_SPAN['quarters'].days} days (quarters), "
            f"{DEFAULT_SPAN['months'].days} days (months)."
        ),
    )
    end = MomentField(required=False, help_text="Not included. Default: now.")

    def validate(self, values: dict) -> dict:
        kind = values["kind"]
        values.setdefault("end", timezone.now())
        values.setdefault("start", values["end"] - DEFAULT_SPAN[kind])
        values = self.validate_order(values)
        # In UTC: moments of one zone subtract by their wall clocks.
        if values["end"].astimezone(UTC) - values["start"].astimezone(UTC) > MAX_SPAN[kind]:
            raise serializers.ValidationError(
                {"start": [f"A {kind} export spans at most {MAX_SPAN[kind].days} days."]}
            )
        return values
