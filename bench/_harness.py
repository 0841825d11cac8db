"""Shared pieces of the bench scripts: a dev CSMS, a daemon process, the control socket."""

from __future__ import annotations

import asyncio
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from evsed.control.protocol import ControlError, request
from evsed.devcsms.server import DevCSMS


def config_text(tmp: Path, port: int, cp_id: str = "BENCH", connectors: int = 1, extra: str = "") -> str:
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
backend = "sim"
connectors = {connectors}
[storage]
dir = "{tmp}/state"
[control]
socket = "{tmp}/evsed.sock"
"""


class Daemon:
    def __init__(self, tmp: Path, port: int, extra: str = "", notify: bool = False) -> None:
        self.tmp = tmp
        self.sock = str(tmp / "evsed.sock")
        cfg = tmp / "evsed.toml"
        cfg.write_text(config_text(tmp, port, extra=extra))
        env = dict(os.environ)
        self.notify_sock: socket.socket | None = None
        if notify:
            self.notify_sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            path = str(tmp / "notify.sock")
            self.notify_sock.bind(path)
            env["NOTIFY_SOCKET"] = path
        self.log = (tmp / "daemon.log").open("ab")
        self.started = time.perf_counter()
        self.proc = subprocess.Popen([sys.executable, "-m", "evsed.cli.daemon", "--config", str(cfg),
                                      "--log-level", "warning"], env=env, stderr=self.log)

    def wait_ready_notify(self, timeout: float = 20.0) -> float:
        assert self.notify_sock is not None
        self.notify_sock.settimeout(timeout)
        while True:
            data = self.notify_sock.recv(4096).decode()
            if "READY=1" in data.split("\n"):
                return time.perf_counter() - self.started

    def ctl(self, **req: Any) -> Any:
        return request(self.sock, req)

    def wait(self, predicate: Any, timeout: float = 20.0) -> dict[str, Any]:
        end = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < end:
            try:
                last = self.ctl(cmd="status")
                if predicate(last):
                    return last  # type: ignore[no-any-return]
            except ControlError:
                pass
            time.sleep(0.02)
        raise TimeoutError(f"condition not met; last status {last}")

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def rss_kib(self) -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        return 0

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        if self.notify_sock is not None:
            self.notify_sock.close()
        self.log.close()


class CsmsThread:
    """A DevCSMS on its own event loop in a thread, so the bench can block freely."""

    def __init__(self) -> None:
        import threading

        self.loop = asyncio.new_event_loop()
        self.csms = DevCSMS(port=0)
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


def tmpdir() -> Path:
    return Path(tempfile.mkdtemp(prefix="evsed-bench-"))


def percentile(values: list[float], p: float) -> float:
    s = sorted(values)
    k = max(0, min(len(s) - 1, round(p / 100 * (len(s) - 1))))
    return s[k]


def median(values: list[float]) -> float:
    return statistics.median(values)
