"""`scripts/demo.sh --seed 2` on a database a `--seed 0` demo filled: another meter.

The reported case: the gap fill bridged the old meter's registers to the new meter's,
and the dashboard showed a monthly peak of 31,989.71 kW. Now the gap continues the old
meter, the new meter's first reading starts a new register segment, and every figure
stays a household's.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from django.utils import timezone

from capacity import reports
from capacity.queries import top_quarters
from capacity.rules import Month
from capacity.serializers import MonthReportSerializer, RealtimeSerializer
from demo import bootstrap
from edgeclient.household import MeterModel
from telemetry.models import RegisterBreak, Sample
from telemetry.pipeline import ingest_batch
from telemetry.validation import validate_samples

pytestmark = pytest.mark.django_db(transaction=True)

NOW = datetime(2026, 11, 20, 14, 7, 31, tzinfo=UTC)
LATER = NOW + timedelta(hours=3)
BRUSSELS = ZoneInfo("Europe/Brussels")
# Far above this household's quarters, far below what bridging two meters produces.
HOUSEHOLD_KW = 25.0


def live_readings(device, seed: int, start: datetime, count: int) -> None:
    """What the edge uploads from simulate_p1 --seed: a reading every 10 s."""
    first = int(start.timestamp())
    meter = MeterModel(seed, first)
    samples = []
    for i in range(count):
        t = meter.telegram(first + 10 * i)
        samples.append(
            {
                "ts": datetime.fromtimestamp(t.second, UTC).isoformat(),
                "power_w": t.power_w,
                "energy_import_kwh": round(sum(t.import_kwh), 3),
                "energy_export_kwh": round(sum(t.export_kwh), 3),
            }
        )
    columns, errors = validate_samples(samples, now=timezone.now())
    assert not errors, errors[:2]
    ingest_batch(device, columns)


def november_quarters(device):
    return top_quarters(device.pk, *Month(2026, 11).bounds(BRUSSELS), limit=5)


@pytest.mark.parametrize(
    ("old", "new"),
    [
        (1, 2),  # the report: the default seed, then --seed 2 (some registers lower)
        (4, 0),  # seed 0's four registers are all above seed 4's: once bridged
    ],
)
def test_another_seed_is_another_meter_and_adds_no_energy(device, old, new):
    bootstrap.ensure_history(device, now=NOW, months=1, seed=old)
    gap = bootstrap.ensure_history(device, now=LATER, months=1, seed=new)
    assert gap.meter_changed
    assert gap.inserted == 3 * 12
    live_readings(device, seed=new, start=LATER + timedelta(seconds=5), count=30)

    (found,) = RegisterBreak.objects.filter(device=device)
    gap_end = Sample.objects.filter(device=device, ts__lte=LATER).latest("ts")
    assert found.prev_ts == gap_end.ts
    assert found.ts == gap_end.ts + timedelta(seconds=5 + LATER.timestamp() % 300)
    assert november_quarters(device)[0].kw < HOUSEHOLD_KW
    month = MonthReportSerializer(reports.month_report(device, Month(2026, 11))).data
    assert month["peak"]["kw"] < HOUSEHOLD_KW
    assert [b["kind"] for b in month["register_breaks"]] == [found.kind]
    realtime = RealtimeSerializer(reports.realtime(device, LATER + timedelta(minutes=5))).data
    assert -HOUSEHOLD_KW * 1000 < realtime["quarter"]["headroom_w"] < HOUSEHOLD_KW * 4000
    assert realtime["quarter"]["projected_kw"] < HOUSEHOLD_KW


def test_the_same_seed_is_the_same_meter_and_is_bridged(device):
    bootstrap.ensure_history(device, now=NOW, months=1, seed=1)
    gap = bootstrap.ensure_history(device, now=LATER, months=1, seed=1)
    assert not gap.meter_changed
    live_readings(device, seed=1, start=LATER + timedelta(seconds=5), count=30)
    assert not RegisterBreak.objects.filter(device=device).exists()
    assert november_quarters(device)[0].kw < HOUSEHOLD_KW
