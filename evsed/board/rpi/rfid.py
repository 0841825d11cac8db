"""RFID card readers on a serial port: frame parsers, a debouncer and a reconnecting asyncio reader.

The reader turns bytes from a tty into OCPP idTags. Readers differ only in framing, so the framing is a pluggable
`FrameParser` chosen by name (`PARSERS`, `make_parser`); the serial side (`SerialRfidReader`) is shared.

UID normalisation (`normalise_uid`): uppercase hex digits without separators (":", "-", " "), 1..20 characters, as
OCPP 1.6 idTag is a CiString20. Bytes are kept in the order the reader sends them: nothing is reversed. If a CSMS
expects the reversed byte order (some readers print UIDs little-endian), the fix belongs in the CSMS's tag list,
because evsed cannot tell which order a given reader uses.

Parsers:

- ``ascii``: one card number per line, terminated by CR and/or LF, optionally wrapped as STX (0x02) ... ETX (0x03).
  This covers most "serial RFID modules" and Wiegand-to-RS-232/RS-485 converters. Hex with separators or lowercase
  is normalised. A *decimal* card number (what many Wiegand converters print) is kept verbatim, leading zeros
  included: digits are valid hex characters and an idTag is a free string, and evsed cannot tell "12345678" decimal
  from "12345678" hex, so the tag list must hold the number exactly as the reader prints it. Anything after an ETX up
  to the end of the line or the next STX (a BCC byte, say) is a trailer and is ignored, so a BCC that happens to be
  a printable hex character is not mistaken for a card. Lines that are empty, not hex, or longer than 20 characters
  after normalisation are dropped. A line that grows beyond 64 bytes without a terminator is discarded together with
  the rest of that line, so a noisy input cannot grow memory.
- ``rdm6300``: RDM6300/RDM630 (EM4100, 125 kHz) frames of 14 bytes: STX, 10 ASCII hex digits (1 version byte +
  32-bit tag), 2 ASCII hex digits of checksum (XOR of the 5 data bytes), ETX. The reported UID is all 10 hex digits
  (version + tag), uppercase, as transmitted. Some systems use only the last 8 digits, or the decimal value of the
  last 4 (or 3) bytes, which is what is often printed on the card; we keep all 10 because that loses nothing and is
  what the reader itself sends. Frames with a bad length, non-hex content or a bad checksum are dropped; a new STX
  always starts a new frame (STX cannot occur inside a valid frame), which resynchronises after noise.
- ``pn532``: NXP PN532 (13.56 MHz, ISO 14443A) over HSU (UART, 115200 baud by default; pass baudrate=115200).
  Unlike the others it is polled: `Pn532Parser` is also a `PolledParser` whose `poll()` says what to write (wake-up
  + SAMConfiguration, RFConfiguration MaxRetries so that a poll without a card ends quickly, then
  InListPassiveTarget every 0.2 s). The reported UID is the NFCID1 (4, 7 or 10 bytes) in the order the chip sends
  it, uppercase hex. Being command/response, it is the only protocol whose health means "the reader answers", not
  just "the port is open": no answer (wrong baud rate, wiring) is reported as unhealthy.

Readers repeat the frame while a card is held on them; `CardDebouncer` reports a held card once.
"""

from __future__ import annotations

import asyncio
import errno
import functools
import logging
import string
import termios
import time
from collections.abc import Callable
from typing import Protocol, runtime_checkable

import serial
import serial_asyncio_fast

log = logging.getLogger(__name__)

STX = 0x02
ETX = 0x03
CR = 0x0D
LF = 0x0A

MAX_UID_LEN = 20  # OCPP 1.6 idTag is CiString20
_SEPARATORS = (":", "-", " ")
_HEX = frozenset(string.hexdigits)
_HEX_BYTES = frozenset(string.hexdigits.encode())


