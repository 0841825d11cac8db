"""`evsectl probe rfid`: read cards from a serial RFID reader directly, without the daemon.

For commissioning: it shows whether the port, baud rate and protocol are right and which idTag a card produces,
through the same parser, debouncer and serial code the daemon uses. A card held on the reader counts once.
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import TextIO

from evsed.board.rpi.rfid import SerialRfidReader


def probe_rfid(
    port: str,
    *,
    baudrate: int = 9600,
    protocol: str = "rdm6300",
    count: int = 1,
    as_json: bool = False,
    timeout_s: float | None = None,
    out: TextIO = sys.stdout,
) -> int:
    """Print one line per card read until `count` cards were read (0), or the port fails or times out (1).

    Usage errors (unknown protocol, bad numbers) exit 2. Card lines go to `out`; diagnostics go to stderr, so that
    `--json` output is exactly one `{"id_tag": ...}` object per line.
    """
    if count < 1:
        return _error("count must be at least 1", 2)
    if timeout_s is not None and timeout_s <= 0:
        return _error("timeout must be positive", 2)
    try:
        # The retry is irrelevant here: the first failure ends the probe.
        reader = SerialRfidReader(port, baudrate=baudrate, protocol=protocol, retry_s=1.0)
    except ValueError as exc:
        return _error(str(exc), 2)
    try:
        return asyncio.run(_probe(reader, count, as_json, timeout_s, out))
    except KeyboardInterrupt:
        return 130


async def _probe(reader: SerialRfidReader, count: int, as_json: bool, timeout_s: float | None, out: TextIO) -> int:
    loop = asyncio.get_running_loop()
    result: asyncio.Future[tuple[int, str]] = loop.create_future()
    read = 0

    def on_tag(uid: str) -> None:
        nonlocal read
        if result.done():
            return  # several frames in one chunk: print exactly `count`
        print(json.dumps({"id_tag": uid}) if as_json else f"card {uid}", file=out, flush=True)
        read += 1
        if read >= count:
            result.set_result((0, ""))

    def on_health(ok: bool, info: str) -> None:
        if result.done():
            return
        if not ok:
            result.set_result((1, info))
        elif not as_json:
            hint = f"reading {reader.protocol} cards on {reader.port} at {reader.baudrate} baud; present a card"
            print(hint, file=sys.stderr, flush=True)

    def reader_done(task: asyncio.Task[None]) -> None:
        # run() only ends by cancellation; if it fails anyway, its exception must surface rather than hang the probe.
        if not result.done() and not task.cancelled():
            result.set_exception(task.exception() or RuntimeError("RFID reader stopped"))

    task = asyncio.create_task(reader.run(on_tag, on_health))
    task.add_done_callback(reader_done)
    try:
        async with asyncio.timeout(timeout_s):
            rc, message = await result
    except TimeoutError:
        missing = "no card" if read == 0 else f"only {read} of {count} cards"
        return _error(f"{missing} read within {timeout_s:g} s", 1)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    return _error(message, rc) if rc else 0


def _error(message: str, rc: int) -> int:
    print(f"evsectl: {message}", file=sys.stderr, flush=True)
    return rc
