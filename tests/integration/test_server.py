"""The client socket server: real sockets, real client processes, real SO_PEERCRED.

The server (EventLoop + Router + ClientServer) runs in a thread of the test process with an
output that keeps the records, so identity, order and reports can be checked exactly.
"""
import os
import socket
import struct
import subprocess
import sys
import textwrap

import pytest

from daemonproc import read_to_eof
from serve import InProcessServer
from virlogd.protocol import wire
from virlogd.core.record import Record

UID, GID = os.getuid(), os.getgid()


@pytest.fixture
def server(tmp_path):
    srv = InProcessServer(str(tmp_path / "sock"))
    yield srv
    srv.stop()


def connect(path, greeting=True):
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(path)
    if greeting:
        sock.sendall(wire.HELLO)
    return sock


def frames(*messages, source="t", priority=2):
    return b"".join(wire.encode(Record(priority, source, m)) for m in messages)


def run_clients(count, program):
    procs = [subprocess.Popen([sys.executable, "-c", textwrap.dedent(program)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(count)]
    pids = []
    try:
        for proc in procs:
            out, err = proc.communicate(timeout=60)
            assert proc.returncode == 0, err
            pids.append(proc.pid)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return pids


def answers(sock):
    """Everything the server writes until it closes its end: version 2 answers only."""
    sock.settimeout(10)
    return read_to_eof(sock)


def wait_closed(sock):
    """True once the server has closed its end (recv sees EOF or a reset)."""
    answers(sock)
    return True


def test_eight_concurrent_clients_each_arrive_complete_and_in_order(server):
    """8 client processes x 10,000 records: nothing lost, each client's order kept."""
    pids = run_clients(8, f"""
        from virlogd.client.client import Client
        from virlogd.core.record import Record
        client = Client({server.path!r})
        client.send_many(Record(2, "load", "seq %d" % i) for i in range(10000))
        client.close()
    """)
    records = server.wait_for(80000, "load")
    by_pid = {pid: [] for pid in pids}
    for record in records:
        by_pid[record.pid].append(int(record.message[4:]))
    for pid in pids:
        assert by_pid[pid] == list(range(10000)), f"client {pid}"
    assert server.stats()["records"] == 80000


def test_every_record_carries_the_peers_real_pid_uid_and_gid(server):
    """Identity comes from SO_PEERCRED: a record claiming pid 1 and uid 0 cannot forge it."""
    pid, = run_clients(1, f"""
        from virlogd.client.client import Client
        from virlogd.core.record import Record
        client = Client({server.path!r})
        client.send(Record(4, "forger", "I am init", pid=1, uid=0, gid=0,
                           fields={{"_PID": "1", "OBJECT_PID": "1", "_UID": "0"}}))
        client.close()
    """)
    record, = server.wait_for(1, "forger")
    assert (record.pid, record.uid, record.gid) == (pid, UID, GID)
    assert record.fields == {"X_PID": "1", "X_OBJECT_PID": "1", "X_UID": "0"}
    assert server.stats()["renamed_fields"] == 3


def test_an_oversized_frame_closes_only_that_connection_and_names_the_pid(server):
    """The bad client is cut off and reported by pid; a good client never notices."""
    good = connect(server.path)
    good.sendall(frames("good 1"))
    server.wait_for(1, "t")
    bad = connect(server.path)
    bad.sendall(struct.pack("<I", 0xFFFFFFF0) + b"\xff" * 64)
    assert wait_closed(bad)
    good.sendall(frames("good 2"))
    good.shutdown(socket.SHUT_WR)
    assert wait_closed(good)
    assert server.messages("t") == ["good 1", "good 2"]
    report, = server.records("virlogd.server")
    assert report.message == (f"closed connection from pid {os.getpid()} (uid {UID}): "
                              f"frame of 4294967280 bytes exceeds the 4194304-byte limit")
    assert (report.priority, report.pid) == (3, os.getpid())
    stats = server.stats()
    assert (stats["malformed_frames"], stats["clients"]) == (1, 0)
    assert server.router.dropped == {"malformed frame": 1}
    bad.close()
    good.close()


def test_records_before_a_malformed_frame_in_the_same_write_are_kept(server):
    """Only what follows the bad frame is lost: the records before it are routed, in order."""
    sock = connect(server.path)
    sock.sendall(frames("one", "two") + struct.pack("<I", 40) + bytes([1, 9]) + bytes(38))
    assert wait_closed(sock)
    sock.close()
    assert server.messages("t") == ["one", "two"]
    assert server.records("virlogd.server")[0].message.endswith(": invalid priority 9")


def test_a_stream_that_is_not_virlogd_is_refused_with_its_pid(server):
    """A program writing syslog lines to the wrong socket is told apart and cut off."""
    sock = connect(server.path, greeting=False)
    sock.sendall(b"<13>Nov 23 14:29:04 app: hello\n")
    assert wait_closed(sock)
    sock.close()
    assert server.messages("virlogd.server") == [
        f"closed connection from pid {os.getpid()} (uid {UID}): not a virlogd client: "
        f"bad greeting b'<13>Nov ' (expected b'VIRLOGD\\x02')"]


def test_a_client_that_dies_inside_a_frame_is_reported(server):
    """A connection ending mid-frame loses that frame only, and says how much."""
    sock = connect(server.path)
    sock.sendall(frames("whole") + frames("cut")[:30])
    sock.close()
    report = server.wait_for(1, "virlogd.server")[0]
    assert report.message == (f"connection from pid {os.getpid()} (uid {UID}) ended inside "
                              f"a frame: 30 byte(s) of an incomplete frame discarded")
    assert server.messages("t") == ["whole"]


def test_connections_beyond_max_clients_are_refused_and_counted(tmp_path):
    """Over max_clients a new connection is closed at once; the others keep working."""
    with InProcessServer(str(tmp_path / "sock"), max_clients=2) as server:
        first, second = connect(server.path), connect(server.path)
        first.sendall(frames("a"))
        second.sendall(frames("b"))
        server.wait_for(2, "t")
        third = connect(server.path, greeting=False)
        assert wait_closed(third)
        first.sendall(frames("c"))
        server.wait_for(3, "t")
        report, = server.records("virlogd.server")
        assert report.message == (f"refused connection from pid {os.getpid()} (uid {UID}): "
                                  f"too many clients (2 connected, max_clients = 2); "
                                  f"1 refused so far")
        assert server.stats()["refused"] == 1
        for sock in (first, second, third):
            sock.close()


def test_refusal_reports_are_rate_limited(tmp_path):
    """A client reconnecting in a loop cannot flood the outputs with reports."""
    with InProcessServer(str(tmp_path / "sock"), max_clients=1) as server:
        keep = connect(server.path)
        for _ in range(20):
            extra = connect(server.path, greeting=False)
            assert wait_closed(extra)
            extra.close()
        assert server.stats()["refused"] == 20
        assert len(server.records("virlogd.server")) == 1
        keep.close()


def test_a_stalled_output_stops_reading_instead_of_buffering(server):
    """Backpressure: while the output is stuck the client's writes block; nothing is lost."""
    server.capture.gate.clear()                     # the output blocks on its next record
    sock = connect(server.path)
    sock.sendall(frames("first"))
    payload = frames(*(f"r{i}" for i in range(200000)))     # ~12 MB
    sock.setblocking(False)
    accepted = 0
    try:
        while accepted < len(payload):
            accepted += sock.send(payload[accepted:accepted + 65536])
    except BlockingIOError:
        pass
    # the daemon holds at most one read and one partial frame; the rest waits in the kernel
    assert accepted < 4 * 1024 * 1024
    server.capture.gate.set()
    sock.setblocking(True)
    sock.sendall(payload[accepted:])
    sock.shutdown(socket.SHUT_WR)
    assert wait_closed(sock)
    sock.close()
    assert server.messages("t") == ["first"] + [f"r{i}" for i in range(200000)]


def test_drain_routes_everything_already_sent_even_by_unaccepted_clients(tmp_path):
    """On shutdown, records sent before it are routed, including by clients still queued in
    the listen backlog."""
    server = InProcessServer(str(tmp_path / "sock"), run=False)   # nobody reads yet
    try:
        accepted_later = [connect(server.path) for _ in range(3)]
        for index, sock in enumerate(accepted_later):
            sock.sendall(frames(*(f"c{index} {i}" for i in range(1000))))
    finally:
        server.stop()
    for index in range(3):
        assert [m for m in server.messages("t") if m.startswith(f"c{index} ")] == \
            [f"c{index} {i}" for i in range(1000)]
    assert server.server.stats()["clients"] == 0
    for sock in accepted_later:
        assert wait_closed(sock)
        sock.close()


def test_a_closed_connection_means_the_records_were_routed(server):
    """When the daemon answers a client's shutdown with EOF, its records are already out."""
    sock = connect(server.path)
    sock.sendall(frames(*(str(i) for i in range(500))))
    sock.shutdown(socket.SHUT_WR)
    assert wait_closed(sock)
    assert len(server.messages("t")) == 500      # no waiting: already routed
    sock.close()


def test_a_version_2_client_is_told_how_many_records_are_routed(server):
    """After each read the daemon answers with the running count; at the end, all of them."""
    sock = connect(server.path)
    sock.sendall(frames("one", "two"))
    server.wait_for(2, "t")
    sock.sendall(frames("three"))
    server.wait_for(3, "t")
    sock.shutdown(socket.SHUT_WR)
    data = answers(sock)
    assert len(data) % 8 == 0
    counts = [c for (c,) in struct.iter_unpack("<Q", data)]
    assert counts == sorted(counts) and counts[-1] == 3


def test_a_version_1_client_gets_no_answers(server):
    """Version 1 clients (the protocol before answers) are served as before: never written to."""
    sock = connect(server.path, greeting=False)
    sock.sendall(wire.HELLO_V1 + frames("old client"))
    server.wait_for(1, "t")
    sock.shutdown(socket.SHUT_WR)
    assert answers(sock) == b""
    assert [r.message for r in server.records("t")] == ["old client"]
