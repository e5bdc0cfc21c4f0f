#!/usr/bin/env bash
# Chromium for the browser test (tests/test_ui.py): Debian's package at /usr/bin/chromium, which
# Playwright (the `test` extra) drives; nothing downloads a browser of its own. Idempotent: does
# nothing when Chromium is already there. A failed install only warns: the browser test then
# skips, saying why, and the rest of the suite still runs.
set -euo pipefail

CHROMIUM=/usr/bin/chromium
if [ -x "$CHROMIUM" ]; then
    echo "browser: $("$CHROMIUM" --version 2>/dev/null || echo "$CHROMIUM")"
    exit 0
fi

fail() {
    echo "browser: $1" >&2
    echo "browser: tests/test_ui.py will skip its browser test" >&2
    exit 0
}

command -v apt-get >/dev/null || fail "no apt-get here; install Chromium at $CHROMIUM by hand"
SUDO=""
if [ "$(id -u)" != 0 ]; then
    command -v sudo >/dev/null || fail "installing Chromium needs root (or sudo)"
    SUDO="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq || fail "apt-get update failed"
$SUDO apt-get install -y -qq --no-install-recommends chromium fonts-liberation >/dev/null || fail "apt-get install chromium failed"
[ -x "$CHROMIUM" ] || fail "chromium installed, but not at $CHROMIUM"
echo "browser: $("$CHROMIUM" --version 2>/dev/null || echo "$CHROMIUM")"
