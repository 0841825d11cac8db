"""IEC 61851-1 pilot layer above the raw classification: debounce, X1/X2 naming, simplified mode.

Pure: the board feeds every classified sample (and the time it was taken) into a ``PilotFilter`` and forwards
the changes it returns as ``PilotChanged``. No clocks, no threads, so every timing rule is testable in virtual time.

Rules, and why:
- A new (state, diode fault) pair is reported once it was seen in every sample for ``debounce_s``; the very first
  sample is reported at once, so the daemon starts from what it sees.
- The state key does not include the PWM: B1 -> B2 is the EVSE's own doing, not a pilot change, so switching the
  PWM never restarts a debounce that is under way.
- The diode can only be checked while the PWM oscillates (a DC pilot has no low phase). With the PWM off, the
  last verdict measured with the PWM on stands while the EV stays connected (B/C/D). When the PWM comes back
  while that verdict is "faulted", the first verdict of the new PWM period is reported even if it is unchanged:
  the controller withdraws the PWM on a diode fault and re-offers it to re-check, and it must hear the answer.
- Unstable pilot while charging: if the last reported state is C or D and no state has been stable for
  2 x ``debounce_s``, the least permissive state seen meanwhile is reported (ordering ``_RESTRICTIVENESS``).
  A pilot that flickers is not a pilot that says "charge"; in any other state flicker changes nothing.
- A failed measurement (``lost``) reports F at once: a pilot we cannot see is treated as a fault immediately.
"""

from __future__ import annotations

from dataclasses import dataclass

from evsed.core.pilot import CHARGING_STATES, PilotReading, PilotState

# ISO 15118-3 wake-up pulses (B-C-B of about 200 ms) and the 100 ms opening rule leave no room for more.
MAX_DEBOUNCE_S = 0.05
# Virtual and monotonic times are floats; "at least debounce_s" must not miss by a rounding error.
_EPS = 1e-9
_DIODE_STATES = frozenset({PilotState.B, PilotState.C, PilotState.D})
# How strongly a state forbids energy flow, from most permissive (C) to least (F); a diode fault ranks
# just above the same state without one.
_RESTRICTIVENESS = {PilotState.C: 0, PilotState.D: 1, PilotState.B: 2, PilotState.A: 3, PilotState.E: 4,
                    PilotState.F: 5}

_Key = tuple[PilotState, bool]


def iec_state(pilot: PilotState, pwm_on: bool) -> str:
    """IEC 61851-1 name of the combined EV/EVSE state: 'B1' (DC pilot) or 'B2' (PWM); E and F have no suffix."""
    if pilot in (PilotState.E, PilotState.F):
        return str(pilot)
    return f"{pilot}{2 if pwm_on else 1}"


@dataclass(frozen=True, slots=True)
class PilotChange:
    state: PilotState
    diode_fault: bool
    simplified: bool  # A -> C/D without B: an EV without the S2 sequence ("simplified mode"); allowed, logged


def _rank(key: _Key) -> tuple[int, bool]:
    return _RESTRICTIVENESS[key[0]], key[1]


class PilotFilter:
    """Debounce of raw classifications. A new (state, diode_fault) is reported once it was seen in every sample for
    at least debounce_s; the first sample is reported at once (initial state). Short B-C-B pulses of ~200 ms
    (ISO 15118-3 wake-up) must still come through: debounce_s is at most 50 ms (ValueError above)."""

    def __init__(self, debounce_s: float = 0.02) -> None:
        if not 0.0 <= debounce_s <= MAX_DEBOUNCE_S:
            raise ValueError(f"pilot debounce must be between 0 and {MAX_DEBOUNCE_S * 1000:g} ms, "
                             f"got {debounce_s * 1000:g} ms")
        self._debounce = debounce_s
        self._reported: _Key | None = None
        self._candidate: _Key | None = None
        self._since = 0.0  # first sample of the current candidate
        self._disturbed_since: float | None = None  # first sample differing from the report, until it is stable
        self._worst: _Key | None = None  # least permissive key seen while disturbed
        self._pwm_on = False
        self._pwm_on_at = 0.0
        self._recheck = False  # a diode fault is reported and the PWM came back: report the new verdict

    @property
    def state(self) -> PilotState | None:
        return self._reported[0] if self._reported is not None else None

    def sample(self, reading: PilotReading, pwm_on: bool, now: float) -> PilotChange | None:
        if pwm_on and not self._pwm_on:
            self._pwm_on_at = now
            self._recheck = self._reported is not None and self._reported[1]
        elif not pwm_on:
            self._recheck = False
        self._pwm_on = pwm_on
        key = self._key(reading, pwm_on)
        if key != self._candidate:
            self._candidate, self._since = key, now
        if self._reported is None:
            return self._report(key)
        if key != self._reported:
            if self._disturbed_since is None:
                self._disturbed_since, self._worst = now, max(self._reported, key, key=_rank)
            elif self._worst is not None:
                self._worst = max(self._worst, key, key=_rank)
        if now - self._since >= self._debounce - _EPS:
            if key != self._reported:
                return self._report(key)
            self._disturbed_since = self._worst = None  # back to the reported state, steadily
            if self._recheck and now - max(self._since, self._pwm_on_at) >= self._debounce - _EPS:
                self._recheck = False
                return PilotChange(key[0], key[1], simplified=False)
            return None
        if (self._disturbed_since is not None and self._worst is not None and self._worst != self._reported
                and self._reported[0] in CHARGING_STATES
                and now - self._disturbed_since >= 2 * self._debounce - _EPS):
            return self._report(self._worst)
        return None

    def lost(self, now: float) -> PilotChange | None:
        """The measurement failed (ADC error, out of range): F at once; the next good sample is debounced."""
        self._candidate = None
        self._disturbed_since = self._worst = None
        if self._reported == (PilotState.F, False):
            return None
        return self._report((PilotState.F, False))

    def _key(self, reading: PilotReading, pwm_on: bool) -> _Key:
        if reading.state not in _DIODE_STATES:
            return reading.state, False
        if pwm_on:
            return reading.state, reading.diode_fault
        # Blind without PWM: keep the last verdict while the same EV is connected.
        sticky = self._reported is not None and self._reported[0] in _DIODE_STATES and self._reported[1]
        return reading.state, sticky

    def _report(self, key: _Key) -> PilotChange:
        previous = self._reported
        self._reported = key
        self._disturbed_since = self._worst = None
        if self._pwm_on:
            self._recheck = False  # this report carries a verdict measured with the PWM on
        simplified = previous is not None and previous[0] == PilotState.A and key[0] in CHARGING_STATES
        return PilotChange(key[0], key[1], simplified)
