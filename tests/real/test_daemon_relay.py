"""Records relayed by a real daemon to the real journald and rsyslog, and the default output."""
import subprocess
import sys
import textwrap

from daemonproc import Daemon, isolated_env
from journal_checks import SEED_FIELDS, SEED_MESSAGE, SEED_MESSAGE_ID, SEED_SOURCE, \
    check_seed_entry


def test_the_seed_record_sent_through_the_daemon_is_found_by_the_seed_query(
        real_journald, tmp_path):
    """Library -> daemon -> journald: the same entry as in-process, plus the client identity."""
    d = Daemon(tmp_path, outputs="1:journald")
    program = tmp_path / "probe.py"
    program.write_text(textwrap.dedent(f"""\
        import os, virlogd
        print(os.getpid(), flush=True)
        virlogd.configure(outputs="1:virlogd:{d.socket}")
        def probeCapabilities():
            virlogd.getLogger({SEED_SOURCE!r}).error({SEED_MESSAGE!r},
                message_id={SEED_MESSAGE_ID!r}, fields={SEED_FIELDS!r})
        probeCapabilities()
    """))
    try:
        run = subprocess.run([sys.executable, str(program)], env=d.env, capture_output=True,
                             text=True, timeout=30)
        assert run.returncode == 0, run.stderr
        pid = run.stdout.split()[0]
        entries = real_journald.query(f"MESSAGE_ID={SEED_MESSAGE_ID}", f"OBJECT_PID={pid}")
        assert len(entries) == 1, entries
        entry = entries[0]
        check_seed_entry(entry, code_file=str(program), code_line=5,
                         code_func="probeCapabilities")
        assert entry["OBJECT_PID"] == pid
        assert entry["_PID"] == str(d.pid)          # journald saw the daemon send it
        assert entry["SYSLOG_IDENTIFIER"]
    finally:
        assert d.stop() == 0


def test_with_no_outputs_a_daemon_without_a_tty_writes_to_journald(real_journald, tmp_path):
    """Default output: journald when its socket is writable and stdin is not a tty."""
    d = Daemon(tmp_path, args=["--log-level", "1"])
    try:
        for level in ("debug", "info"):
            sent = d.virlog("-p", level, "-s", "defaults", "--field",
                            "VIRLOGD_TEST=default-journald", f"{level} to the default output")
            assert sent.returncode == 0, sent.stderr
        entries = real_journald.query("VIRLOGD_TEST=default-journald", timeout=2)
        # a default level of 1 becomes 2 for journald: the debug record is not there
        assert [e["MESSAGE"] for e in entries] == ["info to the default output"]
        assert entries[0]["PRIORITY"] == "6"
        level = d.admin("daemon-log-outputs")
        assert level.stdout == " Logging outputs: 2:journald\n"      # level 1 becomes 2
    finally:
        assert d.stop() == 0


def test_syslog_outputs_relay_with_their_own_ident_and_priority(real_rsyslog_devlog, tmp_path):
    """3:syslog:alpha 1:syslog:beta in the daemon: each line has its ident and priority."""
    d = Daemon(tmp_path, outputs="3:syslog:alpha 1:syslog:beta", args=["--log-level", "1"])
    try:
        d.virlog("-p", "debug", "-s", "s", "dbg")
        d.virlog("-p", "error", "-s", "s", "err")
        lines = [l for l in real_rsyslog_devlog.lines(count=6) if l.endswith(("dbg", "err"))]
        tags = sorted((l.split()[0], l.split()[2], l.rsplit(" : ", 1)[1]) for l in lines)
        assert tags == [("27", "alpha:", "err"), ("27", "beta:", "err"),
                        ("31", "beta:", "dbg")]
    finally:
        assert d.stop() == 0
