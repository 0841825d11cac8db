"""OCPP 1.6 Core behaviours of the sans-I/O session beyond the basics: registration states, status timing,
authorization cache, DataTransfer, deferred answers, clock-aligned and stop-transaction meter data."""

from __future__ import annotations

import json
from typing import Any

import pytest
from test_session import BOOT_TIME, BOOT_WALL, Harness, iso

from evsed.core.authorization import IdTagInfo


def boot_with(h: Harness, status: str, interval: int, now: float = 0.0) -> None:
    h.s.connection_opened(now)
    boot = h.one_call("BootNotification")
    h.reply(boot, {"status": status, "currentTime": BOOT_TIME, "interval": interval}, now)


def drain(h: Harness, now: float) -> list[Any]:
    """Answer every CALL generically until the line is quiet; returns them."""
    seen = []
    for _ in range(50):
        frames = [f for f in h.frames() if f[0] == 2]
        if not frames:
            break
        for f in frames:
            seen.append(f)
            h.answer_generic(f, now)
    return seen


# --- registration -------------------------------------------------------------------------------------------
def test_rejected_answers_nothing_and_waits_the_interval() -> None:
    h = Harness()
    boot_with(h, "Rejected", 20)
    h.s.receive(json.dumps([2, "c1", "GetConfiguration", {}]), 1.0)
    h.s.receive("not json at all", 1.5)
    assert h.frames() == []
    h.s.tick(19.0)
    assert h.frames() == []
    # A reconnect inside the interval does not bring the BootNotification forward.
    h.s.connection_lost(5.0)
    h.s.connection_opened(6.0)
    assert h.frames() == []
    h.s.tick(20.0)
    assert h.one_call("BootNotification")


def test_pending_answers_configuration_but_rejects_remote_start() -> None:
    h = Harness()
    boot_with(h, "Pending", 10)
    res = h.csms_call("g1", "GetConfiguration", {"key": ["HeartbeatInterval"]}, 1.0)
    assert res[0] == 3 and res[2]["configurationKey"][0]["key"] == "HeartbeatInterval"
    res = h.csms_call("c1", "ChangeConfiguration", {"key": "MeterValueSampleInterval", "value": "15"}, 2.0)
    assert res[2] == {"status": "Accepted"}
    res = h.csms_call("r1", "RemoteStartTransaction", {"idTag": "T"}, 3.0)
    assert res[2] == {"status": "Rejected"}
    assert ("remote_start", None, "T") not in h.ctl.calls
    # Nothing else is sent while Pending, not even a card's Authorize.
    h.s.authorize("CARD", 4.0)
    h.s.status_changed(1, "Preparing", "NoError", "", 4.0)
    assert [f for f in h.frames() if f[0] == 2] == []
    assert h.ctl.calls[-1] == ("authorization_result", "CARD", "Invalid", None)  # decided by the offline rules
    h.s.tick(10.0)
    assert h.one_call("BootNotification")


def test_boot_interval_zero_uses_own_retry() -> None:
    h = Harness()
    boot_with(h, "Pending", 0)
    h.s.tick(29.0)
    assert h.frames() == []
    h.s.tick(30.0)
    assert h.one_call("BootNotification")


def test_heartbeat_current_time_sets_the_clock() -> None:
    h = Harness()
    h.boot(now=0.0, interval=10)
    h.s.tick(10.0)
    hb = h.one_call("Heartbeat")
    h.reply(hb, {"currentTime": "2030-01-01T00:00:00Z"}, 10.0)
    assert h.s.timestamp(10.0) == "2030-01-01T00:00:00.000Z"


# --- StatusNotification timing --------------------------------------------------------------------------------
def test_minimum_status_duration_suppresses_flicker() -> None:
    h = Harness(MinimumStatusDuration=5)
    h.boot(now=0.0)
    h.s.status_changed(1, "Preparing", "NoError", "", 1.0)
    h.s.tick(3.0)
    assert h.frames() == []
    h.s.status_changed(1, "Available", "NoError", "", 3.0)  # back to what the CSMS knows
    h.s.tick(10.0)
    assert h.frames() == []
    h.s.status_changed(1, "Preparing", "NoError", "", 11.0)
    assert h.s.next_deadline(11.0) == 16.0
    h.s.tick(15.9)
    assert h.frames() == []
    h.s.tick(16.0)
    sn = h.one_call("StatusNotification")
    assert sn[3]["status"] == "Preparing"
    assert sn[3]["timestamp"] == iso(BOOT_WALL + 11.0)  # when it changed, not when it was sent


