"""Metering, restarts, CSMS outages and CALLERROR retries: the real daemon against the strict CSMS.

Complements test_e2e_resilience.py (which covers the basic outage / kill -9 / SIGTERM paths) with:
- MeterValues content (every supported measurand, phases, units, contexts) and live reconfiguration;
- clock-aligned samples (Sample.Clock on exact UTC boundaries, idle and in a transaction);
- StopTransaction.transactionData (Transaction.Begin ... Transaction.End, none when both lists are empty);
- restarts after kill -9 with the EV still plugged (resumed, or closed when resume_transactions = false),
  with the EV gone while the daemon was down, and a transaction started offline and killed before delivery;
- status re-sending after an outage (current status per connector, not the intermediate ones);
- TransactionMessageAttempts / TransactionMessageRetryInterval after CALLERROR and transactionId -1 (errata 3.18).

Spec: OCPP 1.6 ed. 2 sections 3.16, 4.7, 4.8, 4.10; errata v4.0 3.13/3.14 (metering chapter) and 3.18.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import sqlite3
import tomllib
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
Payload = dict[str, Any]

ENERGY = "Energy.Active.Import.Register"
ALL_MEASURANDS = [
    ENERGY,
    "Power.Active.Import",
    "Power.Offered",
    "Current.Import",
    "Current.Offered",
    "Voltage",
    "Frequency",
]
UNITS = {
    ENERGY: "Wh",
    "Power.Active.Import": "W",
    "Power.Offered": "W",
    "Current.Import": "A",
    "Current.Offered": "A",
    "Voltage": "V",
}
FAST = {"TransactionMessageRetryInterval": 1, "TransactionMessageAttempts": 5}
# Reconnect quickly after a CSMS outage or a restart (the default backoff goes up to 60 s).
QUICK_RECONNECT = {"reconnect_min_s": 0.2, "reconnect_max_s": 1.0}
OFFLINE_TX = {"AllowOfflineTxForUnknownId": True, "LocalAuthorizeOffline": True}


# ---------------------------------------------------------------------------- helpers


def _now() -> datetime:
    return datetime.now(UTC)


def _idx(csms: StrictCSMS, ev: dict[str, Any]) -> int:
    for i, c in enumerate(csms.calls):
        if c is ev:
            return i
    raise AssertionError(f"{ev} is not a recorded call")


async def _collect(
    csms: StrictCSMS,
    action: str,
    predicate: Callable[[Payload], bool],
    n: int,
    since: int,
    timeout: float = 30,
) -> list[dict[str, Any]]:
    """The first n CALLs of action (matching predicate) at index >= since."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    out: list[dict[str, Any]] = []
    idx = since
    while len(out) < n:
        ev = await csms.wait_call(action, predicate, since=idx, timeout=max(0.1, deadline - loop.time()))
        out.append(ev)
        idx = _idx(csms, ev) + 1
    return out


def _sample_time(p: Payload) -> datetime:
    return ts(p["meterValue"][0]["timestamp"])


def _contexts(p: Payload) -> set[str]:
    return {sv.get("context", "Sample.Periodic") for mv in p["meterValue"] for sv in mv["sampledValue"]}


def _is_clock(p: Payload) -> bool:
    return "Sample.Clock" in _contexts(p)


def _is_periodic(p: Payload) -> bool:
    return "Sample.Periodic" in _contexts(p)


def _energy(svs: list[dict[str, Any]]) -> float:
    values = [float(sv["value"]) for sv in svs if sv.get("measurand", ENERGY) == ENERGY]
    assert len(values) == 1, f"expected one energy register value in {svs}"
    return values[0]


def _mv_energy(p: Payload) -> float:
    return _energy(p["meterValue"][0]["sampledValue"])


def _tx_mvs(csms: StrictCSMS, tx: int, since: int = 0) -> list[dict[str, Any]]:
    return [c for c in csms.calls[since:] if c["action"] == "MeterValues" and c["payload"].get("transactionId") == tx]


def _assert_in_order_once(calls: list[dict[str, Any]]) -> None:
    """Transaction MeterValues delivered in sampling order, nothing twice."""
    seen: set[tuple[Any, ...]] = set()
    for c in calls:
        p = c["payload"]
        key = (c["action"], p.get("connectorId"), p.get("transactionId"),
               tuple(mv["timestamp"] for mv in p.get("meterValue", [])), p.get("timestamp"))
        assert key not in seen, f"{c['action']} delivered twice: {p}"
        seen.add(key)
    # Per kind: a periodic sample taken a few ms after a clock boundary may be queued just before the
    # clock-aligned reading stamped with the boundary itself, when both fall due in the same timer tick.
    for kind in (_is_periodic, _is_clock):
        times = [_sample_time(c["payload"]) for c in calls if c["action"] == "MeterValues" and kind(c["payload"])]
        assert times == sorted(times), f"transaction MeterValues out of order: {[t.isoformat() for t in times]}"


async def _queued(d: Daemon) -> int:
    """Transaction messages waiting in the daemon's queue (from `evsectl status`, not part of --json)."""
    m = re.search(r"(\d+) transaction message\(s\) queued", await d.ctl("status"))
    return int(m.group(1)) if m else 0


def _storage_dir(d: Daemon) -> Path:
    return Path(tomllib.loads(d.config_path.read_text())["storage"]["dir"])


def _persisted_transaction(d: Daemon, csms_tx_id: int) -> dict[str, Any]:
    """The daemon's own record of a transaction (read while the daemon is dead)."""
    db = sqlite3.connect(f"file:{_storage_dir(d) / 'evsed.sqlite3'}?mode=ro", uri=True)
    try:
        db.row_factory = sqlite3.Row
        row = db.execute("SELECT * FROM transactions WHERE csms_tx_id = ?", (csms_tx_id,)).fetchone()
        assert row is not None, f"no persisted transaction with csms_tx_id {csms_tx_id}"
        return dict(row)
    finally:
        db.close()


