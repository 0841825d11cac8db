"""evsed.ocpp.metering: sampledValue entries (checked against the MeterValues schema), clock alignment,
StopTransaction thinning and merging of samples taken at the same instant."""

from __future__ import annotations

from datetime import UTC, datetime
from itertools import pairwise
from typing import Any

import pytest

from evsed.ocpp.metering import (
    SUPPORTED_MEASURANDS,
    UNITS,
    Measurement,
    merge_by_timestamp,
    meter_value,
    next_aligned,
    sampled_values,
    thin_out,
)
from evsed.ocpp.rpc import RpcError
from evsed.ocpp.schema import Validator

VALIDATOR = Validator("v16")
TS = "2024-05-01T12:00:00.000Z"
ALL = [
    "Energy.Active.Import.Register", "Power.Active.Import", "Power.Offered", "Current.Import",
    "Current.Offered", "Voltage", "Frequency",
]
THREE_PHASE = Measurement(energy_wh=1234.5678, power_w=11040.0, current_a=(16.0, 16.04, 15.96),
                          voltage_v=(230.0, 229.54, 231.26), offered_a=16.0, offered_w=11040.0,
                          frequency_hz=49.98)
ONE_PHASE = Measurement(energy_wh=10.0, power_w=3680.0, current_a=(16.0,), voltage_v=(230.0,), offered_a=16.0,
                        offered_w=3680.0)


