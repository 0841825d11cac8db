"""Sans-I/O OCPP-J 1.6 RPC framing: CALL / CALLRESULT / CALLERROR encode and decode.

No sockets here: the session layer feeds received text frames to :func:`decode` and sends what
:func:`encode` returns.  Payload validation against the action schemas lives in
:mod:`evsed.ocpp.schema`; this module only checks the RPC wrapper (OCPP-J 1.6 §4).

Reply rule for :class:`RpcError` raised by :func:`decode`:

* ``err.unique_id`` is set only when the broken frame is recognisably a CALL with a usable id.
  Then, and only then, answer with ``encode(err.to_call_error())``.  OCPP-J 1.6 §4.2.3 uses
  CallError solely to answer a *call*; answering broken CALLRESULT/CALLERROR frames would break
  that rule and two peers doing so can bounce CALLERRORs at each other forever.
* ``err.in_reply_to`` is set when a broken CALLRESULT/CALLERROR carried a usable id: that is
  the id of one of *our* calls, so the session can fail that pending call at once instead of
  waiting for its timeout.  Never answer it.
* Both ``None``: nothing can be answered (not JSON, no usable id, unknown MessageTypeId);
  log it and carry on.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from enum import IntEnum, StrEnum
from typing import Any, Final, NoReturn

__all__ = [
    "MAX_UNIQUE_ID_LENGTH",
    "Call",
    "CallError",
    "CallResult",
    "ErrorCode",
    "Frame",
    "MessageType",
    "RpcError",
    "decode",
    "encode",
    "new_unique_id",
]

# OCPP-J 1.6 §4.1.4 Table 3: "Maximum of 36 characters, to allow for GUIDs".
MAX_UNIQUE_ID_LENGTH: Final = 36


class ErrorCode(StrEnum):
    """CALLERROR codes of OCPP-J 1.6 §4.2.3 Table 7.

    The misspellings "Occurence" and "FormationViolation" are the wire values of 1.6: the
    OCPP-J 1.6 errata (§5.1, §5.2) list them as known issues that will *not* be fixed because
    correcting them would break implementations.
    """

    NOT_IMPLEMENTED = "NotImplemented"
    NOT_SUPPORTED = "NotSupported"
    INTERNAL_ERROR = "InternalError"
    PROTOCOL_ERROR = "ProtocolError"
    SECURITY_ERROR = "SecurityError"
    FORMATION_VIOLATION = "FormationViolation"
    PROPERTY_CONSTRAINT_VIOLATION = "PropertyConstraintViolation"
    OCCURENCE_CONSTRAINT_VIOLATION = "OccurenceConstraintViolation"
    TYPE_CONSTRAINT_VIOLATION = "TypeConstraintViolation"
    GENERIC_ERROR = "GenericError"


class MessageType(IntEnum):
    """MessageTypeNumber of OCPP-J 1.6 §4.1.3 Table 2."""

    CALL = 2
    CALLRESULT = 3
    CALLERROR = 4


@dataclass(frozen=True, slots=True)
class Call:
    unique_id: str
    action: str
    payload: dict[str, Any]


@dataclass(frozen=True, slots=True)
class CallResult:
    unique_id: str
    payload: dict[str, Any]


@dataclass(frozen=True, slots=True)
class CallError:
    # A plain str, not ErrorCode: peers send codes outside the 1.6 table (e.g. "FormatViolation",
    # the corrected spelling used by OCPP 2.x and by some 1.6 stacks) and we must still decode them.
    unique_id: str
    code: str
    description: str = ""
    details: dict[str, Any] = field(default_factory=dict)


Frame = Call | CallResult | CallError


class RpcError(Exception):
    """An RPC-level failure that carries everything needed to answer with a CALLERROR."""

    def __init__(
        self,
        code: ErrorCode,
        description: str = "",
        unique_id: str | None = None,
        details: dict[str, Any] | None = None,
        *,
        in_reply_to: str | None = None,
        answerable: bool = True,
    ) -> None:
        super().__init__(code, description)
        self.code = code
        self.description = description
        self.unique_id = unique_id
        self.details: dict[str, Any] = {} if details is None else details
        self.in_reply_to = in_reply_to
        # False for anything that is not recognisably a CALL (a broken CALLRESULT/CALLERROR, an unknown
        # MessageTypeId): a CALLERROR only ever answers a CALL (OCPP-J 4.2.3), so these are dropped.
        self.answerable = answerable

    def __str__(self) -> str:
        return f"{self.code}: {self.description}" if self.description else str(self.code)

    def __repr__(self) -> str:
        return (
            f"RpcError(code={self.code.value!r}, description={self.description!r}, "
            f"unique_id={self.unique_id!r}, details={self.details!r}, in_reply_to={self.in_reply_to!r})"
        )

    def to_call_error(self, unique_id: str | None = None) -> CallError:
        """The CALLERROR answering this error; ``unique_id`` overrides the one carried."""
        uid = self.unique_id if unique_id is None else unique_id
        if uid is None:
            raise ValueError("RpcError has no unique_id to answer")
        return CallError(uid, str(self.code), self.description, dict(self.details))


def new_unique_id() -> str:
    """A fresh CALL id: a UUID4 in its 36-character canonical form (§4.1.4 allows 36)."""
    return str(uuid.uuid4())


def _reject_constant(name: str) -> NoReturn:
    # Python's json accepts NaN/Infinity/-Infinity; RFC 8259 (and every JS peer) does not.
    raise ValueError(f"{name} is not valid JSON")


def preview(value: Any, limit: int = 60) -> str:
    """Short repr for error texts: repr() escapes control characters, so peer text cannot forge log lines."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _message_type(value: Any) -> int | None:
    # A JS peer cannot tell 2 from 2.0 (both are the same Number), so accept an integral float;
    # bool is an int subclass in Python and must not pass as 1/0.
    if type(value) is int:
        return value
    if type(value) is float and value.is_integer():
        return int(value)
    return None


