"""The ring buffer: a byte-bounded history of every record, debug included.

It stores the formatted text lines (what a dump writes) as length-prefixed entries in one
circular byte area, so the bound is exact (``capacity`` bytes, prefixes included) and the
oldest *whole* records go first; an entry larger than the whole area is not stored.

The area is either a ``bytearray`` (the library) or an ``mmap`` of a file in the runtime
directory (the daemon). The file survives a death no handler can see — SIGKILL, the OOM
killer — and its header says whether the last run closed it cleanly, so the next start can
find the previous run's buffer and dump it as recovered.

``RingBuffer`` is complete in pure Python. When the C twin ``virlogd._cring`` is loaded
(``native.load``), ``RingBuffer(...)`` builds a ``_NativeRingBuffer`` instead: the same
class to its callers, whose ``append`` is the C core's own method (no Python frame per
record). The file, its header and ``recover()`` stay here, shared by both.
"""
from __future__ import annotations

import collections
import mmap
import os
import stat
import struct
from typing import Deque, Iterable, List, Optional, Tuple

from . import native, safepath

MAGIC = b"VLRING1\0"
_HEADER = struct.Struct("<8sIIIII")    # magic, capacity, head, tail, used, state
HEADER_SIZE = 32
_POINTERS = struct.Struct("<III")     # head, tail, used: rewritten on every append
_POINTERS_AT = 12
# recover() reads only tail and used, which sit side by side in one aligned 8-byte word: they
# are written with one 8-byte copy, so a SIGKILL can never leave one new and the other old
# (struct.pack_into zeroes its target and then fills it field by field)
_TAIL_USED = struct.Struct("<II")
_TAIL_USED_AT = 16
_HEAD = struct.Struct("<I")
_LEN = struct.Struct("<I")
RUNNING, CLEAN = 1, 0

_cring = native.load("ring")


class RingSpaceError(OSError):
    """The ring file's blocks could not be reserved (its filesystem is full): mapped as it
    is, the first write into an unbacked page would kill the process with SIGBUS."""


def _map_file(path: str, capacity: int) -> Tuple[int, mmap.mmap]:
    """The ring file at *path*, sized for *capacity*, opened and mapped: (fd, map).

    Opened without following a symlink, and only if it is a regular file of ours with one
    link (``safepath.create_private``). Every block is reserved before the mapping exists
    (``posix_fallocate``): a sparse file on a nearly full tmpfs maps fine and then raises
    SIGBUS at the first write into a page the filesystem cannot back. RingSpaceError says
    the space is not there, so the caller can keep the ring in memory instead."""
    size = HEADER_SIZE + capacity
    fd = safepath.create_private(path)
    try:
        os.ftruncate(fd, size)
        try:
            os.posix_fallocate(fd, 0, size)
        except OSError as err:
            raise RingSpaceError(err.errno, err.strerror, path) from None
        return fd, mmap.mmap(fd, size)
    except BaseException:
        os.close(fd)
        raise


def _get(area, capacity: int, offset: int, size: int) -> bytes:
    end = offset + size
    if end <= capacity:
        return bytes(area[offset:end])
    return bytes(area[offset:]) + bytes(area[:end - capacity])


def _walk(area, capacity: int, tail: int, used: int) -> List[bytes]:
    """The entries of *area* from *tail*, oldest first (also reads a recovered file)."""
    out, offset, left = [], tail, used
    while left > 0:
        (size,) = _LEN.unpack(_get(area, capacity, offset, 4))
        out.append(_get(area, capacity, (offset + 4) % capacity, size))
        offset = (offset + 4 + size) % capacity
        left -= 4 + size
    return out


