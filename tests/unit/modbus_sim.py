"""Test helper: a real pymodbus server that plays one or more energy meters, over RTU on a pty or over TCP.

Values go in as engineering values (V, A, W, Hz, Wh) and are turned into registers with the model's own map
(meter_models.encode), so a test exercises the whole chain: model -> registers -> RTU frames -> client -> decode.

RTU layout: the client opens `srv.port`, a symlink to the slave end of pty pair C (a stable name, like a udev
/dev/serial/by-id link). The pymodbus server opens the slave end of pty pair S. An asyncio bridge copies bytes
between the two masters, and that is where the faults are made: drop requests (pause), flip a byte of a response
(corrupt), close pair C and remove the link (close, the USB adapter is unplugged) and create a new one (reopen).
The bridge also watches the wire: a request that arrives while the previous one is unanswered is counted in
`overlaps` (two masters talking at once on a real RS-485 line).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
import tty
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from pymodbus.constants import ExcCodes
from pymodbus.server import ModbusSerialServer, ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from evsed.board.rpi.meter_models import MeterModel, encode

Devices = dict[int, tuple[MeterModel, dict[str, float]]]
READ_REQUEST_LEN = 8  # device, function, address(2), count(2), crc(2)


@dataclass
class _Device:
    model: MeterModel
    # function code -> register address -> value
    image: dict[int, dict[int, int]] = field(default_factory=lambda: {3: {}, 4: {}})

    def set(self, name: str, value: float) -> None:
        q = self.model.quantities[name]
        for i, reg in enumerate(encode(q, value)):
            self.image[q.function][q.address + i] = reg

    def simdevice(self, device_id: int, requests: list[tuple[int, int, int, int]]) -> SimDevice:
        blocks: dict[int, list[SimData]] = {3: [], 4: []}
        for b in self.model.read_plan():
            # Only the registers the model reads exist; anything else answers "illegal data address", as
            # most meters do for unmapped registers.
            blocks[b.function].append(SimData(b.address, values=[0] * b.count, datatype=DataType.REGISTERS))
        for fc in (3, 4):
            if not blocks[fc]:
                blocks[fc].append(SimData(0, datatype=DataType.INVALID))

        async def action(function_code: int, start_address: int, address: int, count: int,
                         registers: list[int], set_values: Any) -> ExcCodes | None:
            requests.append((device_id, function_code, address, count))
            for addr, reg in self.image.get(function_code, {}).items():
                registers[addr - start_address] = reg
            return None

        bits = [SimData(0, values=[False] * 16, datatype=DataType.BITS)]
        return SimDevice(device_id, simdata=(bits, list(bits), blocks[3], blocks[4]), action=action)


class MeterServer:
    """`async with MeterServer.rtu(model, values, device_id=1) as srv:` then point a client at srv.port."""

    def __init__(self, devices: Devices, kind: str) -> None:
        self.kind = kind
        self.devices: dict[int, _Device] = {}
        for dev_id, (model, values) in devices.items():
            dev = _Device(model)
            for name, value in values.items():
                if name in model.quantities:
                    dev.set(name, value)
            self.devices[dev_id] = dev
        self.requests: list[tuple[int, int, int, int]] = []  # (device, function, address, count) served
        self.frames: list[bytes] = []  # request frames seen on the wire (RTU)
        self.overlaps = 0
        self.host = "127.0.0.1"
        self.port: Any = None
        self._server: ModbusSerialServer | ModbusTcpServer | None = None
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._client_pty: tuple[int, int] | None = None
        self._server_pty: tuple[int, int] | None = None
        self._rx = b""
        self._outstanding = False
        self._paused = False
        self._corrupt = 0
        self._fresh_response = False

    @classmethod
    def rtu(cls, model: MeterModel, values: dict[str, float], device_id: int = 1, *,
            others: Devices | None = None) -> MeterServer:
        return cls({device_id: (model, values), **(others or {})}, "rtu")

    @classmethod
    def tcp(cls, model: MeterModel, values: dict[str, float], device_id: int = 1, *,
            others: Devices | None = None) -> MeterServer:
        return cls({device_id: (model, values), **(others or {})}, "tcp")

    # -- control -------------------------------------------------------------------------------------------

    def set(self, name: str, value: float, device_id: int | None = None) -> None:
        dev_id = device_id if device_id is not None else next(iter(self.devices))
        self.devices[dev_id].set(name, value)

    def pause(self) -> None:
        """Stop answering: requests are dropped on the wire, the client times out."""
        self._rtu_only("pause")
        self._paused = True

    def resume(self) -> None:
        self._paused = False

    def corrupt(self, n: int) -> None:
        """Flip a byte in each of the next n responses (bad CRC)."""
        self._rtu_only("corrupt")
        self._corrupt = n

    def close(self) -> None:
        """The meter's port disappears (pty closed, link removed)."""
        self._rtu_only("close")
        self._close_client_pty()

    def reopen(self) -> None:
        """The port comes back under the same name."""
        self._rtu_only("reopen")
        if self._client_pty is None:
            self._open_client_pty()

    def _rtu_only(self, what: str) -> None:
        if self.kind != "rtu":
            raise NotImplementedError(f"{what}() needs the RTU variant")

    # -- lifecycle -------------------------------------------------------------------------------------------

    async def __aenter__(self) -> MeterServer:
        sims = [dev.simdevice(dev_id, self.requests) for dev_id, dev in self.devices.items()]
        if self.kind == "tcp":
            self._server = ModbusTcpServer(sims, address=(self.host, 0))
            await self._server.serve_forever(background=True)
            server_sock = self._server.transport.sockets[0]  # type: ignore[attr-defined]
            self.port = server_sock.getsockname()[1]
            return self
        self._tmp = tempfile.TemporaryDirectory(prefix="evsed-meter-")
        self.port = os.path.join(self._tmp.name, "ttyMETER")
        self._server_pty = self._openpty()
        asyncio.get_running_loop().add_reader(self._server_pty[0], self._from_server)
        self._open_client_pty()
        self._server = ModbusSerialServer(sims, port=os.ttyname(self._server_pty[1]), baudrate=9600)
        await self._server.serve_forever(background=True)
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._server is not None:
            await self._server.shutdown()
            self._server = None
        self._close_client_pty()
        if self._server_pty is not None:
            asyncio.get_running_loop().remove_reader(self._server_pty[0])
            for fd in self._server_pty:
                os.close(fd)
            self._server_pty = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    # -- pty bridge --------------------------------------------------------------------------------------------

    @staticmethod
    def _openpty() -> tuple[int, int]:
        master, slave = os.openpty()
        # Raw at once: with the default ECHO, bytes written to the master would come straight back.
        tty.setraw(slave)
        os.set_blocking(master, False)
        # The slave fd stays open here so that the master never sees EIO while no client has the port open.
        return master, slave

    def _open_client_pty(self) -> None:
        self._client_pty = self._openpty()
        os.symlink(os.ttyname(self._client_pty[1]), self.port)
        asyncio.get_running_loop().add_reader(self._client_pty[0], self._from_client)

    def _close_client_pty(self) -> None:
        if self._client_pty is None:
            return
        asyncio.get_running_loop().remove_reader(self._client_pty[0])
        for fd in self._client_pty:
            os.close(fd)
        self._client_pty = None
        self._rx = b""
        self._outstanding = False
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.port)

    def _from_client(self) -> None:
        assert self._client_pty is not None
        try:
            data = os.read(self._client_pty[0], 4096)
        except (BlockingIOError, OSError):
            return
        self._rx += data
        while len(self._rx) >= READ_REQUEST_LEN:
            frame, self._rx = self._rx[:READ_REQUEST_LEN], self._rx[READ_REQUEST_LEN:]
            self.frames.append(frame)
            if self._paused:
                continue
            if self._outstanding:
                self.overlaps += 1
            self._outstanding = True
            self._fresh_response = True
            assert self._server_pty is not None
            os.write(self._server_pty[0], frame)

    def _from_server(self) -> None:
        assert self._server_pty is not None
        try:
            data = bytearray(os.read(self._server_pty[0], 4096))
        except (BlockingIOError, OSError):
            return
        self._outstanding = False
        if self._corrupt > 0 and self._fresh_response and data:
            data[-1] ^= 0x5A
            self._corrupt -= 1
        self._fresh_response = False
        if self._client_pty is not None:
            os.write(self._client_pty[0], bytes(data))


def frame_fields(frame: bytes) -> tuple[int, int, int, int]:
    """(device, function, address, count) of an RTU read request frame."""
    return frame[0], frame[1], int.from_bytes(frame[2:4], "big"), int.from_bytes(frame[4:6], "big")
