"""Charging-profile validation and the installed-profile set, for SetChargingProfile / ClearChargingProfile (pure).

Nothing here reads a clock, does I/O or touches SQLite: the caller passes ``now`` (an aware datetime), the
active transactions and the configuration limits, and persists the set through :meth:`ProfileSet.to_rows` /
:meth:`ProfileSet.from_rows`.

Profiles are kept as the ``csChargingProfiles`` dicts of SetChargingProfile.req (the same shape
``composite_schedule`` takes), paired with the connectorId they were installed on, in install order.

Sources: OCPP 1.6 edition 2 sections 3.13.1-3.13.2 (purposes, stacking, replacement), 5.5 (ClearChargingProfile),
5.16 (SetChargingProfile), 7.8-7.14 (ChargingProfile, ChargingSchedule, ChargingSchedulePeriod), 9.4 (Smart
Charging configuration keys) and the errata sheet v4.0 (3.25/3.26 ClearChargingProfile matching, 3.37
persistence, 3.38/3.39 CALLERRORs, 3.41 RemoteStart without transactionId, 3.42 replacement of a RemoteStart
profile, 3.53 TxDefaultProfile on connector 0, 3.65/3.66 validFrom/validTo allowed on TxProfile).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeGuard

CHARGE_POINT_MAX = "ChargePointMaxProfile"
TX_DEFAULT = "TxDefaultProfile"
TX = "TxProfile"
PURPOSES = (CHARGE_POINT_MAX, TX_DEFAULT, TX)
KINDS = ("Absolute", "Recurring", "Relative")
RECURRENCY_KINDS = ("Daily", "Weekly")
# chargingRateUnit -> the ChargingScheduleAllowedChargingRateUnit value that allows it (9.4.2).
UNIT_KEYS = {"A": "Current", "W": "Power"}

Profile = dict[str, Any]


@dataclass(frozen=True)
class Limits:
    """What the charger accepts, from the Smart Charging configuration keys (9.4)."""

    max_stack_level: int  # ChargeProfileMaxStackLevel: the highest stackLevel accepted (0..max)
    allowed_units: tuple[str, ...]  # ChargingScheduleAllowedChargingRateUnit: subset of ("Current", "Power")
    max_periods: int  # ChargingScheduleMaxPeriods: per chargingSchedule
    max_installed: int  # MaxChargingProfilesInstalled: over all connectors and purposes
    number_of_connectors: int  # valid connectorIds are 0..number_of_connectors


def parse_datetime(value: Any) -> datetime | None:
    """An OCPP dateTime as an aware datetime, or None when it is not one. OCPP times are UTC, so a value without
    an offset is read as UTC (as the session does), never as local time."""
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def _is_int(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool)


def validate(connector_id: int, profile: Mapping[str, Any], limits: Limits, *,
             active_transactions: Mapping[int, int | None], installed: ProfileSet,
             remote_start: bool = False) -> str | None:
    """Check a SetChargingProfile.req (``connector_id`` and its ``csChargingProfiles``) before installing it.

    Returns None when the profile is acceptable, else a short reason (for the log) and the answer is Rejected.

    ``active_transactions`` maps each connector with a running transaction to its transactionId, or to None while
    the id is not known yet (StartTransaction.conf pending): a TxProfile naming a transactionId is then rejected,
    one without a transactionId is accepted.

    ``remote_start=True`` checks the chargingProfile of a RemoteStartTransaction.req instead (``connector_id`` is
    the connector the transaction will start on): it must be a TxProfile without transactionId (5.16.2, errata
    3.41), and no transaction has to be running yet.

    The JSON schema should already have turned malformed fields and unknown enumeration values into a CALLERROR
    (errata 3.38); they are checked here too, so that a profile that reaches the set is always well formed.
    Note: errata 3.39 asks for a CALLERROR PropertyConstraintViolation on an invalid connectorId; the issue asks
    for Rejected, which is what a reason here leads to. The caller may choose the CALLERROR for that one reason
    (it starts with "connectorId").

    Accepted on purpose, as the spec does not forbid them: a Relative schedule with a startSchedule (the engine
    ignores it), a validTo in the past or before validFrom (never contributes; purge_expired removes it), a
    Recurring schedule longer than its recurrence (errata 3.44: the remainder is not executed), a TxProfile
    without transactionId (it applies to the connector's running transaction).
    """
    purpose: Any = profile.get("chargingProfilePurpose")
    kind: Any = profile.get("chargingProfileKind")
    stack_level: Any = profile.get("stackLevel")
    schedule: Any = profile.get("chargingSchedule")
    transaction_id: Any = profile.get("transactionId")

    if not _is_int(profile.get("chargingProfileId")):
        return "chargingProfileId missing or not an integer"
    if purpose not in PURPOSES:
        return f"chargingProfilePurpose {purpose!r} not supported"
    if kind not in KINDS:
        return f"chargingProfileKind {kind!r} not supported"
    if not _is_int(connector_id) or not 0 <= connector_id <= limits.number_of_connectors:
        return f"connectorId {connector_id!r} out of range 0..{limits.number_of_connectors}"
    if not _is_int(stack_level) or not 0 <= stack_level <= limits.max_stack_level:
        return f"stackLevel {stack_level!r} outside 0..{limits.max_stack_level} (ChargeProfileMaxStackLevel)"

    if remote_start and purpose != TX:
        return f"a RemoteStartTransaction chargingProfile must be a TxProfile, not {purpose}"
    if purpose == CHARGE_POINT_MAX:
        # 3.13.1: "ChargePointMaxProfile can only be set at Charge Point ConnectorId 0". Relative needs a
        # transaction start, which a whole-charger limit does not have.
        if connector_id != 0:
            return f"ChargePointMaxProfile only on connector 0, not {connector_id}"
        if kind == "Relative":
            return "ChargePointMaxProfile cannot be of kind Relative"
    # 7.8: transactionId is "Only valid if ChargingProfilePurpose is set to TxProfile".
    if transaction_id is not None and purpose != TX:
        return f"transactionId is only valid for a TxProfile, not a {purpose}"
    if transaction_id is not None and not _is_int(transaction_id):
        return f"transactionId {transaction_id!r} is not an integer"
    if purpose == TX:
        # 3.13.1: "TxProfile SHALL only be set at Charge Point ConnectorId >0", and without an active
        # transaction on that connector the charger "SHALL discard it and return an error status".
        if connector_id == 0:
            return "TxProfile not allowed on connector 0"
        if remote_start:
            # Errata 3.41: in RemoteStartTransaction.req "the transactionId SHALL NOT be set".
            if transaction_id is not None:
                return "a RemoteStartTransaction chargingProfile must not have a transactionId"
        elif connector_id not in active_transactions:
            return f"TxProfile without an active transaction on connector {connector_id}"
        elif transaction_id is not None and transaction_id != active_transactions[connector_id]:
            active = active_transactions[connector_id]
            return (f"TxProfile transactionId {transaction_id} is not the active transaction "
                    f"{'(id not known yet)' if active is None else active} on connector {connector_id}")

    reason = _validate_schedule(schedule, limits)
    if reason is not None:
        return reason

    # 7.8/7.13: Absolute and Recurring schedules are anchored at startSchedule; Recurring needs its recurrencyKind.
    start_schedule = schedule.get("startSchedule")
    if kind in ("Absolute", "Recurring") and start_schedule is None:
        return f"{kind} profile without startSchedule"
    if start_schedule is not None and parse_datetime(start_schedule) is None:
        return f"startSchedule {start_schedule!r} is not a date-time"
    recurrency = profile.get("recurrencyKind")
    if kind == "Recurring" and recurrency is None:
        return "Recurring profile without recurrencyKind"
    if recurrency is not None and recurrency not in RECURRENCY_KINDS:
        return f"recurrencyKind {recurrency!r} not supported"
    for key in ("validFrom", "validTo"):
        # Errata 3.65/3.66: both are allowed on every purpose, TxProfile included.
        if profile.get(key) is not None and parse_datetime(profile[key]) is None:
            return f"{key} {profile[key]!r} is not a date-time"

    # MaxChargingProfilesInstalled counts what the set would hold after this profile replaced its namesakes.
    after = installed.count_after_install(connector_id, profile)
    if after > limits.max_installed:
        return f"too many profiles: {after} would be installed, MaxChargingProfilesInstalled is {limits.max_installed}"
    return None


def _validate_schedule(schedule: Any, limits: Limits) -> str | None:
    if not isinstance(schedule, Mapping):
        return "chargingSchedule missing"
    unit = schedule.get("chargingRateUnit")
    periods = schedule.get("chargingSchedulePeriod")
    if not isinstance(periods, list) or not periods:
        return "chargingSchedulePeriod missing or empty"  # 7.13: 1..*
    if len(periods) > limits.max_periods:
        return f"{len(periods)} periods, more than ChargingScheduleMaxPeriods {limits.max_periods}"
    if unit not in UNIT_KEYS or UNIT_KEYS[unit] not in limits.allowed_units:
        return f"chargingRateUnit {unit!r} not allowed (ChargingScheduleAllowedChargingRateUnit {limits.allowed_units})"
    duration = schedule.get("duration")
    if duration is not None and (not _is_int(duration) or duration < 0):
        return f"duration {duration!r} is not a non-negative integer"
    previous: int | None = None
    for period in periods:
        if not isinstance(period, Mapping):
            return "chargingSchedulePeriod entry is not an object"
        start = period.get("startPeriod")
        if not _is_int(start):
            return f"startPeriod {start!r} is not an integer"
        # 7.13: "The startSchedule of the first ChargingSchedulePeriod SHALL always be 0"; 7.14: each startPeriod
        # is the end of the previous period, so they have to increase.
        if previous is None and start != 0:
            return f"first startPeriod is {start}, not 0"
        if previous is not None and start <= previous:
            return f"startPeriods not strictly increasing ({previous} then {start})"
        previous = start
        phases = period.get("numberPhases")
        if phases is not None and (not _is_int(phases) or not 1 <= phases <= 3):
            return f"numberPhases {phases!r} outside 1..3"
        limit = period.get("limit")
        if not _is_number(limit) or not math.isfinite(limit) or limit < 0:
            return f"limit {limit!r} is negative or not a finite number"
    return None


def _replaces(old_connector: int, old: Mapping[str, Any], connector_id: int, new: Mapping[str, Any]) -> bool:
    """5.16.3/5.16.4 and 3.13.2: the same chargingProfileId (on any connector), or the same connectorId,
    stackLevel and purpose. Errata 3.42 (a SetChargingProfile for the transaction of a RemoteStart, with the
    RemoteStart profile's stackLevel, replaces it) is the second case."""
    if old.get("chargingProfileId") == new.get("chargingProfileId"):
        return True
    return (old_connector == connector_id and old.get("stackLevel") == new.get("stackLevel")
            and old.get("chargingProfilePurpose") == new.get("chargingProfilePurpose"))


class ProfileSet:
    """The installed charging profiles as (connector_id, csChargingProfiles dict), in install order.

    The set owns deep copies of what it is given; :meth:`profiles` hands out the stored dicts themselves (no copy,
    it is called on every recomputation): treat them as read-only. Methods that remove profiles return whether
    anything was removed, so the caller knows when to recompute and persist.
    """

    def __init__(self) -> None:
        self._items: list[tuple[int, Profile]] = []

    def __len__(self) -> int:
        return len(self._items)

    def profiles(self) -> list[tuple[int, Profile]]:
        """Install order: the ``profiles`` argument of ``composite_schedule``."""
        return list(self._items)

    def count_after_install(self, connector_id: int, profile: Mapping[str, Any]) -> int:
        """How many profiles the set would hold after :meth:`install` (replacing does not add one)."""
        kept = sum(1 for cid, old in self._items if not _replaces(cid, old, connector_id, profile))
        return kept + 1

    def install(self, connector_id: int, profile: Mapping[str, Any]) -> None:
        """Add a validated profile at the end, after dropping those it replaces (see :func:`_replaces`)."""
        self._items = [(cid, old) for cid, old in self._items if not _replaces(cid, old, connector_id, profile)]
        self._items.append((connector_id, copy.deepcopy(dict(profile))))

    def clear(self, *, id: int | None = None, connector_id: int | None = None, purpose: str | None = None,
              stack_level: int | None = None) -> bool:
        """ClearChargingProfile.req (5.5, errata 3.25/3.26): with an id only the id matters; otherwise the given
        fields are ANDed; with none, all profiles go. False when nothing matched (answer Unknown)."""

        def matches(cid: int, profile: Profile) -> bool:
            if id is not None:
                return bool(profile.get("chargingProfileId") == id)
            return ((connector_id is None or cid == connector_id)
                    and (purpose is None or profile.get("chargingProfilePurpose") == purpose)
                    and (stack_level is None or profile.get("stackLevel") == stack_level))

        return self._remove(matches)

    def transaction_ended(self, connector_id: int) -> bool:
        """Remove the connector's TxProfiles: they "cease to be valid when the transaction terminates" (7.10)."""
        return self._remove(lambda cid, p: cid == connector_id and p.get("chargingProfilePurpose") == TX)

    def purge_expired(self, now: datetime) -> bool:
        """Remove the profiles whose validTo is at or before ``now`` (validTo is when a profile stops being valid)."""
        if now.tzinfo is None:
            raise ValueError("now must be an aware datetime")

        def expired(_cid: int, profile: Profile) -> bool:
            valid_to = parse_datetime(profile.get("validTo"))
            return valid_to is not None and valid_to <= now

        return self._remove(expired)

    def next_expiry(self) -> datetime | None:
        """The earliest validTo of the installed profiles: when to call :meth:`purge_expired` next (no polling)."""
        times = [t for _cid, p in self._items if (t := parse_datetime(p.get("validTo"))) is not None]
        return min(times, default=None)

    def to_rows(self) -> list[tuple[int, Profile]]:
        """Deep copies of (connector_id, profile) in install order, for the store (the dicts are JSON-ready)."""
        return [(cid, copy.deepcopy(p)) for cid, p in self._items]

    @classmethod
    def from_rows(cls, rows: Iterable[tuple[int, Mapping[str, Any]]]) -> ProfileSet:
        """Rebuild a set from :meth:`to_rows` output (install order); replacement applies as on install."""
        restored = cls()
        for connector_id, profile in rows:
            restored.install(connector_id, profile)
        return restored

    def _remove(self, predicate: Callable[[int, Profile], bool]) -> bool:
        before = len(self._items)
        self._items = [(cid, p) for cid, p in self._items if not predicate(cid, p)]
        return len(self._items) != before
