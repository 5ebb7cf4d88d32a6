"""Uploading the spool: oldest samples first, deleted only once the server has them.

``upload_once`` is one unit of work (read a batch, POST it, settle the answer in the
spool); ``Uploader`` is the loop's policy around it: backoff with full jitter, honouring
Retry-After, halving the batch on 413, and one log line per state change.

httpx and ssl errors are translated once, in ``IngestClient.post_batch``, into the small
UploadError vocabulary below. TLS is always verified: certifi's CAs plus VPS_CA_BUNDLE
when set. Plain http only reaches a loopback address (see config).

Whose answer it is: the ingest API answers errors as application/problem+json and a
delivered batch with its receipt (``received``). A 401/403 or 422 without problem+json,
any 404, 405 or redirect, and a 200 without a receipt come from something else at
VPS_INGEST_URL (a dashboard's CSRF page, a proxy's login, a wrong prefix): that is the
NOT_INGEST_API state, never "auth", and nothing is quarantined on its word.
"""

from __future__ import annotations

import json
import logging
import random as random_module
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import certifi
import httpx

import p1wire as wire
from edgeclient.backoff import parse_retry_after, retry_delay
from edgeclient.config import INGEST_PATH, EdgeConfig, ingest_endpoint
from edgeclient.spool import Pending, Spool

logger = logging.getLogger(__name__)

# The server answers a 1000-sample batch in well under a second; these bound a VPS that
# hangs so that the upload loop notices, backs off and tries again.
CONNECT_TIMEOUT_S = 5.0
READ_TIMEOUT_S = 30.0
WRITE_TIMEOUT_S = 30.0
POOL_TIMEOUT_S = 5.0
TIMEOUT = httpx.Timeout(
    connect=CONNECT_TIMEOUT_S, read=READ_TIMEOUT_S, write=WRITE_TIMEOUT_S, pool=POOL_TIMEOUT_S
)
USER_AGENT = "p1platform-edge/1"

# Result states. The first three mean the upload loop is healthy.
IDLE, DELIVERED, QUARANTINED = "idle", "delivered", "quarantined"
UNREACHABLE, TIMEOUT_STATE, TLS = "unreachable", "timeout", "tls"
AUTH, TOO_LARGE, THROTTLED, UNAVAILABLE = "auth", "too_large", "throttled", "unavailable"
SERVER_ERROR, REJECTED, BAD_RESPONSE = "server_error", "rejected", "bad_response"
NOT_INGEST_API = "not_ingest_api"
HEALTHY_STATES = frozenset({IDLE, DELIVERED, QUARANTINED})
# Failures that waiting will not heal: somebody has to fix the configuration.
CONFIG_STATES = frozenset({AUTH, TLS, REJECTED, NOT_INGEST_API})
PROBLEM_CONTENT_TYPE = "application/problem+json"
NOT_INGEST_API_MESSAGE = "VPS_INGEST_URL does not point at the ingest API"


class UploadError(Exception):
    """A batch did not reach the server; nothing was acknowledged, nothing deleted."""

    state = UNREACHABLE


class ServerUnreachable(UploadError):
    """No connection: refused, no route, DNS, or dropped mid-answer."""


class ServerTimeout(UploadError):
    state = TIMEOUT_STATE


class TLSRefused(UploadError):
    """The server's certificate is not trusted (or the handshake failed)."""

    state = TLS


@dataclass(frozen=True)
class UploadResult:
    state: str
    sent: int = 0
    delivered: int = 0  # acknowledged by the server and deleted from the spool
    quarantined: int = 0
    remaining: int = 0  # pending samples left after this attempt (excluding new polls)
    retry_after_s: float | None = None
    detail: str = ""

    @property
    def failed(self) -> bool:
        return self.state not in HEALTHY_STATES


def tls_context(ca_bundle: Path | None = None) -> ssl.SSLContext:
    """Verified TLS: certifi's public CAs, plus the extra CA bundle when one is set.

    certifi (httpx's own default) rather than the OS store: the same trust on every
    image, and one parsed bundle instead of two keeps about 1 MB off the Pi's RSS. A
    private CA goes in VPS_CA_BUNDLE.
    """
    context = ssl.create_default_context(cafile=certifi.where())  # CERT_REQUIRED, hostname
    if ca_bundle is not None:
        context.load_verify_locations(cafile=str(ca_bundle))
    return context


