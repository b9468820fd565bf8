"""The ring buffer: a byte-bounded history of every record, debug included.

It stores the formatted text lines (what a dump writes) as length-prefixed entries in one
circular byte area, so the bound is exact (``capacity`` bytes, prefixes included) and the
oldest *whole* records go first; an entry larger than the whole area is not stored.

The area is either a ``bytearray`` (the library) or an ``mmap`` of a file in the runtime
directory (the daemon). The file survives a death no handler can see — SIGKILL, the OOM
killer — and its header says whether the last run closed it cleanly, so the next start can
find the previous run's buffer and dump it as recovered.

``RingCore`` is the circular area and its per-record work (append, entries, take); it is
compiled when ``virlogd._speedups`` was built (``core/speedups.py`` picks), so that
``ring.append(x)`` costs one C call. ``RingBuffer`` adds the file, its header and
``recover()`` on top of whichever core was picked.
"""
from __future__ import annotations

import mmap
import os
import stat
import struct
from collections import deque
from typing import TYPE_CHECKING, Any, Deque, List, Optional, Tuple

from . import safepath, speedups

MAGIC = b"VLRING1\0"
_HEADER = struct.Struct("<8sIIIII")    # magic, capacity, head, tail, used, state
HEADER_SIZE = 32
_POINTERS_AT = 12                     # head, tail, used: rewritten on every append
# recover() reads only tail and used, which sit side by side in one aligned 8-byte word: they
# are written with one 8-byte copy, so a SIGKILL can never leave one new and the other old
# (struct.pack_into zeroes its target and then fills it field by field)
_TAIL_USED = struct.Struct("<II")
_HEAD = struct.Struct("<I")
_LEN = struct.Struct("<I")
RUNNING, CLEAN = 1, 0


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


def _get(area: Any, capacity: int, offset: int, size: int) -> bytes:
    end = offset + size
    if end <= capacity:
        return bytes(area[offset:end])
    return bytes(area[offset:]) + bytes(area[:end - capacity])


def _walk(area: Any, capacity: int, tail: int, used: int) -> List[bytes]:
    """The entries of *area* from *tail*, oldest first (also reads a recovered file)."""
    out, offset, left = [], tail, used
    while left > 0:
        (size,) = _LEN.unpack(_get(area, capacity, offset, 4))
        out.append(_get(area, capacity, (offset + 4) % capacity, size))
        offset = (offset + 4 + size) % capacity
        left -= 4 + size
    return out


