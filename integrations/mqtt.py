"""The MQTT publisher: each device's live figures, with Home Assistant discovery.

Runs as its own process (``manage.py run_mqtt_publisher``, docs/adr/0007), fed only from
what ingest already stored: every MQTT_PUBLISH_INTERVAL_S it looks up each device's
newest sample (one index lookup per device) and publishes the devices that have a new
one. Ingest never waits for it, and a broker outage never reaches a request.

Topics (``P`` = MQTT_TOPIC_PREFIX, default ``p1platform``; ``D`` = MQTT_DISCOVERY_PREFIX,
default ``homeassistant``), all retained so a subscriber that arrives late gets the last:

- ``P/status``: ``online`` while the publisher runs, ``offline`` when it stops (also the
  broker's last will when it dies).
- ``P/<device_id>/availability``: ``online`` while the device's newest sample is younger
  than MQTT_STALE_AFTER_S, else ``offline``.
- ``P/<device_id>/state``: one JSON object (``state_payload``): the realtime answer's
  figures, the 12-month average and the peak guard's state.
- ``P/<device_id>/health``: the open health alerts (integrations.health.health_payload:
  ON/OFF per kind and each alert's message), sent when it changes.
- ``D/sensor/p1platform_<device_id>/<key>/config`` and ``D/binary_sensor/...``: Home
  Assistant MQTT discovery, one per entity (SENSORS), with both availability topics.
  Sent at connect, for a device seen for the first time, and again when Home Assistant
  announces itself on ``D/status``.

Home Assistant's rules followed (docs/INTEGRATIONS.md cites them): the discovery topic is
``<discovery_prefix>/<component>/[<node_id>/]<object_id>/config``; an energy sensor has
device_class ``energy``, state_class ``total_increasing`` and a unit of Wh or kWh (the
Energy dashboard accepts only those); a power sensor has device_class ``power``,
state_class ``measurement`` and W or kW.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import unquote, urlsplit
from zoneinfo import ZoneInfo

import paho.mqtt.client as paho
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db.models import OuterRef, Subquery
from django.utils import timezone

from capacity import provenance, reports
from capacity.realtime import cached_realtime
from capacity.rules import Month
from capacity.serializers import RealtimeSerializer
from integrations.health import health_payload, open_episodes_by_device
from peakguard.models import PeakAlert, PeakGuard
from telemetry.models import Device, Sample
from telemetry.timegrid import QUARTER, bucket_start

logger = logging.getLogger("integrations.mqtt")

CONNECT_TIMEOUT_S = 5.0
KEEPALIVE_S = 30
RECONNECT_MIN_S, RECONNECT_MAX_S = 1, 30
ONLINE, OFFLINE = "online", "offline"
MANUFACTURER = "P1 Platform"


@dataclass(frozen=True)
class Entity:
    key: str  # the state JSON's key and the entity's object id
    name: str
    component: str = "sensor"
    device_class: str | None = None
    state_class: str | None = None
    unit: str | None = None
    icon: str | None = None
    topic: str = "state"  # the device topic's leaf it reads


# The entities of one device. Registers: total_increasing kWh (the Energy dashboard).
SENSORS = (
    Entity("power_w", "Power", device_class="power", state_class="measurement", unit="W"),
    Entity("power_l1_w", "Power L1", device_class="power", state_class="measurement", unit="W"),
    Entity("power_l2_w", "Power L2", device_class="power", state_class="measurement", unit="W"),
    Entity("power_l3_w", "Power L3", device_class="power", state_class="measurement", unit="W"),
    Entity(
        "energy_import_kwh",
        "Energy import",
        device_class="energy",
        state_class="total_increasing",
        unit="kWh",
    ),
    Entity(
        "energy_export_kwh",
        "Energy export",
        device_class="energy",
        state_class="total_increasing",
        unit="kWh",
    ),
    Entity(
        "quarter_average_kw",
        "Quarter average so far",
        device_class="power",
        state_class="measurement",
        unit="kW",
    ),
    Entity(
        "quarter_projected_kw",
        "Quarter projection",
        device_class="power",
        state_class="measurement",
        unit="kW",
    ),
    Entity(
        "quarter_threshold_kw",
        "Quarter threshold",
        device_class="power",
        state_class="measurement",
        unit="kW",
    ),
    Entity("headroom_w", "Headroom", device_class="power", state_class="measurement", unit="W"),
    Entity(
        "month_peak_kw",
        "Monthly peak so far",
        device_class="power",
        state_class="measurement",
        unit="kW",
    ),
    Entity(
        "rolling_average_kw",
        "12-month average peak",
        device_class="power",
        state_class="measurement",
        unit="kW",
    ),
    Entity("peak_guard", "Peak guard", icon="mdi:shield-alert-outline"),
    Entity("peak_warning", "Peak warning", component="binary_sensor", device_class="problem"),
    # Health alerts (integrations.health), from P/<device_id>/health.
    *(
        Entity(kind, name, component="binary_sensor", device_class="problem", topic="health")
        for kind, name in (
            ("stale", "No recent reading"),
            ("consent_lapsed", "P1-port consent lapsed"),
            ("meter_changed", "Meter changed"),
            ("edge_backlog", "Edge spool backing up"),
        )
    ),
)


def is_loopback(hostname: str) -> bool:
    """127.0.0.0/8, ::1 or localhost: traffic that never leaves this machine (the edge's
    rule for plain HTTP, edgeclient.config.is_loopback, which the server may not import)."""
    name = hostname.strip("[]").lower().rstrip(".")
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class BrokerSettings:
    host: str
    port: int
    username: str | None
    password: str | None
    tls: bool
    ca_file: str | None
    topic_prefix: str
    discovery_prefix: str
    interval_s: float
    stale_after_s: float
    client_id: str

    @classmethod
    def from_url(cls, url: str, **rest: Any) -> BrokerSettings:
        """mqtt://[user[:password]@]host[:port] or mqtts://... (TLS, verified)."""
        parts = urlsplit(url)
        if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
            raise ImproperlyConfigured(
                f"MQTT_URL: expected mqtt://host:1883 or mqtts://user:password@host:8883, got "
                f"{parts.scheme or 'no scheme'}://{parts.hostname or ''}"
            )
        tls = parts.scheme == "mqtts"
        try:
            port = parts.port or (8883 if tls else 1883)
        except ValueError:
            raise ImproperlyConfigured(
                "MQTT_URL: the port is not a number from 1 to 65535"
            ) from None
        if parts.username is not None and not tls and not is_loopback(parts.hostname):
            # The project's rule for plain HTTP: credentials in clear only on this machine.
            raise ImproperlyConfigured(
                f"MQTT_URL: a user name or password over plain mqtt:// to {parts.hostname} "
                "would cross the network unencrypted; use mqtts:// (TLS) or a loopback broker"
            )
        return cls(
            host=parts.hostname,
            port=port,
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
            tls=tls,
            **rest,
        )

    @classmethod
    def from_settings(cls) -> BrokerSettings:
        if not settings.MQTT_URL:
            raise ImproperlyConfigured("MQTT_URL: required for the MQTT publisher")
        return cls.from_url(
            settings.MQTT_URL,
            ca_file=settings.MQTT_CA_FILE or None,
            topic_prefix=settings.MQTT_TOPIC_PREFIX,
            discovery_prefix=settings.MQTT_DISCOVERY_PREFIX,
            interval_s=float(settings.MQTT_PUBLISH_INTERVAL_S),
            stale_after_s=float(settings.MQTT_STALE_AFTER_S),
            client_id=settings.MQTT_CLIENT_ID,
        )


