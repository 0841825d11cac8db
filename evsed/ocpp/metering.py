"""OCPP 1.6 meter values, sans I/O: which measurands we can report, how one reading becomes sampledValue
entries, and when the clock-aligned samples are due.

Pure functions only: the caller passes the reading, the wall-clock time and the configured measurands, and sends
what comes back (MeterValues.req, or the transactionData of StopTransaction.req).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

# What every board (the sim and the supported meters) can measure; the CSMS may only configure these.
SUPPORTED_MEASURANDS = frozenset({
    "Energy.Active.Import.Register", "Power.Active.Import", "Power.Offered", "Current.Import",
    "Current.Offered", "Voltage", "Frequency",
})


@dataclass(frozen=True, slots=True)
class Measurement:
    """One reading of a connector's meter and what the EVSE offers, as the session needs it."""

    energy_wh: float
    power_w: float
    current_a: tuple[float, ...]  # per phase L1, L2, L3 (only the phases the meter measures)
    voltage_v: tuple[float, ...]  # per phase, line to neutral
    offered_a: float
    offered_w: float = 0.0
    frequency_hz: float | None = None  # None when the meter does not measure it


# 1.6 has no UnitOfMeasure for Frequency (errata 3.84: it is implicitly Hertz). The bundled schema accepts "Hertz",
# but the OCA original does not, so Frequency goes out without a unit and is absent here.
UNITS: dict[str, str] = {
    "Energy.Active.Import.Register": "Wh",
    "Power.Active.Import": "W",
    "Power.Offered": "W",
    "Current.Import": "A",
    "Current.Offered": "A",
    "Voltage": "V",
}

_CURRENT_PHASES = ("L1", "L2", "L3")
_VOLTAGE_PHASES = ("L1-N", "L2-N", "L3-N")
_DAY_S = 86400


def _format(value: float, decimals: int) -> str | None:
    """A Raw decimal value as OCPP wants it, or None when the meter gave no number (NaN, infinity)."""
    if not math.isfinite(value):
        return None
    text = f"{value:.{decimals}f}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    # Rounding a tiny negative (or -0.0 itself) must not report a signed zero.
    return "0" if text == "-0" else text


def _readings(m: Measurement, measurand: str) -> list[tuple[str | None, float]]:
    """(phase, value) pairs for one measurand; phase None = overall value."""
    if measurand == "Energy.Active.Import.Register":
        return [(None, m.energy_wh)]
    if measurand == "Power.Active.Import":
        return [(None, m.power_w)]
    if measurand == "Power.Offered":
        return [(None, m.offered_w)]
    if measurand == "Current.Offered":
        return [(None, m.offered_a)]
    if measurand == "Current.Import":
        return list(zip(_CURRENT_PHASES, m.current_a, strict=False))
    if measurand == "Voltage":
        return list(zip(_VOLTAGE_PHASES, m.voltage_v, strict=False))
    if measurand == "Frequency" and m.frequency_hz is not None:
        return [(None, m.frequency_hz)]
    return []


def sampled_values(m: Measurement, measurands: Iterable[str], context: str, *,
                   location: str = "Outlet") -> list[dict[str, Any]]:
    """SampledValue entries for one reading, in the order of `measurands`.

    Phased measurands get one entry per phase the meter measures (errata 3.14.3: all phases SHALL be reported).
    Energy carries up to 3 decimals, everything else up to 1; trailing zeros are stripped. Measurands this charge
    point does not support, a frequency the meter does not measure and non-finite values are left out, so the
    result may be empty. A measurand listed twice is reported once.
    """
    out: list[dict[str, Any]] = []
    seen: set[str] = set()
    for measurand in measurands:
        if measurand in seen or measurand not in SUPPORTED_MEASURANDS:
            continue
        seen.add(measurand)
        decimals = 3 if measurand == "Energy.Active.Import.Register" else 1
        for phase, reading in _readings(m, measurand):
            value = _format(reading, decimals)
            if value is None:
                continue
            entry: dict[str, Any] = {"value": value, "context": context, "measurand": measurand}
            if phase is not None:
                entry["phase"] = phase
            entry["location"] = location
            unit = UNITS.get(measurand)
            if unit is not None:
                entry["unit"] = unit
            out.append(entry)
    return out


def meter_value(timestamp: str, sampled: list[dict[str, Any]]) -> dict[str, Any]:
    """One MeterValue: every sampled value in it was taken at `timestamp`."""
    return {"timestamp": timestamp, "sampledValue": list(sampled)}


def next_aligned(wall: float, interval_s: int) -> float | None:
    """The next clock-aligned sample time strictly after `wall` (epoch seconds), or None when disabled (<= 0).

    Slots are evenly spaced from 00:00:00 UTC and restart every midnight (9.1.5), so an interval that does not
    divide a day leaves a short last slot before midnight, and one longer than a day samples at midnight only.
    """
    if interval_s <= 0:
        return None
    # Floor division on floats is exact, so a wall time on a boundary is never mistaken for one just before it.
    day = wall // _DAY_S * _DAY_S
    slot = (wall - day) // interval_s + 1
    return float(min(day + slot * interval_s, day + _DAY_S))


def thin_out(meter_values: list[dict[str, Any]], maximum: int) -> list[dict[str, Any]]:
    """At most `maximum` entries for StopTransaction's transactionData (StopTransactionMaxMeterValues).

    The first (Transaction.Begin) and last (Transaction.End) entries are never dropped (errata 3.16.6, 9.1.23);
    a maximum below 2 still keeps both. Intermediate entries go first as every other one (2nd, 4th, ... of the
    current list), pass after pass; the last pass drops only as many as needed, spread evenly over the list,
    so the kept values still cover the whole transaction. Returns a new list.
    """
    keep = max(maximum, 2)
    out = list(meter_values)
    while len(out) > keep:
        excess = len(out) - keep
        candidates = list(range(1, len(out) - 1, 2))  # never 0 or the last index
        if excess < len(candidates):
            n = len(candidates)
            # The middle of each of `excess` equal shares: strictly increasing, as n > excess.
            candidates = [candidates[(2 * i + 1) * n // (2 * excess)] for i in range(excess)]
        drop = set(candidates)
        out = [mv for i, mv in enumerate(out) if i not in drop]
    return out


def merge_by_timestamp(meter_values: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One MeterValue per timestamp, in order of first appearance, its sampledValue lists concatenated in order.

    A periodic and a clock-aligned sample taken at the same instant then travel as one MeterValue (7.33: all
    sampled values in a MeterValue are sampled at the same point in time). The input is not modified.
    """
    merged: dict[str, list[dict[str, Any]]] = {}
    for mv in meter_values:
        merged.setdefault(mv["timestamp"], []).extend(mv["sampledValue"])
    return [meter_value(timestamp, sampled) for timestamp, sampled in merged.items()]
