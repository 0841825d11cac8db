"""Fuzz the sans-I/O OCPP session with malformed and schema-invalid frames (hypothesis, derandomized).

Every frame goes through ``OcppSession.receive`` of one long-lived session registered as Accepted. The expected
answer comes from tests/unit/ocpp_fuzz_oracle.py, written from OCPP-J 1.6 section 4 / Table 7 and the official
JSON schemas, never from evsed code. After every example the same session must still answer a valid
GetConfiguration with a CALLRESULT.
"""

from __future__ import annotations

import json
import random
from typing import Any

import ocpp_fuzz_oracle as oracle
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from evsed.ocpp.configkeys import ConfigKeys
from evsed.ocpp.schema import Validator
from evsed.ocpp.session import Identity, OcppSession
from evsed.store.db import Store

_BASE = settings(
    derandomize=True,
    database=None,
    deadline=None,
    print_blob=False,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large],
)


def fuzz(examples: int) -> settings:
    """Deterministic (derandomized, no example database), no deadline."""
    return settings(_BASE, max_examples=examples)


class _Controller:
    """The charging core's port. Fuzzed frames are invalid (or harmless, like GetConfiguration), so nothing but
    ``statuses`` (the status burst after boot) may reach the core: any other call is recorded and fails the test."""

    def __init__(self) -> None:
        self.unexpected: list[tuple[str, tuple[Any, ...]]] = []

    def statuses(self) -> dict[int, tuple[str, str, str]]:
        return {0: ("Available", "NoError", ""), 1: ("Available", "NoError", ""), 2: ("Available", "NoError", "")}

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)

        def record(*args: Any, **kwargs: Any) -> Any:
            self.unexpected.append((name, args))
            raise AssertionError(f"a fuzzed frame reached the charging core: controller.{name}{args}")

        return record


class Fuzzed:
    """One session, booted Accepted, that receives every frame of a test."""

    def __init__(self) -> None:
        store = Store(":memory:")
        keys = ConfigKeys(store, {"HeartbeatInterval": 0}, 2)
        self.ctl = _Controller()
        self.s = OcppSession(Identity("CP001", "evsed", "evsed-sim"), keys, store, self.ctl, Validator("v16"),
                             connectors=2, now=0.0, wall_offset=1_700_000_000.0, rng=random.Random(7))
        self.now = 0.0
        self.probes = 0
        self.frames = 0
        self.s.connection_opened(self.now)
        boot = self._take()
        assert [f[2] for f in boot] == ["BootNotification"], boot
        self.s.receive(json.dumps([3, boot[0][1], {"status": "Accepted", "currentTime": "2024-05-01T12:00:00Z",
                                                   "interval": 0}]), self.now)
        for _ in range(10):  # answer the StatusNotification burst
            calls = self._take()
            if not calls:
                break
            for call in calls:
                assert call[0] == 2 and call[2] == "StatusNotification", call
                self.s.receive(json.dumps([3, call[1], {}]), self.now)
        assert self.s.registration == "Accepted" and not self.s.outbox

    def _take(self) -> list[Any]:
        out = [json.loads(text) for text in self.s.outbox]
        self.s.outbox.clear()
        return out

    def send(self, raw: str | bytes) -> list[Any]:
        """Feed one frame; return what the session sent back (it must never raise, nor start a CALL)."""
        self.now += 0.01
        self.frames += 1
        self.s.receive(raw, self.now)
        for text in self.s.outbox:
            # OCPP-J 1.6 4.1.2: "MUST be valid JSON encoded with UTF-8"; the WebSocket layer must be able to send it.
            assert oracle.is_utf8(text), f"unsendable (not UTF-8 encodable) answer {text!r:.200} to {raw!r:.200}"
        out = self._take()
        assert not self.ctl.unexpected, f"{raw!r:.200} reached the charging core: {self.ctl.unexpected}"
        assert not [f for f in out if f[0] == 2], f"the session sent a CALL in reaction to {raw!r:.200}: {out}"
        return out

    def expect(self, raw: str | bytes, expect: oracle.Expect) -> None:
        answers = self.send(raw)
        problem = oracle.verdict(expect, answers)
        assert problem is None, f"frame {raw!r:.300}: {problem}"
        self.still_serving()

    def still_serving(self) -> None:
        self.probes += 1
        uid = f"probe-{self.probes}"
        out = self.send(json.dumps([2, uid, "GetConfiguration", {"key": ["HeartbeatInterval"]}]))
        assert len(out) == 1 and out[0][:2] == [3, uid], out
        assert [k["key"] for k in out[0][2]["configurationKey"]] == ["HeartbeatInterval"], out


