"""libvirt's priority, filter and output grammar, from tables of good and bad strings."""
import pytest

from virlogd.core.filters import FilterSet
from virlogd.core.priority import facility_of, parse_logger_priority, parse_priority
from virlogd.core.record import Record
from virlogd.core.specs import FilterSpec, OutputSpec, parse_filters, parse_outputs

# -- libvirt's own cases (tests/virlogtest.c) ------------------------------------------
LIBVIRT_VALID_OUTPUTS = ["1:file:/dev/null", "1:file:/dev/null  2:stderr"]
LIBVIRT_VALID_FILTERS = ["1:foo", "1:foo 2:bar  3:foobar"]
LIBVIRT_INVALID = [
    # (kind, text, libvirt's message)
    ("outputs", "foo:stderr", "Invalid priority 'foo' for output 'foo:stderr'"),
    ("outputs", "1:bar", "Invalid destination 'bar' for output '1:bar'"),
    ("outputs", "1:stderr:foobar",
     "Output '1:stderr:foobar' does not meet the format requirements for destination "
     "type 'stderr'"),
    ("filters", "5:foo", "Invalid priority '5' for filter '5:foo'"),
    # libvirt names only the match here ("Invalid match string ''"): we name the token too
    ("filters", "1:", "Invalid match string '' for filter '1:'"),
    ("filters", ":foo", "Invalid priority '' for filter ':foo'"),
    ("filters", "1:+", "Invalid match string '+' for filter '1:+'"),
]


@pytest.mark.parametrize("text", LIBVIRT_VALID_OUTPUTS)
def test_libvirt_valid_outputs_parse_without_error(text):
    """Every output string libvirt's own test accepts is accepted whole."""
    specs, error = parse_outputs(text)
    assert error is None and len(specs) == len(text.split())


@pytest.mark.parametrize("text", LIBVIRT_VALID_FILTERS)
def test_libvirt_valid_filters_parse_without_error(text):
    """Every filter string libvirt's own test accepts is accepted whole."""
    specs, error = parse_filters(text)
    assert error is None and len(specs) == len(text.split())


@pytest.mark.parametrize("kind,text,message", LIBVIRT_INVALID)
def test_libvirt_invalid_strings_are_refused_with_libvirt_wording(kind, text, message):
    """Each string libvirt refuses is refused here, with libvirt's message."""
    specs, error = (parse_filters if kind == "filters" else parse_outputs)(text)
    assert specs == [] and error is not None
    assert error.message == message and error.text == text


# -- a wider table: good and bad side by side ------------------------------------------
FILTERS = [
    ("3:remote 4:event 1:+qemu", ["3:remote", "4:event", "1:+qemu"], None),
    ("1:*", ["1:*"], None),
    ("2:qemu.* 1:util", ["2:qemu.*", "1:util"], None),
    ("1:a 9:b 2:c", ["1:a"], "Invalid priority '9' for filter '9:b'"),
    ("1:a b 2:c", ["1:a"], "Malformed format for filter 'b'"),
    ("1:a:b", [], "Malformed format for filter '1:a:b'"),
    ("debug:x", [], "Invalid priority 'debug' for filter 'debug:x'"),
    ("", [], None),
    ("   ", [], None),
]


@pytest.mark.parametrize("text,expected,message", FILTERS)
def test_filter_strings_keep_the_entries_before_the_first_bad_token(text, expected, message):
    """The filters before a bad token are returned along with that token's error."""
    specs, error = parse_filters(text)
    assert [str(s) for s in specs] == expected
    assert (error.message if error else None) == message


