"""hw_pair against the simulated meter: pin, wait for the button, print the settings."""

from __future__ import annotations

import argparse
import io
import re
import socket

import pytest

from edgeclient.cli import CommandError, Output
from edgeclient.cli import pair as hw_pair
from edgeclient.homewizard import (
    ButtonNotPressed,
    HomeWizardClient,
    MeterAuthError,
    MeterConfig,
    MeterDeviceError,
)
from edgeclient.meter_tls import PinnedCertificate, display_fingerprint
from edgeclient.pairing import (
    PairingTimeout,
    check_user_name,
    default_user_name,
    fetch_certificate,
    pair,
)
from tests.edge.scripted_meter import PAIRING_ERRORS, ScriptedMeter, answering


def _hw_pair(*args: str) -> str:
    """hw_pair's function, as manage.py hw_pair and python -m edgeclient pair run it (the
    server settings the tests run under do not install the edge's commands)."""
    parser = argparse.ArgumentParser()
    hw_pair.add_arguments(parser)
    out = io.StringIO()
    hw_pair.handle(vars(parser.parse_args(args)), Output(out))
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
            user_name=default_user_name("edge"),
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


# -- user names: one per edge (issue 11, point 5) --------------------------------------

# The documented rule for the name (docs/v2/authorization.mdx, homewizard/api-documentation).
DOCUMENTED_NAME = re.compile(r"^local\/[a-zA-Z0-9\-_/\\# ]{1,40}$")


@pytest.fixture
def make_scripted(cert_root):
    started: list[ScriptedMeter] = []

    def make(**overrides) -> ScriptedMeter:
        meter = ScriptedMeter(cert_dir=cert_root / "scripted", **overrides).start()
        started.append(meter)
        return meter

    yield make
    for meter in started:
        meter.stop()


@pytest.mark.parametrize(
    "hostname",
    ["raspberrypi", "Pi.Kitchen.lan", "edge_2", "pi kitchen #2", "ä-edge", "x" * 80],
)
def test_the_default_name_comes_from_the_host_name_within_the_documented_rule(hostname):
    name = default_user_name(hostname)
    assert name.startswith("local/p1platform-")
    assert DOCUMENTED_NAME.match(name), name
    assert check_user_name(name) == name


def test_host_names_that_differ_only_beyond_the_length_limit_still_pair_as_two_users():
    long = "raspberrypi-kitchen-upstairs-left-"
    first, second = default_user_name(long + "1"), default_user_name(long + "2")
    assert first != second
    assert len(first) == len(second) == len("local/") + 40


def test_a_host_name_with_nothing_usable_falls_back_to_the_plain_name():
    assert default_user_name("...") == "local/p1platform"


def test_hw_pair_names_the_user_and_warns_about_revocation_before_the_button(
    make_scripted, tmp_path
):
    meter = make_scripted()
    output = _hw_pair("--host", meter.address, "--cert-out", str(tmp_path / "meter.pem"))

    expected = default_user_name(socket.gethostname())
    assert meter.names == [expected]
    lines = output.splitlines()
    warning = next(i for i, ln in enumerate(lines) if "revoke" in ln)
    button = next(i for i, ln in enumerate(lines) if "Press the button" in ln)
    assert warning < button
    assert f"Pairing as user {expected} (from this host's name" in output
    assert _environment(output)["HW_P1_USER_NAME"] == expected


def test_two_edges_paired_with_one_meter_both_keep_their_token(make_scripted):
    # The stand-in meter keeps one token per name, as documented: pairing the second
    # edge under the first one's name would have revoked the first edge's token.
    meter = make_scripted()
    certificate = fetch_certificate(meter.address)
    kitchen = pair(meter.address, certificate, user_name=default_user_name("pi-kitchen"))
    garage = pair(meter.address, certificate, user_name=default_user_name("pi-garage"))
    assert kitchen.user_name != garage.user_name
    assert _answers_with(meter, kitchen.token) and _answers_with(meter, garage.token)

    again = pair(meter.address, certificate, user_name=kitchen.user_name)
    assert not _answers_with(meter, kitchen.token)  # what re-pairing under a name does
    assert _answers_with(meter, again.token) and _answers_with(meter, garage.token)


def _answers_with(meter: ScriptedMeter, token: str) -> bool:
    config = MeterConfig(
        host=meter.address, api="v2", token=token, pinned=fetch_certificate(meter.address)
    )
    with HomeWizardClient(config) as client:
        try:
            return client.device_info().product_type == "HWE-P1"
        except MeterAuthError:
            return False


