"""Oracle and frame generators for fuzzing the OCPP-J 1.6 RPC layer of a charge point.

Shared by tests/unit/test_session_fuzz.py (sans-I/O session) and tests/e2e/test_e2e_fuzz.py (real daemon).

The oracle is written from the OCPP-J 1.6 specification (section 4, Table 7) and its errata, and from the
official OCPP 1.6 JSON schema files; it never calls evsed code.  It decides, for a frame the CSMS sends,
what the charge point must answer:

* A frame that is not UTF-8 / not JSON (NaN and Infinity are not JSON), not a JSON array, or has no usable
  MessageTypeId cannot be matched to any CALL: it may be left unanswered, and if it is answered, then by
  one CALLERROR with the placeholder id "-1" (OCPP-J 2.0.1 4.2.3, 1.6 is silent).
  Codes: syntactically incorrect / not the PDU structure -> FormationViolation; ``[]`` (nothing at all)
  -> ProtocolError ("incomplete").
* MessageTypeId a number other than 2, 3, 4: section 4.1.3 "SHALL ignore the message payload"; no answer,
  or (tolerated) a CALLERROR with id "-1" or the frame's string id.
* MessageTypeId 3 or 4 (CALLRESULT / CALLERROR), whatever else is wrong with it: NEVER answered.
  Section 4.2.3 uses CallError only for a call; answering answers lets two peers bounce errors forever.
* MessageTypeId 2 (CALL): once the UniqueId is a string, exactly one CALLERROR with that id:
  - UniqueId over 36 characters (Table 3; 4.2.3 "unique identifier too long") -> PropertyConstraintViolation,
  - fewer than 4 elements ("incomplete") -> ProtocolError,
  - more than 4 elements, Action not a string, payload neither object nor null ("not conform the PDU
    structure for Action") -> FormationViolation,
  (several wrapper defects at once: any of their codes; the spec gives no precedence)
  - Action not an OCPP 1.6 action ("not known by receiver") -> NotImplemented,
  - otherwise the payload is checked against the action's schema: a payload of ``null`` is the empty object
    (4.2.1); a missing required property or an additional property where additionalProperties is false
    -> OccurenceConstraintViolation (the 1.6 wire spelling, errata 5.1); a wrong JSON type ("somestring": 12)
    -> TypeConstraintViolation; a value outside its enum, longer than maxLength, not in its format or not a
    multipleOf -> PropertyConstraintViolation ("at least one field contains an invalid value").
  A UniqueId that is not a string cannot be echoed: unanswered or "-1" (code FormationViolation, or
  ProtocolError when it is missing).
"""

from __future__ import annotations

import json
import random
import string
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, Final, Literal

# The official OCPP 1.6 JSON schemas (2019-12 errata release + security extension) bundled with evsed.
SCHEMA_DIR: Final = Path(__file__).resolve().parents[2] / "evsed" / "ocpp" / "schemas" / "v16"

NOT_IMPLEMENTED: Final = "NotImplemented"
NOT_SUPPORTED: Final = "NotSupported"
PROTOCOL: Final = "ProtocolError"
FORMATION: Final = "FormationViolation"
PROPERTY: Final = "PropertyConstraintViolation"
OCCURENCE: Final = "OccurenceConstraintViolation"
TYPE: Final = "TypeConstraintViolation"
# OCPP-J 1.6 Table 7, spelled as on the wire (errata 5.1/5.2: the typos are not fixed in 1.6).
TABLE_7: Final = frozenset(
    {
        NOT_IMPLEMENTED,
        NOT_SUPPORTED,
        "InternalError",
        PROTOCOL,
        "SecurityError",
        FORMATION,
        PROPERTY,
        OCCURENCE,
        TYPE,
        "GenericError",
    }
)
MAX_ID: Final = 36  # Table 3

