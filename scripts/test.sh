#!/bin/bash
# The type check (mypy), then the whole test suite. As root the suite runs inside a private
# mount namespace where ci/private-logging.sh starts a real systemd-journald (and tests start a
# real rsyslog on a private /dev/log); nothing on the host changes. Arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# Types first (pyproject.toml's [tool.mypy]: strict on the core modules): a type error stops
# the run before the tests, with mypy's own report above.
if ! .venv/bin/python -m mypy; then
    echo "test: mypy found type errors (listed above); the tests did not run" >&2
    exit 1
fi
if [ "$(id -u)" = 0 ] && command -v unshare >/dev/null; then
    exec unshare -m bash ci/private-logging.sh .venv/bin/python -m pytest "$@"
fi
echo "test: not root: journald and /dev/log tests cannot run here" >&2
exec .venv/bin/python -m pytest "$@"
