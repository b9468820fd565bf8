"""The compiled textformat functions (``_speedups.c``) against their pure twins, on random input.

For every record, the same text line (with and without the stack), the same ring entry, the
same dump text; and for odd values (which the twin hands to Python) the same exception with the
same message. The date and prefix caches are the twin's own, so records come in sequences that
move to and fro across milliseconds and seconds.
"""
import math
import os
import struct
import sys

import pytest
from hypothesis import example, given, settings, strategies as st

from virlogd.core import speedups, textformat
from virlogd.core.record import Record

from callargs import MESSAGES

PURE_FORMAT_LINE = speedups.pure(textformat.format_line)
PURE_PACK_RECORD = speedups.pure(textformat.pack_record)
PURE_PACK_PARTS = speedups.pure(textformat.pack_parts)
PURE_ENTRY_TEXT = speedups.pure(textformat.entry_text)

C = speedups._speedups
in_use = pytest.mark.skipif(not speedups.compiled(), reason="the compiled speedups are not in "
                            "use (not built, or VIRLOGD_PURE_PYTHON=1)")

LAST_SECOND = 253402300799     # 9999-12-31 23:59:59, the last the twin formats itself


def test_textformat_picks_the_compiled_twins_when_they_are_in_use():
    """speedups.pick gave textformat the compiled functions (test_wire_twins.py checks that
    CI built them at all)."""
    for name in ("format_line", "pack_record", "pack_parts", "entry_text"):
        chosen = getattr(textformat, name)
        assert (chosen is getattr(C, name, None)) == speedups.compiled()
        assert speedups.pure(chosen).__module__ == "virlogd.core.textformat"


def outcome(function, *args, **kwargs):
    """What a call gives: its value (with its exact type) or its exception and message."""
    try:
        value = function(*args, **kwargs)
    except Exception as err:    # noqa: BLE001 - the errors are what is compared
        return ("raised", type(err), str(err))
    # == compares a str's characters, not its form: a 1-byte str not marked ASCII although it
    # is would be equal yet wrong (isascii() False); its size tells
    return ("returned", type(value), value, sys.getsizeof(value))


# -- strategies ------------------------------------------------------------------------------
def _near_milliseconds(ms):
    """Floats around a millisecond boundary: where truncating the product could go wrong."""
    t = ms / 1000
    return [t, math.nextafter(t, -math.inf), math.nextafter(t, math.inf), t - 0.0005,
            t + 0.0005, t + 0.0009999, t - 0.0000001]


good_times = st.one_of(
    st.floats(min_value=0.0, max_value=float(LAST_SECOND)),
    st.floats(min_value=1.6e9, max_value=2.2e9),
    st.integers(0, LAST_SECOND * 1000).flatmap(lambda ms: st.sampled_from(_near_milliseconds(ms))),
    st.integers(1700000000000, 1800000000000).flatmap(
        lambda ms: st.sampled_from(_near_milliseconds(ms))),
    st.integers(0, LAST_SECOND),
    st.sampled_from([0.0, -0.0, 0.0005, 0.9995, 1.9995, 1795444144.9995, 1795444144.0005,
                     float(LAST_SECOND), LAST_SECOND + 0.999, LAST_SECOND + 0.9999]),
)
odd_times = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(min_value=-2.0, max_value=0.0),
    st.sampled_from([-0.0009, -0.001, -1, LAST_SECOND + 1, LAST_SECOND + 1.0, 1e300, 2 ** 70,
                     True, "1", None]),
)
times = st.one_of(good_times, good_times, odd_times)

