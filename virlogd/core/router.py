"""The router: every record to the ring, then through the filters to the outputs.

State (default level, filters, outputs) is an immutable ``RouterState`` swapped in one
assignment, so a runtime change is all-or-nothing and a record is routed wholly under the old
or wholly under the new settings. One lock serialises routing (as libvirt's global mutex does)
so lines never interleave; the daemon has one thread and never contends for it.

An output failure is counted on that output and reported on the *other* outputs, at most once
per ``report_interval`` seconds per output, and never raised: logging must not take its host
down, and one broken destination must not silence the rest.

The steps before the outputs (the filter lookup, packing or formatting, the ring) are isolated
the same way, per record: a record they cannot take is counted under ``dropped`` as
``unroutable record``, reported on every output at the same bounded rate, and the records
after it are routed. A record from a client is hostile input: no value in it may stop the
daemon or cost another client its records.

Each output implements ``handle`` alone (``outputs/base.py`` has the contract); everything
around it is here: the header records an output gets before its first record (``start``),
its ``written``/``failed`` counts and its failing/recovered state.
"""
from __future__ import annotations

import threading
import time
from typing import Any, Callable, Dict, List, Optional, Protocol, Sequence, Tuple

from .filters import FilterSet
from ..outputs.base import Output, OutputContext
from .record import Record
from .ring import RingBuffer
from .textformat import CONTINUATION, dump_text, entry_text, format_line, pack_record

UNROUTABLE = "unroutable record"      # the dropped reason of a record no step could take
NO_OUTPUT = "no output took it"       # ... of one every output, the fallback included, failed on
REPORT_SOURCE = "virlogd.router"


class FallbackSink(Protocol):
    """Where the records no output took go (the daemon's ``fallback.Fallback``)."""

    @property
    def pending(self) -> bool: ...
    def note(self, record: Record, failed_output: Output) -> None: ...
    def settle(self, outputs: Sequence[Output]) -> int: ...
    def tell(self, report: Record) -> None: ...


def header_records(ctx: OutputContext, when: float) -> List[Record]:
    """libvirt's header records for an output of *ctx*, stamped *when* (the time of the first
    record the output is given): which version wrote the lines that follow, on which host."""
    return [Record(2, "util.log", f"virlogd version: {ctx.version}", time=when, pid=ctx.pid),
            Record(2, "util.log", f"hostname: {ctx.hostname}", time=when, pid=ctx.pid)]


def start(out: Output, when: float) -> None:
    """Mark *out* started and give it its header records (if it wants them), before the first
    record it is given, whatever its level, as libvirt does. Marked first: headers that fail
    are not tried again before every later record."""
    out.started = True
    if out.headers:
        for header in header_records(out.ctx, when):
            out.handle(header, format_line(header))


class RouterState:
    """The filters and the outputs, with what the record path derives from them once."""

    __slots__ = ("filters", "outputs", "text_level", "flushed")

    def __init__(self, filters: FilterSet, outputs: Sequence[Output]) -> None:
        self.filters = filters
        self.outputs = tuple(outputs)
        self.flushed = tuple(out for out in self.outputs if not out.batched)
        # the lowest priority any text output writes: below it, no line needs formatting
        self.text_level = min((out.priority for out in self.outputs if out.text), default=5)