OUTPUTS = [
    ("3:syslog:libvirtd 1:file:/var/log/x.log", ["3:syslog:libvirtd", "1:file:/var/log/x.log"],
     None),
    ("1:journald", ["1:journald"], None),
    ("1:journald:x", [], "Output '1:journald:x' does not meet the format requirements for "
                         "destination type 'journald'"),
    ("1:syslog", [], "Output '1:syslog' does not meet the format requirements for "
                     "destination type 'syslog'"),
    ("1:file:", [], "Output '1:file:' does not meet the format requirements for "
                    "destination type 'file'"),
    ("1:stderr 2:stderr", ["2:stderr"], None),                 # a later duplicate replaces
    ("1:file:/a 2:file:/b 3:file:/a", ["2:file:/b", "3:file:/a"], None),
    ("1:remote:tcp://127.0.0.1:514", ["1:remote:tcp://127.0.0.1:514"], None),
    ("1:remote:udp://h:1", [], "Invalid remote URL 'udp://h:1' for output "
                               "'1:remote:udp://h:1' (expected tcp://HOST:PORT or "
                               "tls://HOST:PORT)"),
    ("1:virlogd", ["1:virlogd"], None),
    ("1:stderr 0:stderr", ["1:stderr"], "Invalid priority '0' for output '0:stderr'"),
]


@pytest.mark.parametrize("text,expected,message", OUTPUTS)
def test_output_strings_parse_to_outputs_or_to_the_first_error(text, expected, message):
    """Outputs parse in order, a later duplicate replaces the earlier, errors name the token."""
    specs, error = parse_outputs(text)
    assert [str(s) for s in specs] == expected
    assert (error.message if error else None) == message


def test_relative_file_outputs_are_made_absolute(tmp_path):
    """A relative file path is made absolute against the directory it is relative to."""
    specs, _ = parse_outputs("1:file:logs/x.log", cwd=str(tmp_path))
    assert specs == [OutputSpec(1, "file", str(tmp_path / "logs" / "x.log"))]


PRIORITIES = [("1", 1), ("4", 4), ("debug", 1), ("info", 2), ("warning", 3), ("error", 4)]


@pytest.mark.parametrize("text,value", PRIORITIES)
def test_priorities_take_numbers_and_names(text, value):
    """Priorities are 1-4 or debug/info/warning/error."""
    assert parse_priority(text) == value


@pytest.mark.parametrize("text", ["0", "5", "DEBUG ", "warn", "", "1.0"])
def test_bad_priorities_are_refused_with_the_expected_list(text):
    """A bad priority names itself and what is expected."""
    with pytest.raises(ValueError) as err:
        parse_priority(text)
    assert str(err.value) == (f"invalid priority '{text}' (expected 1-4 or debug, info, "
                              f"warning, error)")


@pytest.mark.parametrize("text,expected", [
    ("1:a 1:", "Invalid match string '' for filter '1:' in \"1:a 1:\""),
    ("3:remote  1:+", "Invalid match string '+' for filter '1:+' in \"3:remote  1:+\""),
    ("1:", "Invalid match string '' for filter '1:'"),
    (" 9:x ", "Invalid priority '9' for filter '9:x'"),
])
def test_a_refusal_names_the_whole_string_when_it_holds_more_than_the_bad_token(text,
                                                                                 expected):
    """What virlogd-admin shows: the token, and the string the user typed around it."""
    assert parse_filters(text)[1].in_string() == expected


LOGGER_PRIORITIES = [
    # libvirt's numbers and names, and syslog's names in any case (libvirt's map)
    ("1", (1, None)), ("4", (4, None)), ("debug", (1, None)), ("error", (4, None)),
    ("emerg", (4, None)), ("panic", (4, None)), ("alert", (4, None)), ("crit", (4, None)),
    ("err", (4, None)), ("ERR", (4, None)), ("warning", (3, None)), ("warn", (3, None)),
    ("Warning", (3, None)), ("notice", (2, None)), ("NOTICE", (2, None)), ("info", (2, None)),
    ("DEBUG", (1, None)),
    # facility.level, any case; the facility as its number
    ("daemon.warning", (3, 3)), ("kern.emerg", (4, 0)), ("user.notice", (2, 1)),
    ("mail.info", (2, 2)), ("auth.crit", (4, 4)), ("syslog.debug", (1, 5)), ("lpr.err", (4, 6)),
    ("news.info", (2, 7)), ("uucp.info", (2, 8)), ("cron.warn", (3, 9)),
    ("authpriv.alert", (4, 10)), ("ftp.info", (2, 11)), ("local0.info", (2, 16)),
    ("LOCAL7.ERR", (4, 23)), ("Daemon.Notice", (2, 3)),
]


