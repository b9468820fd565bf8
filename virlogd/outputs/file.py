"""``x:file:PATH``: text lines appended to a file (mode 0600, created if missing).

Writes are buffered per batch and pushed by ``flush()`` (the daemon flushes after every batch
it reads, the library after every record), so a dump or an exit never loses a line.

Rotation (``max_size`` > 0): see ``virlogd.rotation``. The file's size is tracked here, from
one ``fstat`` at open, so the hot path never stats; a batch that fits is one ``write()``.

External rotation: SIGHUP is ignored, so logrotate cannot tell us to reopen. Instead
``poll()`` (the daemon calls it every 0.5 s; ``flush()`` calls it at most once a second, which
covers the library) compares the path with the inode we hold open. When logrotate has renamed
or removed the file (or put another one in its place), what is buffered is written to the old
file first, then the path is reopened: no record is lost, the last few land in the rotated
file. A file truncated in place (``copytruncate``) is noticed too, and only resets the size.

A write that fails (disk full, a pipe nobody reads) keeps what was not written and retries
it on the next flush, but only up to ``MAX_BACKLOG`` bytes: beyond that the oldest whole
lines are dropped and counted (``dropped``), so a destination that stays broken costs
bounded memory, and writing resumes by itself once it works again.

A FIFO (``1:file:/run/x.fifo``, for a reader such as a log shipper) is opened read-write and
non-blocking: neither the open (no reader yet) nor a write (a reader that stops reading) can
ever block the daemon; the pipe keeps what fits and the rest is dropped and counted.
"""
from __future__ import annotations

import errno
import os
import stat
import time
from typing import Optional, Tuple

from ..core import rotation, safepath
from ..core.specs import OutputSpec
from .base import LineBufferOutput, OutputContext
from .dgram import DeliveryError

CHECK_INTERVAL = 1.0   # seconds between path checks made from flush()
MAX_BACKLOG = 1024 * 1024       # bytes kept for retry after failed writes
CONTINUATION = b"\n  | "        # textformat.CONTINUATION after a newline: not a new record


def open_append(path: str, readable: bool = False) -> int:
    """Open *path* for appending; a symlink another user planted in a directory they can
    write to is refused, never followed (``safepath.open_output``: logrotate's rule)."""
    mode = os.O_RDWR if readable else os.O_WRONLY
    return safepath.open_output(path, mode | os.O_APPEND | os.O_CREAT, 0o600)


