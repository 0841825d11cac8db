"""The one-thread deadline scheduler used by the safety supervisor and the emulated world."""

from __future__ import annotations

import threading

from evsed.core.deadlines import Deadlines


def test_callbacks_run_in_deadline_order_and_cancel_works() -> None:
    d = Deadlines()
    ran: list[str] = []
    done = threading.Event()
    d.after(0.06, lambda: (ran.append("late"), done.set()))
    d.after(0.02, ran.append, "early")
    d.after(0.04, ran.append, "cancelled").cancel()
    assert done.wait(2.0)
    assert ran == ["early", "late"]
    d.close()


def test_a_failing_callback_does_not_stop_the_others() -> None:
    d = Deadlines()
    done = threading.Event()

    def boom() -> None:
        raise RuntimeError("boom")

    d.after(0.0, boom)
    d.after(0.01, done.set)
    assert done.wait(2.0)
    d.close()


def test_after_close_nothing_runs() -> None:
    d = Deadlines()
    ran = threading.Event()
    d.after(0.02, ran.set)
    d.close()
    assert d.after(0.0, ran.set).cancelled
    assert not ran.wait(0.1)