# Actions the central system sends to the charge point: OCPP 1.6 edition 2 and the security whitepaper.
CSMS_TO_CP_ACTIONS: Final = (
    "CancelReservation",
    "CertificateSigned",
    "ChangeAvailability",
    "ChangeConfiguration",
    "ClearCache",
    "ClearChargingProfile",
    "DataTransfer",
    "DeleteCertificate",
    "ExtendedTriggerMessage",
    "GetCompositeSchedule",
    "GetConfiguration",
    "GetDiagnostics",
    "GetInstalledCertificateIds",
    "GetLocalListVersion",
    "GetLog",
    "InstallCertificate",
    "RemoteStartTransaction",
    "RemoteStopTransaction",
    "ReserveNow",
    "Reset",
    "SendLocalList",
    "SetChargingProfile",
    "SignedUpdateFirmware",
    "TriggerMessage",
    "UnlockConnector",
    "UpdateFirmware",
)
# The ones the issue names explicitly; the generators favour them.
CORE_ACTIONS: Final = (
    "GetConfiguration",
    "ChangeConfiguration",
    "RemoteStartTransaction",
    "RemoteStopTransaction",
    "Reset",
    "UnlockConnector",
    "ChangeAvailability",
    "ClearCache",
    "DataTransfer",
)


def _request_schema_names() -> frozenset[str]:
    stems = {p.stem for p in SCHEMA_DIR.glob("*.json")}
    return frozenset(s for s in stems if not (s.endswith("Response") and s[: -len("Response")] in stems))


# Every action OCPP 1.6 defines (either direction): an Action outside this set is "not known".
ALL_ACTIONS: Final = _request_schema_names()
assert set(CSMS_TO_CP_ACTIONS) <= ALL_ACTIONS, sorted(set(CSMS_TO_CP_ACTIONS) - ALL_ACTIONS)

_SCHEMAS: dict[str, dict[str, Any]] = {}


def schema(action: str) -> dict[str, Any]:
    if action not in _SCHEMAS:
        _SCHEMAS[action] = json.loads((SCHEMA_DIR / f"{action}.json").read_text(encoding="utf-8-sig"))
    return _SCHEMAS[action]


# ------------------------------------------------------------------------------------------------ oracle
Kind = Literal["error", "maybe_error", "silent", "answer"]


@dataclass(frozen=True)
class Expect:
    """What the charge point must send back for one frame.

    error: exactly one CALLERROR, id in ``ids``, code in ``codes``.
    maybe_error: nothing, or one CALLERROR as for ``error``.
    silent: nothing at all.
    answer: exactly one CALLRESULT, or one CALLERROR with any Table 7 code, with id in ``ids``.
    """

    kind: Kind
    ids: frozenset[str]
    codes: frozenset[str]
    why: str


def _unreadable(why: str, *codes: str) -> Expect:
    return Expect("maybe_error", frozenset({"-1"}), frozenset(codes), why)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def expect_frame(raw: str | bytes) -> Expect:
    """The oracle for the RPC wrapper (and NotImplemented); see the module docstring."""
    if isinstance(raw, bytes):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            return _unreadable("not UTF-8 (4.1.2)", FORMATION)
    else:
        text = raw
    try:
        msg = json.loads(text, parse_constant=_reject_constant)
    except (ValueError, RecursionError):
        return _unreadable("not JSON (4.1.2)", FORMATION)
    if not isinstance(msg, list):
        return _unreadable("not a JSON array", FORMATION)
    if not msg:
        return _unreadable("empty array: no MessageTypeId", PROTOCOL)
    mtype = msg[0]
    if not _is_number(mtype):
        return _unreadable("MessageTypeId is not a number", FORMATION)
    if mtype in (3, 4):  # 3.0 too: one JSON number
        return Expect("silent", frozenset(), frozenset(), "a CALLRESULT/CALLERROR is never answered (4.2.3)")
    if mtype != 2:
        echo = {msg[1]} if len(msg) > 1 and isinstance(msg[1], str) else set()
        return Expect("maybe_error", frozenset({"-1", *echo}), TABLE_7, "unknown MessageTypeId: SHALL ignore (4.1.3)")
    if len(msg) < 2:
        return _unreadable("CALL without UniqueId", PROTOCOL)
    uid = msg[1]
    if not isinstance(uid, str):
        return _unreadable("CALL UniqueId is not a string", FORMATION)
    defects: set[str] = set()
    if len(uid) > MAX_ID:
        defects.add(PROPERTY)
    if len(msg) < 4:
        defects.add(PROTOCOL)
    elif len(msg) > 4:
        defects.add(FORMATION)
    if len(msg) > 2 and not isinstance(msg[2], str):
        defects.add(FORMATION)
    if len(msg) > 3 and msg[3] is not None and not isinstance(msg[3], dict):
        defects.add(FORMATION)
    if defects:
        return Expect("error", frozenset({uid}), frozenset(defects), "malformed CALL wrapper")
    if msg[2] not in ALL_ACTIONS:
        return Expect("error", frozenset({uid}), frozenset({NOT_IMPLEMENTED}), "Action not known (Table 7)")
    return Expect("answer", frozenset({uid}), TABLE_7, "well-formed CALL of a known action")


