"""Packaging checks: systemd unit, sysusers, example config, hw profile and the Debian package build.

The build test copies the repository to tmp_path and runs ``dpkg-buildpackage -us -uc -b`` there. It skips
(with the reason) when dpkg-buildpackage or the build dependencies are missing; install them with
``sudo scripts/install-debian-build-deps.sh``.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import subprocess
import tarfile
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
UNIT = ROOT / "systemd" / "evsed.service"
SYSUSERS = ROOT / "systemd" / "evsed.sysusers"
TMPFILES = ROOT / "systemd" / "evsed.tmpfiles"
EXAMPLE_CONFIG = ROOT / "etc" / "evsed.toml"
SIM_BOARD = ROOT / "hw" / "boards" / "sim.toml"
DEBIAN = ROOT / "debian"

CONFIG_PATH = "/etc/evsed/evsed.toml"
# The Debian tools must run with the system python3, never a pyenv shim or a virtualenv (hardware.md 7).
SYSTEM_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"


# --------------------------------------------------------------------------------------------------------
# unit file parsing (systemd syntax: whole-line comments, repeated keys, empty assignment resets a list)


def parse_unit(text: str) -> dict[str, list[tuple[str, str]]]:
    sections: dict[str, list[tuple[str, str]]] = {}
    current: str | None = None
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        assert not line.endswith("\\"), f"line {lineno}: continuation lines are not used in this unit"
        if line.startswith("[") and line.endswith("]"):
            current = line[1:-1]
            sections.setdefault(current, [])
            continue
        assert current is not None, f"line {lineno}: assignment outside a section: {raw!r}"
        key, sep, value = line.partition("=")
        assert sep, f"line {lineno}: not a key=value line: {raw!r}"
        sections[current].append((key.strip(), value.strip()))
    return sections


def values(unit: dict[str, list[tuple[str, str]]], section: str, key: str) -> list[str]:
    return [v for k, v in unit.get(section, []) if k == key]


def value(unit: dict[str, list[tuple[str, str]]], section: str, key: str) -> str:
    found = values(unit, section, key)
    assert found, f"[{section}] {key}= is missing"
    return found[-1]


@pytest.fixture(scope="module")
def unit() -> dict[str, list[tuple[str, str]]]:
    return parse_unit(UNIT.read_text(encoding="utf-8"))


def test_unit_core_service_settings(unit: dict[str, list[tuple[str, str]]]) -> None:
    assert value(unit, "Service", "Type") == "notify"
    assert value(unit, "Service", "NotifyAccess") == "main"
    assert value(unit, "Service", "ExecStart") == f"/usr/bin/evsed --config {CONFIG_PATH}"
    assert value(unit, "Service", "WatchdogSec") == "10"
    assert value(unit, "Service", "Restart") == "on-failure"
    assert float(value(unit, "Service", "RestartSec")) > 0
    # The daemon needs up to 5 s for a graceful stop; the unit must wait longer than that before SIGKILL.
    assert float(value(unit, "Service", "TimeoutStopSec")) == 10
    assert value(unit, "Install", "WantedBy") == "multi-user.target"


def test_unit_safe_state_after_every_exit(unit: dict[str, list[tuple[str, str]]]) -> None:
    post = values(unit, "Service", "ExecStopPost")
    assert post, "ExecStopPost= must put the hardware in a safe state after any exit"
    cmd = post[-1]
    # A "-" prefix would hide a failing safe-state run; "+"/"!" would change the privileges it runs with.
    assert cmd.startswith("/usr/bin/evsed "), cmd
    assert "--safe-state" in cmd.split()
    assert f"--config {CONFIG_PATH}" in cmd
    # ExecStop= would run only on a requested stop, not after a crash; the safe state must not depend on it.
    assert not values(unit, "Service", "ExecStop")


def test_unit_identity_and_directories(unit: dict[str, list[tuple[str, str]]]) -> None:
    assert value(unit, "Service", "User") == "evsed"
    groups = " ".join(values(unit, "Service", "SupplementaryGroups")).split()
    assert set(groups) >= {"gpio", "i2c", "spi", "dialout"}
    assert value(unit, "Service", "StateDirectory") == "evsed"
    assert value(unit, "Service", "RuntimeDirectory") == "evsed"
    assert value(unit, "Service", "RuntimeDirectoryMode") == "0750"


def test_unit_hardening_keeps_hardware_reachable(unit: dict[str, list[tuple[str, str]]]) -> None:
    svc = dict(unit["Service"])  # last value wins for these single-valued keys
    assert svc.get("ProtectSystem") == "strict"
    assert svc.get("ProtectHome") in ("yes", "true", "read-only", "tmpfs")
    assert svc.get("NoNewPrivileges") in ("yes", "true")
    assert svc.get("PrivateTmp") in ("yes", "true")
    # These would cut the daemon off from the devices or make /sys (sysfs PWM) read-only.
    assert svc.get("PrivateDevices", "no") in ("no", "false"), "PrivateDevices hides /dev/gpiochip*, i2c, spi, tty"
    assert svc.get("ProtectKernelTunables", "no") in ("no", "false"), "makes /sys/class/pwm read-only"
    assert svc.get("ProcSubset", "all") == "all", "ProcSubset=pid hides /proc/cpuinfo and /proc/device-tree"
    for key in ("InaccessiblePaths", "ReadOnlyPaths", "TemporaryFileSystem"):
        for v in values(unit, "Service", key):
            assert "/sys" not in v and "/dev" not in v, f"{key}={v} blocks hardware access"
    if svc.get("DevicePolicy", "auto") != "auto":
        allowed = {v.split()[0] for v in values(unit, "Service", "DeviceAllow")}
        for group in ("char-gpiochip", "char-i2c", "char-spi", "char-ttyAMA", "char-ttyUSB"):
            assert group in allowed, f"DevicePolicy={svc['DevicePolicy']} without DeviceAllow={group}"


def test_unit_has_no_trailing_comments() -> None:
    # systemd only knows whole-line comments: "Key=value # note" puts "# note" into the value.
    for lineno, line in enumerate(UNIT.read_text(encoding="utf-8").splitlines(), 1):
        if "=" in line and not line.lstrip().startswith(("#", ";")):
            assert " #" not in line and " ;" not in line, f"line {lineno}: trailing comment: {line!r}"


def _verify_root(tmp_path: Path) -> Path:
    """A minimal --root for systemd-analyze: the system's units, a stub /usr/bin/evsed and our unit."""
    system_units = next((p for p in (Path("/lib/systemd/system"), Path("/usr/lib/systemd/system"))
                         if (p / "sysinit.target").exists()), None)
    if system_units is None:
        pytest.skip("no systemd unit directory with sysinit.target on this machine")
    root = tmp_path / "root"
    shutil.copytree(system_units, root / "lib" / "systemd" / "system", symlinks=True)
    (root / "usr" / "bin").mkdir(parents=True)
    stub = root / "usr" / "bin" / "evsed"
    stub.write_text("#!/bin/sh\nexit 0\n")
    stub.chmod(0o755)
    (root / "etc" / "systemd" / "system").mkdir(parents=True)
    shutil.copy(UNIT, root / "etc" / "systemd" / "system" / "evsed.service")
    return root


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_unit_systemd_analyze_verify(tmp_path: Path) -> None:
    root = _verify_root(tmp_path)
    unit_path = root / "etc" / "systemd" / "system" / "evsed.service"
    proc = subprocess.run(
        ["systemd-analyze", "verify", f"--root={root}", "--man=no", str(unit_path)],
        capture_output=True, text=True, timeout=60,
    )
    # verify exits 0 on "Unknown key", unparsable values etc. and only prints them; treat any line about our
    # unit as a failure.
    ours = [ln for ln in (proc.stdout + proc.stderr).splitlines() if "evsed.service" in ln]
    assert proc.returncode == 0 and not ours, proc.stdout + proc.stderr


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_unit_security_exposure(tmp_path: Path) -> None:
    """Guard against hardening being dropped: the unit scored 2.0 ("OK") with systemd 252."""
    root = _verify_root(tmp_path)
    unit_path = root / "etc" / "systemd" / "system" / "evsed.service"
    proc = subprocess.run(
        ["systemd-analyze", "security", "--offline=yes", f"--root={root}", "--no-pager", str(unit_path)],
        capture_output=True, text=True, timeout=60,
    )
    match = re.search(r"Overall exposure level for evsed\.service:\s*([0-9.]+)", proc.stdout + proc.stderr)
    if match is None:
        pytest.skip(f"systemd-analyze security --offline not supported here: {proc.stderr.strip()[:200]}")
    assert float(match.group(1)) <= 3.0, proc.stdout


