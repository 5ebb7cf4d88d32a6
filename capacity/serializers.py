"""The capacity and realtime answers and their query parameters, each declared once.

Answer serializers render capacity.reports' typed results (moments in the device's
zone, months as YYYY-MM) and are what drf-spectacular documents; query serializers
parse and document the parameters.
"""

from __future__ import annotations

from datetime import date
from typing import Any

from drf_spectacular.utils import OpenApiParameter, extend_schema_field
from rest_framework import serializers

from capacity import provenance, reports, rules, tariffs
from capacity.rules import Month
from telemetry import segments
from telemetry.models import RegisterBreak
from telemetry.serializers import (
    AnswerSerializer,
    BlankIsAbsent,
    LocalDateTimeField,
    MomentField,
    Number,
    QuerySerializer,
    TextField,
    WholeNumberField,
    choice_field,
    sample_field,
    schema_field,
)

MONTH = {"type": "string", "pattern": r"^\d{4}-\d{2}$", "example": "2026-03"}
# What a month or day parameter may name: rules.FIRST_YEAR to rules.LAST_YEAR (2000-2099).
MONTH_PARAM = {"type": "string", "pattern": r"^20\d{2}-(0[1-9]|1[0-2])$", "example": "2026-03"}
DAY_PARAM = {
    "type": "string",
    "format": "date",
    "pattern": r"^20\d{2}-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])$",
    "example": "2026-03-01",
}


def month_field(**kwargs: Any) -> serializers.Field:
    return schema_field(TextField, MONTH, **kwargs)


def kw(**kwargs: Any) -> Number:
    return Number(**{"help_text": "kW", **kwargs})


# --- answers -------------------------------------------------------------------------


class QuarterSerializer(AnswerSerializer):
    start = LocalDateTimeField()
    kw = kw(allow_null=True, help_text="Quarter power (kW); null: no samples.")
    coverage = Number(help_text="Share of the quarter its samples cover.")
    incomplete = serializers.BooleanField(help_text="Samples cover less than 90%.")
    sample_count = serializers.IntegerField()


class MeterPeakSerializer(AnswerSerializer):
    """The meter's own monthly peak as it last reported it; null: none."""

    kw = kw()
    ts = LocalDateTimeField(allow_null=True)


class RegisterBreakSerializer(AnswerSerializer):
    """A register discontinuity. The step is not consumption: quarters, peaks and series
    count energy only inside register segments."""

    ts = LocalDateTimeField(help_text="The first sample of the new register segment.")
    previous_ts = LocalDateTimeField(help_text="The last sample before the step.")
    kind = choice_field(
        [RegisterBreak.WENT_DOWN, RegisterBreak.IMPOSSIBLE_STEP],
        help_text=(
            "went-down: a register decreased (a replaced meter restarts near 0); "
            "impossible-step: it rose faster than "
            f"{segments.MAX_HOUSEHOLD_POWER_W / 1000:g} kW, far above any household "
            "connection (another meter)."
        ),
    )
    previous_import_kwh = Number()
    import_kwh = Number()
    previous_export_kwh = Number(allow_null=True)
    export_kwh = Number(allow_null=True)
    import_step_kwh = Number(help_text="import_kwh - previous_import_kwh.")
    export_step_kwh = Number(allow_null=True)
    unmeasured_s = Number(help_text="Seconds across the step: no energy is counted for them.")


class RegisterBreaksSerializer(AnswerSerializer):
    device_id = serializers.CharField()
    timezone = serializers.CharField()
    register_breaks = RegisterBreakSerializer(
        many=True, max_length=reports.REGISTER_BREAKS_MAX, help_text="Oldest first."
    )


class PeakSerializer(AnswerSerializer):
    kw = kw()
    quarter_start = LocalDateTimeField()
    incomplete = serializers.BooleanField()


