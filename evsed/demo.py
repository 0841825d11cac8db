"""End-to-end demo: a dev CSMS, the real evsed daemon on the simulated board, one charging session.

Run with ``python -m evsed.demo``. Everything is driven the way a user would drive it: the daemon
is a separate process started from a config file, and the EV/RFID actions go through ``evsectl``.
It exits 0 on success and 1 (naming the step that failed, with the daemon's log tail) otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import evsed
from evsed.devcsms.server import DevCSMS, Event, format_event

T = TypeVar("T")

CP_ID = "DEMO-CP1"
ID_TAG = "DEMO-CARD-01"
CONNECTOR = 1
MAX_CURRENT_A = 32
PHASES = 3
PROFILE_LIMIT_A = 16.0
LOG_TAIL_LINES = 30


class DemoFailure(Exception):
    def __init__(self, step: str, detail: str) -> None:
        super().__init__(f"{step}: {detail}")
        self.step = step
        self.detail = detail


class EvsectlError(Exception):
    pass


def _stamp() -> str:
    return datetime.now().strftime("%H:%M:%S.%f")[:-3]


def say(text: str) -> None:
    # Same timestamp format as the CSMS timeline so both read as one log.
    print(f"{_stamp()} [demo] {text}", flush=True)


def _toml_str(value: str) -> str:
    # JSON string escapes are a subset of TOML basic-string escapes.
    return json.dumps(value)


def write_config(tmpdir: Path, csms_url: str) -> Path:
    """Write the daemon config for the demo; the format is the daemon's documented contract."""
    path = tmpdir / "evsed.toml"
    path.write_text(
        f"""\
[charge_point]
id = {_toml_str(CP_ID)}
vendor = "evsed"
model = "evsed-sim"

[ocpp]
url = {_toml_str(csms_url)}

[ocpp.config]
MeterValueSampleInterval = 5
HeartbeatInterval = 30

[hardware]
backend = "sim"
connectors = 1

[storage]
dir = {_toml_str(str(tmpdir / "state"))}

[control]
socket = {_toml_str(str(tmpdir / "evsed.sock"))}
""",
        encoding="utf-8",
    )
    return path


def _connector(status: dict[str, Any], connector_id: int) -> dict[str, Any]:
    for conn in status.get("connectors") or []:
        if isinstance(conn, dict) and conn.get("id") == connector_id:
            return conn
    return {}


def _fmt(value: Any, unit: str, scale: float = 1.0, digits: int = 1) -> str:
    if not isinstance(value, int | float):
        return f"? {unit}"
    return f"{value / scale:.{digits}f} {unit}"


