"""The charger's smart-charging state: installed profiles (persisted), the OCPP answers, and the limits they set.

Plain Python around the pure parts (``profiles.validate``, ``ProfileSet``, ``composite_schedule``): the caller passes
the wall-clock time and the running transactions, and gets back statuses, schedules and per-connector limits with
the time they next change. Only the store is I/O, through a two-method port.

Sources: OCPP 1.6 edition 2 sections 3.13, 5.5, 5.7, 5.16, 9.4 and the errata sheet v4.0 (3.24-3.30, 3.37).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from evsed.smartcharging.composite import composite_schedule
from evsed.smartcharging.profiles import CHARGE_POINT_MAX, Limits, ProfileSet, validate

log = logging.getLogger(__name__)

# The limiter looks this far ahead for the next change; with none in sight it evaluates again after it.
HORIZON_S = 86_400
# GetCompositeSchedule without a chargingRateUnit answers in the first allowed unit (9.4.2 order).
UNIT_OF_KEY = {"Current": "A", "Power": "W"}

# {connector: (transaction start, CSMS transactionId or None while unknown)}
Transactions = Mapping[int, tuple[datetime, int | None]]


class ProfileStore(Protocol):
    def charging_profiles(self) -> list[tuple[int, dict[str, Any]]]: ...
    def replace_charging_profiles(self, rows: list[tuple[int, dict[str, Any]]]) -> None: ...


@dataclass(frozen=True)
class ConnectorLimits:
    """The limiter's answer: amps per connector (None where no profile restricts below the local maximum) and the
    wall-clock moment the answer may change next (a period boundary, a validTo, or the horizon)."""

    amps: dict[int, float | None]
    next_change: datetime


class SmartCharging:
    def __init__(self, store: ProfileStore, limits: Limits, *, local_max_a: Mapping[int, float],
                 voltage: float = 230.0, default_phases: int = 3, max_duration_s: int = 7 * 86400) -> None:
        """local_max_a: each connector's local maximum (its hardware/installation limit) in A per phase."""
        self.store = store
        self.limits = limits
        self.local_max_a = dict(local_max_a)
        self.voltage = voltage
        self.default_phases = default_phases
        self.max_duration_s = max_duration_s
        self.profiles = ProfileSet.from_rows(store.charging_profiles())
        # Called after every change of the installed set, so the limiter recomputes at once.
        self.on_change: Callable[[], None] = lambda: None

    # --- installing and clearing --------------------------------------------------------------------------
    def set_profile(self, connector_id: int, profile: Mapping[str, Any], transactions: Transactions) -> str:
        """SetChargingProfile.req: "Accepted" or "Rejected" (the reason is logged)."""
        active = {cid: tx_id for cid, (_start, tx_id) in transactions.items()}
        reason = validate(connector_id, profile, self.limits, active_transactions=active, installed=self.profiles)
        if reason is not None:
            log.info("SetChargingProfile %s on connector %s: Rejected: %s", profile.get("chargingProfileId"),
                     connector_id, reason)
            return "Rejected"
        self.profiles.install(connector_id, profile)
        log.info("SetChargingProfile %s (%s, stack level %s) installed on connector %d",
                 profile["chargingProfileId"], profile["chargingProfilePurpose"], profile["stackLevel"], connector_id)
        self._changed()
        return "Accepted"

    def check_remote_start(self, connector_id: int | None, profile: Mapping[str, Any]) -> str | None:
        """The chargingProfile of a RemoteStartTransaction.req: None when acceptable, else the reason."""
        # Without a connectorId the connector is chosen later; any valid one checks the same rules.
        target = connector_id if connector_id is not None else 1
        return validate(target, profile, self.limits, active_transactions={}, installed=self.profiles,
                        remote_start=True)

    def install_remote_start(self, connector_id: int, profile: Mapping[str, Any]) -> None:
        """The RemoteStart profile, once its transaction has started on ``connector_id`` (5.11)."""
        self.profiles.install(connector_id, profile)
        log.info("connector %d: RemoteStartTransaction profile %s installed", connector_id,
                 profile.get("chargingProfileId"))
        self._changed()

    def clear(self, *, id: int | None = None, connector_id: int | None = None, purpose: str | None = None,
              stack_level: int | None = None) -> str:
        """ClearChargingProfile.req: "Accepted" when something was removed, else "Unknown"."""
        if not self.profiles.clear(id=id, connector_id=connector_id, purpose=purpose, stack_level=stack_level):
            return "Unknown"
        self._changed()
        return "Accepted"

    def transaction_ended(self, connector_id: int) -> None:
        if self.profiles.transaction_ended(connector_id):
            self._changed()

    def purge_expired(self, now: datetime) -> None:
        if self.profiles.purge_expired(now):
            self._changed()

    def _changed(self) -> None:
        # Written before the answer goes out: an Accepted profile survives a power cut (errata 3.37).
        self.store.replace_charging_profiles(self.profiles.to_rows())
        self.on_change()

    # --- schedules ----------------------------------------------------------------------------------------
    def default_unit(self) -> str:
        return UNIT_OF_KEY[self.limits.allowed_units[0]] if self.limits.allowed_units else "A"

    def composite(self, connector_id: int, start: datetime, duration: int, unit: str | None,
                  transactions: Transactions, phases: Mapping[int, int] | None = None) -> dict[str, Any]:
        """The composite schedule (GetCompositeSchedule, evsectl schedule); duration capped at max_duration_s."""
        return self._schedule(connector_id, start, min(int(duration), self.max_duration_s),
                              unit or self.default_unit(), transactions, phases)

    def _schedule(self, connector_id: int, start: datetime, duration: int, unit: str, transactions: Transactions,
                  phases: Mapping[int, int] | None, *, exact: bool = False) -> dict[str, Any]:
        # Not capped: the cap is for answers, the limiter must see its whole horizon whatever the cap.
        # Transaction starts go on the whole-second grid rounded DOWN (the engine rounds a fractional anchor up):
        # a Relative profile then covers its transaction from the first instant, and GetCompositeSchedule in the
        # transaction's first second reports what the pilot gets. Relative boundaries come < 1 s early, not late.
        on_grid = {cid: (started.replace(microsecond=0), tx_id) for cid, (started, tx_id) in transactions.items()}
        return composite_schedule(
            self.profiles.profiles(), connector_id=connector_id,
            start=start if exact else start.replace(microsecond=0),
            duration=duration, unit=unit, transactions=on_grid,
            number_of_connectors=self.limits.number_of_connectors, default_limit_a=self._local_max(connector_id),
            voltage=self.voltage, default_phases=(phases or {}).get(connector_id, self.default_phases))

    def _share_charge_point_max(self, start: datetime, transactions: Transactions,
                                amps: dict[int, float | None]) -> datetime:
        """Lower the running connectors' limits so together they stay within ChargePointMaxProfile; returns when
        that maximum changes next."""
        cp_max = [(cid, p) for cid, p in self.profiles.profiles()
                  if p.get("chargingProfilePurpose") == CHARGE_POINT_MAX]
        horizon = start + timedelta(seconds=HORIZON_S)
        if not cp_max:
            return horizon
        schedule = composite_schedule(
            cp_max, connector_id=0, start=start, duration=HORIZON_S, unit="A",
            number_of_connectors=self.limits.number_of_connectors, default_limit_a=self._local_max(0),
            voltage=self.voltage, default_phases=self.default_phases)
        periods = schedule["chargingSchedulePeriod"]
        wanted: dict[int, float] = {}
        for cid in sorted(transactions):
            if cid in amps:
                limit = amps[cid]
                wanted[cid] = limit if limit is not None else self._local_max(cid)
        for cid, share_a in share(float(periods[0]["limit"]), wanted).items():
            if share_a < wanted[cid]:
                amps[cid] = share_a
        return start + timedelta(seconds=periods[1]["startPeriod"]) if len(periods) > 1 else horizon

    def _local_max(self, connector_id: int) -> float:
        if connector_id in self.local_max_a:
            return self.local_max_a[connector_id]
        return max(self.local_max_a.values(), default=32.0)

    def connector_limits(self, now: datetime, transactions: Transactions,
                         phases: Mapping[int, int]) -> ConnectorLimits:
        """What each connector may offer now, in A for the phases it really uses (``phases``), and when to ask again.

        A W limit is converted with the period's numberPhases, else the connector's actual phase count, so a
        1-phase EV under a power limit gets the whole power on its one phase; an A limit is per phase as it is.

        Each connector's composite schedule takes ChargePointMaxProfile as a cap of its own (rule 5); applied to
        the pilots, two EVs would then draw twice the charge point's maximum. So when several transactions run,
        the charge point's maximum is shared among them (see :func:`share`).
        """
        start = now.replace(microsecond=0)
        next_change = start + timedelta(seconds=HORIZON_S)
        amps: dict[int, float | None] = {}
        for cid in range(1, self.limits.number_of_connectors + 1):
            schedule = self._schedule(cid, start, HORIZON_S, "A", transactions, phases)
            periods = schedule["chargingSchedulePeriod"]
            # The value at `now` itself, not at the whole second before it: a transaction that started 300 ms
            # into a second has its Relative profiles from then on, not from the next whole second.
            at_now = self._schedule(cid, now, 1, "A", transactions, phases, exact=True)
            limit = float(at_now["chargingSchedulePeriod"][0]["limit"])
            amps[cid] = None if limit >= self._local_max(cid) else limit
            if len(periods) > 1:
                next_change = min(next_change, start + timedelta(seconds=periods[1]["startPeriod"]))
        if len(transactions) > 1:
            next_change = min(next_change, self._share_charge_point_max(start, transactions, amps))
        expiry = self.profiles.next_expiry()
        if expiry is not None and expiry > now:
            next_change = min(next_change, expiry)
        return ConnectorLimits(amps, next_change)


def share(total_a: float, wanted_a: Mapping[int, float], min_a: float = 6.0) -> dict[int, float]:
    """Split ``total_a`` among connectors, none getting more than it wants: equal shares, and what a connector
    does not need goes to the others (water filling). Shares are rounded down to 0.1 A, so their sum never
    exceeds the total.

    An EV cannot charge below ``min_a`` (IEC 61851: 6 A), so when the total cannot give every connector that
    much, the lowest-numbered connectors are served and the others get 0 (they pause) rather than all pausing
    on useless shares."""
    out = {cid: 0.0 for cid in wanted_a}
    left = max(0.0, total_a)
    served = sorted(wanted_a)[:max(0, int(left // min_a + 1e-9))] if min_a > 0 else sorted(wanted_a)
    order = sorted(served, key=lambda cid: wanted_a[cid])
    for i, cid in enumerate(order):
        give = min(wanted_a[cid], left / (len(order) - i))
        give = math.floor(give * 10 + 1e-9) / 10
        out[cid] = give
        left -= give
    return out
