"""Daemon start to READY=1 (median of 5) and idle RSS after boot. Targets: READY < 1.5 s, RSS < 40 MB."""

from __future__ import annotations

import time

from _harness import CsmsThread, Daemon, median, tmpdir

RUNS = 5


def main() -> None:
    csms = CsmsThread()
    ready: list[float] = []
    rss: list[int] = []
    for _ in range(RUNS):
        d = Daemon(tmpdir(), csms.port, notify=True)
        try:
            ready.append(d.wait_ready_notify())
            d.wait(lambda s: s["ocpp"]["registration"] == "Accepted")
            time.sleep(3)  # let boot traffic settle: this is the idle figure
            rss.append(d.rss_kib())
        finally:
            d.stop()
    csms.stop()
    print(f"start to READY=1: median {median(ready) * 1000:.0f} ms over {RUNS} runs "
          f"(min {min(ready) * 1000:.0f}, max {max(ready) * 1000:.0f}); target < 1500 ms")
    print(f"idle RSS after boot: median {median([r / 1024 for r in rss]):.1f} MiB "
          f"(max {max(rss) / 1024:.1f}); target < 40 MiB")


if __name__ == "__main__":
    main()
