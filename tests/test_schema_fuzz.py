"""Schema fuzzing: schemathesis (its `st run` command) against /v1/schema of a real
gunicorn server with a household's data, as four callers: a token with both scopes, a
token of another device, no token and a garbage token.

Every operation in the schema is exercised (examples, coverage, fuzzing and, for the
callers past authentication, the stateful phase that follows the device list's links),
with every check schemathesis has (CHECKS). A bounded run takes FUZZ_MAX_EXAMPLES per
operation and caller (default below: about 1,650 cases; 40 s on PostgreSQL, 65 s on
SQLite, on the shared 2-core machine); a long run is one command, with another seed
each time (FUZZ_MAX_EXAMPLES=40: about 3,150 cases, 65 s on PostgreSQL):

    FUZZ_MAX_EXAMPLES=40 FUZZ_SEED=$RANDOM .venv/bin/pytest tests/test_schema_fuzz.py

The CLI rather than schemathesis' pytest plugin: each run is a separate process with its
own report, the server starts before the schema is loaded, and a failure prints
schemathesis' own reproduction (a curl command) in the test's output.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest

from p1common.processes import ServerProcess, run_server
from tests.samples import BASE_TS, series

FUZZ_MAX_EXAMPLES = int(os.environ.get("FUZZ_MAX_EXAMPLES", "10"))
FUZZ_SEED = os.environ.get("FUZZ_SEED", "20261127")
# Comfortably above a bounded run; a long run scales with FUZZ_MAX_EXAMPLES.
RUN_TIMEOUT_S = 300 + FUZZ_MAX_EXAMPLES * 10
# Every check schemathesis has: no 5xx; status, content type, headers and body as the
# schema says (errors are application/problem+json); a request the schema allows is
# accepted (positive_data_acceptance) and one it forbids is refused
# (negative_data_rejection); methods the schema does not list answer 405 with Allow;
# authentication is not ignored. The prose rules JSON Schema cannot state are applied
# by tests/schemathesis_hooks.py.
CHECKS = "all"
ST = Path(sys.executable).with_name("st")
ROOT = Path(__file__).resolve().parent.parent
HOOKS = "tests.schemathesis_hooks"  # the prose rules of the schema, applied to requests


@dataclass
class Household:
    server: ServerProcess
    token: str
    other_token: str


@pytest.fixture(scope="module")
def fuzz_server(django_db_setup) -> Iterator[ServerProcess]:
    """gunicorn with production-like throttling (unlike the session's shared server)."""
    with run_server(threads=8) as server:
        yield server


@pytest.fixture
def household(fuzz_server, transactional_db) -> Household:
    """Two households with committed data (the server is another process); the
    transactional test flushes them afterwards. No test transaction stays open: on
    SQLite (BEGIN IMMEDIATE) it would hold the write lock the server's ingest needs."""
    from django.contrib.auth import get_user_model

    from telemetry.models import Device
    from telemetry.pipeline import ingest_batch
    from telemetry.tokens import issue_token
    from telemetry.validation import validate_samples

    owner = get_user_model().objects.create_user("fuzz-owner", password="fuzz-pw-123")
    device = Device.objects.create(
        device_id="home-p1", owner=owner, capacity_price_eur_per_kw_year="53.2500"
    )
    other = Device.objects.create(device_id="next-door")
    # A day and a half, a reading every 30 s: peaks, quarters, rollups and a realtime
    # answer to compute.
    samples = series(4320, start=BASE_TS - timedelta(hours=12), step_s=30)
    columns, errors = validate_samples(samples, now=BASE_TS + timedelta(days=1))
    assert not errors
    ingest_batch(device, columns)
    token = issue_token(device, "ingest,read")[1]
    other_token = issue_token(other, "ingest,read")[1]
    return Household(fuzz_server, token, other_token)


def schemathesis_run(server: ServerProcess, caller: Caller, report: Path):
    command = [
        str(ST),
        "run",
        f"{server.url}/v1/schema",
        "--checks",
        CHECKS,
        "--phases",
        caller.phases,
        "--max-examples",
        str(FUZZ_MAX_EXAMPLES),
        "--seed",
        FUZZ_SEED,
        # One worker: Hypothesis' lambda descriptions are not thread-safe on Python 3.11
        # (SystemError: AST constructor recursion depth mismatch).
        "--workers",
        "1",
        "--request-timeout",
        "30",
        "--report",
        "ndjson",
        "--report-ndjson-path",
        str(report),
        "--no-color",
    ]
    if caller.authorization:
        command += ["--header", f"Authorization: {caller.authorization}"]
    return subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        cwd=report.parent,  # schemathesis keeps state in ./.schemathesis: not in the repo
        env={
            **os.environ,
            "SCHEMATHESIS_HOOKS": "tests.schemathesis_hooks",
            "PYTHONPATH": str(ROOT),
        },
    )


