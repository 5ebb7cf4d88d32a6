"""The capacity answers survive raw-sample retention (RAW_SAMPLE_RETENTION_MONTHS).

Sixteen months of a household's history, with a meter swap early on, are written as the
demo writes its history; the answers of the capacity, register-break and series endpoints are
recorded through the API; ``manage.py prune_samples`` runs as an operator runs it, with
RAW_SAMPLE_RETENTION_MONTHS=13; and every answer is the same afterwards, also after
``rebuild_capacity``. Raw samples older than the horizon are gone, newer ones stay, a
late batch inside the retention still goes in (and its quarters are right), and one
older than the horizon is refused.

Runs on the plan of the pass's database: SQLite and PostgreSQL in their passes, and
TimescaleDB in the pass scripts/test.sh runs on TIMESCALE_DATABASE_URL (where the
chunks are compressed first and the aggregates' policies run after the prune).
"""

from __future__ import annotations

import io
import json
import re
import signal
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from django.core.management import call_command
from django.db import connection
from django.test import override_settings
from django.utils import timezone

import p1wire as wire
from capacity.materialize import rebuild
from capacity.rules import Month
from demo import history
from demo.bulkload import insert_history
from p1common.processes import ROOT, child_env, database_url, manage, start_child
from telemetry.models import RegisterBreak, Sample
from telemetry.pipeline import ingest_batch
from telemetry.retention import horizon, months_before
from telemetry.segments import Offsets
from telemetry.storage import plan_for
from telemetry.tokens import issue_token
from tests.capacity import reference
from tests.conftest import bearer
from tests.storage.test_plans import PLANS

pytestmark = pytest.mark.django_db(transaction=True)

BRUSSELS = ZoneInfo("Europe/Brussels")
MONTHS = 16
RETENTION = 13
# The household's new meter: registers from near 0, as after a swap by the grid operator.
NEW_METER = history.Registers(0.5, 0.2, 0.1, 0.05)


@pytest.fixture(params=PLANS)
def plan(request):
    chosen = plan_for()
    assert chosen.name == request.param
    return chosen


def _slice(columns: list, lo: int, hi: int) -> list:
    return [None if c is None else c[lo:hi] for c in columns]


def _take(columns: list, keep) -> list:
    ts = columns[0]
    index = [i for i, moment in enumerate(ts) if keep(moment)]
    return [None if c is None else [c[i] for i in index] for c in columns]


def _samples(columns: list) -> list[dict[str, Any]]:
    """Wire samples from columns, as an edge would post them."""
    out = []
    for row in zip(*[c or [None] * len(columns[0]) for c in columns], strict=True):
        sample = {}
        for name, value in zip(wire.SAMPLE_FIELDS, row, strict=True):
            if value is not None:
                sample[name] = value.isoformat() if isinstance(value, datetime) else value
        out.append(sample)
    return out


class Household:
    """Sixteen months up to an hour ago, every 5 minutes (complete quarters); the meter is
    swapped 40 days in; six hours 20 days ago are held back as a late batch."""

    def __init__(self, now: datetime) -> None:
        self.now = now
        end = now - timedelta(hours=1)
        self.start = months_before(now, MONTHS).replace(minute=0, second=0, microsecond=0)
        self.swap = self.start + timedelta(days=40)
        old = history.generate(1, history.grid(self.start, self.swap, history.STEP_S), BRUSSELS)
        new = history.generate(
            1,
            history.grid(self.swap + timedelta(seconds=history.STEP_S), end, history.STEP_S),
            BRUSSELS,
            before=NEW_METER,
        )
        columns = [a if a is None else a + b for a, b in zip(old, new, strict=True)]
        self.late_lo = (end - timedelta(days=20)).replace(minute=0, second=0, microsecond=0)
        self.late_hi = self.late_lo + timedelta(hours=6)
        self.late = _take(columns, lambda t: self.late_lo <= t < self.late_hi)
        self.loaded = _take(columns, lambda t: not self.late_lo <= t < self.late_hi)

    def months(self) -> list[Month]:
        first, last = Month.of(self.start, BRUSSELS), Month.of(self.now, BRUSSELS)
        months = [first]
        while months[-1] != last:
            months.append(months[-1].shift(1))
        return months


def _load(device, columns: list) -> None:
    """The demo's bulk path (demo.bulkload), then one capacity rebuild, as the demo
    writes its 13 months; a late batch goes through the API below."""
    for lo in range(0, len(columns[0]), history.CHUNK):
        insert_history(device.pk, _slice(columns, lo, lo + history.CHUNK))
    rebuild(device.pk)


