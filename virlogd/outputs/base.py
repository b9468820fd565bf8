"""What every output is: a destination with its own minimum level.

The router calls ``handle()``; an output writes its two header records (``virlogd version:``
and ``hostname:``) before the first record it accepts, whatever its own level, as libvirt
does. ``emit()`` may raise: the router counts and reports failures, an output never needs to
protect the others. Text outputs (stderr, file) also receive dumps and stack traces.
"""
from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from typing import Optional

from .. import __version__
from ..core import native
from ..core.record import Record
from ..core.specs import OutputSpec


@dataclass
class OutputContext:
    """What outputs need to know beyond their spec."""
    pid: int = 0
    hostname: str = ""
    version: str = __version__
    max_size: int = 0          # file rotation, bytes; 0 = off
    max_backups: int = 3
    remote_ca_file: Optional[str] = None
    remote_queue_size: int = 10000
    ident: str = "virlogd"     # the program name a relay reports for itself

    def __post_init__(self) -> None:
        self.pid = self.pid or os.getpid()
        self.hostname = self.hostname or socket.gethostname()


class Output:
    text = False       # receives dumps and stacks
    batched = False    # delivers in batches of its own (the virlogd client): a router that
                       # flushes after every record (the library's) need not flush this one

    def __init__(self, spec: OutputSpec, ctx: OutputContext) -> None:
        self.spec = spec
        self.priority = spec.priority
        self.ctx = ctx
        self.written = 0
        self.failed = 0
        self.dropped = 0
        self.last_error: Optional[str] = None
        self.started = False
        self.failing = False        # the last attempt failed (set by the router)
        self.recovering = False     # a record was handled since: the next good flush ends it
        self.failed_record: Optional[Record] = None   # the record handle() just failed on:
                                    # the router hands it to the daemon's fallback output

    def header_records(self, when: float):
        return [Record(2, "util.log", f"virlogd version: {self.ctx.version}", time=when,
                       pid=self.ctx.pid),
                Record(2, "util.log", f"hostname: {self.ctx.hostname}", time=when,
                       pid=self.ctx.pid)]

    def handle(self, record: Record, line: str) -> None:
        try:
            if not self.started:
                self.started = True
                from ..core.textformat import format_line
                for header in self.header_records(record.time):
                    self.emit(header, format_line(header))
            self.emit(record, line)
        except Exception:
            self.failed_record = record     # not taken: Router._failed decides where it goes
            raise
        self.written += 1

    def emit(self, record: Record, line: str) -> None:   # pragma: no cover - abstract
        raise NotImplementedError

    def write_text(self, text: str) -> None:
        """Write raw text (a dump); only text outputs implement it."""

    def flush(self) -> None:
        """Push buffered data to the destination."""

    def poll(self) -> None:
        """Periodic housekeeping (reopen after external rotation, reconnect...)."""

    def close(self) -> None:
        self.flush()

    def describe(self) -> str:
        return str(self.spec)


class LineAppender:
    """``appender(record, line)`` is ``lines.append(line)``, counted in ``count``: the whole
    of ``handle()`` for a text output that gathers lines until ``flush()``, once its headers
    are out. The C twin (``_croute.LineAppender``) makes it one C call per record, the
    daemon's hot path."""

    __slots__ = ("lines", "count")

    def __init__(self, lines: list) -> None:
        self.lines = lines
        self.count = 0

    def __call__(self, record: Record, line: str, /) -> None:
        self.lines.append(line)
        self.count += 1


_LineAppenderPy = LineAppender
_croute = native.load("route")
if _croute is not None:
    LineAppender = _croute.LineAppender      # type: ignore[misc]  # noqa: F811 - in C


class LineBufferOutput(Output):
    """A text output whose records are lines gathered in ``_pending`` until ``flush()``
    (stderr, file). After its first record (and the headers before it), ``handle`` is a
    ``LineAppender`` over ``_pending``, an instance attribute the router calls directly;
    ``written`` adds up what both counted."""

    text = True

    def __init__(self, spec: OutputSpec, ctx: OutputContext) -> None:
        self._pending: list = []          # the same list for good: the appender holds it
        self._appender = LineAppender(self._pending)
        self._handled = 0
        super().__init__(spec, ctx)

    @property
    def written(self) -> int:
        return self._handled + self._appender.count

    @written.setter
    def written(self, value: int) -> None:
        self._handled = value - self._appender.count

    def handle(self, record: Record, line: str) -> None:
        super().handle(record, line)            # the headers, then this record
        self.handle = self._appender            # every later record: one append

    def emit(self, record: Record, line: str) -> None:
        self._pending.append(line)
