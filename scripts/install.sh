#!/bin/bash
# Installs virlogd as a system service from this checkout: the systemd units (ExecStart pointing
# at this checkout's .venv), /etc/virlogd.conf (kept if it exists) and the logrotate file.
# DESTDIR=/some/root installs into that tree instead (used by the tests and for packaging).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
DESTDIR="${DESTDIR:-}"
BIN="$(pwd)/.venv/bin/virlogd"
install -d "$DESTDIR/etc/systemd/system" "$DESTDIR/etc/logrotate.d"
for unit in virlogd.service virlogd.socket virlogd-admin.socket; do
    sed "s#^ExecStart=/usr/local/bin/virlogd#ExecStart=$BIN#" "systemd/$unit" \
        > "$DESTDIR/etc/systemd/system/$unit"
    chmod 0644 "$DESTDIR/etc/systemd/system/$unit"
done
[ -e "$DESTDIR/etc/virlogd.conf" ] || install -m 0644 etc/virlogd.conf "$DESTDIR/etc/virlogd.conf"
[ ! -e etc/logrotate.d/virlogd ] || install -m 0644 etc/logrotate.d/virlogd "$DESTDIR/etc/logrotate.d/virlogd"
echo "installed; now: systemctl daemon-reload && systemctl enable --now virlogd.socket virlogd-admin.socket virlogd.service"
