"""The daemon's wishes reach its clients (protocol version 3): a filter set on the daemon
makes its clients send what it now wants.

Real processes throughout: a real ``virlogd`` (daemonproc), real client programs as
subprocesses (the library with an ``x:virlogd`` output, stdlib ``logging`` with
``VirlogdHandler``), changed with the real ``virlogd-admin``, read back from the daemon's
file output.
"""
import fcntl
import re
import select
import socket
import struct
import subprocess
import sys
import termios
import textwrap
import time

import pytest

from daemonproc import Daemon, wait_for
from virlogd.protocol import wire
from virlogd.core.record import Record

# Each program logs, every ~50 ms, a qemu.* debug record and a warning of another source,
# numbered, until its stdin closes. The debug records are what the daemon does not want
# until an administrator asks for them.
LIBRARY = textwrap.dedent("""
    import sys, threading, time, virlogd
    qemu = virlogd.getLogger("qemu.monitor")
    other = virlogd.getLogger("myapp.disk")
    stop = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
    n = 0
    while not stop.is_set():
        n += 1
        qemu.debug("lib debug %d", n)
        other.warning("lib other %d", n)
        time.sleep(0.05)
""")

HANDLER = textwrap.dedent("""
    import logging, sys, threading, time
    from virlogd.client.handler import VirlogdHandler
    handler = VirlogdHandler(sys.argv[1])
    logging.getLogger().addHandler(handler)
    qemu = logging.getLogger("qemu.driver")
    other = logging.getLogger("myapp.net")
    stop = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
    n = 0
    while not stop.is_set():
        n += 1
        qemu.debug("stdlib debug %d", n)
        other.warning("stdlib other %d", n)
        time.sleep(0.05)
    handler.close()
""")

LINE = re.compile(r"^\S+ \S+: \d+: (\w+) : (\S+) : (?:\S+ : )?(.*)$")


