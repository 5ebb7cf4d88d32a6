"""The MQTT publisher (issue 15, point 1) as a real process (manage.py
run_mqtt_publisher) against real Mosquitto brokers, after real ingests over HTTP.

TLS to the broker is shown with a private Mosquitto on a TLS listener whose certificate
a CA of the test's own signed (tests/integrations/brokers.py): verified when trusted,
refused with another CA, with the system's CAs, or under another name.

The discovery messages follow Home Assistant's MQTT discovery
(https://www.home-assistant.io/integrations/mqtt/#mqtt-discovery: topic
``<discovery_prefix>/<component>/[<node_id>/]<object_id>/config``, availability topics)
and its sensor rules (https://developers.home-assistant.io/docs/core/entity/sensor/:
device_class energy needs state_class total or total_increasing and a unit of Wh/kWh
to be usable by the Energy dashboard; power is measurement in W or kW).
"""

from __future__ import annotations

import json
import secrets
import ssl
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import paho.mqtt.client as paho
import pytest
from django.core.exceptions import ImproperlyConfigured
from django.core.management import CommandError, call_command
from django.test import override_settings

from integrations.management.commands.run_mqtt_publisher import STARTED
from integrations.mqtt import SENSORS, BrokerSettings, Publisher, node_id
from p1common.processes import child_env, database_url, manage, start_child
from tests.conftest import bearer
from tests.integrations.brokers import (
    SHARED_BROKER,
    PrivateMosquitto,
    Subscriber,
    broker_certificates,
    clear_retained,
    make_ca,
)
from tests.samples import sample
from tests.waiting import wait_until

pytestmark = pytest.mark.django_db(transaction=True)
PREFIX = f"p1test/{secrets.token_hex(4)}"
DISCOVERY = f"{PREFIX}/homeassistant"


def start_publisher(url: str, prefix: str, name: str = "mqtt publisher", **extra: str):
    child = start_child(
        name,
        manage("run_mqtt_publisher"),
        child_env(
            DATABASE_URL=database_url(),
            MQTT_URL=url,
            MQTT_TOPIC_PREFIX=prefix,
            MQTT_DISCOVERY_PREFIX=f"{prefix}/homeassistant",
            MQTT_PUBLISH_INTERVAL_S="1",
            MQTT_STALE_AFTER_S="120",
            MQTT_CLIENT_ID=f"p1test-{secrets.token_hex(4)}",
            LOG_LEVEL="info",
            **extra,
        ),
    )
    child.wait_for_line(STARTED)
    return child


@pytest.fixture(scope="module")
def publisher(django_db_setup):
    child = start_publisher(f"mqtt://{SHARED_BROKER[0]}:{SHARED_BROKER[1]}", PREFIX)
    yield child
    child.stop()


@pytest.fixture(scope="module")
def subscriber(publisher):
    sub = Subscriber(*SHARED_BROKER, f"{PREFIX}/#")
    yield sub
    sub.close()
    clear_retained(*SHARED_BROKER, list(sub.messages))


def post(server, token: str, samples: list[dict]) -> httpx.Response:
    response = httpx.post(
        f"{server.url}/v1/ingest", json={"samples": samples}, headers=bearer(token), timeout=10
    )
    assert response.status_code == 200, response.text
    return response


def recent(power_w: float, seconds_ago: float = 5, count: int = 3) -> list[dict]:
    now = datetime.now(UTC).replace(microsecond=0)
    return [
        sample(now - timedelta(seconds=seconds_ago + count - i), power_w=power_w)
        for i in range(count)
    ]


def test_home_assistant_discovers_every_entity_with_its_class_and_unit(
    server, publisher, subscriber, device, ingest_token
):
    post(server, ingest_token, recent(1234.0))
    node = node_id(device.device_id)
    configs = {
        entity.key: json.loads(
            subscriber.wait_for(f"{DISCOVERY}/{entity.component}/{node}/{entity.key}/config")
        )
        for entity in SENSORS
    }
    energy = configs["energy_import_kwh"]
    assert (energy["device_class"], energy["state_class"], energy["unit_of_measurement"]) == (
        "energy",
        "total_increasing",
        "kWh",
    )
    assert configs["energy_export_kwh"]["state_class"] == "total_increasing"
    power = configs["power_w"]
    assert (power["device_class"], power["state_class"], power["unit_of_measurement"]) == (
        "power",
        "measurement",
        "W",
    )
    assert configs["headroom_w"]["unit_of_measurement"] == "W"
    assert configs["rolling_average_kw"]["unit_of_measurement"] == "kW"
    assert configs["peak_warning"]["device_class"] == "problem"
    assert configs["consent_lapsed"]["device_class"] == "problem"
    for entity in SENSORS:
        config = configs[entity.key]
        assert config["state_topic"] == f"{PREFIX}/{device.device_id}/{entity.topic}"
        assert [a["topic"] for a in config["availability"]] == [
            f"{PREFIX}/status",
            f"{PREFIX}/{device.device_id}/availability",
        ]
        assert config["device"]["identifiers"] == [node]
        assert config["unique_id"] == f"{node}_{config['value_template'].split('.')[1][:-3]}"
    assert subscriber.wait_for(f"{PREFIX}/status") == "online"
    assert subscriber.wait_for(f"{PREFIX}/{device.device_id}/availability") == "online"


