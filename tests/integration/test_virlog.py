"""``virlog``, the shell client: flags, stdin mode, confirmed delivery, clear failures."""
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from serve import InProcessServer

VIRLOG = str(Path(sys.executable).parent / "virlog")
USAGE = ("usage: virlog [-h] [-p PRIORITY] [-s SOURCE] [-S SOCKET] [--field NAME=VALUE]\n"
         "              [-V]\n"
         "              [MESSAGE ...]\n")


@pytest.fixture
def server(tmp_path):
    srv = InProcessServer(str(tmp_path / "sock"))
    yield srv
    srv.stop()


def virlog(*args, socket=None, input=None):
    """Run virlog; return (returncode, stdout, stderr, pid)."""
    cmd = [VIRLOG] + (["-S", socket] if socket else []) + list(args)
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    try:
        out, err = proc.communicate(input, timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode, out.decode(), err.decode(errors="replace"), proc.pid


def test_a_message_is_one_record_delivered_before_virlog_exits(server):
    """Exit 0 means delivered: the record is routed by the time virlog returns."""
    code, out, err, pid = virlog("-p", "warning", "-s", "backup", "disk", "almost", "full",
                                 socket=server.path)
    assert (code, out, err) == (0, "", "")
    record, = server.records("backup")          # no waiting: virlog confirmed delivery
    assert (record.priority, record.message, record.pid) == (3, "disk almost full", pid)
    assert (record.uid, record.gid) == (os.getuid(), os.getgid())


def test_the_source_defaults_to_virlog_and_the_priority_to_info(server):
    """Like logger(1): with no flags, source 'virlog' at info."""
    assert virlog("plain", socket=server.path)[0] == 0
    record, = server.records("virlog")
    assert (record.priority, record.message, record.func) == (2, "plain", None)


@pytest.mark.parametrize("given,level", [("1", 1), ("debug", 1), ("2", 2), ("info", 2),
                                         ("3", 3), ("warning", 3), ("4", 4), ("error", 4)])
def test_priority_takes_numbers_and_names(server, given, level):
    """-p accepts 1-4 and debug/info/warning/error."""
    assert virlog("-p", given, "m", socket=server.path)[0] == 0
    assert server.records("virlog")[0].priority == level


def test_an_unknown_priority_is_a_usage_error(server):
    """-p warn (not a libvirt name) is refused with the accepted values, exit 2."""
    code, _, err, _ = virlog("-p", "warn", "m", socket=server.path)
    assert code == 2
    assert err == USAGE + ("virlog: error: argument -p/--priority: invalid priority 'warn' "
                           "(expected 1-4 or debug, info, warning, error)\n")


def test_fields_are_attached_to_the_record(server):
    """--field NAME=VALUE, repeatable; the value may contain '='."""
    assert virlog("--field", "MESSAGE_ID=8ae2-f3fb", "--field", "QUERY=a=b", "m",
                  socket=server.path)[0] == 0
    assert server.records("virlog")[0].fields == {"MESSAGE_ID": "8ae2-f3fb", "QUERY": "a=b"}


def test_an_invalid_field_name_is_refused_before_anything_is_sent(server):
    """A name journald would drop is an error naming it, exit 2, and nothing is sent."""
    code, _, err, _ = virlog("--field", "x-y=1", "m", socket=server.path)
    assert code == 2
    assert err == USAGE + ("virlog: error: invalid field name 'x-y' in --field: use 1-64 "
                           "upper-case letters, digits and '_', starting with a letter\n")
    assert server.records() == []


def test_a_reserved_field_name_is_refused(server):
    """Fields virlogd sets itself (MESSAGE, PRIORITY...) cannot be given."""
    code, _, err, _ = virlog("--field", "PRIORITY=0", "m", socket=server.path)
    assert (code, err.splitlines()[-1]) == (
        2, "virlog: error: field name 'PRIORITY' in --field is reserved: virlogd sets it itself")


def test_a_field_without_equals_sign_is_a_usage_error(server):
    """--field needs NAME=VALUE."""
    code, _, err, _ = virlog("--field", "MESSAGE_ID", "m", socket=server.path)
    assert (code, err.splitlines()[-1]) == (
        2, "virlog: error: --field 'MESSAGE_ID' must be NAME=VALUE")


def test_each_line_of_stdin_is_one_record_in_order(server):
    """Without MESSAGE, stdin is read line by line; a last line without newline counts."""
    lines = [f"line {i}" for i in range(3000)]
    code, _, err, pid = virlog("-s", "piped", socket=server.path,
                               input=("\n".join(lines)).encode())
    assert (code, err) == (0, "")
    records = server.records("piped")
    assert [r.message for r in records] == lines
    assert {r.pid for r in records} == {pid}


def test_stdin_bytes_that_are_not_utf8_arrive_unchanged(server):
    """Binary-safe: a Latin-1 line reaches the daemon byte for byte."""
    assert virlog(socket=server.path, input=b"caf\xe9 \x00 ok\n")[0] == 0
    record, = server.records("virlog")
    assert record.message.encode("utf-8", "surrogateescape") == b"caf\xe9 \x00 ok"


def test_an_unreachable_daemon_is_a_clear_error_not_a_traceback(tmp_path):
    """No daemon: one line naming the socket and the reason, exit 1."""
    path = str(tmp_path / "missing-sock")
    code, out, err, _ = virlog("hello", socket=path)
    assert (code, out) == (1, "")
    assert err == (f"virlog: error: cannot connect to virlogd at {path}: "
                   f"No such file or directory (is virlogd running?)\n")


def test_a_socket_nobody_listens_on_is_refused_clearly(tmp_path):
    """A stale socket file left by a killed daemon: connection refused, exit 1."""
    import socket
    path = str(tmp_path / "stale")
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(path)
    stale.close()
    code, _, err, _ = virlog("hello", socket=path)
    assert (code, err) == (1, f"virlog: error: cannot connect to virlogd at {path}: "
                              f"Connection refused (is virlogd running?)\n")


def test_the_default_socket_is_the_users_runtime_directory(tmp_path):
    """Without -S, virlog uses $XDG_RUNTIME_DIR/virlogd/virlogd-sock, as the daemon does."""
    runtime = tmp_path / "run"
    (runtime / "virlogd").mkdir(parents=True)
    env = dict(os.environ, XDG_RUNTIME_DIR=str(runtime))
    path = str(runtime / "virlogd" / "virlogd-sock")
    if os.geteuid() == 0:
        path = "/run/virlogd/virlogd-sock"
        if os.path.exists(path):
            pytest.skip("a system virlogd socket exists on this machine")
    proc = subprocess.run([VIRLOG, "m"], env=env, capture_output=True, text=True, timeout=30)
    assert (proc.returncode, proc.stderr) == (1, f"virlog: error: cannot connect to virlogd "
                                                 f"at {path}: No such file or directory "
                                                 f"(is virlogd running?)\n")


def test_a_daemon_that_refuses_the_connection_is_not_reported_as_delivery(tmp_path):
    """Refused (too many clients): the records were not routed, so virlog fails, exit 1."""
    import socket
    with InProcessServer(str(tmp_path / "sock"), max_clients=1) as server:
        holder = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        holder.connect(server.path)
        deadline = time.monotonic() + 10
        while server.stats()["clients"] < 1:
            assert time.monotonic() < deadline, "the first client was never accepted"
            time.sleep(0.01)
        code, _, err, _ = virlog("refused", socket=server.path)
        holder.close()
        assert code == 1
        assert err.startswith(f"virlog: error: lost connection to virlogd at {server.path}: ")
        assert server.records("virlog") == []
