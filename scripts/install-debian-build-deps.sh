#!/bin/sh
# Install what `dpkg-buildpackage -us -uc -b` needs to build the evsed .deb.
#
# The Build-Depends are read from debian/control by `apt-get build-dep <dir>`,
# so this script never needs to change when debian/control does.
#
# Usage: scripts/install-debian-build-deps.sh [--if-possible] [--update]
#   --if-possible  exit 0 with a message (instead of failing) when not root,
#                  not on Debian/apt, or apt fails. For CI/test setup that
#                  should go on without the package build (the packaging test
#                  then skips itself, saying why).
#   --update       always run apt-get update first (otherwise only when the
#                  package lists are empty or the first install attempt fails).
set -eu

if_possible=0
update=0
for arg in "$@"; do
    case "$arg" in
        --if-possible) if_possible=1 ;;
        --update) update=1 ;;
        -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
        *) echo "$0: unknown argument: $arg" >&2; exit 2 ;;
    esac
done

give_up() {
    if [ "$if_possible" = 1 ]; then
        echo "install-debian-build-deps: skipped: $1" >&2
        exit 0
    fi
    echo "install-debian-build-deps: error: $1" >&2
    exit 1
}

repo_root=$(CDPATH='' cd -- "$(dirname -- "$0")/.." && pwd)

[ -f "$repo_root/debian/control" ] || give_up "no debian/control in $repo_root"
[ -r /etc/debian_version ] && command -v apt-get >/dev/null 2>&1 \
    || give_up "not a Debian/apt system"
[ "$(id -u)" = 0 ] || give_up "must run as root (try: sudo $0)"

export DEBIAN_FRONTEND=noninteractive
# The system tools must win over pyenv shims / virtualenvs for apt hooks too.
export PATH=/usr/sbin:/usr/bin:/sbin:/bin

lists_empty() {
    ! ls /var/lib/apt/lists/ 2>/dev/null | grep -q '_Packages'
}

install_deps() {
    # dpkg-dev provides dpkg-buildpackage/dpkg-checkbuilddeps; make runs
    # debian/rules. Neither is listed in Build-Depends (build-essential is
    # implied), and Architecture: all needs no compiler.
    apt-get install -y --no-install-recommends dpkg-dev make \
        && apt-get build-dep -y --no-install-recommends "$repo_root"
}

if [ "$update" = 1 ] || lists_empty; then
    apt-get update || give_up "apt-get update failed"
fi

if ! install_deps; then
    echo "install-debian-build-deps: retrying after apt-get update" >&2
    apt-get update || give_up "apt-get update failed"
    install_deps || give_up "apt-get could not install the build dependencies"
fi

cd "$repo_root"
dpkg-checkbuilddeps || give_up "build dependencies still unmet after install"
echo "install-debian-build-deps: ok, build with:"
echo "  PATH=/usr/sbin:/usr/bin:/sbin:/bin dpkg-buildpackage -us -uc -b"