class RingBuffer:
    __slots__ = ("capacity", "_area", "_head", "_tail", "_used", "_map", "_fd", "path",
                 "skipped", "_sizes")
    # whether append() is one C call, atomic under the GIL: the library's debug path then
    # appends without the router's lock (take() keeps dumps whole); Python's is not
    atomic_append = False

    def __new__(cls, capacity: int, path: Optional[str] = None, *, _pure: bool = False):
        # _pure (private): this one instance in pure Python, whatever was built (the tests)
        if cls is RingBuffer and _cring is not None and not _pure:
            cls = _NativeRingBuffer
        return super().__new__(cls)

    def __init__(self, capacity: int, path: Optional[str] = None, *,
                 _pure: bool = False) -> None:
        self.capacity = capacity
        self.path = path
        self._head = self._tail = self._used = 0
        self.skipped = 0          # entries too large to store
        # sizes of the stored entries, oldest first: dropping the oldest needs no read of
        # its length prefix back from the area (the hot path of a full ring)
        self._sizes: Deque[int] = collections.deque()
        self._map: Optional[mmap.mmap] = None
        self._fd = -1
        if path is None:
            self._area = bytearray(capacity)
            return
        self._fd, self._map = _map_file(path, capacity)
        self._area = memoryview(self._map)[HEADER_SIZE:]
        self._save(RUNNING)

    # -- writing ---------------------------------------------------------------------
    def append(self, data: bytes) -> None:
        if type(data) is not bytes:
            # any bytes-like object, as its raw bytes (as the C twin takes it); anything
            # else is a TypeError here, before any pointer moves
            data = bytes(memoryview(data))
        size = len(data) + 4
        cap = self.capacity
        if size > cap:
            self.skipped += 1
            return
        used = self._used + size
        tail = self._tail
        sizes = self._sizes
        head = self._head
        if used > cap:
            while used > cap:
                dropped = sizes.popleft()
                tail = (tail + dropped) % cap
                used -= dropped
            if self._map is not None:
                # the new entry overwrites the dropped ones: the header stops covering them
                # first, so a SIGKILL while it is written leaves a header recover() can trust
                self._map[_TAIL_USED_AT:_TAIL_USED_AT + 8] = _TAIL_USED.pack(tail, used - size)
        end = head + size
        if end <= cap:
            area = self._area
            area[head:head + 4] = _LEN.pack(size - 4)
            area[head + 4:end] = data
        else:
            self._put(head, _LEN.pack(size - 4) + data)
        self._head = end % cap
        self._tail = tail
        self._used = used
        sizes.append(size)
        if self._map is not None:
            self._map[_POINTERS_AT:_POINTERS_AT + 4] = _HEAD.pack(self._head)
            self._map[_TAIL_USED_AT:_TAIL_USED_AT + 8] = _TAIL_USED.pack(tail, used)

    def append_many(self, entries: Iterable[bytes]) -> None:
        """``append`` each of *entries* in order (one call for a batch)."""
        for data in entries:
            self.append(data)

    def _put(self, offset: int, data: bytes) -> None:
        end = offset + len(data)
        if end <= self.capacity:
            self._area[offset:end] = data
        else:
            first = self.capacity - offset
            self._area[offset:] = data[:first]
            self._area[:end - self.capacity] = data[first:]

    # -- reading ---------------------------------------------------------------------
    def entries(self) -> List[bytes]:
        """Every stored entry, oldest first."""
        return _walk(self._area, self.capacity, self._tail, self._used)

    @property
    def used(self) -> int:
        return self._used

    def __len__(self) -> int:
        return len(self.entries())

    def take(self) -> List[bytes]:
        """``entries()`` then ``clear()``: what a dump reads and empties."""
        entries = self.entries()
        self.clear()
        return entries

    def clear(self) -> None:
        self._head = self._tail = self._used = 0
        self._sizes.clear()
        if self._map is not None:
            self._save(RUNNING)

    def _pointers(self) -> Tuple[int, int, int]:
        return self._head, self._tail, self._used

    def _save(self, state: int) -> None:
        _HEADER.pack_into(self._map, 0, MAGIC, self.capacity, *self._pointers(), state)

    def close(self) -> None:
        """Mark the file clean (a clean stop leaves nothing to recover) and unmap it."""
        if self._map is None:
            return
        self._save(CLEAN)
        self._area.release()
        self._map.close()
        os.close(self._fd)
        self._map = None

    # -- recovery --------------------------------------------------------------------
    @staticmethod
    def recover(path: str) -> Optional[List[bytes]]:
        """The entries a previous run left in *path* if it did not close cleanly, else None.

        A damaged or foreign file yields None: recovery must never stop a start.
        """
        try:
            # never through a symlink, never waiting on a FIFO, only a regular file
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
            try:
                if not stat.S_ISREG(os.fstat(fd).st_mode):
                    return None
                with os.fdopen(fd, "rb", closefd=False) as handle:
                    blob = handle.read()
            finally:
                os.close(fd)
        except OSError:
            return None
        if len(blob) < HEADER_SIZE:
            return None
        magic, cap, head, tail, used, state = _HEADER.unpack_from(blob, 0)
        if magic != MAGIC or state != RUNNING or used == 0 or len(blob) < HEADER_SIZE + cap \
                or used > cap or tail >= cap:
            return None
        area = memoryview(blob)[HEADER_SIZE:HEADER_SIZE + cap]
        try:
            return _walk(area, cap, tail, used)
        except (struct.error, IndexError, ValueError):
            return None


class _NativeRingBuffer(RingBuffer):
    """A RingBuffer whose area, pointers and per-record work are a ``_cring.Core``.

    ``append`` is an instance slot holding the core's bound C method, so ``ring.append(x)``
    costs one C call. The inherited pure-Python state (``_area``, ``_head``, ``_sizes``...)
    stays unused: the core owns it.
    """
    __slots__ = ("_core", "append")
    atomic_append = True

    def __init__(self, capacity: int, path: Optional[str] = None, *,
                 _pure: bool = False) -> None:
        self.capacity = capacity
        self.path = path
        self._map = None
        self._fd = -1
        if path is None:
            self._core = _cring.Core(bytearray(capacity), capacity)
        else:
            self._fd, self._map = _map_file(path, capacity)
            try:
                self._core = _cring.Core(self._map, capacity, HEADER_SIZE, _POINTERS_AT)
            except BaseException:
                self._map.close()
                os.close(self._fd)
                raise
            self._save(RUNNING)
        self.append = self._core.append

    def append_many(self, entries: Iterable[bytes]) -> None:
        """``append`` each of *entries* in order (one call for a batch)."""
        self._core.append_many(entries)

    def entries(self) -> List[bytes]:
        """Every stored entry, oldest first."""
        return self._core.entries()

    @property
    def used(self) -> int:
        return self._core.used

    @property
    def skipped(self) -> int:        # entries too large to store
        return self._core.skipped

    @skipped.setter
    def skipped(self, value: int) -> None:
        self._core.skipped = value

    def take(self) -> List[bytes]:
        """``entries()`` then ``clear()`` in one C call, so an ``append`` made without the
        router's lock (the library's debug path, atomic under the GIL) is either taken or
        left for the next dump, never lost in between."""
        entries = self._core.take()
        if self._map is not None:
            self._save(RUNNING)
        return entries

    def clear(self) -> None:
        self._core.clear()
        if self._map is not None:
            self._save(RUNNING)

    def _pointers(self) -> Tuple[int, int, int]:
        core = self._core
        return core.head, core.tail, core.used

    def close(self) -> None:
        """Mark the file clean (a clean stop leaves nothing to recover) and unmap it."""
        if self._map is None:
            return
        self._save(CLEAN)
        self._core.release()         # an mmap cannot be closed while a buffer is exported
        self._map.close()
        os.close(self._fd)
        self._map = None
