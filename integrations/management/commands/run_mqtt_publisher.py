"""The MQTT publisher process (integrations.mqtt): every MQTT_PUBLISH_INTERVAL_S it
publishes the devices with new samples. SIGTERM or SIGINT: "offline" on the status
topic, then exit. The broker may come and go; the publisher reconnects by itself."""

from __future__ import annotations

import logging
import signal
import threading
import time
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import BaseCommand, CommandError
from django.db import connection

from integrations.mqtt import BrokerSettings, Publisher

logger = logging.getLogger("integrations.mqtt")
STARTED = "MQTT publisher started"


class Command(BaseCommand):
    help = "Publish each device's figures to MQTT with Home Assistant discovery."

    def handle(self, *args: str, **options: Any) -> None:
        try:
            broker = BrokerSettings.from_settings()
        except ImproperlyConfigured as exc:
            raise CommandError(str(exc)) from None
        stop = threading.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: stop.set())
        publisher = Publisher(broker)
        publisher.start()
        logger.info(
            "%s: %s:%d, topics under %s/", STARTED, broker.host, broker.port, broker.topic_prefix
        )
        try:
            while not stop.is_set():
                began = time.monotonic()
                try:
                    publisher.publish_due()
                except Exception:
                    # A database hiccup must not end the process; the next cycle retries.
                    logger.exception("MQTT publish cycle failed")
                    connection.close()
                stop.wait(max(0.1, broker.interval_s - (time.monotonic() - began)))
        finally:
            publisher.stop()
