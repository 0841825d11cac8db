"""The sans-I/O OCPP 1.6J session (evsed.ocpp.session.OcppSession), driven with virtual time.

Every frame the session emits is decoded and checked: CALLs against the request schemas, CALLRESULTs
against the response schema of the action they answer, CALLERRORs for shape and a 1.6 error code.
"""

from __future__ import annotations

import json
import random
from typing import Any

import pytest

from evsed.ocpp.configkeys import ConfigKeys
from evsed.ocpp.metering import Measurement
from evsed.ocpp.rpc import ErrorCode
from evsed.ocpp.schema import Validator
from evsed.ocpp.session import DEFAULT_BOOT_RETRY_S, Identity, OcppSession, iso, parse_iso
from evsed.store.db import Store

WALL0 = 1_700_000_000.0
BOOT_TIME = "2024-05-01T12:00:00.000Z"
_parsed = parse_iso(BOOT_TIME)
assert _parsed is not None
BOOT_WALL: float = _parsed
IDENTITY = Identity("CP001", "evsed", "evsed-sim", serial_number="SIM-1", firmware_version="0.1.0")
ERROR_CODES = {str(c) for c in ErrorCode}
VALIDATOR = Validator("v16")

Frame = list[Any]


class FakeController:
    def __init__(self, connectors: int) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.accept_remote_start = True
        self.can_start = True
        self.status_table: dict[int, tuple[str, str, str]] = {
            c: ("Available", "NoError", "") for c in range(1, connectors + 1)}
        self.m = Measurement(energy_wh=1234.56, power_w=7000.0, current_a=(10.04, 10.04, 10.04),
                             voltage_v=(230.0, 230.0, 230.0), offered_a=16.0, offered_w=11040.0, frequency_hz=50.0)
        self.availability_result = "Accepted"
        self.reset_result = "Accepted"
        self.unlock_result: str | None = "Unlocked"
        self.unlock_replies: list[Any] = []

    def can_remote_start(self, connector: int | None) -> bool:
        self.calls.append(("can_remote_start", connector))
        return self.can_start

    def remote_start(self, connector: int | None, id_tag: str, charging_profile: dict[str, Any] | None) -> bool:
        self.calls.append(("remote_start", connector, id_tag) + ((charging_profile,) if charging_profile else ()))
        return self.accept_remote_start

    def remote_stop(self, connector: int) -> None:
        self.calls.append(("remote_stop", connector))

    def transaction_confirmed(self, connector: int, status: str, parent_id_tag: str | None) -> None:
        self.calls.append(("transaction_confirmed", connector, status, parent_id_tag))
        if status != "Accepted":
            self.calls.append(("deauthorize", connector))

    def change_availability(self, connector: int, operative: bool) -> str:
        self.calls.append(("change_availability", connector, operative))
        return self.availability_result

    def reset(self, kind: str) -> str:
        self.calls.append(("reset", kind))
        return self.reset_result

    def unlock_connector(self, connector: int, reply: Any) -> str | None:
        self.calls.append(("unlock_connector", connector))
        if self.unlock_result is None:
            self.unlock_replies.append(reply)
        return self.unlock_result

    def authorization_result(self, id_tag: str, status: str, parent_id_tag: str | None) -> None:
        self.calls.append(("authorization_result", id_tag, status, parent_id_tag))

    def measurement(self, connector: int) -> Measurement:
        self.calls.append(("measurement", connector))
        return self.m

    def statuses(self) -> dict[int, tuple[str, str, str]]:
        # Like the daemon: connector 0 (the charge point itself) first, then every connector.
        return {0: ("Available", "NoError", ""), **self.status_table}


