"""``virlog``, the shell client: flags, stdin mode, confirmed delivery, clear failures."""
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from daemonproc import Daemon, read_until
from serve import InProcessServer
from virlogd.cli import virlog as virlog_cli
from virlogd.protocol import wire

VIRLOG = str(Path(sys.executable).parent / "virlog")
USAGE = virlog_cli.parser().format_usage()     # the command's own: its flags change


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


# logger(1)'s names, mapped as libvirt maps syslog's severities
LOGGER_NAMES = [("emerg", 4), ("alert", 4), ("crit", 4), ("err", 4), ("ERR", 4),
                ("Error", 4), ("warning", 3), ("warn", 3), ("WARNING", 3), ("notice", 2),
                ("Notice", 2), ("info", 2), ("INFO", 2), ("debug", 1), ("DEBUG", 1)]


@pytest.mark.parametrize("given,level", LOGGER_NAMES)
def test_priority_takes_loggers_level_names_in_any_case(server, given, level):
    """-p err, crit, notice, emerg, warn, upper case: what logger takes; no facility field."""
    code, _, err, _ = virlog("-p", given, "m", socket=server.path)
    assert (code, err) == (0, "")
    record, = server.records("virlog")
    assert (record.priority, record.fields) == (level, {})


@pytest.mark.parametrize("given,level,facility", [
    ("daemon.warning", 3, "3"), ("user.notice", 2, "1"), ("kern.crit", 4, "0"),
    ("LOCAL3.ERR", 4, "19"), ("local7.debug", 1, "23"), ("authpriv.info", 2, "10"),
    ("Mail.Emerg", 4, "2"), ("cron.warn", 3, "9")])
def test_priority_takes_facility_dot_level_and_sends_the_facility(server, given, level,
                                                                   facility):
    """-p daemon.warning: the level as above, the facility's number in SYSLOG_INPUT_FACILITY
    (the field the syslog, remote and journald outputs use; tests/real checks them)."""
    code, _, err, _ = virlog("-p", given, "--field", "MESSAGE_ID=x", "m", socket=server.path)
    assert (code, err) == (0, "")
    record, = server.records("virlog")
    assert (record.priority, record.fields) == (
        level, {"MESSAGE_ID": "x", "SYSLOG_INPUT_FACILITY": facility})


@pytest.mark.parametrize("given,message", [
    ("loud", "invalid priority 'loud' (expected 1-4, LEVEL or FACILITY.LEVEL; LEVEL: debug, "
             "info, notice, warning, warn, err, error, crit, alert, emerg, panic)"),
    ("deamon.err", "invalid facility 'deamon' in 'deamon.err' (FACILITY: kern, user, mail, "
                   "daemon, auth, syslog, lpr, news, uucp, cron, authpriv, ftp, "
                   "local0-local7)"),
    ("daemon.warnign", "invalid level 'warnign' in 'daemon.warnign' (LEVEL: debug, info, "
                       "notice, warning, warn, err, error, crit, alert, emerg, panic)"),
])
def test_an_unknown_priority_is_a_usage_error_naming_the_wrong_part(server, given, message):
    """A priority logger would refuse: the part that is wrong and what is accepted, exit 2,
    nothing sent."""
    code, _, err, _ = virlog("-p", given, "m", socket=server.path)
    assert (code, err) == (2, USAGE + f"virlog: error: argument -p/--priority: {message}\n")
    assert server.records() == []


def test_tag_is_the_source_and_the_program_name_as_in_logger(server):
    """-t TAG: the source filters match and the ident (SYSLOG_IDENTIFIER), as logger's tag;
    -s beside it keeps its source."""
    assert virlog("-t", "myapp", "tagged", socket=server.path)[0] == 0
    assert virlog("--tag", "myapp", "-s", "myapp.db", "both", socket=server.path)[0] == 0
    assert virlog("-s", "only.source", "untagged", socket=server.path)[0] == 0
    got = [(r.source, r.ident, r.message) for r in server.records()]
    assert got == [("myapp", "myapp", "tagged"), ("myapp.db", "myapp", "both"),
                   ("only.source", None, "untagged")]


