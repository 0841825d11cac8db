"""Meter model files (hw/meters/*.toml): loading, validation, read plans, register decoding and encoding."""

from __future__ import annotations

import itertools
import struct
from pathlib import Path

import pytest
from pymodbus.client import ModbusTcpClient

from evsed.board.rpi.hwfiles import known_names
from evsed.board.rpi.meter_models import (
    QUANTITIES,
    TYPES,
    MeterModel,
    MeterModelError,
    Quantity,
    decode,
    encode,
    load_model,
)

METERS_DIR = Path(__file__).resolve().parents[2] / "hw" / "meters"
MODEL_FILES = sorted(METERS_DIR.glob("*.toml"))
SHIPPED = {"sdm630", "sdm120", "sdm72d-m", "abb-b23", "abb-b24", "em340"}


def test_all_expected_models_are_shipped_and_load() -> None:
    assert {p.stem for p in MODEL_FILES} == SHIPPED
    assert set(known_names("meters")) >= SHIPPED
    for path in MODEL_FILES:
        m = load_model(str(path))
        assert m.name == path.stem
        assert m.description
        assert set(m.quantities) <= set(QUANTITIES)


def test_load_by_name_is_case_insensitive() -> None:
    m = load_model("SDM630")
    assert m.name == "sdm630"
    assert (m.phases, m.baudrate, m.parity, m.stopbits, m.max_registers) == (3, 9600, "N", 1, 80)


def test_unknown_model_lists_known_ones() -> None:
    with pytest.raises(MeterModelError) as ei:
        load_model("sdm999")
    msg = str(ei.value)
    assert "sdm999" in msg and "sdm630" in msg and "em340" in msg
    assert "\n" not in msg


def test_model_from_evsed_hw_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "meters").mkdir()
    (tmp_path / "meters" / "mymeter.toml").write_text(
        'phases = 1\n[quantities.energy_import]\naddress = 0x10\nfunction = 3\ntype = "uint32"\nscale = 100.0\n'
    )
    monkeypatch.setenv("EVSED_HW_DIR", str(tmp_path))
    m = load_model("mymeter")
    assert m.name == "mymeter"  # defaults to the file name
    assert (m.baudrate, m.parity, m.stopbits, m.max_registers) == (9600, "N", 1, 125)
    assert m.quantities["energy_import"] == Quantity("energy_import", 0x10, 3, "uint32", "big", 100.0)


# --- the shipped register maps match hardware.md 4.1 ---------------------------------------------------------


def test_sdm630_map() -> None:
    m = load_model("sdm630")
    q = m.quantities
    assert [q[f"voltage_l{i}"].address for i in (1, 2, 3)] == [0x00, 0x02, 0x04]
    assert [q[f"current_l{i}"].address for i in (1, 2, 3)] == [0x06, 0x08, 0x0A]
    assert [q[f"power_l{i}"].address for i in (1, 2, 3)] == [0x0C, 0x0E, 0x10]
    assert (q["power_total"].address, q["frequency"].address) == (0x34, 0x46)
    assert (q["energy_import"].address, q["energy_export"].address) == (0x48, 0x4A)
    assert {(x.function, x.type, x.word_order) for x in q.values()} == {(4, "float32", "big")}
    assert q["energy_import"].scale == 1000.0  # kWh -> Wh
    assert q["voltage_l1"].scale == 1.0


def test_sdm72d_m_has_same_map_as_sdm630() -> None:
    assert load_model("sdm72d-m").quantities == load_model("sdm630").quantities


def test_sdm120_is_single_phase_at_2400_baud() -> None:
    m = load_model("sdm120")
    assert m.phases == 1 and m.baudrate == 2400
    assert not any(n.endswith(("_l2", "_l3")) for n in m.quantities)
    assert "power_total" not in m.quantities and m.quantities["power_l1"].address == 0x0C


def test_abb_b23_b24_map() -> None:
    b23, b24 = load_model("abb-b23"), load_model("abb-b24")
    assert b23.quantities == b24.quantities
    q = b23.quantities
    assert {x.function for x in q.values()} == {3}
    assert (q["voltage_l1"].address, q["voltage_l1"].type, q["voltage_l1"].scale) == (0x5B00, "uint32", 0.1)
    assert (q["current_l3"].address, q["current_l3"].type, q["current_l3"].scale) == (0x5B10, "uint32", 0.01)
    assert (q["power_total"].address, q["power_total"].type, q["power_total"].scale) == (0x5B14, "int32", 0.01)
    assert (q["power_l1"].address, q["power_l3"].address) == (0x5B16, 0x5B1A)
    assert (q["frequency"].address, q["frequency"].type, q["frequency"].scale) == (0x5B2C, "uint16", 0.01)
    # u64 in 0.01 kWh -> 10 Wh per count
    assert (q["energy_import"].address, q["energy_import"].type, q["energy_import"].scale) == (0x5000, "uint64", 10.0)
    assert q["energy_export"].address == 0x5004