def wall(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


def check_schema(sampled: list[dict[str, Any]], timestamp: str = TS) -> None:
    VALIDATOR.validate_request("MeterValues", {"connectorId": 1, "meterValue": [meter_value(timestamp, sampled)]})


def by_measurand(sampled: list[dict[str, Any]], measurand: str) -> list[dict[str, Any]]:
    return [s for s in sampled if s["measurand"] == measurand]


# --- sampled_values -------------------------------------------------------------------------------------------
def test_all_measurands_three_phase_validate_against_schema() -> None:
    sampled = sampled_values(THREE_PHASE, ALL, "Sample.Periodic")
    check_schema(sampled)
    assert [s["measurand"] for s in sampled] == [
        "Energy.Active.Import.Register", "Power.Active.Import", "Power.Offered",
        "Current.Import", "Current.Import", "Current.Import", "Current.Offered",
        "Voltage", "Voltage", "Voltage", "Frequency",
    ]
    assert all(s["context"] == "Sample.Periodic" and s["location"] == "Outlet" for s in sampled)
    assert all("format" not in s for s in sampled)
    assert all(isinstance(s["value"], str) for s in sampled)


def test_the_validator_would_catch_a_bad_entry() -> None:
    # Guards the schema checks above: a malformed entry must not pass.
    sampled = sampled_values(THREE_PHASE, ["Voltage"], "Sample.Periodic")
    sampled[0]["unit"] = "Volt"
    with pytest.raises(RpcError):
        check_schema(sampled)
    with pytest.raises(RpcError):
        check_schema([])


def test_three_phase_current_and_voltage_one_entry_per_phase() -> None:
    sampled = sampled_values(THREE_PHASE, ["Current.Import", "Voltage"], "Sample.Clock")
    current = by_measurand(sampled, "Current.Import")
    voltage = by_measurand(sampled, "Voltage")
    assert [(s["phase"], s["value"], s["unit"]) for s in current] == [
        ("L1", "16", "A"), ("L2", "16", "A"), ("L3", "16", "A")]
    assert [(s["phase"], s["value"], s["unit"]) for s in voltage] == [
        ("L1-N", "230", "V"), ("L2-N", "229.5", "V"), ("L3-N", "231.3", "V")]


def test_one_phase_reading_reports_only_l1() -> None:
    sampled = sampled_values(ONE_PHASE, ["Current.Import", "Voltage"], "Sample.Periodic")
    check_schema(sampled)
    assert [(s["measurand"], s["phase"], s["value"]) for s in sampled] == [
        ("Current.Import", "L1", "16"), ("Voltage", "L1-N", "230")]


def test_two_phase_reading_reports_l1_and_l2() -> None:
    m = Measurement(energy_wh=0.0, power_w=0.0, current_a=(8.0, 8.0), voltage_v=(230.0, 230.0), offered_a=8.0)
    sampled = sampled_values(m, ["Current.Import", "Voltage"], "Sample.Periodic")
    assert [s["phase"] for s in sampled] == ["L1", "L2", "L1-N", "L2-N"]


def test_overall_measurands_have_no_phase() -> None:
    names = ["Energy.Active.Import.Register", "Power.Active.Import", "Power.Offered", "Current.Offered", "Frequency"]
    sampled = sampled_values(THREE_PHASE, names, "Trigger")
    assert [s["measurand"] for s in sampled] == names
    assert all("phase" not in s for s in sampled)


def test_values_of_the_overall_measurands() -> None:
    m = Measurement(energy_wh=1234.5678, power_w=7360.04, current_a=(32.0,), voltage_v=(230.0,), offered_a=32.0,
                    offered_w=7360.0, frequency_hz=50.0)
    sampled = sampled_values(m, ALL, "Sample.Periodic")
    values = {(s["measurand"], s.get("phase")): s["value"] for s in sampled}
    assert values == {
        ("Energy.Active.Import.Register", None): "1234.568",
        ("Power.Active.Import", None): "7360",
        ("Power.Offered", None): "7360",
        ("Current.Import", "L1"): "32",
        ("Current.Offered", None): "32",
        ("Voltage", "L1-N"): "230",
        ("Frequency", None): "50",
    }


@pytest.mark.parametrize(("energy", "text"), [
    (0.0, "0"), (-0.0, "0"), (-0.0001, "0"), (1000.0, "1000"), (1000.5, "1000.5"), (1000.25, "1000.25"),
    (1234.5678, "1234.568"), (0.001, "0.001"), (0.0004, "0"), (12345678.9, "12345678.9"), (1e12, "1000000000000"),
])
def test_energy_formatting(energy: float, text: str) -> None:
    m = Measurement(energy_wh=energy, power_w=0.0, current_a=(0.0,), voltage_v=(0.0,), offered_a=0.0)
    (entry,) = sampled_values(m, ["Energy.Active.Import.Register"], "Sample.Clock")
    assert entry["value"] == text


@pytest.mark.parametrize(("power", "text"), [
    (7360.0, "7360"), (229.54, "229.5"), (229.56, "229.6"), (0.04, "0"), (-0.04, "0"), (-0.0, "0"),
    (-12.34, "-12.3"), (10.0, "10"), (100.0, "100"), (0.1, "0.1"),
])
def test_other_values_at_most_one_decimal(power: float, text: str) -> None:
    m = Measurement(energy_wh=0.0, power_w=power, current_a=(power,), voltage_v=(power,), offered_a=power,
                    offered_w=power, frequency_hz=power)
    sampled = sampled_values(m, ALL[1:], "Sample.Periodic")
    assert len(sampled) == 6
    assert {s["value"] for s in sampled} == {text}


def test_non_finite_values_are_left_out() -> None:
    m = Measurement(energy_wh=float("nan"), power_w=float("inf"), current_a=(1.0, float("nan"), 3.0),
                    voltage_v=(230.0,), offered_a=6.0)
    sampled = sampled_values(m, ["Energy.Active.Import.Register", "Power.Active.Import", "Current.Import"], "Other")
    assert [(s["measurand"], s["phase"], s["value"]) for s in sampled] == [
        ("Current.Import", "L1", "1"), ("Current.Import", "L3", "3")]


def test_units() -> None:
    assert UNITS == {
        "Energy.Active.Import.Register": "Wh", "Power.Active.Import": "W", "Power.Offered": "W",
        "Current.Import": "A", "Current.Offered": "A", "Voltage": "V",
    }
    assert set(UNITS) | {"Frequency"} == SUPPORTED_MEASURANDS
    for s in sampled_values(THREE_PHASE, ALL, "Sample.Periodic"):
        if s["measurand"] == "Frequency":
            assert "unit" not in s  # errata 3.84: no UnitOfMeasure for Frequency in 1.6
        else:
            assert s["unit"] == UNITS[s["measurand"]]


def test_frequency_present_and_absent() -> None:
    (entry,) = sampled_values(THREE_PHASE, ["Frequency"], "Sample.Periodic")
    assert entry == {"value": "50", "context": "Sample.Periodic", "measurand": "Frequency", "location": "Outlet"}
    assert sampled_values(ONE_PHASE, ["Frequency"], "Sample.Periodic") == []
    sampled = sampled_values(ONE_PHASE, ["Frequency", "Power.Active.Import"], "Sample.Periodic")
    assert [s["measurand"] for s in sampled] == ["Power.Active.Import"]
    check_schema(sampled)


def test_order_follows_the_configured_list() -> None:
    names = ["Voltage", "Energy.Active.Import.Register", "Current.Offered", "Current.Import"]
    sampled = sampled_values(THREE_PHASE, names, "Sample.Periodic")
    assert [(s["measurand"], s.get("phase")) for s in sampled] == [
        ("Voltage", "L1-N"), ("Voltage", "L2-N"), ("Voltage", "L3-N"), ("Energy.Active.Import.Register", None),
        ("Current.Offered", None), ("Current.Import", "L1"), ("Current.Import", "L2"), ("Current.Import", "L3")]


def test_unknown_measurands_are_skipped() -> None:
    names = ["SoC", "Voltage", "Temperature", "Bogus", "", "Energy.Active.Import.Register"]
    sampled = sampled_values(ONE_PHASE, names, "Sample.Periodic")
    assert [s["measurand"] for s in sampled] == ["Voltage", "Energy.Active.Import.Register"]
    assert sampled_values(ONE_PHASE, ["SoC", "RPM"], "Sample.Periodic") == []


def test_a_measurand_listed_twice_is_reported_once() -> None:
    sampled = sampled_values(ONE_PHASE, ["Power.Active.Import", "Voltage", "Power.Active.Import"], "Trigger")
    assert [s["measurand"] for s in sampled] == ["Power.Active.Import", "Voltage"]


def test_measurands_may_be_any_iterable() -> None:
    sampled = sampled_values(ONE_PHASE, (n for n in ("Power.Active.Import",)), "Trigger")
    assert [s["measurand"] for s in sampled] == ["Power.Active.Import"]


@pytest.mark.parametrize("context", [
    "Interruption.Begin", "Interruption.End", "Sample.Clock", "Sample.Periodic", "Transaction.Begin",
    "Transaction.End", "Trigger", "Other",
])
def test_context_is_passed_through(context: str) -> None:
    sampled = sampled_values(THREE_PHASE, ALL, context)
    assert {s["context"] for s in sampled} == {context}
    check_schema(sampled)


def test_location() -> None:
    sampled = sampled_values(THREE_PHASE, ["Current.Import"], "Sample.Periodic", location="Inlet")
    assert {s["location"] for s in sampled} == {"Inlet"}
    check_schema(sampled)


def test_meter_value_shape_and_copy() -> None:
    sampled = sampled_values(ONE_PHASE, ["Energy.Active.Import.Register"], "Transaction.Begin")
    mv = meter_value(TS, sampled)
    assert mv == {"timestamp": TS, "sampledValue": sampled}
    sampled.append({"value": "1"})
    assert len(mv["sampledValue"]) == 1


# --- next_aligned ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("now", "interval", "expected"), [
    # exactly on a boundary: the next one, never the same instant
    ("2024-05-01T12:00:00", 900, "2024-05-01T12:15:00"),
    ("2024-05-01T00:00:00", 900, "2024-05-01T00:15:00"),
    ("2024-05-01T12:15:00", 900, "2024-05-01T12:30:00"),
    # mid-interval
    ("2024-05-01T12:07:31", 900, "2024-05-01T12:15:00"),
    ("2024-05-01T12:14:59", 900, "2024-05-01T12:15:00"),
    ("2024-05-01T12:00:01", 3600, "2024-05-01T13:00:00"),
    ("2024-05-01T12:00:00", 1, "2024-05-01T12:00:01"),
    # across midnight (and a month and a year)
    ("2024-05-01T23:50:00", 900, "2024-05-02T00:00:00"),
    ("2024-05-31T23:45:00", 900, "2024-06-01T00:00:00"),
    ("2024-12-31T23:59:59", 60, "2025-01-01T00:00:00"),
    # 7 h does not divide a day: slots 00, 07, 14, 21, then a short one until midnight
    ("2024-05-01T00:00:00", 7 * 3600, "2024-05-01T07:00:00"),
    ("2024-05-01T06:59:59", 7 * 3600, "2024-05-01T07:00:00"),
    ("2024-05-01T20:00:00", 7 * 3600, "2024-05-01T21:00:00"),
    ("2024-05-01T21:00:00", 7 * 3600, "2024-05-02T00:00:00"),
    ("2024-05-01T23:30:00", 7 * 3600, "2024-05-02T00:00:00"),
    ("2024-05-02T00:00:00", 7 * 3600, "2024-05-02T07:00:00"),
    # 7 min: 1440 / 7 is not whole either; the slot after 23:55 is midnight, not 00:02
    ("2024-05-01T23:55:00", 7 * 60, "2024-05-02T00:00:00"),
    ("2024-05-01T23:54:59", 7 * 60, "2024-05-01T23:55:00"),
    # longer than a day: midnight only
    ("2024-05-01T12:00:00", 2 * 86400, "2024-05-02T00:00:00"),
    ("2024-05-01T00:00:00", 86400, "2024-05-02T00:00:00"),
])
def test_next_aligned(now: str, interval: int, expected: str) -> None:
    assert next_aligned(wall(now), interval) == wall(expected)


