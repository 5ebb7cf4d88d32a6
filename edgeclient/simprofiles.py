"""The meter variants ``simulate_p1 --profile`` can play, each shaped after a public record.

A profile changes only what a real variant changes: which fields the answer carries,
what the meter's clock says, whether the meter is replaced part-way, which certificate
the dongle presents. The household behind the meter stays the same, so a test can
compare profiles reading for reading. Sources are listed in edgeclient/fixtures/README.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

GasKind = Literal["meter", "placeholder", "none"]
ClockKind = Literal["meter", "unset", "stuck"]

# DSMR "no time" values reported in the field for a meter without a gas meter: the
# Sagemcom T211 sends 0-1:24.2.1(632525252525S)(00000.000) (ndokter/dsmr_parser#120).
GAS_PLACEHOLDER_V1 = 632525252525
# The same digits in API v2's ISO layout: not a date (month 25), as the device cannot
# make one of them either.
GAS_PLACEHOLDER_V2 = "2063-25-25T25:25:25"
# A meter whose clock was never set answers 2000-01-01 01:00 (winter time) on every
# telegram: 0-0:1.0.0(000101010000W) (dsmrreader/dsmr-reader#811).
UNSET_CLOCK_LOCAL = "2000-01-01T01:00:00"


@dataclass(frozen=True)
class Profile:
    name: str
    summary: str
    phases: Literal[1, 3] = 3
    totals: bool = True  # energy_import_kwh / total_power_import_kwh besides t1, t2
    export_registers: bool = True
    gas: GasKind = "meter"
    water_meter: bool = False
    clock: ClockKind = "meter"
    swap_after: int | None = None  # telegrams until the grid operator swaps the meter
    san: bool = False  # device certificate with a DNS subjectAltName

    @property
    def clock_trusted(self) -> bool:
        """Whether the answer's ``timestamp`` is the telegram's real time."""
        return self.clock == "meter"


DEFAULT = "belgian-3phase-gas"
# A meter swap soon enough for a test to see readings from both meters.
DEFAULT_SWAP_AFTER = 5

PROFILES: dict[str, Profile] = {
    p.name: p
    for p in (
        Profile(DEFAULT, "Fluvius 3-phase meter with a gas meter"),
        Profile("no-export", "no export registers in the answer", export_registers=False),
        Profile("no-gas", "no gas meter: DSMR placeholder gas timestamp", gas="placeholder"),
        Profile(
            "single-phase",
            "1-phase meter without gas, tariff registers only",
            phases=1,
            totals=False,
            gas="none",
        ),
        Profile("unset-clock", "meter clock never set (2000-01-01)", clock="unset"),
        Profile("stuck-clock", "meter clock stuck on one timestamp", clock="stuck"),
        Profile("meter-swap", "meter replaced: new unique_id", swap_after=DEFAULT_SWAP_AFTER),
        Profile("water-meter", "water meter in external[] beside the gas", water_meter=True),
        Profile("san-certificate", "device certificate with a DNS subjectAltName", san=True),
    )
}


class UnknownProfile(ValueError):
    pass


def profile_named(name: str) -> Profile:
    try:
        return PROFILES[name]
    except KeyError:
        known = ", ".join(PROFILES)
        raise UnknownProfile(f"unknown profile {name!r} (known: {known})") from None
