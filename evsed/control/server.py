"""Unix socket server for evsectl: line-delimited JSON, one request per line."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from evsed.control.protocol import MAX_LINE, encode

log = logging.getLogger(__name__)

Handler = Callable[[dict[str, Any]], Awaitable[Any]]


class RequestError(Exception):
    """A request the daemon understood but refuses; its message goes back to evsectl as is."""


class ControlServer:
    def __init__(self, path: str, handler: Handler) -> None:
        self.path = path
        self._handler = handler
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        p = Path(self.path)
        p.parent.mkdir(parents=True, exist_ok=True)
        if p.exists() or p.is_symlink():
            if _alive(self.path):
                raise RuntimeError(f"another evsed is already listening on {self.path}")
            p.unlink()  # stale socket of a crashed daemon
        self._server = await asyncio.start_unix_server(self._serve, path=self.path, limit=MAX_LINE)
        os.chmod(self.path, 0o660)  # the evsed group (technicians) may talk to the daemon, nobody else

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        with contextlib.suppress(FileNotFoundError):
            Path(self.path).unlink()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while line := await reader.readline():
                try:
                    req = json.loads(line)
                    if not isinstance(req, dict) or not isinstance(req.get("cmd"), str):
                        raise RequestError("request must be a JSON object with a string 'cmd'")
                    answer = {"ok": True, "result": await self._handler(req)}
                except (ValueError, RequestError) as exc:
                    answer = {"ok": False, "error": str(exc) or "bad request"}
                except Exception as exc:
                    log.exception("control: request failed")
                    answer = {"ok": False, "error": f"internal error: {exc}"}
                writer.write(encode(answer))
                await writer.drain()
        except (ConnectionError, asyncio.LimitOverrunError, asyncio.IncompleteReadError):
            pass
        except ValueError:  # line longer than MAX_LINE
            pass
        finally:
            writer.close()


def _alive(path: str) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        try:
            s.connect(path)
            return True
        except OSError:
            return False