def _set_ev_plugged(d: Daemon, connector: int, plugged: bool) -> None:
    """Change the simulated physical world while the daemon is down (storage/sim-world.json)."""
    path = _storage_dir(d) / "sim-world.json"
    world = json.loads(path.read_text(encoding="utf-8"))
    world["ev"][str(connector)]["plugged"] = plugged
    path.write_text(json.dumps(world), encoding="utf-8")


async def _kill_between_samples(d: Daemon, csms: StrictCSMS, tx: int) -> tuple[datetime, dict[str, Any]]:
    """kill -9 right after a MeterValues was answered; returns (kill time, last delivered MeterValues)."""
    mv = await csms.wait_call("MeterValues", for_tx(tx))
    mv = await csms.wait_call("MeterValues", for_tx(tx), since=_idx(csms, mv) + 1)
    await answer_of(csms, mv)
    # Not in the few ms between the CSMS's answer and the daemon recording it (a crash there makes any
    # at-least-once sender repeat that one message).
    await asyncio.sleep(0.4)
    em = csms.event_mark()
    await d.kill9()
    t_kill = _now()
    await csms.wait_event("disconnected", lambda e: e["identity"] == CP_ID, since=em)
    return t_kill, mv


async def _restart(d: Daemon, csms: StrictCSMS) -> tuple[int, dict[str, Any]]:
    """Start the daemon again; returns (calls mark before the start, its BootNotification)."""
    mark = csms.mark()
    d.start()
    await d.wait_ready()
    boot = await csms.wait_call("BootNotification", since=mark, timeout=30)
    await d.wait_status(lambda s: s["ocpp"]["registration"] == "Accepted", what="Accepted after restart")
    return mark, boot


def _check_sampled_values(p: Payload, context: str) -> dict[str, list[dict[str, Any]]]:
    """Shape of every sampledValue of one MeterValues: strings, units, phases, context."""
    by = measurands(p)
    for name, svs in by.items():
        for sv in svs:
            assert isinstance(sv["value"], str), f"{name} value must be a string: {sv}"
            float(sv["value"])  # a number written as a string (Raw format)
            assert sv.get("context", "Sample.Periodic") == context, sv
            if name == "Frequency":
                assert "unit" not in sv, f"Frequency has no UnitOfMeasure in OCPP 1.6: {sv}"
            else:
                assert sv.get("unit", "Wh") == UNITS[name], f"{name} in {sv.get('unit')}: {sv}"
    if "Current.Import" in by:
        assert sorted(sv.get("phase") for sv in by["Current.Import"]) == ["L1", "L2", "L3"], by["Current.Import"]
    if "Voltage" in by:
        assert sorted(sv.get("phase") for sv in by["Voltage"]) == ["L1-N", "L2-N", "L3-N"], by["Voltage"]
    for name in (ENERGY, "Power.Active.Import", "Power.Offered", "Current.Offered", "Frequency"):
        if name in by:
            assert len(by[name]) == 1 and "phase" not in by[name][0], f"{name}: {by[name]}"
    return by


def _on_boundary(t: datetime, interval: int) -> bool:
    return t.microsecond == 0 and int(t.timestamp()) % interval == 0


# ---------------------------------------------------------------------------- 1. metering


