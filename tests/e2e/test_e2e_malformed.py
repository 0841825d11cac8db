"""Malformed and unsupported frames from the CSMS: answered with a CALLERROR, the daemon keeps working."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from daemon_harness import CP_ID, Daemon
from ocpp_helpers import no_strict_errors, start_daemon, start_local_session, status_is
from strict_csms import CSMSError, StrictCSMS

MakeConfig = Callable[..., Path]
Factory = Callable[[Path], Daemon]

# OCPP-J 1.6 section 4.2.3 (the spec spells them FormationViolation and OccurenceConstraintViolation;
# the errata's FormatViolation / OccurrenceConstraintViolation are accepted as well)
FORMAT = {"FormationViolation", "FormatViolation", "ProtocolError"}
OCCURRENCE = {"OccurenceConstraintViolation", "OccurrenceConstraintViolation", "ProtocolError"}
TYPE = {"TypeConstraintViolation"}
VALUE = {
    "PropertyConstraintViolation",
    "TypeConstraintViolation",
    "FormationViolation",
    "FormatViolation",
    "OccurenceConstraintViolation",
    "OccurrenceConstraintViolation",
}

CASES = [
    # (name, raw frame, expected message id or None if it cannot be known, allowed error codes)
    ("not-json", "this is {not json", None, FORMAT),
    ("not-an-array", json.dumps({"messageTypeId": 2, "id": "obj-1"}), None, FORMAT),
    ("call-too-short", json.dumps([2, "short-1"]), "short-1", FORMAT),
    ("action-not-a-string", json.dumps([2, "act-1", 42, {}]), "act-1", FORMAT),
    (
        "payload-not-an-object",
        json.dumps([2, "pl-1", "RemoteStopTransaction", [1, 2]]),
        "pl-1",
        FORMAT | TYPE,
    ),
    ("unknown-action", json.dumps([2, "foo-1", "FooBar", {}]), "foo-1", {"NotImplemented"}),
    (
        "missing-idTag",
        json.dumps([2, "rst-1", "RemoteStartTransaction", {"connectorId": 1}]),
        "rst-1",
        OCCURRENCE,
    ),
    (
        "wrong-type",
        json.dumps([2, "rst-2", "RemoteStartTransaction", {"connectorId": "one", "idTag": "X1"}]),
        "rst-2",
        TYPE,
    ),
    (
        "idTag-too-long",
        json.dumps([2, "rst-3", "RemoteStartTransaction", {"idTag": "X" * 21}]),
        "rst-3",
        VALUE,
    ),
    (
        "bad-enum",
        json.dumps([2, "ca-1", "ChangeAvailability", {"connectorId": 1, "type": "Sometimes"}]),
        "ca-1",
        VALUE,
    ),
]


@pytest.fixture
async def idle_daemon(strict_csms: StrictCSMS, make_config: MakeConfig, daemon_factory: Factory) -> Daemon:
    return await start_daemon(strict_csms, make_config, daemon_factory, connectors=1)


@pytest.mark.parametrize(("name", "frame", "msg_id", "codes"), CASES, ids=[c[0] for c in CASES])
async def test_malformed_frame_gets_callerror(
    strict_csms: StrictCSMS, idle_daemon: Daemon, name: str, frame: str, msg_id: str | None, codes: set[str]
) -> None:
    csms = strict_csms
    em = csms.event_mark()
    mark = csms.mark()
    answer = await csms.raw(CP_ID, frame, timeout=5)
    if msg_id is None and answer is None:
        # No usable UniqueId: OCPP-J 1.6 §4.2.3 defines CALLERROR only as the answer to a CALL,
        # which a frame without an id cannot be matched to; ignoring it (and logging) is allowed.
        pass
    else:
        assert answer is not None, f"{name}: no answer to {frame!r}"
        resp = json.loads(answer)
        assert isinstance(resp, list) and resp[0] == 4, f"{name}: expected a CALLERROR, got {answer}"
        assert len(resp) == 5 and isinstance(resp[3], str) and isinstance(resp[4], dict), answer
        if msg_id is not None:
            assert resp[1] == msg_id, f"{name}: CALLERROR id {resp[1]!r}, expected {msg_id!r}"
        assert resp[2] in codes, f"{name}: error code {resp[2]!r}, expected one of {sorted(codes)}"

    # still connected and working; the bad request had no effect
    assert not [e for e in csms.events[em:] if e["event"] == "disconnected"], "connection dropped"
    res = await csms.call(CP_ID, "RemoteStopTransaction", {"transactionId": 31337})
    assert res == {"status": "Rejected"}
    assert csms.calls_of("StartTransaction", mark) == []
    assert not [c for c in csms.calls_of("StatusNotification", mark) if c["payload"]["status"] != "Available"]
    st = await idle_daemon.status()
    assert st["ocpp"]["connected"] is True and st["connectors"][0]["status"] == "Available"
    assert strict_csms.strict_errors == [], no_strict_errors(strict_csms)


async def test_all_malformed_frames_in_a_row_then_a_session(strict_csms: StrictCSMS, idle_daemon: Daemon) -> None:
    csms = strict_csms
    em = csms.event_mark()
    for _name, frame, msg_id, _codes in CASES:
        answer = await csms.raw(CP_ID, frame, timeout=5 if msg_id else 1.5)
        if msg_id is not None:
            assert answer is not None and json.loads(answer)[:2] == [4, msg_id], (frame, answer)
    # a CALLRESULT / CALLERROR for an id the daemon never used: ignored, no answer
    assert await csms.raw(CP_ID, json.dumps([3, "never-sent-1", {}]), timeout=1.5) is None
    assert await csms.raw(CP_ID, json.dumps([4, "never-sent-2", "GenericError", "", {}]), timeout=1.5) is None
    assert not [e for e in csms.events[em:] if e["event"] == "disconnected"], "connection dropped"
    tx, _ = await start_local_session(idle_daemon, csms, 1, "AFTERBAD")
    assert tx >= 1
    assert strict_csms.strict_errors == [], no_strict_errors(strict_csms)


@pytest.mark.parametrize(
    ("action", "payload"),
    [
        ("GetDiagnostics", {"location": "ftp://diag.example/upload"}),
        ("UpdateFirmware", {"location": "https://fw.example/fw.bin", "retrieveDate": "2030-01-01T00:00:00Z"}),
        (
            "ReserveNow",
            {"connectorId": 1, "expiryDate": "2030-01-01T00:00:00Z", "idTag": "R1", "reservationId": 1},
        ),
    ],
)
async def test_unsupported_action_not_supported(
    strict_csms: StrictCSMS, idle_daemon: Daemon, action: str, payload: dict[str, object]
) -> None:
    """Actions of feature profiles the charger does not implement (SupportedFeatureProfiles = Core)."""
    csms = strict_csms
    with pytest.raises(CSMSError) as ei:
        await csms.call(CP_ID, action, payload)
    assert ei.value.code in ("NotSupported", "NotImplemented"), ei.value
    mark = csms.mark()
    res = await csms.call(CP_ID, "RemoteStartTransaction", {"connectorId": 1, "idTag": "STILLOK"})
    assert res == {"status": "Accepted"}
    await csms.wait_call("StatusNotification", status_is(1, "Preparing"), since=mark)
    assert strict_csms.strict_errors == [], no_strict_errors(strict_csms)