class FileOutput(LineBufferOutput):
    def __init__(self, spec: OutputSpec, ctx: OutputContext) -> None:
        super().__init__(spec, ctx)
        self.path = spec.name or ""      # never empty: the spec parser wants a path
        self.max_size = max(0, ctx.max_size or 0)
        self.max_backups = max(0, ctx.max_backups or 0)
        self._carry = b""                 # bytes a failed write left over, written first
        self._written = 0
        self._fd = -1
        self._inode: Optional[Tuple[int, int]] = None
        self._size = 0
        self._last_newline = 0            # file offset just after the last newline (0: none)
        self._next_check = time.monotonic() + CHECK_INTERVAL
        self._open()                      # fail at build time: a bad path is refused

    # -- the file --------------------------------------------------------------------
    def _open(self) -> None:
        readable = bool(self.max_size)   # to find the last newline of an existing file
        if _is_fifo(self.path):
            # O_RDWR: opening never waits for a reader; O_NONBLOCK: a full pipe is EAGAIN
            fd = safepath.open_output(self.path, os.O_RDWR | os.O_NONBLOCK)
            self.max_size = 0            # nothing to rotate in a pipe
            readable = False
        else:
            try:
                fd = open_append(self.path, readable)
            except PermissionError:
                if not readable:
                    raise
                fd, readable = open_append(self.path), False
        try:
            info = os.fstat(fd)
            self._last_newline = _last_newline(fd, info.st_size) if readable else 0
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        self._inode = (info.st_dev, info.st_ino)
        self._size = info.st_size

    def _close_fd(self) -> None:
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            os.close(fd)

    # -- records (handle: LineBufferOutput) -------------------------------------------
    def write_text(self, text: str) -> None:
        self._pending.append(text)
        self.flush()

    def flush(self) -> None:
        if time.monotonic() >= self._next_check:
            self.poll()
        self._write_pending()

    def _write_pending(self) -> None:
        if not self._pending and not self._carry:
            return
        data = self._carry + "".join(self._pending).encode("utf-8", "surrogateescape")
        self._pending.clear()
        self._carry = b""
        self._write(data)

    def _write(self, data: bytes) -> None:
        """Write all of *data*, rolling over as needed; on an error, what was not written is
        kept (``_carry``) and retried by the next flush, then the error is raised."""
        pos, end = 0, len(data)
        self._written = 0      # how far _write_span got, even when it raised
        rotate_error: Optional[OSError] = None
        try:
            if self._fd < 0:
                self._open()
            while pos < end:
                cut = None
                if self.max_size and rotate_error is None:
                    cut = rotation.cut_point(data, pos, end, self._size, self.max_size,
                                             self._last_newline)
                stop = end if cut is None else pos + cut
                pos = self._write_span(data, pos, stop)
                if cut is not None:
                    try:
                        self._rollover()
                    except OSError as err:
                        # keep every record: write on past the limit and say why
                        rotate_error = err
        except BlockingIOError:
            self._keep(data[max(pos, self._written):])
            raise DeliveryError(errno.EAGAIN, f"{self.path} is not being read: the pipe is "
                                              f"full ({self.dropped} line(s) dropped so far)") \
                from None
        except BaseException:
            # not data[pos:]: a short write before the error already wrote part of the span
            self._keep(data[max(pos, self._written):])
            raise
        if rotate_error is not None:
            raise OSError(rotate_error.errno,
                          f"cannot rotate {self.path}: "
                          f"{rotate_error.strerror or rotate_error}; writing on past "
                          f"max_size ({self.max_size} bytes)")

    def _keep(self, rest: bytes) -> None:
        """Keep *rest* for the next flush, at most MAX_BACKLOG bytes: the line a short write
        cut is completed, then the oldest whole lines go first, counted in ``dropped``."""
        excess = len(rest) - MAX_BACKLOG
        if excess > 0:
            head = rest.find(b"\n") + 1         # the line a short write may have cut
            cut = rest.find(b"\n", head + excess - 1) + 1 or len(rest)
            self.dropped += rest.count(b"\n", head, cut) - rest.count(CONTINUATION, head, cut)
            rest = rest[:head] + rest[cut:]
        self._carry = rest

    def _write_span(self, data: bytes, pos: int, stop: int) -> int:
        view = memoryview(data)
        begin = pos
        try:
            while pos < stop:
                pos += os.write(self._fd, view[pos:stop])
        finally:
            if pos > begin:
                newline = data.rfind(b"\n", begin, pos)
                if newline >= 0:
                    self._last_newline = self._size + (newline - begin) + 1
                self._size += pos - begin
            self._written = pos
        return pos

    def _rollover(self) -> None:
        rotation.rollover(self.path, self.max_backups)
        self._close_fd()
        self._open()

    # -- housekeeping ----------------------------------------------------------------
    def poll(self) -> None:
        """Reopen the path if it no longer names the file we hold (renamed, removed or
        replaced by logrotate); buffered records go to the old file first. Also retries
        what a failed write left over, so a quiet daemon catches up once the disk has
        space again or the pipe's reader is back."""
        self._next_check = time.monotonic() + CHECK_INTERVAL
        if self._fd < 0:
            return
        try:
            info: Optional[os.stat_result] = os.stat(self.path)
        except FileNotFoundError:
            info = None
        if info is not None and (info.st_dev, info.st_ino) == self._inode:
            if info.st_size < self._size:       # truncated in place (copytruncate)
                self._size = info.st_size
                self._last_newline = 0
            if self._carry:                      # a failed write: retry without new records
                self._write_pending()
            return
        self._write_pending()                    # to the old file: nothing is lost
        self._close_fd()
        self._open()

    def close(self) -> None:
        try:
            self._write_pending()
        finally:
            self._close_fd()


def _is_fifo(path: str) -> bool:
    try:
        return stat.S_ISFIFO(os.stat(path).st_mode)
    except OSError:
        return False


def _last_newline(fd: int, size: int) -> int:
    """The offset just after the last newline among the file's last bytes (0: none)."""
    if size <= 0:
        return 0
    start = max(0, size - rotation.NEWLINE_WINDOW)
    tail = os.pread(fd, size - start, start)
    found = tail.rfind(b"\n")
    return start + found + 1 if found >= 0 else 0