def decode(text: str | bytes) -> Frame:
    """Parse one OCPP-J text frame.

    Raises :class:`RpcError`; see the module docstring for when ``unique_id`` /
    ``in_reply_to`` are set.  Error codes, by OCPP-J 1.6 §4.2.3 Table 7, with one rule:
    a *missing* wrapper element is "incomplete" (ProtocolError), anything else wrong with the
    wrapper is "syntactically incorrect or not conform the PDU structure" (FormationViolation):

    * not UTF-8 (§4.1.2 "MUST be valid JSON encoded with UTF-8"), not JSON, NaN/Infinity
      literals -> FormationViolation ("syntactically incorrect").
    * JSON but not an array -> FormationViolation ("not conform the PDU structure").
    * array too short for its message type (§4.2.1 "A Call always consists of 4 elements",
      §4.2.2 3 elements), including ``[]`` -> ProtocolError ("Payload for Action is incomplete").
    * MessageTypeId not an integer, UniqueId/Action not strings, payload not an object (or null,
      which §4.2.1/§4.2.2 explicitly allow and which decodes to ``{}``), surplus elements
      -> FormationViolation.
    * CALL UniqueId longer than 36 characters (§4.1.4 Table 3; §4.2.3 lists "unique identifier
      too long" as a CallError case) -> PropertyConstraintViolation, the same code a payload
      field over its maxLength gets; the over-long id is still echoed back.
    * MessageTypeId not 2, 3 or 4 -> FormationViolation without unique_id, because §4.1.3 says
      the receiver "SHALL ignore the message payload" (OCPP 1.6 has no MessageTypeNotSupported).
    """
    if isinstance(text, bytes | bytearray):
        try:
            text = bytes(text).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise RpcError(ErrorCode.FORMATION_VIOLATION, f"frame is not valid UTF-8: {exc}") from None
    try:
        msg = json.loads(text, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:
        raise RpcError(ErrorCode.FORMATION_VIOLATION, f"frame is not valid JSON: {exc}") from None

    if not isinstance(msg, list):
        raise RpcError(ErrorCode.FORMATION_VIOLATION, f"frame must be a JSON array, got {_json_type(msg)}")
    if not msg:
        raise RpcError(ErrorCode.PROTOCOL_ERROR, "frame has no MessageTypeId")

    mtype = _message_type(msg[0])
    if mtype is None:
        raise RpcError(ErrorCode.FORMATION_VIOLATION, f"MessageTypeId must be an integer, got {preview(msg[0])}")
    if mtype == MessageType.CALL:
        return _decode_call(msg)
    if mtype in (MessageType.CALLRESULT, MessageType.CALLERROR):
        try:
            return _decode_response(msg, mtype)
        except RpcError as err:
            err.answerable = False
            raise
    raise RpcError(ErrorCode.FORMATION_VIOLATION, f"unknown MessageTypeId {mtype}; frame ignored",
                   answerable=False)


def _decode_call(msg: list[Any]) -> Call:
    if len(msg) < 2:
        raise RpcError(ErrorCode.PROTOCOL_ERROR, "CALL has no UniqueId")
    uid = msg[1]
    if not isinstance(uid, str):
        raise RpcError(ErrorCode.FORMATION_VIOLATION, f"UniqueId must be a string, got {_json_type(uid)}")
    if len(uid) > MAX_UNIQUE_ID_LENGTH:
        raise RpcError(
            ErrorCode.PROPERTY_CONSTRAINT_VIOLATION,
            f"UniqueId is {len(uid)} characters, longer than {MAX_UNIQUE_ID_LENGTH}",
            uid,
        )
    if len(msg) < 4:
        raise RpcError(ErrorCode.PROTOCOL_ERROR, f"CALL must have 4 elements, got {len(msg)}", uid)
    if len(msg) > 4:
        raise RpcError(ErrorCode.FORMATION_VIOLATION, f"CALL must have 4 elements, got {len(msg)}", uid)
    action, payload = msg[2], msg[3]
    if not isinstance(action, str):
        raise RpcError(ErrorCode.FORMATION_VIOLATION, f"Action must be a string, got {_json_type(action)}", uid)
    if payload is None:
        payload = {}
    elif not isinstance(payload, dict):
        raise RpcError(
            ErrorCode.FORMATION_VIOLATION,
            f"{action} payload must be a JSON object, got {_json_type(payload)}",
            uid,
        )
    return Call(uid, action, payload)


def _decode_response(msg: list[Any], mtype: int) -> CallResult | CallError:
    name = "CALLRESULT" if mtype == MessageType.CALLRESULT else "CALLERROR"
    if len(msg) < 2:
        raise RpcError(ErrorCode.PROTOCOL_ERROR, f"{name} has no UniqueId")
    uid = msg[1]
    if not isinstance(uid, str):
        raise RpcError(ErrorCode.FORMATION_VIOLATION, f"{name} UniqueId must be a string, got {_json_type(uid)}")

    def fail(code: ErrorCode, description: str) -> NoReturn:
        raise RpcError(code, f"{name} {description}", in_reply_to=uid)

    if mtype == MessageType.CALLRESULT:
        if len(msg) != 3:
            fail(
                ErrorCode.PROTOCOL_ERROR if len(msg) < 3 else ErrorCode.FORMATION_VIOLATION,
                f"must have 3 elements, got {len(msg)}",
            )
        payload = msg[2]
        if payload is None:
            payload = {}
        elif not isinstance(payload, dict):
            fail(ErrorCode.FORMATION_VIOLATION, f"payload must be a JSON object, got {_json_type(payload)}")
        return CallResult(uid, payload)

    # §4.2.3 says a CallError "always consists of 5 elements", but we never answer one, so
    # rejecting a CALLERROR that merely omits description/details would only throw away the
    # error code and leave the pending call to time out.  Be liberal here.
    if len(msg) < 3:
        fail(ErrorCode.PROTOCOL_ERROR, f"must have 5 elements, got {len(msg)}")
    if len(msg) > 5:
        fail(ErrorCode.FORMATION_VIOLATION, f"must have 5 elements, got {len(msg)}")
    code = msg[2]
    description = msg[3] if len(msg) > 3 else ""
    details = msg[4] if len(msg) > 4 else None
    if not isinstance(code, str):
        fail(ErrorCode.FORMATION_VIOLATION, f"errorCode must be a string, got {_json_type(code)}")
    if not isinstance(description, str):
        fail(
            ErrorCode.FORMATION_VIOLATION,
            f"errorDescription must be a string, got {_json_type(description)}",
        )
    if details is None:
        details = {}
    elif not isinstance(details, dict):
        fail(ErrorCode.FORMATION_VIOLATION, f"errorDetails must be a JSON object, got {_json_type(details)}")
    return CallError(uid, code, description, details)


def encode(frame: Frame) -> str:
    """Serialise a frame as compact UTF-8-ready JSON text.

    Raises ``ValueError`` for a CALL whose id breaks §4.1.4 or for NaN/Infinity anywhere (not
    JSON), and ``TypeError`` for values JSON cannot carry: both are bugs on our side, never
    something to put on the wire.
    """
    message: list[Any]
    if isinstance(frame, Call):
        if len(frame.unique_id) > MAX_UNIQUE_ID_LENGTH:
            raise ValueError(f"CALL unique_id longer than {MAX_UNIQUE_ID_LENGTH} characters")
        message = [MessageType.CALL.value, frame.unique_id, frame.action, frame.payload]
    elif isinstance(frame, CallResult):
        message = [MessageType.CALLRESULT.value, frame.unique_id, frame.payload]
    elif isinstance(frame, CallError):
        # str() so an ErrorCode member goes out as its plain value.
        message = [
            MessageType.CALLERROR.value,
            frame.unique_id,
            str(frame.code),
            frame.description,
            frame.details,
        ]
    else:
        raise TypeError(f"not an OCPP-J frame: {type(frame).__name__}")
    text = json.dumps(message, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        # A lone surrogate echoed from the CSMS (legal as a JSON escape, not as UTF-8): keep it escaped so
        # the frame can still be sent and means exactly what the CSMS sent.
        text = json.dumps(message, separators=(",", ":"), ensure_ascii=True, allow_nan=False)
    return text
