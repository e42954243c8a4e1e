"""Meter readings as OCPP 1.6 sampledValue strings: plain decimals, every billed Wh kept."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from station.ocpp.meter_values import sampled_values


def energy_text(wh: float) -> str:
    return sampled_values({"energy_wh": wh}, "Sample.Periodic", as_text=True)[0]["value"]


def test_a_lifetime_register_above_a_million_wh_keeps_every_digit() -> None:
    # 12.3 MWh: a public AC station after a few months. "%g" sent "1.23457e+07" (50 Wh lost per reading).
    assert energy_text(12_345_678.9) == "12345678.9"
    assert energy_text(1_520_300.0) == "1520300"


@given(st.integers(min_value=0, max_value=10**12))
def test_the_text_is_a_plain_decimal_equal_to_the_reading_in_thousandths(milli_wh: int) -> None:
    text = energy_text(milli_wh / 1000)
    assert "e" not in text.lower()
    assert round(float(text) * 1000) == milli_wh
