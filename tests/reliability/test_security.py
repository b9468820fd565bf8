"""Who may do what: socket and file modes, an unprivileged user, forged lines, the client cap."""
import json
import os
import pwd
import re
import socket
import stat
import struct
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from conftest import require_real
from daemonproc import (ADMIN, VIRLOG, Daemon, as_other_user_cmd, other_user as _other_user,
                        read_until, rss_kb, wait_for)

TEST_USER = "virlogd-test"



@pytest.fixture
def other_user():
    """An unprivileged uid to run clients as (created if absent); root is needed."""
    if os.geteuid() != 0:
        require_real("running a client as another user needs root")
    return _other_user()


def as_user(user, cmd, env, **kw):
    return subprocess.run(as_other_user_cmd(user, cmd), env=env, capture_output=True,
                          text=True, timeout=30, **kw)


def mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def test_socket_and_file_modes_are_as_documented(open_dir):
    """Client socket 0666, admin socket 0600, log file and ring file 0600."""
    log = open_dir / "out.log"
    d = Daemon(open_dir, outputs=f"1:file:{log}")
    try:
        d.virlog("-p", "error", "x")
        read_until(log, " : x")
        assert oct(mode(d.socket)) == "0o666"
        assert oct(mode(d.admin_socket)) == "0o600"
        assert oct(mode(log)) == "0o600"
        assert oct(mode(d.socket + ".ring")) == "0o600"
    finally:
        assert d.stop() == 0


def test_socket_perms_and_group_from_the_config_are_applied(open_dir):
    """socket_perms = "0660", socket_group = "adm": the client socket has them."""
    conf = open_dir / "virlogd.conf"
    conf.write_text('socket_perms = "0660"\nsocket_group = "adm"\n')
    d = Daemon(open_dir, ["-f", str(conf)], outputs="3:stderr")
    try:
        info = os.stat(d.socket)
        assert oct(stat.S_IMODE(info.st_mode)) == "0o660"
        import grp
        assert grp.getgrgid(info.st_gid).gr_name == "adm"
    finally:
        assert d.stop() == 0


def test_an_unprivileged_user_can_log_under_its_own_identity_but_not_administer(
        open_dir, other_user):
    """The other uid's records carry its real pid; virlogd-admin refuses it."""
    log = open_dir / "out.log"
    d = Daemon(open_dir, outputs=f"1:file:{log}")
    try:
        program = textwrap.dedent(f"""
            import os, virlogd
            virlogd.configure(outputs="1:virlogd:{d.socket}")
            virlogd.getLogger("user.app").error("from an unprivileged user")
            print(os.getpid(), os.getuid(), flush=True)
        """)
        env = dict(d.env, HOME="/tmp")
        run = as_user(other_user, [sys.executable, "-c", program], env)
        assert run.returncode == 0, run.stderr
        pid, uid = map(int, run.stdout.split())
        assert uid == other_user.pw_uid
        text = read_until(log, "from an unprivileged user")
        assert re.search(rf"\+0000: {pid}: error : .*from an unprivileged user", text)
        admin = as_user(other_user, [ADMIN, "-S", d.admin_socket, "daemon-log-level", "1"],
                        env)
        assert admin.returncode == 1
        assert admin.stderr.startswith(f"virlogd-admin: error: cannot connect to virlogd at "
                                       f"{d.admin_socket}: Permission denied")
        assert d.admin("daemon-log-level").stdout == " Logging level: 3\n"
    finally:
        assert d.stop() == 0


def test_a_client_cannot_forge_a_log_line_in_any_text_output(open_dir):
    """A message with newlines and a fake timestamp stays one record; continuation is marked."""
    log = open_dir / "out.log"
    d = Daemon(open_dir, outputs=f"1:file:{log} 1:stderr")
    forged = "innocent\n2026-11-23 14:29:04.771+0000: 1: error : root logged in\r\x1b[2K"
    try:
        assert d.virlog("-p", "error", forged).returncode == 0
        text = read_until(log, "root logged in")
    finally:
        assert d.stop() == 0
    for output in (text, d.stderr()):
        lines = [line for line in output.splitlines() if "root logged in" in line]
        assert lines == ["  | 2026-11-23 14:29:04.771+0000: 1: error : root logged in"
                         "\\x0d\\x1b[2K"]


