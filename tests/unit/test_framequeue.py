"""The Client's queue of frames: order, byte counts, when it calls on_first / on_full /
on_sent, its errors word for word, direct sends, and concurrent pushes.
"""
import gc
import threading
import weakref

import pytest

from virlogd.protocol import framequeue



@pytest.fixture
def impl():
    return framequeue.FrameQueue


class Calls:
    def __init__(self):
        self.log = []

    def first(self):
        self.log.append("first")

    def full(self):
        self.log.append("full")


def make(impl, flush_bytes=10, hold=3):
    calls = Calls()
    return impl(flush_bytes, hold, calls.first, calls.full), calls


def test_frames_come_out_in_order_and_the_queue_is_left_empty(impl):
    q, _ = make(impl, flush_bytes=100)
    for frame in (b"a", b"bc", b"def"):
        q.push(frame)
    assert (len(q), q.size) == (3, 6)
    assert q.take() == [b"a", b"bc", b"def"]
    assert (len(q), q.size, q.take()) == (0, 0, [])


def test_on_first_is_called_on_each_empty_to_non_empty_push_only(impl):
    q, calls = make(impl, flush_bytes=100)
    q.connected = True
    q.push(b"x")
    q.push(b"y")
    assert calls.log == ["first"]
    q.take()
    q.push(b"z")
    assert calls.log == ["first", "first"]


def test_on_full_when_the_bytes_pass_flush_bytes(impl):
    q, calls = make(impl, flush_bytes=4)
    q.connected = True
    q.push(b"abcd")                  # exactly flush_bytes: not yet
    assert calls.log == ["first"]
    q.push(b"e")
    assert calls.log == ["first", "full"]


def test_a_first_frame_larger_than_flush_bytes_calls_both(impl):
    q, calls = make(impl, flush_bytes=4)
    q.connected = True
    q.push(b"abcdefgh")
    assert calls.log == ["first", "full"]


def test_hold_counts_only_while_disconnected(impl):
    q, calls = make(impl, flush_bytes=1000, hold=2)
    for frame in (b"1", b"2", b"3"):
        q.push(frame)
    assert calls.log == ["first", "full"]          # the third frame is over hold
    q.take()
    calls.log.clear()
    q.connected = True
    for frame in (b"1", b"2", b"3", b"4"):
        q.push(frame)
    assert calls.log == ["first"] and q.connected is True


def test_a_failing_hook_raises_to_the_caller_and_the_frame_stays(impl):
    def boom():
        raise RuntimeError("no thread")
    q = impl(100, 10, boom, boom)
    with pytest.raises(RuntimeError, match="^no thread$"):
        q.push(b"kept")
    assert q.take() == [b"kept"]


@pytest.mark.parametrize("bad, name", [("text", "str"), (bytearray(b"x"), "bytearray"),
                                       (memoryview(b"x"), "memoryview"), (None, "NoneType")])
def test_only_bytes_are_frames(impl, bad, name):
    q, calls = make(impl)
    with pytest.raises(TypeError) as err:
        q.push(bad)
    assert str(err.value) == f"frame must be bytes, not {name}"
    with pytest.raises(TypeError) as err:
        q.put_back([b"ok", bad])
    assert str(err.value) == f"frame must be bytes, not {name}"
    assert (len(q), q.size, calls.log) == (0, 0, [])       # nothing queued, nothing called


def test_a_bytes_subclass_is_kept_as_is(impl):
    class Report(bytes):
        pass
    q, _ = make(impl, flush_bytes=100)
    report = Report(b"r")
    q.put_back([report])
    assert q.take()[0] is report


def test_put_back_goes_before_what_is_queued(impl):
    q, _ = make(impl, flush_bytes=100)
    q.push(b"later")
    q.put_back(iter([b"one", b"two"]))
    assert (q.size, q.take()) == (11, [b"one", b"two", b"later"])


def test_drop_oldest_removes_at_most_what_is_there(impl):
    q, _ = make(impl, flush_bytes=100)
    for frame in (b"a", b"bb", b"ccc"):
        q.push(frame)
    assert q.drop_oldest(2) == 2 and q.size == 3
    assert q.drop_oldest(-5) == 0 and q.drop_oldest(10 ** 30) == 1
    assert (len(q), q.size) == (0, 0)
    with pytest.raises(TypeError) as err:
        q.drop_oldest("1")
    assert str(err.value) == "'str' object cannot be interpreted as an integer"


def test_size_is_read_only(impl):
    q, _ = make(impl)
    with pytest.raises(AttributeError):
        q.size = 5


