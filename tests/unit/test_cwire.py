"""The C twin of wire (``_cwire.c``) against the pure-Python reference, on random input.

Both must give the same records (every slot, same types), the same errors with the same
messages, the same ``renamed``, ``pending`` and ``failed``; and the same frames and
ValueErrors when encoding. The C loop parses bytes from untrusted clients, so the streams
here are also corrupted at random (flipped bytes, cuts, bad lengths) and fed in random pieces.
"""
import os
import struct
import sys
import tracemalloc

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from virlogd.core import native
from virlogd.protocol import wire
from virlogd.core.errors import ProtocolError
from virlogd.core.record import Record

from callargs import MESSAGES

in_use = pytest.mark.skipif(wire._cframes is None, reason="the C twin of wire is not in use "
                            "(not built, or VIRLOGD_PURE_PYTHON=1)")


def test_the_c_twin_is_built_in_ci_and_used_when_built():
    """CI must measure and test the C twin: a build that silently lost it fails here."""
    if not native.built("wire"):
        if os.environ.get("CI"):
            pytest.fail("virlogd._cwire was not built (run: pip install -e . with a compiler)")
        pytest.skip("virlogd._cwire is not built")
    if not native.PURE:
        # bind() refused Record (its slots changed?): wire.py silently runs pure Python
        assert wire._cframes is not None
        assert wire.encode_parts is wire._cwire.encode_parts
        assert wire.encode is wire._cwire.encode


# -- strategies ------------------------------------------------------------------------------
any_text = st.one_of(
    st.text(max_size=40),
    st.text(alphabet=st.characters(exclude_categories=()), max_size=20),   # lone surrogates
    st.binary(max_size=30).map(lambda b: b.decode("utf-8", "surrogateescape")),
    st.sampled_from(["", "s", "qemu.monitor", "caf\xe9", "\u65e5\u672c", "a\nb\x00c"]),
)
optional_text = st.one_of(st.none(), any_text)
field_names = st.one_of(
    st.from_regex(r"\A[A-Z][A-Z0-9_]{0,63}\Z"),
    st.sampled_from(["MESSAGE_ID", "MESSAGE", "PRIORITY", "_PID", "message-id", "A" * 64,
                     "A" * 65, "B" * 300, "ABC\n", "\xc9T\xc9", "", "9X", "X" * 255]),
    st.text(max_size=8),
)
field_values = st.one_of(any_text, st.binary(max_size=20), st.integers())
fields = st.one_of(st.none(), st.just({}),
                   st.dictionaries(field_names, field_values, max_size=4))
times = st.one_of(st.floats(min_value=0.0, max_value=wire.MAX_TIME),
                  st.sampled_from([0.0, -0.0, 1700000000.25, wire.MAX_TIME]))


@st.composite
def parts(draw):
    """Keyword arguments of encode_parts that it accepts (what a good client sends)."""
    return dict(priority=draw(st.integers(1, 4)), source=draw(any_text),
                message=draw(any_text), time=draw(times), func=draw(optional_text),
                line=draw(st.one_of(st.integers(0, 2**32 - 1), st.integers())),
                file=draw(optional_text), fields=draw(fields), stack=draw(optional_text),
                ident=draw(optional_text))


def encode(p):
    p = dict(p)
    return wire._encode_parts_py(p.pop("priority"), p.pop("source"), p.pop("message"), **p)


def raw_frame(draw):
    """A frame no encoder makes: arbitrary bytes in the parts, kinds and names."""
    strings = [draw(st.binary(max_size=12)) for _ in range(6)]
    count = draw(st.integers(0, 3))
    tail = b""
    for _ in range(count):
        name = draw(st.one_of(st.binary(max_size=8), st.from_regex(rb"\A[A-Z][A-Z0-9_]{0,8}\Z")))
        value = draw(st.binary(max_size=8))
        tail += struct.pack("<BBI", len(name), draw(st.sampled_from([0, 1, 1, 2])),
                            len(value)) + name + value
    body = struct.pack("<BBHId6I", 1, draw(st.integers(1, 4)), count, draw(st.integers(0, 9)),
                       draw(times), *map(len, strings)) + b"".join(strings) + tail
    return struct.pack("<I", len(body)) + body