def test_state_follows_each_ingest(server, publisher, subscriber, device, ingest_token):
    topic = f"{PREFIX}/{device.device_id}/state"
    post(server, ingest_token, recent(900.0, seconds_ago=20))
    state = json.loads(subscriber.wait_for(topic, lambda t: json.loads(t)["power_w"] == 900.0))
    post(server, ingest_token, recent(2750.0, seconds_ago=2))
    state = json.loads(subscriber.wait_for(topic, lambda t: json.loads(t)["power_w"] == 2750.0))
    realtime = httpx.get(
        f"{server.url}/v1/realtime?device_id={device.device_id}",
        headers=bearer(_read_token(device)),
        timeout=10,
    ).json()
    assert state["ts"] == realtime["latest"]["ts"]
    assert state["energy_import_kwh"] == realtime["latest"]["energy_import_kwh"]
    assert state["quarter_projected_kw"] == realtime["quarter"]["projected_kw"]
    assert state["headroom_w"] == realtime["quarter"]["headroom_w"]
    assert state["month_peak_kw"] == realtime["month"]["peak_so_far_kw"]
    assert state["rolling_average_kw"] == 2.5  # no month with a peak yet: the minimum
    assert state["peak_guard"] == "off"  # no guard configured
    assert state["peak_warning"] in ("ON", "OFF")


def test_a_quiet_meter_is_unavailable(server, publisher, subscriber, device, ingest_token):
    post(server, ingest_token, recent(500.0, seconds_ago=600))
    assert subscriber.wait_for(
        f"{PREFIX}/{device.device_id}/availability", lambda t: t == "offline"
    )


def test_health_alerts_appear_on_the_health_topic_and_clear(
    server, publisher, subscriber, device, ingest_token
):
    from integrations.health import evaluate

    post(server, ingest_token, recent(800.0))
    topic = f"{PREFIX}/{device.device_id}/health"
    assert json.loads(subscriber.wait_for(topic))["stale"] == "OFF"
    # Twenty minutes on, with nothing new: the stale alert opens (health rules).
    (episode,) = evaluate(datetime.now(UTC) + timedelta(minutes=20)).raised
    health = json.loads(subscriber.wait_for(topic, lambda t: json.loads(t)["stale"] == "ON"))
    assert [a["kind"] for a in health["alerts"]] == ["stale"]
    assert health["alerts"][0]["message"] == episode.message
    evaluate(datetime.now(UTC))
    subscriber.wait_for(topic, lambda t: json.loads(t) == {**health, "stale": "OFF", "alerts": []})


def test_home_assistant_restarting_gets_discovery_again(
    server, publisher, subscriber, device, ingest_token
):
    post(server, ingest_token, recent(1000.0))
    topic = f"{DISCOVERY}/sensor/{node_id(device.device_id)}/power_w/config"
    subscriber.wait_for(topic)
    sent_before = sum(1 for t, _ in subscriber.history if t == topic)
    birth = paho.Client(paho.CallbackAPIVersion.VERSION2)
    birth.connect(*SHARED_BROKER)
    birth.loop_start()
    birth.publish(f"{DISCOVERY}/status", "online", qos=1).wait_for_publish(5)
    birth.disconnect()
    birth.loop_stop()
    wait_until(lambda: sum(1 for t, _ in subscriber.history if t == topic) > sent_before)


def test_the_publisher_survives_the_broker_and_never_holds_up_ingest(server, device, ingest_token):
    user, password = "p1", secrets.token_urlsafe(16)
    broker = PrivateMosquitto(user, password)
    prefix = f"p1test/{secrets.token_hex(4)}"
    broker.start()
    child = start_publisher(
        f"mqtt://{user}:{password}@127.0.0.1:{broker.port}", prefix, "private publisher"
    )
    topic = f"{prefix}/{device.device_id}/state"
    try:
        sub = Subscriber("127.0.0.1", broker.port, f"{prefix}/#", user, password)
        post(server, ingest_token, recent(1111.0, seconds_ago=30))
        sub.wait_for(topic, lambda t: json.loads(t)["power_w"] == 1111.0)
        sub.close()

        broker.stop()
        began = time.monotonic()
        post(server, ingest_token, recent(2222.0, seconds_ago=10))
        assert time.monotonic() - began < 2.0  # ingest does not wait for the broker
        assert child.running
        broker.start()

        sub = Subscriber("127.0.0.1", broker.port, f"{prefix}/#", user, password)
        # A fresh broker (no persistence): the publisher reconnected and sent it all again.
        assert json.loads(sub.wait_for(topic, lambda t: json.loads(t)["power_w"] == 2222.0))
        sub.wait_for(f"{prefix}/status", lambda t: t == "online")
        child.stop()  # SIGTERM: says goodbye on the status topic
        assert sub.wait_for(f"{prefix}/status", lambda t: t == "offline")
        sub.close()
    finally:
        child.stop()
        broker.close()


