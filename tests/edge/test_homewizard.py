"""The HomeWizard client against a real simulated meter (TLS, tokens, failures)."""

from __future__ import annotations

import httpx
import pytest

from edgeclient.homewizard import (
    HomeWizardClient,
    MeterAuthError,
    MeterConfig,
    MeterConfigError,
    MeterDeviceError,
    MeterTimeout,
    MeterTLSError,
    MeterUnreachable,
    split_host,
)
from edgeclient.meter_tls import PinnedCertificate, display_fingerprint
from edgeclient.normalise import SampleRejected, normalise
from edgeclient.pairing import fetch_certificate


def _ca_config(sim, **changes) -> MeterConfig:
    values = {
        "host": sim.address,
        "api": "v2",
        "token": sim.token,
        "ca_file": sim.ca_file,
        "serial": sim.serial,
    }
    return MeterConfig(**(values | changes))


def _pinned(sim) -> PinnedCertificate:
    return PinnedCertificate.load(sim.certificates.cert_file)


def test_v1_measurement_normalises_to_the_simulators_telegram_time(simulator, clock):
    with HomeWizardClient(MeterConfig(host=simulator.address, api="v1")) as client:
        reading = client.measurement()
        info = client.device_info()
    assert (reading.api, info.product_type, info.api_version) == ("v1", "HWE-P1", "v1")
    sample = normalise(reading.payload, api=reading.api, now=clock.moment)
    assert sample["ts"] == "2024-06-28T12:00:00+00:00"
    assert sample["power_w"] == reading.payload["active_power_w"]


def test_v2_verified_against_the_ca_with_the_device_name_succeeds(simulator, clock):
    with HomeWizardClient(_ca_config(simulator)) as client:
        info = client.device_info()
        reading = client.measurement()
    assert (info.serial, info.api_version) == (simulator.serial, "2.0.0")
    sample = normalise(reading.payload, api="v2", now=clock.moment)
    assert sample["ts"] == "2024-06-28T12:00:00+00:00"
    assert sample["gas_m3"] is not None and sample["monthly_power_peak_w"] is not None


def test_v2_verified_against_the_pinned_certificate_succeeds(simulator):
    pinned = _pinned(simulator)
    config = MeterConfig(
        host=simulator.address, api="v2", token=simulator.token, pinned=pinned,
        pinned_sha256=pinned.sha256,
    )  # fmt: skip
    with HomeWizardClient(config) as client:
        assert client.measurement().api == "v2"


def test_a_certificate_from_an_unknown_ca_is_refused(make_simulator):
    trusted = make_simulator(seed=1)
    stranger = make_simulator(seed=2)
    config = _ca_config(stranger, ca_file=trusted.ca_file)
    with HomeWizardClient(config) as client, pytest.raises(MeterTLSError, match="not trusted"):
        client.measurement()
    assert stranger.served_count == 0


def test_a_certificate_for_another_device_name_is_refused(simulator):
    with HomeWizardClient(_ca_config(simulator, serial="5c2fafffffff")) as client:
        with pytest.raises(MeterTLSError, match="mismatch"):
            client.measurement()


def test_another_device_than_the_pinned_one_is_refused(make_simulator):
    paired = make_simulator(seed=1)
    impostor = make_simulator(seed=2)
    config = MeterConfig(
        host=impostor.address, api="v2", token=impostor.token, pinned=_pinned(paired)
    )
    with HomeWizardClient(config) as client, pytest.raises(MeterTLSError):
        client.measurement()
    assert impostor.served_count == 0


def test_a_wrong_pinned_fingerprint_is_refused_before_the_token_is_sent(simulator):
    config = MeterConfig(
        host=simulator.address, api="v2", token=simulator.token, pinned=_pinned(simulator),
        pinned_sha256="ab" * 32,
    )  # fmt: skip
    with HomeWizardClient(config) as client, pytest.raises(MeterTLSError, match="fingerprint"):
        client.measurement()
    assert simulator.served_count == 0


def test_a_refused_token_is_an_auth_error(simulator):
    with HomeWizardClient(_ca_config(simulator, token="0" * 32)) as client:
        with pytest.raises(MeterAuthError, match="401"):
            client.measurement()


def test_auto_uses_v2_when_paired_and_v1_without_a_token(simulator):
    with HomeWizardClient(_ca_config(simulator, api="auto")) as client:
        assert client.api == "v2"
    with HomeWizardClient(MeterConfig(host=simulator.address, api="auto")) as client:
        assert client.api == "v1"


def test_a_v1_only_meter_asked_for_v2_fails_the_handshake_without_downgrading(make_simulator):
    paired = make_simulator(seed=1)
    plain_only = make_simulator(seed=2, api="v1")
    config = MeterConfig(host=plain_only.address, api="auto", token="T", pinned=_pinned(paired))
    with HomeWizardClient(config) as client, pytest.raises(MeterTLSError, match="handshake"):
        client.api  # noqa: B018