# --- strategies ------------------------------------------------------------------------------------------------
json_scalars = (st.none() | st.booleans() | st.integers(-(2**70), 2**70)
                | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20))
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
ids = st.text(max_size=oracle.MAX_ID) | st.text(min_size=oracle.MAX_ID + 1, max_size=80)
non_strings = st.none() | st.booleans() | st.integers(-5, 5) | st.floats(allow_nan=False, allow_infinity=False) \
    | st.lists(json_scalars, max_size=2) | st.dictionaries(st.text(max_size=4), json_scalars, max_size=2)
# Well-formed CALLs must not reach a handler with side effects: known actions only where that is harmless.
unknown_actions = st.sampled_from(oracle.UNKNOWN_ACTIONS) | st.text(max_size=30).filter(
    lambda a: a not in oracle.ALL_ACTIONS)
call_actions = unknown_actions | st.sampled_from(["GetConfiguration", "Heartbeat", "BootNotification"])
non_call_types: st.SearchStrategy[Any] = st.sampled_from(
    [0, 1, 5, 6, -2, 2.5, 3.5, 1e3, 10**20, "2", "3", None, True, False, [2], {}])
json_ish = st.text(alphabet='[]{}",:0123456789.-+eE tfrualsn\\', max_size=40)


def _dump(value: Any) -> str:
    return json.dumps(value, allow_nan=False)


@st.composite
def call_frames(draw: st.DrawFn) -> str:
    """Type 2 arrays of any length with wrapper elements of any type."""
    mtype = draw(st.sampled_from([2, 2.0]))
    uid = draw(ids | non_strings)
    action = draw(call_actions | non_strings)
    payload = draw(json_values)
    extra = draw(st.lists(json_values, max_size=3))
    frame = [mtype, uid, action, payload, *extra][: draw(st.integers(1, 7))]
    return _dump(frame)


@st.composite
def response_frames(draw: st.DrawFn) -> str:
    """Type 3/4 arrays of any length and content."""
    mtype = draw(st.sampled_from([3, 4, 3.0, 4.0]))
    rest = draw(st.lists(ids | json_values | st.sampled_from(sorted(oracle.TABLE_7)), max_size=6))
    return _dump([mtype, *rest])


# --- 1. arbitrary bytes and text ------------------------------------------------------------------------------
def test_fuzz_arbitrary_bytes_and_text() -> None:
    f = Fuzzed()

    @fuzz(400)
    @given(st.binary(max_size=80) | st.text(max_size=80) | json_ish | json_ish.map(str.encode))
    @example(b"\xff\xfe")
    @example(b'\xef\xbb\xbf[2,"bom","Reset",{"type":"Hard"}]')
    @example('[2,"x","Reset",{"type":NaN}]')
    @example("[" * 100_000)
    @example('[2,"deep","FooBar",' + '{"a":' * 20_000 + "1" + "}" * 20_000 + "]")
    def run(raw: str | bytes) -> None:
        expect = oracle.expect_frame(raw)
        # Frames that look like a CALLRESULT/CALLERROR are test_fuzz_response_frames_are_never_answered's job.
        assume(expect.kind != "silent")
        f.expect(raw, expect)

    run()
    assert f.probes > 300  # examples actually checked (a few are filtered out by assume)


