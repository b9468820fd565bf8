"""FollowHub in process, on a real EventLoop and socket pair: filters, the bounded queue, the
missed notice once there is room, the tap only while someone follows; record JSON both ways."""
import json
import socket

from virlogd.core.filters import FilterSet
from virlogd.daemon.follow import FollowHub, encode, follow_filters, record_from_json, record_json
from virlogd.daemon.loop import EventLoop
from virlogd.core.record import Record
from virlogd.core.router import Router, RouterState
from virlogd.core.specs import parse_filters
from virlogd.core.textformat import format_line


def _hub(queue_bytes=1024 * 1024):
    loop = EventLoop()
    router = Router(RouterState(FilterSet([], 3), []))
    return loop, router, FollowHub(loop, router, queue_bytes=queue_bytes)


def _read_all(sock):
    data = b""
    sock.setblocking(False)
    while True:
        try:
            chunk = sock.recv(1 << 20)
        except BlockingIOError:
            return data
        if not chunk:
            return data
        data += chunk


def test_filters_select_and_the_tap_is_set_only_while_someone_follows():
    loop, router, hub = _hub()
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    assert router.tap is None
    hub.add(ours, follow_filters(parse_filters("1:qemu 3:remote")[0]), "test")
    assert router.tap is not None
    router.route_many([Record(1, "qemu.mon", "q debug", time=1.0, pid=1),
                       Record(2, "remote.rpc", "r info", time=1.0, pid=1),
                       Record(3, "remote.rpc", "r warning", time=1.0, pid=1),
                       Record(4, "other", "o error", time=1.0, pid=1)])
    loop.run_once(0)
    lines = _read_all(theirs).decode().splitlines()
    assert [json.loads(x)["message"] for x in lines] == ["q debug", "r warning"]
    theirs.close()
    loop.run_once(0.1)                      # it left: the hub notices and lets go of the tap
    assert (hub.stats()["connected"], router.tap) == (0, None)
    loop.close()


def test_a_full_queue_counts_what_it_misses_and_says_so_once_it_has_room():
    loop, router, hub = _hub(queue_bytes=4096)
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    hub.add(ours, None, "test")
    records = [Record(3, "s", f"record {i} " + "x" * 100, time=1.0, pid=1) for i in range(2000)]
    for start in range(0, len(records), 100):
        router.route_many(records[start:start + 100])
        loop.run_once(0)
    missed = hub.stats()["missed"]
    assert missed > 1000
    received = b""
    for _ in range(200):                    # now it reads
        received += _read_all(theirs)
        loop.run_once(0.01)
    lines = [json.loads(x) for x in received.decode().splitlines()]
    # one notice per stall (the socket's own buffer took some early on: maybe two here),
    # each where the records it counts are missing, all of them counted
    notices = [x["missed"] for x in lines if "missed" in x]
    assert 1 <= len(notices) <= 3 and sum(notices) == missed
    shown = [x for x in lines if "missed" not in x]
    assert len(shown) + missed == len(records)
    seen = iter(records)
    for x in lines:
        if "missed" in x:
            for _ in range(x["missed"]):
                next(seen)
        else:
            assert x["message"] == next(seen).message
    hub.close()
    loop.close()


def test_record_json_keeps_every_field_and_gives_the_same_text_line():
    record = Record(1, "qemu.mon", "bad \udcff byte\nsecond line", time=1796202903.375,
                    func="send", line=12, file="m.c", pid=42, uid=0, gid=0, ident="qemu",
                    fields={"MESSAGE_ID": "abc", "BLOB": b"\x00\xff"}, stack="a\nb",
                    relayed=True)
    obj = json.loads(encode(record))
    assert obj["fields"] == {"MESSAGE_ID": "abc", "BLOB": {"base64": "AP8="}}
    back = record_from_json(obj)
    assert record_json(back) == record_json(record)
    assert format_line(back, True) == format_line(record, True)