class FrameParser(Protocol):
    name: str

    def feed(self, data: bytes) -> list[str]:
        """Bytes in (any chunking), normalised UIDs out. Never raises on garbage."""
        ...

    def reset(self) -> None:
        """Drop a partial frame (after a reconnect)."""
        ...


def normalise_uid(text: str) -> str | None:
    """Uppercase hex without separators, 1..20 characters; None when `text` is not a UID."""
    uid = text.strip()
    for sep in _SEPARATORS:
        uid = uid.replace(sep, "")
    if not 1 <= len(uid) <= MAX_UID_LEN or not all(c in _HEX for c in uid):
        return None
    return uid.upper()


class AsciiLineParser:
    """Card numbers as text lines (CR/LF terminated), optionally wrapped in STX ... ETX."""

    name = "ascii"
    max_line = 64

    def __init__(self) -> None:
        self._buf = bytearray()
        # True while dropping the rest of a line: after an ETX (trailer such as a BCC) or after an overlong line.
        self._skipping = False

    def reset(self) -> None:
        self._buf.clear()
        self._skipping = False

    def feed(self, data: bytes) -> list[str]:
        uids: list[str] = []
        for b in data:
            if b == STX:
                self._buf.clear()
                self._skipping = False
            elif b in (CR, LF, ETX):
                if not self._skipping and self._buf:
                    uid = self._line_uid(bytes(self._buf))
                    if uid is not None:
                        uids.append(uid)
                self._buf.clear()
                self._skipping = b == ETX
            elif self._skipping:
                continue
            elif len(self._buf) >= self.max_line:
                self._buf.clear()
                self._skipping = True
            else:
                self._buf.append(b)
        return uids

    @staticmethod
    def _line_uid(line: bytes) -> str | None:
        try:
            text = line.decode("ascii")
        except UnicodeDecodeError:
            return None
        return normalise_uid(text)


class Rdm6300Parser:
    """RDM6300 14-byte frames: STX, 10 hex digits, 2 hex digits XOR checksum, ETX."""

    name = "rdm6300"
    frame_len = 14

    def __init__(self) -> None:
        self._buf = bytearray()

    def reset(self) -> None:
        self._buf.clear()

    def feed(self, data: bytes) -> list[str]:
        uids: list[str] = []
        for b in data:
            if b == STX:
                # STX never occurs inside a valid frame, so it always starts one: this resynchronises after noise
                # or a truncated frame.
                self._buf = bytearray((STX,))
                continue
            if not self._buf:
                continue  # noise between frames
            self._buf.append(b)
            if len(self._buf) == self.frame_len:
                uid = self._decode(bytes(self._buf))
                self._buf.clear()
                if uid is not None:
                    uids.append(uid)
            elif b == ETX:
                self._buf.clear()  # frame too short
        return uids

    @staticmethod
    def _decode(frame: bytes) -> str | None:
        body, checksum = frame[1:11], frame[11:13]
        if frame[13] != ETX or not all(c in _HEX_BYTES for c in body + checksum):
            return None
        xor = 0
        for byte in bytes.fromhex(body.decode("ascii")):
            xor ^= byte
        if xor != int(checksum, 16):
            return None
        return body.decode("ascii").upper()


@runtime_checkable
class PolledParser(FrameParser, Protocol):
    """A parser for command/response readers: the reader writes what `poll` returns, every `poll_s` seconds."""

    poll_s: float
    # The gap between two reads of a card that stays on the reader; a shorter debounce hold would report it again.
    min_hold_s: float

    def poll(self, now: float) -> bytes:
        """Bytes to write now (b"" for nothing)."""
        ...

    @property
    def alive(self) -> bool | None:
        """Whether the reader answers commands; None until the first answer or time-out."""
        ...


