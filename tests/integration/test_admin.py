"""virlogd-admin against a real AdminServer: the real command, a real socket, a real uid check.

The server runs in a thread of the test process around a hand-written fake daemon
(``FakeControl``) that uses the real parsers, so refusals carry libvirt's real wording. The
client is the installed ``virlogd-admin`` command, started as a process for every call.
"""
from __future__ import annotations

import json
import os
import pwd
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import List, Optional

import pytest

from virlogd.daemon.admin import MAX_REQUEST, AdminServer
from virlogd.core.errors import ConfigError
from virlogd.daemon.loop import EventLoop
from virlogd.daemon.sockets import bind_unix
from virlogd.core.priority import parse_priority
from virlogd.core.specs import format_filters, format_outputs, parse_filters, parse_outputs

from daemonproc import as_other_user_cmd, other_user

VENV_BIN = Path(sys.executable).parent
ADMIN_SCRIPT = VENV_BIN / "virlogd-admin"
ADMIN = [str(ADMIN_SCRIPT)] if ADMIN_SCRIPT.exists() else \
    [sys.executable, "-m", "virlogd.cli.admin"]
TEST_USER = "virlogd-test"

STATS = {
    "received": 1234,
    "own": 7,
    "dropped": {"client-overflow": 3, "oversized": 1},
    "outputs": [
        {"output": "1:file:/var/log/x.log", "written": 1200, "failed": 0, "dropped": 0,
         "last_error": None},
        {"output": "1:remote:tcp://127.0.0.1:514", "written": 10, "failed": 2, "dropped": 5,
         "last_error": "Connection refused"},
    ],
    "clients": 2,
    "buffer": {"used": 16384, "size": 65536, "skipped": 0},
}


class FakeControl:
    """The daemon's admin interface, with the real parsers and all-or-nothing sets."""

    DEFAULT_OUTPUT = "3:stderr"

    def __init__(self) -> None:
        self.filters = parse_filters("3:remote 4:event")[0]
        self.outputs = parse_outputs("1:file:/var/log/x.log")[0]
        self.level = 3
        self.changes: List[tuple] = []
        self.dumps = 0

    def get_filters(self) -> str:
        return format_filters(self.filters)

    def get_outputs(self) -> str:
        return format_outputs(self.outputs) or self.DEFAULT_OUTPUT

    def get_level(self) -> int:
        return self.level

    def set_filters(self, text: str, who: str) -> None:
        specs, error = parse_filters(text)
        if error is not None:
            raise ConfigError(error.in_string())
        self.filters = specs
        self.changes.append(("filters", text, who))

    def set_outputs(self, text: str, who: str) -> None:
        specs, error = parse_outputs(text)
        if error is not None:
            raise ConfigError(error.in_string())
        self.outputs = specs
        self.changes.append(("outputs", text, who))

    def set_level(self, text: str, who: str) -> None:
        try:
            self.level = parse_priority(text)
        except ValueError as err:
            raise ConfigError(str(err)) from None
        self.changes.append(("level", text, who))

    def dump(self) -> int:
        self.dumps += 1
        return 42

    def stats(self) -> dict:
        return json.loads(json.dumps(STATS))


class Served:
    """An AdminServer on its own EventLoop thread."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.control = FakeControl()
        self.sock = bind_unix(path, socket.SOCK_STREAM, mode=0o600)
        self.loop = EventLoop()
        self.server = AdminServer(self.loop, self.control, self.sock)
        self.thread = threading.Thread(target=self.loop.run, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.loop.stop()
        self.thread.join(10)
        self.server.close()
        self.sock.close()
        self.loop.close()
        if os.path.exists(self.path):
            os.unlink(self.path)


@pytest.fixture
def sockdir():
    # not pytest's tmp_path: its parents are 0700, and one test needs another uid to get in
    path = tempfile.mkdtemp(prefix="virlogd-admin-test-")
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def served(sockdir):
    s = Served(os.path.join(sockdir, "virlogd-admin-sock"))
    yield s
    s.stop()


def admin(path: str, *args: str, user: Optional[pwd.struct_passwd] = None):
    """Run virlogd-admin -S PATH ARGS... (as *user* if given); return (returncode, stdout,
    stderr, pid)."""
    cmd = [*ADMIN, "-S", path, *args]
    if user is not None:
        cmd = as_other_user_cmd(user, cmd)
    proc = subprocess.Popen(cmd,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode, out, err, proc.pid


def raw(path: str, payload: bytes) -> List[dict]:
    """Send *payload* on one connection and return every answer line until EOF or 1 s idle."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(10)
        sock.connect(path)
        sock.sendall(payload)
        sock.shutdown(socket.SHUT_WR)
        data = b""
        while True:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:    # closed with our excess unread: answer is in
                break
            if not chunk:
                break
            data += chunk
    return [json.loads(line) for line in data.splitlines()]


