"""virlogd-admin against a real daemon: the answers a newcomer found wanting.

Refusals that name the bad token and the whole string, the client socket given to ``-S`` by
mistake, and ``stats`` that counts the daemon's own records apart from the clients', shows no
error for an output that works again, and an audit line that names the output in effect.
"""
import json
import os

from daemonproc import Daemon, read_until, wait_for
from virlogd.core import defaults


def stats(d):
    run = d.admin("stats", "--json")
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout)


def test_a_filter_without_a_match_names_the_token_and_the_string(tmp_path):
    """'1:' and '1:+' once said only "Invalid match string ''" / "'+'"."""
    d = Daemon(tmp_path, outputs=f"1:file:{tmp_path / 'out.log'}")
    try:
        answers = [d.admin("daemon-log-filters", text)
                   for text in ("1:", "1:+", "3:remote 1:", "3:remote 1:+ 2:qemu")]
        assert [(a.returncode, a.stdout, a.stderr) for a in answers] == [
            (1, "", "virlogd-admin: error: Invalid match string '' for filter '1:'\n"),
            (1, "", "virlogd-admin: error: Invalid match string '+' for filter '1:+'\n"),
            (1, "", "virlogd-admin: error: Invalid match string '' for filter '1:' in "
                    "\"3:remote 1:\"\n"),
            (1, "", "virlogd-admin: error: Invalid match string '+' for filter '1:+' in "
                    "\"3:remote 1:+ 2:qemu\"\n"),
        ]
        assert d.admin("daemon-log-filters").stdout == " Logging filters: \n"   # unchanged
    finally:
        assert d.stop() == 0


def test_the_client_socket_given_to_admin_is_named_as_such_and_not_counted_as_a_fault(
        tmp_path):
    """virlogd-admin -S CLIENT-SOCKET: a sentence saying which socket it reached and which
    it needs; the daemon counts no malformed frame and reports nothing."""
    log = tmp_path / "out.log"
    d = Daemon(tmp_path, outputs=f"1:file:{log}")
    try:
        for command in (["stats"], ["daemon-log-filters", "1:x"]):
            run = d.admin("-S", d.socket, *command)
            assert (run.returncode, run.stdout, run.stderr) == (
                1, "", f"virlogd-admin: error: {d.socket} is virlogd's client socket, where "
                       f"programs send their records, not its admin socket: give -S the "
                       f"admin socket (virlogd's --admin-socket; default "
                       f"{defaults.admin_socket_path(d.env)})\n")
        numbers = stats(d)
        assert numbers["dropped"] == {}
        assert numbers["server"]["malformed_frames"] == 0
        assert d.admin("daemon-log-filters").stdout == " Logging filters: \n"
        assert d.virlog("-p", "error", "-s", "probe", "after").returncode == 0
        text = read_until(log, "after")
        assert "closed connection" not in text and "bad greeting" not in text
    finally:
        assert d.stop() == 0


def _own_lines(text, pid):
    """The daemon's own records in a file output: its pid, not the output's headers."""
    return [line for line in text.splitlines()
            if f": {pid}: " in line and not line.endswith(("virlogd version: 1.0",))
            and " : hostname: " not in line]


def test_stats_counts_one_client_record_as_one_and_the_daemons_own_apart(tmp_path):
    """One virlog record: "Records received: 1" (it once said 2: the daemon's start record
    was counted with it); the daemon's own records on their own line."""
    log = tmp_path / "out.log"
    d = Daemon(tmp_path, outputs=f"1:file:{log}", args=["--log-level", "1"])   # all in the file
    try:
        assert d.virlog("-p", "error", "-s", "probe", "one record").returncode == 0
        numbers = stats(d)
        own = len(_own_lines(read_until(log, "one record"), d.pid))
        assert own >= 1                                 # "virlogd started ..."
        assert (numbers["received"], numbers["own"]) == (1, own)
        table = d.admin("stats")
        assert table.returncode == 0
        assert table.stdout.splitlines()[:2] == [
            " Records received:     1", f" Daemon's own records: {own}"]
    finally:
        assert d.stop() == 0


