"""Fuzz the real daemon over its CSMS connection: malformed and schema-invalid frames, seeded and repeatable.

Each generated frame is injected with the strict CSMS's ``raw`` command and followed by a valid probe CALL
(GetConfiguration) on the same WebSocket. The daemon handles frames in order, so every CALLRESULT/CALLERROR it
sends between the fuzz frame and the probe's answer is its complete reaction to the fuzz frame; the oracle in
tests/unit/ocpp_fuzz_oracle.py (OCPP-J 1.6 section 4 / Table 7 and the official schemas, no evsed code) says
what that reaction must be. The probe's answer proves the daemon is still serving after every single frame.
At the end: still the first connection (no reconnect), a normal CSMS call works, ``evsectl status`` works.
"""

from __future__ import annotations

import json
import random
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from daemon_harness import CP_ID, Daemon
from ocpp_helpers import start_daemon
from strict_csms import CSMSError, StrictCSMS

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit"))
import ocpp_fuzz_oracle as oracle

MakeConfig = Callable[..., Path]
Factory = Callable[[Path], Daemon]

SEED = 1234
FRAMES = 200
RESPONSE_FRAMES = 40
SURROGATE_FRAMES = 12


@pytest.fixture
async def idle_daemon(strict_csms: StrictCSMS, make_config: MakeConfig, daemon_factory: Factory) -> Daemon:
    return await start_daemon(strict_csms, make_config, daemon_factory, connectors=1)


class Prober:
    def __init__(self, csms: StrictCSMS) -> None:
        self.csms = csms
        self.probes = 0

    async def exchange(self, text: str, probe_timeout: float = 10) -> list[Any]:
        """Send ``text``, then a probe; return the daemon's answers to ``text`` (frames of type 3/4 or junk)."""
        csms = self.csms
        mark = len(csms.messages)
        await csms.raw(CP_ID, text, timeout=0)  # do not wait: the probe below bounds the reaction
        self.probes += 1
        probe_id = f"probe-{self.probes}"
        probe = json.dumps([2, probe_id, "GetConfiguration", {"key": ["HeartbeatInterval"]}])
        answer = await csms.raw(CP_ID, probe, timeout=probe_timeout)
        assert answer is not None, f"daemon stopped answering after {text!r:.300}"
        result = json.loads(answer)
        assert result[:2] == [3, probe_id], f"probe after {text!r:.300} answered with {answer}"
        assert [k["key"] for k in result[2]["configurationKey"]] == ["HeartbeatInterval"], answer
        answers: list[Any] = []
        for ev in csms.messages[mark:]:
            try:
                frame = json.loads(ev["message"])
            except ValueError:
                answers.append(ev["message"])  # not even JSON: verdict() reports it
                continue
            if isinstance(frame, list) and frame and frame[0] == 2:
                continue  # one of the daemon's own CALLs (heartbeat, status): not an answer
            if isinstance(frame, list) and len(frame) > 1 and frame[1] == probe_id:
                continue
            answers.append(frame)
        return answers


def _unexpected_strict_errors(csms: StrictCSMS) -> list[dict[str, Any]]:
    """Strict CSMS complaints, minus the harness artefact of id-less answers.

    A "-1" CALLERROR answering a frame whose second element is a string (["2","x",..], [7,"x",..]) matches no
    id the harness injected, so ocpp-rpc reports it as a bad message; that is the oracle's business, not a
    protocol violation. Everything else (a non-1.6 error code, a malformed CALLERROR, ...) counts.
    """
    out = []
    for ev in csms.strict_errors:
        if ev.get("kind") == "bad_message":
            try:
                frame = json.loads(ev.get("message", ""))
            except ValueError:
                frame = None
            if isinstance(frame, list) and len(frame) == 5 and frame[:2] == [4, "-1"]:
                continue
        out.append({k: v for k, v in ev.items() if k != "_rx"})
    return out