# -- get, set, refuse ---------------------------------------------------------------------
class TestFilters:
    def test_get_prints_the_filters_like_virt_admin(self, served):
        """With no argument, the running filters are printed after ' Logging filters: '."""
        rc, out, err, _ = admin(served.path, "daemon-log-filters")
        assert (rc, out, err) == (0, " Logging filters: 3:remote 4:event\n", "")

    def test_set_replaces_the_filters_silently_and_names_who_did_it(self, served):
        """A valid set prints nothing, exits 0, and the daemon sees the caller's uid and pid."""
        rc, out, err, pid = admin(served.path, "daemon-log-filters", "1:qemu 2:+util")
        assert (rc, out, err) == (0, "", "")
        assert served.control.get_filters() == "1:qemu 2:+util"
        assert served.control.changes == [
            ("filters", "1:qemu 2:+util", f"uid {os.geteuid()} pid {pid}")]
        rc, out, _, _ = admin(served.path, "daemon-log-filters")
        assert out == " Logging filters: 1:qemu 2:+util\n"

    def test_a_bad_filter_is_refused_with_libvirts_reason_and_nothing_changes(self, served):
        """A bad token refuses the whole string: exit 1, the reason, the old filters kept."""
        rc, out, err, _ = admin(served.path, "daemon-log-filters", "1:good 9:foo")
        assert (rc, out) == (1, "")
        assert err == ("virlogd-admin: error: Invalid priority '9' for filter '9:foo' in "
                       "\"1:good 9:foo\"\n")
        assert served.control.get_filters() == "3:remote 4:event"
        assert served.control.changes == []

    def test_an_empty_string_clears_the_filters(self, served):
        """Setting '' removes every filter, and the get shows an empty list."""
        assert admin(served.path, "daemon-log-filters", "")[:3] == (0, "", "")
        assert admin(served.path, "daemon-log-filters")[1] == " Logging filters: \n"


class TestOutputs:
    def test_get_prints_the_outputs_like_virt_admin(self, served):
        """With no argument, the running outputs are printed after ' Logging outputs: '."""
        rc, out, err, _ = admin(served.path, "daemon-log-outputs")
        assert (rc, out, err) == (0, " Logging outputs: 1:file:/var/log/x.log\n", "")

    def test_set_replaces_the_outputs(self, served):
        """A valid output string replaces the outputs and prints nothing."""
        rc, out, err, _ = admin(served.path, "daemon-log-outputs", "2:stderr 4:syslog:myapp")
        assert (rc, out, err) == (0, "", "")
        assert admin(served.path, "daemon-log-outputs")[1] == \
            " Logging outputs: 2:stderr 4:syslog:myapp\n"

    def test_a_bad_destination_is_refused_and_nothing_changes(self, served):
        """An unknown destination refuses the whole string with libvirt's wording."""
        rc, out, err, _ = admin(served.path, "daemon-log-outputs", "1:stderr 1:nowhere")
        assert (rc, out) == (1, "")
        assert err == ("virlogd-admin: error: Invalid destination 'nowhere' for output "
                       "'1:nowhere' in \"1:stderr 1:nowhere\"\n")
        assert served.control.get_outputs() == "1:file:/var/log/x.log"

    def test_an_empty_string_restores_the_default_output(self, served):
        """Setting '' drops the configured outputs; the get then shows the default one."""
        assert admin(served.path, "daemon-log-outputs", "")[:3] == (0, "", "")
        assert admin(served.path, "daemon-log-outputs")[1] == " Logging outputs: 3:stderr\n"


