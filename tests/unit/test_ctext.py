"""The C twin of textformat (``_ctext.c``) against the pure-Python reference, on random input.

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

from virlogd.core import native, textformat
from virlogd.core.record import Record

from callargs import MESSAGES

C = textformat._NATIVE
in_use = pytest.mark.skipif(C is None, reason="the C twin of textformat is not in use "
                            "(not built, or VIRLOGD_PURE_PYTHON=1)")

LAST_SECOND = 253402300799     # 9999-12-31 23:59:59, the last the twin formats itself


def test_the_c_twin_is_built_in_ci_and_used_when_built():
    """CI must measure and test the C twin: a build that silently lost it fails here."""
    if not native.built("text"):
        if os.environ.get("CI"):
            pytest.fail("virlogd._ctext was not built (run: pip install -e . with a compiler)")
        pytest.skip("virlogd._ctext is not built")
    if not native.PURE:
        assert C is not None
        for name in ("format_line", "pack_record", "pack_parts", "pack_here", "entry_text"):
            assert getattr(textformat, name) is getattr(C, name)


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
            outcome(textformat._pure_format_line, *args, **kwargs)


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
    assert outcome(C.pack_record, rec) == outcome(textformat._pure_pack_record, rec)


class NotARecord:
    """Duck-typed: the twin reads slots only of Record itself; this goes to Python."""

    def __init__(self, **values):
        self.__dict__.update(values)


@in_use
def test_other_objects_and_arguments_go_to_python():
    """Anything but a Record, and calls Python would refuse, give Python's answer."""
    duck = NotARecord(time=1.5, pid=1, priority=1, func="f", line=2, message="m", stack=None)
    assert C.format_line(duck) == textformat._pure_format_line(duck)
    assert C.pack_record(duck) == textformat._pure_pack_record(duck)
    rec = Record(1, "s", "m", time=1.5, pid=1)
    for args, kwargs in (((), {}), ((rec, False, 3), {}), ((rec,), {"stack": True}),
                         ((), {"record": rec})):
        assert outcome(C.format_line, *args, **kwargs) == \
            outcome(textformat._pure_format_line, *args, **kwargs)
    assert outcome(C.pack_parts, 1.0, 1, 1, 1, None) == \
        outcome(textformat._pure_pack_parts, 1.0, 1, 1, 1, None)
    assert outcome(C.pack_parts, 1.0, 1, 1, 1, None, message="m") == \
        outcome(textformat._pure_pack_parts, 1.0, 1, 1, 1, None, message="m")
    assert outcome(C.entry_text, bytearray(b"x")) == \
        outcome(textformat._pure_entry_text, bytearray(b"x"))


# -- the ring entry --------------------------------------------------------------------------
@in_use
@settings(max_examples=1000, deadline=None)
@given(records())
def test_pack_record_and_pack_parts_are_the_same(rec):
    """The same bytes, or the same exception (struct.error, UnicodeEncodeError...)."""
    expected = outcome(textformat._pure_pack_record, rec)
    assert outcome(C.pack_record, rec) == expected
    parts = (rec.time, rec.pid, rec.line, rec.priority, rec.func, rec.message)
    assert outcome(C.pack_parts, *parts) == outcome(textformat._pure_pack_parts, *parts)
    if not rec.relayed:       # a relayed record's entry keeps its source too
        assert outcome(C.pack_parts, *parts) == expected
    if expected[0] == "returned":
        entry = expected[2]
        assert outcome(C.entry_text, entry) == outcome(textformat._pure_entry_text, entry)


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
    assert outcome(C.entry_text, entry) == outcome(textformat._pure_entry_text, entry)


# -- pack_here: the library's debug path -----------------------------------------------------
HERE_IMPLS = [pytest.param(textformat._pure_pack_here, id="pure")]
if C is not None:
    HERE_IMPLS.append(pytest.param(C.pack_here, id="c"))


def _without_time(entry):
    return entry[:1] + entry[9:]


