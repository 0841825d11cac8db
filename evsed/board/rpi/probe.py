"""`evsectl probe meter`: read an energy meter once and say, in one line, what is wrong when it does not work.

Meant for the installer at the cabinet: wrong port, wiring, address, serial settings or meter model each get their
own message. The argparse wiring lives in evsed/cli/evsectl.py; this module only exposes the function.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import sys
from typing import Any, TextIO
from urllib.parse import urlsplit

from evsed.board.rpi.meter import EXCEPTION_NAMES, MeterError, ModbusBus, ModbusMeter, sample_from_values
from evsed.board.rpi.meter_models import MeterModel, MeterModelError, load_model

# Modbus exception codes a meter returns when asked for registers or functions it does not have.
_WRONG_MAP_EXCEPTIONS = (1, 2, 3)
_PARITIES = {"N": "N", "NONE": "N", "E": "E", "EVEN": "E", "O": "O", "ODD": "O"}


class _ProbeError(Exception):
    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


def probe_meter(port: str, model: str, *, address: int = 1, baudrate: int | None = None, parity: str | None = None,
                as_json: bool = False, out: TextIO | None = None, timeout_s: float = 1.0) -> int:
    """Read the meter once and print its values. Exit code: 0 ok, 1 device error, 2 usage error."""
    out = out if out is not None else sys.stdout
    try:
        meter_model = _load(model)
        bus = _bus(port, meter_model, address, baudrate, parity, timeout_s)
        values = asyncio.run(_read_once(bus, meter_model, address))
        _check_plausible(values, meter_model, address)
    except _ProbeError as exc:
        print(f"evsectl: {exc}", file=sys.stderr)
        return exc.code
    if as_json:
        print(json.dumps(_as_dict(values, meter_model, address, port)), file=out)
    else:
        _print_table(values, meter_model, address, bus, out)
    return 0


def _load(model: str) -> MeterModel:
    try:
        return load_model(model)
    except MeterModelError as exc:
        raise _ProbeError(str(exc), 2) from None


def _bus(port: str, model: MeterModel, address: int, baudrate: int | None, parity: str | None,
         timeout_s: float) -> ModbusBus:
    if not 1 <= address <= 247:
        raise _ProbeError(f"bad meter address {address} (1..247)", 2)
    if port.startswith("tcp://"):
        try:
            url = urlsplit(port)
            tcp_port = url.port or 502
        except ValueError:
            url, tcp_port = None, 0
        if url is None or not url.hostname or url.path not in ("", "/"):
            raise _ProbeError(f"bad Modbus TCP address {port!r} (expected tcp://HOST:PORT)", 2)
        return ModbusBus.tcp(url.hostname, tcp_port, timeout_s=timeout_s)
    if baudrate is not None and baudrate <= 0:
        raise _ProbeError(f"bad baud rate {baudrate}", 2)
    par = model.parity if parity is None else _PARITIES.get(parity.upper())
    if par is None:
        raise _ProbeError(f"bad parity {parity!r} (expected N, E or O)", 2)
    if not os.path.exists(port):
        raise _ProbeError(f"{port}: no such device", 1)
    return ModbusBus.rtu(port, baudrate=baudrate or model.baudrate, parity=par, stopbits=model.stopbits,
                         timeout_s=timeout_s)


async def _read_once(bus: ModbusBus, model: MeterModel, address: int) -> dict[str, float]:
    try:
        return await ModbusMeter(bus, model, address).read_values()
    except MeterError as exc:
        raise _ProbeError(_explain(exc, bus, model, address), 1) from None
    finally:
        await bus.close()


def _explain(exc: MeterError, bus: ModbusBus, model: MeterModel, address: int) -> str:
    line = bus.name if bus.name.startswith("tcp://") else f"{bus.name} at {bus.settings}"
    if exc.kind == "timeout":
        return (f"no answer from meter {address} on {line} (timeout {bus.timeout_s:g} s): "
                "check wiring, address, baud rate and parity")
    if exc.kind == "crc":
        return (f"garbled answers (CRC errors) from meter {address} on {line}: "
                "check baud rate, parity and the A/B wiring")
    if exc.kind == "exception" and exc.exception_code is not None:
        code = exc.exception_code
        what = f"Modbus exception {code} ({EXCEPTION_NAMES.get(code, 'unknown')})"
        if code in _WRONG_MAP_EXCEPTIONS:
            return f"meter {address} answered with {what}: is it really a {model.name}?"
        return f"meter {address} on {bus.name} answered with {what}"
    return str(exc)


# Limits no working meter on a charge point exceeds; a wrong register map (an integer read as a float, the wrong
# word order) lands far outside them.
def _implausible(name: str, value: float) -> bool:
    if not math.isfinite(value):
        return True
    if name.startswith("voltage"):
        return not (value == 0 or 1.0 <= value <= 500.0)
    if name.startswith("current"):
        return abs(value) > 1000.0
    if name.startswith("power"):
        return abs(value) > 1e6
    if name == "frequency":
        return not 40.0 <= value <= 70.0
    if name.startswith("energy"):
        return not 0 <= value < 1e12
    return False


def _check_plausible(values: dict[str, float], model: MeterModel, address: int) -> None:
    for name, value in values.items():
        if _implausible(name, value):
            raise _ProbeError(f"meter {address} answered with implausible values ({name} = {value:g}): "
                              f"is it really a {model.name}?", 1)


def _round(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


def _as_dict(values: dict[str, float], model: MeterModel, address: int, port: str) -> dict[str, Any]:
    sample = sample_from_values(values)
    return {
        "model": model.name,
        "address": address,
        "port": port,
        "voltage_v": [_round(v) for v in sample.voltage_v[: model.phases]],
        "current_a": [_round(v) for v in sample.current_a[: model.phases]],
        "power_w": _round(sample.power_w),
        "energy_import_wh": _round(sample.energy_import_wh),
        "energy_export_wh": _round(sample.energy_export_wh),
        "frequency_hz": _round(sample.frequency_hz),
    }


def _print_table(values: dict[str, float], model: MeterModel, address: int, bus: ModbusBus, out: TextIO) -> None:
    d = _as_dict(values, model, address, bus.name)

    def cell(value: float | None, fmt: str) -> str:
        return f"{'-' if value is None else format(value, fmt):>10}"

    print(f"{model.name} ({model.description}), meter {address} on {bus.name} ({bus.settings})", file=out)
    print(f"{'':<18}" + "".join(f"{f'L{i}':>10}" for i in range(1, model.phases + 1)), file=out)
    print(f"{'voltage V':<18}" + "".join(cell(v, ".1f") for v in d["voltage_v"]), file=out)
    print(f"{'current A':<18}" + "".join(cell(v, ".2f") for v in d["current_a"]), file=out)
    print(f"{'power W':<18}" + cell(d["power_w"], ".0f"), file=out)
    kwh = [None if d[k] is None else d[k] / 1000.0 for k in ("energy_import_wh", "energy_export_wh")]
    print(f"{'energy import kWh':<18}" + cell(kwh[0], ".2f"), file=out)
    print(f"{'energy export kWh':<18}" + cell(kwh[1], ".2f"), file=out)
    print(f"{'frequency Hz':<18}" + cell(d["frequency_hz"], ".2f"), file=out)