@st.composite
def streams(draw):
    """A greeting and frames, maybe corrupted, and where the stream is cut into reads."""
    frames = draw(st.lists(st.one_of(parts().map(encode), st.just(None)),
                           min_size=1, max_size=8))
    frames = [raw_frame(draw) if f is None else f for f in frames]
    starts, data = [], bytearray(draw(st.sampled_from([wire.HELLO, wire.HELLO_V1])))
    for frame in frames:
        starts.append(len(data))
        data += frame
    for _ in range(draw(st.integers(0, 3))):
        how = draw(st.sampled_from(["flip", "cut", "length", "insert", "delete"]))
        at = draw(st.integers(0, max(len(data) - 1, 0)))
        if how == "flip" and data:
            data[at] ^= draw(st.integers(1, 255))
        elif how == "cut":
            del data[at:]
        elif how == "length":
            start = draw(st.sampled_from(starts))
            old = struct.unpack_from("<I", data, start)[0] if start + 4 <= len(data) else 0
            new = draw(st.one_of(st.integers(0, 2**32 - 1), st.integers(-3, 3).map(
                lambda d, old=old: max(0, old + d)), st.sampled_from([39, 40, 41, 2**22,
                                                                      2**22 + 1])))
            data[start:start + 4] = struct.pack("<I", new)
        elif how == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=6))
        elif how == "delete":
            del data[at:at + draw(st.integers(1, 6))]
    cuts = sorted(set(draw(st.lists(st.integers(0, len(data)), max_size=6))))
    pieces, start = [], 0
    for cut in cuts + [len(data)]:
        pieces.append(bytes(data[start:cut]))
        start = cut
    views = draw(st.lists(st.booleans(), min_size=len(pieces), max_size=len(pieces)))
    return pieces, views


# -- comparing -------------------------------------------------------------------------------
def slots(record):
    """Every slot, with its exact type (and a float's sign and bits)."""
    values = []
    for name in Record.__slots__:
        value = getattr(record, name)
        values.append((name, type(value), value.hex() if isinstance(value, float) else value))
        if isinstance(value, dict):
            values.append((name, [(type(k), k, type(v)) for k, v in value.items()]))
    return values


def outcome(decoder, pieces, views):
    """What the decoder says, read after read, and its counters after each."""
    events = []
    for piece, as_view in zip(pieces, views):
        try:
            got = decoder.feed(memoryview(bytearray(piece)) if as_view else piece)
            events.append(("records", [slots(r) for r in got]))
        except ProtocolError as err:
            records = getattr(err, "records", None)     # none once the decoder has failed
            events.append(("error", str(err), records and [slots(r) for r in records]))
        # _need steers the next feed(); once failed there is none (and Python leaves it stale)
        events.append((decoder.renamed, decoder.pending, decoder.failed, decoder.version,
                       decoder._need if decoder.failed is None else None))
    return events


def both(**kwargs):
    fast = wire.FrameDecoder(**kwargs)
    pure = wire.FrameDecoder(**kwargs)
    pure._cframes = None
    assert fast._cframes is not None
    return fast, pure


