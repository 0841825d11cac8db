"""Smart charging end to end (real daemon on the sim board, strict ocpp-rpc CSMS): SetChargingProfile changes the
offered current and the simulated EV's drawn power within a second, a period boundary changes it at the boundary
(also while the CSMS is away), ClearChargingProfile lifts it, profiles survive a restart, a TxProfile ends with its
transaction, RemoteStartTransaction carries a TxProfile, the validation rules and 9.4 keys reach the CSMS, and
`evsectl status` / `evsectl schedule` show the limit.

Timing is measured on this machine's wall clock (the daemon's comes from the CSMS's currentTime, the same clock):
the figures are printed (`pytest -s`) for the closing note."""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from daemon_harness import CP_ID, Daemon
from ocpp_helpers import answer_of, no_strict_errors, plug, start_daemon, start_local_session, status_is, ts, unplug
from strict_csms import StrictCSMS

from evsed.control.protocol import request

MakeConfig = Callable[..., Path]
Factory = Callable[[Path], Daemon]

FAST_METER = {"meter_poll_interval_s": 0.2}
POLL_S = 0.05
# The station raises the duty at most once per 5 s after its last change (core/station.py DUTY_UPDATE_INTERVAL_S).
RAISE_HOLD_S = 5.0


def ev_power_w(amps: float, phases: int = 3, volts: float = 230.0) -> float:
    """What the sim EV draws under an offer of `amps`: the duty is floored to 0.1 % (IEC 61851: A = duty x 0.6)."""
    duty = math.floor(amps / 0.6 * 10 + 1e-9) / 10
    return round(volts * phases * duty * 0.6, 1)


assert ev_power_w(10) == 6872.4  # the figure test_e2e_limits measures for a 10 A offer


def iso(dt: datetime) -> str:
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def profile(pid: int, purpose: str, limit: float | list[tuple[int, float]], *, stack: int = 0,
            kind: str = "Relative", start: datetime | None = None, tx: int | None = None,
            unit: str = "A") -> dict[str, Any]:
    """A csChargingProfiles object; limit is one value (from startPeriod 0) or [(startPeriod, limit), ...]."""
    periods = [(0, limit)] if isinstance(limit, int | float) else limit
    p: dict[str, Any] = {
        "chargingProfileId": pid,
        "stackLevel": stack,
        "chargingProfilePurpose": purpose,
        "chargingProfileKind": kind,
        "chargingSchedule": {
            "chargingRateUnit": unit,
            "chargingSchedulePeriod": [{"startPeriod": s, "limit": float(v)} for s, v in periods],
        },
    }
    if tx is not None:
        p["transactionId"] = tx
    if start is not None:
        p["chargingSchedule"]["startSchedule"] = iso(start)
    return p


async def set_profile(csms: StrictCSMS, connector_id: int, prof: dict[str, Any]) -> str:
    res = await csms.call(CP_ID, "SetChargingProfile", {"connectorId": connector_id, "csChargingProfiles": prof})
    return str(res["status"])


async def clear_profile(csms: StrictCSMS, **fields: Any) -> str:
    res = await csms.call(CP_ID, "ClearChargingProfile", fields)
    return str(res["status"])


async def composite(csms: StrictCSMS, connector_id: int, duration: int = 3600,
                    unit: str | None = "A") -> dict[str, Any]:
    payload: dict[str, Any] = {"connectorId": connector_id, "duration": duration}
    if unit is not None:
        payload["chargingRateUnit"] = unit
    return await csms.call(CP_ID, "GetCompositeSchedule", payload)  # type: ignore[no-any-return]


def periods(answer: dict[str, Any]) -> list[tuple[int, float]]:
    assert answer["status"] == "Accepted", answer
    return [(p["startPeriod"], p["limit"]) for p in answer["chargingSchedule"]["chargingSchedulePeriod"]]


@dataclass
class Sample:
    sent: float  # time.time() when the status request went out
    received: float  # time.time() when its answer came back
    mono: float  # time.monotonic() when its answer came back
    c: dict[str, Any]  # the connector's whole status answer (control socket)


async def sample(d: Daemon, n: int) -> Sample:
    sent = time.time()
    st = await asyncio.to_thread(request, str(d.socket_path), {"cmd": "status"})
    c = next(c for c in st["connectors"] if c["id"] == n)
    return Sample(sent, time.time(), time.monotonic(), c)


