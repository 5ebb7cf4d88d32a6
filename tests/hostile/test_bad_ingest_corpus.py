"""A corpus of bad ingest requests against a real gunicorn process and database.

Each case names one way a request can be wrong and the status it must get. For every
case: the answer is a problem+json 4xx, no sample, rollup or capacity row was written
(counted before and after), and the server answers the next good batch.

What our parser (orjson) does with the JSON extensions other parsers accept: NaN,
-NaN, Infinity, -Infinity, and literals beyond float range (1e999) are syntax errors,
so they answer 400 like any malformed body. Python's json module would have turned
them into float('nan') and float('inf'); the validation refuses those too
(tests/test_validation.py), should the parser ever change.

A 422 (valid JSON, invalid samples) also records the rejection for the admin
(telemetry.quarantine, at most KEEP_PER_DEVICE rows per device); that is the only row
a bad request can add, and only with a valid ingest token.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from urllib.parse import urlsplit

import httpx
import pytest

from telemetry.models import IngestRejection
from tests.conftest import bearer
from tests.hostile.helpers import assert_problem, stored_rows
from tests.samples import BASE_TS, sample, series

pytestmark = pytest.mark.django_db(transaction=True)

TS = BASE_TS.isoformat()
GOOD = sample(BASE_TS)
TEN_MB = 10 * 1024 * 1024


def batch(*samples: dict, **top) -> bytes:
    return json.dumps({"samples": list(samples), **top}).encode()


def one_with(**fields) -> bytes:
    """A batch of one otherwise good sample with some fields replaced."""
    return batch(dict(GOOD, **fields))


def one_without(name: str) -> bytes:
    return batch({k: v for k, v in GOOD.items() if k != name})


def one_with_raw(name: str, literal: str | bytes) -> bytes:
    """A batch whose field ``name`` holds a literal json.dumps would never write."""
    marker = "__LITERAL__"
    raw = literal.encode() if isinstance(literal, str) else literal
    return one_with(**{name: marker}).replace(f'"{marker}"'.encode(), raw)


def nested(depth: int) -> str:
    return "[" * depth + "1" + "]" * depth


@dataclass
class Case:
    name: str
    status: int
    body: bytes = b""
    content_type: str | None = "application/json"
    headers: dict[str, str] = field(default_factory=dict)
    # For what httpx would not send as is: a raw exchange over a socket.
    raw: Callable[[str, str, bytes], bytes] | None = None


def raw_exchange(url: str, token: str, request: bytes) -> bytes:
    """Send ``request`` (headers and body as given, Host and token added), half-close,
    and return the answer's bytes."""
    parts = urlsplit(url)
    head, _, body = request.partition(b"\r\n\r\n")
    head += f"\r\nHost: {parts.netloc}\r\nAuthorization: Bearer {token}".encode()
    with socket.create_connection((parts.hostname, parts.port), timeout=30) as conn:
        conn.sendall(head + b"\r\n\r\n" + body)
        conn.shutdown(socket.SHUT_WR)
        answer = b""
        while chunk := conn.recv(65536):
            answer += chunk
    return answer


