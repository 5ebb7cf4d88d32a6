"""simulate_p1: telegrams, a plausible household, Belgian registers, control and faults."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from edgeclient.homewizard import (
    ButtonNotPressed,
    HomeWizardClient,
    MeterConfig,
    MeterUnreachable,
)
from edgeclient.household import BRUSSELS, MeterModel, household_phases, tariff_at
from edgeclient.normalise import normalise

ROOT = Path(__file__).resolve().parents[2]


def _epoch(year, month, day, hour=0, minute=0, second=0, tz=BRUSSELS) -> int:
    return int(datetime(year, month, day, hour, minute, second, tzinfo=tz).timestamp())


def _v2_client(sim) -> HomeWizardClient:
    config = MeterConfig(
        host=sim.address, api="v2", token=sim.token, ca_file=sim.ca_file, serial=sim.serial
    )
    return HomeWizardClient(config)


def test_polls_within_one_second_get_the_same_telegram_and_each_second_a_new_one(
    make_simulator, clock, tmp_path
):
    log = tmp_path / "served.log"
    sim = make_simulator(log_path=log)
    stamps = []
    with _v2_client(sim) as client:
        for _ in range(3):
            first = client.measurement().payload
            clock.advance(0.4)
            assert client.measurement().payload == first
            clock.advance(0.6)
            stamps.append(normalise(first, api="v2", now=clock.moment)["ts"])
    assert stamps == [
        "2024-06-28T12:00:00+00:00",
        "2024-06-28T12:00:01+00:00",
        "2024-06-28T12:00:02+00:00",
    ]
    # One line per answer served, in the exact form the normaliser gives the edge. The
    # line is written once the answer has left, so wait for it rather than race it.
    assert sim.wait_served(6, timeout_s=10)
    assert log.read_text().splitlines() == [s for s in stamps for _ in range(2)]


def test_v1_and_v2_answers_describe_the_same_telegram(simulator, clock):
    with (
        _v2_client(simulator) as v2,
        HomeWizardClient(MeterConfig(host=simulator.address, api="v1")) as v1,
    ):
        from_v2 = normalise(v2.measurement().payload, api="v2", now=clock.moment)
        from_v1 = normalise(v1.measurement().payload, api="v1", now=clock.moment)
    assert from_v1 == from_v2
    assert None not in from_v1.values()


def test_the_repeated_dst_hour_gets_distinct_utc_timestamps(make_simulator, clock, tmp_path):
    clock.set(datetime(2024, 10, 27, 0, 30, tzinfo=UTC))
    sim = make_simulator(log_path=tmp_path / "served.log")
    seen = []
    with _v2_client(sim) as client:
        for _ in range(2):
            payload = client.measurement().payload
            assert payload["timestamp"] == "2024-10-27T02:30:00"  # local, twice
            seen.append(normalise(payload, api="v2", now=clock.moment)["ts"])
            clock.advance(3600)
    assert seen == ["2024-10-27T00:30:00+00:00", "2024-10-27T01:30:00+00:00"]
    assert sim.wait_served(2, timeout_s=10)
    assert (tmp_path / "served.log").read_text().splitlines() == seen


def test_the_same_seed_and_clock_give_the_same_meter():
    start = _epoch(2024, 6, 28, 9)
    a, b, other = MeterModel(7, start), MeterModel(7, start), MeterModel(8, start)
    for second in range(start, start + 600, 37):
        assert a.telegram(second) == b.telegram(second)
    assert a.telegram(start + 700) != other.telegram(start + 700)


def test_registers_advance_with_the_integrated_power():
    start = _epoch(2024, 12, 13, 17, 30)  # a dark Friday evening: import on tariff 1
    model = MeterModel(3, start)
    before = model.telegram(start)
    end = start + 1800
    after = model.telegram(end)
    expected_import = (
        sum(max(sum(household_phases(3, s)), 0) for s in range(start + 1, end + 1)) / 3.6e6
    )
    assert sum(after.import_kwh) - sum(before.import_kwh) == pytest.approx(
        expected_import, abs=0.002
    )
    assert after.import_kwh[1] == before.import_kwh[1]  # weekday daytime: t2 stands still
    assert after.export_kwh == before.export_kwh  # no sun: nothing to export


def test_a_summer_day_has_base_load_peaks_and_solar_export():
    day = [
        sum(household_phases(11, s)) for s in range(_epoch(2024, 6, 22), _epoch(2024, 6, 23), 30)
    ]
    night, noon, evening = day[2 * 120 : 5 * 120], day[12 * 120 : 15 * 120], day[17 * 120 :]
    assert all(100 < p < 800 for p in night)  # base load, fridge
    assert min(noon) < -1500  # solar export around midday
    assert max(evening) > 2000  # cooking (and maybe the EV)
    assert max(day) < 15000


def test_tariff_is_day_on_weekdays_and_night_at_night_and_weekends():
    friday_noon = datetime(2024, 6, 28, 12, tzinfo=BRUSSELS)
    assert tariff_at(friday_noon) == 1
    assert tariff_at(friday_noon.replace(hour=22)) == 2
    assert tariff_at(friday_noon.replace(hour=6, minute=59)) == 2
    assert tariff_at(friday_noon + timedelta(days=1)) == 2  # Saturday


def test_quarter_average_and_monthly_peak_follow_the_registers():
    start = _epoch(2024, 6, 28, 18, 0)  # cooking time: a busy quarter
    model = MeterModel(5, start)
    q0 = model.telegram(start)
    last = model.telegram(start + 899)
    q1 = model.telegram(start + 900)
    quarter_w = (sum(q1.import_kwh) - sum(q0.import_kwh)) * 4000
    assert last.average_power_15m_w == pytest.approx(quarter_w, rel=0.02, abs=5)
    assert q1.monthly_power_peak_w >= quarter_w - 1
    later = model.telegram(start + 3 * 900)
    if later.monthly_power_peak_second > start:
        assert (later.monthly_power_peak_second - start) % 900 == 0  # stamped at a boundary


def test_the_monthly_peak_restarts_with_the_month():
    start = _epoch(2024, 6, 30, 23, 0)
    model = MeterModel(5, start)
    assert model.telegram(start).monthly_power_peak_w is not None  # June so far
    july = model.telegram(_epoch(2024, 7, 1, 0, 40))
    assert july.monthly_power_peak_second >= _epoch(2024, 7, 1, 0, 15)


def test_pairing_is_refused_until_the_button_is_pressed(make_simulator):
    sim = make_simulator(button_after=None)
    base = f"http://{sim.address}"
    with _v2_client(sim) as client:
        for _ in range(3):
            with pytest.raises(ButtonNotPressed):
                client.create_user("local/test")
        assert httpx.post(f"{base}/_sim/button", timeout=5).json()["button_pressed"] is True
        token = client.create_user("local/test")
    assert len(token) == 32
    with HomeWizardClient(
        MeterConfig(host=sim.address, api="v2", token=token, ca_file=sim.ca_file, serial=sim.serial)
    ) as client:
        assert client.measurement().api == "v2"


def test_faults_can_be_set_through_the_control_endpoint(simulator):
    base = f"http://{simulator.address}"
    state = httpx.post(f"{base}/_sim/faults", json={"error_rate": 1}, timeout=5).json()
    assert state["faults"]["error_rate"] == 1.0
    assert httpx.get(f"{base}/api/v1/data", timeout=5).status_code == 500
    httpx.post(f"{base}/_sim/faults", json={"error_rate": 0}, timeout=5)
    assert httpx.get(f"{base}/api/v1/data", timeout=5).status_code == 200


def test_dropping_off_the_network_closes_the_listening_socket(simulator, clock):
    with HomeWizardClient(MeterConfig(host=simulator.address, api="v1")) as client:
        client.measurement()
        simulator.go_offline()
        with pytest.raises(MeterUnreachable, match="refused"):
            client.measurement()
        simulator.come_back()
        assert client.measurement()


def test_simulate_p1_command_serves_logs_and_stops_on_sigterm(tmp_path):
    log = tmp_path / "served.log"
    env = os.environ | {"P1_ROLE": "edge", "DJANGO_SETTINGS_MODULE": "p1platform.settings"}
    command = [sys.executable, "manage.py", "simulate_p1", "--port", "0", "--api", "both"]
    command += ["--cert-dir", str(tmp_path / "certs"), "--log", str(log), "--seed", "4"]
    proc = subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        banner = proc.stdout.readline()
        assert "simulated P1 meter" in banner, proc.stderr.read() if proc.poll() else banner
        address = banner.split(" on ", 1)[1].split()[0]
        lines = _read_env_lines(proc)
        config = MeterConfig.from_env(lines | {"HW_P1_API": "v2"})
        with HomeWizardClient(config) as client:
            payload = client.measurement().payload
        assert address == lines["HW_P1_HOST"]
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0
    assert "stopped after 1 measurements" in out
    ts = normalise(payload, api="v2", now=datetime.now(UTC))["ts"]
    assert log.read_text().splitlines() == [ts]


def _read_env_lines(proc: subprocess.Popen) -> dict[str, str]:
    lines: dict[str, str] = {}
    while "HW_P1_SERIAL" not in lines:
        line = proc.stdout.readline()
        assert line, "simulate_p1 ended before printing its settings"
        name, _, value = line.strip().partition("=")
        lines[name] = value
    return lines