class Harness:
    def __init__(self, connectors: int = 2, **initial: Any) -> None:
        self.store = Store(":memory:")
        self.keys = ConfigKeys(self.store, {"HeartbeatInterval": 0, **initial}, connectors, message_timeout_s=30)
        self.ctl = FakeController(connectors)
        self.s = OcppSession(IDENTITY, self.keys, self.store, self.ctl, VALIDATOR, connectors=connectors, now=0.0,
                             wall_offset=WALL0, rng=random.Random(7))
        self.incoming: dict[str, str] = {}  # unique id of a CSMS CALL -> action
        self.all_frames: list[Frame] = []
        self._stash: list[Frame] = []  # frames seen by csms_call that were not its answer
        self.pending: Frame | None = None  # the first non-status CALL after boot(), if any

    # --- frames out ---------------------------------------------------------------------------------------------
    def frames(self) -> list[Frame]:
        out, self._stash = self._stash, []
        for text in self.s.outbox:
            frame = json.loads(text)
            self._check(frame)
            out.append(frame)
            self.all_frames.append(frame)
        self.s.outbox.clear()
        return out

    def _check(self, frame: Frame) -> None:
        assert isinstance(frame, list)
        kind = frame[0]
        if kind == 2:
            assert len(frame) == 4 and isinstance(frame[1], str) and len(frame[1]) <= 36
            VALIDATOR.validate_request(frame[2], frame[3])
        elif kind == 3:
            assert len(frame) == 3
            action = self.incoming.get(frame[1])
            assert action is not None, f"CALLRESULT for an id the CSMS never used: {frame}"
            VALIDATOR.validate_response(action, frame[2])
        else:
            assert kind == 4 and len(frame) == 5, frame
            assert frame[2] in ERROR_CODES, frame
            assert isinstance(frame[3], str) and isinstance(frame[4], dict)

    def calls(self) -> list[Frame]:
        frames = self.frames()
        assert all(f[0] == 2 for f in frames), frames
        return frames

    def one_call(self, action: str | None = None) -> Frame:
        frames = self.frames()
        assert len(frames) == 1 and frames[0][0] == 2, frames
        if action is not None:
            assert frames[0][2] == action, frames[0]
        return frames[0]

    def nothing(self) -> None:
        assert self.frames() == []

    # --- frames in ----------------------------------------------------------------------------------------------
    def reply(self, call: Frame, payload: dict[str, Any], now: float) -> None:
        self.s.receive(json.dumps([3, call[1], payload]), now)

    def reply_error(self, call: Frame, now: float, code: str = "InternalError") -> None:
        self.s.receive(json.dumps([4, call[1], code, "nope", {}]), now)

    def csms_call(self, uid: str, action: str, payload: Any, now: float) -> Frame:
        self.incoming[uid] = action
        self.s.receive(json.dumps([2, uid, action, payload]), now)
        frames = self.frames()
        answers = [f for f in frames if f[0] != 2 and f[1] == uid]
        assert len(answers) == 1, frames
        self._stash = [f for f in frames if f is not answers[0]]
        return answers[0]

    def answer_generic(self, call: Frame, now: float) -> None:
        action = call[2]
        if action == "StartTransaction":
            payload: dict[str, Any] = {"transactionId": 4242, "idTagInfo": {"status": "Accepted"}}
        elif action == "Heartbeat":
            payload = {"currentTime": BOOT_TIME}
        elif action == "Authorize":
            payload = {"idTagInfo": {"status": "Accepted"}}
        else:
            payload = {}
        self.reply(call, payload, now)

    def boot(self, now: float = 0.0, interval: int = 0) -> list[Frame]:
        """Open, boot Accepted, answer the status burst; returns the StatusNotifications in order."""
        self.s.connection_opened(now)
        boot = self.one_call("BootNotification")
        self.reply(boot, {"status": "Accepted", "currentTime": BOOT_TIME, "interval": interval}, now)
        statuses: list[Frame] = []
        for _ in range(20):
            frames = self.frames()
            if not frames:
                break
            assert len(frames) == 1
            if frames[0][2] != "StatusNotification":
                self.pending = frames[0]
                return statuses
            statuses.append(frames[0])
            self.reply(frames[0], {}, now)
        self.pending = None
        return statuses

    def queue(self) -> list[tuple[str, int]]:
        rows = self.store._db.execute("SELECT action, attempts FROM tx_queue ORDER BY seq").fetchall()
        return [(r[0], r[1]) for r in rows]


@pytest.fixture
def h() -> Harness:
    return Harness()


# --- boot --------------------------------------------------------------------------------------------------------
def test_nothing_before_connection(h: Harness) -> None:
    h.s.tick(0.0)
    h.s.tick(1000.0)
    h.nothing()
    assert not h.s.connected


def test_boot_flow_one_call_at_a_time(h: Harness) -> None:
    h.s.connection_opened(10.0)
    boot = h.one_call("BootNotification")
    assert boot[3] == {"chargePointVendor": "evsed", "chargePointModel": "evsed-sim",
                       "chargePointSerialNumber": "SIM-1", "firmwareVersion": "0.1.0"}
    h.s.tick(11.0)
    h.nothing()  # still waiting for the answer
    h.reply(boot, {"status": "Accepted", "currentTime": BOOT_TIME, "interval": 0}, 12.0)
    assert h.s.registration == "Accepted"
    seen = []
    for connector in (0, 1, 2):
        call = h.one_call("StatusNotification")
        assert call[3]["connectorId"] == connector
        assert call[3]["status"] == "Available" and call[3]["errorCode"] == "NoError"
        assert call[3]["timestamp"] == BOOT_TIME  # the CSMS's currentTime set the wall clock
        h.s.tick(13.0)
        h.nothing()  # the next one only after this one is answered
        seen.append(connector)
        h.reply(call, {}, 13.0)
    h.nothing()
    assert seen == [0, 1, 2]


def test_boot_adopts_csms_time(h: Harness) -> None:
    h.boot(now=100.0)
    assert h.s.wall_offset == pytest.approx(BOOT_WALL - 100.0)
    assert h.s.timestamp(160.0) == "2024-05-01T12:01:00.000Z"


def test_boot_statuses_reflect_controller(h: Harness) -> None:
    h.ctl.status_table = {1: ("Charging", "NoError", ""), 2: ("Faulted", "PowerMeterFailure", "meter " * 20)}
    statuses = h.boot()
    assert [(f[3]["connectorId"], f[3]["status"], f[3]["errorCode"]) for f in statuses] == [
        (0, "Available", "NoError"), (1, "Charging", "NoError"), (2, "Faulted", "PowerMeterFailure")]
    assert len(statuses[2][3]["info"]) == 50  # CiString50
    assert "info" not in statuses[1][3]


def test_boot_interval_sets_heartbeat(h: Harness) -> None:
    h.boot(now=0.0, interval=120)
    assert h.keys["HeartbeatInterval"] == 120
    assert h.store.load_config_keys()["HeartbeatInterval"] == "120"


