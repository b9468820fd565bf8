"""The C twin of Router.route_many's loop (``_croute.c``) against the pure loop.

Both must make the same calls in the same order: the same records and lines to each output,
the same ring entries, the same failure counts and reports, the same recoveries and flushes,
and let the same exception out after routing the same records. Outputs here are scripted
fakes so that failures, recoveries and odd values happen at random.
"""
import os
import re
import types

import pytest
from hypothesis import given, settings, strategies as st

from virlogd.core import native, router as router_module
from virlogd.core.filters import FilterSet
from virlogd.core.record import Record
from virlogd.core.ring import RingBuffer
from virlogd.core.router import Router, RouterState
from virlogd.core.specs import FilterSpec

in_use = pytest.mark.skipif(router_module._croute is None, reason="the C twin of the router "
                            "loop is not in use (not built, or VIRLOGD_PURE_PYTHON=1)")
BOTH = [pytest.param(True, marks=in_use, id="c"), pytest.param(False, id="pure")]


def _pure(router):
    """This router routes with the Python route_many (the class has the C one when built)."""
    router.route_many = types.MethodType(router_module._route_many_py, router)


def test_the_c_twin_is_built_in_ci_and_used_when_built():
    """CI must measure and test the C twin: a build that silently lost it fails here."""
    if not native.built("route"):
        if os.environ.get("CI"):
            pytest.fail("virlogd._croute was not built (run: pip install -e . with a compiler)")
        pytest.skip("virlogd._croute is not built")
    if not native.PURE:
        state = RouterState(FilterSet([], 3), [])
        assert state.plan is not None


class Stop(BaseException):
    """Not an Exception: the router must let it out (as KeyboardInterrupt)."""


_TIME = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}\+0000: ", re.M)


class Scripted:
    """An output that records every call, and fails when its script says so."""

    def __init__(self, name, priority, text, batched, script, journal):
        self.name, self.priority, self.text, self.batched = name, priority, text, batched
        self.script, self.journal = script, journal
        self.written = self.failed = self.dropped = 0
        self.last_error = None
        self.failing = self.recovering = False

    def describe(self):
        return self.name

    def handle(self, record, line):
        self.journal.append(("handle", self.name, record.message, _TIME.sub("T: ", line)))
        action = self.script.get(record.message)
        if action == "fail":
            raise OSError(5, f"{self.name} cannot write {record.message}")
        if action == "stop":
            raise Stop(record.message)
        self.written += 1

    def flush(self):
        self.journal.append(("flush", self.name))
        if self.script.get("flush") == "fail":
            raise ValueError(f"{self.name} flush failed")

    def close(self):
        pass


outputs_spec = st.lists(st.tuples(st.integers(1, 4), st.booleans(), st.booleans(),
                                  st.dictionaries(st.sampled_from(["m0", "m1", "m2", "m3",
                                                                   "m4", "flush"]),
                                                  st.sampled_from(["fail", "stop", None]),
                                                  max_size=3)),
                        max_size=3)
filters_spec = st.lists(st.tuples(st.integers(1, 4), st.booleans(),
                                  st.sampled_from(["a", "qemu", "x.y"])), max_size=3)
records_spec = st.lists(st.tuples(st.sampled_from([1, 2, 3, 4]),
                                  st.sampled_from(["a", "a.b", "qemu", "x.y", "z"]),
                                  st.sampled_from([None, "", "stack line\n"])),
                        max_size=6)


def run(use_c, outs_spec, filt_spec, default, recs, ring_kb, flush_each, batches):
    journal = []
    outs = [Scripted(f"out{i}", prio, text, batched, script, journal)
            for i, (prio, text, batched, script) in enumerate(outs_spec)]
    filters = [FilterSpec(prio, match, stack) for prio, stack, match in filt_spec]
    state = RouterState(FilterSet(filters, default), outs)
    if not use_c:
        state.plan = None
    router = Router(state, RingBuffer(ring_kb * 1024) if ring_kb else None,
                    flush_each=flush_each, report_interval=1000)
    if not use_c:
        _pure(router)
    records = [Record(prio, source, f"m{i}", time=1700000000.5 + i, pid=7, func="f", line=i,
                      stack=stack) for i, (prio, source, stack) in enumerate(recs)]
    outcome = []
    for start in range(0, len(records), batches):
        try:
            router.route_many(records[start:start + batches])
            outcome.append("ok")
        except Stop as err:
            outcome.append(("stop", str(err)))
    return (journal, outcome, router.ring.entries() if router.ring else None,
            [(o.written, o.failed, o.failing, o.recovering, o.last_error) for o in outs],
            router.received)


