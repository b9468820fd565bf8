"""`virlog` speaks logger's language: the real command, through a real daemon, to
a real journald, a real rsyslog behind /dev/log and a real rsyslog collector over TCP.

``-t TAG`` is the source and the program name; ``-p`` takes syslog's level names in any case
and ``facility.level``; the facility reaches every output that has a place for it
(journald's ``SYSLOG_FACILITY``, the PRI of syslog and remote), and stays daemon (3) when
none is given.
"""
import uuid

from daemonproc import Daemon, wait_for


def mine(receiver, marker: str, count: int):
    """The receiver's lines holding *marker*, once there are *count* of them."""
    def found():
        lines = [line for line in receiver.lines(count=0) if marker in line]
        return lines if len(lines) >= count else None
    return wait_for(found, 10, f"{count} lines with {marker!r}")


def test_tag_priority_and_facility_reach_journald(real_journald, tmp_path):
    """virlog -t myapp -p local3.err / -p WARN: SYSLOG_FACILITY 19 (local3) then 3 (daemon,
    the default), PRIORITY 3 then 4, the tag as SYSLOG_IDENTIFIER and LIBVIRT_SOURCE."""
    mark = uuid.uuid4().hex
    d = Daemon(tmp_path, outputs="1:journald", args=["--log-level", "1"])
    try:
        for priority in ("local3.err", "WARN", "authpriv.Notice"):
            run = d.virlog("-t", "myapp", "-p", priority, "--field", f"VIRLOGD_TEST={mark}",
                           f"as {priority}")
            assert (run.returncode, run.stderr) == (0, "")
        entries = real_journald.query(f"VIRLOGD_TEST={mark}", count=3)
    finally:
        assert d.stop() == 0
    got = [(e["MESSAGE"], e["PRIORITY"], e["SYSLOG_FACILITY"], e["SYSLOG_IDENTIFIER"],
            e["LIBVIRT_SOURCE"]) for e in entries]
    assert got == [("as local3.err", "3", "19", "myapp", "myapp"),
                   ("as WARN", "4", "3", "myapp", "myapp"),
                   ("as authpriv.Notice", "6", "10", "myapp", "myapp")]


def test_facility_reaches_rsyslog_through_the_syslog_output(real_rsyslog_devlog, tmp_path):
    """3:syslog:relay: -p daemon.warning is PRI 28 (daemon.warning), -p local0.crit 131
    (libvirt's map: crit is error, err in syslog), no facility 27 (daemon.err)."""
    d = Daemon(tmp_path, outputs="1:syslog:relay", args=["--log-level", "1"])
    try:
        for priority in ("daemon.warning", "local0.crit", "err", "LOCAL7.debug"):
            run = d.virlog("-t", "myapp", "-p", priority, f"as {priority}")
            assert (run.returncode, run.stderr) == (0, "")
        lines = mine(real_rsyslog_devlog, " : as ", 4)
    finally:
        assert d.stop() == 0
    assert [(line.split()[0], line.split()[1], line.rsplit(" : ", 1)[1]) for line in lines] == [
        ("28", "daemon.warning", "as daemon.warning"), ("131", "local0.err", "as local0.crit"),
        ("27", "daemon.err", "as err"), ("191", "local7.debug", "as LOCAL7.debug")]


def test_facility_and_tag_reach_a_collector_through_the_remote_output(rsyslog_server,
                                                                       tmp_path):
    """1:remote:tcp://...: the PRI carries the facility, APP-NAME the tag."""
    d = Daemon(tmp_path, outputs=f"1:remote:tcp://127.0.0.1:{rsyslog_server.port}",
               args=["--log-level", "1"])
    try:
        for priority in ("mail.notice", "warning"):
            run = d.virlog("-t", "myapp", "-p", priority, f"as {priority}")
            assert (run.returncode, run.stderr) == (0, "")
        lines = mine(rsyslog_server, " msg=as ", 2)
    finally:
        assert d.stop() == 0
    heads = [(line.split()[0], line.split()[3]) for line in lines]
    assert heads == [("app=myapp", "pri=22"), ("app=myapp", "pri=28")]