def test_em340_map_is_low_word_first() -> None:
    q = load_model("em340").quantities
    assert {x.word_order for x in q.values() if x.registers == 2} == {"little"}
    assert (q["voltage_l2"].address, q["voltage_l2"].scale) == (0x02, 0.1)
    assert (q["current_l1"].address, q["current_l1"].scale) == (0x0C, 0.001)
    assert (q["power_l1"].address, q["power_total"].address, q["power_total"].scale) == (0x12, 0x28, 0.1)
    assert (q["frequency"].address, q["frequency"].type, q["frequency"].scale) == (0x33, "uint16", 0.1)
    assert (q["energy_import"].address, q["energy_import"].scale) == (0x34, 100.0)


# --- read plans ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", MODEL_FILES, ids=lambda p: p.stem)
def test_read_plan_covers_each_quantity_once_within_limits(path: Path) -> None:
    m = load_model(str(path))
    plan = m.read_plan()
    covered = [q.name for b in plan for q in b.quantities]
    assert sorted(covered) == sorted(m.quantities)
    for b in plan:
        assert 1 <= b.count <= m.max_registers
        assert all(q.function == b.function for q in b.quantities)
        assert all(b.address <= q.address and q.end <= b.address + b.count for q in b.quantities)


def test_sdm630_plan_is_three_requests() -> None:
    plan = load_model("sdm630").read_plan()
    assert [(b.function, b.address, b.count) for b in plan] == [(4, 0x00, 18), (4, 0x34, 2), (4, 0x46, 6)]


def test_plan_merges_small_gaps_only() -> None:
    plan = load_model("abb-b23").read_plan()
    assert [(b.function, b.address, b.count) for b in plan] == [(3, 0x5000, 8), (3, 0x5B00, 28), (3, 0x5B2C, 1)]
    assert [(b.address, b.count) for b in load_model("sdm120").read_plan()] == [(0x00, 14), (0x46, 6)]


def _model(quantities: list[Quantity], max_registers: int = 125, max_gap: int = 8) -> MeterModel:
    return MeterModel("t", "", 3, 9600, "N", 1, max_registers, {q.name: q for q in quantities}, max_gap)


def test_plan_respects_max_registers_and_max_gap() -> None:
    qs = [Quantity(n, 2 * i, 4, "float32") for i, n in enumerate(QUANTITIES)]  # 26 contiguous registers
    assert [(b.address, b.count) for b in _model(qs).read_plan()] == [(0, 26)]
    assert [(b.address, b.count) for b in _model(qs, max_registers=10).read_plan()] == [
        (0, 10), (10, 10), (20, 6)
    ]
    spaced = [Quantity("voltage_l1", 0, 4, "float32"), Quantity("voltage_l2", 3, 4, "float32")]
    assert len(_model(spaced).read_plan()) == 1
    assert [(b.address, b.count) for b in _model(spaced, max_gap=0).read_plan()] == [(0, 2), (3, 2)]


def test_plan_separates_function_codes() -> None:
    qs = [Quantity("voltage_l1", 0, 3, "uint16"), Quantity("voltage_l2", 1, 4, "uint16")]
    assert [(b.function, b.address, b.count) for b in _model(qs).read_plan()] == [(3, 0, 1), (4, 1, 1)]


# --- decode / encode ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("type_", "order", "scale", "regs", "value"),
    [
        ("float32", "big", 1.0, [0x4627, 0x1800], 10694.0),
        ("float32", "little", 1.0, [0x1800, 0x4627], 10694.0),
        ("float32", "big", 1000.0, [0x4248, 0x0000], 50000.0),
        ("int32", "little", 0.1, [2301, 0], 230.1),
        ("int32", "little", 1.0, [0xFFFE, 0xFFFF], -2.0),
        ("int32", "big", 0.01, [0xFFFF, 0xFFFE], -0.02),
        ("uint32", "big", 0.01, [0x0000, 1550], 15.5),
        ("uint64", "big", 10.0, [0, 0, 0x0012, 0xD680], 12345600.0),
        ("uint64", "big", 1.0, [0, 0x0001, 0x2A05, 0xF200], 5_000_000_000.0),
        ("int64", "little", 1.0, [0xFFFF, 0xFFFF, 0xFFFF, 0xFFFF], -1.0),
        ("int16", "big", 1.0, [0x8000], -32768.0),
        ("uint16", "big", 0.01, [5000], 50.0),
    ],
)
def test_decode_encode_vectors(type_: str, order: str, scale: float, regs: list[int], value: float) -> None:
    q = Quantity("x", 0, 4, type_, order, scale)
    assert decode(q, regs) == pytest.approx(value, rel=1e-12)
    assert encode(q, value) == regs


@pytest.mark.parametrize(("type_", "order"), list(itertools.product(TYPES, ("big", "little"))))
def test_decode_agrees_with_pymodbus(type_: str, order: str) -> None:
    """Cross-check the struct code against pymodbus's own converter."""
    q = Quantity("x", 0, 4, type_, order)
    code, count = TYPES[type_]
    # 64-bit values beyond 2**53 do not survive the trip through a float: real energy counters stay far below.
    samples = [0, 1, 12345, -7] if code.islower() else [0, 1, 12345, min(2 ** (16 * count) - 1, 2**53)]
    dt = getattr(ModbusTcpClient.DATATYPE, type_.upper())
    for raw in samples if code != "f" else [0.0, 230.1, -10694.5, 1e-3]:
        regs = ModbusTcpClient.convert_to_registers(raw, dt, word_order=order)  # type: ignore[arg-type]
        assert len(regs) == q.registers
        assert decode(q, regs) == pytest.approx(ModbusTcpClient.convert_from_registers(regs, dt, word_order=order))
        assert encode(q, decode(q, regs)) == regs


