"""VirlogdHandler's C path (``_cwire.RecordHandler``) against its Python handle().

With wire's C twin, a VirlogdHandler's ``handle`` is a C object that sends the usual stdlib
record in one call and hands anything else to the Python ``handle()``. For any record and
any handler state, both must send the same frames, call ``handleError`` alike (with the same
exception being handled), return the same and let the same exceptions out.
"""
import logging
import math
import sys

import pytest
from hypothesis import given, settings, strategies as st

from virlogd.protocol import wire
from virlogd.client.handler import VirlogdHandler

in_use = pytest.mark.skipif(wire.RecordHandler is None, reason="the C twin of wire is not in "
                            "use (not built, or VIRLOGD_PURE_PYTHON=1)")


class Stop(BaseException):
    """Not an Exception: must come out of handle(), not go to handleError."""


class Watched(VirlogdHandler):
    """Records what handleError saw (overriding it keeps the C path: handle and emit are
    the class's own)."""

    def handleError(self, record):
        self.errors.append((sys.exc_info()[0], str(sys.exc_info()[1])))


def make_handler(tmp_path, c_path, send=None):
    handler = Watched(str(tmp_path / "nobody"))
    handler.errors, handler.frames = [], []
    handler.client.send_frame = send or handler.frames.append
    if not c_path:
        del handler.handle                    # the class's handle(), in Python
    return handler


class Odd:
    def __str__(self):
        raise ValueError("no text")


texts = st.one_of(st.text(max_size=12), st.sampled_from(["", "app.io", "caf\xe9", "a\nb"]))
messages = st.one_of(texts, st.sampled_from(["%d items", "%s and %s", "%(k)s", "100%"]),
                     st.just(Odd()), st.integers())
arguments = st.one_of(st.just(()), st.tuples(st.integers()), st.tuples(texts, texts),
                      st.just(({"k": "v"},)), st.just(("x",)))
levels = st.one_of(st.sampled_from([0, 5, 9, 10, 19, 20, 29, 30, 39, 40, 50, 2**70, -3]),
                   st.integers(-5, 70), st.sampled_from([25.5, 45.5, True]))
rarely = st.sampled_from([False, False, False, True])     # most records take the C path
extras = st.dictionaries(st.sampled_from(["MESSAGE_ID", "request_id", "LIBVIRT_CODE",
                                          "MESSAGE", "bad-name"]),
                         st.one_of(texts, st.integers(), st.none()), max_size=2)
times = st.one_of(st.floats(0, 2e9), st.sampled_from([-1.0, math.inf, math.nan]))


@st.composite
def records(draw):
    record = logging.LogRecord(draw(st.one_of(texts, st.just(7))), draw(levels),
                               draw(st.one_of(texts, st.none())),
                               draw(st.one_of(st.integers(0, 2**33), st.none())),
                               draw(messages), draw(arguments), None,
                               func=draw(st.one_of(texts, st.none())),
                               sinfo="Stack (most recent call last):\n x" if draw(rarely)
                               else None)
    record.created = draw(times)
    if draw(rarely):
        try:
            raise KeyError("inside")
        except KeyError:
            record.exc_info = sys.exc_info()
    for key, value in (draw(extras) if draw(rarely) else {}).items():
        setattr(record, key, value)
    return record


def outcome(handler, record):
    try:
        result = ("returned", handler.handle(record))
    except BaseException as err:  # noqa: BLE001 - what comes out is what is compared
        result = ("raised", type(err), str(err))
    return result, list(handler.frames), list(handler.errors)


@in_use
@settings(max_examples=400, deadline=None)
@given(record=records(), formatter=rarely, veto=rarely,
       failure=st.sampled_from([None, None, OSError(32, "gone"), Stop("stop")]))
def test_the_c_path_does_what_the_python_handle_does(tmp_path_factory, record, formatter,
                                                     veto, failure):
    tmp_path = tmp_path_factory.mktemp("h")
    results = []
    for c_path in (True, False):
        sent = []

        def send(frame):
            if failure is not None:
                raise failure
            sent.append(frame)
        handler = make_handler(tmp_path, c_path, send)
        handler.frames = sent
        if formatter:
            handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
        if veto:
            handler.addFilter(lambda r: r.levelno != 30)
        try:
            results.append(outcome(handler, record))
        finally:
            handler.close()
    assert results[0] == results[1]


