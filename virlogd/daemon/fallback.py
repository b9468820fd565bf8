"""The daemon's last resort: where a record goes when no output took it.

The daemon never runs with no working output: when every output a record was meant for
failed on it (no ``/dev/log``, journald gone, a collector's socket that refuses datagrams),
the record goes to the fallback output instead: the default output (the default file when
detached), else stderr in the foreground.
The fallback is opened on first need and kept; the first record it takes is preceded by a
warning saying why it is being used. A record that even the fallback cannot take is counted
by the router as dropped (``router.NO_OUTPUT``: "no output took it"), so ``stats`` never shows ``Records dropped: 0`` for records
that went nowhere.

The router tells us which output failed on which record (``note``, from ``Router._failed``);
the decision waits for the end of the batch (``settle``, from ``Router.flush``), when every
output has had its try: a record goes to the fallback only if every output whose level it
met failed on it. Like the router, the fallback gives its output its header records first
and keeps its counters: ``taken`` is its Written column in ``stats``.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from ..core.record import Record
from ..core.router import start
from ..core.specs import OutputSpec
from ..core.textformat import format_line
from ..outputs.base import Output, OutputContext


class Fallback:
    """*make* builds the fallback output (or returns None when there is none to be had)."""

    def __init__(self, make: Callable[[], Optional[Output]]) -> None:
        self._make = make
        self.output: Optional[Output] = None
        self.taken = 0              # records written to the fallback
        self.lost = 0               # records no output, the fallback included, took
        self._noted: List[Tuple[Record, Output]] = []
        self._made = False

    @property
    def pending(self) -> bool:
        return bool(self._noted)

    def note(self, record: Record, failed_output: Output) -> None:
        """*failed_output* failed on *record* (called once per output, in routing order)."""
        self._noted.append((record, failed_output))

    def settle(self, outputs: Sequence[Output]) -> int:
        """Send the records no output took to the fallback; return how many were lost."""
        noted, self._noted = self._noted, []
        lost = 0
        index = 0
        while index < len(noted):
            record = noted[index][0]
            failed = []
            while index < len(noted) and noted[index][0] is record:
                failed.append(noted[index][1])
                index += 1
            if any(record.priority >= out.priority and all(out is not f for f in failed)
                   for out in outputs):
                continue                # another output took it
            if not self._take(record, failed):
                lost += 1
        if self.output is not None:
            try:
                self.output.flush()
            except Exception as err:  # noqa: BLE001 - the last resort never raises
                self.output.failed += 1
                self.output.last_error = str(err)
        self.lost += lost
        return lost

    def _take(self, record: Record, failed: List[Output]) -> bool:
        if not self._made:
            self._made = True
            self.output = self._make()
            if self.output is not None:
                why = "; ".join(f"output '{out.describe()}' failed: {out.last_error}"
                                for out in failed)
                notice = Record(4, "virlogd.output",
                                f"no output took a record ({why}); records that no output "
                                f"takes go to '{self.output.describe()}' until one works")
                if not self._write(notice):
                    return False
        if self.output is None:
            return False
        if not self._write(record):
            return False
        self.taken += 1
        return True

    def tell(self, report: Record) -> None:
        """A report about an output (it failed, it works again) for whoever reads the
        fallback: written only once the fallback is in use."""
        if self.output is not None and self._write(report):
            try:
                self.output.flush()
            except Exception as err:  # noqa: BLE001
                self.output.failed += 1
                self.output.last_error = str(err)

    def _write(self, record: Record) -> bool:
        out = self.output
        assert out is not None
        try:
            if not out.started:
                start(out, record.time)
            out.handle(record, format_line(record, True) if record.stack
                       else format_line(record))
        except Exception as err:  # noqa: BLE001
            out.failed += 1
            out.last_error = str(err)
            return False
        return True

    def stats_row(self) -> Optional[Dict[str, Any]]:
        out = self.output
        if out is None:
            return None
        return {"output": f"{out.describe()} (fallback)", "written": self.taken,
                "failed": out.failed, "dropped": out.dropped, "last_error": out.last_error}

    def close(self) -> None:
        if self.output is not None:
            try:
                self.output.close()
            except Exception:  # noqa: BLE001
                pass


class NoOutput(Output):
    """What the daemon routes to when not even the default output could be opened: every
    record fails here, so the router counts it (``no output took it``) instead of letting it
    vanish, and ``stats`` shows why."""

    headers = False

    def __init__(self, ctx: OutputContext) -> None:
        super().__init__(OutputSpec(1, "stderr"), ctx)

    def describe(self) -> str:
        return "(no output)"

    def handle(self, record: Record, line: str) -> None:
        raise OSError("no output could be opened, nor the default output")
