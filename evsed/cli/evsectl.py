"""`evsectl`: talk to the running daemon over its control socket."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from typing import Any

from evsed.control.protocol import ControlError, request

DEFAULT_SOCKET = "/run/evsed/evsed.sock"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="evsectl", description="control and inspect a running evsed")
    p.add_argument("--socket", default=os.environ.get("EVSED_SOCKET", DEFAULT_SOCKET),
                   help=f"control socket (default {DEFAULT_SOCKET}, or $EVSED_SOCKET)")
    sub = p.add_subparsers(dest="command", required=True)
    status = sub.add_parser("status", help="show the charge point's state")
    status.add_argument("--json", action="store_true", help="print one JSON object")
    dt = sub.add_parser("data-transfer", help="send a DataTransfer.req to the CSMS and print its answer")
    dt.add_argument("vendor_id")
    dt.add_argument("--message-id")
    dt.add_argument("--data")
    limit = sub.add_parser("limit", help="set a local current limit (kept across restarts), or clear it")
    limit.add_argument("amps", nargs="?", type=float, help="amperes per phase; below 6 A the EV pauses")
    limit.add_argument("--connector", type=int, default=0, help="connector (default 0 = all)")
    limit.add_argument("--clear", action="store_true", help="remove the local limit")
    sched = sub.add_parser("schedule", help="print the composite charging schedule (what the profiles allow)")
    sched.add_argument("--connector", type=int, default=1,
                       help="connector (default 1; 0 = the whole charger, the sum capped by ChargePointMaxProfile)")
    sched.add_argument("--duration", type=int, default=86400, metavar="S", help="seconds from now (default 86400)")
    sched.add_argument("--unit", choices=["A", "W"], help="default: the first allowed charging rate unit")
    sched.add_argument("--json", action="store_true",
                       help="print one JSON object: connectorId, scheduleStart, chargingSchedule (as OCPP)")
    probe = sub.add_parser("probe", help="read a device directly, for commissioning (the daemon need not run)")
    ps = probe.add_subparsers(dest="device", required=True)
    pm = ps.add_parser("meter", help="read a Modbus energy meter once")
    pm.add_argument("--port", required=True, help="serial device (RTU) or tcp://HOST:PORT (Modbus TCP)")
    pm.add_argument("--model", required=True, help="meter model, a file in hw/meters/ (e.g. sdm630)")
    pm.add_argument("--address", type=int, default=1, help="Modbus device address (default 1)")
    pm.add_argument("--baudrate", type=int, help="default: the model's factory setting")
    pm.add_argument("--parity", choices=["N", "E", "O"], help="default: the model's factory setting")
    pm.add_argument("--json", action="store_true", help="print one JSON object")
    pr = ps.add_parser("rfid", help="print the cards an RFID reader sees")
    pr.add_argument("--port", required=True, help="serial device of the reader")
    pr.add_argument("--baudrate", type=int, help="default 9600 (115200 for pn532)")
    pr.add_argument("--protocol", default="rdm6300",
                    help="frame format: rdm6300 (default), ascii (hex or decimal lines) or pn532 (polled)")
    pr.add_argument("--count", type=int, default=1, help="exit after this many cards (default 1)")
    pr.add_argument("--timeout", type=float, help="give up after this many seconds without a card")
    pr.add_argument("--json", action="store_true", help='one {"id_tag": ...} JSON object per line')
    sim = sub.add_parser("sim", help="drive the simulated board")
    ss = sim.add_subparsers(dest="action", required=True)
    plug = ss.add_parser("plug", help="plug an EV in (state B)")
    plug.add_argument("connector", type=int)
    plug.add_argument("--max-current", type=float, default=32.0, metavar="A")
    plug.add_argument("--phases", type=int, choices=[1, 3], default=3)
    for name, text in (("unplug", "unplug the EV (state A)"), ("suspend", "the EV pauses (C -> B)"),
                       ("resume", "the EV asks for energy again (B -> C)"), ("clear", "clear injected faults")):
        ss.add_parser(name, help=text).add_argument("connector", type=int)
    swipe = ss.add_parser("swipe", help="present a card to the RFID reader")
    swipe.add_argument("id_tag")
    fault = ss.add_parser("fault", help="inject a fault")
    fault.add_argument("connector", type=int)
    fault.add_argument("kind", help="diode, pilot-short, contactor-welded, meter-offline, lock-failure, "
                       "ground-fault, over-current, reader-offline, ev-overdraw")
    return p


CONNECTOR_FIELDS = ("id", "status", "pilot_state", "offered_current_a", "power_w", "energy_wh", "transaction_id",
                    "id_tag")


def contract_status(s: dict[str, Any]) -> dict[str, Any]:
    """Exactly the fields of the `status --json` contract; the socket answer carries more for humans."""
    return {
        "charge_point_id": s["charge_point_id"],
        "ocpp": {"connected": s["ocpp"]["connected"], "registration": s["ocpp"]["registration"]},
        "connectors": [{k: c[k] for k in CONNECTOR_FIELDS} for c in s["connectors"]],
    }


def _print_status(s: dict[str, Any]) -> None:
    o = s["ocpp"]
    link = "connected" if o["connected"] else "not connected"
    print(f"{s['charge_point_id']}: CSMS {link}, registration {o['registration'] or '-'}"
          + (f", {o['queued_transaction_messages']} transaction message(s) queued"
             if o.get("queued_transaction_messages") else ""))
    for c in s["connectors"]:
        line = (f"  connector {c['id']}: {c['status']:<13} pilot {c['pilot_state']}  "
                f"offered {c['offered_current_a']:4.1f} A  power {c['power_w'] / 1000:6.2f} kW  "
                f"meter {c['energy_wh'] / 1000:9.3f} kWh")
        if c.get("limit_source") not in (None, "hardware"):
            line += f"  limit {c['current_limit_a']:g} A ({c['limit_source']})"
        if c.get("error_code") not in (None, "NoError"):
            line += f"  error {c['error_code']}"
        if c["id_tag"] is not None:
            tx = c["transaction_id"] if c["transaction_id"] is not None else "pending"
            line += f"  tx {tx} ({c['id_tag']}"
            if c.get("session_energy_wh") is not None:
                line += f", {c['session_energy_wh'] / 1000:.3f} kWh"
            line += ")"
        print(line)


def _print_schedule(answer: dict[str, Any]) -> None:
    from datetime import datetime, timedelta

    schedule = answer["chargingSchedule"]
    unit = schedule["chargingRateUnit"]
    start = datetime.fromisoformat(schedule["startSchedule"].replace("Z", "+00:00"))
    where = "whole charger" if answer["connectorId"] == 0 else f"connector {answer['connectorId']}"
    print(f"composite schedule, {where}, {schedule['duration']} s from {schedule['startSchedule']}")
    print(f"  {'from (UTC)':<20} {'offset s':>9} {'limit':>10}  phases")
    for period in schedule["chargingSchedulePeriod"]:
        at = start + timedelta(seconds=period["startPeriod"])
        limit = f"{period['limit']:g} {unit}"
        print(f"  {at:%Y-%m-%d %H:%M:%S} {period['startPeriod']:>9} {limit:>10}  {period.get('numberPhases', '-')}")


def _probe(args: argparse.Namespace) -> int:
    if args.device == "meter":
        from evsed.board.rpi.probe import probe_meter

        return probe_meter(args.port, args.model, address=args.address, baudrate=args.baudrate,
                           parity=args.parity, as_json=args.json)
    from evsed.board.rpi.probe_rfid import probe_rfid

    if args.count < 1:
        print("evsectl: --count must be at least 1", file=sys.stderr)
        return 2
    baudrate = args.baudrate or (115200 if args.protocol.lower() == "pn532" else 9600)
    return probe_rfid(args.port, baudrate=baudrate, protocol=args.protocol, count=args.count,
                      as_json=args.json, timeout_s=args.timeout)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    # The drivers log for the daemon's journal; here every problem is already one "evsectl: ..." line.
    logging.getLogger().addHandler(logging.NullHandler())
    if args.command == "probe":
        try:
            return _probe(args)
        except KeyboardInterrupt:
            return 130
    try:
        if args.command == "limit":
            if args.clear == (args.amps is not None):
                print("evsectl: give either a limit in amperes or --clear", file=sys.stderr)
                return 2
            request(args.socket, {"cmd": "limit", "connector": args.connector,
                                  "amps": None if args.clear else args.amps})
            return 0
        if args.command == "status":
            result = request(args.socket, {"cmd": "status"})
            if args.json:
                print(json.dumps(contract_status(result)))
            else:
                _print_status(result)
            return 0
        if args.command == "schedule":
            answer = request(args.socket, {"cmd": "schedule", "connector": args.connector,
                                           "duration": args.duration, "unit": args.unit})
            if args.json:
                print(json.dumps(answer))
            else:
                _print_schedule(answer)
            return 0
        if args.command == "data-transfer":
            answer = request(args.socket, {"cmd": "datatransfer", "vendor_id": args.vendor_id,
                                           "message_id": args.message_id, "data": args.data}, timeout=90.0)
            print(json.dumps(answer))
            return 0
        req: dict[str, Any] = {"cmd": "sim", "action": args.action}
        if args.action == "swipe":
            req["id_tag"] = args.id_tag
        else:
            req["connector"] = args.connector
        if args.action == "plug":
            req.update(max_current=args.max_current, phases=args.phases)
        elif args.action == "fault":
            req["kind"] = args.kind
        request(args.socket, req)
        return 0
    except ControlError as exc:
        print(f"evsectl: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