def test_a_bad_broker_url_is_one_line_naming_the_variable():
    with pytest.raises(ImproperlyConfigured, match=r"^MQTT_URL: expected mqtt://host:1883"):
        BrokerSettings.from_url("http://broker", **_rest())
    with override_settings(MQTT_URL=""):
        with pytest.raises(CommandError, match="MQTT_URL: required"):
            call_command("run_mqtt_publisher")


@pytest.mark.parametrize(
    "url",
    [
        "mqtt://ha:secret@broker.lan",
        "mqtt://ha@192.0.2.7:1883",
        "mqtt://ha:secret@mosquitto",
        "mqtt://ha:secret@[2001:db8::1]",
    ],
)
def test_credentials_over_plain_mqtt_to_another_host_are_refused_naming_the_variable(url):
    with pytest.raises(ImproperlyConfigured, match=r"^MQTT_URL: a user name or password over "):
        BrokerSettings.from_url(url, **_rest())


@pytest.mark.parametrize(
    "url", ["mqtt://ha:secret@127.0.0.1", "mqtt://ha:secret@localhost:1884", "mqtt://[::1]"]
)
def test_plain_mqtt_may_carry_credentials_to_loopback_and_none_anywhere(url):
    assert BrokerSettings.from_url(url, **_rest()).tls is False
    assert BrokerSettings.from_url("mqtt://broker.lan", **_rest()).username is None


def test_broker_url_gives_credentials_and_tls():
    broker = BrokerSettings.from_url("mqtts://ha%40home:p%3Ass@broker.lan", **_rest())
    assert (broker.host, broker.port, broker.tls) == ("broker.lan", 8883, True)
    assert (broker.username, broker.password) == ("ha@home", "p:ss")


def _rest() -> dict:
    return {
        "ca_file": None,
        "topic_prefix": "p",
        "discovery_prefix": "homeassistant",
        "interval_s": 1.0,
        "stale_after_s": 60.0,
        "client_id": "x",
    }


def _read_token(device) -> str:
    from telemetry.tokens import issue_token

    return issue_token(device, "read")[1]


def test_the_publisher_speaks_verified_tls_and_refuses_a_broker_it_cannot_verify(
    server, device, ingest_token, tmp_path
):
    user, password = "p1", secrets.token_urlsafe(16)
    certificates = broker_certificates(tmp_path, "localhost")
    broker = PrivateMosquitto(user, password, tls=certificates)
    prefix = f"p1test/{secrets.token_hex(4)}"
    broker.start()
    child = None
    try:
        child = start_publisher(
            f"mqtts://{user}:{password}@localhost:{broker.port}",
            prefix,
            "TLS publisher",
            MQTT_CA_FILE=str(certificates.ca),
        )
        sub = Subscriber("localhost", broker.port, f"{prefix}/#", user, password, certificates.ca)
        post(server, ingest_token, recent(1313.0))
        topic = f"{prefix}/{device.device_id}/state"
        sub.wait_for(topic, lambda t: json.loads(t)["power_w"] == 1313.0)
        assert sub.wait_for(f"{prefix}/status") == "online"
        sub.close()

        # The same client set-up (Publisher) with the wrong trust, or the wrong name.
        def client_for(url: str, ca_file: Path | None) -> paho.Client:
            broker_settings = BrokerSettings.from_url(
                url,
                ca_file=None if ca_file is None else str(ca_file),
                topic_prefix=prefix,
                discovery_prefix=f"{prefix}/homeassistant",
                interval_s=1.0,
                stale_after_s=60.0,
                client_id=f"p1test-{secrets.token_hex(4)}",
            )
            return Publisher(broker_settings).client

        other_ca, _key = make_ca(tmp_path, "Another CA")
        with pytest.raises(ssl.SSLCertVerificationError, match="unable to get local issuer"):
            client_for(f"mqtts://{user}:{password}@localhost:{broker.port}", other_ca).connect(
                "localhost", broker.port
            )
        with pytest.raises(ssl.SSLCertVerificationError, match=r"(?i)ip address mismatch"):
            client_for(
                f"mqtts://{user}:{password}@127.0.0.1:{broker.port}", certificates.ca
            ).connect("127.0.0.1", broker.port)
        # The system's CAs (no MQTT_CA_FILE) do not know a private CA either.
        with pytest.raises(ssl.SSLCertVerificationError):
            client_for(f"mqtts://{user}:{password}@localhost:{broker.port}", None).connect(
                "localhost", broker.port
            )
    finally:
        if child is not None:
            child.stop()
        broker.close()
