"""Energy meter register maps, as data.

Every meter model is one `RegisterMap`: which quantity lives at which holding
register, how it is encoded and how to scale it to the units `MeterReading`
uses (V, A, W, Wh, Hz). Supporting another meter model means adding a map to
`MAPS`, not writing code. Decoding uses pymodbus's own conversion helpers so
byte and word order are handled by the library, not by us.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from types import MappingProxyType
from typing import Literal, NamedTuple

from pymodbus.client.mixin import ModbusClientMixin

DATATYPE = ModbusClientMixin.DATATYPE


class Kind(str, enum.Enum):
    """How one value is encoded in its registers."""

    FLOAT32 = "float32"
    UINT32 = "uint32"

    @property
    def datatype(self) -> ModbusClientMixin.DATATYPE:
        return _DATATYPES[self]

    @property
    def words(self) -> int:
        """Registers (16-bit words) one value occupies."""
        return int(self.datatype.value[1])


_DATATYPES = {Kind.FLOAT32: DATATYPE.FLOAT32, Kind.UINT32: DATATYPE.UINT32}

FLOAT32 = Kind.FLOAT32
UINT32 = Kind.UINT32

QUANTITIES: Mapping[str, str] = MappingProxyType(
    {
        "voltage_l1": "V",
        "voltage_l2": "V",
        "voltage_l3": "V",
        "current_l1": "A",
        "current_l2": "A",
        "current_l3": "A",
        "power_l1": "W",
        "power_l2": "W",
        "power_l3": "W",
        "power_total": "W",
        "power_factor": "",
        "frequency": "Hz",
        "energy_total": "Wh",
        "energy_import": "Wh",
        "energy_export": "Wh",
    }
)
"""The quantities a map may name, with the unit a value has after scaling.