# -- decoding --------------------------------------------------------------------------------
@in_use
class TestDecoding:
    @settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(stream=streams(), max_frame=st.sampled_from([wire.MAX_FRAME, 60, 200]))
    def test_both_decoders_agree_on_any_stream(self, stream, max_frame):
        """Valid, raw and corrupted frames, cut anywhere, as bytes or memoryviews."""
        pieces, views = stream
        fast, pure = both(pid=4242, uid=1000, gid=None, max_frame=max_frame)
        assert outcome(fast, pieces, views) == outcome(pure, pieces, views)

    @settings(max_examples=150, deadline=None)
    @given(frames=st.lists(parts().map(encode), min_size=1, max_size=20))
    def test_both_decoders_agree_on_runs_of_good_frames(self, frames):
        """One read of many frames: the C loop's main case, interleaved with Python's."""
        data = wire.HELLO + b"".join(frames)
        fast, pure = both(pid=1, uid=2, gid=3)
        assert outcome(fast, [data], [True]) == outcome(pure, [data], [False])
        assert fast.failed is None

    @given(name=st.one_of(field_names, st.text(alphabet="AZ_09az\n\xc9", max_size=70)))
    def test_field_names_are_kept_or_renamed_alike(self, name):
        """The C name check is exactly fieldnames.is_valid (or leaves the frame to Python)."""
        raw = name.encode("latin-1", "replace")[:255]
        body = (struct.pack("<BBHId6I", 1, 2, 1, 0, 1.0, 1, 0, 0, 0, 0, 0) + b"s"
                + struct.pack("<BBI", len(raw), 0, 1) + raw + b"v")
        data = wire.HELLO + struct.pack("<I", len(body)) + body
        fast, pure = both()
        assert outcome(fast, [data], [False]) == outcome(pure, [data], [False])

    def test_the_fast_loop_reports_where_it_stopped(self):
        """frames() returns (pos, need): need is the size of an incomplete frame at pos."""
        one = wire._encode_parts_py(2, "s", "m", time=1.0)
        renamed = wire._encode_parts_py(2, "s", "m", time=1.0, fields={"x": "y"})
        out = []
        args = (wire.MAX_FRAME, None, None, None)
        assert wire._cframes(one * 2 + one[:10], 0, out, *args) == (2 * len(one), len(one))
        assert wire._cframes(one + renamed + one, 0, out, *args) == (len(one), 0)
        assert wire._cframes(bytearray(one + b"\x01\x02"), 0, out, *args) == (len(one), 0)
        assert wire._cframes(memoryview(one)[:len(one) - 1], 0, out, *args) == (0, len(one))
        assert wire._cframes(one, len(one), out, *args) == (len(one), 0)
        assert len(out) == 4
        with pytest.raises(ValueError):
            wire._cframes(one, len(one) + 1, out, *args)
        with pytest.raises(ValueError):
            wire._cframes(one, -1, out, *args)
        with pytest.raises(TypeError):
            wire._cframes("text", 0, out, *args)

    def test_decoding_leaks_no_reference_and_no_memory(self):
        """Records, bailed-out frames and errors release what the C loop made."""
        pid = 10**30 + 7                       # an object only this test holds
        good = wire._encode_parts_py(3, "src", "caf\xe9", time=5.0, func="f", file="/x",
                                     stack="s", ident="i", fields={"A": "b", "B": b"c"})
        renamed = wire._encode_parts_py(2, "src", "m", time=1.0, fields={"a": "b"})
        bad_func = wire._encode_parts_py(2, "s", "m", time=1.0, func="ff")
        bad_func = bad_func[:-2] + b"\xff" + bad_func[-1:]
        streams = [good * 50, good * 5 + renamed + good, good + bad_func,
                   good + b"\xff" * 8, good + good[:-1]]

        def run():
            for data in streams:
                decoder = wire.FrameDecoder(pid=pid, uid=pid, gid=pid)
                try:
                    decoder.feed(wire.HELLO + data)
                except ProtocolError:
                    pass

        run()
        before = (sys.getrefcount(pid), sys.getrefcount(Record))
        tracemalloc.start()
        try:
            run()
            start = tracemalloc.get_traced_memory()[0]
            for _ in range(30):
                run()
            grown = tracemalloc.get_traced_memory()[0] - start
        finally:
            tracemalloc.stop()
        assert (sys.getrefcount(pid), sys.getrefcount(Record)) == before
        assert grown < 20000, f"{grown} bytes kept by 30 rounds"


# -- encoding --------------------------------------------------------------------------------
def encoded(function, args, kwargs):
    try:
        return ("frame", function(*args, **kwargs))
    except Exception as err:  # noqa: BLE001 - the exception is what is compared
        return ("error", type(err), str(err))


odd = st.one_of(st.none(), st.integers(), st.floats(), st.booleans(), st.binary(max_size=4),
                st.just({}), st.just([]), st.just({"K": "v"}), any_text)


