"""libvirt's priority, filter and output grammar, from tables of good and bad strings."""
import pytest

from virlogd.filters import FilterSet
from virlogd.priority import parse_priority
from virlogd.specs import FilterSpec, OutputSpec, parse_filters, parse_outputs

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
    ("filters", "1:", "Invalid match string ''"),
    ("filters", ":foo", "Invalid priority '' for filter ':foo'"),
    ("filters", "1:+", "Invalid match string '+'"),
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
