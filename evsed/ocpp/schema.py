"""Small, fast JSON Schema validator for the OCPP 1.6 message schemas.

The ``jsonschema`` package is too heavy for the Raspberry Pi target, and the 78 OCPP 1.6
schemas (draft-04 core, draft-06 security extension) use only a small subset of JSON Schema:
``type`` (single names), ``properties``, ``required``, ``additionalProperties: false``, ``enum``,
``maxLength``, ``format`` (``date-time``, ``uri``), ``items``, ``additionalItems``, ``minItems``,
``multipleOf`` and local ``$ref`` into ``definitions``.  We compile each schema once into nested
closures, lazily per action, and refuse at compile time any keyword we do not implement, so a
schema update that needs more cannot be silently under-validated.

Semantics follow what ajv + ajv-formats (the validator of the ocpp-rpc stack many CSMSs run in
strict mode) accept, so frames we pass also pass there:

* ``integer`` accepts an integral float (``3.0``: JavaScript cannot tell it from ``3``) and
  rejects bool (an int subclass in Python); ``number`` rejects bool and non-finite floats.
* ``date-time`` is ajv-formats 3.x "full" mode: RFC 3339 with a mandatory time zone.
* ``uri`` is ajv-formats' full RFC 3986 regex.
* ``multipleOf`` is exact decimal arithmetic on the JSON number (``1.1`` is a multiple of
  ``0.1``), not binary float division.

Error codes (OCPP-J 1.6 §4.2.3 Table 7): wrong JSON type -> TypeConstraintViolation; enum,
length, range, multipleOf and format -> PropertyConstraintViolation ("field contains an invalid
value"); required, additionalProperties, min/maxItems, additionalItems ->
OccurenceConstraintViolation; payload not an object -> FormationViolation.
"""

from __future__ import annotations

import functools
import json
import math
import re
from collections.abc import Callable, Iterable
from decimal import Context, Decimal, InvalidOperation
from importlib import resources
from typing import Any, Final, NoReturn

from evsed.ocpp.rpc import ErrorCode, RpcError, preview

__all__ = ["Validator", "is_date_time", "is_uri"]

_Check = Callable[[Any], None]

_TYPE: Final = ErrorCode.TYPE_CONSTRAINT_VIOLATION
_PROPERTY: Final = ErrorCode.PROPERTY_CONSTRAINT_VIOLATION
_OCCURENCE: Final = ErrorCode.OCCURENCE_CONSTRAINT_VIOLATION

# Keywords that carry no validation meaning for us.  "additionalItems" is handled next to
# "items" (it is meaningless unless "items" is a list).
_ANNOTATIONS: Final = frozenset(
    {
        "$schema",
        "$id",
        "id",
        "title",
        "description",
        "definitions",
        "javaType",
        "default",
        "$comment",
        "examples",
        "additionalItems",
    }
)
_KEYWORDS: Final = frozenset(
    {
        "type",
        "enum",
        "maxLength",
        "minLength",
        "format",
        "minimum",
        "maximum",
        "exclusiveMinimum",
        "exclusiveMaximum",
        "multipleOf",
        "properties",
        "required",
        "additionalProperties",
        "items",
        "minItems",
        "maxItems",
        "$ref",
    }
)


