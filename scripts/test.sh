#!/usr/bin/env bash
# The README's second command (and exactly what .ci/run calls): install what the tests need, then run
# the linters, the type checker and the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
    || { echo "evsed needs Python 3.11 or newer (found $(python3 --version))" >&2; exit 1; }
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e '.[test]'
# The strict central system of the end-to-end tests is npm ocpp-rpc (validates every frame).
command -v npm >/dev/null || { echo "npm (Node.js >= 18) is needed for the end-to-end tests" >&2; exit 1; }
(cd tests/e2e/csms && npm ci --silent --no-audit --no-fund)
# Debian build tools for the packaging test, when we may install them (root on Debian); else it skips.
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null && [ -x scripts/install-debian-build-deps.sh ]; then
    scripts/install-debian-build-deps.sh || echo "warning: Debian build deps not installed; packaging test will skip" >&2
fi
.venv/bin/ruff check evsed tests bench
.venv/bin/mypy
exec .venv/bin/pytest -q -p no:cacheprovider "$@"
