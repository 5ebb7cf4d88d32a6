"""An optional read parameter sent empty means its default, as when it is left out
(Home Assistant and Grafana URL templates send ``?end=`` for an unset variable)."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(
    "query",
    [
        "/v1/series?device_id=home-p1&end=",
        "/v1/series?device_id=home-p1&start=",
        "/v1/series?device_id=home-p1&start=&end=",
        "/v1/capacity/register-breaks?device_id=home-p1&start=&end=",
        "/v1/capacity/months?device_id=home-p1&end=",
    ],
)
def test_an_empty_optional_parameter_answers_as_if_it_were_left_out(client, owner, device, query):
    client.force_login(owner)
    without = query.replace("&start=", "").replace("&end=", "")

    blank, left_out = client.get(query), client.get(without)

    assert blank.status_code == 200, blank.content
    assert _span(blank.json()) == _span(left_out.json())
    assert _without_moments(blank.json()) == _without_moments(left_out.json())


def _span(answer: dict) -> timedelta | None:
    """A default range ends now, which moves between two requests; its length does not."""
    if "start" not in answer:
        return None
    return datetime.fromisoformat(answer["end"]) - datetime.fromisoformat(answer["start"])


def _without_moments(answer: dict) -> dict:
    return {k: v for k, v in answer.items() if k not in ("start", "end")}


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("/v1/capacity/months?device_id=home-p1&count=", "count"),
        ("/v1/series?device_id=home-p1&interval=", "interval"),
        ("/v1/capacity/quarters?device_id=home-p1&date=", "date"),
    ],
)
def test_an_empty_parameter_without_a_default_meaning_is_still_refused(
    client, owner, device, query, field
):
    client.force_login(owner)
    response = client.get(query)
    assert response.status_code == 400
    assert field in response.json()["errors"]
