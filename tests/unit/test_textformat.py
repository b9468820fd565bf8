"""libvirt's text line, exactly, and lines that cannot be forged.

The line and the ring entries are made by the compiled twins when they are in use; each test
here runs against the pure-Python reference and against the twin (test_textformat_twins.py
compares the two on random records).
"""
import re
from types import SimpleNamespace

import pytest

from virlogd.core import speedups, textformat
from virlogd.core.record import Record
from virlogd.core.textformat import dump_text, format_time, syslog_payload

WHEN = 1795444144.771   # 2026-11-23 14:29:04.771 UTC

TWINS = ("format_line", "pack_record", "pack_parts", "entry_text")
PURE = SimpleNamespace(**{name: speedups.pure(getattr(textformat, name)) for name in TWINS})
COMPILED = SimpleNamespace(**{name: getattr(textformat, name) for name in TWINS})


@pytest.fixture(params=["pure", "compiled"])
def impl(request):
    """The functions under test: the pure-Python reference, or the compiled twin."""
    if request.param == "pure":
        return PURE
    if not speedups.compiled():
        pytest.skip("the compiled speedups are not in use (not built, or "
                    "VIRLOGD_PURE_PYTHON=1)")
    return COMPILED


def test_the_line_is_libvirts_current_format_in_utc(impl):
    """Timestamp in UTC with milliseconds and +0000, pid, level, func:line, message."""
    rec = Record(1, "util", "register drivers", time=WHEN, pid=4711, func="virInitialize",
                 line=278)
    assert impl.format_line(rec) == ("2026-11-23 14:29:04.771+0000: 4711: debug : "
                                     "virInitialize:278 : register drivers\n")


def test_func_and_line_are_omitted_when_unknown(impl):
    """A record without a function has no ': func:line' part."""
    rec = Record(2, "x", "virlogd version: 1.0", time=WHEN, pid=4711)
    assert impl.format_line(rec) == \
        "2026-11-23 14:29:04.771+0000: 4711: info : virlogd version: 1.0\n"


def test_milliseconds_are_zero_padded(impl):
    """.005, not .5."""
    assert format_time(1795444144.005) == "2026-11-23 14:29:04.005+0000"
    assert impl.format_line(Record(3, "x", "m", time=1795444144.005, pid=1)) == \
        "2026-11-23 14:29:04.005+0000: 1: warning : m\n"


@pytest.mark.parametrize("when, shown", [
    (0.0, "1970-01-01 00:00:00.000"),
    (0, "1970-01-01 00:00:00.000"),
    (-0.0009, "1970-01-01 00:00:00.000"),           # int() truncates toward zero
    (1795444144.9995, "2026-11-23 14:29:04.999"),   # never rounded up into the next second
    (1795444144.0005, "2026-11-23 14:29:04.000"),   # 1795444144000.4999...
    (253402300799.0, "9999-12-31 23:59:59.000"),
    (253402300799.9999, "9999-12-31 23:59:59.999"),
])
def test_the_time_is_truncated_to_the_millisecond(impl, when, shown):
    """The milliseconds are int(time * 1000), as Python computes it, at the edges too."""
    assert impl.format_line(Record(4, "x", "m", time=when, pid=1)).startswith(shown + "+0000")


def test_a_line_does_not_depend_on_the_one_before(impl):
    """The prefix cache tells True from 1 (equal keys, different text)."""
    assert ": True: debug : " in impl.format_line(Record(1, "x", "m", time=WHEN, pid=True))
    assert ": 1: debug : " in impl.format_line(Record(1, "x", "m", time=WHEN, pid=1))
    assert ": 1: 5.0 : " in impl.format_line(Record(5.0, "x", "m", time=WHEN, pid=1))
    assert ": 1: 5 : " in impl.format_line(Record(5, "x", "m", time=WHEN, pid=1))


def test_an_embedded_newline_cannot_forge_a_record_line(impl):
    """Continuation lines never start like a record (a date) or a dump banner."""
    forged = "ok\n2026-11-23 14:29:04.771+0000: 1: error : fake\n     ====== end of log ====="
    text = impl.format_line(Record(3, "x", forged, time=WHEN, pid=7))
    lines = text.splitlines()
    assert len(lines) == 3
    record_start = re.compile(r"^\d{4}-\d\d-\d\d ")
    assert [bool(record_start.match(line)) for line in lines] == [True, False, False]
    assert all(not line.lstrip().startswith("======") for line in lines)
    assert lines[1] == "  | 2026-11-23 14:29:04.771+0000: 1: error : fake"


