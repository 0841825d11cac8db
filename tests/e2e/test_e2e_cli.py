"""Command-line contracts: evsectl without a daemon, config errors, --check-config."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from daemon_harness import REPO_ROOT, _env, run_evsectl

MakeConfig = Callable[..., Path]


def run_daemon(*args: str, timeout: float = 20) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            [sys.executable, "-m", "evsed.cli.daemon", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=_env(),
            cwd=REPO_ROOT,
        )
    except subprocess.TimeoutExpired as e:
        raise AssertionError(f"evsed {' '.join(args)} still running after {timeout}s: {e.stderr!r}") from None


@pytest.mark.parametrize(
    "args",
    [["status"], ["status", "--json"], ["sim", "plug", "1"], ["sim", "swipe", "ABC"]],
    ids=lambda a: "-".join(a),
)
def test_evsectl_without_daemon(tmp_path: Path, args: list[str]) -> None:
    res = run_evsectl(tmp_path / "nobody-listens.sock", *args)
    out = (res.stdout + res.stderr).strip()
    assert res.returncode == 1, (res.returncode, out)
    assert len(out.splitlines()) == 1, f"expected one line, got:\n{out}"
    assert "Traceback" not in out
    assert "No module named" not in out, out


def _replace(text: str, old: str, new: str) -> str:
    assert old in text, (old, text)
    return text.replace(old, new, 1)


# (id, edit of the good config text, substrings the single error line must contain besides the file)
BAD_CONFIGS = [
    ("syntax-error", lambda t: _replace(t, "[hardware]", "[hardware"), []),
    ("syntax-error-value", lambda t: _replace(t, 'backend = "sim"', "backend = sim"), []),
    ("unknown-key", lambda t: _replace(t, "[hardware]\n", '[hardware]\ncolour = "red"\n'), ["colour"]),
    ("unknown-section", lambda t: t + "\n[bogus]\nx = 1\n", ["bogus"]),
    ("wrong-type", lambda t: _replace(t, "connectors = 2", 'connectors = "two"'), ["connectors"]),
    ("wrong-type-id", lambda t: _replace(t, 'id = "CP001"', "id = 17"), ["id"]),
    ("missing-required-id", lambda t: _replace(t, 'id = "CP001"\n', ""), ["charge_point", "id"]),
    ("missing-required-url", lambda t: _replace(t, 'url = "ws://127.0.0.1:9/ocpp"\n', ""), ["url"]),
    ("missing-section", lambda t: _replace(t, "[hardware]", "[hardware_]"), ["hardware"]),
    ("connectors-zero", lambda t: _replace(t, "connectors = 2", "connectors = 0"), ["connectors"]),
    ("connectors-negative", lambda t: _replace(t, "connectors = 2", "connectors = -1"), ["connectors"]),
    ("bad-url-scheme", lambda t: _replace(t, "ws://127.0.0.1:9/ocpp", "http://127.0.0.1:9/ocpp"), ["url"]),
    ("unknown-backend", lambda t: _replace(t, 'backend = "sim"', 'backend = "warp-drive"'), ["backend"]),
    (
        "ocpp-key-wrong-type",
        lambda t: _replace(t, "HeartbeatInterval = 60", 'HeartbeatInterval = "fast"'),
        ["HeartbeatInterval"],
    ),
    (
        "ocpp-key-unknown",
        lambda t: _replace(t, "HeartbeatInterval = 60", "HeartbeatInterval = 60\nFooKey = 1"),
        ["FooKey"],
    ),
    (
        "ocpp-key-out-of-range",
        lambda t: _replace(t, "HeartbeatInterval = 60", "HeartbeatInterval = -5"),
        ["HeartbeatInterval"],
    ),
]


@pytest.mark.parametrize("check_only", [False, True], ids=["run", "check-config"])
@pytest.mark.parametrize(("name", "edit", "keys"), BAD_CONFIGS, ids=[c[0] for c in BAD_CONFIGS])
def test_bad_config_exit_2_one_line(
    make_config: MakeConfig,
    tmp_path: Path,
    name: str,
    edit: Callable[[str], str],
    keys: list[str],
    check_only: bool,
) -> None:
    good = make_config(csms_port=9)
    bad = tmp_path / f"bad-{name}.toml"
    bad.write_text(edit(good.read_text()))
    args = ["--config", str(bad)] + (["--check-config"] if check_only else ["--log-level", "debug"])
    res = run_daemon(*args)
    err = res.stderr.strip()
    assert res.returncode == 2, f"exit {res.returncode}; stderr:\n{res.stderr}"
    assert "Traceback" not in res.stderr + res.stdout
    lines = err.splitlines()
    assert len(lines) == 1, f"expected exactly one line on stderr, got:\n{err}"
    assert bad.name in lines[0], f"the error must name the file: {lines[0]}"
    for k in keys:
        assert k in lines[0], f"the error must name {k!r}: {lines[0]}"


def test_missing_config_file(tmp_path: Path) -> None:
    missing = tmp_path / "does-not-exist.toml"
    res = run_daemon("--config", str(missing))
    assert res.returncode == 2, res
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and missing.name in lines[0], res.stderr
    assert "Traceback" not in res.stderr


def test_check_config_good(make_config: MakeConfig) -> None:
    cfg = make_config(csms_port=9)
    res = run_daemon("--config", str(cfg), "--check-config")
    assert res.returncode == 0, res.stderr
    assert "Traceback" not in res.stderr + res.stdout


def test_check_config_minimal_without_optionals(make_config: MakeConfig) -> None:
    """serial_number and [ocpp.config] are optional."""
    cfg = make_config(csms_port=9, charge_point={"serial_number": None}, ocpp={"config": None})
    assert "serial_number" not in cfg.read_text() and "[ocpp.config]" not in cfg.read_text()
    res = run_daemon("--config", str(cfg), "--check-config")
    assert res.returncode == 0, res.stderr
