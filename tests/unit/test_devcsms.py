"""DevCSMS exercised with a raw websockets client, i.e. without any evsed OCPP code on the other side."""

from __future__ import annotations

import asyncio
import json
import re
import tomllib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.typing import Subprotocol

from evsed.devcsms.__main__ import _parse_args
from evsed.devcsms.server import CallError, DevCSMS, Event, format_event, format_transaction

ISO_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")
NOW = "2024-05-01T12:00:00Z"
OCPP16 = [Subprotocol("ocpp1.6")]


@pytest.fixture
async def csms() -> AsyncIterator[DevCSMS]:
    server = DevCSMS(port=0, accept_tags={"GOOD"}, heartbeat_interval=42)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


def _url(csms: DevCSMS, cp_id: str = "CP001") -> str:
    return f"ws://127.0.0.1:{csms.port}/ocpp/{cp_id}"


async def _call(ws: ClientConnection, uid: str, action: str, payload: dict[str, Any]) -> list[Any]:
    await ws.send(json.dumps([2, uid, action, payload]))
    reply = json.loads(await asyncio.wait_for(ws.recv(), 5))
    assert reply[1] == uid
    return list(reply)


async def test_full_session(csms: DevCSMS) -> None:
    seen: list[Event] = []
    csms.on_event = seen.append
    async with connect(_url(csms), subprotocols=OCPP16) as ws:
        assert ws.subprotocol == "ocpp1.6"
        boot = await _call(ws, "1", "BootNotification", {"chargePointVendor": "V", "chargePointModel": "M"})
        assert boot[0] == 3
        assert boot[2]["status"] == "Accepted"
        assert boot[2]["interval"] == 42
        assert ISO_Z.match(boot[2]["currentTime"])
        await csms.wait_for("BootNotification", cp_id="CP001", timeout=1)
        assert csms.connected == {"CP001"}

        hb = await _call(ws, "2", "Heartbeat", {})
        assert ISO_Z.match(hb[2]["currentTime"])

        status = {"connectorId": 1, "errorCode": "NoError", "status": "Preparing"}
        assert (await _call(ws, "3", "StatusNotification", status))[2] == {}
        assert csms.connector_status[("CP001", 1)] == "Preparing"

        assert (await _call(ws, "4", "Authorize", {"idTag": "GOOD"}))[2] == {
            "idTagInfo": {"status": "Accepted"}
        }
        assert (await _call(ws, "5", "Authorize", {"idTag": "BAD"}))[2] == {
            "idTagInfo": {"status": "Invalid"}
        }

        start = {"connectorId": 1, "idTag": "GOOD", "meterStart": 1000, "timestamp": NOW}
        res = (await _call(ws, "6", "StartTransaction", start))[2]
        assert res == {"transactionId": 1, "idTagInfo": {"status": "Accepted"}}

        meter = {
            "connectorId": 1,
            "transactionId": 1,
            "meterValue": [
                {
                    "timestamp": NOW,
                    "sampledValue": [
                        {"value": "2.2345", "measurand": "Energy.Active.Import.Register", "unit": "kWh"},
                        {"value": "7360", "measurand": "Power.Active.Import", "unit": "W"},
                    ],
                }
            ],
        }
        assert (await _call(ws, "7", "MeterValues", meter))[2] == {}
        assert csms.transactions[1].meter_last == pytest.approx(2234.5)

        stop = {"transactionId": 1, "meterStop": 3000, "timestamp": NOW, "reason": "EVDisconnected"}
        assert (await _call(ws, "8", "StopTransaction", stop))[2] == {}
        stop2 = {"transactionId": 2, "meterStop": 0, "timestamp": NOW, "idTag": "BAD"}
        assert (await _call(ws, "9", "StopTransaction", stop2))[2] == {"idTagInfo": {"status": "Invalid"}}

        # A second transaction gets the next id; a rejected tag still gets a transactionId.
        start2 = {"connectorId": 1, "idTag": "BAD", "meterStart": 3000, "timestamp": NOW}
        res = (await _call(ws, "10", "StartTransaction", start2))[2]
        assert res == {"transactionId": 2, "idTagInfo": {"status": "Invalid"}}

        dt = await _call(ws, "11", "DataTransfer", {"vendorId": "acme"})
        assert dt[2] == {"status": "UnknownVendorId"}
        assert (await _call(ws, "12", "FirmwareStatusNotification", {"status": "Idle"}))[2] == {}
        assert (await _call(ws, "13", "DiagnosticsStatusNotification", {"status": "Idle"}))[2] == {}

        err = await _call(ws, "14", "SignCertificate", {"csr": "x"})
        assert err[0] == 4
        assert err[2] == "NotImplemented"
        assert err[4] == {}

    tx = csms.transactions[1]
    assert (tx.meter_start, tx.meter_stop, tx.reason, tx.energy_wh) == (1000, 3000, "EVDisconnected", 2000)
    assert "energy=2000 Wh" in format_transaction(tx)

    await csms.wait_for("", kind="DISCONNECT", timeout=2)
    assert csms.connected == set()
    assert seen == csms.messages
    kinds = [(e.direction, e.kind, e.action) for e in csms.messages]
    assert kinds[0] == ("in", "CONNECT", "")
    assert kinds[1:3] == [("in", "CALL", "BootNotification"), ("out", "RESULT", "BootNotification")]
    assert ("out", "ERROR", "SignCertificate") in kinds
    assert kinds[-1] == ("in", "DISCONNECT", "")
    start_ev = csms.messages[kinds.index(("in", "CALL", "StartTransaction"))]
    assert start_ev.payload == start and start_ev.unique_id == "6"


