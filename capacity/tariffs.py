"""The capacity tariff's prices per network area and year (versioned by year).

The price is the distribution tariff "gemiddelde maandpiek" for households on the
low-voltage net with peak metering (a digital meter), in EUR per kW per year excluding
VAT. A month is priced with its own year's table; the bill for a month is the 12-month
average (kW) x that year's price / 12.

Sources of every figure:

- 2026, the eight Fluvius areas: the Vlaamse Nutsregulator's tariff sheets
  "<area> - 2026 - ELEK", row "Tarief voor het netgebruik - afnameklanten op
  laagspanningsnet met piekmeting - Gemiddelde maandpiek"
  (vlaamsenutsregulator.be/elektriciteit-en-aardgas/nettarieven/hoeveel-bedragen-de-
  distributienettarieven), as transcribed to seven decimals by two independent public
  projects that agree on every figure: johan71gent/ha-capacity-tariff (README, table
  "Netgebied | 2026, excl. btw") and a Belgian tariff seed (``seedTariffs``, "Source:
  VREG - Distributienettarieven elektriciteit 2026"); a third, a VREG-sheet parser's
  check values, gives the same Antwerpen (49.4036563) and West (57.0995726).
- 2025: the same eight areas, but no public source in reach of this project's
  research gave the 2025 figures, so they are None: a 2025 month is unpriced (no
  estimated cost) unless the device has its own price. Never invent one; fill them in
  from the 2025 sheets, with their source.
- VAT: 6 % on household electricity, as the invoice shows it (the same sources:
  "incl. 6 % btw zoals op je factuur"; the VREG parser: "Households pay 6 % VAT on
  electricity"), for both years.
- Wallonia and Brussels: their households have no measured-peak (capacity) charge;
  their distribution tariffs are per kWh (and a fixed term). They are named here so a
  device there is said to have no capacity tariff rather than priced wrongly.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

FLANDERS, WALLONIA, BRUSSELS = "flanders", "wallonia", "brussels"
REGION_OF_AREA = {
    "fluvius-antwerpen": FLANDERS,
    "fluvius-halle-vilvoorde": FLANDERS,
    "fluvius-imewo": FLANDERS,
    "fluvius-kempen": FLANDERS,
    "fluvius-limburg": FLANDERS,
    "fluvius-midden-vlaanderen": FLANDERS,
    "fluvius-west": FLANDERS,
    "fluvius-zenne-dijle": FLANDERS,
    "wallonia": WALLONIA,
    "brussels": BRUSSELS,
}

# year -> area -> EUR/kW/year excl. VAT; None: not found in the sources (see above).
CAPACITY_PRICE_EXCL_VAT: dict[int, dict[str, Decimal | None]] = {
    2025: {area: None for area, region in REGION_OF_AREA.items() if region == FLANDERS},
    2026: {
        "fluvius-antwerpen": Decimal("49.4036563"),
        "fluvius-halle-vilvoorde": Decimal("56.0428955"),
        "fluvius-imewo": Decimal("54.2009816"),
        "fluvius-kempen": Decimal("56.2069857"),
        "fluvius-limburg": Decimal("49.0469384"),
        "fluvius-midden-vlaanderen": Decimal("50.1239818"),
        "fluvius-west": Decimal("57.0995726"),
        "fluvius-zenne-dijle": Decimal("56.1228635"),
    },
}
VAT_RATE: dict[int, Decimal] = {2025: Decimal("0.06"), 2026: Decimal("0.06")}
# A year after the table's last (next year's sheets appear in December) is priced
# with no table price: the answer says so rather than carry last year's over.


TABLE, OVERRIDE, SOCIAL, NO_CAPACITY_TARIFF, UNPRICED = (
    "table",
    "override",
    "social-tariff",
    "no-capacity-tariff",
    "unpriced",
)


@dataclass(frozen=True)
class Price:
    """The capacity price that applies to one device in one year, and why."""

    status: str  # TABLE, OVERRIDE, SOCIAL, NO_CAPACITY_TARIFF or UNPRICED
    network_area: str | None
    year: int
    eur_per_kw_year: Decimal | None  # excl. VAT; None unless TABLE or OVERRIDE
    vat_rate: Decimal | None

    @property
    def priced(self) -> bool:
        return self.eur_per_kw_year is not None


def price_for(area: str, override: Decimal | None, social_tariff: bool, year: int) -> Price | None:
    """The price of ``year`` for a device; None: no area and no override (nothing to say).

    Precedence: the social tariff exempts; a region without a capacity tariff says so;
    then the device's own price; then the area's table of that year.
    """
    vat = VAT_RATE.get(year)
    area_or_none = area or None
    if social_tariff:
        return Price(SOCIAL, area_or_none, year, Decimal(0), vat)
    if area and REGION_OF_AREA.get(area) not in (None, FLANDERS):
        return Price(NO_CAPACITY_TARIFF, area, year, None, None)
    if override is not None:
        return Price(OVERRIDE, area_or_none, year, override, vat)
    if not area:
        return None
    table = CAPACITY_PRICE_EXCL_VAT.get(year, {}).get(area)
    if table is None:
        return Price(UNPRICED, area, year, None, vat)
    return Price(TABLE, area, year, table, vat)
