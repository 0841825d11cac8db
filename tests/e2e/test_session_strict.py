"""The real daemon against a strict OCPP 1.6J central system: boot, local and remote sessions."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

from daemon_harness import CP_ID, Daemon
from ocpp_helpers import (
    CHARGE_POINT_STATUSES,
    answer_of,
    for_tx,
    measurands,
    no_strict_errors,
    plug,
    start_daemon,
    start_local_session,
    status_is,
    swipe,
    ts,
    unplug,
)
from strict_csms import StrictCSMS

MakeConfig = Callable[..., Path]
Factory = Callable[[Path], Daemon]


async def test_boot_status_and_heartbeat(
    strict_csms: StrictCSMS, make_config: MakeConfig, daemon_factory: Factory
) -> None:
    csms = strict_csms
    d = await start_daemon(csms, make_config, daemon_factory, connectors=2, heartbeat=2)

    conn = await csms.wait_event("connected", lambda e: e["identity"] == CP_ID)
    assert conn["protocol"] == "ocpp1.6"
    assert conn["path"].rstrip("/").endswith("/ocpp/" + CP_ID), conn["path"]

    assert csms.calls[0]["action"] == "BootNotification", "the first CALL must be BootNotification"
    boot = csms.calls[0]["payload"]
    assert boot["chargePointVendor"] == "EvsedTest"
    assert boot["chargePointModel"] == "E2E-Sim"
    assert boot.get("chargePointSerialNumber") == "SN-E2E-0001"

    for n in (0, 1, 2):
        sn = await csms.wait_call("StatusNotification", lambda p, n=n: p["connectorId"] == n)
        assert sn["payload"]["status"] == "Available", sn
        assert sn["payload"]["errorCode"] == "NoError", sn

    # Heartbeat every `interval` (2 s) from BootNotification.conf
    hb1 = await csms.wait_call("Heartbeat", timeout=10)
    hb2 = await csms.wait_call("Heartbeat", since=csms.calls.index(hb1) + 1, timeout=10)
    gap = (hb2["ts"] - hb1["ts"]) / 1000
    assert 1.0 <= gap <= 4.0, f"heartbeat gap {gap:.2f}s, expected ~2 s"

    st = await d.status()
    assert st["ocpp"]["connected"] is True and st["ocpp"]["registration"] == "Accepted"
    assert [c["status"] for c in st["connectors"]] == ["Available", "Available"]
    assert strict_csms.strict_errors == [], no_strict_errors(strict_csms)


async def test_boot_pending_then_accepted(
    strict_csms: StrictCSMS, make_config: MakeConfig, daemon_factory: Factory
) -> None:
    csms = strict_csms
    await csms.set(bootStatus="Pending", heartbeatInterval=1)
    cfg = make_config(csms_port=csms.port, ocpp_config={"HeartbeatInterval": 1, "MeterValueSampleInterval": 1})
    d = daemon_factory(cfg)
    d.start()
    await d.wait_ready()
    first = await csms.wait_call("BootNotification")
    # the Pending interval (1 s) is the retry interval for the next BootNotification
    second = await csms.wait_call("BootNotification", since=csms.calls.index(first) + 1, timeout=10)
    assert second["ts"] - first["ts"] >= 500
    await d.wait_status(lambda s: s["ocpp"]["registration"] == "Pending", what="registration Pending")
    # while Pending the charge point sends nothing but BootNotification
    await plug(d, 1)
    await asyncio.sleep(1.5)
    others = [c["action"] for c in csms.calls if c["action"] != "BootNotification"]
    assert others == [], f"sent {others} while Pending"

    mark = csms.mark()
    await csms.set(bootStatus="Accepted", heartbeatInterval=2)
    boot = await csms.wait_call("BootNotification", since=mark, timeout=10)
    await csms.wait_call("StatusNotification", since=csms.calls.index(boot) + 1, timeout=10)
    # connector 1 has an EV plugged: it must now report Preparing (its real state)
    await csms.wait_call("StatusNotification", status_is(1, "Preparing"), since=mark, timeout=10)
    await d.wait_status(lambda s: s["ocpp"]["registration"] == "Accepted", what="registration Accepted")
    await csms.wait_call("Heartbeat", since=mark, timeout=10)
    assert strict_csms.strict_errors == [], no_strict_errors(strict_csms)


async def test_full_local_session_plug_first(
    strict_csms: StrictCSMS, make_config: MakeConfig, daemon_factory: Factory
) -> None:
    csms = strict_csms
    d = await start_daemon(csms, make_config, daemon_factory, connectors=2)
    mark = csms.mark()
    await plug(d, 1)
    await csms.wait_call("StatusNotification", status_is(1, "Preparing"), since=mark)
    await swipe(d, "TAG0001")
    auth = await csms.wait_call("Authorize", lambda p: p["idTag"] == "TAG0001", since=mark)
    start = await csms.wait_call("StartTransaction", since=mark)
    assert csms.calls.index(auth) < csms.calls.index(start)
    sp = start["payload"]
    assert sp["connectorId"] == 1 and sp["idTag"] == "TAG0001"
    assert isinstance(sp["meterStart"], int)
    ts(sp["timestamp"])
    tx = (await answer_of(csms, start))["transactionId"]
    charging = await csms.wait_call("StatusNotification", status_is(1, "Charging"), since=mark)
    assert csms.calls.index(charging) > csms.calls.index(start), "Charging reported before StartTransaction"

    # MeterValues every MeterValueSampleInterval (1 s) with the CSMS transactionId
    mv1 = await csms.wait_call("MeterValues", for_tx(tx), since=mark, timeout=10)
    mv2 = await csms.wait_call("MeterValues", for_tx(tx), since=csms.calls.index(mv1) + 1, timeout=10)
    assert mv1["payload"]["connectorId"] == 1
    gap = (mv2["ts"] - mv1["ts"]) / 1000
    assert gap <= 3.0, f"MeterValues {gap:.1f}s apart with MeterValueSampleInterval=1"
    ms = measurands(mv2["payload"])
    assert "Energy.Active.Import.Register" in ms and "Power.Active.Import" in ms, ms
    power = float(ms["Power.Active.Import"][0]["value"])
    assert power > 0, ms
    st = await d.wait_connector(1, lambda c: c["power_w"] > 0)
    assert st["transaction_id"] == tx and st["id_tag"] == "TAG0001" and st["pilot_state"] == "C"

    await csms.wait_call("MeterValues", for_tx(tx), since=csms.calls.index(mv2) + 1, timeout=10)
    stop_mark = csms.mark()
    await unplug(d, 1)
    stop = await csms.wait_call("StopTransaction", since=stop_mark)
    p = stop["payload"]
    assert p["transactionId"] == tx
    assert p.get("reason") == "EVDisconnected", p
    assert p["meterStop"] >= sp["meterStart"]
    assert ts(p["timestamp"]) >= ts(sp["timestamp"])
    await csms.wait_call("StatusNotification", status_is(1, "Available"), since=stop_mark)
    for c in csms.calls_of("StatusNotification", stop_mark):
        assert c["payload"]["status"] in ("Finishing", "Available"), c
    c1 = await d.wait_connector(1, lambda c: c["status"] == "Available" and c["transaction_id"] is None)
    assert c1["id_tag"] is None
    assert len(csms.calls_of("StartTransaction")) == 1 and len(csms.calls_of("StopTransaction")) == 1
    # connector 2 was never touched
    assert not [c for c in csms.calls_of("StatusNotification", mark) if c["payload"]["connectorId"] == 2]
    assert strict_csms.strict_errors == [], no_strict_errors(strict_csms)


async def test_card_first_then_plug(strict_csms: StrictCSMS, make_config: MakeConfig, daemon_factory: Factory) -> None:
    csms = strict_csms
    d = await start_daemon(csms, make_config, daemon_factory, connectors=1)
    mark = csms.mark()
    await swipe(d, "CARD0001")
    auth = await csms.wait_call("Authorize", lambda p: p["idTag"] == "CARD0001", since=mark)
    assert (await answer_of(csms, auth))["idTagInfo"]["status"] == "Accepted"
    assert csms.calls_of("StartTransaction", mark) == [], "no transaction before the EV is plugged"
    await plug(d, 1)
    start = await csms.wait_call("StartTransaction", since=mark)
    assert start["payload"]["connectorId"] == 1 and start["payload"]["idTag"] == "CARD0001"
    tx = (await answer_of(csms, start))["transactionId"]
    await csms.wait_call("StatusNotification", status_is(1, "Charging"), since=mark)
    await d.wait_connector(1, lambda c: c["transaction_id"] == tx and c["status"] == "Charging")
    stop_mark = csms.mark()
    await unplug(d, 1)
    stop = await csms.wait_call("StopTransaction", since=stop_mark)
    assert stop["payload"]["transactionId"] == tx and stop["payload"]["reason"] == "EVDisconnected"
    assert strict_csms.strict_errors == [], no_strict_errors(strict_csms)


async def test_swipe_again_stops_with_reason_local(
    strict_csms: StrictCSMS, make_config: MakeConfig, daemon_factory: Factory
) -> None:
    csms = strict_csms
    d = await start_daemon(csms, make_config, daemon_factory, connectors=2)
    tx, sp = await start_local_session(d, csms, 1, "TAG0002")
    await csms.wait_call("MeterValues", for_tx(tx))
    mark = csms.mark()
    await swipe(d, "TAG0002")
    stop = await csms.wait_call("StopTransaction", since=mark)
    p = stop["payload"]
    assert p["transactionId"] == tx and p.get("reason") == "Local", p
    assert p.get("idTag") == "TAG0002"
    assert p["meterStop"] >= sp["meterStart"]
    # EV still plugged: Finishing, energy no longer delivered
    await csms.wait_call("StatusNotification", status_is(1, "Finishing"), since=mark)
    c1 = await d.wait_connector(1, lambda c: c["transaction_id"] is None and c["power_w"] == 0)
    assert c1["status"] == "Finishing"
    await unplug(d, 1)
    await csms.wait_call("StatusNotification", status_is(1, "Available"), since=mark)
    assert len(csms.calls_of("StopTransaction")) == 1
    assert strict_csms.strict_errors == [], no_strict_errors(strict_csms)


async def test_authorize_rejected_starts_nothing(
    strict_csms: StrictCSMS, make_config: MakeConfig, daemon_factory: Factory
) -> None:
    csms = strict_csms
    await csms.set(authorize={"BADTAG": "Invalid", "BLOCKED1": "Blocked"})
    d = await start_daemon(csms, make_config, daemon_factory, connectors=1)
    mark = csms.mark()
    await plug(d, 1)
    await csms.wait_call("StatusNotification", status_is(1, "Preparing"), since=mark)
    for tag in ("BADTAG", "BLOCKED1"):
        await swipe(d, tag)
        auth = await csms.wait_call("Authorize", lambda p, t=tag: p["idTag"] == t, since=mark)
        assert (await answer_of(csms, auth))["idTagInfo"]["status"] != "Accepted"
    await asyncio.sleep(3)  # negative check: nothing may start
    assert csms.calls_of("StartTransaction", mark) == []
    c1 = await d.wait_connector(1, lambda c: True)
    assert c1["transaction_id"] is None and c1["power_w"] == 0 and c1["pilot_state"] == "B", c1
    # the charge point still works: a valid card starts the session
    await swipe(d, "GOODTAG")
    start = await csms.wait_call("StartTransaction", lambda p: p["idTag"] == "GOODTAG", since=mark)
    assert start["payload"]["connectorId"] == 1
    assert strict_csms.strict_errors == [], no_strict_errors(strict_csms)


async def test_remote_start_then_plug_and_remote_stop(
    strict_csms: StrictCSMS, make_config: MakeConfig, daemon_factory: Factory
) -> None:
    csms = strict_csms
    d = await start_daemon(csms, make_config, daemon_factory, connectors=2)
    mark = csms.mark()
    res = await csms.call(CP_ID, "RemoteStartTransaction", {"connectorId": 1, "idTag": "REMOTE01"})
    assert res == {"status": "Accepted"}
    await plug(d, 1)
    start = await csms.wait_call("StartTransaction", since=mark)
    assert start["payload"]["connectorId"] == 1 and start["payload"]["idTag"] == "REMOTE01"
    tx = (await answer_of(csms, start))["transactionId"]
    await csms.wait_call("StatusNotification", status_is(1, "Charging"), since=mark)
    await d.wait_connector(1, lambda c: c["transaction_id"] == tx)

    stop_mark = csms.mark()
    res = await csms.call(CP_ID, "RemoteStopTransaction", {"transactionId": tx})
    assert res == {"status": "Accepted"}
    stop = await csms.wait_call("StopTransaction", since=stop_mark)
    assert stop["payload"]["transactionId"] == tx and stop["payload"]["reason"] == "Remote", stop
    await csms.wait_call("StatusNotification", status_is(1, "Finishing", "Available"), since=stop_mark)
    await d.wait_connector(1, lambda c: c["transaction_id"] is None and c["power_w"] == 0)
    assert strict_csms.strict_errors == [], no_strict_errors(strict_csms)


async def test_remote_start_with_ev_already_plugged(
    strict_csms: StrictCSMS, make_config: MakeConfig, daemon_factory: Factory
) -> None:
    csms = strict_csms
    d = await start_daemon(csms, make_config, daemon_factory, connectors=2)
    mark = csms.mark()
    await plug(d, 2)
    await csms.wait_call("StatusNotification", status_is(2, "Preparing"), since=mark)
    res = await csms.call(CP_ID, "RemoteStartTransaction", {"connectorId": 2, "idTag": "REMOTE02"})
    assert res == {"status": "Accepted"}
    start = await csms.wait_call("StartTransaction", since=mark)
    assert start["payload"]["connectorId"] == 2 and start["payload"]["idTag"] == "REMOTE02"
    await csms.wait_call("StatusNotification", status_is(2, "Charging"), since=mark)
    assert strict_csms.strict_errors == [], no_strict_errors(strict_csms)


async def test_remote_stop_unknown_transaction_rejected(
    strict_csms: StrictCSMS, make_config: MakeConfig, daemon_factory: Factory
) -> None:
    csms = strict_csms
    d = await start_daemon(csms, make_config, daemon_factory, connectors=2)
    assert await csms.call(CP_ID, "RemoteStopTransaction", {"transactionId": 987654}) == {"status": "Rejected"}
    tx, _ = await start_local_session(d, csms, 1, "TAG0003")
    mark = csms.mark()
    assert await csms.call(CP_ID, "RemoteStopTransaction", {"transactionId": tx + 1000}) == {"status": "Rejected"}
    await asyncio.sleep(1)
    assert csms.calls_of("StopTransaction", mark) == []
    assert (await d.status())["connectors"][0]["transaction_id"] == tx
    assert strict_csms.strict_errors == [], no_strict_errors(strict_csms)


async def test_remote_start_rejected_when_connector_busy(
    strict_csms: StrictCSMS, make_config: MakeConfig, daemon_factory: Factory
) -> None:
    csms = strict_csms
    d = await start_daemon(csms, make_config, daemon_factory, connectors=1)
    await start_local_session(d, csms, 1, "TAG0004")
    res = await csms.call(CP_ID, "RemoteStartTransaction", {"connectorId": 1, "idTag": "OTHER"})
    assert res == {"status": "Rejected"}
    assert strict_csms.strict_errors == [], no_strict_errors(strict_csms)


STATUS_KEYS = {"charge_point_id", "ocpp", "connectors"}
CONNECTOR_KEYS = {
    "id",
    "status",
    "pilot_state",
    "offered_current_a",
    "power_w",
    "energy_wh",
    "transaction_id",
    "id_tag",
}


def _number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def check_status_shape(st: dict[str, Any], n_connectors: int) -> None:
    assert set(st) == STATUS_KEYS, st
    assert st["charge_point_id"] == CP_ID
    assert set(st["ocpp"]) == {"connected", "registration"}, st["ocpp"]
    assert isinstance(st["ocpp"]["connected"], bool)
    assert st["ocpp"]["registration"] in ("Accepted", "Pending", "Rejected", None)
    assert [c["id"] for c in st["connectors"]] == list(range(1, n_connectors + 1))
    for c in st["connectors"]:
        assert set(c) == CONNECTOR_KEYS, c
        assert c["status"] in CHARGE_POINT_STATUSES, c
        assert c["pilot_state"] in ("A", "B", "C", "D", "E", "F"), c
        for k in ("offered_current_a", "power_w", "energy_wh"):
            assert _number(c[k]), (k, c)
        assert c["transaction_id"] is None or (
            isinstance(c["transaction_id"], int) and not isinstance(c["transaction_id"], bool)
        ), c
        assert c["id_tag"] is None or isinstance(c["id_tag"], str), c


async def test_status_json_shape(strict_csms: StrictCSMS, make_config: MakeConfig, daemon_factory: Factory) -> None:
    csms = strict_csms
    await csms.set(nextTransactionId=17)
    d = await start_daemon(csms, make_config, daemon_factory, connectors=2)
    st = await d.status()
    check_status_shape(st, 2)
    assert st["ocpp"] == {"connected": True, "registration": "Accepted"}
    for c in st["connectors"]:
        assert c["status"] == "Available" and c["pilot_state"] == "A" and c["transaction_id"] is None
        assert c["id_tag"] is None and c["power_w"] == 0

    tx, _ = await start_local_session(d, csms, 1, "ABC123")
    assert tx == 17
    st = await d.wait_status(lambda s: s["connectors"][0]["power_w"] > 0)
    check_status_shape(st, 2)
    c1, c2 = st["connectors"]
    assert c1["status"] == "Charging" and c1["pilot_state"] == "C"
    assert c1["transaction_id"] == 17 and c1["id_tag"] == "ABC123"
    assert c1["offered_current_a"] > 0 and c1["energy_wh"] >= 0
    assert c2["status"] == "Available" and c2["transaction_id"] is None

    # human-readable status works too
    text = await d.ctl("status")
    assert text.strip()
    assert strict_csms.strict_errors == [], no_strict_errors(strict_csms)


async def test_unknown_tag_of_other_connector_does_not_stop(
    strict_csms: StrictCSMS, make_config: MakeConfig, daemon_factory: Factory
) -> None:
    """Two sessions at once; a second card starts connector 2 and does not stop connector 1."""
    csms = strict_csms
    d = await start_daemon(csms, make_config, daemon_factory, connectors=2)
    tx1, _ = await start_local_session(d, csms, 1, "TAGONE")
    tx2, _ = await start_local_session(d, csms, 2, "TAGTWO")
    assert tx1 != tx2
    st = await d.status()
    assert [c["transaction_id"] for c in st["connectors"]] == [tx1, tx2]
    assert csms.calls_of("StopTransaction") == []
    mark = csms.mark()
    await unplug(d, 2)
    stop = await csms.wait_call("StopTransaction", since=mark)
    assert stop["payload"]["transactionId"] == tx2
    assert (await d.status())["connectors"][0]["transaction_id"] == tx1
    assert strict_csms.strict_errors == [], no_strict_errors(strict_csms)