def test_logger_habits_reach_a_real_daemons_file_output(tmp_path):
    """The real virlog to the real daemon: -t, -p daemon.warning and -p CRIT give lines at
    warning and error (the facility has no place in a text line: the syslog, remote and
    journald outputs carry it, and journald shows the tag: see tests/real). The tag is the
    source, which a relayed record's line names after the level (so a host-wide file
    tells programs apart)."""
    log = tmp_path / "out.log"
    d = Daemon(tmp_path, outputs=f"1:file:{log}")
    try:
        assert d.virlog("-t", "myapp", "-p", "daemon.warning", "disk almost full"
                        ).returncode == 0
        assert d.virlog("-t", "myapp", "-p", "CRIT", "disk full").returncode == 0
        refused = d.virlog("-p", "err.daemon", "backwards")
        assert refused.returncode == 2
        lines = [line for line in read_until(log, "disk full").splitlines()
                 if "disk" in line]
        assert [line.split(": ", 2)[2].replace(" : myapp : ", " : ") for line in lines] == [
            "warning : disk almost full", "error : disk full"]
    finally:
        assert d.stop() == 0


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


def _long_line_limit(source: str) -> int:
    """The message bytes one record holds for virlog's record of *source* (no fields)."""
    return wire.MAX_FRAME - (len(wire.encode_parts(2, source, "", time=0.0)) - 4)


def test_a_line_over_the_frame_limit_is_split_with_a_warning_and_the_next_lines_arrive(
        tmp_path):
    """tail -f | virlog must survive a 5 MiB line: it is sent as two records (nothing of it
    lost), a warning says so, and every later line arrives, in order (it once exited 1 and
    dropped the rest)."""
    log = tmp_path / "out.log"
    d = Daemon(tmp_path, outputs=f"1:file:{log}")
    limit = _long_line_limit("big")
    long_line = "".join(f"{i:09d}," for i in range(5 * 1024 * 1024 // 10 + 1))[:5 * 1024 * 1024]
    text = "before\n" + long_line + "\n" + "".join(f"after {i}\n" for i in range(100))
    try:
        run = d.virlog("-p", "error", "-s", "big", input=text)
        assert (run.returncode, run.stdout) == (0, "")
        assert run.stderr == (f"virlog: warning: line 2 of standard input (5242880 bytes) is "
                              f"longer than one record holds ({limit} bytes): sent as 2 "
                              f"records\n")
        # the text after the level, and after the source where the line names it (relayed)
        messages = [re.sub(r"^big : ", "", line.split(": error : ", 1)[1]) for line in
                    read_until(log, "after 99\n").splitlines() if ": error : " in line]
    finally:
        assert d.stop() == 0
    assert messages[0] == "before"
    assert [len(m) for m in messages[1:3]] == [limit, 5 * 1024 * 1024 - limit]
    assert messages[1] + messages[2] == long_line
    assert messages[3:] == [f"after {i}" for i in range(100)]


def test_a_long_line_is_cut_between_characters_and_an_endless_one_streams(server):
    """The cut never splits a UTF-8 character; a line that never ends (no newline before
    EOF, 9 MiB) goes out in pieces as it arrives, each a whole record."""
    limit = _long_line_limit("virlog")
    wide = "a" + "é" * (limit // 2 + 10)           # characters end at odd offsets
    first = limit if limit % 2 else limit - 1       # an even limit falls inside an 'é'
    endless = "x" * (9 * 1024 * 1024)
    code, _, err, _ = virlog(socket=server.path,
                             input=(wide + "\nshort\n" + endless).encode())
    assert code == 0
    assert err.splitlines() == [
        f"virlog: warning: line 1 of standard input ({len(wide.encode())} bytes) is longer "
        f"than one record holds ({limit} bytes): sent as 2 records",
        f"virlog: warning: line 3 of standard input ({len(endless)} bytes) is longer than one "
        f"record holds ({limit} bytes): sent as 3 records"]
    messages = [r.message for r in server.records("virlog")]
    assert [len(m.encode()) for m in messages[:2]] == [first, len(wide.encode()) - first]
    assert messages[0] + messages[1] == wide and messages[2] == "short"
    assert "".join(messages[3:]) == endless and len(messages) == 6