def start(program, *args, env):
    return subprocess.Popen([sys.executable, "-c", program, *args], env=env,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def stop(proc):
    try:
        proc.stdin.close()
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.stderr.read()


def lines(path):
    """(level, source, message) of each record line of the daemon's file output."""
    out = []
    for line in path.read_text(errors="replace").splitlines():
        found = LINE.match(line)
        if found:
            out.append(found.groups())
    return out


def debug_numbers(path, prefix):
    return [int(message.split()[-1]) for level, _source, message in lines(path)
            if level == "debug" and message.startswith(prefix)]


def last_number(path, prefix):
    numbers = [int(message.split()[-1]) for _level, _source, message in lines(path)
               if message.startswith(prefix)]
    return numbers[-1] if numbers else 0


@pytest.fixture
def two_programs(tmp_path):
    log = tmp_path / "virlogd.log"
    daemon = Daemon(tmp_path, outputs=f"1:file:{log}")
    # the library program also writes a file of its own, at level 1: its own filters (the
    # default level, 3) decide what that one gets, whatever the daemon wants
    env = dict(daemon.env, LIBVIRT_LOG_OUTPUTS=f"3:virlogd:{daemon.socket} "
                                               f"1:file:{tmp_path / 'library-own.log'}")
    procs = [start(LIBRARY, env=env), start(HANDLER, daemon.socket, env=env)]
    try:
        # both running and heard: each one's other-source warnings arrive
        wait_for(lambda: last_number(log, "lib other") > 3
                 and last_number(log, "stdlib other") > 3, 15, "both programs' records")
        yield daemon, log, procs
    finally:
        errors = [stop(proc) for proc in procs]
        daemon.stop()
    assert errors == ["", ""]


def assert_other_sources_unchanged(log):
    """Records of the other sources were warnings from start to end, every one of them."""
    for prefix in ("lib other", "stdlib other"):
        levels = {level for level, _source, message in lines(log)
                  if message.startswith(prefix)}
        assert levels == {"warning"}, (prefix, levels)


def wait_for_debug(log, timeout, after):
    """Both programs' debug records numbered after *after* (per program) are in the file."""
    return wait_for(lambda: all(any(n > after[p] for n in debug_numbers(log, p))
                                for p in ("lib debug", "stdlib debug")),
                    timeout, "both programs' qemu debug records")


def test_admin_filters_bring_every_clients_debug_within_a_second_and_take_it_away(two_programs):
    daemon, log, _procs = two_programs
    assert debug_numbers(log, "lib debug") == debug_numbers(log, "stdlib debug") == []
    before = {p: last_number(log, p.replace("debug", "other"))
              for p in ("lib debug", "stdlib debug")}

    assert daemon.admin("daemon-log-filters", "1:qemu").returncode == 0
    changed = time.monotonic()
    wait_for_debug(log, 5, before)
    # within a second (it takes ~0.2 s: a listener's rest and a loop's 50 ms), with a margin
    # for a loaded host
    assert time.monotonic() - changed < 2.0

    assert daemon.admin("daemon-log-filters", "").returncode == 0
    time.sleep(1.0)                                    # what was on its way has arrived
    stopped = {p: max(debug_numbers(log, p)) for p in ("lib debug", "stdlib debug")}
    others = {p: last_number(log, p.replace("debug", "other")) for p in stopped}
    wait_for(lambda: all(last_number(log, p.replace("debug", "other")) > others[p] + 10
                         for p in stopped), 10, "more records of the other sources")
    assert {p: max(debug_numbers(log, p)) for p in stopped} == stopped
    assert_other_sources_unchanged(log)
    own = log.parent / "library-own.log"
    assert debug_numbers(own, "lib debug") == [] and last_number(own, "lib other") > 10


def test_a_timed_filter_change_brings_debug_and_takes_it_away_when_its_time_is_up(two_programs):
    """An administrator's debugging session: ``daemon-log-filters "1:qemu" --for 5s``."""
    daemon, log, _procs = two_programs
    help_text = daemon.admin("daemon-log-filters", "--help").stdout
    if "--for" not in help_text:
        pytest.skip("virlogd-admin has no --for yet (time-boxed changes)")
    before = {p: last_number(log, p.replace("debug", "other"))
              for p in ("lib debug", "stdlib debug")}
    assert daemon.admin("daemon-log-filters", "1:qemu", "--for", "5s").returncode == 0
    changed = time.monotonic()
    wait_for_debug(log, 5, before)
    assert time.monotonic() - changed < 2.0
    wait_for(lambda: time.monotonic() - changed > 5 + 1.0, 10, "the 5 s and the revert")
    stopped = {p: max(debug_numbers(log, p)) for p in ("lib debug", "stdlib debug")}
    others = {p: last_number(log, p.replace("debug", "other")) for p in stopped}
    wait_for(lambda: all(last_number(log, p.replace("debug", "other")) > others[p] + 10
                         for p in stopped), 10, "more records of the other sources")
    assert {p: max(debug_numbers(log, p)) for p in stopped} == stopped
    assert_other_sources_unchanged(log)


# -- version 2 clients are served as before ----------------------------------------------------
def read_for(sock, seconds):
    data = b""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        ready, _, _ = select.select([sock], [], [], deadline - time.monotonic())
        if not ready:
            break
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def test_a_version_2_client_gets_only_its_answers_never_a_wish(tmp_path):
    log = tmp_path / "virlogd.log"
    daemon = Daemon(tmp_path, outputs=f"1:file:{log}")
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.connect(daemon.socket)
            sock.sendall(b"VIRLOGD\x02" + wire.encode(Record(3, "v2", "first", time=1.0)))
            assert read_for(sock, 1.0) == struct.pack("<Q", 1)
            assert daemon.admin("daemon-log-filters", "1:qemu").returncode == 0
            assert daemon.admin("daemon-log-level", "1").returncode == 0
            assert read_for(sock, 1.0) == b""               # no wish, nothing at all
            sock.sendall(wire.encode(Record(3, "v2", "second", time=2.0)))
            assert read_for(sock, 1.0) == struct.pack("<Q", 2)
        wait_for(lambda: "second" in log.read_text(), 10, "the v2 client's records")
    finally:
        daemon.stop()


def test_a_version_3_client_hears_the_wish_at_once_and_each_change(tmp_path):
    """The exact bytes: the wish when it greets, answers and wishes tagged, in order."""
    daemon = Daemon(tmp_path, outputs=f"1:file:{tmp_path / 'out.log'}",
                    args=["--log-filters", "3:remote"])
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.connect(daemon.socket)
            sock.sendall(wire.HELLO_V3)
            assert read_for(sock, 1.0) == wire.encode_wish(3, "3:remote") == \
                struct.pack("<IB", 10, 2) + b"\x03" + b"3:remote"
            sock.sendall(wire.encode(Record(3, "v3", "first", time=1.0)))
            assert read_for(sock, 1.0) == struct.pack("<IBQ", 9, 1, 1)
            assert daemon.admin("daemon-log-filters", "1:qemu").returncode == 0
            assert read_for(sock, 1.0) == wire.encode_wish(3, "1:qemu")
            assert daemon.admin("daemon-log-outputs", f"1:file:{tmp_path / 'b.log'}") \
                .returncode == 0
            assert read_for(sock, 0.5) == b""              # not a change of what it wants
            assert daemon.admin("daemon-log-level", "2").returncode == 0
            assert read_for(sock, 1.0) == wire.encode_wish(2, "1:qemu")
    finally:
        daemon.stop()


# -- the handler's levels ------------------------------------------------------------------
LEVELS = textwrap.dedent("""
    import logging, sys, time
    from virlogd.client.handler import VirlogdHandler
    follow = sys.argv[2] == "follow"
    handler = VirlogdHandler(sys.argv[1], follow_daemon_levels=follow)
    logging.getLogger().addHandler(handler)
    qemu, driver, other = (logging.getLogger(n) for n in ("qemu", "qemu.driver", "other"))
    driver.setLevel(logging.ERROR)               # the program's own choice
    deaf = logging.getLogger("qemu.deaf")       # not served: records stop there
    deaf.propagate = False
    root = logging.getLogger()
    def show():
        return " ".join(str(logger.level) for logger in (root, qemu, driver, other, deaf))
    print("start", show(), flush=True)
    for line in sys.stdin:                       # the test says when to look again
        time.sleep(float(line))
        print("now", show(), flush=True)
    handler.close()
    print("closed", show(), flush=True)
""")


@pytest.mark.parametrize("follow", ["follow", "no"])
def test_the_handler_lowers_the_loggers_it_serves_and_restores_them_exactly(tmp_path, follow):
    daemon = Daemon(tmp_path, outputs=f"1:file:{tmp_path / 'out.log'}")
    proc = subprocess.Popen([sys.executable, "-c", LEVELS, daemon.socket, follow],
                            env=daemon.env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        def look(wait=1.5):
            proc.stdin.write(f"{wait}\n")
            proc.stdin.flush()
            return proc.stdout.readline().split()
        # root WARNING, qemu NOTSET, qemu.driver ERROR (the program's), other NOTSET, and
        # qemu.deaf NOTSET, which does not propagate to the handler's root
        as_set = ["30", "0", "40", "0", "0"]
        assert proc.stdout.readline().split() == ["start"] + as_set
        assert look(0.3) == ["now"] + as_set        # level 3: warnings, as they come
        assert daemon.admin("daemon-log-filters", "1:qemu 2:other").returncode == 0
        following = follow == "follow"
        assert look() == ["now"] + (["30", "10", "10", "20", "0"] if following else as_set)
        assert daemon.admin("daemon-log-filters", "2:qemu").returncode == 0
        assert look() == ["now"] + (["30", "20", "20", "0", "0"] if following else as_set)
        assert daemon.admin("daemon-log-filters", "").returncode == 0
        assert look() == ["now"] + as_set                         # exactly as they were
        assert daemon.admin("daemon-log-level", "1").returncode == 0
        # the root lowered, which its NOTSET descendants follow; the program's ERROR is
        # lowered too (the daemon asked for every debug); all put back on close
        assert look() == ["now"] + (["10", "0", "10", "0", "0"] if following else as_set)
        proc.stdin.close()
        assert proc.stdout.readline().split() == ["closed"] + as_set
        assert proc.wait(10) == 0
        assert proc.stderr.read() == ""
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        daemon.stop()


# -- a client that never reads ----------------------------------------------------------------
def test_a_client_that_never_reads_does_not_block_the_daemon(tmp_path):
    """A version 3 client that never reads is sent wish after wish (long ones: 2,000
    filters each) until the daemon's writes to it fail; the daemon goes on serving admin
    requests and other clients at once, and once the deaf one reads, the newest wish is the
    last it gets: never lost, never a backlog."""
    log = tmp_path / "virlogd.log"
    daemon = Daemon(tmp_path, outputs=f"1:file:{log}")
    deaf = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    padding = " ".join(f"4:pad{n:05d}" for n in range(2000))
    try:
        deaf.connect(daemon.socket)
        deaf.sendall(wire.HELLO_V3 + wire.encode(Record(3, "deaf", "hello", time=1.0)))
        for index in range(40):
            started = time.monotonic()
            done = daemon.admin("daemon-log-filters", f"1:qemu{index} {padding}")
            assert done.returncode == 0, done.stderr
            assert time.monotonic() - started < 5
        waiting = struct.unpack("i", fcntl.ioctl(deaf, termios.FIONREAD, b"\0" * 4))[0]
        assert 100_000 < waiting < 40 * len(padding)      # its buffer is full: not all fit
        assert daemon.virlog("-t", "polite", "-p", "warning", "still served").returncode == 0
        wait_for(lambda: "still served" in log.read_text(), 10, "another client's record")
        # it reads at last: the newest wish is the last message it gets
        deaf.setblocking(False)
        decoder = wire.MessageDecoder()
        deadline = time.monotonic() + 10
        newest = f"1:qemu39 {padding}"
        while time.monotonic() < deadline and \
                (decoder.wish is None or decoder.wish.filters != newest):
            try:
                chunk = deaf.recv(1 << 20)
            except BlockingIOError:
                time.sleep(0.05)
                continue
            decoder.feed(chunk)
        assert decoder.wish is not None and decoder.wish.filters == newest
        time.sleep(0.5)                                    # and nothing after it
        with pytest.raises(BlockingIOError):
            deaf.recv(1 << 20)
    finally:
        deaf.close()
        daemon.stop()