async def test_timeline_lines(csms: DevCSMS) -> None:
    lines: list[str] = []
    csms.accept_tags = None
    csms.on_event = lambda ev: lines.append(format_event(ev))
    async with connect(_url(csms, "CP%20001"), subprotocols=OCPP16) as ws:
        start = {"connectorId": 1, "idTag": "DEMO01", "meterStart": 0, "timestamp": NOW}
        await _call(ws, "a", "StartTransaction", start)
        meter = {
            "connectorId": 1,
            "transactionId": 1,
            "meterValue": [
                {
                    "timestamp": NOW,
                    "sampledValue": [
                        {"value": "7.36", "measurand": "Power.Active.Import", "unit": "kW"},
                        {"value": "1234.5"},  # defaults: Energy.Active.Import.Register in Wh
                    ],
                }
            ],
        }
        await _call(ws, "b", "MeterValues", meter)
        await _call(
            ws, "c", "StatusNotification", {"connectorId": 1, "errorCode": "NoError", "status": "Charging"}
        )
    assert "CP 001" in csms.messages[0].cp_id
    text = "\n".join(lines)
    assert re.search(r"^\d\d:\d\d:\d\d\.\d{3} CP 001 connected \(ocpp1\.6\)", text, re.M)
    assert "CP 001 → StartTransaction connector=1 idTag=DEMO01 meterStart=0 Wh" in text
    assert "← transactionId=1 Accepted" in text
    assert "→ MeterValues connector=1 tx=1 7360 W 1234.5 Wh" in text
    assert "→ StatusNotification connector=1 Charging" in text
    assert all("\n" not in line for line in lines)


async def test_wrong_path_is_404(csms: DevCSMS) -> None:
    for path in ("/other/CP001", "/ocpp", "/ocpp/", "/ocpp/a/b"):
        with pytest.raises(InvalidStatus) as info:
            async with connect(f"ws://127.0.0.1:{csms.port}{path}", subprotocols=OCPP16):
                pass
        assert info.value.response.status_code == 404
    assert csms.connected == set()


@pytest.mark.parametrize("offered", [["ocpp2.0.1"], None])
async def test_wrong_subprotocol_is_closed(csms: DevCSMS, offered: list[Any] | None) -> None:
    async with connect(_url(csms), subprotocols=offered) as ws:
        # OCPP-J 3.2: handshake completes without Sec-WebSocket-Protocol, then the server closes.
        assert ws.subprotocol is None
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 5)
    assert csms.connected == set()
    rejected = await csms.wait_for("", kind="DISCONNECT", timeout=1)
    assert "rejected" in rejected.payload
    assert not any(e.kind == "CONNECT" for e in csms.messages)


@pytest.mark.parametrize(
    ("frame", "uid", "code"),
    [
        ("this is not json", "-1", "FormationViolation"),
        ('{"a": 1}', "-1", "FormationViolation"),
        ('[2, "x1", "Heartbeat"]', "x1", "FormationViolation"),
        ('[2, "x2", "Heartbeat", []]', "x2", "FormationViolation"),
        ('[9, "x3", "Heartbeat", {}]', "x3", "FormationViolation"),
        ('[2, "x4", "Authorize", {}]', "x4", "OccurenceConstraintViolation"),
        ('[2, "x5", "Authorize", {"idTag": 5}]', "x5", "TypeConstraintViolation"),
        ('[2, "x6", "Authorize", {"idTag": "' + "X" * 21 + '"}]', "x6", "PropertyConstraintViolation"),
        (
            '[2, "x7", "StatusNotification", {"connectorId": 1, "errorCode": "NoError", "status": "Busy"}]',
            "x7",
            "PropertyConstraintViolation",
        ),
        ('[2, "x8", "NoSuchAction", {}]', "x8", "NotImplemented"),
    ],
)
async def test_malformed_frames_get_callerror(csms: DevCSMS, frame: str, uid: str, code: str) -> None:
    async with connect(_url(csms), subprotocols=OCPP16) as ws:
        await ws.send(frame)
        reply = json.loads(await asyncio.wait_for(ws.recv(), 5))
        assert reply[:3] == [4, uid, code]
        assert isinstance(reply[3], str) and reply[4] == {}
        # The connection survives a bad frame.
        assert (await _call(ws, "ok", "Heartbeat", {}))[0] == 3