def test_control_characters_are_shown_escaped(impl):
    """An escape sequence or carriage return is shown, not obeyed."""
    text = impl.format_line(Record(3, "x", "a\rb\x1b[2Jc\x00", time=WHEN, pid=7))
    assert text.endswith(": a\\x0db\\x1b[2Jc\\x00\n")


def test_crlf_is_one_line_break_and_tab_is_kept(impl):
    """A CRLF (or LF) is one continuation; a lone CR, DEL are escaped; a tab is printable."""
    text = impl.format_line(Record(3, "x", "a\r\nb\r\r\nc\td\x7f", time=WHEN, pid=7))
    assert text.endswith(": a\n  | b\\x0d\n  | c\td\\x7f\n")


def test_any_unicode_and_escaped_bytes_are_kept(impl):
    """Non-ASCII text and surrogate escapes (undecodable bytes) come out as they went in."""
    message = "caf\xe9 \u65e5\u672c \U0001f600 \udcff\n\x85"
    text = impl.format_line(Record(1, "x", message, time=WHEN, pid=7, func="f\xe9", line=1))
    assert text == ("2026-11-23 14:29:04.771+0000: 7: debug : f\xe9:1 : "
                    "caf\xe9 \u65e5\u672c \U0001f600 \udcff\n  | \x85\n")


def test_the_syslog_payload_has_no_timestamp():
    """syslog adds its own time; ours would be noise."""
    rec = Record(4, "x", "boom", time=WHEN, pid=9, func="f", line=3)
    assert syslog_payload(rec) == "9: error : f:3 : boom"


def test_a_stack_follows_the_line_as_continuation_lines(impl):
    """The + filter's stack trace never looks like records either."""
    rec = Record(1, "qemu", "m", time=WHEN, pid=1, stack="  File a.py, line 1\n    x()\n")
    assert impl.format_line(rec, with_stack=True).splitlines()[1:] == [
        "  |   File a.py, line 1", "  |     x()"]
    assert impl.format_line(rec, True) == impl.format_line(rec, with_stack=True)
    assert impl.format_line(rec) == "2026-11-23 14:29:04.771+0000: 1: debug : m\n"


def test_a_packed_entry_is_the_line_at_dump_time(impl):
    """What the ring keeps for a record no output formats reads back as its text line."""
    rec = Record(1, "util", "register drivers", time=WHEN, pid=4711, func="virInitialize",
                 line=278)
    entry = impl.pack_record(rec)
    assert entry[:1] == b"\1"
    assert entry == impl.pack_parts(WHEN, 4711, 278, 1, "virInitialize", "register drivers")
    assert impl.entry_text(entry) == PURE.format_line(rec)
    assert impl.entry_text("a line\n".encode()) == "a line\n"


def test_packing_keeps_undecodable_bytes_and_refuses_what_struct_refuses(impl):
    """Surrogate escapes go back to their bytes; out-of-range numbers raise struct.error."""
    entry = impl.pack_parts(WHEN, 1, None, 2, None, "\udcff\xe9")
    assert entry.endswith(b"\xff\xc3\xa9")
    assert impl.entry_text(entry).endswith(": info : \udcff\xe9\n")
    with pytest.raises(Exception, match="format requires"):
        impl.pack_parts(WHEN, 1, 2 ** 32, 2, None, "m")
    with pytest.raises(UnicodeEncodeError):
        impl.pack_parts(WHEN, 1, 1, 2, None, "\ud800")


def test_the_dump_is_framed_by_libvirts_banners():
    """A line saying why, then the buffer between the start and end banners."""
    assert dump_text("Caught User-defined signal 2", ["a\n", "b\n"]) == (
        "Caught User-defined signal 2 dumping internal log buffer:\n\n"
        "    ====== start of log =====\n\n"
        "a\nb\n\n"
        "     ====== end of log =====\n")
    assert dump_text("Caught User-defined signal 2", None) == (
        "Caught User-defined signal 2 internal log buffer deactivated\n")