def test_the_name_is_chosen_by_option_then_environment_then_host(
    make_scripted, tmp_path, monkeypatch
):
    meter = make_scripted()
    cert = ("--cert-out", str(tmp_path / "meter.pem"))
    monkeypatch.setenv("HW_P1_USER_NAME", "local/edge-attic")
    from_env = _hw_pair("--host", meter.address, *cert)
    from_option = _hw_pair("--host", meter.address, "--name", "garage", *cert)
    assert meter.names == ["local/edge-attic", "local/garage"]
    assert "(from HW_P1_USER_NAME)" in from_env
    assert "(from --name)" in from_option


@pytest.mark.parametrize(
    ("name", "problem"),
    [("pi.kitchen", "characters"), ("local/", "empty"), ("n" * 41, "too long")],
)
def test_a_name_the_meter_would_refuse_is_refused_before_the_button(make_scripted, name, problem):
    meter = make_scripted()
    with pytest.raises(CommandError, match=f"^--name: .*{problem}") as raised:
        _hw_pair("--host", meter.address, "--name", name)
    assert "\n" not in str(raised.value)
    assert meter.names == []  # the meter was never asked


def test_a_bad_name_in_the_environment_names_the_variable(make_scripted, monkeypatch):
    meter = make_scripted()
    monkeypatch.setenv("HW_P1_USER_NAME", "edge@home")
    with pytest.raises(CommandError, match=r"^HW_P1_USER_NAME: 'local/edge@home' has char"):
        _hw_pair("--host", meter.address)


# Each documented refusal, and the words the operator reads (one line, no traceback).
REFUSALS = {
    "user:no-storage": "remove one",
    "user:invalid-prefix": "must start with local/",
    "user:name-empty": "give one with --name",
    "user:name-invalid": "refused the characters in 'local/",
    "user:name-too-long": "at most 40 characters",
    "request:invalid-json": "bug in p1platform",
    "request:too-large": "bug in p1platform",
    "request:api-version-not-supported": "HW_P1_API=v1",
    "json:no-parameters-recognized": "bug in p1platform",
    "json:parameter-missing:name": "bug in p1platform",
    "json:parameter-invalid-type:name": "bug in p1platform",
    "json:parameter-not-exclusive": "bug in p1platform",
}


def test_every_documented_pairing_error_has_an_explanation():
    retried = {"user:creation-not-enabled", "request:internal-server-error"}
    assert set(REFUSALS) == set(PAIRING_ERRORS) - retried


@pytest.mark.parametrize("code", sorted(REFUSALS))
def test_each_documented_pairing_refusal_is_one_line_naming_it(make_scripted, tmp_path, code):
    meter = make_scripted(pair_answer=answering(code))
    with pytest.raises(CommandError) as raised:
        _hw_pair("--host", meter.address, "--interval", "0.01",
                 "--cert-out", str(tmp_path / "meter.pem"))  # fmt: skip
    message = str(raised.value)
    assert f"HTTP {PAIRING_ERRORS[code]} {code}: " in message
    assert REFUSALS[code] in message
    assert "\n" not in message
    assert len(meter.names) == 1  # a refusal ends the wait: no point asking again
    assert not (tmp_path / "meter.pem").exists()


def test_an_internal_error_of_the_meter_is_retried_until_the_deadline(make_scripted):
    meter = make_scripted(pair_answer=answering("request:internal-server-error"))
    pattern = r"kept answering request:internal-server-error .*power-cycle"
    with pytest.raises(CommandError, match=pattern) as raised:
        _hw_pair("--host", meter.address, "--timeout", "0.3", "--interval", "0.05")
    assert "\n" not in str(raised.value)
    assert len(meter.names) > 1


def test_the_simulator_refuses_a_name_without_the_local_prefix(make_simulator):
    sim = make_simulator(button_after=0)
    with pytest.raises(MeterDeviceError) as raised:
        pair(sim.address, fetch_certificate(sim.address), user_name="p1platform")
    assert raised.value.code == "user:invalid-prefix"


def test_pairing_a_device_that_is_not_a_p1_meter_is_refused(make_scripted, tmp_path):
    meter = make_scripted(product="HWE-KWH1")  # kWh meters pair the same way (docs)
    with pytest.raises(CommandError) as raised:
        _hw_pair("--host", meter.address, "--cert-out", str(tmp_path / "meter.pem"))
    assert str(raised.value) == (
        f"--host={meter.address} is a HomeWizard kWh Meter (1-phase) (HWE-KWH1), not a P1 "
        "meter (HWE-P1): point --host at the P1 meter"
    )
    assert not (tmp_path / "meter.pem").exists()