@pytest.mark.parametrize("status", ["Pending", "Rejected"])
def test_not_accepted_sends_only_boot_after_interval(h: Harness, status: str) -> None:
    h.s.connection_opened(0.0)
    boot = h.one_call("BootNotification")
    h.reply(boot, {"status": status, "currentTime": BOOT_TIME, "interval": 20}, 1.0)
    assert h.s.registration == status
    # Nothing but BootNotification: no status, no transaction messages, no heartbeat, no Authorize.
    h.s.status_changed(1, "Preparing", "NoError", "", 2.0)
    h.s.transaction_started(1, "TAG", 0.0, 3.0)
    h.s.authorize("CARD", 4.0)
    assert h.ctl.calls[-1] == ("authorization_result", "CARD", "Invalid", None)  # decided offline
    assert h.s.next_deadline(5.0) == pytest.approx(21.0)
    h.s.tick(20.99)
    h.nothing()
    h.s.tick(21.0)
    again = h.one_call("BootNotification")
    h.s.tick(40.0)
    h.nothing()
    # Now accepted: the held-back messages go out, statuses first, then the transaction.
    h.reply(again, {"status": "Accepted", "currentTime": BOOT_TIME, "interval": 0}, 41.0)
    order = []
    for _ in range(10):
        frames = h.frames()
        if not frames:
            break
        order.append((frames[0][2], frames[0][3].get("connectorId")))
        h.answer_generic(frames[0], 42.0)
    assert order == [("StatusNotification", 0), ("StatusNotification", 1), ("StatusNotification", 2),
                     ("StartTransaction", 1)]


def test_pending_without_interval_uses_default(h: Harness) -> None:
    h.s.connection_opened(0.0)
    boot = h.one_call("BootNotification")
    h.reply(boot, {"status": "Pending", "currentTime": BOOT_TIME, "interval": 0}, 1.0)
    h.s.tick(1.0 + DEFAULT_BOOT_RETRY_S - 0.01)
    h.nothing()
    h.s.tick(1.0 + DEFAULT_BOOT_RETRY_S)
    h.one_call("BootNotification")


def test_pending_still_answers_csms_calls(h: Harness) -> None:
    h.s.connection_opened(0.0)
    h.reply(h.one_call("BootNotification"), {"status": "Pending", "currentTime": BOOT_TIME, "interval": 60}, 1.0)
    result = h.csms_call("g1", "GetConfiguration", {"key": ["HeartbeatInterval"]}, 2.0)
    assert result[0] == 3


def test_boot_callerror_and_timeout_retry(h: Harness) -> None:
    h.s.connection_opened(0.0)
    h.reply_error(h.one_call("BootNotification"), 1.0)
    h.nothing()
    h.s.tick(1.0 + DEFAULT_BOOT_RETRY_S)
    h.one_call("BootNotification")
    h.s.tick(31.0 + 29.9)
    h.nothing()
    h.s.tick(31.0 + 30.0)  # call timeout
    h.nothing()
    h.s.tick(61.0 + DEFAULT_BOOT_RETRY_S)
    h.one_call("BootNotification")


# --- heartbeat -------------------------------------------------------------------------------------------------
def test_heartbeat_after_silence(h: Harness) -> None:
    h.boot(now=0.0, interval=60)
    assert h.s.next_deadline(0.0) == pytest.approx(60.0)
    h.s.tick(59.9)
    h.nothing()
    h.s.tick(60.0)
    hb = h.one_call("Heartbeat")
    assert hb[3] == {}
    h.reply(hb, {"currentTime": BOOT_TIME}, 60.5)
    h.s.tick(119.9)
    h.nothing()
    h.s.tick(120.0)
    h.one_call("Heartbeat")


def test_other_traffic_postpones_heartbeat(h: Harness) -> None:
    h.boot(now=0.0, interval=60)
    h.s.status_changed(1, "Preparing", "NoError", "", 50.0)
    h.reply(h.one_call("StatusNotification"), {}, 50.0)
    h.s.tick(60.0)
    h.nothing()
    h.s.tick(110.0)
    h.one_call("Heartbeat")


def test_heartbeat_disabled_with_zero_interval(h: Harness) -> None:
    h.boot(now=0.0, interval=0)
    h.s.tick(100000.0)
    h.nothing()


# --- status notifications --------------------------------------------------------------------------------------
def test_status_changes_coalesce_per_connector(h: Harness) -> None:
    h.boot(now=0.0)
    h.s.status_changed(2, "Preparing", "NoError", "", 10.0)
    first = h.one_call("StatusNotification")
    h.s.status_changed(1, "Preparing", "NoError", "", 11.0)
    h.s.status_changed(1, "Charging", "NoError", "", 12.0)
    h.s.status_changed(2, "Finishing", "NoError", "", 12.5)
    h.nothing()
    h.reply(first, {}, 13.0)
    second = h.one_call("StatusNotification")
    assert (second[3]["connectorId"], second[3]["status"]) == (1, "Charging")  # only the latest per connector
    h.reply(second, {}, 14.0)
    third = h.one_call("StatusNotification")
    assert (third[3]["connectorId"], third[3]["status"]) == (2, "Finishing")


def test_reconnect_resends_all_statuses_without_boot(h: Harness) -> None:
    h.boot(now=0.0)
    h.s.connection_lost(10.0)
    h.s.status_changed(1, "Preparing", "NoError", "", 11.0)
    h.nothing()
    h.ctl.status_table[1] = ("Preparing", "NoError", "")
    h.s.connection_opened(20.0)
    call = h.one_call("StatusNotification")  # no second BootNotification
    assert call[3]["connectorId"] == 0


# --- transactions ------------------------------------------------------------------------------------------------
def drain(h: Harness, now: float) -> list[Frame]:
    sent: list[Frame] = []
    for _ in range(50):
        frames = h.calls()
        if not frames:
            return sent
        assert len(frames) == 1
        sent.append(frames[0])
        h.answer_generic(frames[0], now)
    raise AssertionError("the session kept sending")


