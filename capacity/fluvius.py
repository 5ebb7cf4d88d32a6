"""The grid operator's quarter-hour values: the Mijn Fluvius export ("Rapport
downloaden", "kwartiertotalen"), imported into capacity_operator_quarter.

The format, from the public sample files and import scripts of
patrickvorgers/Home-Assistant-Import-Energy-Data (Datasources/Fluvius: README.md,
FluviusDataPrepare.py, FluviusDataPrepareEN.py and "Sample files/", both languages):

- UTF-8 with a byte-order mark, ``;`` separated, decimal comma, one header line:
  ``Van datum;Van tijdstip;Tot datum;Tot tijdstip;EAN;Meter;Metertype;Register;Volume;
  Eenheid;Validatiestatus`` (Dutch site) or ``From (date);From (time);Until (date);
  Until (time);EAN code;Meter;Meter type;Register;Volume;Unit;Validation status;
  Description`` (English site). Dates ``12-10-2021`` (Dutch) or ``22/10/2023``
  (English), times ``00:15:00``, in Belgian local time.
- One line per quarter and register: ``Afname Dag``/``Afname Nacht`` (``Offtake
  Day``/``Offtake Night``) and ``Injectie ...``/``Injection ...``. The EAN is written
  as a spreadsheet formula, ``="541448820052377134"``.
- Validation status ``Gevalideerd``/``Geschat``/``Geen verbruik`` (``Read``/``No
  consumption`` ...): a line without a volume has no value and is not stored.
- The autumn night's 02:00-03:00 comes twice, summer time first, in file order (the
  English sample's 29/10/2023); the spring night's 02:00-03:00 is absent.

A quarter's offtake is the sum of its day and night registers (only one has energy at a
time); its power is that x 4, as ours. Injection never lowers a quarter, so it is not
stored. The export holds no monthly peaks: the operator's peak of a month is its
highest imported quarter.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from django.db import transaction
from django.utils import timezone

from capacity.models import OperatorQuarter
from telemetry.models import Device
from telemetry.timegrid import QUARTER

BRUSSELS = ZoneInfo("Europe/Brussels")

DUTCH = ["Van datum", "Van tijdstip", "Tot datum", "Tot tijdstip", "EAN", "Meter",
         "Metertype", "Register", "Volume", "Eenheid", "Validatiestatus"]  # fmt: skip
ENGLISH = ["From (date)", "From (time)", "Until (date)", "Until (time)", "EAN code", "Meter",
           "Meter type", "Register", "Volume", "Unit", "Validation status"]  # fmt: skip
OFFTAKE = {"Afname Dag", "Afname Nacht", "Offtake Day", "Offtake Night"}
INJECTION = {"Injectie Dag", "Injectie Nacht", "Injection Day", "Injection Night"}
DATE_FORMATS = ("%d-%m-%Y", "%d/%m/%Y")
# Far above any household connection in one quarter (250 kW for 15 minutes).
MAX_QUARTER_KWH = 62.5


class FluviusFormatError(ValueError):
    """The file is not a Mijn Fluvius quarter-hour export; the message names why."""


class WrongEan(ValueError):
    """The file is another access point's."""


@dataclass(frozen=True)
class Export:
    ean: str
    quarters: dict[datetime, tuple[float, str]]  # UTC start -> (offtake kWh, status)
    without_value: int  # lines with no volume


@dataclass(frozen=True)
class ImportResult:
    ean: str
    quarters: int
    inserted: int
    updated: int
    unchanged: int
    first: datetime | None
    last: datetime | None


def parse_export(text: str) -> Export:
    """The export's offtake per quarter; FluviusFormatError naming the first problem."""
    lines = text.lstrip("\ufeff").splitlines()
    if not lines:
        raise FluviusFormatError("the file is empty")
    reader = csv.reader(lines, delimiter=";")
    header = [h.strip() for h in next(reader)]
    if header[: len(DUTCH)] not in (DUTCH, ENGLISH):
        raise FluviusFormatError(
            "line 1: not a Mijn Fluvius quarter-hour export (expected the header "
            f"{';'.join(DUTCH)})"
        )
    quarters: dict[datetime, list[float]] = {}
    statuses: dict[datetime, str] = {}
    seen: set[tuple[str, str, str]] = set()
    # (quarter, register) -> its line: two downloads pasted together must not add up.
    line_of: dict[tuple[datetime, str], int] = {}
    eans: set[str] = set()
    without_value = 0
    for number, row in enumerate(reader, start=2):
        if not any(cell.strip() for cell in row):
            continue
        if len(row) < len(DUTCH):
            raise FluviusFormatError(f"line {number}: {len(row)} columns, expected {len(DUTCH)}")
        day, start, _, _, ean, _, _, register, volume, unit, status = (
            c.strip() for c in row[: len(DUTCH)]
        )
        ean = ean.removeprefix("=").strip('"')
        if not (len(ean) == 18 and ean.isdigit()):
            raise FluviusFormatError(f"line {number}: {ean!r} is not an 18-digit EAN")
        eans.add(ean)
        if register in INJECTION:
            continue
        if register not in OFFTAKE:
            raise FluviusFormatError(f"line {number}: unknown register {register!r}")
        if unit != "kWh":
            raise FluviusFormatError(
                f"line {number}: unit {unit!r}, expected kWh (an electricity export)"
            )
        key = (day, start, register)
        moment = _utc(day, start, fold=key in seen, number=number)
        seen.add(key)
        if moment.minute % 15 or moment.second:
            raise FluviusFormatError(f"line {number}: {start} is not a quarter start")
        # The autumn hour comes twice (summer time first), so a second line of a wall-clock
        # quarter is the later instant; any other repeat names a quarter already read.
        first = line_of.setdefault((moment, register), number)
        if first != number:
            raise FluviusFormatError(
                f"line {number}: repeats the {register} quarter of line {first} ({day} {start})"
            )
        if not volume:
            without_value += 1
            continue
        try:
            kwh = float(volume.replace(",", "."))
        except ValueError:
            raise FluviusFormatError(f"line {number}: volume {volume!r} is not a number") from None
        if not 0 <= kwh <= MAX_QUARTER_KWH:
            raise FluviusFormatError(f"line {number}: volume {volume} kWh is out of range")
        quarters.setdefault(moment, []).append(kwh)
        statuses[moment] = status
    if len(eans) > 1:
        raise FluviusFormatError(f"the file holds several EANs: {', '.join(sorted(eans))}")
    if not eans:
        raise FluviusFormatError("the file holds no quarter")
    return Export(
        eans.pop(),
        {m: (sum(v), statuses[m]) for m, v in sorted(quarters.items())},
        without_value,
    )