def shape_problem(answer: Any) -> str | None:
    """Why ``answer`` is not a well-formed CALLRESULT/CALLERROR of OCPP-J 1.6, or None."""
    if not isinstance(answer, list) or not answer or type(answer[0]) is not int:
        return f"not an OCPP-J response frame: {answer!r:.200}"
    if answer[0] == 4:
        if len(answer) != 5:
            return f"a CALLERROR has 5 elements (4.2.3): {answer!r:.200}"
        _, uid, code, description, details = answer
        if not isinstance(uid, str) or not isinstance(description, str) or not isinstance(details, dict):
            return f"CALLERROR element types wrong: {answer!r:.200}"
        if code not in TABLE_7:
            return f"CALLERROR code {code!r} is not in OCPP-J 1.6 Table 7"
        return None
    if answer[0] == 3:
        if len(answer) != 3 or not isinstance(answer[1], str) or not isinstance(answer[2], dict):
            return f"malformed CALLRESULT: {answer!r:.200}"
        return None
    return f"not a CALLRESULT/CALLERROR: {answer!r:.200}"


def verdict(expect: Expect, answers: list[Any]) -> str | None:
    """None if ``answers`` (every CALLRESULT/CALLERROR sent back for one frame) meets ``expect``."""
    for answer in answers:
        problem = shape_problem(answer)
        if problem:
            return problem
    if expect.kind == "silent":
        return None if not answers else f"must not be answered ({expect.why}), but got {answers!r:.300}"
    if len(answers) > 1:
        return f"answered {len(answers)} times: {answers!r:.300}"
    if not answers:
        return None if expect.kind == "maybe_error" else f"no answer ({expect.why})"
    answer = answers[0]
    if answer[1] not in expect.ids:
        return f"answer id {answer[1]!r:.60}, expected one of {sorted(expect.ids)!r:.120} ({expect.why})"
    if expect.kind == "answer":
        return None
    if answer[0] != 4:
        return f"expected a CALLERROR ({expect.why}), got {answer!r:.300}"
    if answer[2] not in expect.codes:
        return f"error code {answer[2]!r}, expected one of {sorted(expect.codes)} ({expect.why}); got {answer!r:.300}"
    return None


# --------------------------------------------------------------------------------------------- generators
# Text without surrogates (every generated frame must survive UTF-8), with JSON escapes and non-BMP chars.
ALPHABET: Final = string.ascii_letters + string.digits + " -_.:/#{}[],\"'\\\n\t\x00\x7féßü中文\u2028😀🔌"
ID_ALPHABET: Final = string.ascii_letters + string.digits + "-_.:é😀"
VALID_DATE_TIMES: Final = (
    "2024-05-01T12:00:00Z",
    "2030-01-01T00:00:00.123+02:00",
    "2024-02-29T23:59:59.5-05:30",
    "2013-02-01T20:53:32.486Z",
)
INVALID_DATE_TIMES: Final = (
    "",
    "now",
    "2024-05-01",
    "2024-05-01T12:00:00",  # RFC 3339 requires the offset
    "2024-05-01T12:00Z",
    "2024-13-01T00:00:00Z",
    "2023-02-29T00:00:00Z",
    "2024-05-01T24:00:00Z",
    "12:00:00Z",
    "1714564800",
)
VALID_URIS: Final = ("https://fw.example/fw.bin", "ftp://user@diag.example:21/upload", "urn:isbn:0451450523")
INVALID_URIS: Final = (
    "", "not a uri", "://no-scheme.example", "http://exa mple.com/", "1http://x.example", "relative/path"
)
UNKNOWN_ACTIONS: Final = (
    "",
    "FooBar",
    "reset",
    "RESET",
    "getConfiguration",
    "Reset ",
    " Reset",
    "Reset.req",
    "/Reset",
    "ResetRequest",
    "ResetResponse",
    "GetConfigurationResponse",
    "Reset\u0000",
    "R\u0435set",  # Cyrillic ie
    "ClearCache\n",
    "SetVariables",  # OCPP 2.0.1 only
    "GetBaseReport",
    "Heartbeat.conf",
)


