"""The OCPP 1.6J charge-point session, sans I/O.

It takes frames, charging events and the monotonic time; it produces frames to send (``outbox``) and calls
into a ``Controller`` (the charging core's port) for remote commands and authorization results. The
WebSocket adapter (``ocpp.client``) only moves frames and calls ``tick`` at ``next_deadline``.

Rules kept here:
- at most one outstanding CALL; a handler never waits for an outgoing CALL;
- transaction messages (Start/Stop/MeterValues) are written to the store before they are sent and leave it
  only when the CSMS answered, in order, with the CSMS transactionId filled in at send time;
- while not Accepted, nothing but BootNotification is sent.
"""

from __future__ import annotations

import logging
import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from evsed.ocpp import rpc
from evsed.ocpp.configkeys import ConfigKeys
from evsed.ocpp.schema import Validator
from evsed.store.db import QueuedMessage, Store

log = logging.getLogger(__name__)

DEFAULT_BOOT_RETRY_S = 30.0
TRANSACTION_ACTIONS = frozenset({"StartTransaction", "MeterValues", "StopTransaction"})
_UNITS = {"Energy.Active.Import.Register": "Wh", "Power.Active.Import": "W", "Current.Import": "A",
          "Current.Offered": "A", "Voltage": "V"}


@dataclass(frozen=True)
class Identity:
    charge_point_id: str
    vendor: str
    model: str
    serial_number: str | None = None
    firmware_version: str | None = None


@dataclass(frozen=True, slots=True)
class Measurement:
    energy_wh: float
    power_w: float
    current_a: float
    offered_a: float
    voltage_v: float


class Controller(Protocol):
    """What the session may ask of the charging core."""

    def can_remote_start(self, connector: int | None) -> bool: ...
    def remote_start(self, connector: int | None, id_tag: str) -> bool: ...
    def remote_stop(self, connector: int) -> None: ...
    def deauthorize(self, connector: int) -> None: ...
    def authorization_result(self, id_tag: str, status: str, parent_id_tag: str | None) -> None: ...
    def measurement(self, connector: int) -> Measurement: ...
    def statuses(self) -> dict[int, tuple[str, str, str]]:
        """(status, errorCode, info) of connector 0 (the charge point) and of every connector."""


@dataclass
class _Pending:
    unique_id: str
    action: str
    payload: dict[str, Any]
    deadline: float
    queued: QueuedMessage | None = None
    context: Any = None


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def parse_iso(text: str) -> float | None:
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except (ValueError, TypeError):
        return None