def node_id(device_id: str) -> str:
    return f"p1platform_{device_id.replace('-', '_')}"


def device_topic(broker: BrokerSettings, device_id: str, leaf: str) -> str:
    return f"{broker.topic_prefix}/{device_id}/{leaf}"


def discovery_messages(broker: BrokerSettings, device: Device) -> list[tuple[str, dict]]:
    """(topic, config) of every entity of the device."""
    node = node_id(device.device_id)
    messages = []
    for entity in SENSORS:
        config: dict[str, Any] = {
            "name": entity.name,
            "unique_id": f"{node}_{entity.key}",
            "object_id": f"{node}_{entity.key}",
            "state_topic": device_topic(broker, device.device_id, entity.topic),
            "value_template": f"{{{{ value_json.{entity.key} }}}}",
            "availability": [
                {"topic": f"{broker.topic_prefix}/status"},
                {"topic": device_topic(broker, device.device_id, "availability")},
            ],
            "availability_mode": "all",
            "device": {
                "identifiers": [node],
                "name": device.name or device.device_id,
                "manufacturer": MANUFACTURER,
                "model": "HomeWizard P1 meter",
            },
            "origin": {"name": "P1 Platform"},
        }
        if entity.component == "binary_sensor":
            config["payload_on"], config["payload_off"] = "ON", "OFF"
        for name, value in (
            ("device_class", entity.device_class),
            ("state_class", entity.state_class),
            ("unit_of_measurement", entity.unit),
            ("icon", entity.icon),
        ):
            if value is not None:
                config[name] = value
        topic = f"{broker.discovery_prefix}/{entity.component}/{node}/{entity.key}/config"
        messages.append((topic, config))
    return messages


