"""The OCPP 1.6J charge-point session, sans I/O.

It takes frames, charging events and the monotonic time; it produces frames to send (``outbox``) and calls
into a ``Controller`` (the charging core's port) for remote commands and authorization results. The
WebSocket adapter (``ocpp.client``) only moves frames and calls ``tick`` at ``next_deadline``.

Rules kept here:
- at most one outstanding CALL; a handler never waits for an outgoing CALL (a few answers are deferred:
  UnlockConnector waits for the lock, and is answered later through ``reply``);
- transaction messages (Start/Stop/MeterValues) are written to the store before they are sent and leave it
  only when the CSMS answered, in order, with the CSMS transactionId filled in at send time (-1 when the
  StartTransaction could never be delivered, errata 3.18);
- while not Accepted, nothing but BootNotification is sent; while Rejected, CSMS requests are not answered;
- other messages are not kept while offline: statuses are re-sent after a reconnect instead.
"""

from __future__ import annotations

import logging
import random
import sys
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from evsed.core.authorization import Authorizer, IdTagInfo
from evsed.ocpp import metering, rpc
from evsed.ocpp.configkeys import ConfigKeys, redact
from evsed.ocpp.datatransfer import DataTransferRegistry
from evsed.ocpp.metering import Measurement
from evsed.ocpp.schema import Validator
from evsed.smartcharging.profiles import parse_datetime
from evsed.smartcharging.service import SmartCharging, Transactions
from evsed.store.db import QueuedMessage, Store

log = logging.getLogger(__name__)

DEFAULT_BOOT_RETRY_S = 30.0
TRANSACTION_ACTIONS = frozenset({"StartTransaction", "MeterValues", "StopTransaction"})
# A StatusNotification the CSMS failed to answer is tried again this long after, this many times.
STATUS_RETRY_S = 10.0
STATUS_ATTEMPTS = 3
# Transaction id for transaction messages whose StartTransaction was never confirmed (errata 3.18).
UNKNOWN_TRANSACTION_ID = -1
# Not allowed while the registration is Pending (section 4.2.1).
_NOT_WHILE_PENDING = frozenset({"RemoteStartTransaction", "RemoteStopTransaction"})


class _Deferred:
    """Returned by a handler whose answer comes later through OcppSession.reply."""


DEFERRED = _Deferred()
Reply = Callable[[dict[str, Any]], None]


@dataclass(frozen=True)
class Identity:
    charge_point_id: str
    vendor: str
    model: str
    serial_number: str | None = None
    firmware_version: str | None = None


class Controller(Protocol):
    """What the session may ask of the charging core and the daemon."""

    def can_remote_start(self, connector: int | None) -> bool: ...
    def remote_start(self, connector: int | None, id_tag: str, charging_profile: dict[str, Any] | None) -> bool: ...
    def remote_stop(self, connector: int) -> None: ...
    def transaction_confirmed(self, connector: int, status: str, parent_id_tag: str | None) -> None:
        """StartTransaction.conf for the transaction running on this connector."""
    def authorization_result(self, id_tag: str, status: str, parent_id_tag: str | None) -> None: ...
    def measurement(self, connector: int) -> Measurement: ...
    def statuses(self) -> dict[int, tuple[str, str, str]]:
        """(status, errorCode, info) of connector 0 (the charge point) and of every connector."""
    def change_availability(self, connector: int, operative: bool) -> str: ...
    def reset(self, kind: str) -> str:
        """Accepted or Rejected; the reset itself happens after the answer has been sent."""
    def unlock_connector(self, connector: int, reply: Callable[[str], None]) -> str | None:
        """UnlockStatus now, or None when ``reply`` will be called with it later."""


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
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except (ValueError, TypeError):
        return None
    # OCPP times are UTC; a CSMS that omits the zone still means UTC, not the charger's local time.
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).timestamp()


