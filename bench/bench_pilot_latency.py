"""Latency from a simulated pilot change to the contactor-open command, idle and under a CSMS CALL flood.

Events: EV pauses (C -> B), every 10th an unplug (-> A), every 25th a pilot short (E). The sim board stamps
the physical change and the contactor command; the difference is what the safety path costs.
Targets: p99 < 10 ms, max < 50 ms under load.
"""

from __future__ import annotations

import asyncio
import sys
import threading

from _harness import CsmsThread, Daemon, percentile, tmpdir

EVENTS = 1000


def charging(s: dict) -> bool:  # type: ignore[type-arg]
    return bool(s["connectors"][0]["status"] == "Charging")


def run_events(d: Daemon, n: int) -> list[float]:
    d.ctl(cmd="sim", action="latency", reset=True)
    d.ctl(cmd="sim", action="plug", connector=1)
    d.ctl(cmd="sim", action="swipe", id_tag="BENCH01")
    d.wait(charging)
    for i in range(1, n + 1):
        if i % 25 == 0:
            d.ctl(cmd="sim", action="fault", connector=1, kind="pilot-short")
            d.wait(lambda s: s["connectors"][0]["pilot_state"] == "E")
            d.ctl(cmd="sim", action="clear", connector=1)
            d.wait(charging)
        elif i % 10 == 0:
            d.ctl(cmd="sim", action="unplug", connector=1)
            d.wait(lambda s: s["connectors"][0]["status"] == "Available")
            d.ctl(cmd="sim", action="plug", connector=1)
            d.ctl(cmd="sim", action="swipe", id_tag="BENCH01")
            d.wait(charging)
        else:
            d.ctl(cmd="sim", action="suspend", connector=1)
            d.wait(lambda s: s["connectors"][0]["pilot_state"] == "B")
            d.ctl(cmd="sim", action="resume", connector=1)
            d.wait(charging)
    d.ctl(cmd="sim", action="unplug", connector=1)
    return [ns / 1e6 for ns in d.ctl(cmd="sim", action="latency")["open_latencies_ns"]]


def report(label: str, ms: list[float]) -> None:
    print(f"{label}: {len(ms)} openings, p50 {percentile(ms, 50):.3f} ms, p99 {percentile(ms, 99):.3f} ms, "
          f"max {max(ms):.3f} ms")


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else EVENTS
    csms = CsmsThread()
    d = Daemon(tmpdir(), csms.port)
    try:
        d.wait(lambda s: s["ocpp"]["registration"] == "Accepted")
        report("idle", run_events(d, n))
        stop = threading.Event()
        calls = [0]

        async def flood() -> None:
            while not stop.is_set():
                await csms.csms.call("BENCH", "GetConfiguration", {})
                calls[0] += 1

        fut = asyncio.run_coroutine_threadsafe(flood(), csms.loop)
        try:
            report("under CSMS flood", run_events(d, n))
        finally:
            stop.set()
            fut.result(30)
        print(f"  (the CSMS completed {calls[0]} GetConfiguration CALLs during the loaded run)")
    finally:
        d.stop()
        csms.stop()


if __name__ == "__main__":
    main()
