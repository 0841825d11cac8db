"""Python side of the strict OCPP 1.6J central system used by the end-to-end tests.

The central system itself is ``tests/e2e/csms/strict_csms.js`` (npm ``ocpp-rpc`` in
strictMode: every frame is validated against the official OCPP 1.6 JSON schemas).
This module starts it as a subprocess and talks to it with JSON lines; see the
header of strict_csms.js for the protocol.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

CSMS_DIR = Path(__file__).resolve().parent / "csms"
CSMS_SCRIPT = CSMS_DIR / "strict_csms.js"
INSTALL_HINT = "npm ci --prefix tests/e2e/csms"

Predicate = Callable[[dict[str, Any]], bool]


class CSMSError(Exception):
    """The charge point answered a CSMS-initiated call with a CALLERROR (or the call failed)."""

    def __init__(self, code: str, message: str, details: Any = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.details = details


def node_executable() -> str | None:
    return shutil.which("node")


def node_modules_ready() -> bool:
    return (CSMS_DIR / "node_modules" / "ocpp-rpc" / "package.json").is_file()


class StrictCSMS:
    """Controls one strict_csms.js process.

    Attributes:
        port: TCP port it listens on (127.0.0.1), stable across stop()/listen().
        events: every event received, in order.
        calls: the "call" events (each CALL the charge point sent), in arrival order.
        strict_errors: the "strict_error" events; tests assert this stays empty.
    """

    def __init__(self, port: int = 0, log_path: Path | None = None) -> None:
        self._requested_port = port
        self.port: int = 0
        self.events: list[dict[str, Any]] = []
        self.calls: list[dict[str, Any]] = []
        self.strict_errors: list[dict[str, Any]] = []
        self.messages: list[dict[str, Any]] = []
        self._log_path = log_path
        self._log_file: Any = None
        self._proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._changed = asyncio.Event()
        self._stderr_task: asyncio.Task[None] | None = None
        self._stderr_lines: list[str] = []

    # ------------------------------------------------------------------ lifecycle
    async def start(self, timeout: float = 15.0) -> StrictCSMS:
        node = node_executable()
        if node is None:
            raise RuntimeError("node is not installed")
        if not node_modules_ready():
            raise RuntimeError(f"tests/e2e/csms/node_modules is missing: run `{INSTALL_HINT}`")
        if self._log_path is not None:
            self._log_file = open(self._log_path, "w", encoding="utf-8")  # noqa: SIM115
        self._proc = await asyncio.create_subprocess_exec(
            node,
            str(CSMS_SCRIPT),
            str(self._requested_port),
            cwd=str(CSMS_DIR),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            limit=16 * 1024 * 1024,
        )
        self._reader = asyncio.create_task(self._read_stdout())
        self._stderr_task = asyncio.create_task(self._read_stderr())
        ev = await self.wait_event("listening", timeout=timeout)
        self.port = int(ev["port"])
        return self

    async def aclose(self) -> None:
        proc = self._proc
        if proc is None:
            return
        if proc.returncode is None:
            with contextlib.suppress(Exception):
                assert proc.stdin is not None
                proc.stdin.write(b'{"id":0,"cmd":"exit"}\n')
                await proc.stdin.drain()
            try:
                await asyncio.wait_for(proc.wait(), 5)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        for task in (self._reader, self._stderr_task):
            if task is not None:
                with contextlib.suppress(BaseException):
                    await asyncio.wait_for(task, 2)
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(RuntimeError("strict CSMS exited"))
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    async def _read_stdout(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        while True:
            line = await self._proc.stdout.readline()
            if not line:
                break
            text = line.decode("utf-8", "replace").strip()
            if not text:
                continue
            if self._log_file is not None:
                self._log_file.write(text + "\n")
                self._log_file.flush()
            try:
                ev = json.loads(text)
            except ValueError:
                ev = {"event": "log", "message": text}
            self._dispatch(ev)
        self._dispatch({"event": "exited", "returncode": self._proc.returncode})
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(RuntimeError("strict CSMS exited: " + self.stderr_tail()))

    async def _read_stderr(self) -> None:
        assert self._proc is not None and self._proc.stderr is not None
        while True:
            line = await self._proc.stderr.readline()
            if not line:
                break
            text = line.decode("utf-8", "replace").rstrip()
            self._stderr_lines.append(text)
            if self._log_file is not None:
                self._log_file.write("STDERR " + text + "\n")
                self._log_file.flush()

    def stderr_tail(self, n: int = 20) -> str:
        return "\n".join(self._stderr_lines[-n:])

    def _dispatch(self, ev: dict[str, Any]) -> None:
        ev.setdefault("_rx", time.monotonic())
        name = ev.get("event")
        if name == "reply":
            fut = self._pending.pop(ev.get("id"), None)
            if fut is not None and not fut.done():
                fut.set_result(ev)
            return
        self.events.append(ev)
        if name == "call":
            self.calls.append(ev)
        elif name == "strict_error":
            self.strict_errors.append(ev)
        elif name == "message":
            self.messages.append(ev)
        self._changed.set()

    # ------------------------------------------------------------------ commands
    async def _request(self, cmd: str, wait_s: float = 30.0, **kw: Any) -> Any:
        proc = self._proc
        if proc is None or proc.returncode is not None or proc.stdin is None:
            raise RuntimeError("strict CSMS is not running: " + self.stderr_tail())
        req_id = next(self._ids)
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[req_id] = fut
        proc.stdin.write((json.dumps({"id": req_id, "cmd": cmd, **kw}) + "\n").encode())
        await proc.stdin.drain()
        try:
            reply = await asyncio.wait_for(fut, wait_s)
        finally:
            self._pending.pop(req_id, None)
        if "error" in reply:
            err = reply["error"] or {}
            raise CSMSError(str(err.get("code")), str(err.get("message")), err.get("details"))
        return reply.get("result")

    async def call(self, identity: str, action: str, payload: dict[str, Any], timeout: float = 10) -> Any:
        """Send a CALL to the charge point; return its CALLRESULT payload or raise CSMSError."""
        return await self._request(
            "call", wait_s=timeout + 5, identity=identity, action=action, payload=payload, timeout=timeout
        )

    async def set(self, **knobs: Any) -> dict[str, Any]:
        """Behaviour knobs: bootStatus, heartbeatInterval, authorize={tag: status},
        authorizeDefault, nextTransactionId, respond (bool or {action: bool}),
        stopTransactionStatus."""
        return await self._request("set", **knobs)  # type: ignore[no-any-return]

    async def raw(self, identity: str, text: str, timeout: float = 3.0) -> str | None:
        """Send a raw frame; return the first CALLRESULT/CALLERROR text the charge point sent back."""
        res = await self._request("raw", wait_s=timeout + 10, identity=identity, text=text, timeout=timeout)
        return None if res is None else res.get("message")

    async def close_client(self, identity: str, code: int = 1000, force: bool = False) -> Any:
        return await self._request("close", identity=identity, code=code, force=force)

    async def stop(self, force: bool = False) -> None:
        """CSMS down: stop listening and close every client connection."""
        await self._request("stop", force=force)

    async def listen(self) -> None:
        """CSMS back: listen again on the same port."""
        await self._request("listen")

    async def clients(self) -> list[str]:
        return await self._request("clients")  # type: ignore[no-any-return]

    # ------------------------------------------------------------------ waiting
    def mark(self) -> int:
        """Index to pass as since= to wait_call() for 'calls received from now on'."""
        return len(self.calls)

    def event_mark(self) -> int:
        return len(self.events)

    async def _wait(
        self, source: list[dict[str, Any]], match: Predicate, since: int, timeout: float, what: str
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        idx = since
        while True:
            while idx < len(source):
                ev = source[idx]
                idx += 1
                if match(ev):
                    return ev
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"timed out after {timeout}s waiting for {what}; {self.describe()}")
            self._changed.clear()
            if idx < len(source):
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), remaining)

    async def wait_call(
        self, action: str, predicate: Predicate | None = None, timeout: float = 20, since: int = 0
    ) -> dict[str, Any]:
        """First CALL of `action` (satisfying predicate(payload)) at index >= since in self.calls."""

        def match(ev: dict[str, Any]) -> bool:
            return ev.get("action") == action and (predicate is None or bool(predicate(ev["payload"])))

        return await self._wait(self.calls, match, since, timeout, f"CALL {action}")

    async def wait_event(
        self, name: str, predicate: Predicate | None = None, timeout: float = 20, since: int = 0
    ) -> dict[str, Any]:
        def match(ev: dict[str, Any]) -> bool:
            return ev.get("event") == name and (predicate is None or bool(predicate(ev)))

        return await self._wait(self.events, match, since, timeout, f"event {name}")

    def calls_of(self, action: str, since: int = 0) -> list[dict[str, Any]]:
        return [c for c in self.calls[since:] if c["action"] == action]

    def describe(self, n: int = 25) -> str:
        lines = [f"last {n} CSMS events:"]
        for ev in self.events[-n:]:
            ev2 = {k: v for k, v in ev.items() if k != "_rx"}
            lines.append("  " + json.dumps(ev2)[:400])
        if self.strict_errors:
            lines.append(f"strict errors: {json.dumps([_clean(e) for e in self.strict_errors])[:2000]}")
        tail = self.stderr_tail()
        if tail:
            lines.append("stderr: " + tail)
        return "\n".join(lines)


def _clean(ev: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in ev.items() if k != "_rx"}


def ensure_node_or_reason() -> str | None:
    """None if the strict CSMS can run, else why not."""
    if node_executable() is None:
        return "node is not installed (the strict CSMS needs Node.js)"
    if not os.path.isfile(CSMS_SCRIPT):
        return f"{CSMS_SCRIPT} is missing"
    return None
