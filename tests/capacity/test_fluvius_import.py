"""manage.py import_fluvius, the admin's upload and the reconciliation answer, on
hand-made files in the Mijn Fluvius export format (fixtures/README.md cites it)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from io import StringIO
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import CommandError, call_command

from capacity.models import OperatorQuarter
from telemetry.models import Device
from tests.capacity.test_capacity_api import load
from tests.conftest import bearer
from tests.test_admin import admin_client  # noqa: F401 - the staff persona's fixture

pytestmark = pytest.mark.django_db(transaction=True)

BRUSSELS = ZoneInfo("Europe/Brussels")
FIXTURES = Path(__file__).parent / "fixtures"
EAN = "541448820052377134"
DUTCH = FIXTURES / f"Verbruikshistoriek_elektriciteit_{EAN}_20260310_20260329_kwartiertotalen.csv"
ENGLISH = FIXTURES / f"Consumption_history_electricity_{EAN}_20251026_20251026_15 minute totals.csv"
HEADER = "\ufeff" + ";".join(
    ["Van datum", "Van tijdstip", "Tot datum", "Tot tijdstip", "EAN", "Meter", "Metertype",
     "Register", "Volume", "Eenheid", "Validatiestatus"]
)  # fmt: skip


def local(*args) -> datetime:
    return datetime(*args, tzinfo=BRUSSELS).astimezone(UTC)


def run(*args: str) -> str:
    out = StringIO()
    call_command("import_fluvius", *args, stdout=out)
    return out.getvalue().strip()


def month_export(year: int, month: int, kwh_of) -> str:
    """A whole month of Dutch export lines, one register per quarter."""
    lines, u = [HEADER], local(year, month, 1)
    end = local(year + month // 12, month % 12 + 1, 1)
    while u < end:
        a, b = u.astimezone(BRUSSELS), (u + timedelta(minutes=15)).astimezone(BRUSSELS)
        volume = f"{kwh_of(u):.3f}".replace(".", ",")
        lines.append(
            f'{a:%d-%m-%Y};{a:%H:%M:%S};{b:%d-%m-%Y};{b:%H:%M:%S};="{EAN}";1SAG1;'
            f"Digitale Meter;Afname Dag;{volume};kWh;Gevalideerd"
        )
        u += timedelta(minutes=15)
    return "\n".join(lines) + "\n"


def test_an_export_imports_once_and_a_second_time_changes_nothing(device):
    first = run(str(DUTCH), "--device", device.device_id)
    assert first == (
        f"home-p1: EAN {EAN}: 15 quarters from 2026-03-10 18:00 to 2026-03-29 04:00; "
        "15 new, 0 updated, 0 unchanged"
    )
    again = run(str(DUTCH), "--device", device.device_id)
    assert again.endswith("0 new, 0 updated, 15 unchanged")
    quarters = OperatorQuarter.objects.filter(device=device)
    assert quarters.count() == 15
    peak = quarters.order_by("-kw").first()
    assert (peak.bucket, peak.kw, peak.status) == (local(2026, 3, 10, 18, 30), 4.08, "Gevalideerd")
    assert not quarters.filter(bucket=local(2026, 3, 10, 19, 0)).exists()  # no volume
    device.refresh_from_db()
    assert device.ean == EAN  # a device without an EAN takes the file's


def test_the_spring_and_autumn_nights_land_on_the_right_utc_quarters(device):
    run(str(DUTCH), "--device", device.device_id)
    run(str(ENGLISH), "--device", device.device_id)
    night = OperatorQuarter.objects.filter(
        device=device, bucket__gte=local(2026, 3, 29), bucket__lt=local(2026, 3, 30)
    )
    assert [q.bucket.astimezone(BRUSSELS).strftime("%H:%M") for q in night.order_by("bucket")] == [
        "01:00", "01:15", "01:30", "01:45", "03:00", "03:15", "03:30", "03:45"
    ]  # fmt: skip
    autumn = list(
        OperatorQuarter.objects.filter(device=device, bucket__lt=local(2025, 10, 27))
        .order_by("bucket")
        .values_list("bucket", "import_kwh")
    )
    assert len(autumn) == 16  # 4 hours of a 25-hour day, the 02:00 hour twice
    by_utc = dict(autumn)
    assert by_utc[datetime(2025, 10, 26, 0, 0, tzinfo=UTC)] == 0.14  # 02:00 summer time
    assert by_utc[datetime(2025, 10, 26, 1, 0, tzinfo=UTC)] == 0.18  # 02:00 winter time


def test_a_file_for_another_ean_is_refused_with_one_line(device):
    Device.objects.filter(pk=device.pk).update(ean="541448820000000001")
    with pytest.raises(CommandError) as refused:
        run(str(DUTCH), "--device", device.device_id)
    assert str(refused.value) == (
        f"{DUTCH}: the file is for EAN {EAN}, but device home-p1 has EAN 541448820000000001"
    )
    assert not OperatorQuarter.objects.exists()


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "the file is empty"),
        ("Timestamp;Aardgas\n6/12/2016 20:02;76087\n", "line 1: not a Mijn Fluvius"),
        (f'{HEADER}\n10-03-2026;18:00:00;10-03-2026;18:15:00;="{EAN}";M;D;Afname Dag;abc;kWh;X\n',
         "line 2: volume 'abc' is not a number"),
        (f'{HEADER}\n10-03-2026;18:00:00;10-03-2026;19:00:00;="{EAN}";M;D;Afname;1,0;m³;X\n',
         "line 2: unknown register 'Afname'"),
        (f'{HEADER}\n10-03-2026;18:00:00;10-03-2026;19:00:00;="{EAN}";M;D;Afname Dag;1,0;m³;X\n',
         "line 2: unit 'm³', expected kWh"),
        (f'{HEADER}\n29-03-2026;02:15:00;29-03-2026;02:30:00;="{EAN}";M;D;Afname Dag;1,0;kWh;X\n',
         "line 2: 29-03-2026 02:15:00 does not exist in Belgium"),
        (f'{HEADER}\n10-03-2026;18:00:00;10-03-2026;18:15:00;="123";M;D;Afname Dag;1,0;kWh;X\n',
         "line 2: '123' is not an 18-digit EAN"),
        (f"{HEADER}\n10-03-2026;18:00:00;short\n", "line 2: 3 columns, expected 11"),
        # Two downloads pasted together: the quarter is not counted twice.
        (f'{HEADER}\n10-03-2026;10:00:00;10-03-2026;10:15:00;="{EAN}";M;D;Afname Dag;0,5;kWh;X\n'
         f'10-03-2026;10:00:00;10-03-2026;10:15:00;="{EAN}";M;D;Afname Dag;0,5;kWh;X\n',
         "line 3: repeats the Afname Dag quarter of line 2 (10-03-2026 10:00:00)"),
        # The autumn hour twice is right; a third time is a repeat.
        (f"{HEADER}\n"
         + 3 * f'25-10-2026;02:00:00;25-10-2026;02:15:00;="{EAN}";M;D;Afname Nacht;0,1;kWh;X\n',
         "line 4: repeats the Afname Nacht quarter of line 3 (25-10-2026 02:00:00)"),
    ],
)  # fmt: skip
def test_a_malformed_file_is_refused_with_one_line_naming_the_problem(
    device, tmp_path, text, problem
):
    path = tmp_path / "export.csv"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(CommandError) as refused:
        run(str(path), "--device", device.device_id)
    message = str(refused.value)
    assert "\n" not in message and problem in message, message
    assert not OperatorQuarter.objects.exists()


def test_without_device_the_file_goes_to_the_device_with_its_ean(device):
    with pytest.raises(CommandError, match=f"no device has EAN {EAN}"):
        run(str(DUTCH))
    Device.objects.filter(pk=device.pk).update(ean=EAN)
    assert run(str(DUTCH)).startswith("home-p1: ")


def test_an_imported_month_is_the_months_figure(device, client, read_token, tmp_path):
    path = tmp_path / "march.csv"
    path.write_text(
        month_export(2026, 3, lambda u: 1.5 if u == local(2026, 3, 20, 19) else 0.2),
        encoding="utf-8",
    )
    assert run(str(path), "--device", device.device_id).endswith("0 unchanged")
    load(device, local(2026, 3, 10, 18), local(2026, 3, 10, 19), lambda ts: 3.0)
    body = client.get(
        "/v1/capacity/month/2026-03", {"device_id": device.device_id}, headers=bearer(read_token)
    ).json()
    march = body["rolling_average"]["months"][-1]
    assert (march["source"], march["peak_kw"]) == ("imported", 6.0)
    assert body["peak"]["kw"] == pytest.approx(3.0, abs=1e-3)  # ours stays ours


def test_reconciliation_shows_both_peaks_the_largest_difference_and_the_gaps(
    device, client, read_token
):
    run(str(DUTCH), "--device", device.device_id)
    load(device, local(2026, 3, 10, 18), local(2026, 3, 10, 20), lambda ts: 1.0)
    answer = client.get(
        "/v1/capacity/reconciliation",
        {"device_id": device.device_id, "end": "2026-03", "count": 2},
        headers=bearer(read_token),
    ).json()
    march, february = answer["months"]
    assert february["operator_peak_kw"] is None and february["quarters_both"] == 0
    assert march["our_peak_kw"] == pytest.approx(1.0, abs=1e-3)
    assert march["operator_peak_kw"] == 4.08
    assert march["operator_peak_quarter_start"] == "2026-03-10T18:30:00+01:00"
    assert march["quarters_both"] == 7
    assert march["largest_difference"] == {
        "start": "2026-03-10T18:30:00+01:00",
        "ours_kw": pytest.approx(1.0, abs=1e-3),
        "operator_kw": 4.08,
        "difference_kw": pytest.approx(-3.08, abs=1e-3),
    }
    assert (march["only_ours"], march["only_ours_first"]) == (1, ["2026-03-10T19:00:00+01:00"])
    assert march["only_operator"] == 8  # the spring night we did not measure
    assert march["only_operator_first"][0] == "2026-03-29T01:00:00+01:00"


def test_reconciliation_is_the_owners_only(device, client, other_device):
    from tests.conftest import _token

    response = client.get(
        "/v1/capacity/reconciliation",
        {"device_id": device.device_id},
        headers=bearer(_token(other_device, "read")),
    )
    assert response.status_code in (403, 404)


def test_staff_upload_an_export_in_the_admin(admin_client, device):  # noqa: F811
    url = "/admin/capacity/operatorquarter/import/"
    assert "Import a Mijn Fluvius" in admin_client.get(url).content.decode()
    upload = SimpleUploadedFile(DUTCH.name, DUTCH.read_bytes(), content_type="text/csv")
    response = admin_client.post(url, {"device": device.pk, "file": upload}, follow=True)
    assert "15 new, 0 updated, 0 unchanged" in response.content.decode()
    assert OperatorQuarter.objects.filter(device=device).count() == 15
    bad = SimpleUploadedFile("x.csv", b"Timestamp;Aardgas\n", content_type="text/csv")
    refused = admin_client.post(url, {"device": device.pk, "file": bad})
    assert "not a Mijn Fluvius quarter-hour export" in refused.content.decode()
    assert OperatorQuarter.objects.filter(device=device).count() == 15
