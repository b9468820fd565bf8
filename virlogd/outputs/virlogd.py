"""``x:virlogd[:SOCKET]``: the library's records, sent to the daemon (the default socket when
no SOCKET is given).

Sending is the ``Client``'s job: frames are batched and written by the caller once 64 kB
gather, by a background thread a few milliseconds later otherwise, and at exit. So ``flush()``
(which the library's router calls after every record) does not force a write per record; a
dump or ``close()`` does. An unreachable daemon never raises here: the client holds records
up to its bound, counts what it drops (shown as this output's ``dropped``) and reports the
count to the daemon once it is back.

The daemon's own outputs write the ``virlogd version:`` / ``hostname:`` headers, so this
output does not send them.
"""
from __future__ import annotations

import os
import sys

from ..client import Client
from ..record import Record
from ..wire import encode_parts
from .base import Output


def _program():
    name = os.path.basename(sys.argv[0]) if getattr(sys, "argv", None) else ""
    return name if name and name != "-c" else None


class VirlogdOutput(Output):
    def __init__(self, spec, ctx) -> None:
        self.client = Client(spec.name)
        super().__init__(spec, ctx)
        self.ident = _program()

    @property
    def dropped(self) -> int:
        return self.client.dropped_total

    @dropped.setter
    def dropped(self, _value: int) -> None:
        pass          # the client counts

    def header_records(self, when: float):
        return []

    def emit(self, record: Record, line: str) -> None:
        self.client.send_frame(encode_parts(
            record.priority, record.source, record.message, time=record.time,
            func=record.func, line=record.line or 0, file=record.file, fields=record.fields,
            stack=record.stack, ident=record.ident or self.ident))

    def flush(self) -> None:
        """Batched by the client (see the module docstring)."""

    def close(self) -> None:
        self.client.close()