def test_next_aligned_fractional_wall_times() -> None:
    base = wall("2024-05-01T12:15:00")
    assert next_aligned(base - 0.001, 900) == base
    assert next_aligned(base + 0.001, 900) == base + 900
    assert next_aligned(wall("2024-05-01T23:59:59") + 0.999, 900) == wall("2024-05-02T00:00:00")


def test_next_aligned_is_strictly_after_and_walks_every_slot_of_a_day() -> None:
    start = wall("2024-05-01T00:00:00")
    t: float | None = start
    slots = []
    while t is not None and t < start + 86400:
        nxt = next_aligned(t, 900)
        assert nxt is not None and nxt > t
        slots.append(nxt)
        t = nxt
    assert len(slots) == 96 and slots[-1] == start + 86400
    assert all(b - a == 900 for a, b in zip([start, *slots], slots, strict=False))


@pytest.mark.parametrize("interval", [0, -1, -900])
def test_next_aligned_disabled(interval: int) -> None:
    assert next_aligned(wall("2024-05-01T12:00:00"), interval) is None


# --- thin_out -------------------------------------------------------------------------------------------------
def entries(n: int) -> list[dict[str, Any]]:
    return [meter_value(f"t{i}", [{"value": str(i)}]) for i in range(n)]


def numbers(mvs: list[dict[str, Any]]) -> list[int]:
    return [int(mv["sampledValue"][0]["value"]) for mv in mvs]