@in_use
class TestEncoding:
    @settings(max_examples=300, deadline=None)
    @given(p=parts())
    def test_both_encoders_make_the_same_frame(self, p):
        """Every argument the encoder takes, with text of any kind."""
        p = dict(p)
        args = (p.pop("priority"), p.pop("source"), p.pop("message"))
        kwargs = {k: v for k, v in p.items() if v is not None or k == "fields"}
        assert encoded(wire._cwire.encode_parts, args, kwargs) == \
            encoded(wire._encode_parts_py, args, kwargs)

    @settings(max_examples=300, deadline=None)
    @given(priority=odd | st.integers(-2, 6), source=odd, message=odd,
           kwargs=st.dictionaries(st.sampled_from(["time", "func", "line", "file", "fields",
                                                   "stack", "ident", "other", "source"]),
                                  odd | times))
    def test_both_encoders_fail_alike_on_odd_arguments(self, priority, source, message,
                                                       kwargs):
        """Wrong types, values and keywords: the same result or the same exception."""
        args = (priority, source, message)
        assert encoded(wire._cwire.encode_parts, args, kwargs) == \
            encoded(wire._encode_parts_py, args, kwargs)

    @settings(max_examples=300, deadline=None)
    @given(p=parts(), line=st.one_of(st.none(), st.integers(0, 2**32 - 1)),
           default=optional_text, pid=st.integers(0, 2**22))
    def test_encoding_a_record_is_encode_parts_of_its_slots(self, p, line, default, pid):
        """encode(record, ident): line or 0, the record's ident or the default; a Record
        read in place, any other object by attribute, the same frame as the Python one."""
        record = Record(p["priority"], p["source"], p["message"], time=p["time"],
                        func=p["func"], line=line, file=p["file"], fields=p["fields"],
                        stack=p["stack"], pid=pid, ident=p["ident"])

        class Duck:
            pass
        duck = Duck()
        for name in Record.__slots__:
            setattr(duck, name, getattr(record, name))
        for target in (record, duck):
            assert encoded(wire._cwire.encode, (target, default), {}) == \
                encoded(wire._encode_py, (target, default), {})
        assert encoded(wire._cwire.encode, (record,), {}) == \
            encoded(wire._encode_py, (record,), {})

    def test_here_builds_the_record_record_here_builds(self):
        """The library's constructor: every slot as Record.here's, stamped with the clock
        time.time() reads; fields None -> a fresh {} each time."""
        import time
        args = (2, "src", "msg", "f", 7, "/a.py", 4242, None, None)
        before = time.time()
        made, reference = wire._cwire.here(*args), Record.here(*args)
        after = time.time()
        assert type(made) is Record
        assert before <= made.time <= after and type(made.time) is float
        for name in Record.__slots__:
            if name != "time":
                assert getattr(made, name) == getattr(reference, name), name
        assert made.fields == {} and made.fields is not wire._cwire.here(*args).fields
        given = {"MESSAGE_ID": "x"}
        assert wire._cwire.here(2, "s", "m", None, 0, None, 1, given, "st").fields is given
        with pytest.raises(TypeError):
            wire._cwire.here(*args[:-1])

    def test_encode_takes_its_arguments_by_name_as_the_python_one_does(self):
        """record= and ident= by keyword give the same frame; wrong calls the same
        TypeError, word for word."""
        record = Record(3, "src", "msg", time=1.5, pid=1)
        frame = wire._encode_py(record, "prog")
        for c_call in (lambda f: f(record, ident="prog"), lambda f: f(record=record,
                                                                      ident="prog")):
            assert c_call(wire._cwire.encode) == frame
        for args, kwargs in [((), {}), ((record,), {"other": 1}), ((record, "a", "b"), {}),
                             ((record,), {"record": record}), ((), {"ident": "x"})]:
            with pytest.raises(TypeError) as c_error:
                wire._cwire.encode(*args, **kwargs)
            with pytest.raises(TypeError) as py_error:
                wire._encode_py(*args, **kwargs)
            assert str(c_error.value) == str(py_error.value)

    def test_here_with_pid_none_is_this_process_as_record_has_it(self):
        made = wire._cwire.here(2, "s", "m", None, 0, None, None, None, None)
        assert made.pid == os.getpid() == Record.here(2, "s", "m", None, 0, None, None, None,
                                                      None).pid

    def test_encoding_a_record_with_a_slot_unset_fails_like_python(self):
        record = Record.__new__(Record)
        with pytest.raises(AttributeError):
            wire._cwire.encode(record)
        with pytest.raises(AttributeError):
            wire._encode_py(record)

    def test_the_frame_limit_is_the_same(self):
        """A record just under, at and over the limit."""
        for extra in (-1, 0, 1, 2):
            message = "x" * (wire.MAX_FRAME - 40 - 1 + extra)
            assert encoded(wire._cwire.encode_parts, (2, "s", message), {"time": 1.0}) == \
                encoded(wire._encode_parts_py, (2, "s", message), {"time": 1.0})

    def test_positional_and_keyword_forms_are_the_python_ones(self):
        """Fewer, more or keyword-passed leading arguments behave as in Python."""
        for args, kwargs in [((2, "s"), {"time": 1.0, "message": "m"}),
                             ((2, "s", "m", 1.0), {}), ((), {"priority": 2, "source": "s",
                                                              "message": "m", "time": 1.0}),
                             ((2, "s", "m"), {})]:
            assert encoded(wire._cwire.encode_parts, args, kwargs) == \
                encoded(wire._encode_parts_py, args, kwargs)

    def test_encoding_leaks_no_reference_and_no_memory(self):
        """The fast path and the hand-over to Python release what they made."""
        message = "m\xe9ssage " * 10
        calls = [((2, "src", message), {"time": 1.0, "func": "f", "line": 3, "file": "/\xe9",
                                        "stack": "st", "ident": "i", "fields": {}}),
                 ((2, "src", "bad \udcff"), {"time": 1.0}),
                 ((2, "src", "m"), {"time": 1.0, "fields": {"K": "v"}}),
                 ((9, "src", "m"), {"time": 1.0})]

        def run():
            for args, kwargs in calls:
                encoded(wire._cwire.encode_parts, args, kwargs)

        run()
        before = sys.getrefcount(message)
        tracemalloc.start()
        try:
            run()
            start = tracemalloc.get_traced_memory()[0]
            for _ in range(2000):
                run()
            grown = tracemalloc.get_traced_memory()[0] - start
        finally:
            tracemalloc.stop()
        assert sys.getrefcount(message) == before
        assert grown < 20000, f"{grown} bytes kept by 2000 rounds"