async def test_call_round_trip(csms: DevCSMS) -> None:
    async with connect(_url(csms, "CP9"), subprotocols=OCPP16) as ws:
        await csms.wait_for("", kind="CONNECT", cp_id="CP9", timeout=2)

        async def charger() -> None:
            msg = json.loads(await ws.recv())
            assert msg[0] == 2 and msg[2] == "RemoteStartTransaction"
            assert msg[3] == {"idTag": "GOOD", "connectorId": 1}
            await ws.send(json.dumps([3, msg[1], {"status": "Accepted"}]))
            msg = json.loads(await ws.recv())
            await ws.send(json.dumps([4, msg[1], "NotSupported", "nope", {"x": 1}]))

        task = asyncio.create_task(charger())
        result = await csms.call(
            "CP9", "RemoteStartTransaction", {"idTag": "GOOD", "connectorId": 1}, timeout=5
        )
        assert result == {"status": "Accepted"}
        with pytest.raises(CallError) as info:
            await csms.call("CP9", "Reset", {"type": "Soft"}, timeout=5)
        assert (info.value.code, info.value.description, info.value.details) == (
            "NotSupported",
            "nope",
            {"x": 1},
        )
        await task

        res_ev = await csms.wait_for("RemoteStartTransaction", kind="RESULT", timeout=1)
        assert res_ev.direction == "in"
        assert format_event(res_ev).endswith("→ Accepted")
        out = [e for e in csms.messages if e.direction == "out" and e.kind == "CALL"]
        assert [e.action for e in out] == ["RemoteStartTransaction", "Reset"]
        assert "← RemoteStartTransaction idTag=GOOD connector=1" in format_event(out[0])

        with pytest.raises(TimeoutError):
            await csms.call("CP9", "ClearCache", {}, timeout=0.2)
    with pytest.raises(ConnectionError):
        await csms.call("CP9", "ClearCache", {}, timeout=1)


async def test_wait_for_since_and_timeout(csms: DevCSMS) -> None:
    async with connect(_url(csms), subprotocols=OCPP16) as ws:
        await _call(ws, "1", "Heartbeat", {})
        # Past events are found...
        await csms.wait_for("Heartbeat", timeout=1)
        # ...unless excluded with mark(); then only a new one satisfies the wait.
        mark = csms.mark()
        with pytest.raises(TimeoutError):
            await csms.wait_for("Heartbeat", since=mark, timeout=0.2)
        waiter = asyncio.create_task(csms.wait_for("Heartbeat", since=mark, timeout=5))
        await asyncio.sleep(0.05)
        await _call(ws, "2", "Heartbeat", {})
        assert (await waiter).unique_id == "2"
        ev = await csms.wait_for("Heartbeat", predicate=lambda e: e.unique_id == "2", timeout=1)
        assert ev.unique_id == "2"


async def test_boot_status_and_reconnect_replaces() -> None:
    boot_req = {"chargePointVendor": "V", "chargePointModel": "M"}
    async with (
        DevCSMS(port=0, boot_status="Pending") as csms,
        connect(_url(csms), subprotocols=OCPP16) as first,
    ):
        boot = await _call(first, "1", "BootNotification", boot_req)
        assert boot[2]["status"] == "Pending"
        async with connect(_url(csms), subprotocols=OCPP16) as second:
            with pytest.raises(ConnectionClosed):
                await asyncio.wait_for(first.recv(), 5)
            assert csms.connected == {"CP001"}
            assert (await _call(second, "2", "Heartbeat", {}))[0] == 3
    with pytest.raises(ValueError):
        DevCSMS(boot_status="Maybe")


def test_cli_args() -> None:
    args = _parse_args(["--port", "0", "--accept-tags", "A,B", "--boot-status", "Rejected"])
    assert (args.port, args.accept_tags, args.boot_status, args.path) == (0, "A,B", "Rejected", "/ocpp")


def test_demo_config_matches_contract(tmp_path: Path) -> None:
    # The demo drives the real daemon through this file, so it must stay valid TOML with the agreed keys.
    from evsed.demo import write_config

    weird = tmp_path / 'dir "with" quotes\\'
    weird.mkdir()
    cfg = tomllib.loads(write_config(weird, "ws://127.0.0.1:1234/ocpp").read_text())
    assert cfg["charge_point"] == {"id": "DEMO-CP1", "vendor": "evsed", "model": "evsed-sim"}
    assert cfg["ocpp"] == {
        "url": "ws://127.0.0.1:1234/ocpp",
        "config": {"MeterValueSampleInterval": 5, "HeartbeatInterval": 30},
    }
    assert cfg["hardware"] == {"backend": "sim", "connectors": 1}
    assert cfg["storage"] == {"dir": str(weird / "state")}
    assert cfg["control"] == {"socket": str(weird / "evsed.sock")}