class OcppSession:
    def __init__(self, identity: Identity, keys: ConfigKeys, store: Store, controller: Controller,
                 validator: Validator, *, connectors: int, now: float, wall_offset: float,
                 authorizer: Authorizer | None = None, data_transfer: DataTransferRegistry | None = None,
                 smart_charging: SmartCharging | None = None, rng: random.Random | None = None) -> None:
        self.identity = identity
        self.keys = keys
        self.store = store
        self.controller = controller
        self.validator = validator
        self.connectors = connectors
        self.authorizer = authorizer or Authorizer(keys, store)
        self.data_transfer = data_transfer or DataTransferRegistry()
        self.smart_charging = smart_charging
        self.wall_offset = wall_offset  # wall clock = monotonic + offset; the CSMS's currentTime adjusts it
        self.outbox: list[str] = []
        self.connected = False
        self.registration: str | None = None
        self._rng = rng or random.Random()
        self._pending: _Pending | None = None
        self._normal: deque[tuple[str, dict[str, Any], Any]] = deque()
        # connector -> (status, errorCode, info, changed at, due, attempts, after): sent once due
        # (MinimumStatusDuration) and not before the transaction messages queued up to `after` (so Finishing
        # follows its StopTransaction).
        self._status_unsent: dict[int, tuple[str, str, str, float, float, int, int]] = {}
        # Deferred answers waiting for transaction messages queued before them: (after, frame).
        self._held_replies: list[tuple[int, str]] = []
        self._status_sent: dict[int, tuple[str, str]] = {}
        self._next_boot = now
        self._last_sent = now
        self._tx_retry_at = now
        self._active: dict[int, int] = {}  # connector -> local transaction id
        self._sample_at: dict[int, float] = {}
        self._aligned_at: float | None = None  # monotonic time of the next clock-aligned sample
        self._calling: str | None = None  # unique id of the CALL being handled (for deferred answers)
        self._handlers: dict[str, Callable[[dict[str, Any], float], dict[str, Any] | _Deferred]] = {
            "RemoteStartTransaction": self._on_remote_start,
            "RemoteStopTransaction": self._on_remote_stop,
            "GetConfiguration": self._on_get_configuration,
            "ChangeConfiguration": self._on_change_configuration,
            "ChangeAvailability": self._on_change_availability,
            "ClearCache": self._on_clear_cache,
            "DataTransfer": self._on_data_transfer,
            "Reset": self._on_reset,
            "UnlockConnector": self._on_unlock_connector,
        }
        if smart_charging is not None:
            self._handlers.update({
                "SetChargingProfile": self._on_set_charging_profile,
                "ClearChargingProfile": self._on_clear_charging_profile,
                "GetCompositeSchedule": self._on_get_composite_schedule,
            })
        # Called when the CSMS moved our wall clock (timers set in wall-clock time must be set again).
        self.on_clock_set: Callable[[], None] = lambda: None
        self.on_event: Callable[[str, dict[str, Any]], None] = lambda kind, data: None
        for row in store.open_transactions():
            self._active[row.connector] = row.local_id
        self._schedule_aligned(now)

    # --- clock --------------------------------------------------------------------------------------------
    def wall(self, now: float) -> float:
        return now + self.wall_offset

    def timestamp(self, now: float) -> str:
        return iso(self.wall(now))

    def _set_wall_clock(self, current_time: Any, now: float) -> None:
        current = parse_iso(str(current_time)) if current_time is not None else None
        if current is not None:
            moved = abs(current - now - self.wall_offset) > 0.5
            self.wall_offset = current - now
            self._schedule_aligned(now)
            if moved:
                self.on_clock_set()

    # --- connection events --------------------------------------------------------------------------------
    def connection_opened(self, now: float) -> None:
        self.connected = True
        self._pending = None
        if self.registration == "Accepted":
            # After an outage the CSMS should hear the current state of every connector again.
            self._queue_all_statuses(now)
        elif self.registration != "Rejected" or now >= self._next_boot:
            # A Rejected charge point stays silent until the interval it was given has passed.
            self._next_boot = now
        self._tx_retry_at = now
        self._pump(now)

    def connection_lost(self, now: float) -> None:
        self.connected = False
        self._held_replies.clear()
        pending, self._pending = self._pending, None
        if pending is not None:
            self._fail_offline(pending.action, pending.payload, pending.context, now)
        # Nothing but transaction messages is kept while offline; decide or fail the rest now.
        while self._normal:
            action, payload, context = self._normal.popleft()
            self._fail_offline(action, payload, context, now)

    def _fail_offline(self, action: str, payload: dict[str, Any], context: Any, now: float) -> None:
        if action == "Authorize":
            self._authorize_offline(payload["idTag"], context, now)
        elif action == "DataTransfer" and callable(context):
            context(None)

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
            if self.registration == "Rejected" or not err.answerable:
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
        if self.registration == "Rejected":
            # Section 4.2: while Rejected the charge point SHALL NOT respond to CSMS-initiated messages.
            log.info("ocpp: %s from CSMS ignored: registration Rejected", call.action)
            return
        try:
            if not self.validator.knows(call.action):
                raise rpc.RpcError(rpc.ErrorCode.NOT_IMPLEMENTED, f"unknown action {call.action}")
            self.validator.validate_request(call.action, call.payload)
            handler = self._handlers.get(call.action)
            if handler is None:
                raise rpc.RpcError(rpc.ErrorCode.NOT_SUPPORTED, f"{call.action} is not supported")
            if self.registration != "Accepted" and call.action in _NOT_WHILE_PENDING:
                log.info("ocpp: %s while not accepted by the CSMS: Rejected", call.action)
                response: dict[str, Any] | _Deferred = {"status": "Rejected"}
            else:
                self._calling = call.unique_id
                try:
                    response = handler(call.payload, now)
                finally:
                    self._calling = None
            if isinstance(response, _Deferred):
                self.on_event("call", {"action": call.action, "payload": self._loggable(call)})
                return
            self._check_response(call.action, response)
        except rpc.RpcError as err:
            log.info("ocpp: %s from CSMS answered with %s: %s", call.action, err.code, err.description)
            self._send(err.to_call_error(call.unique_id))
            return
        except Exception:
            log.exception("ocpp: handler for %s failed", call.action)
            self._send(rpc.CallError(call.unique_id, rpc.ErrorCode.INTERNAL_ERROR, "handler failed"))
            return
        self._send(rpc.CallResult(call.unique_id, response))
        self.on_event("call", {"action": call.action, "payload": self._loggable(call)})

    @staticmethod
    def _loggable(call: rpc.Call) -> dict[str, Any]:
        if call.action == "ChangeConfiguration" and isinstance(call.payload.get("key"), str):
            return {**call.payload, "value": redact(call.payload["key"], str(call.payload.get("value")))}
        return call.payload

    def _check_response(self, action: str, response: dict[str, Any]) -> None:
        try:
            self.validator.validate_response(action, response)
        except rpc.RpcError as err:
            log.error("ocpp: our %s response is invalid (%s); answering InternalError", action, err)
            raise rpc.RpcError(rpc.ErrorCode.INTERNAL_ERROR, "invalid response generated") from None

    def reply(self, unique_id: str, action: str, response: dict[str, Any]) -> None:
        """The late answer to a CALL whose handler returned DEFERRED (e.g. UnlockConnector)."""
        if not self.connected:
            log.info("ocpp: %s answer dropped: the connection it came on is gone", action)
            return
        try:
            self._check_response(action, response)
        except rpc.RpcError as err:
            self._send(err.to_call_error(unique_id))
            return
        # An UnlockConnector during a transaction stopped it first: its StopTransaction goes out first.
        after = self.store.last_queued_seq()
        head = self.store.queue_head()
        if head is not None and head.seq <= after:
            self._held_replies.append((after, rpc.encode(rpc.CallResult(unique_id, response))))
            return
        self._send(rpc.CallResult(unique_id, response))

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
            log.warning("ocpp: no answer to %s within %.0f s", p.action, self._call_timeout())
            self._on_failure(p, now, rejected=False)
        # Clock-aligned first: its reading is stamped on the boundary, before a periodic one taken now.
        self._sample_aligned(now)
        self._sample(now)
        self._pump(now)

    def next_deadline(self, now: float) -> float:
        times = [now + 60.0]
        if self._pending is not None:
            times.append(self._pending.deadline)
        times.extend(self._sample_at.values())
        if self._aligned_at is not None:
            times.append(self._aligned_at)
        if self.connected and self._pending is None:
            if self.registration != "Accepted":
                times.append(self._next_boot)
            else:
                times.extend(entry[4] for entry in self._status_unsent.values())
                if self.store.queue_length():
                    times.append(self._tx_retry_at)
                interval = int(self.keys["HeartbeatInterval"])
                if interval > 0:
                    times.append(self._last_sent + interval)
        return min(times)

    def _call_timeout(self) -> float:
        return float(self.keys["MessageTimeout"])

    # --- charging events (from the core) ------------------------------------------------------------------
    def status_changed(self, connector: int, status: str, error_code: str, info: str, now: float) -> None:
        due = now + int(self.keys["MinimumStatusDuration"])
        if self._status_sent.get(connector) == (status, error_code):
            # Back to what the CSMS already knows before the newer status went out: nothing to report.
            self._status_unsent.pop(connector, None)
        else:
            self._status_unsent[connector] = (status, error_code, info, now, due, 0, self.store.last_queued_seq())
        self._pump(now)

    def authorize(self, id_tag: str, now: float, context: Any = None) -> None:
        """Authorize a card: local pre-authorization, the CSMS, or the offline rules."""
        if self.connected and self.registration == "Accepted":
            decision = self.authorizer.pre_authorize(id_tag, self.wall(now))
            if decision is not None:
                log.info("ocpp: %s pre-authorized from the %s", id_tag, decision.source.replace("_", " "))
                self._authorization_answer(id_tag, decision.info.status, decision.info.parent_id_tag, context)
                return
            self._normal.append(("Authorize", {"idTag": id_tag}, context))
            self._pump(now)
        else:
            self._authorize_offline(id_tag, context, now)

    def send_data_transfer(self, vendor_id: str, message_id: str | None, data: str | None, now: float,
                           on_result: Callable[[dict[str, Any] | None], None]) -> None:
        """A DataTransfer.req to the CSMS; on_result gets the .conf payload, or None when it could not be sent."""
        if not (self.connected and self.registration == "Accepted"):
            on_result(None)
            return
        payload: dict[str, Any] = {"vendorId": vendor_id}
        if message_id is not None:
            payload["messageId"] = message_id
        if data is not None:
            payload["data"] = data
        self._normal.append(("DataTransfer", payload, on_result))
        self._pump(now)

    def transaction_started(self, connector: int, id_tag: str, meter_wh: float, at: float,
                            parent_id_tag: str | None = None) -> int:
        timestamp = self.timestamp(at)
        payload = {"connectorId": connector, "idTag": id_tag, "meterStart": int(meter_wh), "timestamp": timestamp}
        local_id = self.store.begin_transaction(connector, id_tag, meter_wh, timestamp, payload)
        if parent_id_tag:
            self.store.set_transaction_parent(local_id, parent_id_tag)
        self._active[connector] = local_id
        interval = int(self.keys["MeterValueSampleInterval"])
        if interval > 0:
            self._sample_at[connector] = at + interval
        self._record_stop_value(local_id, connector, "Transaction.Begin", self._stop_measurands(), timestamp)
        self.on_event("transaction_started", {"connector": connector, "local_id": local_id})
        self._pump(at)
        return local_id

    def transaction_resumed(self, connector: int, local_id: int, now: float) -> None:
        """A transaction from before a restart goes on: sample it again."""
        self._active[connector] = local_id
        interval = int(self.keys["MeterValueSampleInterval"])
        if interval > 0:
            self._sample_at[connector] = now + interval

    def transaction_stopped(self, connector: int, meter_wh: float, at: float, reason: str,
                            id_tag: str | None) -> None:
        local_id = self._active.get(connector)
        if local_id is None:
            log.error("ocpp: stop of a transaction on connector %d that was never started", connector)
            return
        timestamp = self.timestamp(at)
        self._record_stop_value(local_id, connector, "Transaction.End", self._stop_measurands(), timestamp)
        self.close_transaction(local_id, meter_wh, timestamp, reason, id_tag)
        self._pump(at)

    def close_orphan(self, local_id: int, meter_wh: float, timestamp: str, reason: str) -> None:
        """A transaction the previous run left open and that does not go on (PowerLoss / Reboot): ended with the
        last persisted register, which is also its Transaction.End value."""
        row = self.store.transaction(local_id)
        energy = [m for m in self._stop_measurands() if m == "Energy.Active.Import.Register"]
        if row is not None and energy:
            reading = Measurement(meter_wh, 0.0, (), (), 0.0)
            self._record_stop_value(local_id, row.connector, "Transaction.End", energy, timestamp, reading)
        self.close_transaction(local_id, meter_wh, timestamp, reason, None)

    def close_transaction(self, local_id: int, meter_wh: float, timestamp: str, reason: str,
                          id_tag: str | None) -> None:
        row = self.store.transaction(local_id)
        if row is not None and meter_wh < row.meter_start_wh:
            # A register that went back (a replaced or reset meter) must not report negative energy.
            log.warning("ocpp: transaction %d: meter %.0f Wh below its start %.0f Wh; reporting no energy",
                        local_id, meter_wh, row.meter_start_wh)
            meter_wh = row.meter_start_wh
        payload: dict[str, Any] = {"meterStop": int(meter_wh), "timestamp": timestamp, "reason": reason}
        if id_tag:
            payload["idTag"] = id_tag
        if self._stop_measurands():
            data = self.store.stop_meter_values(local_id)
            data = metering.thin_out(metering.merge_by_timestamp(data), self._stop_max())
            if data:
                payload["transactionData"] = data
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

    def transactions(self) -> Transactions:
        """The running transactions as the smart-charging engine needs them: start time and CSMS id (None while the
        StartTransaction is unconfirmed or could not be delivered)."""
        out: dict[int, tuple[datetime, int | None]] = {}
        for connector, local_id in self._active.items():
            row = self.store.transaction(local_id)
            started = parse_datetime(row.started_at) if row is not None else None
            if row is None or started is None:
                continue
            tx_id = row.csms_tx_id if row.csms_tx_id not in (None, UNKNOWN_TRANSACTION_ID) else None
            out[connector] = (started, tx_id)
        return out

    def wall_datetime(self, now: float) -> datetime:
        return datetime.fromtimestamp(self.wall(now), UTC)

    # --- CSMS-initiated operations ------------------------------------------------------------------------
    def _on_remote_start(self, payload: dict[str, Any], now: float) -> dict[str, Any]:
        connector = payload.get("connectorId")
        id_tag = payload["idTag"]
        profile = payload.get("chargingProfile")
        if connector is not None and not 1 <= connector <= self.connectors:
            return {"status": "Rejected"}
        if profile is not None and profile.get("chargingProfilePurpose") != "TxProfile":
            log.info("ocpp: RemoteStartTransaction with a %s profile: Rejected (only TxProfile is allowed)",
                     profile.get("chargingProfilePurpose"))
            return {"status": "Rejected"}
        if profile is not None and self.smart_charging is not None:
            reason = self.smart_charging.check_remote_start(connector, profile)
            if reason is not None:
                log.info("ocpp: RemoteStartTransaction chargingProfile not acceptable (%s): Rejected", reason)
                return {"status": "Rejected"}
        if not self.controller.can_remote_start(connector):
            return {"status": "Rejected"}
        if bool(self.keys["AuthorizeRemoteTxRequests"]):
            # Section 5.11: behave as for a card at the reader (pre-authorization or Authorize.req first).
            self.authorize(id_tag, now, ("remote", connector, profile))
            return {"status": "Accepted"}
        ok = self.controller.remote_start(connector, id_tag, profile)
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
        limit = int(self.keys["GetConfigurationMaxKeys"])
        if names and len(names) > limit:
            raise rpc.RpcError(rpc.ErrorCode.OCCURENCE_CONSTRAINT_VIOLATION,
                               f"at most {limit} keys per request (GetConfigurationMaxKeys)")
        known, unknown = self.keys.entries(names)
        out: dict[str, Any] = {}
        if known:
            out["configurationKey"] = known
        if unknown:
            out["unknownKey"] = unknown
        return out

    def _on_change_configuration(self, payload: dict[str, Any], now: float) -> dict[str, Any]:
        name, value = payload["key"], payload["value"]
        status = self.keys.change(name, value)
        log.info("ocpp: ChangeConfiguration %s=%s: %s", name, redact(name, value), status)
        return {"status": status}

    def _on_change_availability(self, payload: dict[str, Any], now: float) -> dict[str, Any]:
        connector = payload["connectorId"]
        if not 0 <= connector <= self.connectors:
            return {"status": "Rejected"}
        return {"status": self.controller.change_availability(connector, payload["type"] == "Operative")}

    def _on_clear_cache(self, payload: dict[str, Any], now: float) -> dict[str, Any]:
        return {"status": self.authorizer.clear_cache()}

    def _on_data_transfer(self, payload: dict[str, Any], now: float) -> dict[str, Any]:
        return self.data_transfer.handle(payload["vendorId"], payload.get("messageId"), payload.get("data"))

    def _on_reset(self, payload: dict[str, Any], now: float) -> dict[str, Any]:
        return {"status": self.controller.reset(payload["type"])}

    def _on_unlock_connector(self, payload: dict[str, Any], now: float) -> dict[str, Any] | _Deferred:
        connector = payload["connectorId"]
        if not 1 <= connector <= self.connectors:
            return {"status": "NotSupported"}  # errata 3.85: unknown connector
        unique_id = self._calling or ""
        status = self.controller.unlock_connector(
            connector, lambda result: self.reply(unique_id, "UnlockConnector", {"status": result}))
        return DEFERRED if status is None else {"status": status}

    def _on_set_charging_profile(self, payload: dict[str, Any], now: float) -> dict[str, Any]:
        assert self.smart_charging is not None
        status = self.smart_charging.set_profile(payload["connectorId"], payload["csChargingProfiles"],
                                                 self.transactions())
        return {"status": status}

    def _on_clear_charging_profile(self, payload: dict[str, Any], now: float) -> dict[str, Any]:
        assert self.smart_charging is not None
        status = self.smart_charging.clear(id=payload.get("id"), connector_id=payload.get("connectorId"),
                                           purpose=payload.get("chargingProfilePurpose"),
                                           stack_level=payload.get("stackLevel"))
        log.info("ocpp: ClearChargingProfile %s: %s", payload, status)
        return {"status": status}

    def _on_get_composite_schedule(self, payload: dict[str, Any], now: float) -> dict[str, Any]:
        assert self.smart_charging is not None
        connector = payload["connectorId"]
        if payload["duration"] < 0:
            # The schema lets any integer through; a negative length is an invalid value (OCPP-J 4.2.3 Table 7).
            raise rpc.RpcError(rpc.ErrorCode.PROPERTY_CONSTRAINT_VIOLATION,
                               f"duration must be >= 0, got {payload['duration']}")
        if not 0 <= connector <= self.connectors:
            return {"status": "Rejected"}  # 5.7: an unknown connector
        # Time X is when the request arrived (errata 3.28); composite() puts it on the whole-second grid.
        schedule = self.smart_charging.composite(connector, self.wall_datetime(now), payload["duration"],
                                                 payload.get("chargingRateUnit"), self.transactions())
        # Errata 3.57: inside GetCompositeSchedule.conf the schedule's startSchedule "must be omitted"; the start
        # is scheduleStart.
        start_schedule = schedule.pop("startSchedule")
        return {"status": "Accepted", "connectorId": connector, "scheduleStart": start_schedule,
                "chargingSchedule": schedule}

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
        self._pending = _Pending(uid, action, payload, now + self._call_timeout(), queued, context)
        self._last_sent = now
        self._send(rpc.Call(uid, action, payload))
        if queued is not None:
            self._release_replies(queued.seq)

    def _release_replies(self, sent_seq: int) -> None:
        """Send the held answers whose preceding transaction messages have now gone out."""
        ready = [frame for after, frame in self._held_replies if after <= sent_seq]
        self._held_replies = [(after, frame) for after, frame in self._held_replies if after > sent_seq]
        self.outbox.extend(ready)

    def _pump(self, now: float) -> None:
        """Send the next CALL if the line is free; called after every event."""
        if self._held_replies:
            head = self.store.queue_head()
            self._release_replies(head.seq - 1 if head is not None else sys.maxsize)
        if not self.connected or self._pending is not None:
            return
        if self.registration != "Accepted":
            if now >= self._next_boot:
                self._call("BootNotification", self._boot_payload(), now)
            return
        due = [c for c, entry in self._status_unsent.items() if entry[4] <= now]
        if due:
            head = self.store.queue_head() if now >= self._tx_retry_at else None
            if head is not None and head.seq <= max(self._status_unsent[c][6] for c in due):
                # A status that follows a transaction message (e.g. Finishing after StopTransaction) waits for it.
                self._call(head.action, self._with_transaction_id(head), now, queued=head)
                return
            connector = min(due)
            status, error_code, info, at, _, attempts, after = self._status_unsent.pop(connector)
            payload: dict[str, Any] = {"connectorId": connector, "errorCode": error_code, "status": status,
                                       "timestamp": self.timestamp(at)}
            if info:
                payload["info"] = info[:50]
            self._call("StatusNotification", payload, now, context=(connector, status, error_code, info, at,
                                                                     attempts, after))
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
        payload = dict(msg.payload)
        row = self.store.transaction(msg.local_tx_id)
        payload["transactionId"] = row.csms_tx_id if row and row.csms_tx_id is not None else UNKNOWN_TRANSACTION_ID
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
        self._status_sent.clear()
        for connector, (status, error_code, info) in self.controller.statuses().items():
            # The current state first, ahead of any backlog of transaction messages.
            self._status_unsent[connector] = (status, error_code, info, now, now, 0, 0)

    # --- answers to our CALLs -----------------------------------------------------------------------------
    def _on_confirmation(self, p: _Pending, payload: dict[str, Any], now: float) -> None:
        if p.action == "BootNotification":
            self._on_boot(payload, now)
        elif p.action == "Heartbeat":
            self._set_wall_clock(payload.get("currentTime"), now)
        elif p.action == "StatusNotification":
            connector, status, error_code = p.context[0], p.context[1], p.context[2]
            self._status_sent[connector] = (status, error_code)
        elif p.action == "Authorize":
            info = IdTagInfo.from_ocpp(payload.get("idTagInfo") or {})
            id_tag = p.payload["idTag"]
            self.authorizer.remember(id_tag, info, self.wall(now))
            self._authorization_answer(id_tag, info.effective_status(self.wall(now)), info.parent_id_tag,
                                       p.context)
        elif p.action == "DataTransfer":
            if callable(p.context):
                p.context(payload)
        elif p.queued is not None:
            self._on_transaction_confirmation(p.queued, payload, now)
            self._tx_retry_at = now

    def _on_boot(self, payload: dict[str, Any], now: float) -> None:
        status = payload.get("status")
        interval = payload.get("interval")
        self.registration = status if status in ("Accepted", "Pending", "Rejected") else "Rejected"
        self._set_wall_clock(payload.get("currentTime"), now)
        if self.registration == "Accepted":
            if isinstance(interval, int) and interval > 0:
                self.keys.change("HeartbeatInterval", str(interval))
            self._last_sent = now
            self._queue_all_statuses(now)
            log.info("ocpp: registration Accepted by the CSMS")
        else:
            # Interval 0: choose our own wait, so a misconfigured CSMS is not flooded (section 4.2).
            wait = float(interval) if isinstance(interval, int) and interval > 0 else DEFAULT_BOOT_RETRY_S
            self._next_boot = now + wait
            log.info("ocpp: registration %s; next BootNotification in %.0f s", self.registration, wait)
        self.on_event("registration", {"status": self.registration})

    def _on_transaction_confirmation(self, msg: QueuedMessage, payload: dict[str, Any], now: float) -> None:
        info_dict = payload.get("idTagInfo")
        if msg.action == "StartTransaction":
            tx_id = payload.get("transactionId")
            info = IdTagInfo.from_ocpp(info_dict or {"status": "Accepted"})
            self.store.message_delivered(msg.seq, msg.local_tx_id, int(tx_id) if isinstance(tx_id, int) else
                                         UNKNOWN_TRANSACTION_ID, info.status)
            self.authorizer.remember(msg.payload["idTag"], info, self.wall(now))
            if info.parent_id_tag:
                self.store.set_transaction_parent(msg.local_tx_id, info.parent_id_tag)
            status = info.effective_status(self.wall(now))
            log.info("ocpp: transaction %d confirmed by the CSMS as transactionId %s (%s)", msg.local_tx_id,
                     tx_id, status)
            for connector, local_id in self._active.items():
                if local_id == msg.local_tx_id:
                    self.controller.transaction_confirmed(connector, status, info.parent_id_tag)
        else:
            self.store.message_delivered(msg.seq)
            id_tag = msg.payload.get("idTag")
            if msg.action == "StopTransaction" and isinstance(info_dict, dict) and id_tag:
                self.authorizer.remember(id_tag, IdTagInfo.from_ocpp(info_dict), self.wall(now))

    def _on_failure(self, p: _Pending, now: float, rejected: bool) -> None:
        if p.action == "BootNotification":
            self._next_boot = now + DEFAULT_BOOT_RETRY_S
        elif p.action == "Authorize":
            self._authorize_offline(p.payload["idTag"], p.context, now)
        elif p.action == "DataTransfer":
            if callable(p.context):
                p.context(None)
        elif p.action == "StatusNotification":
            connector, status, error_code, info, at, attempts, _ = p.context
            if connector not in self._status_unsent and attempts + 1 < STATUS_ATTEMPTS and self.connected:
                self._status_unsent[connector] = (status, error_code, info, at, now + STATUS_RETRY_S, attempts + 1,
                                                  0)
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
                if not self.controller.remote_start(context[1], id_tag, context[2]):
                    log.info("ocpp: remote start for %s authorized, but the connector is no longer free", id_tag)
            else:
                log.info("ocpp: remote start for %s not authorized (%s)", id_tag, status)
            return
        self.controller.authorization_result(id_tag, status, parent)

    def _authorize_offline(self, id_tag: str, context: Any, now: float) -> None:
        decision = self.authorizer.offline(id_tag, self.wall(now))
        log.info("ocpp: offline authorization of %s: %s (%s)", id_tag, decision.info.status,
                 decision.source.replace("_", " "))
        self._authorization_answer(id_tag, decision.info.status, decision.info.parent_id_tag, context)

    # --- meter values -------------------------------------------------------------------------------------
    def _stop_measurands(self) -> list[str]:
        """Measurands for StopTransaction.transactionData: both lists; empty = no transactionData (3.14.5)."""
        seen: dict[str, None] = {}
        for name in (*self.keys["StopTxnSampledData"], *self.keys["StopTxnAlignedData"]):
            seen[name] = None
        return list(seen)

    def _stop_max(self) -> int:
        return int(self.keys["StopTransactionMaxMeterValues"])

    def _record_stop_value(self, local_id: int, connector: int, context: str, measurands: list[str],
                           timestamp: str, m: Measurement | None = None) -> None:
        if not measurands:
            return
        sampled = metering.sampled_values(m or self.controller.measurement(connector), measurands, context)
        if not sampled:
            return
        count = self.store.add_stop_meter_value(local_id, metering.meter_value(timestamp, sampled))
        if count > 2 * self._stop_max():
            # Keep the stored list bounded on week-long transactions: thin it out now, not only at the end.
            data = self.store.stop_meter_values(local_id)
            self.store.replace_stop_meter_values(local_id, metering.thin_out(data, self._stop_max()))

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
            timestamp = self.timestamp(now)
            sampled = metering.sampled_values(m, self.keys["MeterValuesSampledData"], "Sample.Periodic")
            if sampled:
                payload = {"connectorId": connector, "meterValue": [metering.meter_value(timestamp, sampled)]}
                self.store.add_meter_values(local_id, m.energy_wh, payload, timestamp)
            else:
                self.store.touch_transaction(local_id, m.energy_wh, timestamp)
            self._record_stop_value(local_id, connector, "Sample.Periodic", list(self.keys["StopTxnSampledData"]),
                                    timestamp, m)

    def _schedule_aligned(self, now: float) -> None:
        wall_next = metering.next_aligned(self.wall(now), int(self.keys["ClockAlignedDataInterval"]))
        self._aligned_at = None if wall_next is None else wall_next - self.wall_offset

    def _sample_aligned(self, now: float) -> None:
        if self._aligned_at is None or now < self._aligned_at:
            return
        # Stamped with the boundary itself: clock-aligned readings belong to the quarter hour, not to when the
        # timer fired a few milliseconds later.
        timestamp = iso(round(self.wall(self._aligned_at)))
        self._schedule_aligned(max(now, self._aligned_at))
        for connector in range(1, self.connectors + 1):
            m = self.controller.measurement(connector)
            local_id = self._active.get(connector)
            sampled = metering.sampled_values(m, self.keys["MeterValuesAlignedData"], "Sample.Clock")
            if sampled:
                payload = {"connectorId": connector, "meterValue": [metering.meter_value(timestamp, sampled)]}
                if local_id is not None:
                    self.store.add_meter_values(local_id, m.energy_wh, payload, timestamp)
                elif self.connected and self.registration == "Accepted":
                    # Outside a transaction the reading is not transaction data: sent if online, else dropped.
                    self._normal.append(("MeterValues", payload, None))
            if local_id is not None:
                self._record_stop_value(local_id, connector, "Sample.Clock", list(self.keys["StopTxnAlignedData"]),
                                        timestamp, m)

    def config_changed(self, name: str, value: Any, now: float) -> None:
        if name == "MeterValueSampleInterval":
            for connector in self._active:
                if int(value) > 0:
                    self._sample_at[connector] = now + int(value)
                else:
                    self._sample_at.pop(connector, None)
        elif name == "ClockAlignedDataInterval":
            self._schedule_aligned(now)
        elif name == "HeartbeatInterval":
            self._pump(now)

