"""GPIO helpers (evsed.board.rpi.gpio) on gpiozero's MockFactory pins."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
from gpiozero.pins.mock import MockFactory, MockPin

from evsed.board.rpi.gpio import GpioError, Input, Output, StatusLed


class WatchedPin(MockPin):  # type: ignore[misc]
    """A MockPin that lets a test wait for state changes made by gpiozero's background threads."""

    changed = threading.Condition()

    def _change_state(self, value: Any) -> bool:
        with WatchedPin.changed:
            done = bool(super()._change_state(value))
            WatchedPin.changed.notify_all()
        return done


@pytest.fixture
def factory() -> Iterator[MockFactory]:
    f = MockFactory(pin_class=WatchedPin)
    yield f
    f.reset()


def levels(pin: MockPin) -> list[bool]:
    return [bool(s.state) for s in pin.states]


# ------------------------------------------------------------------------------------------------ Output


def test_output_active_high(factory: MockFactory) -> None:
    out = Output(17, pin_factory=factory)
    pin = factory.pin(17)
    assert out.value is False
    assert pin.state is False
    out.set(True)
    assert out.value is True
    assert pin.state is True
    out.set(False)
    assert levels(pin) == [False, True, False]
    out.close()


def test_output_active_low_starts_inactive(factory: MockFactory) -> None:
    """An active-low relay board must not pull in when evsed starts: the line starts high."""
    out = Output("GPIO5", active_high=False, pin_factory=factory)
    pin = factory.pin(5)
    assert pin.state is True
    assert out.value is False
    out.set(True)
    assert pin.state is False
    assert out.value is True
    out.toggle()
    assert pin.state is True
    assert out.value is False
    out.close()


def test_output_close_releases_the_pin(factory: MockFactory) -> None:
    out = Output(17, pin_factory=factory)
    with pytest.raises(GpioError, match=r"^GPIO17: .*in use"):
        Output(17, pin_factory=factory)
    out.close()
    again = Output(17, pin_factory=factory)  # free again
    again.close()
    with pytest.raises(GpioError, match="GPIO17"):
        out.set(True)


def test_bad_pin_name(factory: MockFactory) -> None:
    with pytest.raises(GpioError, match=r"^GPIO99: "):
        Output("GPIO99", pin_factory=factory)


# ------------------------------------------------------------------------------------------------ Input


@pytest.mark.parametrize(
    ("pull_up", "active_high", "idle", "active_level"),
    [
        (None, True, False, True),  # external pull-down, active high
        (None, False, False, False),  # external pull-up (idle level set by the test), active low
        (True, False, True, False),  # contact to ground with the internal pull-up: the usual aux contact
        (True, True, True, True),  # normally-closed contact to ground that opens when active
        (False, True, False, True),
        (False, False, False, False),
    ],
)
def test_input_levels_and_edges(
    factory: MockFactory, pull_up: bool | None, active_high: bool, idle: bool, active_level: bool
) -> None:
    pin = factory.pin(27)
    inp = Input(27, active_high=active_high, pull_up=pull_up, pin_factory=factory)
    seen: list[bool] = []
    inp.on_change(seen.append)
    # Put the line at its idle level (a floating mock pin starts low).
    (pin.drive_high if idle else pin.drive_low)()
    expect_idle_active = idle == active_level
    assert inp.value is expect_idle_active
    seen.clear()
    (pin.drive_high if not idle else pin.drive_low)()
    assert inp.value is (not expect_idle_active)
    (pin.drive_high if idle else pin.drive_low)()
    assert inp.value is expect_idle_active
    assert seen == [not expect_idle_active, expect_idle_active]
    inp.close()


def test_input_internal_pull_up_idles_inactive(factory: MockFactory) -> None:
    inp = Input(22, active_high=False, pull_up=True, pin_factory=factory)
    assert factory.pin(22).state is True
    assert inp.value is False
    inp.close()


def test_input_callback_replaced_and_dropped_on_close(factory: MockFactory) -> None:
    pin = factory.pin(6)
    inp = Input(6, pin_factory=factory)
    first: list[bool] = []
    second: list[bool] = []
    inp.on_change(first.append)
    pin.drive_high()
    inp.on_change(second.append)
    pin.drive_low()
    assert first == [True]
    assert second == [False]
    inp.close()
    pin.drive_high()
    assert second == [False]
    Input(6, pin_factory=factory).close()  # the pin was released


def test_input_bounce_is_passed_to_the_pin(factory: MockFactory) -> None:
    inp = Input(27, bounce_s=0.02, pin_factory=factory)
    assert factory.pin(27).bounce == 0.02
    inp.close()


def test_input_pin_in_use(factory: MockFactory) -> None:
    out = Output(27, pin_factory=factory)
    with pytest.raises(GpioError, match=r"^GPIO27: "):
        Input(27, pin_factory=factory)
    out.close()


# ------------------------------------------------------------------------------------------------ StatusLed


def wait_for_changes(pin: MockPin, count: int, timeout: float = 3.0) -> list[bool]:
    with WatchedPin.changed:
        assert WatchedPin.changed.wait_for(lambda: len(pin.states) >= count, timeout), levels(pin)
        return levels(pin)


def test_status_led_patterns(factory: MockFactory) -> None:
    led = StatusLed(23, pin_factory=factory)
    pin = factory.pin(23)
    assert led.pattern == "off"
    led.set("on")
    assert pin.state is True
    led.set("off")
    assert pin.state is False
    pin.clear_states()
    led.set("fast-blink")
    assert led.pattern == "fast-blink"
    # on, off, on: the background thread really toggles the line
    assert wait_for_changes(pin, 4)[:4] == [False, True, False, True]
    led.set("off")
    assert pin.state is False
    with pytest.raises(ValueError, match="pattern"):
        led.set("disco")
    led.close()


def test_status_led_blink_is_not_restarted(factory: MockFactory) -> None:
    led = StatusLed(23, active_high=False, pin_factory=factory)
    pin = factory.pin(23)
    assert pin.state is True  # active low: off = high
    pin.clear_states()
    led.set("blink")
    assert wait_for_changes(pin, 2)[:2] == [True, False]
    thread = led._led._blink_thread
    assert thread is not None
    led.set("blink")  # same pattern: restarting would reset the phase
    assert led._led._blink_thread is thread
    led.close()