async def poll_until(d: Daemon, n: int, predicate: Callable[[dict[str, Any]], bool], timeout: float,
                     what: str, log: list[Sample] | None = None) -> Sample:
    """Poll connector n's status every POLL_S until predicate holds; every sample goes to `log`."""
    deadline = time.monotonic() + timeout
    while True:
        s = await sample(d, n)
        if log is not None:
            log.append(s)
        if predicate(s.c):
            return s
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}; last connector status {s.c}")
        await asyncio.sleep(POLL_S)


def offers(amps: float) -> Callable[[dict[str, Any]], bool]:
    return lambda c: c["offered_current_a"] == amps


def draws(amps: float) -> Callable[[dict[str, Any]], bool]:
    return lambda c: abs(c["power_w"] - ev_power_w(amps)) < 0.05


async def wait_online(d: Daemon) -> None:
    await d.wait_status(lambda s: s["ocpp"]["connected"] and s["ocpp"]["registration"] == "Accepted",
                        what="registration Accepted")


def figure(name: str, ms: float) -> None:
    """A measured figure for the closing note (shown with `pytest -s`)."""
    print(f"FIGURE {name}: {ms:.0f} ms")


# --------------------------------------------------------------------------------------------------------------------


async def test_set_and_clear_profile_drive_the_pilot_rules_keys_and_evsectl(
    strict_csms: StrictCSMS, make_config: MakeConfig, daemon_factory: Factory
) -> None:
    csms = strict_csms
    d = await start_daemon(
        csms, make_config, daemon_factory, connectors=1, hardware=FAST_METER,
        ocpp_config={"MeterValuesSampledData": "Energy.Active.Import.Register,Power.Active.Import,Current.Offered"})

    # 9.4 keys: present, read-only, with their defaults; SmartCharging is a supported feature profile.
    res = await csms.call(CP_ID, "GetConfiguration", {"key": [
        "ChargeProfileMaxStackLevel", "ChargingScheduleAllowedChargingRateUnit", "ChargingScheduleMaxPeriods",
        "MaxChargingProfilesInstalled", "ConnectorSwitch3to1PhaseSupported", "SupportedFeatureProfiles"]})
    keys = {e["key"]: e for e in res["configurationKey"]}
    assert res.get("unknownKey", []) == [], res
    expected = {"ChargeProfileMaxStackLevel": "10", "ChargingScheduleAllowedChargingRateUnit": "Current,Power",
                "ChargingScheduleMaxPeriods": "96", "MaxChargingProfilesInstalled": "32",
                "ConnectorSwitch3to1PhaseSupported": "false"}
    for key, value in expected.items():
        assert (keys[key]["value"], keys[key]["readonly"]) == (value, True), keys[key]
    assert "SmartCharging" in keys["SupportedFeatureProfiles"]["value"].split(","), keys["SupportedFeatureProfiles"]
    assert await csms.call(CP_ID, "ChangeConfiguration", {"key": "ChargeProfileMaxStackLevel", "value": "20"}) \
        == {"status": "Rejected"}

    # Rejections end to end: a TxProfile without a transaction, a stack level above the maximum (10 is fine),
    # a composite schedule for a connector that does not exist.
    assert await set_profile(csms, 1, profile(1, "TxProfile", 10)) == "Rejected"
    assert await set_profile(csms, 1, profile(2, "TxDefaultProfile", 32, stack=11)) == "Rejected"
    assert await set_profile(csms, 1, profile(2, "TxDefaultProfile", 32, stack=10)) == "Accepted"
    assert await composite(csms, 5) == {"status": "Rejected"}
    assert await clear_profile(csms, id=2) == "Accepted"

    tx, _ = await start_local_session(d, csms, 1)
    await poll_until(d, 1, lambda c: c["offered_current_a"] == 32.0 and draws(32)(c), 5, "32 A drawn")
    # A TxProfile for another transaction is not ours.
    assert await set_profile(csms, 1, profile(3, "TxProfile", 10, tx=tx + 1000)) == "Rejected"

    # SetChargingProfile -> the offer and the EV's power follow within a second of the request.
    mark = csms.mark()
    t0 = time.monotonic()
    assert await set_profile(csms, 1, profile(3, "TxProfile", 10, tx=tx)) == "Accepted"
    t_result = time.monotonic()
    offered = await poll_until(d, 1, offers(10.0), 3, "10 A offered")
    assert (offered.c["current_limit_a"], offered.c["limit_source"]) == (10.0, "ocpp"), offered.c
    assert offered.mono - t0 < 1.0, f"offer changed {offered.mono - t0:.3f} s after SetChargingProfile"
    drawn = await poll_until(d, 1, draws(10.0), 3, "the EV drawing 10 A")
    assert drawn.mono - t0 < 1.0, f"EV power changed {drawn.mono - t0:.3f} s after SetChargingProfile"
    figure("SetChargingProfile CALLRESULT after the CALL", (t_result - t0) * 1000)
    figure("SetChargingProfile -> offer seen in status (upper bound)", (offered.mono - t0) * 1000)
    figure("SetChargingProfile -> EV power seen in status (meter every 0.2 s)", (drawn.mono - t0) * 1000)
    # MeterValues report it too (the first sample after the change may still carry the previous power reading).
    def sampled(p: dict[str, Any], measurand: str) -> list[float]:
        return [float(sv["value"]) for m in p["meterValue"] for sv in m["sampledValue"]
                if sv.get("measurand") == measurand]

    await csms.wait_call(
        "MeterValues", lambda p: p.get("transactionId") == tx and sampled(p, "Current.Offered") == [10.0]
        and sampled(p, "Power.Active.Import") == [ev_power_w(10.0)], since=mark, timeout=5)

    # evsectl shows the limit and its source, and the composite schedule.
    text = await d.ctl("status")
    assert "limit 10 A (ocpp)" in text, text
    table = await d.ctl("schedule")
    assert "connector 1" in table and "10 A" in table and "32 A" not in table, table
    as_json = json.loads(await d.ctl("schedule", "--json", "--unit", "W", "--duration", "600"))
    assert set(as_json) == {"connectorId", "scheduleStart", "chargingSchedule"}, as_json
    sched = as_json["chargingSchedule"]
    assert as_json["connectorId"] == 1 and sched["chargingRateUnit"] == "W" and sched["duration"] == 600, as_json
    assert ts(as_json["scheduleStart"]) == ts(sched["startSchedule"]), as_json
    assert abs((ts(as_json["scheduleStart"]) - datetime.now(UTC)).total_seconds()) < 5, as_json
    assert [(p["startPeriod"], p["limit"]) for p in sched["chargingSchedulePeriod"]] == [(0, 10 * 230 * 3)], sched
    table_w = await d.ctl("schedule", "--unit", "W")
    assert "6900 W" in table_w, table_w
    bad = await d.evsectl("schedule", "--connector", "9")
    assert bad.returncode == 1 and bad.stdout == "" and len(bad.stderr.strip().splitlines()) == 1, bad
    assert "connector" in bad.stderr and "Traceback" not in bad.stderr, bad

    # ClearChargingProfile -> back to 32 A: an increase, so not before 5 s after the duty last changed.
    t_clear = time.monotonic()
    assert await clear_profile(csms, id=3) == "Accepted"
    back = await poll_until(d, 1, offers(32.0), 8, "32 A offered again")
    assert back.c["limit_source"] == "hardware", back.c
    assert back.mono >= t0 + RAISE_HOLD_S, f"raised {back.mono - t0:.3f} s after the decrease (hold is 5 s)"
    assert back.mono - max(t_clear, t0 + RAISE_HOLD_S) < 1.0, f"raised {back.mono - t_clear:.3f} s after the clear"
    figure("ClearChargingProfile -> 32 A offered (5 s raise hold)", (back.mono - t_clear) * 1000)
    await poll_until(d, 1, draws(32.0), 3, "the EV drawing 32 A again")
    assert await clear_profile(csms, id=3) == "Unknown"
    assert csms.strict_errors == [], no_strict_errors(csms)


