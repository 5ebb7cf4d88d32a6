"""simulate_p1: telegrams, a plausible household, Belgian registers, control and faults."""

from __future__ import annotations

import json
import os
import signal
import ssl
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
from edgeclient.simprofiles import GAS_PLACEHOLDER_V1, GAS_PLACEHOLDER_V2, PROFILES
from p1common.processes import start_simulator

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
    sim = start_simulator(
        "--seed", "4", api="both", served_log=log, cert_dir=tmp_path / "certs", env=env,
        defaults={},
    )  # fmt: skip
    proc = sim.process
    try:
        banner = sim.child.log.text().splitlines()[0]
        assert "simulated P1 meter" in banner, sim.child.log.text()
        assert "profile belgian-3phase-gas" in banner
        address = banner.split(" on ", 1)[1].split()[0]
        lines = sim.settings.env
        config = MeterConfig.from_env(lines | {"HW_P1_API": "v2"})
        with HomeWizardClient(config) as client:
            payload = client.measurement().payload
        assert address == lines["HW_P1_HOST"]
        proc.send_signal(signal.SIGTERM)
        proc.wait(20)
        out = "\n".join(sim.child.log.wait_closed(20))
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0
    assert "stopped after 1 measurements" in out
    ts = normalise(payload, api="v2", now=datetime.now(UTC))["ts"]
    assert log.read_text().splitlines() == [ts]


# -- where a client can tell the simulator from the device --------------------------------


def _tls_http(sim) -> httpx.Client:
    # Verified against the simulator's CA; the name is the device's, in the common name.
    context = ssl.create_default_context(cafile=str(sim.ca_file))
    context.hostname_checks_common_name = True
    return httpx.Client(verify=context, timeout=5, trust_env=False)


def _v2(client: httpx.Client, sim, method: str, path: str, **kwargs) -> httpx.Response:
    return client.request(
        method,
        f"https://{sim.address}{path}",
        extensions={"sni_hostname": sim.device_name},
        **kwargs,
    )


def _bearer(token: str, version: str | None = "2") -> dict[str, str]:
    headers = {"Authorization": f"Bearer {token}"}
    if version is not None:
        headers["X-Api-Version"] = version
    return headers


def test_v1_data_has_no_timestamp_and_integers_where_the_device_sends_integers(simulator):
    data = httpx.get(f"http://{simulator.address}/api/v1/data", timeout=5).json()
    assert "timestamp" not in data  # v1 firmware sends no telegram time
    for name in (
        "active_power_w",
        "active_power_l1_w",
        "active_power_l2_w",
        "active_power_l3_w",
        "active_tariff",
        "smr_version",
        "wifi_strength",
        "any_power_fail_count",
        "long_power_fail_count",
        "gas_timestamp",
        "active_frequency_hz",
    ):
        assert type(data[name]) is int, name
    assert type(data["total_power_import_t1_kwh"]) is float
    assert data["gas_unique_id"] == data["external"][0]["unique_id"]


def test_v2_answers_carry_the_api_version_and_refuse_version_1(simulator):
    with _tls_http(simulator) as client:
        ok = _v2(client, simulator, "GET", "/api/measurement", headers=_bearer(simulator.token))
        latest = _v2(client, simulator, "GET", "/api", headers=_bearer(simulator.token, None))
        old = _v2(client, simulator, "GET", "/api", headers=_bearer(simulator.token, "1"))
    assert ok.status_code == 200
    assert ok.headers["X-Api-Version"] == "2.0.0"
    assert type(ok.json()["power_w"]) is int
    assert latest.status_code == 200  # no header: the latest version answers
    assert latest.json()["api_version"] == "2.0.0"
    assert old.status_code == 400
    assert old.json() == {"error": "request:api-version-not-supported"}
    assert old.headers["X-Api-Version"] == "2.0.0"


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (b"{not json", "request:invalid-json"),
        (b"", "request:invalid-json"),
        (b"{}", "json:parameter-missing:name"),
        (b'{"name": 7}', "json:parameter-invalid-type:name"),
        (b'{"name": "p1platform"}', "user:invalid-prefix"),
        (b'{"name": "local/"}', "user:name-empty"),
        (json.dumps({"name": "local/" + "x" * 41}).encode(), "user:name-too-long"),
        (b'{"name": "local/caf\\u00e9"}', "user:name-invalid"),
    ],
)
def test_pairing_answers_the_documented_error_for_a_bad_body(make_simulator, body, error):
    sim = make_simulator(button_after=0)
    with _tls_http(sim) as client:
        answer = _v2(
            client,
            sim,
            "POST",
            "/api/user",
            content=body,
            headers={"X-Api-Version": "2", "Content-Type": "application/json"},
        )
    assert answer.status_code == 400
    assert answer.json() == {"error": error}


