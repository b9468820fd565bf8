"""The default client socket: a user's own daemon first, else the system's.

Clients given no socket (``virlog``, the library's ``x:virlogd``, ``VirlogdHandler``) use the
per-user socket when it exists, else the system socket ``/run/virlogd/virlogd-sock`` (0666,
like ``/dev/log``); an unreachable daemon's error names every path looked at.

The real test runs a system daemon on ``/run/virlogd/virlogd-sock`` inside a private mount
namespace (a tmpfs over ``/run`` that only the test's processes see) and logs to it as an
unprivileged user (``nobody``) with no daemon of its own.
"""
import os
import re
import subprocess
import sys
import textwrap

import pytest

from conftest import require_real
from daemonproc import VIRLOG, VIRLOGD, as_other_user_cmd
from virlogd.core import defaults
from virlogd.client.client import choose_socket, undelivered_line

SYSTEM = "/run/virlogd/virlogd-sock"


def test_the_candidates_are_the_users_socket_then_the_systems():
    env = {"XDG_RUNTIME_DIR": "/run/user/1000"}
    assert defaults.client_socket_candidates(env, uid=1000) == [
        "/run/user/1000/virlogd/virlogd-sock", SYSTEM]
    assert defaults.client_socket_candidates({}, uid=1000) == [
        "/tmp/virlogd-1000/virlogd-sock", SYSTEM]
    assert defaults.client_socket_candidates(env, uid=0) == [SYSTEM]   # root's is the system's


def test_the_first_socket_that_exists_is_used_else_the_last(tmp_path):
    own, system = str(tmp_path / "own"), str(tmp_path / "system")
    assert choose_socket([own, system]) == (system, [own])
    open(system, "w").close()
    assert choose_socket([own, system]) == (system, [own])
    open(own, "w").close()
    assert choose_socket([own, system]) == (own, [])
    assert undelivered_line(2, system, "Connection refused", [own]) == (
        f"virlogd: warning: 2 records were not delivered to virlogd at {system}: "
        f"Connection refused; no socket at {own} either")


def test_a_socket_in_a_directory_others_can_write_to_is_passed_over(tmp_path):
    # /tmp/virlogd-UID can be created by anyone first: a socket planted there must not
    # collect the user's records (the daemon refuses such a directory; clients skip it)
    shared = tmp_path / "shared"
    shared.mkdir()
    own, system = str(shared / "own"), str(tmp_path / "system")
    open(own, "w").close()
    open(system, "w").close()
    assert choose_socket([own, system]) == (own, [])
    shared.chmod(0o777)
    assert choose_socket([own, system]) == (system, [own])


SCRIPT = r"""
set -e
mount --make-rprivate /
mount -t tmpfs -o mode=0755 tmpfs /run
mkdir -p /run/virlogd
set +e
echo "--- no daemon"
timeout 30 {nobody_virlog} "before the daemon" 2>&1; echo "exit $?"
{virlogd} --socket /run/virlogd/virlogd-sock --admin-socket /run/virlogd/virlogd-admin-sock \
    --log-outputs "1:file:{log}" --log-level 1 -f /dev/null </dev/null >/dev/null \
    2>>{log}.stderr &
daemon=$!
trap 'kill $daemon 2>/dev/null; wait $daemon' EXIT
for i in $(seq 200); do [ -S /run/virlogd/virlogd-sock ] && break; sleep 0.05; done
echo "--- virlog"
timeout 30 {nobody_virlog} "virlog from nobody" 2>&1; echo "exit $?"
echo "--- handler"
timeout 30 {nobody_python} -c "$HANDLER" 2>&1; echo "exit $?"
echo "--- library"
LIBVIRT_LOG_OUTPUTS=1:virlogd timeout 30 {nobody_python} -c "$LIBRARY" 2>&1; echo "exit $?"
sleep 0.5
"""


def test_an_unprivileged_program_reaches_the_system_daemon(tmp_path):
    if os.geteuid() != 0:
        require_real("needs root: a private /run and setpriv to another user")
    log = tmp_path / "out.log"
    own = "/nonexistent-runtime-dir"                 # nobody's XDG_RUNTIME_DIR: no daemon
    env = dict(os.environ, XDG_RUNTIME_DIR=own,
               HANDLER=textwrap.dedent("""
                   import logging, os, virlogd
                   logging.basicConfig(handlers=[virlogd.VirlogdHandler()])
                   logging.warning("handler from %d", os.getuid())
                   os._exit(0)
               """),
               LIBRARY=textwrap.dedent("""
                   import os, virlogd
                   virlogd.getLogger("lib").warning("library from %d", os.getuid())
               """))
    env = {k: v for k, v in env.items() if not k.startswith(("LIBVIRT_", "NOTIFY_SOCKET"))}
    script = SCRIPT.format(
        log=log, virlogd=VIRLOGD,
        nobody_virlog=" ".join(as_other_user_cmd(65534, [VIRLOG])),
        nobody_python=" ".join(as_other_user_cmd(65534, [sys.executable])))
    proc = subprocess.run(["unshare", "-m", "bash", "-c", script], env=env, cwd="/",
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert out.split("--- virlog\n")[0] == (
        "--- no daemon\n"
        f"virlog: error: cannot connect to virlogd at {SYSTEM}: No such file or directory; "
        f"no socket at {own}/virlogd/virlogd-sock either (is virlogd running?)\n"
        "exit 1\n")
    assert out.split("--- virlog\n")[1] == \
        "exit 0\n--- handler\nexit 0\n--- library\nexit 0\n"
    text = log.read_text()
    assert re.search(r": warning : .*handler from 65534$", text, re.M), text
    assert re.search(r": info : .*virlog from nobody$", text, re.M), text
    assert re.search(r": warning : .*library from 65534$", text, re.M), text
