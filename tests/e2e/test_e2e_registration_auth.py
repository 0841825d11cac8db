"""Registration, authorization and connector-state scenarios: the real daemon against the strict CSMS.

Covers OCPP 1.6 edition 2 sections 3.5 (authorization cache, offline authorization), 4.2 (BootNotification
Pending/Rejected), 4.9 (StatusNotification, MinimumStatusDuration, ConnectionTimeOut), 4.10 (EV-side
disconnect and the cable lock) and errata 3.5, 3.17, 3.20 and 3.22.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from daemon_harness import CP_ID, Daemon
from ocpp_helpers import (
    answer_of,
    change_config,
    for_tx,
    get_config,
    no_strict_errors,
    plug,
    start_daemon,
    start_local_session,
    status_is,
    swipe,
    ts,
    unplug,
)
from strict_csms import CSMSError, StrictCSMS

from evsed.control.protocol import request as control_request

MakeConfig = Callable[..., Path]
Factory = Callable[[Path], Daemon]

# Fast delivery of queued transaction messages after a reconnect, and a quick reconnect itself.
FAST_TX = {"TransactionMessageRetryInterval": 1, "TransactionMessageAttempts": 5}
FAST_RECONNECT = {"reconnect_min_s": 0.5, "reconnect_max_s": 2}


# ---------------------------------------------------------------------------- helpers


async def ctl_socket(d: Daemon, payload: dict[str, Any]) -> Any:
    """One request on the control socket without spawning evsectl (milliseconds, for tight timing)."""
    return await asyncio.to_thread(control_request, str(d.socket_path), payload)


async def sim_ev(d: Daemon, n: int) -> dict[str, Any]:
    """The simulated EV/socket of connector n: plugged, wants_energy, contact_closed, pwm_duty, locked."""
    res: dict[str, Any] = await ctl_socket(d, {"cmd": "sim", "action": "ev", "connector": n})
    return res


async def fast_wait_pilot(d: Daemon, n: int, state: str, timeout: float = 10) -> None:
    """Poll the pilot state over the control socket (no evsectl process per poll)."""
    deadline = time.monotonic() + timeout
    st: dict[str, Any] = {}
    while time.monotonic() < deadline:
        st = await ctl_socket(d, {"cmd": "status"})
        if st["connectors"][n - 1]["pilot_state"] == state:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"connector {n} pilot never reached {state}: {st}")


async def wait_lock(d: Daemon, n: int, locked: bool, timeout: float = 10) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    ev: dict[str, Any] = {}
    while time.monotonic() < deadline:
        ev = await sim_ev(d, n)
        if ev["locked"] is locked:
            return ev
        await asyncio.sleep(0.1)
    raise AssertionError(f"connector {n} lock never became locked={locked}: {ev}")


def idx(csms: StrictCSMS, call_ev: dict[str, Any]) -> int:
    return csms.calls.index(call_ev)


def after(csms: StrictCSMS, call_ev: dict[str, Any]) -> int:
    """since= value for 'calls after this one'."""
    return csms.calls.index(call_ev) + 1


def for_tag(tag: str) -> Callable[[dict[str, Any]], bool]:
    return lambda p: p.get("idTag") == tag


def iso_z(dt: datetime) -> str:
    return dt.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def gap_s(a: dict[str, Any], b: dict[str, Any]) -> float:
    """Seconds between the arrival of two CALLs at the CSMS."""
    return float(b["ts"] - a["ts"]) / 1000.0


async def boot_daemon(
    csms: StrictCSMS, make_config: MakeConfig, daemon_factory: Factory, connectors: int, **ocpp_config: Any
) -> Daemon:
    """Start the daemon without waiting for an Accepted registration (for Pending / Rejected)."""
    cfg = make_config(
        csms_port=csms.port,
        hardware={"connectors": connectors},
        ocpp_config={"HeartbeatInterval": 60, "MeterValueSampleInterval": 1, **ocpp_config},
    )
    d = daemon_factory(cfg)
    d.start()
    await d.wait_ready()
    return d


def assert_clean(csms: StrictCSMS) -> None:
    assert csms.strict_errors == [], no_strict_errors(csms)


# ---------------------------------------------------------------------------- 4.2 BootNotification Pending


async def test_boot_pending_answers_csms_sends_nothing_then_accepted(
    strict_csms: StrictCSMS, make_config: MakeConfig, daemon_factory: Factory
) -> None:
    csms = strict_csms
    await csms.set(bootStatus="Pending", heartbeatInterval=3)
    d = await boot_daemon(csms, make_config, daemon_factory, connectors=2)
    b1 = await csms.wait_call("BootNotification")
    await d.wait_status(lambda s: s["ocpp"]["registration"] == "Pending", what="registration Pending")

    # While Pending the CSMS may read and change the configuration; the charge point SHOULD respond (4.2).
    res = await csms.call(CP_ID, "GetConfiguration", {})
    listed = {e["key"] for e in res["configurationKey"]}
    assert {"HeartbeatInterval", "ConnectionTimeOut", "LocalPreAuthorize"} <= listed, listed
    assert await csms.call(CP_ID, "ChangeConfiguration", {"key": "ConnectionTimeOut", "value": "47"}) == {
        "status": "Accepted"
    }
    assert (await get_config(csms, "ConnectionTimeOut"))["ConnectionTimeOut"] == "47"
    # RemoteStart/RemoteStopTransaction are not allowed while Pending (4.2).
    res = await csms.call(CP_ID, "RemoteStartTransaction", {"connectorId": 1, "idTag": "REMOTEPEND"})
    assert res == {"status": "Rejected"}, res
    res = await csms.call(CP_ID, "RemoteStopTransaction", {"transactionId": 1})
    assert res == {"status": "Rejected"}, res

    # A car plugged in and a card swiped while Pending: no Authorize.req, no StatusNotification, nothing.
    await plug(d, 1)
    await swipe(d, "PENDTAG1")

    # The Pending interval (3 s) is the minimum wait before the next BootNotification.
    b2 = await csms.wait_call("BootNotification", since=after(csms, b1), timeout=20)
    b3 = await csms.wait_call("BootNotification", since=after(csms, b2), timeout=20)
    for a, b in ((b1, b2), (b2, b3)):
        assert 2.5 <= gap_s(a, b) <= 10, f"BootNotification {gap_s(a, b):.2f}s apart with interval 3 s"
    others = [c["action"] for c in csms.calls if c["action"] != "BootNotification"]
    assert others == [], f"sent {others} while Pending (4.2: nothing but BootNotification)"
    c1 = await d.wait_connector(1, lambda c: c["pilot_state"] == "B")
    assert c1["transaction_id"] is None and c1["id_tag"] is None, c1

    mark = csms.mark()
    await csms.set(bootStatus="Accepted", heartbeatInterval=2)
    boot = await csms.wait_call("BootNotification", since=mark, timeout=20)
    assert (await answer_of(csms, boot))["status"] == "Accepted"
    # Errata 3.22: after Accepted a StatusNotification for connector 0 and every connector, current status.
    sns = {}
    for n in (0, 1, 2):
        sns[n] = await csms.wait_call(
            "StatusNotification", lambda p, n=n: p["connectorId"] == n, since=after(csms, boot), timeout=20
        )
    assert sns[0]["payload"]["status"] == "Available", sns[0]
    assert sns[1]["payload"]["status"] == "Preparing", sns[1]  # the car plugged in while Pending
    assert sns[2]["payload"]["status"] == "Available", sns[2]
    assert csms.calls[after(csms, boot)]["action"] == "StatusNotification", "first CALL after Accepted"
    hb = await csms.wait_call("Heartbeat", since=after(csms, boot), timeout=20)
    assert all(idx(csms, sn) < idx(csms, hb) for sn in sns.values()), "Heartbeat before the statuses"
    await d.wait_status(lambda s: s["ocpp"]["registration"] == "Accepted", what="registration Accepted")

    # Nothing decided while Pending is replayed: no Authorize/StartTransaction for the card or the remote start.
    await asyncio.sleep(1)
    assert csms.calls_of("Authorize") == [] and csms.calls_of("StartTransaction") == []
    assert (await get_config(csms, "ConnectionTimeOut"))["ConnectionTimeOut"] == "47", "change made while Pending"
    assert_clean(csms)


# ---------------------------------------------------------------------------- 4.2 BootNotification Rejected


async def test_boot_rejected_is_silent_then_accepted(
    strict_csms: StrictCSMS, make_config: MakeConfig, daemon_factory: Factory
) -> None:
    csms = strict_csms
    await csms.set(bootStatus="Rejected", heartbeatInterval=3)
    d = await boot_daemon(csms, make_config, daemon_factory, connectors=1, HeartbeatInterval=1)
    b1 = await csms.wait_call("BootNotification")
    await d.wait_status(lambda s: s["ocpp"]["registration"] == "Rejected", what="registration Rejected")

    # While Rejected the charge point SHALL NOT respond to any CSMS-initiated message (4.2).
    ev_mark = csms.event_mark()
    with pytest.raises(CSMSError) as err:
        await csms.call(CP_ID, "GetConfiguration", {}, timeout=3)
    assert "timeout" in f"{err.value.code} {err.value.message}".lower(), err.value
    answers = [
        e["message"]
        for e in csms.events[ev_mark:]
        if e.get("event") == "message" and json.loads(e["message"])[0] in (3, 4)
    ]
    assert answers == [], f"answered the CSMS while Rejected: {answers}"

    await plug(d, 1)
    await swipe(d, "REJTAG01")
    b2 = await csms.wait_call("BootNotification", since=after(csms, b1), timeout=20)
    b3 = await csms.wait_call("BootNotification", since=after(csms, b2), timeout=20)
    for a, b in ((b1, b2), (b2, b3)):
        assert 2.5 <= gap_s(a, b) <= 10, f"BootNotification {gap_s(a, b):.2f}s apart with interval 3 s"
    others = [c["action"] for c in csms.calls if c["action"] != "BootNotification"]
    assert others == [], f"sent {others} while Rejected"

    mark = csms.mark()
    await csms.set(bootStatus="Accepted", heartbeatInterval=2)
    boot = await csms.wait_call("BootNotification", since=mark, timeout=20)
    for n in (0, 1):
        await csms.wait_call("StatusNotification", lambda p, n=n: p["connectorId"] == n, since=after(csms, boot))
    await d.wait_status(lambda s: s["ocpp"]["registration"] == "Accepted", what="registration Accepted")
    res = await csms.call(CP_ID, "GetConfiguration", {"key": ["HeartbeatInterval"]})
    assert res["configurationKey"][0]["value"] == "2", res  # the Accepted interval is the heartbeat now
    await csms.wait_call("Heartbeat", since=after(csms, boot), timeout=20)
    assert csms.calls_of("Authorize") == [] and csms.calls_of("StartTransaction") == []
    assert_clean(csms)


# ---------------------------------------------------------------------------- 3.5 authorization cache / offline


async def _offline_session(d: Daemon, tag: str) -> None:
    """Plugged connector 1: swipe tag, a transaction must start for it (offline: not yet confirmed)."""
    await swipe(d, tag)
    c1 = await d.wait_connector(1, lambda c: c["id_tag"] is not None, timeout=20, what=f"offline start for {tag}")
    assert c1["id_tag"] == tag, f"transaction started for {c1['id_tag']}, expected {tag}"
    assert c1["transaction_id"] is None, "no transactionId can be known while the CSMS is down"
    await swipe(d, tag)  # the same card stops it (Local)
    await d.wait_connector(1, lambda c: c["id_tag"] is None, timeout=20, what=f"offline stop for {tag}")


async def _refused_offline(d: Daemon, tag: str) -> None:
    await swipe(d, tag)
    await asyncio.sleep(1.0)  # negative check: give the card time to be processed
    c1 = (await d.status())["connectors"][0]
    assert c1["id_tag"] is None, f"{tag} must be refused offline, but a transaction started: {c1}"


async def test_authorization_cache_and_offline_authorization(
    strict_csms: StrictCSMS, make_config: MakeConfig, daemon_factory: Factory
) -> None:
    csms = strict_csms
    past = iso_z(datetime.now(UTC) - timedelta(hours=1))
    await csms.set(authorize={"BLOCKED1": "Blocked"}, expiryDate={"EXPIRED1": past})
    d = await start_daemon(
        csms,
        make_config,
        daemon_factory,
        connectors=1,
        ocpp=FAST_RECONNECT,
        ocpp_config={**FAST_TX, "LocalAuthorizeOffline": True, "AllowOfflineTxForUnknownId": False},
    )

    # 1. online, no pre-authorization: the card is authorized by the CSMS (and cached)
    tx1, _ = await start_local_session(d, csms, 1, "CARD1")
    assert len(csms.calls_of("Authorize")) == 1
    mark = csms.mark()
    await swipe(d, "CARD1")
    await csms.wait_call("StopTransaction", for_tx(tx1), since=mark)
    await unplug(d, 1)
    await csms.wait_call("StatusNotification", status_is(1, "Available"), since=mark)

    # Blocked and already-expired cards get into the cache as NOT-valid; nothing starts for them.
    mark = csms.mark()
    await plug(d, 1)
    await csms.wait_call("StatusNotification", status_is(1, "Preparing"), since=mark)
    for tag in ("BLOCKED1", "EXPIRED1"):
        await swipe(d, tag)
        auth = await csms.wait_call("Authorize", for_tag(tag), since=mark)
        await answer_of(csms, auth)
    await asyncio.sleep(1)
    assert csms.calls_of("StartTransaction", mark) == [], "a Blocked / expired card started a transaction"

    # 2. LocalPreAuthorize: the cached valid card starts at once, without a new Authorize.req
    assert await change_config(csms, "LocalPreAuthorize", "true") == "Accepted"
    mark = csms.mark()
    await swipe(d, "CARD1")
    start = await csms.wait_call("StartTransaction", for_tag("CARD1"), since=mark)
    assert csms.calls_of("Authorize", mark) == [], "LocalPreAuthorize: the cached card was sent to the CSMS"
    tx2 = (await answer_of(csms, start))["transactionId"]
    # cached NOT-valid (Blocked) and expired entries are checked with the CSMS again (3.5.1)
    for tag in ("BLOCKED1", "EXPIRED1"):
        await swipe(d, tag)
        await csms.wait_call("Authorize", for_tag(tag), since=mark)
    # a card that is valid for a few seconds only: cached as Accepted with an expiryDate soon
    soon = datetime.now(UTC) + timedelta(seconds=4)
    await csms.set(expiryDate={"EXPSOON1": iso_z(soon)})
    await swipe(d, "EXPSOON1")
    auth = await csms.wait_call("Authorize", for_tag("EXPSOON1"), since=mark)
    info = (await answer_of(csms, auth))["idTagInfo"]
    assert info["status"] == "Accepted" and ts(info["expiryDate"]) > datetime.now(UTC), info
    await swipe(d, "CARD1")
    await csms.wait_call("StopTransaction", for_tx(tx2), since=mark)
    await unplug(d, 1)
    await csms.wait_call("StatusNotification", status_is(1, "Available"), since=mark)
    authorized = sorted(c["payload"]["idTag"] for c in csms.calls_of("Authorize"))
    # CARD1 was asked for once only
    assert authorized == ["BLOCKED1", "BLOCKED1", "CARD1", "EXPIRED1", "EXPIRED1", "EXPSOON1"], authorized

    # 3. CSMS down, LocalAuthorizeOffline=true, AllowOfflineTxForUnknownId=false
    await csms.stop()
    await d.wait_status(lambda s: not s["ocpp"]["connected"], what="ocpp.connected false")
    await plug(d, 1)
    await d.wait_connector(1, lambda c: c["pilot_state"] == "B")
    await _refused_offline(d, "UNKNOWN1")
    await _offline_session(d, "CARD1")
    await unplug(d, 1)
    await d.wait_connector(1, lambda c: c["status"] == "Available")

    mark = csms.mark()
    await csms.listen()
    start = await csms.wait_call("StartTransaction", since=mark, timeout=60)
    assert start["payload"]["idTag"] == "CARD1", start
    tx3 = (await answer_of(csms, start))["transactionId"]
    stop = await csms.wait_call("StopTransaction", since=mark, timeout=60)
    assert stop["payload"]["transactionId"] == tx3 and stop["payload"].get("reason") == "Local", stop
    await d.wait_status(lambda s: s["ocpp"]["connected"], what="reconnected")

    # 4. AllowOfflineTxForUnknownId=true: unknown cards start offline, known NOT-valid ones never do (3.5.4)
    assert await change_config(csms, "AllowOfflineTxForUnknownId", "true") == "Accepted"
    await csms.stop()
    await d.wait_status(lambda s: not s["ocpp"]["connected"], what="ocpp.connected false")
    await plug(d, 1)
    await d.wait_connector(1, lambda c: c["pilot_state"] == "B")
    await _refused_offline(d, "BLOCKED1")  # cached Blocked
    await _refused_offline(d, "EXPIRED1")  # cached Accepted, expiryDate in the past
    await asyncio.sleep(max(0.0, (soon - datetime.now(UTC)).total_seconds() + 0.5))
    await _refused_offline(d, "EXPSOON1")  # cached Accepted, expired since by the passage of time (3.5.4)
    await _offline_session(d, "UNKNOWN2")
    await unplug(d, 1)

    mark = csms.mark()
    await csms.listen()
    start = await csms.wait_call("StartTransaction", since=mark, timeout=60)
    assert start["payload"]["idTag"] == "UNKNOWN2", start
    await csms.wait_call("StopTransaction", since=mark, timeout=60)
    started = [c["payload"]["idTag"] for c in csms.calls_of("StartTransaction")]
    assert started == ["CARD1", "CARD1", "CARD1", "UNKNOWN2"], started
    assert_clean(csms)


# ---------------------------------------------------------------------------- parentIdTag


async def test_card_with_same_parent_stops_the_transaction(
    strict_csms: StrictCSMS, make_config: MakeConfig, daemon_factory: Factory
) -> None:
    csms = strict_csms
    await csms.set(parentIdTag={"FAMILY1": "PARENTA", "FAMILY2": "PARENTA", "STRANGER": "PARENTB"})
    d = await start_daemon(csms, make_config, daemon_factory, connectors=1)
    tx, _ = await start_local_session(d, csms, 1, "FAMILY1")
    auth1 = await csms.wait_call("Authorize", for_tag("FAMILY1"))
    assert (await answer_of(csms, auth1))["idTagInfo"].get("parentIdTag") == "PARENTA"

    # a card with another parent is authorized but does not stop the transaction
    mark = csms.mark()
    await swipe(d, "STRANGER")
    auth = await csms.wait_call("Authorize", for_tag("STRANGER"), since=mark)
    assert (await answer_of(csms, auth))["idTagInfo"]["parentIdTag"] == "PARENTB"
    await asyncio.sleep(2)
    assert csms.calls_of("StopTransaction") == [], "a card with another parentIdTag stopped the transaction"
    assert (await d.status())["connectors"][0]["transaction_id"] == tx

    # a card with the same parent: Authorize.req for it, then StopTransaction Local with its idTag
    mark = csms.mark()
    await swipe(d, "FAMILY2")
    auth = await csms.wait_call("Authorize", for_tag("FAMILY2"), since=mark)
    stop = await csms.wait_call("StopTransaction", since=mark)
    assert idx(csms, auth) < idx(csms, stop)
    p = stop["payload"]
    assert p["transactionId"] == tx and p.get("reason") == "Local" and p.get("idTag") == "FAMILY2", p
    await d.wait_connector(1, lambda c: c["transaction_id"] is None)
    assert len(csms.calls_of("StopTransaction")) == 1 and len(csms.calls_of("StartTransaction")) == 1
    assert_clean(csms)


# ---------------------------------------------------------------------------- ConnectionTimeOut


async def test_card_first_connection_timeout_then_plug_first(
    strict_csms: StrictCSMS, make_config: MakeConfig, daemon_factory: Factory
) -> None:
    csms = strict_csms
    d = await start_daemon(csms, make_config, daemon_factory, connectors=1, ocpp_config={"ConnectionTimeOut": 3})
    mark = csms.mark()
    await swipe(d, "CARDTO01")
    await csms.wait_call("Authorize", for_tag("CARDTO01"), since=mark)
    prep = await csms.wait_call("StatusNotification", status_is(1, "Preparing"), since=mark)
    avail = await csms.wait_call("StatusNotification", status_is(1, "Available"), since=after(csms, prep), timeout=20)
    assert 2.5 <= gap_s(prep, avail) <= 8, f"Preparing lasted {gap_s(prep, avail):.2f}s with ConnectionTimeOut 3"
    assert csms.calls_of("StartTransaction") == []

    # the card has expired: plugging in now starts nothing
    mark = csms.mark()
    await plug(d, 1)
    await csms.wait_call("StatusNotification", status_is(1, "Preparing"), since=mark)
    await asyncio.sleep(1.5)
    assert csms.calls_of("StartTransaction") == [], "a card from before the ConnectionTimeOut started a transaction"
    # plug first, then the card: the transaction starts
    await swipe(d, "CARDTO01")
    start = await csms.wait_call("StartTransaction", since=mark)
    assert start["payload"]["idTag"] == "CARDTO01" and start["payload"]["connectorId"] == 1
    await csms.wait_call("StatusNotification", status_is(1, "Charging"), since=mark)
    assert_clean(csms)


async def test_plug_without_card_times_out_to_finishing_with_two_connectors(
    strict_csms: StrictCSMS, make_config: MakeConfig, daemon_factory: Factory
) -> None:
    """Errata 3.20 (B6): with one reader for two connectors a plugged cable that timed out goes to Finishing,
    and the next card does not start on it."""
    csms = strict_csms
    d = await start_daemon(csms, make_config, daemon_factory, connectors=2, ocpp_config={"ConnectionTimeOut": 3})
    mark = csms.mark()
    await plug(d, 1)
    prep = await csms.wait_call("StatusNotification", status_is(1, "Preparing"), since=mark)
    fin = await csms.wait_call("StatusNotification", status_is(1, "Finishing"), since=after(csms, prep), timeout=20)
    assert 2.5 <= gap_s(prep, fin) <= 8, f"Preparing lasted {gap_s(prep, fin):.2f}s with ConnectionTimeOut 3"
    await swipe(d, "CARDB601")
    await csms.wait_call("Authorize", for_tag("CARDB601"), since=mark)
    await asyncio.sleep(1.5)
    assert csms.calls_of("StartTransaction") == [], "the card started on the timed-out cable"
    await plug(d, 2)
    start = await csms.wait_call("StartTransaction", since=mark)
    assert start["payload"]["connectorId"] == 2 and start["payload"]["idTag"] == "CARDB601", start
    assert_clean(csms)


# ---------------------------------------------------------------------------- EV-side disconnect


async def test_ev_side_disconnect_does_not_stop_when_configured(
    strict_csms: StrictCSMS, make_config: MakeConfig, daemon_factory: Factory
) -> None:
    csms = strict_csms
    d = await start_daemon(
        csms, make_config, daemon_factory, connectors=1, ocpp_config={"StopTransactionOnEVSideDisconnect": False}
    )
    tx, _ = await start_local_session(d, csms, 1, "EVSIDE01")
    mark = csms.mark()
    await unplug(d, 1)
    sn = await csms.wait_call("StatusNotification", status_is(1, "SuspendedEV"), since=mark)
    assert sn["payload"]["errorCode"] == "NoError", sn
    await asyncio.sleep(2)
    assert csms.calls_of("StopTransaction") == [], "StopTransactionOnEVSideDisconnect=false, but it stopped"
    c1 = (await d.status())["connectors"][0]
    assert c1["transaction_id"] == tx and c1["power_w"] == 0, c1
    # 4.10: with StopTransactionOnEVSideDisconnect=false the cable always stays locked
    assert (await sim_ev(d, 1))["locked"] is True, "cable unlocked although the transaction goes on"

    mark = csms.mark()
    await plug(d, 1)
    await csms.wait_call("StatusNotification", status_is(1, "Charging"), since=mark)
    await d.wait_connector(1, lambda c: c["transaction_id"] == tx and c["power_w"] > 0, what="charging again")
    assert len(csms.calls_of("StartTransaction")) == 1, "a new transaction was started after re-plugging"
    await swipe(d, "EVSIDE01")
    stop = await csms.wait_call("StopTransaction", since=mark)
    p = stop["payload"]
    assert p["transactionId"] == tx and p.get("reason") == "Local" and p.get("idTag") == "EVSIDE01", p
    assert_clean(csms)


async def test_ev_side_disconnect_stops_and_cable_stays_locked_for_its_owner(
    strict_csms: StrictCSMS, make_config: MakeConfig, daemon_factory: Factory
) -> None:
    csms = strict_csms
    d = await start_daemon(
        csms,
        make_config,
        daemon_factory,
        connectors=1,
        ocpp_config={"StopTransactionOnEVSideDisconnect": True, "UnlockConnectorOnEVSideDisconnect": False},
    )
    tx, _ = await start_local_session(d, csms, 1, "LOCKOWN1")
    assert (await sim_ev(d, 1))["locked"] is True, "the cable must be locked while charging"
    mark = csms.mark()
    await unplug(d, 1)
    stop = await csms.wait_call("StopTransaction", since=mark)
    assert stop["payload"]["transactionId"] == tx and stop["payload"].get("reason") == "EVDisconnected", stop
    await d.wait_connector(1, lambda c: c["transaction_id"] is None)
    await asyncio.sleep(1)
    assert (await sim_ev(d, 1))["locked"] is True, "UnlockConnectorOnEVSideDisconnect=false, but it unlocked"

    mark = csms.mark()
    await swipe(d, "LOCKOWN1")  # the owner comes back: the cable is released, nothing else happens
    await wait_lock(d, 1, False)
    await asyncio.sleep(1)
    assert csms.calls_of("StartTransaction", mark) == [], "releasing the cable started a transaction"

    # UnlockConnectorOnEVSideDisconnect=true (live change): the unplug releases the cable at once
    assert await change_config(csms, "UnlockConnectorOnEVSideDisconnect", "true") == "Accepted"
    tx2, _ = await start_local_session(d, csms, 1, "LOCKOWN2")
    assert (await sim_ev(d, 1))["locked"] is True
    mark = csms.mark()
    await unplug(d, 1)
    await csms.wait_call("StopTransaction", for_tx(tx2), since=mark)
    await wait_lock(d, 1, False)
    assert_clean(csms)


# ---------------------------------------------------------------------------- errata 3.17: StartTransaction.conf


async def test_start_transaction_not_accepted_stops_deauthorized(
    strict_csms: StrictCSMS, make_config: MakeConfig, daemon_factory: Factory
) -> None:
    csms = strict_csms
    await csms.set(startTransactionStatus="Invalid")
    d = await start_daemon(
        csms,
        make_config,
        daemon_factory,
        connectors=1,
        ocpp_config={"StopTransactionOnInvalidId": True, "MaxEnergyOnInvalidId": 0},
    )
    mark = csms.mark()
    await plug(d, 1)
    await csms.wait_call("StatusNotification", status_is(1, "Preparing"), since=mark)
    await swipe(d, "INVALID1")
    auth = await csms.wait_call("Authorize", for_tag("INVALID1"), since=mark)
    assert (await answer_of(csms, auth))["idTagInfo"]["status"] == "Accepted"
    start = await csms.wait_call("StartTransaction", since=mark)
    res = await answer_of(csms, start)
    assert res["idTagInfo"]["status"] == "Invalid"
    stop = await csms.wait_call("StopTransaction", since=mark)
    p = stop["payload"]
    assert p["transactionId"] == res["transactionId"] and p.get("reason") == "DeAuthorized", p
    await d.wait_connector(1, lambda c: c["transaction_id"] is None and c["power_w"] == 0)
    # Errata 3.5: the cable stays locked until the same identifier is presented
    await unplug(d, 1)
    # The cable hangs locked in the socket: Finishing, not Available, until its owner comes back.
    await d.wait_connector(1, lambda c: c["status"] == "Finishing" and c["pilot_state"] == "A")
    await asyncio.sleep(1)
    assert (await sim_ev(d, 1))["locked"] is True, "cable released after a DeAuthorized stop"
    await swipe(d, "INVALID1")
    await wait_lock(d, 1, False)
    await d.wait_connector(1, lambda c: c["status"] == "Available")
    assert len(csms.calls_of("StartTransaction")) == 1
    assert_clean(csms)


async def test_start_transaction_not_accepted_only_withholds_energy(
    strict_csms: StrictCSMS, make_config: MakeConfig, daemon_factory: Factory
) -> None:
    csms = strict_csms
    await csms.set(startTransactionStatus="Blocked")
    d = await start_daemon(
        csms,
        make_config,
        daemon_factory,
        connectors=1,
        ocpp_config={"StopTransactionOnInvalidId": False, "MaxEnergyOnInvalidId": 0},
    )
    mark = csms.mark()
    await plug(d, 1)
    await csms.wait_call("StatusNotification", status_is(1, "Preparing"), since=mark)
    await swipe(d, "WITHHELD")
    start = await csms.wait_call("StartTransaction", since=mark)
    tx = (await answer_of(csms, start))["transactionId"]
    await csms.wait_call("StatusNotification", status_is(1, "SuspendedEVSE"), since=after(csms, start))
    c1 = await d.wait_connector(1, lambda c: c["power_w"] == 0 and c["offered_current_a"] == 0)
    assert c1["transaction_id"] == tx, c1
    e0 = c1["energy_wh"]
    await asyncio.sleep(3)
    c1 = (await d.status())["connectors"][0]
    assert c1["transaction_id"] == tx and c1["status"] == "SuspendedEVSE", c1
    assert c1["energy_wh"] - e0 < 1, f"energy delivered although the idTag was not accepted: {c1}"
    assert csms.calls_of("StopTransaction") == [], "StopTransactionOnInvalidId=false, but it stopped"
    # the user ends it with the card
    mark = csms.mark()
    await swipe(d, "WITHHELD")
    stop = await csms.wait_call("StopTransaction", since=mark)
    assert stop["payload"]["transactionId"] == tx and stop["payload"].get("reason") == "Local", stop
    assert_clean(csms)


async def test_start_transaction_not_accepted_max_energy_then_suspended(
    strict_csms: StrictCSMS, make_config: MakeConfig, daemon_factory: Factory
) -> None:
    csms = strict_csms
    cap = 30  # Wh; ~5 s at 22 kW
    await csms.set(startTransactionStatus="Invalid")
    d = await start_daemon(
        csms,
        make_config,
        daemon_factory,
        connectors=1,
        ocpp_config={"StopTransactionOnInvalidId": False, "MaxEnergyOnInvalidId": cap},
    )
    mark = csms.mark()
    await plug(d, 1)
    await csms.wait_call("StatusNotification", status_is(1, "Preparing"), since=mark)
    await swipe(d, "CAPPED01")
    start = await csms.wait_call("StartTransaction", since=mark)
    meter_start = start["payload"]["meterStart"]
    tx = (await answer_of(csms, start))["transactionId"]
    charging = await csms.wait_call("StatusNotification", status_is(1, "Charging"), since=mark)
    susp = await csms.wait_call(
        "StatusNotification", status_is(1, "SuspendedEVSE"), since=after(csms, charging), timeout=30
    )
    assert gap_s(charging, susp) >= 1, f"energy withheld after {gap_s(charging, susp):.1f}s, before {cap} Wh"
    c1 = await d.wait_connector(1, lambda c: c["power_w"] == 0)
    delivered = c1["energy_wh"] - meter_start
    assert cap - 1 <= delivered <= cap + 20, f"{delivered:.1f} Wh delivered with MaxEnergyOnInvalidId={cap}"
    await asyncio.sleep(2)
    c1 = (await d.status())["connectors"][0]
    assert c1["transaction_id"] == tx and c1["status"] == "SuspendedEVSE", c1
    assert c1["energy_wh"] - meter_start <= cap + 20
    assert csms.calls_of("StopTransaction") == [], "StopTransactionOnInvalidId=false, but it stopped"
    assert_clean(csms)


# ---------------------------------------------------------------------------- faults


async def test_device_faults_reported_and_cleared(
    strict_csms: StrictCSMS, make_config: MakeConfig, daemon_factory: Factory
) -> None:
    csms = strict_csms
    d = await start_daemon(csms, make_config, daemon_factory, connectors=2)

    # pilot short (state E) on an idle connector
    mark = csms.mark()
    await d.ctl("sim", "fault", "1", "pilot-short")
    sn = await csms.wait_call("StatusNotification", status_is(1, "Faulted"), since=mark)
    assert sn["payload"]["errorCode"] not in ("NoError", None), sn
    await d.ctl("sim", "clear", "1")
    await csms.wait_call("StatusNotification", status_is(1, "Available"), since=after(csms, sn))
    await d.wait_connector(1, lambda c: c["status"] == "Available")

    # meter offline on connector 2
    mark = csms.mark()
    await d.ctl("sim", "fault", "2", "meter-offline")
    sn = await csms.wait_call("StatusNotification", status_is(2, "Faulted"), since=mark)
    assert sn["payload"]["errorCode"] == "PowerMeterFailure", sn
    await d.ctl("sim", "clear", "2")
    await csms.wait_call("StatusNotification", status_is(2, "Available"), since=after(csms, sn))

    # lock failure while a car is plugged in: nothing may start until it is cleared
    mark = csms.mark()
    await plug(d, 1)
    await csms.wait_call("StatusNotification", status_is(1, "Preparing"), since=mark)
    await d.ctl("sim", "fault", "1", "lock-failure")
    sn = await csms.wait_call("StatusNotification", status_is(1, "Faulted"), since=mark)
    assert sn["payload"]["errorCode"] == "ConnectorLockFailure", sn
    await swipe(d, "LOCKFAIL")
    await asyncio.sleep(2)
    assert csms.calls_of("StartTransaction") == [], "a transaction started with a failed cable lock"
    await d.ctl("sim", "clear", "1")
    await csms.wait_call("StatusNotification", status_is(1, "Preparing"), since=after(csms, sn))
    mark = csms.mark()
    await swipe(d, "LOCKFAIL")
    start = await csms.wait_call("StartTransaction", since=mark)
    assert start["payload"]["connectorId"] == 1
    await csms.wait_call("StatusNotification", status_is(1, "Charging"), since=mark)
    # a connector's device faults are not faults of the charge point (connector 0)
    cp_statuses = [
        c["payload"]["status"] for c in csms.calls_of("StatusNotification") if c["payload"]["connectorId"] == 0
    ]
    assert set(cp_statuses) == {"Available"}, cp_statuses
    assert_clean(csms)


async def test_ev_communication_error_is_only_a_warning(
    strict_csms: StrictCSMS, make_config: MakeConfig, daemon_factory: Factory
) -> None:
    csms = strict_csms
    d = await start_daemon(csms, make_config, daemon_factory, connectors=1)
    mark = csms.mark()
    await d.ctl("sim", "fault", "1", "pilot-short")
    sn = await csms.wait_call("StatusNotification", lambda p: p["connectorId"] == 1, since=mark)
    p = sn["payload"]
    if p["errorCode"] == "EVCommunicationError":
        assert p["status"] in ("Preparing", "SuspendedEV", "SuspendedEVSE", "Finishing"), p
    assert_clean(csms)


# ---------------------------------------------------------------------------- MinimumStatusDuration


async def test_minimum_status_duration(
    strict_csms: StrictCSMS, make_config: MakeConfig, daemon_factory: Factory
) -> None:
    csms = strict_csms
    d = await start_daemon(csms, make_config, daemon_factory, connectors=1, ocpp_config={"MinimumStatusDuration": 3})
    mark = csms.mark()
    t0 = time.monotonic()
    await ctl_socket(d, {"cmd": "sim", "action": "plug", "connector": 1})
    await fast_wait_pilot(d, 1, "B")  # the daemon saw the car (a status change happened)
    await ctl_socket(d, {"cmd": "sim", "action": "unplug", "connector": 1})
    flip = time.monotonic() - t0
    assert flip < 2.0, f"the plug/unplug flip took {flip:.1f}s; the premise of this test needs < 3 s"
    await fast_wait_pilot(d, 1, "A")
    await asyncio.sleep(4)
    sns = [c["payload"] for c in csms.calls_of("StatusNotification", mark)]
    assert sns == [], f"a status shorter than MinimumStatusDuration was reported: {sns}"

    # a status that stays is reported once it has lasted 3 s, stamped with when it began
    t_plug = time.time()
    await ctl_socket(d, {"cmd": "sim", "action": "plug", "connector": 1})
    sn = await csms.wait_call("StatusNotification", status_is(1, "Preparing"), since=mark, timeout=20)
    waited = sn["ts"] / 1000.0 - t_plug
    assert waited >= 2.8, f"Preparing reported {waited:.2f}s after the plug with MinimumStatusDuration=3"
    held = sn["ts"] / 1000.0 - ts(sn["payload"]["timestamp"]).timestamp()
    assert 2.5 <= held <= 10, f"timestamp {sn['payload']['timestamp']} is {held:.2f}s before delivery"
    assert len(csms.calls_of("StatusNotification", mark)) == 1
    assert_clean(csms)
