"""Control-pilot PWM through the kernel's sysfs PWM interface (``/sys/class/pwm``).

No gpiozero pin factory drives the SoC PWM peripheral, and software PWM jitters, so the 1 kHz pilot uses the
kernel driver (hardware.md 2.1, 2.2). The kernel holds the output: it keeps running after this process exits, so
the caller must put the pilot in a safe level (``safe()``) before closing, and ``evsed --safe-state`` does the
same after a crash.

Duty values here are always "percent of the period the pilot is high"; an inverting driver stage is handled
by writing 100 - D, so callers never think about the hardware polarity.
"""

from __future__ import annotations

import errno
import math
import os
import re
import threading
import time
from pathlib import Path

# The kernel creates pwmN some time after the write to export, and udev changes its permissions later still.
_OPEN_ATTEMPTS = 100
_OPEN_RETRY_S = 0.01
# Tests replace this to play the kernel/udev while the driver waits.
_sleep = time.sleep

_DTOVERLAY_HINT = (
    "enable the PWM with dtoverlay=pwm or dtoverlay=pwm-2chan in /boot/firmware/config.txt and reboot "
    "(see hw/boot/ in the evsed sources)"
)


class PwmError(Exception):
    pass


def _chip_number(path: Path) -> int:
    return int(path.name[len("pwmchip") :])


def _device_target(chip_dir: Path) -> str:
    # The device symlink names the controller by its bus address (e.g. .../1f00098000.pwm on a Pi 5's RP1),
    # which is stable across kernels, unlike the pwmchip number.
    return os.path.realpath(chip_dir / "device")


def _describe(chips: list[Path]) -> str:
    if not chips:
        return "none"
    return ", ".join(f"{c.name} -> {_device_target(c)}" for c in chips)


def find_pwmchip(root: Path, chip: str) -> Path:
    """The pwmchip directory under ``root`` selected by ``chip``.

    ``chip`` is "auto" (the only chip; with several, the lowest-numbered one whose device looks like a PWM
    controller), "pwmchipN", or a substring of the chip's resolved ``device`` path such as "1f00098000.pwm".
    """
    try:
        chips = sorted(
            (p for p in root.iterdir() if re.fullmatch(r"pwmchip\d+", p.name)),
            key=_chip_number,
        )
    except OSError:
        chips = []
    if chip == "auto":
        if len(chips) == 1:
            return chips[0]
        # A Pi 5 also has the fan controller's PWM; prefer a controller whose device path says "pwm".
        pwm_like = [c for c in chips if "pwm" in Path(_device_target(c)).name]
        if pwm_like:
            return pwm_like[0]
        if chips:
            return chips[0]
        raise PwmError(f"no PWM chip in {root} (found: none); {_DTOVERLAY_HINT}")
    if re.fullmatch(r"pwmchip\d+", chip):
        for c in chips:
            if c.name == chip:
                return c
        raise PwmError(f"no PWM chip {chip} in {root} (found: {_describe(chips)}); {_DTOVERLAY_HINT}")
    matches = [c for c in chips if chip in _device_target(c)]
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise PwmError(
            f"PWM chip {chip!r} is ambiguous in {root}: it matches {_describe(matches)}; use a longer part of "
            "the device path"
        )
    raise PwmError(f"no PWM chip matching {chip!r} in {root} (found: {_describe(chips)}); {_DTOVERLAY_HINT}")


def _write(path: Path, value: int | str, *, tolerated: frozenset[int] = frozenset()) -> None:
    """Write one sysfs attribute; a write failing with an errno in ``tolerated`` counts as done."""
    try:
        fd = os.open(path, os.O_WRONLY)
    except OSError as exc:
        raise PwmError(f"cannot open {path}: {exc.strerror or exc}") from None
    try:
        os.write(fd, f"{value}\n".encode())
    except OSError as exc:
        if exc.errno not in tolerated:
            raise PwmError(f"cannot write {value} to {path}: {exc.strerror or exc}") from None
    finally:
        os.close(fd)


