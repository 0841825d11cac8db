"""Modbus energy meters: a shared bus (RS-485 line or Modbus TCP endpoint) and meters that read it by their model.

The bus serialises requests (several meters may hang off one RS-485 line), maps every pymodbus failure onto one
`MeterError` with a kind the caller can log, and reopens the port after it vanished (USB adapter unplugged). The
meter turns a model's read plan into a `MeterSample` in base units.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import termios
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from pymodbus import FramerType
from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.exceptions import ModbusException

from evsed.board.rpi.meter_models import MeterModel, decode

log = logging.getLogger(__name__)

ErrorKind = Literal["timeout", "crc", "exception", "io"]

EXCEPTION_NAMES = {
    1: "illegal function",
    2: "illegal data address",
    3: "illegal data value",
    4: "device failure",
    5: "acknowledge",
    6: "device busy",
    10: "gateway path unavailable",
    11: "gateway target failed to respond",
}


def _quiet_pymodbus() -> None:
    # pymodbus logs every unanswered request at ERROR; the caller logs once per failure episode instead. A level
    # set explicitly by the user (to debug pymodbus) is left alone.
    logger = logging.getLogger("pymodbus")
    if logger.level == logging.NOTSET:
        logger.setLevel(logging.CRITICAL)


class MeterError(Exception):
    """A failed meter read. kind: "timeout" (no answer), "crc" (garbled answer), "exception" (Modbus exception
    response; .exception_code holds its code) or "io" (port missing or lost, connection refused)."""

    def __init__(self, message: str, kind: ErrorKind = "io", exception_code: int | None = None) -> None:
        super().__init__(message)
        self.kind: ErrorKind = kind
        self.exception_code = exception_code


@dataclass(frozen=True)
class MeterSample:
    voltage_v: tuple[float | None, float | None, float | None]
    current_a: tuple[float | None, float | None, float | None]
    power_w: float | None
    energy_import_wh: float | None
    frequency_hz: float | None
    energy_export_wh: float | None = None


class ModbusBus:
    """One RS-485 line (or Modbus TCP endpoint) shared by several meters: one request at a time (asyncio.Lock),
    its own timeout/retries, reconnects when the port disappears and comes back."""

    def __init__(self, make_client: Callable[[], AsyncModbusSerialClient | AsyncModbusTcpClient], *, name: str,
                 settings: str, timeout_s: float, serial_port: str | None = None) -> None:
        _quiet_pymodbus()
        self._make_client = make_client
        self.name = name
        self.settings = settings
        self.timeout_s = timeout_s
        self._serial_port = serial_port
        self._client: AsyncModbusSerialClient | AsyncModbusTcpClient | None = None
        self._lock = asyncio.Lock()
        self._rx_seen = False

    @classmethod
    def rtu(cls, port: str, *, baudrate: int = 9600, parity: str = "N", stopbits: int = 1, bytesize: int = 8,
            timeout_s: float = 0.5, retries: int = 1) -> ModbusBus:
        bus: ModbusBus

        def make() -> AsyncModbusSerialClient:
            # reconnect_delay=0: pymodbus must not reconnect in the background; read() reopens the port itself.
            return AsyncModbusSerialClient(port, framer=FramerType.RTU, baudrate=baudrate, bytesize=bytesize,
                                           parity=parity, stopbits=stopbits, timeout=timeout_s, retries=retries,
                                           reconnect_delay=0, trace_packet=bus._trace_packet)

        bus = cls(make, name=port, settings=f"{baudrate} {bytesize}{parity}{stopbits}", timeout_s=timeout_s,
                  serial_port=port)
        return bus

    @classmethod
    def tcp(cls, host: str, port: int = 502, *, timeout_s: float = 1.0, retries: int = 1) -> ModbusBus:
        bus: ModbusBus

        def make() -> AsyncModbusTcpClient:
            return AsyncModbusTcpClient(host, port=port, timeout=timeout_s, retries=retries, reconnect_delay=0,
                                        trace_packet=bus._trace_packet)

        bus = cls(make, name=f"tcp://{host}:{port}", settings="Modbus TCP", timeout_s=timeout_s)
        return bus

    def _trace_packet(self, sending: bool, data: bytes) -> bytes:
        # Bytes that arrived but never made a valid frame mean a garbled answer (bad CRC), not silence.
        if not sending and data:
            self._rx_seen = True
        return data

    async def _connected(self) -> AsyncModbusSerialClient | AsyncModbusTcpClient:
        if self._client is not None and self._client.connected:
            return self._client
        if self._client is not None:
            self._client.close()
            self._client = None
        if self._serial_port is not None and not os.path.exists(self._serial_port):
            raise MeterError(f"{self._serial_port}: no such device", kind="io")
        if self._serial_port is not None and not os.access(self._serial_port, os.R_OK | os.W_OK):
            raise MeterError(f"{self._serial_port}: permission denied (is the user in group dialout?)", kind="io")
        client = self._make_client()
        try:
            ok = await client.connect()
        except (termios.error, OSError, ValueError) as exc:
            # pymodbus only catches OSError; termios rejects settings the UART (or pty) does not support.
            client.close()
            raise MeterError(f"{self.name}: cannot open at {self.settings}: {exc}", kind="io") from None
        if not ok:
            client.close()
            raise MeterError(f"{self.name}: " + ("cannot open" if self._serial_port else "cannot connect"), kind="io")
        self._client = client
        return client

    async def read(self, device_id: int, function: int, address: int, count: int) -> list[int]:
        """Read `count` registers with function 3 (holding) or 4 (input). Raises MeterError."""
        if function not in (3, 4):
            raise ValueError(f"function {function} is not a register read")
        async with self._lock:
            client = await self._connected()
            self._rx_seen = False
            where = f"meter {device_id} on {self.name}"
            try:
                if function == 3:
                    rr = await client.read_holding_registers(address, count=count, device_id=device_id)
                else:
                    rr = await client.read_input_registers(address, count=count, device_id=device_id)
            except (ModbusException, OSError, TimeoutError) as exc:
                if not client.connected:
                    lost = "port lost" if self._serial_port else "connection lost"
                    raise MeterError(f"{self.name}: {lost}", kind="io") from exc
                if self._rx_seen:
                    raise MeterError(f"{where}: garbled answer (CRC errors)", kind="crc") from exc
                raise MeterError(f"{where}: no answer", kind="timeout") from exc
            if rr.isError():
                code = rr.exception_code
                name = EXCEPTION_NAMES.get(code, "unknown")
                raise MeterError(f"{where}: Modbus exception {code} ({name})", kind="exception", exception_code=code)
            regs = list(rr.registers)
            if len(regs) < count:
                raise MeterError(f"{where}: short answer ({len(regs)} of {count} registers)", kind="io")
            return regs[:count]

    async def close(self) -> None:
        async with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None


class ModbusMeter:
    """One meter at `device_id` on a bus, read with its model's register map."""

    def __init__(self, bus: ModbusBus, model: MeterModel, device_id: int = 1) -> None:
        self.bus = bus
        self.model = model
        self.device_id = device_id
        self._plan = model.read_plan()

    async def read_values(self) -> dict[str, float]:
        """Every quantity of the model, in base units (V, A, W, Hz, Wh). Raises MeterError."""
        values: dict[str, float] = {}
        for block in self._plan:
            regs = await self.bus.read(self.device_id, block.function, block.address, block.count)
            for q in block.quantities:
                offset = q.address - block.address
                values[q.name] = decode(q, regs[offset : offset + q.registers])
        return values

    async def read(self) -> MeterSample:
        """The whole read plan as one sample. Raises MeterError."""
        return sample_from_values(await self.read_values())


def sample_from_values(values: dict[str, float]) -> MeterSample:
    def phases(prefix: str) -> tuple[float | None, float | None, float | None]:
        return (values.get(f"{prefix}_l1"), values.get(f"{prefix}_l2"), values.get(f"{prefix}_l3"))

    power = values.get("power_total")
    if power is None:
        per_phase = [p for p in phases("power") if p is not None]
        power = math.fsum(per_phase) if per_phase else None
    return MeterSample(
        voltage_v=phases("voltage"),
        current_a=phases("current"),
        power_w=power,
        energy_import_wh=values.get("energy_import"),
        frequency_hz=values.get("frequency"),
        energy_export_wh=values.get("energy_export"),
    )
