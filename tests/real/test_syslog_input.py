"""The syslog-compatible input, fed by unmodified programs: logger and Python's SysLogHandler.

The daemon's pieces run in-process (EventLoop + Router + SyslogInput + a file output); the
senders are real separate processes, so the pid in each line is the sender's, taken from the
socket's credentials.
"""
from __future__ import annotations

import os
import re
import socket
import stat
import subprocess
import sys
import threading

import pytest

from tests.conftest import wait_until
from virlogd.core.filters import FilterSet
from virlogd.daemon.loop import EventLoop
from virlogd.outputs import OutputContext, build
from virlogd.core.router import Router, RouterState
from virlogd.daemon.sockets import SocketInUse
from virlogd.core.specs import parse_filters, parse_outputs
from virlogd.daemon.syslog_input import SyslogInput, bind_syslog_socket

# a syslog record is relayed: its line names the tag (the source) after the level
LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}\+0000: (\d+): (\w+) : \S+ : (.*)$")


class Receiver:
    """virlogd's syslog input on *path*, routing through *filters* to a file."""

    def __init__(self, directory: str, filters: str, level: int) -> None:
        self.sock_path = os.path.join(directory, "log.sock")
        self.log_path = os.path.join(directory, "out.log")
        specs, _ = parse_outputs(f"1:file:{self.log_path}")
        self.output = build(specs[0], OutputContext())
        self.router = Router(RouterState(FilterSet(parse_filters(filters)[0], level),
                                         [self.output]))
        self.loop = EventLoop()
        self.loop.after_batch.append(self.router.flush)
        self.sock = bind_syslog_socket(self.sock_path)
        self.input = SyslogInput(self.loop, self.router, self.sock)
        self.thread = threading.Thread(target=self.loop.run, daemon=True)
        self.thread.start()

    def records(self, count: int):
        """(pid, level, message) of each record line after the two header lines."""
        def enough():
            try:
                with open(self.log_path) as f:
                    lines = f.read().splitlines()
            except FileNotFoundError:
                return None
            return lines if len(lines) >= count + 2 else None
        lines = wait_until(enough, 10, f"{count} records in {self.log_path}")
        return [LINE.match(line).groups() for line in lines[2:]]

    def close(self) -> None:
        self.loop.stop()
        self.thread.join(5)
        self.input.close()
        self.sock.close()
        self.router.close()
        self.loop.close()


@pytest.fixture
def receiver(short_dir):
    made = []

    def make(filters: str = "", level: int = 1) -> Receiver:
        made.append(Receiver(short_dir, filters, level))
        return made[-1]
    yield make
    for item in made:
        item.close()


def logger(sock: str, *args: str) -> subprocess.CompletedProcess:
    proc = subprocess.run(["logger", "-u", sock, *args], capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=10)
    assert proc.returncode == 0, proc.stderr
    return proc


def logger_pid(sock: str, *args: str) -> int:
    proc = subprocess.Popen(["logger", "-u", sock, *args], stdin=subprocess.DEVNULL)
    assert proc.wait(10) == 0
    return proc.pid


@pytest.mark.parametrize("form", ["--rfc3164", "--rfc5424"])
def test_logger_records_arrive_with_their_level_and_the_senders_real_pid(receiver, form):
    """logger's severities map to virlogd levels; the pid is logger's own, not its --id."""
    rx = receiver()
    sent = [(logger_pid(rx.sock_path, form, "-t", "alpha", "-p", f"daemon.{severity}",
                        f"{severity} message"), level, severity)
            for severity, level in (("err", "error"), ("warning", "warning"),
                                    ("notice", "info"), ("debug", "debug"), ("crit", "error"))]
    got = rx.records(len(sent))
    assert got == [(str(pid), level, f"{severity} message") for pid, level, severity in sent]


def test_the_pid_a_program_writes_in_its_tag_is_not_believed(receiver):
    """"tag[1]:" claims pid 1; the line shows the sender's pid from the socket credentials."""
    rx = receiver()
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.sendto(b"<11>Nov  5 10:07:00 liar[1]: trust me", rx.sock_path)
    assert rx.records(1) == [(str(os.getpid()), "error", "trust me")]


@pytest.mark.parametrize("form", ["--rfc3164", "--rfc5424"])
def test_the_tag_is_the_source_that_filters_match(receiver, form):
    """Default level error, filter 1:alpha: alpha's debug record passes, beta's does not."""
    rx = receiver("1:alpha", level=4)
    logger(rx.sock_path, form, "-t", "beta", "-p", "user.debug", "from beta")
    logger(rx.sock_path, form, "-t", "alpha", "-p", "user.debug", "from alpha")
    logger(rx.sock_path, form, "-t", "beta", "-p", "user.err", "beta error")
    assert [message for _pid, _level, message in rx.records(2)] == ["from alpha", "beta error"]
    assert rx.router.received == 3


PY_SENDER = """
import logging, logging.handlers, sys
h = logging.handlers.SysLogHandler(address=sys.argv[1])
h.ident = "pyapp: "
log = logging.getLogger("x"); log.addHandler(h); log.setLevel(logging.DEBUG)
log.debug("py debug"); log.info("py info"); log.warning("py warning"); log.error("py error")
log.critical("py critical")
"""