@in_use
def test_a_plain_handler_takes_the_c_path_and_a_filter_or_formatter_the_python_one(tmp_path):
    """Every LogRecord (extras and exceptions too) is sent without the Python handle() while
    the handler has no filters and no formatter; with either, the Python handle() sends it,
    so nothing changes for them. Another record class goes to the Python handle() too."""
    from virlogd.client import handler as handler_module
    calls = []

    def spy(self, record):
        calls.append(record.getMessage())
        return VirlogdHandler.handle(self, record)

    class Spied(Watched):
        handle = spy
    handler = Spied(str(tmp_path / "nobody"))
    handler.errors, handler.frames = [], []
    handler.client.send_frame = handler.frames.append
    plan = (spy,) + handler_module._C_PLAN[1:]
    handler.handle = wire.RecordHandler(handler, plan)
    log = logging.getLogger("test.record_handler")
    log.propagate, log.handlers = False, [handler]
    log.setLevel(1)
    log.info("plain %d", 1)
    log.info("tagged", extra={"MESSAGE_ID": "x"})
    try:
        raise KeyError("k")
    except KeyError:
        log.exception("failed")
    handler.setFormatter(logging.Formatter("%(message)s!"))
    log.info("formatted")
    handler.setFormatter(None)
    handler.addFilter(lambda r: True)
    log.info("filtered")
    handler.filters.clear()

    class Mine(logging.LogRecord):
        pass
    handler.handle(Mine("n", 20, "p", 1, "subclassed", (), None))
    assert calls == ["formatted", "filtered", "subclassed"]
    assert len(handler.frames) == 6 and b"plain 1" in handler.frames[0]
    assert b"MESSAGE_ID" in handler.frames[1] and b"KeyError: 'k'" in handler.frames[2]
    assert b"formatted!" in handler.frames[3]
    handler.close()
    assert "handle" not in vars(handler)        # closed: the C path lets go of it


@in_use
def test_emit_or_handle_replaced_after_the_handler_was_made_is_what_runs(tmp_path,
                                                                      monkeypatch):
    """Patching emit on the instance or the class, or handle on the class, takes effect at
    once, as it does without the C path."""
    record = logging.LogRecord("n", 20, "p", 1, "m", (), None)
    handler = make_handler(tmp_path, True)
    seen = []
    handler.emit = lambda r: seen.append(("instance emit", r.msg))
    handler.handle(record)
    del handler.emit
    monkeypatch.setattr(VirlogdHandler, "emit", lambda self, r: seen.append(("class emit",
                                                                           r.msg)))
    handler.handle(record)
    monkeypatch.undo()
    monkeypatch.setattr(VirlogdHandler, "handle", lambda self, r: seen.append(("class handle",
                                                                             r.msg)))
    handler.handle(record)
    monkeypatch.undo()
    handler.handle(record)
    assert seen == [("instance emit", "m"), ("class emit", "m"), ("class handle", "m")]
    assert len(handler.frames) == 1
    handler.close()


@in_use
def test_an_error_raised_in_c_reaches_the_stdlib_handle_error_with_a_traceback(tmp_path,
                                                                            capsys):
    """The stdlib's handleError walks tb.tb_frame: an error from C code (here the client's
    send_frame missing) must come with a traceback, as it does from emit()."""
    outputs = []
    for c_path in (True, False):
        handler = VirlogdHandler(str(tmp_path / "nobody"))
        if not c_path:
            del handler.handle
        handler.client.send_frame = None                   # calling it fails, in C
        assert handler.handle(logging.LogRecord("n", 20, "p", 1, "m", (), None)) is True
        lines = capsys.readouterr().err.strip().splitlines()
        outputs.append([line for line in lines if not line.startswith(" ")
                        and not line.startswith("Traceback")])
        handler.close()
    assert outputs[0] == outputs[1] == [
        "--- Logging error ---", "TypeError: 'NoneType' object is not callable",
        "Call stack:", "Message: 'm'", "Arguments: ()"]


class Meddling:
    """A message whose text changes the record it is in (getMessage runs first)."""

    def __init__(self, how):
        self.how, self.record = how, None

    def __str__(self):
        if self.how == "drop":
            del self.record.name
        elif self.how == "extra":
            self.record.MESSAGE_ID = "added"
        elif self.how == "rename":
            self.record.name = "renamed"
        return "meddled"


@in_use
@pytest.mark.parametrize("how", ["drop", "extra", "rename"])
def test_a_record_changed_by_its_own_message_is_read_as_the_python_handler_reads_it(
        tmp_path, how):
    """Attributes are read after getMessage(), as emit() reads them: what the message did to
    the record shows, and a missing one goes to handleError, on both paths."""
    results = []
    for c_path in (True, False):
        msg = Meddling(how)
        record = logging.LogRecord("n", 20, "p", 1, msg, (), None)
        record.created = 1700000000.0
        msg.record = record
        handler = make_handler(tmp_path, c_path)
        results.append(outcome(handler, record))
        handler.close()
    assert results[0] == results[1]
    if how == "drop":
        assert results[0][2] == [(AttributeError, "'LogRecord' object has no attribute 'name'")]
    else:
        assert results[0][1] and results[0][2] == []


