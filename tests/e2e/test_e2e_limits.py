"""Current limits and over-current end to end (real daemon on the sim board, strict CSMS): `evsectl limit`
changes the offered current and is kept across a restart; an EV that draws more than offered is suspended
(SuspendedEVSE, OverCurrentFailure) and, when it goes on, faulted."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from daemon_harness import Daemon, connector
from ocpp_helpers import no_strict_errors, start_daemon, start_local_session, status_is
from strict_csms import StrictCSMS

from evsed.control.protocol import request

MakeConfig = Callable[..., Path]
Factory = Callable[[Path], Daemon]


async def full_connector(d: Daemon, n: int, predicate: Callable[[dict[str, Any]], bool],
                         timeout: float = 20) -> dict[str, Any]:
    """The control socket's whole status answer (more than the `status --json` contract) for connector n."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        st = await asyncio.to_thread(request, str(d.socket_path), {"cmd": "status"})
        last = next(c for c in st["connectors"] if c["id"] == n)
        if predicate(last):
            return last  # type: ignore[no-any-return]
        await asyncio.sleep(0.2)
    raise AssertionError(f"timed out; last connector status {last}")


async def test_local_limit_lowers_offer_and_survives_restart(
    strict_csms: StrictCSMS, make_config: MakeConfig, daemon_factory: Factory
) -> None:
    csms = strict_csms
    d = await start_daemon(csms, make_config, daemon_factory, connectors=1)
    await start_local_session(d, csms, 1)
    assert connector(await d.status(), 1)["offered_current_a"] == 32.0
    await d.ctl("limit", "10", "--connector", "1")
    c = await full_connector(d, 1, lambda c: c["offered_current_a"] == 10.0)
    assert (c["current_limit_a"], c["limit_source"]) == (10.0, "local")
    # The EV follows the offer: the duty is rounded toward less current (16.6 % = 9.96 A), 3 phases at 230 V.
    await d.wait_connector(1, lambda c: c["power_w"] == 6872.4)
    text = await d.ctl("status")
    assert "limit 10 A (local)" in text, text
    await d.restart()
    c = await full_connector(d, 1, lambda c: c["limit_source"] == "local")
    assert c["current_limit_a"] == 10.0
    await d.ctl("limit", "--clear")
    await full_connector(d, 1, lambda c: c["limit_source"] == "hardware")
    # A bad value gets a clear answer.
    bad = await d.evsectl("limit", "99")
    assert bad.returncode == 1 and "between 0 and 80 A" in bad.stderr, bad
    both = await d.evsectl("limit", "10", "--clear")
    assert both.returncode == 2, both
    assert csms.strict_errors == [], no_strict_errors(csms)


async def test_ev_drawing_more_than_offered_is_suspended_then_faulted(
    strict_csms: StrictCSMS, make_config: MakeConfig, daemon_factory: Factory
) -> None:
    csms = strict_csms
    d = await start_daemon(csms, make_config, daemon_factory, connectors=1,
                           hardware={"overcurrent_time_s": 1.0, "overcurrent_tolerance_a": 2.0})
    await d.ctl("limit", "16", "--connector", "1")
    await start_local_session(d, csms, 1)
    mark = csms.mark()
    await d.ctl("sim", "fault", "1", "ev-overdraw")  # the EV now draws its 32 A whatever is offered
    sn = await csms.wait_call("StatusNotification", status_is(1, "SuspendedEVSE"), since=mark, timeout=15)
    assert sn["payload"]["errorCode"] == "OverCurrentFailure", sn
    # It stays in C and keeps drawing: 6 s after the PWM went, the contactor is opened under load.
    sn = await csms.wait_call("StatusNotification", status_is(1, "Faulted"), since=mark, timeout=20)
    assert sn["payload"]["errorCode"] == "OverCurrentFailure", sn
    c = await d.wait_connector(1, lambda c: c["power_w"] == 0.0)
    assert c["status"] == "Faulted"
    # Unplugging ends the episode.
    mark = csms.mark()
    await d.ctl("sim", "clear", "1")
    await d.ctl("sim", "unplug", "1")
    await csms.wait_call("StatusNotification", status_is(1, "Available"), since=mark, timeout=15)
    assert csms.strict_errors == [], no_strict_errors(csms)
