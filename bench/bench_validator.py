"""Median time to validate one MeterValues.req payload (run: python bench/bench_validator.py)."""

from __future__ import annotations

import statistics
import time
from typing import Any

from evsed.ocpp.schema import Validator

TS = "2024-05-01T12:00:00.123Z"

# A typical periodic sample of a 3-phase charge point: energy, 3 currents, 3 voltages, power, SoC.
PAYLOAD: dict[str, Any] = {
    "connectorId": 1,
    "transactionId": 42,
    "meterValue": [
        {
            "timestamp": TS,
            "sampledValue": [
                {
                    "value": "12345.6",
                    "context": "Sample.Periodic",
                    "measurand": "Energy.Active.Import.Register",
                    "location": "Outlet",
                    "unit": "Wh",
                },
                *[
                    {
                        "value": "16.0",
                        "context": "Sample.Periodic",
                        "measurand": "Current.Import",
                        "phase": p,
                        "location": "Outlet",
                        "unit": "A",
                    }
                    for p in ("L1", "L2", "L3")
                ],
                *[
                    {
                        "value": "230.1",
                        "context": "Sample.Periodic",
                        "measurand": "Voltage",
                        "phase": p,
                        "location": "Outlet",
                        "unit": "V",
                    }
                    for p in ("L1-N", "L2-N", "L3-N")
                ],
                {
                    "value": "11040",
                    "context": "Sample.Periodic",
                    "measurand": "Power.Active.Import",
                    "location": "Outlet",
                    "unit": "W",
                },
                {
                    "value": "55",
                    "context": "Sample.Periodic",
                    "measurand": "SoC",
                    "location": "EV",
                    "unit": "Percent",
                },
            ],
        }
    ],
}


def main(rounds: int = 51, per_round: int = 2000) -> None:
    validator = Validator()
    started = time.perf_counter()
    validator.validate_request("MeterValues", PAYLOAD)  # first call loads and compiles the schema
    print(f"first call (load + compile): {(time.perf_counter() - started) * 1e6:.0f} us")
    samples = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        for _ in range(per_round):
            validator.validate_request("MeterValues", PAYLOAD)
        samples.append((time.perf_counter() - t0) / per_round * 1e6)
    n = len(PAYLOAD["meterValue"][0]["sampledValue"])
    print(f"MeterValues ({n} sampledValues): median {statistics.median(samples):.1f} us per validation")


if __name__ == "__main__":
    main()
