"""The Belgian demand records of a raw telegram: 1-0:1.4.0, 1-0:1.6.0, 0-0:98.1.0.

Real telegram shapes from the public record (each cited where it is used), the
simulator's telegram read over HTTP, the month rollover, and the read at the edge.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

import p1wire as wire
from edgeclient.history import HistoryReader
from edgeclient.homewizard import HomeWizardClient, MeterConfig
from edgeclient.household import BRUSSELS, MeterModel
from edgeclient.spool import Spool
from edgeclient.telegram import parse_demand, parse_stamp

SUMMER = timezone(timedelta(hours=2))
WINTER = timezone(timedelta(hours=1))

# ndokter/dsmr_parser test/example_telegrams.py, TELEGRAM_FLUVIUS_V171 (a Fluvius meter;
# its history lists the newest month first).
FLUVIUS_V171 = (
    "/FLU5\\253769484_A\r\n\r\n"
    "0-0:96.1.4(50217)\r\n"
    "0-0:96.1.1(3153414733313031303231363035)\r\n"
    "0-0:1.0.0(200512135409S)\r\n"
    "1-0:1.8.1(000000.034*kWh)\r\n"
    "1-0:1.8.2(000015.758*kWh)\r\n"
    "1-0:2.8.1(000000.000*kWh)\r\n"
    "1-0:2.8.2(000000.011*kWh)\r\n"
    "1-0:1.4.0(02.351*kW)\r\n"
    "1-0:1.6.0(200509134558S)(02.589*kW)\r\n"
    "0-0:98.1.0(3)(1-0:1.6.0)(1-0:1.6.0)(200501000000S)(200423192538S)(03.695*kW)"
    "(200401000000S)(200305122139S)(05.980*kW)(200301000000S)(200210035421W)(04.318*kW)\r\n"
    "0-0:96.14.0(0001)\r\n"
    "1-0:1.7.0(00.000*kW)\r\n"
    "1-0:2.7.0(00.000*kW)\r\n"
    "0-0:96.13.0()\r\n"
    "0-1:24.1.0(003)\r\n"
    "0-1:96.1.1(37464C4F32313139303333373333)\r\n"
    "0-1:24.4.0(1)\r\n"
    "0-1:24.2.3(200512134558S)(00112.384*m3)\r\n"
    "!3AD7\r\n"
)

# The same file, TELEGRAM_FLUVIUS_V171_ALT: oldest month first, and a month the meter
# holds no maximum for (the "no time" placeholder with 00.000 kW).
FLUVIUS_V171_ALT = (
    "/FLU5\\253769484_A\r\n\r\n"
    "0-0:96.1.4(50217)\r\n"
    "0-0:1.0.0(231102121548W)\r\n"
    "1-0:1.8.1(000301.548*kWh)\r\n"
    "1-0:1.8.2(000270.014*kWh)\r\n"
    "0-0:96.14.0(0001)\r\n"
    "1-0:1.4.0(00.052*kW)\r\n"
    "1-0:1.6.0(231102114500W)(03.064*kW)\r\n"
    "0-0:98.1.0(4)(1-0:1.6.0)(1-0:1.6.0)(230801000000S)(632525252525W)(00.000*kW)"
    "(230901000000S)(230831181500S)(01.862*kW)(231001000000S)(230910183000S)(04.229*kW)"
    "(231101000000W)(231016130000S)(04.927*kW)\r\n"
    "1-0:1.7.0(00.338*kW)\r\n"
    "!C4B0\r\n"
)

# api-documentation.homewizard.com docs/v2/telegram (and docs/v1/telegram): the example
# answer of /api/telegram, a Dutch ISKRA meter without any Belgian demand record.
HOMEWIZARD_DOCS_DUTCH = (
    "/ISK5\\2M550T-10111-\r\n\r\n"
    "1-3:0.2.8(50)\r\n"
    "0-0:1.0.0(181106140429W)\r\n"
    "1-0:1.8.1(10830.511*kWh)\r\n"
    "1-0:1.8.2(002948.827*kWh)\r\n"
    "0-0:96.14.0(0002)\r\n"
    "1-0:1.7.0(21.100*kW)\r\n"
    "1-0:99.97.0(1)(0-0:96.7.19)(180529135630S)(0000002451*s)\r\n"
    "0-1:24.2.1(210606140010W)(02569.646*m3)\r\n"
    "!1F28\r\n"
)

# p1meter.eu, ADA P1 Meter "API Telegram": a meter that uses 0-0:98.1.0 for its
# billing-period registers, not for monthly maxima.
ADA_BILLING_REGISTERS = (
    "/AUX5440252420024796\r\n"
    "0-0:1.0.0(250329112720W)\r\n"
    "1-0:1.8.0(008323.570*kWh)\r\n"
    "0-0:98.1.0(250301000000W)(007453.019*kWh)(003657.588*kWh)(003795.431*kWh)"
    "(07.284*kW)(07.284*kW)(05.608*kW)(00.000*kW)\r\n"
    "!E819\r\n"
)


def test_fluvius_telegram_gives_average_month_maximum_and_history_oldest_first():
    demand = parse_demand(FLUVIUS_V171)
    assert demand.average_kw == 2.351
    assert demand.month_maximum is not None
    assert demand.month_maximum.month == "2020-05"
    assert demand.month_maximum.kw == 2.589
    assert demand.month_maximum.at == datetime(2020, 5, 9, 13, 45, 58, tzinfo=SUMMER)
    # 200501000000S closes April: its maximum fell on 2020-04-23.
    assert [(m.month, m.kw, m.at) for m in demand.history] == [
        ("2020-02", 4.318, datetime(2020, 2, 10, 3, 54, 21, tzinfo=WINTER)),
        # Printed 200305122139S: that telegram says summer time on 5 March; the letter
        # is read as printed, never second-guessed from the date.
        ("2020-03", 5.980, datetime(2020, 3, 5, 12, 21, 39, tzinfo=SUMMER)),
        ("2020-04", 3.695, datetime(2020, 4, 23, 19, 25, 38, tzinfo=SUMMER)),
    ]


def test_a_month_without_maximum_is_left_out_and_the_order_of_the_record_does_not_matter():
    demand = parse_demand(FLUVIUS_V171_ALT)
    assert [(m.month, m.kw) for m in demand.history] == [
        ("2023-08", 1.862),
        ("2023-09", 4.229),
        ("2023-10", 4.927),  # (231101000000W): the first of November closes October
    ]
    assert demand.wire_months()[0] == {
        "month": "2023-08",
        "peak_kw": 1.862,
        "peak_ts": "2023-08-31T18:15:00+02:00",
    }


def test_a_telegram_without_belgian_records_has_no_demand():
    demand = parse_demand(HOMEWIZARD_DOCS_DUTCH)
    assert (demand.average_kw, demand.month_maximum, demand.history) == (None, None, ())


def test_another_use_of_98_1_0_is_not_read_as_monthly_maxima():
    assert parse_demand(ADA_BILLING_REGISTERS).history == ()


@pytest.mark.parametrize(
    "record",
    [
        "0-0:98.1.0(0)(1-0:1.6.0)(1-0:1.6.0)",  # a new meter: no closed month yet
        "0-0:98.1.0()",
        "0-0:98.1.0(3)(1-0:1.6.0)(1-0:1.6.0)(200501000000S)",  # cut short
        "0-0:98.1.0(x)(1-0:1.6.0)(1-0:1.6.0)(200501000000S)(200423192538S)(03.695*kW)",
    ],
)
def test_an_empty_or_broken_history_is_empty_and_the_other_records_stay(record):
    demand = parse_demand(
        f"1-0:1.4.0(01.000*kW)\r\n{record}\r\n1-0:1.6.0(200509134558S)(02.589*kW)"
    )
    assert demand.history == ()
    assert demand.average_kw == 1.0
    assert demand.month_maximum is not None and demand.month_maximum.kw == 2.589


def test_the_season_letter_tells_the_two_0230s_of_the_autumn_night_apart():
    summer = parse_stamp("231029023000S")
    winter = parse_stamp("231029023000W")
    assert summer is not None and winter is not None
    assert winter - summer == timedelta(hours=1)
    assert summer.astimezone(UTC) == datetime(2023, 10, 29, 0, 30, tzinfo=UTC)
    assert parse_stamp("632525252525W") is None
    assert parse_stamp("000101010000W") is not None  # an unset clock is still a time


def test_history_across_the_spring_change_is_read_in_the_right_offsets():
    text = (
        "0-0:98.1.0(2)(1-0:1.6.0)(1-0:1.6.0)(240301000000W)(240214181500W)(04.100*kW)"
        "(240401000000S)(240331031500S)(03.200*kW)"
    )
    history = parse_demand(text).history
    assert [(m.month, m.at) for m in history] == [
        ("2024-02", datetime(2024, 2, 14, 18, 15, tzinfo=WINTER)),
        ("2024-03", datetime(2024, 3, 31, 3, 15, tzinfo=SUMMER)),  # after 02:00 -> 03:00
    ]


def test_the_simulated_meter_closes_its_month_into_the_history_at_the_rollover():
    start = int(datetime(2026, 3, 31, 22, 0, tzinfo=BRUSSELS).timestamp())
    model = MeterModel(seed=7, start_second=start)
    before = model.telegram(start + 60)
    assert len(before.monthly_peak_history) == 13
    assert [before.monthly_peak_history[i][0] for i in (0, -1)] == [(2025, 2), (2026, 2)]
    running = before.monthly_power_peak_w
    after = model.telegram(int(datetime(2026, 4, 1, 0, 20, tzinfo=BRUSSELS).timestamp()))
    assert len(after.monthly_peak_history) == 13  # the oldest month went
    assert after.monthly_peak_history[0][0] == (2025, 3)
    (month, peak_w, _) = after.monthly_peak_history[-1]
    assert month == (2026, 3)
    assert running is not None and peak_w >= running  # the last two hours may add to it


def test_the_simulator_serves_a_telegram_whose_history_parses_back(make_simulator, clock):
    sim = make_simulator()
    config = MeterConfig(
        host=sim.address, api="v2", token=sim.token, ca_file=sim.ca_file, serial=sim.serial
    )
    with HomeWizardClient(config) as meter:
        text = meter.telegram()
    model = sim._model.telegram(int(clock()))
    demand = parse_demand(text)
    assert [m.month for m in demand.history] == [
        f"{y:04d}-{m:02d}" for (y, m), _, _ in model.monthly_peak_history
    ]
    assert [m.kw for m in demand.history] == [
        round(w) / 1000 for _, w, _ in model.monthly_peak_history
    ]
    assert demand.month_maximum is not None and demand.average_kw is not None


def test_the_edge_reads_the_history_at_start_and_again_only_after_the_month_changed(
    make_simulator, clock, tmp_path
):
    sim = make_simulator()
    config = MeterConfig(host=sim.address, api="v1")
    with HomeWizardClient(config) as meter, Spool(tmp_path / "spool.db") as spool:
        reader = HistoryReader(meter, spool, now=lambda: clock.moment)
        assert reader.step() is True
        first = spool.pending_meter_history()
        assert first is not None and len(first["months"]) == 13
        assert first["current"]["month"] == clock.moment.astimezone(BRUSSELS).strftime("%Y-%m")
        assert spool.meter_history_sent(first["read_at"])
        clock.advance(3600)
        assert reader.step() is False  # the same month: no second read
        assert spool.pending_meter_history() is None
        local = clock.moment.astimezone(BRUSSELS)
        nxt = (local.replace(day=28) + timedelta(days=5)).replace(day=1, hour=0, minute=20)
        clock.set(nxt)
        assert reader.step() is True
        second = spool.pending_meter_history()
        assert second is not None and second["read_at"] != first["read_at"]
        assert second == wire.meter_history_payload(
            second["read_at"], second["months"], second["current"]
        )