def test_python_syslog_handler_records_are_routed_by_ident_and_level(receiver):
    """SysLogHandler's datagrams: ident "pyapp: " is the source, levels map, real pid."""
    rx = receiver("1:pyapp", level=4)
    proc = subprocess.Popen([sys.executable, "-c", PY_SENDER, rx.sock_path],
                            stdin=subprocess.DEVNULL)
    assert proc.wait(10) == 0
    assert rx.records(5) == [(str(proc.pid), "debug", "py debug"),
                             (str(proc.pid), "info", "py info"),
                             (str(proc.pid), "warning", "py warning"),
                             (str(proc.pid), "error", "py error"),
                             (str(proc.pid), "error", "py critical")]


def test_a_burst_is_read_in_batches_and_nothing_is_lost(receiver):
    """2000 datagrams sent as fast as possible all arrive, in order."""
    rx = receiver()
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        for i in range(2000):
            s.sendto(b"<14>burst: n%d" % i, rx.sock_path)
    got = rx.records(2000)
    assert [message for _p, _l, message in got] == [f"n{i}" for i in range(2000)]
    assert {pid for pid, _l, _m in got} == {str(os.getpid())}


def test_the_socket_is_mode_0666_like_dev_log(short_dir):
    """Any local program may log to it."""
    path = os.path.join(short_dir, "log.sock")
    with bind_syslog_socket(path):
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o666


def test_a_stale_socket_or_dangling_link_is_replaced(short_dir):
    """Left over by a killed daemon, or a /dev/log link to a dead receiver: bound anew."""
    path = os.path.join(short_dir, "log.sock")
    old = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    old.bind(path)
    old.close()
    with bind_syslog_socket(path):
        assert stat.S_ISSOCK(os.lstat(path).st_mode)
    os.unlink(path)
    os.symlink(os.path.join(short_dir, "gone.sock"), path)
    with bind_syslog_socket(path):
        assert stat.S_ISSOCK(os.lstat(path).st_mode)


def test_a_live_syslog_receiver_is_not_taken_over(short_dir):
    """Another daemon receiving there (directly or through a link) is refused, by name."""
    live = os.path.join(short_dir, "live.sock")
    link = os.path.join(short_dir, "devlog")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as other:
        other.bind(live)
        os.symlink(live, link)
        with pytest.raises(SocketInUse) as err:
            bind_syslog_socket(link)
        assert err.value.strerror == (f"a syslog daemon is already receiving on {link} "
                                  f"(a link to {live})")
        with pytest.raises(SocketInUse) as err:
            bind_syslog_socket(live)
        assert err.value.strerror == f"a syslog daemon is already receiving on {live}"


def test_the_daemon_serves_syslog_socket_path_from_its_config(tmp_path, short_dir):
    """virlogd with syslog_socket_path: logger's record reaches the daemon's file output."""
    from tests.daemonproc import Daemon, read_until
    sock = os.path.join(short_dir, "devlog")
    log = tmp_path / "out.log"
    conf = tmp_path / "virlogd.conf"
    conf.write_text(f'syslog_socket_path = "{sock}"\nlog_level = 1\n'
                    f'log_outputs = "1:file:{log}"\n')
    daemon = Daemon(tmp_path, ["-f", str(conf)])
    try:
        read_until(log, "virlogd started")    # start() done: the syslog input is reading
        assert stat.S_IMODE(os.stat(sock).st_mode) == 0o666
        pid = logger_pid(sock, "--rfc5424", "-t", "gamma", "-p", "auth.warning", "via daemon")
        text = read_until(log, "via daemon")
    finally:
        assert daemon.stop() == 0
    assert f": {pid}: warning : gamma : via daemon\n" in text


GLIBC_SENDER = """
import syslog
syslog.openlog("glibcapp", syslog.LOG_PID, syslog.LOG_DAEMON)
syslog.syslog(syslog.LOG_DEBUG, "glibc debug")
syslog.syslog(syslog.LOG_ERR, "glibc error")
"""


def test_glibc_syslog_through_dev_log_is_routed_by_ident_and_level(receiver):
    """/dev/log (private to the test run) pointed at virlogd: syslog(3) records arrive with
    the openlog ident as source, their level, and the sender's pid."""
    from tests.conftest import DEV_LOG, _require_namespace
    _require_namespace("the /dev/log test")
    rx = receiver("1:glibcapp", level=4)
    previous = os.readlink(DEV_LOG) if os.path.islink(DEV_LOG) else None
    tmp_link = DEV_LOG + ".virlogd-test"
    os.symlink(rx.sock_path, tmp_link)
    os.replace(tmp_link, DEV_LOG)                 # atomic: /dev/log is never missing
    try:
        proc = subprocess.Popen([sys.executable, "-c", GLIBC_SENDER], stdin=subprocess.DEVNULL)
        assert proc.wait(10) == 0
        got = rx.records(2)
    finally:
        if previous is not None:
            os.symlink(previous, tmp_link)
            os.replace(tmp_link, DEV_LOG)
    assert got == [(str(proc.pid), "debug", "glibc debug"), (str(proc.pid), "error",
                                                             "glibc error")]