SOURCE_HELP = (
    "Where the month's figure comes from, by precedence: imported (the grid operator's "
    "quarters, covering at least 90% of the month), meter-reported (the meter's own "
    "maximum: a month it closed, 0-0:98.1.0, before ours; its running 1-0:1.6.0 only "
    "when we measured nothing), measured (computed from our samples), or missing."
)


METER_PEAK_MATCH_HELP = (
    "Which quarter the meter names as the month's peak (meter_reported_peak.ts, the end "
    "of its quarter), against ours: same-quarter, our peak quarter; tie, another quarter "
    "whose power, to the watt, equals our peak (of equal quarters we name the earliest, "
    "the meter may name another); different, any other quarter (one below our peak, one "
    "we have no samples for, or one outside the month). Null: no peak of ours, no "
    "meter-reported peak, or none with a time."
)


def meter_peak_match_field() -> serializers.Field:
    return choice_field(
        list(reports.METER_PEAK_MATCHES), allow_null=True, help_text=METER_PEAK_MATCH_HELP
    )


def source_field() -> serializers.Field:
    return choice_field(list(provenance.SOURCES), help_text=SOURCE_HELP)


class RollingMonthSerializer(AnswerSerializer):
    month = month_field()
    peak_kw = kw(allow_null=True, help_text="The month's figure (kW) from its source.")
    billed_kw = kw()
    missing = serializers.BooleanField()
    # A serializer is itself a Field, whose ``source`` attribute the stubs type; the
    # metaclass takes declared fields out of the class, so the name is free at run time.
    source = source_field()  # type: ignore[assignment]
    coverage = Number(
        allow_null=True,
        help_text="Share of the month's quarters our samples cover completely; null: none.",
    )
    counted = serializers.BooleanField(
        help_text="Counts in the average (a missing month does only under the floor policy)."
    )


class RollingAverageSerializer(AnswerSerializer):
    kw = kw()
    months = RollingMonthSerializer(many=True)
    missing_month_policy = choice_field(
        [provenance.FLOOR, provenance.EXCLUDE],
        help_text=(
            "CAPACITY_MISSING_MONTH: floor, a month without any figure counts 2.5 kW; "
            "exclude, it is left out of the average."
        ),
    )


class ProvenanceSerializer(AnswerSerializer):
    """The month's figure, its source, and each source's own figure."""

    # A serializer is itself a Field, whose ``source`` attribute the stubs type; the
    # metaclass takes declared fields out of the class, so the name is free at run time.
    source = source_field()  # type: ignore[assignment]
    measured_kw = kw(allow_null=True)
    meter_reported_kw = kw(allow_null=True, help_text="From the meter's telegram.")
    meter_closed = serializers.BooleanField(help_text="The meter has closed the month.")
    imported_kw = kw(allow_null=True, help_text="The grid operator's highest quarter.")
    kw = kw(allow_null=True, help_text="The month's figure (kW) from its source.")
    coverage = Number(allow_null=True)


class TariffSerializer(AnswerSerializer):
    """The capacity price for the month's year; null: no area and no price set."""

    status = choice_field(
        [
            tariffs.TABLE,
            tariffs.OVERRIDE,
            tariffs.SOCIAL,
            tariffs.NO_CAPACITY_TARIFF,
            tariffs.UNPRICED,
        ],
        help_text=(
            "table: the area's published price of that year; override: the device's own "
            "price; social-tariff: exempt; no-capacity-tariff: Wallonia or Brussels, "
            "which bill households no measured peak; unpriced: no published price found "
            "for that year."
        ),
    )
    network_area = serializers.CharField(allow_null=True)
    region = serializers.CharField(allow_null=True)
    year = serializers.IntegerField()
    price_eur_per_kw_year = Number(allow_null=True, help_text="Excl. VAT.")
    vat_rate = Number(allow_null=True)


class CompletenessSerializer(AnswerSerializer):
    quarters_expected = serializers.IntegerField()
    quarters_with_data = serializers.IntegerField()
    quarters_complete = serializers.IntegerField()
    ratio = Number()


