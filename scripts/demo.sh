#!/usr/bin/env bash
# The README's first command: install evsed into ./.venv and run the demo
# (dev central system + daemon on the simulated board + a scripted EV session).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
    || { echo "evsed needs Python 3.11 or newer (found $(python3 --version))" >&2; exit 1; }
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e .
exec .venv/bin/python -m evsed.demo "$@"