# --------------------------------------------------------------------------------------------------------
# sysusers / tmpfiles


def test_sysusers_creates_user_and_every_supplementary_group(unit: dict[str, list[tuple[str, str]]]) -> None:
    lines = [ln.split() for ln in SYSUSERS.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    users = {f[1] for f in lines if f[0] == "u"}
    groups = {f[1] for f in lines if f[0] == "g"} | users | {f[2] for f in lines if f[0] == "m"}
    assert value(unit, "Service", "User") in users
    assert value(unit, "Service", "Group") in groups
    # A SupplementaryGroups= group that does not exist makes the unit fail with 216/GROUP. dialout comes
    # with Debian's base-passwd; everything else must be created here.
    for group in " ".join(values(unit, "Service", "SupplementaryGroups")).split():
        assert group in groups or group == "dialout", f"group {group} is neither created nor standard"


def test_tmpfiles_only_touches_existing_config() -> None:
    for ln in TMPFILES.read_text().splitlines():
        if ln.strip() and not ln.startswith("#"):
            kind, path, mode, user, group, *_ = ln.split()
            # StateDirectory/RuntimeDirectory own /var/lib/evsed and /run/evsed; no second owner here.
            assert not path.startswith(("/var/lib/evsed", "/run/evsed")), ln
            assert kind in ("z", "Z"), f"only permission fixes expected: {ln}"
            assert int(mode, 8) & 0o007 == 0, f"config must not be world-readable: {ln}"
            # Readable by the daemon through its group, writable only by root.
            assert (user, group) == ("root", "evsed"), ln


# --------------------------------------------------------------------------------------------------------
# example config and board profile

CONTRACT = {
    "charge_point": {"id", "vendor", "model", "serial_number"},
    "ocpp": {"url", "config"},
    "hardware": {"backend", "connectors", "fixed_cable"},
    "storage": {"dir"},
    "control": {"socket"},
    "system": {"resume_transactions"},
    "smart_charging": {"max_stack_level", "allowed_units", "max_periods", "max_profiles", "max_composite_duration_s"},
}


def test_example_config_is_toml_with_contract_keys(unit: dict[str, list[tuple[str, str]]]) -> None:
    data = tomllib.loads(EXAMPLE_CONFIG.read_text(encoding="utf-8"))
    assert set(data) == set(CONTRACT)
    for table, keys in CONTRACT.items():
        assert set(data[table]) == keys, table
    assert data["charge_point"]["id"] == "CP001"
    assert data["ocpp"]["url"] == "ws://127.0.0.1:9000/ocpp"
    assert data["ocpp"]["config"] == {"HeartbeatInterval": 60, "MeterValueSampleInterval": 10,
                                      "ConnectionTimeOut": 30}
    assert data["hardware"] == {"backend": "sim", "connectors": 2, "fixed_cable": False}
    # The paths must lie where the unit lets the sandboxed daemon write.
    assert data["storage"]["dir"] == "/var/lib/" + value(unit, "Service", "StateDirectory")
    runtime = "/run/" + value(unit, "Service", "RuntimeDirectory")
    assert Path(data["control"]["socket"]).parent == Path(runtime)
    assert data["control"]["socket"] == "/run/evsed/evsed.sock"
    # The example says "the values below are the defaults": they must be.
    assert data["smart_charging"] == {"max_stack_level": 10, "allowed_units": ["Current", "Power"], "max_periods": 96,
                                      "max_profiles": 32, "max_composite_duration_s": 604800}


def test_example_config_loads_with_daemon_loader() -> None:
    config = pytest.importorskip("evsed.config")
    if not hasattr(config, "load"):
        pytest.skip("evsed.config.load not available")
    cfg = config.load(EXAMPLE_CONFIG)
    assert cfg.charge_point.id == "CP001"
    assert cfg.hardware.connectors == 2


def test_sim_board_profile() -> None:
    data = tomllib.loads(SIM_BOARD.read_text(encoding="utf-8"))
    assert data["board"]["backend"] == "sim"
    assert data["connector"]["max_current_a"] == 32
    assert data["supply"]["phases"] == 3
    assert data["supply"]["voltage_v"] == 230
    # The profile documents the sim backend's defaults; keep them in step while it is not read by the daemon.
    config = pytest.importorskip("evsed.config")
    hw = getattr(config, "HardwareConfig", None)
    if hw is None:
        pytest.skip("evsed.config.HardwareConfig not available")
    defaults = hw()
    assert (defaults.max_current_a, defaults.phases, defaults.voltage_v) == (32, 3, 230)


# --------------------------------------------------------------------------------------------------------
# debian/ skeleton (static)


def test_debian_skeleton_static() -> None:
    control = (DEBIAN / "control").read_text()
    for dep in ("debhelper-compat (= 13)", "dh-python", "python3-all", "python3-setuptools",
                "pybuild-plugin-pyproject"):
        assert dep in control, dep
    assert re.search(r"^Architecture: all$", control, re.M)
    rules = DEBIAN / "rules"
    assert os.access(rules, os.X_OK), "debian/rules must be executable"
    assert "PYBUILD_DISABLE = test" in rules.read_text() or "PYBUILD_DISABLE=test" in rules.read_text()
    fmt = (DEBIAN / "source" / "format").read_text().strip()
    head = re.match(r"evsed \(([^)]+)\)", (DEBIAN / "changelog").read_text())
    assert head, "debian/changelog must start with an evsed entry"
    version = head.group(1)
    if fmt == "3.0 (native)":
        # dpkg-source refuses: "native package version may not have a revision".
        assert "-" not in version, f"native source format with Debian revision {version}"
    for name in ("evsed.service", "evsed.sysusers", "evsed.tmpfiles"):
        path = DEBIAN / name
        if path.is_symlink():
            assert path.resolve() == (ROOT / "systemd" / name).resolve(), f"{path} must point at systemd/{name}"
        assert path.is_file(), f"{path} missing or dangling"
    install = (DEBIAN / "evsed.install").read_text().split()
    assert install[:2] == ["etc/evsed.toml", "etc/evsed/"]


# --------------------------------------------------------------------------------------------------------
# the real build

_COPY_IGNORE_ANYWHERE = {".git", ".venv", "venv", "__pycache__", ".pytest_cache", ".mypy_cache",
                         ".ruff_cache", "node_modules", ".pybuild"}
_COPY_IGNORE_TOP = {"build", "dist"}
_COPY_IGNORE_DEBIAN = {"evsed", ".debhelper", "files", "debhelper-build-stamp"}


def _ignore(directory: str, names: list[str]) -> set[str]:
    d = Path(directory)
    skip = {n for n in names if n in _COPY_IGNORE_ANYWHERE or n.endswith(".egg-info")}
    if d == ROOT:
        skip |= {n for n in names if n in _COPY_IGNORE_TOP}
    if d == DEBIAN:
        skip |= {n for n in names if n in _COPY_IGNORE_DEBIAN or n.endswith((".substvars", ".log"))}
    return skip


def _build_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME", "PYENV_VERSION")}
    env["PATH"] = SYSTEM_PATH
    env["LC_ALL"] = "C.UTF-8"
    return env


@pytest.fixture(scope="module")
def built_deb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("dpkg-buildpackage", path=SYSTEM_PATH) is None:
        pytest.skip("dpkg-buildpackage not installed (apt-get install dpkg-dev, or run "
                    "scripts/install-debian-build-deps.sh as root)")
    check = subprocess.run(["dpkg-checkbuilddeps"], cwd=ROOT, capture_output=True, text=True,
                           env=_build_env(), timeout=60)
    if check.returncode != 0:
        pytest.skip("Debian build dependencies missing (run scripts/install-debian-build-deps.sh as root): "
                    + (check.stderr or check.stdout).strip())
    work = tmp_path_factory.mktemp("debbuild")
    src = work / "evsed"
    shutil.copytree(ROOT, src, symlinks=True, ignore=_ignore)
    proc = subprocess.run(["dpkg-buildpackage", "-us", "-uc", "-b"], cwd=src, capture_output=True, text=True,
                          env=_build_env(), timeout=900)
    assert proc.returncode == 0, f"dpkg-buildpackage failed:\n{proc.stdout[-6000:]}\n{proc.stderr[-4000:]}"
    debs = sorted(work.glob("evsed_*_all.deb"))
    assert len(debs) == 1, f"expected one evsed_*_all.deb in {work}, got {debs}"
    return debs[0]


def _deb_members(deb: Path) -> set[str]:
    out = subprocess.run(["dpkg-deb", "--fsys-tarfile", str(deb)], capture_output=True, check=True).stdout
    with tarfile.open(fileobj=io.BytesIO(out)) as tar:
        return {m.name.removeprefix(".") for m in tar.getmembers()}


def _deb_control(deb: Path, tmp_path: Path) -> Path:
    ctl = tmp_path / "DEBIAN"
    subprocess.run(["dpkg-deb", "--control", str(deb), str(ctl)], check=True)
    return ctl


def test_deb_contents(built_deb: Path) -> None:
    files = _deb_members(built_deb)
    for path in ("/usr/bin/evsed", "/usr/bin/evsectl", "/usr/bin/evsed-devcsms",
                 "/usr/lib/python3/dist-packages/evsed/__init__.py",
                 "/etc/evsed/evsed.toml",
                 "/usr/lib/sysusers.d/evsed.conf",
                 "/usr/lib/tmpfiles.d/evsed.conf"):
        assert path in files, f"{path} missing from {built_deb.name}"
    # bookworm's debhelper installs units to /lib, newer ones to /usr/lib.
    assert {"/lib/systemd/system/evsed.service", "/usr/lib/systemd/system/evsed.service"} & files
    assert any(f.startswith("/usr/lib/python3/dist-packages/evsed/ocpp/schemas/v16/") for f in files), \
        "package data (OCPP schemas) missing"
    assert not any("/tests/" in f or f.endswith("/tests") for f in files), "test suite leaked into the package"
    # Board profiles and meter models are data the rpi backend looks up in /usr/share/evsed/hw.
    for path in ("/usr/share/evsed/hw/boards/pi-ads1115.toml", "/usr/share/evsed/hw/meters/sdm630.toml"):
        assert path in files, f"{path} missing from {built_deb.name}"
    assert any(f.endswith("udev/rules.d/60-evsed.rules") for f in files), \
        f"udev rule missing: {sorted(f for f in files if 'udev' in f)}"


def test_deb_unit_and_config_are_the_repo_files(built_deb: Path, tmp_path: Path) -> None:
    subprocess.run(["dpkg-deb", "-x", str(built_deb), str(tmp_path / "x")], check=True)
    x = tmp_path / "x"
    unit = next(p for p in (x / "lib/systemd/system/evsed.service", x / "usr/lib/systemd/system/evsed.service")
                if p.exists())
    assert unit.read_bytes() == UNIT.read_bytes()
    assert (x / "etc/evsed/evsed.toml").read_bytes() == EXAMPLE_CONFIG.read_bytes()
    assert (x / "usr/lib/sysusers.d/evsed.conf").read_bytes() == SYSUSERS.read_bytes()


def test_deb_maintainer_scripts(built_deb: Path, tmp_path: Path) -> None:
    ctl = _deb_control(built_deb, tmp_path)
    assert (ctl / "conffiles").read_text().split() == ["/etc/evsed/evsed.toml"]
    postinst = (ctl / "postinst").read_text()
    # The user must exist before the service is started (or tmpfiles chgrp's the config to it).
    sysusers_at = postinst.find("systemd-sysusers")
    assert sysusers_at != -1, "postinst does not create the evsed user (dh_installsysusers not run?)"
    assert sysusers_at < postinst.find("systemd-tmpfiles")
    assert sysusers_at < postinst.find("deb-systemd-invoke")
    assert "deb-systemd-helper enable 'evsed.service'" in postinst
    control = (ctl / "control").read_text()
    match = re.search(r"^Depends: (.*)$", control, re.M)
    assert match, control
    depends = match.group(1)
    for pkg in ("python3-websockets", "python3-serial", "python3-gpiozero", "python3-smbus2"):
        assert pkg in depends, f"{pkg} missing from Depends: {depends}"


@pytest.mark.skipif(shutil.which("lintian", path=SYSTEM_PATH) is None, reason="lintian not installed")
def test_deb_lintian_has_no_errors(built_deb: Path) -> None:
    proc = subprocess.run(["lintian", "--no-tag-display-limit", str(built_deb)], capture_output=True,
                          text=True, env=_build_env(), timeout=300)
    errors = [ln for ln in proc.stdout.splitlines() if ln.startswith("E:")]
    assert not errors, proc.stdout