def test_an_output_that_works_again_shows_no_last_error(tmp_path):
    """A FIFO nobody reads fails (the pipe is full); once read it works again: stats then
    shows no current error ("-"), and still counts the failures."""
    fifo, other = tmp_path / "fifo", tmp_path / "other.log"
    os.mkfifo(fifo)
    spec = f"1:file:{fifo}"
    d = Daemon(tmp_path, outputs=f"{spec} 1:file:{other}")
    reader = None
    try:
        lines = "".join(f"fill {i} {'p' * 200}\n" for i in range(600))     # > 64 kB
        assert d.virlog("-p", "error", "-s", "fill", input=lines).returncode == 0
        failing = next(o for o in stats(d)["outputs"] if o["output"] == spec)
        assert failing["last_error"].startswith(f"{fifo} is not being read: the pipe is full")
        reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)

        def drained_and_recovered():
            try:
                while os.read(reader, 65536):
                    pass
            except BlockingIOError:
                pass
            run = d.virlog("-p", "error", "-s", "probe", "after the reader came")
            assert run.returncode == 0
            return f"output '{spec}' works again (" in other.read_text()
        wait_for(drained_and_recovered, 20, "the FIFO output to work again")
        shown = next(o for o in stats(d)["outputs"] if o["output"] == spec)
        assert shown["last_error"] is None and shown["failed"] >= 1
        table = d.admin("stats").stdout
        row = next(line for line in table.splitlines() if line.startswith(f" {spec} "))
        assert row.endswith("  -"), row
    finally:
        if reader is not None:
            os.close(reader)
        assert d.stop() == 0


def test_the_audit_line_names_the_output_in_effect(tmp_path):
    """Replacing the default output: the audit line names it (it once said from "")."""
    log = tmp_path / "out.log"
    d = Daemon(tmp_path)
    try:
        default = d.admin("daemon-log-outputs").stdout
        assert default.startswith(" Logging outputs: ")
        default = default[len(" Logging outputs: "):].strip()
        assert default                                   # e.g. 3:journald, 3:stderr
        run = d.admin("daemon-log-outputs", f"1:file:{log}")
        assert run.returncode == 0, run.stderr
        text = read_until(log, "log outputs changed")
        line = next(line for line in text.splitlines() if "log outputs changed" in line)
        assert line.split(": warning : ", 1)[1].startswith(
            f"log outputs changed from \"{default}\" (the default) to \"1:file:{log}\" by uid "
            f"{os.geteuid()} pid ")
    finally:
        assert d.stop() == 0


def test_virlog_given_the_admin_socket_fails_and_says_so(tmp_path):
    """virlog -S ADMIN-SOCKET once exited 0 and its records went nowhere (the admin server
    waited for a newline, then saw the end of file). Now: exit 1, naming the socket."""
    log = tmp_path / "out.log"
    d = Daemon(tmp_path, outputs=f"1:file:{log}")
    expected = (f"virlog: error: {d.admin_socket} is virlogd's admin socket, for "
                f"virlogd-admin, not its client socket: give -S the client socket (virlogd's "
                f"--socket); nothing was delivered\n")
    try:
        runs = [d.virlog("-S", d.admin_socket, "-p", "error", "one message"),
                d.virlog("-S", d.admin_socket, "-p", "error",
                         input="".join(f"line {i}\n" for i in range(20000)))]
        assert [(r.returncode, r.stdout, r.stderr) for r in runs] == [(1, "", expected)] * 2
        assert d.virlog("-p", "error", "the client socket").returncode == 0
        text = read_until(log, "the client socket")
        assert "one message" not in text and "line 0" not in text
        assert stats(d)["admin"]["refused_requests"] == 2
    finally:
        assert d.stop() == 0