# -- here_at: the library's usual call -------------------------------------------------------
HERE_AT = [pytest.param(wire._here_at_py, id="pure")]
if wire._cframes is not None:
    HERE_AT.append(pytest.param(wire._cwire.here_at, id="c"))
SLOTS = ("priority", "source", "message", "func", "line", "file", "pid", "fields", "stack",
         "uid", "gid", "ident", "relayed")


@pytest.mark.parametrize("here_at", HERE_AT)
def test_here_at_makes_the_record_of_the_call_depth_frames_up(here_at):
    def logger_method():                 # stands for Logger.info: depth 1 is its caller
        return here_at(2, "app.io", "x=%d %s", (5, "y"), 4711, 1)

    def caller():
        return logger_method()
    before = __import__("time").time()
    rec = caller()
    after = __import__("time").time()
    assert type(rec) is Record and before - 0.001 <= rec.time <= after + 0.001
    assert tuple(getattr(rec, name) for name in SLOTS) == (
        2, "app.io", "x=5 y", "caller", caller.__code__.co_firstlineno + 1, __file__, 4711,
        {}, None, None, None, None, False)


@pytest.mark.parametrize("here_at", HERE_AT)
def test_here_at_refuses_a_bad_depth_as_sys_getframe_does(here_at):
    with pytest.raises(ValueError, match="^depth must be 0 or more$"):
        here_at(1, "s", "m", (), 1, -1)
    with pytest.raises(ValueError, match="^call stack is not deep enough$"):
        here_at(1, "s", "m", (), 1, 10 ** 4)


@in_use
@settings(max_examples=300, deadline=None)
@given(msg=st.one_of(any_text, st.sampled_from(MESSAGES)),
       args=st.one_of(st.just(()), st.lists(st.one_of(st.integers(), any_text), max_size=3)
                      .map(tuple), st.sampled_from([[], [1], {"x": 1}, 0, None])),
       pid=st.one_of(st.integers(), st.none()), source=optional_text)
def test_here_at_gives_what_pure_python_gives(msg, args, pid, source):
    def outcome(here_at):
        try:
            rec = here_at(3, source, msg, args, pid, 0)
        except Exception as err:    # noqa: BLE001 - the errors are what is compared
            return ("raised", type(err), str(err))
        return tuple((getattr(rec, name), type(getattr(rec, name))) for name in SLOTS)
    assert outcome(wire._cwire.here_at) == outcome(wire._here_at_py)


@pytest.mark.skipif(sys.version_info < (3, 10), reason="before 3.10 a code object with "
                    "no line table gives its first line, never an unknown one")
