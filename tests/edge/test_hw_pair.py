"""hw_pair against the simulated meter: pin, wait for the button, print the settings."""

from __future__ import annotations

import io
import socket

import pytest
from django.core.management import CommandError, call_command

from edgeclient.homewizard import ButtonNotPressed, HomeWizardClient, MeterConfig
from edgeclient.meter_tls import PinnedCertificate, display_fingerprint
from edgeclient.pairing import PairingTimeout, fetch_certificate, pair


def _hw_pair(*args: str) -> str:
    out = io.StringIO()
    call_command("hw_pair", *args, stdout=out)
    return out.getvalue()


def _environment(output: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in output.splitlines() if line.startswith("HW_P1_"))


def test_pairing_prints_settings_that_work_for_the_edge(make_simulator, tmp_path):
    sim = make_simulator(button_after=2)
    cert_out = tmp_path / "meter.pem"
    output = _hw_pair("--host", sim.address, "--interval", "0.01", "--cert-out", str(cert_out))

    pinned = PinnedCertificate.load(sim.certificates.cert_file)
    assert f"SHA-256 fingerprint: {display_fingerprint(pinned.sha256)}" in output
    assert "Press the button" in output
    environment = _environment(output)
    assert environment["HW_P1_HOST"] == sim.address
    assert environment["HW_P1_API"] == "v2"
    assert environment["HW_P1_CERT_SHA256"] == pinned.sha256
    assert PinnedCertificate.load(cert_out) == pinned
    with HomeWizardClient(MeterConfig.from_env(environment)) as client:
        assert client.device_info().serial == sim.serial


def test_pairing_gives_up_when_the_button_is_not_pressed(make_simulator, tmp_path):
    sim = make_simulator(button_after=None)
    with pytest.raises(CommandError, match=r"button was not pressed within 0\.3 s"):
        _hw_pair("--host", sim.address, "--timeout", "0.3", "--interval", "0.05",
                 "--cert-out", str(tmp_path / "meter.pem"))  # fmt: skip
    assert not (tmp_path / "meter.pem").exists()


def test_pairing_keeps_asking_until_the_deadline_on_an_injected_clock(make_simulator):
    sim = make_simulator(button_after=None)
    now = [0.0]
    waits: list[ButtonNotPressed] = []

    def sleep(seconds: float) -> None:
        now[0] += seconds

    with pytest.raises(PairingTimeout):
        pair(
            sim.address,
            fetch_certificate(sim.address),
            timeout_s=60,
            interval_s=1,
            clock=lambda: now[0],
            sleep=sleep,
            on_retry=waits.append,
        )
    assert len(waits) == 60 and now[0] == 60
    assert all(isinstance(w, ButtonNotPressed) for w in waits)


def test_a_meter_without_room_for_users_says_so(make_simulator, tmp_path):
    sim = make_simulator(no_storage=True)
    with pytest.raises(CommandError, match=r"user:no-storage.*remove one"):
        _hw_pair("--host", sim.address, "--cert-out", str(tmp_path / "meter.pem"))


def test_an_address_where_nothing_listens_fails_with_one_line():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(CommandError, match=f"127.0.0.1:{port}: .*check the address"):
        _hw_pair("--host", f"127.0.0.1:{port}", "--timeout", "1")


def test_a_meter_without_api_v2_fails_the_handshake(make_simulator):
    sim = make_simulator(api="v1")
    with pytest.raises(CommandError, match="TLS"):
        _hw_pair("--host", sim.address, "--timeout", "1")


def test_a_malformed_host_is_refused():
    with pytest.raises(CommandError, match="--host"):
        _hw_pair("--host", "https://meter/")