async def test_period_boundaries_apply_on_time_also_offline(
    strict_csms: StrictCSMS, make_config: MakeConfig, daemon_factory: Factory
) -> None:
    csms = strict_csms
    d = await start_daemon(csms, make_config, daemon_factory, connectors=1, hardware=FAST_METER,
                           ocpp={"reconnect_min_s": 0.2, "reconnect_max_s": 1.0})
    await start_local_session(d, csms, 1)
    # An Absolute TxDefaultProfile on connector 0 starting S = now (whole second) + 3 s: 16 A, then 10 A at S+3 s,
    # then 7 A at S+7 s. Every step is a decrease, so it must reach the pilot at the boundary itself.
    s = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=3)
    steps = [(0, 16.0), (3, 10.0), (7, 7.0)]
    assert await set_profile(csms, 0, profile(7, "TxDefaultProfile", steps, kind="Absolute", start=s)) == "Accepted"

    # GetCompositeSchedule over the window: 32 A until S, then the three periods, relative to the request time.
    answer = await composite(csms, 1, duration=60)
    start = ts(answer["scheduleStart"])
    assert start.microsecond == 0 and abs((start - datetime.now(UTC)).total_seconds()) < 3, answer
    offset = int((s - start).total_seconds())
    assert offset > 0, (answer, s)
    assert periods(answer) == [(0, 32.0)] + [(offset + p, v) for p, v in steps], (answer, s)
    assert answer["chargingSchedule"]["duration"] == 60, answer
    assert "startSchedule" not in answer["chargingSchedule"], answer  # errata 3.57: scheduleStart says it

    log: list[Sample] = []
    lateness: list[float] = []

    async def boundary(at: datetime, amps: float) -> None:
        due = at.timestamp()
        first = await poll_until(d, 1, offers(amps), due - time.time() + 3, f"{amps:g} A offered", log)
        early = [x for x in log if x.received < due and x.c["offered_current_a"] == amps]
        assert not early, f"{amps:g} A offered {due - early[0].received:.3f} s before the boundary"
        # The change happened after the previous sample was asked for and before this answer came back.
        assert first.received < due + 1.0, f"{amps:g} A seen {first.received - due:.3f} s after the boundary"
        lateness.append(first.received - due)
        assert first.c["limit_source"] == "ocpp" and first.c["current_limit_a"] == amps, first.c

    await boundary(s, 16.0)
    await boundary(s + timedelta(seconds=3), 10.0)
    drawn = await poll_until(d, 1, draws(10.0), 2, "the EV drawing 10 A")
    figure("boundary -> EV power seen (meter every 0.2 s)", (drawn.received - (s.timestamp() + 3)) * 1000)

    # The CSMS goes away; the installed profile keeps applying, and its next boundary too.
    await csms.stop(force=True)
    await d.wait_status(lambda st: not st["ocpp"]["connected"], timeout=3, what="CSMS disconnected")
    assert time.time() < s.timestamp() + 6.5, "too slow to test a boundary during the outage"
    await boundary(s + timedelta(seconds=7), 7.0)
    await poll_until(d, 1, draws(7.0), 2, "the EV drawing 7 A")
    st = await d.status()
    assert not st["ocpp"]["connected"], st
    for i, late in enumerate(lateness):
        figure(f"boundary {i + 1} lateness (seen in status, polled every 50 ms)", late * 1000)
    # Before the first boundary every sample showed 32 A; no other value ever appeared.
    assert all(x.c["offered_current_a"] == 32.0 for x in log if x.received < s.timestamp()), "offer before S"
    assert {x.c["offered_current_a"] for x in log} <= {32.0, 16.0, 10.0, 7.0}, {x.c["offered_current_a"] for x in log}

    await csms.listen()
    await wait_online(d)
    c = (await sample(d, 1)).c
    assert (c["offered_current_a"], c["limit_source"]) == (7.0, "ocpp"), c
    assert csms.strict_errors == [], no_strict_errors(csms)


