"""Register segments: where a device's meter registers stop being one series.

Between two consecutive samples of a device (time order), a register step that goes
down, or that implies more power than any household connection carries, is not
consumption: the grid operator replaced the meter (registers restart near 0), or the
edge was pointed at another meter. The later sample starts a new segment and the pair
is recorded as a RegisterBreak. Energy is counted only inside segments: every reader of
registers (capacity quarters, series, realtime) subtracts the steps of the breaks before
a moment (``offset``), so the registers read as one continuous series that stays flat
across each step: the unmeasured gap is not invented, and no boundary is interpolated
across a step.

One rule, one SQL statement (``refresh_breaks_over``): the ingest steps run it over the
time ranges of a chunk of devices' batches, each widened to the stored samples either
side (a backlog landing before or between stored samples included), ``rebuild_breaks``
over all of a device's samples.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from django.db import transaction

from telemetry.storage import plan_for

# A Belgian household connection is at most a few tens of kW (3 x 63 A at 400 V is about
# 44 kVA; anything larger is a professional connection). 250 kW between two readings is
# several times that, so no real consumption reaches it, while a swapped meter's restart
# (or a jump to another meter's registers) is millions of times above it within seconds.
MAX_HOUSEHOLD_POWER_W = 250_000.0
# DSMR registers count whole Wh: a step within one unit is rounding, never a break (and
# keeps two samples a few milliseconds apart from looking impossible).
REGISTER_RESOLUTION_KWH = 0.001

WENT_DOWN = "went-down"
IMPOSSIBLE_STEP = "impossible-step"

_TABLE = "telemetry_registerbreak"
_SAMPLES = "telemetry_sample"
# Far enough out for "every later sample of the device".
_ALL_TO = datetime(2200, 1, 1, tzinfo=UTC)


def _went_down(register: str) -> str:
    return f"{register} < prev_{register} - {REGISTER_RESOLUTION_KWH}"


def _impossible(register: str) -> str:
    per_second_kwh = MAX_HOUSEHOLD_POWER_W / 1000 / 3600
    epoch_sql = plan_for().epoch_sql
    step = f"{register} - prev_{register}"
    # The first test is cheap and false for most pairs (a step within one register
    # unit); the time between the readings is computed only for the others.
    return (
        f"({step} > {REGISTER_RESOLUTION_KWH} AND {step} > {REGISTER_RESOLUTION_KWH} + "
        f"({epoch_sql('ts')} - {epoch_sql('prev_ts')}) * {per_second_kwh!r})"
    )


_COLUMNS = "ts, prev_ts, prev_import_kwh, prev_export_kwh, import_kwh, export_kwh, kind"


@dataclass(frozen=True)
class RegisterReading:
    """One reading's registers as stored (raw; export None where the meter has none)."""

    ts: datetime
    import_kwh: float
    export_kwh: float | None = None


def is_break(earlier: RegisterReading, later: RegisterReading) -> bool:
    """The rule ``refresh_breaks_over`` applies in SQL, for two consecutive readings in
    memory: where a cache carries an answer across readings the steps have not seen yet
    (capacity.reports.basis_after), it must stop where the steps will find a
    break. Export counts only where both readings have it, as in SQL."""
    seconds = (later.ts - earlier.ts).total_seconds()
    most = REGISTER_RESOLUTION_KWH + seconds * (MAX_HOUSEHOLD_POWER_W / 1000 / 3600)
    for before, after in (
        (earlier.import_kwh, later.import_kwh),
        (earlier.export_kwh, later.export_kwh),
    ):
        if before is None or after is None:
            continue
        # Written as the SQL writes each test, so both round alike.
        went_down = after < before - REGISTER_RESOLUTION_KWH
        step = after - before
        if went_down or (step > REGISTER_RESOLUTION_KWH and step > most):
            return True
    return False


# The spans a refresh covers, passed as one parameter (StoragePlan.rows_sql).
SPAN_COLUMNS = (("idx", "int"), ("device", "int"), ("lo", "ts"), ("hi", "ts"))


