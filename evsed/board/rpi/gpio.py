"""Digital GPIO on gpiozero: relay/actuator outputs, feedback inputs and a status LED.

Thin wrappers with one meaning of "on": ``True`` is always the *active* condition (relay energised, contact
closed, RCD tripped), whatever the wiring polarity, so the board code never deals with levels. The pin factory
is a parameter so tests pass gpiozero's ``MockFactory`` and the field uses gpiozero's default (lgpio).

gpiozero errors (pin busy, no usable pin factory on this machine, unknown pin name) become ``GpioError`` with a
one-line message naming the pin.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from gpiozero import LED, DigitalInputDevice, GPIOZeroError, OutputDevice


class GpioError(Exception):
    pass


def _pin_label(pin: int | str) -> str:
    return f"GPIO{pin}" if isinstance(pin, int) else pin


def _wrap(pin: int | str, exc: Exception) -> GpioError:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return GpioError(f"{_pin_label(pin)}: {text}")


class Output:
    """A contactor relay, lock actuator, LED or watchdog pin; starts inactive (relay open)."""

    def __init__(self, pin: int | str, *, active_high: bool = True, pin_factory: Any = None) -> None:
        self.pin = pin
        try:
            self._dev = OutputDevice(pin, active_high=active_high, initial_value=False, pin_factory=pin_factory)
        except GPIOZeroError as exc:
            raise _wrap(pin, exc) from None

    def set(self, on: bool) -> None:
        try:
            if on:
                self._dev.on()
            else:
                self._dev.off()
        except GPIOZeroError as exc:
            raise _wrap(self.pin, exc) from None

    def toggle(self) -> None:
        """For a hardware watchdog that needs edges, not a level."""
        try:
            self._dev.toggle()
        except GPIOZeroError as exc:
            raise _wrap(self.pin, exc) from None

    @property
    def value(self) -> bool:
        return bool(self._dev.value)

    def close(self) -> None:
        """Release the line. What it does afterwards is up to the kernel: set it inactive first."""
        self._dev.close()


class Input:
    """A contactor aux contact, lock feedback or RCD trip input; ``value`` is True when active.

    ``pull_up`` selects the internal resistor: True = up, False = down, None = none (an external pull).
    ``active_high`` is the level that means active, independent of the pull, so a normally-closed contact
    to ground with a pull-up (high = open = active) is ``pull_up=True, active_high=True``.
    """

    def __init__(
        self,
        pin: int | str,
        *,
        active_high: bool = True,
        pull_up: bool | None = None,
        bounce_s: float | None = None,
        pin_factory: Any = None,
    ) -> None:
        self.pin = pin
        # gpiozero derives the active state from the pull (pull-up -> active low) and refuses an explicit one
        # unless the pin floats; invert its reading ourselves where the wiring says otherwise.
        if pull_up is None:
            active_state: bool | None = active_high
            zero_active_high = active_high
        else:
            active_state = None
            zero_active_high = not pull_up
        self._invert = zero_active_high != active_high
        self._callback: Callable[[bool], None] | None = None
        self._lock = threading.Lock()
        try:
            self._dev = DigitalInputDevice(
                pin, pull_up=pull_up, active_state=active_state, bounce_time=bounce_s, pin_factory=pin_factory
            )
        except GPIOZeroError as exc:
            raise _wrap(pin, exc) from None

    @property
    def value(self) -> bool:
        return bool(self._dev.is_active) != self._invert

    def on_change(self, callback: Callable[[bool], None]) -> None:
        """Call ``callback(active)`` on every edge, from gpiozero's thread; replaces an earlier callback."""
        with self._lock:
            self._callback = callback
        # The edge direction says the new level; re-reading the pin in the callback could see a later bounce.
        self._dev.when_activated = lambda: self._fire(not self._invert)
        self._dev.when_deactivated = lambda: self._fire(self._invert)

    def _fire(self, active: bool) -> None:
        with self._lock:
            callback = self._callback
        if callback is not None:
            callback(active)

    def close(self) -> None:
        with self._lock:
            self._callback = None
        self._dev.close()


class StatusLed:
    """An optional front-panel LED with a few slow patterns; blinking runs in gpiozero's background thread."""

    PATTERNS: dict[str, tuple[float, float] | None] = {
        "off": None,
        "on": None,
        "blink": (0.5, 0.5),
        "fast-blink": (0.1, 0.1),
    }

    def __init__(self, pin: int | str, *, active_high: bool = True, pin_factory: Any = None) -> None:
        self.pin = pin
        self._pattern = "off"
        try:
            self._led = LED(pin, active_high=active_high, initial_value=False, pin_factory=pin_factory)
        except GPIOZeroError as exc:
            raise _wrap(pin, exc) from None

    @property
    def pattern(self) -> str:
        return self._pattern

    def set(self, pattern: str) -> None:
        if pattern not in self.PATTERNS:
            raise ValueError(f"LED pattern must be one of {', '.join(self.PATTERNS)}, got {pattern!r}")
        # Restarting blink() on every status update would reset the phase and look like a stutter.
        if pattern == self._pattern:
            return
        times = self.PATTERNS[pattern]
        if times is not None:
            self._led.blink(on_time=times[0], off_time=times[1])
        elif pattern == "on":
            self._led.on()
        else:
            self._led.off()
        self._pattern = pattern

    def close(self) -> None:
        self._led.close()