def test_pairing_again_under_the_same_name_revokes_the_previous_token(make_simulator):
    sim = make_simulator(button_after=0)
    with _tls_http(sim) as client:

        def pair(name: str) -> str:
            answer = _v2(client, sim, "POST", "/api/user", json={"name": name})
            assert answer.status_code == 200, answer.text
            return answer.json()["token"]

        def status(token: str) -> int:
            return _v2(client, sim, "GET", "/api", headers=_bearer(token)).status_code

        first, other = pair("local/edge-one"), pair("local/edge-two")
        again = pair("local/edge-one")
        assert (status(first), status(other), status(again)) == (401, 200, 200)
        assert status(sim.token) == 200  # the preset user is a name of its own


def test_system_endpoints_answer_as_documented(simulator):
    v1 = httpx.get(f"http://{simulator.address}/api/v1/system", timeout=5).json()
    with _tls_http(simulator) as client:
        v2 = _v2(client, simulator, "GET", "/api/system", headers=_bearer(simulator.token)).json()
        refused = _v2(client, simulator, "GET", "/api/system", headers=_bearer("0" * 32))
    assert v1 == {"cloud_enabled": True}
    assert set(v2) == {
        "wifi_ssid",
        "wifi_rssi_db",
        "cloud_enabled",
        "uptime_s",
        "status_led_brightness_pct",
        "api_v1_enabled",
    }
    assert refused.status_code == 401
    assert refused.json() == {"error": "user:unauthorized"}


# -- profiles --------------------------------------------------------------------------


def _both(sim) -> tuple[dict, dict]:
    v1 = httpx.get(f"http://{sim.address}/api/v1/data", timeout=5).json()
    with _tls_http(sim) as client:
        v2 = _v2(client, sim, "GET", "/api/measurement", headers=_bearer(sim.token)).json()
    return v1, v2


def test_the_no_export_profile_sends_no_export_register(make_simulator):
    v1, v2 = _both(make_simulator(profile=PROFILES["no-export"]))
    assert not [name for name in v1 if "export" in name]
    assert not [name for name in v2 if "export" in name]
    assert v1["total_power_import_kwh"] == v2["energy_import_kwh"]


def test_the_no_gas_profile_sends_the_dsmr_placeholder_gas_time(make_simulator):
    v1, v2 = _both(make_simulator(profile=PROFILES["no-gas"]))
    assert v1["gas_timestamp"] == GAS_PLACEHOLDER_V1 == 632525252525
    assert v1["external"][0]["timestamp"] == GAS_PLACEHOLDER_V1
    assert v2["external"][0] | {"unique_id": None} == {
        "unique_id": None,
        "type": "gas_meter",
        "timestamp": GAS_PLACEHOLDER_V2,
        "value": 0.0,
        "unit": "m3",
    }


def test_the_single_phase_profile_sends_tariff_registers_and_one_phase(make_simulator):
    v1, v2 = _both(make_simulator(profile=PROFILES["single-phase"]))
    assert set(v2) == {
        "protocol_version",
        "meter_model",
        "unique_id",
        "timestamp",
        "energy_import_t1_kwh",
        "energy_import_t2_kwh",
        "energy_export_t1_kwh",
        "energy_export_t2_kwh",
        "power_w",
        "power_l1_w",
    }
    assert v2["power_w"] == v2["power_l1_w"] == v1["active_power_l1_w"]
    assert "active_power_l2_w" not in v1 and "total_gas_m3" not in v1


