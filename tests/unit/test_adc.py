"""Pilot and PP sensing on the Raspberry Pi board: ADS1115/MCP3008 drivers, calibration, sensors, spidev ioctl.

Everything above the bus is the real code; below it are the register-level emulators of evsed.board.rpi.emulated
(and, for LinuxSpi, a fake kernel that executes SPI_IOC_MESSAGE against the emulated MCP3008). Time is a virtual
clock, so conversion delays and timeouts cost no real time.
"""

from __future__ import annotations

import ctypes
import errno
import math
import struct
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from evsed.board.rpi import spi as spi_module
from evsed.board.rpi.adc import (
    AdcError,
    Ads1115,
    BurstPilotSensor,
    CableCodingError,
    Calibration,
    Mcp3008,
    PeakDetectorPilotSensor,
    ProximitySensor,
    cable_ampacity,
    open_smbus,
)
from evsed.board.rpi.emulated import EmulatedAds1115, EmulatedMcp3008, PilotLine, frontend
from evsed.board.rpi.spi import MAX_FRAMES, LinuxSpi, SpiIocTransfer, spi_ioc_message
from evsed.core.pilot import PilotReading, PilotState, classify

A, B, C, D, E, F = (PilotState.A, PilotState.B, PilotState.C, PilotState.D, PilotState.E, PilotState.F)
ADDR = 0x48
CONV_860 = 1 / 860