def test_offline_transaction_persisted_then_sent_with_csms_id() -> None:
    h = Harness(MeterValueSampleInterval=10, MeterValuesSampledData=("Energy.Active.Import.Register",
                                                                     "Power.Active.Import", "Voltage"))
    local_id = h.s.transaction_started(1, "TAG", 1000.4, 5.0)
    h.nothing()
    assert h.queue() == [("StartTransaction", 0)]
    assert h.s.active_transaction(1) == local_id
    assert h.s.csms_transaction_id(1) is None

    h.s.connection_opened(6.0)
    boot = h.one_call("BootNotification")
    h.reply(boot, {"status": "Accepted", "currentTime": BOOT_TIME, "interval": 0}, 6.0)
    sent = drain(h, 7.0)
    assert [f[2] for f in sent] == ["StatusNotification"] * 3 + ["StartTransaction"]
    start = sent[-1][3]
    assert start == {"connectorId": 1, "idTag": "TAG", "meterStart": 1000, "timestamp": iso(WALL0 + 5.0)}
    assert h.s.csms_transaction_id(1) == 4242
    assert h.queue() == []

    # MeterValues at the sample interval (first one 10 s after the start).
    assert h.s.next_deadline(7.0) == pytest.approx(15.0)
    h.s.tick(14.9)
    h.nothing()
    h.s.tick(15.0)
    mv = h.one_call("MeterValues")
    assert mv[3]["transactionId"] == 4242
    assert mv[3]["connectorId"] == 1
    sampled = mv[3]["meterValue"][0]["sampledValue"]
    assert [(v["measurand"], v["value"], v["unit"], v.get("phase")) for v in sampled] == [
        ("Energy.Active.Import.Register", "1234.56", "Wh", None), ("Power.Active.Import", "7000", "W", None),
        ("Voltage", "230", "V", "L1-N"), ("Voltage", "230", "V", "L2-N"), ("Voltage", "230", "V", "L3-N")]
    assert all(v["context"] == "Sample.Periodic" for v in sampled)
    assert mv[3]["meterValue"][0]["timestamp"] == iso(BOOT_WALL + 15.0 - 6.0)
    h.reply(mv, {}, 15.5)
    h.s.tick(24.9)
    h.nothing()
    h.s.tick(25.0)
    h.reply(h.one_call("MeterValues"), {}, 25.5)

    h.s.transaction_stopped(1, 2000.0, 30.0, "Local", "TAG")
    stop = h.one_call("StopTransaction")
    assert stop[3] == {"meterStop": 2000, "timestamp": iso(BOOT_WALL + 24.0), "reason": "Local",
                       "idTag": "TAG", "transactionId": 4242}
    h.reply(stop, {"idTagInfo": {"status": "Accepted"}}, 31.0)
    assert h.queue() == []
    assert h.s.active_transaction(1) is None
    h.s.tick(100.0)
    h.nothing()  # no more sampling after the stop


def test_samples_while_offline_are_queued_in_order() -> None:
    h = Harness(MeterValueSampleInterval=10)
    h.s.transaction_started(1, "TAG", 0.0, 0.0)
    for t in (10.0, 20.0, 30.0):
        h.s.tick(t)
    h.s.transaction_stopped(1, 50.0, 35.0, "EVDisconnected", None)
    assert [a for a, _ in h.queue()] == ["StartTransaction", "MeterValues", "MeterValues", "MeterValues",
                                         "StopTransaction"]
    sent = h.boot(now=40.0)
    rest = [h.pending] if h.pending else []
    h.answer_generic(rest[0], 40.0)
    rest += drain(h, 41.0)
    assert [f[2] for f in sent] == ["StatusNotification"] * 3
    assert [f[2] for f in rest] == ["StartTransaction", "MeterValues", "MeterValues", "MeterValues",
                                    "StopTransaction"]
    assert all(f[3]["transactionId"] == 4242 for f in rest[1:])
    assert "idTag" not in rest[-1][3]
    assert rest[-1][3]["reason"] == "EVDisconnected"


def test_sample_interval_zero_disables_sampling() -> None:
    h = Harness(MeterValueSampleInterval=0)
    h.s.transaction_started(1, "TAG", 0.0, 0.0)
    h.s.tick(1000.0)
    assert h.queue() == [("StartTransaction", 0)]


def test_empty_sampled_data_sends_no_meter_values() -> None:
    h = Harness(MeterValueSampleInterval=10, MeterValuesSampledData=())
    h.s.transaction_started(1, "TAG", 0.0, 0.0)
    h.s.tick(10.0)
    h.s.tick(20.0)
    assert h.queue() == [("StartTransaction", 0)]


def test_config_changed_reschedules_sampling() -> None:
    h = Harness(MeterValueSampleInterval=60)
    h.s.transaction_started(1, "TAG", 0.0, 0.0)
    h.s.config_changed("MeterValueSampleInterval", 5, 1.0)
    h.keys.change("MeterValueSampleInterval", "5")
    h.s.tick(6.0)
    assert [a for a, _ in h.queue()] == ["StartTransaction", "MeterValues"]
    h.s.config_changed("MeterValueSampleInterval", 0, 7.0)
    h.s.tick(100.0)
    assert len(h.queue()) == 2


def test_connection_lost_with_pending_start_resends_once() -> None:
    h = Harness()
    h.boot(now=0.0)
    h.s.transaction_started(1, "TAG", 0.0, 1.0)
    first = h.one_call("StartTransaction")
    h.s.connection_lost(2.0)
    h.reply(first, {"transactionId": 1, "idTagInfo": {"status": "Accepted"}}, 2.5)  # too late: ignored
    assert h.queue() == [("StartTransaction", 0)]
    assert len(h.store.open_transactions()) == 1
    h.s.tick(3.0)
    h.nothing()
    h.s.connection_opened(10.0)
    sent = drain(h, 11.0)
    assert [f[2] for f in sent] == ["StatusNotification"] * 3 + ["StartTransaction"]
    assert sent[-1][3] == first[3]
    assert sent[-1][1] != first[1]  # a fresh unique id
    assert h.queue() == []
    assert h.s.csms_transaction_id(1) == 4242
    count = h.store._db.execute("SELECT COUNT(*) FROM transactions").fetchone()[0]
    assert count == 1