def _window_sql() -> str:
    """For each span (idx, device, lo, hi) of %(spans)s: the breaks the samples show
    from pred(lo) to succ(hi) (found = 1), and those recorded there (found = 0), in one
    statement for all of them. pred is the device's last stored sample before lo, succ
    its first after hi. Export counts only where both samples have it (a comparison
    with NULL is never true). Rows: found, device, then _COLUMNS."""
    went_down = f"{_went_down('import_kwh')} OR {_went_down('export_kwh')}"
    impossible = f"{_impossible('import_kwh')} OR {_impossible('export_kwh')}"
    plan = plan_for()
    spans = plan.rows_sql("spans", SPAN_COLUMNS)
    each_sample = plan.join_each(
        _SAMPLES, "t", "t.device_id = b.device AND t.ts >= b.lo AND t.ts <= b.hi"
    )
    each_break = plan.join_each(
        _TABLE, "r", "r.device_id = b.device AND r.ts > b.lo AND r.ts <= b.hi"
    )
    # Only our own names and constants are formatted in; values go as parameters.
    return f"""
    WITH spans AS ({spans}),
    bounds AS (
        SELECT s.idx, s.device,
            COALESCE((SELECT max(ts) FROM {_SAMPLES}
                      WHERE device_id = s.device AND ts < s.lo), s.lo) AS lo,
            COALESCE((SELECT min(ts) FROM {_SAMPLES}
                      WHERE device_id = s.device AND ts > s.hi), s.hi) AS hi
        FROM spans s
    ),
    pairs AS (
        SELECT b.device, t.ts, t.energy_import_kwh AS import_kwh,
            t.energy_export_kwh AS export_kwh,
            LAG(t.ts) OVER w AS prev_ts,
            LAG(t.energy_import_kwh) OVER w AS prev_import_kwh,
            LAG(t.energy_export_kwh) OVER w AS prev_export_kwh
        FROM bounds b {each_sample}
        WINDOW w AS (PARTITION BY b.idx ORDER BY t.ts)
    )
    SELECT 1, device, ts, prev_ts, prev_import_kwh, prev_export_kwh, import_kwh, export_kwh,
        CASE WHEN {went_down} THEN '{WENT_DOWN}' ELSE '{IMPOSSIBLE_STEP}' END
    FROM pairs WHERE prev_ts IS NOT NULL AND ({went_down} OR {impossible})
    UNION ALL
    SELECT 0, r.device_id, r.ts, r.prev_ts, r.prev_import_kwh, r.prev_export_kwh,
        r.import_kwh, r.export_kwh, r.kind
    FROM bounds b {each_break}
    """  # noqa: S608


_DELETE = f"DELETE FROM {_TABLE} WHERE device_id = %s AND ts = %s"  # noqa: S608
_UPSERT = f"""
INSERT INTO {_TABLE} (device_id, {_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)
ON CONFLICT (device_id, ts) DO UPDATE SET
    prev_ts = excluded.prev_ts, prev_import_kwh = excluded.prev_import_kwh,
    prev_export_kwh = excluded.prev_export_kwh, import_kwh = excluded.import_kwh,
    export_kwh = excluded.export_kwh, kind = excluded.kind
"""  # noqa: S608


def refresh_breaks(device_pk: int, oldest: datetime, newest: datetime) -> None:
    """Make the recorded breaks match the stored samples from the last sample before
    ``oldest`` to the first after ``newest``. Idempotent: a retried batch changes
    nothing."""
    refresh_breaks_over([(device_pk, oldest, newest)])