async def test_sampled_meter_values_all_measurands_and_live_reconfiguration(
    strict_csms: StrictCSMS, make_config: MakeConfig, daemon_factory: Factory
) -> None:
    csms = strict_csms
    d = await start_daemon(csms, make_config, daemon_factory, connectors=1, ocpp_config=FAST)
    assert await change_config(csms, "MeterValuesSampledData", ",".join(ALL_MEASURANDS)) == "Accepted"
    # errata 3.14.4: a list with a measurand this charge point cannot measure is Rejected, nothing changes
    for bad in (f"{ENERGY},SoC", "Temperature", f"{ENERGY},Energy.Reactive.Import.Register"):
        assert await change_config(csms, "MeterValuesSampledData", bad) == "Rejected", bad
    sampled = (await get_config(csms, "MeterValuesSampledData"))["MeterValuesSampledData"]
    assert (sampled or "").split(",") == ALL_MEASURANDS

    tx, sp = await start_local_session(d, csms, 1, "TAGMETER")
    charging = await _collect(
        csms, "MeterValues",
        lambda p: p.get("transactionId") == tx and float(measurands(p)["Power.Active.Import"][0]["value"]) > 0,
        n=4, since=0,
    )
    for c in charging:
        p = c["payload"]
        assert p["connectorId"] == 1 and len(p["meterValue"]) == 1, p
        by = _check_sampled_values(p, "Sample.Periodic")
        assert sorted(by) == sorted(ALL_MEASURANDS), f"measurands {sorted(by)}"
        volts = [float(sv["value"]) for sv in by["Voltage"]]
        amps = [float(sv["value"]) for sv in by["Current.Import"]]
        offered_a = float(by["Current.Offered"][0]["value"])
        power = float(by["Power.Active.Import"][0]["value"])
        assert all(200 <= v <= 260 for v in volts), volts
        assert all(0 < a <= offered_a + 0.5 for a in amps), f"3-phase EV: {amps} A, {offered_a} A offered"
        assert abs(power - sum(v * a for v, a in zip(volts, amps, strict=True))) <= 0.05 * power + 50, p
        assert float(by["Power.Offered"][0]["value"]) >= power - 50
        assert abs(float(by["Frequency"][0]["value"]) - 50) < 1
    energies = [_mv_energy(c["payload"]) for c in charging]
    assert energies == sorted(energies) and energies[0] >= sp["meterStart"], energies
    times = [_sample_time(c["payload"]) for c in charging]
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(times)]
    assert all(0.3 <= g <= 2.0 for g in gaps), f"MeterValueSampleInterval 1 s, gaps {gaps}"
    assert 0.8 <= (times[-1] - times[0]).total_seconds() / len(gaps) <= 1.3, gaps
    # one MeterValues per interval: nothing else sampled for the transaction between those four
    between = [c for c in _tx_mvs(csms, tx) if times[0] < _sample_time(c["payload"]) < times[-1]]
    assert len(between) == 2, [c["payload"]["meterValue"][0]["timestamp"] for c in between]

    # MeterValueSampleInterval changed during the transaction: the next sample follows the new interval
    t_change = _now()
    assert await change_config(csms, "MeterValueSampleInterval", "3") == "Accepted"
    t_changed = _now()
    later = await _collect(
        csms, "MeterValues", lambda p: p.get("transactionId") == tx and _sample_time(p) > t_changed,
        n=3, since=0, timeout=30,
    )
    times = [_sample_time(c["payload"]) for c in later]
    assert times[0] >= t_change + timedelta(seconds=2.75), (
        f"sampled {times[0].isoformat()} after MeterValueSampleInterval changed to 3 s at {t_change.isoformat()}"
    )
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(times)]
    assert all(2.7 <= g <= 4.5 for g in gaps), f"MeterValueSampleInterval 3 s, gaps {gaps}"
    assert (await get_config(csms, "MeterValueSampleInterval"))["MeterValueSampleInterval"] == "3"

    # 0 = no sampled data (errata 3.14.1); back to 1 s, sampling resumes
    assert await change_config(csms, "MeterValueSampleInterval", "0") == "Accepted"
    t_off = _now()
    await asyncio.sleep(4)
    off = [c for c in _tx_mvs(csms, tx) if _sample_time(c["payload"]) > t_off + timedelta(seconds=0.1)]
    assert off == [], f"sampled although MeterValueSampleInterval is 0: {[c['payload'] for c in off]}"
    t_on = _now()
    assert await change_config(csms, "MeterValueSampleInterval", "1") == "Accepted"
    back = await csms.wait_call(
        "MeterValues", lambda p: p.get("transactionId") == tx and _sample_time(p) > t_on, timeout=15
    )
    assert _sample_time(back["payload"]) <= t_on + timedelta(seconds=2.5), "sampling did not resume"

    # MeterValuesSampledData changed: the next MeterValues carries the new set
    t_change = _now()
    assert await change_config(csms, "MeterValuesSampledData", f"Current.Import,{ENERGY}") == "Accepted"
    nxt = await csms.wait_call(
        "MeterValues", lambda p: p.get("transactionId") == tx and _sample_time(p) > t_change, timeout=15
    )
    by = _check_sampled_values(nxt["payload"], "Sample.Periodic")
    assert sorted(by) == sorted(["Current.Import", ENERGY]), f"after the change: {sorted(by)}"

    mark = csms.mark()
    await unplug(d, 1)
    stop = await csms.wait_call("StopTransaction", since=mark)
    assert stop["payload"]["transactionId"] == tx and stop["payload"]["reason"] == "EVDisconnected"
    assert "transactionData" not in stop["payload"], "StopTxnSampledData/AlignedData are empty by default"
    _assert_in_order_once(_tx_mvs(csms, tx))
    assert csms.strict_errors == [], no_strict_errors(csms)


async def test_clock_aligned_meter_values_idle_and_in_transaction(
    strict_csms: StrictCSMS, make_config: MakeConfig, daemon_factory: Factory
) -> None:
    csms = strict_csms
    d = await start_daemon(
        csms, make_config, daemon_factory, connectors=2, ocpp_config={**FAST, "MeterValueSampleInterval": 2}
    )
    aligned = [ENERGY, "Voltage", "Frequency"]
    assert await change_config(csms, "MeterValuesAlignedData", ",".join(aligned)) == "Accepted"
    assert await change_config(csms, "MeterValuesAlignedData", f"{ENERGY},SoC") == "Rejected"
    mark = csms.mark()
    t_set = _now()
    assert await change_config(csms, "ClockAlignedDataInterval", "5") == "Accepted"

    # Idle: a Sample.Clock MeterValues per connector on every 5-s boundary, outside any transaction
    idle = await _collect(csms, "MeterValues", _is_clock, n=4, since=mark, timeout=30)
    boundaries: dict[datetime, set[int]] = {}
    for c in idle:
        p = c["payload"]
        assert "transactionId" not in p, f"clock-aligned reading outside a transaction with a transactionId: {p}"
        assert len(p["meterValue"]) == 1
        t = _sample_time(p)
        assert p["meterValue"][0]["timestamp"].endswith("Z"), p["meterValue"][0]["timestamp"]
        assert _on_boundary(t, 5), f"Sample.Clock stamped {p['meterValue'][0]['timestamp']}, not on a 5-s boundary"
        assert t > t_set - timedelta(seconds=0.5)
        sent_at = datetime.fromtimestamp(c["ts"] / 1000, UTC)
        assert timedelta(seconds=-0.5) <= sent_at - t <= timedelta(seconds=3), (
            f"reading for {t.isoformat()} sent at {sent_at.isoformat()}"
        )
        by = _check_sampled_values(p, "Sample.Clock")
        assert sorted(by) == sorted(aligned), sorted(by)
        boundaries.setdefault(t, set()).add(p["connectorId"])
    assert list(boundaries.values()) == [{1, 2}, {1, 2}], f"connectors per boundary: {boundaries}"
    first, second = sorted(boundaries)
    assert (second - first).total_seconds() == 5

    # In a transaction: the same readings now carry its transactionId (connector 2 stays idle)
    tx, sp = await start_local_session(d, csms, 1, "TAGCLOCK")
    mark = csms.mark()
    in_tx = await csms.wait_call(
        "MeterValues", lambda p: _is_clock(p) and p.get("transactionId") == tx, since=mark, timeout=20
    )
    t = _sample_time(in_tx["payload"])
    assert _on_boundary(t, 5), in_tx["payload"]
    assert in_tx["payload"]["connectorId"] == 1 and _contexts(in_tx["payload"]) == {"Sample.Clock"}
    assert _mv_energy(in_tx["payload"]) >= sp["meterStart"]
    idle2 = await csms.wait_call(
        "MeterValues", lambda p: _is_clock(p) and p["connectorId"] == 2 and _sample_time(p) == t, since=mark
    )
    assert "transactionId" not in idle2["payload"]
    # periodic samples go on beside the clock-aligned ones
    await csms.wait_call("MeterValues", lambda p: _is_periodic(p) and p.get("transactionId") == tx, since=mark)

    # ClockAlignedDataInterval 0: no more clock-aligned readings
    assert await change_config(csms, "ClockAlignedDataInterval", "0") == "Accepted"
    t_off = _now()
    await asyncio.sleep(6)
    late = [c for c in csms.calls_of("MeterValues", mark)
            if _is_clock(c["payload"]) and _sample_time(c["payload"]) > t_off]
    assert late == [], f"Sample.Clock after ClockAlignedDataInterval=0: {[c['payload'] for c in late]}"

    mark = csms.mark()
    await unplug(d, 1)
    stop = await csms.wait_call("StopTransaction", since=mark)
    assert stop["payload"]["transactionId"] == tx
    _assert_in_order_once(_tx_mvs(csms, tx))
    assert csms.strict_errors == [], no_strict_errors(csms)