def test_transaction_callerror_retry_backoff_and_drop() -> None:
    h = Harness(TransactionMessageRetryInterval=30, TransactionMessageAttempts=3)
    h.boot(now=0.0)
    h.s.transaction_started(1, "TAG", 0.0, 100.0)
    h.s.transaction_stopped(1, 10.0, 100.0, "Local", None)
    start = h.one_call("StartTransaction")
    h.reply_error(start, 100.0)
    assert h.queue()[0] == ("StartTransaction", 1)
    h.nothing()
    assert h.s.next_deadline(100.0) == pytest.approx(130.0)
    h.s.tick(129.9)
    h.nothing()
    h.s.tick(130.0)
    h.reply_error(h.one_call("StartTransaction"), 131.0)
    assert h.queue()[0] == ("StartTransaction", 2)
    h.s.tick(131.0 + 59.9)
    h.nothing()
    h.s.tick(131.0 + 60.0)  # interval * attempts
    h.reply_error(h.one_call("StartTransaction"), 192.0)
    # Third rejection: dropped, the next message goes out at once.
    stop = h.one_call("StopTransaction")
    assert h.queue() == [("StopTransaction", 0)]
    assert stop[3]["transactionId"] == -1  # the start never got a CSMS id (errata 3.18)


def test_transaction_timeout_retries_at_once_without_counting() -> None:
    h = Harness()
    h.boot(now=0.0)
    h.s.transaction_started(1, "TAG", 0.0, 10.0)
    first = h.one_call("StartTransaction")
    assert h.s.next_deadline(10.0) == pytest.approx(40.0)
    h.s.tick(39.9)
    h.nothing()
    h.s.tick(40.0)
    again = h.one_call("StartTransaction")
    assert again[1] != first[1]
    assert h.queue() == [("StartTransaction", 0)]
    h.reply(first, {"transactionId": 1, "idTagInfo": {"status": "Accepted"}}, 41.0)  # stale answer ignored
    assert h.s.csms_transaction_id(1) is None
    h.answer_generic(again, 42.0)
    assert h.s.csms_transaction_id(1) == 4242


def test_start_rejected_by_csms_is_reported_to_the_core() -> None:
    h = Harness()
    h.boot(now=0.0)
    h.s.transaction_started(2, "TAG", 0.0, 1.0)
    h.reply(h.one_call("StartTransaction"),
            {"transactionId": 7, "idTagInfo": {"status": "Invalid", "parentIdTag": "P"}}, 2.0)
    assert ("transaction_confirmed", 2, "Invalid", "P") in h.ctl.calls
    # The answer also lands in the authorization cache.
    assert h.s.authorizer.lookup("TAG") is not None


def test_start_with_expired_idtaginfo_counts_as_expired() -> None:
    h = Harness()
    h.boot(now=0.0)
    h.s.transaction_started(1, "TAG", 0.0, 1.0)
    h.reply(h.one_call("StartTransaction"),
            {"transactionId": 7, "idTagInfo": {"status": "Accepted", "expiryDate": "2020-01-01T00:00:00Z"}}, 2.0)
    assert ("transaction_confirmed", 1, "Expired", None) in h.ctl.calls


def test_other_call_timeout_frees_the_line(h: Harness) -> None:
    h.boot(now=0.0)
    h.s.status_changed(1, "Preparing", "NoError", "", 1.0)
    h.one_call("StatusNotification")
    h.s.status_changed(2, "Preparing", "NoError", "", 2.0)
    h.nothing()
    h.s.tick(31.0)
    nxt = h.one_call("StatusNotification")
    assert nxt[3]["connectorId"] == 2


def test_transaction_stopped_unknown_connector_is_ignored(h: Harness) -> None:
    h.boot(now=0.0)
    h.s.transaction_stopped(1, 0.0, 1.0, "Local", None)
    h.nothing()
    assert h.queue() == []


def test_open_transactions_are_adopted_from_the_store() -> None:
    h = Harness()
    local_id = h.s.transaction_started(2, "TAG", 0.0, 0.0)
    again = OcppSession(IDENTITY, h.keys, h.store, h.ctl, VALIDATOR, connectors=2, now=0.0, wall_offset=WALL0)
    assert again.active_transaction(2) == local_id


# --- CSMS-initiated calls -------------------------------------------------------------------------------------
def test_remote_start_accepted(h: Harness) -> None:
    h.boot(now=0.0)
    res = h.csms_call("r1", "RemoteStartTransaction", {"connectorId": 1, "idTag": "REMOTE"}, 1.0)
    assert res == [3, "r1", {"status": "Accepted"}]
    assert h.ctl.calls == [("can_remote_start", 1), ("remote_start", 1, "REMOTE")]


def test_remote_start_without_connector(h: Harness) -> None:
    h.boot(now=0.0)
    res = h.csms_call("r1", "RemoteStartTransaction", {"idTag": "REMOTE"}, 1.0)
    assert res[2] == {"status": "Accepted"}
    assert h.ctl.calls == [("can_remote_start", None), ("remote_start", None, "REMOTE")]


def test_remote_start_rejected_by_controller(h: Harness) -> None:
    h.boot(now=0.0)
    h.ctl.accept_remote_start = False
    res = h.csms_call("r1", "RemoteStartTransaction", {"connectorId": 2, "idTag": "REMOTE"}, 1.0)
    assert res[2] == {"status": "Rejected"}