def _answers(client, device, household: Household) -> dict[str, Any]:
    token = issue_token(device, "read")[1]

    def get(path: str, **params: Any) -> Any:
        response = client.get(
            path, {"device_id": device.device_id, **params}, headers=bearer(token)
        )
        assert response.status_code == 200, (path, response.content[:300])
        return response.json()

    months = household.months()
    days = [household.start + timedelta(days=d) for d in (3, 40, 41, 200)]
    answers: dict[str, Any] = {
        "months": get("/v1/capacity/months", end=str(months[-1]), count=len(months)),
        "breaks": get("/v1/capacity/register-breaks"),
        "days": get(
            "/v1/series",
            interval="1d",
            start=household.start.isoformat(),
            end=household.now.isoformat(),
        ),
    }
    for month in months:
        answers[f"month {month}"] = get(f"/v1/capacity/month/{month}")
    for day in days:
        local = day.astimezone(BRUSSELS).date().isoformat()
        answers[f"quarters {local}"] = get("/v1/capacity/quarters", date=local)
        answers[f"15m {local}"] = get(
            "/v1/series",
            interval="15m",
            start=day.isoformat(),
            end=(day + timedelta(days=1)).isoformat(),
        )
    return answers


def _compress_and_run_policies(when: str) -> None:
    """TimescaleDB: what its background jobs would do (run here in the foreground)."""
    if plan_for().name != "timescale":
        return
    procs = {"compress": "policy_compression", "refresh": "policy_refresh_continuous_aggregate"}
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT job_id FROM timescaledb_information.jobs WHERE proc_name = %s ORDER BY job_id",
            [procs[when]],
        )
        for (job,) in cursor.fetchall():
            cursor.execute("CALL run_job(%s)", [job])


