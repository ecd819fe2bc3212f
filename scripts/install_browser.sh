#!/bin/sh
# Installs Debian's Chromium for the browser test of the /ui page (make test runs this).
# Where it cannot be installed (no apt-get, no root), it says so and the test skips itself.
set -u
[ -x /usr/bin/chromium ] && exit 0
skip() { echo "chromium not installed ($1): the browser test will be skipped"; exit 0; }
command -v apt-get >/dev/null 2>&1 || skip "no apt-get"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    sudo -n true 2>/dev/null || skip "needs root or passwordless sudo"
    SUDO="sudo -n"
fi
echo "installing Debian's chromium for the browser test..."
install() { $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium >/dev/null 2>&1; }
install || { $SUDO apt-get update -q >/dev/null 2>&1 && install; } || skip "apt-get failed"