class TestLevel:
    def test_get_prints_the_level_like_virt_admin(self, served):
        """With no argument, the default priority is printed after ' Logging level: '."""
        assert admin(served.path, "daemon-log-level")[:3] == (0, " Logging level: 3\n", "")

    def test_set_takes_a_number_or_a_name(self, served):
        """'debug' and '4' are both accepted, and the get shows the number."""
        assert admin(served.path, "daemon-log-level", "debug")[:3] == (0, "", "")
        assert admin(served.path, "daemon-log-level")[1] == " Logging level: 1\n"
        assert admin(served.path, "daemon-log-level", "4")[:3] == (0, "", "")
        assert served.control.level == 4

    def test_a_bad_level_is_refused_and_nothing_changes(self, served):
        """A level outside 1-4 and the names is refused with the reason; the level stays."""
        rc, out, err, _ = admin(served.path, "daemon-log-level", "9")
        assert (rc, out) == (1, "")
        assert err == ("virlogd-admin: error: invalid priority '9' (expected 1-4 or debug, "
                       "info, warning, error)\n")
        assert served.control.level == 3


# -- dump and stats -----------------------------------------------------------------------
def test_dump_asks_the_daemon_to_dump_and_reports_the_count(served):
    """'dump' runs the daemon's dump once and says how many records it wrote."""
    rc, out, err, _ = admin(served.path, "dump")
    assert (rc, out, err) == (0, " Dumped 42 records from the buffer\n", "")
    assert served.control.dumps == 1


def test_stats_prints_a_readable_table(served):
    """'stats' shows received, dropped by reason, clients, buffer fill and each output."""
    rc, out, err, _ = admin(served.path, "stats")
    assert (rc, err) == (0, "")
    assert out == (
        " Records received:     1234\n"
        " Daemon's own records: 7\n"
        " Records dropped:      4\n"
        "   client-overflow:    3\n"
        "   oversized:          1\n"
        " Clients connected:    2\n"
        " Buffer:               16384 of 65536 bytes used (25.0%)\n"
        "\n"
        " Output                        Written  Failed  Dropped  Last error\n"
        " 1:file:/var/log/x.log            1200       0        0  -\n"
        " 1:remote:tcp://127.0.0.1:514       10       2        5  Connection refused\n")


def test_stats_json_prints_the_daemons_numbers_as_json(served):
    """'stats --json' prints exactly what the daemon reported, as JSON."""
    rc, out, err, _ = admin(served.path, "stats", "--json")
    assert (rc, err) == (0, "")
    assert json.loads(out) == STATS


# -- reaching the daemon, and who may ---------------------------------------------------
def test_an_unreachable_daemon_is_a_clear_error(sockdir):
    """No socket: exit 1 with the path, the system's reason and a hint, no traceback."""
    path = os.path.join(sockdir, "nothing-here")
    rc, out, err, _ = admin(path, "daemon-log-level")
    assert (rc, out) == (1, "")
    assert err == (f"virlogd-admin: error: cannot connect to virlogd at {path}: "
                   f"No such file or directory (is virlogd running?)\n")


def test_the_admin_socket_is_created_private(served):
    """The admin socket file is mode 0600 (owner only) and is a socket."""
    info = os.stat(served.path)
    assert stat.S_ISSOCK(info.st_mode)
    assert stat.S_IMODE(info.st_mode) == 0o600