_PN532_WAKEUP = b"\x55\x55" + bytes(15)  # HSU: wakes the chip from power-down before the first command
_PN532_SAM_CONFIG = bytes((0x14, 0x01, 0x14, 0x01))  # normal mode (no SAM), timeout 1 s, use IRQ
# RFConfiguration CfgItem 5 (MaxRetries): ATR 0xFF, PSL 1, passive activation 5 -- the default (0xFF) would keep an
# InListPassiveTarget waiting for a card forever.
_PN532_MAX_RETRIES = bytes((0x32, 0x05, 0xFF, 0x01, 0x05))
_PN532_IN_LIST = bytes((0x4A, 0x01, 0x00))  # InListPassiveTarget: max 1 target, 106 kbps type A


def pn532_frame(payload: bytes, tfi: int = 0xD4) -> bytes:
    """A PN532 normal information frame around `payload` (command code + data)."""
    body = bytes((tfi,)) + payload
    length = len(body)
    return bytes((0x00, 0x00, 0xFF, length, -length & 0xFF)) + body + bytes((-sum(body) & 0xFF, 0x00))


class Pn532Parser:
    """PN532 over HSU: sans-I/O command sequencer (`poll`) and response-frame parser (`feed`)."""

    name = "pn532"
    poll_s = 0.05  # how often the reader asks; poll() itself rate-limits InListPassiveTarget to interval_s
    interval_s = 0.2
    timeout_s = 1.0
    min_hold_s = 3 * interval_s
    max_misses = 2  # unanswered commands in a row before the reader counts as not responding

    def __init__(self) -> None:
        self._buf = bytearray()
        self.reset()

    def reset(self) -> None:
        self._buf.clear()
        self._init_steps = [_PN532_SAM_CONFIG, _PN532_MAX_RETRIES]
        self._pending: int | None = None  # command code awaiting its response
        self._sent_at = 0.0
        self._misses = 0
        self._alive: bool | None = None

    @property
    def alive(self) -> bool | None:
        return self._alive

    def poll(self, now: float) -> bytes:
        if self._pending is not None:
            if now - self._sent_at < self.timeout_s:
                return b""
            self._misses += 1
            self._pending = None
            if self._misses >= self.max_misses:
                # Maybe power-cycled or never configured: start over with the wake-up sequence.
                self._alive = False
                self._init_steps = [_PN532_SAM_CONFIG, _PN532_MAX_RETRIES]
        if self._init_steps:
            # A step stays at the head of the queue until it is answered, so a lost one is sent again.
            command = self._init_steps[0]
            # SAMConfiguration is the first command after a (re)start, so it carries the wake-up preamble.
            prefix = _PN532_WAKEUP if command == _PN532_SAM_CONFIG else b""
            return self._send(prefix + pn532_frame(command), command[0], now)
        if now - self._sent_at < self.interval_s:
            return b""
        return self._send(pn532_frame(_PN532_IN_LIST), _PN532_IN_LIST[0], now)

    def _send(self, data: bytes, command: int, now: float) -> bytes:
        self._pending = command
        self._sent_at = now
        return data

    def feed(self, data: bytes) -> list[str]:
        self._buf += data
        uids: list[str] = []
        while True:
            start = self._buf.find(b"\x00\xff")
            if start < 0:
                # Keep a trailing 0x00: it may be the first half of a start code.
                del self._buf[: max(0, len(self._buf) - 1)]
                return uids
            del self._buf[:start]
            if len(self._buf) < 4:
                return uids
            length, lcs = self._buf[2], self._buf[3]
            if (length, lcs) in ((0x00, 0xFF), (0xFF, 0x00)):  # ACK / NACK
                del self._buf[:4]
                continue
            if (length + lcs) & 0xFF or length == 0:  # not a frame header (or an extended frame, never used here)
                del self._buf[:1]
                continue
            if len(self._buf) < 5 + length:
                return uids  # at most 259 bytes are kept waiting: the buffer is bounded
            body, dcs = bytes(self._buf[4 : 4 + length]), self._buf[4 + length]
            if (sum(body) + dcs) & 0xFF:
                del self._buf[:1]
                continue
            del self._buf[: 5 + length]
            uid = self._response(body)
            if uid is not None:
                uids.append(uid)

    def _response(self, body: bytes) -> str | None:
        if body[0] == 0x7F:  # application-level error frame: the chip is there but rejected the command
            self._answered()
            return None
        if body[0] != 0xD5 or len(body) < 2 or self._pending is None or body[1] != self._pending + 1:
            return None  # not an answer to what we asked (a late answer after a time-out, say)
        command = self._pending
        self._answered()
        if command != _PN532_IN_LIST[0]:
            self._init_steps.pop(0)
            return None
        # D5 4B NbTg [Tg SENS_RES(2) SEL_RES NFCIDLength NFCID1...]
        if len(body) < 8 or body[2] == 0:
            return None
        uid = body[8 : 8 + body[7]]
        if len(uid) != body[7] or not uid:
            return None
        return normalise_uid(uid.hex())

    def _answered(self) -> None:
        self._pending = None
        self._misses = 0
        self._alive = True