async def test_stop_transaction_data_begin_sampled_aligned_end(
    strict_csms: StrictCSMS, make_config: MakeConfig, daemon_factory: Factory
) -> None:
    csms = strict_csms
    d = await start_daemon(csms, make_config, daemon_factory, connectors=1, ocpp_config=FAST)
    sampled = [ENERGY, "Current.Import"]
    aligned = [ENERGY, "Power.Active.Import"]
    assert await change_config(csms, "StopTxnSampledData", ",".join(sampled)) == "Accepted"
    assert await change_config(csms, "StopTxnAlignedData", ",".join(aligned)) == "Accepted"
    assert await change_config(csms, "StopTxnSampledData", f"{ENERGY},SoC") == "Rejected"
    assert await change_config(csms, "StopTxnAlignedData", "RPM") == "Rejected"
    assert await change_config(csms, "ClockAlignedDataInterval", "2") == "Accepted"
    max_values = int((await get_config(csms, "StopTransactionMaxMeterValues"))["StopTransactionMaxMeterValues"]
                     or 0)

    tx, sp = await start_local_session(d, csms, 1, "TAGSTOPD")
    # let a few periodic (1 s) and clock-aligned (2 s) points fall inside the transaction
    await _collect(csms, "MeterValues", lambda p: p.get("transactionId") == tx and _is_clock(p), n=2, since=0)
    mark = csms.mark()
    await unplug(d, 1)
    stop = await csms.wait_call("StopTransaction", since=mark)
    p = stop["payload"]
    assert p["transactionId"] == tx and p["reason"] == "EVDisconnected"
    data = p.get("transactionData")
    assert data, f"StopTxnSampledData/StopTxnAlignedData set, but no transactionData: {p}"
    assert 3 <= len(data) <= max_values, len(data)

    begin, end, middle = data[0], data[-1], data[1:-1]
    assert {sv.get("context") for sv in begin["sampledValue"]} == {"Transaction.Begin"}, begin
    assert {sv.get("context") for sv in end["sampledValue"]} == {"Transaction.End"}, end
    for mv in (begin, end):
        by = _check_sampled_values({"meterValue": [mv]}, mv["sampledValue"][0]["context"])
        assert sorted(by) == sorted({*sampled, *aligned}), f"{mv['sampledValue'][0]['context']}: {sorted(by)}"
    assert ts(begin["timestamp"]) == ts(sp["timestamp"]), "Transaction.Begin is taken when the transaction started"
    assert ts(end["timestamp"]) == ts(p["timestamp"]), "Transaction.End is taken when the transaction stopped"
    assert abs(_energy(begin["sampledValue"]) - sp["meterStart"]) < 1
    assert abs(_energy(end["sampledValue"]) - p["meterStop"]) < 1

    periodic = clock = 0
    for mv in middle:
        for sv in mv["sampledValue"]:
            ctx, name = sv.get("context"), sv.get("measurand", ENERGY)
            assert ctx in ("Sample.Periodic", "Sample.Clock"), mv
            if ctx == "Sample.Periodic":
                periodic += 1
                assert name in sampled, f"{name} is not in StopTxnSampledData: {mv}"
            else:
                clock += 1
                assert name in aligned, f"{name} is not in StopTxnAlignedData: {mv}"
                assert _on_boundary(ts(mv["timestamp"]), 2), f"clock-aligned value off the boundary: {mv}"
    assert periodic and clock, f"transactionData lacks sampled ({periodic}) or aligned ({clock}) values: {data}"
    times = [ts(mv["timestamp"]) for mv in data]
    assert times == sorted(times) and len(set(times)) == len(times), [mv["timestamp"] for mv in data]
    energies = [_energy([sv for sv in mv["sampledValue"] if sv.get("measurand", ENERGY) == ENERGY][:1])
                for mv in data]
    assert energies == sorted(energies), energies

    # errata 3.14.5: both lists empty -> no meter values in StopTransaction
    assert await change_config(csms, "StopTxnSampledData", "") == "Accepted"
    assert await change_config(csms, "StopTxnAlignedData", "") == "Accepted"
    tx2, _ = await start_local_session(d, csms, 1, "TAGSTOP2")
    await csms.wait_call("MeterValues", lambda p: p.get("transactionId") == tx2 and _is_clock(p))
    mark = csms.mark()
    await unplug(d, 1)
    stop2 = await csms.wait_call("StopTransaction", since=mark)
    assert stop2["payload"]["transactionId"] == tx2
    assert "transactionData" not in stop2["payload"], stop2["payload"]
    assert csms.strict_errors == [], no_strict_errors(csms)


