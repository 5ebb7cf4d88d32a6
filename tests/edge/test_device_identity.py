"""require_p1_meter: GET /api must name a P1 meter (HWE-P1), over API v1 and v2."""

from __future__ import annotations

import pytest

from edgeclient.homewizard import (
    HomeWizardClient,
    MeterConfig,
    MeterWrongProduct,
    require_p1_meter,
)
from edgeclient.meter_tls import PinnedCertificate
from tests.edge.scripted_meter import ScriptedMeter


def test_a_p1_meter_passes_the_check(make_simulator):
    sim = make_simulator()
    config = MeterConfig(host=sim.address, api="v1")
    with HomeWizardClient(config) as client:
        info = require_p1_meter(client)
    assert (info.product_type, info.serial) == ("HWE-P1", sim.serial)


def test_a_kwh_meter_over_api_v2_is_refused(cert_root):
    meter = ScriptedMeter(api="v2", product="HWE-KWH1", cert_dir=cert_root / "kwh1").start()
    try:
        meter.tokens["local/edge"] = "A" * 32
        pinned = PinnedCertificate.load(meter.certificates.cert_file)
        config = MeterConfig(host=meter.address, api="v2", token="A" * 32, pinned=pinned)
        with HomeWizardClient(config) as client, pytest.raises(MeterWrongProduct) as raised:
            require_p1_meter(client)
    finally:
        meter.stop()
    assert raised.value.product_type == "HWE-KWH1"
    assert str(raised.value) == (
        f"HW_P1_HOST={meter.address} is a HomeWizard kWh Meter (1-phase) (HWE-KWH1), "
        "not a P1 meter (HWE-P1): point HW_P1_HOST at the P1 meter"
    )