PARSERS: dict[str, Callable[[], FrameParser]] = {
    AsciiLineParser.name: AsciiLineParser,
    Pn532Parser.name: Pn532Parser,
    Rdm6300Parser.name: Rdm6300Parser,
}


def make_parser(name: str) -> FrameParser:
    try:
        factory = PARSERS[name.lower()]
    except KeyError:
        raise ValueError(f"unknown RFID protocol {name!r} (known: {', '.join(sorted(PARSERS))})") from None
    return factory()


class CardDebouncer:
    """A card held on the reader is reported once: readers repeat the frame every ~100-500 ms. The same UID is
    reported again only after it was absent for hold_s (default 1.0 s). Pure: takes `now`.

    UIDs are tracked independently, so two cards in the field that the reader reads alternately are each reported
    once, not on every alternation.
    """

    def __init__(self, hold_s: float = 1.0) -> None:
        if hold_s < 0:
            raise ValueError(f"hold_s must be >= 0, not {hold_s}")
        self.hold_s = hold_s
        self._last_seen: dict[str, float] = {}

    def seen(self, uid: str, now: float) -> bool:
        """Record a read of `uid` at `now`; True when it should be reported."""
        # Forgetting cards absent for hold_s keeps the table as small as the number of cards on the reader.
        self._last_seen = {u: t for u, t in self._last_seen.items() if now - t < self.hold_s}
        report = uid not in self._last_seen
        self._last_seen[uid] = now
        return report


def describe_serial_error(exc: BaseException) -> str:
    """A short reason for a serial open/read failure, for logs and `evsectl`."""
    code = getattr(exc, "errno", None)
    text = str(exc) or type(exc).__name__
    if isinstance(exc, termios.error) and len(exc.args) == 2:
        code, text = exc.args[0], str(exc.args[1])
    if code == errno.ENOENT:
        return "no such device"
    if code == errno.EACCES:
        return "permission denied (is the user in the dialout group?)"
    if code in (errno.EAGAIN, errno.EBUSY):
        return "in use by another process"
    return text


class _ReaderProtocol(asyncio.Protocol):
    def __init__(self, parser: FrameParser, on_uid: Callable[[str], None], lost: asyncio.Future[Exception | None]):
        self._parser = parser
        self._on_uid = on_uid
        self._lost = lost

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A frame cut by the previous disconnect must not be completed by the first bytes of the new connection.
        self._parser.reset()

    def data_received(self, data: bytes) -> None:
        for uid in self._parser.feed(data):
            self._on_uid(uid)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._lost.done():
            self._lost.set_result(exc)


