"""parse_syslog: RFC 3164 and RFC 5424 datagrams to (priority, source, message, fields)."""
from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from virlogd.daemon.syslog_input import parse_syslog

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


# -- the input: a datagram never stops it, and its lines name the tag ----------------------------
class _Loop:
    def add_reader(self, sock, callback):
        pass

    def remove_reader(self, sock):
        pass


def _input(tmp_path, monkeypatch=None):
    import socket as socketlib

    from virlogd.daemon import syslog_input
    from virlogd.core.filters import FilterSet
    from virlogd.outputs import OutputContext, build
    from virlogd.core.ring import RingBuffer
    from virlogd.core.router import Router, RouterState
    from virlogd.core.specs import parse_outputs
    specs, _ = parse_outputs(f"1:file:{tmp_path}/a.log")
    outs = [build(spec, OutputContext(pid=4711, hostname="h")) for spec in specs]
    router = Router(RouterState(FilterSet([], 3), outs), RingBuffer(64 * 1024), flush_each=True)
    path = str(tmp_path / "dev-log")
    sock = syslog_input.bind_syslog_socket(path)
    sender = socketlib.socket(socketlib.AF_UNIX, socketlib.SOCK_DGRAM)
    sender.connect(path)
    return syslog_input.SyslogInput(_Loop(), router, sock), router, sender


def test_a_datagram_that_cannot_become_a_record_is_counted_and_the_input_reads_on(
        tmp_path, monkeypatch):
    from virlogd.daemon import syslog_input
    real = syslog_input.parse_syslog

    def parse(datagram):
        if b"poison" in datagram:
            raise MemoryError("no room")      # what no parser can promise never happens
        return real(datagram)
    monkeypatch.setattr(syslog_input, "parse_syslog", parse)
    syslog, router, sender = _input(tmp_path)
    for payload in (b"<12>app: one", b"<12>app: poison", b"<12>app: two"):
        sender.send(payload)
    assert syslog.read(10) == 3
    lines = open(tmp_path / "a.log").read().splitlines()[2:]
    assert [line.split(" : ", 1)[1] for line in lines] == [
        "app : one", "could not route a syslog datagram of 15 bytes: MemoryError: no room "
        "(1 unroutable datagram so far)", "app : two"]
    assert router.stats()["dropped"] == {"unroutable datagram": 1}


def test_a_syslog_record_names_its_tag_and_no_tag_forges_a_line(tmp_path):
    """A datagram's tag is its source: shown after the level, control characters escaped."""
    syslog, router, sender = _input(tmp_path)
    sender.send(b"<12>ta\x1b\x01g[5]: hello\nNov 25 10:07:00 forged[1]: x")
    sender.send(b"<11>1 - - app\x7f 42 - - line one\r\nline two")
    assert syslog.read(10) == 2
    lines = open(tmp_path / "a.log").read().splitlines()[2:]
    pid = __import__("os").getpid()
    assert lines[0].endswith(f": {pid}: warning : ta\\x1b\\x01g : hello")
    assert lines[1] == "  | Nov 25 10:07:00 forged[1]: x"
    assert lines[2].endswith(f": {pid}: error : app\\x7f : line one")
    assert lines[3] == "  | line two"