@pytest.mark.parametrize("connector", [0, 3, 99])
def test_remote_start_bad_connector_rejected(h: Harness, connector: int) -> None:
    h.boot(now=0.0)
    res = h.csms_call("r1", "RemoteStartTransaction", {"connectorId": connector, "idTag": "REMOTE"}, 1.0)
    assert res[2] == {"status": "Rejected"}
    assert h.ctl.calls == []


def test_remote_start_with_charging_profile_accepted(h: Harness) -> None:
    h.boot(now=0.0)
    profile = {"chargingProfileId": 1, "stackLevel": 0, "chargingProfilePurpose": "TxProfile",
               "chargingProfileKind": "Relative",
               "chargingSchedule": {"chargingRateUnit": "A", "chargingSchedulePeriod": [{"startPeriod": 0,
                                                                                          "limit": 10.0}]}}
    res = h.csms_call("r1", "RemoteStartTransaction", {"connectorId": 1, "idTag": "R", "chargingProfile": profile},
                      1.0)
    assert res[2] == {"status": "Accepted"}


def test_remote_start_with_authorize_remote_tx_requests() -> None:
    h = Harness(AuthorizeRemoteTxRequests=True)
    h.boot(now=0.0)
    res = h.csms_call("r1", "RemoteStartTransaction", {"connectorId": 1, "idTag": "REMOTE"}, 1.0)
    assert res == [3, "r1", {"status": "Accepted"}]
    assert h.ctl.calls == [("can_remote_start", 1)]
    auth = h.one_call("Authorize")
    assert auth[3] == {"idTag": "REMOTE"}
    h.reply(auth, {"idTagInfo": {"status": "Accepted"}}, 2.0)
    assert h.ctl.calls[-1] == ("remote_start", 1, "REMOTE")
    # Refused by the controller up front.
    h.ctl.can_start = False
    res = h.csms_call("r2", "RemoteStartTransaction", {"connectorId": 1, "idTag": "REMOTE"}, 3.0)
    assert res[2] == {"status": "Rejected"}
    h.nothing()


def test_remote_start_authorize_rejected_does_not_start() -> None:
    h = Harness(AuthorizeRemoteTxRequests=True)
    h.boot(now=0.0)
    h.csms_call("r1", "RemoteStartTransaction", {"idTag": "REMOTE"}, 1.0)
    h.reply(h.one_call("Authorize"), {"idTagInfo": {"status": "Blocked"}}, 2.0)
    assert not any(c[0] == "remote_start" for c in h.ctl.calls)
    assert not any(c[0] == "authorization_result" for c in h.ctl.calls)


def test_remote_stop_known_and_unknown(h: Harness) -> None:
    h.boot(now=0.0)
    h.s.transaction_started(1, "TAG", 0.0, 1.0)
    h.answer_generic(h.one_call("StartTransaction"), 1.5)
    h.ctl.calls.clear()
    res = h.csms_call("s1", "RemoteStopTransaction", {"transactionId": 4242}, 2.0)
    assert res == [3, "s1", {"status": "Accepted"}]
    assert h.ctl.calls == [("remote_stop", 1)]
    res = h.csms_call("s2", "RemoteStopTransaction", {"transactionId": 1}, 3.0)
    assert res == [3, "s2", {"status": "Rejected"}]
    assert h.ctl.calls == [("remote_stop", 1)]


def test_remote_stop_before_start_confirmed_is_rejected(h: Harness) -> None:
    h.s.transaction_started(1, "TAG", 0.0, 1.0)  # offline, no CSMS id yet
    h.s.connection_opened(2.0)
    h.reply(h.one_call("BootNotification"), {"status": "Pending", "currentTime": BOOT_TIME, "interval": 60}, 2.0)
    res = h.csms_call("s1", "RemoteStopTransaction", {"transactionId": 0}, 3.0)
    assert res[2] == {"status": "Rejected"}


def test_get_configuration(h: Harness) -> None:
    h.boot(now=0.0)
    res = h.csms_call("g1", "GetConfiguration", {}, 1.0)
    keys = {e["key"]: e for e in res[2]["configurationKey"]}
    assert keys["NumberOfConnectors"] == {"key": "NumberOfConnectors", "readonly": True, "value": "2"}
    assert "unknownKey" not in res[2]
    res = h.csms_call("g2", "GetConfiguration", {"key": ["ConnectionTimeOut", "Bogus"]}, 1.0)
    assert res[2] == {"configurationKey": [{"key": "ConnectionTimeOut", "readonly": False, "value": "60"}],
                      "unknownKey": ["Bogus"]}
    res = h.csms_call("g3", "GetConfiguration", {"key": ["Bogus"]}, 1.0)
    assert res[2] == {"unknownKey": ["Bogus"]}


def test_get_configuration_too_many_keys(h: Harness) -> None:
    h.boot(now=0.0)
    res = h.csms_call("g1", "GetConfiguration", {"key": [f"K{i}" for i in range(101)]}, 1.0)
    assert res[0] == 4 and res[2] == "OccurenceConstraintViolation"


@pytest.mark.parametrize(("key", "value", "status"), [
    ("HeartbeatInterval", "30", "Accepted"),
    ("HeartbeatInterval", "soon", "Rejected"),
    ("NumberOfConnectors", "4", "Rejected"),
    ("NoSuchKey", "1", "NotSupported"),
])
def test_change_configuration(h: Harness, key: str, value: str, status: str) -> None:
    h.boot(now=0.0)
    res = h.csms_call("c1", "ChangeConfiguration", {"key": key, "value": value}, 1.0)
    assert res == [3, "c1", {"status": status}]
    if status == "Accepted":
        assert h.keys[key] == int(value)
        assert h.store.load_config_keys()[key] == value


def test_change_heartbeat_takes_effect(h: Harness) -> None:
    h.boot(now=0.0)
    h.csms_call("c1", "ChangeConfiguration", {"key": "HeartbeatInterval", "value": "30"}, 1.0)
    h.s.tick(30.0)
    h.one_call("Heartbeat")