class _Fail(Exception):
    """Internal validation failure; ``path`` grows leaf-first while the exception unwinds.

    Building the path only on the way out keeps the happy path free of any bookkeeping (try
    blocks are zero-cost on CPython 3.11+).
    """

    __slots__ = ("code", "keyword", "message", "path")

    def __init__(self, code: ErrorCode, keyword: str, message: str, segment: str | int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.keyword = keyword
        self.message = message
        self.path: list[str | int] = [] if segment is None else [segment]


def _noop(value: Any) -> None:
    return None


_SIMPLE_KEY: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


def _format_path(reversed_path: list[str | int]) -> str:
    parts: list[str] = []
    for segment in reversed(reversed_path):
        if isinstance(segment, int):
            parts.append(f"[{segment}]")
        elif len(segment) <= 60 and _SIMPLE_KEY.match(segment):
            parts.append(f".{segment}" if parts else segment)
        else:
            # Unknown keys come from the peer: quote them so a description can't be spoofed
            # or broken by dots, newlines or sheer length.
            parts.append(f"[{preview(segment)}]")
    return "".join(parts)


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


# --------------------------------------------------------------------------------------------
# Type predicates.  Checking exact types first keeps the common case to one identity test.


def _is_integer(value: Any) -> bool:
    t = type(value)
    if t is int:
        return True
    if t is float:
        return bool(value.is_integer())  # False for inf and nan too
    if t is bool:
        return False
    if isinstance(value, int):  # IntEnum and friends from our own code
        return not isinstance(value, bool)
    return isinstance(value, float) and value.is_integer()


def _is_number(value: Any) -> bool:
    t = type(value)
    if t is int:
        return True
    if t is float:
        return math.isfinite(value)
    if t is bool:
        return False
    if isinstance(value, int):
        return not isinstance(value, bool)
    return isinstance(value, float) and math.isfinite(value)


def _is_string(value: Any) -> bool:
    return isinstance(value, str)


def _is_object(value: Any) -> bool:
    return isinstance(value, dict)


def _is_array(value: Any) -> bool:
    return isinstance(value, list)


def _is_boolean(value: Any) -> bool:
    return isinstance(value, bool)


def _is_null(value: Any) -> bool:
    return value is None


_TYPE_TESTS: Final[dict[str, Callable[[Any], bool]]] = {
    "string": _is_string,
    "integer": _is_integer,
    "number": _is_number,
    "object": _is_object,
    "array": _is_array,
    "boolean": _is_boolean,
    "null": _is_null,
}


# --------------------------------------------------------------------------------------------
# Formats, matching ajv-formats 3.x "full" mode.  Python's \d, \s and $ are wider than
# JavaScript's (Unicode digits, extra spaces, "before a trailing newline"), so the classes are
# spelled out and the patterns end in \Z.

# ajv-formats splits on /t|\s/i: JavaScript's \s, not Python's.
_JS_SPACE: Final = "\t\n\v\f\r \u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\ufeff"
_DATE_TIME: Final = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})"
    rf"[tT{_JS_SPACE}]"
    r"([0-9]{2}):([0-9]{2}):([0-9]{2}(?:\.[0-9]+)?)"
    r"(?:[zZ]|([+-])([0-9]{2})(?::?([0-9]{2}))?)\Z"
)
_DAYS: Final = (0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


def is_date_time(text: str) -> bool:
    """RFC 3339 date-time exactly as ajv-formats 3.x (full mode) checks it.

    The time zone ("Z" or ±hh[:]mm) is mandatory; "T" may be any case or a space; fractional
    seconds of any length; a leap second (":60") only where it is 23:59 UTC.
    """
    m = _DATE_TIME.match(text)
    if m is None:
        return False
    year, month, day = int(m[1]), int(m[2]), int(m[3])
    if not 1 <= month <= 12 or day < 1:
        return False
    leap = year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)
    if day > (29 if month == 2 and leap else _DAYS[month]):
        return False
    hour, minute, second = int(m[4]), int(m[5]), float(m[6])
    sign = -1 if m[7] == "-" else 1
    tz_hour = int(m[8]) if m[8] else 0
    tz_minute = int(m[9]) if m[9] else 0
    if tz_hour > 23 or tz_minute > 59:
        return False
    if hour <= 23 and minute <= 59 and second < 60:
        return True
    utc_minute = minute - tz_minute * sign
    utc_hour = hour - tz_hour * sign - (1 if utc_minute < 0 else 0)
    return utc_hour in (23, -1) and utc_minute in (59, -1) and second < 61


