#!/bin/bash
# syslog-ng for the tests (tests/real/test_syslog_ng.py), beside rsyslog. Debian's
# syslog-ng-core and rsyslog conflict (both provide system-log-daemon: installing one removes
# the other), so syslog-ng-core is not installed: its files are unpacked under
# .venv/syslog-ng, and the test runs .venv/syslog-ng/usr/sbin/syslog-ng with its own
# library and module paths. The libraries it links are ordinary packages (setup.sh's
# PACKAGES). Safe to re-run; nothing to do when a syslog-ng is already there.
set -euo pipefail
cd "$(dirname "$0")/.."
DEST=.venv/syslog-ng
if [ -x "$DEST/usr/sbin/syslog-ng" ] || command -v syslog-ng >/dev/null 2>&1; then
    exit 0
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# root downloads it itself (the _apt sandbox user cannot write to a private temp dir)
(cd "$tmp" && apt-get -o APT::Sandbox::User=root download -qq syslog-ng-core)
rm -rf "$DEST.new"
dpkg-deb -x "$tmp"/syslog-ng-core_*.deb "$DEST.new"
mv "$DEST.new" "$DEST"