def test_unknown_action_not_implemented(h: Harness) -> None:
    h.boot(now=0.0)
    res = h.csms_call("u1", "MakeCoffee", {}, 1.0)
    assert res[:3] == [4, "u1", "NotImplemented"]


@pytest.mark.parametrize(("action", "payload"), [
    ("TriggerMessage", {"requestedMessage": "Heartbeat"}),
    ("ReserveNow", {"connectorId": 1, "expiryDate": "2030-01-01T00:00:00Z", "idTag": "T", "reservationId": 1}),
])
def test_known_unsupported_action_not_supported(h: Harness, action: str, payload: dict[str, Any]) -> None:
    h.boot(now=0.0)
    res = h.csms_call("u1", action, payload, 1.0)
    assert res[:3] == [4, "u1", "NotSupported"]


@pytest.mark.parametrize(("action", "payload", "code"), [
    ("RemoteStartTransaction", {}, "OccurenceConstraintViolation"),  # idTag missing
    ("RemoteStartTransaction", {"idTag": 5}, "TypeConstraintViolation"),
    ("RemoteStartTransaction", {"idTag": "x" * 21}, "PropertyConstraintViolation"),  # maxLength 20
    ("RemoteStartTransaction", {"idTag": "A", "bogus": 1}, "OccurenceConstraintViolation"),
    ("RemoteStartTransaction", {"idTag": "A", "connectorId": "1"}, "TypeConstraintViolation"),
    ("RemoteStopTransaction", {"transactionId": "4242"}, "TypeConstraintViolation"),
    ("ChangeConfiguration", {"key": "HeartbeatInterval"}, "OccurenceConstraintViolation"),
    ("ChangeConfiguration", {"key": "K" * 51, "value": "1"}, "PropertyConstraintViolation"),
    ("GetConfiguration", {"key": "HeartbeatInterval"}, "TypeConstraintViolation"),
    ("Reset", {"type": "Medium"}, "PropertyConstraintViolation"),  # enum
    ("RemoteStartTransaction", [1, 2], "FormationViolation"),  # payload not an object
    ("RemoteStartTransaction", "idTag", "FormationViolation"),
])
def test_schema_invalid_payloads(h: Harness, action: str, payload: Any, code: str) -> None:
    h.boot(now=0.0)
    res = h.csms_call("v1", action, payload, 1.0)
    assert res[:3] == [4, "v1", code]
    assert h.ctl.calls == []


def test_incoming_call_answered_while_our_call_is_pending(h: Harness) -> None:
    h.boot(now=0.0)
    h.s.status_changed(1, "Preparing", "NoError", "", 1.0)
    ours = h.one_call("StatusNotification")
    h.incoming["g1"] = "GetConfiguration"
    h.s.receive(json.dumps([2, "g1", "GetConfiguration", {"key": ["HeartbeatInterval"]}]), 2.0)
    frames = h.frames()
    assert [f[0] for f in frames] == [3]  # answered at once, nothing new sent while ours is pending
    h.reply(ours, {}, 3.0)
    h.nothing()


# --- malformed frames ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(("text", "uid", "code"), [
    ('[2,"id1","Heartbeat"]', "id1", "ProtocolError"),
    ('[2,"id2",5,{}]', "id2", "FormationViolation"),
    ('[2,"id3","Heartbeat",{},1]', "id3", "FormationViolation"),
    ('[2,"id4","Heartbeat",7]', "id4", "FormationViolation"),
    ('[2,"' + "x" * 37 + '","Heartbeat",{}]', "x" * 37, "PropertyConstraintViolation"),
])
def test_malformed_call_with_recoverable_id(h: Harness, text: str, uid: str, code: str) -> None:
    h.boot(now=0.0)
    h.s.receive(text, 1.0)
    frames = h.frames()
    assert len(frames) == 1
    assert frames[0][:3] == [4, uid, code]


@pytest.mark.parametrize("text", ["not json", "{}", "[]", "42", '["2","a","b",{}]', "[2, 5, \"A\", {}]",
                                  "[2]", "[NaN]", b"\xff\xfe", "[" * 10000])
def test_unreadable_frames_never_raise(h: Harness, text: str | bytes) -> None:
    h.boot(now=0.0)
    h.s.receive(text, 1.0)
    frames = h.frames()
    # No id can be read: at most one CALLERROR with the OCPP "-1" placeholder id (never an exception).
    assert all(f[0] == 4 and f[1] == "-1" for f in frames), frames
    assert len(frames) <= 1
    # The session still works afterwards.
    res = h.csms_call("after", "GetConfiguration", {"key": ["HeartbeatInterval"]}, 2.0)
    assert res[0] == 3


@pytest.mark.parametrize("text", ['[3,"nobody",{}]', '[4,"nobody","GenericError","",{}]'])
def test_answers_to_unknown_ids_are_ignored(h: Harness, text: str) -> None:
    h.boot(now=0.0)
    h.s.receive(text, 1.0)
    h.nothing()


def test_broken_answer_to_our_call_fails_it_at_once(h: Harness) -> None:
    h.boot(now=0.0)
    h.s.status_changed(1, "Preparing", "NoError", "", 1.0)
    ours = h.one_call("StatusNotification")
    h.s.status_changed(2, "Preparing", "NoError", "", 1.5)
    h.s.receive(json.dumps([3, ours[1], "not an object"]), 2.0)
    # Never answer an answer; the line is free again at once (no 30 s wait).
    nxt = h.one_call("StatusNotification")
    assert nxt[3]["connectorId"] == 2