def peak_guard_state(device: Device, now: datetime) -> str:
    """off: no enabled guard; warning: this quarter's alert was raised; else armed."""
    if not PeakGuard.objects.filter(device=device, enabled=True).exists():
        return "off"
    quarter = bucket_start(now, QUARTER)
    if PeakAlert.objects.filter(device=device, quarter_start=quarter).exists():
        return "warning"
    return "armed"


def state_payload(
    device: Device, now: datetime, newest: datetime | None = None
) -> dict[str, Any] | None:
    """The device's state message; None before its first sample. The figures are the
    realtime answer's: the cached rendering the dashboard reads (capacity.realtime),
    or computed afresh when that copy is not of ``newest`` (a cache only this
    process sees, without REDIS_URL, is not dropped by ingest)."""
    answer = cached_realtime(device)
    latest = answer.get("latest")
    if newest is not None and (latest is None or datetime.fromisoformat(latest["ts"]) != newest):
        answer = dict(RealtimeSerializer(reports.realtime(device, now)).data)
        latest = answer.get("latest")
    if latest is None:
        return None
    quarter, month = answer.get("quarter") or {}, answer.get("month") or {}
    tz = ZoneInfo(device.timezone)
    window = reports.rolling_window(device, Month.of(now, tz))
    return {
        "device_id": device.device_id,
        "ts": latest["ts"],
        "power_w": latest["power_w"],
        "power_l1_w": latest["power_l1_w"],
        "power_l2_w": latest["power_l2_w"],
        "power_l3_w": latest["power_l3_w"],
        "energy_import_kwh": latest["energy_import_kwh"],
        "energy_export_kwh": latest["energy_export_kwh"],
        "tariff": latest["tariff"],
        "quarter_start": quarter.get("start"),
        "quarter_average_kw": quarter.get("average_so_far_kw"),
        "quarter_projected_kw": quarter.get("projected_kw"),
        "quarter_threshold_kw": quarter.get("threshold_kw"),
        "headroom_w": quarter.get("headroom_w"),
        "month": month.get("month"),
        "month_peak_kw": month.get("peak_so_far_kw"),
        "month_billed_peak_kw": month.get("billed_peak_so_far_kw"),
        "rolling_average_kw": round(
            provenance.rolling_average_kw(window, provenance.missing_month_policy()), 3
        ),
        "peak_guard": peak_guard_state(device, now),
        "peak_warning": "ON" if quarter.get("exceeds_threshold") else "OFF",
    }


def newest_samples() -> dict[int, datetime]:
    """Each device's newest sample time (one index lookup per device)."""
    newest = Sample.objects.filter(device=OuterRef("pk")).order_by("-ts").values("ts")[:1]
    return dict(
        Device.objects.annotate(newest=Subquery(newest))
        .filter(newest__isnull=False)
        .values_list("pk", "newest")
    )