def test_a_subclass_that_overrides_emit_or_handle_keeps_its_own(tmp_path):
    class OwnEmit(VirlogdHandler):
        def emit(self, record):
            self.seen = record.getMessage()

    class OwnHandle(VirlogdHandler):
        def handle(self, record):
            self.seen = record.getMessage()
    for cls in (OwnEmit, OwnHandle):
        handler = cls(str(tmp_path / "nobody"))
        assert "handle" not in vars(handler)
        handler.handle(logging.LogRecord("n", 20, "p", 1, "mine", (), None))
        assert handler.seen == "mine"
        handler.close()


@in_use
def test_a_wrong_call_gets_the_python_handles_error(tmp_path):
    handler = make_handler(tmp_path, True)
    with pytest.raises(TypeError) as c_err:
        handler.handle()
    with pytest.raises(TypeError) as py_err:
        VirlogdHandler.handle(handler)
    assert str(c_err.value) == str(py_err.value)
    with pytest.raises(TypeError) as c_err:
        handler.handle(logging.LogRecord("n", 20, "p", 1, "m", (), None), extra=1)
    assert "extra" in str(c_err.value)
    handler.close()


@in_use
def test_the_c_path_keeps_no_reference(tmp_path):
    handler = make_handler(tmp_path, True)
    record = logging.LogRecord("n", 20, "p", 1, "m %s", ("x",), None)
    bad = logging.LogRecord("n", 20, "p", 1, "m %d", ("x",), None)     # getMessage fails
    before = (sys.getrefcount(record), sys.getrefcount(bad), sys.getrefcount(handler))
    for _ in range(2000):
        handler.handle(record)
        handler.handle(bad)
    handler.frames.clear()
    handler.errors.clear()
    assert (sys.getrefcount(record), sys.getrefcount(bad), sys.getrefcount(handler)) == before
    handler.close()


@in_use
@pytest.mark.parametrize("level, priority", [(0, 1), (9, 1), (10, 1), (19, 1), (20, 2),
                                             (29, 2), (30, 3), (39, 3), (40, 4), (50, 4),
                                             (2**70, 4), (-3, 1), (45.5, 4), (True, 1)])
def test_the_c_path_maps_levels_as_the_python_handler_does(tmp_path, level, priority):
    frames, record = [], logging.LogRecord("n", level, "p", 1, "m", (), None)
    for c_path in (True, False):
        handler = make_handler(tmp_path, c_path)
        handler.handle(record)
        frames.append(handler.frames[0])
        handler.close()
    assert frames[0] == frames[1] and frames[0][5] == priority


@in_use
@pytest.mark.parametrize("c_path", [True, False])
def test_a_stack_alone_or_a_base_exception_is_as_the_python_handler_does(tmp_path, c_path):
    """stack_info alone sends the stack; a BaseException from the client comes out, never
    reaching handleError."""
    handler = make_handler(tmp_path, c_path)
    handler.handle(logging.LogRecord("n", 20, "p", 1, "m", (), None, sinfo="Stack:\n x"))
    assert b"Stack:\n x" in handler.frames[0]

    def stop(frame):
        raise Stop("stop")
    handler.client.send_frame = stop
    with pytest.raises(Stop):
        handler.handle(logging.LogRecord("n", 20, "p", 1, "m", (), None))
    assert handler.errors == []
    handler.close()


class BadTruth:
    def __bool__(self):
        raise ValueError("no truth")


@in_use
@pytest.mark.parametrize("how", ["exc_text", "formatter", "filters"])
def test_a_handler_or_record_that_fails_to_be_read_fails_as_the_python_handle_does(
        tmp_path, how):
    """A record whose exc_text cannot be tested, a handler without its formatter: reported
    through handleError, as emit() does; a handler without its filters: raised, as handle()
    does (before emit's try)."""
    results = []
    for c_path in (True, False):
        handler = make_handler(tmp_path, c_path)
        record = logging.LogRecord("n", 20, "p", 1, "m", (), None)
        record.created = 1700000000.0
        if how == "exc_text":
            record.exc_text = BadTruth()
        else:
            delattr(handler, how)
        results.append(outcome(handler, record))
        handler.close()
    assert results[0] == results[1]
    expected = {"exc_text": (ValueError, "no truth"),
                "formatter": (AttributeError, "'Watched' object has no attribute 'formatter'")}
    if how in expected:
        assert results[0][0] == ("returned", True) and results[0][2] == [expected[how]]
    else:
        assert results[0][0][:2] == ("raised", AttributeError)
