"""Time-boxed changes against a real daemon: ``--for`` reverts by itself, with an audit line,
and ``virlogd-admin`` shows what is temporary until then."""
import json
import re
import time

import pytest

from daemonproc import Daemon, read_until, wait_for
from virlogd.core.errors import ConfigError
from virlogd.daemon.timebox import format_duration, parse_duration

TEMPORARY = re.compile(r'^ Temporary: reverts to "(.*)" in (\d+)s \(set for 2s by uid \d+ '
                       r'pid \d+\)$')


def test_filters_for_2s_revert_with_an_audit_line_and_the_getter_shows_the_time_left(
        tmp_path):
    """During the 2 s: qemu debug reaches the file and the getter says it is temporary;
    after: the old filters are back, the revert is in the file, the getter says nothing."""
    log = tmp_path / "out.log"
    d = Daemon(tmp_path, outputs=f"1:file:{log}", args=["--log-filters", "3:remote"])
    try:
        done = d.admin("daemon-log-filters", "1:qemu 3:remote", "--for", "2s")
        assert (done.returncode, done.stdout, done.stderr) == (0, "", "")
        got = d.admin("daemon-log-filters").stdout.splitlines()
        assert got[0] == " Logging filters: 1:qemu 3:remote"
        found = TEMPORARY.match(got[1])
        assert found and found.group(1) == "3:remote" and int(found.group(2)) in (1, 2), got
        stats = json.loads(d.admin("stats", "--json").stdout)
        [temporary] = stats["temporary"]
        assert (temporary["setting"], temporary["value"], temporary["reverts_to"],
                temporary["for"]) == ("daemon-log-filters", "1:qemu 3:remote", "3:remote", "2s")
        assert 0 < temporary["remaining"] <= 2
        assert "daemon-log-filters: \"1:qemu 3:remote\", reverts to \"3:remote\" in " in \
            d.admin("stats").stdout
        d.virlog("-p", "debug", "-s", "qemu.monitor", "debug while it lasts")
        read_until(log, "debug while it lasts")
        text = read_until(log, 'log filters changed from "1:qemu 3:remote" to "3:remote" by '
                               'virlogd, reverting the change for 2s by uid ', timeout=10)
        assert 'log filters changed from "3:remote" to "1:qemu 3:remote" by uid ' in text
        assert re.search(r'to "1:qemu 3:remote" by uid \d+ pid \d+ for 2s\n', text)
        assert d.admin("daemon-log-filters").stdout == " Logging filters: 3:remote\n"
        d.virlog("-p", "debug", "-s", "qemu.monitor", "debug after the end")
        d.virlog("-p", "error", "-s", "remote", "marker")
        assert "debug after the end" not in read_until(log, "marker")
        stats = json.loads(d.admin("stats", "--json").stdout)
        assert (stats["temporary"], stats["admin_changes"], stats["admin_reverts"]) == \
            ([], 2, 1)
    finally:
        assert d.stop() == 0


def test_level_and_outputs_for_a_while_come_back_exactly(tmp_path):
    """daemon-log-level and daemon-log-outputs --for: back to the level, and to the outputs
    as they were set (a second file output goes away again)."""
    log, extra = tmp_path / "out.log", tmp_path / "extra.log"
    d = Daemon(tmp_path, outputs=f"1:file:{log}")
    try:
        assert d.admin("daemon-log-level", "1", "--for", "2s").returncode == 0
        assert d.admin("daemon-log-outputs", f"1:file:{log} 1:file:{extra}",
                       "--for", "1s").returncode == 0
        assert d.admin("daemon-log-level").stdout.splitlines()[1].startswith(
            ' Temporary: reverts to "3" in ')
        text = read_until(log, "log level changed from 1 to 3 by virlogd, reverting the "
                               "change for 2s by uid ", timeout=10)
        assert (f'log outputs changed from "1:file:{log} 1:file:{extra}" to "1:file:{log}" '
                f'by virlogd, reverting the change for 1s by uid ') in text
        assert d.admin("daemon-log-level").stdout == " Logging level: 3\n"
        assert d.admin("daemon-log-outputs").stdout == f" Logging outputs: 1:file:{log}\n"
    finally:
        assert d.stop() == 0


def test_a_permanent_change_ends_the_timed_one_and_no_revert_comes(tmp_path):
    """Set --for 1s, then set for good: the later change stands, nothing reverts it."""
    log = tmp_path / "out.log"
    d = Daemon(tmp_path, outputs=f"1:file:{log}")
    try:
        assert d.admin("daemon-log-filters", "1:qemu", "--for", "1s").returncode == 0
        assert d.admin("daemon-log-filters", "2:libvirt").returncode == 0
        text = read_until(log, 'to "2:libvirt" by uid ')
        assert re.search(r'log filters changed from "1:qemu" to "2:libvirt" by uid \d+ pid \d+, '
                         r'ending the change for 1s by uid \d+ pid \d+\n', text), text
        assert d.admin("daemon-log-filters").stdout == " Logging filters: 2:libvirt\n"
        time.sleep(2.0)
        d.virlog("-p", "error", "-s", "x", "marker")
        assert "reverting" not in read_until(log, "marker")
        assert d.admin("daemon-log-filters").stdout == " Logging filters: 2:libvirt\n"
    finally:
        assert d.stop() == 0


@pytest.mark.parametrize("duration, message", [
    ("10x", "invalid duration '10x' for --for: expected hours, minutes and seconds such as "
            "30s, 10m, 1h or 1h30m"),
    ("10", "invalid duration '10' for --for: expected hours, minutes and seconds such as "
           "30s, 10m, 1h or 1h30m"),
    ("0s", "invalid duration '0s' for --for: it must be at least 1s"),
    ("169h", "invalid duration '169h' for --for: at most 168h (a week)"),
])
def test_a_bad_duration_is_refused_word_for_word_and_changes_nothing(tmp_path, duration,
                                                                     message):
    d = Daemon(tmp_path, outputs=f"1:file:{tmp_path / 'out.log'}")
    try:
        done = d.admin("daemon-log-filters", "1:qemu", "--for", duration)
        assert (done.returncode, done.stdout, done.stderr) == (
            1, "", f"virlogd-admin: error: {message}\n")
        assert d.admin("daemon-log-filters").stdout == " Logging filters: \n"
        alone = d.admin("daemon-log-filters", "--for", "10m")
        assert (alone.returncode, alone.stderr) == (
            1, "virlogd-admin: error: '--for' needs a value to set, as in 'virlogd-admin "
               "daemon-log-filters VALUE --for 10m'\n")
    finally:
        assert d.stop() == 0


def test_durations_parse_and_print_alike():
    assert [parse_duration(t) for t in ("30s", "10m", "1h", "1h30m", "2h5m10s")] == \
        [30, 600, 3600, 5400, 7510]
    assert [format_duration(s) for s in (0, 0.2, 59, 60, 3723, 5400)] == \
        ["0s", "1s", "59s", "1m", "1h2m3s", "1h30m"]
    for bad in ("", "h", "1m1h", "-1s", "1.5h", " 1h"):
        with pytest.raises(ConfigError):
            parse_duration(bad)