@pytest.mark.parametrize("n", [0, 1, 2, 3, 4, 5, 10, 11, 57, 100, 1000])
@pytest.mark.parametrize("maximum", [-1, 0, 1, 2, 3, 4, 5, 7, 10, 50, 99, 100, 2000])
def test_thin_out_sizes_and_ends(n: int, maximum: int) -> None:
    original = entries(n)
    kept = numbers(thin_out(original, maximum))
    assert len(kept) == min(n, max(maximum, 2))  # drops only what it must
    assert kept == sorted(set(kept))  # order kept, nothing duplicated
    if n >= 1:
        assert kept[0] == 0
        assert kept[-1] == n - 1
    assert len(original) == n  # input untouched


def test_thin_out_returns_a_new_list() -> None:
    original = entries(3)
    result = thin_out(original, 10)
    assert result == original and result is not original


def test_thin_out_drops_every_other_intermediate_first() -> None:
    assert numbers(thin_out(entries(11), 6)) == [0, 2, 4, 6, 8, 10]
    assert numbers(thin_out(entries(10), 6)) == [0, 2, 4, 6, 8, 9]
    # a second pass thins the survivors of the first the same way
    assert numbers(thin_out(entries(11), 4)) == [0, 4, 8, 10]


def test_thin_out_spreads_drops_over_the_whole_list() -> None:
    kept = numbers(thin_out(entries(100), 60))
    dropped = sorted(set(range(100)) - set(kept))
    assert len(dropped) == 40
    assert any(d < 20 for d in dropped) and any(d > 80 for d in dropped)
    assert all(b - a >= 2 for a, b in pairwise(dropped))  # never two neighbours
    assert max(b - a for a, b in pairwise(kept)) == 2


