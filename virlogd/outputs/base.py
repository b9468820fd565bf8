"""What every output is: a destination with its own minimum level, and one method.

The contract, as ``logging.Handler`` subclasses implement ``emit``:

* **An output implements ``handle(record, line)``**, and nothing else on the record path. It
  delivers *record* (or buffers it until ``flush()``) and returns, or raises: an exception
  means the record was not taken. *line* is the record's text line
  (``textformat.format_line``, ending in a newline; for a ``text`` output, with the stack
  trace when the filters ask for one); it is ``""`` when no text output of the router takes
  this record's level, so only outputs with ``text = True`` may rely on it. ``handle``
  never changes itself or the counters below, and never protects the other outputs: the
  router isolates each one.
* **The router does everything around it.** It calls ``handle`` only for records at or above
  ``priority``. Before the first record it gives an output with ``headers = True``, it gives
  it libvirt's two header records (``virlogd version:``, ``hostname:``, stamped with that
  record's time), whatever the output's level. It counts ``written`` (records ``handle``
  took, headers excluded) and ``failed``, keeps ``last_error``, ``failing`` and
  ``recovering``, reports failures on the other outputs, offers a record no output took to
  the daemon's fallback, and calls ``flush()`` after each batch. The daemon's fallback
  (``daemon/fallback.py``) does the same for the one output it owns.
* **``dropped``** is the one counter only the output can know: records ``handle`` took and
  the output lost afterwards (a full queue, a pipe nobody reads, a receiver that kept no
  room). An output that can lose records keeps it up to date (a plain attribute, or a
  read-only property over whatever counts them); the router only reads it.
* ``flush()`` pushes what ``handle`` buffered and may raise like ``handle``; ``poll()`` is
  periodic housekeeping; ``close()`` flushes and releases. Text outputs (``text = True``:
  stderr, file) also receive dumps through ``write_text()``. ``batched = True``: the output
  delivers in batches of its own, so a router that flushes after every record (the
  library's) need not flush it.
"""
from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from typing import List, Optional

from .. import __version__
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
    text = False       # receives dumps, stack traces and the text line
    batched = False    # delivers in batches of its own (see the module docstring)
    headers = True     # starts with libvirt's header records
    dropped = 0        # records taken and lost afterwards: the output's own count

    def __init__(self, spec: OutputSpec, ctx: OutputContext) -> None:
        self.spec = spec
        self.priority = spec.priority
        self.ctx = ctx
        # kept by the router (and the daemon's fallback), never by the output itself
        self.written = 0
        self.failed = 0
        self.last_error: Optional[str] = None
        self.started = False        # the header records are out (or none are wanted)
        self.failing = False        # the last attempt failed
        self.recovering = False     # a record was handled since: the next good flush ends it

    def handle(self, record: Record, line: str) -> None:   # pragma: no cover - abstract
        """Deliver *record* (its text *line*), or raise: see the module docstring."""
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


class LineBufferOutput(Output):
    """A text output whose records are lines gathered in ``_pending`` until ``flush()``
    (stderr, file)."""

    text = True

    def __init__(self, spec: OutputSpec, ctx: OutputContext) -> None:
        super().__init__(spec, ctx)
        self._pending: List[str] = []

    def handle(self, record: Record, line: str) -> None:
        self._pending.append(line)
