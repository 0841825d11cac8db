"""Energy-meter register maps, loaded from TOML data files (hw/meters/*.toml).

A meter model says where each quantity lives (function code, address, data type, word order, scale to base units)
and the meter's factory serial settings. Adding a meter is a matter of writing one of these files; this module
validates it, turns it into a read plan (few, contiguous requests) and decodes/encodes register values.
"""

from __future__ import annotations

import math
import struct
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evsed.board.rpi.hwfiles import HwFileError, find_hw_file

QUANTITIES: tuple[str, ...] = (
    "voltage_l1",
    "voltage_l2",
    "voltage_l3",
    "current_l1",
    "current_l2",
    "current_l3",
    "power_l1",
    "power_l2",
    "power_l3",
    "power_total",
    "frequency",
    "energy_import",
    "energy_export",
)

# struct code (big-endian bytes inside each 16-bit register, as Modbus sends them) and register count.
TYPES: dict[str, tuple[str, int]] = {
    "int16": ("h", 1),
    "uint16": ("H", 1),
    "int32": ("i", 2),
    "uint32": ("I", 2),
    "int64": ("q", 4),
    "uint64": ("Q", 4),
    "float32": ("f", 2),
}
WORD_ORDERS = ("big", "little")
FUNCTIONS = (3, 4)
PARITIES = ("N", "E", "O")
# Modbus limit for one FC3/FC4 request; meters may accept less (declared in [read] max_registers).
MODBUS_MAX_REGISTERS = 125
# Reading a few unused registers costs less than another round trip on a 9600 baud line.
DEFAULT_MAX_GAP = 8

_TOP_KEYS = {"name", "description", "phases", "serial", "read", "quantities"}
_SERIAL_KEYS = {"baudrate", "parity", "stopbits"}
_READ_KEYS = {"max_registers", "max_gap"}
_QUANTITY_KEYS = {"address", "function", "type", "word_order", "scale"}


class MeterModelError(Exception):
    """A meter model is unknown or its file is invalid (one-line message naming the file and key)."""


@dataclass(frozen=True)
class Quantity:
    name: str
    address: int
    function: int
    type: str
    word_order: str = "big"
    scale: float = 1.0

    @property
    def registers(self) -> int:
        return TYPES[self.type][1]

    @property
    def end(self) -> int:
        """First register after this quantity."""
        return self.address + self.registers


@dataclass(frozen=True)
class Block:
    """One read request: `count` registers from `address` with `function`, covering `quantities`."""

    function: int
    address: int
    count: int
    quantities: tuple[Quantity, ...]


@dataclass(frozen=True)
class MeterModel:
    name: str
    description: str
    phases: int
    baudrate: int
    parity: str
    stopbits: int
    max_registers: int
    quantities: dict[str, Quantity] = field(default_factory=dict)
    max_gap: int = DEFAULT_MAX_GAP
    path: Path | None = None

    def read_plan(self) -> list[Block]:
        """Contiguous blocks per function code, each at most max_registers long, merging gaps up to max_gap."""
        blocks: list[Block] = []
        ordered = sorted(self.quantities.values(), key=lambda q: (q.function, q.address))
        group: list[Quantity] = []
        start = end = 0
        for q in ordered:
            if group and (
                q.function == group[0].function
                and q.address - end <= self.max_gap
                and max(end, q.end) - start <= self.max_registers
            ):
                group.append(q)
                end = max(end, q.end)
                continue
            if group:
                blocks.append(Block(group[0].function, start, end - start, tuple(group)))
            group, start, end = [q], q.address, q.end
        if group:
            blocks.append(Block(group[0].function, start, end - start, tuple(group)))
        return blocks


def _words(q: Quantity, regs: list[int]) -> bytes:
    words = list(regs)
    if q.word_order == "little":
        words.reverse()
    return b"".join(w.to_bytes(2, "big") for w in words)


def decode(q: Quantity, regs: list[int]) -> float:
    """Registers (exactly q.registers of them) -> value in base units (V, A, W, Hz, Wh)."""
    code, count = TYPES[q.type]
    if len(regs) != count:
        raise ValueError(f"{q.name}: need {count} registers, got {len(regs)}")
    (raw,) = struct.unpack(">" + code, _words(q, regs))
    return float(raw) * q.scale


def encode(q: Quantity, value: float) -> list[int]:
    """Value in base units -> registers; the inverse of decode (used by test servers and simulators)."""
    code = TYPES[q.type][0]
    raw: float | int = value / q.scale
    if code != "f":
        raw = round(raw)
    data = struct.pack(">" + code, raw)
    words = [int.from_bytes(data[i : i + 2], "big") for i in range(0, len(data), 2)]
    if q.word_order == "little":
        words.reverse()
    return words


def load_model(name_or_path: str) -> MeterModel:
    """A model by name (hw/meters/<name>.toml, case-insensitive) or by path to a .toml file."""
    try:
        path = find_hw_file("meters", name_or_path)
    except HwFileError as exc:
        raise MeterModelError(str(exc)) from None
    return parse_model(path)


def parse_model(path: Path) -> MeterModel:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise MeterModelError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise MeterModelError(f"{path}: invalid TOML: {exc}") from None
    return _Parser(path).model(data)