class VirtualClock:
    """clock() and sleep() for the drivers and emulators: sleeping advances time instantly."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        assert seconds >= 0
        self.now += seconds


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock()


def make_ads(
    clock: VirtualClock, sources: dict[int, Callable[[], float]], **kwargs: float
) -> tuple[EmulatedAds1115, Ads1115]:
    emu = EmulatedAds1115({ADDR: sources}, clock=clock)
    return emu, Ads1115(emu, ADDR, sleep=clock.sleep, clock=clock, **kwargs)  # type: ignore[arg-type]


# --- ADS1115 register level ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("channel", "fsr_v", "data_rate", "word"),
    [
        (0, 4.096, 860, 0xC3E3),  # hardware.md 3.1
        (1, 4.096, 860, 0xD3E3),
        (2, 4.096, 860, 0xE3E3),
        (3, 4.096, 860, 0xF3E3),
        (0, 6.144, 860, 0xC1E3),
        (0, 2.048, 128, 0xC583),  # the reset value 0x8583 with MUX = AIN0-GND
        (2, 1.024, 475, 0xE7C3),
        (3, 0.256, 8, 0xFB03),
        (1, 0.512, 250, 0xD9A3),
    ],
)
def test_ads1115_config_word_written(
    clock: VirtualClock, channel: int, fsr_v: float, data_rate: int, word: int
) -> None:
    emu, ads = make_ads(clock, {channel: lambda: 0.1}, fsr_v=fsr_v, data_rate=data_rate)
    ads.read_volts(channel)
    assert emu.writes == [(ADDR, 0x01, [word >> 8, word & 0xFF])]


def test_ads1115_block_read_byte_order(clock: VirtualClock) -> None:
    code = 0x1234  # distinct bytes: swapped (read_word_data) would be 0x3412
    volts = code * 4.096 / 32768
    emu, ads = make_ads(clock, {0: lambda: volts})
    assert ads.read_volts(0) == pytest.approx(volts, abs=1e-9)
    assert emu.read_i2c_block_data(ADDR, 0x00, 2) == [0x12, 0x34]


@pytest.mark.parametrize(
    ("pin_v", "fsr_v", "expected"),
    [
        (1.0, 4.096, 1.0),
        (-0.25, 4.096, -0.25),  # two's complement 0xF830
        (-0.001, 0.256, -0.001),
        (5.0, 4.096, 32767 * 4.096 / 32768),  # clipped at full scale
        (-5.0, 4.096, -4.096),
        (3.0, 6.144, 3.0),
    ],
)
def test_ads1115_values(clock: VirtualClock, pin_v: float, fsr_v: float, expected: float) -> None:
    _, ads = make_ads(clock, {1: lambda: pin_v}, fsr_v=fsr_v)
    assert ads.read_volts(1) == pytest.approx(expected, abs=fsr_v / 32768)


def test_ads1115_negative_conversion_register(clock: VirtualClock) -> None:
    emu, ads = make_ads(clock, {0: lambda: -0.25})
    assert ads.read_volts(0) == pytest.approx(-0.25, abs=1e-9)
    assert emu.read_i2c_block_data(ADDR, 0x00, 2) == [0xF8, 0x30]


def test_ads1115_polls_until_conversion_done(clock: VirtualClock) -> None:
    emu, ads = make_ads(clock, {0: lambda: 2.0})
    emu.delay_factor = 3.0  # a conversion takes three nominal conversion times
    assert ads.read_volts(0) == pytest.approx(2.0, abs=1e-3)
    assert emu.reads[(ADDR, 0x01)] > 2
    assert 3 * CONV_860 <= clock.now <= 3.3 * CONV_860


def test_ads1115_first_poll_after_one_conversion(clock: VirtualClock) -> None:
    emu, ads = make_ads(clock, {0: lambda: 2.0})
    ads.read_volts(0)
    assert emu.reads[(ADDR, 0x01)] == 1
    assert emu.reads[(ADDR, 0x00)] == 1
    assert CONV_860 <= clock.now < 1.2 * CONV_860


def test_ads1115_stuck_os_bit_times_out(clock: VirtualClock) -> None:
    emu, ads = make_ads(clock, {0: lambda: 2.0})
    emu.stuck = True
    with pytest.raises(AdcError, match="0x48 AIN0: conversion did not complete"):
        ads.read_volts(0)
    assert 10 * CONV_860 < clock.now < 11 * CONV_860


def test_ads1115_io_error(clock: VirtualClock) -> None:
    emu, ads = make_ads(clock, {0: lambda: 2.0})
    emu.fail = True
    with pytest.raises(AdcError, match="ADS1115 0x48 AIN0: I2C error") as info:
        ads.read_volts(0)
    assert isinstance(info.value.__cause__, OSError)
    assert info.value.__cause__.errno == errno.EREMOTEIO


def test_ads1115_caches_nothing(clock: VirtualClock) -> None:
    level = [1.0]
    emu, ads = make_ads(clock, {0: lambda: level[0]})
    assert ads.read_volts(0) == pytest.approx(1.0, abs=1e-3)
    level[0] = 2.5
    assert ads.read_volts(0) == pytest.approx(2.5, abs=1e-3)
    assert len(emu.writes) == 2  # a fresh conversion each time, config written each time
    emu.fail = True
    with pytest.raises(AdcError):
        ads.read_volts(0)
    emu.fail = False
    emu.stuck = True  # a chip that stops converting must not keep returning its last result
    with pytest.raises(AdcError):
        ads.read_volts(0)


def test_ads1115_absent_address(clock: VirtualClock) -> None:
    emu = EmulatedAds1115({0x48: {0: lambda: 1.0}}, clock=clock)
    with pytest.raises(AdcError, match="0x49"):
        Ads1115(emu, 0x49, sleep=clock.sleep, clock=clock).read_volts(0)


def test_ads1115_two_chips_on_one_bus(clock: VirtualClock) -> None:
    emu = EmulatedAds1115({0x48: {0: lambda: 1.0}, 0x4B: {0: lambda: 2.0}}, clock=clock)
    assert Ads1115(emu, 0x4B, sleep=clock.sleep, clock=clock).read_volts(0) == pytest.approx(2.0, abs=1e-3)
    assert Ads1115(emu, 0x48, sleep=clock.sleep, clock=clock).read_volts(0) == pytest.approx(1.0, abs=1e-3)


@pytest.mark.parametrize("kwargs", [{"fsr_v": 5.0}, {"data_rate": 1000}])
def test_ads1115_rejects_bad_settings(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="ADS1115"):
        Ads1115(EmulatedAds1115({}), **kwargs)  # type: ignore[arg-type]


def test_ads1115_rejects_bad_channel(clock: VirtualClock) -> None:
    _, ads = make_ads(clock, {})
    with pytest.raises(ValueError, match=r"0\.\.3"):
        ads.read_volts(4)


def test_open_smbus_missing_bus() -> None:
    with pytest.raises(AdcError, match=r"cannot open I2C bus 987 \(/dev/i2c-987\)"):
        open_smbus(987)


# --- MCP3008 ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("channel", range(8))
def test_mcp3008_command_and_channel_decode(channel: int) -> None:
    assert Mcp3008.command(channel) == [0x01, 0x80 | channel << 4, 0x00]
    # Every channel carries a different level: the emulator decodes the channel from the command bits.
    emu = EmulatedMcp3008({ch: (lambda t, ch=ch: 0.3 * ch + 0.1) for ch in range(8)})  # type: ignore[misc]
    assert Mcp3008(emu).read_volts(channel) == pytest.approx(0.3 * channel + 0.1, abs=3.3 / 1024)


def test_mcp3008_ten_bit_assembly() -> None:
    code = 0x2A5
    emu = EmulatedMcp3008({3: lambda t: (code + 0.5) * 3.3 / 1024})
    reply = emu.xfer2(Mcp3008.command(3))
    # Five undriven bits (read as 1), the null bit, B9 B8 | B7..B0.
    assert reply == [0xFF, 0b11111010, 0xA5]
    assert Mcp3008(emu).read_volts(3) == pytest.approx(code * 3.3 / 1024)


@pytest.mark.parametrize("vref_v", [3.3, 5.0])
def test_mcp3008_vref_scaling(vref_v: float) -> None:
    emu = EmulatedMcp3008({0: lambda t: 2.5, 1: lambda t: 9.0}, vref_v=vref_v)
    adc = Mcp3008(emu, vref_v=vref_v)
    assert adc.read_volts(0) == pytest.approx(2.5, abs=vref_v / 1024)
    assert adc.read_volts(1) == pytest.approx(1023 * vref_v / 1024)  # clipped at full scale


def test_mcp3008_burst_is_one_call_sampling_successive_instants(clock: VirtualClock) -> None:
    clock.now = 12.0
    emu = EmulatedMcp3008({5: lambda t: 0.5 + 100.0 * (t - 12.0)}, clock=clock)  # a 100 V/s ramp
    samples = Mcp3008(emu).burst(5, 200)
    assert emu.calls == 1
    assert emu.conversions == 200
    assert len(samples) == 200
    step = 100.0 / 40_000  # 2.5 mV per sample
    for i, v in enumerate(samples):
        assert v == pytest.approx(0.5 + i * step, abs=3.3 / 1024)


def test_mcp3008_concatenated_commands_in_one_frame_convert_once() -> None:
    # Why bursts use one chip-select frame per sample: with CS held low the chip converts only once.
    emu = EmulatedMcp3008({0: lambda t: 1.0})
    reply = emu.xfer2(Mcp3008.command(0) * 3)
    assert emu.conversions == 1
    assert reply[6:] == [0, 0, 0]


def test_mcp3008_io_error() -> None:
    emu = EmulatedMcp3008({0: lambda t: 1.0})
    emu.fail = True
    adc = Mcp3008(emu)
    with pytest.raises(AdcError, match="MCP3008 CH0: SPI error"):
        adc.read_volts(0)
    with pytest.raises(AdcError, match="MCP3008 CH0: SPI error"):
        adc.burst(0, 10)


@pytest.mark.parametrize(("channel", "n"), [(8, 1), (0, 0), (0, Mcp3008.MAX_BURST + 1)])
def test_mcp3008_rejects_bad_arguments(channel: int, n: int) -> None:
    with pytest.raises(ValueError, match="MCP3008"):
        Mcp3008(EmulatedMcp3008({})).burst(channel, n)


# --- calibration --------------------------------------------------------------------------------------------
def test_calibration_two_points() -> None:
    cal = Calibration.from_points([[0.3, -12.0], [3.0, 12.0]])
    assert cal(0.3) == pytest.approx(-12.0)
    assert cal(3.0) == pytest.approx(12.0)
    assert cal(1.65) == pytest.approx(0.0)
    assert cal(2.6625) == pytest.approx(9.0)


def test_calibration_inverse_order_and_inverting_frontend() -> None:
    assert Calibration.from_points([[3.0, 12.0], [0.3, -12.0]])(2.6625) == pytest.approx(9.0)
    inverting = Calibration.from_points([[0.3, 12.0], [3.0, -12.0]])
    assert inverting(0.3) == pytest.approx(12.0)
    assert inverting(1.0) == pytest.approx(12.0 - 0.7 * 24 / 2.7)


@pytest.mark.parametrize(
    "points",
    [
        [[1.0, -12.0], [1.0, 12.0]],  # no slope
        [[0.3, 5.0], [3.0, 5.0]],  # constant
        [[0.3, -12.0]],
        [[0.3, -12.0], [3.0, 12.0], [1.0, 0.0]],
        [[0.3, -12.0, 1.0], [3.0, 12.0]],
        [[math.nan, -12.0], [3.0, 12.0]],
    ],
)
def test_calibration_degenerate(points: list[list[float]]) -> None:
    with pytest.raises(ValueError, match="calibration"):
        Calibration.from_points(points)


# --- pilot classification end to end ------------------------------------------------------------------------
CAL = Calibration.from_points([[frontend(-12.0), -12.0], [frontend(12.0), 12.0]])
PHASES_S = (0.0, 0.0000137, 0.000371, 0.000503, 0.000987)  # burst start within the PWM period


def _iec_cases() -> list[tuple[str, float, float, float, PilotReading]]:
    """(name, duty, high_v, low_v, expected); pwm_on = duty strictly between 0 and 100."""
    cases = [
        ("A1", 100.0, 12.0, -12.0, PilotReading(A)),
        ("A2", 53.0, 12.0, -12.0, PilotReading(A)),
        ("B1", 100.0, 9.0, -12.0, PilotReading(B)),
        ("C1", 100.0, 6.0, -12.0, PilotReading(C)),
        ("D1", 100.0, 3.0, -12.0, PilotReading(D)),
        ("E-dc", 100.0, 0.0, 0.0, PilotReading(E)),
        ("E-pwm", 53.0, 0.0, 0.0, PilotReading(E)),
        ("F", 0.0, 12.0, -12.0, PilotReading(F)),
    ]
    for duty in (5.0, 10.0, 53.0, 96.0):
        cases += [
            (f"B2-{duty}", duty, 9.0, -12.0, PilotReading(B)),
            (f"C2-{duty}", duty, 6.0, -12.0, PilotReading(C)),
            (f"D2-{duty}", duty, 3.0, -12.0, PilotReading(D)),
            (f"B2-nodiode-{duty}", duty, 9.0, 0.0, PilotReading(B, diode_fault=True)),
            (f"C2-nodiode-{duty}", duty, 6.0, 0.0, PilotReading(C, diode_fault=True)),
        ]
        # SAE J1772 min/max plateaus (hardware.md 1.1), with the negative plateau at its min/max too.
        for state, lo, hi in ((A, 11.40, 12.60), (B, 8.36, 9.56), (C, 5.48, 6.49), (D, 2.62, 3.25)):
            cases.append((f"{state}-min-{duty}", duty, lo, -11.40, PilotReading(state)))
            cases.append((f"{state}-max-{duty}", duty, hi, -12.60, PilotReading(state)))
    for state, lo, hi in ((A, 11.40, 12.60), (B, 8.36, 9.56), (C, 5.48, 6.49), (D, 2.62, 3.25)):
        cases.append((f"{state}-min-dc", 100.0, lo, -12.0, PilotReading(state)))
        cases.append((f"{state}-max-dc", 100.0, hi, -12.0, PilotReading(state)))
    return cases


IEC_CASES = _iec_cases()


class PilotRig:
    """A pilot line with both sensing options wired to it through the emulated chips."""

    def __init__(self, clock: VirtualClock, line: PilotLine) -> None:
        self.clock = clock
        self.line = line
        self.ads_emu = EmulatedAds1115({ADDR: {0: line.pin_peak, 1: line.pin_valley}}, clock=clock)
        self.peak = PeakDetectorPilotSensor(Ads1115(self.ads_emu, sleep=clock.sleep, clock=clock), 0, 1, CAL, CAL)
        self.mcp_emu = EmulatedMcp3008({2: line.pin_at}, clock=clock)
        self.burst = BurstPilotSensor(Mcp3008(self.mcp_emu), 2, CAL)


@pytest.fixture
def rig(clock: VirtualClock) -> PilotRig:
    return PilotRig(clock, PilotLine(edge_s=2e-6))


@pytest.mark.parametrize(("duty", "high_v", "low_v", "expected"), [c[1:] for c in IEC_CASES],
                         ids=[c[0] for c in IEC_CASES])
def test_peak_detector_sensor_classifies(
    rig: PilotRig, duty: float, high_v: float, low_v: float, expected: PilotReading
) -> None:
    rig.line.set(duty=duty, high_v=high_v, low_v=low_v)
    high, low = rig.peak.read()
    assert high == pytest.approx(rig.line.peak(), abs=0.01)
    assert classify(high, low, 0.0 < duty < 100.0) == expected


@pytest.mark.parametrize(("duty", "high_v", "low_v", "expected"), [c[1:] for c in IEC_CASES],
                         ids=[c[0] for c in IEC_CASES])
def test_burst_sensor_classifies(
    rig: PilotRig, duty: float, high_v: float, low_v: float, expected: PilotReading
) -> None:
    rig.line.set(duty=duty, high_v=high_v, low_v=low_v)
    for phase in PHASES_S:
        rig.clock.now = 100.0 + phase
        high, low = rig.burst.read()
        assert high == pytest.approx(rig.line.peak(), abs=0.05), phase
        assert low == pytest.approx(rig.line.valley(), abs=0.05), phase
        assert classify(high, low, 0.0 < duty < 100.0) == expected, phase
    assert rig.mcp_emu.calls == len(PHASES_S)  # one SPI call per reading


def test_burst_sensor_dc_pilot_reads_one_level(rig: PilotRig) -> None:
    rig.line.set(duty=100.0, high_v=9.0)
    high, low = rig.burst.read()
    assert high == low == pytest.approx(9.0, abs=0.05)


@pytest.mark.parametrize("duty", [5.0, 96.0])
@pytest.mark.parametrize("sample_rate", [40_000.0, 29_411.0])  # phase-locked, and drifting
def test_burst_sensor_any_phase(clock: VirtualClock, duty: float, sample_rate: float) -> None:
    """The shortest plateaus (5 % high, 96 % low), burst started anywhere in the period, 5 us edges."""
    line = PilotLine(duty=duty, high_v=6.0, low_v=-12.0, edge_s=5e-6)
    emu = EmulatedMcp3008({0: line.pin_at}, sample_rate=sample_rate, clock=clock)
    sensor = BurstPilotSensor(Mcp3008(emu), 0, CAL)
    for step in range(0, 1000, 7):
        clock.now = 50.0 + step * 1e-6
        high, low = sensor.read()
        assert high == pytest.approx(6.0, abs=0.05), step
        assert low == pytest.approx(-12.0, abs=0.05), step


def test_burst_sensor_ignores_single_glitches(clock: VirtualClock) -> None:
    """One sample spiking each way (contactor EMI) must not move the plateaus, as a plain max/min would."""
    line = PilotLine(duty=53.0, high_v=6.0, low_v=-12.0, edge_s=2e-6)
    clock.now = 7.0
    glitches = {7.0 + 17 / 40_000: 1.0, 7.0 + 123 / 40_000: -0.25}  # pin volts: about +8.9 V and -2.2 V of pilot

    def source(t: float) -> float:
        return line.pin_at(t) + sum(v for at, v in glitches.items() if abs(t - at) < 1e-9)

    emu = EmulatedMcp3008({0: source}, clock=clock)
    assert max(Mcp3008(emu).burst(0, 200)) > frontend(12.0)  # the glitch is in the burst
    high, low = BurstPilotSensor(Mcp3008(emu), 0, CAL).read()
    assert high == pytest.approx(6.0, abs=0.05)
    assert low == pytest.approx(-12.0, abs=0.05)
    assert classify(high, low, True) == PilotReading(C)


def test_burst_sensor_inverting_frontend(clock: VirtualClock) -> None:
    """An inverting front end puts the high plateau at the lowest pin volts."""
    line = PilotLine(duty=10.0, high_v=9.0, low_v=-12.0, frontend=lambda v: frontend(v, (-12.0, 3.0), (12.0, 0.3)))
    cal = Calibration.from_points([[3.0, -12.0], [0.3, 12.0]])
    high, low = BurstPilotSensor(Mcp3008(EmulatedMcp3008({0: line.pin_at}, clock=clock)), 0, cal).read()
    assert high == pytest.approx(9.0, abs=0.05)
    assert low == pytest.approx(-12.0, abs=0.05)


def test_burst_sensor_top_k_limit_is_real(clock: VirtualClock) -> None:
    """At 96 % duty a 200-sample burst at 40 kHz may hold only 5 low samples: top_k = 10 then misreads the diode."""
    line = PilotLine(duty=96.0, high_v=6.0, low_v=-12.0)
    emu = EmulatedMcp3008({0: line.pin_at}, clock=clock)
    too_wide = BurstPilotSensor(Mcp3008(emu), 0, CAL, top_k=10)
    lows = []
    for step in range(0, 1000, 5):
        clock.now = 50.0 + step * 1e-6
        lows.append(too_wide.read()[1])
    assert max(lows) > -10.5  # some phase reads a low plateau that fails the diode check
    assert classify(6.0, max(lows), True).diode_fault


def test_calibrated_by_measurement_with_a_skewed_frontend(clock: VirtualClock) -> None:
    """An installer calibrates at DC -12 V and +12 V; the real front end is off its nominal values."""
    line = PilotLine(frontend=lambda v: frontend(v, lo=(-12.0, 0.41), hi=(12.0, 2.93)))
    emu = EmulatedAds1115({ADDR: {0: line.pin_peak, 1: line.pin_valley}}, clock=clock)
    ads = Ads1115(emu, sleep=clock.sleep, clock=clock)
    line.set(duty=0.0, low_v=-12.0)
    pin_minus12 = ads.read_volts(0)
    line.set(duty=100.0, high_v=12.0)
    pin_plus12 = ads.read_volts(0)
    cal = Calibration.from_points([[pin_minus12, -12.0], [pin_plus12, 12.0]])
    sensor = PeakDetectorPilotSensor(ads, 0, 1, cal, cal)
    line.set(duty=26.7, high_v=8.36, low_v=-11.4)
    high, low = sensor.read()
    assert high == pytest.approx(8.36, abs=0.01)
    assert low == pytest.approx(-11.4, abs=0.01)
    assert classify(high, low, True) == PilotReading(B)
    # The nominal calibration on this front end would be off by a third of a volt.
    nominal_high, _ = PeakDetectorPilotSensor(ads, 0, 1, CAL, CAL).read()
    assert abs(nominal_high - 8.36) > 0.3


def test_pilot_sensor_io_errors(rig: PilotRig) -> None:
    rig.ads_emu.fail = True
    rig.mcp_emu.fail = True
    with pytest.raises(AdcError):
        rig.peak.read()
    with pytest.raises(AdcError):
        rig.burst.read()


@pytest.mark.parametrize(("samples", "top_k"), [(0, 1), (600, 5), (200, 0), (200, 101)])
def test_burst_sensor_rejects_bad_sizes(samples: int, top_k: int) -> None:
    with pytest.raises(ValueError, match=r"burst size|top_k"):
        BurstPilotSensor(Mcp3008(EmulatedMcp3008({})), 0, CAL, samples=samples, top_k=top_k)


# --- the emulated pilot line --------------------------------------------------------------------------------
def test_pilot_line_waveform() -> None:
    line = PilotLine(duty=25.0, high_v=9.0, low_v=-12.0, edge_s=10e-6)
    assert line.voltage_at(100e-6) == 9.0
    assert line.voltage_at(249e-6) == 9.0
    assert line.voltage_at(255e-6) == pytest.approx(9.0 - 21.0 / 2)  # half-way down the falling edge
    assert line.voltage_at(500e-6) == -12.0
    assert line.voltage_at(2.000005) == pytest.approx(-1.5, abs=1e-3)  # half-way up a later rising edge
    assert (line.peak(), line.valley()) == (9.0, -12.0)
    line.set(duty=0.0)
    assert line.voltage_at(0.1234) == -12.0
    assert (line.peak(), line.valley()) == (-12.0, -12.0)
    line.set(duty=100.0)
    assert (line.peak(), line.valley()) == (9.0, 9.0)
    with pytest.raises(ValueError, match="duty"):
        line.set(duty=101.0)


def test_frontend() -> None:
    assert frontend(-12.0) == pytest.approx(0.3)
    assert frontend(12.0) == pytest.approx(3.0)
    assert frontend(0.0) == pytest.approx(1.65)


# --- proximity pilot ----------------------------------------------------------------------------------------
PULLUP = 1000.0
SUPPLY = 3.3


def pp_pin(ohms: float) -> float:
    return SUPPLY * ohms / (ohms + PULLUP)


@pytest.mark.parametrize(("rc", "amps"), [(1500.0, 13.0), (680.0, 20.0), (220.0, 32.0), (100.0, 63.0)])
def test_pp_through_ads1115(clock: VirtualClock, rc: float, amps: float) -> None:
    _, ads = make_ads(clock, {3: lambda: pp_pin(rc)})
    sensor = ProximitySensor(lambda: ads.read_volts(3), PULLUP, SUPPLY)
    assert sensor.resistance() == pytest.approx(rc, rel=0.005)
    assert cable_ampacity(sensor.resistance()) == amps


@pytest.mark.parametrize("pin_v", [SUPPLY, SUPPLY + 0.05])
def test_pp_no_cable(pin_v: float) -> None:
    sensor = ProximitySensor(lambda: pin_v, PULLUP, SUPPLY)
    assert sensor.resistance() == math.inf
    assert cable_ampacity(sensor.resistance()) is None


@pytest.mark.parametrize("pin_v", [0.0, -0.01, pp_pin(30.0)])
def test_pp_shorted(pin_v: float) -> None:
    sensor = ProximitySensor(lambda: pin_v, PULLUP, SUPPLY)
    assert sensor.resistance() < 60.0
    with pytest.raises(CableCodingError, match="PP shorted"):
        cable_ampacity(sensor.resistance())


def test_pp_adc_error_passes_through(clock: VirtualClock) -> None:
    emu, ads = make_ads(clock, {3: lambda: 1.0})
    emu.fail = True
    with pytest.raises(AdcError):
        ProximitySensor(lambda: ads.read_volts(3), PULLUP, SUPPLY).resistance()


@pytest.mark.parametrize(
    ("ohms", "amps"),
    [
        # EVerest test range edges
        (80.0, 63.0), (140.0, 63.0), (164.0, 32.0), (308.0, 32.0), (400.0, 20.0), (936.0, 20.0),
        (1100.0, 13.0), (2460.0, 13.0),
        # in between two ranges: the lower ampacity
        (60.0, 63.0), (70.0, 63.0), (150.0, 32.0), (350.0, 20.0), (1000.0, 13.0), (3000.0, 13.0), (4500.0, 13.0),
        # no cable
        (4500.1, None), (100_000.0, None), (math.inf, None),
    ],
)
def test_cable_ampacity_ranges(ohms: float, amps: float | None) -> None:
    assert cable_ampacity(ohms) == amps


@pytest.mark.parametrize("ohms", [0.0, 59.9, math.nan])
def test_cable_ampacity_shorted(ohms: float) -> None:
    with pytest.raises(CableCodingError):
        cable_ampacity(ohms)


# --- spidev ioctl layout ------------------------------------------------------------------------------------
def test_spi_ioctl_numbers_match_spidev_h() -> None:
    # Values of include/uapi/linux/spi/spidev.h compiled for ARM/ARM64/x86 (generic ioctl encoding).
    assert spi_ioc_message(1) == 0x40206B00
    assert spi_ioc_message(2) == 0x40406B00
    assert spi_module.SPI_IOC_WR_MODE == 0x40016B01
    assert spi_module.SPI_IOC_WR_BITS_PER_WORD == 0x40016B03
    assert spi_module.SPI_IOC_WR_MAX_SPEED_HZ == 0x40046B04
    assert MAX_FRAMES == 511  # SPI_MSGSIZE(N) needs N * 32 < 1 << 14
    with pytest.raises(ValueError):
        spi_ioc_message(512)


def test_spi_ioc_transfer_layout() -> None:
    assert ctypes.sizeof(SpiIocTransfer) == 32
    offsets = {field[0]: getattr(SpiIocTransfer, field[0]).offset for field in SpiIocTransfer._fields_}
    assert offsets == {
        "tx_buf": 0, "rx_buf": 8, "len": 16, "speed_hz": 20, "delay_usecs": 24, "bits_per_word": 26,
        "cs_change": 27, "tx_nbits": 28, "rx_nbits": 29, "word_delay_usecs": 30, "pad": 31,
    }


class FakeSpiKernel:
    """Stands in for the fcntl module: runs spidev's ioctls against an emulated MCP3008.

    SPI_IOC_MESSAGE is executed like the kernel does: chip select stays asserted across transfers until one with
    cs_change set (or the end of the message), and received bytes are written through rx_buf.
    """

    def __init__(self, chip: EmulatedMcp3008) -> None:
        self.chip = chip
        self.setup: dict[int, bytes] = {}
        self.cs_changes: list[list[int]] = []
        self.speeds: set[int] = set()

    def ioctl(self, fd: int, request: int, arg: object) -> None:
        if isinstance(arg, bytes):
            self.setup[request] = arg
            return
        n = (request >> 16 & 0x3FFF) // 32
        assert request == spi_ioc_message(n)
        transfers = (SpiIocTransfer * n).from_buffer(arg)  # type: ignore[arg-type]
        self.cs_changes.append([t.cs_change for t in transfers])
        frames: list[list[int]] = []
        spans: list[list[tuple[int, int]]] = []  # per frame: (transfer index, length)
        current: list[int] = []
        span: list[tuple[int, int]] = []
        for i, t in enumerate(transfers):
            assert t.bits_per_word == 8
            self.speeds.add(t.speed_hz)
            current += list(ctypes.string_at(t.tx_buf, t.len))
            span.append((i, t.len))
            if t.cs_change or i == n - 1:
                frames.append(current)
                spans.append(span)
                current, span = [], []
        replies = self.chip.xfer_frames(frames)
        for reply, frame_span in zip(replies, spans, strict=True):
            pos = 0
            for i, length in frame_span:
                ctypes.memmove(transfers[i].rx_buf, bytes(reply[pos:pos + length]), length)
                pos += length


@pytest.fixture
def spidev(tmp_path: Path, clock: VirtualClock, monkeypatch: pytest.MonkeyPatch) -> tuple[FakeSpiKernel, Path]:
    (tmp_path / "spidev0.1").write_bytes(b"")
    kernel = FakeSpiKernel(EmulatedMcp3008({4: lambda t: 1.0 + 100.0 * t}, clock=clock))
    monkeypatch.setattr(spi_module, "fcntl", kernel)
    return kernel, tmp_path


def test_linux_spi_setup(spidev: tuple[FakeSpiKernel, Path]) -> None:
    kernel, dev_dir = spidev
    with LinuxSpi(0, 1, speed_hz=1_350_000, dev_dir=str(dev_dir)) as bus:
        assert bus.path == str(dev_dir / "spidev0.1")
    assert kernel.setup == {
        spi_module.SPI_IOC_WR_MODE: b"\x00",
        spi_module.SPI_IOC_WR_BITS_PER_WORD: b"\x08",
        spi_module.SPI_IOC_WR_MAX_SPEED_HZ: struct.pack("=I", 1_350_000),
    }


def test_linux_spi_burst_through_fake_kernel(spidev: tuple[FakeSpiKernel, Path]) -> None:
    kernel, dev_dir = spidev
    with LinuxSpi(0, 1, dev_dir=str(dev_dir)) as bus:
        adc = Mcp3008(bus)
        assert adc.read_volts(4) == pytest.approx(1.0, abs=3.3 / 1024)
        samples = adc.burst(4, 50)
    assert len(kernel.cs_changes) == 2  # one ioctl per reading
    assert kernel.cs_changes[1] == [1] * 49 + [0]
    assert kernel.speeds == {1_000_000}
    assert kernel.chip.conversions == 51
    assert samples == pytest.approx([1.0 + 100.0 * i / 40_000 for i in range(50)], abs=3.3 / 1024)


def test_linux_spi_rejects_bad_frames(spidev: tuple[FakeSpiKernel, Path]) -> None:
    _, dev_dir = spidev
    with LinuxSpi(0, 1, dev_dir=str(dev_dir)) as bus:
        frames: Sequence[Sequence[int]]
        for frames in ([], [[]], [[256]], [[0]] * (MAX_FRAMES + 1)):
            with pytest.raises(ValueError):
                bus.xfer_frames(frames)
        bus.close()
        with pytest.raises(OSError, match="closed"):
            bus.xfer2([1, 2, 3])


def test_linux_spi_missing_device(tmp_path: Path) -> None:
    with pytest.raises(OSError, match=r"cannot open .*spidev0\.0: .*dtparam=spi=on"):
        LinuxSpi(0, 0, dev_dir=str(tmp_path))


def test_shipped_burst_profile_reads_96_percent_low_plateau(clock: VirtualClock) -> None:
    from evsed.board.rpi.profile import load_profile

    spec = load_profile("pi-mcp3008").connectors[0].pilot
    assert spec.method == "burst" and spec.channel is not None and spec.samples and spec.top_k
    line = PilotLine(duty=96.0, high_v=6.0, low_v=-12.0)
    emu = EmulatedMcp3008({spec.channel: line.pin_at}, clock=clock)
    sensor = BurstPilotSensor(Mcp3008(emu), spec.channel, Calibration.from_points(spec.calibration),
                              samples=spec.samples, top_k=spec.top_k)
    for step in range(0, 1000, 5):
        clock.now = 50.0 + step * 1e-6
        high, low = sensor.read()
        assert classify(high, low, True) == PilotReading(C), step


def test_mcp3008_emulator_fast_path_matches_the_bit_level_chip() -> None:
    # The emulator answers the standard 3-byte command without clocking bits; it must be the same chip.
    chip = EmulatedMcp3008({c: (lambda t, c=c: 0.1 + c * 0.4) for c in range(8)}, clock=lambda: 0.0)
    for mode in range(16):
        frame = [1, mode << 4, 0]
        assert chip._frame(frame, 0.0) == chip._frame_bits(frame, 0.0), mode