# ---------------------------------------------------------------------------- 2. restarts


async def test_kill9_ev_still_plugged_transaction_resumed(
    strict_csms: StrictCSMS, make_config: MakeConfig, daemon_factory: Factory
) -> None:
    csms = strict_csms
    d = await start_daemon(
        csms, make_config, daemon_factory, connectors=1, ocpp=QUICK_RECONNECT,
        ocpp_config={**FAST, "StopTxnSampledData": ENERGY},
    )
    tx, sp = await start_local_session(d, csms, 1, "TAGRESUM")
    t_kill, last_mv = await _kill_between_samples(d, csms, tx)
    await asyncio.sleep(1)

    mark, boot = await _restart(d, csms)
    t_up = _now()
    await d.wait_connector(1, lambda c: c["transaction_id"] == tx and c["power_w"] > 0, what="resumed, charging")
    # sampling goes on for the same transaction
    post = await _collect(
        csms, "MeterValues", lambda p: p.get("transactionId") == tx and _sample_time(p) > t_up, n=2, since=mark
    )
    assert _mv_energy(post[0]["payload"]) >= _mv_energy(last_mv["payload"])
    assert csms.calls_of("StartTransaction", mark) == [], "a resumed transaction must not be started again"
    assert csms.calls_of("StopTransaction", mark) == [], "the transaction was stopped although the EV is there"
    after_boot = [c["payload"]["status"] for c in csms.calls_of("StatusNotification", mark)
                  if c["payload"]["connectorId"] == 1]
    assert after_boot, "no StatusNotification for connector 1 after the restart"
    assert after_boot[-1] == "Charging", after_boot
    assert not {"Available", "Preparing", "Finishing"} & set(after_boot), (
        f"connector 1 reported {after_boot} after the restart though its transaction went on"
    )

    stop_mark = csms.mark()
    await unplug(d, 1)
    stop = await csms.wait_call("StopTransaction", since=stop_mark)
    p = stop["payload"]
    assert p["transactionId"] == tx and p["reason"] == "EVDisconnected", p
    assert p["meterStop"] >= int(_mv_energy(post[-1]["payload"]))
    # transactionData spans both runs: Begin from before the kill, samples from both sides, End at the unplug
    data = p.get("transactionData") or []
    assert data and {sv["context"] for sv in data[0]["sampledValue"]} == {"Transaction.Begin"}, data[:1]
    assert ts(data[0]["timestamp"]) == ts(sp["timestamp"])
    assert {sv["context"] for sv in data[-1]["sampledValue"]} == {"Transaction.End"}, data[-1:]
    assert ts(data[-1]["timestamp"]) == ts(p["timestamp"])
    periodic = [ts(mv["timestamp"]) for mv in data if mv["sampledValue"][0]["context"] == "Sample.Periodic"]
    assert any(t < t_kill for t in periodic) and any(t > t_up for t in periodic), (
        f"sampled transactionData lost across the restart: {[mv['timestamp'] for mv in data]}"
    )
    energies = [_energy(mv["sampledValue"]) for mv in data]
    assert energies == sorted(energies), energies
    await d.wait_connector(1, lambda c: c["transaction_id"] is None)
    await asyncio.sleep(2)
    assert len(csms.calls_of("StartTransaction")) == 1
    assert len(csms.calls_of("StopTransaction")) == 1
    tx_calls = [c for c in csms.calls if c["action"] in ("MeterValues", "StopTransaction")
                and c["payload"].get("transactionId") == tx]
    assert tx_calls[-1] is stop, "transaction messages after its StopTransaction"
    _assert_in_order_once(tx_calls)
    assert _idx(csms, boot) < _idx(csms, post[0])
    assert csms.strict_errors == [], no_strict_errors(csms)


async def test_kill9_ev_still_plugged_resume_disabled_power_loss(
    strict_csms: StrictCSMS, make_config: MakeConfig, daemon_factory: Factory
) -> None:
    csms = strict_csms
    d = await start_daemon(
        csms, make_config, daemon_factory, connectors=1, ocpp_config=FAST, ocpp=QUICK_RECONNECT,
        system={"resume_transactions": False},
    )
    tx, _ = await start_local_session(d, csms, 1, "TAGNORES")
    energy_before = (await d.wait_connector(1, lambda c: True))["energy_wh"]
    t_kill, last_mv = await _kill_between_samples(d, csms, tx)
    persisted = _persisted_transaction(d, tx)
    await asyncio.sleep(1)

    mark, boot = await _restart(d, csms)
    stop = await csms.wait_call("StopTransaction", for_tx(tx), since=mark, timeout=30)
    p = stop["payload"]
    assert p["reason"] == "PowerLoss", p
    assert stop["ts"] - boot["ts"] < 15_000, "the transaction must be closed right after the boot"
    assert _idx(csms, stop) > _idx(csms, boot)
    assert p["meterStop"] == int(persisted["last_meter_wh"]), (p, persisted)
    assert p["meterStop"] >= max(int(energy_before), int(_mv_energy(last_mv["payload"])))
    assert ts(p["timestamp"]) == ts(persisted["last_meter_at"]), (p, persisted)
    assert _sample_time(last_mv["payload"]) <= ts(p["timestamp"]) <= t_kill, (
        f"PowerLoss stop stamped {p['timestamp']}; killed at {t_kill.isoformat()}"
    )
    # the EV is still plugged, but nothing runs: no new transaction, no energy
    await d.wait_connector(1, lambda c: c["transaction_id"] is None and c["power_w"] == 0, what="no energy")
    await asyncio.sleep(3)
    assert len(csms.calls_of("StartTransaction")) == 1
    assert len(csms.calls_of("StopTransaction")) == 1
    assert [c for c in _tx_mvs(csms, tx) if _idx(csms, c) > _idx(csms, stop)] == []
    assert csms.strict_errors == [], no_strict_errors(csms)


