"""A small single-threaded event loop over ``selectors``.

Why not asyncio: its stock stream and datagram transports allocate and copy per read (the
anchors measure asyncio's datagram transport ~15x slower than a plain receive loop), and the
daemon's work per wake-up is tiny and synchronous: read what is there, route it, flush. One
thread also means the router's lock is never contended and a record's path is easy to follow.

Other threads and signal handlers talk to the loop only through ``call_soon_threadsafe()``,
which queues a callback and writes one byte to a wake-up pipe.
"""
from __future__ import annotations

import collections
import heapq
import os
import selectors
import signal
import threading
import time
from typing import Callable, Deque, Dict, List, Tuple


class EventLoop:
    def __init__(self) -> None:
        self._selector = selectors.DefaultSelector()
        self._timers: List[Tuple[float, int, Callable[[], None]]] = []
        self._seq = 0
        self._soon: Deque[Callable[[], None]] = collections.deque()
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._selector.register(self._wake_r, selectors.EVENT_READ, self._drain_wake)
        self._stopping = False
        self._resting: Dict[int, Tuple[object, Callable[[object], None]]] = {}
        self.after_batch: List[Callable[[], None]] = []   # run after each round of callbacks

    # -- registration ----------------------------------------------------------------
    def add_reader(self, fileobj, callback: Callable[[object], None]) -> None:
        self._resting.pop(_fd(fileobj), None)
        self._selector.register(fileobj, selectors.EVENT_READ, callback)

    def remove_reader(self, fileobj) -> None:
        self._resting.pop(_fd(fileobj), None)
        try:
            self._selector.unregister(fileobj)
        except (KeyError, ValueError):
            pass

    def rest_reader(self, fileobj, seconds: float) -> None:
        """Stop watching *fileobj* for *seconds*, then watch it again, same callback.

        For a listening socket whose accept() fails for want of a descriptor (EMFILE): it
        stays readable, and a level-triggered loop would call back at once, for ever.
        ``remove_reader`` (or ``add_reader``) meanwhile cancels the return."""
        try:
            callback = self._selector.get_key(fileobj).data
        except (KeyError, ValueError):
            return
        self._selector.unregister(fileobj)
        fd = _fd(fileobj)
        entry = (fileobj, callback)
        self._resting[fd] = entry

        def back() -> None:
            if self._resting.get(fd) is entry:
                del self._resting[fd]
                self._selector.register(fileobj, selectors.EVENT_READ, callback)
        self.call_later(seconds, back)

    def watch_writable(self, fileobj, on: bool) -> None:
        """Also call *fileobj*'s reader back when it can be written to (*on*), or no more.

        For a socket the loop writes to without blocking (an admin follower): while its
        peer lets it fill up, the rest waits in a queue until it can be written again. The
        callback is the reader's, and it tells the two apart by trying both."""
        try:
            key = self._selector.get_key(fileobj)
        except (KeyError, ValueError):
            return
        events = selectors.EVENT_READ | (selectors.EVENT_WRITE if on else 0)
        if key.events != events:
            self._selector.modify(fileobj, events, key.data)

    def call_later(self, delay: float, callback: Callable[[], None]) -> None:
        self._seq += 1
        heapq.heappush(self._timers, (time.monotonic() + delay, self._seq, callback))

    def call_every(self, interval: float, callback: Callable[[], None]) -> None:
        def tick() -> None:
            try:
                callback()
            finally:
                self.call_later(interval, tick)
        self.call_later(interval, tick)

    def call_soon_threadsafe(self, callback: Callable[[], None]) -> None:
        """Safe from any thread and from a signal handler."""
        self._soon.append(callback)
        try:
            os.write(self._wake_w, b"\0")
        except BlockingIOError:
            pass    # the pipe is full: the loop is already due to wake

    def _drain_wake(self, _fileobj) -> None:
        try:
            while os.read(self._wake_r, 4096):
                pass
        except BlockingIOError:
            pass

    # -- running ---------------------------------------------------------------------
    def stop(self) -> None:
        self._stopping = True
        self.call_soon_threadsafe(lambda: None)

    def run(self) -> None:
        """Run until ``stop()``; exceptions from callbacks propagate (the daemon decides).

        A signal caught while another thread runs (a remote output's, say) does not
        interrupt our ``select``: Python only notes it, and its handler would wait for the
        next wake-up. So signals also write to the wake-up pipe (``set_wakeup_fd``)."""
        self._stopping = False
        previous = _set_wakeup_fd(self._wake_w)
        try:
            while not self._stopping:
                self.run_once()
        finally:
            if previous is not None:
                _set_wakeup_fd(previous)

    def run_once(self, timeout: float = 1.0) -> None:
        if self._timers:
            timeout = max(0.0, min(timeout, self._timers[0][0] - time.monotonic()))
        if self._soon:
            timeout = 0.0
        for key, _events in self._selector.select(timeout):
            key.data(key.fileobj)
        while self._soon:
            self._soon.popleft()()
        now = time.monotonic()
        while self._timers and self._timers[0][0] <= now:
            heapq.heappop(self._timers)[2]()
        for hook in self.after_batch:
            hook()

    def close(self) -> None:
        self._selector.close()
        os.close(self._wake_r)
        os.close(self._wake_w)


def _set_wakeup_fd(fd: int):
    """``signal.set_wakeup_fd(fd)``; the previous fd, or None outside the main thread."""
    if threading.current_thread() is not threading.main_thread():
        return None
    try:
        return signal.set_wakeup_fd(fd, warn_on_full_buffer=False)
    except (ValueError, OSError):
        return None


def _fd(fileobj) -> int:
    return fileobj if isinstance(fileobj, int) else fileobj.fileno()