def body_shorter_than_its_length(url: str, token: str, body: bytes) -> bytes:
    """The connection ends halfway through the announced body (an edge losing power)."""
    cut = body[: len(body) // 2]
    request = (
        b"POST /v1/ingest HTTP/1.1\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
        + cut
    )
    return raw_exchange(url, token, request)


def chunked_without_length(url: str, token: str, body: bytes) -> bytes:
    """Transfer-Encoding: chunked, no Content-Length (what a streaming client sends)."""
    chunks = b"".join(
        f"{len(body[i : i + 100]):x}\r\n".encode() + body[i : i + 100] + b"\r\n"
        for i in range(0, len(body), 100)
    )
    request = (
        b"POST /v1/ingest HTTP/1.1\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n" + chunks + b"0\r\n\r\n"
    )
    return raw_exchange(url, token, request)


def ten_megabytes(url: str, token: str, body: bytes) -> bytes:
    """A 10 MB body: the server answers from the headers and need not read it."""
    filler = b" " * (TEN_MB - len(body))
    request = (
        b"POST /v1/ingest HTTP/1.1\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {TEN_MB}\r\nConnection: close\r\n\r\n".encode()
    )
    parts = urlsplit(url)
    head = request[:-4] + f"\r\nHost: {parts.netloc}\r\nAuthorization: Bearer {token}".encode()
    with socket.create_connection((parts.hostname, parts.port), timeout=30) as conn:
        conn.sendall(head + b"\r\n\r\n")
        # The server may answer and close before reading it all: as intended.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            conn.sendall(body + filler)
        answer = b""
        with contextlib.suppress(ConnectionResetError):
            while chunk := conn.recv(65536):
                answer += chunk
    return answer


CASES = [
    # Not JSON, or not the JSON we take.
    Case("truncated_json", 400, b'{"samples": [{"ts": "2026-03-01T00:'),
    Case("empty_body", 400, b""),
    Case("not_json_at_all", 400, b"power=1250"),
    Case("top_level_array", 400, b"[]"),
    Case("top_level_string", 400, b'"samples"'),
    Case(
        "body_shorter_than_its_content_length", 400, batch(GOOD), raw=body_shorter_than_its_length
    ),
    Case("chunked_body_without_length", 400, batch(GOOD), raw=chunked_without_length),
    # The envelope.
    Case("form_content_type", 415, b"samples=1", "application/x-www-form-urlencoded"),
    Case("text_plain_content_type", 415, batch(GOOD), "text/plain"),
    Case("no_content_type", 415, batch(GOOD), None),
    Case(
        "gzip_compressed_body",
        415,
        gzip.compress(batch(GOOD)),
        headers={"Content-Encoding": "gzip"},
    ),
    Case("unknown_top_level_field", 422, batch(GOOD, extra=1)),
    Case("samples_missing", 422, b"{}"),
    Case("samples_not_a_list", 422, json.dumps({"samples": GOOD}).encode()),
    Case("empty_batch", 422, batch()),
    Case("batch_one_over_the_limit", 413, batch(*series(5001))),
    Case("body_of_10_mb", 413, batch(GOOD), raw=ten_megabytes),
    # Wrong types and missing fields.
    Case("sample_not_an_object", 422, b'{"samples": [1]}'),
    Case("power_as_string", 422, one_with(power_w="1250")),
    Case("power_as_boolean", 422, one_with(power_w=True)),
    Case("power_as_list", 422, one_with(power_w=[1250])),
    Case("ts_as_number", 422, one_with(ts=1772323200)),
    Case("tariff_as_float", 422, one_with(tariff=1.0)),
    Case("tariff_out_of_range", 422, one_with(tariff=5)),
    Case("missing_ts", 422, one_without("ts")),
    Case("missing_power", 422, one_without("power_w")),
    Case("missing_import_register", 422, one_without("energy_import_kwh")),
    Case("required_field_null", 422, one_with(energy_import_kwh=None)),
    Case("unknown_sample_field", 422, one_with(apparent_power_va=1.0)),
    # Numbers JSON has no room for, in every spelling a JSON parser might accept.
    Case("nan", 400, one_with_raw("power_w", "NaN")),
    Case("negative_nan", 400, one_with_raw("power_w", "-NaN")),
    Case("lowercase_nan", 400, one_with_raw("power_w", "nan")),
    Case("infinity", 400, one_with_raw("power_w", "Infinity")),
    Case("negative_infinity", 400, one_with_raw("power_w", "-Infinity")),
    Case("exponent_beyond_float_range", 400, one_with_raw("power_w", "1e999")),
    Case("negative_exponent_beyond_float_range", 400, one_with_raw("power_w", "-1e999")),
    Case("integer_of_400_digits", 400, one_with_raw("energy_import_kwh", "9" * 400)),
    Case("integer_of_30_digits", 422, one_with_raw("energy_import_kwh", "9" * 30)),
    Case("float_near_the_top_of_its_range", 422, one_with(power_w=1.7e308)),
    Case("nan_as_a_string", 422, one_with(power_w="NaN")),
    # Values out of their domain.
    Case("negative_register", 422, one_with(energy_import_kwh=-0.001)),
    Case("negative_tariff_register", 422, one_with(energy_export_t2_kwh=-1.0)),
    Case("naive_timestamp", 422, one_with(ts="2026-03-01T00:00:00")),
    Case("timestamp_without_time", 422, one_with(ts="2026-03-01")),
    Case("timestamp_offset_beyond_a_day", 422, one_with(ts="2026-03-01T00:00:00+25:00")),
    Case("timestamp_far_in_the_future", 422, one_with(ts="2100-01-01T00:00:00+00:00")),
    Case("timestamp_in_year_9999", 422, one_with(ts="9999-12-31T23:59:59-23:59")),
    Case("timestamp_before_2000", 422, one_with(ts="1999-12-31T23:59:59+00:00")),
    Case("timestamp_in_year_1", 422, one_with(ts="0001-01-01T00:00:00+01:00")),
    Case("timestamp_string_of_10_kb", 422, one_with(ts="2026-03-01T00:00:00+00:00" + " " * 10240)),
    Case("same_ts_twice_with_other_values", 422, batch(GOOD, dict(GOOD, power_w=99.0))),
    # Structure and encoding.
    Case("nested_beyond_the_parser_depth", 400, f'{{"samples": {nested(5000)}}}'.encode()),
    Case("nested_within_the_parser_depth", 422, one_with_raw("power_w", nested(1000))),
    Case("invalid_utf8", 400, b'{"samples": [\xff\xfe]}'),
    Case("invalid_utf8_in_a_string", 400, one_with_raw("ts", b'"2026-03-01T00:00:00\xc3\x28"')),
    Case("lone_surrogate_escape", 400, one_with_raw("ts", '"\\ud800"')),
    Case("utf8_byte_order_mark", 400, b"\xef\xbb\xbf" + batch(GOOD)),
]


def test_the_corpus_is_large_and_its_names_unique():
    assert len(CASES) >= 30
    assert len({c.name for c in CASES}) == len(CASES)


def send(http: httpx.Client, url: str, token: str, case: Case) -> httpx.Response:
    if case.raw is not None:
        answer = case.raw(url, token, case.body)
        return parse_raw_answer(answer)
    headers = {**bearer(token), **case.headers}
    if case.content_type is not None:
        headers["Content-Type"] = case.content_type
    return http.post(f"{url}/v1/ingest", content=case.body, headers=headers)


def parse_raw_answer(answer: bytes) -> httpx.Response:
    assert answer, "the server closed the connection without an answer"
    head, _, body = answer.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = [tuple(part.strip() for part in line.split(":", 1)) for line in lines]
    if ("Transfer-Encoding", "chunked") in headers:
        body = dechunk(body)
    return httpx.Response(int(status_line.split()[1]), headers=headers, content=body)


def dechunk(data: bytes) -> bytes:
    out = b""
    while data:
        size_line, _, rest = data.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            break
        out += rest[:size]
        data = rest[size + 2 :]
    return out


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_request_is_a_problem_that_changes_nothing(http, server, device, ingest_token, case):
    before = stored_rows()
    rejections_before = IngestRejection.objects.count()

    response = send(http, server.url, ingest_token, case)

    body = assert_problem(response, case.status)
    assert body.get("detail")
    assert stored_rows() == before
    if case.status != 422:
        assert IngestRejection.objects.count() == rejections_before
    good = [sample(BASE_TS + timedelta(hours=1))]
    after = http.post(
        f"{server.url}/v1/ingest", json={"samples": good}, headers=bearer(ingest_token)
    )
    assert after.status_code == 200, after.text
    assert after.json() == {"received": 1, "inserted": 1, "duplicates": 0}
