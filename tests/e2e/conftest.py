"""End-to-end fixtures: the real evsed daemon against a strict, independent OCPP 1.6J CSMS.

Setup once per checkout:  npm ci --prefix tests/e2e/csms
The suite is skipped only when `node` is missing; with node present but the npm
packages not installed, the CSMS-based tests fail and say what to run.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from daemon_harness import Daemon, make_config
from strict_csms import INSTALL_HINT, StrictCSMS, node_executable, node_modules_ready

E2E_DIR = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if node_executable() is not None:
        return
    skip = pytest.mark.skip(reason="e2e suite needs Node.js (`node` not found on PATH) for the strict OCPP CSMS")
    for item in items:
        if E2E_DIR in Path(str(item.fspath)).resolve().parents:
            item.add_marker(skip)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    rep = yield
    setattr(item, "rep_" + rep.when, rep)
    return rep


def _failed(request: pytest.FixtureRequest) -> bool:
    rep = getattr(request.node, "rep_call", None)
    return rep is None or rep.failed


# ---------------------------------------------------------------------------- fixtures


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    """A short directory for the control socket (AF_UNIX paths are limited to ~107 bytes)."""
    d = Path(tempfile.mkdtemp(prefix="evsed-e2e-", dir="/tmp"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
async def strict_csms(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[StrictCSMS]:
    if not node_modules_ready():
        pytest.fail(
            f"the strict CSMS's npm packages are not installed (tests/e2e/csms/node_modules): run `{INSTALL_HINT}`",
            pytrace=False,
        )
    csms = StrictCSMS(log_path=tmp_path / "csms-events.jsonl")
    await csms.start()
    try:
        yield csms
    finally:
        if _failed(request):
            print(csms.describe(60))
        await csms.aclose()


@pytest.fixture(name="make_config")
def make_config_fixture(tmp_path: Path, short_tmp: Path) -> Callable[..., Path]:
    def _make(tmp: Path | None = None, **overrides: Any) -> Path:
        overrides.setdefault("socket_path", short_tmp / "evsed.sock")
        return make_config(tmp or tmp_path, **overrides)

    return _make


@pytest.fixture
def daemon_factory(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Callable[[Path], Daemon]]:
    """daemon_factory(config_path) -> Daemon (not started). Logs are printed when the test fails."""
    made: list[Daemon] = []

    def _factory(config_path: Path) -> Daemon:
        import tomllib

        cfg = tomllib.loads(config_path.read_text())
        d = Daemon(config_path, tmp_path, Path(cfg["control"]["socket"]))
        made.append(d)
        return d

    yield _factory
    for d in made:
        d.cleanup()
    if _failed(request):
        for d in made:
            print(d.log_tail(200))


@pytest.fixture
async def daemon(
    strict_csms: StrictCSMS, make_config: Callable[..., Path], daemon_factory: Callable[[Path], Daemon]
) -> Daemon:
    """A running daemon with the default config, connected to strict_csms."""
    d = daemon_factory(make_config(csms_port=strict_csms.port))
    d.start()
    await d.wait_ready()
    return d