class _Parser:
    def __init__(self, path: Path) -> None:
        self.path = path

    def fail(self, key: str, problem: str) -> MeterModelError:
        return MeterModelError(f"{self.path}: {key}: {problem}")

    def table(self, data: dict[str, Any], key: str, allowed: set[str]) -> dict[str, Any]:
        value = data.get(key, {})
        if not isinstance(value, dict):
            raise self.fail(key, "must be a table")
        self.no_unknown(value, allowed, f"{key}.")
        return value

    def no_unknown(self, table: dict[str, Any], allowed: set[str], prefix: str = "") -> None:
        for k in table:
            if k not in allowed:
                raise self.fail(f"{prefix}{k}", f"unknown key (expected one of: {', '.join(sorted(allowed))})")

    def integer(self, table: dict[str, Any], key: str, where: str, default: int | None = None) -> int:
        value = table.get(key, default)
        if value is None:
            raise self.fail(where, "missing")
        # bool is an int subclass in Python; `phases = true` is a mistake, not 1.
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(where, f"must be an integer, not {value!r}")
        return value

    def choice(self, table: dict[str, Any], key: str, where: str, choices: tuple[Any, ...], default: Any = None) -> Any:
        value = table.get(key, default)
        if value is None:
            raise self.fail(where, "missing")
        if isinstance(value, bool) or value not in choices:
            raise self.fail(where, f"must be one of {', '.join(map(str, choices))}, not {value!r}")
        return value

    def text(self, table: dict[str, Any], key: str, default: str) -> str:
        value = table.get(key, default)
        if not isinstance(value, str):
            raise self.fail(key, f"must be a string, not {value!r}")
        return value

    def model(self, data: dict[str, Any]) -> MeterModel:
        self.no_unknown(data, _TOP_KEYS)
        name = self.text(data, "name", self.path.stem)
        if not name:
            raise self.fail("name", "must not be empty")
        description = self.text(data, "description", "")
        phases = self.integer(data, "phases", "phases")
        if phases not in (1, 2, 3):
            raise self.fail("phases", f"must be 1, 2 or 3, not {phases}")

        serial = self.table(data, "serial", _SERIAL_KEYS)
        baudrate = self.integer(serial, "baudrate", "serial.baudrate", 9600)
        if baudrate <= 0:
            raise self.fail("serial.baudrate", f"must be positive, not {baudrate}")
        parity = self.choice(serial, "parity", "serial.parity", PARITIES, "N")
        stopbits = self.choice(serial, "stopbits", "serial.stopbits", (1, 2), 1)

        read = self.table(data, "read", _READ_KEYS)
        max_registers = self.integer(read, "max_registers", "read.max_registers", MODBUS_MAX_REGISTERS)
        if not 4 <= max_registers <= MODBUS_MAX_REGISTERS:
            raise self.fail("read.max_registers", f"must be 4..{MODBUS_MAX_REGISTERS}, not {max_registers}")
        max_gap = self.integer(read, "max_gap", "read.max_gap", DEFAULT_MAX_GAP)
        if not 0 <= max_gap <= MODBUS_MAX_REGISTERS:
            raise self.fail("read.max_gap", f"must be 0..{MODBUS_MAX_REGISTERS}, not {max_gap}")

        raw_quantities = data.get("quantities")
        if raw_quantities is None:
            raise self.fail("quantities", "missing")
        if not isinstance(raw_quantities, dict) or not raw_quantities:
            raise self.fail("quantities", "must be a non-empty table of [quantities.NAME] tables")
        quantities: dict[str, Quantity] = {}
        for qname, raw in raw_quantities.items():
            quantities[qname] = self.quantity(qname, raw, phases)
        return MeterModel(
            name=name,
            description=description,
            phases=phases,
            baudrate=baudrate,
            parity=parity,
            stopbits=stopbits,
            max_registers=max_registers,
            quantities={q: quantities[q] for q in QUANTITIES if q in quantities},
            max_gap=max_gap,
            path=self.path,
        )

    def quantity(self, qname: str, raw: Any, phases: int) -> Quantity:
        where = f"quantities.{qname}"
        if qname not in QUANTITIES:
            raise self.fail(where, f"unknown quantity (expected one of: {', '.join(QUANTITIES)})")
        if not isinstance(raw, dict):
            raise self.fail(where, "must be a table")
        self.no_unknown(raw, _QUANTITY_KEYS, f"{where}.")
        if qname[-3:-1] == "_l" and int(qname[-1]) > phases:
            raise self.fail(where, f"phase {qname[-1]} given but phases = {phases}")
        address = self.integer(raw, "address", f"{where}.address")
        function = self.choice(raw, "function", f"{where}.function", FUNCTIONS)
        type_ = self.choice(raw, "type", f"{where}.type", tuple(TYPES))
        word_order = self.choice(raw, "word_order", f"{where}.word_order", WORD_ORDERS, "big")
        scale = raw.get("scale", 1.0)
        if isinstance(scale, bool) or not isinstance(scale, int | float) or not math.isfinite(scale) or scale == 0:
            raise self.fail(f"{where}.scale", f"must be a non-zero number, not {scale!r}")
        q = Quantity(qname, address, function, type_, word_order, float(scale))
        if address < 0 or q.end > 0x10000:
            raise self.fail(f"{where}.address", f"must be 0..65535 (with its {q.registers} registers), not {address}")
        return q
