#!/bin/bash
# Usage (root): unshare -m ci/private-logging.sh CMD [ARGS...]
# Runs CMD with a private, real systemd-journald listening at the standard paths and a private
# writable /dev, so journald and /dev/log tests exercise the real thing while the host's /run,
# /dev and journal stay untouched (everything here is in this mount namespace only).
set -eu
BASE=$(mktemp -d /tmp/privlog.XXXXXX)
mount --make-rprivate /
mkdir -p /run/systemd /run/log
mount -t tmpfs -o mode=755 tmpfs /run/systemd      # only these two, so the rest of /run stays
mount -t tmpfs -o mode=755 tmpfs /run/log
mkdir -p /run/systemd/journal "$BASE/journal" /var/log/journal
mount --bind "$BASE/journal" /var/log/journal
# No kmsg (the host's kernel log is not ours), no rate limit (load tests), stored at once.
printf '[Journal]\nStorage=persistent\nReadKMsg=no\nRateLimitIntervalSec=0\nRateLimitBurst=0\n' > "$BASE/journald.conf"
mkdir -p /etc/systemd
[ -e /etc/systemd/journald.conf ] || touch /etc/systemd/journald.conf
mount --bind "$BASE/journald.conf" /etc/systemd/journald.conf
touch /run/systemd/journal/flushed
# A writable private /dev (overlay), keeping /dev/shm and /dev/pts as they are.
mkdir -p "$BASE/devup" "$BASE/devwork" "$BASE/hold/shm" "$BASE/hold/pts"
mount --bind /dev/shm "$BASE/hold/shm"; mount --bind /dev/pts "$BASE/hold/pts"
mount -t overlay overlay -o "lowerdir=/dev,upperdir=$BASE/devup,workdir=$BASE/devwork" /dev
mount --move "$BASE/hold/shm" /dev/shm; mount --move "$BASE/hold/pts" /dev/pts
rm -f /dev/log
ln -s /run/systemd/journal/dev-log /dev/log        # syslog(3) -> journald, until a test puts rsyslog there
/lib/systemd/systemd-journald & JPID=$!
for _ in $(seq 500); do [ -S /run/systemd/journal/socket ] && break; sleep 0.01; done
[ -S /run/systemd/journal/socket ] || { echo "private-logging: journald did not start" >&2; exit 1; }
export PRIVLOG_BASE="$BASE" PRIVLOG_JOURNALD_PID="$JPID"
set +e; "$@"; rc=$?
kill "$JPID" 2>/dev/null; wait "$JPID" 2>/dev/null
rm -rf "$BASE"
exit $rc