def test_the_number_of_clients_is_capped_with_a_clear_refusal(open_dir):
    """max_clients = 2: the third connection is closed, counted and reported."""
    conf = open_dir / "virlogd.conf"
    log = open_dir / "out.log"
    conf.write_text("max_clients = 2\n")
    d = Daemon(open_dir, ["-f", str(conf)], outputs=f"1:file:{log}")
    held = []
    clients = lambda: json.loads(d.admin("stats", "--json").stdout)["clients"]   # noqa: E731
    try:
        wait_for(lambda: clients() == 0, what="the readiness probe to be gone")
        for _ in range(2):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(d.socket)
            held.append(s)
        wait_for(lambda: clients() == 2, what="two clients")
        third = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        third.connect(d.socket)
        third.settimeout(10)
        assert third.recv(1) == b""                       # closed by the daemon
        third.close()
        text = read_until(log, "too many clients")
        assert re.search(rf"refused connection from pid {os.getpid()} \(uid 0\): too many "
                         rf"clients \(2 connected, max_clients = 2\); 1 refused so far", text)
        stats = json.loads(d.admin("stats", "--json").stdout)
        assert stats["server"]["refused"] == 1
    finally:
        for s in held:
            s.close()
        assert d.stop() == 0


FLOODER = """
    import socket, sys, time
    from virlogd.protocol import wire
    blob = b"".join(wire.encode_parts(1, "flood", "flood record %06d " % i + "x" * 100,
                                      time=1.0) for i in range(8000))
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(sys.argv[1])
    sock.sendall(wire.HELLO_V1)              # it never reads: no answers wanted
    sent, deadline = 0, time.monotonic() + float(sys.argv[2])
    while time.monotonic() < deadline:
        sock.sendall(blob)
        sent += 8000
    sock.close()
    print(sent, flush=True)
"""


def test_a_flooding_client_neither_starves_others_nor_grows_the_daemon(open_dir):
    """One client writes as fast as the kernel takes it for 10 s (long enough to outlast
    the polite client on a slow, shared machine); meanwhile another sends a record every
    20 ms and waits for the daemon's answer each time. The daemon reads every connection in
    turn (one read of at most 256 kB each per round), so the polite client's records are
    routed within a round, and the flood costs the daemon no memory: the kernel's socket
    buffer holds the backlog, and the flooder waits."""
    from virlogd.protocol import wire
    log = open_dir / "out.log"
    d = Daemon(open_dir, outputs=f"4:file:{log}")
    flooder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(FLOODER), d.socket, "10"],
                               env=d.env, stdout=subprocess.PIPE, text=True)
    latencies = []
    try:
        wait_for(lambda: json.loads(d.admin("stats", "--json").stdout)["received"] > 50000,
                 20, "the flood to be under way")
        rss_before = rss_kb(d.pid)
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as polite:
            polite.settimeout(10)
            polite.connect(d.socket)
            polite.sendall(wire.HELLO)
            for i in range(50):
                frame = wire.encode_parts(4, "polite", f"polite seq {i}", time=time.time())
                started = time.monotonic()
                polite.sendall(frame)
                answer = b""
                while len(answer) < 8:
                    answer += polite.recv(8 - len(answer))
                latencies.append(time.monotonic() - started)
                assert struct.unpack("<Q", answer)[0] == i + 1
                time.sleep(0.02)
        flood_running = flooder.poll() is None
        rss_growth = rss_kb(d.pid) - rss_before
        flooded = int(flooder.communicate(timeout=30)[0])
        read_until(log, "polite seq 49\n")
    finally:
        if flooder.poll() is None:
            flooder.kill()
            flooder.wait()
        assert d.stop() == 0
    assert flood_running, "the polite client was served while the flood went on"
    assert max(latencies) < 1.0, f"a polite record waited {max(latencies):.3f} s"
    assert rss_growth < 16 * 1024, f"the daemon grew by {rss_growth} kB"
    polite_seqs = [int(n) for n in re.findall(r"polite seq (\d+)$", log.read_text(), re.M)]
    assert polite_seqs == list(range(50))
    latencies.sort()
    print("\nflood figures:", json.dumps({
        "flood_records": flooded, "polite_records": 50,
        "polite_latency_ms": {"median": round(latencies[25] * 1000, 2),
                              "max": round(latencies[-1] * 1000, 2)},
        "daemon_rss_growth_kb": rss_growth}))