class RingCore:
    """The circular area: ``capacity`` bytes at *area_at* of a writable *buffer*, entries
    stored as a u32 LE length and the bytes, the oldest whole entries dropped to make room.
    With *pointers_at*, head, tail and used are written there (u32 LE each) after every
    change, tail and used as one 8-byte copy. ``release()`` gives the buffer back (an mmap
    cannot close while it is exported); ``append`` and ``entries`` then raise ValueError.
    """

    __slots__ = ("capacity", "head", "tail", "used", "skipped", "_view", "_area", "_at",
                 "_sizes")
    # whether append() is one C call, atomic under the GIL: the library's debug path then
    # appends without the router's lock (take() keeps dumps whole); Python's is not
    atomic_append = False

    def __init__(self, buffer: Any, capacity: int, area_at: int = 0,
                 pointers_at: int = -1) -> None:
        view = memoryview(buffer).cast("B")
        if view.readonly:
            raise TypeError("RingCore() needs a writable buffer")
        if capacity < 0 or capacity > 0xFFFFFFFF or area_at < 0 or \
                area_at > len(view) - capacity:
            raise ValueError("the area does not fit in the buffer")
        if pointers_at != -1 and (pointers_at < 0 or pointers_at > len(view) - 12 or
                                  area_at - 12 < pointers_at < area_at + capacity):
            raise ValueError("the header pointers must fit in the buffer, outside the area")
        self._view: Optional[memoryview] = view
        self._area = view[area_at:area_at + capacity]
        self._at = pointers_at
        self.capacity = capacity
        self.head = self.tail = self.used = self.skipped = 0
        # sizes of the stored entries, oldest first: dropping the oldest needs no read of
        # its length prefix back from the area (the hot path of a full ring)
        self._sizes: Deque[int] = deque()

    @property
    def closed(self) -> bool:
        return self._view is None

    def _publish(self) -> None:
        if self._at >= 0 and self._view is not None:
            at = self._at
            self._view[at:at + 4] = _HEAD.pack(self.head)
            self._view[at + 4:at + 12] = _TAIL_USED.pack(self.tail, self.used)

    def _check_open(self) -> None:
        if self._view is None:
            raise ValueError("ring buffer core is closed")

    def append(self, data: Any) -> None:
        if type(data) is not bytes:
            # any bytes-like object, as its raw bytes; anything else is a TypeError here,
            # before any pointer moves
            data = bytes(memoryview(data))
        size = len(data) + 4
        cap = self.capacity
        if size > cap:
            self.skipped += 1
            return
        self._check_open()
        used = self.used + size
        if used > cap:
            sizes = self._sizes
            tail = self.tail
            while used > cap:
                dropped = sizes.popleft()
                tail = (tail + dropped) % cap
                used -= dropped
            # the new entry overwrites the dropped ones: the header stops covering them
            # first, so a SIGKILL while it is written leaves a header recover() can trust
            self.tail, self.used = tail, used - size
            self._publish()
        head = self.head
        end = head + size
        entry = _LEN.pack(size - 4) + data
        area = self._area
        if end <= cap:
            area[head:end] = entry
        else:
            first = cap - head
            area[head:] = entry[:first]
            area[:end - cap] = entry[first:]
        self.head = end % cap
        self.used = used
        self._sizes.append(size)
        self._publish()

    def entries(self) -> List[bytes]:
        """Every stored entry, oldest first."""
        if not self.used:
            return []
        self._check_open()
        return _walk(self._area, self.capacity, self.tail, self.used)

    def take(self) -> List[bytes]:
        """``entries()`` then ``clear()``: what a dump reads and empties."""
        entries = self.entries()
        self.clear()
        return entries

    def clear(self) -> None:
        """Forget every entry (``skipped`` is kept)."""
        self.head = self.tail = self.used = 0
        self._sizes.clear()
        self._publish()

    def release(self) -> None:
        if self._view is not None:
            self._area.release()
            self._view.release()
            self._view = None


if TYPE_CHECKING:
    _Core = RingCore
else:
    _Core = speedups.pick(RingCore)


class RingBuffer(_Core):
    """The ring: in memory (*path* None: the library) or in a mapped file (the daemon)."""

    __slots__ = ("path", "_map", "_fd")

    def __init__(self, capacity: int, path: Optional[str] = None) -> None:
        self.path = path
        self._map: Optional[mmap.mmap] = None
        self._fd = -1
        if path is None:
            super().__init__(bytearray(capacity), capacity)
            return
        fd, mapped = _map_file(path, capacity)
        try:
            super().__init__(mapped, capacity, HEADER_SIZE, _POINTERS_AT)
        except BaseException:
            mapped.close()
            os.close(fd)
            raise
        self._fd, self._map = fd, mapped
        self._save(RUNNING)

    def __len__(self) -> int:
        return len(self.entries())

    def take(self) -> List[bytes]:
        """``entries()`` then ``clear()``, in one call to the core: with the compiled core,
        an ``append`` made without the router's lock (the library's debug path, atomic under
        the GIL) is either taken or left for the next dump, never lost in between."""
        entries = super().take()
        if self._map is not None:
            self._save(RUNNING)
        return entries

    def clear(self) -> None:
        super().clear()
        if self._map is not None:
            self._save(RUNNING)

    def _save(self, state: int) -> None:
        assert self._map is not None
        _HEADER.pack_into(self._map, 0, MAGIC, self.capacity, self.head, self.tail,
                          self.used, state)

    def close(self) -> None:
        """Mark the file clean (a clean stop leaves nothing to recover) and unmap it."""
        if self._map is None:
            return
        self._save(CLEAN)
        self.release()
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