# ajv-formats' "uri" (jmrware.com RFC 3986 regex): absolute URI, scheme required.
_URI: Final = re.compile(
    r"(?:[a-z][a-z0-9+\-.]*:)(?:\/?\/(?:(?:[a-z0-9\-._~!$&'()*+,;=:]|%[0-9a-f]{2})*@)?(?:\[(?:(?:(?:(?:[0-9a-f]{1,4}:){6}|::(?:[0-9a-f]{1,4}:){5}|(?:[0-9a-f]{1,4})?::(?:[0-9a-f]{1,4}:){4}|(?:(?:[0-9a-f]{1,4}:){0,1}[0-9a-f]{1,4})?::(?:[0-9a-f]{1,4}:){3}|(?:(?:[0-9a-f]{1,4}:){0,2}[0-9a-f]{1,4})?::(?:[0-9a-f]{1,4}:){2}|(?:(?:[0-9a-f]{1,4}:){0,3}[0-9a-f]{1,4})?::[0-9a-f]{1,4}:|(?:(?:[0-9a-f]{1,4}:){0,4}[0-9a-f]{1,4})?::)(?:[0-9a-f]{1,4}:[0-9a-f]{1,4}|(?:(?:25[0-5]|2[0-4]\d|[01]?\d\d?)\.){3}(?:25[0-5]|2[0-4]\d|[01]?\d\d?))|(?:(?:[0-9a-f]{1,4}:){0,5}[0-9a-f]{1,4})?::[0-9a-f]{1,4}|(?:(?:[0-9a-f]{1,4}:){0,6}[0-9a-f]{1,4})?::)|[Vv][0-9a-f]+\.[a-z0-9\-._~!$&'()*+,;=:]+)\]|(?:(?:25[0-5]|2[0-4]\d|[01]?\d\d?)\.){3}(?:25[0-5]|2[0-4]\d|[01]?\d\d?)|(?:[a-z0-9\-._~!$&'()*+,;=]|%[0-9a-f]{2})*)(?::\d*)?(?:\/(?:[a-z0-9\-._~!$&'()*+,;=:@]|%[0-9a-f]{2})*)*|\/(?:(?:[a-z0-9\-._~!$&'()*+,;=:@]|%[0-9a-f]{2})+(?:\/(?:[a-z0-9\-._~!$&'()*+,;=:@]|%[0-9a-f]{2})*)*)?|(?:[a-z0-9\-._~!$&'()*+,;=:@]|%[0-9a-f]{2})+(?:\/(?:[a-z0-9\-._~!$&'()*+,;=:@]|%[0-9a-f]{2})*)*)(?:\?(?:[a-z0-9\-._~!$&'()*+,;=:@/?]|%[0-9a-f]{2})*)?(?:#(?:[a-z0-9\-._~!$&'()*+,;=:@/?]|%[0-9a-f]{2})*)?\Z",
    re.IGNORECASE | re.ASCII,
)


def is_uri(text: str) -> bool:
    """Absolute URI as ajv-formats "uri" (full mode) checks it."""
    return ("/" in text or ":" in text) and _URI.match(text) is not None


_FORMATS: Final[dict[str, tuple[Callable[[str], bool], str]]] = {
    "date-time": (is_date_time, "RFC 3339 date-time with time zone"),
    "uri": (is_uri, "URI"),
}


# --------------------------------------------------------------------------------------------
# multipleOf: exact decimal arithmetic.  repr() of a float is the shortest text that round-trips,
# i.e. what the peer wrote, so 1.1 is a multiple of 0.1 even though 1.1 / 0.1 != 11 in binary.
# A wide context keeps huge values (1e300 % 0.1) from raising DivisionImpossible.
_DECIMAL: Final = Context(prec=800)


def _to_decimal(value: int | float) -> Decimal:
    return Decimal(value) if isinstance(value, int) else Decimal(repr(float(value)))


def _is_multiple(value: int | float, divisor: Decimal) -> bool:
    try:
        return _DECIMAL.remainder(_to_decimal(value), divisor).is_zero()
    except InvalidOperation:
        return False


# --------------------------------------------------------------------------------------------
# enum


def _json_equal(a: Any, b: Any) -> bool:
    """JSON equality: 1 == 1.0 but True != 1 and "1" != 1."""
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_json_equal(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_json_equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, str) and isinstance(b, str):
        return a == b
    return a is None and b is None