def test_failed_status_notification_is_retried() -> None:
    h = Harness()
    h.boot(now=0.0)
    h.s.status_changed(2, "Faulted", "GroundFailure", "rcd", 1.0)
    sn = h.one_call("StatusNotification")
    h.reply_error(sn, 2.0)
    h.s.tick(5.0)
    assert h.frames() == []
    h.s.tick(12.0)
    again = h.one_call("StatusNotification")
    assert again[3]["status"] == "Faulted" and again[3]["errorCode"] == "GroundFailure"


def test_failed_status_is_not_retried_over_a_newer_one() -> None:
    h = Harness()
    h.boot(now=0.0)
    h.s.status_changed(1, "Preparing", "NoError", "", 1.0)
    sn = h.one_call("StatusNotification")
    h.s.status_changed(1, "Charging", "NoError", "", 1.5)
    h.reply_error(sn, 2.0)
    nxt = h.one_call("StatusNotification")
    assert nxt[3]["status"] == "Charging"
    h.reply(nxt, {}, 2.1)
    h.s.tick(30.0)
    assert [f for f in h.frames() if f[2] == "StatusNotification"] == []


# --- authorization ----------------------------------------------------------------------------------------------
def test_authorize_answers_fill_the_cache_and_local_pre_authorize_uses_it() -> None:
    h = Harness(LocalPreAuthorize=True)
    h.boot(now=0.0)
    h.s.authorize("CARD", 1.0)
    auth = h.one_call("Authorize")
    h.reply(auth, {"idTagInfo": {"status": "Accepted", "parentIdTag": "FLEET"}}, 1.1)
    assert h.ctl.calls[-1] == ("authorization_result", "CARD", "Accepted", "FLEET")
    h.s.authorize("card", 2.0)  # case-insensitive IdToken
    assert h.frames() == []
    assert h.ctl.calls[-1] == ("authorization_result", "card", "Accepted", "FLEET")


def test_without_local_pre_authorize_the_csms_is_asked() -> None:
    h = Harness(LocalPreAuthorize=False)
    h.boot(now=0.0)
    h.s.authorizer.remember("CARD", IdTagInfo("Accepted"), BOOT_WALL)
    h.s.authorize("CARD", 1.0)
    assert h.one_call("Authorize")


def test_offline_uses_the_cache_and_the_unknown_id_rule() -> None:
    h = Harness(LocalAuthorizeOffline=True, AllowOfflineTxForUnknownId=False)
    h.s.authorizer.remember("GOOD", IdTagInfo("Accepted"), BOOT_WALL)
    h.s.authorizer.remember("BAD", IdTagInfo("Blocked"), BOOT_WALL)
    h.s.authorize("GOOD", 1.0)
    h.s.authorize("BAD", 1.0)
    h.s.authorize("NEW", 1.0)
    results = [c for c in h.ctl.calls if c[0] == "authorization_result"]
    assert results == [("authorization_result", "GOOD", "Accepted", None),
                       ("authorization_result", "BAD", "Blocked", None),
                       ("authorization_result", "NEW", "Invalid", None)]


def test_authorize_timeout_falls_back_to_offline_rules() -> None:
    h = Harness(AllowOfflineTxForUnknownId=True)
    h.boot(now=0.0)
    h.s.authorize("NEW", 1.0)
    h.one_call("Authorize")
    h.s.tick(31.0)  # MessageTimeout 30 s
    assert h.ctl.calls[-1] == ("authorization_result", "NEW", "Accepted", None)


def test_clear_cache() -> None:
    h = Harness(LocalPreAuthorize=True)
    h.boot(now=0.0)
    h.s.authorizer.remember("CARD", IdTagInfo("Accepted"), BOOT_WALL)
    res = h.csms_call("cc", "ClearCache", {}, 1.0)
    assert res == [3, "cc", {"status": "Accepted"}]
    h.s.authorize("CARD", 2.0)
    assert h.one_call("Authorize")


