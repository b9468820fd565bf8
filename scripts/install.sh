#!/bin/bash
# Installs virlogd as a system service from this checkout: the systemd units (ExecStart pointing
# at this checkout's .venv), /etc/virlogd.conf (kept if it exists), the logrotate file, the
# commands virlogd, virlog and virlogd-admin in /usr/local/bin (links to this checkout's .venv)
# and the man pages (scripts/manpages.py) in /usr/local/share/man.
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
install -d "$DESTDIR/usr/local/bin"
for cmd in virlogd virlog virlogd-admin; do
    ln -sfn "$(pwd)/.venv/bin/$cmd" "$DESTDIR/usr/local/bin/$cmd"
done
.venv/bin/python scripts/manpages.py "$DESTDIR/usr/local/share/man"
if [ -z "$DESTDIR" ] && command -v mandb >/dev/null; then
    mandb -q 2>/dev/null || true      # so that apropos and man -k know the new pages
fi
echo "installed; now: systemctl daemon-reload && systemctl enable --now virlogd.socket virlogd-admin.socket virlogd.service"