def text(rng: random.Random, n: int, alphabet: str = ALPHABET) -> str:
    """``n`` characters (code points); long strings repeat a random chunk to keep draws few."""
    if n <= 24:
        return "".join(rng.choice(alphabet) for _ in range(n))
    chunk = "".join(rng.choice(alphabet) for _ in range(16))
    return (chunk * (n // 16 + 1))[:n]


def unique_id(rng: random.Random, prefix: str = "") -> str:
    return (prefix + text(rng, rng.randint(1, MAX_ID), ID_ALPHABET))[:MAX_ID]


def json_value(rng: random.Random, depth: int = 2) -> Any:
    kinds = ["null", "bool", "int", "float", "str"] + (["list", "dict"] if depth > 0 else [])
    kind = rng.choice(kinds)
    if kind == "null":
        return None
    if kind == "bool":
        return rng.random() < 0.5
    if kind == "int":
        return rng.choice([0, 1, -1, 2, 3, 4, 36, 2**31, -(2**63), 10**20, rng.randint(-1000, 1000)])
    if kind == "float":
        return rng.choice([0.5, -1.25, 1e-9, 1e300, 3.0, rng.uniform(-100, 100)])
    if kind == "str":
        return text(rng, rng.randint(0, 12))
    if kind == "list":
        return [json_value(rng, depth - 1) for _ in range(rng.randint(0, 3))]
    return {text(rng, rng.randint(0, 6)): json_value(rng, depth - 1) for _ in range(rng.randint(0, 3))}


def non_string(rng: random.Random) -> Any:
    return rng.choice([None, True, False, 0, 42, -1.5, [], ["x"], {}, {"id": "x"}])


def non_object(rng: random.Random) -> Any:
    """Neither an object nor null (null is the empty payload, 4.2.1)."""
    return rng.choice([True, False, 0, 7, -2.5, "", "{}", "payload", [], [{}], [1, 2]])


def dumps(rng: random.Random, value: Any) -> str:
    """JSON text in one of several legal layouts; always encodable as UTF-8 (lone surrogates as escapes)."""
    layout = rng.randrange(4)
    if layout == 0:
        out = json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    elif layout == 1:
        out = json.dumps(value, allow_nan=False)
    elif layout == 2:
        out = json.dumps(value, indent=2, ensure_ascii=False, allow_nan=False)
    else:
        out = " \r\n\t" + json.dumps(value, ensure_ascii=False, allow_nan=False) + "\n "
    if not is_utf8(out):
        out = json.dumps(value, allow_nan=False)
    return out


def is_utf8(text: str) -> bool:
    """Whether ``text`` can go on the wire at all (4.1.2): a lone surrogate cannot be encoded in UTF-8."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


# Nesting depths far below and far above what any stack-bound parser handles, never near the limit.
def _depth(rng: random.Random) -> int:
    return rng.choice([rng.randint(1, 150), rng.randint(5_000, 60_000)])


def garbage_frame(rng: random.Random) -> str:
    """A text frame that is not a CALL/CALLRESULT/CALLERROR at all."""
    n = _depth(rng)
    choices: list[Callable[[], str]] = [
        lambda: "",
        lambda: " \n",
        lambda: text(rng, rng.randint(1, 40)),
        lambda: "this is {not json",
        lambda: dumps(rng, [2, unique_id(rng), "Reset", {"type": "Hard"}])[: rng.randint(1, 20)],
        lambda: "[2,'single-quoted','Reset',{}]",
        lambda: '[2,"trailing","ClearCache",{},]',
        lambda: '[2,"nan","Foo",{"x":NaN}]',
        lambda: '[2,"inf","Foo",{"x":-Infinity}]',
        lambda: '[2,"two",{}] [3,"x",{}]',
        lambda: '\ufeff[2,"bom","Foo",{}]',
        lambda: dumps(rng, {"messageTypeId": 2, "uniqueId": unique_id(rng), "action": "Reset", "payload": {}}),
        lambda: dumps(rng, rng.choice([None, True, 2, 2.5, "[2]", {}, {"a": [2]}, {"x": json_value(rng)}])),
        lambda: dumps(rng, [rng.choice(["2", None, True, False, [2], {}, "CALL"]), unique_id(rng), "Reset", {}]),
        lambda: dumps(rng, [rng.choice([0, 1, 5, 6, -2, 2.5, 1e3, 10**20]), *[json_value(rng)
                                                                           for _ in range(rng.randint(0, 4))]]),
        lambda: dumps(rng, [rng.choice([0, 1, 5, 7]), unique_id(rng), "Reset", {"type": "Hard"}]),
        lambda: "[" * n,
        lambda: "[" * n + "]" * n,
        lambda: "{" + '"a":{' * n + "}" * n,
        lambda: '[2,"deep-' + str(n) + '","FooBar",' + '{"a":' * n + "1" + "}" * n + "]",
        lambda: '[2,"deep-' + str(n) + '","Reset",{"type":' + "[" * n + "]" * n + "}]",
        lambda: "[]",
        lambda: "[2]",
        lambda: dumps(rng, [2, non_string(rng), "Reset", {"type": "Hard"}]),
        lambda: dumps(rng, [2, non_string(rng)]),
    ]
    return rng.choice(choices)()


def malformed_call(rng: random.Random, uid: str) -> str:
    """A CALL with a string UniqueId and at least one defect in the RPC wrapper."""
    action = rng.choice([*CORE_ACTIONS, "FooBar", "Heartbeat"])
    payload: Any = rng.choice([{}, {"type": "Hard"}, {"key": ["HeartbeatInterval"]}, None])
    mtype: int | float = rng.choice([2, 2, 2, 2.0])
    defect = rng.randrange(7)
    if defect == 0:
        frame: list[Any] = [mtype, uid]
    elif defect == 1:
        frame = [mtype, uid, action]
    elif defect == 2:
        frame = [mtype, uid, action, payload, *[json_value(rng, 1) for _ in range(rng.randint(1, 3))]]
    elif defect == 3:
        frame = [mtype, uid, non_string(rng), payload]
    elif defect == 4:
        frame = [mtype, uid, action, non_object(rng)]
    elif defect == 5:
        long_id = (uid + text(rng, MAX_ID + rng.choice([1, 2, 30, 300]), ID_ALPHABET))[: MAX_ID + 400]
        frame = [mtype, long_id, action, payload][: rng.choice([2, 3, 4, 4, 4])]
    else:  # several defects at once
        frame = [mtype, uid, non_string(rng), non_object(rng), json_value(rng, 1)]
    return dumps(rng, frame)


def response_frame(rng: random.Random, uid: str) -> str:
    """A CALLRESULT or CALLERROR of any shape: never to be answered."""
    mtype: int | float = rng.choice([3, 4, 3.0, 4.0])
    if rng.random() < 0.25:
        uid = rng.choice([uid, uid + "x" * 40])
    shapes: list[list[Any]] = [
        [mtype],
        [mtype, non_string(rng)],
        [mtype, non_string(rng), {}],
        [mtype, non_string(rng), "GenericError", "", {}],
        [mtype, uid],
        [mtype, uid, {}],
        [mtype, uid, non_object(rng)],
        [mtype, uid, {}, json_value(rng, 1)],
        [mtype, uid, "GenericError", "oops", {}],
        [mtype, uid, non_string(rng), "", {}],
        [mtype, uid, "NotSupported", non_string(rng), non_object(rng)],
        [mtype, uid, "FormationViolation", "", {}, "surplus", 1],
        [mtype, *[json_value(rng, 1) for _ in range(rng.randint(1, 5))]],
    ]
    return dumps(rng, rng.choice(shapes))


def unknown_action(rng: random.Random) -> str:
    while True:
        name = rng.choice(UNKNOWN_ACTIONS) if rng.random() < 0.6 else text(rng, rng.randint(0, 30))
        if name not in ALL_ACTIONS:
            return name


def with_lone_surrogate(rng: random.Random, base: str = "") -> str:
    """``base`` with a lone UTF-16 surrogate in it: legal in JSON as an escape (RFC 8259 8.2), not in UTF-8."""
    base = base[: MAX_ID - 1]
    cut = rng.randint(0, len(base))
    return base[:cut] + chr(rng.choice([0xD800, 0xDBFF, 0xDC00, 0xDFFF, rng.randint(0xD800, 0xDFFF)])) + base[cut:]


def surrogate_frame(rng: random.Random, uid: str) -> str:
    """A frame whose id, action or payload carries a lone surrogate, as an ASCII JSON escape."""
    odd = with_lone_surrogate(rng, uid)
    shapes: list[list[Any]] = [
        [2, odd, "FooBar", {}],
        [2, odd, "Reset", {"type": "Hard", "extra": 1}],
        [2, odd, "RemoteStopTransaction", {}],
        [2, uid, with_lone_surrogate(rng, "FooBar"), {}],
        [2, uid, "GetConfiguration", {"key": [with_lone_surrogate(rng, "HeartbeatInterval")]}],
        [2, uid, "ChangeConfiguration", {"key": with_lone_surrogate(rng, "NoSuchKey"), "value": "1"}],
        [2, uid, "Reset", {"type": with_lone_surrogate(rng, "Hard")}],
        [2, uid, "Reset", {"type": "Hard", with_lone_surrogate(rng, "x"): 1}],
        [3, odd, {}],
        [4, odd, "GenericError", "", {}],
    ]
    return json.dumps(rng.choice(shapes))  # ensure_ascii: the escape survives any transport


def surrogate_verdict(raw: str | bytes, answers: list[Any]) -> str | None:
    """As :func:`verdict`, but a receiver may also refuse a lone surrogate as not I-JSON (RFC 7493 2.1):
    then one CALLERROR "-1" FormationViolation for a CALL (never an answer to an answer)."""
    expect = expect_frame(raw)
    problem = verdict(expect, answers)
    if problem is None or expect.kind == "silent":
        return problem
    if len(answers) == 1 and shape_problem(answers[0]) is None and answers[0][:3] == [4, "-1", FORMATION]:
        return None
    return problem


# ------------------------------------------------------------------------------------- schema mutations
KIND_CODE: Final = {
    "drop-required": OCCURENCE,
    "null-payload": OCCURENCE,  # null is the empty object (4.2.1), so a required property is missing
    "additional-property": OCCURENCE,
    "wrong-type": TYPE,
    "bad-enum": PROPERTY,
    "too-long": PROPERTY,
    "bad-format": PROPERTY,
    "not-multiple": PROPERTY,
    "not-an-object": FORMATION,
}


@dataclass(frozen=True)
class Mutation:
    action: str
    kind: str
    path: str
    payload: Any
    valid: dict[str, Any]

    @property
    def code(self) -> str:
        return KIND_CODE[self.kind]

    def describe(self) -> str:
        return f"{self.action} {self.kind} at {self.path or '<payload>'}"


class _Resolver:
    def __init__(self, root: dict[str, Any]) -> None:
        self.root = root

    def __call__(self, node: dict[str, Any]) -> dict[str, Any]:
        while "$ref" in node:
            target: Any = self.root
            for token in node["$ref"].lstrip("#").strip("/").split("/"):
                target = target[token]
            node = target
        return node


def valid_instance(rng: random.Random, node: dict[str, Any], resolve: _Resolver, depth: int = 0) -> Any:
    """A schema-valid value for ``node``: required properties always, optional ones at random."""
    node = resolve(node)
    if "enum" in node:
        return rng.choice(node["enum"])
    kind = node.get("type")
    if kind == "object":
        required = set(node.get("required", []))
        return {
            name: valid_instance(rng, sub, resolve, depth + 1)
            for name, sub in node.get("properties", {}).items()
            if name in required or (depth < 4 and rng.random() < 0.6)
        }
    if kind == "array":
        low = node.get("minItems", 0)
        count = rng.randint(low, max(low, 3 if depth < 4 else 1))
        return [valid_instance(rng, node["items"], resolve, depth + 1) for _ in range(count)]
    if kind == "string":
        fmt = node.get("format")
        if fmt == "date-time":
            return rng.choice(VALID_DATE_TIMES)
        if fmt == "uri":
            return rng.choice(VALID_URIS)
        limit = node.get("maxLength", 40)
        return text(rng, rng.choice([0, 1, rng.randint(0, min(limit, 40)), limit]))
    if kind == "integer":
        return rng.choice([0, 1, 2, rng.randint(-10, 10_000), 2**31 - 1])
    if kind == "number":
        if "multipleOf" in node:
            step = Decimal(repr(node["multipleOf"]))
            return float(step * rng.randint(-50, 5000))
        return rng.choice([0, 1, 16.5, rng.randint(-10, 1000)])
    if kind == "boolean":
        return rng.random() < 0.5
    raise AssertionError(f"schema construct not handled by the fuzz generator: {node}")


@dataclass
class _Site:
    path: tuple[str | int, ...]
    node: dict[str, Any]
    value: Any


def _sites(value: Any, node: dict[str, Any], resolve: _Resolver, path: tuple[str | int, ...] = ()) -> list[_Site]:
    node = resolve(node)
    out = [_Site(path, node, value)]
    if node.get("type") == "object" and isinstance(value, dict):
        for name, sub in node.get("properties", {}).items():
            if name in value:
                out += _sites(value[name], sub, resolve, (*path, name))
    elif node.get("type") == "array" and isinstance(value, list):
        for index, item in enumerate(value):
            out += _sites(item, node["items"], resolve, (*path, index))
    return out


def _wrong_type(rng: random.Random, kind: str) -> Any:
    pool: dict[str, list[Any]] = {
        "null": [None],
        "boolean": [True, False],
        "integer": [0, 7, -3, 2**40],
        "fraction": [0.5, -2.25, 16.05],  # a number, never an integer
        "string": ["", "7", "1.0", "true", "null", "Hard", text(rng, 5)],
        "array": [[], [1], ["Hard"], [{}]],
        "object": [{}, {"type": "Hard"}, {"a": [1]}],
    }
    wrong = {
        "integer": ["null", "boolean", "fraction", "string", "array", "object"],
        "number": ["null", "boolean", "string", "array", "object"],
        "string": ["null", "boolean", "integer", "fraction", "array", "object"],
        "object": ["null", "boolean", "integer", "fraction", "string", "array"],
        "array": ["null", "boolean", "integer", "fraction", "string", "object"],
        "boolean": ["null", "integer", "fraction", "string", "array", "object"],
    }[kind]
    return rng.choice(pool[rng.choice(wrong)])


def _not_in_enum(rng: random.Random, enum: list[str], current: str) -> str:
    candidates = [current.lower(), current.upper(), " " + current, current + " ", "", current[:-1],
                  current + "\u0000", text(rng, rng.randint(1, 12)), "Unknown"]
    candidates = [c for c in candidates if c not in enum]
    return rng.choice(candidates)


def _extra_key(rng: random.Random, properties: dict[str, Any]) -> str:
    lowered = [p.lower() for p in properties] + [p[:1].upper() + p[1:] for p in properties]
    pool = [*lowered, "extra", "__proto__", "constructor", "", " ", "vendorExtension", text(rng, rng.randint(1, 10))]
    pool = [k for k in pool if k not in properties]
    return rng.choice(pool)


def _set(container: Any, path: tuple[str | int, ...], value: Any) -> Any:
    if not path:
        return value
    container[path[0]] = _set(container[path[0]], path[1:], value) if len(path) > 1 else value
    return container


def _get(container: Any, path: tuple[str | int, ...]) -> Any:
    for step in path:
        container = container[step]
    return container


def _path_text(path: tuple[str | int, ...]) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path).lstrip(".")


def mutate(rng: random.Random, action: str, kind: str | None = None) -> Mutation:
    """One schema violation (of ``kind``, else of a random kind) in an otherwise valid payload of ``action``.

    Raises LookupError when ``kind`` does not apply to the payload drawn for ``action``.
    """
    root = schema(action)
    resolve = _Resolver(root)
    valid = valid_instance(rng, root, resolve)
    options: list[tuple[str, _Site]] = []
    for site in _sites(valid, root, resolve):
        node, value = site.node, site.value
        json_type = node.get("type")
        if not site.path:
            options.append(("not-an-object", site))
            if node.get("required"):
                options.append(("null-payload", site))
        else:
            options.append(("wrong-type", site))
        if json_type == "object":
            if any(name in value for name in node.get("required", [])):
                options.append(("drop-required", site))
            if node.get("additionalProperties") is False:
                options.append(("additional-property", site))
        if json_type == "string" and "enum" in node:
            options.append(("bad-enum", site))
        if json_type == "string" and "maxLength" in node:
            options.append(("too-long", site))
        if json_type == "string" and "format" in node:
            options.append(("bad-format", site))
        if json_type == "number" and "multipleOf" in node:
            options.append(("not-multiple", site))
    if kind is not None:
        options = [option for option in options if option[0] == kind]
        if not options:
            raise LookupError(f"{kind} does not apply to this {action} payload")
    kind, site = rng.choice(options)
    payload: Any = json.loads(json.dumps(valid))
    path = site.path
    target = _get(payload, path)
    if kind == "not-an-object":
        payload = non_object(rng)
    elif kind == "null-payload":
        payload = None
    elif kind == "wrong-type":
        payload = _set(payload, path, _wrong_type(rng, site.node["type"]))
    elif kind == "drop-required":
        name = rng.choice([n for n in site.node["required"] if n in target])
        del target[name]
        path = (*path, name)
    elif kind == "additional-property":
        name = _extra_key(rng, site.node.get("properties", {}))
        target[name] = json_value(rng, 1)
        path = (*path, name)
    elif kind == "bad-enum":
        payload = _set(payload, path, _not_in_enum(rng, site.node["enum"], target))
    elif kind == "too-long":
        limit = site.node["maxLength"]
        extra = rng.choice([1, 1, 2, rng.randint(3, 40), limit])
        payload = _set(payload, path, text(rng, limit + extra))
    elif kind == "bad-format":
        bad = INVALID_DATE_TIMES if site.node["format"] == "date-time" else INVALID_URIS
        payload = _set(payload, path, rng.choice(bad))
    elif kind == "not-multiple":
        hundredths = rng.choice([k for k in range(-99, 2000) if k % 10])
        payload = _set(payload, path, hundredths / 100)
    return Mutation(action, kind, _path_text(path), payload, valid)


def mutation_frame(rng: random.Random, uid: str, m: Mutation) -> str:
    return dumps(rng, [2, uid, m.action, m.payload])


def pick_action(rng: random.Random) -> str:
    return rng.choice(CORE_ACTIONS) if rng.random() < 0.6 else rng.choice(CSMS_TO_CP_ACTIONS)


# ----------------------------------------------------------------------------------------- mixed cases
@dataclass(frozen=True)
class Case:
    label: str
    text: str
    expect: Expect


def mutation_case(rng: random.Random, uid: str, m: Mutation) -> Case:
    expect = Expect("error", frozenset({uid}), frozenset({m.code}), m.describe())
    return Case(f"schema:{m.describe()}", mutation_frame(rng, uid, m), expect)


def every_kind(rng: random.Random, prefix: str) -> list[Case]:
    """One schema-invalid CALL per mutation kind (each on an action it applies to)."""
    cases = []
    for n, kind in enumerate(KIND_CODE):
        for _attempt in range(200):
            try:
                m = mutate(rng, pick_action(rng), kind)
            except LookupError:
                continue
            cases.append(mutation_case(rng, unique_id(rng, f"{prefix}{n}-"), m))
            break
        else:
            raise AssertionError(f"could not generate a {kind} mutation")
    return cases


def random_case(rng: random.Random, prefix: str) -> Case:
    """One frame of a mixed stream: garbage, malformed CALL, schema-invalid CALL or unknown action."""
    uid = unique_id(rng, prefix)
    roll = rng.random()
    if roll < 0.2:
        frame = garbage_frame(rng)
        return Case("garbage", frame, expect_frame(frame))
    if roll < 0.45:
        frame = malformed_call(rng, uid)
        return Case("malformed-call", frame, expect_frame(frame))
    if roll < 0.9:
        return mutation_case(rng, uid, mutate(rng, pick_action(rng)))
    action = unknown_action(rng)
    payload: Any = rng.choice([{}, None, {"type": "Hard"}, {"key": []}])
    frame = dumps(rng, [2, uid, action, payload])
    return Case(f"unknown-action:{action!r}", frame, Expect("error", frozenset({uid}), frozenset({NOT_IMPLEMENTED}),
                                                            f"unknown action {action!r}"))