def cases_per_operation(report: Path) -> dict[str, int]:
    """Test cases per operation of the examples, coverage and fuzzing phases, from
    schemathesis' ndjson events."""
    cases: dict[str, int] = {}
    for line in report.read_text().splitlines():
        event = json.loads(line)
        finished = event.get("ScenarioFinished")
        if finished and finished.get("recorder") and finished.get("phase") != "stateful":
            label = finished["recorder"]["label"]
            cases[label] = cases.get(label, 0) + len(finished["recorder"].get("cases", {}))
    return cases


def stateful_cases(report: Path) -> int:
    return sum(
        len(event["ScenarioFinished"]["recorder"].get("cases", {}))
        for event in map(json.loads, report.read_text().splitlines())
        if event.get("ScenarioFinished", {}).get("phase") == "stateful"
        and event["ScenarioFinished"].get("recorder")
    )


@dataclass
class Caller:
    authorization: str | None
    # The coverage phase walks every parameter's edge cases: worth it only for callers
    # that get past authentication (the others answer 401 before reading a parameter).
    phases: str


ALL_PHASES, QUICK_PHASES = "examples,coverage,fuzzing,stateful", "examples,fuzzing"
CALLERS = {
    "token with both scopes": lambda h: Caller(f"Bearer {h.token}", ALL_PHASES),
    "another device's token": lambda h: Caller(f"Bearer {h.other_token}", ALL_PHASES),
    "no token": lambda h: Caller(None, QUICK_PHASES),
    # Last: its invalid tokens get this address throttled (429) for a while, every token.
    "garbage token": lambda h: Caller("Bearer not-a-token-at-all-0123456789abcdef", QUICK_PHASES),
}
_total_cases: list[int] = []


@pytest.mark.parametrize("caller", list(CALLERS))
def test_api_conforms_to_its_schema(household, caller, tmp_path):
    # schemathesis is in requirements/dev.txt: a missing st is a broken install.
    assert ST.exists() or shutil.which("st"), "schemathesis (st) is not installed"
    report = tmp_path / "events.ndjson"
    result = schemathesis_run(household.server, CALLERS[caller](household), report)
    (tmp_path / "out.txt").write_text(result.stdout + result.stderr)
    assert result.returncode == 0, result.stdout[-20000:] + result.stderr[-5000:]
    cases = cases_per_operation(report)
    assert len(cases) == 11, cases  # every operation of the schema
    if "stateful" in CALLERS[caller](household).phases:
        assert stateful_cases(report) > 0, "the stateful phase ran no step"
    _total_cases.append(sum(cases.values()) + stateful_cases(report))


def test_bounded_run_covers_at_least_1500_cases():
    # After the four runs above (pytest runs a module's tests in order).
    if len(_total_cases) < len(CALLERS):
        pytest.skip("the fuzz runs did not all complete")
    print(f"schema fuzz: {sum(_total_cases)} cases ({_total_cases} per caller)")
    assert sum(_total_cases) >= 1500, _total_cases