A fixed vocabulary turns a typo in a new map into an error at import time
instead of a silently missing value in the field.
"""

REQUIRED = frozenset({"energy_import"})
"""Without an import energy register a meter is useless for billing."""


class Register(NamedTuple):
    """One value: raw register value x `scale` = value in `unit`."""

    address: int
    kind: Kind
    scale: float = 1.0
    unit: str = ""

    @property
    def end(self) -> int:
        """First address after this value."""
        return self.address + self.kind.words


@dataclass(frozen=True, slots=True)
class Block:
    """One contiguous holding-register read and the values inside it."""

    address: int
    count: int
    names: tuple[str, ...]


@dataclass(frozen=True)
class RegisterMap:
    """The registers of one meter model.

    `max_gap` bounds how many unused registers a read may span to merge two
    neighbouring values into one request (fewer round trips at 9600 baud);
    `max_block` keeps each request under the Modbus limit of 125 registers.
    """

    model: str
    registers: Mapping[str, Register]
    word_order: Literal["big", "little"] = "big"
    max_gap: int = 16
    max_block: int = 120
    description: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "registers", MappingProxyType(dict(self.registers)))
        unknown = set(self.registers) - set(QUANTITIES)
        if unknown:
            raise ValueError(f"{self.model}: unknown quantities {sorted(unknown)}")
        missing = REQUIRED - set(self.registers)
        if missing:
            raise ValueError(f"{self.model}: required quantities missing {sorted(missing)}")
        for name, reg in self.registers.items():
            if reg.unit != QUANTITIES[name]:
                raise ValueError(
                    f"{self.model}: {name} must scale to {QUANTITIES[name]!r}, map says {reg.unit!r}"
                )
            if not 0 <= reg.address <= 0xFFFF - reg.kind.words + 1:
                raise ValueError(f"{self.model}: {name} address {reg.address:#x} out of range")
        ordered = sorted(self.registers.items(), key=lambda item: item[1].address)
        for (name_a, a), (name_b, b) in zip(ordered, ordered[1:]):
            if b.address < a.end:
                raise ValueError(f"{self.model}: {name_a} and {name_b} overlap")
        if not 1 <= self.max_block <= 125:
            raise ValueError(f"{self.model}: max_block must be 1..125")

    @cached_property
    def blocks(self) -> tuple[Block, ...]:
        """Fewest contiguous reads covering every register, within max_gap/max_block."""
        blocks: list[Block] = []
        start = end = -1
        names: list[str] = []
        for name, reg in sorted(self.registers.items(), key=lambda item: item[1].address):
            if names and reg.address - end <= self.max_gap and reg.end - start <= self.max_block:
                end = reg.end
                names.append(name)
                continue
            if names:
                blocks.append(Block(start, end - start, tuple(names)))
            start, end, names = reg.address, reg.end, [name]
        blocks.append(Block(start, end - start, tuple(names)))
        return tuple(blocks)

    def decode(self, block: Block, registers: Sequence[int]) -> dict[str, float]:
        """Scaled values of one block read; raises ValueError on short reads or NaN/inf."""
        if len(registers) != block.count:
            raise ValueError(f"read {len(registers)} registers, expected {block.count}")
        values: dict[str, float] = {}
        for name in block.names:
            reg = self.registers[name]
            offset = reg.address - block.address
            raw = ModbusClientMixin.convert_from_registers(
                list(registers[offset : offset + reg.kind.words]),
                reg.kind.datatype,
                word_order=self.word_order,
            )
            value = float(raw) * reg.scale  # type: ignore[arg-type]
            if not math.isfinite(value):
                raise ValueError(f"{name} is not a finite number ({raw!r})")
            values[name] = value
        return values

    def encode(self, name: str, value: float) -> list[int]:
        """Registers holding `value` (in the quantity's unit); used by the simulator and tests."""
        reg = self.registers[name]
        raw = value / reg.scale
        if reg.kind is Kind.UINT32:
            # A meter counts whole units of its resolution: truncate, never round up.
            raw = min(max(int(math.floor(raw + 1e-9)), 0), 0xFFFFFFFF)
        return ModbusClientMixin.convert_to_registers(raw, reg.kind.datatype, word_order=self.word_order)


ADL400 = RegisterMap(
    model="adl400",
    description="Acrel ADL400 three-phase DIN-rail meter (9600 8E1, unit 1)",
    registers={
        "voltage_l1": Register(0x0800, FLOAT32, 1.0, "V"),
        "voltage_l2": Register(0x0802, FLOAT32, 1.0, "V"),
        "voltage_l3": Register(0x0804, FLOAT32, 1.0, "V"),
        "current_l1": Register(0x080C, FLOAT32, 1.0, "A"),
        "current_l2": Register(0x080E, FLOAT32, 1.0, "A"),
        "current_l3": Register(0x0810, FLOAT32, 1.0, "A"),
        "power_l1": Register(0x0814, FLOAT32, 1000.0, "W"),  # kW on the wire
        "power_l2": Register(0x0816, FLOAT32, 1000.0, "W"),
        "power_l3": Register(0x0818, FLOAT32, 1000.0, "W"),
        "power_factor": Register(0x0832, FLOAT32, 1.0, ""),
        "frequency": Register(0x0834, FLOAT32, 1.0, "Hz"),
        "energy_total": Register(0x0842, UINT32, 100.0, "Wh"),  # counts of 0.1 kWh
        "energy_import": Register(0x084C, UINT32, 100.0, "Wh"),
        "energy_export": Register(0x0856, UINT32, 100.0, "Wh"),
    },
)

MAPS: Mapping[str, RegisterMap] = MappingProxyType({m.model: m for m in (ADL400,)})


def get_map(model: str) -> RegisterMap:
    """The map for a configured model name (case-insensitive), with a clear error otherwise."""
    try:
        return MAPS[model.strip().lower()]
    except KeyError:
        raise ValueError(f"unknown meter model {model!r}; known: {', '.join(sorted(MAPS))}") from None


MEASURAND_SOURCES: Mapping[str, tuple[frozenset[str], ...]] = MappingProxyType({
    "Energy.Active.Import.Register": (frozenset({"energy_import"}),),
    "Power.Active.Import": (frozenset({"power_total"}), frozenset({"power_l1", "power_l2", "power_l3"})),
    "Current.Import": (frozenset({"current_l1", "current_l2", "current_l3"}),),
    "Voltage": (frozenset({"voltage_l1", "voltage_l2", "voltage_l3"}),),
    "Frequency": (frozenset({"frequency"}),),
})
"""The OCPP measurands a reading carries, and the registers (any one of the sets) each needs."""


def measurands(register_map: RegisterMap) -> frozenset[str]:
    """The OCPP measurands a meter with this map provides: the only ones a CSMS may choose."""
    have = set(register_map.registers)
    return frozenset(m for m, sources in MEASURAND_SOURCES.items() if any(s <= have for s in sources))
