"""parse_syslog: RFC 3164 and RFC 5424 datagrams to (priority, source, message, fields)."""
from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from virlogd.syslog_input import parse_syslog

CASES = [
    # what logger --rfc3164 -u sends (with a hostname)
    (b"<28>Nov 25 10:07:00 vm alpha: hello world",
     (3, "alpha", "hello world", {"SYSLOG_INPUT_FACILITY": "3"})),
    # glibc syslog(3) and logger's local default: no hostname; [PID] is only a claim
    (b"<13>Nov  5 10:07:00 beta[555]: hello",
     (2, "beta", "hello", {"SYSLOG_INPUT_FACILITY": "1"})),
    # Python's SysLogHandler with ident "myid: ", NUL-terminated
    (b"<12>myid: w\x00", (3, "myid", "w", {"SYSLOG_INPUT_FACILITY": "1"})),
    # SysLogHandler without an ident: no tag at all
    (b"<11>boom\x00", (4, "syslog", "boom", {"SYSLOG_INPUT_FACILITY": "1"})),
    # logger --rfc5424
    (b'<28>1 2026-11-25T10:07:00.588388+00:00 vm alpha - - '
     b'[timeQuality tzKnown="1" isSynced="0"] hello world',
     (3, "alpha", "hello world",
      {"SYSLOG_INPUT_FACILITY": "3",
       "SYSLOG_STRUCTURED_DATA": '[timeQuality tzKnown="1" isSynced="0"]'})),
    # RFC 5424 with nil fields, a MSGID, escapes inside SD and a BOM before the message
    (b'<165>1 - - app 42 ID47 [a@1 k="x \\" ] y"][b@2] \xef\xbb\xbfcaf\xc3\xa9',
     (2, "app", "caf\u00e9",
      {"SYSLOG_INPUT_FACILITY": "20", "SYSLOG_MSGID": "ID47",
       "SYSLOG_STRUCTURED_DATA": '[a@1 k="x \\" ] y"][b@2]'})),
    (b"<13>1 - - beta - - - hello", (2, "beta", "hello", {"SYSLOG_INPUT_FACILITY": "1"})),
    (b"<15>1 - - - - - -", (1, "syslog", "", {"SYSLOG_INPUT_FACILITY": "1"})),
]


@pytest.mark.parametrize("datagram, expected", CASES)
def test_each_syslog_form_gives_its_priority_tag_and_message(datagram, expected):
    """The tag (APP-NAME) is the source; the message loses the header and the tag."""
    assert parse_syslog(datagram) == expected


@pytest.mark.parametrize("severity, level", [(0, 4), (1, 4), (2, 4), (3, 4), (4, 3), (5, 2),
                                             (6, 2), (7, 1)])
def test_syslog_severities_map_to_the_four_levels(severity, level):
    """emerg/alert/crit/err -> 4, warning -> 3, notice/info -> 2, debug -> 1."""
    assert parse_syslog(b"<%d>t: m" % (24 + severity))[0] == level


@pytest.mark.parametrize("datagram, message", [
    (b"no header at all", "no header at all"),
    (b"<999>too big", "<999>too big"),
    (b"<13", "<13"),
    (b"", ""),
    (b"<13>1 2026-01-01T00:00:00Z host app 1 - [unterminated x", "1 2026-01-01T00:00:00Z "
                                                                  "host app 1 - [unterminated x"),
    (b"<13>1 too short", "1 too short"),
    (b"<13>hello world: no tag without a timestamp", "hello world: no tag without a timestamp"),
])
def test_malformed_input_is_kept_whole_as_the_message_from_source_syslog(datagram, message):
    """What cannot be read is not lost: the whole text (after a valid PRI) is the message."""
    priority, source, text, _fields = parse_syslog(datagram)
    assert (priority, source, text) == (2, "syslog", message)


def test_invalid_utf8_is_kept_byte_for_byte():
    """Bytes that are not UTF-8 survive (surrogateescape), nothing raises."""
    _p, _s, message, _f = parse_syslog(b"<13>t: \xff\xfe")
    assert message.encode("utf-8", "surrogateescape") == b"\xff\xfe"


@given(st.binary(max_size=300))
def test_parse_syslog_never_raises(datagram):
    """Any datagram gives a level 1-4 and string source and message."""
    priority, source, message, fields = parse_syslog(datagram)
    assert priority in (1, 2, 3, 4)
    assert isinstance(source, str) and source and isinstance(message, str)
    assert isinstance(fields, dict)