def refresh_breaks_over(spans: Sequence[tuple[int, datetime, datetime]]) -> set[int]:
    """``refresh_breaks`` for every (device, oldest, newest) span at once: one statement
    for all of them, and writes only where the breaks changed (rare: a meter swap, or a
    backlog landing beside one). Spans of one device may overlap. Returns the devices
    whose breaks changed."""
    if not spans:
        return set()
    plan = plan_for()
    rows = [(idx, device, oldest, newest) for idx, (device, oldest, newest) in enumerate(spans)]
    with transaction.atomic(savepoint=False), plan.prepared_cursor() as cursor:
        # Concurrent batches of one device must not each miss the other's rows.
        plan.lock_register_breaks(cursor, [device for device, _, _ in spans])
        cursor.execute(_window_sql(), {"spans": plan.rows_param(rows)})
        found = cursor.fetchall()
        if not found:
            return set()
        # Values go back as the database gave them: no conversion can make them differ.
        # A pair lies in every window holding its later sample, so overlapping windows
        # agree on it.
        detected = {(row[1], row[2]): tuple(row[2:]) for row in found if row[0] == 1}
        recorded = {(row[1], row[2]): tuple(row[2:]) for row in found if row[0] == 0}
        stale = [key for key in recorded if key not in detected]
        changed = [
            (device, *row)
            for (device, ts), row in detected.items()
            if recorded.get((device, ts)) != row
        ]
        if stale:
            cursor.executemany(_DELETE, stale)
        if changed:
            cursor.executemany(_UPSERT, changed)
    return {device for device, _ in stale} | {row[0] for row in changed}


def rebuild_breaks(device_pk: int) -> None:
    """The same rule over every stored sample of the device (manage.py rebuild_capacity).

    From the device's oldest stored sample on: a break at or before it is kept, because
    its samples are gone (telemetry.retention) and nothing stored can refute it, while
    the quarters kept from that time still count it."""
    from telemetry.models import Sample

    oldest = Sample.objects.filter(device_id=device_pk).order_by("ts").values_list("ts")[:1]
    found = list(oldest)
    if not found:
        return
    refresh_breaks(device_pk, found[0][0], _ALL_TO)


# --- reading registers across segments -------------------------------------------------


def offset_sql(moment: str, *, device: str, register: str = "import") -> str:
    """SQL: the sum of the steps of ``device``'s breaks at or before ``moment`` (columns
    or expressions), to subtract from a raw ``register`` value read at that moment."""
    step = f"b.{register}_kwh - b.prev_{register}_kwh"
    return (
        f"(SELECT COALESCE(sum({step}), 0) FROM {_TABLE} b "  # noqa: S608
        f"WHERE b.device_id = {device} AND b.ts <= {moment})"
    )


def gap_sql(first_ts: str, last_ts: str, *, device: str) -> str:
    """SQL: seconds between first_ts and last_ts that lie across a step of ``device``
    (unmeasured)."""
    epoch_sql = plan_for().epoch_sql
    return (
        f"(SELECT COALESCE(sum({epoch_sql('b.ts')} - {epoch_sql('b.prev_ts')}), 0) "  # noqa: S608
        f"FROM {_TABLE} b WHERE b.device_id = {device} "
        f"AND b.prev_ts >= {first_ts} AND b.ts <= {last_ts})"
    )


@dataclass(frozen=True)
class Offsets:
    """A device's breaks in memory: the continuous value of a raw register reading."""

    starts: list[datetime]  # ts of each break, ascending
    import_sums: list[float]  # cumulative import steps up to and including each break
    export_sums: list[float]  # likewise for export (a step without export counts 0)

    @classmethod
    def of_device(cls, device_pk: int) -> Offsets:
        from telemetry.models import RegisterBreak

        rows = (
            RegisterBreak.objects.filter(device_id=device_pk)
            .order_by("ts")
            .values_list("ts", "prev_import_kwh", "import_kwh", "prev_export_kwh", "export_kwh")
        )
        starts, imports, exports = [], [], []
        for ts, prev_import, import_, prev_export, export in rows:
            starts.append(ts)
            imports.append(import_ - prev_import)
            exports.append(0.0 if export is None or prev_export is None else export - prev_export)
        return cls(starts, list(itertools.accumulate(imports)), list(itertools.accumulate(exports)))

    def _sum(self, sums: list[float], moment: datetime) -> float:
        i = bisect.bisect_right(self.starts, moment)
        return sums[i - 1] if i else 0.0

    def import_step_at(self, moment: datetime) -> float:
        """What the breaks up to ``moment`` take from a raw import reading there."""
        return self._sum(self.import_sums, moment)

    def import_at(self, moment: datetime, raw: float) -> float:
        return raw - self.import_step_at(moment)

    def export_at(self, moment: datetime, raw: float | None) -> float | None:
        return None if raw is None else raw - self._sum(self.export_sums, moment)
