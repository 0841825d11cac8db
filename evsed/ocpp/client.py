"""WebSocket adapter around the sans-I/O ``OcppSession``: connect, reconnect, move frames, drive timers."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import random
import time
from collections.abc import Callable

import websockets
from websockets.asyncio.client import ClientConnection, connect

from evsed.ocpp.session import OcppSession

log = logging.getLogger(__name__)


class OcppClient:
    def __init__(self, session: OcppSession, url: str, *, reconnect_min_s: float = 1.0,
                 reconnect_max_s: float = 60.0, ping_interval: Callable[[], float] = lambda: 30.0,
                 authorization_key: Callable[[], str | None] = lambda: None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.session = session
        self.url = url.rstrip("/") + "/" + session.identity.charge_point_id
        self._min = reconnect_min_s
        self._max = reconnect_max_s
        self._ping_interval = ping_interval
        self._authorization_key = authorization_key
        self._clock = clock
        self._wake = asyncio.Event()
        self._ws: ClientConnection | None = None
        self._closing = False

    def _headers(self) -> dict[str, str]:
        """HTTP Basic authentication (Security Whitepaper, profile 1): ChargePointId and AuthorizationKey."""
        key = self._authorization_key()
        if not key:
            return {}
        token = base64.b64encode(f"{self.session.identity.charge_point_id}:{key}".encode()).decode("ascii")
        return {"Authorization": f"Basic {token}"}

    def kick(self) -> None:
        """Something changed in the session: flush its outbox and re-arm the timer."""
        self._wake.set()

    async def run(self) -> None:
        delay = self._min
        timer = asyncio.create_task(self._timer(), name="ocpp-timer")
        try:
            while not self._closing:
                try:
                    ping = self._ping_interval()
                    async with connect(self.url, subprotocols=[websockets.Subprotocol("ocpp1.6")],
                                       additional_headers=self._headers(),
                                       ping_interval=ping or None, ping_timeout=ping or None,
                                       open_timeout=10, close_timeout=2, max_size=2**20) as ws:
                        if ws.subprotocol != "ocpp1.6":
                            log.error("ocpp: CSMS did not accept subprotocol ocpp1.6 (got %r)", ws.subprotocol)
                            await ws.close(1002, "subprotocol ocpp1.6 required")
                            raise ConnectionError("no ocpp1.6 subprotocol")
                        self._ws = ws
                        delay = self._min
                        log.info("ocpp: connected to %s", self.url)
                        self.session.connection_opened(self._clock())
                        await self._flush()
                        async for message in ws:
                            self.session.receive(message, self._clock())
                            await self._flush()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # any network failure ends in a reconnect, never in a crash
                    if not self._closing:
                        log.warning("ocpp: connection to %s failed: %s", self.url, exc or type(exc).__name__)
                finally:
                    if self._ws is not None:
                        self._ws = None
                        self.session.connection_lost(self._clock())
                        log.info("ocpp: disconnected")
                if self._closing:
                    break
                # Exponential backoff with full jitter so a fleet does not reconnect in lockstep.
                await asyncio.sleep(random.uniform(self._min, delay))
                delay = min(self._max, delay * 2)
        finally:
            timer.cancel()

    async def _timer(self) -> None:
        while True:
            now = self._clock()
            timeout = max(0.0, self.session.next_deadline(now) - now)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)
            self._wake.clear()
            self.session.tick(self._clock())
            await self._flush()

    async def _flush(self) -> None:
        out = self.session.outbox
        if not out:
            return
        frames = out[:]
        out.clear()
        ws = self._ws
        if ws is None:
            return  # frames for a closed connection are void; the session re-sends what matters
        for frame in frames:
            log.debug("ocpp: >> %s", frame)
            try:
                await ws.send(frame)
            except websockets.ConnectionClosed:
                return
            except (UnicodeEncodeError, ValueError, TypeError) as exc:  # one bad frame must not cost the link
                log.error("ocpp: frame not sendable, dropped: %s", exc)

    async def close(self) -> None:
        """Close with a proper close frame (1000)."""
        self._closing = True
        ws = self._ws
        if ws is not None:
            try:
                await ws.close(1000, "charge point shutting down")
            except Exception as exc:
                log.debug("ocpp: close failed: %s", exc)