async def _still_serving(csms: StrictCSMS, daemon: Daemon) -> None:
    connected = [e for e in csms.events if e.get("event") == "connected" and e.get("identity") == CP_ID]
    disconnected = [e for e in csms.events if e.get("event") == "disconnected"]
    assert len(connected) == 1 and not disconnected, f"the daemon reconnected: {connected} {disconnected}"
    assert daemon.running()
    res = await csms.call(CP_ID, "GetConfiguration", {"key": ["HeartbeatInterval", "NoSuchKey"]})
    assert [k["key"] for k in res["configurationKey"]] == ["HeartbeatInterval"] and res["unknownKey"] == ["NoSuchKey"]
    plain = await daemon.evsectl("status")
    assert plain.returncode == 0 and plain.stdout.strip(), plain
    st = await daemon.status()
    assert st["ocpp"]["connected"] is True and st["ocpp"]["registration"] == "Accepted", st
    assert st["connectors"][0]["status"] == "Available", st
    assert _unexpected_strict_errors(csms) == []


async def test_fuzz_calls_get_the_expected_callerror(strict_csms: StrictCSMS, idle_daemon: Daemon) -> None:
    """200 garbage frames, malformed CALLs, schema-invalid CALLs and unknown actions, one after another."""
    csms = strict_csms
    rng = random.Random(SEED)
    prober = Prober(csms)
    failures: list[str] = []
    kinds: Counter[str] = Counter()
    cases = oracle.every_kind(rng, "k")
    cases += [oracle.random_case(rng, f"f{n}-") for n in range(FRAMES - len(cases))]
    for n, case in enumerate(cases):
        kinds[case.label.split(":")[0]] += 1
        if case.label.startswith("schema:"):
            kinds[case.label.split()[1]] += 1
        answers = await prober.exchange(case.text)
        problem = oracle.verdict(case.expect, answers)
        if problem is not None:
            failures.append(f"#{n} {case.label}: {case.text!r:.200} -> {problem}")
    await _still_serving(csms, idle_daemon)
    assert not failures, f"{len(failures)} of {FRAMES} frames answered against OCPP-J 1.6:\n" + "\n".join(failures)
    # The seeded stream covers every category and every schema mutation kind.
    assert {"garbage", "malformed-call", "schema", "unknown-action"} <= set(kinds), kinds
    assert set(oracle.KIND_CODE) <= set(kinds), kinds


async def test_fuzz_response_frames_never_answered(strict_csms: StrictCSMS, idle_daemon: Daemon) -> None:
    """CALLRESULT/CALLERROR lookalikes of every shape (OCPP-J 1.6 4.2.3: a CallError only answers a call)."""
    csms = strict_csms
    rng = random.Random(SEED + 1)
    prober = Prober(csms)
    failures: list[str] = []
    for n in range(RESPONSE_FRAMES):
        text = oracle.response_frame(rng, oracle.unique_id(rng, f"r{n}-"))
        answers = await prober.exchange(text)
        problem = oracle.verdict(oracle.expect_frame(text), answers)
        if problem is not None:
            failures.append(f"#{n}: {text!r:.200} -> {problem}")
    await _still_serving(csms, idle_daemon)
    assert not failures, f"{len(failures)} of {RESPONSE_FRAMES} response frames were answered:\n" + "\n".join(failures)


async def test_fuzz_lone_surrogates_keep_the_connection(strict_csms: StrictCSMS, idle_daemon: Daemon) -> None:
    """Frames carrying a lone UTF-16 surrogate as a JSON escape ("\\ud800": legal JSON text, RFC 8259 8.2) in the
    UniqueId, the Action or the payload. Whatever the daemon answers must be sendable UTF-8 (4.1.2); an answer
    echoing the raw surrogate cannot be encoded, the WebSocket send fails and the connection drops."""
    csms = strict_csms
    rng = random.Random(SEED + 2)
    prober = Prober(csms)
    failures: list[str] = []
    for n in range(SURROGATE_FRAMES):
        text = oracle.surrogate_frame(rng, oracle.unique_id(rng, f"s{n}-"))
        try:
            answers = await prober.exchange(text, probe_timeout=4)
        except (AssertionError, CSMSError) as exc:
            failures.append(f"#{n}: {text!r:.200} -> the daemon stopped answering on this connection: {exc!s:.200}")
            break  # the connection is gone; the remaining frames would only time out
        problem = oracle.surrogate_verdict(text, answers)
        if problem is not None:
            failures.append(f"#{n}: {text!r:.200} -> {problem}")
    reconnects = [e for e in csms.events if e.get("event") == "disconnected"]
    assert not failures, "\n".join(failures) + f"\ndisconnects: {reconnects}"
    await _still_serving(csms, idle_daemon)
