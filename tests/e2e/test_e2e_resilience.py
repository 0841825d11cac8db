"""Reliability of transaction messages: CSMS outages, kill -9, SIGTERM (real daemon, strict CSMS)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from daemon_harness import CP_ID, Daemon
from ocpp_helpers import (
    answer_of,
    for_tx,
    measurands,
    no_strict_errors,
    plug,
    start_daemon,
    start_local_session,
    swipe,
    ts,
    unplug,
)
from strict_csms import StrictCSMS

MakeConfig = Callable[..., Path]
Factory = Callable[[Path], Daemon]
SLACK = timedelta(seconds=2)

# Fast retries so queued transaction messages go out promptly after reconnects.
FAST = {"TransactionMessageRetryInterval": 1, "TransactionMessageAttempts": 5}


def _now() -> datetime:
    return datetime.now(UTC)


def _sample_times(mv_calls: list[dict[str, Any]]) -> list[datetime]:
    return [ts(mv["timestamp"]) for c in mv_calls for mv in c["payload"]["meterValue"]]


def _assert_no_duplicates(calls: list[dict[str, Any]]) -> None:
    seen: set[tuple[Any, ...]] = set()
    for c in calls:
        p = c["payload"]
        key = (
            c["action"],
            p.get("connectorId"),
            p.get("transactionId"),
            tuple(mv["timestamp"] for mv in p.get("meterValue", [])),
            p.get("timestamp"),
        )
        assert key not in seen, f"duplicate {c['action']} delivered: {p}"
        seen.add(key)


async def test_csms_down_during_session_then_back(
    strict_csms: StrictCSMS, make_config: MakeConfig, daemon_factory: Factory
) -> None:
    csms = strict_csms
    d = await start_daemon(csms, make_config, daemon_factory, connectors=1, ocpp_config=FAST)
    tx, sp = await start_local_session(d, csms, 1, "TAGDOWN1")
    await csms.wait_call("MeterValues", for_tx(tx))

    t_down = _now()
    await csms.stop()
    await d.wait_status(lambda s: not s["ocpp"]["connected"], what="ocpp.connected false")
    c1 = await d.wait_connector(1, lambda c: True)
    e0 = c1["energy_wh"]
    # charging goes on offline; let a few 1-s samples queue up
    await d.wait_connector(1, lambda c: c["energy_wh"] > e0, timeout=10, what="energy increasing offline")
    await asyncio.sleep(3)
    await unplug(d, 1)
    await d.wait_connector(1, lambda c: c["transaction_id"] is None, what="transaction closed offline")
    t_up = _now()

    mark = csms.mark()
    await csms.listen()
    stop = await csms.wait_call("StopTransaction", since=mark, timeout=90)
    p = stop["payload"]
    assert p["transactionId"] == tx, "StopTransaction must carry the transactionId the CSMS returned"
    assert p["reason"] == "EVDisconnected", p
    assert p["meterStop"] >= sp["meterStart"]
    assert t_down - SLACK <= ts(p["timestamp"]) <= t_up + SLACK, "StopTransaction time is when it happened"

    stop_idx = csms.calls.index(stop)
    queued_mv = [c for c in csms.calls[mark:] if c["action"] == "MeterValues" and for_tx(tx)(c["payload"])]
    assert queued_mv, "transaction MeterValues sampled while the CSMS was down were not delivered"
    assert all(csms.calls.index(c) < stop_idx for c in queued_mv), "MeterValues after StopTransaction"
    offline = [t for t in _sample_times(queued_mv) if t_down - SLACK <= t <= t_up + SLACK]
    assert offline, f"no delivered MeterValues sampled during the outage ({t_down}..{t_up})"
    all_tx_mv = [c for c in csms.calls if c["action"] == "MeterValues" and for_tx(tx)(c["payload"])]
    times = _sample_times(all_tx_mv)
    assert times == sorted(times), "transaction MeterValues delivered out of order"
    for c in all_tx_mv:
        assert "Energy.Active.Import.Register" in measurands(c["payload"])
    _assert_no_duplicates([c for c in csms.calls if c["action"] in ("MeterValues", "StopTransaction")])
    assert len(csms.calls_of("StartTransaction")) == 1 and len(csms.calls_of("StopTransaction")) == 1
    await d.wait_status(lambda s: s["ocpp"]["connected"], what="reconnected")
    assert strict_csms.strict_errors == [], no_strict_errors(strict_csms)


async def test_transaction_started_while_csms_down(
    strict_csms: StrictCSMS, make_config: MakeConfig, daemon_factory: Factory
) -> None:
    csms = strict_csms
    await csms.set(nextTransactionId=4242)
    d = await start_daemon(
        csms,
        make_config,
        daemon_factory,
        connectors=1,
        ocpp_config={**FAST, "AllowOfflineTxForUnknownId": True, "LocalAuthorizeOffline": True},
    )
    await csms.stop()
    await d.wait_status(lambda s: not s["ocpp"]["connected"], what="ocpp.connected false")
    t_down = _now()
    await plug(d, 1)
    await swipe(d, "OFFLINE1")
    c1 = await d.wait_connector(1, lambda c: c["power_w"] > 0, what="charging offline")
    assert c1["transaction_id"] is None, "no CSMS transaction id can be known while offline"
    assert c1["id_tag"] == "OFFLINE1"
    await asyncio.sleep(3)  # offline MeterValues queue up
    t_up = _now()

    mark = csms.mark()
    await csms.listen()
    start = await csms.wait_call("StartTransaction", since=mark, timeout=90)
    sp = start["payload"]
    assert sp["idTag"] == "OFFLINE1" and sp["connectorId"] == 1
    assert t_down - SLACK <= ts(sp["timestamp"]) <= t_up + SLACK, "StartTransaction time is when it started"
    assert (await answer_of(csms, start))["transactionId"] == 4242
    start_idx = csms.calls.index(start)
    mv = await csms.wait_call("MeterValues", for_tx(4242), since=mark, timeout=30)
    assert csms.calls.index(mv) > start_idx
    await d.wait_connector(1, lambda c: c["transaction_id"] == 4242, what="transaction_id 4242 in status")

    stop_mark = csms.mark()
    await unplug(d, 1)
    stop = await csms.wait_call("StopTransaction", since=stop_mark, timeout=30)
    assert stop["payload"]["transactionId"] == 4242 and stop["payload"]["reason"] == "EVDisconnected"
    assert stop["payload"]["meterStop"] >= sp["meterStart"]

    for c in csms.calls[mark:]:
        if c["action"] in ("MeterValues", "StopTransaction") and "transactionId" in c["payload"]:
            assert c["payload"]["transactionId"] == 4242, f"{c['action']} with a made-up transactionId: {c}"
            assert csms.calls.index(c) > start_idx, f"{c['action']} sent before StartTransaction"
    tx_mv = [c for c in csms.calls if c["action"] == "MeterValues" and "transactionId" in c["payload"]]
    assert [t for t in _sample_times(tx_mv) if t <= t_up + SLACK], "offline MeterValues were lost"
    times = _sample_times(tx_mv)
    assert times == sorted(times)
    _assert_no_duplicates([c for c in csms.calls if c["action"] in ("MeterValues", "StopTransaction")])
    assert len(csms.calls_of("StartTransaction")) == 1 and len(csms.calls_of("StopTransaction")) == 1
    assert strict_csms.strict_errors == [], no_strict_errors(strict_csms)


async def test_kill9_during_session_then_restart(
    strict_csms: StrictCSMS, make_config: MakeConfig, daemon_factory: Factory
) -> None:
    csms = strict_csms
    d = await start_daemon(csms, make_config, daemon_factory, connectors=1, ocpp_config=FAST)
    tx, sp = await start_local_session(d, csms, 1, "TAGKILL9")
    mv = await csms.wait_call("MeterValues", for_tx(tx))
    mv = await csms.wait_call("MeterValues", for_tx(tx), since=csms.calls.index(mv) + 1)
    await answer_of(csms, mv)
    # Kill between two samples, not inside the few ms between the CSMS's answer and the daemon
    # recording it (a crash there makes any at-least-once sender repeat that one message).
    await asyncio.sleep(0.4)
    em = csms.event_mark()
    await d.kill9()
    t_kill = _now()
    await csms.wait_event("disconnected", lambda e: e["identity"] == CP_ID, since=em)
    await asyncio.sleep(4)  # the charger stays without power for a while

    mark = csms.mark()
    d.start()
    await d.wait_ready()
    boot = await csms.wait_call("BootNotification", since=mark, timeout=30)
    st = await d.wait_status(lambda s: s["ocpp"]["registration"] == "Accepted", what="Accepted after restart")
    c1 = st["connectors"][0]
    if c1["transaction_id"] == tx:
        # the board still has the EV plugged: the session survived; end it normally
        await unplug(d, 1)
        expected_reason = "EVDisconnected"
    else:
        expected_reason = "PowerLoss"
    stop = await csms.wait_call("StopTransaction", for_tx(tx), timeout=60)
    p = stop["payload"]
    assert p["reason"] == expected_reason, p
    assert p["meterStop"] >= sp["meterStart"]
    if expected_reason == "PowerLoss":
        # the transaction ended when power was lost, not when the charger came back 4 s later
        assert ts(p["timestamp"]) <= t_kill + timedelta(seconds=1.5), (
            f"PowerLoss StopTransaction stamped {p['timestamp']}, power was lost at {t_kill.isoformat()}"
        )
        assert csms.calls.index(stop) > csms.calls.index(boot)
    await d.wait_connector(1, lambda c: c["transaction_id"] is None)
    await asyncio.sleep(3)  # anything duplicated would have been resent by now
    starts = csms.calls_of("StartTransaction")
    assert len(starts) == 1, f"StartTransaction delivered {len(starts)} times"
    assert len([c for c in csms.calls_of("StopTransaction") if c["payload"]["transactionId"] == tx]) == 1
    _assert_no_duplicates([c for c in csms.calls if c["action"] in ("MeterValues", "StopTransaction")])
    tx_mv = [c for c in csms.calls if c["action"] == "MeterValues" and for_tx(tx)(c["payload"])]
    times = _sample_times(tx_mv)
    assert times == sorted(times)
    assert all(csms.calls.index(c) < csms.calls.index(stop) for c in tx_mv)
    assert strict_csms.strict_errors == [], no_strict_errors(strict_csms)


async def test_sigterm_during_session(
    strict_csms: StrictCSMS, make_config: MakeConfig, daemon_factory: Factory
) -> None:
    """A controlled shutdown (systemctl stop / reboot) while charging.

    What a real charger does: stop energy delivery, end the transaction with StopTransaction
    reason Reboot ("locally initiated reset/reboot") — Other is tolerated —, deliver it while the
    CSMS is reachable, close the WebSocket cleanly, exit 0; never resend it after the restart.
    """
    csms = strict_csms
    d = await start_daemon(csms, make_config, daemon_factory, connectors=1, ocpp_config=FAST)
    tx, sp = await start_local_session(d, csms, 1, "TAGTERM1")
    await csms.wait_call("MeterValues", for_tx(tx))
    mark = csms.mark()
    em = csms.event_mark()
    t0 = time.monotonic()
    rc = await d.terminate(timeout=5)
    elapsed = time.monotonic() - t0
    assert rc == 0, f"exit code {rc} after SIGTERM (elapsed {elapsed:.1f}s)"
    disc = await csms.wait_event("disconnected", lambda e: e["identity"] == CP_ID, since=em, timeout=5)
    assert disc["code"] in (1000, 1001), f"WebSocket not closed cleanly: {disc}"
    stops_before_close = [
        c for c in csms.calls_of("StopTransaction", mark) if csms.events.index(c) < csms.events.index(disc)
    ]

    # restart: whatever was persisted is delivered now, and nothing twice
    mark2 = csms.mark()
    d.start()
    await d.wait_ready()
    await csms.wait_call("BootNotification", since=mark2, timeout=30)
    await d.wait_status(lambda s: s["ocpp"]["registration"] == "Accepted")
    await d.wait_connector(1, lambda c: c["transaction_id"] is None, timeout=20)
    await asyncio.sleep(3)
    stops = [c for c in csms.calls_of("StopTransaction") if c["payload"]["transactionId"] == tx]
    summary = [(c["payload"]["reason"], "before close" if c in stops_before_close else "after restart") for c in stops]
    assert len(stops) == 1, f"StopTransaction for {tx} delivered {len(stops)} times: {summary}"
    assert stops_before_close, (
        f"StopTransaction not sent before the clean shutdown closed the connection (CSMS was up): {summary}"
    )
    p = stops[0]["payload"]
    assert p["reason"] in ("Reboot", "Other"), f"controlled shutdown stopped with reason {p['reason']}"
    assert p["meterStop"] >= sp["meterStart"]
    assert len(csms.calls_of("StartTransaction")) == 1
    assert strict_csms.strict_errors == [], no_strict_errors(strict_csms)


async def test_sigterm_idle_exits_zero(
    strict_csms: StrictCSMS, make_config: MakeConfig, daemon_factory: Factory
) -> None:
    csms = strict_csms
    d = await start_daemon(csms, make_config, daemon_factory, connectors=1)
    em = csms.event_mark()
    t0 = time.monotonic()
    assert await d.terminate(timeout=5) == 0
    assert time.monotonic() - t0 < 5
    disc = await csms.wait_event("disconnected", lambda e: e["identity"] == CP_ID, since=em, timeout=5)
    assert disc["code"] in (1000, 1001), disc
    assert strict_csms.strict_errors == [], no_strict_errors(strict_csms)


async def test_csms_closes_connection_daemon_reconnects(
    strict_csms: StrictCSMS, make_config: MakeConfig, daemon_factory: Factory
) -> None:
    csms = strict_csms
    d = await start_daemon(csms, make_config, daemon_factory, connectors=1, heartbeat=2)
    em = csms.event_mark()
    await csms.close_client(CP_ID, code=1001)
    await csms.wait_event("connected", lambda e: e["identity"] == CP_ID, since=em, timeout=60)
    mark = csms.mark()
    await csms.wait_call("Heartbeat", since=mark, timeout=15)
    tx, _ = await start_local_session(d, csms, 1, "TAGRECON")
    assert tx >= 1
    assert strict_csms.strict_errors == [], no_strict_errors(strict_csms)


async def test_unanswered_stop_transaction_is_retried(
    strict_csms: StrictCSMS, make_config: MakeConfig, daemon_factory: Factory
) -> None:
    """The CSMS never answers the first StopTransaction: after the call timeout the daemon sends it
    again (transaction messages must not be lost), and sends no other CALL while one is outstanding
    (OCPP-J 1.6 §4.1.1). Slow: waits for the daemon's call timeout (30 s)."""
    csms = strict_csms
    d = await start_daemon(csms, make_config, daemon_factory, connectors=1, ocpp_config=FAST)
    tx, _ = await start_local_session(d, csms, 1, "TAGSLOW1")
    await csms.set(respond={"StopTransaction": False})
    mark = csms.mark()
    await unplug(d, 1)
    first = await csms.wait_call("StopTransaction", since=mark)
    await csms.set(respond=True)
    second = await csms.wait_call("StopTransaction", since=csms.calls.index(first) + 1, timeout=90)
    # until it times out (the daemon's call timeout is well above 20 s) nothing else may be sent
    between = [
        (c["action"], round((c["ts"] - first["ts"]) / 1000, 1))
        for c in csms.calls[csms.calls.index(first) + 1 : csms.calls.index(second)]
        if c["ts"] - first["ts"] < 20_000
    ]
    assert between == [], f"CALLs sent while StopTransaction was outstanding (action, s after): {between}"
    assert second["ts"] - first["ts"] >= 5_000, "retried before any reasonable call timeout"
    assert second["payload"] == first["payload"], "the retry must carry the same StopTransaction"
    assert second["payload"]["transactionId"] == tx
    await answer_of(csms, second)
    await d.wait_connector(1, lambda c: c["status"] == "Available" and c["transaction_id"] is None)
    await asyncio.sleep(2)
    assert len(csms.calls_of("StopTransaction")) == 2
    assert strict_csms.strict_errors == [], no_strict_errors(strict_csms)
