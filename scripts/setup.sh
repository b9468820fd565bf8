#!/bin/bash
# Installs everything virlogd needs on a Debian 12 machine and makes .venv; safe to re-run:
# each step is skipped when what it makes is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages: python3-venv (the venv), gcc/pkg-config/python3-dev/libsystemd-dev (the
# systemd-python build), rsyslog and systemd (the real syslog and journald the tests start),
# util-linux (unshare, setpriv), make (for those who type make run), logrotate, man-db and
# groff-base (man virlogd; the tests render the pages), sysvinit-utils (pidof), clang (the
# fuzz targets' compiled module, built with sanitizers; libclang-rt-dev has their ASan/UBSan runtimes).
PACKAGES="python3 python3-venv python3-dev gcc pkg-config libsystemd-dev make rsyslog rsyslog-gnutls systemd util-linux logrotate openssl man-db groff-base sysvinit-utils clang libclang-rt-dev libivykis0 libnet1 libpcre3 libwrap0 libjson-c5 libglib2.0-0 libcap2 libssl3"
missing=""
for p in $PACKAGES; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
    if [ "$(id -u)" != 0 ]; then
        echo "setup: missing Debian packages:$missing (run as root, or install them)" >&2
        exit 1
    fi
    echo "setup: installing$missing"
    export DEBIAN_FRONTEND=noninteractive
    # Another apt or dpkg may be running (unattended-upgrades on a new machine): wait for its
    # locks for up to 10 minutes instead of failing with "Could not get lock".
    # (apt-get update takes the package lists' lock, which that option does not cover: retry.)
    wait_lock=(-o DPkg::Lock::Timeout=600)
    for attempt in $(seq 60); do
        if err=$(apt-get "${wait_lock[@]}" update -qq 2>&1 >/dev/null); then
            break
        fi
        case "$err" in
            *"Could not get lock"*) [ "$attempt" -lt 60 ] || { echo "$err" >&2; exit 1; }
                                    echo "setup: waiting for another apt to finish" >&2
                                    sleep 10 ;;
            *) echo "$err" >&2; exit 1 ;;
        esac
    done
    apt-get "${wait_lock[@]}" install -y -qq --no-install-recommends $missing >/dev/null
fi

# Debian's own interpreter: the one the apt packages above were built for.
PY=/usr/bin/python3
[ -x "$PY" ] || PY=python3
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
stamp=.venv/.virlogd-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ setup.py -nt "$stamp" ]; then
    # wheel first: without it pip builds systemd-python (an sdist only) the deprecated way
    .venv/bin/python -m pip install -q --disable-pip-version-check wheel
    .venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test]'
    touch "$stamp"
fi

# The compiled speedups (setup.py; optional: without them the pure-Python code runs),
# rebuilt in place whenever a source, or a header, is newer than the built module.
rebuild=""
for src in virlogd/*.c; do
    built=$(ls "${src%.c}".cpython-*.so 2>/dev/null | head -n 1 || true)
    if [ -z "$built" ] || [ "$src" -nt "$built" ]; then
        rebuild=1
    fi
    for header in virlogd/*.h; do
        if [ -n "$built" ] && [ "$header" -nt "$built" ]; then
            rebuild=1
        fi
    done
done
if [ -n "$rebuild" ]; then
    PYTHONWARNINGS=ignore .venv/bin/python setup.py -q build_ext --inplace >/dev/null
fi

# syslog-ng for the RFC 5424 tests, unpacked beside rsyslog (the two packages conflict)
bash scripts/get-syslog-ng.sh