def _utc(day: str, start: str, *, fold: bool, number: int) -> datetime:
    for form in DATE_FORMATS:
        try:
            naive = datetime.strptime(f"{day} {start}", f"{form} %H:%M:%S")
            break
        except ValueError:
            continue
    else:
        raise FluviusFormatError(f"line {number}: {day} {start} is not a date and time")
    moment = naive.replace(tzinfo=BRUSSELS, fold=int(fold))
    utc = moment.astimezone(UTC)
    if utc.astimezone(BRUSSELS).replace(tzinfo=None) != naive:
        raise FluviusFormatError(f"line {number}: {day} {start} does not exist in Belgium")
    return utc


def import_export(device: Device, text: str) -> ImportResult:
    """Store the export's quarters for ``device``: idempotent (a second import of the
    same file changes nothing), and refused (WrongEan) for another access point. A
    device without an EAN takes the file's."""
    export = parse_export(text)
    if device.ean and device.ean != export.ean:
        raise WrongEan(
            f"the file is for EAN {export.ean}, but device {device.device_id} has EAN {device.ean}"
        )
    now = timezone.now()
    starts = list(export.quarters)
    inserted = updated = 0
    with transaction.atomic():
        if not device.ean:
            Device.objects.filter(pk=device.pk).update(ean=export.ean)
            device.ean = export.ean
        stored = {
            q.bucket: q
            for q in OperatorQuarter.objects.filter(
                device=device, bucket__gte=starts[0], bucket__lte=starts[-1]
            )
        } if starts else {}  # fmt: skip
        new, changed = [], []
        for start, (kwh, status) in export.quarters.items():
            row = stored.get(start)
            if row is None:
                new.append(
                    OperatorQuarter(
                        device=device,
                        bucket=start,
                        import_kwh=kwh,
                        kw=kwh * 4,
                        status=status,
                        ean=export.ean,
                        imported_at=now,
                    )
                )
            elif (row.import_kwh, row.status, row.ean) != (kwh, status, export.ean):
                row.import_kwh, row.kw, row.status, row.ean = kwh, kwh * 4, status, export.ean
                row.imported_at = now
                changed.append(row)
        OperatorQuarter.objects.bulk_create(new, batch_size=2000)
        OperatorQuarter.objects.bulk_update(
            changed, ["import_kwh", "kw", "status", "ean", "imported_at"], batch_size=2000
        )
        inserted, updated = len(new), len(changed)
    return ImportResult(
        export.ean,
        len(starts),
        inserted,
        updated,
        len(starts) - inserted - updated,
        starts[0] if starts else None,
        starts[-1] + QUARTER if starts else None,
    )


def decode(data: bytes | Iterable[bytes]) -> str:
    """The file's text; FluviusFormatError when it is not UTF-8 (what Mijn Fluvius writes)."""
    raw = data if isinstance(data, bytes) else b"".join(data)
    try:
        return io.TextIOWrapper(io.BytesIO(raw), encoding="utf-8-sig").read()
    except UnicodeDecodeError:
        raise FluviusFormatError("the file is not UTF-8 text") from None


def summary(result: ImportResult) -> str:
    """One line for the command and the admin."""
    span = (
        ""
        if result.first is None or result.last is None
        else f" from {result.first.astimezone(BRUSSELS):%Y-%m-%d %H:%M} to "
        f"{result.last.astimezone(BRUSSELS):%Y-%m-%d %H:%M}"
    )
    return (
        f"EAN {result.ean}: {result.quarters} quarters{span}; {result.inserted} new, "
        f"{result.updated} updated, {result.unchanged} unchanged"
    )