class OcppSession:
    def __init__(self, identity: Identity, keys: ConfigKeys, store: Store, controller: Controller,
                 validator: Validator, *, connectors: int, now: float, wall_offset: float,
                 call_timeout_s: float = 30.0, rng: random.Random | None = None) -> None:
        self.identity = identity
        self.keys = keys
        self.store = store
        self.controller = controller
        self.validator = validator
        self.connectors = connectors
        self.call_timeout_s = call_timeout_s
        self.wall_offset = wall_offset  # wall clock = monotonic + offset; the CSMS's currentTime adjusts it
        self.outbox: list[str] = []
        self.connected = False
        self.registration: str | None = None
        self._rng = rng or random.Random()
        self._pending: _Pending | None = None
        self._normal: deque[tuple[str, dict[str, Any], Any]] = deque()
        self._status_unsent: dict[int, tuple[str, str, str, float]] = {}
        self._next_boot = now
        self._last_sent = now
        self._tx_retry_at = now
        self._active: dict[int, int] = {}  # connector -> local transaction id
        self._sample_at: dict[int, float] = {}
        self._handlers: dict[str, Callable[[dict[str, Any], float], dict[str, Any]]] = {
            "RemoteStartTransaction": self._on_remote_start,
            "RemoteStopTransaction": self._on_remote_stop,
            "GetConfiguration": self._on_get_configuration,
            "ChangeConfiguration": self._on_change_configuration,
        }
        self.on_event: Callable[[str, dict[str, Any]], None] = lambda kind, data: None
        for row in store.open_transactions():
            self._active[row.connector] = row.local_id

    # --- clock --------------------------------------------------------------------------------------------
    def wall(self, now: float) -> float:
        return now + self.wall_offset

    def timestamp(self, now: float) -> str:
        return iso(self.wall(now))

    # --- connection events --------------------------------------------------------------------------------
    def connection_opened(self, now: float) -> None:
        self.connected = True
        self._pending = None
        if self.registration != "Accepted":
            self._next_boot = now
        else:
            # After an outage the CSMS should hear the current state of every connector again.
            self._queue_all_statuses(now)
        self._tx_retry_at = now
        self._pump(now)

    def connection_lost(self, now: float) -> None:
        self.connected = False
        if self._pending is not None and self._pending.action == "Authorize":
            self._authorize_offline(self._pending.payload["idTag"], self._pending.context)
        self._pending = None
        # Authorize requests cannot wait for the connection; decide them by the offline rules now.
        while self._normal:
            action, payload, context = self._normal.popleft()
            if action == "Authorize":
                self._authorize_offline(payload["idTag"], context)

    # --- incoming frames ----------------------------------------------------------------------------------
    def receive(self, text: str | bytes, now: float) -> None:
        try:
            frame = rpc.decode(text)
        except rpc.RpcError as err:
            log.warning("ocpp: malformed frame from CSMS: %s", err)
            if err.in_reply_to is not None:
                # A broken answer to one of our CALLs: never answer an answer; fail that CALL now.
                p = self._pending
                if p is not None and p.unique_id == err.in_reply_to:
                    self._pending = None
                    self._on_failure(p, now, rejected=True)
                    self._pump(now)
                return
            # OCPP-J 2.0.1 part 4 section 4.2.3 (1.6 is silent): "-1" when the MessageId cannot be read.
            self._send(err.to_call_error(err.unique_id if err.unique_id is not None else "-1"))
            return
        if isinstance(frame, rpc.Call):
            self._handle_call(frame, now)
        elif isinstance(frame, rpc.CallResult):
            self._handle_result(frame, now)
        else:
            self._handle_error(frame, now)
        self._pump(now)

    def _handle_call(self, call: rpc.Call, now: float) -> None:
        try:
            if not self.validator.knows(call.action):
                raise rpc.RpcError(rpc.ErrorCode.NOT_IMPLEMENTED, f"unknown action {call.action}")
            self.validator.validate_request(call.action, call.payload)
            handler = self._handlers.get(call.action)
            if handler is None:
                raise rpc.RpcError(rpc.ErrorCode.NOT_SUPPORTED, f"{call.action} is not supported yet")
            response = handler(call.payload, now)
            try:
                self.validator.validate_response(call.action, response)
            except rpc.RpcError as err:
                log.error("ocpp: our %s response is invalid (%s); answering InternalError", call.action, err)
                raise rpc.RpcError(rpc.ErrorCode.INTERNAL_ERROR, "invalid response generated") from None
        except rpc.RpcError as err:
            log.info("ocpp: %s from CSMS answered with %s: %s", call.action, err.code, err.description)
            self._send(err.to_call_error(call.unique_id))
            return
        except Exception:
            log.exception("ocpp: handler for %s failed", call.action)
            self._send(rpc.CallError(call.unique_id, rpc.ErrorCode.INTERNAL_ERROR, "handler failed"))
            return
        self._send(rpc.CallResult(call.unique_id, response))
        self.on_event("call", {"action": call.action, "payload": call.payload})

    def _handle_result(self, result: rpc.CallResult, now: float) -> None:
        p = self._pending
        if p is None or p.unique_id != result.unique_id:
            log.warning("ocpp: CALLRESULT for unknown request id %s ignored", result.unique_id)
            return
        self._pending = None
        try:
            self.validator.validate_response(p.action, result.payload)
        except rpc.RpcError as err:
            # Lenient on input: a sloppy CSMS should not stall the queue; keep what we can use.
            log.warning("ocpp: %s.conf from CSMS is not schema-valid (%s); using it anyway", p.action, err)
        self._on_confirmation(p, result.payload, now)

    def _handle_error(self, error: rpc.CallError, now: float) -> None:
        p = self._pending
        if p is None or p.unique_id != error.unique_id:
            log.warning("ocpp: CALLERROR for unknown request id %s ignored", error.unique_id)
            return
        self._pending = None
        log.warning("ocpp: CSMS answered %s with %s %s", p.action, error.code, error.description)
        self._on_failure(p, now, rejected=True)

    # --- timers -------------------------------------------------------------------------------------------
    def tick(self, now: float) -> None:
        if self._pending is not None and now >= self._pending.deadline:
            p, self._pending = self._pending, None
            log.warning("ocpp: no answer to %s within %.0f s", p.action, self.call_timeout_s)
            self._on_failure(p, now, rejected=False)
        self._sample(now)
        self._pump(now)

    def next_deadline(self, now: float) -> float:
        times = [now + 60.0]
        if self._pending is not None:
            times.append(self._pending.deadline)
        times.extend(self._sample_at.values())
        if self.connected and self._pending is None:
            if self.registration != "Accepted":
                times.append(self._next_boot)
            else:
                if self.store.queue_length():
                    times.append(self._tx_retry_at)
                interval = int(self.keys["HeartbeatInterval"])
                if interval > 0:
                    times.append(self._last_sent + interval)
        return min(times)

    # --- charging events (from the core) ------------------------------------------------------------------
    def status_changed(self, connector: int, status: str, error_code: str, info: str, now: float) -> None:
        self._status_unsent[connector] = (status, error_code, info, now)
        self._pump(now)

    def authorize(self, id_tag: str, now: float, context: Any = None) -> None:
        if self.connected and self.registration == "Accepted":
            self._normal.append(("Authorize", {"idTag": id_tag}, context))
            self._pump(now)
        else:
            self._authorize_offline(id_tag, context)

    def transaction_started(self, connector: int, id_tag: str, meter_wh: float, at: float) -> int:
        timestamp = self.timestamp(at)
        payload = {"connectorId": connector, "idTag": id_tag, "meterStart": int(meter_wh), "timestamp": timestamp}
        local_id = self.store.begin_transaction(connector, id_tag, meter_wh, timestamp, payload)
        self._active[connector] = local_id
        interval = int(self.keys["MeterValueSampleInterval"])
        if interval > 0:
            self._sample_at[connector] = at + interval
        self.on_event("transaction_started", {"connector": connector, "local_id": local_id})
        self._pump(at)
        return local_id

    def transaction_stopped(self, connector: int, meter_wh: float, at: float, reason: str,
                            id_tag: str | None) -> None:
        local_id = self._active.pop(connector, None)
        self._sample_at.pop(connector, None)
        if local_id is None:
            log.error("ocpp: stop of a transaction on connector %d that was never started", connector)
            return
        self.close_transaction(local_id, meter_wh, self.timestamp(at), reason, id_tag)
        self._pump(at)

    def close_transaction(self, local_id: int, meter_wh: float, timestamp: str, reason: str,
                          id_tag: str | None) -> None:
        payload: dict[str, Any] = {"meterStop": int(meter_wh), "timestamp": timestamp, "reason": reason}
        if id_tag:
            payload["idTag"] = id_tag
        self.store.end_transaction(local_id, meter_wh, timestamp, reason, id_tag, payload)
        for connector, lid in list(self._active.items()):
            if lid == local_id:
                del self._active[connector]
                self._sample_at.pop(connector, None)

    def active_transaction(self, connector: int) -> int | None:
        return self._active.get(connector)

    def csms_transaction_id(self, connector: int) -> int | None:
        local_id = self._active.get(connector)
        if local_id is None:
            return None
        row = self.store.transaction(local_id)
        return row.csms_tx_id if row else None

    # --- CSMS-initiated operations ------------------------------------------------------------------------
    def _on_remote_start(self, payload: dict[str, Any], now: float) -> dict[str, Any]:
        connector = payload.get("connectorId")
        id_tag = payload["idTag"]
        if connector is not None and not 1 <= connector <= self.connectors:
            return {"status": "Rejected"}
        if "chargingProfile" in payload:
            log.info("ocpp: RemoteStartTransaction carries a charging profile; smart charging is not "
                     "implemented yet, so it is not applied")
        if bool(self.keys["AuthorizeRemoteTxRequests"]):
            if not self.controller.can_remote_start(connector):
                return {"status": "Rejected"}
            self._normal.append(("Authorize", {"idTag": id_tag}, ("remote", connector)))
            return {"status": "Accepted"}
        ok = self.controller.remote_start(connector, id_tag)
        return {"status": "Accepted" if ok else "Rejected"}

    def _on_remote_stop(self, payload: dict[str, Any], now: float) -> dict[str, Any]:
        wanted = payload["transactionId"]
        for connector in list(self._active):
            if self.csms_transaction_id(connector) == wanted:
                self.controller.remote_stop(connector)
                return {"status": "Accepted"}
        return {"status": "Rejected"}

    def _on_get_configuration(self, payload: dict[str, Any], now: float) -> dict[str, Any]:
        names = payload.get("key") or None
        known, unknown = self.keys.entries(names)
        limit = int(self.keys["GetConfigurationMaxKeys"])
        if names and len(names) > limit:
            raise rpc.RpcError(rpc.ErrorCode.OCCURENCE_CONSTRAINT_VIOLATION,
                               f"at most {limit} keys per request (GetConfigurationMaxKeys)")
        out: dict[str, Any] = {}
        if known:
            out["configurationKey"] = known
        if unknown:
            out["unknownKey"] = unknown
        return out

    def _on_change_configuration(self, payload: dict[str, Any], now: float) -> dict[str, Any]:
        return {"status": self.keys.change(payload["key"], payload["value"])}

    # --- outgoing -----------------------------------------------------------------------------------------
    def _send(self, frame: rpc.Frame) -> None:
        self.outbox.append(rpc.encode(frame))

    def _call(self, action: str, payload: dict[str, Any], now: float, queued: QueuedMessage | None = None,
              context: Any = None) -> None:
        try:
            self.validator.validate_request(action, payload)
        except rpc.RpcError as err:
            # A bug on our side; sending would only earn a CALLERROR. Log loudly and send anyway so the
            # transaction data is not silently held back.
            log.error("ocpp: our %s.req is not schema-valid: %s", action, err)
        uid = rpc.new_unique_id()
        self._pending = _Pending(uid, action, payload, now + self.call_timeout_s, queued, context)
        self._last_sent = now
        self._send(rpc.Call(uid, action, payload))

    def _pump(self, now: float) -> None:
        """Send the next CALL if the line is free; called after every event."""
        if not self.connected or self._pending is not None:
            return
        if self.registration != "Accepted":
            if now >= self._next_boot:
                self._call("BootNotification", self._boot_payload(), now)
            return
        if self._status_unsent:
            connector = min(self._status_unsent)
            status, error_code, info, at = self._status_unsent.pop(connector)
            payload: dict[str, Any] = {"connectorId": connector, "errorCode": error_code, "status": status,
                                       "timestamp": self.timestamp(at)}
            if info:
                payload["info"] = info[:50]
            self._call("StatusNotification", payload, now)
            return
        if self._normal:
            action, payload, context = self._normal.popleft()
            self._call(action, payload, now, context=context)
            return
        if now >= self._tx_retry_at:
            head = self.store.queue_head()
            if head is not None:
                self._call(head.action, self._with_transaction_id(head), now, queued=head)
                return
        interval = int(self.keys["HeartbeatInterval"])
        if interval > 0 and now >= self._last_sent + interval:
            self._call("Heartbeat", {}, now)

    def _with_transaction_id(self, msg: QueuedMessage) -> dict[str, Any]:
        if msg.action == "StartTransaction":
            return msg.payload
        row = self.store.transaction(msg.local_tx_id)
        payload = dict(msg.payload)
        # A transaction whose start was never confirmed has no CSMS id; 0 tells the CSMS it is unknown.
        payload["transactionId"] = row.csms_tx_id if row and row.csms_tx_id is not None else 0
        return payload

    def _boot_payload(self) -> dict[str, Any]:
        i = self.identity
        payload = {"chargePointVendor": i.vendor, "chargePointModel": i.model}
        if i.serial_number:
            payload["chargePointSerialNumber"] = i.serial_number
        if i.firmware_version:
            payload["firmwareVersion"] = i.firmware_version
        return payload

    def _queue_all_statuses(self, now: float) -> None:
        for connector, (status, error_code, info) in self.controller.statuses().items():
            self._status_unsent[connector] = (status, error_code, info, now)

    # --- answers to our CALLs -----------------------------------------------------------------------------
    def _on_confirmation(self, p: _Pending, payload: dict[str, Any], now: float) -> None:
        if p.action == "BootNotification":
            self._on_boot(payload, now)
        elif p.action == "Authorize":
            info = payload.get("idTagInfo") or {}
            self._authorization_answer(p.payload["idTag"], str(info.get("status", "Invalid")),
                                       info.get("parentIdTag"), p.context)
        elif p.queued is not None:
            self._on_transaction_confirmation(p.queued, payload)
            self._tx_retry_at = now

    def _on_boot(self, payload: dict[str, Any], now: float) -> None:
        status = payload.get("status")
        interval = payload.get("interval")
        self.registration = status if status in ("Accepted", "Pending", "Rejected") else "Rejected"
        current = parse_iso(str(payload.get("currentTime", "")))
        if current is not None:
            self.wall_offset = current - now
        if self.registration == "Accepted":
            if isinstance(interval, int) and interval > 0:
                self.keys.change("HeartbeatInterval", str(interval))
            self._last_sent = now
            self._queue_all_statuses(now)
            log.info("ocpp: registration Accepted by the CSMS")
        else:
            wait = float(interval) if isinstance(interval, int) and interval > 0 else DEFAULT_BOOT_RETRY_S
            self._next_boot = now + wait
            log.info("ocpp: registration %s; next BootNotification in %.0f s", self.registration, wait)
        self.on_event("registration", {"status": self.registration})

    def _on_transaction_confirmation(self, msg: QueuedMessage, payload: dict[str, Any]) -> None:
        if msg.action == "StartTransaction":
            tx_id = payload.get("transactionId")
            status = str((payload.get("idTagInfo") or {}).get("status", "Accepted"))
            self.store.message_delivered(msg.seq, msg.local_tx_id, int(tx_id) if isinstance(tx_id, int) else 0,
                                         status)
            log.info("ocpp: transaction %d confirmed by the CSMS as transactionId %s (%s)", msg.local_tx_id,
                     tx_id, status)
            if status != "Accepted" and bool(self.keys["StopTransactionOnInvalidId"]):
                for connector, local_id in self._active.items():
                    if local_id == msg.local_tx_id:
                        self.controller.deauthorize(connector)
        else:
            self.store.message_delivered(msg.seq)

    def _on_failure(self, p: _Pending, now: float, rejected: bool) -> None:
        if p.action == "BootNotification":
            self._next_boot = now + DEFAULT_BOOT_RETRY_S
        elif p.action == "Authorize":
            self._authorize_offline(p.payload["idTag"], p.context)
        elif p.queued is not None:
            interval = int(self.keys["TransactionMessageRetryInterval"])
            if not rejected:
                self._tx_retry_at = now  # a timeout: the line may be gone; try again right away
                return
            attempts = self.store.message_failed(p.queued.seq)
            if attempts >= int(self.keys["TransactionMessageAttempts"]):
                log.error("ocpp: dropping %s of transaction %d after %d rejected attempts", p.queued.action,
                          p.queued.local_tx_id, attempts)
                self.store.drop_message(p.queued.seq)
                self._tx_retry_at = now
            else:
                self._tx_retry_at = now + interval * attempts

    # --- authorization ------------------------------------------------------------------------------------
    def _authorization_answer(self, id_tag: str, status: str, parent: str | None, context: Any) -> None:
        if isinstance(context, tuple) and context and context[0] == "remote":
            if status == "Accepted":
                self.controller.remote_start(context[1], id_tag)
            else:
                log.info("ocpp: remote start for %s not authorized (%s)", id_tag, status)
            return
        self.controller.authorization_result(id_tag, status, parent)

    def _authorize_offline(self, id_tag: str, context: Any) -> None:
        # Without the authorization cache (a later issue) only AllowOfflineTxForUnknownId can admit a card.
        status = "Accepted" if bool(self.keys["AllowOfflineTxForUnknownId"]) else "Invalid"
        log.info("ocpp: offline authorization of %s: %s", id_tag, status)
        self._authorization_answer(id_tag, status, None, context)

    # --- meter sampling -----------------------------------------------------------------------------------
    def _sample(self, now: float) -> None:
        interval = int(self.keys["MeterValueSampleInterval"])
        for connector, due in list(self._sample_at.items()):
            if now < due:
                continue
            local_id = self._active.get(connector)
            if local_id is None or interval <= 0:
                self._sample_at.pop(connector, None)
                continue
            self._sample_at[connector] = max(due + interval, now)
            m = self.controller.measurement(connector)
            values = {"Energy.Active.Import.Register": m.energy_wh, "Power.Active.Import": m.power_w,
                      "Current.Import": m.current_a, "Current.Offered": m.offered_a, "Voltage": m.voltage_v}
            sampled = []
            for measurand in self.keys["MeterValuesSampledData"]:
                entry = {"value": f"{values[measurand]:.1f}".rstrip("0").rstrip("."),
                         "context": "Sample.Periodic", "measurand": measurand, "location": "Outlet",
                         "unit": _UNITS[measurand]}
                sampled.append(entry)
            if not sampled:
                continue
            timestamp = self.timestamp(now)
            payload = {"connectorId": connector, "meterValue": [{"timestamp": timestamp, "sampledValue": sampled}]}
            self.store.add_meter_values(local_id, m.energy_wh, payload, timestamp)

    def config_changed(self, name: str, value: Any, now: float) -> None:
        if name == "MeterValueSampleInterval":
            for connector in self._active:
                if int(value) > 0:
                    self._sample_at[connector] = now + int(value)
                else:
                    self._sample_at.pop(connector, None)
