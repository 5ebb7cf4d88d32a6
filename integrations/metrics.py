"""Prometheus metrics at /metrics (docs/adr/0008, docs/INTEGRATIONS.md).

What is counted where:
- ``MetricsMiddleware`` (outermost, so it times the whole answer) counts ingest batches,
  their samples (inserted, duplicate) and refused batches by reason, and observes every
  request's latency by route name (a bounded set: an unmatched path is "unmatched").
- At scrape time, from the database: each device's age of its latest sample, and the
  ingest-steps backlog (telemetry.models.PendingBatch: how many batches owe their steps,
  and how long the oldest has waited).

gunicorn runs several processes: with PROMETHEUS_MULTIPROC_DIR set (deploy/gunicorn.conf.py
sets it and makes the directory), prometheus_client keeps each process's counters in
files there and a scrape sums them, whichever worker answers it. The counters are made
when the middleware starts (``request_metrics``), not when this module is imported: a
command run beside the server (it loads the URLs, hence this module) writes no file of
its own there.

/metrics names every device, so it is closed unless METRICS_TOKEN (a Bearer token) or
METRICS_ALLOW_IPS (addresses or networks of scrapers) is set; then a caller needs
either. A refused caller gets 404, as if there were nothing here.
"""

from __future__ import annotations

import functools
import hmac
import ipaddress
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db.models import OuterRef, Subquery
from django.http import HttpRequest, HttpResponse
from django.utils import timezone
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from p1common.env import env_str
from p1common.problems import problem_response
from telemetry.auth import client_address
from telemetry.models import Device, PendingBatch, Sample

MULTIPROC_DIR_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"

INGEST_ROUTE = "ingest-list"
# Why a batch was refused, by the status of its problem answer (p1common.openapi._ERRORS).
REFUSAL_REASONS = {
    400: "malformed",
    401: "bad_token",
    403: "forbidden",
    413: "too_large",
    415: "unsupported_media_type",
    422: "invalid_samples",
    429: "throttled",
    503: "database_unavailable",
}


def multiprocess_dir() -> str | None:
    """PROMETHEUS_MULTIPROC_DIR (prometheus_client's multiprocess mode), or None; set,
    it must be an existing directory (gunicorn's on_starting makes it)."""
    directory = env_str(MULTIPROC_DIR_VARIABLE) or None
    if directory is not None and not os.path.isdir(directory):
        raise ImproperlyConfigured(
            f"{MULTIPROC_DIR_VARIABLE}: {directory} is not a directory (deploy/gunicorn.conf.py "
            "makes one; unset it to keep the metrics in this process)"
        )
    return directory


@dataclass(frozen=True)
class RequestMetrics:
    batches: Counter
    samples: Counter
    refused: Counter
    seconds: Histogram