async def test_profiles_survive_restart_txprofile_ends_with_its_transaction_and_remote_start(
    strict_csms: StrictCSMS, make_config: MakeConfig, daemon_factory: Factory
) -> None:
    csms = strict_csms
    d = await start_daemon(csms, make_config, daemon_factory, connectors=2, hardware=FAST_METER)
    long_ago = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
    assert await set_profile(csms, 1, profile(11, "TxDefaultProfile", 12)) == "Accepted"
    # A ChargePointMaxProfile must be Absolute (or Recurring) on connector 0.
    assert await set_profile(csms, 0, profile(12, "ChargePointMaxProfile", 20)) == "Rejected"
    assert await set_profile(
        csms, 0, profile(12, "ChargePointMaxProfile", 20, kind="Absolute", start=long_ago)) == "Accepted"
    before = {cid: periods(await composite(csms, cid)) for cid in (0, 1, 2)}
    # Connector 0 sums 12 A (connector 1) and 32 A (connector 2, no limit), capped by the charge point's 20 A.
    assert before == {0: [(0, 20.0)], 1: [(0, 12.0)], 2: [(0, 20.0)]}, before

    await d.restart()
    await wait_online(d)
    after = {cid: periods(await composite(csms, cid)) for cid in (0, 1, 2)}
    assert after == before, after
    # A new session gets the 12 A with no new SetChargingProfile.
    tx, start = await start_local_session(d, csms, 1)
    c = (await poll_until(d, 1, offers(12.0), 3, "12 A offered after the restart")).c
    assert (c["current_limit_a"], c["limit_source"]) == (12.0, "ocpp"), c
    await poll_until(d, 1, draws(12.0), 3, "the EV drawing 12 A")

    # A TxProfile for this transaction wins over the TxDefault; it is removed when the transaction ends.
    assert await set_profile(csms, 1, profile(13, "TxProfile", 9, tx=tx)) == "Accepted"
    await poll_until(d, 1, offers(9.0), 2, "9 A offered")
    assert periods(await composite(csms, 1)) == [(0, 9.0)]
    mark = csms.mark()
    await unplug(d, 1)
    await csms.wait_call("StopTransaction", lambda p: p["transactionId"] == tx, since=mark)
    await csms.wait_call("StatusNotification", status_is(1, "Available"), since=mark)
    assert periods(await composite(csms, 1)) == [(0, 12.0)]
    assert await clear_profile(csms, id=13) == "Unknown"

    # RemoteStartTransaction: only a TxProfile may come with it; a Relative 8 A one limits the new transaction.
    mark = csms.mark()
    await plug(d, 1)
    await csms.wait_call("StatusNotification", status_is(1, "Preparing"), since=mark)
    tx_default = profile(14, "TxDefaultProfile", 8)
    res = await csms.call(CP_ID, "RemoteStartTransaction",
                          {"connectorId": 1, "idTag": "REMOTE01", "chargingProfile": tx_default})
    assert res == {"status": "Rejected"}
    res = await csms.call(CP_ID, "RemoteStartTransaction",
                          {"connectorId": 1, "idTag": "REMOTE01", "chargingProfile": profile(14, "TxProfile", 8)})
    assert res == {"status": "Accepted"}
    start = await csms.wait_call("StartTransaction", lambda p: p["connectorId"] == 1, since=mark)
    assert start["payload"]["idTag"] == "REMOTE01"
    await csms.wait_call("StatusNotification", status_is(1, "Charging"), since=mark)
    c = (await poll_until(d, 1, offers(8.0), 3, "8 A offered for the remote start")).c
    assert (c["current_limit_a"], c["limit_source"]) == (8.0, "ocpp"), c
    await poll_until(d, 1, draws(8.0), 3, "the EV drawing 8 A")
    await asyncio.sleep(max(0.0, math.ceil(ts(start["payload"]["timestamp"]).timestamp()) + 0.05 - time.time()))
    assert periods(await composite(csms, 1)) == [(0, 8.0)]
    assert csms.strict_errors == [], no_strict_errors(csms)


