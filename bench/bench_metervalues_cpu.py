"""CPU time the daemon spends per MeterValues exchange (sample, persist, send, delete on answer)."""

from __future__ import annotations

import time

from _harness import CsmsThread, Daemon, tmpdir

SECONDS = 30


def main() -> None:
    csms = CsmsThread()
    d = Daemon(tmpdir(), csms.port, extra="MeterValueSampleInterval = 1")
    try:
        d.wait(lambda s: s["ocpp"]["registration"] == "Accepted")
        time.sleep(2)
        idle0 = d.cpu_seconds()
        time.sleep(SECONDS)
        idle_cpu = d.cpu_seconds() - idle0
        d.ctl(cmd="sim", action="plug", connector=1)
        d.ctl(cmd="sim", action="swipe", id_tag="BENCH01")
        d.wait(lambda s: s["connectors"][0]["status"] == "Charging")
        before = sum(1 for e in csms.csms.messages if e.action == "MeterValues" and e.kind == "CALL")
        cpu0 = d.cpu_seconds()
        time.sleep(SECONDS)
        cpu = d.cpu_seconds() - cpu0
        count = sum(1 for e in csms.csms.messages if e.action == "MeterValues" and e.kind == "CALL") - before
    finally:
        d.stop()
        csms.stop()
    per = (cpu - idle_cpu) / count if count else float("nan")
    print(f"idle: {idle_cpu / SECONDS * 1000:.1f} ms CPU per second")
    print(f"charging with MeterValueSampleInterval=1: {cpu / SECONDS * 1000:.1f} ms CPU per second, "
          f"{count} MeterValues in {SECONDS} s")
    print(f"CPU per MeterValues exchange (above idle): {per * 1000:.2f} ms")


if __name__ == "__main__":
    main()