def _prune_as_operator() -> tuple[datetime, datetime]:
    """manage.py prune_samples with the retention set; (horizon, before) it reports."""
    result = subprocess.run(
        manage("prune_samples"),
        cwd=ROOT,
        env=child_env(DATABASE_URL=database_url(), RAW_SAMPLE_RETENTION_MONTHS=str(RETENTION)),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    found = re.fullmatch(
        r"pruned (\d+) raw samples older than (\S+) \(retention 13 months: horizon (\S+)\)\n",
        result.stdout,
    )
    assert found, result.stdout
    assert int(found.group(1)) > 0
    return datetime.fromisoformat(found.group(3)), datetime.fromisoformat(found.group(2))


def test_capacity_answers_survive_pruning_raw_samples(plan, client, device):
    household = Household(timezone.now())
    _load(device, household.loaded)
    _compress_and_run_policies("compress")
    (swap,) = RegisterBreak.objects.filter(device=device)
    before_prune = _answers(client, device, household)
    assert before_prune["breaks"]["register_breaks"], "the meter swap is a register break"
    samples_before = Sample.objects.filter(device=device).count()

    limit, gone_before = _prune_as_operator()
    # The command's clock ran on a little: its horizon is this one or the next hour.
    assert timedelta(0) <= limit - horizon(household.now, RETENTION) <= timedelta(hours=1)
    # Whole chunks go on TimescaleDB: up to one chunk older than the horizon may stay.
    assert gone_before <= limit
    if plan.name != "timescale":
        assert gone_before == limit
    assert not Sample.objects.filter(device=device, ts__lt=gone_before).exists()
    kept = Sample.objects.filter(device=device, ts__gte=limit).count()
    assert kept == len([t for t in household.loaded[0] if t >= limit])
    assert Sample.objects.filter(device=device).count() < samples_before
    assert swap.ts < gone_before, "the swap's own samples are pruned"

    _compress_and_run_policies("refresh")
    assert _answers(client, device, household) == before_prune
    call_command("rebuild_capacity", device.device_id, stdout=io.StringIO())
    assert _answers(client, device, household) == before_prune
    assert list(RegisterBreak.objects.filter(device=device).values_list("ts")) == [(swap.ts,)]


def test_a_late_batch_after_pruning_goes_in_and_an_older_one_is_refused(plan, client, device):
    household = Household(timezone.now())
    _load(device, household.loaded)
    _compress_and_run_policies("compress")
    _prune_as_operator()
    before = _answers(client, device, household)
    token = issue_token(device, "ingest")[1]

    def post(samples: list[dict[str, Any]]):
        return client.post(
            "/v1/ingest",
            json.dumps({"samples": samples}),
            content_type="application/json",
            headers=bearer(token),
        )

    with override_settings(RAW_SAMPLE_RETENTION_MONTHS=RETENTION):
        late = _samples(household.late)
        response = post(late)
        assert response.status_code == 200, response.content[:500]
        assert response.json() == {"received": len(late), "inserted": len(late), "duplicates": 0}

        too_old = history.generate(
            2,
            history.grid(household.start, household.start + timedelta(hours=1), history.STEP_S),
            BRUSSELS,
        )
        refused = post(_samples(too_old))
        assert refused.status_code == 422
        errors = refused.json()["errors"]
        assert {e["field"] for e in errors} == {"ts"}
        assert len(errors) == len(too_old[0])
        assert "RAW_SAMPLE_RETENTION_MONTHS" in errors[0]["detail"]
    _compress_and_run_policies("refresh")

    after = _answers(client, device, household)
    # The late month changes, and so do the later months' 12-month averages; nothing of
    # the pruned range does.
    late_month = Month.of(household.late_lo, BRUSSELS)
    later = [
        m for m in household.months() if (m.year, m.month) >= (late_month.year, late_month.month)
    ]
    may_change = {"months", "days", *(f"month {m}" for m in later)}
    changed = {key for key in before if after[key] != before[key]}
    assert changed <= may_change, changed
    assert f"month {late_month}" in changed
    # The late quarters are what the rules say of the raw samples now stored around them.
    raw = list(
        Sample.objects.filter(
            device=device,
            ts__gte=household.late_lo - timedelta(hours=1),
            ts__lt=household.late_hi + timedelta(hours=1),
        )
        .order_by("ts")
        .values_list("ts", "energy_import_kwh")
    )
    offsets = Offsets.of_device(device.pk)
    continuous = [(ts, offsets.import_at(ts, value)) for ts, value in raw]
    # The six late hours may cross local midnight: every local day they touch.
    days = sorted(
        {t.astimezone(BRUSSELS).date().isoformat() for t in (household.late_lo, household.late_hi)}
    )
    reader = bearer(issue_token(device, "read")[1])
    quarters = [
        quarter
        for day in days
        for quarter in client.get(
            "/v1/capacity/quarters", {"device_id": device.device_id, "date": day}, headers=reader
        ).json()["quarters"]
    ]
    checked = 0
    for quarter in quarters:
        start = datetime.fromisoformat(quarter["start"]).astimezone(UTC)
        if household.late_lo <= start < household.late_hi:
            expected = reference.quarter_kw(continuous, start)
            assert quarter["kw"] == pytest.approx(expected["kw"], abs=1e-3), quarter
            assert not quarter["incomplete"]
            checked += 1
    assert checked == 24


def test_prune_command_with_retention_off_deletes_nothing(device):
    ingest_batch(device, history.generate(3, history.grid(*_hours(2), 300), BRUSSELS))
    result = subprocess.run(
        manage("prune_samples"),
        cwd=ROOT,
        env=child_env(DATABASE_URL=database_url(), RAW_SAMPLE_RETENTION_MONTHS=None),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "RAW_SAMPLE_RETENTION_MONTHS is unset or 0" in result.stdout
    assert Sample.objects.filter(device=device).count() == 25


def _hours(count: int) -> tuple[datetime, datetime]:
    end = timezone.now().replace(minute=0, second=0, microsecond=0)
    return end - timedelta(hours=count), end


def test_prune_command_repeats_until_sigterm(device):
    child = start_child(
        "prune",
        manage("prune_samples", "--every", "1d"),
        child_env(DATABASE_URL=database_url(), RAW_SAMPLE_RETENTION_MONTHS=str(RETENTION)),
    )
    try:
        child.wait_for_line(r"^pruned 0 raw samples older than ")
        assert child.running()
        assert child.terminate(signal.SIGTERM, timeout_s=30) == 0
    finally:
        child.stop()


@pytest.mark.parametrize("every", ["daily", "30s", "-1d"])
def test_prune_command_refuses_a_bad_period_in_one_line(every):
    result = subprocess.run(
        [sys.executable, "manage.py", "prune_samples", f"--every={every}"],
        cwd=ROOT,
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0
    (line,) = result.stderr.strip().splitlines()
    assert "--every" in line