def test_stop_transaction_conf_updates_the_cache() -> None:
    h = Harness()
    h.boot(now=0.0)
    h.s.transaction_started(1, "CARD", 0.0, 1.0)
    h.answer_generic(h.one_call("StartTransaction"), 1.1)
    h.s.transaction_stopped(1, 10.0, 2.0, "Local", "CARD")
    stop = h.one_call("StopTransaction")
    h.reply(stop, {"idTagInfo": {"status": "Blocked"}}, 2.1)
    found = h.s.authorizer.lookup("CARD")
    assert found is not None and found[0].status == "Blocked"


def test_remote_start_with_authorize_remote_tx_requests_uses_pre_authorization() -> None:
    h = Harness(AuthorizeRemoteTxRequests=True, LocalPreAuthorize=True)
    h.boot(now=0.0)
    h.s.authorizer.remember("REMOTE", IdTagInfo("Accepted"), BOOT_WALL)
    res = h.csms_call("r1", "RemoteStartTransaction", {"connectorId": 1, "idTag": "REMOTE"}, 1.0)
    assert res[2] == {"status": "Accepted"}
    assert ("remote_start", 1, "REMOTE") in h.ctl.calls


def test_remote_start_needs_authorize_when_configured() -> None:
    h = Harness(AuthorizeRemoteTxRequests=True)
    h.boot(now=0.0)
    res = h.csms_call("r1", "RemoteStartTransaction", {"connectorId": 1, "idTag": "REMOTE"}, 1.0)
    assert res[2] == {"status": "Accepted"}
    auth = h.one_call("Authorize")
    assert ("remote_start", 1, "REMOTE") not in h.ctl.calls
    h.reply(auth, {"idTagInfo": {"status": "Invalid"}}, 1.5)
    assert ("remote_start", 1, "REMOTE") not in h.ctl.calls


def test_remote_start_charging_profile_must_be_a_tx_profile() -> None:
    h = Harness()
    h.boot(now=0.0)
    profile = {"chargingProfileId": 1, "stackLevel": 0, "chargingProfilePurpose": "TxDefaultProfile",
               "chargingProfileKind": "Relative",
               "chargingSchedule": {"chargingRateUnit": "A", "chargingSchedulePeriod": [{"startPeriod": 0,
                                                                                         "limit": 16}]}}
    res = h.csms_call("r1", "RemoteStartTransaction", {"connectorId": 1, "idTag": "T", "chargingProfile": profile},
                      1.0)
    assert res[2] == {"status": "Rejected"}
    profile["chargingProfilePurpose"] = "TxProfile"
    res = h.csms_call("r2", "RemoteStartTransaction", {"connectorId": 1, "idTag": "T", "chargingProfile": profile},
                      2.0)
    assert res[2] == {"status": "Accepted"}
    assert ("remote_start", 1, "T", profile) in h.ctl.calls


# --- CSMS operations ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("connector", "expected_call"), [(0, True), (2, True), (3, False)])
def test_change_availability(connector: int, expected_call: bool) -> None:
    h = Harness()
    h.boot(now=0.0)
    h.ctl.availability_result = "Scheduled"
    res = h.csms_call("a", "ChangeAvailability", {"connectorId": connector, "type": "Inoperative"}, 1.0)
    assert res[2] == {"status": "Scheduled" if expected_call else "Rejected"}
    assert (("change_availability", connector, False) in h.ctl.calls) == expected_call


def test_reset_is_answered_then_left_to_the_controller() -> None:
    h = Harness()
    h.boot(now=0.0)
    res = h.csms_call("r", "Reset", {"type": "Hard"}, 1.0)
    assert res[2] == {"status": "Accepted"} and ("reset", "Hard") in h.ctl.calls


def test_unlock_connector_answer_can_come_later() -> None:
    h = Harness()
    h.boot(now=0.0)
    h.ctl.unlock_result = None
    h.incoming["u1"] = "UnlockConnector"
    h.s.receive(json.dumps([2, "u1", "UnlockConnector", {"connectorId": 1}]), 1.0)
    assert h.frames() == []
    h.ctl.unlock_replies[0]("Unlocked")
    assert h.frames() == [[3, "u1", {"status": "Unlocked"}]]


def test_unlock_unknown_connector_is_not_supported() -> None:
    h = Harness()
    h.boot(now=0.0)
    res = h.csms_call("u", "UnlockConnector", {"connectorId": 7}, 1.0)
    assert res[2] == {"status": "NotSupported"}
    assert ("unlock_connector", 7) not in h.ctl.calls


