#!/bin/sh
# Install everything the suite needs on a fresh Debian machine (apt + pip), then run the whole suite:
# lint, import contracts, and pytest inside a loopback-only network namespace (no packet can leave).
# Usage: scripts/test-all.sh [pytest args...]     Set MEDSTAGE_SKIP_INSTALL=1 to skip the install step.
set -eu
cd "$(dirname "$0")/.."

SUDO=""
[ "$(id -u)" = 0 ] || SUDO="sudo"

if [ "${MEDSTAGE_SKIP_INSTALL:-0}" != 1 ]; then
    $SUDO apt-get update -q
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends \
        chromium redis-server ffmpeg iproute2 util-linux coturn nftables
    python3 -m pip install -q -e '.[test]'
fi

python3 -m ruff check server media rooms recording tests bench
lint-imports
python3 -m mypy rooms media server

# pytest in a private network namespace with loopback only (see ../shared/browser.md).
run_in_netns() {
    inner='ip link set lo up && exec "$@"'
    if [ "$(id -u)" = 0 ] && unshare --net true 2>/dev/null; then
        exec unshare --net sh -c "$inner" sh "$@"
    elif unshare --user --map-root-user --net true 2>/dev/null; then
        exec unshare --user --map-root-user --net sh -c "$inner" sh "$@"
    else
        echo "WARNING: cannot create a network namespace; running on the host network (tests bind 127.0.0.1 only)" >&2
        exec "$@"
    fi
}
# With no arguments: the tests without a browser spread over every core (pytest-xdist), then the
# Chromium ones alone (their media timing is the machine's: two browsers at once would measure each
# other). With arguments: one plain pytest run.
if [ "$#" -eq 0 ]; then
    run_in_netns sh -c 'python3 -m pytest -q -n auto -m "not e2e"; a=$?
        python3 -m pytest -q -m e2e; b=$?
        [ "$a" -eq 0 ] && [ "$b" -eq 0 ]'
else
    run_in_netns python3 -m pytest -q "$@"
fi
