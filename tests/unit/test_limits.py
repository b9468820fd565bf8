"""The pure parts of the daemon's budgets: the client cap, the watchdog interval, the
``max_pending_size`` key, and the loop's resting reader."""
import os
import resource
import socket
import time

from virlogd.daemon import limits, systemd
from virlogd.core import settings
from virlogd.daemon.loop import EventLoop


def test_the_cap_is_what_the_limit_leaves_after_the_daemons_own_and_the_reserve():
    assert limits.client_cap(1024, 128, 12) == 128 - 12 - limits.RESERVE == 84
    assert limits.client_cap(1024, 524288, 12) == 1024
    assert limits.client_cap(50, 128, 12) == 50
    assert limits.client_cap(1024, 20, 12) == 1      # never none at all
    assert limits.does_not_fit(1024, 524288, 12) is None
    assert limits.does_not_fit(1024, 128, 12, would="would serve") == (
        "max_clients = 1024 does not fit the descriptor limit (RLIMIT_NOFILE 128: 12 used by "
        "the daemon itself, 32 kept in reserve): virlogd would serve at most 84 clients; "
        "raise the limit (LimitNOFILE= in the unit, ulimit -n) or lower max_clients")


def test_the_estimate_counts_each_of_the_daemons_own_descriptors():
    base = limits.own_estimate(1, ring=False, syslog=False)
    assert limits.own_estimate(1, ring=True, syslog=False) == base + 1
    assert limits.own_estimate(1, ring=True, syslog=True) == base + 2
    assert limits.own_estimate(3, ring=False, syslog=False) == base + 2
    assert limits.own_estimate(0, ring=False, syslog=False) == base   # the default output


def test_raise_nofile_raises_the_soft_limit_to_the_hard_one():
    before = resource.getrlimit(resource.RLIMIT_NOFILE)
    pid = os.fork()
    if pid == 0:                                   # in a child: the test's own limit stays
        code = 1
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (64, before[1]))
            code = 0 if limits.raise_nofile() == (before[1], before[1]) or \
                before[1] == resource.RLIM_INFINITY else 2
        finally:
            os._exit(code)
    assert os.waitpid(pid, 0)[1] == 0


def test_watchdog_interval_is_half_of_watchdog_usec_for_this_process_only():
    assert systemd.watchdog_interval({"WATCHDOG_USEC": "30000000"}) == 15.0
    assert systemd.watchdog_interval({"WATCHDOG_USEC": "400000", "WATCHDOG_PID": "42"},
                                     pid=42) == 0.2
    assert systemd.watchdog_interval({"WATCHDOG_USEC": "400000", "WATCHDOG_PID": "42"},
                                     pid=43) is None
    for usec in ("", "0", "-5", "soon", "1.5"):
        assert systemd.watchdog_interval({"WATCHDOG_USEC": usec}) is None
    assert systemd.watchdog_interval({}) is None


def test_max_pending_size_takes_bytes_from_one_whole_frame_up(tmp_path):
    conf = tmp_path / "virlogd.conf"
    conf.write_text("max_pending_size = 1000\n")
    s = settings.load(config_file=str(conf), explicit=True, env={})
    assert s.max_pending_size == settings.DEFAULT_PENDING
    assert s.problems == [f"{conf}:1: max_pending_size must be a size in bytes, 4194308 or "
                          f"more, not 1000; ignored"]
    conf.write_text("max_pending_size = 16777216\n")
    s = settings.load(config_file=str(conf), explicit=True, env={})
    assert (s.max_pending_size, s.sources["max_pending_size"], s.problems) == \
        (16777216, f"{conf}:1", [])


def test_a_resting_reader_is_watched_again_after_its_rest_unless_removed():
    loop = EventLoop()
    a, b = socket.socketpair()
    calls = []
    try:
        loop.add_reader(a, lambda sock: calls.append(time.monotonic()))
        b.send(b"x")                               # stays readable: nobody reads it
        loop.run_once(0.5)
        assert len(calls) == 1
        loop.rest_reader(a, 0.2)
        start = time.monotonic()
        while time.monotonic() - start < 0.15:
            loop.run_once(0.05)
        assert len(calls) == 1                     # resting: not called, not spinning
        while time.monotonic() - start < 0.4:
            loop.run_once(0.05)
        assert len(calls) > 1                      # watched again
        loop.rest_reader(a, 0.1)
        loop.remove_reader(a)                      # removed meanwhile: stays removed
        count = len(calls)
        start = time.monotonic()
        while time.monotonic() - start < 0.3:
            loop.run_once(0.05)
        assert len(calls) == count
    finally:
        loop.close()
        a.close()
        b.close()