async def just_after_a_whole_second() -> None:
    """Sleep until 20 to 100 ms past a whole second of the wall clock (the daemon's clock is the CSMS's, this one)."""
    while not 0.02 <= time.time() % 1 < 0.1:
        await asyncio.sleep(min(0.01, (1.02 - time.time() % 1) % 1))


async def test_relative_profiles_apply_from_the_first_instant_of_the_transaction(
    strict_csms: StrictCSMS, make_config: MakeConfig, daemon_factory: Factory
) -> None:
    """A Relative TxDefaultProfile of 0 A (a delayed start) must never let the EV charge when the transaction starts,
    and a RemoteStartTransaction TxProfile of 8 A must be the first offer, not the 12 A TxDefault of the connector.
    Both transactions start just after a whole second. Regression: the limiter took the composite's value at `now`
    truncated to the second, while a Relative profile counts from the transaction start rounded up to the next
    second, so for the rest of the first second no Relative profile applied (the EV was offered 32 A, then 12 A)."""
    csms = strict_csms
    d = await start_daemon(csms, make_config, daemon_factory, connectors=2, hardware=FAST_METER)
    assert await set_profile(csms, 1, profile(21, "TxDefaultProfile", 0)) == "Accepted"
    assert await set_profile(csms, 2, profile(22, "TxDefaultProfile", 12)) == "Accepted"
    mark = csms.mark()
    await plug(d, 1)
    await plug(d, 2)
    for n in (1, 2):
        await csms.wait_call("StatusNotification", status_is(n, "Preparing"), since=mark)

    # Connector 1: a local start (the card) under the 0 A TxDefault.
    log1: list[Sample] = []
    await just_after_a_whole_second()
    await asyncio.to_thread(request, str(d.socket_path), {"cmd": "sim", "action": "swipe", "id_tag": "TAG0001"})
    start = await csms.wait_call("StartTransaction", lambda p: p["connectorId"] == 1, since=mark)
    await poll_until(d, 1, lambda c: time.time() >= start["ts"] / 1000 + 1.5, 5, "1.5 s", log1)
    # Connector 2: RemoteStartTransaction with an 8 A TxProfile.
    log2: list[Sample] = []
    mark2 = csms.mark()
    await just_after_a_whole_second()
    res = await csms.call(CP_ID, "RemoteStartTransaction",
                          {"connectorId": 2, "idTag": "REMOTE02", "chargingProfile": profile(23, "TxProfile", 8)})
    assert res == {"status": "Accepted"}
    start2 = await csms.wait_call("StartTransaction", lambda p: p["connectorId"] == 2, since=mark2)
    await poll_until(d, 2, lambda c: time.time() >= start2["ts"] / 1000 + 1.5, 5, "1.5 s", log2)

    seen1 = [(round(x.received % 60, 3), x.c["offered_current_a"], x.c["current_limit_a"]) for x in log1]
    seen2 = [(round(x.received % 60, 3), x.c["offered_current_a"], x.c["current_limit_a"]) for x in log2]
    assert all(x.c["offered_current_a"] == 0.0 and x.c["current_limit_a"] == 0.0 for x in log1), seen1
    assert csms.calls_of("StatusNotification", mark) and not [
        c for c in csms.calls_of("StatusNotification", mark)
        if c["payload"]["connectorId"] == 1 and c["payload"]["status"] == "Charging"], "connector 1 charged"
    assert all(x.c["offered_current_a"] in (0.0, 8.0) and x.c["current_limit_a"] == 8.0 for x in log2), seen2
    assert csms.strict_errors == [], no_strict_errors(csms)


