"""The ring's core on its own, compiled and pure side by side: the same layout and pointers;
misuse raises, never crashes, and leaks nothing.

RingBuffer (the file, its header, recover) is tested in test_ring.py; the compiled core is
tested here whenever it is built, even with VIRLOGD_PURE_PYTHON=1.
"""
import array
import importlib
import mmap
import struct
import sys

import pytest

from virlogd.core import ring, speedups

COMPILED = importlib.import_module("virlogd._speedups").RingCore if speedups.built() else None
compiled_only = pytest.mark.skipif(COMPILED is None, reason="virlogd._speedups is not built")


@pytest.fixture(params=["compiled", "pure"])
def Core(request):
    """RingCore in the implementation under test."""
    if request.param == "pure":
        return ring.RingCore
    if COMPILED is None:
        pytest.skip("virlogd._speedups is not built")
    return COMPILED


def test_a_bytearray_area_holds_length_prefixed_entries(Core):
    """The area is the file format's: u32 LE length, then the bytes, wrapping at the end."""
    area = bytearray(16)
    core = Core(area, 16)
    core.append(b"abcdef")                          # 10 bytes at 0
    core.append(b"ghi")                             # 7 at 10: its data wraps to the start
    assert (core.head, core.tail, core.used) == (1, 10, 7)    # the first one dropped
    assert core.entries() == [b"ghi"]
    assert area[10:14] == struct.pack("<I", 3) and area[14:16] + area[:1] == b"ghi"


def test_the_header_pointers_follow_every_change(Core):
    """With pointers_at, head/tail/used are written there as three u32 LE."""
    buf = bytearray(16 + 20)
    core = Core(buf, 20, 16, 4)
    assert bytes(buf[:16]) == bytes(16)
    for data in (b"x" * 5, b"y" * 7, b"z" * 3):
        core.append(data)
        assert struct.unpack_from("<III", buf, 4) == (core.head, core.tail, core.used)
    core.clear()
    assert struct.unpack_from("<III", buf, 4) == (0, 0, 0)


@compiled_only
def test_tail_and_used_must_be_one_aligned_word():
    """They are stored together in one atomic 8-byte store, which needs 8-byte alignment
    (ring.py's header puts them at 16 of a page-aligned mapping)."""
    with pytest.raises(ValueError, match="^the header's tail and used must be 8-byte "
                                         "aligned in the buffer$"):
        COMPILED(bytearray(64), 32, 32, 0)


def test_a_released_core_raises_value_error_and_frees_the_mapping(Core):
    """release() lets the mmap close; later writes and reads raise ValueError, not crash."""
    area = mmap.mmap(-1, 64)
    core = Core(area, 32, 32, 4)
    core.append(b"hello")
    with pytest.raises(BufferError):
        area.close()                                # exported: the core protects its pointer
    core.release()
    core.release()
    area.close()
    assert core.closed
    with pytest.raises(ValueError, match="closed"):
        core.append(b"hello")
    with pytest.raises(ValueError, match="closed"):
        core.entries()
    core.append(b"x" * 40)                          # too large: counted, as ring.py does
    assert (core.used, core.skipped) == (9, 1)
    core.clear()
    assert core.entries() == [] and core.used == 0


@pytest.mark.parametrize("args, error", [
    ((b"read-only", 4), TypeError),
    (("text", 4), TypeError),
    ((bytearray(8), 9), ValueError),
    ((bytearray(8), -1), ValueError),
    ((bytearray(8), 4, 5), ValueError),
    ((bytearray(8), 4, -1), ValueError),
    ((bytearray(20), 8, 0, 0), ValueError),         # pointers inside the area
    ((bytearray(20), 8, 12, 4), ValueError),        # pointers overlap the area's start
    ((bytearray(20), 8, 12, 9), ValueError),        # pointers past the end
    ((bytearray(20), 8, 12, -2), ValueError),
])
def test_a_bad_layout_is_refused(Core, args, error):
    """The area and the pointers must fit in the buffer, apart."""
    with pytest.raises(error):
        Core(*args)


def test_entries_that_are_not_bytes_like_are_refused(Core):
    """append takes any bytes-like object; anything else is a TypeError that changes nothing."""
    core = Core(bytearray(64), 64)
    core.append(array.array("H", [0x4142, 0x4344]))
    with pytest.raises(TypeError):
        core.append("text")
    with pytest.raises(TypeError):
        core.append(None)
    assert core.entries() == [b"BADC" if sys.byteorder == "little" else b"ABCD"]


@pytest.mark.parametrize("prefix", [0xFFFFFFFC, 0x80000000, 61])
@compiled_only
def test_a_forged_length_prefix_never_overruns(prefix):
    """A foreign write to the ring file (a length larger than what is stored) stops the
    reader and makes the writer forget the area, never a hang or a read out of bounds."""
    area = bytearray(64)
    core = COMPILED(area, 64)
    core.append(b"x" * 20)
    struct.pack_into("<I", area, 0, prefix)
    assert core.entries() == []
    for _ in range(4):
        core.append(b"y" * 20)                      # the third one has to drop the forged one
    assert core.entries()[-1] == b"y" * 20 and core.used <= 64


def test_a_zero_capacity_ring_stores_nothing(Core):
    """Smaller than one prefix: every entry is skipped (and nothing divides by zero)."""
    core = Core(bytearray(0), 0)
    core.append(b"")
    assert (core.entries(), core.used, core.skipped) == ([], 0, 1)


@compiled_only
def test_no_references_leak():
    """Appending and reading back leaves every refcount as it was."""
    core = COMPILED(bytearray(256), 256)
    data, view, batch = b"r" * 40, memoryview(b"m" * 40), [b"b" * 30] * 3
    before = [sys.getrefcount(x) for x in (data, view, batch, batch[0])]
    for _ in range(1000):
        core.append(data)
        core.append(view)
        core.append(batch[0])
    assert [sys.getrefcount(x) for x in (data, view, batch, batch[0])] == before
    entries = core.entries()
    assert entries and all(sys.getrefcount(entries[i]) == 2 for i in range(len(entries)))
