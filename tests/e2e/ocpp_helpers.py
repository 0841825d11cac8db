"""Shared steps and OCPP assertions for the end-to-end tests."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from daemon_harness import CP_ID, Daemon
from strict_csms import StrictCSMS

CHARGE_POINT_STATUSES = {
    "Available",
    "Preparing",
    "Charging",
    "SuspendedEVSE",
    "SuspendedEV",
    "Finishing",
    "Reserved",
    "Unavailable",
    "Faulted",
}


def ts(value: str) -> datetime:
    """Parse an OCPP dateTime (RFC 3339) into an aware datetime."""
    dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    assert dt.tzinfo is not None, f"timestamp without a UTC offset: {value!r}"
    return dt


def no_strict_errors(csms: StrictCSMS) -> str:
    return (
        "strict CSMS rejected frames:\n"
        + json.dumps([{k: v for k, v in e.items() if k != "_rx"} for e in csms.strict_errors], indent=1)[:6000]
    )


def status_is(connector_id: int, *statuses: str) -> Callable[[dict[str, Any]], bool]:
    return lambda p: p.get("connectorId") == connector_id and p.get("status") in statuses


def for_tx(tx_id: int) -> Callable[[dict[str, Any]], bool]:
    return lambda p: p.get("transactionId") == tx_id


def measurands(mv_payload: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """measurand -> sampledValue entries over every meterValue of a MeterValues/StopTransaction payload."""
    out: dict[str, list[dict[str, Any]]] = {}
    for mv in mv_payload.get("meterValue", mv_payload.get("transactionData", [])):
        for sv in mv.get("sampledValue", []):
            # OCPP 1.6: an absent measurand means Energy.Active.Import.Register
            out.setdefault(sv.get("measurand", "Energy.Active.Import.Register"), []).append(sv)
    return out


async def answer_of(csms: StrictCSMS, call_ev: dict[str, Any], timeout: float = 10) -> dict[str, Any]:
    """The result the CSMS returned for a given CALL event."""
    ev = await csms.wait_event(
        "answered",
        lambda e: e.get("messageId") == call_ev["messageId"] and e.get("action") == call_ev["action"],
        timeout=timeout,
    )
    return ev["result"]  # type: ignore[no-any-return]


async def start_daemon(
    csms: StrictCSMS,
    make_config: Callable[..., Path],
    daemon_factory: Callable[[Path], Daemon],
    connectors: int = 2,
    heartbeat: int = 60,
    wait_boot: bool = True,
    **overrides: Any,
) -> Daemon:
    """Start the daemon against csms; by default wait until it booted and reported every connector."""
    ocpp_config = {"HeartbeatInterval": heartbeat, "MeterValueSampleInterval": 1}
    ocpp_config.update(overrides.pop("ocpp_config", {}))
    await csms.set(heartbeatInterval=heartbeat)
    hw = {"connectors": connectors}
    hw.update(overrides.pop("hardware", {}))
    cfg = make_config(csms_port=csms.port, hardware=hw, ocpp_config=ocpp_config, **overrides)
    d = daemon_factory(cfg)
    mark = csms.mark()
    d.start()
    await d.wait_ready()
    if wait_boot:
        await csms.wait_call("BootNotification", since=mark, timeout=20)
        for n in range(0, connectors + 1):
            await csms.wait_call("StatusNotification", lambda p, n=n: p["connectorId"] == n, since=mark, timeout=20)
        await d.wait_status(
            lambda s: s["ocpp"]["connected"] and s["ocpp"]["registration"] == "Accepted",
            what="registration Accepted",
        )
    return d


async def plug(d: Daemon, n: int, *extra: str) -> None:
    await d.ctl("sim", "plug", str(n), *extra)


async def unplug(d: Daemon, n: int) -> None:
    await d.ctl("sim", "unplug", str(n))


async def swipe(d: Daemon, tag: str) -> None:
    await d.ctl("sim", "swipe", tag)


async def start_local_session(
    d: Daemon, csms: StrictCSMS, n: int = 1, tag: str = "TAG0001"
) -> tuple[int, dict[str, Any]]:
    """Plug, swipe, wait for StartTransaction and Charging.

    Returns (the CSMS's transactionId, the StartTransaction payload)."""
    mark = csms.mark()
    await plug(d, n)
    await csms.wait_call("StatusNotification", status_is(n, "Preparing"), since=mark)
    await swipe(d, tag)
    start = await csms.wait_call("StartTransaction", lambda p: p["connectorId"] == n, since=mark)
    result = await answer_of(csms, start)
    tx = int(result["transactionId"])
    await csms.wait_call("StatusNotification", status_is(n, "Charging"), since=mark)
    await d.wait_connector(
        n,
        lambda c: c["transaction_id"] == tx and c["status"] == "Charging",
        what=f"connector {n} Charging with transaction {tx}",
    )
    return tx, start["payload"]


async def change_config(csms: StrictCSMS, key: str, value: str) -> str:
    """ChangeConfiguration from the CSMS; returns the charge point's status."""
    res = await csms.call(CP_ID, "ChangeConfiguration", {"key": key, "value": value})
    return str(res["status"])


async def get_config(csms: StrictCSMS, *keys: str) -> dict[str, str | None]:
    """GetConfiguration from the CSMS: value (None for a write-only key) of every known key asked for."""
    res = await csms.call(CP_ID, "GetConfiguration", {"key": list(keys)})
    return {e["key"]: e.get("value") for e in res.get("configurationKey", [])}


__all__ = ["CP_ID"]
