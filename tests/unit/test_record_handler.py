"""VirlogdHandler record by record: what frame each stdlib record becomes, and how errors are
handled (``handleError`` for what emit() raises, a BaseException out to the caller)."""
import logging
import sys

import pytest
from hypothesis import given, settings, strategies as st

from virlogd.client.handler import VirlogdHandler
from virlogd.protocol import wire


class Stop(BaseException):
    """Not an Exception: must come out of handle(), not go to handleError."""


class Watched(VirlogdHandler):
    """Records what handleError saw."""

    def handleError(self, record):
        self.errors.append((sys.exc_info()[0], str(sys.exc_info()[1])))


def make_handler(tmp_path, send=None, follow=True):
    handler = Watched(str(tmp_path / "nobody"), follow_daemon_levels=follow)
    handler.errors, handler.frames = [], []
    handler.client.send_frame = send or handler.frames.append
    return handler


def decode(frame):
    decoder = wire.FrameDecoder(greeting=False)
    [record] = decoder.feed(frame)
    return record


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
rarely = st.sampled_from([False, False, False, True])
times = st.floats(0, 2e9)


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
    return record


@settings(max_examples=300, deadline=None)
@given(record=records())
def test_any_record_is_sent_whole_or_reported_never_raised(tmp_path_factory, record):
    """Whatever the record holds, handle() returns True having sent one frame the daemon
    decodes to the record's message, or having called handleError instead."""
    handler = make_handler(tmp_path_factory.mktemp("h"), follow=False)
    try:
        assert handler.handle(record) is True
        assert len(handler.frames) + len(handler.errors) == 1
        if handler.frames:
            sent = decode(handler.frames[0])
            assert sent.message == record.getMessage()
            assert (sent.func, sent.file) == (record.funcName or None, record.pathname or None)
    finally:
        handler.close()


def test_a_plain_record_an_extra_an_exception_a_formatter_and_a_filter(tmp_path):
    handler = make_handler(tmp_path)
    log = logging.getLogger("test.record_handler")
    log.propagate, log.handlers = False, [handler]
    log.setLevel(1)
    log.info("plain %d", 1)
    log.info("tagged", extra={"MESSAGE_ID": "x", "request_id": 7, "MESSAGE": "m"})
    try:
        raise KeyError("k")
    except KeyError:
        log.exception("failed")
    handler.setFormatter(logging.Formatter("%(message)s!"))
    log.info("formatted")
    handler.setFormatter(None)
    handler.addFilter(lambda r: r.getMessage() != "vetoed")
    log.info("vetoed")
    log.info("filtered")
    sent = [decode(frame) for frame in handler.frames]
    assert [r.message for r in sent] == ["plain 1", "tagged", "failed", "formatted!",
                                         "filtered"]
    assert sent[0].source == "test.record_handler" and sent[0].priority == 2
    assert sent[0].func == "test_a_plain_record_an_extra_an_exception_a_formatter_and_a_filter"
    assert sent[1].fields == {"MESSAGE_ID": "x", "X_MESSAGE": "m"}     # lower case: not sent
    assert sent[2].priority == 4 and "KeyError: 'k'" in sent[2].stack
    assert sent[0].stack is None and sent[0].fields == {}
    handler.close()
    log.handlers = []


def test_emit_or_handle_replaced_after_the_handler_was_made_is_what_runs(tmp_path,
                                                                      monkeypatch):
    record = logging.LogRecord("n", 20, "p", 1, "m", (), None)
    handler = make_handler(tmp_path)
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


def test_an_error_while_sending_reaches_the_stdlib_handle_error_with_a_traceback(tmp_path,
                                                                              capsys):
    handler = VirlogdHandler(str(tmp_path / "nobody"))
    handler.client.send_frame = None                   # calling it fails
    assert handler.handle(logging.LogRecord("n", 20, "p", 1, "m", (), None)) is True
    lines = capsys.readouterr().err.strip().splitlines()
    assert [line for line in lines if not line.startswith(" ")
            and not line.startswith("Traceback")] == [
        "--- Logging error ---", "TypeError: 'NoneType' object is not callable",
        "Call stack:", "Message: 'm'", "Arguments: ()"]
    handler.close()


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