class Demo:
    # Class attributes so a test harness can point the demo at stand-in programs.
    daemon_module = "evsed.cli.daemon"
    evsectl_module = "evsed.cli.evsectl"

    def __init__(self, verbose: bool, charge_seconds: float) -> None:
        self.verbose = verbose
        self.charge_seconds = charge_seconds
        self.tmpdir = Path(tempfile.mkdtemp(prefix="evsed-demo-"))
        self.socket = self.tmpdir / "evsed.sock"
        self.log_path = self.tmpdir / "evsed.log"
        self.log_tail: collections.deque[str] = collections.deque(maxlen=LOG_TAIL_LINES)
        self.csms = DevCSMS(port=0, accept_tags={ID_TAG}, on_event=self._print_event)
        self.daemon: asyncio.subprocess.Process | None = None
        self._daemon_exit: asyncio.Task[int] | None = None
        self._log_reader: asyncio.Task[None] | None = None
        self._last_seen = ""

    @staticmethod
    def _print_event(ev: Event) -> None:
        print(format_event(ev), flush=True)

    # -- daemon process ----------------------------------------------------------------------

    async def _spawn_daemon(self, config: Path) -> None:
        env = dict(os.environ)
        # Make the child import the very same evsed as this demo, installed or not.
        src_root = str(Path(evsed.__file__).resolve().parent.parent)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (src_root, env.get("PYTHONPATH")) if p)
        env["PYTHONUNBUFFERED"] = "1"
        self.daemon = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            self.daemon_module,
            "--config",
            str(config),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env=env,
        )
        self._daemon_exit = asyncio.ensure_future(self.daemon.wait())
        self._log_reader = asyncio.ensure_future(self._read_log(self.daemon))

    async def _read_log(self, proc: asyncio.subprocess.Process) -> None:
        # Tee through a pipe (not a plain file) so --demo-verbose can show it live,
        # while the file and tail still exist for the failure report.
        assert proc.stdout is not None
        with self.log_path.open("w", encoding="utf-8") as log:
            async for raw in proc.stdout:
                line = raw.decode("utf-8", "replace").rstrip("\n")
                log.write(line + "\n")
                log.flush()
                self.log_tail.append(line)
                if self.verbose:
                    print(f"{_stamp()} [evsed] {line}", flush=True)

    async def _kill_daemon(self) -> None:
        if self.daemon is None or self.daemon.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            self.daemon.kill()
        await self.daemon.wait()

    # -- evsectl -----------------------------------------------------------------------------

    async def evsectl(self, *args: str, timeout: float = 10.0) -> str:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            self.evsectl_module,
            "--socket",
            str(self.socket),
            *args,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            out, err = await asyncio.wait_for(proc.communicate(), timeout)
        except (TimeoutError, asyncio.CancelledError):
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
            raise
        if proc.returncode != 0:
            msg = (err or out).decode("utf-8", "replace").strip()
            raise EvsectlError(f"`evsectl {' '.join(args)}` exited with {proc.returncode}: {msg}")
        return out.decode("utf-8", "replace")

    async def status(self) -> dict[str, Any]:
        out = await self.evsectl("status", "--json")
        try:
            data = json.loads(out)
        except ValueError as exc:
            raise EvsectlError(f"`evsectl status --json` printed non-JSON: {out[:200]!r}") from exc
        if not isinstance(data, dict):
            raise EvsectlError(f"`evsectl status --json` printed {type(data).__name__}, not an object")
        return data

    async def poll_status(self, done: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        """Poll ``evsectl status`` until ``done``; errors are expected while the daemon starts."""
        while True:
            try:
                st = await self.status()
            except EvsectlError as exc:
                self._last_seen = f"last evsectl error: {exc}"
            else:
                self._last_seen = f"last status: {json.dumps(st)}"
                if done(st):
                    return st
            await asyncio.sleep(0.5)

    # -- step runner -------------------------------------------------------------------------

    async def step(self, name: str, timeout: float, work: Awaitable[T]) -> T:
        """Run ``work`` with a deadline, failing fast (with the step's name) if the daemon dies."""
        self._last_seen = ""
        task = asyncio.ensure_future(work)
        assert self._daemon_exit is not None
        done, _ = await asyncio.wait(
            {task, self._daemon_exit}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
        )
        if task in done:
            try:
                return task.result()
            except EvsectlError as exc:
                raise DemoFailure(name, str(exc)) from exc
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
        if self._daemon_exit in done:
            raise DemoFailure(name, f"the daemon exited unexpectedly with code {self._daemon_exit.result()}")
        detail = f"timed out after {timeout:g} s"
        if self._last_seen:
            detail += f" ({self._last_seen})"
        raise DemoFailure(name, detail)

    # -- the script --------------------------------------------------------------------------

    async def run(self) -> int:
        ok = False
        try:
            await self._script()
            ok = True
            return 0
        except DemoFailure as failure:
            say(f"FAILED at step '{failure.step}': {failure.detail}")
            await self._kill_daemon()
            if self._log_reader is not None:
                # Let the reader drain what the daemon wrote before it died.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(self._log_reader), 2)
            print(f"----- last {LOG_TAIL_LINES} lines of the daemon log ({self.log_path}) -----", flush=True)
            for line in self.log_tail or ["(empty)"]:
                print(line, flush=True)
            print("-----", flush=True)
            say(f"files kept for inspection in {self.tmpdir}")
            return 1
        finally:
            await self._kill_daemon()
            if self._log_reader is not None:
                self._log_reader.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._log_reader
            await self.csms.stop()
            if ok:
                shutil.rmtree(self.tmpdir, ignore_errors=True)

    async def _script(self) -> None:
        csms = self.csms
        await csms.start()
        say(f"dev CSMS listening on {csms.url} (accepting idTag {ID_TAG} only)")

        config = write_config(self.tmpdir, csms.url)
        log_note = "shown live" if self.verbose else f"log in {self.log_path}"
        say(f"starting evsed daemon as {CP_ID} on the simulated board ({log_note})")
        await self._spawn_daemon(config)

        def registered(st: dict[str, Any]) -> bool:
            ocpp = st.get("ocpp")
            return isinstance(ocpp, dict) and ocpp.get("registration") == "Accepted"

        await self.step("daemon start and OCPP registration", 20, self.poll_status(registered))
        say("daemon is up and registered with the CSMS")

        def connector_is(wanted: str) -> Callable[[dict[str, Any]], bool]:
            return lambda st: _connector(st, CONNECTOR).get("status") == wanted

        say(f"plugging in EV on connector {CONNECTOR} ({MAX_CURRENT_A} A, {PHASES} phases)")
        plug = ("sim", "plug", str(CONNECTOR), "--max-current", str(MAX_CURRENT_A), "--phases", str(PHASES))
        await self.step("plug in EV", 10, self.evsectl(*plug))
        await self.step(f"connector {CONNECTOR} Preparing", 10, self.poll_status(connector_is("Preparing")))
        say(f"connector {CONNECTOR} is Preparing, waiting for authorization")

        mark = csms.mark()
        say(f"swiping RFID card {ID_TAG}")
        await self.step("swipe RFID card", 10, self.evsectl("sim", "swipe", ID_TAG))
        start = await self.step(
            "StartTransaction at the CSMS", 15, csms.wait_for("StartTransaction", cp_id=CP_ID, since=mark)
        )
        result = await self.step(
            "StartTransaction response",
            5,
            csms.wait_for(
                "StartTransaction",
                kind="RESULT",
                since=mark,
                predicate=lambda e: e.unique_id == start.unique_id,
            ),
        )
        tx_id = int(result.payload["transactionId"])
        await self.step(f"connector {CONNECTOR} Charging", 15, self.poll_status(connector_is("Charging")))
        say(f"charging in transaction {tx_id}; sampling status every 2 s for {self.charge_seconds:g} s")

        loop = asyncio.get_running_loop()
        began = loop.time()
        tick = 0
        while (elapsed := loop.time() - began) < self.charge_seconds:
            st = await self.step("status while charging", 10, self.status())
            conn = _connector(st, CONNECTOR)
            say(
                f"t+{elapsed:4.1f}s connector {CONNECTOR} {conn.get('status', '?')}: "
                f"{_fmt(conn.get('power_w'), 'kW', 1000, 2)}, {_fmt(conn.get('energy_wh'), 'Wh')} delivered, "
                f"offered {_fmt(conn.get('offered_current_a'), 'A')}"
            )
            tick += 1
            if tick == 3:
                await self._limit_by_profile(tx_id)
            # Sleep to absolute ticks so slow evsectl calls don't stretch the session.
            await asyncio.sleep(max(0.0, began + 2 * tick - loop.time()))

        mark = csms.mark()
        say(f"unplugging EV from connector {CONNECTOR}")
        await self.step("unplug EV", 10, self.evsectl("sim", "unplug", str(CONNECTOR)))
        await self.step(
            "StopTransaction at the CSMS",
            15,
            csms.wait_for(
                "StopTransaction",
                cp_id=CP_ID,
                since=mark,
                predicate=lambda e: e.payload.get("transactionId") == tx_id,
            ),
        )

        say("stopping the daemon (SIGTERM)")
        assert self.daemon is not None and self._daemon_exit is not None
        self.daemon.send_signal(signal.SIGTERM)
        try:
            code = await asyncio.wait_for(asyncio.shield(self._daemon_exit), 5)
        except TimeoutError:
            raise DemoFailure("daemon shutdown", "still running 5 s after SIGTERM") from None
        if code != 0:
            raise DemoFailure("daemon shutdown", f"exited with code {code} after SIGTERM (expected 0)")
        say("daemon exited cleanly (code 0)")

        tx = csms.transactions[tx_id]
        energy = tx.energy_wh
        energy_text = "unknown" if energy is None else f"{energy:.0f} Wh ({energy / 1000:.3f} kWh)"
        duration = ((tx.stopped or tx.started) - tx.started).total_seconds()
        say("summary, as recorded by the CSMS:")
        say(f"  transactionId  {tx.transaction_id} (idTag {tx.id_tag}, {tx.status})")
        say(f"  meter          {tx.meter_start} Wh -> {tx.meter_stop} Wh")
        say(f"  energy         {energy_text} in {duration:.0f} s")
        say(f"  stop reason    {tx.reason}")
        say("demo finished OK")

    async def _limit_by_profile(self, tx_id: int) -> None:
        """Smart charging: the CSMS caps the running transaction; the charger applies it to the pilot."""
        profile = {"chargingProfileId": 1, "stackLevel": 0, "chargingProfilePurpose": "TxProfile",
                   "chargingProfileKind": "Relative", "transactionId": tx_id,
                   "chargingSchedule": {"chargingRateUnit": "A",
                                        "chargingSchedulePeriod": [{"startPeriod": 0, "limit": PROFILE_LIMIT_A}]}}
        say(f"CSMS limits transaction {tx_id} to {PROFILE_LIMIT_A:g} A (SetChargingProfile, TxProfile)")
        answer = await self.step("SetChargingProfile", 10, self.csms.call(
            CP_ID, "SetChargingProfile", {"connectorId": CONNECTOR, "csChargingProfiles": profile}))
        if answer.get("status") != "Accepted":
            raise DemoFailure("SetChargingProfile", f"answered {answer}")
        st = await self.step("profile applied", 5, self.poll_status(
            lambda st: _connector(st, CONNECTOR).get("offered_current_a") == PROFILE_LIMIT_A))
        say(f"the charger lowered the pilot's offer to {_fmt(_connector(st, CONNECTOR).get('offered_current_a'), 'A')}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m evsed.demo",
        description="Run a dev CSMS and the evsed daemon (simulated board) through one charging session.",
    )
    parser.add_argument("--demo-verbose", action="store_true", help="show the daemon's own log live")
    parser.add_argument(
        "--charge-seconds", type=float, default=20.0, help="how long to charge (default: %(default)s)"
    )
    args = parser.parse_args(argv)
    demo = Demo(verbose=args.demo_verbose, charge_seconds=args.charge_seconds)
    try:
        return asyncio.run(demo.run())
    except KeyboardInterrupt:
        # asyncio.run already cancelled run(), whose cleanup killed the daemon.
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
