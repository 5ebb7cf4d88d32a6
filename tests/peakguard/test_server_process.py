"""With a real gunicorn (two workers), a crossing quarter is posted once, and ingest
answers while the webhook still holds its request open."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta

import pytest
from django.utils import timezone

from capacity.rules import QUARTER
from p1common.processes import run_server
from peakguard.evaluate import current_quarter_start
from peakguard.models import PeakAlert
from tests.conftest import bearer
from tests.peakguard.conftest import Meter, make_guard
from tests.peakguard.receivers import Receiver
from tests.waiting import wait_until

pytestmark = pytest.mark.django_db(transaction=True)

# The first batch must be checked by the server in the quarter it was made in.
QUARTER_END_MARGIN = timedelta(seconds=30)


def clear_of_quarter_end(now: datetime) -> datetime:
    """``now``, or the next quarter's start when fewer than QUARTER_END_MARGIN remain.

    Waiting for a wall-clock boundary is the one wait here with no event to await; it
    happens in 1 run of 30 and lasts at most 30 s.
    """
    remaining = QUARTER - (now - current_quarter_start(now))
    if remaining >= QUARTER_END_MARGIN:
        return now
    time.sleep(remaining.total_seconds() + 0.1)
    return timezone.now()


def test_one_post_per_quarter_and_ingest_is_not_held_up_by_the_webhook(http, device, ingest_token):
    meter = Meter()
    gate = threading.Event()
    with Receiver(gate=gate) as receiver:
        # The energy of the first batch alone projects above 0.1 kW, so it crosses at any
        # time of the quarter (1 kW needed more than 158 s left: 1 run in 7 failed).
        make_guard(device, receiver.url, threshold_kw=0.1)
        with run_server(
            workers=2,
            INGEST_THROTTLE_RATE="off",
            PEAKGUARD_ALLOW_PRIVATE_TARGETS="true",
            PEAKGUARD_RETRY_DELAYS_S="0,0.5,0.5",
        ) as srv:

            def post(samples):
                return http.post(
                    f"{srv.url}/v1/ingest", json={"samples": samples}, headers=bearer(ingest_token)
                )

            # Only the quarter that is current by the server's clock may fire. The batch
            # is made once the server answers (its boot under load took longer than the
            # batch reached ahead, and a quarter boundary fell in between) and never in
            # a quarter's last seconds; it also reaches 2 s ahead (the server accepts up
            # to 5 min), so its quarter is still current when the server looks.
            assert http.get(f"{srv.url}/healthz").status_code == 200
            now = clear_of_quarter_end(timezone.now())
            first = meter.run(now - timedelta(seconds=20), now + timedelta(seconds=2), 5000, 1)
            second = meter.run(now + timedelta(seconds=3), now + timedelta(seconds=20), 5000, 1)
            assert post(first).status_code == 200
            # Two steps, so a failure says which half broke: raising, then sending.
            wait_until(
                lambda: PeakAlert.objects.filter(device=device).exists(),
                what=f"an alert for the quarter of {now.isoformat()}",
            )
            receiver.wait_for(1)  # the webhook now holds the delivery open
            # More batches, a retried one, from several clients (both workers answer).
            with ThreadPoolExecutor(4) as pool:
                answers = list(pool.map(post, [second, first, second, first[:5]]))
            assert [a.status_code for a in answers] == [200] * 4
            assert PeakAlert.objects.filter(delivered_at__isnull=False).count() == 0
            gate.set()
            alerts = wait_until(
                lambda: (
                    rows
                    if (rows := list(PeakAlert.objects.filter(device=device)))
                    and all(a.delivered_at for a in rows)
                    else None
                ),
                what="every alert delivered",
            )
    # One POST per quarter and kind (projected, and broken once certain).
    quarters = [(r.json["quarter_start"], r.json["kind"]) for r in receiver.received]
    assert len(quarters) == len(set(quarters)) == len(alerts), quarters
    assert [a.attempts for a in alerts] == [1] * len(alerts)