@pytest.mark.parametrize("here_at", HERE_AT)
def test_here_at_a_line_the_code_does_not_know_is_none(here_at):
    """f_lineno is None for code without a line table; so is the record's line."""
    def caller():
        return here_at(2, "s", "m", (), 1, 0)
    caller.__code__ = caller.__code__.replace(co_linetable=b"")
    assert caller().line is None


# -- FrameSender: the x:virlogd output's handle() ----------------------------------------------
SENDERS = [pytest.param(wire._FrameSenderPy, id="pure")]
if wire._cframes is not None:
    SENDERS.append(pytest.param(wire._cwire.FrameSender, id="c"))


class Collecting:
    """A client that keeps what it is given; fails when told to."""

    def __init__(self):
        self.frames = []
        self.fail = None

    def send_frame(self, frame):
        if self.fail:
            raise self.fail
        self.frames.append(frame)


@pytest.mark.parametrize("sender_type", SENDERS)
def test_a_frame_sender_sends_the_frame_of_each_record_and_counts_it(sender_type):
    client = Collecting()
    sender = sender_type(client, "prog")
    plain = Record(2, "app.io", "hello", time=1.5, pid=1, func="f", line=3, file="/a.py")
    named = Record(3, "app", "x", time=2.0, pid=1, ident="mine")
    sender(plain, "the line is not used")
    sender(named)
    assert client.frames == [wire._encode_py(plain, "prog"), wire._encode_py(named, "prog")]
    assert sender.sent == 2 and (sender.client, sender.ident) == (client, "prog")
    # a record that cannot be encoded, or a client that refuses it: raised, not counted
    with pytest.raises(ValueError, match="^invalid priority 9"):
        sender(Record(9, "s", "m", time=1.0, pid=1))
    client.fail = OSError(32, "gone")
    with pytest.raises(OSError, match="gone"):
        sender(plain)
    assert sender.sent == 2 and len(client.frames) == 2


@pytest.mark.parametrize("sender_type", SENDERS)
def test_a_frame_sender_asks_the_client_for_send_frame_on_every_call(sender_type):
    """A forked child's client gets a new queue (a new send_frame): the next record goes there."""
    client, later = Collecting(), []
    sender = sender_type(client)
    sender(Record(2, "s", "one", time=1.0, pid=1))
    client.send_frame = later.append
    sender(Record(2, "s", "two", time=1.0, pid=1))
    assert len(client.frames) == 1 and len(later) == 1 and b"two" in later[0]


@in_use
def test_both_frame_senders_refuse_wrong_calls_with_the_same_words():
    record = Record(2, "s", "m", time=1.0, pid=1)
    for args, kwargs in [((), {}), ((record, "l", "x"), {}), ((record,), {"line": "l"}),
                         ((), {"record": record}), ((record,), {"other": 1}),
                         ((), {"record": record, "line": "l"}),
                         ((record, "l", "x"), {"other": 1}), ((), {"other": 1, "line": "l"}),
                         ((record,), {"self": 1}), ((record,), {"line": "l", "self": 1})]:
        outcomes = set()
        for sender_type in (wire._FrameSenderPy, wire._cwire.FrameSender):
            with pytest.raises(TypeError) as err:
                sender_type(Collecting())(*args, **kwargs)
            outcomes.add(str(err.value))
        assert len(outcomes) == 1, outcomes


@in_use
def test_the_c_frame_sender_keeps_no_reference():
    client, record = Collecting(), Record(2, "s", "m", time=1.0, pid=1)
    sender = wire._cwire.FrameSender(client, "p")
    client.fail = OSError(5, "no")
    before = (sys.getrefcount(client), sys.getrefcount(record))
    for _ in range(1000):
        with pytest.raises(OSError):
            sender(record)
    client.fail = None
    for _ in range(1000):
        sender(record)
    client.frames.clear()
    assert (sys.getrefcount(client), sys.getrefcount(record)) == before


@pytest.mark.parametrize("sender_type", SENDERS)
def test_a_frame_sender_looks_up_send_frame_before_encoding(sender_type):
    """With no send_frame and a record that cannot be encoded, the missing method is what
    is said (the Python expression's order)."""
    with pytest.raises(AttributeError, match="send_frame"):
        sender_type(object())(Record(9, "s", "m", time=1.0, pid=1))
