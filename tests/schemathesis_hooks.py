"""schemathesis hooks for tests/test_schema_fuzz.py: the rules the schema states in
prose because JSON Schema cannot express them, applied to generated requests so that
the positive_data_acceptance check judges only what the schema can say.

- Ingest: a sample's ts lies between 2000-01-01T00:00:00Z and the server's clock plus
  5 minutes (the Sample schema's description), and two samples of one batch with the
  same ts must be the same reading. A generated moment outside that span is folded
  into it, keeping its offset; a repeated instant is moved on by a second.
- Reads: start is before end, a series holds at most 10,000 buckets, and an export
  spans at most its kind's longest span (the parameters' descriptions).

schemathesis validates a changed request again and reclassifies it, so a request
that was meant to break the schema and still does stays a negative case. Nothing here
is imported by the project: the test passes this file in SCHEMATHESIS_HOOKS.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import schemathesis

# The household's zone in the fuzz fixture (the Device default).
ZONE = ZoneInfo("Europe/Brussels")
TIMESTAMP_FIELDS = ("ts", "gas_ts", "monthly_power_peak_ts")
LOW = datetime(2000, 1, 2, tzinfo=UTC)  # a day inside the span: offsets up to 23:59


def _instant(text: Any) -> datetime | None:
    if not isinstance(text, str):
        return None
    try:
        if len(text) == 10:
            return datetime.combine(date.fromisoformat(text), time(), tzinfo=ZONE)
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else None


def _folded(moment: datetime, high: datetime) -> datetime:
    if LOW <= moment <= high:
        return moment
    return LOW + (moment - LOW) % (high - LOW)


@schemathesis.hook("map_body")
def ingest_moments_in_the_accepted_span(context: Any, body: Any) -> Any:
    if not isinstance(body, dict) or not isinstance(body.get("samples"), list):
        return body
    high = datetime.now(UTC) - timedelta(days=1)
    seen: set[datetime] = set()
    for sample in body["samples"]:
        if not isinstance(sample, dict):
            continue
        for name in TIMESTAMP_FIELDS:
            given = _instant(sample.get(name))
            if given is None:
                continue
            moment = _folded(given, high)
            if name == "ts":
                while moment in seen:
                    moment = _folded(moment + timedelta(seconds=1), high)
                seen.add(moment)
            sample[name] = moment.astimezone(given.tzinfo).isoformat()
    return body


@schemathesis.hook("filter_query")
def start_before_end(context: Any, query: Any) -> bool:
    if not isinstance(query, dict):
        return True
    start, end = _instant(query.get("start")), _instant(query.get("end"))
    return start is None or end is None or start < end


# Refusals that only the prose rules above explain. The coverage phase builds its
# requests without the map and filter hooks, so its cases can break those rules; such
# a refusal is dropped only when every error it names is one of these rules.
PROSE_RULES = (
    "Must be before end.",
    "is more than 5 minutes in the future",
    "is before 2000",
    "repeats the ts of sample ",
    "the range holds more than ",
    # /v1/export: each kind's longest span (the kind parameter's description).
    "A samples export spans at most ",
    "A quarters export spans at most ",
    "A months export spans at most ",
)


@schemathesis.hook("filter_failure")
def refused_for_a_stated_rule_only(context: Any, failure: Any, case: Any, response: Any) -> bool:
    if type(failure).__name__ != "RejectedPositiveData" or response.status_code not in (400, 422):
        return True
    try:
        errors = response.json().get("errors")
    except ValueError:
        return True
    if isinstance(errors, dict):  # a read's parameters
        details = [d for messages in errors.values() for d in messages]
    elif isinstance(errors, list):  # an ingest batch's samples
        details = [e.get("detail", "") for e in errors]
    else:
        return True
    stated = all(any(str(d).startswith(rule) for rule in PROSE_RULES) for d in details)
    return not (details and stated)