def _enum_check(values: list[Any]) -> _Check:
    shown = repr(values)
    if len(shown) > 300:
        shown = shown[:296] + "...]"
    if values and all(isinstance(v, str) for v in values):
        allowed = frozenset(values)

        def check_str_enum(value: Any) -> None:
            if not (isinstance(value, str) and value in allowed):
                raise _Fail(_PROPERTY, "enum", f"{preview(value)} is not one of {shown}")

        return check_str_enum

    def check_enum(value: Any) -> None:
        if not any(_json_equal(value, v) for v in values):
            raise _Fail(_PROPERTY, "enum", f"{preview(value)} is not one of {shown}")

    return check_enum


# --------------------------------------------------------------------------------------------
# Compiler


def _sequence(checks: list[_Check]) -> _Check:
    if not checks:
        return _noop
    if len(checks) == 1:
        return checks[0]
    if len(checks) == 2:
        first, second = checks

        def check_two(value: Any) -> None:
            first(value)
            second(value)

        return check_two
    frozen = tuple(checks)

    def check_all(value: Any) -> None:
        for check in frozen:
            check(value)

    return check_all


def _guarded(test: Callable[[Any], bool], checks: list[_Check]) -> list[_Check]:
    """Keywords apply only to instances of their own type (a no-op for other types)."""
    if not checks:
        return []
    inner = _sequence(checks)

    def guarded(value: Any) -> None:
        if test(value):
            inner(value)

    return [guarded]