characters = st.one_of(
    st.characters(max_codepoint=0x7f),
    st.characters(exclude_categories=()),                 # any code point, surrogates too
    st.integers(0xDC80, 0xDCFF).map(chr),                 # surrogate escapes of bytes
    st.sampled_from(["\n", "\r", "\r\n", "\t", "\x00", "\x1b", "\x1f", "\x7f", "\x85",
                     "\u2028", "\xe9", "\u65e5", "\U0001f600", "\ud800", "\udbff", "\udc00",
                     "\udc7f", "\udc80", "\udcff", "\udd00", "\udfff", "\x80", "\xff",
                     "\u07ff", "\u0800", "\uffff", "\U00010000", "\U0010ffff"]),
)
texts = st.one_of(
    st.lists(characters, max_size=40).map("".join),
    st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7e), max_size=200),  # the usual
    st.binary(max_size=40).map(lambda b: b.decode("utf-8", "surrogateescape")),
)
pids = st.one_of(st.integers(1, 4194304), st.integers(-2 ** 31, 2 ** 31 - 1),
                 st.sampled_from([0, -1, 2 ** 31, 2 ** 63 - 1, -2 ** 63, 2 ** 63, 2 ** 100,
                                  True, 4711.0, "4711", None]))
priorities = st.one_of(st.integers(1, 4), st.integers(1, 4),
                       st.sampled_from([0, 5, 255, 256, -1, 2 ** 64, True, 1.0, "1", None]))
funcs = st.one_of(st.none(), st.just(""), texts,
                  st.sampled_from(["virInitialize", "f\xe9", "\u65e5", "\udcff", 0, b"f",
                                   "x" * 70000]))
lines = st.one_of(st.integers(0, 100000), st.integers(-2 ** 31, 2 ** 31 - 1),
                  st.sampled_from([None, 2 ** 31, -2 ** 31 - 1, 2 ** 63, 2 ** 64, False, 1.5]))
messages = st.one_of(texts, texts, st.sampled_from(["x" * 120, "", b"m", None, 7]))
stacks = st.one_of(st.none(), st.just(""), texts, st.sampled_from(["\n", "a\r\nb\n\n", 5]))
relayeds = st.one_of(st.booleans(), st.booleans(), st.sampled_from([None, 0, 1, "yes"]))
sources = st.one_of(texts, st.sampled_from(["", "qemu.monitor", None, 5, b"s", "s" * 70000]))


@st.composite
def records(draw, unset=False):
    """A Record with values of any kind; good ones most of the time."""
    rec = Record(1, "src", "")
    for name, strategy in (("time", times), ("pid", pids), ("priority", priorities),
                           ("func", funcs), ("line", lines), ("message", messages),
                           ("stack", stacks), ("relayed", relayeds), ("source", sources)):
        setattr(rec, name, draw(strategy))
    if unset and draw(st.booleans()):
        delattr(rec, draw(st.sampled_from(
            ["time", "pid", "priority", "func", "line", "message", "stack", "relayed",
             "source"])))
    return rec


def _same_line(rec):
    for args, kwargs in (((rec,), {}), ((rec, False), {}), ((rec, True), {}),
                         ((rec,), {"with_stack": True}), ((rec, None), {}), ((rec, 1), {})):
        assert outcome(C.format_line, *args, **kwargs) == \
            outcome(PURE_FORMAT_LINE, *args, **kwargs)


# -- the line --------------------------------------------------------------------------------
@in_use
@settings(max_examples=1500, deadline=None)
@given(st.lists(records(), min_size=1, max_size=6))
@example([Record(1, "u", "register drivers", time=1795444144.771, pid=4711,
                 func="virInitialize", line=278)])
def test_format_line_is_the_same(recs):
    """Any record: the same line, or the same exception."""
    for rec in recs:
        _same_line(rec)


@in_use
@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(1795444140000, 1795444150000), st.integers(1, 3),
                          st.integers(1, 4)), min_size=2, max_size=30), texts)
def test_the_prefix_cache_follows_time_pid_and_level(keys, message):
    """A flood of records sharing, then changing, a millisecond, a second, a pid, a level."""
    for ms, pid, level in keys:
        for when in _near_milliseconds(ms)[:3]:
            rec = Record(level, "s", message, time=when, pid=pid, func="f", line=1)
            _same_line(rec)