@functools.cache
def request_metrics() -> RequestMetrics:
    """The request counters of this process, made on first use (in multiprocess mode
    each is a file in PROMETHEUS_MULTIPROC_DIR)."""
    multiprocess_dir()
    return RequestMetrics(
        batches=Counter(
            "p1_ingest_batches", "Ingest batches stored (a batch of duplicates too).", []
        ),
        samples=Counter("p1_ingest_samples", "Samples in stored batches, by result.", ["result"]),
        refused=Counter(
            "p1_ingest_refused_batches", "Ingest batches refused, by reason.", ["reason"]
        ),
        seconds=Histogram(
            "p1_http_request_duration_seconds",
            "Time to answer a request, by route and method.",
            ["route", "method"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
        ),
    )


# The method label's values: any other token a client sends (gunicorn accepts any 3 to
# 20 upper-case letters) counts as "other", so no caller can add series; each series is
# a file per worker in multiprocess mode, in RAM.
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
OTHER_METHOD = "other"


def _route(request: HttpRequest) -> str:
    """The matched URL pattern's name: a value of the URL configuration, never of the
    path a client sent (an unmatched path is "unmatched")."""
    match = getattr(request, "resolver_match", None)
    return (match.url_name or match.view_name or "unnamed") if match else "unmatched"


def _method(request: HttpRequest) -> str:
    method = request.method or ""
    return method if method in METHODS else OTHER_METHOD


def count_ingest(response: HttpResponse) -> None:
    metrics = request_metrics()
    if response.status_code == 200:
        data = getattr(response, "data", None)
        if isinstance(data, dict):
            metrics.batches.inc()
            metrics.samples.labels("inserted").inc(data.get("inserted", 0))
            metrics.samples.labels("duplicate").inc(data.get("duplicates", 0))
        return
    reason = REFUSAL_REASONS.get(response.status_code, f"status_{response.status_code}")
    metrics.refused.labels(reason).inc()


class MetricsMiddleware:
    """Counts ingest outcomes and times every request; costs a few microseconds."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response
        self.seconds = request_metrics().seconds

    def __call__(self, request: HttpRequest) -> HttpResponse:
        started = time.perf_counter()
        response = self.get_response(request)
        route = _route(request)
        self.seconds.labels(route, _method(request)).observe(time.perf_counter() - started)
        if route == INGEST_ROUTE and request.method == "POST":
            count_ingest(response)
        return response


class DatabaseCollector(Collector):
    """Figures read from the database when scraped (not kept in any process)."""

    def __init__(self, now: Callable[[], datetime] = timezone.now) -> None:
        self.now = now

    def collect(self) -> Iterator[GaugeMetricFamily]:
        now = self.now()
        age = GaugeMetricFamily(
            "p1_device_latest_sample_age_seconds",
            "Seconds since the device's newest stored sample (devices with one).",
            labels=["device"],
        )
        newest = Sample.objects.filter(device=OuterRef("pk")).order_by("-ts").values("ts")[:1]
        for device_id, ts in (
            Device.objects.annotate(newest=Subquery(newest))
            .filter(newest__isnull=False)
            .values_list("device_id", "newest")
        ):
            age.add_metric([device_id], round((now - ts).total_seconds(), 3))
        yield age
        owed = PendingBatch.objects.count()
        oldest = PendingBatch.objects.order_by("id").values_list("received_at", flat=True).first()
        yield GaugeMetricFamily(
            "p1_ingest_steps_owed_batches",
            "Stored batches still owing their ingest steps (the worker's backlog).",
            value=owed,
        )
        yield GaugeMetricFamily(
            "p1_ingest_steps_owed_age_seconds",
            "Seconds the oldest batch owing its ingest steps has waited; 0: none.",
            value=0.0 if oldest is None else round((now - oldest).total_seconds(), 3),
        )


def scrape() -> bytes:
    """The exposition text: every process's counters, then the database's figures."""
    if multiprocess_dir():
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    else:
        registry = CollectorRegistry()
        registry.register(_Everything())
    registry.register(DatabaseCollector())
    return generate_latest(registry)


class _Everything(Collector):
    """This process's own metrics (single-process mode), without its built-ins twice."""

    def collect(self) -> Iterator:
        yield from REGISTRY.collect()


def allowed(request: HttpRequest) -> bool:
    token = settings.METRICS_TOKEN
    header = request.META.get("HTTP_AUTHORIZATION", "")
    if token and header.startswith("Bearer "):
        if hmac.compare_digest(header[len("Bearer ") :].strip().encode(), token.encode()):
            return True
    networks = settings.METRICS_ALLOW_NETWORKS
    if networks:
        try:
            address = ipaddress.ip_address(client_address(request))
        except ValueError:
            return False
        return any(address in network for network in networks)
    return False


def metrics_view(request: HttpRequest) -> HttpResponse:
    if request.method != "GET":
        return problem_response(405, "Use GET.")
    if not allowed(request):
        return problem_response(404, "Not found.")
    return HttpResponse(scrape(), content_type=CONTENT_TYPE_LATEST)