def test_thin_out_keeps_coverage_when_thinning_hard() -> None:
    kept = numbers(thin_out(entries(1000), 10))
    gaps = [b - a for a, b in pairwise(kept)]
    assert len(kept) == 10
    # evenly spread: no gap is more than a few times the ideal 999 / 9
    assert max(gaps) <= 3 * 999 / 9
    assert kept[-2] > 500  # the second half of the transaction is still represented


def test_thin_out_single_drop_is_an_intermediate() -> None:
    kept = numbers(thin_out(entries(5), 4))
    assert len(kept) == 4 and kept[0] == 0 and kept[-1] == 4


# --- merge_by_timestamp ---------------------------------------------------------------------------------------
def test_merge_by_timestamp() -> None:
    begin = meter_value("T0", sampled_values(ONE_PHASE, ["Energy.Active.Import.Register"], "Transaction.Begin"))
    periodic = meter_value("T1", sampled_values(ONE_PHASE, ["Energy.Active.Import.Register"], "Sample.Periodic"))
    clock = meter_value("T1", sampled_values(ONE_PHASE, ["Energy.Active.Import.Register", "Voltage"],
                                             "Sample.Clock"))
    later = meter_value("T2", sampled_values(ONE_PHASE, ["Power.Active.Import"], "Sample.Periodic"))
    end = meter_value("T3", sampled_values(ONE_PHASE, ["Energy.Active.Import.Register"], "Transaction.End"))
    snapshot = [dict(mv, sampledValue=list(mv["sampledValue"])) for mv in (begin, periodic, clock, later, end)]

    merged = merge_by_timestamp([begin, periodic, clock, later, end])

    assert [mv["timestamp"] for mv in merged] == ["T0", "T1", "T2", "T3"]
    assert merged[1]["sampledValue"] == periodic["sampledValue"] + clock["sampledValue"]
    assert [s["context"] for s in merged[1]["sampledValue"]] == ["Sample.Periodic", "Sample.Clock", "Sample.Clock"]
    assert merged[0] == begin and merged[2] == later and merged[3] == end
    assert [begin, periodic, clock, later, end] == snapshot  # input not modified


def test_merge_by_timestamp_non_adjacent_and_empty() -> None:
    a1 = meter_value("A", [{"value": "1"}])
    b = meter_value("B", [{"value": "2"}])
    a2 = meter_value("A", [{"value": "3"}])
    assert merge_by_timestamp([a1, b, a2]) == [
        {"timestamp": "A", "sampledValue": [{"value": "1"}, {"value": "3"}]},
        {"timestamp": "B", "sampledValue": [{"value": "2"}]},
    ]
    assert merge_by_timestamp([]) == []


def test_merged_transaction_data_validates_as_meter_values() -> None:
    times = ["2024-05-01T12:00:00Z", "2024-05-01T12:15:00Z", "2024-05-01T12:15:00Z", "2024-05-01T12:20:00Z"]
    contexts = ["Transaction.Begin", "Sample.Periodic", "Sample.Clock", "Transaction.End"]
    data = [meter_value(t, sampled_values(THREE_PHASE, ALL, c)) for t, c in zip(times, contexts, strict=True)]
    merged = thin_out(merge_by_timestamp(data), 2)
    assert [mv["sampledValue"][0]["context"] for mv in merged] == ["Transaction.Begin", "Transaction.End"]
    VALIDATOR.validate_request("MeterValues", {"connectorId": 1, "transactionId": 7, "meterValue": merged})