class CostSerializer(AnswerSerializer):
    """At the 12-month average and the month's own year's price; null: no price."""

    price_eur_per_kw_year = Number(help_text="Excl. VAT.")
    yearly_eur = Number(help_text="Excl. VAT.")
    monthly_eur = Number(help_text="Excl. VAT.")
    vat_rate = Number(allow_null=True)
    yearly_eur_incl_vat = Number(allow_null=True)
    monthly_eur_incl_vat = Number(allow_null=True)
    price_source = choice_field([tariffs.TABLE, tariffs.OVERRIDE, tariffs.SOCIAL])
    tariff_year = serializers.IntegerField(allow_null=True)


class MonthReportSerializer(AnswerSerializer):
    device_id = serializers.CharField()
    month = month_field()
    timezone = serializers.CharField()
    peak = PeakSerializer(allow_null=True)
    billed_peak_kw = kw(help_text="max(peak, 2.5 kW).")
    rolling_average = RollingAverageSerializer()
    meter_reported_peak = MeterPeakSerializer(allow_null=True)
    meter_peak_match = meter_peak_match_field()
    completeness = CompletenessSerializer()
    top_quarters = QuarterSerializer(many=True)
    estimated_cost = CostSerializer(allow_null=True)
    register_breaks = RegisterBreakSerializer(
        many=True, help_text="Register breaks whose new segment starts in the month."
    )
    tariff = TariffSerializer(allow_null=True)


class MonthTableRowSerializer(AnswerSerializer):
    month = month_field()
    peak_kw = kw(allow_null=True)
    peak_quarter_start = LocalDateTimeField(allow_null=True)
    billed_peak_kw = kw()
    meter_reported_peak = MeterPeakSerializer(allow_null=True)
    meter_peak_match = meter_peak_match_field()
    provenance = ProvenanceSerializer()
    rolling_average_kw = kw(help_text="The 12-month average ending with this month.")
    estimated_cost = CostSerializer(allow_null=True)


class MonthTableSerializer(AnswerSerializer):
    device_id = serializers.CharField()
    timezone = serializers.CharField()
    months = MonthTableRowSerializer(many=True, help_text="Newest first.")


class QuarterDifferenceSerializer(AnswerSerializer):
    start = LocalDateTimeField()
    ours_kw = kw()
    operator_kw = kw()
    difference_kw = kw(help_text="ours - operator.")


class MonthReconciliationSerializer(AnswerSerializer):
    month = month_field()
    our_peak_kw = kw(allow_null=True)
    our_peak_quarter_start = LocalDateTimeField(allow_null=True)
    operator_peak_kw = kw(allow_null=True, help_text="The operator's highest imported quarter.")
    operator_peak_quarter_start = LocalDateTimeField(allow_null=True)
    quarters_both = serializers.IntegerField(help_text="Quarters both sides have.")
    largest_difference = QuarterDifferenceSerializer(
        allow_null=True, help_text="Of the quarters both have, the one that differs most."
    )
    only_ours = serializers.IntegerField(help_text="Quarters we have and the operator lacks.")
    only_operator = serializers.IntegerField(help_text="Quarters the operator has, we lack.")
    only_ours_first = serializers.ListField(
        child=LocalDateTimeField(), help_text="The first few of them (quarter starts)."
    )
    only_operator_first = serializers.ListField(child=LocalDateTimeField())


class ReconciliationSerializer(AnswerSerializer):
    device_id = serializers.CharField()
    timezone = serializers.CharField()
    months = MonthReconciliationSerializer(many=True, help_text="Newest first.")


class DayQuartersSerializer(AnswerSerializer):
    device_id = serializers.CharField()
    date = serializers.DateField()
    timezone = serializers.CharField()
    quarters = QuarterSerializer(
        many=True, help_text="Every quarter of the local day: 92, 96 or 100."
    )