class _Compiler:
    def __init__(self, root: dict[str, Any], name: str) -> None:
        self.root = root
        self.name = name
        self.refs: dict[str, _Check] = {}

    def error(self, message: str) -> NoReturn:
        raise ValueError(f"schema {self.name}: {message}")

    def resolve(self, ref: str) -> Any:
        if not ref.startswith("#"):
            self.error(f"only local $ref is supported, got {ref!r}")
        node: Any = self.root
        pointer = ref[1:]
        if pointer and not pointer.startswith("/"):
            self.error(f"bad JSON pointer in $ref {ref!r}")
        for token in pointer.split("/")[1:]:
            token = token.replace("~1", "/").replace("~0", "~")
            if isinstance(node, dict) and token in node:
                node = node[token]
            elif isinstance(node, list) and token.isdigit() and int(token) < len(node):
                node = node[int(token)]
            else:
                self.error(f"unresolvable $ref {ref!r}")
        return node

    def ref(self, ref: str) -> _Check:
        cached = self.refs.get(ref)
        if cached is not None:
            return cached
        # Indirection so a (self-)recursive definition compiles without infinite recursion.
        slot: list[_Check] = []

        def deferred(value: Any) -> None:
            slot[0](value)

        self.refs[ref] = deferred
        compiled = self.node(self.resolve(ref))
        slot.append(compiled)
        self.refs[ref] = compiled
        return compiled

    def node(self, schema: Any) -> _Check:
        if schema is True:
            return _noop
        if schema is False:

            def never(value: Any) -> None:
                raise _Fail(_OCCURENCE, "false", "no value is allowed here")

            return never
        if not isinstance(schema, dict):
            self.error(f"schema must be an object or boolean, got {schema!r}")
        if "$ref" in schema:
            # draft-04/06: keywords beside $ref are ignored.
            return self.ref(schema["$ref"])
        unknown = schema.keys() - _KEYWORDS - _ANNOTATIONS
        if unknown:
            self.error(f"unsupported keyword(s) {sorted(unknown)}")

        types = self.types(schema.get("type"))
        enum_checks = [_enum_check(schema["enum"])] if "enum" in schema else []

        if types is not None and len(types) == 1:
            # The common case: the type test already proves which keyword family applies, so
            # only that family is compiled and it runs unguarded.
            (type_name,) = types
            # Hot paths (every MeterValues field is one of these): one fused closure each.
            if type_name == "string" and all(isinstance(x, str) for x in schema.get("enum", [""])):
                return self.string_node(schema)
            if type_name == "object" and not enum_checks:
                fused = self.object_checks(schema, typed=True)
                if fused:
                    return fused[0]
            family: list[_Check] = []
            if type_name == "string":
                family = self.string_checks(schema)
            elif type_name in ("integer", "number"):
                family = self.number_checks(schema)
            elif type_name == "object":
                family = self.object_checks(schema)
            elif type_name == "array":
                family = self.array_checks(schema)
            return _sequence([self.type_check(types), *family, *enum_checks])

        checks: list[_Check] = []
        if types is not None:
            checks.append(self.type_check(types))
        checks += _guarded(_is_string, self.string_checks(schema))
        checks += _guarded(_is_number, self.number_checks(schema))
        checks += _guarded(_is_object, self.object_checks(schema))
        checks += _guarded(_is_array, self.array_checks(schema))
        checks += enum_checks
        return _sequence(checks)

    def types(self, spec: Any) -> tuple[str, ...] | None:
        if spec is None:
            return None
        names = (spec,) if isinstance(spec, str) else tuple(spec) if isinstance(spec, list) else None
        if not names or any(n not in _TYPE_TESTS for n in names):
            self.error(f"bad type {spec!r}")
        return names

    def type_check(self, types: tuple[str, ...]) -> _Check:
        expected = " or ".join(types)
        if len(types) == 1:
            test = _TYPE_TESTS[types[0]]

            def check_type(value: Any) -> None:
                if not test(value):
                    raise _Fail(_TYPE, "type", f"expected {expected}, got {_describe(value)}")

            return check_type
        tests = tuple(_TYPE_TESTS[t] for t in types)

        def check_types(value: Any) -> None:
            if not any(test(value) for test in tests):
                raise _Fail(_TYPE, "type", f"expected {expected}, got {_describe(value)}")

        return check_types

    def number_value(self, schema: dict[str, Any], key: str) -> int | float:
        value = schema[key]
        if not _is_number(value):
            self.error(f"{key} must be a number, got {value!r}")
        return int(value) if isinstance(value, int) else float(value)

    def count_value(self, schema: dict[str, Any], key: str, default: int | None) -> int | None:
        if key not in schema:
            return default
        value = schema[key]
        if not _is_integer(value) or value < 0:
            self.error(f"{key} must be a non-negative integer, got {value!r}")
        return int(value)

    def string_checks(self, schema: dict[str, Any]) -> list[_Check]:
        checks: list[_Check] = []
        max_length = self.count_value(schema, "maxLength", None)
        min_length = self.count_value(schema, "minLength", 0) or 0
        if max_length is not None or min_length:
            limit = max_length

            # len() counts code points, as JSON Schema (and ajv's ucs2length) do.
            def check_length(value: str) -> None:
                n = len(value)
                if limit is not None and n > limit:
                    raise _Fail(_PROPERTY, "maxLength", f"string of {n} characters exceeds maxLength {limit}")
                if n < min_length:
                    raise _Fail(_PROPERTY, "minLength", f"string of {n} characters is below minLength {min_length}")

            checks.append(check_length)
        fmt = schema.get("format")
        if fmt is not None:
            known = _FORMATS.get(fmt)
            if known is None:
                # ajv (strict) refuses unknown formats at compile time; so do we.
                self.error(f"unsupported format {fmt!r}")
            test, label = known

            def check_format(value: str) -> None:
                if not test(value):
                    raise _Fail(_PROPERTY, "format", f"{preview(value)} is not a valid {label}")

            checks.append(check_format)
        return checks

    def number_checks(self, schema: dict[str, Any]) -> list[_Check]:
        checks: list[_Check] = []
        bounds: list[tuple[str, int | float, bool, bool]] = []  # keyword, limit, is_lower, exclusive
        for key, lower in (("minimum", True), ("maximum", False)):
            if key in schema:
                exclusive_key = "exclusiveMinimum" if lower else "exclusiveMaximum"
                # draft-04: boolean modifier of minimum/maximum.
                exclusive = schema.get(exclusive_key) is True
                bounds.append((key, self.number_value(schema, key), lower, exclusive))
        for key, lower in (("exclusiveMinimum", True), ("exclusiveMaximum", False)):
            # draft-06: a number of its own.
            if key in schema and not isinstance(schema[key], bool):
                bounds.append((key, self.number_value(schema, key), lower, True))
        for keyword, limit, lower, exclusive in bounds:
            checks.append(_bound_check(keyword, limit, lower, exclusive))
        if "multipleOf" in schema:
            raw = self.number_value(schema, "multipleOf")
            if raw <= 0:
                self.error("multipleOf must be > 0")
            divisor = _to_decimal(raw)

            def check_multiple(value: int | float) -> None:
                if not _is_multiple(value, divisor):
                    raise _Fail(_PROPERTY, "multipleOf", f"{value!r} is not a multiple of {raw!r}")

            checks.append(check_multiple)
        return checks

    def string_node(self, schema: dict[str, Any]) -> _Check:
        lengths = self.string_checks({k: schema[k] for k in ("maxLength", "minLength") if k in schema})
        formats = self.string_checks({"format": schema["format"]}) if "format" in schema else []
        check_length = lengths[0] if lengths else None
        check_format = formats[0] if formats else None
        allowed = frozenset(schema["enum"]) if "enum" in schema else None
        # Only called once membership has failed, to raise with the standard message.
        enum_fail = _enum_check(schema["enum"]) if "enum" in schema else _noop

        def check_string(value: Any) -> None:
            if not isinstance(value, str):
                raise _Fail(_TYPE, "type", f"expected string, got {_describe(value)}")
            if check_length is not None:
                check_length(value)
            if allowed is not None and value not in allowed:
                enum_fail(value)
            if check_format is not None:
                check_format(value)

        return check_string

    def object_checks(self, schema: dict[str, Any], *, typed: bool = False) -> list[_Check]:
        properties = schema.get("properties", {})
        required = schema.get("required", [])
        additional = schema.get("additionalProperties", True)
        if not isinstance(properties, dict) or not isinstance(required, list):
            self.error("properties must be an object and required a list")
        if not properties and not required and additional is True:
            return []
        props: dict[str, _Check] = {name: self.node(sub) for name, sub in properties.items()}
        required_names = tuple(required)
        forbid_extra = additional is False
        extra_check: _Check | None = None if additional in (True, False) else self.node(additional)
        get = props.get

        def check_object(value: dict[str, Any]) -> None:
            if typed and not isinstance(value, dict):
                raise _Fail(_TYPE, "type", f"expected object, got {_describe(value)}")
            for name in required_names:
                if name not in value:
                    raise _Fail(_OCCURENCE, "required", "required property is missing", name)
            for key, item in value.items():
                check = get(key)
                if check is None:
                    if forbid_extra:
                        raise _Fail(_OCCURENCE, "additionalProperties", "additional property is not allowed", key)
                    if extra_check is None:
                        continue
                    check = extra_check
                try:
                    check(item)
                except _Fail as failure:
                    failure.path.append(key)
                    raise

        return [check_object]

    def array_checks(self, schema: dict[str, Any]) -> list[_Check]:
        checks: list[_Check] = []
        min_items = self.count_value(schema, "minItems", 0) or 0
        max_items = self.count_value(schema, "maxItems", None)
        if min_items or max_items is not None:

            def check_count(value: list[Any]) -> None:
                n = len(value)
                if n < min_items:
                    raise _Fail(_OCCURENCE, "minItems", f"array has {n} item(s), fewer than minItems {min_items}")
                if max_items is not None and n > max_items:
                    raise _Fail(_OCCURENCE, "maxItems", f"array has {n} item(s), more than maxItems {max_items}")

            checks.append(check_count)
        items = schema.get("items")
        if isinstance(items, list):
            checks.append(self.tuple_check(items, schema.get("additionalItems", True)))
        elif items is not None:
            item_check = self.node(items)
            if item_check is not _noop:

                def check_items(value: list[Any]) -> None:
                    for index, item in enumerate(value):
                        try:
                            item_check(item)
                        except _Fail as failure:
                            failure.path.append(index)
                            raise

                checks.append(check_items)
        return checks

    def tuple_check(self, items: list[Any], additional: Any) -> _Check:
        positional = tuple(self.node(sub) for sub in items)
        forbid_extra = additional is False
        extra_check = None if additional in (True, False) else self.node(additional)

        def check_tuple(value: list[Any]) -> None:
            for index, item in enumerate(value):
                if index < len(positional):
                    check = positional[index]
                elif forbid_extra:
                    raise _Fail(_OCCURENCE, "additionalItems", "additional item is not allowed", index)
                elif extra_check is None:
                    return
                else:
                    check = extra_check
                try:
                    check(item)
                except _Fail as failure:
                    failure.path.append(index)
                    raise

        return check_tuple


