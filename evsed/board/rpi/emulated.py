"""Emulated pilot line and ADC chips at the bus-transaction level, for tests, benches and `evsed` dev runs.

The emulators stand in for smbus2 and spidev and nothing else: `Ads1115`, `Mcp3008` and the pilot sensors above them
are the real drivers. They decode the chips' registers and command bits from the datasheets on their own (they do
not import the drivers' tables), so a driver that writes a wrong bit reads a wrong value here too.

- `PilotLine`: the control pilot as a function of time (square wave, plateaus set by the EV, optional edges).
- `frontend`: the analog divider/offset from pilot volts to ADC pin volts.
- `EmulatedAds1115`: an `SMBusLike` with one or more ADS1115 chips; conversions take 1/DR of the given clock.
- `EmulatedMcp3008`: an `SpiLike` MCP3008 emulated bit by bit on each chip-select frame; successive conversions
  sample their source at successive instants, so a burst sees the PWM's plateaus and edges.
"""

from __future__ import annotations

import errno
import math
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

# --- the pilot ----------------------------------------------------------------------------------------------


class PilotLine:
    """The physical pilot as a function of time: duty (percent, 100 = +V DC, 0 = -V DC), high plateau volts (set by
    the EV load: 12/9/6/3/0), low plateau (-12, or e.g. 0 when the diode is missing), frequency 1000 Hz, plus a
    front end mapping pilot volts -> ADC pin volts (linear, e.g. -12 V -> 0.3 V, +12 V -> 3.0 V for a 3.3 V ADC).
    Thread-safe setters (the test/bench thread changes it while the sampling thread reads).

    `edge_s` > 0 gives the edges a linear ramp of that length (IEC allows rise times up to 10 us), so burst
    samples can land between the plateaus as they do on real hardware.
    """

    def __init__(
        self,
        *,
        duty: float = 100.0,
        high_v: float = 12.0,
        low_v: float = -12.0,
        frequency_hz: float = 1000.0,
        edge_s: float = 0.0,
        frontend: Callable[[float], float] | None = None,
    ) -> None:
        self._lock = threading.Lock()
        self._duty = 100.0
        self._high_v = high_v
        self._low_v = low_v
        self.frequency_hz = frequency_hz
        self.edge_s = edge_s
        self._frontend = frontend if frontend is not None else _default_frontend
        self.set(duty=duty)

    def set(self, *, duty: float | None = None, high_v: float | None = None, low_v: float | None = None) -> None:
        if duty is not None and not 0.0 <= duty <= 100.0:
            raise ValueError(f"duty must be 0..100 %, not {duty}")
        with self._lock:
            if duty is not None:
                self._duty = duty
            if high_v is not None:
                self._high_v = high_v
            if low_v is not None:
                self._low_v = low_v

    @property
    def duty(self) -> float:
        with self._lock:
            return self._duty

    def voltage_at(self, t: float) -> float:
        """Pilot volts at time t (square wave, high plateau first in each period)."""
        with self._lock:
            duty, high, low = self._duty, self._high_v, self._low_v
        if duty >= 100.0:
            return high
        if duty <= 0.0:
            return low
        period = 1.0 / self.frequency_hz
        phase = t % period
        high_s = period * duty / 100.0
        edge = min(self.edge_s, high_s, period - high_s)
        if phase < high_s:
            return low + (high - low) * phase / edge if phase < edge else high
        since_fall = phase - high_s
        return high + (low - high) * since_fall / edge if since_fall < edge else low

    def peak(self) -> float:
        """What an ideal peak detector holds: the highest level the line reaches."""
        with self._lock:
            return self._high_v if self._duty > 0.0 else self._low_v

    def valley(self) -> float:
        """What an ideal valley detector holds: the lowest level the line reaches."""
        with self._lock:
            return self._low_v if self._duty < 100.0 else self._high_v

    # ADC pin volts, through the front end: what the emulated chips' sources return.
    def pin_at(self, t: float) -> float:
        return self._frontend(self.voltage_at(t))

    def pin_peak(self) -> float:
        return self._frontend(self.peak())

    def pin_valley(self) -> float:
        return self._frontend(self.valley())


def frontend(
    pilot_v: float, lo: tuple[float, float] = (-12.0, 0.3), hi: tuple[float, float] = (12.0, 3.0)
) -> float:
    """ADC pin volts for pilot volts through a linear divider/offset through (pilot, pin) points lo and hi."""
    (p1, v1), (p2, v2) = lo, hi
    return v1 + (pilot_v - p1) * (v2 - v1) / (p2 - p1)


def _default_frontend(pilot_v: float) -> float:
    return frontend(pilot_v)


def _remote_io_error() -> OSError:
    # What smbus2 raises when nothing acknowledges (and what we use for a failed SPI ioctl).
    return OSError(errno.EREMOTEIO, "Remote I/O error")


# --- ADS1115 ------------------------------------------------------------------------------------------------
# Decoded from TI SBAS444E independently of the driver's encoding tables.
_ADS_FSR = (6.144, 4.096, 2.048, 1.024, 0.512, 0.256, 0.256, 0.256)
_ADS_DR = (8, 16, 32, 64, 128, 250, 475, 860)
_ADS_DIFF = ((0, 1), (0, 3), (1, 3), (2, 3))  # MUX 000..011: (AINp, AINn)
_ADS_RESET_CONFIG = 0x8583