def test_an_unset_meter_clock_answers_2000_and_a_stuck_one_its_first_time(make_simulator, clock):
    unset = make_simulator(profile=PROFILES["unset-clock"], seed=1)
    stuck = make_simulator(profile=PROFILES["stuck-clock"], seed=1)
    seen = []
    for _ in range(3):
        (_, from_unset), (_, from_stuck) = _both(unset), _both(stuck)
        seen.append((from_unset["timestamp"], from_stuck["timestamp"], from_stuck["power_w"]))
        clock.advance(7)
    assert {s[0] for s in seen} == {"2000-01-01T01:00:00"}
    assert {s[1] for s in seen} == {"2024-06-28T14:00:00"}  # the first telegram's local time
    assert len({s[2] for s in seen}) > 1  # the values go on changing


def test_a_meter_swap_brings_a_new_unique_id_and_registers_near_zero(make_simulator, clock):
    sim = make_simulator(profile=PROFILES["meter-swap"], swap_after=2)
    answers = []
    for _ in range(4):
        answers.append(_both(sim)[1])
        clock.advance(1)
    before, after = answers[1], answers[2]
    assert before["unique_id"] != after["unique_id"]
    assert answers[3]["unique_id"] == after["unique_id"]
    assert before["energy_import_kwh"] > 1000
    assert after["energy_import_kwh"] < 1
    assert "monthly_power_peak_w" not in after  # a new meter has no peak yet


def test_the_water_meter_profile_lists_it_in_external_beside_the_gas(make_simulator, clock):
    sim = make_simulator(profile=PROFILES["water-meter"])
    v1, v2 = _both(sim)
    assert [d["type"] for d in v2["external"]] == ["gas_meter", "water_meter"]
    assert [d["type"] for d in v1["external"]] == ["gas_meter", "water_meter"]
    water = v2["external"][1]
    assert water["unit"] == "m3" and water["value"] > 0
    sample = normalise(v2, api="v2", now=clock.moment)
    assert sample["gas_m3"] == v2["external"][0]["value"]


def test_the_readings_log_says_what_each_answer_carried(make_simulator, tmp_path):
    log = tmp_path / "readings.jsonl"
    sim = make_simulator(readings_log_path=log)
    v1, v2 = _both(sim)
    assert sim.wait_served(2, timeout_s=10)
    first, second = (json.loads(line) for line in log.read_text().splitlines())
    assert (first["api"], first["meter_ts"]) == ("v1", None)  # no time in a v1 answer
    assert (second["api"], second["meter_ts"]) == ("v2", "2024-06-28T12:00:00+00:00")
    assert first["power_w"] == v1["active_power_w"] == second["power_w"] == v2["power_w"]
    assert second["energy_export_kwh"] == v2["energy_export_kwh"]


def test_the_telegram_endpoints_serve_the_dsmr_telegram_behind_the_answer(make_simulator):
    from edgeclient.simpayloads import _crc16

    assert _crc16("123456789") == "BB3D"  # the CRC-16/ARC check value
    sim = make_simulator(profile=PROFILES["no-gas"])
    base = f"http://{sim.address}"
    v1 = httpx.get(f"{base}/api/v1/data", timeout=5).json()
    answer = httpx.get(f"{base}/api/v1/telegram", timeout=5)
    with _tls_http(sim) as client:
        v2 = _v2(client, sim, "GET", "/api/telegram", headers=_bearer(sim.token))
    assert answer.headers["Content-Type"] == "text/plain"
    assert v2.text == answer.text  # one telegram, whichever API asks
    text = answer.text
    body, crc = text.rstrip("\r\n").rsplit("!", 1)
    assert text.startswith("/FLU5") and crc == _crc16(body + "!")
    lines = text.split("\r\n")
    assert f"1-0:1.8.1({v1['total_power_import_t1_kwh']:010.3f}*kWh)" in lines
    assert "0-0:1.0.0(240628140000S)" in lines
    assert "0-1:24.2.3(632525252525S)(00000.000*m3)" in lines