def _read_int(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


class SysfsPwm:
    """One PWM channel driving a connector's pilot; ``open()`` exports and enables it."""

    def __init__(
        self,
        chip: str = "auto",
        channel: int = 0,
        frequency_hz: float = 1000.0,
        inverted: bool = False,
        root: Path = Path("/sys/class/pwm"),
    ) -> None:
        if channel < 0:
            raise ValueError(f"PWM channel must be >= 0, got {channel}")
        if not (math.isfinite(frequency_hz) and frequency_hz > 0):
            raise ValueError(f"PWM frequency must be > 0 Hz, got {frequency_hz}")
        self.chip = chip
        self.channel = channel
        self.frequency_hz = frequency_hz
        self.inverted = inverted
        self.root = root
        self.period_ns = round(1e9 / frequency_hz)
        self._dir: Path | None = None
        self._duty_fd: int | None = None
        self._duty_ns: int | None = None  # what the duty_cycle file holds, to skip redundant writes
        self._percent: float | None = None
        # The sampling thread sets the duty while the main thread may call safe(); writes must not interleave.
        self._lock = threading.Lock()

    @property
    def path(self) -> Path | None:
        """The pwmN directory once open."""
        return self._dir

    @property
    def duty(self) -> float | None:
        """Pilot-high percent last set through this object (None before the first set_duty/safe)."""
        return self._percent

    def open(self) -> None:
        self.close()  # a second open() must not leak the first file descriptor
        chip_dir = find_pwmchip(self.root, self.chip)
        npwm = _read_int(chip_dir / "npwm")
        if npwm is not None and self.channel >= npwm:
            raise PwmError(f"{chip_dir.name} has {npwm} PWM channel(s) (0..{npwm - 1}); channel {self.channel} "
                           "does not exist")
        pwm_dir = chip_dir / f"pwm{self.channel}"
        if not pwm_dir.is_dir():
            self._export(chip_dir)
        duty_fd = self._open_duty(pwm_dir)
        try:
            current_period = _read_int(pwm_dir / "period")
            if current_period != self.period_ns:
                # The kernel rejects (EINVAL) any state with duty_cycle > period, so the duty goes to 0 first.
                self._write_fd(duty_fd, pwm_dir / "duty_cycle", 0)
                _write(pwm_dir / "period", self.period_ns)
                self._duty_ns = 0
            else:
                self._duty_ns = _read_int(pwm_dir / "duty_cycle")
            # Polarity is left alone: some controllers refuse changes while enabled, and `inverted` covers it.
            _write(pwm_dir / "enable", 1)
        except BaseException:
            os.close(duty_fd)
            raise
        self._dir = pwm_dir
        self._duty_fd = duty_fd
        self._percent = None

    def _export(self, chip_dir: Path) -> None:
        # EBUSY: already exported (by another run, or a moment ago); the wait in _open_duty settles it.
        _write(chip_dir / "export", self.channel, tolerated=frozenset({errno.EBUSY}))

    def _open_duty(self, pwm_dir: Path) -> int:
        path = pwm_dir / "duty_cycle"
        last: OSError | None = None
        for _ in range(_OPEN_ATTEMPTS):
            try:
                return os.open(path, os.O_WRONLY)
            except (FileNotFoundError, PermissionError) as exc:
                last = exc
            _sleep(_OPEN_RETRY_S)
        assert last is not None
        what = "did not appear" if isinstance(last, FileNotFoundError) else "stayed not writable"
        raise PwmError(
            f"{path} {what} within {_OPEN_ATTEMPTS * _OPEN_RETRY_S:g} s after export ({last.strerror}); "
            "check the udev rule that gives the gpio group the pwm sysfs files (hw/udev/99-evsed.rules)"
        )

    @staticmethod
    def _write_fd(fd: int, path: Path, value: int) -> None:
        # sysfs attributes accept a rewrite at offset 0 on a kept-open fd: cheaper than open/close per sample.
        try:
            os.lseek(fd, 0, os.SEEK_SET)
            os.write(fd, f"{value}\n".encode())
        except OSError as exc:
            raise PwmError(f"cannot write {value} to {path}: {exc.strerror or exc}") from None

    def set_duty(self, percent: float) -> None:
        """Pilot high for ``percent`` of the period: 100 = +12 V DC, 0 = -12 V DC."""
        if not (math.isfinite(percent) and 0.0 <= percent <= 100.0):
            raise ValueError(f"duty must be between 0 and 100 %, got {percent}")
        with self._lock:
            if self._dir is None or self._duty_fd is None:
                raise PwmError("PWM is not open")
            out = 100.0 - percent if self.inverted else percent
            ns = round(self.period_ns * out / 100.0)
            if ns != self._duty_ns:
                self._write_fd(self._duty_fd, self._dir / "duty_cycle", ns)
                self._duty_ns = ns
            self._percent = percent

    def safe(self, level: str) -> None:
        """Hold the pilot at a DC level: "A" = +12 V (100 %), "F" = -12 V (0 %).

        The output stays enabled: a disabled PWM idles low, which is -12 V behind a non-inverting stage and
        +12 V behind an inverting one, so the level must be driven explicitly.
        """
        if level not in ("A", "F"):
            raise ValueError(f"safe level must be 'A' or 'F', got {level!r}")
        self.set_duty(100.0 if level == "A" else 0.0)
        with self._lock:
            assert self._dir is not None
            # Something else (a test tool, a crashed run) may have disabled the channel.
            _write(self._dir / "enable", 1)

    def close(self) -> None:
        """Release the file; the kernel keeps the output where it was (call safe() first)."""
        with self._lock:
            if self._duty_fd is not None:
                os.close(self._duty_fd)
            self._duty_fd = None
            self._dir = None
            self._duty_ns = None