def test_a_meter_off_the_network_is_unreachable_and_recovers(simulator, clock):
    with HomeWizardClient(MeterConfig(host=simulator.address, api="v1")) as client:
        client.measurement()
        simulator.go_offline()
        with pytest.raises(MeterUnreachable):
            client.measurement()
        simulator.come_back()
        clock.advance(1)
        assert "total_power_import_kwh" in client.measurement().payload


def test_a_slow_meter_is_a_timeout(simulator):
    simulator.faults.slow_s = 30  # the simulator's stop() cuts this short
    fast = httpx.Timeout(0.3)
    with HomeWizardClient(MeterConfig(host=simulator.address, api="v1"), timeout=fast) as client:
        with pytest.raises(MeterTimeout):
            client.measurement()


def test_a_server_error_is_a_device_error_with_status_and_code(simulator):
    simulator.faults.error_rate = 1.0
    with HomeWizardClient(_ca_config(simulator)) as client:
        with pytest.raises(MeterDeviceError) as excinfo:
            client.measurement()
    assert (excinfo.value.status, excinfo.value.code) == (500, "request:internal-server-error")


def test_garbage_answers_are_rejected_by_the_normaliser(simulator, clock):
    with HomeWizardClient(_ca_config(simulator)) as client:
        good = normalise(client.measurement().payload, api="v2", now=clock.moment)
        simulator.faults.garbage_rate = 1.0
        for _ in range(12):
            clock.advance(1)
            payload = client.measurement().payload
            with pytest.raises(SampleRejected):
                normalise(
                    payload,
                    api="v2",
                    now=clock.moment,
                    previous_import_kwh=good["energy_import_kwh"],
                )


def test_fetched_certificate_matches_the_device_and_its_name(simulator):
    fetched = fetch_certificate(simulator.address)
    assert fetched == _pinned(simulator)
    assert fetched.name == simulator.device_name
    assert len(display_fingerprint(fetched.sha256)) == 95


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("192.168.1.20", ("192.168.1.20", None)),
        ("192.168.1.20:8443", ("192.168.1.20", 8443)),
        ("p1meter.local", ("p1meter.local", None)),
        ("[fe80::1]:443", ("fe80::1", 443)),
        ("fe80::1", ("fe80::1", None)),
    ],
)
def test_host_may_carry_a_port(host, expected):
    assert split_host(host) == expected


@pytest.mark.parametrize("host", ["http://192.168.1.20", "host:port", "", "a/b"])
def test_a_malformed_host_is_refused(host):
    with pytest.raises(ValueError):
        split_host(host)


@pytest.mark.parametrize(
    ("environ", "variable"),
    [
        ({}, "HW_P1_HOST"),
        ({"HW_P1_HOST": "http://meter"}, "HW_P1_HOST"),
        ({"HW_P1_HOST": "meter", "HW_P1_API": "v3"}, "HW_P1_API"),
        ({"HW_P1_HOST": "meter", "HW_P1_API": "v2"}, "HW_P1_TOKEN"),
        ({"HW_P1_HOST": "meter", "HW_P1_API": "v2", "HW_P1_TOKEN": "T"}, "HW_P1_CERT_FILE"),
        ({"HW_P1_HOST": "meter", "HW_P1_CERT_FILE": "/nonexistent.pem"}, "HW_P1_CERT_FILE"),
        ({"HW_P1_HOST": "meter", "HW_P1_CERT_SHA256": "abc"}, "HW_P1_CERT_SHA256"),
        ({"HW_P1_HOST": "meter", "HW_P1_CA_FILE": "/nonexistent.pem"}, "HW_P1_CA_FILE"),
        (
            {"HW_P1_HOST": "meter", "HW_P1_SERIAL": "appliance/p1dongle/5c2fafaabbcc"},
            "HW_P1_SERIAL",
        ),
        ({"HW_P1_HOST": "meter", "HW_P1_SERIAL": "5c2fafaabbc"}, "HW_P1_SERIAL"),
    ],
)
def test_bad_configuration_names_the_variable(environ, variable):
    with pytest.raises(MeterConfigError, match=f"^{variable}: "):
        MeterConfig.from_env(environ)


def test_configuration_from_the_environment(simulator):
    config = MeterConfig.from_env(
        {
            "HW_P1_HOST": simulator.address,
            "HW_P1_API": "V2",
            "HW_P1_TOKEN": simulator.token,
            "HW_P1_CERT_FILE": str(simulator.certificates.cert_file),
            "HW_P1_CERT_SHA256": display_fingerprint(_pinned(simulator).sha256),
        }
    )
    assert config.pinned_sha256 == _pinned(simulator).sha256
    with HomeWizardClient(config) as client:
        assert client.measurement().api == "v2"
    ca = MeterConfig.from_env(
        {
            "HW_P1_HOST": "meter",
            "HW_P1_CA_FILE": str(simulator.ca_file),
            "HW_P1_SERIAL": "5C2FAFAABBCC",
        }
    )
    assert (ca.api, ca.serial, ca.v2_trust_configured) == ("auto", "5c2fafaabbcc", True)