@dataclass
class Publisher:
    """One connection to the broker and what was last published per device."""

    broker: BrokerSettings
    clock: Callable[[], datetime] = timezone.now
    client: paho.Client = field(init=False)
    published_ts: dict[int, datetime] = field(default_factory=dict)
    availability: dict[int, str] = field(default_factory=dict)
    discovered: set[int] = field(default_factory=set)
    health: dict[int, str] = field(default_factory=dict)
    _resync: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        broker = self.broker
        client = paho.Client(
            paho.CallbackAPIVersion.VERSION2,
            client_id=broker.client_id,
            protocol=paho.MQTTv311,
        )
        client.connect_timeout = CONNECT_TIMEOUT_S
        if broker.username is not None:
            client.username_pw_set(broker.username, broker.password)
        if broker.tls:
            # Verified against the system's CAs, or MQTT_CA_FILE (a private broker's CA).
            client.tls_set(ca_certs=broker.ca_file, cert_reqs=ssl.CERT_REQUIRED)
        client.will_set(f"{broker.topic_prefix}/status", OFFLINE, qos=1, retain=True)
        client.reconnect_delay_set(RECONNECT_MIN_S, RECONNECT_MAX_S)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        self.client = client

    # paho's network thread calls these.
    def _on_connect(
        self, client: paho.Client, userdata: Any, flags: Any, reason: Any, props: Any
    ) -> None:
        if reason.is_failure:
            logger.warning("MQTT broker refused the connection: %s", reason)
            return
        logger.info("MQTT connected to %s:%d", self.broker.host, self.broker.port)
        client.publish(f"{self.broker.topic_prefix}/status", ONLINE, qos=1, retain=True)
        client.subscribe(f"{self.broker.discovery_prefix}/status", qos=1)
        self._resync.set()

    def _on_disconnect(
        self, client: paho.Client, userdata: Any, flags: Any, reason: Any, props: Any
    ) -> None:
        if reason.is_failure or reason.value != 0:
            logger.warning("MQTT connection lost (%s); reconnecting", reason)

    def _on_message(self, client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        # Home Assistant's birth message: it restarted and wants discovery again.
        if message.payload == b"online":
            self._resync.set()

    def start(self) -> None:
        self.client.connect_async(self.broker.host, self.broker.port, keepalive=KEEPALIVE_S)
        self.client.loop_start()

    def stop(self) -> None:
        if self.client.is_connected():
            info = self.client.publish(
                f"{self.broker.topic_prefix}/status", OFFLINE, qos=1, retain=True
            )
            info.wait_for_publish(CONNECT_TIMEOUT_S)
        self.client.disconnect()
        self.client.loop_stop()

    def _send(self, topic: str, payload: str, qos: int = 1) -> None:
        self.client.publish(topic, payload, qos=qos, retain=True)

    def publish_due(self) -> int:
        """Publish what changed since the last call (everything after a reconnect);
        returns how many devices got a new state. Nothing while disconnected: the
        reconnect republishes the current figures, not a queue of old ones."""
        if not self.client.is_connected():
            return 0
        if self._resync.is_set():
            self._resync.clear()
            self.published_ts.clear()
            self.availability.clear()
            self.discovered.clear()
            self.health.clear()
        now = self.clock()
        newest = newest_samples()
        changed = [pk for pk, ts in newest.items() if self.published_ts.get(pk) != ts]
        devices = {d.pk: d for d in Device.objects.filter(pk__in=set(newest))}
        sent = 0
        for pk in changed:
            device = devices[pk]
            if pk not in self.discovered:
                for topic, config in discovery_messages(self.broker, device):
                    self._send(topic, json.dumps(config))
                self.discovered.add(pk)
            payload = state_payload(device, now, newest[pk])
            if payload is None:
                continue
            self._send(
                device_topic(self.broker, device.device_id, "state"), json.dumps(payload), qos=0
            )
            self.published_ts[pk] = newest[pk]
            sent += 1
        stale_before = now - timedelta(seconds=self.broker.stale_after_s)
        for pk, ts in newest.items():
            available = ONLINE if ts >= stale_before else OFFLINE
            if self.availability.get(pk) != available:
                self._send(
                    device_topic(self.broker, devices[pk].device_id, "availability"), available
                )
                self.availability[pk] = available
        episodes = open_episodes_by_device()
        for pk in newest:
            document = json.dumps(health_payload(devices[pk], episodes.get(pk, [])))
            if self.health.get(pk) != document:
                self._send(device_topic(self.broker, devices[pk].device_id, "health"), document)
                self.health[pk] = document
        return sent
