"""`evsed`: the daemon's command line."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import subprocess
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

    from evsed.daemon import BackendUnavailable, Daemon, force_safe_state  # heavy imports only when running

    if args.safe_state:
        problems = force_safe_state(cfg)
        for problem in problems:
            print(f"evsed: safe state: {problem}", file=sys.stderr)
        if problems:
            return 1
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
        rc = asyncio.run(daemon.run())
    except RuntimeError as exc:  # e.g. another daemon on the control socket
        print(f"evsed: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    if daemon.reset_requested is not None:
        return reset(daemon.reset_requested, cfg.system.reset_command, daemon.reset_retries)
    return rc


def reset(kind: str, reset_command: tuple[str, ...] | None, retries: int) -> int:
    """After the daemon has stopped cleanly: a Hard reset may reboot the host; otherwise re-execute ourselves,
    which restarts the whole process with or without systemd (same PID, so systemd sees no failure)."""
    log = logging.getLogger("evsed")
    if kind == "Hard" and reset_command:
        log.info("hard reset: running %s", " ".join(reset_command))
        try:
            done = subprocess.run(list(reset_command), timeout=60, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            log.error("hard reset: %s failed (%s); restarting evsed instead", reset_command[0], exc)
        else:
            if done.returncode == 0:
                return 0
            log.error("hard reset: %s exited with %d; restarting evsed instead", reset_command[0], done.returncode)
    argv = [sys.executable, *sys.orig_argv[1:]]
    for attempt in range(retries + 1):
        log.info("%s reset: restarting evsed", kind.lower())
        logging.shutdown()
        try:
            os.execv(sys.executable, argv)
        except OSError as exc:  # ResetRetries: try again before giving up (systemd then restarts us)
            print(f"evsed: re-exec failed (attempt {attempt + 1}): {exc}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