@pytest.mark.parametrize("pack_here", HERE_IMPLS)
def test_pack_here_takes_the_call_site_depth_frames_up_and_the_clock_now(pack_here):
    def logger_method():                 # stands for Logger.debug: depth 1 is its caller
        return pack_here(1, "x=%d %s", (5, "y"), 4711, 1)

    def caller():
        return logger_method()
    before = __import__("time").time()
    entry = caller()
    after = __import__("time").time()
    when, pid, line, priority, _ = struct.unpack_from("<xdiiBH", entry)
    assert before - 0.001 <= when <= after + 0.001
    assert (pid, line, priority) == (4711, caller.__code__.co_firstlineno + 1, 1)
    assert textformat.entry_text(entry).endswith(": 4711: debug : caller:%d : x=5 y\n" % line)


@pytest.mark.parametrize("pack_here", HERE_IMPLS)
def test_pack_here_lines_are_right_in_long_functions_and_new_code(pack_here):
    """The C twin caches lines by (code, instruction): every call still gets its own line,
    in a long function, from two places in one function, and in code compiled again."""
    for shift in (0, 3, 0, 7):
        src = ("def long(pack_here):\n" + "    x = 1\n" * (300 + shift)
               + "    a = pack_here(2, 'a', (), 1, 0)\n    b = pack_here(2, 'b', (), 1, 0)\n"
               + "    return a, b\n")
        scope = {}
        exec(compile(src, "<long>", "exec"), scope)
        for _ in range(3):
            a, b = scope["long"](pack_here)
            assert struct.unpack_from("<xdiiBH", a)[2] == 302 + shift
            assert struct.unpack_from("<xdiiBH", b)[2] == 303 + shift
    # more call sites in one function than the cache has slots: some share a slot
    src = ("def many(pack_here):\n    out = []\n"
           + "    out.append(pack_here(2, 'm', (), 1, 0))\n" * 600 + "    return out\n")
    scope = {}
    exec(compile(src, "<many>", "exec"), scope)
    for _ in range(2):
        got = [struct.unpack_from("<xdiiBH", e)[2] for e in scope["many"](pack_here)]
        assert got == list(range(3, 603))


@pytest.mark.parametrize("pack_here", HERE_IMPLS)
def test_pack_here_refuses_a_bad_depth_as_sys_getframe_does(pack_here):
    assert outcome(pack_here, 1, "m", (), 1, -1) == \
        ("raised", ValueError, "depth must be 0 or more")
    assert outcome(pack_here, 1, "m", (), 1, 10 ** 4) == \
        ("raised", ValueError, "call stack is not deep enough")


@in_use
@settings(max_examples=500, deadline=None)
@given(priority=priorities, pid=pids,
       msg=st.one_of(texts, st.sampled_from(MESSAGES)),
       args=st.one_of(st.just(()), st.lists(st.one_of(st.integers(), texts), max_size=3)
                      .map(tuple)))
def test_pack_here_gives_what_pure_python_gives(priority, msg, args, pid):
    """The same entry but for its time, or the same exception and message."""
    def site(pack_here):
        return outcome(pack_here, priority, msg, args, pid, 0)
    c, py = site(C.pack_here), site(textformat._pure_pack_here)
    if c[0] == py[0] == "returned":
        c, py = _without_time(c[2]), _without_time(py[2])
    assert c == py


@pytest.mark.skipif(sys.version_info < (3, 10), reason="before 3.10 a code object with "
                    "no line table gives its first line, never an unknown one")
@pytest.mark.parametrize("pack_here", HERE_IMPLS)
def test_pack_here_a_line_the_code_does_not_know_is_zero(pack_here):
    """f_lineno is None for code without a line table: packed as 0, as pack_parts does."""
    def caller():
        return pack_here(2, "m", (), 1, 0)
    caller.__code__ = caller.__code__.replace(co_linetable=b"")
    assert struct.unpack_from("<xdiiBH", caller())[2] == 0