@in_use
@settings(max_examples=400, deadline=None)
@given(outs=outputs_spec, filt=filters_spec, default=st.integers(1, 4), recs=records_spec,
       ring_kb=st.sampled_from([0, 1, 64]), flush_each=st.booleans(),
       batches=st.integers(1, 4))
def test_the_c_loop_makes_the_same_calls_as_the_pure_one(outs, filt, default, recs, ring_kb,
                                                         flush_each, batches):
    args = (outs, filt, default, recs, ring_kb, flush_each, batches)
    assert run(True, *args) == run(False, *args)


class NoPriority(Scripted):
    @property
    def priority(self):
        raise RuntimeError("no priority")

    @priority.setter
    def priority(self, value):
        pass


@pytest.mark.parametrize("use_c", [pytest.param(True, marks=in_use), False])
def test_an_error_outside_an_output_costs_that_record_only_and_is_counted_and_reported(use_c):
    """A broken output attribute is the router's own error, not an output failure: that
    record is counted as unroutable, reported once (rate-limited) on every output, and the
    records after it are routed."""
    journal = []
    good = Scripted("good", 1, True, False, {}, journal)
    bad = NoPriority("bad", 1, True, False, {}, journal)
    state = RouterState(FilterSet([], 1), [good])
    state.outputs = (good, bad)
    state.plan = state.plan[:3] + (state.outputs,) + state.plan[4:] if use_c else None
    router = Router(state, RingBuffer(1024))
    if not use_c:
        _pure(router)
    router.route_many([Record(3, "s", "first", time=1.0, pid=1),
                       Record(3, "s", "second", time=1.0, pid=1)])
    report = ("could not route a record (pid 1, source 's'): RuntimeError: no priority "
              "(1 unroutable record so far)")
    assert [entry[:3] for entry in journal if entry[0] == "handle"] == [
        ("handle", "good", "first"), ("handle", "good", report), ("handle", "bad", report),
        ("handle", "good", "second")]
    assert len(router.ring.entries()) == 2
    assert router.received == 2
    assert router.stats()["dropped"] == {"unroutable record": 2}
    assert _free_for_another_thread(router._lock)


def _free_for_another_thread(lock):
    import threading
    got = []

    def take():
        if lock.acquire(timeout=5):
            got.append(True)
            lock.release()
    thread = threading.Thread(target=take)
    thread.start()
    thread.join()
    return got == [True]


@in_use
def test_the_router_runs_route_many_whole_in_c_when_built():
    router = Router(RouterState(FilterSet([], 1), []))
    assert type(Router.__dict__["route_many"]).__name__ == "method_descriptor"
    assert Router.route_many is not router_module._route_many_py
    assert router.route_many.__self__ is router and "route_many" not in vars(router)


class Lock:
    """A lock that says what is done to it, and whose release can fail."""

    def __init__(self, journal, release_error=None):
        self.journal, self.release_error = journal, release_error

    def acquire(self):
        self.journal.append("acquire")
        return True

    def release(self):
        self.journal.append("release")
        if self.release_error:
            raise self.release_error

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()


@pytest.mark.parametrize("use_c", BOTH)
def test_route_many_holds_the_lock_as_a_with_statement_does(use_c):
    """Acquired once around the batch and released after it, after an error too; an error
    of the release itself comes out with the routing error as its context."""
    journal = []
    outs = [Scripted("o", 1, True, False, {"m1": "stop"}, journal)]
    router = _router_of(outs, use_c)
    router._lock = Lock(journal)
    router.route_many([Record(3, "s", "m0", time=1.0, pid=1)])
    with pytest.raises(Stop):
        router.route_many([Record(3, "s", "m1", time=1.0, pid=1)])
    assert [e if isinstance(e, str) else e[:3] for e in journal] == [
        "acquire", ("handle", "o", "m0"), "release", "acquire", ("handle", "o", "m1"),
        "release"]
    router._lock = Lock([], RuntimeError("release broke"))
    with pytest.raises(RuntimeError, match="^release broke$") as err:
        router.route_many([Record(3, "s", "m1", time=1.0, pid=1)])
    assert type(err.value.__context__) is Stop and str(err.value.__context__) == "m1"
    router._lock = Lock([], RuntimeError("release broke"))
    with pytest.raises(RuntimeError, match="^release broke$") as err:
        router.route_many([Record(3, "s", "m0", time=1.0, pid=1)])
    assert err.value.__context__ is None
    assert router.received == 4


