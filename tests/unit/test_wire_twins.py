"""The compiled wire functions (``_speedups.c``) against their pure twins, on random input.

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

from virlogd.core import speedups
from virlogd.protocol import wire
from virlogd.core.errors import ProtocolError
from virlogd.core.record import Record

from callargs import MESSAGES

in_use = pytest.mark.skipif(not speedups.compiled(), reason="the compiled speedups are not "
                            "in use (not built, or VIRLOGD_PURE_PYTHON=1)")
C = speedups._speedups
PURE_FRAMES = speedups.pure(wire.frames)
PURE_ENCODE_PARTS = speedups.pure(wire.encode_parts)
PURE_ENCODE = speedups.pure(wire.encode)


def test_the_compiled_twins_are_built_in_ci_and_used_when_built():
    """CI must measure and test the compiled speedups: a build that silently lost them (or a
    Record bind() refuses) fails here."""
    if not speedups.built():
        if os.environ.get("CI"):
            pytest.fail("virlogd._speedups was not built (run: pip install -e . with a compiler)")
        pytest.skip("virlogd._speedups is not built")
    if not speedups.PURE:
        assert speedups.compiled()
        assert wire.frames is C.frames and wire.encode_parts is C.encode_parts
        assert wire.encode is C.encode
    else:
        assert not speedups.compiled() and wire.frames is PURE_FRAMES


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
    return PURE_ENCODE_PARTS(p.pop("priority"), p.pop("source"), p.pop("message"), **p)


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


class PureDecoder(wire.FrameDecoder):
    """A FrameDecoder whose every feed() runs the pure twin of the frame loop."""

    def feed(self, data):
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(wire, "frames", PURE_FRAMES)
            return super().feed(data)


def both(**kwargs):
    return wire.FrameDecoder(**kwargs), PureDecoder(**kwargs)


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

    def test_the_compiled_loop_returns_where_the_incomplete_frame_starts(self):
        """frames() decodes every frame it can, hands the ones it does not take to the pure
        twin, and returns where the incomplete one starts (the pure twin sets _need)."""
        one = PURE_ENCODE_PARTS(2, "s", "m", time=1.0)
        renamed = PURE_ENCODE_PARTS(2, "s", "m", time=1.0, fields={"x": "y"})
        decoder = wire.FrameDecoder()
        out = []
        assert C.frames(decoder, one * 2 + one[:10], 0, out) == 2 * len(one)
        assert decoder._need == len(one)
        assert C.frames(decoder, one + renamed + one, 0, out) == 2 * len(one) + len(renamed)
        assert decoder.renamed == 1 and out[3].fields == {"X": "y"}
        assert C.frames(decoder, one + b"\x01\x02", 0, out) == len(one)
        assert C.frames(decoder, one, len(one), out) == len(one)
        assert len(out) == 6
        with pytest.raises(TypeError):
            C.frames(decoder, "text", 0, out)

    def test_decoding_leaks_no_reference_and_no_memory(self):
        """Records, bailed-out frames and errors release what the C loop made."""
        pid = 10**30 + 7                       # an object only this test holds
        good = PURE_ENCODE_PARTS(3, "src", "caf\xe9", time=5.0, func="f", file="/x",
                                     stack="s", ident="i", fields={"A": "b", "B": b"c"})
        renamed = PURE_ENCODE_PARTS(2, "src", "m", time=1.0, fields={"a": "b"})
        bad_func = PURE_ENCODE_PARTS(2, "s", "m", time=1.0, func="ff")
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
        assert encoded(C.encode_parts, args, kwargs) == \
            encoded(PURE_ENCODE_PARTS, args, kwargs)

    @settings(max_examples=300, deadline=None)
    @given(priority=odd | st.integers(-2, 6), source=odd, message=odd,
           kwargs=st.dictionaries(st.sampled_from(["time", "func", "line", "file", "fields",
                                                   "stack", "ident", "other", "source"]),
                                  odd | times))
    def test_both_encoders_fail_alike_on_odd_arguments(self, priority, source, message,
                                                       kwargs):
        """Wrong types, values and keywords: the same result or the same exception."""
        args = (priority, source, message)
        assert encoded(C.encode_parts, args, kwargs) == \
            encoded(PURE_ENCODE_PARTS, args, kwargs)

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
            assert encoded(C.encode, (target, default), {}) == \
                encoded(PURE_ENCODE, (target, default), {})
        assert encoded(C.encode, (record,), {}) == \
            encoded(PURE_ENCODE, (record,), {})

    def test_encode_takes_its_arguments_by_name_as_the_python_one_does(self):
        """record= and ident= by keyword give the same frame; wrong calls the same
        TypeError, word for word."""
        record = Record(3, "src", "msg", time=1.5, pid=1)
        frame = PURE_ENCODE(record, "prog")
        for c_call in (lambda f: f(record, ident="prog"), lambda f: f(record=record,
                                                                      ident="prog")):
            assert c_call(C.encode) == frame
        for args, kwargs in [((), {}), ((record,), {"other": 1}), ((record, "a", "b"), {}),
                             ((record,), {"record": record}), ((), {"ident": "x"})]:
            with pytest.raises(TypeError) as c_error:
                C.encode(*args, **kwargs)
            with pytest.raises(TypeError) as py_error:
                PURE_ENCODE(*args, **kwargs)
            assert str(c_error.value) == str(py_error.value)

    def test_encoding_a_record_with_a_slot_unset_fails_like_python(self):
        record = Record.__new__(Record)
        with pytest.raises(AttributeError):
            C.encode(record)
        with pytest.raises(AttributeError):
            PURE_ENCODE(record)

    def test_the_frame_limit_is_the_same(self):
        """A record just under, at and over the limit."""
        for extra in (-1, 0, 1, 2):
            message = "x" * (wire.MAX_FRAME - 40 - 1 + extra)
            assert encoded(C.encode_parts, (2, "s", message), {"time": 1.0}) == \
                encoded(PURE_ENCODE_PARTS, (2, "s", message), {"time": 1.0})

    def test_positional_and_keyword_forms_are_the_python_ones(self):
        """Fewer, more or keyword-passed leading arguments behave as in Python."""
        for args, kwargs in [((2, "s"), {"time": 1.0, "message": "m"}),
                             ((2, "s", "m", 1.0), {}), ((), {"priority": 2, "source": "s",
                                                              "message": "m", "time": 1.0}),
                             ((2, "s", "m"), {})]:
            assert encoded(C.encode_parts, args, kwargs) == \
                encoded(PURE_ENCODE_PARTS, args, kwargs)

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
                encoded(C.encode_parts, args, kwargs)

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
