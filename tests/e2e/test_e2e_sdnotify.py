"""sd_notify as systemd sees it: READY=1 after the safe state, STATUS=, WATCHDOG=1 at half of
WATCHDOG_USEC, STOPPING=1 on SIGTERM. A datagram socket stands in for systemd's NOTIFY_SOCKET."""

from __future__ import annotations

import itertools
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_sd_notify_ready_status_watchdog_stopping(tmp_path: Path) -> None:
    notify_path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(notify_path)
    cfg = tmp_path / "evsed.toml"
    # No CSMS listens on this port: READY must not wait for the network.
    cfg.write_text(f"""
[charge_point]
id = "CPNOTIFY"
vendor = "evsed"
model = "test"
[ocpp]
url = "ws://127.0.0.1:{_free_port()}/ocpp"
[storage]
dir = "{tmp_path}/state"
[control]
socket = "{tmp_path}/evsed.sock"
""")
    env = dict(os.environ, NOTIFY_SOCKET=notify_path, WATCHDOG_USEC="400000")
    env.pop("WATCHDOG_PID", None)
    proc = subprocess.Popen([sys.executable, "-m", "evsed.cli.daemon", "--config", str(cfg)], env=env,
                            stderr=subprocess.DEVNULL)
    received: list[tuple[float, str]] = []
    try:
        sock.settimeout(10)
        end = time.monotonic() + 10
        while time.monotonic() < end:
            for line in sock.recv(4096).decode().splitlines():
                received.append((time.monotonic(), line))
            if sum(1 for _, m in received if m == "WATCHDOG=1") >= 4:
                break
        proc.send_signal(signal.SIGTERM)
        end = time.monotonic() + 6
        while time.monotonic() < end and not any(m == "STOPPING=1" for _, m in received):
            for line in sock.recv(4096).decode().splitlines():
                received.append((time.monotonic(), line))
        assert proc.wait(timeout=6) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        sock.close()
    messages = [m for _, m in received]
    assert "READY=1" in messages
    assert any(m.startswith("STATUS=") and "CSMS offline" in m for m in messages), messages
    pings = [t for t, m in received if m == "WATCHDOG=1"]
    assert len(pings) >= 4, messages
    gaps = sorted(b - a for a, b in itertools.pairwise(pings))
    # The period is half of WATCHDOG_USEC (0.2 s); the median tolerates one late ping on a loaded machine.
    assert 0.1 < gaps[len(gaps) // 2] < 0.35, gaps
    assert "STOPPING=1" in messages
    assert messages.index("READY=1") < messages.index("STOPPING=1")
