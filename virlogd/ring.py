"""The ring buffer: a byte-bounded history of every record, debug included.

It stores the formatted text lines (what a dump writes) as length-prefixed entries in one
circular byte area, so the bound is exact (``capacity`` bytes, prefixes included) and the
oldest *whole* records go first; an entry larger than the whole area is not stored.

The area is either a ``bytearray`` (the library) or an ``mmap`` of a file in the runtime
directory (the daemon). The file survives a death no handler can see — SIGKILL, the OOM
killer — and its header says whether the last run closed it cleanly, so the next start can
find the previous run's buffer and dump it as recovered.
"""
from __future__ import annotations

import collections
import mmap
import os
import struct
from typing import Deque, List, Optional

MAGIC = b"VLRING1\0"
_HEADER = struct.Struct("<8sIIIII")    # magic, capacity, head, tail, used, state
HEADER_SIZE = 32
_POINTERS = struct.Struct("<III")     # head, tail, used: rewritten on every append
_POINTERS_AT = 12
_LEN = struct.Struct("<I")
RUNNING, CLEAN = 1, 0


class RingBuffer:
    __slots__ = ("capacity", "_area", "_head", "_tail", "_used", "_map", "_fd", "path",
                 "skipped", "_sizes")

    def __init__(self, capacity: int, path: Optional[str] = None) -> None:
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
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            os.ftruncate(fd, HEADER_SIZE + capacity)
            self._map = mmap.mmap(fd, HEADER_SIZE + capacity)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        self._area = memoryview(self._map)[HEADER_SIZE:]
        self._save(RUNNING)

    # -- writing ---------------------------------------------------------------------
    def append(self, data: bytes) -> None:
        size = len(data) + 4
        cap = self.capacity
        if size > cap:
            self.skipped += 1
            return
        used = self._used + size
        tail = self._tail
        sizes = self._sizes
        while used > cap:
            dropped = sizes.popleft()
            tail = (tail + dropped) % cap
            used -= dropped
        head = self._head
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
            _POINTERS.pack_into(self._map, _POINTERS_AT, self._head, tail, used)

    def _put(self, offset: int, data: bytes) -> None:
        end = offset + len(data)
        if end <= self.capacity:
            self._area[offset:end] = data
        else:
            first = self.capacity - offset
            self._area[offset:] = data[:first]
            self._area[:end - self.capacity] = data[first:]

    def _get(self, offset: int, size: int) -> bytes:
        end = offset + size
        if end <= self.capacity:
            return bytes(self._area[offset:end])
        return bytes(self._area[offset:]) + bytes(self._area[:end - self.capacity])

    # -- reading ---------------------------------------------------------------------
    def entries(self) -> List[bytes]:
        """Every stored entry, oldest first."""
        out, offset, left = [], self._tail, self._used
        while left > 0:
            (size,) = _LEN.unpack(self._get(offset, 4))
            out.append(self._get((offset + 4) % self.capacity, size))
            offset = (offset + 4 + size) % self.capacity
            left -= 4 + size
        return out

    @property
    def used(self) -> int:
        return self._used

    def __len__(self) -> int:
        return len(self.entries())

    def clear(self) -> None:
        self._head = self._tail = self._used = 0
        self._sizes.clear()
        if self._map is not None:
            self._save(RUNNING)

    def _save(self, state: int) -> None:
        _HEADER.pack_into(self._map, 0, MAGIC, self.capacity, self._head, self._tail,
                          self._used, state)

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
            with open(path, "rb") as handle:
                blob = handle.read()
        except OSError:
            return None
        if len(blob) < HEADER_SIZE:
            return None
        magic, cap, head, tail, used, state = _HEADER.unpack_from(blob, 0)
        if magic != MAGIC or state != RUNNING or used == 0 or len(blob) < HEADER_SIZE + cap \
                or used > cap or tail >= cap:
            return None
        ring = RingBuffer(cap)
        ring._area[:] = blob[HEADER_SIZE:HEADER_SIZE + cap]
        ring._head, ring._tail, ring._used = head, tail, used
        try:
            return ring.entries()
        except (struct.error, IndexError, ValueError):
            return None