class Quirky(Lock):
    """__exit__ that handles an error of its own, or says the body's error is dealt with."""

    def __init__(self, journal, mode):
        super().__init__(journal)
        self.mode = mode

    def __exit__(self, *exc):
        self.journal.append(("exit", exc[0].__name__ if exc[0] else None))
        if self.mode == "suppress":
            return True
        try:
            raise KeyError("inner")
        except KeyError:
            raise RuntimeError("release broke")


@pytest.mark.parametrize("use_c", BOTH)
def test_route_many_exits_the_lock_exactly_as_a_with_statement_does(use_c):
    """__exit__ sees the body's error, a true answer suppresses it, and an error raised while
    __exit__ handles one of its own chains through that one to the body's error."""
    journal = []
    router = _router_of([Scripted("o", 1, True, False, {"m1": "stop"}, journal)], use_c)
    router._lock = Quirky(journal, "suppress")
    router.route_many([Record(3, "s", "m1", time=1.0, pid=1)])          # Stop suppressed
    assert journal[-1] == ("exit", "Stop")
    router._lock = Quirky(journal, "chain")
    with pytest.raises(RuntimeError) as err:
        router.route_many([Record(3, "s", "m1", time=1.0, pid=1)])
    inner = err.value.__context__
    assert type(inner) is KeyError and type(inner.__context__) is Stop
    assert inner.__context__.__context__ is None
    import sys
    assert sys.exc_info() == (None, None, None)


@pytest.mark.parametrize("use_c", BOTH)
def test_a_subclass_may_wrap_route_many(use_c):
    seen = []

    class Counting(Router):
        def route_many(self, records):
            seen.append(len(records))
            (super().route_many if use_c else
             types.MethodType(router_module._route_many_py, self))(records)
    journal = []
    state = RouterState(FilterSet([], 1), [Scripted("o", 1, True, False, {}, journal)])
    Counting(state).route_many([Record(3, "s", "m0", time=1.0, pid=1)])
    assert seen == [1] and [e[:3] for e in journal] == [("handle", "o", "m0")]


def _router_of(outs, use_c, filters=None):
    state = RouterState(filters or FilterSet([], 1), outs)
    if not use_c:
        state.plan = None
    router = Router(state, RingBuffer(1024), report_interval=1000)
    if not use_c:
        _pure(router)
    return router


class BrokenText(Scripted):
    reads = 0

    @property
    def text(self):
        BrokenText.reads += 1
        if BrokenText.reads > 1:          # the first read is RouterState's text_level
            raise RuntimeError("text broke")
        return True

    @text.setter
    def text(self, value):
        pass


@pytest.mark.parametrize("use_c", BOTH)
def test_an_output_attribute_that_fails_in_the_handle_line_is_that_outputs_failure(use_c):
    """Everything on the line `out.handle(record, full if out.text else line)` is inside the
    try: the output fails and is counted, the router carries on."""
    BrokenText.reads = 0
    journal = []
    broken = BrokenText("broken", 1, True, False, {}, journal)
    good = Scripted("good", 1, False, False, {}, journal)
    router = _router_of([broken, good], use_c)
    router.route_many([Record(3, "s", "m0", time=1.0, pid=1)])
    assert (broken.failed, broken.last_error) == (1, "RuntimeError: text broke")
    assert [entry[:3] for entry in journal if entry[0] == "handle"] == [
        ("handle", "good", "output 'broken' failed: RuntimeError: text broke (1 failure so far)"),
        ("handle", "good", "m0")]                           # the router carried on


@pytest.mark.parametrize("use_c", BOTH)
def test_failed_runs_as_an_except_block_does(use_c):
    """Inside _failed, sys.exc_info() is the output's error (what an except block sees)."""
    import sys
    seen = []

    class Watching(Router):
        def _failed(self, failing, err):
            seen.append((sys.exc_info()[0], err))
            super()._failed(failing, err)
    outs = [Scripted("bad", 1, True, False, {"m0": "fail"}, [])]
    state = RouterState(FilterSet([], 1), outs)
    if not use_c:
        state.plan = None
    Watching(state).route_many([Record(3, "s", "m0", time=1.0, pid=1)])
    assert seen[0][0] is OSError and str(seen[0][1]) == "[Errno 5] bad cannot write m0"
    assert sys.exc_info() == (None, None, None)