def test_fuzz_json_that_is_not_a_call() -> None:
    f = Fuzzed()

    @fuzz(300)
    @given(json_values.filter(lambda v: not isinstance(v, list))
           | st.tuples(non_call_types, st.lists(ids | json_values, max_size=5)).map(lambda t: [t[0], *t[1]]))
    @example([])
    @example([7, "abc", "Reset", {"type": "Hard"}])
    @example({"messageTypeId": 2, "uniqueId": "obj", "action": "Reset", "payload": {"type": "Hard"}})
    def run(value: Any) -> None:
        raw = _dump(value)
        f.expect(raw, oracle.expect_frame(raw))

    run()


def test_fuzz_garbage_generator() -> None:
    """The e2e test's garbage generator (deep nesting, near-JSON, BOM, NaN, wrong MessageTypeIds)."""
    f = Fuzzed()

    @fuzz(200)
    @given(st.randoms(use_true_random=False))
    def run(rng: random.Random) -> None:
        raw = oracle.garbage_frame(rng)
        f.expect(raw, oracle.expect_frame(raw))

    run()


# --- 1b. malformed CALL wrappers ------------------------------------------------------------------------------
def test_fuzz_malformed_calls() -> None:
    f = Fuzzed()

    @fuzz(400)
    @given(call_frames())
    @example('[2,"id1","Heartbeat"]')
    @example('[2,"id2",5,{}]')
    @example('[2,"id3","Heartbeat",{},1]')
    @example('[2,"id4","Reset",7]')
    @example('[2,"' + "x" * 37 + '","Heartbeat",{}]')
    @example('[2.0,"id5","FooBar",{}]')
    @example("[2]")
    @example("[2,null]")
    def run(raw: str) -> None:
        f.expect(raw, oracle.expect_frame(raw))

    run()


def test_fuzz_malformed_call_generator() -> None:
    f = Fuzzed()

    @fuzz(300)
    @given(st.randoms(use_true_random=False), st.text(oracle.ID_ALPHABET, min_size=1, max_size=oracle.MAX_ID))
    def run(rng: random.Random, uid: str) -> None:
        raw = oracle.malformed_call(rng, uid)
        expect = oracle.expect_frame(raw)
        assert expect.kind == "error", (raw, expect)  # the generator always breaks the wrapper
        f.expect(raw, expect)

    run()


# --- 1c. CALLRESULT / CALLERROR lookalikes ----------------------------------------------------------------------
def test_fuzz_response_frames_are_never_answered() -> None:
    """OCPP-J 1.6 4.2.3: a CallError answers a *call*. A frame with MessageTypeId 3 or 4 is an answer, broken or
    not, matching one of our CALLs or none: answering it (even with "-1") is wrong, and two peers doing so would
    bounce CALLERRORs forever."""
    f = Fuzzed()

    @fuzz(300)
    @given(response_frames() | st.randoms(use_true_random=False).map(
        lambda rng: oracle.response_frame(rng, oracle.unique_id(rng))))
    @example('[3,"nobody",{}]')
    @example('[4,"nobody","GenericError","",{}]')
    @example('[3,"nobody","not an object"]')
    @example('[4,"nobody",5]')
    @example("[3]")
    @example("[4]")
    @example('[3,5,{}]')
    @example('[4,null,"GenericError","",{}]')
    def run(raw: str) -> None:
        expect = oracle.expect_frame(raw)
        assert expect.kind == "silent"
        f.expect(raw, expect)

    run()


def test_fuzz_lone_surrogates_answers_stay_sendable() -> None:
    """A lone surrogate escape ("\\ud800") is legal JSON text but cannot be encoded in UTF-8: echoing it raw
    (in the CALLERROR's UniqueId, or in GetConfiguration's unknownKey) makes the answer unsendable; in the daemon
    the WebSocket send raises and the connection drops. Escape it (ensure_ascii) or refuse the frame with "-1"."""
    f = Fuzzed()

    @fuzz(100)
    @given(st.randoms(use_true_random=False), st.text(oracle.ID_ALPHABET, min_size=1, max_size=oracle.MAX_ID))
    @example(random.Random(0), "plain-id")
    def run(rng: random.Random, uid: str) -> None:
        raw = oracle.surrogate_frame(rng, uid)
        answers = f.send(raw)
        problem = oracle.surrogate_verdict(raw, answers)
        assert problem is None, f"frame {raw!r:.300}: {problem}"
        f.still_serving()

    run()