# -- what a client sends: every value the wire admits packs, and nothing forges a line -------
FORGED = "2026-01-01 00:00:00.000+0000: 1: error : forged:1 : FORGED BY ANOTHER USER"


def _relayed(**values):
    base = dict(time=WHEN, pid=4242, func="qemuMonitorSend", line=1024, relayed=True)
    base.update(values)
    return Record(1, values.pop("source", "qemu.monitor"), values.pop("message", "sent"),
                  **{k: v for k, v in base.items() if k not in ("source", "message")})


def test_a_relayed_record_names_its_source_after_the_level(impl):
    """Another process's record carries its source (so a host-wide file tells programs
    apart); local ones keep libvirt's line."""
    rec = _relayed()
    line = ("2026-11-23 14:29:04.771+0000: 4242: debug : qemu.monitor : "
            "qemuMonitorSend:1024 : sent\n")
    assert impl.format_line(rec) == line
    assert impl.entry_text(impl.pack_record(rec)) == line
    warn = Record(3, "myapp", "disk almost full", time=WHEN, pid=4711, relayed=True)
    assert impl.format_line(warn) == \
        "2026-11-23 14:29:04.771+0000: 4711: warning : myapp : disk almost full\n"
    assert impl.entry_text(impl.pack_record(warn)) == impl.format_line(warn)
    local = Record(3, "myapp", "disk almost full", time=WHEN, pid=4711)
    assert impl.format_line(local) == \
        "2026-11-23 14:29:04.771+0000: 4711: warning : disk almost full\n"
    assert impl.entry_text(impl.pack_record(local)) == impl.format_line(local)
    empty = Record(2, "", "m", time=WHEN, pid=1, relayed=True)
    assert impl.format_line(empty) == "2026-11-23 14:29:04.771+0000: 1: info : - : m\n"
    assert impl.entry_text(impl.pack_record(empty)) == impl.format_line(empty)


@pytest.mark.parametrize("where", ["func", "source", "message"])
@pytest.mark.parametrize("newline", ["\n", "\r\n", "\r", "\x0b", "\x0c", "\x1c", "\x00"])
def test_no_string_a_client_gives_forges_a_line(impl, where, newline):
    """A function name forged to start a fake line, and the same in the source and the
    message: the text line, the dumped ring entry and the syslog payload each stay one
    record line."""
    rec = _relayed(**{where: f"virInit{newline}{FORGED}{newline}x"})
    for text in (impl.format_line(rec), impl.entry_text(impl.pack_record(rec)),
                 impl.format_line(rec, True), syslog_payload(rec) + "\n"):
        lines = text.split("\n")
        assert lines[-1] == ""
        assert lines[0].startswith("2026-11-23 14:29:04.771+0000: 4242: debug : ") or \
            lines[0].startswith("4242: debug : ")
        assert all(line.startswith(textformat.CONTINUATION) for line in lines[1:-1]), text
        assert "\r" not in text and "\x0b" not in text and "\x00" not in text
    if where != "message":
        assert "\n" not in impl.format_line(rec)[:-1]
        assert f"virInit\\x{ord(newline[0]):02x}" in impl.format_line(rec)


def test_every_line_and_function_name_the_wire_admits_packs_and_dumps(impl):
    """line 2**31 and 2**32-1, a 70,000-byte func (each once stopped the daemon)."""
    for rec in (_relayed(line=2 ** 31), _relayed(line=2 ** 32 - 1), _relayed(func="f" * 70000),
                _relayed(source="s" * 70000), _relayed(func="\u65e5" * 30000)):
        entry = impl.pack_record(rec)
        assert impl.entry_text(entry) == impl.format_line(rec)
    assert ":4294967295 : sent\n" in impl.format_line(_relayed(line=2 ** 32 - 1))


def test_an_older_versions_packed_entry_still_dumps(impl):
    """A ring recovered from the previous version holds its NUL-led entries."""
    import struct
    old = struct.pack("<xdiiBH", WHEN, 4711, 278, 1, 13) + b"virInitializeregister drivers"
    assert impl.entry_text(old) == ("2026-11-23 14:29:04.771+0000: 4711: debug : "
                                    "virInitialize:278 : register drivers\n")