def _bound_check(keyword: str, limit: int | float, lower: bool, exclusive: bool) -> _Check:
    relation = (">" if exclusive else ">=") if lower else ("<" if exclusive else "<=")

    def check_bound(value: int | float) -> None:
        if lower:
            ok = value > limit if exclusive else value >= limit
        else:
            ok = value < limit if exclusive else value <= limit
        if not ok:
            raise _Fail(_PROPERTY, keyword, f"{value!r} is not {relation} {limit!r}")

    return check_bound


def _describe(value: Any) -> str:
    kind = _json_type(value)
    if kind in ("object", "array"):
        return kind
    return f"{kind} {preview(value)}"


# --------------------------------------------------------------------------------------------
# Loading.  Compiled checks are cached per process, not per Validator: they are immutable and
# every connection can share them.

_VERSION_NAME: Final = re.compile(r"[A-Za-z0-9_]+\Z")


def _schema_dir(version: str) -> Any:
    return resources.files("evsed.ocpp").joinpath("schemas", version)


@functools.cache
def _action_names(version: str) -> frozenset[str]:
    directory = _schema_dir(version)
    if not directory.is_dir():
        return frozenset()
    files = {entry.name[:-5] for entry in directory.iterdir() if entry.name.endswith(".json")}
    return frozenset(name for name in files if not name.endswith("Response") or name[:-8] not in files)