@pytest.mark.parametrize("how", ["drop", "extra", "rename"])
def test_a_record_changed_by_its_own_message_is_read_after_the_message(tmp_path, how):
    msg = Meddling(how)
    record = logging.LogRecord("n", 20, "p", 1, msg, (), None)
    msg.record = record
    handler = make_handler(tmp_path)
    assert handler.handle(record) is True
    if how == "drop":
        assert handler.errors == [(AttributeError,
                                   "'LogRecord' object has no attribute 'name'")]
        assert handler.frames == []
    else:
        sent = decode(handler.frames[0])
        assert handler.errors == []
        assert sent.fields == ({"MESSAGE_ID": "added"} if how == "extra" else {})
        assert sent.source == ("renamed" if how == "rename" else "n")
    handler.close()


def test_a_subclass_that_overrides_emit_or_handle_keeps_its_own(tmp_path):
    class OwnEmit(VirlogdHandler):
        def emit(self, record):
            self.seen = record.getMessage()

    class OwnHandle(VirlogdHandler):
        def handle(self, record):
            self.seen = record.getMessage()
    for cls in (OwnEmit, OwnHandle):
        handler = cls(str(tmp_path / "nobody"))
        handler.handle(logging.LogRecord("n", 20, "p", 1, "mine", (), None))
        assert handler.seen == "mine"
        handler.close()


def test_the_handler_keeps_no_reference(tmp_path):
    handler = make_handler(tmp_path)
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


@pytest.mark.parametrize("level, priority", [(0, 1), (9, 1), (10, 1), (19, 1), (20, 2),
                                             (29, 2), (30, 3), (39, 3), (40, 4), (50, 4),
                                             (2**70, 4), (-3, 1), (45.5, 4), (True, 1)])
def test_levels_map_to_priorities(tmp_path, level, priority):
    handler = make_handler(tmp_path)
    handler.handle(logging.LogRecord("n", level, "p", 1, "m", (), None))
    assert handler.frames[0][5] == priority
    handler.close()


def test_a_stack_alone_is_sent_and_a_base_exception_comes_out(tmp_path):
    handler = make_handler(tmp_path)
    handler.handle(logging.LogRecord("n", 20, "p", 1, "m", (), None, sinfo="Stack:\n x"))
    assert decode(handler.frames[0]).stack == "Stack:\n x\n"

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


@pytest.mark.parametrize("how", ["exc_text", "formatter", "filters"])
def test_a_handler_or_record_that_fails_to_be_read_fails_as_stdlib_handlers_do(tmp_path,
                                                                             how):
    """A record whose exc_text cannot be tested, a handler without its formatter: reported
    through handleError (emit's errors); a handler without its filters: raised, as the
    stdlib's handle() does before emit's try."""
    handler = make_handler(tmp_path)
    record = logging.LogRecord("n", 20, "p", 1, "m", (), None)
    if how == "exc_text":
        record.exc_text = BadTruth()
    else:
        delattr(handler, how)
    if how == "filters":
        with pytest.raises(AttributeError):
            handler.handle(record)
    else:
        assert handler.handle(record) is True
        assert handler.errors == [{
            "exc_text": (ValueError, "no truth"),
            "formatter": (AttributeError, "'Watched' object has no attribute 'formatter'")}[how]]
    handler.frames = []
    handler.filters = []
    handler.close()


def test_the_handler_has_one_emit_and_no_per_instance_handle(tmp_path):
    """A plain logging.Handler: what runs is the class's handle() and emit(), so a program
    (or a subclass) that wraps them changes what happens."""
    handler = make_handler(tmp_path)
    assert "handle" not in vars(handler) and "emit" not in vars(handler)
    handler.close()