async def test_kill9_then_ev_unplugged_while_down_power_loss(
    strict_csms: StrictCSMS, make_config: MakeConfig, daemon_factory: Factory
) -> None:
    csms = strict_csms
    d = await start_daemon(csms, make_config, daemon_factory, connectors=1, ocpp_config=FAST, ocpp=QUICK_RECONNECT)
    tx, sp = await start_local_session(d, csms, 1, "TAGGONE1")
    t_kill, last_mv = await _kill_between_samples(d, csms, tx)
    persisted = _persisted_transaction(d, tx)
    assert persisted["stopped_at"] is None
    _set_ev_plugged(d, 1, False)  # the driver left while the charger was dead

    mark, _ = await _restart(d, csms)
    stop = await csms.wait_call("StopTransaction", for_tx(tx), since=mark, timeout=30)
    p = stop["payload"]
    assert p["reason"] == "PowerLoss", p
    assert p["meterStop"] == int(persisted["last_meter_wh"]), f"meterStop {p['meterStop']}, persisted {persisted}"
    assert p["meterStop"] >= int(_mv_energy(last_mv["payload"])) >= sp["meterStart"]
    assert ts(p["timestamp"]) == ts(persisted["last_meter_at"]), (p, persisted)
    assert ts(p["timestamp"]) <= t_kill, f"stamped {p['timestamp']}, after the kill at {t_kill.isoformat()}"
    await d.wait_connector(1, lambda c: c["status"] == "Available" and c["transaction_id"] is None)
    await csms.wait_call("StatusNotification", status_is(1, "Available"), since=mark)
    await asyncio.sleep(2)
    sn1 = [c["payload"]["status"] for c in csms.calls_of("StatusNotification", mark)
           if c["payload"]["connectorId"] == 1]
    assert "Charging" not in sn1, sn1
    assert len(csms.calls_of("StartTransaction")) == 1 and len(csms.calls_of("StopTransaction")) == 1
    _assert_in_order_once([c for c in csms.calls if c["action"] in ("MeterValues", "StopTransaction")])
    assert csms.strict_errors == [], no_strict_errors(csms)


async def test_power_loss_stop_transaction_data_ends_with_transaction_end(
    strict_csms: StrictCSMS, make_config: MakeConfig, daemon_factory: Factory
) -> None:
    """StopTxnSampledData set: the StopTransaction sent for a transaction closed after a power loss still
    ends with a Transaction.End value (errata 3.16.6: start and stop values RECOMMENDED for every configured
    measurand), the last persisted reading, consistent with meterStop and the stop timestamp."""
    csms = strict_csms
    d = await start_daemon(
        csms, make_config, daemon_factory, connectors=1, ocpp=QUICK_RECONNECT,
        ocpp_config={**FAST, "StopTxnSampledData": ENERGY},
    )
    tx, _ = await start_local_session(d, csms, 1, "TAGPLEND")
    await _kill_between_samples(d, csms, tx)
    _set_ev_plugged(d, 1, False)
    mark, _ = await _restart(d, csms)
    stop = await csms.wait_call("StopTransaction", for_tx(tx), since=mark, timeout=30)
    p = stop["payload"]
    assert p["reason"] == "PowerLoss"
    data = p.get("transactionData") or []
    assert data, f"no transactionData: {p}"
    assert {sv.get("context") for sv in data[0]["sampledValue"]} == {"Transaction.Begin"}, data[0]
    contexts_end = {sv.get("context") for sv in data[-1]["sampledValue"]}
    # The End value is the last persisted reading, taken at the last sample: both share that instant and so one
    # MeterValue entry.
    assert "Transaction.End" in contexts_end, f"last transactionData entry: {data[-1]}"
    assert ts(data[-1]["timestamp"]) == ts(p["timestamp"])
    end = [sv for sv in data[-1]["sampledValue"] if sv.get("context") == "Transaction.End"]
    assert abs(_energy(end) - p["meterStop"]) < 1
    assert csms.strict_errors == [], no_strict_errors(csms)