async def test_composite_schedule_in_the_first_second_of_a_transaction_is_what_the_pilot_gets(
    strict_csms: StrictCSMS, make_config: MakeConfig, daemon_factory: Factory
) -> None:
    csms = strict_csms
    d = await start_daemon(csms, make_config, daemon_factory, connectors=1)
    assert await set_profile(csms, 1, profile(31, "TxDefaultProfile", 12)) == "Accepted"
    assert await set_profile(csms, 0, profile(
        32, "ChargePointMaxProfile", 20, kind="Absolute", start=datetime.now(UTC) - timedelta(hours=1))) == "Accepted"
    mark = csms.mark()
    await plug(d, 1)
    await csms.wait_call("StatusNotification", status_is(1, "Preparing"), since=mark)
    await just_after_a_whole_second()
    await asyncio.to_thread(request, str(d.socket_path), {"cmd": "sim", "action": "swipe", "id_tag": "TAG0001"})
    start = await csms.wait_call("StartTransaction", lambda p: p["connectorId"] == 1, since=mark)
    tx = int((await answer_of(csms, start))["transactionId"])
    during_tx_default = await composite(csms, 1, duration=60)
    assert await set_profile(csms, 1, profile(33, "TxProfile", 9, tx=tx)) == "Accepted"
    during_tx_profile = await composite(csms, 1, duration=60)
    c = (await sample(d, 1)).c
    second = ts(start["payload"]["timestamp"]).replace(microsecond=0)
    # The premise: all of it happened inside the transaction's first second.
    assert ts(during_tx_default["scheduleStart"]) == ts(during_tx_profile["scheduleStart"]) == second, (
        start, during_tx_default, during_tx_profile)
    assert c["current_limit_a"] == 9.0, c
    assert (periods(during_tx_default), periods(during_tx_profile)) == ([(0, 12.0)], [(0, 9.0)])
    assert csms.strict_errors == [], no_strict_errors(csms)
