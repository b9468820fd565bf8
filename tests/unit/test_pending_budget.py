"""The budget of incomplete frames, in process: random clients, frames and write sizes
through real socket pairs into ``server.ClientServer`` on a real ``EventLoop``.

After every step: the held bytes are exactly what the decoders hold, the budget taken is
exactly each connection's held-or-reserved, nothing beyond the budget plus the floor per
connection is held, and in the end every record arrives, in each client's order."""
import socket

from hypothesis import HealthCheck, example, given, settings, strategies as st

from virlogd.daemon import server
from virlogd.protocol import wire
from virlogd.daemon.loop import EventLoop
from virlogd.core.record import Record

BUDGET = 256 * 1024
WAITS = []          # per example: how often a connection had to wait


class Router:
    def __init__(self):
        self.records = []
        self.reports = []

    def route_many(self, records):
        self.records.extend(records)

    def route(self, record):
        self.reports.append(record.message)

    def count_drop(self, reason, count):
        raise AssertionError(f"dropped: {reason}")

    def flush(self):
        pass


def check(srv):
    conns = list(srv.connections.values())
    assert srv.held == sum(c.decoder.pending for c in conns)
    assert all(c.held == c.decoder.pending for c in conns)
    assert srv.committed == sum(max(c.held, c.reserved) for c in conns)
    assert srv.held <= BUDGET + len(conns) * server.PENDING_FLOOR
    assert sum(c.reserved for c in conns) <= BUDGET
    assert {id(c) for c in srv.waiting} == {id(c) for c in conns if c.waiting}


# mostly frames past the floor, from at least three clients, written in pieces: the budget
# (256 kB) holds two 120 kB frames, so a third must wait
sizes_st = st.one_of(st.integers(0, 2000), st.integers(server.PENDING_FLOOR, 120 * 1024),
                     st.integers(server.PENDING_FLOOR, 120 * 1024))
clients_st = st.lists(st.lists(sizes_st, min_size=1, max_size=5), min_size=3, max_size=6)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.large_base_example])
@given(clients=clients_st, chunks=st.lists(st.integers(512, 64 * 1024), min_size=1,
                                           max_size=50), skew=st.lists(st.integers(0, 5), min_size=1, max_size=20))
@example(clients=[[120 * 1024, 100, 120 * 1024]] * 6, chunks=[16 * 1024], skew=[0])
def test_every_record_arrives_and_the_budget_holds_at_every_step(clients, chunks, skew):
    loop = EventLoop()
    router = Router()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)     # never accepted from
    srv = server.ClientServer(loop, router, listener, max_pending=BUDGET)
    writers, streams, sent = [], [], []
    try:
        for index, sizes in enumerate(clients):
            mine, theirs = socket.socketpair()
            mine.setblocking(False)
            srv._admit(theirs)
            writers.append(mine)
            frames = [wire.encode(Record(2, f"c{index}", f"{index}:{n}:" + "x" * size))
                      for n, size in enumerate(sizes)]
            streams.append(memoryview(wire.HELLO + b"".join(frames)))
            sent.append(0)
        step = 0
        while any(sent[i] < len(streams[i]) for i in range(len(streams))):
            n = len(streams)                # round robin, each round rotated by skew
            i = (step + skew[(step // n) % len(skew)]) % n
            size = chunks[step % len(chunks)]
            step += 1
            if sent[i] < len(streams[i]):
                try:
                    sent[i] += writers[i].send(streams[i][sent[i]:sent[i] + size])
                except BlockingIOError:
                    pass                    # that connection waits: the budget is full
            loop.run_once(0)
            check(srv)
            assert step < 100000
        for sock in writers:
            sock.close()
        for _ in range(10000):
            if not srv.connections:
                break
            loop.run_once(0)
            check(srv)
        assert not srv.connections
        assert srv.held == srv.committed == 0 and not srv.waiting
        WAITS.append(srv.waits)
        for index, sizes in enumerate(clients):
            got = [r.message for r in router.records if r.source == f"c{index}"]
            assert [m.split(":", 2)[1] for m in got] == [str(n) for n in range(len(sizes))]
    finally:
        loop.close()
        listener.close()
        for sock in writers:
            sock.close()


def test_the_examples_above_did_make_connections_wait():
    assert WAITS[0] >= 4                  # the explicit example: six 120 kB frames at once
    assert sum(1 for w in WAITS if w) >= 2, WAITS
