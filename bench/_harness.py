"""Shared pieces of the bench scripts: a dev CSMS, a daemon process, the control socket."""

from __future__ import annotations

import asyncio
import atexit
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from evsed.config import load as load_config
from evsed.control.protocol import ControlError, request
from evsed.devcsms.server import DevCSMS, Event


def config_text(tmp: Path, port: int, cp_id: str = "BENCH", connectors: int = 1, extra: str = "", *,
                hardware: str | None = None) -> str:
    """The bench config. `hardware` (the body of [hardware], e.g. from `rpi_hardware`) replaces the default sim
    backend with `connectors` connectors."""
    hw = hardware if hardware is not None else f'backend = "sim"\nconnectors = {connectors}'
    return f"""
[charge_point]
id = "{cp_id}"
vendor = "evsed"
model = "bench"
[ocpp]
url = "ws://127.0.0.1:{port}/ocpp"
[ocpp.config]
HeartbeatInterval = 3600
{extra}
[hardware]
{hw}
[storage]
dir = "{tmp}/state"
[control]
socket = "{tmp}/evsed.sock"
"""


def write_config(tmp: Path, port: int, extra: str = "", connectors: int = 1, *, hardware: str | None = None) -> Path:
    """Write the bench config to tmp/evsed.toml (what Daemon does) and return its path."""
    cfg = tmp / "evsed.toml"
    cfg.write_text(config_text(tmp, port, connectors=connectors, extra=extra, hardware=hardware))
    return cfg


def rpi_hardware(board: str) -> str:
    """[hardware] body for the Raspberry Pi backend with a board profile (hw/boards/NAME.toml). Run the daemon with
    EVSED_EMULATE=1 (Daemon(env=...)) to put it on emulated devices."""
    return f'backend = "rpi"\nboard = "{board}"'


def database_path(config: Path) -> Path:
    """The SQLite file a daemon started with this config uses (storage.dir from the config)."""
    return Path(load_config(str(config)).storage.database)


class Daemon:
    def __init__(self, tmp: Path, port: int, extra: str = "", notify: bool = False, *,
                 connectors: int = 1, log_level: str = "warning", hardware: str | None = None,
                 env: Mapping[str, str] | None = None) -> None:
        """`hardware`: see config_text; `env`: extra environment variables for the daemon process."""
        self.tmp = tmp
        self.sock = str(tmp / "evsed.sock")
        cfg = write_config(tmp, port, extra, connectors, hardware=hardware)
        proc_env = {**os.environ, **(env or {})}
        self.notify_sock: socket.socket | None = None
        if notify:
            self.notify_sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            path = str(tmp / "notify.sock")
            self.notify_sock.bind(path)
            proc_env["NOTIFY_SOCKET"] = path
        self.log = (tmp / "daemon.log").open("ab")
        self.started = time.perf_counter()
        self.proc = subprocess.Popen([sys.executable, "-m", "evsed.cli.daemon", "--config", str(cfg),
                                      "--log-level", log_level], env=proc_env, stderr=self.log)
        _LIVE.add(self)

    def wait_ready_notify(self, timeout: float = 20.0) -> float:
        assert self.notify_sock is not None
        self.notify_sock.settimeout(timeout)
        while True:
            data = self.notify_sock.recv(4096).decode()
            if "READY=1" in data.split("\n"):
                return time.perf_counter() - self.started

    def ctl(self, **req: Any) -> Any:
        return request(self.sock, req)

    def wait(self, predicate: Any, timeout: float = 20.0, *, poll_s: float = 0.02) -> dict[str, Any]:
        """Poll the status every poll_s until predicate(status) holds."""
        end = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < end:
            try:
                last = self.ctl(cmd="status")
                if predicate(last):
                    return last  # type: ignore[no-any-return]
            except ControlError:
                pass
            time.sleep(poll_s)
        raise TimeoutError(f"condition not met; last status {last}")

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def proc_status_kib(self, field: str) -> int:
        """A kB figure of /proc/PID/status, e.g. VmRSS or VmHWM (peak RSS)."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
        return 0

    def rss_kib(self) -> int:
        return self.proc_status_kib("VmRSS")

    def peak_rss_kib(self) -> int:
        return self.proc_status_kib("VmHWM")

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def wait_accepted(self, timeout: float = 30.0) -> dict[str, Any]:
        """Wait until registered with the CSMS; fail early (with the log's tail) if the process died."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if not self.alive:
                raise RuntimeError(f"daemon exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                s = self.ctl(cmd="status")
                if s["ocpp"]["registration"] == "Accepted" and s["ocpp"]["connected"]:
                    return s  # type: ignore[no-any-return]
            except ControlError:
                pass
            time.sleep(0.02)
        raise TimeoutError(f"daemon not Accepted within {timeout:g} s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 30) -> str:
        self.log.flush()
        text = (self.tmp / "daemon.log").read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])

    def kill9(self) -> None:
        """SIGKILL: no shutdown code runs, like a power cut of the process."""
        if self.alive:
            self.proc.kill()
        self.proc.wait(10)
        self._close()

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        self._close()

    def _close(self) -> None:
        _LIVE.discard(self)
        if self.notify_sock is not None:
            self.notify_sock.close()
            self.notify_sock = None
        if not self.log.closed:
            self.log.close()


# Daemons started by this bench process and not yet stopped; killed on exit so nothing is left behind.
_LIVE: set[Daemon] = set()


def _kill_live() -> None:
    for d in list(_LIVE):
        if d.alive:
            d.proc.kill()
            d.proc.wait(10)
        d._close()


def kill_daemons_on_exit() -> None:
    """Kill (by pid) every daemon this process started when it exits, also on SIGTERM/SIGHUP and Ctrl-C."""
    atexit.register(_kill_live)

    def on_signal(signum: int, _frame: object) -> None:
        _kill_live()
        raise SystemExit(128 + signum)

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)


class CsmsThread:
    """A DevCSMS on its own event loop in a thread, so the bench can block freely."""

    def __init__(self, on_event: Callable[[Event], None] | None = None) -> None:
        import threading

        self.loop = asyncio.new_event_loop()
        self.csms = DevCSMS(port=0, on_event=on_event)
        ready = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(self.loop)
            self.loop.run_until_complete(self.csms.start())
            ready.set()
            self.loop.run_forever()

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()
        ready.wait(10)

    @property
    def port(self) -> int:
        return self.csms.port

    def run(self, coro: Any, timeout: float = 60.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self) -> None:
        self.run(self.csms.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)

    def flood(self, cp_id: str) -> tuple[Callable[[], int], Callable[[], None]]:
        """Send GetConfiguration CALLs to cp_id back to back (load for latency benches); returns (calls so far,
        stop)."""
        import threading

        stop = threading.Event()
        calls = [0]

        async def flood() -> None:
            while not stop.is_set():
                await self.csms.call(cp_id, "GetConfiguration", {})
                calls[0] += 1

        fut = asyncio.run_coroutine_threadsafe(flood(), self.loop)

        def end() -> None:
            stop.set()
            fut.result(30)

        return lambda: calls[0], end


def tmpdir() -> Path:
    return Path(tempfile.mkdtemp(prefix="evsed-bench-"))


def percentile(values: list[float], p: float) -> float:
    s = sorted(values)
    k = max(0, min(len(s) - 1, round(p / 100 * (len(s) - 1))))
    return s[k]


def median(values: list[float]) -> float:
    return statistics.median(values)
