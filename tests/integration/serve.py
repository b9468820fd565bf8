"""A tiny daemon for the client tests: EventLoop + Router + ClientServer + one file output.

    python serve.py SOCKET LOGFILE [--max-clients N] [--slow SECONDS]

``InProcessServer`` runs the same in a thread of the test process, with a ``Capture`` output
that keeps the records themselves (source, fields, stack, pid/uid/gid are then inspectable).

Binds SOCKET itself, prints ``ready`` once it accepts, and on SIGTERM stops accepting,
drains every connection, flushes and exits 0 — the contract the real daemon keeps, without
its settings and lifecycle (tested elsewhere). ``--slow`` makes the file output sleep on every
flush, to show backpressure.
"""
from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time
from typing import List, Optional

from virlogd.core.filters import FilterSet
from virlogd.daemon.loop import EventLoop
from virlogd.outputs import OutputContext
from virlogd.outputs.base import Output
from virlogd.outputs.file import FileOutput
from virlogd.core.router import Router, RouterState
from virlogd.daemon.server import ClientServer
from virlogd.daemon.sockets import bind_unix
from virlogd.core.specs import OutputSpec


class SlowFile(FileOutput):
    delay = 0.0

    def flush(self) -> None:
        if self._pending:
            time.sleep(self.delay)
        super().flush()


class Capture(Output):
    """Keeps every record it is given (the loop thread appends, tests read)."""

    def __init__(self) -> None:
        super().__init__(OutputSpec(1, "capture"), OutputContext())
        self.records: List = []
        self.gate = threading.Event()     # cleared: handle blocks (a stalled output)
        self.gate.set()

    headers = False

    def handle(self, record, line: str) -> None:
        self.gate.wait()
        self.records.append(record)


class InProcessServer:
    """EventLoop + Router + ClientServer on *path*, run by a thread of the test process."""

    def __init__(self, path: str, *, max_clients: int = 1024, run: bool = True) -> None:
        self.path = path
        self.capture = Capture()
        self.router = Router(RouterState(FilterSet((), 1), [self.capture]))
        self.loop = EventLoop()
        self.loop.after_batch.append(self.router.flush)
        self.sock = bind_unix(path)
        self.server = ClientServer(self.loop, self.router, self.sock, max_clients=max_clients)
        self.server.start()
        self.thread: Optional[threading.Thread] = None
        if run:
            self.run()

    def run(self) -> None:
        self.thread = threading.Thread(target=self.loop.run, name="test-loop", daemon=True)
        self.thread.start()

    def records(self, source: Optional[str] = None) -> List:
        return [r for r in list(self.capture.records) if source is None or r.source == source]

    def messages(self, source: Optional[str] = None) -> List[str]:
        return [r.message for r in self.records(source)]

    def wait_for(self, count: int, source: Optional[str] = None, timeout: float = 10.0):
        deadline = time.monotonic() + timeout
        while len(self.records(source)) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout} s waiting for {count} "
                                     f"record(s) from {source!r}; got "
                                     f"{self.messages(source)[-5:]!r}")
            time.sleep(0.01)
        return self.records(source)

    def call(self, func):
        """Run *func* in the loop thread; return its result."""
        if self.thread is None:
            return func()
        done = threading.Event()
        box = []
        self.loop.call_soon_threadsafe(lambda: (box.append(func()), done.set()))
        assert done.wait(10), "the loop thread did not answer"
        return box[0]

    def stats(self) -> dict:
        return self.call(self.server.stats)

    def stop(self) -> None:
        """Stop the loop, drain every connection (as the daemon does on SIGTERM), close."""
        self.capture.gate.set()
        if self.thread is not None:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)
            self.thread = None
        self.server.stop_accepting()
        self.server.drain()
        self.sock.close()
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
        self.router.close()
        self.loop.close()

    def __enter__(self) -> "InProcessServer":
        return self

    def __exit__(self, *exc) -> None:
        if self.sock.fileno() >= 0:
            self.stop()


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("socket")
    p.add_argument("log")
    p.add_argument("--max-clients", type=int, default=1024)
    p.add_argument("--slow", type=float, default=0.0)
    args = p.parse_args()
    SlowFile.delay = args.slow
    output = SlowFile(OutputSpec(1, "file", args.log), OutputContext())
    router = Router(RouterState(FilterSet((), 1), [output]))
    loop = EventLoop()
    loop.after_batch.append(router.flush)
    sock = bind_unix(args.socket)
    server = ClientServer(loop, router, sock, max_clients=args.max_clients)
    server.start()
    signal.signal(signal.SIGTERM, lambda *_: loop.call_soon_threadsafe(loop.stop))
    print("ready", flush=True)
    loop.run()
    server.stop_accepting()
    server.drain()
    sock.close()
    os.unlink(args.socket)
    router.flush()
    router.close()
    stats = server.stats()
    print(" ".join(f"{k}={v}" for k, v in sorted(stats.items())), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
