"""OCPP-J 1.6 RPC framing: encode/decode round trips and every decode() error path."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from evsed.ocpp.rpc import (
    MAX_UNIQUE_ID_LENGTH,
    Call,
    CallError,
    CallResult,
    ErrorCode,
    Frame,
    MessageType,
    RpcError,
    decode,
    encode,
    new_unique_id,
)

FV = ErrorCode.FORMATION_VIOLATION
PE = ErrorCode.PROTOCOL_ERROR


def raises(text: str | bytes) -> RpcError:
    with pytest.raises(RpcError) as info:
        decode(text)
    return info.value


# --- ErrorCode / MessageType -------------------------------------------------------------------


def test_error_codes_are_the_ocpp_j_16_wire_spellings() -> None:
    # Errata §5.1/§5.2: the misspelled names stay on the wire in 1.6.
    assert {c.value for c in ErrorCode} == {
        "NotImplemented",
        "NotSupported",
        "InternalError",
        "ProtocolError",
        "SecurityError",
        "FormationViolation",
        "PropertyConstraintViolation",
        "OccurenceConstraintViolation",
        "TypeConstraintViolation",
        "GenericError",
    }
    assert ErrorCode.OCCURENCE_CONSTRAINT_VIOLATION.value == "OccurenceConstraintViolation"
    assert ErrorCode.FORMATION_VIOLATION.value == "FormationViolation"
    assert isinstance(ErrorCode.FORMATION_VIOLATION, str)
    assert str(ErrorCode.GENERIC_ERROR) == "GenericError"


def test_message_type_numbers() -> None:
    assert (MessageType.CALL, MessageType.CALLRESULT, MessageType.CALLERROR) == (2, 3, 4)


# --- encode ------------------------------------------------------------------------------------


def test_encode_call_is_compact_and_keeps_non_ascii() -> None:
    text = encode(Call("19223201", "DataTransfer", {"vendorId": "X", "data": "Grüße €"}))
    assert text == '[2,"19223201","DataTransfer",{"vendorId":"X","data":"Grüße €"}]'


def test_encode_call_result() -> None:
    frame = CallResult("1", {"status": "Accepted", "currentTime": "2013-02-01T20:53:32.486Z", "interval": 300})
    assert encode(frame) == '[3,"1",{"status":"Accepted","currentTime":"2013-02-01T20:53:32.486Z","interval":300}]'


def test_encode_call_error_uses_plain_code_string_and_defaults() -> None:
    assert encode(CallError("162376037", ErrorCode.NOT_SUPPORTED, "SendLocalList.req not implemented")) == (
        '[4,"162376037","NotSupported","SendLocalList.req not implemented",{}]'
    )
    assert encode(CallError("a", "GenericError")) == '[4,"a","GenericError","",{}]'


def test_encode_rejects_nan_and_infinity() -> None:
    with pytest.raises(ValueError):
        encode(CallResult("1", {"limit": float("nan")}))
    with pytest.raises(ValueError):
        encode(Call("1", "MeterValues", {"x": float("inf")}))


def test_encode_rejects_unserialisable_payload() -> None:
    with pytest.raises(TypeError):
        encode(Call("1", "Heartbeat", {"when": object()}))


def test_encode_rejects_overlong_call_id() -> None:
    with pytest.raises(ValueError):
        encode(Call("x" * (MAX_UNIQUE_ID_LENGTH + 1), "Heartbeat", {}))
    encode(Call("x" * MAX_UNIQUE_ID_LENGTH, "Heartbeat", {}))


def test_encode_rejects_non_frame() -> None:
    with pytest.raises(TypeError):
        encode([2, "1", "Heartbeat", {}])  # type: ignore[arg-type]


# --- round trips -------------------------------------------------------------------------------

ROUND_TRIP: list[Frame] = [
    Call("19223201", "BootNotification", {"chargePointVendor": "VendorX", "chargePointModel": "Single"}),
    Call(new_unique_id(), "Heartbeat", {}),
    Call("", "DataTransfer", {"vendorId": "ü", "data": '["nested", {"json": 1}]'}),
    Call(
        "mv",
        "MeterValues",
        {
            "connectorId": 1,
            "meterValue": [{"timestamp": "2024-01-01T00:00:00Z", "sampledValue": [{"value": "1.5", "unit": "kWh"}]}],
        },
    ),
    CallResult("19223201", {"status": "Accepted", "currentTime": "2013-02-01T20:53:32.486Z", "interval": 300}),
    CallResult("x", {}),
    CallResult("f", {"limit": 16.1, "big": 2**53 + 1, "neg": -0.5, "t": True, "n": None}),
    CallError("162376037", "NotSupported", "SendLocalList.req not implemented", {}),
    CallError("e", "FormatViolation", "peer uses the corrected 2.x spelling", {"errors": [{"path": "/a"}]}),
]


@pytest.mark.parametrize("frame", ROUND_TRIP, ids=lambda f: type(f).__name__)
def test_round_trip(frame: Frame) -> None:
    text = encode(frame)
    assert decode(text) == frame
    assert decode(text.encode("utf-8")) == frame
    assert encode(decode(text)) == text


def test_decode_spec_examples() -> None:
    call = decode(
        '[2,\n "19223201",\n "BootNotification",\n'
        ' {"chargePointVendor": "VendorX", "chargePointModel": "SingleSocketCharger"}\n]'
    )
    assert call == Call(
        "19223201",
        "BootNotification",
        {"chargePointVendor": "VendorX", "chargePointModel": "SingleSocketCharger"},
    )
    result = decode('[3, "19223201", {"status":"Accepted", "currentTime":"2013-02-01T20:53:32.486Z", "interval":300}]')
    assert isinstance(result, CallResult)
    assert result.payload["interval"] == 300
    error = decode('[4, "162376037", "NotSupported", "SendLocalList.req not implemented", {}]')
    assert error == CallError("162376037", "NotSupported", "SendLocalList.req not implemented", {})


@pytest.mark.parametrize("prefix", ["[2,", "[2.0,"])
def test_decode_accepts_integral_float_message_type(prefix: str) -> None:
    # JavaScript peers cannot tell 2 from 2.0.
    assert decode(prefix + '"a","Heartbeat",{}]') == Call("a", "Heartbeat", {})


def test_decode_null_payload_means_empty_object() -> None:
    # OCPP-J §4.2.1/§4.2.2: no payload may be written as null or {}.
    assert decode('[2,"a","Heartbeat",null]') == Call("a", "Heartbeat", {})
    assert decode('[3,"a",null]') == CallResult("a", {})


def test_decode_accepts_max_length_unique_id() -> None:
    uid = "u" * MAX_UNIQUE_ID_LENGTH
    assert decode(json.dumps([2, uid, "Heartbeat", {}])) == Call(uid, "Heartbeat", {})


def test_decode_lenient_call_error_without_description_or_details() -> None:
    assert decode('[4,"a","InternalError"]') == CallError("a", "InternalError", "", {})
    assert decode('[4,"a","InternalError","boom"]') == CallError("a", "InternalError", "boom", {})
    assert decode('[4,"a","InternalError","boom",null]') == CallError("a", "InternalError", "boom", {})


def test_decode_keeps_unknown_error_codes_verbatim() -> None:
    frame = decode('[4,"a","MessageTypeNotSupported","",{}]')
    assert isinstance(frame, CallError)
    assert frame.code == "MessageTypeNotSupported"


# --- decode errors: nothing recoverable --------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "",
        "not json",
        "[2,'a','Heartbeat',{}]",
        '[2,"a","Heartbeat",{}',
        '[2,"a","Heartbeat",{}] trailing',
        '[2,"a","Heartbeat",{"x":NaN}]',
        '[2,"a","Heartbeat",{"x":Infinity}]',
        '[2,"a","Heartbeat",{"x":-Infinity}]',
        '\ufeff[2,"a","Heartbeat",{}]',
    ],
)
def test_decode_invalid_json_is_formation_violation(text: str) -> None:
    err = raises(text)
    assert err.code is FV
    assert err.unique_id is None
    assert err.in_reply_to is None


def test_decode_invalid_utf8_is_formation_violation() -> None:
    err = raises(b'[2,"a","DataTransfer",{"vendorId":"\xff"}]')
    assert err.code is FV
    assert err.unique_id is None


def test_decode_absurd_nesting_is_formation_violation() -> None:
    assert raises("[" * 200_000 + "]" * 200_000).code is FV


def test_decode_huge_integer_literal_is_formation_violation() -> None:
    assert raises('[2,"a","X",{"n":' + "9" * 10_000 + "}]").code is FV


@pytest.mark.parametrize("text", ['{"a":1}', '"[2]"', "2", "null", "true"])
def test_decode_non_array_is_formation_violation(text: str) -> None:
    err = raises(text)
    assert err.code is FV
    assert err.unique_id is None


def test_decode_empty_array_is_protocol_error() -> None:
    err = raises("[]")
    assert err.code is PE
    assert err.unique_id is None


@pytest.mark.parametrize("type_id", ['"2"', "true", "false", "null", "2.5", "[2]", "{}"])
def test_decode_non_integer_message_type_is_formation_violation(type_id: str) -> None:
    err = raises(f'[{type_id},"abc","Heartbeat",{{}}]')
    assert err.code is FV
    assert err.unique_id is None


@pytest.mark.parametrize("type_id", [0, 1, 5, 6, -2, 99])
def test_decode_unknown_message_type_is_ignored_not_answered(type_id: int) -> None:
    # OCPP-J §4.1.3: "SHALL ignore the message payload" -> no id to answer.
    err = raises(f'[{type_id},"abc","Heartbeat",{{}}]')
    assert err.code is FV
    assert err.unique_id is None
    assert err.in_reply_to is None
    assert str(type_id) in err.description


# --- decode errors: CALL (answerable) ----------------------------------------------------------


@pytest.mark.parametrize("uid", ["123", "null", "true", "{}", '["a"]'])
def test_decode_call_non_string_unique_id(uid: str) -> None:
    err = raises(f'[2,{uid},"Heartbeat",{{}}]')
    assert err.code is FV
    assert err.unique_id is None


def test_decode_call_without_unique_id_is_protocol_error() -> None:
    err = raises("[2]")
    assert err.code is PE
    assert err.unique_id is None


def test_decode_call_overlong_unique_id_is_property_violation_and_echoed() -> None:
    uid = "x" * (MAX_UNIQUE_ID_LENGTH + 1)
    err = raises(json.dumps([2, uid, "Heartbeat", {}]))
    assert err.code is ErrorCode.PROPERTY_CONSTRAINT_VIOLATION
    assert err.unique_id == uid


@pytest.mark.parametrize("text", ['[2,"abc"]', '[2,"abc","Heartbeat"]'])
def test_decode_incomplete_call_is_protocol_error(text: str) -> None:
    err = raises(text)
    assert err.code is PE
    assert err.unique_id == "abc"
    assert err.in_reply_to is None


def test_decode_call_with_extra_element_is_formation_violation() -> None:
    err = raises('[2,"abc","Heartbeat",{},{}]')
    assert err.code is FV
    assert err.unique_id == "abc"


@pytest.mark.parametrize("action", ["1", "null", "{}", '["Heartbeat"]'])
def test_decode_call_non_string_action(action: str) -> None:
    err = raises(f'[2,"abc",{action},{{}}]')
    assert err.code is FV
    assert err.unique_id == "abc"


@pytest.mark.parametrize("payload", ["[]", '"x"', "1", "true"])
def test_decode_call_non_object_payload(payload: str) -> None:
    err = raises(f'[2,"abc","Heartbeat",{payload}]')
    assert err.code is FV
    assert err.unique_id == "abc"
    assert "Heartbeat" in err.description


def test_call_error_answer_for_broken_call() -> None:
    err = raises('[2,"abc","Heartbeat",[]]')
    reply = err.to_call_error()
    assert reply == CallError("abc", "FormationViolation", err.description, {})
    assert json.loads(encode(reply))[:3] == [4, "abc", "FormationViolation"]


# --- decode errors: CALLRESULT / CALLERROR (never answered) ------------------------------------


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ('[3,"abc"]', PE),
        ('[3,"abc",{},{}]', FV),
        ('[3,"abc",[]]', FV),
        ('[3,"abc","ok"]', FV),
        ('[4,"abc"]', PE),
        ('[4,"abc",1,"",{}]', FV),
        ('[4,"abc","GenericError",null,{}]', FV),
        ('[4,"abc","GenericError","",[]]', FV),
        ('[4,"abc","GenericError","",{},{}]', FV),
    ],
)
def test_decode_broken_response_reports_in_reply_to(text: str, code: ErrorCode) -> None:
    err = raises(text)
    assert err.code is code
    assert err.unique_id is None  # never answer a response with a CALLERROR
    assert err.in_reply_to == "abc"


@pytest.mark.parametrize("text", ["[3]", "[4]", "[3,7,{}]", '[4,null,"GenericError","",{}]'])
def test_decode_response_without_usable_id(text: str) -> None:
    err = raises(text)
    assert err.code in (FV, PE)
    assert err.unique_id is None
    assert err.in_reply_to is None


# --- RpcError ----------------------------------------------------------------------------------


def test_rpc_error_attributes_and_defaults() -> None:
    err = RpcError(ErrorCode.NOT_IMPLEMENTED)
    assert (err.code, err.description, err.unique_id, err.details, err.in_reply_to) == (
        ErrorCode.NOT_IMPLEMENTED,
        "",
        None,
        {},
        None,
    )
    assert str(err) == "NotImplemented"
    other = RpcError(ErrorCode.NOT_IMPLEMENTED)
    err.details["x"] = 1
    assert other.details == {}  # no shared mutable default


def test_rpc_error_full() -> None:
    err = RpcError(ErrorCode.SECURITY_ERROR, "not accepted yet", "u1", {"k": "v"})
    assert isinstance(err, Exception)
    assert str(err) == "SecurityError: not accepted yet"
    assert err.to_call_error() == CallError("u1", "SecurityError", "not accepted yet", {"k": "v"})
    assert err.to_call_error("u2").unique_id == "u2"
    assert "SecurityError" in repr(err)


def test_rpc_error_without_id_cannot_be_answered() -> None:
    with pytest.raises(ValueError):
        RpcError(ErrorCode.GENERIC_ERROR).to_call_error()


def test_rpc_error_can_be_raised_by_handlers() -> None:
    def handler(_: dict[str, Any]) -> None:
        raise RpcError(ErrorCode.NOT_SUPPORTED, "no local list")

    with pytest.raises(RpcError) as info:
        handler({})
    assert info.value.code is ErrorCode.NOT_SUPPORTED


# --- new_unique_id -----------------------------------------------------------------------------


def test_new_unique_id() -> None:
    ids = {new_unique_id() for _ in range(1000)}
    assert len(ids) == 1000
    for uid in list(ids)[:20]:
        assert len(uid) == 36 <= MAX_UNIQUE_ID_LENGTH
        assert uuid.UUID(uid).version == 4