# --- 2. schema-invalid CALLs ----------------------------------------------------------------------------------
def test_fuzz_schema_invalid_calls() -> None:
    f = Fuzzed()

    @fuzz(600)
    @given(st.sampled_from(oracle.CORE_ACTIONS) | st.sampled_from(oracle.CSMS_TO_CP_ACTIONS),
           st.randoms(use_true_random=False), st.text(oracle.ID_ALPHABET, min_size=1, max_size=oracle.MAX_ID))
    def run(action: str, rng: random.Random, uid: str) -> None:
        m = oracle.mutate(rng, action)
        raw = oracle.mutation_frame(rng, uid, m)
        f.expect(raw, oracle.Expect("error", frozenset({uid}), frozenset({m.code}), m.describe()))

    run()


def test_schema_mutations_cover_every_kind_for_core_actions() -> None:
    """Deterministic sweep: every mutation kind that applies to each issue-named action, at least once."""
    f = Fuzzed()
    rng = random.Random(20240501)
    expected_kinds = {
        "GetConfiguration": {"not-an-object", "wrong-type", "too-long", "additional-property"},
        "ChangeConfiguration": {"not-an-object", "null-payload", "wrong-type", "drop-required", "too-long",
                                "additional-property"},
        "RemoteStartTransaction": {"not-an-object", "null-payload", "wrong-type", "drop-required", "too-long",
                                   "additional-property", "bad-enum", "bad-format", "not-multiple"},
        "RemoteStopTransaction": {"not-an-object", "null-payload", "wrong-type", "drop-required",
                                  "additional-property"},
        "Reset": {"not-an-object", "null-payload", "wrong-type", "drop-required", "additional-property", "bad-enum"},
        "UnlockConnector": {"not-an-object", "null-payload", "wrong-type", "drop-required", "additional-property"},
        "ChangeAvailability": {"not-an-object", "null-payload", "wrong-type", "drop-required",
                               "additional-property", "bad-enum"},
        "ClearCache": {"not-an-object", "additional-property"},
        "DataTransfer": {"not-an-object", "null-payload", "wrong-type", "drop-required", "too-long",
                         "additional-property"},
    }
    assert set(expected_kinds) == set(oracle.CORE_ACTIONS)
    for action, kinds in expected_kinds.items():
        seen: set[str] = set()
        for n in range(200):
            m = oracle.mutate(rng, action)
            seen.add(m.kind)
            uid = f"{action[:20]}-{n}"
            f.expect(oracle.mutation_frame(rng, uid, m),
                     oracle.Expect("error", frozenset({uid}), frozenset({m.code}), m.describe()))
        assert seen == kinds, (action, sorted(seen ^ kinds))


# --- 3. unknown actions ---------------------------------------------------------------------------------------
def test_fuzz_unknown_actions_not_implemented() -> None:
    f = Fuzzed()

    @fuzz(200)
    @given(unknown_actions, st.text(max_size=oracle.MAX_ID),
           st.none() | st.dictionaries(st.text(max_size=8), json_values, max_size=3))
    def run(action: str, uid: str, payload: dict[str, Any] | None) -> None:
        raw = _dump([2, uid, action, payload])
        expect = oracle.Expect("error", frozenset({uid}), frozenset({oracle.NOT_IMPLEMENTED}), f"{action!r}")
        independent = oracle.expect_frame(raw)
        assert (independent.kind, independent.ids, independent.codes) == (expect.kind, expect.ids, expect.codes)
        f.expect(raw, expect)

    run()


# --- the e2e stream, at unit level ------------------------------------------------------------------------------
def test_fuzz_mixed_stream() -> None:
    f = Fuzzed()

    @fuzz(300)
    @given(st.randoms(use_true_random=False))
    def run(rng: random.Random) -> None:
        case = oracle.random_case(rng, "m-")
        f.expect(case.text, case.expect)

    run()