LatestSampleSerializer = type(
    "LatestSampleSerializer",
    (AnswerSerializer,),
    {
        "__doc__": "The latest sample; null: the device sent none yet.",
        "__module__": __name__,
        **{name: sample_field(name) for name in reports._LATEST_FIELDS},
    },
)


class QuarterSoFarSerializer(AnswerSerializer):
    """The running quarter; absent when there is no sample."""

    start = LocalDateTimeField()
    end = LocalDateTimeField()
    average_so_far_kw = kw()
    projected_kw = kw()
    threshold_kw = kw()
    headroom_w = Number()
    exceeds_threshold = serializers.BooleanField()
    energy_so_far_kwh = Number(help_text="Import energy of the quarter so far.")
    certainly_exceeds_threshold = serializers.BooleanField(
        help_text=(
            "The peak is certainly broken: the energy so far already exceeds threshold / 4 "
            "kWh, so the quarter ends above the threshold whatever happens next."
        )
    )


class MonthSoFarSerializer(AnswerSerializer):
    """The month's peak before the running quarter."""

    month = month_field()
    peak_so_far_kw = kw(allow_null=True)
    billed_peak_so_far_kw = kw()


class RealtimeSerializer(AnswerSerializer):
    device_id = serializers.CharField()
    timezone = serializers.CharField()
    latest = LatestSampleSerializer(allow_null=True)
    age_s = Number(allow_null=True, help_text="Seconds since the latest sample.")
    quarter = QuarterSoFarSerializer(required=False)
    month = MonthSoFarSerializer(required=False)

    def to_representation(self, instance: reports.Realtime) -> dict:
        """No age_s (capacity.realtime.with_age adds it last when serving, after what is
        cached); no quarter and month before the first sample."""
        answer = super().to_representation(instance)
        del answer["age_s"]
        if instance.latest is None:
            del answer["quarter"], answer["month"]
        return answer


# --- query parameters ----------------------------------------------------------------


@extend_schema_field(MONTH_PARAM)
class MonthParamField(BlankIsAbsent):
    def to_internal_value(self, data: object) -> Month:
        try:
            return Month.parse(str(data))
        except ValueError as exc:
            raise serializers.ValidationError(str(exc)) from None


class MonthPath(QuerySerializer):
    month = MonthParamField()


MONTH_PATH_PARAM = OpenApiParameter(
    "month",
    MONTH_PARAM,
    OpenApiParameter.PATH,
    description="A calendar month in the device's zone, YYYY-MM, 2000 to 2099.",
)


class MonthsQuery(QuerySerializer):
    end = MonthParamField(required=False, help_text="The newest month; default: this month.")
    count = WholeNumberField(
        min_value=1,
        max_value=reports.MONTH_TABLE_MAX,
        default=13,
        help_text="How many months.",
        error_messages={
            key: f"Use a whole number from 1 to {reports.MONTH_TABLE_MAX}."
            for key in ("invalid", "min_value", "max_value", "max_string_length")
        },
    )


@extend_schema_field(DAY_PARAM)
class DayParamField(serializers.Field):
    def to_internal_value(self, data: object) -> date:
        try:
            day = date.fromisoformat(str(data))
        except ValueError:
            raise serializers.ValidationError("Use YYYY-MM-DD.") from None
        if not rules.FIRST_YEAR <= day.year <= rules.LAST_YEAR:
            raise serializers.ValidationError(
                f"Use a day from {rules.FIRST_YEAR} to {rules.LAST_YEAR}."
            )
        return day


class QuartersQuery(QuerySerializer):
    date = DayParamField(
        help_text="A local day, YYYY-MM-DD, 2000 to 2099.",
        error_messages={"required": "Use YYYY-MM-DD.", "null": "Use YYYY-MM-DD."},
    )


class RegisterBreaksQuery(QuerySerializer):
    start = MomentField(required=False, help_text="From this moment on; default: the first.")
    end = MomentField(required=False, help_text="Before this moment; default: no end. After start.")

    def validate(self, values: dict) -> dict:
        return self.validate_order(values)
