"""ADCs for pilot (CP) and proximity (PP) sensing: ADS1115 on I2C, MCP3008 on SPI, calibration and sensors.

Layers, lowest first:

- `SMBusLike` / `SpiLike`: the bus transactions; smbus2 and `evsed.board.rpi.spi.LinuxSpi` in the field, the
  register-level emulators of `evsed.board.rpi.emulated` in tests and dev runs.
- `Ads1115`, `Mcp3008`: chip drivers that return pin volts and turn every bus failure into `AdcError`.
- `Calibration`: a two-point linear map from pin volts to pilot volts (or anything else).
- `PeakDetectorPilotSensor`, `BurstPilotSensor`: the pilot's (high, low) plateaus for
  `evsed.core.pilot.classify`. An ADS1115 is too slow to see the plateaus of a 1 kHz PWM (it averages them, see
  hardware.md 3.1), so it needs analog peak and valley detectors; an MCP3008 samples the raw pilot fast enough.
- `ProximitySensor`, `cable_ampacity`: the Type 2 PP coding resistor and the cable current it stands for.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol


class AdcError(Exception):
    """An ADC did not answer or answered nonsense; the reading is lost, not zero."""


class CableCodingError(ValueError):
    """The PP resistance is below any valid cable coding: PP shorted to PE."""


class SMBusLike(Protocol):
    """The part of smbus2.SMBus the ADS1115 driver uses."""

    def write_i2c_block_data(self, i2c_addr: int, register: int, data: list[int]) -> None: ...

    def read_i2c_block_data(self, i2c_addr: int, register: int, length: int) -> list[int]: ...


class SpiLike(Protocol):
    """The part of `LinuxSpi` the MCP3008 driver uses."""

    def xfer2(self, data: list[int]) -> list[int]: ...

    def xfer_frames(self, frames: Sequence[Sequence[int]]) -> list[list[int]]: ...


def open_smbus(bus: int) -> SMBusLike:
    """smbus2.SMBus on /dev/i2c-<bus>, with a one-line error when the bus is missing."""
    import smbus2  # the daemon with the sim board must not need it

    try:
        return smbus2.SMBus(bus)
    except OSError as e:
        raise AdcError(f"cannot open I2C bus {bus} (/dev/i2c-{bus}): {e.strerror} (is I2C enabled? "
                       "dtparam=i2c_arm=on)") from e


# --- ADS1115 (TI SBAS444E) ----------------------------------------------------------------------------------
_REG_CONVERSION = 0x00
_REG_CONFIG = 0x01
_OS = 0x8000  # write: start a single conversion; read: 1 = no conversion in progress
_MUX_SINGLE_ENDED = 0b100  # MUX 100..111 = AIN0..AIN3 against GND
_MODE_SINGLE_SHOT = 0x0100
_COMP_DISABLED = 0b11
_PGA_CODES = {6.144: 0, 4.096: 1, 2.048: 2, 1.024: 3, 0.512: 4, 0.256: 5}
_DR_CODES = {8: 0, 16: 1, 32: 2, 64: 3, 128: 4, 250: 5, 475: 6, 860: 7}
# The internal oscillator may run up to 10 % slow, so a conversion can take 1.1 / DR.
_FIRST_POLL_CONVERSIONS = 1.1
_REPOLL_CONVERSIONS = 0.25
_TIMEOUT_CONVERSIONS = 10.0
_MAX_POLLS = 64  # stops the loop even if an injected clock does not advance


class Ads1115:
    """TI ADS1115, single-ended single-shot conversions: one channel per call, a fresh conversion every time."""

    def __init__(
        self,
        bus: SMBusLike,
        address: int = 0x48,
        fsr_v: float = 4.096,
        data_rate: int = 860,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        pga = next((code for fsr, code in _PGA_CODES.items() if math.isclose(fsr, fsr_v)), None)
        if pga is None:
            raise ValueError(f"ADS1115 full-scale range {fsr_v} V is not one of {sorted(_PGA_CODES)}")
        if data_rate not in _DR_CODES:
            raise ValueError(f"ADS1115 data rate {data_rate} SPS is not one of {sorted(_DR_CODES)}")
        self.bus = bus
        self.address = address
        self.fsr_v = fsr_v
        self.data_rate = data_rate
        self._pga = pga
        self._sleep = sleep
        self._clock = clock

    def config_word(self, channel: int) -> int:
        """The config register value that starts one conversion of AIN<channel> against GND."""
        if channel not in range(4):
            raise ValueError(f"ADS1115 channel must be 0..3, not {channel}")
        return (
            _OS | (_MUX_SINGLE_ENDED + channel) << 12 | self._pga << 9 | _MODE_SINGLE_SHOT
            | _DR_CODES[self.data_rate] << 5 | _COMP_DISABLED
        )

    def read_volts(self, channel: int) -> float:
        config = self.config_word(channel)
        conversion_s = 1.0 / self.data_rate
        try:
            start = self._clock()
            self.bus.write_i2c_block_data(self.address, _REG_CONFIG, [config >> 8, config & 0xFF])
            self._sleep(conversion_s * _FIRST_POLL_CONVERSIONS)
            for _ in range(_MAX_POLLS):
                if self._read_register(_REG_CONFIG) & _OS:
                    break
                if self._clock() - start > conversion_s * _TIMEOUT_CONVERSIONS:
                    raise AdcError(f"{self._name(channel)}: conversion did not complete within "
                                   f"{_TIMEOUT_CONVERSIONS * conversion_s * 1000:.0f} ms")
                self._sleep(conversion_s * _REPOLL_CONVERSIONS)
            else:
                raise AdcError(f"{self._name(channel)}: conversion did not complete after {_MAX_POLLS} polls")
            raw = self._read_register(_REG_CONVERSION)
        except OSError as e:
            raise AdcError(f"{self._name(channel)}: I2C error: {e}") from e
        # Two's complement, MSB first (not read_word_data, which would swap the bytes).
        signed = raw - 0x10000 if raw & 0x8000 else raw
        return signed * self.fsr_v / 32768

    def _read_register(self, register: int) -> int:
        data = self.bus.read_i2c_block_data(self.address, register, 2)
        if len(data) != 2:
            raise AdcError(f"ADS1115 0x{self.address:02x}: register {register} read returned {len(data)} bytes")
        return data[0] << 8 | data[1]

    def _name(self, channel: int) -> str:
        return f"ADS1115 0x{self.address:02x} AIN{channel}"


# --- MCP3008 (Microchip DS21295) ----------------------------------------------------------------------------
class Mcp3008:
    """Microchip MCP3008, single-ended: one sample per call or a burst of back-to-back samples."""

    # LinuxSpi puts a burst into one SPI_IOC_MESSAGE, whose size field allows 511 transfers.
    MAX_BURST = 511

    def __init__(self, spi: SpiLike, vref_v: float = 3.3) -> None:
        self.spi = spi
        self.vref_v = vref_v

    @staticmethod
    def command(channel: int) -> list[int]:
        """Start bit in the first byte's LSB, then SGL=1 and the channel number at the top of the second byte, so
        the 10-bit result ends right-aligned in the second and third bytes read."""
        if channel not in range(8):
            raise ValueError(f"MCP3008 channel must be 0..7, not {channel}")
        return [0x01, (0x08 | channel) << 4, 0x00]

    def _volts(self, reply: Sequence[int]) -> float:
        if len(reply) != 3:
            raise AdcError(f"MCP3008: {len(reply)} bytes read for a 3-byte command")
        # The bits before the null bit are undriven (high impedance): mask them off.
        code = (reply[1] & 0x03) << 8 | reply[2]
        return code * self.vref_v / 1024

    def read_volts(self, channel: int) -> float:
        command = self.command(channel)
        try:
            reply = self.spi.xfer2(command)
        except OSError as e:
            raise AdcError(f"MCP3008 CH{channel}: SPI error: {e}") from e
        return self._volts(reply)

    def burst(self, channel: int, n: int) -> list[float]:
        """n back-to-back samples in a single SPI call (one ioctl), chip select toggled between samples."""
        if not 1 <= n <= self.MAX_BURST:
            raise ValueError(f"MCP3008 burst must be 1..{self.MAX_BURST} samples, not {n}")
        command = self.command(channel)
        try:
            replies = self.spi.xfer_frames([command] * n)
        except OSError as e:
            raise AdcError(f"MCP3008 CH{channel}: SPI error: {e}") from e
        if len(replies) != n:
            raise AdcError(f"MCP3008 CH{channel}: {len(replies)} replies for {n} samples")
        return [self._volts(reply) for reply in replies]


# --- calibration --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Calibration:
    """Linear map through two measured points (adc1 -> value1, adc2 -> value2)."""

    adc1: float
    value1: float
    adc2: float
    value2: float

    def __post_init__(self) -> None:
        values = (self.adc1, self.value1, self.adc2, self.value2)
        if not all(math.isfinite(v) for v in values):
            raise ValueError(f"calibration points must be finite numbers: {list(values)}")
        # Equal ADC volts give no slope; equal values would map every reading to one value and hide all changes.
        if math.isclose(self.adc1, self.adc2, abs_tol=1e-9) or math.isclose(self.value1, self.value2, abs_tol=1e-9):
            raise ValueError(
                f"calibration points [[{self.adc1}, {self.value1}], [{self.adc2}, {self.value2}]] must differ in both "
                "ADC volts and value"
            )

    @classmethod
    def from_points(cls, points: Sequence[Sequence[float]]) -> Calibration:
        """From `[[adc_volts_1, value_1], [adc_volts_2, value_2]]` (the board profile's format)."""
        if len(points) != 2 or any(len(p) != 2 for p in points):
            raise ValueError(f"calibration needs two [adc_volts, value] points, got {points!r}")
        (adc1, value1), (adc2, value2) = points
        return cls(float(adc1), float(value1), float(adc2), float(value2))

    def __call__(self, adc_v: float) -> float:
        return self.value1 + (adc_v - self.adc1) * (self.value2 - self.value1) / (self.adc2 - self.adc1)


# --- pilot sensors ------------------------------------------------------------------------------------------
class PeakDetectorPilotSensor:
    """ADS1115 behind an analog peak (high plateau) and valley (low plateau) detector: two channels."""

    def __init__(
        self, adc: Ads1115, high_channel: int, low_channel: int, high_cal: Calibration, low_cal: Calibration
    ) -> None:
        self.adc = adc
        self.high_channel = high_channel
        self.low_channel = low_channel
        self.high_cal = high_cal
        self.low_cal = low_cal

    def read(self) -> tuple[float, float]:
        """(high_v, low_v) in pilot volts; AdcError if either conversion fails."""
        high = self.high_cal(self.adc.read_volts(self.high_channel))
        low = self.low_cal(self.adc.read_volts(self.low_channel))
        return high, low


class BurstPilotSensor:
    """MCP3008 on the raw (divided/offset) pilot, sampled in bursts not synchronised to the PWM: high plateau =
    median of the top-k samples, low plateau = median of the bottom-k (edge samples would pull a plain max/min).

    A DC pilot (no PWM) gives high == low == the DC level.

    Limit: the median of the top k is the high plateau only while more than k/2 of the burst's samples sit on it
    (and the bottom k likewise for the low plateau). A burst of n samples holds about n * duty high samples and
    n * (1 - duty) low ones, fewer when some land on edges, and sampling that is phase-locked to the PWM (40 kHz
    against 1 kHz) bunches them per period. The shortest plateaus are the high one at 5 % duty (50 us) and the low
    one at 96 % duty (40 us, 80 A): a default burst (200 samples = 5 ms at 40 kHz) holds 10 and 8 of them, of which
    edges and bunching can leave only 5. Hence top_k = 5 (3 needed). Keep top_k <= samples * min(duty, 1 - duty) / 2
    for the duties in use; at lower sample rates raise `samples` (up to `Mcp3008.MAX_BURST`) rather than lower top_k.
    """

    def __init__(self, adc: Mcp3008, channel: int, cal: Calibration, samples: int = 200, top_k: int = 5) -> None:
        if not 1 <= samples <= Mcp3008.MAX_BURST:
            raise ValueError(f"burst size must be 1..{Mcp3008.MAX_BURST} samples, not {samples}")
        if not 1 <= top_k <= samples // 2:
            raise ValueError(f"top_k must be 1..{samples // 2} for {samples} samples, not {top_k}")
        self.adc = adc
        self.channel = channel
        self.cal = cal
        self.samples = samples
        self.top_k = top_k

    def read(self) -> tuple[float, float]:
        """(high_v, low_v) in pilot volts; AdcError if the burst fails."""
        ordered = sorted(self.adc.burst(self.channel, self.samples))
        top = self.cal(statistics.median(ordered[-self.top_k:]))
        bottom = self.cal(statistics.median(ordered[: self.top_k]))
        # An inverting front end maps the highest pin volts to the lowest pilot volts.
        return max(top, bottom), min(top, bottom)


# --- proximity pilot ----------------------------------------------------------------------------------------
class ProximitySensor:
    """PP (Type 2 socket): Rc between PP and PE, read through a pull-up to supply_v: R = pullup * V / (supply - V)."""

    def __init__(self, read_volts: Callable[[], float], pullup_ohm: float, supply_v: float) -> None:
        if pullup_ohm <= 0 or supply_v <= 0:
            raise ValueError(f"PP pull-up ({pullup_ohm} ohm) and supply ({supply_v} V) must be positive")
        self._read_volts = read_volts
        self.pullup_ohm = pullup_ohm
        self.supply_v = supply_v

    def resistance(self) -> float:
        """Ohms between PP and PE; math.inf with no cable (the pin at the supply). AdcError passes through."""
        volts = self._read_volts()
        if volts >= self.supply_v:
            return math.inf
        # ADC offset can read a shorted PP slightly below 0 V.
        volts = max(volts, 0.0)
        return self.pullup_ohm * volts / (self.supply_v - volts)


PP_SHORT_MAX_OHM = 60.0  # EVerest: below this, PP is shorted (an error, not a cable)
PP_NO_CABLE_MIN_OHM = 4500.0  # EVerest: above this, no cable is plugged
# Upper ends of EVerest's test ranges (hardware.md 1.4): 100 ohm 80-140, 220 ohm 164-308, 680 ohm 400-936,
# 1.5 kohm 1100-2460. A resistance between two ranges counts as the next higher range, i.e. the lower ampacity.
_PP_RANGES: tuple[tuple[float, float], ...] = ((140.0, 63.0), (308.0, 32.0), (936.0, 20.0), (PP_NO_CABLE_MIN_OHM, 13.0))


def cable_ampacity(ohms: float) -> float | None:
    """Cable current in amperes coded by the PP resistance (Type 2), or None when no cable is plugged.

    60..140 ohm -> 63 A (60..80 is below the 100 ohm range but above EVerest's error limit), ..308 -> 32 A,
    ..936 -> 20 A, ..4500 -> 13 A (2460..4500 lies between the 1.5 kohm range and "no cable": the lowest
    ampacity), above 4500 (or inf) -> None. Below 60 ohm PP is shorted: CableCodingError, so that a fault can never
    be mistaken for the largest cable.
    """
    if math.isnan(ohms) or ohms < PP_SHORT_MAX_OHM:
        raise CableCodingError(f"PP resistance {ohms:.0f} ohm is below {PP_SHORT_MAX_OHM:.0f} ohm: PP shorted to PE")
    for upper, amps in _PP_RANGES:
        if ohms <= upper:
            return amps
    return None
