"""libvirt's text line, exactly, and lines that cannot be forged."""
import re

from virlogd.record import Record
from virlogd.textformat import dump_text, format_line, format_time, syslog_payload

WHEN = 1795444144.771   # 2026-11-23 14:29:04.771 UTC


def test_the_line_is_libvirts_current_format_in_utc():
    """Timestamp in UTC with milliseconds and +0000, pid, level, func:line, message."""
    rec = Record(1, "util", "register drivers", time=WHEN, pid=4711, func="virInitialize",
                 line=278)
    assert format_line(rec) == ("2026-11-23 14:29:04.771+0000: 4711: debug : "
                                "virInitialize:278 : register drivers\n")


def test_func_and_line_are_omitted_when_unknown():
    """A record without a function has no ': func:line' part."""
    rec = Record(2, "x", "virlogd version: 1.0", time=WHEN, pid=4711)
    assert format_line(rec) == "2026-11-23 14:29:04.771+0000: 4711: info : virlogd version: 1.0\n"


def test_milliseconds_are_zero_padded():
    """.005, not .5."""
    assert format_time(1795444144.005) == "2026-11-23 14:29:04.005+0000"


def test_an_embedded_newline_cannot_forge_a_record_line():
    """Continuation lines never start like a record (a date) or a dump banner."""
    forged = "ok\n2026-11-23 14:29:04.771+0000: 1: error : fake\n     ====== end of log ====="
    text = format_line(Record(3, "x", forged, time=WHEN, pid=7))
    lines = text.splitlines()
    assert len(lines) == 3
    record_start = re.compile(r"^\d{4}-\d\d-\d\d ")
    assert [bool(record_start.match(line)) for line in lines] == [True, False, False]
    assert all(not line.lstrip().startswith("======") for line in lines)
    assert lines[1] == "  | 2026-11-23 14:29:04.771+0000: 1: error : fake"


def test_control_characters_are_shown_escaped():
    """An escape sequence or carriage return is shown, not obeyed."""
    text = format_line(Record(3, "x", "a\rb\x1b[2Jc\x00", time=WHEN, pid=7))
    assert text.endswith(": a\\x0db\\x1b[2Jc\\x00\n")


def test_the_syslog_payload_has_no_timestamp():
    """syslog adds its own time; ours would be noise."""
    rec = Record(4, "x", "boom", time=WHEN, pid=9, func="f", line=3)
    assert syslog_payload(rec) == "9: error : f:3 : boom"


def test_a_stack_follows_the_line_as_continuation_lines():
    """The + filter's stack trace never looks like records either."""
    rec = Record(1, "qemu", "m", time=WHEN, pid=1, stack="  File a.py, line 1\n    x()\n")
    assert format_line(rec, with_stack=True).splitlines()[1:] == [
        "  |   File a.py, line 1", "  |     x()"]


def test_the_dump_is_framed_by_libvirts_banners():
    """A line saying why, then the buffer between the start and end banners."""
    assert dump_text("Caught User-defined signal 2", ["a\n", "b\n"]) == (
        "Caught User-defined signal 2 dumping internal log buffer:\n\n"
        "    ====== start of log =====\n\n"
        "a\nb\n\n"
        "     ====== end of log =====\n")
    assert dump_text("Caught User-defined signal 2", None) == (
        "Caught User-defined signal 2 internal log buffer deactivated\n")
