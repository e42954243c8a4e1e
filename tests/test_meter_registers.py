"""Register maps: decoding with pymodbus's converters, read planning, map validation."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pymodbus.client.mixin import ModbusClientMixin

from station.meter.registers import ADL400, FLOAT32, MAPS, UINT32, Register, RegisterMap, get_map

DATATYPE = ModbusClientMixin.DATATYPE


def _image(register_map: RegisterMap, raw: dict[str, list[int]]) -> dict[int, list[int]]:
    """Register contents per block, as a meter would return them."""
    images: dict[int, list[int]] = {}
    for block in register_map.blocks:
        regs = [0] * block.count
        for name in block.names:
            if name in raw:
                offset = register_map.registers[name].address - block.address
                regs[offset : offset + 2] = raw[name]
        images[block.address] = regs
    return images


def _decode_all(register_map: RegisterMap, raw: dict[str, list[int]]) -> dict[str, float]:
    images = _image(register_map, raw)
    values: dict[str, float] = {}
    for block in register_map.blocks:
        values.update(register_map.decode(block, images[block.address]))
    return values


finite_float32 = st.floats(width=32, allow_nan=False, allow_infinity=False)


@given(voltage=finite_float32, power_kw=finite_float32)
def test_float32_values_round_trip_through_pymodbus_big_endian_words(voltage: float, power_kw: float) -> None:
    raw = {
        "voltage_l2": ModbusClientMixin.convert_to_registers(voltage, DATATYPE.FLOAT32, word_order="big"),
        "power_l3": ModbusClientMixin.convert_to_registers(power_kw, DATATYPE.FLOAT32, word_order="big"),
    }
    values = _decode_all(ADL400, raw)
    assert values["voltage_l2"] == voltage
    assert values["power_l3"] == power_kw * 1000.0


@given(counts=st.integers(min_value=0, max_value=0xFFFFFFFF))
def test_uint32_energy_counts_decode_to_wh_at_100_wh_per_count(counts: int) -> None:
    raw = {"energy_import": ModbusClientMixin.convert_to_registers(counts, DATATYPE.UINT32, word_order="big")}
    assert _decode_all(ADL400, raw)["energy_import"] == counts * 100.0


@given(wh=st.floats(min_value=0, max_value=4e11, allow_nan=False))
def test_encoding_energy_truncates_to_whole_counts_like_the_meter(wh: float) -> None:
    regs = ADL400.encode("energy_import", wh)
    counts = ModbusClientMixin.convert_from_registers(regs, DATATYPE.UINT32, word_order="big")
    assert counts == min(math.floor(wh / 100.0 + 1e-9), 0xFFFFFFFF)


def test_adl400_words_are_big_endian_high_word_first() -> None:
    # 230.0 V as IEEE-754 is 0x43660000: high word at the lower address.
    raw = {"voltage_l1": [0x4366, 0x0000], "energy_import": [0x0001, 0x0000]}
    values = _decode_all(ADL400, raw)
    assert values["voltage_l1"] == 230.0
    assert values["energy_import"] == 65536 * 100.0


def test_adl400_is_read_in_two_blocks_covering_every_register() -> None:
    blocks = ADL400.blocks
    assert [(b.address, b.count) for b in blocks] == [(0x0800, 26), (0x0832, 38)]
    covered = {name for b in blocks for name in b.names}
    assert covered == set(ADL400.registers)
    for block in blocks:
        for name in block.names:
            reg = ADL400.registers[name]
            assert block.address <= reg.address and reg.end <= block.address + block.count


def test_reads_never_exceed_max_block_and_gaps_beyond_max_gap_split_reads() -> None:
    spread = RegisterMap(
        model="spread",
        max_gap=4,
        max_block=10,
        registers={
            "energy_import": Register(0, UINT32, 100.0, "Wh"),
            "voltage_l1": Register(2, FLOAT32, 1.0, "V"),  # adjacent: merged
            "voltage_l2": Register(8, FLOAT32, 1.0, "V"),  # gap 4: merged, block now 10 long
            "voltage_l3": Register(10, FLOAT32, 1.0, "V"),  # would make 12 > max_block: new read
            "frequency": Register(100, FLOAT32, 1.0, "Hz"),  # far away: new read
        },
    )
    assert [(b.address, b.count) for b in spread.blocks] == [(0, 10), (10, 2), (100, 2)]


def test_a_new_meter_model_is_only_data_including_little_endian_word_order() -> None:
    other = RegisterMap(
        model="other",
        word_order="little",
        registers={
            "energy_import": Register(0x10, UINT32, 10.0, "Wh"),  # 0.01 kWh counts
            "power_total": Register(0x20, FLOAT32, 1.0, "W"),
        },
    )
    raw = {
        "energy_import": ModbusClientMixin.convert_to_registers(12345, DATATYPE.UINT32, word_order="little"),
        "power_total": ModbusClientMixin.convert_to_registers(7360.0, DATATYPE.FLOAT32, word_order="little"),
    }
    assert _decode_all(other, raw) == {"energy_import": 123450.0, "power_total": 7360.0}


def test_nan_from_the_meter_is_a_decode_error_not_a_value() -> None:
    raw = {"frequency": [0x7FC0, 0x0000]}
    with pytest.raises(ValueError, match="frequency"):
        _decode_all(ADL400, raw)


def test_short_read_is_a_decode_error() -> None:
    block = ADL400.blocks[0]
    with pytest.raises(ValueError, match="expected 26"):
        ADL400.decode(block, [0] * 10)


@pytest.mark.parametrize(
    ("registers", "message"),
    [
        ({"energy_import": Register(0, UINT32, 100.0, "Wh"), "volts_l1": Register(4, FLOAT32, 1.0, "V")}, "unknown"),
        ({"power_total": Register(0, FLOAT32, 1.0, "W")}, "required"),
        ({"energy_import": Register(0, UINT32, 100.0, "kWh")}, "must scale to"),
        (
            {"energy_import": Register(0, UINT32, 100.0, "Wh"), "frequency": Register(1, FLOAT32, 1.0, "Hz")},
            "overlap",
        ),
    ],
)
def test_invalid_maps_are_rejected_when_defined(registers: dict[str, Register], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RegisterMap(model="broken", registers=registers)


def test_maps_are_found_by_model_name_and_unknown_models_name_the_known_ones() -> None:
    assert get_map(" ADL400 ") is ADL400
    assert MAPS["adl400"] is ADL400
    with pytest.raises(ValueError, match="adl400"):
        get_map("sdm630")


def test_the_adl400_provides_every_measurand_the_station_can_send() -> None:
    from station.core.metering import SENDABLE
    from station.meter.registers import ADL400, measurands

    assert measurands(ADL400) == frozenset(SENDABLE)
