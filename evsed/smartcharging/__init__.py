"""OCPP 1.6 smart charging. `composite_schedule` is the pure engine behind GetCompositeSchedule and the limiter."""

from __future__ import annotations

from evsed.smartcharging.composite import composite_schedule

__all__ = ["composite_schedule"]
