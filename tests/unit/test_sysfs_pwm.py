"""Kernel PWM through sysfs (evsed.board.rpi.sysfs_pwm) against a fake /sys/class/pwm in tmp_path.

The fake plays the kernel at the system-call layer: the driver's ``os`` module is replaced by a shim whose
``write`` applies the kernel's rules for the pwm attributes (duty_cycle <= period at all times, EINVAL
otherwise; export creates pwmN asynchronously; EBUSY for an exported channel) and records every write.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Any

import pytest

from evsed.board.rpi import sysfs_pwm
from evsed.board.rpi.sysfs_pwm import PwmError, SysfsPwm, find_pwmchip

RP1_PWM0 = "1f00098000.pwm"
RP1_PWM1 = "1f0009c000.pwm"  # the Pi 5 fan controller


class FakeKernel:
    """Stands in for ``os`` inside the driver; everything but ``write`` is the real thing."""

    def __init__(self, root: Path, export_delay: int = 1) -> None:
        self.root = root
        self.writes: list[tuple[str, str]] = []
        self.export_delay = export_delay  # sleeps before an exported pwmN appears
        self.export_busy = False  # answer EBUSY to export (and still create the channel)
        self.sleeps = 0
        self._pending: list[tuple[Path, int]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(os, name)

    def sleep(self, _seconds: float) -> None:
        self.sleeps += 1
        still: list[tuple[Path, int]] = []
        for chip_dir, n in self._pending:
            if self.sleeps >= self.export_delay:
                make_channel(chip_dir, n)
            else:
                still.append((chip_dir, n))
        self._pending = still

    def write(self, fd: int, data: bytes) -> int:
        path = Path(os.readlink(f"/proc/self/fd/{fd}"))
        text = data.decode()
        assert text.endswith("\n")
        value = text.strip()
        self.writes.append((path.name, value))
        if path.name == "export":
            chip_dir = path.parent
            if self.export_busy or (chip_dir / f"pwm{value}").exists():
                if not (chip_dir / f"pwm{value}").exists():
                    self._pending.append((chip_dir, int(value)))
                raise OSError(errno.EBUSY, os.strerror(errno.EBUSY))
            if self.export_delay == 0:
                make_channel(chip_dir, int(value))
            else:
                self._pending.append((chip_dir, int(value)))
            return len(data)
        if path.name in ("period", "duty_cycle"):
            period = int(value) if path.name == "period" else read_int(path.parent / "period")
            duty = int(value) if path.name == "duty_cycle" else read_int(path.parent / "duty_cycle")
            if duty > period:
                raise OSError(errno.EINVAL, os.strerror(errno.EINVAL))
        if path.name == "enable" and value == "1" and read_int(path.parent / "period") == 0:
            raise OSError(errno.EINVAL, os.strerror(errno.EINVAL))
        # A sysfs store replaces the whole value, whatever the file offset.
        os.ftruncate(fd, 0)
        os.pwrite(fd, data, 0)
        return len(data)


def read_int(path: Path) -> int:
    return int(path.read_text().strip())


def make_chip(root: Path, number: int, device: str, npwm: int = 4) -> Path:
    dev = root.parent / "devices" / "platform" / "axi" / "1000120000.pcie" / device
    dev.mkdir(parents=True, exist_ok=True)
    chip = root / f"pwmchip{number}"
    chip.mkdir(parents=True)
    (chip / "device").symlink_to(dev)
    (chip / "npwm").write_text(f"{npwm}\n")
    (chip / "export").write_text("")
    (chip / "unexport").write_text("")
    return chip


def make_channel(chip: Path, n: int, period: int = 0, duty: int = 0, enable: int = 0) -> Path:
    ch = chip / f"pwm{n}"
    ch.mkdir()
    (ch / "period").write_text(f"{period}\n")
    (ch / "duty_cycle").write_text(f"{duty}\n")
    (ch / "enable").write_text(f"{enable}\n")
    (ch / "polarity").write_text("normal\n")
    return ch


@pytest.fixture
def root(tmp_path: Path) -> Path:
    r = tmp_path / "sys" / "class" / "pwm"
    r.mkdir(parents=True)
    return r


@pytest.fixture
def kernel(root: Path, monkeypatch: pytest.MonkeyPatch) -> FakeKernel:
    k = FakeKernel(root)
    monkeypatch.setattr(sysfs_pwm, "os", k)
    monkeypatch.setattr(sysfs_pwm, "_sleep", k.sleep)
    return k


def channel_values(ch: Path) -> dict[str, str]:
    return {name: (ch / name).read_text().strip() for name in ("period", "duty_cycle", "enable", "polarity")}


# ------------------------------------------------------------------------------------------------ the fake


def test_fake_kernel_enforces_duty_not_above_period(root: Path, kernel: FakeKernel) -> None:
    """The rule the driver must respect; if the fake did not enforce it the ordering test below would be void."""
    ch = make_channel(make_chip(root, 0, RP1_PWM0), 0, period=2_000_000, duty=1_500_000)
    fd = os.open(ch / "period", os.O_WRONLY)
    try:
        with pytest.raises(OSError) as exc:
            kernel.write(fd, b"1000000\n")
        assert exc.value.errno == errno.EINVAL
    finally:
        os.close(fd)
    assert read_int(ch / "period") == 2_000_000


# ------------------------------------------------------------------------------------------------ open


def test_open_exports_waits_for_the_channel_and_configures_it(root: Path, kernel: FakeKernel) -> None:
    chip = make_chip(root, 0, RP1_PWM0)
    pwm = SysfsPwm(chip=RP1_PWM0, channel=2, frequency_hz=1000.0, root=root)
    pwm.open()
    # pwm2 did not exist right after the export: the driver had to wait for the "kernel" at least once.
    assert kernel.sleeps >= 1
    assert kernel.writes == [("export", "2"), ("duty_cycle", "0"), ("period", "1000000"), ("enable", "1")]
    assert pwm.path == chip / "pwm2"
    assert channel_values(chip / "pwm2") == {
        "period": "1000000", "duty_cycle": "0", "enable": "1", "polarity": "normal"}
    assert pwm.duty is None
    pwm.close()


def test_open_zeroes_the_duty_before_shrinking_the_period(root: Path, kernel: FakeKernel) -> None:
    """A channel left at 500 Hz with a long pulse: writing the 1 kHz period first would fail with EINVAL."""
    chip = make_chip(root, 0, RP1_PWM0)
    make_channel(chip, 0, period=2_000_000, duty=1_500_000, enable=1)
    pwm = SysfsPwm(channel=0, frequency_hz=1000.0, root=root)
    pwm.open()
    assert kernel.writes == [("duty_cycle", "0"), ("period", "1000000"), ("enable", "1")]
    assert read_int(chip / "pwm0" / "period") == 1_000_000
    pwm.set_duty(53.3)
    assert read_int(chip / "pwm0" / "duty_cycle") == 533_000
    pwm.close()


def test_reopen_with_the_same_period_keeps_the_running_duty(root: Path, kernel: FakeKernel) -> None:
    """After a restart the pilot must not glitch to 0 % (-12 V) when nothing needs changing."""
    chip = make_chip(root, 0, RP1_PWM0)
    make_channel(chip, 0, period=1_000_000, duty=1_000_000, enable=1)
    pwm = SysfsPwm(root=root)
    pwm.open()
    assert kernel.writes == [("enable", "1")]
    pwm.set_duty(100.0)  # already there: nothing written
    assert kernel.writes == [("enable", "1")]
    assert pwm.duty == 100.0
    pwm.close()


def test_export_ebusy_is_tolerated_when_the_channel_appears(root: Path, kernel: FakeKernel) -> None:
    chip = make_chip(root, 0, RP1_PWM0)
    kernel.export_busy = True
    pwm = SysfsPwm(root=root)
    pwm.open()
    assert (chip / "pwm0").is_dir()
    assert read_int(chip / "pwm0" / "enable") == 1
    pwm.close()


def test_channel_that_never_appears(root: Path, kernel: FakeKernel) -> None:
    make_chip(root, 0, RP1_PWM0)
    kernel.export_delay = 10_000
    pwm = SysfsPwm(root=root)
    with pytest.raises(PwmError, match=r"pwm0/duty_cycle did not appear within 1 s after export"):
        pwm.open()
    assert kernel.sleeps == sysfs_pwm._OPEN_ATTEMPTS


def test_channel_out_of_range(root: Path, kernel: FakeKernel) -> None:
    make_chip(root, 0, RP1_PWM0, npwm=2)
    with pytest.raises(PwmError, match=r"pwmchip0 has 2 PWM channel\(s\) \(0\.\.1\); channel 3 does not exist"):
        SysfsPwm(channel=3, root=root).open()
    assert kernel.writes == []


# ------------------------------------------------------------------------------------------------ duty


def test_set_duty_writes_nanoseconds_and_skips_unchanged(root: Path, kernel: FakeKernel) -> None:
    chip = make_chip(root, 0, RP1_PWM0)
    pwm = SysfsPwm(root=root)
    pwm.open()
    kernel.writes.clear()
    pwm.set_duty(53.33)
    pwm.set_duty(53.33)
    pwm.set_duty(26.67)
    assert kernel.writes == [("duty_cycle", "533300"), ("duty_cycle", "266700")]
    assert read_int(chip / "pwm0" / "duty_cycle") == 266_700
    assert pwm.duty == 26.67
    pwm.close()


def test_set_duty_other_frequency(root: Path, kernel: FakeKernel) -> None:
    chip = make_chip(root, 0, RP1_PWM0)
    pwm = SysfsPwm(frequency_hz=1010.0, root=root)
    pwm.open()
    assert read_int(chip / "pwm0" / "period") == 990_099
    pwm.set_duty(10.0)
    assert read_int(chip / "pwm0" / "duty_cycle") == 99_010
    pwm.close()


def test_inverted_stage_writes_the_complement(root: Path, kernel: FakeKernel) -> None:
    chip = make_chip(root, 0, RP1_PWM0)
    pwm = SysfsPwm(inverted=True, root=root)
    pwm.open()
    pwm.set_duty(25.0)
    assert read_int(chip / "pwm0" / "duty_cycle") == 750_000
    assert pwm.duty == 25.0
    pwm.set_duty(100.0)
    assert read_int(chip / "pwm0" / "duty_cycle") == 0
    pwm.close()


@pytest.mark.parametrize("bad", [-0.1, 100.1, float("nan"), float("inf")])
def test_set_duty_rejects_out_of_range(root: Path, kernel: FakeKernel, bad: float) -> None:
    make_chip(root, 0, RP1_PWM0)
    pwm = SysfsPwm(root=root)
    pwm.open()
    with pytest.raises(ValueError, match="between 0 and 100"):
        pwm.set_duty(bad)
    pwm.close()


def test_set_duty_requires_open_and_close_leaves_the_output(root: Path, kernel: FakeKernel) -> None:
    chip = make_chip(root, 0, RP1_PWM0)
    pwm = SysfsPwm(root=root)
    with pytest.raises(PwmError, match="not open"):
        pwm.set_duty(50.0)
    pwm.open()
    pwm.safe("A")
    pwm.close()
    assert channel_values(chip / "pwm0") == {
        "period": "1000000", "duty_cycle": "1000000", "enable": "1", "polarity": "normal"}
    assert ("unexport", "0") not in kernel.writes
    with pytest.raises(PwmError, match="not open"):
        pwm.set_duty(50.0)


# ------------------------------------------------------------------------------------------------ safe


@pytest.mark.parametrize(
    ("inverted", "level", "duty_ns"),
    [(False, "A", 1_000_000), (False, "F", 0), (True, "A", 0), (True, "F", 1_000_000)],
)
def test_safe_levels(root: Path, kernel: FakeKernel, inverted: bool, level: str, duty_ns: int) -> None:
    chip = make_chip(root, 0, RP1_PWM0)
    pwm = SysfsPwm(inverted=inverted, root=root)
    pwm.open()
    pwm.set_duty(53.0)
    # Someone disabled the channel behind our back: a disabled output idles low, so safe() re-enables it.
    (chip / "pwm0" / "enable").write_text("0\n")
    pwm.safe(level)
    assert read_int(chip / "pwm0" / "duty_cycle") == duty_ns
    assert read_int(chip / "pwm0" / "enable") == 1
    assert pwm.duty == (100.0 if level == "A" else 0.0)
    pwm.close()


def test_safe_rejects_other_levels(root: Path, kernel: FakeKernel) -> None:
    make_chip(root, 0, RP1_PWM0)
    pwm = SysfsPwm(root=root)
    pwm.open()
    with pytest.raises(ValueError, match="'A' or 'F'"):
        pwm.safe("B")
    pwm.close()


# ------------------------------------------------------------------------------------------------ chip lookup


def test_find_chip_by_device_substring(root: Path) -> None:
    make_chip(root, 0, RP1_PWM1)
    chip2 = make_chip(root, 2, RP1_PWM0)
    assert find_pwmchip(root, RP1_PWM0) == chip2
    assert find_pwmchip(root, "98000.pwm") == chip2
    assert find_pwmchip(root, "pwmchip0") == root / "pwmchip0"


def test_find_chip_auto(root: Path, tmp_path: Path) -> None:
    with pytest.raises(PwmError, match="no PWM chip"):
        find_pwmchip(root, "auto")
    only = make_chip(root, 3, "fe20c000.pwm")
    assert find_pwmchip(root, "auto") == only
    # Several chips: a controller whose device is not named *.pwm loses even with a lower number.
    dev = tmp_path / "devices" / "platform" / "gpio-fan"
    dev.mkdir(parents=True)
    fan = root / "pwmchip1"
    fan.mkdir()
    (fan / "device").symlink_to(dev)
    assert find_pwmchip(root, "auto") == only
    lower = make_chip(root, 2, "fe20c800.pwm")
    assert find_pwmchip(root, "auto") == lower


def test_find_chip_ambiguous_substring(root: Path) -> None:
    make_chip(root, 0, RP1_PWM1)
    make_chip(root, 2, RP1_PWM0)
    with pytest.raises(PwmError, match=r"'\.pwm' is ambiguous.*pwmchip0 -> .*1f0009c000\.pwm, pwmchip2 -> "):
        find_pwmchip(root, ".pwm")


def test_missing_chip_message_lists_what_exists_and_the_overlay(root: Path) -> None:
    make_chip(root, 0, RP1_PWM1)
    with pytest.raises(PwmError) as exc:
        find_pwmchip(root, RP1_PWM0)
    msg = str(exc.value)
    assert msg.startswith(f"no PWM chip matching '{RP1_PWM0}' in {root} (found: pwmchip0 -> ")
    assert msg.count("\n") == 0
    assert RP1_PWM1 in msg
    assert "dtoverlay=pwm" in msg and "/boot/firmware/config.txt" in msg
    with pytest.raises(PwmError, match=r"no PWM chip pwmchip7 in .* \(found: pwmchip0 -> "):
        find_pwmchip(root, "pwmchip7")
    with pytest.raises(PwmError, match=r"\(found: none\); enable the PWM with dtoverlay"):
        find_pwmchip(root / "absent", "pwmchip0")


def test_open_reports_missing_chip(root: Path, kernel: FakeKernel) -> None:
    with pytest.raises(PwmError, match="no PWM chip"):
        SysfsPwm(chip=RP1_PWM0, root=root).open()


def test_constructor_validation(root: Path) -> None:
    with pytest.raises(ValueError, match="channel"):
        SysfsPwm(channel=-1, root=root)
    with pytest.raises(ValueError, match="frequency"):
        SysfsPwm(frequency_hz=0.0, root=root)
