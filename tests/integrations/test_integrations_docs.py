"""Every snippet of docs/INTEGRATIONS.md parses, and runs where it can (issue 15, point 5):
URLs and JSON paths against a real server's answers, evcc's jq with the jq program, the
Grafana SQL on the real PostgreSQL as the read-only role the docs create.

Grafana's macro ``$__timeFilter(col)`` is expanded as Grafana documents it
(``col BETWEEN '<from>' AND '<to>'``,
https://grafana.com/docs/grafana/latest/datasources/postgres/query-editor/#macros), and
the dashboard variable ``$device`` by its value. Home Assistant's ``!secret`` tag
(https://www.home-assistant.io/docs/configuration/secrets/) is read as the secret's name.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from django.db import connection, transaction

from integrations.health import notice_message
from integrations.models import HealthEpisode, HealthNotice
from peakguard.models import PeakGuard
from telemetry.pipeline import accept_batch
from tests.conftest import bearer
from tests.samples import sample
from tests.tools import need

SERVED = pytest.mark.django_db(transaction=True)  # the server process sees the rows
DOC = Path(__file__).resolve().parents[2] / "docs" / "INTEGRATIONS.md"
EXAMPLE = "https://p1.example.org"
SNIPPET = re.compile(r"<!-- snippet: ([a-z0-9-]+) -->\n```(\w+)\n(.*?)\n```", re.S)
TEMPLATE = re.compile(r"\{\{ value_json((?:\.\w+)+) \}\}")


def snippets() -> dict[str, tuple[str, str]]:
    text = DOC.read_text()
    found = {name: (lang, body) for name, lang, body in SNIPPET.findall(text)}
    fences = len(re.findall(r"^```\w+$", text, re.M))
    assert fences == len(found), "every fenced snippet is named, so this test sees it"
    return found


class HomeAssistantLoader(yaml.SafeLoader):
    """YAML as Home Assistant reads it: ``!secret name`` names an entry of secrets.yaml."""


HomeAssistantLoader.add_constructor(
    "!secret", lambda loader, node: ("secret", loader.construct_scalar(node))
)


def yaml_of(name: str, loader: type[yaml.SafeLoader] = yaml.SafeLoader) -> Any:
    lang, body = snippets()[name]
    assert lang == "yaml"
    return yaml.load(body, Loader=loader)  # noqa: S506 - a SafeLoader subclass


def path_in(answer: dict, dotted: str) -> Any:
    value: Any = answer
    for key in dotted.strip(".").split("."):
        assert isinstance(value, dict) and key in value, f"{dotted} is not in the answer"
        value = value[key]
    return value


@pytest.fixture
def live(device, read_token):
    """Readings up to a few seconds ago, so the realtime answer has a running quarter."""
    now = datetime.now(UTC).replace(microsecond=0)
    readings = [sample(now - timedelta(seconds=5 + 10 * i), power_w=1500.0) for i in range(30)]
    accept_batch(device, {"samples": readings}, datetime.now(UTC))
    return read_token


def realtime_via(server, url: str, headers: dict[str, str]) -> dict:
    assert url.startswith(EXAMPLE)
    response = httpx.get(server.url + url[len(EXAMPLE) :], headers=headers, timeout=10)
    assert response.status_code == 200, response.text
    return response.json()


def test_every_snippet_is_named_and_of_a_known_language():
    found = snippets()
    assert {lang for lang, _ in found.values()} <= {"sh", "yaml", "sql", "json"}
    assert len(found) == 11


@SERVED
def test_the_export_curl_command_downloads_csv(server, live, device):
    argv = shlex.split(snippets()["export-curl"][1].replace("\\\n", " "))
    assert argv[0] == "curl"
    header = argv[argv.index("-H") + 1].replace("$READ_TOKEN", live)
    name, value = header.split(": ", 1)
    url = next(a for a in argv if a.startswith(EXAMPLE))
    response = httpx.get(server.url + url[len(EXAMPLE) :], headers={name: value}, timeout=10)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/csv")
    assert argv[argv.index("-o") + 1] == "quarters.csv"


def test_the_prometheus_scrape_config_points_at_metrics_over_https():
    (job,) = yaml_of("prometheus-scrape")["scrape_configs"]
    assert job["scheme"] == "https" and "credentials_file" in job["authorization"]
    assert job.get("metrics_path", "/metrics") == "/metrics"
    assert job["static_configs"][0]["targets"] == [EXAMPLE.removeprefix("https://")]


@SERVED
def test_the_home_assistant_rest_sensor_resolves_against_the_server(server, live):
    (rest,) = yaml_of("ha-rest", HomeAssistantLoader)["rest"]
    assert rest["headers"]["Authorization"] == ("secret", "p1_read_bearer")
    answer = realtime_via(server, rest["resource"], bearer(live))
    (sensor,) = rest["sensor"]
    match = TEMPLATE.fullmatch(sensor["value_template"])
    assert match, sensor["value_template"]
    assert isinstance(path_in(answer, match.group(1)), int | float)
    assert (sensor["unit_of_measurement"], sensor["device_class"]) == ("W", "power")


@SERVED
def test_the_evcc_meter_reports_max_power_minus_headroom(server, live):
    config = yaml_of("evcc")
    (meter,) = config["meters"]
    power = meter["power"]
    assert (meter["type"], power["source"]) == ("custom", "http")
    ((header, value),) = power["headers"][0].items()
    assert value == "Bearer <read token>"
    answer = realtime_via(server, power["uri"], {header: value.replace("<read token>", live)})
    jq = need("jq", "jq")
    result = subprocess.run(
        [jq, power["jq"]], input=json.dumps(answer), capture_output=True, text=True, timeout=10
    )
    assert result.returncode == 0, result.stderr
    (circuit,) = config["circuits"]
    assert circuit["meter"] == meter["name"]
    assert float(result.stdout) == circuit["maxPower"] - answer["quarter"]["headroom_w"]
    assert config["loadpoints"][0]["circuit"] == circuit["name"]


def test_the_grafana_data_source_provisioning_parses():
    (source,) = yaml_of("grafana-datasource")["datasources"]
    assert source["type"] == "postgres" and source["user"] == "grafana_reader"
    assert source["jsonData"]["sslmode"] == "verify-full"
    assert source["secureJsonData"]["password"].startswith("$")


def grafana_sql(name: str, device_id: str, start: datetime, end: datetime) -> str:
    lang, body = snippets()[name]
    assert lang == "sql"
    body = re.sub(
        r"\$__timeFilter\((\w+)\)",
        lambda m: f"{m.group(1)} BETWEEN '{start.isoformat()}' AND '{end.isoformat()}'",
        body,
    )
    return body.replace("$device", device_id)


@pytest.mark.django_db
def test_the_grafana_queries_run_on_postgresql_as_the_read_only_role(device):
    if connection.vendor != "postgresql":
        pytest.skip("Grafana's PostgreSQL data source: the PostgreSQL pass runs these")
    start = datetime(2026, 3, 10, 12, tzinfo=UTC)
    meter = [
        sample(start + timedelta(minutes=i), power_w=1000.0 + 10 * i) for i in range(0, 180, 1)
    ]
    accept_batch(device, {"samples": meter}, datetime.now(UTC))
    span = (start - timedelta(days=40), start + timedelta(days=1))
    results: dict[str, list[tuple]] = {}
    with transaction.atomic(), connection.cursor() as cursor:
        role = snippets()["grafana-reader"][1]
        cursor.execute(role)
        cursor.execute("SET LOCAL ROLE grafana_reader")
        cursor.execute(grafana_sql("grafana-device-variable", "", *span))
        results["devices"] = cursor.fetchall()
        for name in ("grafana-quarters", "grafana-months", "grafana-hours"):
            cursor.execute(grafana_sql(name, device.device_id, *span))
            results[name] = cursor.fetchall()
            assert cursor.description[0].name == "time"
        transaction.set_rollback(True)  # the role is the cluster's: leave none behind
    assert results["devices"] == [(device.device_id,)]
    assert len(results["grafana-quarters"]) == 12  # three hours of quarters
    ((_month, peak, billed),) = results["grafana-months"]
    assert billed == max(peak, 2.5)
    assert len(results["grafana-hours"]) == 3


@pytest.mark.django_db
def test_the_health_webhook_example_has_the_fields_delivery_sends(device):
    _lang, body = snippets()["health-webhook"]
    example = json.loads(body)
    PeakGuard.objects.create(device=device, webhook_url="https://hooks.example.org/p1")
    episode = HealthEpisode.objects.create(
        device=device,
        kind=HealthEpisode.CONSENT_LAPSED,
        started_at=datetime.now(UTC),
        message="m",
        details={"fields": ["monthly_power_peak_w"]},
    )
    notice = HealthNotice.objects.create(episode=episode, device=device, event="raised")
    message = notice_message(notice, datetime.now(UTC))
    assert not isinstance(message, str)
    _url, sent = message
    assert set(example) == set(sent)
    assert example["type"] == sent["type"] and example["kind"] in dict(HealthEpisode.KINDS)