@dataclass
class _AdsChip:
    sources: dict[int, Callable[[], float]]
    config: int = _ADS_RESET_CONFIG
    conversion: int = 0
    lo_thresh: int = 0x8000
    hi_thresh: int = 0x7FFF
    done_at: float = -math.inf  # clock time the running conversion completes
    pending: int | None = None  # result of the running conversion, moved to `conversion` when done


class EmulatedAds1115:
    """Implements SMBusLike for one or more ADS1115 addresses: config register writes (decodes MUX/PGA/MODE/DR/OS),
    conversion after 1/DR seconds of real (or injected) time, conversion register = the channel's source voltage
    quantised to 16 bit at the configured PGA, clipped at full scale. Sources per channel: callables returning ADC pin
    volts (e.g. lambda: frontend(line.peak())). Fault injection: .fail = True -> OSError(121, 'Remote I/O error')
    on every transaction; .stuck = True -> OS bit never sets.

    `chips` maps an I2C address to {channel: source}; an address not in it does not acknowledge (OSError 121).
    The source is sampled when the conversion starts. `delay_factor` stretches conversions (a slow oscillator).
    `writes` logs every (address, register, bytes) written, `reads` counts block reads per (address, register).
    """

    def __init__(
        self,
        chips: Mapping[int, Mapping[int, Callable[[], float]]],
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._chips = {address: _AdsChip(dict(sources)) for address, sources in chips.items()}
        self._clock = clock
        self._lock = threading.Lock()
        self.fail = False
        self.stuck = False
        self.hang_s = 0.0
        self.delay_factor = 1.0
        self.writes: list[tuple[int, int, list[int]]] = []
        self.reads: dict[tuple[int, int], int] = {}

    def set_source(self, address: int, channel: int, source: Callable[[], float]) -> None:
        with self._lock:
            self._chip(address).sources[channel] = source

    def _chip(self, address: int) -> _AdsChip:
        if self.fail or address not in self._chips:
            raise _remote_io_error()
        return self._chips[address]

    def write_i2c_block_data(self, i2c_addr: int, register: int, data: list[int]) -> None:
        with self._lock:
            chip = self._chip(i2c_addr)
            if len(data) != 2 or register > 0x03:
                raise ValueError(f"ADS1115 registers are 16 bit at pointers 0..3, not {register} <- {data}")
            self.writes.append((i2c_addr, register, list(data)))
            word = data[0] << 8 | data[1]
            if register == 0x01:
                self._write_config(chip, word)
            elif register == 0x02:
                chip.lo_thresh = word
            elif register == 0x03:
                chip.hi_thresh = word
            # The conversion register is read-only: the chip ignores writes to it.

    def read_i2c_block_data(self, i2c_addr: int, register: int, length: int) -> list[int]:
        if self.hang_s:
            time.sleep(self.hang_s)  # a chip holding SCL low (clock stretching gone wrong): the transfer blocks
        with self._lock:
            chip = self._chip(i2c_addr)
            if not 1 <= length <= 2 or register > 0x03:
                raise ValueError(f"ADS1115 registers are 16 bit at pointers 0..3, not {length} bytes at {register}")
            self.reads[(i2c_addr, register)] = self.reads.get((i2c_addr, register), 0) + 1
            self._settle(chip)
            if register == 0x00:
                if not chip.config & 0x0100 and not self.stuck and self._clock() >= chip.done_at:
                    chip.conversion = self._convert(chip, chip.config)  # continuous mode: always the latest
                word = chip.conversion
            elif register == 0x01:
                # Read back, OS means "not converting".
                word = chip.config & ~0x8000 | (0 if chip.pending is not None else 0x8000)
            else:
                word = chip.lo_thresh if register == 0x02 else chip.hi_thresh
            return [word >> 8, word & 0xFF][:length]

    def _write_config(self, chip: _AdsChip, word: int) -> None:
        chip.config = word & 0x7FFF
        single_shot = bool(word & 0x0100)
        if single_shot and not word & 0x8000:
            return  # configuration only, no conversion
        self._settle(chip)
        if single_shot and chip.pending is not None:
            return  # OS=1 starts a conversion only from power-down, not during one
        rate = _ADS_DR[(word >> 5) & 0b111]
        chip.pending = self._convert(chip, word)
        chip.done_at = self._clock() + self.delay_factor / rate

    def _convert(self, chip: _AdsChip, word: int) -> int:
        mux = (word >> 12) & 0b111
        fsr = _ADS_FSR[(word >> 9) & 0b111]
        if mux >= 0b100:
            volts = self._source(chip, mux - 0b100)
        else:
            pos, neg = _ADS_DIFF[mux]
            volts = self._source(chip, pos) - self._source(chip, neg)
        code = max(-32768, min(32767, round(volts / fsr * 32768)))
        return code & 0xFFFF

    @staticmethod
    def _source(chip: _AdsChip, channel: int) -> float:
        source = chip.sources.get(channel)
        return source() if source is not None else 0.0  # an unconnected input reads about 0 V

    def _settle(self, chip: _AdsChip) -> None:
        if chip.pending is not None and not self.stuck and self._clock() >= chip.done_at:
            chip.conversion, chip.pending = chip.pending, None


# --- MCP3008 ------------------------------------------------------------------------------------------------
class EmulatedMcp3008:
    """Implements SpiLike: parses each 3-byte command (start bit, single-ended, channel), returns the 10-bit result of
    the channel's source sampled at successive instants ~ (1 / sample_rate) apart (default 40 kHz, hardware.md 3.2),
    starting at the current clock: a burst of 200 spans 5 ms = 5 PWM periods, so it sees both plateaus. .fail ->
    OSError.

    Emulated bit by bit per chip-select frame (DS21295 figures 5-1, 5-2, 6-1): the first 1 clocked in is the start
    bit, then SGL/DIFF and D2..D0; DOUT is undriven (reads 1 here, so a parser that forgets to mask fails) until a
    null bit, then B9..B0, then B1..B9 again (LSB first), then zeros. A new conversion needs a new frame: concatenated
    commands in one frame return zeros after the first. `sources` map channel -> f(t) giving pin volts at time t.
    `calls` counts SPI calls (ioctls), `conversions` counts conversions.
    """

    def __init__(
        self,
        sources: Mapping[int, Callable[[float], float]],
        *,
        vref_v: float = 3.3,
        sample_rate: float = 40_000.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._sources = dict(sources)
        self.vref_v = vref_v
        self.sample_rate = sample_rate
        self._clock = clock
        self._lock = threading.Lock()
        self.fail = False
        self.hang_s = 0.0
        self.calls = 0
        self.conversions = 0

    def set_source(self, channel: int, source: Callable[[float], float]) -> None:
        with self._lock:
            self._sources[channel] = source

    def xfer2(self, data: list[int]) -> list[int]:
        return self.xfer_frames([data])[0]

    def xfer_frames(self, frames: Sequence[Sequence[int]]) -> list[list[int]]:
        if self.hang_s:
            time.sleep(self.hang_s)  # a transfer that does not come back (a wedged SPI controller)
        with self._lock:
            if self.fail:
                raise _remote_io_error()
            self.calls += 1
            start = self._clock()
            replies = []
            taken = 0
            for frame in frames:
                reply, converted = self._frame(frame, start + taken / self.sample_rate)
                taken += converted
                replies.append(reply)
            self.conversions += taken
            return replies

    def _frame(self, frame: Sequence[int], t: float) -> tuple[list[int], int]:
        """Clock one chip-select frame through the chip; returns the bytes read and 1 if it converted."""
        if len(frame) == 3 and frame[0] == 0x01 and frame[1] & 0x0F == 0 and frame[2] == 0:
            # The datasheet's standard 3-byte command (figure 6-1), as every driver sends it: the same bits the
            # general path below produces, without clocking them one by one (a burst is 200 of these).
            result = self._convert(frame[1] >> 4, t)
            return [0xFF, 0xF8 | result >> 8, result & 0xFF], 1
        return self._frame_bits(frame, t)

    def _frame_bits(self, frame: Sequence[int], t: float) -> tuple[list[int], int]:
        out_bits: list[int] = []
        since_start: int | None = None  # clocks since the start bit
        mode = 0
        result = 0
        for byte in frame:
            for bit_no in range(7, -1, -1):
                din = (byte >> bit_no) & 1
                if since_start is None:
                    out_bits.append(1)  # undriven
                    if din:
                        since_start = 0
                    continue
                since_start += 1
                if since_start <= 4:
                    mode = mode << 1 | din  # SGL/DIFF, D2, D1, D0
                    if since_start == 4:
                        result = self._convert(mode, t)
                    out_bits.append(1)
                elif since_start == 5:
                    out_bits.append(1)  # sampling, still undriven
                elif since_start == 6:
                    out_bits.append(0)  # null bit
                elif since_start <= 16:
                    out_bits.append((result >> (16 - since_start)) & 1)  # B9..B0
                elif since_start <= 25:
                    out_bits.append((result >> (since_start - 16)) & 1)  # B1..B9, LSB first
                else:
                    out_bits.append(0)
        reply = [int("".join(map(str, out_bits[i:i + 8])), 2) for i in range(0, len(out_bits), 8)]
        converted = 1 if since_start is not None and since_start >= 4 else 0
        return reply, converted

    def _convert(self, mode: int, t: float) -> int:
        if mode & 0b1000:
            volts = self._sample(mode & 0b111, t)
        else:
            # Differential pairs CH0/CH1, CH2/CH3, ...: D2 D1 pick the pair, D0 swaps IN+ and IN-.
            pos = mode & 0b111
            volts = self._sample(pos, t) - self._sample(pos ^ 1, t)
        return max(0, min(1023, math.floor(volts * 1024 / self.vref_v)))

    def _sample(self, channel: int, t: float) -> float:
        source = self._sources.get(channel)
        return source(t) if source is not None else 0.0