@pytest.mark.parametrize("text,expected", LOGGER_PRIORITIES)
def test_virlog_takes_loggers_priorities(text, expected):
    """virlog -p: what logger -p takes, mapped the way libvirt maps syslog's severities."""
    assert parse_logger_priority(text) == expected


@pytest.mark.parametrize("text,message", [
    ("loud", "invalid priority 'loud' (expected 1-4, LEVEL or FACILITY.LEVEL; LEVEL: debug, "
             "info, notice, warning, warn, err, error, crit, alert, emerg, panic)"),
    ("5", "invalid priority '5' (expected 1-4, LEVEL or FACILITY.LEVEL; LEVEL: debug, info, "
          "notice, warning, warn, err, error, crit, alert, emerg, panic)"),
    ("daemon", "invalid priority 'daemon' (expected 1-4, LEVEL or FACILITY.LEVEL; LEVEL: "
               "debug, info, notice, warning, warn, err, error, crit, alert, emerg, panic)"),
    ("Deamon.err", "invalid facility 'Deamon' in 'Deamon.err' (FACILITY: kern, user, mail, "
                   "daemon, auth, syslog, lpr, news, uucp, cron, authpriv, ftp, "
                   "local0-local7)"),
    ("local8.err", "invalid facility 'local8' in 'local8.err' (FACILITY: kern, user, mail, "
                   "daemon, auth, syslog, lpr, news, uucp, cron, authpriv, ftp, "
                   "local0-local7)"),
    ("daemon.loud", "invalid level 'loud' in 'daemon.loud' (LEVEL: debug, info, notice, "
                    "warning, warn, err, error, crit, alert, emerg, panic)"),
])
def test_a_bad_logger_priority_names_the_part_that_is_wrong(text, message):
    with pytest.raises(ValueError) as err:
        parse_logger_priority(text)
    assert str(err.value) == message


@pytest.mark.parametrize("fields,facility", [
    ({}, 3), ({"SYSLOG_INPUT_FACILITY": "19"}, 19), ({"SYSLOG_INPUT_FACILITY": "0"}, 0),
    ({"SYSLOG_INPUT_FACILITY": "23"}, 23), ({"SYSLOG_INPUT_FACILITY": "24"}, 3),
    ({"SYSLOG_INPUT_FACILITY": "-1"}, 3), ({"SYSLOG_INPUT_FACILITY": "x"}, 3),
    ({"SYSLOG_INPUT_FACILITY": "１９"}, 3), ({"SYSLOG_INPUT_FACILITY": b"19"}, 3),
    ({"SYSLOG_INPUT_FACILITY": "019"}, 3),
])
def test_an_output_uses_the_records_facility_when_it_is_one(fields, facility):
    """Daemon (3) unless the record carries a facility number 0-23 (anything else from a
    client is ignored, never an error)."""
    assert facility_of(Record(2, "s", "m", fields=fields)) == facility


MATCHES = [
    # filters, default, source, expected threshold
    ("1:qemu", 3, "qemu.monitor", 1),            # substring
    ("1:qemu", 3, "libvirt.qemu_driver", 1),     # substring anywhere
    ("1:qemu.*", 3, "libvirt.qemu_driver", 3),   # glob over the whole name
    ("1:qemu.*", 3, "qemu.monitor", 1),
    ("1:*", 4, "anything", 1),
    ("4:qemu 1:qemu.monitor", 2, "qemu.monitor", 4),   # the first match wins
    ("4:remote", 1, "remote.rpc", 4),            # a threshold above the default
    ("1:util.[jx]son", 3, "util.json", 1),
    ("1:util", 3, "remote", 3),                  # no match: the default
]


@pytest.mark.parametrize("filters,default,source,threshold", MATCHES)
def test_the_first_matching_filter_gives_the_threshold(filters, default, source, threshold):
    """Plain names match as substrings, globs over the whole name; first match wins."""
    specs, _ = parse_filters(filters)
    assert FilterSet(specs, default).decide(source)[0] == threshold


def test_a_plus_filter_asks_for_the_stack():
    """x:+name marks matching records for a stack trace."""
    specs, _ = parse_filters("1:+qemu")
    assert specs == [FilterSpec(1, "qemu", True)]
    assert FilterSet(specs, 3).decide("qemu.monitor") == (1, True)