def test_concurrent_pushes_and_takes_lose_nothing_and_keep_each_threads_order(impl):
    q, _ = make(impl, flush_bytes=1 << 30, hold=1 << 30)
    q.connected = True
    taken = []
    done = threading.Event()

    def drain():
        while not done.is_set():
            taken.extend(q.take())
        taken.extend(q.take())

    def pusher(tid):
        for i in range(5000):
            q.push(b"%d:%d" % (tid, i))
    drainer = threading.Thread(target=drain)
    drainer.start()
    pushers = [threading.Thread(target=pusher, args=(t,)) for t in range(8)]
    for t in pushers:
        t.start()
    for t in pushers:
        t.join()
    done.set()
    drainer.join()
    assert len(taken) == 40000 and q.size == 0
    for tid in range(8):
        mine = [int(f.split(b":")[1]) for f in taken if f.startswith(b"%d:" % tid)]
        assert mine == list(range(5000))


def test_an_owner_in_a_cycle_with_its_queue_is_collected(impl):
    class Owner:
        def __init__(self):
            self.q = impl(10, 10, self.hook, self.hook)

        def hook(self):
            pass
    owner = Owner()
    owner.q.push(b"x")
    gone = weakref.ref(owner)
    del owner
    gc.collect()
    assert gone() is None


def test_a_frame_freed_by_drop_oldest_finds_the_queue_consistent_and_unlocked():
    """Freeing a dropped frame can run a finaliser that uses the queue: it runs once the
    queue is consistent again and its lock is free (else: a deadlock)."""
    q, _ = make(framequeue.FrameQueue, flush_bytes=100)
    seen = []

    class Watched(bytes):
        def __del__(self):
            seen.append((len(q), q.size, q.take()))
    q.push(Watched(b"x" * 10))
    q.push(b"y" * 5)
    assert q.drop_oldest(1) == 1
    assert seen == [(1, 5, [b"y" * 5])]
    assert (len(q), q.size) == (0, 0)


# -- direct sends: a record reaches the kernel before the logging call returns --------------
class Hooks(Calls):
    def sent(self):
        self.log.append("sent")


def direct(impl, flush_bytes=1 << 20, hold=100):
    import socket
    calls = Hooks()
    q = impl(flush_bytes, hold, calls.first, calls.full, calls.sent)
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    q.connected = True
    q.sock = a
    return q, calls, a, b


def test_a_push_with_a_socket_and_nothing_queued_is_in_the_kernel_at_once(impl):
    q, calls, a, b = direct(impl)
    q.sent_limit = 3
    q.push(b"one")
    q.push(b"two")
    assert b.recv(100) == b"onetwo"          # no take(), no thread: already written
    assert (len(q), q.size, calls.log) == (0, 0, [])
    q.push(b"three")                         # the third direct send: time to note them
    assert calls.log == ["sent"]
    assert q.take_sent() == [b"one", b"two", b"three"] and q.take_sent() == []
    a.close(), b.close()


def test_nothing_is_sent_directly_past_a_queued_frame_or_without_a_socket(impl):
    q, calls, a, b = direct(impl)
    q.sock = None
    q.push(b"queued")
    q.sock = a
    q.push(b"after")                         # order: behind what is queued
    assert q.take_all() == (0, [b"queued", b"after"], [])
    b.setblocking(False)
    with pytest.raises(BlockingIOError):
        b.recv(100)
    assert calls.log == ["first"]
    a.close(), b.close()


def test_a_full_socket_queues_the_rest_and_says_how_much_went_out(impl):
    q, calls, a, b = direct(impl)
    frame = bytes(range(256)) * 64           # 16 kB
    pushed = 0
    while not len(q):
        q.push(frame)
        pushed += 1
    head, frames, sent = q.take_all()
    assert (len(frames), len(sent)) == (1, pushed - 1) and 0 <= head < len(frame)
    assert calls.log[0] == "first"
    b.setblocking(False)
    data = b""
    while True:
        try:
            data += b.recv(1 << 20)
        except BlockingIOError:
            break
    assert data == frame * (pushed - 1) + frame[:head]
    assert (q.head_sent, len(q), q.size) == (0, 0, 0)
    a.close(), b.close()


def test_a_broken_connection_queues_the_frame_and_asks_for_a_write_now(impl):
    q, calls, a, b = direct(impl)
    b.close()
    q.push(b"to nobody")
    assert q.sock is None
    assert calls.log == ["first", "full"]
    assert q.take() == [b"to nobody"]
    a.close()