@functools.cache
def _compiled(version: str, name: str) -> _Check:
    text = _schema_dir(version).joinpath(f"{name}.json").read_text(encoding="utf-8-sig")
    root = json.loads(text)
    if not isinstance(root, dict):
        raise ValueError(f"schema {version}/{name}: not a JSON object")
    return _Compiler(root, f"{version}/{name}").node(root)


def _iter_schema_names(version: str) -> Iterable[str]:
    for action in sorted(_action_names(version)):
        yield action
        yield action + "Response"


class Validator:
    """Validates OCPP payloads against the bundled schemas of one protocol version."""

    __slots__ = ("_actions", "_version")

    def __init__(self, version: str = "v16") -> None:
        if not _VERSION_NAME.match(version):
            raise ValueError(f"bad schema version {version!r}")
        actions = _action_names(version)
        if not actions:
            raise ValueError(f"no OCPP schemas bundled for {version!r}")
        self._version = version
        self._actions = actions

    @property
    def version(self) -> str:
        return self._version

    @property
    def actions(self) -> frozenset[str]:
        """Every action with a request schema."""
        return self._actions

    def knows(self, action: str) -> bool:
        # Set membership, never a file lookup: the action name comes from the peer.
        return action in self._actions

    def compile_all(self) -> None:
        """Compile every schema now (e.g. at start-up, to fail fast or warm the cache)."""
        for name in _iter_schema_names(self._version):
            _compiled(self._version, name)

    def validate_request(self, action: str, payload: dict[str, Any]) -> None:
        self._validate(action, payload, "")

    def validate_response(self, action: str, payload: dict[str, Any]) -> None:
        self._validate(action, payload, "Response")

    def _validate(self, action: str, payload: Any, suffix: str) -> None:
        if action not in self._actions:
            raise RpcError(ErrorCode.NOT_IMPLEMENTED, f"unknown action {preview(action)}")
        check = _compiled(self._version, action + suffix)
        if not isinstance(payload, dict):
            raise RpcError(
                ErrorCode.FORMATION_VIOLATION,
                f"{action}{suffix or 'Request'} payload must be a JSON object, got {_json_type(payload)}",
                details={"path": "", "keyword": "type"},
            )
        try:
            check(payload)
        except _Fail as failure:
            path = _format_path(failure.path)
            description = f"{path}: {failure.message}" if path else failure.message
            raise RpcError(failure.code, description, details={"path": path, "keyword": failure.keyword}) from None
