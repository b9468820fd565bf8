"""``x:virlogd[:SOCKET]``: the library's records, sent to the daemon (the default socket when
no SOCKET is given).

Sending is the ``Client``'s job: each record is written to the socket by the call that logs
it when the connection can take it, else queued and written by a background thread a few
milliseconds later, by the caller once 64 kB gather, and at exit. So ``flush()`` (which a
router may call after every record) has nothing to do; a dump or ``close()`` writes what is
queued. An unreachable daemon never raises here: the client holds records up to its bound,
counts what it drops (this output's ``dropped``) and reports the count to the daemon once
it is back.

The daemon's own outputs write the ``virlogd version:`` / ``hostname:`` headers, so this
output asks for none, and the line is not used: the daemon formats.
"""
from __future__ import annotations

from ..client.client import Client, program_name
from ..core.record import Record
from ..core.specs import OutputSpec
from ..protocol.wire import encode
from .base import Output, OutputContext


class VirlogdOutput(Output):
    headers = False         # the daemon's own outputs write them
    batched = True          # the client batches; the library's router need not flush us

    def __init__(self, spec: OutputSpec, ctx: OutputContext) -> None:
        super().__init__(spec, ctx)
        self.client = Client(spec.name)
        self.ident = program_name()

    @property
    def dropped(self) -> int:           # type: ignore[override]  # read-only: the client's
        """Records the client could not deliver and dropped (beyond its bound)."""
        return self.client.dropped_total

    def handle(self, record: Record, line: str) -> None:
        self.client.send_frame(encode(record, self.ident))

    def flush(self) -> None:
        """Nothing: the client writes each record itself (see the module docstring)."""

    def close(self) -> None:
        self.client.close()
