"""One background thread that runs callbacks at deadlines.

`threading.Timer` starts a new thread per deadline, and `Thread.start()` waits until that thread runs: inside the
pilot sampling thread that is a wait of its own, longest when the machine is busy. The safety supervisor arms a
deadline on every contactor command, so it uses this instead: scheduling is a heap push and a notify.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)


class Deadline:
    __slots__ = ("cancelled",)

    def __init__(self) -> None:
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class Deadlines:
    def __init__(self, name: str = "deadlines") -> None:
        self._heap: list[tuple[float, int, Deadline, Callable[..., Any], tuple[Any, ...]]] = []
        self._cv = threading.Condition()
        self._seq = itertools.count()
        self._name = name
        self._thread: threading.Thread | None = None
        self._closed = False

    def after(self, delay_s: float, fn: Callable[..., Any], *args: Any) -> Deadline:
        handle = Deadline()
        with self._cv:
            if self._closed:
                handle.cancel()
                return handle
            heapq.heappush(self._heap, (time.monotonic() + delay_s, next(self._seq), handle, fn, args))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
                self._thread.start()
            self._cv.notify()
        return handle

    def close(self) -> None:
        with self._cv:
            self._closed = True
            for entry in self._heap:
                entry[2].cancel()
            self._heap.clear()
            self._cv.notify()

    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._closed and (not self._heap or self._heap[0][0] > time.monotonic()):
                    self._cv.wait(None if not self._heap else self._heap[0][0] - time.monotonic())
                if self._closed:
                    return
                _, _, handle, fn, args = heapq.heappop(self._heap)
            if handle.cancelled:
                continue
            try:
                fn(*args)
            except Exception:  # one failing callback must not end the others
                log.exception("deadline callback %r failed", fn)