class Deciding(FilterSet):
    """A filter set whose decisions are whatever the test says (and never cached)."""
    answer = staticmethod(lambda: None)

    def decide(self, source):
        return Deciding.answer()


@pytest.mark.parametrize("use_c", BOTH)
@pytest.mark.parametrize("answer, error", [
    (lambda: [3, False], None),
    (lambda: iter((3, False)), None),
    (lambda: (3, False, 1), (ValueError, "too many values to unpack (expected 2)")),
    (lambda: (3,), (ValueError, "not enough values to unpack (expected 2, got 1)")),
    (lambda: None, (TypeError, "cannot unpack non-iterable NoneType object")),
])
def test_a_filter_decision_is_unpacked_as_python_does(use_c, answer, error):
    Deciding.answer = staticmethod(answer)
    journal = []
    router = _router_of([Scripted("o", 1, True, False, {}, journal)], use_c,
                        Deciding([], 1))
    router.route_many([Record(3, "s", "m0", time=1.0, pid=1)])
    if error is None:
        assert [entry[:3] for entry in journal] == [("handle", "o", "m0")]
    else:                  # the record is unroutable: counted and reported, never raised
        assert [entry[:3] for entry in journal if entry[0] == "handle"] == [("handle", "o", (
            f"could not route a record (pid 1, source 's'): {error[0].__name__}: {error[1]} "
            f"(1 unroutable record so far)"))]
        assert router.dropped == {"unroutable record": 1}


# -- LineAppender: a buffering text output's handle() -------------------------------------------
from virlogd.outputs import base as output_base  # noqa: E402

APPENDERS = [pytest.param(output_base._LineAppenderPy, id="pure")]
if router_module._croute is not None:
    APPENDERS.append(pytest.param(router_module._croute.LineAppender, id="c"))


class Journal(list):
    """A list whose own append must be the one called."""

    def append(self, item):
        super().append(("appended", item))


@pytest.mark.parametrize("appender_type", APPENDERS)
def test_a_line_appender_appends_each_line_and_counts_it(appender_type):
    lines = []
    appender = appender_type(lines)
    record = Record(2, "s", "m", time=1.0, pid=1)
    appender(record, "one\n")
    appender(record, "two\n")
    assert lines == ["one\n", "two\n"] and appender.count == 2 and appender.lines is lines
    journal = Journal()
    appender_type(journal)(record, "x")
    assert journal == [("appended", "x")]


class Refusing(list):
    def append(self, item):
        raise MemoryError("full")


@pytest.mark.parametrize("appender_type", APPENDERS)
def test_a_line_appender_that_cannot_append_raises_and_does_not_count(appender_type):
    appender = appender_type(Refusing())
    with pytest.raises(MemoryError, match="^full$"):
        appender(Record(2, "s", "m", time=1.0, pid=1), "x")
    assert appender.count == 0


@in_use
def test_both_line_appenders_refuse_wrong_calls_with_the_same_words():
    r = Record(2, "s", "m", time=1.0, pid=1)
    for args, kwargs in [((), {}), ((r,), {}), ((r, "l", "x"), {}), ((r,), {"line": "l"}),
                         ((), {"record": r, "line": "l"}), ((r, "l"), {"other": 1}),
                         ((r, "l", "x"), {"other": 1}), ((), {"other": 1, "line": "l"}),
                         ((r, "l"), {"self": 1}), ((r,), {"line": "l", "self": 1})]:
        outcomes = set()
        for appender_type in (output_base._LineAppenderPy, router_module._croute.LineAppender):
            with pytest.raises(TypeError) as err:
                appender_type([])(*args, **kwargs)
            outcomes.add(str(err.value))
        assert len(outcomes) == 1, outcomes


@in_use
def test_the_c_line_appender_keeps_no_reference():
    import sys
    lines, line, record = [], "a line\n", Record(2, "s", "m", time=1.0, pid=1)
    appender = router_module._croute.LineAppender(lines)
    before = (sys.getrefcount(line), sys.getrefcount(record))
    for _ in range(1000):
        appender(record, line)
    lines.clear()
    for _ in range(1000):
        with pytest.raises(TypeError):
            appender(record)
    assert (sys.getrefcount(line), sys.getrefcount(record)) == before