class SerialRfidReader:
    """pyserial-asyncio-fast reader of one serial port. Reconnects (every retry_s) when the port disappears;
    reports reader health via on_health(ok: bool, info: str) exactly once per change (first failure logged once)."""

    def __init__(
        self,
        port: str,
        *,
        baudrate: int = 9600,
        protocol: str = "rdm6300",
        hold_s: float = 1.0,
        retry_s: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if baudrate <= 0:
            raise ValueError(f"baudrate must be positive, not {baudrate}")
        if retry_s <= 0:
            raise ValueError(f"retry_s must be positive, not {retry_s}")
        self.port = port
        self.baudrate = baudrate
        self.protocol = protocol
        self.retry_s = retry_s
        self._parser = make_parser(protocol)  # a bad protocol name is a config error: fail at construction
        if isinstance(self._parser, PolledParser):
            hold_s = max(hold_s, self._parser.min_hold_s)
        self._debouncer = CardDebouncer(hold_s)
        self._clock = clock

    async def run(self, on_tag: Callable[[str], None], on_health: Callable[[bool, str], None]) -> None:
        """Read cards until cancelled. on_tag gets each card presentation once."""
        loop = asyncio.get_running_loop()
        healthy: bool | None = None

        def health(ok: bool, info: str) -> None:
            nonlocal healthy
            if ok is healthy:
                log.debug("RFID reader %s", info)
                return
            healthy = ok
            (log.info if ok else log.warning)("RFID reader %s", info)
            on_health(ok, info)

        def on_uid(uid: str) -> None:
            if not self._debouncer.seen(uid, self._clock()):
                return
            try:
                on_tag(uid)
            except Exception:
                # The caller's bug must not stop card reading.
                log.exception("RFID tag handler failed for %s", uid)

        while True:
            lost: asyncio.Future[Exception | None] = loop.create_future()
            try:
                transport, _ = await serial_asyncio_fast.create_serial_connection(
                    loop,
                    functools.partial(_ReaderProtocol, self._parser, on_uid, lost),
                    self.port,
                    baudrate=self.baudrate,
                    # Two processes reading one tty would each get random halves of the frames.
                    exclusive=True,
                )
            except (serial.SerialException, OSError, termios.error, ValueError) as exc:
                # (termios.error is not an OSError: pyserial lets it through from tcflush when the device vanishes
                # while being opened.)
                health(False, f"{self.port}: {describe_serial_error(exc)}")
                await asyncio.sleep(self.retry_s)
                continue
            opened = f"{self.port}: open ({self.protocol}, {self.baudrate} baud)"
            parser = self._parser
            poller: asyncio.Task[None] | None = None
            if isinstance(parser, PolledParser):
                # Healthy only once the reader answers; the poller reports it.
                poller = asyncio.create_task(self._poll(parser, transport, opened, health))
            else:
                health(True, opened)
            try:
                cause = await lost
            finally:
                if not transport.is_closing():
                    # Cancelled: close the port now rather than in the transport's background task, which an
                    # event-loop shutdown may cancel before it runs.
                    port = transport.serial
                    transport.abort()
                    if port is not None:
                        port.close()
                if poller is not None:
                    poller.cancel()
                    await asyncio.gather(poller, return_exceptions=True)
            reason = f"disconnected ({cause})" if cause is not None else "closed"
            health(False, f"{self.port}: {reason}")
            await asyncio.sleep(self.retry_s)

    async def _poll(
        self,
        parser: PolledParser,
        transport: asyncio.WriteTransport,
        opened: str,
        health: Callable[[bool, str], None],
    ) -> None:
        while not transport.is_closing():
            data = parser.poll(self._clock())
            if data:
                transport.write(data)
            if parser.alive is True:
                health(True, opened)
            elif parser.alive is False:
                health(False, f"{self.port}: no response from the reader (wrong protocol or baud rate?)")
            await asyncio.sleep(parser.poll_s)


__all__ = [
    "PARSERS",
    "AsciiLineParser",
    "CardDebouncer",
    "FrameParser",
    "Pn532Parser",
    "PolledParser",
    "Rdm6300Parser",
    "SerialRfidReader",
    "describe_serial_error",
    "make_parser",
    "normalise_uid",
    "pn532_frame",
]
