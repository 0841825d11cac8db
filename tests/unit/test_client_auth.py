"""The WebSocket adapter sends HTTP Basic credentials when an AuthorizationKey is configured."""

from __future__ import annotations

import asyncio
import base64
import random

import websockets
from websockets.asyncio.server import ServerConnection, serve

from evsed.ocpp.client import OcppClient
from evsed.ocpp.configkeys import ConfigKeys
from evsed.ocpp.schema import Validator
from evsed.ocpp.session import Identity, OcppSession
from evsed.store.db import Store


class _Ctl:
    def statuses(self) -> dict[int, tuple[str, str, str]]:
        return {0: ("Available", "NoError", "")}


async def _connect_once(key: str | None) -> str | None:
    seen: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()

    async def handler(ws: ServerConnection) -> None:
        if not seen.done():
            seen.set_result(ws.request.headers.get("Authorization") if ws.request else None)
        await ws.close()

    async with serve(handler, "127.0.0.1", 0, subprotocols=[websockets.Subprotocol("ocpp1.6")]) as server:
        port = server.sockets[0].getsockname()[1]
        store = Store(":memory:")
        keys = ConfigKeys(store, {}, 1)
        session = OcppSession(Identity("CP-9", "v", "m"), keys, store, _Ctl(), Validator("v16"),  # type: ignore[arg-type]
                              connectors=1, now=0.0, wall_offset=0.0, rng=random.Random(1))
        client = OcppClient(session, f"ws://127.0.0.1:{port}/ocpp", reconnect_min_s=0.1, reconnect_max_s=0.2,
                            authorization_key=lambda: key)
        task = asyncio.create_task(client.run())
        try:
            return await asyncio.wait_for(seen, 10)
        finally:
            await client.close()
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


async def test_basic_auth_header_with_authorization_key() -> None:
    key = "00112233445566778899aabbccddeeff"
    header = await _connect_once(key)
    assert header == "Basic " + base64.b64encode(f"CP-9:{key}".encode()).decode()


async def test_no_header_without_key() -> None:
    assert await _connect_once(None) is None
