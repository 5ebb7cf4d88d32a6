"""simulate_p1 --profile X -> run_edge -> server, for every meter variant the simulator
plays: each reading the meter served is stored exactly once, with the values it served.

The simulator's --readings-log says what each answer carried. A reading is identified by
the meter's timestamp where the answer has a trustworthy one (API v2, a meter clock that
runs), else by its values: v1 answers carry no time, and an unset or stuck meter clock
says nothing about when. Its stored ts is then the edge's clock at the poll.
"""

from __future__ import annotations

import subprocess
from datetime import datetime, timedelta
from typing import Any

import pytest

from edgeclient.simprofiles import PROFILES
from tests.edge_pipeline.stored import (
    SERVE_TO_SPOOL_S,
    differences,
    readings,
    spool_depth,
    stored_rows,
)
from tests.waiting import wait_until

db = pytest.mark.django_db(transaction=True)

TELEGRAMS = 5  # distinct telegrams each run serves
SWAP_AFTER = 3  # meter-swap: telegrams from the old meter, the rest from the new one
RUN_TIMEOUT_S = 40.0
DRAIN_TIMEOUT_S = 30.0
# edgeclient.poller's line at the first failed poll of an outage.
METER_DOWN = "meter unreachable"
RUNS = [(name, "v2") for name in PROFILES] + [
    (name, "v1") for name in ("belgian-3phase-gas", "no-export", "no-gas", "meter-swap")
]


def _key(reading: dict[str, Any]) -> tuple:
    if reading["meter_ts"] is not None:
        return ("ts", reading["meter_ts"])
    return (
        "values",
        reading["meter"],
        reading["power_w"],
        reading["energy_import_kwh"],
        reading["energy_export_kwh"],
    )


def _distinct_telegrams(log) -> int:
    return len({r["telegram_ts"] for r in readings(log)})


def _has_dns_subject_alt_name(cert_file) -> bool:
    shown = subprocess.run(
        ["openssl", "x509", "-noout", "-ext", "subjectAltName", "-in", str(cert_file)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    return "DNS:" in shown.stdout


@db
@pytest.mark.parametrize(("profile", "api"), RUNS, ids=[f"{p}-{a}" for p, a in RUNS])
def test_every_served_reading_is_stored_once_with_its_values(
    profile, api, start_simulator, start_edge, edge_env, spool_path, device, tmp_path
):
    served_log = tmp_path / "readings.jsonl"
    extra = ["--profile", profile, "--readings-log", str(served_log)]
    if PROFILES[profile].swap_after is not None:
        extra += ["--swap-after", str(SWAP_AFTER)]
    sim = start_simulator("both" if api == "v2" else "v1", *extra)
    if PROFILES[profile].san:
        device_cert = tmp_path / "sim-certs" / "san" / "device.pem"
        assert _has_dns_subject_alt_name(device_cert), "the SAN profile's certificate has no SAN"
    telegrams = TELEGRAMS + (SWAP_AFTER if PROFILES[profile].swap_after else 0)
    edge = start_edge(edge_env | sim.meter_env())
    wait_until(
        lambda: _distinct_telegrams(served_log) >= telegrams, RUN_TIMEOUT_S, "telegrams served"
    )
    outages = len(edge.log.matching(METER_DOWN))
    sim.stop()  # the readings log is complete from here on
    # A reading polled just before the stop may not be in the spool yet when it first
    # reads empty: the edge's first failed poll after the stop has none left in flight.
    # (None comes when the meter was already down: then nothing was in flight either.)
    edge.log.wait_for_or_close(METER_DOWN, DRAIN_TIMEOUT_S, count=outages + 1)
    wait_until(lambda: spool_depth(spool_path) == 0, DRAIN_TIMEOUT_S, "the spool to drain")
    assert edge.terminate() == 0
    log = edge.log.text()

    served: dict[tuple, list[dict[str, Any]]] = {}
    for reading in readings(served_log):
        served.setdefault(_key(reading), []).append(reading)
    if PROFILES[profile].swap_after:
        assert {r["meter"] for r in readings(served_log)} == {0, 1}
    rows = stored_rows(device)
    problems = []
    matched = 0
    for key, answers in served.items():
        first = answers[0]
        want = {
            name: first[name]
            for name in ("power_w", "energy_import_kwh", "energy_export_kwh", "gas_m3", "gas_ts")
        }
        if first["meter_ts"] is not None:
            want["ts"] = first["meter_ts"]
        matching = [row for row in rows if not differences(row, want)]
        if first["meter_ts"] is None:
            # The edge's own clock: some moment between the first poll and the last one;
            # or, for the first reading of a clock found stuck only later, the meter's
            # own whole second, up to a second before the answer was served.
            earliest = datetime.fromtimestamp(answers[0]["served_at"]).astimezone() - timedelta(
                seconds=1.5
            )
            latest = datetime.fromtimestamp(answers[-1]["served_at"]).astimezone() + timedelta(
                seconds=SERVE_TO_SPOOL_S
            )
            matching = [row for row in matching if earliest <= row.ts <= latest]
            # Consecutive telegrams can share these values (a steady export under a
            # register that did not tick): each telegram is at most one row.
            most = len({answer["telegram_ts"] for answer in answers})
        else:
            most = 1
        if not 1 <= len(matching) <= most:
            problems.append(
                f"{key}: stored {len(matching)} times (served {len(answers)} times, "
                f"in {most} telegrams)"
            )
        matched += len(matching)
    if len(rows) != matched:
        problems.append(f"{len(rows)} rows stored, {matched} of them match a served reading")
    assert not problems, (
        f"profile {profile} over {api}: " + "; ".join(problems[:8]) + f"\nedge log:\n{log[-3000:]}"
    )