class IngestClient:
    """POST /v1/ingest with the device token; the one place httpx errors are seen."""

    def __init__(
        self,
        url: str,
        token: str,
        *,
        ca_bundle: Path | None = None,
        timeout: httpx.Timeout = TIMEOUT,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        # Config resolved it already; a direct caller gets the same rule and resolution.
        self.url = ingest_endpoint(url)
        self.meter_history_url = self.url.removesuffix(INGEST_PATH) + wire.METER_HISTORY_PATH
        self._host = urlsplit(self.url).netloc
        self._headers = {
            "Authorization": f"Bearer {token}",
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
        }
        # trust_env=False: no proxy or CA settings picked up by accident from the shell.
        self._http = httpx.Client(
            verify=tls_context(ca_bundle), timeout=timeout, transport=transport, trust_env=False
        )

    @classmethod
    def from_config(cls, config: EdgeConfig) -> IngestClient:
        return cls(config.ingest_url, config.device_token, ca_bundle=config.ca_bundle)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> IngestClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def post_batch(self, samples: list[dict[str, Any]]) -> httpx.Response:
        return self._post(self.url, wire.batch_payload(samples))

    def post_meter_history(self, body: dict[str, Any]) -> httpx.Response:
        return self._post(self.meter_history_url, body)

    def _post(self, url: str, payload: dict[str, Any]) -> httpx.Response:
        body = json.dumps(payload, separators=(",", ":"), allow_nan=False)
        try:
            return self._http.post(url, content=body.encode(), headers=self._headers)
        except httpx.TimeoutException as exc:
            raise ServerTimeout(f"{self._host}: no answer in time ({type(exc).__name__})") from exc
        except httpx.TransportError as exc:
            tls = _ssl_cause(exc)
            if tls is not None:
                raise TLSRefused(f"{self._host}: TLS refused: {tls}") from exc
            raise ServerUnreachable(f"{self._host}: {exc or type(exc).__name__}") from exc


def upload_once(
    spool: Spool,
    client: IngestClient,
    *,
    batch_size: int,
    drain_batch_size: int | None = None,
    max_batch: int | None = None,
    clock: Callable[[], float] = time.time,
) -> UploadResult:
    """Send the oldest pending samples once and settle the server's answer in the spool.

    ``batch_size`` in normal running; ``drain_batch_size`` while the backlog is deeper
    than one batch; never more than ``max_batch`` (what a 413 taught the caller).
    """
    depth = spool.depth()
    if depth == 0:
        return UploadResult(IDLE)
    limit = batch_size if depth <= batch_size else max(batch_size, drain_batch_size or 0)
    if max_batch is not None:
        limit = min(limit, max_batch)
    batch = spool.oldest(limit)
    try:
        response = client.post_batch([p.sample for p in batch])
    except UploadError as exc:
        return _failed(spool, exc.state, str(exc), batch, depth)
    return _settle(spool, batch, depth, response, clock)


def _settle(
    spool: Spool,
    batch: list[Pending],
    depth: int,
    response: httpx.Response,
    clock: Callable[[], float],
) -> UploadResult:
    status = response.status_code
    if status == 200:
        received = _receipt(response)
        if received is None:
            return _not_ingest_api(spool, batch, depth, response, "HTTP 200 without a receipt")
        if received != len(batch):
            # The ingest API's shape but not this batch's count: keep everything.
            detail = f"HTTP 200 with a receipt for {received} of {len(batch)} samples"
            return _failed(spool, BAD_RESPONSE, detail, batch, depth)
        deleted = spool.acknowledge([p.key for p in batch], uploaded_at=clock())
        return UploadResult(DELIVERED, len(batch), deleted, remaining=depth - deleted)
    if 300 <= status < 400:
        where = response.headers.get("Location") or "nowhere"
        return _not_ingest_api(spool, batch, depth, response, f"HTTP {status} to {where}")
    if status in (404, 405) or (status in (401, 403, 422) and not _is_problem(response)):
        return _not_ingest_api(spool, batch, depth, response, f"HTTP {status}")
    detail = f"HTTP {status}: {_problem_detail(response)}"
    if status == 422:
        return _quarantine(spool, batch, depth, response, detail)
    retry_after = parse_retry_after(response.headers.get("Retry-After"), clock())
    if status in (401, 403):
        state = AUTH
    elif status == 413:
        state = TOO_LARGE
    elif status == 429:
        state = THROTTLED
    elif status == 503:
        state = UNAVAILABLE
    elif status >= 500:
        state = SERVER_ERROR
    else:
        state = REJECTED  # 400, 415...: a proxy or a client bug, not the samples
    return _failed(spool, state, detail, batch, depth, retry_after)


def _receipt(response: httpx.Response) -> int | None:
    """``received`` of the ingest API's 200 answer; None when the body is not one."""
    try:
        body = response.json()
    except ValueError:
        return None
    received = body.get("received") if isinstance(body, dict) else None
    return received if isinstance(received, int) and not isinstance(received, bool) else None


def _is_problem(response: httpx.Response) -> bool:
    media_type = response.headers.get("Content-Type", "").split(";", 1)[0].strip().lower()
    return media_type == PROBLEM_CONTENT_TYPE


def _not_ingest_api(
    spool: Spool, batch: list[Pending], depth: int, response: httpx.Response, what: str
) -> UploadResult:
    media_type = response.headers.get("Content-Type", "").split(";", 1)[0].strip() or "no body"
    detail = f"{NOT_INGEST_API_MESSAGE}: POST {response.request.url} answered {what} ({media_type})"
    return _failed(spool, NOT_INGEST_API, detail, batch, depth)


def _failed(
    spool: Spool,
    state: str,
    detail: str,
    batch: list[Pending],
    depth: int,
    retry_after: float | None = None,
) -> UploadResult:
    spool.record_upload_failure(state, detail)
    return UploadResult(
        state, len(batch), remaining=depth, retry_after_s=retry_after, detail=detail
    )


def _quarantine(
    spool: Spool, batch: list[Pending], depth: int, response: httpx.Response, detail: str
) -> UploadResult:
    """422: the named samples leave the spool for the quarantine; the rest stays pending.

    A 422 that names no sample (batch-level) quarantines the whole batch with the
    reason: sending it again would be refused again, forever.
    """
    reasons: dict[int, list[str]] = {}
    batch_reasons: list[str] = []
    for error in _problem_errors(response):
        index = error.get("index")
        text = f"{error.get('field') or 'sample'}: {error.get('detail') or 'rejected'}"
        if isinstance(index, int) and not isinstance(index, bool) and 0 <= index < len(batch):
            reasons.setdefault(index, []).append(text)
        else:
            batch_reasons.append(text)
    if reasons:
        rejected = [(batch[i].key, batch[i].sample, "; ".join(r)) for i, r in reasons.items()]
    else:
        why = "; ".join(batch_reasons) or detail
        rejected = [(p.key, p.sample, f"batch rejected: {why}") for p in batch]
    spool.quarantine(rejected)
    return UploadResult(
        QUARANTINED, len(batch), quarantined=len(rejected), remaining=depth - len(rejected),
        detail=rejected[0][2],
    )  # fmt: skip


def _problem(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _problem_detail(response: httpx.Response) -> str:
    detail = _problem(response).get("detail")
    return str(detail) if detail else response.reason_phrase or "no detail"


def _problem_errors(response: httpx.Response) -> list[dict[str, Any]]:
    errors = _problem(response).get("errors")
    return [e for e in errors if isinstance(e, dict)] if isinstance(errors, list) else []


def upload_meter_history(spool: Spool, client: IngestClient) -> bool | None:
    """Send the spooled telegram read, if any: True acknowledged, False to try again
    later, None nothing pending. A body the server refuses (4xx other than 408/429) is
    logged and let go: the meter still holds those months, the next read sends them."""
    body = spool.pending_meter_history()
    if body is None:
        return None
    try:
        response = client.post_meter_history(body)
    except UploadError as exc:
        logger.debug("meter history not sent: %s", exc)
        return False
    status = response.status_code
    if status == 200:
        spool.meter_history_sent(body["read_at"])
        return True
    if 400 <= status < 500 and status not in (408, 429):
        logger.warning(
            "server refused the meter history (HTTP %d): %s", status, response.text[:200]
        )
        spool.meter_history_sent(body["read_at"])
    return False


class MeterHistorySender:
    """The upload loop's sending of the spooled telegram read (``upload_meter_history``),
    with a backoff of its own: a failed attempt (an answer to retry, or any exception:
    a locked spool, a bug) is logged when it first appears and tried again after a
    growing, jittered delay. Nothing here raises: the samples' policy never sees it."""

    def __init__(
        self,
        spool: Spool,
        client: IngestClient,
        config: EdgeConfig,
        *,
        random: Callable[[], float] = random_module.random,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.spool = spool
        self.client = client
        self.config = config
        self._random = random
        self._monotonic = monotonic
        self.failures = 0
        self._retry_at: float | None = None
        self._failing: str | None = None

    def step(self) -> bool | None:
        """True sent, False failed (tried again later), None nothing to send or not yet."""
        if self._retry_at is not None and self._monotonic() < self._retry_at:
            return None
        try:
            sent = upload_meter_history(self.spool, self.client)
            failure = None if sent is not False else "no answer or one to retry (see debug log)"
        except Exception as exc:  # its own failures never reach the samples' loop
            sent, failure = False, f"{type(exc).__name__}: {exc}"
        if sent is not False:
            if self._failing is not None:
                logger.info("meter history sent again after %d failures", self.failures)
            self.failures, self._retry_at, self._failing = 0, None, None
            return sent
        self.failures += 1
        delay = retry_delay(self.failures, self._random, cap_s=self.config.backoff_max_s)
        self._retry_at = self._monotonic() + delay
        if failure != self._failing:
            logger.warning("meter history not sent (tried again later): %s", failure)
            self._failing = failure
        return False


class Uploader:
    """The upload loop's state between attempts; ``step()`` runs one and says how long
    to wait before the next."""

    def __init__(
        self,
        spool: Spool,
        client: IngestClient,
        config: EdgeConfig,
        *,
        random: Callable[[], float] = random_module.random,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.spool = spool
        self.client = client
        self.config = config
        self._random = random
        self._clock = clock
        self.max_batch: int | None = None  # lowered by 413 answers
        self.failures = 0
        self._failing_since: float | None = None
        self._failed_state: str | None = None
        self._draining_since: float | None = None
        self._drained = 0
        # The last step succeeded and left no backlog: the loop is at its normal pace.
        self.caught_up = False

    def step(self) -> tuple[UploadResult, float]:
        result = upload_once(
            self.spool,
            self.client,
            batch_size=self.config.batch_size,
            drain_batch_size=self.config.drain_batch_size,
            max_batch=self.max_batch,
            clock=self._clock,
        )
        return result, self._next_delay(result)

    def _next_delay(self, result: UploadResult) -> float:
        self.caught_up = False
        if result.state == TOO_LARGE and result.sent > 1:
            self.max_batch = max(1, result.sent // 2)
            logger.warning(
                "server refused a batch of %d as too large; batches now at most %d",
                result.sent,
                self.max_batch,
            )
            return 0.0
        if result.failed:
            self.failures += 1
            self._note_failure(result)
            return retry_delay(
                self.failures,
                self._random,
                retry_after_s=result.retry_after_s,
                cap_s=self.config.backoff_max_s,
            )
        self._note_success(result)
        if result.state == QUARANTINED:
            logger.warning(
                "server rejected %d of %d samples; quarantined (%s)",
                result.quarantined,
                result.sent,
                result.detail,
            )
            return 0.0  # the rest of that batch goes now
        if result.remaining > self.config.batch_size:
            return 0.0  # a backlog: drain it back to back
        self._note_drained()
        self.caught_up = True
        return self.config.upload_interval_s

    def _note_failure(self, result: UploadResult) -> None:
        if self._failed_state == result.state:
            return
        if self._failing_since is None:
            self._failing_since = self._clock()
        self._failed_state = result.state
        self._draining_since = None
        log = logger.error if result.state in CONFIG_STATES else logger.warning
        log(
            "upload failing (%s): %s; %d samples kept in the spool, retrying with backoff",
            result.state,
            result.detail,
            result.remaining,
        )

    def _note_success(self, result: UploadResult) -> None:
        self.failures = 0
        if self._failing_since is not None:
            down_s = self._clock() - self._failing_since
            self._failing_since = self._failed_state = None
            logger.info(
                "server back up after %.0f s; backlog %d samples to drain",
                down_s,
                result.remaining + result.delivered,
            )
            self._draining_since, self._drained = self._clock(), 0
        elif self._draining_since is None and result.remaining > self.config.batch_size:
            self._draining_since, self._drained = self._clock(), 0
            logger.info("backlog of %d samples: draining", result.remaining + result.delivered)
        self._drained += result.delivered

    def _note_drained(self) -> None:
        if self._draining_since is not None:
            logger.info(
                "backlog drained: %d samples in %.1f s",
                self._drained,
                self._clock() - self._draining_since,
            )
            self._draining_since = None


def _ssl_cause(exc: BaseException) -> ssl.SSLError | None:
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLError):
            return seen
        seen = seen.__cause__ or seen.__context__
    # httpx keeps only the message of some wrapped errors: recognise OpenSSL's wording.
    text = str(exc)
    if "CERTIFICATE_VERIFY_FAILED" in text or "[SSL" in text:
        return ssl.SSLError(text)
    return None
