"""`evsed`: the daemon's command line."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys

from evsed import __version__
from evsed.config import ConfigError, load

EXIT_CONFIG = 2


def setup_logging(level: str) -> None:
    # Under systemd (JOURNAL_STREAM set) journald adds the timestamp; in a terminal we add our own.
    fmt = "%(levelname)s %(name)s: %(message)s"
    if not os.environ.get("JOURNAL_STREAM"):
        fmt = "%(asctime)s.%(msecs)03d " + fmt
    logging.basicConfig(level=level.upper(), format=fmt, datefmt="%H:%M:%S", stream=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="evsed", description="evsed charge-point controller daemon")
    parser.add_argument("--config", required=True, metavar="FILE", help="TOML configuration file")
    parser.add_argument("--check-config", action="store_true", help="validate the configuration and exit")
    parser.add_argument("--safe-state", action="store_true",
                        help="put the hardware in its safe state (contactors open, PWM off) and exit")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    parser.add_argument("--version", action="version", version=f"evsed {__version__}")
    args = parser.parse_args(argv)
    setup_logging(args.log_level)
    try:
        cfg = load(args.config)
    except ConfigError as exc:
        print(f"evsed: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    if args.check_config:
        print(f"{args.config}: OK")
        return 0

    from evsed.daemon import BackendUnavailable, Daemon, build_board  # heavy imports only when running

    if args.safe_state:
        try:
            board = build_board(cfg)
        except BackendUnavailable as exc:
            print(f"evsed: {exc}", file=sys.stderr)
            return EXIT_CONFIG
        board.safe_state()
        logging.getLogger("evsed").info("hardware in safe state")
        return 0
    try:
        daemon = Daemon(cfg)
    except BackendUnavailable as exc:
        print(f"evsed: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except OSError as exc:
        print(f"evsed: {cfg.path}: storage.dir: cannot open the database: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_CONFIG
    try:
        return asyncio.run(daemon.run())
    except RuntimeError as exc:  # e.g. another daemon on the control socket
        print(f"evsed: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