def test_data_transfer_registry() -> None:
    h = Harness()
    h.boot(now=0.0)
    h.s.data_transfer.register("com.example", lambda mid, data: ("Accepted", (data or "")[::-1]), ["Echo"])
    assert h.csms_call("d1", "DataTransfer", {"vendorId": "nobody"}, 1.0)[2] == {"status": "UnknownVendorId"}
    assert h.csms_call("d2", "DataTransfer", {"vendorId": "com.example", "messageId": "X"}, 1.0)[2] == {
        "status": "UnknownMessageId"}
    assert h.csms_call("d3", "DataTransfer", {"vendorId": "COM.EXAMPLE", "messageId": "echo", "data": "abc"},
                       1.0)[2] == {"status": "Accepted", "data": "cba"}


def test_data_transfer_to_the_csms() -> None:
    h = Harness()
    got: list[Any] = []
    h.s.send_data_transfer("com.example", "Ping", "x", 0.0, got.append)
    assert got == [None]  # not connected: not kept
    h.boot(now=0.0)
    h.s.send_data_transfer("com.example", "Ping", "x", 1.0, got.append)
    dt = h.one_call("DataTransfer")
    assert dt[3] == {"vendorId": "com.example", "messageId": "Ping", "data": "x"}
    h.reply(dt, {"status": "Accepted", "data": "pong"}, 1.1)
    assert got[-1] == {"status": "Accepted", "data": "pong"}


# --- meter data ---------------------------------------------------------------------------------------------------
def test_clock_aligned_values_are_stamped_on_the_boundary() -> None:
    h = Harness(ClockAlignedDataInterval=900, MeterValuesAlignedData=("Energy.Active.Import.Register",))
    h.boot(now=0.0)  # wall clock now BOOT_TIME = 12:00:00.000
    assert h.s.next_deadline(1.0) <= 900.0
    h.s.tick(900.02)
    mv = h.one_call("MeterValues")
    assert mv[3]["meterValue"][0]["timestamp"] == "2024-05-01T12:15:00.000Z"
    assert mv[3]["meterValue"][0]["sampledValue"][0]["context"] == "Sample.Clock"
    assert "transactionId" not in mv[3]  # no transaction: not transaction data


def test_clock_aligned_values_during_a_transaction_are_queued_with_the_transaction() -> None:
    h = Harness(ClockAlignedDataInterval=60, MeterValuesAlignedData=("Energy.Active.Import.Register",),
                MeterValueSampleInterval=0)
    h.boot(now=0.0)
    h.s.transaction_started(1, "CARD", 0.0, 1.0)
    h.answer_generic(h.one_call("StartTransaction"), 1.1)
    h.s.tick(60.0)
    sent = {mv[3]["connectorId"]: mv[3] for mv in drain(h, 60.1) if mv[2] == "MeterValues"}
    assert sent[1]["transactionId"] == 4242
    assert "transactionId" not in sent[2]  # connector 2 has no transaction


def test_stop_transaction_carries_begin_samples_and_end() -> None:
    h = Harness(MeterValueSampleInterval=10, MeterValuesSampledData=("Power.Active.Import",),
                StopTxnSampledData=("Energy.Active.Import.Register",))
    h.boot(now=0.0)
    h.s.transaction_started(1, "CARD", 1234.56, 0.0)
    h.answer_generic(h.one_call("StartTransaction"), 0.1)
    for t in (10.0, 20.0):
        h.s.tick(t)
        h.answer_generic(h.one_call("MeterValues"), t)
    h.s.transaction_stopped(1, 2000.0, 25.0, "Local", "CARD")
    stop = h.one_call("StopTransaction")
    data = stop[3]["transactionData"]
    contexts = [mv["sampledValue"][0]["context"] for mv in data]
    assert contexts == ["Transaction.Begin", "Sample.Periodic", "Sample.Periodic", "Transaction.End"]
    assert all(mv["sampledValue"][0]["measurand"] == "Energy.Active.Import.Register" for mv in data)


