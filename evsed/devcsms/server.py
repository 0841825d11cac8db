"""A small OCPP 1.6J central system for bench-testing charge points.

It is deliberately self-contained (json + websockets only, no other evsed
modules): it is used as the *independent* peer in tests and in the demo, so
a bug in evsed's own OCPP layer cannot be mirrored here and cancel itself out.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal
from urllib.parse import unquote, urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response
from websockets.typing import Subprotocol

__all__ = [
    "CALL",
    "CALLERROR",
    "CALLRESULT",
    "SUBPROTOCOL",
    "CallError",
    "DevCSMS",
    "Event",
    "Transaction",
    "format_event",
    "format_transaction",
]

log = logging.getLogger(__name__)

SUBPROTOCOL = "ocpp1.6"
CALL, CALLRESULT, CALLERROR = 2, 3, 4

Direction = Literal["in", "out"]
Kind = Literal["CALL", "RESULT", "ERROR", "CONNECT", "DISCONNECT"]
JSONObj = dict[str, Any]


@dataclass(frozen=True)
class Event:
    """One entry of the timeline. ``direction`` is relative to the CSMS: "in" = from the charge point."""

    time: datetime
    cp_id: str
    direction: Direction
    kind: Kind
    action: str
    payload: JSONObj
    unique_id: str = ""


@dataclass
class Transaction:
    transaction_id: int
    cp_id: str
    connector_id: int
    id_tag: str
    meter_start: int
    started: datetime
    status: str
    meter_last: float | None = None
    meter_stop: int | None = None
    stopped: datetime | None = None
    reason: str | None = None
    stop_id_tag: str | None = None

    @property
    def active(self) -> bool:
        return self.stopped is None

    @property
    def energy_wh(self) -> float | None:
        end = self.meter_stop if self.meter_stop is not None else self.meter_last
        return None if end is None else end - self.meter_start


class CallError(Exception):
    """The charge point answered one of our CALLs with a CALLERROR."""

    def __init__(self, code: str, description: str = "", details: JSONObj | None = None) -> None:
        super().__init__(f"{code}: {description}" if description else code)
        self.code = code
        self.description = description
        self.details = details or {}


class _Reject(Exception):
    """Internal: a received CALL must be answered with this CALLERROR."""

    def __init__(self, code: str, description: str) -> None:
        super().__init__(description)
        self.code = code
        self.description = description


# -- minimal request validation ------------------------------------------------------------------
# A bench CSMS is most useful when it is strict: it should point out a charger that omits
# mandatory fields or sends out-of-enum values instead of silently accepting them. This is a
# hand-written subset of the v16 JSON schemas (no jsonschema dependency), covering the fields
# of the messages handled below.

_STATUS = [
    "Available",
    "Preparing",
    "Charging",
    "SuspendedEVSE",
    "SuspendedEV",
    "Finishing",
    "Reserved",
    "Unavailable",
    "Faulted",
]
_ERROR_CODES = [
    "ConnectorLockFailure",
    "EVCommunicationError",
    "GroundFailure",
    "HighTemperature",
    "InternalError",
    "LocalListConflict",
    "NoError",
    "OtherError",
    "OverCurrentFailure",
    "PowerMeterFailure",
    "PowerSwitchFailure",
    "ReaderFailure",
    "ResetFailure",
    "UnderVoltage",
    "OverVoltage",
    "WeakSignal",
]
_STOP_REASONS = [
    "EmergencyStop",
    "EVDisconnected",
    "HardReset",
    "Local",
    "Other",
    "PowerLoss",
    "Reboot",
    "Remote",
    "SoftReset",
    "UnlockCommand",
    "DeAuthorized",
]
_FW_STATUS = [
    "Downloaded",
    "DownloadFailed",
    "Downloading",
    "Idle",
    "InstallationFailed",
    "Installing",
    "Installed",
]
_DIAG_STATUS = ["Idle", "Uploaded", "UploadFailed", "Uploading"]


@dataclass(frozen=True)
class _F:
    type: type | tuple[type, ...]
    required: bool = False
    max_len: int | None = None
    enum: tuple[str, ...] | None = None


def _s(max_len: int | None = None, required: bool = False, enum: list[str] | None = None) -> _F:
    return _F(str, required, max_len, tuple(enum) if enum else None)


def _i(required: bool = False) -> _F:
    return _F(int, required)


_SCHEMA: dict[str, dict[str, _F]] = {
    "BootNotification": {
        "chargePointVendor": _s(20, True),
        "chargePointModel": _s(20, True),
        "chargePointSerialNumber": _s(25),
        "chargeBoxSerialNumber": _s(25),
        "firmwareVersion": _s(50),
        "iccid": _s(20),
        "imsi": _s(20),
        "meterType": _s(25),
        "meterSerialNumber": _s(25),
    },
    "Heartbeat": {},
    "StatusNotification": {
        "connectorId": _i(True),
        "errorCode": _s(required=True, enum=_ERROR_CODES),
        "status": _s(required=True, enum=_STATUS),
        "info": _s(50),
        "timestamp": _s(),
        "vendorId": _s(255),
        "vendorErrorCode": _s(50),
    },
    "Authorize": {"idTag": _s(20, True)},
    "StartTransaction": {
        "connectorId": _i(True),
        "idTag": _s(20, True),
        "meterStart": _i(True),
        "timestamp": _s(required=True),
        "reservationId": _i(),
    },
    "StopTransaction": {
        "transactionId": _i(True),
        "meterStop": _i(True),
        "timestamp": _s(required=True),
        "idTag": _s(20),
        "reason": _s(enum=_STOP_REASONS),
        "transactionData": _F(list),
    },
    "MeterValues": {"connectorId": _i(True), "transactionId": _i(), "meterValue": _F(list, True)},
    "DataTransfer": {"vendorId": _s(255, True), "messageId": _s(50), "data": _F(object)},
    "FirmwareStatusNotification": {"status": _s(required=True, enum=_FW_STATUS)},
    "DiagnosticsStatusNotification": {"status": _s(required=True, enum=_DIAG_STATUS)},
}


def _validate(action: str, payload: JSONObj) -> None:
    for name, spec in _SCHEMA[action].items():
        if name not in payload:
            if spec.required:
                # Spelled as in OCPP-J 1.6 (the errata keep the typo on the wire).
                raise _Reject("OccurenceConstraintViolation", f"{action}: missing required field '{name}'")
            continue
        value = payload[name]
        if spec.type is object:
            continue
        # bool is an int subclass in Python but not a JSON integer.
        if isinstance(value, bool) or not isinstance(value, spec.type):
            got = type(value).__name__
            raise _Reject("TypeConstraintViolation", f"{action}.{name}: unexpected type {got}")
        if spec.max_len is not None and isinstance(value, str) and len(value) > spec.max_len:
            raise _Reject(
                "PropertyConstraintViolation", f"{action}.{name}: longer than {spec.max_len} characters"
            )
        if spec.enum is not None and value not in spec.enum:
            raise _Reject("PropertyConstraintViolation", f"{action}.{name}: {value!r} is not a valid value")
    if action == "MeterValues" and not payload["meterValue"]:
        raise _Reject("OccurenceConstraintViolation", "MeterValues.meterValue must not be empty")


def _now() -> datetime:
    return datetime.now(UTC)


def _iso(ts: datetime) -> str:
    return ts.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# -- meter value helpers -------------------------------------------------------------------------

_ENERGY_REGISTER = "Energy.Active.Import.Register"
_SCALE = {"Wh": 1.0, "kWh": 1000.0, "W": 1.0, "kW": 1000.0, "A": 1.0, "V": 1.0, "Percent": 1.0}


def _sampled(payload: JSONObj) -> list[JSONObj]:
    out: list[JSONObj] = []
    for mv in payload.get("meterValue") or []:
        if isinstance(mv, dict):
            out.extend(sv for sv in mv.get("sampledValue") or [] if isinstance(sv, dict))
    return out


def _reading(samples: list[JSONObj], measurand: str) -> tuple[float | None, list[float]]:
    """Return (total, per-phase values) for ``measurand``, normalised to Wh / W / A / V."""
    total: float | None = None
    phases: list[float] = []
    for sv in samples:
        # Per OCPP 1.6 an absent measurand means the energy import register.
        if sv.get("measurand", _ENERGY_REGISTER) != measurand:
            continue
        try:
            value = float(sv.get("value", "")) * _SCALE.get(str(sv.get("unit", "")), 1.0)
        except (TypeError, ValueError):
            continue
        phase = sv.get("phase")
        if phase is None:
            total = value
        elif "-N" in phase or phase in ("L1", "L2", "L3"):
            phases.append(value)
    return total, phases


def _num(value: float) -> str:
    return f"{value:.0f}" if float(value).is_integer() else f"{value:.1f}"


# -- timeline formatting -------------------------------------------------------------------------


def _kv(payload: JSONObj, limit: int = 100) -> str:
    parts = [f"{k}={v}" for k, v in payload.items() if not isinstance(v, dict | list)]
    text = " ".join(parts)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _describe_call(action: str, p: JSONObj) -> str:
    if action == "BootNotification":
        text = f"vendor={p.get('chargePointVendor')} model={p.get('chargePointModel')}"
        if "firmwareVersion" in p:
            text += f" fw={p['firmwareVersion']}"
        if "chargePointSerialNumber" in p:
            text += f" serial={p['chargePointSerialNumber']}"
        return text
    if action == "StatusNotification":
        text = f"connector={p.get('connectorId')} {p.get('status')}"
        if p.get("errorCode", "NoError") != "NoError":
            text += f" error={p.get('errorCode')}"
        for key in ("info", "vendorErrorCode"):
            if p.get(key):
                text += f" {key}={p[key]}"
        return text
    if action == "Authorize":
        return f"idTag={p.get('idTag')}"
    if action == "StartTransaction":
        return f"connector={p.get('connectorId')} idTag={p.get('idTag')} meterStart={p.get('meterStart')} Wh"
    if action == "StopTransaction":
        text = f"tx={p.get('transactionId')} meterStop={p.get('meterStop')} Wh"
        text += f" reason={p.get('reason', 'Local')}"
        if "idTag" in p:
            text += f" idTag={p['idTag']}"
        return text
    if action == "MeterValues":
        text = f"connector={p.get('connectorId')}"
        if "transactionId" in p:
            text += f" tx={p['transactionId']}"
        samples = _sampled(p)
        power, power_phases = _reading(samples, "Power.Active.Import")
        if power is None and power_phases:
            power = sum(power_phases)
        energy, _ = _reading(samples, _ENERGY_REGISTER)
        _, currents = _reading(samples, "Current.Import")
        soc, _ = _reading(samples, "SoC")
        if power is not None:
            text += f" {_num(power)} W"
        if energy is not None:
            text += f" {_num(energy)} Wh"
        if currents:
            text += " " + "/".join(_num(c) for c in currents) + " A"
        if soc is not None:
            text += f" SoC {_num(soc)} %"
        return text
    if action in ("FirmwareStatusNotification", "DiagnosticsStatusNotification"):
        return str(p.get("status"))
    if action == "DataTransfer":
        return _kv({k: p[k] for k in ("vendorId", "messageId") if k in p})
    if action == "RemoteStartTransaction":
        text = f"idTag={p.get('idTag')}"
        if "connectorId" in p:
            text += f" connector={p['connectorId']}"
        return text
    return _kv(p)


def _describe_result(action: str, p: JSONObj) -> str:
    info = p.get("idTagInfo")
    tag_status = info.get("status") if isinstance(info, dict) else None
    if action == "BootNotification":
        return f"{p.get('status')} interval={p.get('interval')}s"
    if action == "Heartbeat":
        return str(p.get("currentTime"))
    if action == "StartTransaction":
        return f"transactionId={p.get('transactionId')} {tag_status}"
    if tag_status is not None:
        return str(tag_status)
    if "status" in p and len(p) == 1:
        return str(p["status"])
    return _kv(p) or "ok"


def format_event(ev: Event) -> str:
    """One short human line. Arrows point the way the message travelled: CP → CSMS, CP ← CSMS."""
    stamp = ev.time.astimezone().strftime("%H:%M:%S.%f")[:-3]
    head = f"{stamp} {ev.cp_id}"
    to_csms = ev.direction == "in"
    if ev.kind == "CALL":
        arrow = "→" if to_csms else "←"
        return f"{head} {arrow} {ev.action} {_describe_call(ev.action, ev.payload)}".rstrip()
    # Responses are indented so a request and its answer read as a pair.
    if ev.kind == "RESULT":
        return f"{head}   {'→' if to_csms else '←'} {_describe_result(ev.action, ev.payload)}"
    if ev.kind == "ERROR":
        desc = ev.payload.get("errorDescription") or ""
        return f"{head}   {'→' if to_csms else '←'} CALLERROR {ev.payload.get('errorCode')} {desc}".rstrip()
    if ev.kind == "CONNECT":
        return f"{head} connected ({ev.payload.get('subprotocol')}) from {ev.payload.get('remote')}"
    if "rejected" in ev.payload:
        return f"{head} rejected: {ev.payload['rejected']}"
    code = ev.payload.get("code")
    reason = ev.payload.get("reason") or ""
    return f"{head} disconnected (code {code}) {reason}".rstrip()


def format_transaction(tx: Transaction) -> str:
    energy = tx.energy_wh
    energy_text = "?" if energy is None else f"{_num(energy)} Wh ({energy / 1000:.3f} kWh)"
    end = tx.stopped or _now()
    duration = int((end - tx.started).total_seconds())
    state = "active" if tx.active else f"stopped reason={tx.reason}"
    return (
        f"transaction {tx.transaction_id} on {tx.cp_id} connector {tx.connector_id}: idTag={tx.id_tag} "
        f"({tx.status}) meterStart={tx.meter_start} Wh meterStop={tx.meter_stop} Wh "
        f"energy={energy_text} duration={duration}s {state}"
    )


# -- the server ----------------------------------------------------------------------------------


class _Peer:
    def __init__(self, cp_id: str, ws: ServerConnection) -> None:
        self.cp_id = cp_id
        self.ws = ws
        self.pending: dict[str, tuple[str, asyncio.Future[JSONObj]]] = {}


class DevCSMS:
    """Development central system: accepts OCPP 1.6J charge points on ``ws://host:port<path>/<id>``."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 9000,
        path: str = "/ocpp",
        accept_tags: set[str] | None = None,
        heartbeat_interval: int = 60,
        boot_status: str = "Accepted",
        on_event: Callable[[Event], None] | None = None,
    ) -> None:
        if boot_status not in ("Accepted", "Pending", "Rejected"):
            raise ValueError(f"boot_status must be Accepted, Pending or Rejected, not {boot_status!r}")
        self.host = host
        self.port = port
        self.path = "/" + path.strip("/") if path.strip("/") else ""
        self.accept_tags = accept_tags
        self.heartbeat_interval = heartbeat_interval
        self.boot_status = boot_status
        self.on_event = on_event
        self.connected: set[str] = set()
        self.messages: list[Event] = []
        self.transactions: dict[int, Transaction] = {}
        self.boot_info: dict[str, JSONObj] = {}
        self.connector_status: dict[tuple[str, int], str] = {}
        self._peers: dict[str, _Peer] = {}
        self._tx_ids = itertools.count(1)
        self._server: Server | None = None
        # Replaced on every new event; waiters hold the old one, so none can miss a wake-up.
        self._changed = asyncio.Event()

    @property
    def url(self) -> str:
        """The OCPP-J endpoint URL a charge point should be configured with."""
        return f"ws://{self.host}:{self.port}{self.path}"

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        self._server = await serve(
            self._handle,
            self.host,
            self.port,
            subprotocols=[Subprotocol(SUBPROTOCOL)],
            select_subprotocol=self._select_subprotocol,
            process_request=self._process_request,
            # Heartbeat is the charger's job; server pings would only hide a charger that never sends one.
            ping_interval=None,
        )
        if self.port == 0:
            # With a name resolving to several addresses each socket gets its own port; pass an
            # IP address (the default) when using port 0.
            self.port = next(iter(self._server.sockets)).getsockname()[1]

    async def stop(self) -> None:
        if self._server is None:
            return
        self._server.close()
        await self._server.wait_closed()
        self._server = None

    async def __aenter__(self) -> DevCSMS:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- public helpers ----------------------------------------------------------------------

    def mark(self) -> int:
        """Position in :attr:`messages`; pass it as ``since`` to :meth:`wait_for` to ignore older events."""
        return len(self.messages)

    async def call(self, cp_id: str, action: str, payload: JSONObj, timeout: float = 10) -> JSONObj:
        """Send a CALL to a connected charge point and return its CALLRESULT payload."""
        peer = self._peers.get(cp_id)
        if peer is None:
            raise ConnectionError(f"charge point {cp_id!r} is not connected")
        unique_id = str(uuid.uuid4())
        future: asyncio.Future[JSONObj] = asyncio.get_running_loop().create_future()
        peer.pending[unique_id] = (action, future)
        try:
            await self._send(peer, [CALL, unique_id, action, payload], "CALL", action, payload, unique_id)
            return await asyncio.wait_for(future, timeout)
        finally:
            peer.pending.pop(unique_id, None)

    async def wait_for(
        self,
        action: str,
        cp_id: str | None = None,
        predicate: Callable[[Event], bool] | None = None,
        timeout: float = 30,
        *,
        kind: Kind = "CALL",
        since: int = 0,
    ) -> Event:
        """Return the first event at index >= ``since`` matching action/kind/cp_id/predicate.

        Past events count, so a message that arrived before the wait started is not missed;
        use :meth:`mark` to wait only for newer ones.
        """

        def match(ev: Event) -> bool:
            return (
                ev.kind == kind
                and ev.action == action
                and (cp_id is None or ev.cp_id == cp_id)
                and (predicate is None or predicate(ev))
            )

        async def scan() -> Event:
            index = since
            while True:
                while index < len(self.messages):
                    ev = self.messages[index]
                    index += 1
                    if match(ev):
                        return ev
                await self._changed.wait()

        return await asyncio.wait_for(scan(), timeout)

    # -- handshake ---------------------------------------------------------------------------

    def _cp_id_from_path(self, raw: str) -> str | None:
        path = urlsplit(raw).path
        prefix = self.path + "/"
        if not path.startswith(prefix):
            return None
        ident = path[len(prefix) :]
        if not ident or "/" in ident:
            return None
        return unquote(ident)

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        if self._cp_id_from_path(request.path) is None:
            # A wrong URL is the most common charger misconfiguration; make it visible in the timeline.
            self._record("?", "in", "DISCONNECT", "", {"rejected": f"HTTP 404 for path {request.path}"})
            return connection.respond(404, f"No OCPP endpoint here; use {self.path}/<chargePointId>\n")
        return None

    @staticmethod
    def _select_subprotocol(
        connection: ServerConnection, subprotocols: Sequence[Subprotocol]
    ) -> Subprotocol | None:
        # Per OCPP-J 3.2: without a common subprotocol, complete the handshake without
        # Sec-WebSocket-Protocol and close right after (websockets' default would send HTTP 400).
        return Subprotocol(SUBPROTOCOL) if SUBPROTOCOL in subprotocols else None

    # -- connection handling -----------------------------------------------------------------

    async def _handle(self, ws: ServerConnection) -> None:
        cp_id = self._cp_id_from_path(ws.request.path if ws.request else "") or "?"
        if ws.subprotocol != SUBPROTOCOL:
            offered = ", ".join(ws.request.headers.get_all("Sec-WebSocket-Protocol")) if ws.request else ""
            reason = f"no {SUBPROTOCOL} subprotocol offered (offered: {offered or 'none'})"
            self._record(cp_id, "in", "DISCONNECT", "", {"rejected": reason})
            await ws.close(1002, f"{SUBPROTOCOL} subprotocol required")
            return

        old = self._peers.get(cp_id)
        peer = _Peer(cp_id, ws)
        self._peers[cp_id] = peer
        self.connected.add(cp_id)
        if old is not None:
            # A charger that reconnects (e.g. after a network blip) replaces its stale socket.
            # Registered first, so the old handler's cleanup sees it is no longer current.
            await old.ws.close(1000, "replaced by a new connection")
        remote = ws.remote_address
        remote_text = f"{remote[0]}:{remote[1]}" if isinstance(remote, tuple) else str(remote)
        self._record(cp_id, "in", "CONNECT", "", {"subprotocol": ws.subprotocol, "remote": remote_text})
        try:
            async for raw in ws:
                await self._on_frame(peer, raw)
        except ConnectionClosed:
            pass
        finally:
            if self._peers.get(cp_id) is peer:
                del self._peers[cp_id]
                self.connected.discard(cp_id)
            for _, future in peer.pending.values():
                if not future.done():
                    future.set_exception(ConnectionError(f"charge point {cp_id!r} disconnected"))
            self._record(
                cp_id, "in", "DISCONNECT", "", {"code": ws.close_code, "reason": ws.close_reason or ""}
            )

    async def _on_frame(self, peer: _Peer, raw: str | bytes) -> None:
        try:
            msg = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            # Echo the start of the frame: on a bench the bad bytes are what one needs to see.
            snippet = raw[:60] if isinstance(raw, str) else raw[:60].decode("utf-8", "replace")
            await self._send_error(
                peer, "-1", "", "FormationViolation", f"frame is not valid JSON: {snippet!r}"
            )
            return
        if not isinstance(msg, list) or len(msg) < 3 or not isinstance(msg[1], str):
            unique_id = msg[1] if isinstance(msg, list) and len(msg) > 1 and isinstance(msg[1], str) else "-1"
            await self._send_error(
                peer, unique_id, "", "FormationViolation", "expected [MessageTypeId, UniqueId, ...]"
            )
            return
        type_id, unique_id = msg[0], msg[1]
        if type_id == CALL:
            if len(msg) != 4 or not isinstance(msg[2], str) or not isinstance(msg[3], dict):
                await self._send_error(
                    peer, unique_id, "", "FormationViolation", 'CALL must be [2, "id", "Action", {payload}]'
                )
                return
            await self._on_call(peer, unique_id, msg[2], msg[3])
        elif type_id == CALLRESULT and len(msg) == 3 and isinstance(msg[2], dict):
            self._on_response(peer, unique_id, msg[2], None)
        elif type_id == CALLERROR and len(msg) == 5:
            self._on_response(peer, unique_id, None, msg)
        else:
            await self._send_error(
                peer, unique_id, "", "FormationViolation", f"malformed or unknown message type {type_id!r}"
            )

    def _on_response(
        self, peer: _Peer, unique_id: str, result: JSONObj | None, error: list[Any] | None
    ) -> None:
        entry = peer.pending.get(unique_id)
        action = entry[0] if entry else ""
        if error is None:
            assert result is not None
            self._record(peer.cp_id, "in", "RESULT", action, result, unique_id)
        else:
            details = error[4] if isinstance(error[4], dict) else {}
            payload = {"errorCode": str(error[2]), "errorDescription": str(error[3]), "errorDetails": details}
            self._record(peer.cp_id, "in", "ERROR", action, payload, unique_id)
        if entry is None:
            log.warning("%s: response to unknown or expired unique id %s", peer.cp_id, unique_id)
            return
        future = entry[1]
        if future.done():
            return
        if error is None:
            future.set_result(result or {})
        else:
            future.set_exception(CallError(str(error[2]), str(error[3]), details))

    async def _on_call(self, peer: _Peer, unique_id: str, action: str, payload: JSONObj) -> None:
        self._record(peer.cp_id, "in", "CALL", action, payload, unique_id)
        handler = getattr(self, f"_on_{action}", None) if action in _SCHEMA else None
        if handler is None:
            await self._send_error(peer, unique_id, action, "NotImplemented", f"{action} is not supported")
            return
        try:
            _validate(action, payload)
            result: JSONObj = handler(peer.cp_id, payload)
        except _Reject as exc:
            await self._send_error(peer, unique_id, action, exc.code, exc.description)
            return
        except Exception as exc:  # a bug here must not drop the charger's connection
            log.exception("%s: handling %s failed", peer.cp_id, action)
            await self._send_error(peer, unique_id, action, "InternalError", str(exc))
            return
        await self._send(peer, [CALLRESULT, unique_id, result], "RESULT", action, result, unique_id)

    # -- message handlers (names follow _on_<Action>) ----------------------------------------

    def _id_tag_info(self, id_tag: str) -> JSONObj:
        accepted = self.accept_tags is None or id_tag in self.accept_tags
        return {"status": "Accepted" if accepted else "Invalid"}

    def _on_BootNotification(self, cp_id: str, p: JSONObj) -> JSONObj:
        self.boot_info[cp_id] = dict(p)
        return {"status": self.boot_status, "currentTime": _iso(_now()), "interval": self.heartbeat_interval}

    def _on_Heartbeat(self, cp_id: str, p: JSONObj) -> JSONObj:
        return {"currentTime": _iso(_now())}

    def _on_StatusNotification(self, cp_id: str, p: JSONObj) -> JSONObj:
        self.connector_status[(cp_id, p["connectorId"])] = p["status"]
        return {}

    def _on_Authorize(self, cp_id: str, p: JSONObj) -> JSONObj:
        return {"idTagInfo": self._id_tag_info(p["idTag"])}

    def _on_StartTransaction(self, cp_id: str, p: JSONObj) -> JSONObj:
        info = self._id_tag_info(p["idTag"])
        # OCPP 1.6 requires a transactionId even when the tag is rejected; the charger then stops it.
        tx_id = next(self._tx_ids)
        self.transactions[tx_id] = Transaction(
            transaction_id=tx_id,
            cp_id=cp_id,
            connector_id=p["connectorId"],
            id_tag=p["idTag"],
            meter_start=p["meterStart"],
            started=_now(),
            status=info["status"],
            meter_last=float(p["meterStart"]),
        )
        return {"transactionId": tx_id, "idTagInfo": info}

    def _on_StopTransaction(self, cp_id: str, p: JSONObj) -> JSONObj:
        tx = self.transactions.get(p["transactionId"])
        if tx is not None:
            energy, _ = _reading(_sampled({"meterValue": p.get("transactionData") or []}), _ENERGY_REGISTER)
            if energy is not None:
                tx.meter_last = energy
            tx.meter_stop = p["meterStop"]
            tx.stopped = _now()
            # The spec allows omitting reason only when it is "Local".
            tx.reason = p.get("reason", "Local")
            tx.stop_id_tag = p.get("idTag")
        else:
            log.warning("%s: StopTransaction for unknown transaction %s", cp_id, p["transactionId"])
        return {"idTagInfo": self._id_tag_info(p["idTag"])} if "idTag" in p else {}

    def _on_MeterValues(self, cp_id: str, p: JSONObj) -> JSONObj:
        tx = self.transactions.get(p["transactionId"]) if "transactionId" in p else None
        if tx is None:
            # Some chargers omit transactionId; attribute to the open transaction on that connector.
            tx = next(
                (
                    t
                    for t in self.transactions.values()
                    if t.active and t.cp_id == cp_id and t.connector_id == p["connectorId"]
                ),
                None,
            )
        energy, _ = _reading(_sampled(p), _ENERGY_REGISTER)
        if tx is not None and energy is not None:
            tx.meter_last = energy
        return {}

    def _on_DataTransfer(self, cp_id: str, p: JSONObj) -> JSONObj:
        return {"status": "UnknownVendorId"}

    def _on_FirmwareStatusNotification(self, cp_id: str, p: JSONObj) -> JSONObj:
        return {}

    def _on_DiagnosticsStatusNotification(self, cp_id: str, p: JSONObj) -> JSONObj:
        return {}

    # -- sending / recording -----------------------------------------------------------------

    async def _send(
        self, peer: _Peer, frame: list[Any], kind: Kind, action: str, payload: JSONObj, unique_id: str
    ) -> None:
        # Record before sending so the timeline order matches what the charger can observe.
        self._record(peer.cp_id, "out", kind, action, payload, unique_id)
        with contextlib.suppress(ConnectionClosed):
            await peer.ws.send(json.dumps(frame, separators=(",", ":")))

    async def _send_error(
        self, peer: _Peer, unique_id: str, action: str, code: str, description: str
    ) -> None:
        frame = [CALLERROR, unique_id, code, description, {}]
        payload = {"errorCode": code, "errorDescription": description, "errorDetails": {}}
        await self._send(peer, frame, "ERROR", action, payload, unique_id)

    def _record(
        self, cp_id: str, direction: Direction, kind: Kind, action: str, payload: JSONObj, unique_id: str = ""
    ) -> None:
        ev = Event(_now(), cp_id, direction, kind, action, payload, unique_id)
        self.messages.append(ev)
        if self.on_event is not None:
            try:
                self.on_event(ev)
            except Exception:
                log.exception("on_event callback failed")
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()