class Router:
    def __init__(self, state: RouterState, ring: Optional[RingBuffer] = None, *,
                 flush_each: bool = False, report_interval: float = 10.0,
                 dump_fallback: Optional[Callable[[], Output]] = None) -> None:
        self.state = state
        self.ring = ring
        self.flush_each = flush_each
        self.report_interval = report_interval
        self.dump_fallback = dump_fallback
        self.fallback: Optional[FallbackSink] = None   # the daemon's: records no output took
        # every routed batch, before the filters, while someone follows (``virlogd-admin
        # follow``): a callable that never raises and never blocks, else None
        self.tap: Optional[Callable[[Sequence[Record]], None]] = None
        self.received = 0
        self.dropped: Dict[str, int] = {}
        # called with the new state after every apply() (the daemon's client server tells
        # version 3 clients the new filters and level): every change path passes here
        self.on_apply: Optional[Callable[[RouterState], None]] = None
        self._lock = threading.RLock()
        self._last_report: Dict[int, float] = {}
        self._unroutable_report = -report_interval     # monotonic time of the last report
        self._unroutable_suppressed = 0

    # -- the record path -------------------------------------------------------------
    def route(self, record: Record) -> None:
        self.route_many((record,))

    def route_many(self, records: Sequence[Record]) -> None:
        """Route *records* in order, under one lock and one look at the state (the daemon
        hands over everything one read decoded; the library, one record). Each record goes
        to the ring, then, if the filters let it through, to every output whose level it
        meets. A record that fails a step before the outputs is counted and reported
        (``unroutable``) and the next one is routed; an output that fails is counted and
        reported on the others (``_failed``) and the next output gets the record."""
        with self._lock:
            self.received += len(records)
            tap = self.tap                  # admin followers (follow.py); None: no cost
            if tap is not None:
                tap(records)
            state = self.state
            filters = state.filters
            cached = filters.cached.get     # the decision per source, once it was made
            decide = filters.decide
            text_level = state.text_level
            outputs = state.outputs
            flushed = state.flushed if self.flush_each else ()
            ring = self.ring
            append = None if ring is None else ring.append
            for record in records:
                try:
                    source = record.source
                    threshold, stack = cached(source) or decide(source)
                    priority = record.priority
                    if priority < threshold:            # the ring only: formatted if dumped
                        if append is not None:
                            append(pack_record(record))
                        continue
                    if priority >= text_level:          # formatted once, for all who want it
                        line = format_line(record)
                        if append is not None:
                            append(line.encode("utf-8", "surrogateescape"))
                    else:
                        line = ""
                        if append is not None:
                            append(pack_record(record))
                    full = format_line(record, True) if stack and record.stack else line
                    for out in outputs:
                        if priority < out.priority:
                            continue
                        try:
                            if not out.started:
                                start(out, record.time)
                            out.handle(record, full if out.text else line)
                        except Exception as err:  # noqa: BLE001 - isolate every output
                            self._failed(out, err, record)
                            continue
                        out.written += 1
                        if out.failing:
                            if out.batched:       # no flush to wait for: it is through
                                self._recovered(out)
                            else:
                                out.recovering = True
                    if flushed:
                        self._flush(flushed)
                except Exception as err:  # noqa: BLE001 - isolate every record
                    self._unroutable(record, err)

    def _unroutable(self, record: Record, err: Exception) -> None:
        """*record* failed a step no output owns (filters, packing, formatting, the ring):
        count it, and say so on every output at most once per ``report_interval``."""
        try:
            who = f"a record (pid {record.pid}, source {str(record.source)[:64]!r})"
        except Exception:  # noqa: BLE001 - a record that cannot even say whose it is
            who = "an unreadable record"
        self.unroutable(who, err)

    def unroutable(self, what: str, err: Exception, reason: str = UNROUTABLE) -> None:
        """Count one input that could not be routed under *reason* in ``dropped``, and report
        it (*what* it was, and *err*) on every output, at most once per ``report_interval``:
        the daemon and every other client carry on. The syslog input uses it too."""
        with self._lock:
            count = self.dropped.get(reason, 0) + 1
            self.dropped[reason] = count
            now = time.monotonic()
            if now - self._unroutable_report < self.report_interval:
                self._unroutable_suppressed += 1
                return
            self._unroutable_report = now
            suppressed, self._unroutable_suppressed = self._unroutable_suppressed, 0
            error = f"{type(err).__name__}: {err}"
            if len(error) > 200:
                error = error[:200] + "..."
            message = f"could not route {what}: {error} ({count} {reason} so far"
            message += f", {suppressed} similar report(s) suppressed)" if suppressed else ")"
            self._broadcast(Record(4, REPORT_SOURCE, message))

    def keep(self, entry: bytes) -> None:
        """A record only the ring wants, already packed (``textformat.pack_parts``): the
        library's debug fast path, which builds no Record for a call that may never be read.
        Not counted in ``received``, which counts routed records; with the compiled ring the
        library appends to the ring directly (``RingBuffer.atomic_append``) and does not come
        here."""
        with self._lock:
            ring = self.ring
            if ring is not None:
                ring.append(entry)

    def count_drop(self, reason: str, count: int = 1) -> None:
        with self._lock:
            self.dropped[reason] = self.dropped.get(reason, 0) + count

    def flush(self) -> None:
        with self._lock:
            self._flush(self.state.outputs)
            if self.fallback is not None and self.fallback.pending:
                lost = self.fallback.settle(self.state.outputs)
                if lost:
                    self.dropped[NO_OUTPUT] = self.dropped.get(NO_OUTPUT, 0) + lost

    def _flush(self, outputs: Sequence[Output]) -> None:
        for out in outputs:
            try:
                out.flush()
            except Exception as err:  # noqa: BLE001
                self._failed(out, err)
            else:
                if out.failing and out.recovering:
                    self._recovered(out)

    def _failed(self, failing: Output, err: Exception,
                record: Optional[Record] = None) -> None:
        """*failing* raised (on *record*, or in a flush, a dump): count it, hand the record to
        the fallback, and report it on the other outputs at most once per
        ``report_interval``."""
        if record is not None and self.fallback is not None:
            self.fallback.note(record, failing)
        failing.failed += 1
        failing.failing, failing.recovering = True, False
        failing.last_error = f"{type(err).__name__}: {err}" if not isinstance(err, OSError) \
            else str(err)
        now = time.monotonic()
        last = self._last_report.get(id(failing))
        if last is not None and now - last < self.report_interval:
            return
        self._last_report[id(failing)] = now
        self._tell_others(failing, f"output '{failing.describe()}' failed: "
                                   f"{failing.last_error} ({failing.failed} failure"
                                   f"{'s' if failing.failed != 1 else ''} so far)")

    def _recovered(self, out: Output) -> None:
        """A record went through (handled and flushed) after failures: say so, once."""
        out.failing = out.recovering = False
        self._tell_others(out, f"output '{out.describe()}' works again "
                               f"({out.failed} failure{'s' if out.failed != 1 else ''} in all)")

    def _broadcast(self, report: Record, about: Optional[Output] = None) -> None:
        """Write the daemon's own *report* to every output but *about*: a failure here is
        counted on that output, never reported (a report of a report could loop)."""
        line = format_line(report)
        for out in self.state.outputs:
            if out is about:
                continue
            try:
                if not out.started:
                    start(out, report.time)
                out.handle(report, line)
                out.written += 1
                out.flush()
            except Exception:  # noqa: BLE001 - counted, never reported recursively
                out.failed += 1

    def _tell_others(self, about: Output, message: str) -> None:
        report = Record(4 if about.failing else 3, "virlogd.output", message)
        self._broadcast(report, about)
        if self.fallback is not None:       # its reader learns it too, once it is in use
            self.fallback.tell(report)

    # -- changes ---------------------------------------------------------------------
    def apply(self, state: RouterState) -> RouterState:
        """Swap in *state*; return the old one (the caller closes what is no longer used)."""
        with self._lock:
            self._flush(self.state.outputs)
            old, self.state = self.state, state
            if self.on_apply is not None:
                self.on_apply(state)
            return old

    def decide(self, source: str) -> Tuple[int, bool]:
        return self.state.filters.decide(source)

    # -- dumps -----------------------------------------------------------------------
    def dump(self, reason: str, entries: Optional[List[bytes]] = None, *,
             recovered: bool = False) -> int:
        """Write the ring (or *entries*, for a recovered buffer) between libvirt's banners to
        every text output, or to the fallback file; return how many records were dumped."""
        with self._lock:
            self._flush(self.state.outputs)
            if entries is None and self.ring is not None:
                entries = self.ring.take()
            lines = None if entries is None else [_entry_line(entry) for entry in entries]
            text = dump_text(reason, lines, recovered=recovered)
            targets = [out for out in self.state.outputs if out.text]
            fallback = None
            if not targets and self.dump_fallback is not None:
                fallback = self.dump_fallback()
                targets = [fallback]
            for out in targets:
                try:
                    out.write_text(text)
                except Exception as err:  # noqa: BLE001
                    self._failed(out, err)
            if fallback is not None:
                fallback.close()
            return len(lines or ())

    def close(self) -> None:
        with self._lock:
            for out in self.state.outputs:
                try:
                    out.close()
                except Exception:  # noqa: BLE001 - closing must reach every output
                    out.failed += 1

    # -- introspection ---------------------------------------------------------------
    def stats(self) -> Dict[str, Any]:
        with self._lock:
            ring = self.ring
            return {
                "received": self.received,
                "dropped": dict(self.dropped),
                "outputs": [{"output": out.describe(), "written": out.written,
                             "failed": out.failed, "dropped": out.dropped,
                             "last_error": out.last_error}
                            for out in self.state.outputs],
                "buffer": {"used": ring.used if ring is not None else 0,
                           "size": ring.capacity if ring is not None else 0,
                           "skipped": ring.skipped if ring is not None else 0},
            }


def _entry_line(entry: bytes) -> str:
    """entry_text(entry), or a line saying it could not be read: a damaged entry (a ring
    recovered from a crash) never stops a dump of the others."""
    try:
        return entry_text(entry)
    except Exception as err:  # noqa: BLE001
        return f"{CONTINUATION}unreadable ring entry of {len(entry)} bytes " \
               f"({type(err).__name__}: {err})\n"

