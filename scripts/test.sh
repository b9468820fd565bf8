#!/bin/bash
# The whole test suite. As root it runs inside a private mount namespace where
# ci/private-logging.sh starts a real systemd-journald (and tests start a real rsyslog on a
# private /dev/log); nothing on the host changes. Arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
if [ "$(id -u)" = 0 ] && command -v unshare >/dev/null; then
    exec unshare -m bash ci/private-logging.sh .venv/bin/python -m pytest "$@"
fi
echo "test: not root: journald and /dev/log tests cannot run here" >&2
exec .venv/bin/python -m pytest "$@"
