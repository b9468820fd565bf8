"""The daemon's routing cost per record: ``python bench/route.py [N]``.

Routes N decoded-like records (a relayed client record, 120-character message, two in three
at info and one at warning) in batches of 64, as the daemon hands over what one read decoded,
through ``Router.route_many`` to a file output (and the 1 MB ring), with ``flush()`` after
each batch; then the library's case: one record per ``route_many`` call to one batched
output that does nothing. Prints the process CPU per record (best of REPS, default 15), so
that other processes on the machine count as little as they can. Set
``VIRLOGD_PURE_PYTHON=1`` for the pure-Python figures.
"""
from __future__ import annotations

import os
import sys
import tempfile
import time

from virlogd.core.filters import FilterSet
from virlogd.core.record import Record
from virlogd.core.ring import RingBuffer
from virlogd.core.router import Router, RouterState
from virlogd.core.specs import OutputSpec
from virlogd.outputs.base import Output, OutputContext
from virlogd.outputs.file import FileOutput

BATCH = 64
REPS = int(os.environ.get("REPS", "15"))
MESSAGE = "BENCHMSG 000000001 " + ("abcdefghijklmnopqrstuvwxyz" * 10)[:101]


class Nothing(Output):
    """A batched output that does nothing (the library's x:virlogd output, minus the client)."""
    batched = True
    headers = False

    def handle(self, record: Record, line: str) -> None:
        pass


def best(run, count: int) -> float:
    """The least process CPU, in ns per record, of REPS runs of *run*."""
    least = float("inf")
    for _ in range(REPS):
        start = time.process_time_ns()
        run()
        least = min(least, (time.process_time_ns() - start) / count)
    return least


def main() -> int:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 10000
    now = time.time()
    records = [Record(3 if i % 3 == 0 else 2, "qemu.monitor", MESSAGE, time=now + i * 1e-6,
                      func="run", line=42, file="x.c", pid=4242, uid=0, gid=0, ident="qemu",
                      relayed=True) for i in range(count)]
    batches = [records[i:i + BATCH] for i in range(0, count, BATCH)]
    kind = "pure Python" if os.environ.get("VIRLOGD_PURE_PYTHON") == "1" else "compiled"
    with tempfile.TemporaryDirectory() as workdir:
        out = FileOutput(OutputSpec(2, "file", os.path.join(workdir, "out.log")),
                         OutputContext())
        daemon = Router(RouterState(FilterSet((), 2), [out]), RingBuffer(1 << 20))

        def route_batches() -> None:
            for batch in batches:
                daemon.route_many(batch)
                daemon.flush()
        print(f"{kind}: daemon, batches of {BATCH} to a file output and the ring: "
              f"{best(route_batches, count):.0f} ns CPU per record")
        daemon.close()
    library = Router(RouterState(FilterSet((), 2), [Nothing(OutputSpec(2, "virlogd"),
                                                            OutputContext())]),
                     None, flush_each=True)
    singles = [(record,) for record in records]

    def route_singles() -> None:
        route_many = library.route_many
        for single in singles:
            route_many(single)
    print(f"{kind}: library, one record per call to an output that does nothing: "
          f"{best(route_singles, count):.0f} ns CPU per call")
    return 0


if __name__ == "__main__":
    sys.exit(main())