def test_broken_answer_to_transaction_message_counts_as_rejection(h: Harness) -> None:
    h.boot(now=0.0)
    h.s.transaction_started(1, "TAG", 0.0, 1.0)
    start = h.one_call("StartTransaction")
    h.s.receive(json.dumps([4, start[1], 5]), 2.0)  # errorCode not a string
    h.nothing()
    assert h.queue() == [("StartTransaction", 1)]


@pytest.mark.parametrize("text", ['[3,"nobody","x"]', '[4,"nobody",5]', '[3,"nobody",{},1]'])
def test_broken_answer_to_unknown_id_is_dropped(h: Harness, text: str) -> None:
    h.boot(now=0.0)
    h.s.receive(text, 1.0)
    h.nothing()


def test_schema_invalid_answer_is_used_leniently(h: Harness) -> None:
    h.boot(now=0.0)
    h.s.transaction_started(1, "TAG", 0.0, 1.0)
    start = h.one_call("StartTransaction")
    h.reply(start, {"transactionId": 99}, 2.0)  # idTagInfo missing: not schema-valid
    assert h.s.csms_transaction_id(1) == 99
    assert h.queue() == []


# --- authorization ------------------------------------------------------------------------------------------
def test_authorize_online(h: Harness) -> None:
    h.boot(now=0.0)
    h.s.authorize("CARD", 1.0)
    auth = h.one_call("Authorize")
    assert auth[3] == {"idTag": "CARD"}
    h.reply(auth, {"idTagInfo": {"status": "Accepted", "parentIdTag": "GROUP"}}, 2.0)
    assert h.ctl.calls == [("authorization_result", "CARD", "Accepted", "GROUP")]


def test_authorize_online_rejected(h: Harness) -> None:
    h.boot(now=0.0)
    h.s.authorize("CARD", 1.0)
    h.reply(h.one_call("Authorize"), {"idTagInfo": {"status": "Blocked"}}, 2.0)
    assert h.ctl.calls == [("authorization_result", "CARD", "Blocked", None)]


def test_authorize_waits_behind_pending_call_but_before_transactions(h: Harness) -> None:
    h.boot(now=0.0)
    h.s.status_changed(1, "Preparing", "NoError", "", 1.0)
    status = h.one_call("StatusNotification")
    h.s.transaction_started(2, "OTHER", 0.0, 1.5)
    h.s.authorize("CARD", 2.0)
    h.nothing()
    h.reply(status, {}, 3.0)
    h.one_call("Authorize")


@pytest.mark.parametrize(("allow", "expected"), [(True, "Accepted"), (False, "Invalid")])
def test_authorize_offline(allow: bool, expected: str) -> None:
    h = Harness(AllowOfflineTxForUnknownId=allow)
    h.s.authorize("CARD", 1.0)
    h.nothing()
    assert h.ctl.calls == [("authorization_result", "CARD", expected, None)]


@pytest.mark.parametrize(("allow", "expected"), [(True, "Accepted"), (False, "Invalid")])
def test_authorize_connection_lost_decides_offline(allow: bool, expected: str) -> None:
    h = Harness(AllowOfflineTxForUnknownId=allow)
    h.boot(now=0.0)
    h.s.authorize("ONE", 1.0)
    h.one_call("Authorize")
    h.s.authorize("TWO", 1.5)  # queued behind the first
    h.s.connection_lost(2.0)
    assert h.ctl.calls == [("authorization_result", "ONE", expected, None),
                           ("authorization_result", "TWO", expected, None)]


def test_authorize_timeout_and_callerror_decide_offline() -> None:
    h = Harness(AllowOfflineTxForUnknownId=True)
    h.boot(now=0.0)
    h.s.authorize("ONE", 1.0)
    h.one_call("Authorize")
    h.s.tick(31.0)
    assert h.ctl.calls == [("authorization_result", "ONE", "Accepted", None)]
    h.s.authorize("TWO", 32.0)
    h.reply_error(h.one_call("Authorize"), 33.0)
    assert h.ctl.calls[-1] == ("authorization_result", "TWO", "Accepted", None)


# --- every frame validates -------------------------------------------------------------------------------------
def test_full_session_every_frame_schema_valid() -> None:
    h = Harness(MeterValueSampleInterval=5, MeterValuesSampledData=("Energy.Active.Import.Register",
                                                                    "Power.Active.Import", "Current.Import",
                                                                    "Current.Offered", "Voltage"))
    h.ctl.status_table = {1: ("Faulted", "EVCommunicationError", "diode check failed"),
                          2: ("SuspendedEVSE", "NoError", "no current offered")}
    h.boot(now=0.0, interval=50)
    h.s.authorize("CARD", 1.0)
    h.reply(h.one_call("Authorize"), {"idTagInfo": {"status": "Accepted", "expiryDate": BOOT_TIME}}, 1.0)
    h.s.transaction_started(1, "CARD", 12.9, 2.0)
    h.s.status_changed(1, "Charging", "NoError", "", 2.0)
    now = 2.0
    for _ in range(40):
        now += 1.0
        h.s.tick(now)
        for f in h.calls():
            h.answer_generic(f, now)
    h.s.transaction_stopped(1, 100.0, now, "Remote", None)
    drain(h, now)
    h.s.tick(now + 100)
    drain(h, now + 100)
    actions = [f[2] for f in h.all_frames if f[0] == 2]
    assert {"BootNotification", "StatusNotification", "Authorize", "StartTransaction", "MeterValues",
            "StopTransaction", "Heartbeat"} <= set(actions)
    # Every CALL was checked by Harness._check already; re-check the whole record for good measure.
    for f in h.all_frames:
        if f[0] == 2:
            VALIDATOR.validate_request(f[2], f[3])
    assert h.queue() == []
