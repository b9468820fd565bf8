"""The ring buffer: byte-bounded, oldest whole records first, survives SIGKILL on disk.

RingBuffer runs on the core ``speedups.pick`` chose (the suite runs once compiled, once with
``VIRLOGD_PURE_PYTHON=1``). The differential tests at the end feed the same random appends to
the compiled and the pure core laid out as the file is, and want the same entries, counters
and bytes.
"""
import array
import os
import signal
import subprocess
import sys

import pytest
from hypothesis import given, settings, strategies as st

from virlogd.core import ring as ring_module, speedups
from virlogd.core.ring import HEADER_SIZE, RingBuffer

COMPILED = speedups._speedups.RingCore if speedups.compiled() else None


@pytest.fixture
def make():
    """RingBuffer(capacity, path), on the core in use."""
    return RingBuffer


def test_entries_come_back_oldest_first(make):
    """What goes in comes out in the order it went in."""
    ring = make(1024)
    for i in range(5):
        ring.append(f"line {i}\n".encode())
    assert ring.entries() == [f"line {i}\n".encode() for i in range(5)]
    assert len(ring) == 5


def test_the_oldest_whole_records_are_overwritten_first(make):
    """When full, the oldest records go, whole, and the bound is never exceeded."""
    ring = make(100)
    for i in range(50):
        ring.append(b"%02d-0123456789\n" % i)      # 14 bytes + 4 of length = 18
        assert ring.used <= 100
    assert ring.entries() == [b"%02d-0123456789\n" % i for i in range(45, 50)]


def test_a_record_larger_than_the_whole_buffer_is_not_stored(make):
    """A record bigger than the buffer is skipped and counted; the others stay."""
    ring = make(64)
    ring.append(b"small\n")
    ring.append(b"x" * 61)
    assert ring.entries() == [b"small\n"]
    assert ring.skipped == 1
    ring.append(b"x" * 60)                          # exactly the whole area: stored
    assert ring.entries() == [b"x" * 60] and ring.used == 64 and ring.skipped == 1


def test_wrapping_keeps_records_intact_across_the_end_of_the_area(make):
    """Records that straddle the end of the circular area read back intact."""
    ring, model = make(50), []
    for i in range(200):
        data = bytes([65 + i % 26]) * (7 + i % 11)
        ring.append(data)
        model.append(data)
        while sum(len(d) + 4 for d in model) > 50:
            model.pop(0)
        assert ring.entries() == model


def test_any_bytes_like_entry_is_stored_as_bytes(make):
    """bytearray and memoryview entries read back as bytes, like bytes entries."""
    ring = make(64)
    ring.append(bytearray(b"one"))
    ring.append(memoryview(b"two"))
    ring.append(b"")
    assert ring.entries() == [b"one", b"two", b""]


def test_an_entry_that_is_not_bytes_like_changes_nothing(make):
    """A list or a str is a TypeError before anything moves, even in a full ring (where the
    oldest entry would be dropped first); an array is stored as its raw bytes."""
    ring = make(16)
    ring.append(b"abcdefgh")                        # 12 of 16: the next entry must drop it
    for bad in ([1, 2, 3, 4, 5, 6], "text-text"):
        with pytest.raises(TypeError):
            ring.append(bad)
        assert (ring.entries(), ring.used) == ([b"abcdefgh"], 12)
    ring.append(b"ijklmnop")
    ring.append(array.array("B", b"qrstuvwx"))
    assert (ring.entries(), ring.used) == ([b"qrstuvwx"], 12)


def test_clear_empties_the_buffer(make):
    """After a dump the buffer starts afresh, as libvirt's did."""
    ring = make(100)
    ring.append(b"a\n")
    ring.clear()
    assert ring.entries() == [] and ring.used == 0
    ring.append(b"b\n")
    assert ring.entries() == [b"b\n"]


def test_take_is_entries_then_clear_and_the_file_header_follows(make, tmp_path):
    """What a dump reads and empties in one step; a mapped ring's header says empty."""
    ring = make(100, str(tmp_path / "ring"))
    ring.append(b"a\n")
    ring.append(b"b\n")
    assert ring.take() == [b"a\n", b"b\n"]
    assert (ring.entries(), ring.used, ring.take()) == ([], 0, [])
    assert not RingBuffer.recover(str(tmp_path / "ring"))      # the header says empty too
    ring.append(b"c\n")
    # as a crash would leave it: the header says what is in the ring now
    assert RingBuffer.recover(str(tmp_path / "ring")) == [b"c\n"]
    ring.close()


