"""``evsed-devcsms``: run the development central system in the foreground and print its timeline."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys

from evsed.devcsms.server import DevCSMS, Event, format_event, format_transaction


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="evsed-devcsms",
        description="Development OCPP 1.6J central system for bench-testing charge points. "
        "Charge points connect to ws://HOST:PORT/PATH/<chargePointId> with subprotocol ocpp1.6.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    parser.add_argument("--port", type=int, default=9000, help="TCP port, 0 = any (default: %(default)s)")
    parser.add_argument("--path", default="/ocpp", help="OCPP-J endpoint path (default: %(default)s)")
    parser.add_argument(
        "--accept-tags",
        metavar="A,B",
        help="comma-separated idTags to accept; all others get Invalid (default: accept every idTag)",
    )
    parser.add_argument(
        "--heartbeat-interval",
        type=int,
        default=60,
        metavar="S",
        help="interval returned in BootNotification.conf (default: %(default)s)",
    )
    parser.add_argument(
        "--boot-status",
        choices=["Accepted", "Pending", "Rejected"],
        default="Accepted",
        help="registration status returned to BootNotification (default: %(default)s)",
    )
    return parser.parse_args(argv)


def _print_event(ev: Event) -> None:
    print(format_event(ev), flush=True)


async def _run(args: argparse.Namespace) -> None:
    tags = None
    if args.accept_tags is not None:
        tags = {t.strip() for t in args.accept_tags.split(",") if t.strip()}
    csms = DevCSMS(
        host=args.host,
        port=args.port,
        path=args.path,
        accept_tags=tags,
        heartbeat_interval=args.heartbeat_interval,
        boot_status=args.boot_status,
        on_event=_print_event,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await csms.start()
    accepting = "every idTag" if tags is None else ", ".join(sorted(tags)) or "no idTags"
    print(
        f"evsed-devcsms listening on {csms.url}/<chargePointId> (subprotocol ocpp1.6); "
        f"boot={csms.boot_status}, accepting {accepting}. Ctrl-C to stop.",
        flush=True,
    )
    try:
        await stop.wait()
    finally:
        print("stopping…", flush=True)
        await csms.stop()
        if csms.transactions:
            print("transactions:", flush=True)
            for tx in csms.transactions.values():
                print("  " + format_transaction(tx), flush=True)


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    try:
        asyncio.run(_run(args))
    except OSError as exc:
        # Typically "address already in use": say so plainly instead of a traceback.
        print(f"evsed-devcsms: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # Ctrl-C before the signal handler was installed
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