@pytest.mark.parametrize("ev_left_while_down", [False, True], ids=["ev-stays", "ev-left-while-down"])
async def test_transaction_started_offline_killed_before_reconnect(
    strict_csms: StrictCSMS, make_config: MakeConfig, daemon_factory: Factory, ev_left_while_down: bool
) -> None:
    """StartTransaction never reached the CSMS before kill -9; the daemon restarts while the CSMS is still
    down (EV still there: resumed; EV gone: closed with PowerLoss). Once the CSMS is back it gets
    StartTransaction first and everything after it carries the transactionId it answered."""
    csms = strict_csms
    await csms.set(nextTransactionId=777)
    d = await start_daemon(
        csms, make_config, daemon_factory, connectors=1, ocpp_config={**FAST, **OFFLINE_TX}, ocpp=QUICK_RECONNECT
    )
    await csms.stop()
    await d.wait_status(lambda s: not s["ocpp"]["connected"], what="ocpp.connected false")
    t_down = _now()
    await plug(d, 1)
    await swipe(d, "OFFLN777")
    await d.wait_connector(1, lambda c: c["power_w"] > 0, what="charging offline")
    await asyncio.sleep(2.5)  # offline samples queue up
    await d.kill9()
    t_kill = _now()
    if ev_left_while_down:
        _set_ev_plugged(d, 1, False)
    await asyncio.sleep(0.5)

    d.start()  # the CSMS is still down
    await d.wait_ready()
    if ev_left_while_down:
        await d.wait_connector(1, lambda c: c["status"] == "Available" and c["id_tag"] is None, what="closed")
    else:
        c1 = await d.wait_connector(1, lambda c: c["power_w"] > 0, what="resumed offline")
        assert c1["transaction_id"] is None, "no CSMS transactionId can be known yet"
        await asyncio.sleep(2.5)
    t_up = _now()

    mark = csms.mark()
    await csms.listen()
    start = await csms.wait_call("StartTransaction", since=mark, timeout=60)
    sp = start["payload"]
    assert sp["idTag"] == "OFFLN777" and sp["connectorId"] == 1
    assert t_down - timedelta(seconds=1) <= ts(sp["timestamp"]) <= t_kill, "StartTransaction time = when it started"
    assert (await answer_of(csms, start))["transactionId"] == 777
    if ev_left_while_down:
        stop = await csms.wait_call("StopTransaction", since=mark, timeout=30)
        assert stop["payload"]["reason"] == "PowerLoss", stop["payload"]
        assert ts(stop["payload"]["timestamp"]) <= t_kill
    else:
        await d.wait_connector(1, lambda c: c["transaction_id"] == 777, what="transaction_id 777 after reconnect")
        stop_mark = csms.mark()
        await unplug(d, 1)
        stop = await csms.wait_call("StopTransaction", since=stop_mark, timeout=30)
        assert stop["payload"]["reason"] == "EVDisconnected", stop["payload"]
    assert stop["payload"]["transactionId"] == 777, stop["payload"]
    assert stop["payload"]["meterStop"] >= sp["meterStart"]

    start_idx = _idx(csms, start)
    for c in csms.calls:
        if c["action"] in ("MeterValues", "StopTransaction") and "transactionId" in c["payload"]:
            assert c["payload"]["transactionId"] == 777, f"{c['action']} with another transactionId: {c['payload']}"
            assert _idx(csms, c) > start_idx, f"{c['action']} sent before its StartTransaction"
    tx_mv = _tx_mvs(csms, 777)
    sampled = [_sample_time(c["payload"]) for c in tx_mv]
    assert any(t <= t_kill for t in sampled), "MeterValues sampled before the kill were lost"
    if not ev_left_while_down:
        assert any(t_kill < t <= t_up for t in sampled), "MeterValues sampled offline after the restart were lost"
    assert all(_idx(csms, c) < _idx(csms, stop) for c in tx_mv), "MeterValues after the StopTransaction"
    _assert_in_order_once([*tx_mv, stop])
    await asyncio.sleep(1)
    assert len(csms.calls_of("StartTransaction")) == 1 and len(csms.calls_of("StopTransaction")) == 1
    assert csms.strict_errors == [], no_strict_errors(csms)


# ---------------------------------------------------------------------------- 3. CSMS down


async def test_statuses_after_outage_current_only_and_queued_transaction_in_order(
    strict_csms: StrictCSMS, make_config: MakeConfig, daemon_factory: Factory
) -> None:
    csms = strict_csms
    d = await start_daemon(
        csms, make_config, daemon_factory, connectors=2, ocpp=QUICK_RECONNECT,
        ocpp_config={**FAST, **OFFLINE_TX, "ClockAlignedDataInterval": 2},
    )
    await csms.stop()
    await d.wait_status(lambda s: not s["ocpp"]["connected"], what="ocpp.connected false")
    t_down = _now()
    # connector 1 goes through Preparing, Charging, (Finishing,) Available; connector 2 ends in Preparing
    await plug(d, 1)
    await d.wait_connector(1, lambda c: c["status"] == "Preparing")
    await swipe(d, "OFFSTAT1")
    await d.wait_connector(1, lambda c: c["status"] == "Charging" and c["power_w"] > 0)
    await plug(d, 2)
    await d.wait_connector(2, lambda c: c["status"] == "Preparing")
    await asyncio.sleep(2)
    await unplug(d, 1)
    await d.wait_connector(1, lambda c: c["status"] == "Available" and c["transaction_id"] is None)
    current = {c["id"]: c["status"] for c in (await d.status())["connectors"]}
    assert current == {1: "Available", 2: "Preparing"}, current

    mark = csms.mark()
    await csms.listen()
    await d.wait_status(lambda s: s["ocpp"]["connected"], what="reconnected", timeout=30)
    stop = await csms.wait_call("StopTransaction", since=mark, timeout=60)
    for n in (0, 1, 2):
        await csms.wait_call("StatusNotification", lambda p, n=n: p["connectorId"] == n, since=mark)
    await asyncio.sleep(3)  # whatever else would be sent has been by now
    sns = [c["payload"] for c in csms.calls_of("StatusNotification", mark)]
    per_connector: dict[int, list[str]] = {}
    for p in sns:
        per_connector.setdefault(p["connectorId"], []).append(p["status"])
    assert per_connector == {0: ["Available"], 1: ["Available"], 2: ["Preparing"]}, (
        f"after the outage the CSMS must get the current status once per connector, got {per_connector}"
    )
    assert csms.calls_of("BootNotification", mark) == [], "a reconnect is not a reboot"

    # the transaction messages queued offline, in order, once
    tx_calls = [c for c in csms.calls[mark:] if c["action"] in ("StartTransaction", "StopTransaction")
                or (c["action"] == "MeterValues" and "transactionId" in c["payload"])]
    assert tx_calls[0]["action"] == "StartTransaction" and tx_calls[-1] is stop, [c["action"] for c in tx_calls]
    assert [c["action"] for c in tx_calls].count("StartTransaction") == 1
    sp = tx_calls[0]["payload"]
    assert sp["idTag"] == "OFFSTAT1" and t_down - timedelta(seconds=1) <= ts(sp["timestamp"])
    tx = (await answer_of(csms, tx_calls[0]))["transactionId"]
    assert all(c["payload"]["transactionId"] == tx for c in tx_calls[1:]), [c["payload"] for c in tx_calls[1:]]
    assert any(c["action"] == "MeterValues" and _is_periodic(c["payload"]) for c in tx_calls), (
        "periodic MeterValues sampled offline were lost"
    )
    assert any(c["action"] == "MeterValues" and _is_clock(c["payload"]) for c in tx_calls), (
        "clock-aligned transaction MeterValues sampled offline were lost"
    )
    assert stop["payload"]["reason"] == "EVDisconnected" and ts(stop["payload"]["timestamp"]) <= _now()
    _assert_in_order_once(tx_calls[1:])
    assert len(csms.calls_of("StopTransaction")) == 1
    assert csms.strict_errors == [], no_strict_errors(csms)