def test_decode_rejects_wrong_register_count() -> None:
    with pytest.raises(ValueError, match="need 2 registers"):
        decode(Quantity("x", 0, 4, "float32"), [1])


def test_encode_rounds_to_the_nearest_count() -> None:
    q = Quantity("x", 0, 4, "uint32", "big", 0.1)
    assert encode(q, 230.14) == [0, 2301]
    assert struct.unpack(">f", struct.pack(">HH", *encode(Quantity("x", 0, 4, "float32"), 230.1)))[0] == (
        pytest.approx(230.1)
    )


# --- validation -------------------------------------------------------------------------------------------------

GOOD = """
name = "x"
phases = 3
[serial]
baudrate = 9600
parity = "N"
stopbits = 1
[read]
max_registers = 80
[quantities.voltage_l1]
address = 0x0000
function = 4
type = "float32"
word_order = "big"
scale = 1.0
"""


def _bad(tmp_path: Path, text: str) -> str:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(MeterModelError) as ei:
        load_model(str(path))
    msg = str(ei.value)
    assert msg.startswith(f"{path}: ")
    assert "\n" not in msg
    return msg


def test_good_template_loads(tmp_path: Path) -> None:
    path = tmp_path / "good.toml"
    path.write_text(GOOD)
    assert load_model(str(path)).quantities["voltage_l1"] == Quantity("voltage_l1", 0, 4, "float32")


@pytest.mark.parametrize(
    ("old", "new", "key", "problem"),
    [
        ("phases = 3", "phases = 3\ncolour = 1", "colour", "unknown key"),
        ("phases = 3", "phases = 4", "phases", "must be 1, 2 or 3"),
        ("phases = 3", "phases = true", "phases", "must be an integer"),
        ("phases = 3", "", "phases", "missing"),
        ("baudrate = 9600", "baudrate = 96OO", "", "invalid TOML"),
        ("baudrate = 9600", 'baudrate = "9600"', "serial.baudrate", "must be an integer"),
        ("baudrate = 9600", "baud = 9600", "serial.baud", "unknown key"),
        ('parity = "N"', 'parity = "X"', "serial.parity", "must be one of N, E, O"),
        ("stopbits = 1", "stopbits = 3", "serial.stopbits", "must be one of 1, 2"),
        ("max_registers = 80", "max_registers = 200", "read.max_registers", "must be 4..125"),
        ('[serial]\nbaudrate = 9600\nparity = "N"\nstopbits = 1', 'serial = "9600 8N1"', "serial", "must be a table"),
        ("address = 0x0000", "", "quantities.voltage_l1.address", "missing"),
        ("address = 0x0000", "address = 0xFFFF", "quantities.voltage_l1.address", "must be 0..65535"),
        ("address = 0x0000", 'address = "0"', "quantities.voltage_l1.address", "must be an integer"),
        ("function = 4", "function = 6", "quantities.voltage_l1.function", "must be one of 3, 4"),
        ('type = "float32"', 'type = "float16"', "quantities.voltage_l1.type", "must be one of int16"),
        ('type = "float32"', "", "quantities.voltage_l1.type", "missing"),
        ('word_order = "big"', 'word_order = "middle"', "quantities.voltage_l1.word_order", "must be one of"),
        ("scale = 1.0", "scale = 0", "quantities.voltage_l1.scale", "non-zero number"),
        ("scale = 1.0", 'scale = "1"', "quantities.voltage_l1.scale", "non-zero number"),
        ("scale = 1.0", "scale = 1.0\nunit = 'V'", "quantities.voltage_l1.unit", "unknown key"),
        ("[quantities.voltage_l1]", "[quantities.volts]", "quantities.volts", "unknown quantity"),
        ("phases = 3", "phases = 1\n", "quantities.voltage_l2", "phase 2 given but phases = 1"),
    ],
)
def test_validation_errors_name_file_and_key(tmp_path: Path, old: str, new: str, key: str, problem: str) -> None:
    text = GOOD.replace(old, new, 1)
    if "phases = 1" in new:
        text += '[quantities.voltage_l2]\naddress = 2\nfunction = 4\ntype = "float32"\n'
    msg = _bad(tmp_path, text)
    assert f": {key}: " in msg if key else ": invalid TOML: " in msg
    assert problem in msg


def test_no_quantities_is_an_error(tmp_path: Path) -> None:
    assert "quantities: missing" in _bad(tmp_path, 'phases = 1\n[serial]\nbaudrate = 9600\n')


def test_missing_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(MeterModelError, match="does not exist"):
        load_model(str(tmp_path / "nope.toml"))
