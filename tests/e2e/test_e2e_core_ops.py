"""Core Profile operations initiated by the CSMS, end to end (real daemon, strict CSMS):
ChangeAvailability (5.2), ClearCache (5.4), DataTransfer (5.6), Reset (5.14, errata 3.36/3.81) and
UnlockConnector (5.17, errata 3.85)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from daemon_harness import CP_ID, Daemon
from ocpp_helpers import (
    answer_of,
    no_strict_errors,
    plug,
    start_daemon,
    start_local_session,
    status_is,
    swipe,
    unplug,
)
from strict_csms import StrictCSMS

MakeConfig = Callable[..., Path]
Factory = Callable[[Path], Daemon]

# No periodic MeterValues: the line stays free, so the order of CALLs is deterministic.
QUIET = {"MeterValueSampleInterval": 0}


# ---------------------------------------------------------------------------- helpers


async def change_availability(csms: StrictCSMS, connector: int, kind: str) -> str:
    res = await csms.call(CP_ID, "ChangeAvailability", {"connectorId": connector, "type": kind})
    return str(res["status"])


async def boot_statuses(
    csms: StrictCSMS, since: int, connectors: int, timeout: float = 40
) -> tuple[dict[str, Any], dict[int, dict[str, Any]]]:
    """The BootNotification CALL at index >= since and the first StatusNotification of every connector
    (0..connectors) sent after it."""
    boot = await csms.wait_call("BootNotification", since=since, timeout=timeout)
    after = csms.calls.index(boot) + 1
    first: dict[int, dict[str, Any]] = {}
    for n in range(connectors + 1):
        sn = await csms.wait_call(
            "StatusNotification", lambda p, n=n: p["connectorId"] == n, since=after, timeout=timeout
        )
        first[n] = sn["payload"]
    return boot, first


def statuses_of(csms: StrictCSMS, connector: int, since: int = 0) -> list[str]:
    return [
        c["payload"]["status"]
        for c in csms.calls_of("StatusNotification", since)
        if c["payload"]["connectorId"] == connector
    ]


def frame_index(csms: StrictCSMS, since_event: int, match: Callable[[list[Any]], bool], what: str) -> int:
    """Index in csms.events of the first frame received from the charge point (at >= since_event) that matches."""
    for i in range(since_event, len(csms.events)):
        ev = csms.events[i]
        if ev.get("event") != "message":
            continue
        try:
            frame = json.loads(ev["message"])
        except ValueError:
            continue
        if isinstance(frame, list) and match(frame):
            return i
    raise AssertionError(f"no frame from the charge point matching {what}; {csms.describe()}")


def event_index(csms: StrictCSMS, ev: dict[str, Any]) -> int:
    for i, e in enumerate(csms.events):
        if e is ev:
            return i
    raise AssertionError(f"event not recorded: {ev}")


def is_call(action: str) -> Callable[[list[Any]], bool]:
    return lambda f: f[0] == 2 and f[2] == action


def is_result(payload: dict[str, Any]) -> Callable[[list[Any]], bool]:
    return lambda f: f[0] == 3 and f[2] == payload


async def no_call_for(csms: StrictCSMS, action: str, since: int, seconds: float) -> None:
    await asyncio.sleep(seconds)
    got = [c["payload"] for c in csms.calls_of(action, since)]
    assert got == [], f"unexpected {action}: {got}"


async def wait_reexec(d: Daemon, csms: StrictCSMS, pid: int, em: int, mark: int) -> dict[str, Any]:
    """After an accepted Reset: the WebSocket closes, the same process (same PID) comes back and boots again."""
    disc = await csms.wait_event("disconnected", lambda e: e["identity"] == CP_ID, since=em, timeout=40)
    await csms.wait_event("connected", lambda e: e["identity"] == CP_ID, since=event_index(csms, disc) + 1, timeout=40)
    boot = await csms.wait_call("BootNotification", since=mark, timeout=40)
    assert d.running(), f"the daemon exited ({d.proc and d.proc.poll()}) instead of restarting\n{d.log_tail()}"
    assert d.pid == pid
    st = await d.wait_ready(timeout=40)
    assert st["charge_point_id"] == CP_ID
    # re-executed in place: the same process runs evsed again and logged a second start
    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    assert b"evsed.cli.daemon" in cmdline, cmdline
    log = d.log_text()
    assert "reset: restarting evsed" in log, d.log_tail()
    assert "evsed ready" in log[log.rindex("reset: restarting evsed") :], "no new start after the re-exec"
    await d.wait_status(
        lambda s: s["ocpp"]["connected"] and s["ocpp"]["registration"] == "Accepted",
        timeout=40,
        what="registration Accepted after the reset",
    )
    return boot


# ---------------------------------------------------------------------------- ChangeAvailability


async def test_change_availability_connector_and_charge_point(
    strict_csms: StrictCSMS, make_config: MakeConfig, daemon_factory: Factory
) -> None:
    csms = strict_csms
    d = await start_daemon(csms, make_config, daemon_factory, connectors=2, ocpp_config=QUIET)

    mark = csms.mark()
    assert await change_availability(csms, 1, "Inoperative") == "Accepted"
    await csms.wait_call("StatusNotification", status_is(1, "Unavailable"), since=mark)
    c1 = await d.wait_connector(1, lambda c: c["status"] == "Unavailable")
    assert c1["transaction_id"] is None
    # already Inoperative: Accepted again (5.2)
    assert await change_availability(csms, 1, "Inoperative") == "Accepted"
    assert statuses_of(csms, 2, mark) == [] and statuses_of(csms, 0, mark) == [], "only connector 1 changes"

    mark = csms.mark()
    assert await change_availability(csms, 1, "Operative") == "Accepted"
    await csms.wait_call("StatusNotification", status_is(1, "Available"), since=mark)
    await d.wait_connector(1, lambda c: c["status"] == "Available")

    # connector 0: the charge point and every connector
    mark = csms.mark()
    assert await change_availability(csms, 0, "Inoperative") == "Accepted"
    for n in (0, 1, 2):
        await csms.wait_call("StatusNotification", status_is(n, "Unavailable"), since=mark)
    st = await d.wait_status(lambda s: all(c["status"] == "Unavailable" for c in s["connectors"]))
    assert len(st["connectors"]) == 2

    mark = csms.mark()
    assert await change_availability(csms, 0, "Operative") == "Accepted"
    for n in (0, 1, 2):
        await csms.wait_call("StatusNotification", status_is(n, "Available"), since=mark)
    await d.wait_status(lambda s: all(c["status"] == "Available" for c in s["connectors"]))

    # unknown connector
    mark = csms.mark()
    assert await change_availability(csms, 3, "Inoperative") == "Rejected"
    assert await change_availability(csms, 99, "Operative") == "Rejected"
    await asyncio.sleep(0.5)
    assert csms.calls_of("StatusNotification", mark) == []
    assert strict_csms.strict_errors == [], no_strict_errors(strict_csms)


async def test_change_availability_scheduled_during_transaction(
    strict_csms: StrictCSMS, make_config: MakeConfig, daemon_factory: Factory
) -> None:
    csms = strict_csms
    d = await start_daemon(csms, make_config, daemon_factory, connectors=1, ocpp_config=QUIET)
    tx, _ = await start_local_session(d, csms, 1, "TAGAV001")

    mark = csms.mark()
    assert await change_availability(csms, 1, "Inoperative") == "Scheduled"
    await asyncio.sleep(1.0)
    assert statuses_of(csms, 1, mark) == [], "the status must not change while the transaction runs"
    c1 = await d.wait_connector(1, lambda c: True)
    assert c1["status"] == "Charging" and c1["transaction_id"] == tx and c1["power_w"] > 0, c1
    # Scheduled twice is still Scheduled
    assert await change_availability(csms, 1, "Inoperative") == "Scheduled"

    await unplug(d, 1)
    stop = await csms.wait_call("StopTransaction", since=mark)
    assert stop["payload"]["transactionId"] == tx and stop["payload"]["reason"] == "EVDisconnected"
    unavailable = await csms.wait_call("StatusNotification", status_is(1, "Unavailable"), since=mark)
    assert csms.calls.index(unavailable) > csms.calls.index(stop), "Unavailable reported before StopTransaction"
    after_stop = statuses_of(csms, 1, csms.calls.index(stop))
    assert after_stop and set(after_stop) == {"Unavailable"}, f"statuses after the transaction: {after_stop}"
    await d.wait_connector(1, lambda c: c["status"] == "Unavailable" and c["transaction_id"] is None)

    # nothing starts on an Unavailable connector: RemoteStart ...
    mark = csms.mark()
    res = await csms.call(CP_ID, "RemoteStartTransaction", {"connectorId": 1, "idTag": "REMOTE01"})
    assert res == {"status": "Rejected"}
    res = await csms.call(CP_ID, "RemoteStartTransaction", {"idTag": "REMOTE01"})
    assert res == {"status": "Rejected"}
    # ... nor an EV and a card
    await plug(d, 1)
    await swipe(d, "TAGAV002")
    await asyncio.sleep(2.0)
    assert csms.calls_of("StartTransaction", mark) == [], "a transaction started on an Unavailable connector"
    assert set(statuses_of(csms, 1, mark)) <= {"Unavailable"}, statuses_of(csms, 1, mark)
    c1 = await d.wait_connector(1, lambda c: True)
    assert c1["status"] == "Unavailable" and c1["transaction_id"] is None, c1

    # Operative again: the same EV can now be charged (so it was availability that blocked it)
    mark = csms.mark()
    assert await change_availability(csms, 1, "Operative") == "Accepted"
    await csms.wait_call("StatusNotification", status_is(1, "Preparing"), since=mark)
    res = await csms.call(CP_ID, "RemoteStartTransaction", {"connectorId": 1, "idTag": "REMOTE01"})
    assert res == {"status": "Accepted"}
    start = await csms.wait_call("StartTransaction", since=mark)
    assert start["payload"]["connectorId"] == 1 and start["payload"]["idTag"] == "REMOTE01"
    await csms.wait_call("StatusNotification", status_is(1, "Charging"), since=mark)
    assert strict_csms.strict_errors == [], no_strict_errors(strict_csms)


async def test_change_availability_scheduled_cancel_and_charge_point(
    strict_csms: StrictCSMS, make_config: MakeConfig, daemon_factory: Factory
) -> None:
    csms = strict_csms
    d = await start_daemon(csms, make_config, daemon_factory, connectors=2, ocpp_config=QUIET)

    # Scheduled, then cancelled by Operative before the transaction ends: the connector stays available
    tx, _ = await start_local_session(d, csms, 1, "TAGAV003")
    mark = csms.mark()
    assert await change_availability(csms, 1, "Inoperative") == "Scheduled"
    assert await change_availability(csms, 1, "Operative") == "Accepted"
    await unplug(d, 1)
    stop = await csms.wait_call("StopTransaction", since=mark)
    assert stop["payload"]["transactionId"] == tx
    await csms.wait_call("StatusNotification", status_is(1, "Available"), since=mark)
    assert "Unavailable" not in statuses_of(csms, 1, mark), statuses_of(csms, 1, mark)

    # connector 0 during a transaction on connector 1: Scheduled; connector 1 goes on charging
    tx, _ = await start_local_session(d, csms, 1, "TAGAV004")
    mark = csms.mark()
    assert await change_availability(csms, 0, "Inoperative") == "Scheduled"
    await csms.wait_call("StatusNotification", status_is(2, "Unavailable"), since=mark)
    await asyncio.sleep(0.5)
    assert statuses_of(csms, 1, mark) == [], "connector 1 must keep charging until its transaction ends"
    c1 = await d.wait_connector(1, lambda c: True)
    assert c1["status"] == "Charging" and c1["transaction_id"] == tx, c1
    # a remote start on the idle connector is refused already
    res = await csms.call(CP_ID, "RemoteStartTransaction", {"connectorId": 2, "idTag": "REMOTE02"})
    assert res == {"status": "Rejected"}

    await unplug(d, 1)
    stop = await csms.wait_call("StopTransaction", since=mark)
    assert stop["payload"]["transactionId"] == tx
    unavailable = await csms.wait_call("StatusNotification", status_is(1, "Unavailable"), since=mark)
    assert csms.calls.index(unavailable) > csms.calls.index(stop)
    await csms.wait_call("StatusNotification", status_is(0, "Unavailable"), since=mark)
    await d.wait_status(lambda s: all(c["status"] == "Unavailable" for c in s["connectors"]))
    assert len(csms.calls_of("StartTransaction")) == 2
    assert strict_csms.strict_errors == [], no_strict_errors(strict_csms)


async def test_change_availability_persists_kill9_and_sigterm(
    strict_csms: StrictCSMS, make_config: MakeConfig, daemon_factory: Factory
) -> None:
    csms = strict_csms
    d = await start_daemon(csms, make_config, daemon_factory, connectors=2, ocpp_config=QUIET)
    mark = csms.mark()
    assert await change_availability(csms, 2, "Inoperative") == "Accepted"
    await csms.wait_call("StatusNotification", status_is(2, "Unavailable"), since=mark)

    # kill -9: nothing gets a chance to be written at shutdown
    await d.kill9()
    mark = csms.mark()
    d.start()
    await d.wait_ready()
    _, first = await boot_statuses(csms, mark, 2)
    assert first[2]["status"] == "Unavailable", f"after kill -9 connector 2 reported {first[2]}"
    assert first[1]["status"] == "Available" and first[0]["status"] == "Available", first
    await d.wait_connector(2, lambda c: c["status"] == "Unavailable")

    # SIGTERM
    assert await d.terminate() == 0
    mark = csms.mark()
    d.start()
    await d.wait_ready()
    _, first = await boot_statuses(csms, mark, 2)
    assert first[2]["status"] == "Unavailable", f"after SIGTERM connector 2 reported {first[2]}"
    assert first[1]["status"] == "Available", first
    await asyncio.sleep(1.0)
    assert set(statuses_of(csms, 2, mark)) == {"Unavailable"}, statuses_of(csms, 2, mark)

    # and Operative persists as well
    mark = csms.mark()
    assert await change_availability(csms, 2, "Operative") == "Accepted"
    await csms.wait_call("StatusNotification", status_is(2, "Available"), since=mark)
    await d.kill9()
    mark = csms.mark()
    d.start()
    await d.wait_ready()
    _, first = await boot_statuses(csms, mark, 2)
    assert first[2]["status"] == "Available", first
    assert strict_csms.strict_errors == [], no_strict_errors(strict_csms)


async def test_charge_point_inoperative_persists_restart(
    strict_csms: StrictCSMS, make_config: MakeConfig, daemon_factory: Factory
) -> None:
    """ChangeAvailability connectorId 0 = the whole charge point; it must survive a restart for connector 0
    as well as for the connectors."""
    csms = strict_csms
    d = await start_daemon(csms, make_config, daemon_factory, connectors=2, ocpp_config=QUIET)
    mark = csms.mark()
    assert await change_availability(csms, 0, "Inoperative") == "Accepted"
    for n in (0, 1, 2):
        await csms.wait_call("StatusNotification", status_is(n, "Unavailable"), since=mark)

    assert await d.terminate() == 0
    mark = csms.mark()
    d.start()
    await d.wait_ready()
    _, first = await boot_statuses(csms, mark, 2)
    assert first[1]["status"] == "Unavailable" and first[2]["status"] == "Unavailable", first
    assert first[0]["status"] == "Unavailable", f"connector 0 (the charge point) reported {first[0]} after restart"
    assert strict_csms.strict_errors == [], no_strict_errors(strict_csms)


async def test_availability_connector_operative_under_inoperative_charge_point_persists(
    strict_csms: StrictCSMS, make_config: MakeConfig, daemon_factory: Factory
) -> None:
    csms = strict_csms
    d = await start_daemon(csms, make_config, daemon_factory, connectors=2, ocpp_config=QUIET)
    mark = csms.mark()
    assert await change_availability(csms, 0, "Inoperative") == "Accepted"
    await csms.wait_call("StatusNotification", status_is(2, "Unavailable"), since=mark)
    mark = csms.mark()
    assert await change_availability(csms, 1, "Operative") == "Accepted"
    await csms.wait_call("StatusNotification", status_is(1, "Available"), since=mark)
    before = {c["id"]: c["status"] for c in (await d.status())["connectors"]}
    assert before == {1: "Available", 2: "Unavailable"}, before

    assert await d.terminate() == 0
    mark = csms.mark()
    d.start()
    await d.wait_ready()
    _, first = await boot_statuses(csms, mark, 2)
    after = {n: first[n]["status"] for n in (1, 2)}
    assert after == before, f"availability before the restart {before}, after {after}"


# ---------------------------------------------------------------------------- Reset


@pytest.mark.parametrize(("kind", "reason"), [("Soft", "SoftReset"), ("Hard", "HardReset")])
async def test_reset_during_transaction(
    strict_csms: StrictCSMS, make_config: MakeConfig, daemon_factory: Factory, kind: str, reason: str
) -> None:
    csms = strict_csms
    d = await start_daemon(csms, make_config, daemon_factory, connectors=1, ocpp_config=QUIET)
    tx, sp = await start_local_session(d, csms, 1, "TAGRST01")
    pid = d.pid
    mark = csms.mark()
    em = csms.event_mark()

    assert await csms.call(CP_ID, "Reset", {"type": kind}) == {"status": "Accepted"}
    stop = await csms.wait_call("StopTransaction", since=mark, timeout=30)
    p = stop["payload"]
    assert p["transactionId"] == tx and p.get("reason") == reason, p
    assert p["meterStop"] >= sp["meterStart"]
    boot = await wait_reexec(d, csms, pid, em, mark)

    # frame order: Reset.conf, then StopTransaction.req, then the connection closes, then a new boot
    conf_i = frame_index(csms, em, is_result({"status": "Accepted"}), "Reset.conf")
    stop_i = frame_index(csms, em, is_call("StopTransaction"), "StopTransaction.req")
    disc_i = next(
        i
        for i in range(em, len(csms.events))
        if csms.events[i].get("event") == "disconnected" and csms.events[i]["identity"] == CP_ID
    )
    assert conf_i < stop_i < disc_i < event_index(csms, boot), (conf_i, stop_i, disc_i, event_index(csms, boot))
    # the transaction was closed before the reset: no other CALL than these before the disconnect
    before = [c["action"] for c in csms.calls[mark:] if event_index(csms, c) < disc_i]
    assert "StartTransaction" not in before, before

    # after the restart: no transaction, nothing resent, no new transaction although the EV is still plugged
    await d.wait_connector(1, lambda c: c["transaction_id"] is None)
    await asyncio.sleep(2.0)
    assert [c["payload"]["transactionId"] for c in csms.calls_of("StopTransaction")] == [tx]
    assert len(csms.calls_of("StartTransaction")) == 1
    c1 = await d.wait_connector(1, lambda c: True)
    assert c1["pilot_state"] != "A" and c1["power_w"] == 0, f"the EV stays plugged, without energy: {c1}"
    assert strict_csms.strict_errors == [], no_strict_errors(strict_csms)


async def test_idle_soft_reset_keeps_unavailable(
    strict_csms: StrictCSMS, make_config: MakeConfig, daemon_factory: Factory
) -> None:
    csms = strict_csms
    d = await start_daemon(csms, make_config, daemon_factory, connectors=2, ocpp_config=QUIET)
    mark = csms.mark()
    assert await change_availability(csms, 2, "Inoperative") == "Accepted"
    await csms.wait_call("StatusNotification", status_is(2, "Unavailable"), since=mark)

    pid = d.pid
    mark = csms.mark()
    em = csms.event_mark()
    assert await csms.call(CP_ID, "Reset", {"type": "Soft"}) == {"status": "Accepted"}
    await wait_reexec(d, csms, pid, em, mark)
    _, first = await boot_statuses(csms, mark, 2)
    assert first[2]["status"] == "Unavailable", f"connector 2 after the reset: {first[2]}"
    assert first[1]["status"] == "Available", first
    assert csms.calls_of("StopTransaction", mark) == [], "StopTransaction without a transaction"
    assert csms.calls_of("StartTransaction", mark) == []
    assert strict_csms.strict_errors == [], no_strict_errors(strict_csms)


async def test_hard_reset_runs_reset_command(
    strict_csms: StrictCSMS, make_config: MakeConfig, daemon_factory: Factory, tmp_path: Path
) -> None:
    """[system] reset_command: run for a Hard reset (then evsed exits 0 and lets the host reboot); a Soft
    reset never runs it and re-executes evsed."""
    csms = strict_csms
    marker = tmp_path / "hard-reset-ran"
    cmd = ["/bin/sh", "-c", f"echo hard >> {marker}"]
    d = await start_daemon(
        csms, make_config, daemon_factory, connectors=1, ocpp_config=QUIET, system={"reset_command": cmd}
    )

    pid = d.pid
    mark, em = csms.mark(), csms.event_mark()
    assert await csms.call(CP_ID, "Reset", {"type": "Soft"}) == {"status": "Accepted"}
    await wait_reexec(d, csms, pid, em, mark)
    assert not marker.exists(), "a Soft reset ran the hard reset command"

    tx, _ = await start_local_session(d, csms, 1, "TAGRST02")
    mark, em = csms.mark(), csms.event_mark()
    assert await csms.call(CP_ID, "Reset", {"type": "Hard"}) == {"status": "Accepted"}
    stop = await csms.wait_call("StopTransaction", since=mark, timeout=30)
    assert stop["payload"]["transactionId"] == tx and stop["payload"]["reason"] == "HardReset"
    rc = await d.wait_exit(30)
    assert rc == 0, f"exit code {rc} after a Hard reset with a successful reset_command\n{d.log_tail()}"
    assert marker.read_text() == "hard\n", "the reset command did not run exactly once"
    await csms.wait_event("disconnected", lambda e: e["identity"] == CP_ID, since=em, timeout=10)
    await asyncio.sleep(1.0)
    assert csms.calls_of("BootNotification", mark) == [], "evsed restarted although the reset command succeeded"
    assert strict_csms.strict_errors == [], no_strict_errors(strict_csms)


async def test_hard_reset_failing_command_reexecutes(
    strict_csms: StrictCSMS, make_config: MakeConfig, daemon_factory: Factory
) -> None:
    csms = strict_csms
    d = await start_daemon(
        csms, make_config, daemon_factory, connectors=1, ocpp_config=QUIET, system={"reset_command": ["/bin/false"]}
    )
    pid = d.pid
    mark, em = csms.mark(), csms.event_mark()
    assert await csms.call(CP_ID, "Reset", {"type": "Hard"}) == {"status": "Accepted"}
    await wait_reexec(d, csms, pid, em, mark)
    assert csms.calls_of("StopTransaction", mark) == [], "StopTransaction without a transaction"
    log = d.log_text()
    assert "hard reset: running /bin/false" in log and "restarting evsed instead" in log, d.log_tail()
    assert strict_csms.strict_errors == [], no_strict_errors(strict_csms)


# ---------------------------------------------------------------------------- UnlockConnector


async def unlock(csms: StrictCSMS, connector: int) -> str:
    res = await csms.call(CP_ID, "UnlockConnector", {"connectorId": connector}, timeout=15)
    return str(res["status"])


async def test_unlock_connector_idle_and_unknown(
    strict_csms: StrictCSMS, make_config: MakeConfig, daemon_factory: Factory
) -> None:
    csms = strict_csms
    d = await start_daemon(csms, make_config, daemon_factory, connectors=2, ocpp_config=QUIET)
    assert await unlock(csms, 1) == "Unlocked"
    assert await unlock(csms, 2) == "Unlocked"
    # errata 3.85: an unknown connector is NotSupported (not UnlockFailed)
    assert await unlock(csms, 99) == "NotSupported"
    assert await unlock(csms, 3) == "NotSupported"
    assert await unlock(csms, 0) == "NotSupported"
    # an idle unlock changes nothing else
    st = await d.status()
    assert [c["status"] for c in st["connectors"]] == ["Available", "Available"]
    assert csms.calls_of("StopTransaction") == []
    assert strict_csms.strict_errors == [], no_strict_errors(strict_csms)


async def test_unlock_connector_lock_failure_idle(
    strict_csms: StrictCSMS, make_config: MakeConfig, daemon_factory: Factory
) -> None:
    csms = strict_csms
    d = await start_daemon(csms, make_config, daemon_factory, connectors=2, ocpp_config=QUIET)
    mark = csms.mark()
    await d.ctl("sim", "fault", "1", "lock-failure")
    sn = await csms.wait_call("StatusNotification", status_is(1, "Faulted"), since=mark)
    assert sn["payload"]["errorCode"] == "ConnectorLockFailure", sn
    assert await unlock(csms, 2) == "Unlocked", "connector 2's lock is fine"
    # The lock jammed while open: it is unlocked, and that is what the lock's feedback says (errata 3.85 keeps
    # UnlockFailed for a lock detected still locked; a lock jammed while locked answers UnlockFailed, tested below).
    assert await unlock(csms, 1) == "Unlocked"


async def test_unlock_connector_fixed_cable_not_supported(
    strict_csms: StrictCSMS, make_config: MakeConfig, daemon_factory: Factory
) -> None:
    csms = strict_csms
    await start_daemon(
        csms, make_config, daemon_factory, connectors=1, ocpp_config=QUIET, hardware={"fixed_cable": True}
    )
    assert await unlock(csms, 1) == "NotSupported"
    assert await unlock(csms, 2) == "NotSupported"
    assert strict_csms.strict_errors == [], no_strict_errors(strict_csms)


async def test_unlock_connector_during_transaction(
    strict_csms: StrictCSMS, make_config: MakeConfig, daemon_factory: Factory
) -> None:
    csms = strict_csms
    d = await start_daemon(csms, make_config, daemon_factory, connectors=1, ocpp_config=QUIET)
    tx, sp = await start_local_session(d, csms, 1, "TAGUNL01")
    mark = csms.mark()

    assert await unlock(csms, 1) == "Unlocked"
    stop = await csms.wait_call("StopTransaction", since=mark)
    p = stop["payload"]
    assert p["transactionId"] == tx and p.get("reason") == "UnlockCommand", p
    assert p["meterStop"] >= sp["meterStart"]
    # the EV is still plugged, no energy flows, the transaction is over
    c1 = await d.wait_connector(1, lambda c: c["transaction_id"] is None and c["power_w"] == 0)
    assert c1["status"] == "Finishing" and c1["pilot_state"] == "B", c1
    await csms.wait_call("StatusNotification", status_is(1, "Finishing"), since=mark)
    # the cable is free: unplugging ends in Available, no second StopTransaction
    await unplug(d, 1)
    await csms.wait_call("StatusNotification", status_is(1, "Available"), since=mark)
    await asyncio.sleep(0.5)
    assert len(csms.calls_of("StopTransaction")) == 1
    assert strict_csms.strict_errors == [], no_strict_errors(strict_csms)


async def test_unlock_connector_during_transaction_stop_goes_first(
    strict_csms: StrictCSMS, make_config: MakeConfig, daemon_factory: Factory
) -> None:
    """5.17: with a transaction on the connector the charge point finishes it first (StopTransaction), then
    unlocks. The CSMS answers StatusNotification after 200 ms, like one behind a real network."""
    csms = strict_csms
    d = await start_daemon(csms, make_config, daemon_factory, connectors=1, ocpp_config=QUIET)
    tx, _ = await start_local_session(d, csms, 1, "TAGUNL03")
    await csms.set(answerDelayMs={"StatusNotification": 200})
    mark, em = csms.mark(), csms.event_mark()
    assert await unlock(csms, 1) == "Unlocked"
    stop = await csms.wait_call("StopTransaction", since=mark)
    assert stop["payload"]["transactionId"] == tx and stop["payload"]["reason"] == "UnlockCommand"
    stop_i = frame_index(csms, em, is_call("StopTransaction"), "StopTransaction.req")
    conf_i = frame_index(csms, em, is_result({"status": "Unlocked"}), "UnlockConnector.conf")
    assert stop_i < conf_i, "UnlockConnector.conf (Unlocked) sent before StopTransaction.req"


async def test_unlock_connector_jammed_lock_fails(
    strict_csms: StrictCSMS, make_config: MakeConfig, daemon_factory: Factory
) -> None:
    """The cable stays locked after a locally stopped session (EV still plugged); the lock then jams in the
    locked position: the unlock attempt is answered UnlockFailed. Repaired, it unlocks."""
    csms = strict_csms
    d = await start_daemon(csms, make_config, daemon_factory, connectors=1, ocpp_config=QUIET)
    tx, _ = await start_local_session(d, csms, 1, "TAGUNL02")
    mark = csms.mark()
    await swipe(d, "TAGUNL02")
    stop = await csms.wait_call("StopTransaction", since=mark)
    assert stop["payload"]["transactionId"] == tx and stop["payload"]["reason"] == "Local"
    await csms.wait_call("StatusNotification", status_is(1, "Finishing"), since=mark)
    mark = csms.mark()
    await d.ctl("sim", "fault", "1", "lock-failure")
    sn = await csms.wait_call("StatusNotification", status_is(1, "Faulted"), since=mark)
    assert sn["payload"]["errorCode"] == "ConnectorLockFailure"
    t0 = time.monotonic()
    assert await unlock(csms, 1) == "UnlockFailed"
    assert time.monotonic() - t0 < 10

    mark = csms.mark()
    await d.ctl("sim", "clear", "1")
    await csms.wait_call("StatusNotification", status_is(1, "Finishing"), since=mark)
    assert await unlock(csms, 1) == "Unlocked"
    assert strict_csms.strict_errors == [], no_strict_errors(strict_csms)


# ---------------------------------------------------------------------------- DataTransfer


async def test_data_transfer_from_csms(
    strict_csms: StrictCSMS, make_config: MakeConfig, daemon_factory: Factory
) -> None:
    csms = strict_csms
    await start_daemon(csms, make_config, daemon_factory, connectors=1, ocpp_config=QUIET)
    res = await csms.call(CP_ID, "DataTransfer", {"vendorId": "com.example.nobody", "messageId": "Status"})
    assert res == {"status": "UnknownVendorId"}
    res = await csms.call(CP_ID, "DataTransfer", {"vendorId": "org.evsed", "messageId": "NoSuchMessage"})
    assert res == {"status": "UnknownMessageId"}
    res = await csms.call(CP_ID, "DataTransfer", {"vendorId": "org.evsed"})
    assert res["status"] == "UnknownMessageId", res

    for vendor, message in (("org.evsed", "Status"), ("ORG.EVSED", "status")):  # CiString: case-insensitive
        res = await csms.call(CP_ID, "DataTransfer", {"vendorId": vendor, "messageId": message, "data": "x"})
        assert res["status"] == "Accepted", res
        data = json.loads(res["data"])
        assert data["charge_point_id"] == CP_ID
        assert data["ocpp"]["registration"] == "Accepted"
        assert [c["id"] for c in data["connectors"]] == [1]
    assert strict_csms.strict_errors == [], no_strict_errors(strict_csms)


async def test_data_transfer_to_csms(strict_csms: StrictCSMS, make_config: MakeConfig, daemon_factory: Factory) -> None:
    csms = strict_csms
    d = await start_daemon(csms, make_config, daemon_factory, connectors=1, ocpp_config={**QUIET, "MessageTimeout": 3})

    mark = csms.mark()
    out = await d.ctl("data-transfer", "com.example", "--message-id", "Ping", "--data", "x")
    assert json.loads(out) == {"status": "UnknownVendorId"}, out
    call = await csms.wait_call("DataTransfer", since=mark)
    assert call["payload"] == {"vendorId": "com.example", "messageId": "Ping", "data": "x"}

    # the printed answer is the CSMS's answer, whatever it is
    await csms.set(dataTransfer={"status": "Accepted", "data": "pong"})
    mark = csms.mark()
    out = await d.ctl("data-transfer", "com.example")
    assert json.loads(out) == {"status": "Accepted", "data": "pong"}, out
    call = await csms.wait_call("DataTransfer", since=mark)
    assert call["payload"] == {"vendorId": "com.example"}, "absent options must not be sent"

    # the CSMS does not answer: an error after MessageTimeout, not a hang
    await csms.set(respond={"DataTransfer": False})
    t0 = time.monotonic()
    res = await d.evsectl("data-transfer", "com.example", "--message-id", "Ping", timeout=30)
    assert res.returncode == 1, (res.returncode, res.stdout, res.stderr)
    assert time.monotonic() - t0 < 15
    await csms.set(respond=True)

    # the CSMS is down: an error at once
    await csms.stop()
    await d.wait_status(lambda s: not s["ocpp"]["connected"], what="ocpp.connected false")
    mark = csms.mark()
    t0 = time.monotonic()
    res = await d.evsectl("data-transfer", "com.example", "--message-id", "Ping", "--data", "x", timeout=30)
    elapsed = time.monotonic() - t0
    assert res.returncode == 1, (res.returncode, res.stdout, res.stderr)
    assert res.stdout == "" and len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert "Traceback" not in res.stderr
    assert elapsed < 5, f"evsectl took {elapsed:.1f}s with the CSMS down"
    assert csms.calls_of("DataTransfer", mark) == []
    assert strict_csms.strict_errors == [], no_strict_errors(strict_csms)


# ---------------------------------------------------------------------------- ClearCache


async def test_clear_cache_forces_authorize_again(
    strict_csms: StrictCSMS, make_config: MakeConfig, daemon_factory: Factory
) -> None:
    csms = strict_csms
    d = await start_daemon(
        csms,
        make_config,
        daemon_factory,
        connectors=1,
        ocpp_config={**QUIET, "LocalPreAuthorize": True, "AuthorizationCacheEnabled": True},
    )
    tag = "TAGCACHE1"

    async def session(expect_authorize: bool) -> None:
        mark = csms.mark()
        await plug(d, 1)
        await csms.wait_call("StatusNotification", status_is(1, "Preparing"), since=mark)
        await swipe(d, tag)
        start = await csms.wait_call("StartTransaction", since=mark)
        assert start["payload"]["idTag"] == tag
        auths = csms.calls_of("Authorize", mark)
        if expect_authorize:
            assert [a["payload"]["idTag"] for a in auths] == [tag], "the card was not authorized with the CSMS"
            assert csms.calls.index(auths[0]) < csms.calls.index(start)
        else:
            assert auths == [], "a cached card must start without Authorize.req (LocalPreAuthorize)"
        tx = (await answer_of(csms, start))["transactionId"]
        await d.wait_connector(1, lambda c: c["transaction_id"] == tx and c["status"] == "Charging")
        await unplug(d, 1)
        await csms.wait_call("StopTransaction", since=mark)
        await d.wait_connector(1, lambda c: c["status"] == "Available" and c["transaction_id"] is None)

    await session(expect_authorize=True)  # first time: unknown card
    await session(expect_authorize=False)  # now in the cache
    assert await csms.call(CP_ID, "ClearCache", {}) == {"status": "Accepted"}
    await session(expect_authorize=True)  # the cache is empty again

    # and the CSMS's new verdict is what counts
    assert await csms.call(CP_ID, "ClearCache", {}) == {"status": "Accepted"}
    await csms.set(authorize={tag: "Blocked"})
    mark = csms.mark()
    await plug(d, 1)
    await swipe(d, tag)
    auth = await csms.wait_call("Authorize", lambda p: p["idTag"] == tag, since=mark)
    assert (await answer_of(csms, auth))["idTagInfo"]["status"] == "Blocked"
    await no_call_for(csms, "StartTransaction", mark, 1.5)
    assert strict_csms.strict_errors == [], no_strict_errors(strict_csms)