# ---------------------------------------------------------------------------- 4. CALLERROR retries


async def test_stop_transaction_callerror_retried_then_dropped(
    strict_csms: StrictCSMS, make_config: MakeConfig, daemon_factory: Factory
) -> None:
    csms = strict_csms
    d = await start_daemon(
        csms, make_config, daemon_factory, connectors=1,
        ocpp_config={"TransactionMessageRetryInterval": 2, "TransactionMessageAttempts": 3},
    )
    tx, _ = await start_local_session(d, csms, 1, "TAGRETRY")
    await csms.wait_call("MeterValues", for_tx(tx))
    await csms.set(callError={"StopTransaction": True})
    mark = csms.mark()
    em = csms.event_mark()
    await unplug(d, 1)
    attempts = await _collect(csms, "StopTransaction", lambda p: True, n=3, since=mark, timeout=40)
    for a in attempts:
        await csms.wait_event("answered_error", lambda e, a=a: e["messageId"] == a["messageId"], since=em)
    assert all(a["payload"] == attempts[0]["payload"] for a in attempts), "a retry must resend the same message"
    assert attempts[0]["payload"]["transactionId"] == tx
    gaps = [(b["ts"] - a["ts"]) / 1000 for a, b in itertools.pairwise(attempts)]
    # TransactionMessageRetryInterval x attempts so far: 2 s, then 4 s
    assert 1.8 <= gaps[0] <= 4.5, f"first retry after {gaps[0]} s (TransactionMessageRetryInterval 2)"
    assert 3.8 <= gaps[1] <= 6.5, f"second retry after {gaps[1]} s (2 x TransactionMessageRetryInterval)"
    # dropped after TransactionMessageAttempts = 3
    for _ in range(50):
        if await _queued(d) == 0:
            break
        await asyncio.sleep(0.2)
    else:
        raise AssertionError("StopTransaction still queued after TransactionMessageAttempts rejected attempts")
    await asyncio.sleep(7)  # a 4th attempt would have come 6 s after the 3rd
    stops = csms.calls_of("StopTransaction", mark)
    assert len(stops) == 3, f"{len(stops)} StopTransaction attempts with TransactionMessageAttempts=3"

    # the queue is not blocked: the next transaction goes through
    await csms.set(callError={})
    tx2, _ = await start_local_session(d, csms, 1, "TAGRETR2")
    assert tx2 != tx
    mark = csms.mark()
    await unplug(d, 1)
    stop2 = await csms.wait_call("StopTransaction", since=mark)
    assert stop2["payload"]["transactionId"] == tx2
    assert csms.strict_errors == [], no_strict_errors(csms)


async def test_start_transaction_never_delivered_uses_transaction_id_minus_one(
    strict_csms: StrictCSMS, make_config: MakeConfig, daemon_factory: Factory
) -> None:
    csms = strict_csms
    d = await start_daemon(
        csms, make_config, daemon_factory, connectors=1,
        ocpp_config={"TransactionMessageRetryInterval": 1, "TransactionMessageAttempts": 2},
    )
    await csms.set(callError={"StartTransaction": True})
    mark = csms.mark()
    await plug(d, 1)
    await csms.wait_call("StatusNotification", status_is(1, "Preparing"), since=mark)
    await swipe(d, "TAGNOTX1")
    starts = await _collect(csms, "StartTransaction", lambda p: True, n=2, since=mark, timeout=20)
    assert starts[0]["payload"] == starts[1]["payload"]
    assert (starts[1]["ts"] - starts[0]["ts"]) / 1000 >= 0.8, "retried before TransactionMessageRetryInterval"
    mvs = await _collect(
        csms, "MeterValues", lambda p: p.get("transactionId") == -1, n=2, since=_idx(csms, starts[1]) + 1
    )
    c1 = await d.wait_connector(1, lambda c: c["power_w"] > 0, what="charging without a CSMS transactionId")
    assert c1["transaction_id"] is None
    stop_mark = csms.mark()
    await unplug(d, 1)
    stop = await csms.wait_call("StopTransaction", since=stop_mark, timeout=20)
    p = stop["payload"]
    assert p["transactionId"] == -1, f"errata 3.18: transactionId -1 when StartTransaction never got through: {p}"
    assert p["reason"] == "EVDisconnected" and p["meterStop"] >= starts[0]["payload"]["meterStart"]
    await asyncio.sleep(2)
    assert len(csms.calls_of("StartTransaction")) == 2, "StartTransaction tried more than TransactionMessageAttempts"
    for c in csms.calls[mark:]:
        if c["action"] in ("MeterValues", "StopTransaction") and "transactionId" in c["payload"]:
            assert c["payload"]["transactionId"] == -1, c["payload"]
            assert _idx(csms, c) > _idx(csms, starts[1]), f"{c['action']} overtook the StartTransaction"
    _assert_in_order_once([*mvs, *_tx_mvs(csms, -1, _idx(csms, mvs[-1]) + 1), stop])
    assert len(csms.calls_of("StopTransaction")) == 1
    assert csms.strict_errors == [], no_strict_errors(csms)
