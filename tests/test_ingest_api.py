"""POST /v1/ingest through a real gunicorn process and the real database."""

from __future__ import annotations

import json
import socket
import threading
from datetime import timedelta

import httpx
import pytest

from p1common.processes import database_url, run_server
from telemetry.models import Device, DeviceToken, Sample
from telemetry.tokens import issue_token
from tests.conftest import bearer
from tests.samples import BASE_TS, sample, series

pytestmark = pytest.mark.django_db(transaction=True)

PROBLEM = "application/problem+json"


def post_batch(http, server, token, samples, **extra):
    return http.post(
        f"{server.url}/v1/ingest", json={"samples": samples, **extra}, headers=bearer(token)
    )


def assert_problem(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    body = response.json()
    assert body["status"] == status
    assert body["title"]
    return body


def test_batch_is_stored_with_every_field(http, server, device, ingest_token):
    batch = series(3)
    response = post_batch(http, server, ingest_token, batch)
    assert response.status_code == 200, response.text
    assert response.json() == {"received": 3, "inserted": 3, "duplicates": 0}
    stored = Sample.objects.filter(device=device).order_by("ts").first()
    assert stored.ts == BASE_TS
    assert stored.energy_import_t2_kwh == batch[0]["energy_import_t2_kwh"]
    assert stored.tariff == 1
    assert stored.monthly_power_peak_ts.isoformat() == "2026-02-14T18:15:00+00:00"


def test_retried_batch_creates_no_duplicates(http, server, device, ingest_token):
    batch = series(50)
    first = post_batch(http, server, ingest_token, batch)
    second = post_batch(http, server, ingest_token, batch)
    assert first.json() == {"received": 50, "inserted": 50, "duplicates": 0}
    assert second.json() == {"received": 50, "inserted": 0, "duplicates": 50}
    assert Sample.objects.filter(device=device).count() == 50


def test_same_instant_in_another_offset_is_a_duplicate(http, server, device, ingest_token):
    utc = sample(BASE_TS)
    brussels = dict(utc, ts="2026-03-01T01:00:00+01:00")
    post_batch(http, server, ingest_token, [utc])
    response = post_batch(http, server, ingest_token, [brussels])
    assert response.json() == {"received": 1, "inserted": 0, "duplicates": 1}


def test_overlapping_batches_from_two_threads_create_no_duplicates(
    http, server, device, ingest_token
):
    # Two edges retrying the same span: rows 0..599 and 300..899, posted at once.
    batches = [series(600), series(600, start=BASE_TS + timedelta(seconds=300))]
    answers: list[dict] = [{}, {}]
    start = threading.Barrier(2)

    def send(i: int) -> None:
        with httpx.Client(timeout=30) as client:
            start.wait()
            answers[i] = post_batch(client, server, ingest_token, batches[i]).json()

    threads = [threading.Thread(target=send, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert Sample.objects.filter(device=device).count() == 900
    assert sum(a["inserted"] for a in answers) == 900
    assert sum(a["duplicates"] for a in answers) == 300
    assert all(a["received"] == 600 for a in answers)


def test_request_without_token_is_401(http, server, device):
    response = http.post(f"{server.url}/v1/ingest", json={"samples": series(1)})
    assert_problem(response, 401)
    assert response.headers["www-authenticate"] == "Bearer"


def test_unknown_token_is_401(http, server, device):
    response = post_batch(http, server, "not-a-real-token-at-all-0123456789", series(1))
    assert_problem(response, 401)


def test_token_without_ingest_scope_is_403(http, server, device, read_token):
    assert_problem(post_batch(http, server, read_token, series(1)), 403)
    assert Sample.objects.count() == 0


def test_batch_naming_another_device_is_403(http, server, device, other_device, ingest_token):
    response = post_batch(http, server, ingest_token, series(1), device_id="next-door")
    assert_problem(response, 403)
    assert Sample.objects.count() == 0


def test_batch_naming_its_own_device_is_accepted(http, server, device, ingest_token):
    response = post_batch(http, server, ingest_token, series(1), device_id="home-p1")
    assert response.status_code == 200


def test_invalid_samples_are_named_and_nothing_is_written(http, server, device, ingest_token):
    batch = series(5)
    batch[1]["power_w"] = "high"
    batch[3]["energy_import_kwh"] = -1
    del batch[4]["ts"]
    body = assert_problem(post_batch(http, server, ingest_token, batch), 422)
    assert {(e["index"], e["field"]) for e in body["errors"]} == {
        (1, "power_w"),
        (3, "energy_import_kwh"),
        (4, "ts"),
    }
    assert Sample.objects.count() == 0


def test_same_ts_twice_with_other_values_is_422(http, server, device, ingest_token):
    batch = [sample(BASE_TS), sample(BASE_TS, power_w=99.0)]
    body = assert_problem(post_batch(http, server, ingest_token, batch), 422)
    assert body["errors"][0]["index"] == 1
    assert Sample.objects.count() == 0


@pytest.mark.parametrize(
    ("body", "content_type", "status"),
    [
        (b'{"samples": [', "application/json", 400),
        (b'{"samples": [{"ts": NaN}]}', "application/json", 400),
        (b"[]", "application/json", 400),
        (b"\xff\xfe{}", "application/json", 400),
        (b'{"samples": []}', "application/json", 422),
        (b'{"samples": "x"}', "application/json", 422),
        (b'{"samples": [], "extra": 1}', "application/json", 422),
        (b"samples=1", "application/x-www-form-urlencoded", 415),
    ],
)
def test_malformed_body_is_a_problem(
    http, server, device, ingest_token, body, content_type, status
):
    headers = {**bearer(ingest_token), "Content-Type": content_type}
    response = http.post(f"{server.url}/v1/ingest", content=body, headers=headers)
    assert_problem(response, status)


@pytest.mark.parametrize(
    "content_type", ["application/json; charset=utf-8", "Application/JSON;charset=UTF-8"]
)
def test_json_with_a_utf8_charset_parameter_is_accepted(
    http, server, device, ingest_token, content_type
):
    headers = {**bearer(ingest_token), "Content-Type": content_type}
    body = json.dumps({"samples": series(2)}).encode()
    response = http.post(f"{server.url}/v1/ingest", content=body, headers=headers)
    assert response.status_code == 200, response.text
    assert Sample.objects.count() == 2


def test_json_in_another_charset_is_415(http, server, device, ingest_token):
    headers = {**bearer(ingest_token), "Content-Type": "application/json; charset=latin-1"}
    body = json.dumps({"samples": series(1)}).encode()
    response = http.post(f"{server.url}/v1/ingest", content=body, headers=headers)
    assert_problem(response, 415)
    assert "UTF-8" in response.json()["detail"]
    assert Sample.objects.count() == 0


def test_unknown_path_under_v1_is_problem_json(http, server):
    assert_problem(http.get(f"{server.url}/v1/no-such-thing"), 404)


def test_wrong_method_is_405_problem(http, server, device, ingest_token):
    response = http.get(f"{server.url}/v1/ingest", headers=bearer(ingest_token))
    assert_problem(response, 405)
    assert "POST" in response.headers["allow"]


def test_batch_over_the_limit_is_413(http, device, ingest_token, django_db_setup):
    with run_server(INGEST_MAX_BATCH="10") as small:
        response = post_batch(http, small, ingest_token, series(11))
        assert_problem(response, 413)
        assert post_batch(http, small, ingest_token, series(10)).status_code == 200
    assert Sample.objects.count() == 10


def test_body_beyond_the_size_limit_is_413(http, device, ingest_token, django_db_setup):
    with run_server(INGEST_MAX_BATCH="10") as small:
        padding = "x" * (10 * 1536 + 8192)
        body = json.dumps({"samples": [sample(BASE_TS, pad=padding)]})
        response = http.post(
            f"{small.url}/v1/ingest",
            content=body,
            headers={**bearer(ingest_token), "Content-Type": "application/json"},
        )
        assert_problem(response, 413)


def test_too_many_batches_are_throttled_with_retry_after(
    http, device, ingest_token, django_db_setup
):
    with run_server(INGEST_THROTTLE_RATE="2/min") as strict:
        for i in range(2):
            batch = [sample(BASE_TS + timedelta(seconds=i))]
            assert post_batch(http, strict, ingest_token, batch).status_code == 200
        response = post_batch(http, strict, ingest_token, series(1))
        assert_problem(response, 429)
        assert int(response.headers["retry-after"]) > 0


def test_unreachable_database_is_503_with_retry_after(http, device, ingest_token, tmp_path):
    if database_url().startswith("sqlite"):
        unreachable = f"sqlite:///{tmp_path}/missing-dir/db.sqlite3"
    else:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            closed_port = probe.getsockname()[1]
        unreachable = f"postgres://postgres@127.0.0.1:{closed_port}/p1"
    with run_server(DATABASE_URL=unreachable) as down:
        response = post_batch(http, down, ingest_token, series(1))
        body = assert_problem(response, 503)
        assert int(response.headers["retry-after"]) > 0
        assert "database" in body["detail"].lower()
        ready = http.get(f"{down.url}/readyz")
        assert ready.status_code == 503
        assert ready.json()["database"] == "down"


def test_revoked_token_is_refused_on_the_next_request(http, server, device, ingest_token):
    assert post_batch(http, server, ingest_token, series(1)).status_code == 200
    DeviceToken.objects.get(device=device).revoke()
    assert_problem(post_batch(http, server, ingest_token, series(1)), 401)


def test_raw_token_is_never_stored(device, ingest_token):
    row = DeviceToken.objects.filter(device=device).values().get()
    assert ingest_token not in json.dumps(row, default=str)
    assert row["prefix"] == ingest_token[:8]
    assert len(row["token_hash"]) == 64


def test_ingest_succeeds_while_redis_is_down(http, device, ingest_token, private_redis):
    import redis

    with run_server(REDIS_URL=private_redis, INGEST_THROTTLE_RATE="100/min") as srv:
        assert post_batch(http, srv, ingest_token, series(2)).status_code == 200
        assert http.get(f"{srv.url}/readyz").json()["cache"] == "ok"
        redis.Redis.from_url(private_redis).shutdown(nosave=True)
        later = series(2, start=BASE_TS + timedelta(minutes=1))
        response = post_batch(http, srv, ingest_token, later)
        assert response.status_code == 200, response.text
        assert response.json()["inserted"] == 2
        ready = http.get(f"{srv.url}/readyz")
        assert ready.status_code == 200
        assert ready.json()["cache"] == "down"
    assert Sample.objects.filter(device=device).count() == 4


def test_ingest_refreshes_the_realtime_cache_entry(client, device, ingest_token):
    from django.core.cache import cache

    from capacity.realtime import realtime_cache_key

    cache.set(realtime_cache_key(device.device_id), {"stale": True})
    response = client.post(
        "/v1/ingest",
        data={"samples": series(1)},
        content_type="application/json",
        headers=bearer(ingest_token),
    )
    assert response.status_code == 200
    assert cache.get(realtime_cache_key(device.device_id)) is None


def test_device_ids_are_kept_apart(http, server, device, other_device, ingest_token):
    other_token = issue_token(other_device, "ingest")[1]
    post_batch(http, server, ingest_token, series(3))
    post_batch(http, server, other_token, series(3))
    assert Sample.objects.filter(device=device).count() == 3
    assert Sample.objects.filter(device=other_device).count() == 3
    assert Device.objects.count() == 2


def test_sample_with_only_required_fields_is_stored(http, server, device, ingest_token):
    minimal = {
        "ts": BASE_TS.isoformat(),
        "power_w": -350,
        "energy_import_kwh": 12.5,
    }
    response = post_batch(http, server, ingest_token, [minimal])
    assert response.json() == {"received": 1, "inserted": 1, "duplicates": 0}
    stored = Sample.objects.get(device=device)
    assert stored.power_w == -350
    assert stored.energy_export_kwh is None
    assert stored.tariff is None
    assert stored.gas_ts is None


def without_export(samples: list[dict], how: str) -> list[dict]:
    """A meter without export registers (reported for real P1 dongles): the fields are
    absent, or sent as null."""
    fields = ("energy_export_kwh", "energy_export_t1_kwh", "energy_export_t2_kwh")
    out = []
    for s in samples:
        s = dict(s)
        for name in fields:
            if how == "absent":
                del s[name]
            else:
                s[name] = None
        out.append(s)
    return out


@pytest.mark.parametrize("how", ["absent", "null"])
def test_meter_without_export_registers_is_stored_and_read(
    http, server, device, ingest_token, read_token, how
):
    # Two hours at 1 kWh an hour (tests.samples), every 30 s, in two batches.
    batch = without_export(series(240, step_s=30), how)
    for half in (batch[:120], batch[120:]):
        response = post_batch(http, server, ingest_token, half)
        assert response.json() == {"received": 120, "inserted": 120, "duplicates": 0}
    assert not Sample.objects.filter(device=device, energy_export_kwh__isnull=False).exists()
    answer = http.get(
        f"{server.url}/v1/series",
        params={"interval": "1h", "start": BASE_TS.isoformat(), "end": "2026-03-01T02:00:00Z"},
        headers=bearer(read_token),
    )
    assert answer.status_code == 200, answer.text
    buckets = answer.json()["buckets"]
    assert [b["export_kwh"] for b in buckets] == [None, None]
    # Import never depends on export: the first hour up to the second's first sample.
    assert buckets[0]["import_kwh"] == pytest.approx(1.0, abs=1e-6)
    assert buckets[1]["import_kwh"] == pytest.approx(1.0 - 30 / 3600, abs=1e-6)
    quarters = http.get(
        f"{server.url}/v1/capacity/quarters",
        params={"date": "2026-03-01"},
        headers=bearer(read_token),
    ).json()["quarters"]
    measured = [q for q in quarters if q["kw"] is not None]
    assert len(measured) == 8
    assert all(q["kw"] == pytest.approx(1.0, abs=0.05) for q in measured)  # 1 kWh an hour
    realtime = http.get(f"{server.url}/v1/realtime", headers=bearer(read_token)).json()
    assert realtime["latest"]["energy_export_kwh"] is None
    assert realtime["quarter"]["headroom_w"] is not None


@pytest.mark.parametrize("value", [-1, "0.5", True, float("inf")])
def test_export_register_present_but_invalid_is_still_422(
    http, server, device, ingest_token, value
):
    batch = series(3)
    batch[2]["energy_export_kwh"] = value
    if value == float("inf"):
        content = json.dumps({"samples": batch}).encode()  # Infinity: not JSON at all
        response = http.post(
            f"{server.url}/v1/ingest",
            content=content,
            headers={**bearer(ingest_token), "Content-Type": "application/json"},
        )
        assert_problem(response, 400)
    else:
        body = assert_problem(post_batch(http, server, ingest_token, batch), 422)
        assert [(e["index"], e["field"]) for e in body["errors"]] == [(2, "energy_export_kwh")]
    assert Sample.objects.count() == 0