def test_no_transaction_data_when_stop_lists_are_empty() -> None:
    h = Harness(MeterValueSampleInterval=10)
    h.boot(now=0.0)
    h.s.transaction_started(1, "CARD", 0.0, 0.0)
    h.answer_generic(h.one_call("StartTransaction"), 0.1)
    h.s.transaction_stopped(1, 10.0, 5.0, "Local", None)
    assert "transactionData" not in h.one_call("StopTransaction")[3]


def test_transaction_data_is_thinned_to_the_maximum() -> None:
    h = Harness(MeterValueSampleInterval=1, MeterValuesSampledData=(),
                StopTxnSampledData=("Energy.Active.Import.Register",))
    h.boot(now=0.0)
    h.s.transaction_started(1, "CARD", 0.0, 0.0)
    h.answer_generic(h.one_call("StartTransaction"), 0.0)
    for t in range(1, 1200):
        h.s.tick(float(t))
    h.s.transaction_stopped(1, 10.0, 1200.5, "Local", None)
    data = drain(h, 1201.0)[-1][3]["transactionData"]
    assert len(data) <= 500
    assert data[0]["sampledValue"][0]["context"] == "Transaction.Begin"
    assert data[-1]["sampledValue"][0]["context"] == "Transaction.End"


def test_sample_interval_change_takes_effect_at_once() -> None:
    h = Harness(MeterValueSampleInterval=60)
    h.boot(now=0.0)
    h.s.transaction_started(1, "CARD", 0.0, 0.0)
    h.answer_generic(h.one_call("StartTransaction"), 0.0)
    res = h.csms_call("c", "ChangeConfiguration", {"key": "MeterValueSampleInterval", "value": "5"}, 1.0)
    assert res[2] == {"status": "Accepted"}
    h.s.config_changed("MeterValueSampleInterval", 5, 1.0)  # the daemon wires keys.on_change to this
    h.s.tick(6.0)
    assert h.one_call("MeterValues")


def test_secret_key_change_is_not_logged(caplog: pytest.LogCaptureFixture) -> None:
    h = Harness()
    h.boot(now=0.0)
    secret = "00112233445566778899aabbccddeeff"
    with caplog.at_level("DEBUG"):
        res = h.csms_call("k", "ChangeConfiguration", {"key": "AuthorizationKey", "value": secret}, 1.0)
    assert res[2] == {"status": "Accepted"}
    assert secret not in caplog.text
    got = h.csms_call("g", "GetConfiguration", {"key": ["AuthorizationKey"]}, 2.0)
    assert got[2]["configurationKey"] == [{"key": "AuthorizationKey", "readonly": False}]


# --- order of causally related frames ---------------------------------------------------------------------------
def test_status_after_a_stop_waits_for_the_stop_transaction() -> None:
    h = Harness()
    h.boot(now=0.0)
    h.s.transaction_started(1, "CARD", 0.0, 1.0)
    h.answer_generic(h.one_call("StartTransaction"), 1.1)
    h.s.status_changed(1, "SuspendedEVSE", "NoError", "", 2.0)
    sn = h.one_call("StatusNotification")  # the line is busy with it while the stop happens
    h.s.transaction_stopped(1, 10.0, 2.1, "Local", "CARD")
    h.s.status_changed(1, "Finishing", "NoError", "", 2.1)
    h.reply(sn, {}, 2.2)
    assert h.one_call()[2] == "StopTransaction"


def test_unlock_answer_follows_the_stop_transaction() -> None:
    h = Harness()
    h.boot(now=0.0)
    h.s.transaction_started(1, "CARD", 0.0, 1.0)
    h.answer_generic(h.one_call("StartTransaction"), 1.1)
    h.s.status_changed(1, "SuspendedEVSE", "NoError", "", 2.0)
    sn = h.one_call("StatusNotification")
    h.ctl.unlock_result = None
    h.incoming["u1"] = "UnlockConnector"
    h.s.receive(json.dumps([2, "u1", "UnlockConnector", {"connectorId": 1}]), 2.0)
    h.s.transaction_stopped(1, 10.0, 2.1, "UnlockCommand", None)
    h.ctl.unlock_replies[0]("Unlocked")
    assert h.frames() == []  # held: the StopTransaction has not gone out yet
    h.reply(sn, {}, 2.2)
    frames = h.frames()
    assert [f[0] for f in frames] == [2, 3] and frames[0][2] == "StopTransaction"
    assert frames[1] == [3, "u1", {"status": "Unlocked"}]