def test_a_stale_socket_file_is_replaced(sockdir):
    """A socket file nobody answers on (a killed daemon's) is replaced at bind."""
    path = os.path.join(sockdir, "stale-sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as old:
        old.bind(path)
    s = Served(path)
    try:
        assert admin(path, "daemon-log-level")[:3] == (0, " Logging level: 3\n", "")
    finally:
        s.stop()


def test_a_live_daemons_socket_is_not_taken_over(served):
    """Binding where a daemon answers fails with a clear message and leaves it serving."""
    with pytest.raises(OSError) as caught:
        bind_unix(served.path, socket.SOCK_STREAM, mode=0o600)
    assert str(caught.value) == f"another virlogd is already listening on {served.path}"
    assert admin(served.path, "daemon-log-level")[:3] == (0, " Logging level: 3\n", "")


def _test_user():
    if os.geteuid() != 0 or not shutil.which("setpriv"):
        pytest.skip("needs root and setpriv to run a client as another uid")
    return other_user()


def test_another_uid_is_refused_by_the_daemon_itself(served):
    """Even with the file opened to all, a client of another uid gets the daemon's refusal."""
    user = _test_user()
    os.chmod(served.path, 0o666)    # only so the connection reaches the daemon's own check
    rc, out, err, _ = admin(served.path, "daemon-log-filters", "1:everything",
                            user=user)
    assert (rc, out) == (1, "")
    assert err == (f"virlogd-admin: error: permission denied: uid {user.pw_uid} is not the "
                   f"daemon's uid 0\n")
    assert served.control.get_filters() == "3:remote 4:event"
    assert served.server.refused == 1
    # and the daemon is still serving its owner
    assert admin(served.path, "daemon-log-level")[:3] == (0, " Logging level: 3\n", "")


def test_another_uid_cannot_even_open_the_private_socket(served):
    """With the socket at 0600, another uid is stopped by the file mode, with a clear error."""
    user = _test_user()
    rc, out, err, _ = admin(served.path, "daemon-log-level", user=user)
    assert (rc, out) == (1, "")
    assert err == (f"virlogd-admin: error: cannot connect to virlogd at {served.path}: "
                   f"Permission denied (only the user virlogd runs as may use its admin "
                   f"socket)\n")


# -- the protocol holds up against bad requests -----------------------------------------
def test_malformed_json_gets_an_error_answer_and_the_connection_goes_on(served):
    """A line that is not JSON is answered with an error; the next line is still served."""
    answers = raw(served.path, b"{not json\n" + b'{"cmd": "daemon-log-level"}\n')
    assert answers[0]["ok"] is False
    assert answers[0]["error"].startswith("malformed request (not a JSON object on one line)")
    assert answers[1] == {"ok": True, "result": 3}


def test_an_unknown_command_is_named_in_the_error(served):
    """An unknown command is refused, naming it and the commands there are."""
    assert raw(served.path, b'{"cmd": "reboot", "args": []}\n') == [
        {"ok": False, "error": "unknown command 'reboot' (expected one of daemon-log-filters, "
                               "daemon-log-outputs, daemon-log-level, dump, stats, follow)"}]


def test_too_many_arguments_are_refused(served):
    """A set takes one string; two are refused without changing anything."""
    assert raw(served.path, b'{"cmd": "daemon-log-filters", "args": ["1:a", "2:b"]}\n') == [
        {"ok": False, "error": "'daemon-log-filters' takes at most one argument, got 2"}]
    assert served.control.changes == []


def test_an_oversized_request_is_refused_and_the_server_keeps_serving(served):
    """A line over 64 kB gets an error and is dropped; other clients are unaffected."""
    answers = raw(served.path, b"x" * (MAX_REQUEST + 10))
    assert answers == [{"ok": False, "error": "request too large (limit 65536 bytes per line)"}]
    assert admin(served.path, "daemon-log-level")[:3] == (0, " Logging level: 3\n", "")


def test_a_failing_command_is_an_error_answer_not_a_dead_daemon(served):
    """A bug inside a command becomes an error answer; the server keeps running."""
    def broken():
        raise RuntimeError("boom")
    served.control.stats = broken
    rc, out, err, _ = admin(served.path, "stats")
    assert (rc, out) == (1, "")
    assert err == "virlogd-admin: error: internal error in 'stats': RuntimeError: boom\n"
    assert admin(served.path, "dump")[0] == 0