def test_only_the_compiled_ring_appends_atomically(make):
    """The library appends without the router's lock only to a ring whose append is one C
    call (atomic under the GIL)."""
    assert make(100).atomic_append is speedups.compiled()
    assert (type(make(100)).__mro__[1] is COMPILED) == speedups.compiled()


def test_a_cleanly_closed_file_has_nothing_to_recover(make, tmp_path):
    """A clean stop leaves nothing to recover."""
    path = str(tmp_path / "ring")
    ring = make(256, path)
    ring.append(b"hello\n")
    ring.close()
    ring.close()                                    # twice is harmless
    assert RingBuffer.recover(path) is None


def test_a_closed_mapped_ring_refuses_to_write(make, tmp_path):
    """After close the mapping is gone: writing or reading raises ValueError, no crash."""
    ring = make(256, str(tmp_path / "ring"))
    ring.append(b"hello\n")
    ring.close()
    with pytest.raises(ValueError):
        ring.append(b"more\n")
    with pytest.raises(ValueError):
        ring.entries()
    assert ring.used == 10


def test_an_open_mapped_ring_is_recoverable_at_any_time(make, tmp_path):
    """The header is current after every append: a reader sees what a SIGKILL would leave."""
    path = str(tmp_path / "ring")
    ring = make(64, path)
    for i in range(30):
        ring.append(b"entry %d" % i)
        assert RingBuffer.recover(path) == ring.entries()
    ring.clear()
    assert RingBuffer.recover(path) is None           # nothing used: nothing to recover
    ring.close()


def test_the_buffer_of_a_sigkilled_process_is_recovered(tmp_path):
    """A process killed with SIGKILL leaves its buffer for the next start."""
    path = str(tmp_path / "ring")
    code = ("import os,sys; from virlogd.core.ring import RingBuffer\n"
            f"r = RingBuffer(256, {path!r})\n"
            "for i in range(40): r.append(b'rec %d\\n' % i)\n"
            "os.kill(os.getpid(), 9)\n")
    proc = subprocess.run([sys.executable, "-c", code], check=False)
    assert proc.returncode == -signal.SIGKILL
    entries = RingBuffer.recover(path)
    assert entries[-1] == b"rec 39\n"
    assert sum(len(e) + 4 for e in entries) <= 256
    assert entries == [b"rec %d\n" % i for i in range(40 - len(entries), 40)]


def test_a_damaged_file_recovers_nothing_and_never_raises(tmp_path):
    """Garbage in the ring file must never stop a start."""
    path = tmp_path / "ring"
    for _ in range(50):
        path.write_bytes(b"VLRING1\0" + os.urandom(200))
        assert RingBuffer.recover(str(path)) is None or isinstance(
            RingBuffer.recover(str(path)), list)
    path.write_bytes(b"junk")
    assert RingBuffer.recover(str(path)) is None
    assert RingBuffer.recover(str(tmp_path / "missing")) is None


# -- the compiled core against the pure one -------------------------------------------------
needs_core = pytest.mark.skipif(COMPILED is None,
                                reason="virlogd._speedups not built or VIRLOGD_PURE_PYTHON=1")


def _ops(capacity):
    entry = st.binary(max_size=capacity + 10)
    return st.lists(st.one_of(
        st.tuples(st.just("append"), entry),
        st.tuples(st.just("append"), entry),
        st.tuples(st.just("append"), entry),
        st.tuples(st.just("take"), st.none()),
        st.tuples(st.just("clear"), st.none()),
    ), max_size=60)


def _apply(core, op, arg):
    if op == "append":
        return core.append(arg)
    if op == "take":
        return core.take()
    return core.clear()


@needs_core
@settings(max_examples=300, deadline=None)
@given(data=st.data(), capacity=st.integers(0, 80))
def test_compiled_and_pure_cores_store_the_same(data, capacity):
    """Laid out as the ring file is (the pointers in the header, the area after it): the
    same results, entries, counters and bytes after every operation."""
    ops = data.draw(_ops(capacity))
    c_buf, py_buf = bytearray(HEADER_SIZE + capacity), bytearray(HEADER_SIZE + capacity)
    c = COMPILED(c_buf, capacity, HEADER_SIZE, ring_module._POINTERS_AT)
    py = ring_module.RingCore(py_buf, capacity, HEADER_SIZE, ring_module._POINTERS_AT)
    for op, arg in ops:
        assert _apply(c, op, arg) == _apply(py, op, arg)
        assert c.entries() == py.entries()
        assert (c.head, c.tail, c.used, c.skipped) == (py.head, py.tail, py.used, py.skipped)
        assert c_buf == py_buf
        assert c.used <= capacity
