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

from ..client.client import Client, program_name
from ..core.record import Record
from ..protocol import wire
from .base import Output


_program = program_name


class VirlogdOutput(Output):
    def __init__(self, spec, ctx) -> None:
        self.client = Client(spec.name)
        super().__init__(spec, ctx)
        self.ident = _program()
        # The whole of Output.handle for an output without headers: encode, queue, count.
        # An instance attribute, so the router's out.handle(record, line) is one C call with
        # the C twin (this is the library's log.info path).
        self._sender = self.handle = wire.FrameSender(self.client, self.ident)

    @property
    def written(self) -> int:
        return self._sender.sent

    @written.setter
    def written(self, _value: int) -> None:
        pass          # the sender counts

    @property
    def dropped(self) -> int:
        return self.client.dropped_total

    @dropped.setter
    def dropped(self, _value: int) -> None:
        pass          # the client counts

    def header_records(self, when: float):
        return []

    batched = True          # the client batches; the library's router need not flush us

    def emit(self, record: Record, line: str) -> None:
        self.handle(record, line)

    def flush(self) -> None:
        """Batched by the client (see the module docstring)."""

    def close(self) -> None:
        self.client.close()
