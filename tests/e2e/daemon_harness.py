"""Driving the real evsed daemon in end-to-end tests: config files, the process, evsectl."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
CP_ID = "CP001"


# ---------------------------------------------------------------------------- TOML


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)  # a JSON string is a valid TOML basic string
    if isinstance(v, list | tuple):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError(f"cannot write {v!r} as TOML")


def dump_toml(data: dict[str, Any]) -> str:
    """Minimal TOML writer for the daemon config (tables of scalars, one level of nesting)."""
    out: list[str] = []

    def table(name: str, tbl: dict[str, Any]) -> None:
        scalars = {k: v for k, v in tbl.items() if not isinstance(v, dict)}
        subs = {k: v for k, v in tbl.items() if isinstance(v, dict)}
        out.append(f"[{name}]")
        for k, v in scalars.items():
            out.append(f"{k} = {_toml_value(v)}")
        out.append("")
        for k, v in subs.items():
            table(f"{name}.{k}", v)

    for name, tbl in data.items():
        table(name, tbl)
    return "\n".join(out)


def _deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    for k, v in over.items():
        if v is None:
            base.pop(k, None)
        elif isinstance(v, dict) and isinstance(base.get(k), dict):
            _deep_merge(base[k], v)
        else:
            base[k] = v
    return base


def default_config(tmp_path: Path, csms_port: int = 9, socket_path: Path | None = None) -> dict[str, Any]:
    return {
        "charge_point": {
            "id": CP_ID,
            "vendor": "EvsedTest",
            "model": "E2E-Sim",
            "serial_number": "SN-E2E-0001",
        },
        "ocpp": {
            "url": f"ws://127.0.0.1:{csms_port}/ocpp",
            "config": {
                "HeartbeatInterval": 60,
                "MeterValueSampleInterval": 1,
                "ConnectionTimeOut": 30,
            },
        },
        "hardware": {"backend": "sim", "connectors": 2},
        "storage": {"dir": str(tmp_path / "storage")},
        "control": {"socket": str(socket_path or (tmp_path / "evsed.sock"))},
    }


def make_config(tmp_path: Path, csms_port: int = 9, name: str = "evsed.toml", **overrides: Any) -> Path:
    """Write the daemon's TOML config into tmp_path and return its path.

    overrides are deep-merged per section, e.g.
    make_config(tmp_path, csms_port=p, hardware={"connectors": 1}, ocpp={"config": {"HeartbeatInterval": 2}}).
    A value of None removes the key. Shortcut: ocpp_config={...} merges into [ocpp.config].
    """
    ocpp_config = overrides.pop("ocpp_config", None)
    socket_path = overrides.pop("socket_path", None)
    cfg = default_config(tmp_path, csms_port, socket_path)
    if ocpp_config:
        _deep_merge(cfg["ocpp"]["config"], ocpp_config)
    _deep_merge(cfg, overrides)
    path = tmp_path / name
    path.write_text(dump_toml(cfg), encoding="utf-8")
    return path


# ---------------------------------------------------------------------------- daemon


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONPATH"] = str(REPO_ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def run_evsectl(socket_path: Path | str | None, *args: str, timeout: float = 15) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "evsed.cli.evsectl"]
    if socket_path is not None:
        cmd += ["--socket", str(socket_path)]
    cmd += list(args)
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=_env(), cwd=REPO_ROOT)


async def arun(cmd: list[str], timeout: float = 15) -> subprocess.CompletedProcess[str]:
    """Run a command without blocking the event loop (the CSMS reader keeps running)."""
    proc = await asyncio.create_subprocess_exec(
        *cmd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=_env(), cwd=REPO_ROOT
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        out, err = await proc.communicate()
        raise AssertionError(f"{cmd} did not finish within {timeout}s; stdout={out!r} stderr={err!r}") from None
    assert proc.returncode is not None
    return subprocess.CompletedProcess(cmd, proc.returncode, out.decode(), err.decode())


class Daemon:
    """The real evsed daemon process (`python -m evsed.cli.daemon --config PATH --log-level debug`)."""

    def __init__(self, config_path: Path, log_dir: Path, socket_path: Path) -> None:
        self.config_path = config_path
        self.log_dir = log_dir
        self.socket_path = socket_path
        self.proc: subprocess.Popen[bytes] | None = None
        self.runs = 0
        self.log_paths: list[Path] = []
        self.exit_codes: list[int] = []

    # -- process control
    def start(self) -> Daemon:
        assert self.proc is None or self.proc.poll() is not None, "daemon already running"
        self.runs += 1
        log_path = self.log_dir / f"evsed-run{self.runs}.log"
        self.log_paths.append(log_path)
        with open(log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "evsed.cli.daemon",
                    "--config",
                    str(self.config_path),
                    "--log-level",
                    "debug",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=_env(),
                cwd=REPO_ROOT,
            )
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    async def wait_exit(self, timeout: float) -> int | None:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            rc = self.proc.poll()
            if rc is not None:
                return rc
            await asyncio.sleep(0.05)
        return self.proc.poll()

    async def terminate(self, timeout: float = 10) -> int | None:
        """SIGTERM; return the exit code (None if it did not exit within timeout)."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        rc = await self.wait_exit(timeout)
        if rc is not None:
            self.exit_codes.append(rc)
        return rc

    async def kill9(self) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        rc = await self.wait_exit(10)
        assert rc is not None
        self.exit_codes.append(rc)
        return rc

    async def restart(self, wait_ready: bool = True) -> Daemon:
        if self.running():
            await self.terminate()
        self.start()
        if wait_ready:
            await self.wait_ready()
        return self

    def cleanup(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    # -- control socket
    async def evsectl(self, *args: str, timeout: float = 15) -> subprocess.CompletedProcess[str]:
        cmd = [sys.executable, "-m", "evsed.cli.evsectl", "--socket", str(self.socket_path), *args]
        return await arun(cmd, timeout)

    async def ctl(self, *args: str) -> str:
        """evsectl that must succeed; returns stdout."""
        res = await self.evsectl(*args)
        assert res.returncode == 0, f"evsectl {' '.join(args)} -> {res.returncode}\n{res.stdout}{res.stderr}"
        return res.stdout

    async def status(self) -> dict[str, Any]:
        res = await self.evsectl("status", "--json")
        assert res.returncode == 0, f"evsectl status --json -> {res.returncode}: {res.stdout}{res.stderr}"
        data: dict[str, Any] = json.loads(res.stdout)
        return data

    async def wait_ready(self, timeout: float = 20) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            if not self.running():
                raise AssertionError(f"daemon exited with {self.proc and self.proc.poll()}:\n{self.log_tail()}")
            res = await self.evsectl("status", "--json")
            if res.returncode == 0:
                with contextlib.suppress(ValueError):
                    return json.loads(res.stdout)  # type: ignore[no-any-return]
            last = res.stdout + res.stderr
            await asyncio.sleep(0.2)
        raise AssertionError(f"daemon not ready after {timeout}s (last evsectl: {last!r})\n{self.log_tail()}")

    async def wait_status(
        self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 20, what: str = "status"
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        last: dict[str, Any] | str = {}
        while time.monotonic() < deadline:
            res = await self.evsectl("status", "--json")
            if res.returncode == 0:
                try:
                    st = json.loads(res.stdout)
                except ValueError:
                    last = res.stdout
                else:
                    last = st
                    if predicate(st):
                        return st  # type: ignore[no-any-return]
            else:
                last = res.stdout + res.stderr
            await asyncio.sleep(0.2)
        raise AssertionError(f"timed out after {timeout}s waiting for {what}; last status: {last}")

    async def wait_connector(
        self, n: int, predicate: Callable[[dict[str, Any]], bool], timeout: float = 20, what: str = ""
    ) -> dict[str, Any]:
        st = await self.wait_status(lambda s: predicate(connector(s, n)), timeout, what or f"connector {n} condition")
        return connector(st, n)

    def log_tail(self, lines: int = 80) -> str:
        chunks = []
        for p in self.log_paths:
            with contextlib.suppress(OSError):
                text = p.read_text(errors="replace").splitlines()
                chunks.append(f"--- {p.name} (last {lines} lines) ---")
                chunks.extend(text[-lines:])
        return "\n".join(chunks)

    def log_text(self) -> str:
        parts = []
        for p in self.log_paths:
            with contextlib.suppress(OSError):
                parts.append(p.read_text(errors="replace"))
        return "\n".join(parts)


def connector(status: dict[str, Any], n: int) -> dict[str, Any]:
    for c in status.get("connectors", []):
        if c.get("id") == n:
            return c  # type: ignore[no-any-return]
    raise AssertionError(f"connector {n} not in status {status}")
