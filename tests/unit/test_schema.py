"""Schema validator: every bundled schema compiles, known-good samples pass, each failure maps
to the OCPP-J 1.6 §4.2.3 error code and names the JSON path of the failing field."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from evsed.ocpp import schema as schema_mod
from evsed.ocpp.rpc import ErrorCode, RpcError
from evsed.ocpp.schema import Validator, is_date_time, is_uri

SCHEMA_DIR = Path(schema_mod.__file__).parent / "schemas" / "v16"
SCHEMA_FILES = sorted(p.stem for p in SCHEMA_DIR.glob("*.json"))

TYPE = ErrorCode.TYPE_CONSTRAINT_VIOLATION
PROP = ErrorCode.PROPERTY_CONSTRAINT_VIOLATION
OCC = ErrorCode.OCCURENCE_CONSTRAINT_VIOLATION
FORM = ErrorCode.FORMATION_VIOLATION

TS = "2024-05-01T12:00:00.123Z"


@pytest.fixture(scope="module")
def v() -> Validator:
    return Validator()


def fails(v: Validator, action: str, payload: Any, *, response: bool = False) -> RpcError:
    validate = v.validate_response if response else v.validate_request
    with pytest.raises(RpcError) as info:
        validate(action, payload)
    err = info.value
    assert isinstance(err.code, ErrorCode)
    assert err.unique_id is None  # the caller fills in the id of the CALL it answers
    return err


# --- loading -----------------------------------------------------------------------------------


def test_all_78_schema_files_are_present() -> None:
    assert len(SCHEMA_FILES) == 78
    requests = [n for n in SCHEMA_FILES if not n.endswith("Response")]
    assert len(requests) == 39
    for name in requests:
        assert f"{name}Response" in SCHEMA_FILES


@pytest.mark.parametrize("name", SCHEMA_FILES)
def test_every_schema_compiles(name: str) -> None:
    check = schema_mod._compiled("v16", name)
    assert callable(check)


def test_compile_all_and_actions(v: Validator) -> None:
    v.compile_all()
    assert v.version == "v16"
    assert v.actions == {n for n in SCHEMA_FILES if not n.endswith("Response")}


@pytest.mark.parametrize("action", ["BootNotification", "Heartbeat", "SignedUpdateFirmware", "GetLog"])
def test_knows_actions(v: Validator, action: str) -> None:
    assert v.knows(action)


@pytest.mark.parametrize(
    "action",
    ["BootNotificationResponse", "bootnotification", "", "../v16/Heartbeat", "Heartbeat.json", "Foo"],
)
def test_does_not_know_other_names(v: Validator, action: str) -> None:
    assert not v.knows(action)


def test_unknown_action_is_not_implemented(v: Validator) -> None:
    assert fails(v, "FooBar", {}).code is ErrorCode.NOT_IMPLEMENTED
    assert fails(v, "HeartbeatResponse", {}).code is ErrorCode.NOT_IMPLEMENTED
    assert fails(v, "FooBar", {}, response=True).code is ErrorCode.NOT_IMPLEMENTED


@pytest.mark.parametrize("version", ["v99", "../v16", "", "v16/"])
def test_bad_version(version: str) -> None:
    with pytest.raises(ValueError):
        Validator(version)


# --- known-good samples ------------------------------------------------------------------------

SAMPLED_VALUES = [
    {
        "value": "1234.5",
        "context": "Sample.Periodic",
        "format": "Raw",
        "measurand": "Energy.Active.Import.Register",
        "location": "Outlet",
        "unit": "Wh",
    },
    {"value": "16.0", "measurand": "Current.Import", "phase": "L1", "unit": "A", "location": "Outlet"},
    {"value": "230.1", "measurand": "Voltage", "phase": "L1-N", "unit": "V"},
    {"value": "41.5", "measurand": "Temperature", "location": "Body", "unit": "Celsius"},  # errata §2.1
    {"value": "41.5", "measurand": "Temperature", "location": "Body", "unit": "Celcius"},
    {"value": "80", "measurand": "SoC", "location": "EV", "unit": "Percent", "context": "Transaction.End"},
    {"value": "ABCDEF0123", "format": "SignedData", "context": "Transaction.Begin"},
]

METER_VALUES: dict[str, Any] = {
    "connectorId": 1,
    "transactionId": 42,
    "meterValue": [
        {"timestamp": TS, "sampledValue": SAMPLED_VALUES},
        {"timestamp": "2024-05-01T12:01:00+02:00", "sampledValue": [{"value": "1"}]},
    ],
}

CHARGING_PROFILE: dict[str, Any] = {
    "chargingProfileId": 1,
    "transactionId": 42,
    "stackLevel": 0,
    "chargingProfilePurpose": "TxProfile",
    "chargingProfileKind": "Absolute",
    "validFrom": TS,
    "validTo": "2024-05-02T12:00:00Z",
    "chargingSchedule": {
        "duration": 3600,
        "startSchedule": TS,
        "chargingRateUnit": "A",
        "chargingSchedulePeriod": [
            {"startPeriod": 0, "limit": 16.0, "numberPhases": 3},
            {"startPeriod": 1800, "limit": 10.1},
            {"startPeriod": 2700, "limit": 6},
        ],
        "minChargingRate": 6.1,
    },
}

GOOD_REQUESTS: list[tuple[str, dict[str, Any]]] = [
    ("BootNotification", {"chargePointVendor": "VendorX", "chargePointModel": "SingleSocketCharger"}),
    (
        "BootNotification",
        {
            "chargePointVendor": "VendorX",
            "chargePointModel": "SingleSocketCharger",
            "chargePointSerialNumber": "SN-0001",
            "chargeBoxSerialNumber": "CB-0001",
            "firmwareVersion": "0.1.0",
            "iccid": "89310410106543789301",
            "imsi": "262011234567890",
            "meterType": "Eastron SDM630",
            "meterSerialNumber": "M-0001",
        },
    ),
    ("Authorize", {"idTag": "ABCDEF0123456789ABCD"}),
    ("StartTransaction", {"connectorId": 1, "idTag": "ABC123", "meterStart": 0, "timestamp": TS}),
    (
        "StartTransaction",
        {"connectorId": 2, "idTag": "ABC123", "meterStart": 12, "timestamp": TS, "reservationId": 7},
    ),
    ("StopTransaction", {"transactionId": 42, "meterStop": 1500, "timestamp": TS}),  # errata §2.5: no reason
    (
        "StopTransaction",
        {
            "transactionId": 42,
            "idTag": "ABC123",
            "meterStop": 1500,
            "timestamp": TS,
            "reason": "EVDisconnected",
            "transactionData": [
                {"timestamp": TS, "sampledValue": SAMPLED_VALUES},
                {
                    "timestamp": TS,
                    "sampledValue": [{"value": "1500", "context": "Transaction.End", "unit": "Wh"}],
                },
            ],
        },
    ),
    ("MeterValues", METER_VALUES),
    ("MeterValues", {"connectorId": 0, "meterValue": [{"timestamp": TS, "sampledValue": [{"value": "0"}]}]}),
    ("StatusNotification", {"connectorId": 1, "errorCode": "NoError", "status": "Available"}),
    (
        "StatusNotification",
        {
            "connectorId": 1,
            "errorCode": "OtherError",
            "status": "Faulted",
            "timestamp": TS,
            "info": "RCD tripped",
            "vendorId": "org.evsed",
            "vendorErrorCode": "E42",
        },
    ),
    ("Heartbeat", {}),
    ("RemoteStartTransaction", {"idTag": "ABC123"}),
    ("RemoteStartTransaction", {"connectorId": 1, "idTag": "ABC123", "chargingProfile": CHARGING_PROFILE}),
    ("SetChargingProfile", {"connectorId": 1, "csChargingProfiles": CHARGING_PROFILE}),
    ("RemoteStopTransaction", {"transactionId": 42}),
    (
        "GetDiagnostics",
        {"location": "ftp://user:pass@diag.example.com/upload/", "retries": 3, "startTime": TS},
    ),
    (
        "UpdateFirmware",
        {"location": "https://fw.example.com/evsed-1.2.bin", "retrieveDate": TS, "retries": 2},
    ),
    ("DataTransfer", {"vendorId": "org.evsed", "messageId": "x", "data": "{}"}),
    ("GetConfiguration", {"key": ["HeartbeatInterval", "MeterValueSampleInterval"]}),
    ("ChangeConfiguration", {"key": "HeartbeatInterval", "value": "300"}),
    ("TriggerMessage", {"requestedMessage": "StatusNotification", "connectorId": 1}),
    (
        "SendLocalList",
        {
            "listVersion": 2,
            "updateType": "Full",
            "localAuthorizationList": [
                {"idTag": "A", "idTagInfo": {"status": "Accepted", "expiryDate": TS, "parentIdTag": "P"}}
            ],
        },
    ),
    (
        "GetLog",
        {
            "logType": "SecurityLog",
            "requestId": 1,
            "log": {"remoteLocation": "https://x.example/", "oldestTimestamp": TS},
        },
    ),
    (
        "DeleteCertificate",
        {
            "certificateHashData": {
                "hashAlgorithm": "SHA256",
                "issuerNameHash": "a" * 64,
                "issuerKeyHash": "b" * 64,
                "serialNumber": "01",
            }
        },
    ),
]

GOOD_RESPONSES: list[tuple[str, dict[str, Any]]] = [
    ("BootNotification", {"status": "Accepted", "currentTime": "2013-02-01T20:53:32.486Z", "interval": 300}),
    ("BootNotification", {"status": "Pending", "currentTime": TS, "interval": 300.0}),
    ("Authorize", {"idTagInfo": {"status": "Accepted"}}),
    ("Authorize", {"idTagInfo": {"status": "Blocked", "expiryDate": TS, "parentIdTag": "PARENT"}}),
    ("StartTransaction", {"idTagInfo": {"status": "Accepted"}, "transactionId": 42}),
    ("StopTransaction", {}),
    ("StopTransaction", {"idTagInfo": {"status": "Expired"}}),
    ("MeterValues", {}),
    ("StatusNotification", {}),
    ("Heartbeat", {"currentTime": TS}),
    ("RemoteStartTransaction", {"status": "Accepted"}),
    ("RemoteStartTransaction", {"status": "Rejected"}),
    (
        "GetConfiguration",
        {"configurationKey": [{"key": "HeartbeatInterval", "readonly": False, "value": "300"}]},
    ),
    ("GetConfiguration", {"unknownKey": ["Foo"]}),
    (
        "GetCompositeSchedule",
        {
            "status": "Accepted",
            "connectorId": 1,
            "scheduleStart": TS,
            "chargingSchedule": CHARGING_PROFILE["chargingSchedule"],
        },
    ),
    ("DataTransfer", {"status": "UnknownVendorId"}),
    (
        "GetInstalledCertificateIds",
        {
            "status": "Accepted",
            "certificateHashData": [
                {"hashAlgorithm": "SHA512", "issuerNameHash": "x", "issuerKeyHash": "y", "serialNumber": "z"}
            ],
        },
    ),
    ("GetInstalledCertificateIds", {"status": "NotFound"}),
]


@pytest.mark.parametrize(("action", "payload"), GOOD_REQUESTS, ids=[a for a, _ in GOOD_REQUESTS])
def test_good_request(v: Validator, action: str, payload: dict[str, Any]) -> None:
    v.validate_request(action, payload)
    # Validation must not touch the payload.
    assert payload == json.loads(json.dumps(payload))


@pytest.mark.parametrize(("action", "payload"), GOOD_RESPONSES, ids=[a for a, _ in GOOD_RESPONSES])
def test_good_response(v: Validator, action: str, payload: dict[str, Any]) -> None:
    v.validate_response(action, payload)


def test_request_and_response_schemas_are_not_mixed_up(v: Validator) -> None:
    fails(v, "Heartbeat", {"currentTime": TS})
    fails(v, "Heartbeat", {}, response=True)


# --- payload not an object ---------------------------------------------------------------------


@pytest.mark.parametrize("payload", [None, [], "x", 1, True])
def test_payload_not_an_object_is_formation_violation(v: Validator, payload: Any) -> None:
    assert fails(v, "Heartbeat", payload).code is FORM
    assert fails(v, "Heartbeat", payload, response=True).code is FORM


# --- type ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [True, False])
def test_bool_is_not_an_integer(v: Validator, value: bool) -> None:
    err = fails(v, "StatusNotification", {"connectorId": value, "errorCode": "NoError", "status": "Available"})
    assert err.code is TYPE
    assert err.description.startswith("connectorId: expected integer, got boolean")
    assert err.details == {"path": "connectorId", "keyword": "type"}


def test_bool_is_not_a_number(v: Validator) -> None:
    payload = copy.deepcopy(GOOD_REQUESTS[13][1])
    payload["chargingProfile"]["chargingSchedule"]["chargingSchedulePeriod"][1]["limit"] = True
    err = fails(v, "RemoteStartTransaction", payload)
    assert err.code is TYPE
    assert err.details["path"] == "chargingProfile.chargingSchedule.chargingSchedulePeriod[1].limit"


@pytest.mark.parametrize("value", [1.5, 0.1, -3.25, float("inf"), float("nan")])
def test_fractional_or_non_finite_integer_is_type_violation(v: Validator, value: float) -> None:
    err = fails(v, "StartTransaction", {"connectorId": 1, "idTag": "A", "meterStart": value, "timestamp": TS})
    assert err.code is TYPE
    assert err.details["path"] == "meterStart"


@pytest.mark.parametrize("value", [3.0, -0.0, 1e3, 0])
def test_integral_float_is_an_integer(v: Validator, value: float) -> None:
    # ajv sees JSON 3.0 as the JavaScript number 3.
    v.validate_request("StartTransaction", {"connectorId": 1, "idTag": "A", "meterStart": value, "timestamp": TS})


def test_non_finite_number_is_type_violation(v: Validator) -> None:
    payload = copy.deepcopy(GOOD_REQUESTS[13][1])
    payload["chargingProfile"]["chargingSchedule"]["minChargingRate"] = float("inf")
    assert fails(v, "RemoteStartTransaction", payload).code is TYPE


@pytest.mark.parametrize(
    ("payload", "path"),
    [
        ({"idTag": 123}, "idTag"),
        ({"idTag": None}, "idTag"),
        ({"idTag": ["A"]}, "idTag"),
    ],
)
def test_wrong_type_string(v: Validator, payload: dict[str, Any], path: str) -> None:
    err = fails(v, "Authorize", payload)
    assert err.code is TYPE
    assert err.details["path"] == path


def test_wrong_type_array_and_object(v: Validator) -> None:
    err = fails(v, "MeterValues", {"connectorId": 1, "meterValue": {"timestamp": TS}})
    assert (err.code, err.details["path"]) == (TYPE, "meterValue")
    assert "expected array, got object" in err.description
    err = fails(v, "MeterValues", {"connectorId": 1, "meterValue": ["x"]})
    assert (err.code, err.details["path"]) == (TYPE, "meterValue[0]")
    err = fails(v, "GetConfiguration", {"configurationKey": [{"key": "K", "readonly": "false"}]}, response=True)
    assert (err.code, err.details["path"]) == (TYPE, "configurationKey[0].readonly")


# --- property constraints ----------------------------------------------------------------------


def test_bad_enum_names_nested_path(v: Validator) -> None:
    payload = copy.deepcopy(METER_VALUES)
    payload["meterValue"][0]["sampledValue"][1]["unit"] = "Foo"
    err = fails(v, "MeterValues", payload)
    assert err.code is PROP
    assert err.description.startswith("meterValue[0].sampledValue[1].unit: 'Foo' is not one of ['Wh', 'kWh',")
    assert err.details == {"path": "meterValue[0].sampledValue[1].unit", "keyword": "enum"}


@pytest.mark.parametrize("status", ["accepted", "ACCEPTED", "Accepted ", ""])
def test_enum_is_case_sensitive_and_exact(v: Validator, status: str) -> None:
    err = fails(v, "RemoteStartTransaction", {"status": status}, response=True)
    assert (err.code, err.details["path"]) == (PROP, "status")


def test_enum_in_ref_definition(v: Validator) -> None:
    err = fails(v, "GetLog", {"logType": "KernelLog", "requestId": 1, "log": {"remoteLocation": "x"}})
    assert (err.code, err.details["path"]) == (PROP, "logType")


def test_too_long_string(v: Validator) -> None:
    v.validate_request("Authorize", {"idTag": "A" * 20})
    err = fails(v, "Authorize", {"idTag": "A" * 21})
    assert err.code is PROP
    assert err.details == {"path": "idTag", "keyword": "maxLength"}
    assert "21" in err.description and "20" in err.description


def test_max_length_counts_code_points(v: Validator) -> None:
    v.validate_request("Authorize", {"idTag": "é" * 20})
    v.validate_request("Authorize", {"idTag": "😀" * 20})  # astral: 2 UTF-16 units, 1 code point
    assert fails(v, "Authorize", {"idTag": "😀" * 21}).code is PROP


def test_too_long_nested_string(v: Validator) -> None:
    err = fails(v, "Authorize", {"idTagInfo": {"status": "Accepted", "parentIdTag": "P" * 21}}, response=True)
    assert (err.code, err.details["path"]) == (PROP, "idTagInfo.parentIdTag")


@pytest.mark.parametrize(
    "ts",
    [
        "2024-05-01T12:00:00",  # no time zone: ajv-formats full mode rejects
        "2024-05-01",
        "12:00:00Z",
        "2024-05-01T12:00Z",
        "2024-05-01T12:00:00.Z",
        "2024-5-01T12:00:00Z",
        "2024-02-30T12:00:00Z",
        "2023-02-29T12:00:00Z",
        "2024-13-01T12:00:00Z",
        "2024-00-01T12:00:00Z",
        "2024-05-00T12:00:00Z",
        "2024-05-01T24:00:00Z",
        "2024-05-01T12:60:00Z",
        "2024-05-01T12:00:60Z",  # leap second only at 23:59 UTC
        "2024-05-01T12:00:00+24:00",
        "2024-05-01T12:00:00+02:60",
        "2024-05-01T12:00:00 Z",
        "2024-05-01TT12:00:00Z",
        "2024-05-01T12:00:00Z\n",
        " 2024-05-01T12:00:00Z",
        "2024-05-01_12:00:00Z",
        "\uff12\uff10\uff12\uff14-05-01T12:00:00Z",  # full-width digits
        "1714564800",
        "",
    ],
)
def test_bad_date_time(v: Validator, ts: str) -> None:
    assert not is_date_time(ts)
    err = fails(v, "Heartbeat", {"currentTime": ts}, response=True)
    assert err.code is PROP
    assert err.details == {"path": "currentTime", "keyword": "format"}


@pytest.mark.parametrize(
    "ts",
    [
        "2024-05-01T12:00:00Z",
        "2024-05-01t12:00:00z",
        "2024-05-01 12:00:00Z",
        "2024-05-01\t12:00:00Z",
        "2024-05-01T12:00:00.1Z",
        "2024-05-01T12:00:00.123456789+00:00",
        "2024-05-01T12:00:00-05:30",
        "2024-05-01T12:00:00+0530",
        "2024-05-01T12:00:00+05",
        "2024-02-29T00:00:00Z",
        "2000-02-29T00:00:00Z",
        "2016-12-31T23:59:60Z",
        "2016-12-31T23:59:60.5Z",
        "2016-12-31T15:59:60-08:00",
        "0000-01-01T00:00:00Z",
    ],
)
def test_good_date_time(v: Validator, ts: str) -> None:
    assert is_date_time(ts)
    v.validate_response("Heartbeat", {"currentTime": ts})


def test_date_time_from_python_isoformat() -> None:
    from datetime import UTC, datetime

    assert is_date_time(datetime(2024, 5, 1, 12, tzinfo=UTC).isoformat())
    assert is_date_time(datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=UTC).isoformat())
    assert not is_date_time(datetime(2024, 5, 1, 12).isoformat())  # naive: rejected


@pytest.mark.parametrize("location", ["diag.example.com/upload", "not a uri", "http://exa mple.com/", "", "/path/only"])
def test_bad_uri(v: Validator, location: str) -> None:
    assert not is_uri(location)
    err = fails(v, "GetDiagnostics", {"location": location})
    assert (err.code, err.details["path"]) == (PROP, "location")


@pytest.mark.parametrize(
    "location",
    [
        "https://fw.example.com/a/b.bin?x=1&y=%20#frag",
        "ftp://u:p@[2001:db8::1]:21/x",
        "sftp://10.0.0.1/firmware",
        "urn:isbn:0451450523",
        "HTTP://EXAMPLE.COM",
    ],
)
def test_good_uri(v: Validator, location: str) -> None:
    assert is_uri(location)
    v.validate_request("UpdateFirmware", {"location": location, "retrieveDate": TS})


@pytest.mark.parametrize("limit", [16, 16.0, 10.1, 1.1, 0.3, 32.2, 0.7, 0, -6.1, 1e20, 1234567.8])
def test_multiple_of_decimal_exact(v: Validator, limit: float) -> None:
    # Binary floats: 1.1 / 0.1 == 11.000000000000002, still a multiple for the JSON text "1.1".
    payload = copy.deepcopy(GOOD_REQUESTS[13][1])
    payload["chargingProfile"]["chargingSchedule"]["chargingSchedulePeriod"][0]["limit"] = limit
    v.validate_request("RemoteStartTransaction", payload)


@pytest.mark.parametrize("limit", [16.05, 0.01, 10.11, 1e-7, 123.456])
def test_not_multiple_of(v: Validator, limit: float) -> None:
    payload = copy.deepcopy(GOOD_REQUESTS[13][1])
    payload["chargingProfile"]["chargingSchedule"]["chargingSchedulePeriod"][0]["limit"] = limit
    err = fails(v, "RemoteStartTransaction", payload)
    assert err.code is PROP
    assert err.details == {
        "path": "chargingProfile.chargingSchedule.chargingSchedulePeriod[0].limit",
        "keyword": "multipleOf",
    }


def test_multiple_of_on_min_charging_rate_in_response(v: Validator) -> None:
    payload = copy.deepcopy(GOOD_RESPONSES[14][1])
    payload["chargingSchedule"]["minChargingRate"] = 6.15
    err = fails(v, "GetCompositeSchedule", payload, response=True)
    assert (err.code, err.details["path"]) == (PROP, "chargingSchedule.minChargingRate")


# --- occurrence constraints --------------------------------------------------------------------


def test_missing_required_field(v: Validator) -> None:
    err = fails(v, "Authorize", {})
    assert err.code is OCC
    assert err.details == {"path": "idTag", "keyword": "required"}
    assert err.description == "idTag: required property is missing"


def test_missing_nested_required_field(v: Validator) -> None:
    payload = copy.deepcopy(METER_VALUES)
    del payload["meterValue"][1]["timestamp"]
    err = fails(v, "MeterValues", payload)
    assert (err.code, err.details["path"]) == (OCC, "meterValue[1].timestamp")
    payload = copy.deepcopy(METER_VALUES)
    del payload["meterValue"][0]["sampledValue"][2]["value"]
    err = fails(v, "MeterValues", payload)
    assert (err.code, err.details["path"]) == (OCC, "meterValue[0].sampledValue[2].value")


def test_missing_required_in_ref_definition(v: Validator) -> None:
    payload = copy.deepcopy(dict(GOOD_REQUESTS)["DeleteCertificate"])
    del payload["certificateHashData"]["serialNumber"]
    err = fails(v, "DeleteCertificate", payload)
    assert (err.code, err.details["path"]) == (OCC, "certificateHashData.serialNumber")


def test_bootnotification_response_requires_all_three(v: Validator) -> None:
    for key in ("status", "currentTime", "interval"):
        payload = {"status": "Accepted", "currentTime": TS, "interval": 300}
        del payload[key]
        err = fails(v, "BootNotification", payload, response=True)
        assert (err.code, err.details["path"]) == (OCC, key)


def test_bootnotification_interval_is_integer_per_errata(v: Validator) -> None:
    # OCPP-J errata §2.3: interval is an integer, not a number.
    err = fails(v, "BootNotification", {"status": "Accepted", "currentTime": TS, "interval": 300.5}, response=True)
    assert (err.code, err.details["path"]) == (TYPE, "interval")


def test_unknown_extra_field(v: Validator) -> None:
    err = fails(v, "Heartbeat", {"foo": 1})
    assert err.code is OCC
    assert err.details == {"path": "foo", "keyword": "additionalProperties"}
    assert err.description == "foo: additional property is not allowed"


def test_unknown_extra_nested_field(v: Validator) -> None:
    payload = copy.deepcopy(METER_VALUES)
    payload["meterValue"][0]["sampledValue"][0]["signature"] = "x"
    err = fails(v, "MeterValues", payload)
    assert (err.code, err.details["path"]) == (OCC, "meterValue[0].sampledValue[0].signature")
    err = fails(v, "Authorize", {"idTagInfo": {"status": "Accepted", "foo": None}}, response=True)
    assert (err.code, err.details["path"]) == (OCC, "idTagInfo.foo")


def test_unknown_field_with_odd_name_is_quoted_in_path(v: Validator) -> None:
    err = fails(v, "Heartbeat", {"a.b\nc": 1})
    assert err.details["path"] == "['a.b\\nc']"
    assert "\n" not in err.description
    err = fails(v, "Heartbeat", {"x" * 500: 1})
    assert len(err.description) < 200


@pytest.mark.parametrize(
    ("payload", "path"),
    [
        ({"connectorId": 1, "meterValue": []}, "meterValue"),
        (
            {"connectorId": 1, "meterValue": [{"timestamp": TS, "sampledValue": []}]},
            "meterValue[0].sampledValue",
        ),
    ],
)
def test_min_items(v: Validator, payload: dict[str, Any], path: str) -> None:
    err = fails(v, "MeterValues", payload)
    assert err.code is OCC
    assert err.details == {"path": path, "keyword": "minItems"}


def test_min_items_in_security_schema(v: Validator) -> None:
    err = fails(v, "GetInstalledCertificateIds", {"status": "Accepted", "certificateHashData": []}, response=True)
    assert (err.code, err.details["path"]) == (OCC, "certificateHashData")


def test_ref_items_path(v: Validator) -> None:
    payload = copy.deepcopy(GOOD_RESPONSES[16][1])
    payload["certificateHashData"].append(dict(payload["certificateHashData"][0], hashAlgorithm="MD5"))
    err = fails(v, "GetInstalledCertificateIds", payload, response=True)
    assert (err.code, err.details["path"]) == (PROP, "certificateHashData[1].hashAlgorithm")


def test_first_error_is_reported_deterministically(v: Validator) -> None:
    # required is checked before the properties present, so the answer doesn't depend on key order.
    err = fails(v, "StartTransaction", {"idTag": 1, "connectorId": 1, "meterStart": 0})
    assert (err.code, err.details["path"]) == (OCC, "timestamp")


# --- compiler ----------------------------------------------------------------------------------


def compile_schema(schema: Any) -> Any:
    return schema_mod._Compiler(schema, "test").node(schema)


def run(check: Any, value: Any) -> tuple[ErrorCode, str] | None:
    try:
        check(value)
    except schema_mod._Fail as failure:
        return failure.code, schema_mod._format_path(failure.path)
    return None


@pytest.mark.parametrize(
    "schema",
    [
        {"type": "string", "pattern": "^a"},
        {"type": "object", "patternProperties": {}},
        {"oneOf": [{"type": "string"}]},
        {"type": "string", "format": "email"},
        {"type": "strin"},
        {"$ref": "http://example.com/schema"},
        {"$ref": "#/definitions/Missing"},
    ],
)
def test_compiler_refuses_what_it_does_not_implement(schema: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        compile_schema(schema)


def test_compiler_type_lists_and_guarded_keywords() -> None:
    check = compile_schema({"type": ["string", "null"], "maxLength": 2, "minimum": 5})
    assert run(check, "ab") is None
    assert run(check, None) is None
    assert run(check, "abc") == (PROP, "")
    assert run(check, 7) == (TYPE, "")
    untyped = compile_schema({"maxLength": 1, "minimum": 5, "enum": ["a", 7, True, None]})
    assert run(untyped, "a") is None
    assert run(untyped, 7.0) is None  # JSON: 7 == 7.0
    assert run(untyped, True) is None
    assert run(untyped, 1) == (PROP, "")  # 1 is not True
    assert run(untyped, None) is None
    assert run(untyped, 4) == (PROP, "")


def test_compiler_bounds_draft04_and_draft06() -> None:
    d4 = compile_schema({"type": "integer", "minimum": 1, "exclusiveMinimum": True, "maximum": 3})
    assert [run(d4, n) is None for n in (1, 2, 3, 4)] == [False, True, True, False]
    d6 = compile_schema({"type": "number", "exclusiveMaximum": 3, "minimum": 0})
    assert [run(d6, n) is None for n in (-1, 0, 2.9, 3)] == [False, True, True, False]


def test_compiler_tuple_items_and_max_items() -> None:
    check = compile_schema(
        {
            "type": "array",
            "items": [{"type": "integer"}, {"type": "string"}],
            "additionalItems": False,
            "maxItems": 2,
        }
    )
    assert run(check, [1, "a"]) is None
    assert run(check, [1]) is None
    assert run(check, [1, 2]) == (TYPE, "[1]")
    assert run(check, [1, "a", 3]) == (OCC, "")  # maxItems fires first
    loose = compile_schema({"type": "array", "items": [{"type": "integer"}], "additionalItems": False})
    assert run(loose, [1, 2]) == (OCC, "[1]")


def test_compiler_recursive_ref() -> None:
    schema = {
        "definitions": {
            "node": {
                "type": "object",
                "properties": {"child": {"$ref": "#/definitions/node"}, "v": {"type": "integer"}},
                "additionalProperties": False,
            }
        },
        "$ref": "#/definitions/node",
    }
    check = compile_schema(schema)
    assert run(check, {"child": {"child": {"v": 1}}}) is None
    assert run(check, {"child": {"child": {"v": "x"}}}) == (TYPE, "child.child.v")


def test_compiler_additional_properties_schema() -> None:
    check = compile_schema({"type": "object", "properties": {"a": {}}, "additionalProperties": {"type": "string"}})
    assert run(check, {"a": 1, "b": "x"}) is None
    assert run(check, {"a": 1, "b": 2}) == (TYPE, "b")