@in_use
@settings(max_examples=200, deadline=None)
@given(records(unset=True))
def test_a_record_with_an_unset_field_raises_the_same(rec):
    """A slot that was never set raises Python's AttributeError (or is never read)."""
    _same_line(rec)
    assert outcome(C.pack_record, rec) == outcome(PURE_PACK_RECORD, rec)


class NotARecord:
    """Duck-typed: the twin reads slots only of Record itself; this goes to Python."""

    def __init__(self, **values):
        self.__dict__.update(values)


@in_use
def test_other_objects_and_arguments_go_to_python():
    """Anything but a Record, and calls Python would refuse, give Python's answer."""
    duck = NotARecord(time=1.5, pid=1, priority=1, func="f", line=2, message="m", stack=None)
    assert C.format_line(duck) == PURE_FORMAT_LINE(duck)
    assert C.pack_record(duck) == PURE_PACK_RECORD(duck)
    rec = Record(1, "s", "m", time=1.5, pid=1)
    for args, kwargs in (((), {}), ((rec, False, 3), {}), ((rec,), {"stack": True}),
                         ((), {"record": rec})):
        assert outcome(C.format_line, *args, **kwargs) == \
            outcome(PURE_FORMAT_LINE, *args, **kwargs)
    assert outcome(C.pack_parts, 1.0, 1, 1, 1, None) == \
        outcome(PURE_PACK_PARTS, 1.0, 1, 1, 1, None)
    assert outcome(C.pack_parts, 1.0, 1, 1, 1, None, message="m") == \
        outcome(PURE_PACK_PARTS, 1.0, 1, 1, 1, None, message="m")
    assert outcome(C.entry_text, bytearray(b"x")) == \
        outcome(PURE_ENTRY_TEXT, bytearray(b"x"))


# -- the ring entry --------------------------------------------------------------------------
@in_use
@settings(max_examples=1000, deadline=None)
@given(records())
def test_pack_record_and_pack_parts_are_the_same(rec):
    """The same bytes, or the same exception (struct.error, UnicodeEncodeError...)."""
    expected = outcome(PURE_PACK_RECORD, rec)
    assert outcome(C.pack_record, rec) == expected
    parts = (rec.time, rec.pid, rec.line, rec.priority, rec.func, rec.message)
    assert outcome(C.pack_parts, *parts) == outcome(PURE_PACK_PARTS, *parts)
    if not rec.relayed:       # a relayed record's entry keeps its source too
        assert outcome(C.pack_parts, *parts) == expected
    if expected[0] == "returned":
        entry = expected[2]
        assert outcome(C.entry_text, entry) == outcome(PURE_ENTRY_TEXT, entry)


@in_use
@settings(max_examples=500, deadline=None)
@given(st.one_of(
    st.binary(max_size=60),
    st.binary(max_size=60).map(lambda b: b"\0" + b),
    st.tuples(st.floats(allow_nan=True, allow_infinity=True) | good_times.map(float),
              st.integers(-2 ** 31, 2 ** 31 - 1), st.integers(-2 ** 31, 2 ** 31 - 1),
              st.integers(0, 255), st.integers(0, 0xFFFF), st.binary(max_size=40))
    .map(lambda t: struct.pack("<xdiiBH", *t[:5]) + t[5]),
    st.tuples(st.floats(allow_nan=True, allow_infinity=True) | good_times.map(float),
              st.integers(-2 ** 31, 2 ** 31 - 1), st.integers(0, 2 ** 32 - 1),
              st.integers(0, 255), st.integers(0, 3),
              st.integers(0, 50) | st.integers(0, 2 ** 32 - 1),
              st.integers(0, 50) | st.integers(0, 2 ** 32 - 1), st.binary(max_size=60))
    .map(lambda t: struct.pack("<BdiIBBII", 1, *t[:7]) + t[7]),
    st.binary(max_size=60).map(lambda b: b"\1" + b),
))
def test_entry_text_is_the_same(entry):
    """Any entry, even corrupt: the same text, or the same exception."""
    assert outcome(C.entry_text, entry) == outcome(PURE_ENTRY_TEXT, entry)
