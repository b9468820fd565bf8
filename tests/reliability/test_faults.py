"""Faults: the daemon killed, a disk full, a file swapped, receivers restarted, a pipe nobody
reads, clients that stall. The daemon survives, loses only what it counts, and says so.

Each test prints its figures (``-s``) for docs/RELIABILITY.md.
"""
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest

from conftest import require_real
from daemonproc import Daemon, read_until, rss_kb, wait_for

LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}\+0000: (\d+): (\w+) : (.*)$")
RECOVERED = ("Previous virlogd run ended without stopping cleanly; dumping recovered log "
             "buffer of a previous run:")


def python(program, env, *args):
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(program), *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            stdin=subprocess.DEVNULL)


def split_dumps(text):
    """(routed lines, [lines of each dump]) of a log file's text."""
    routed, dumps, current = [], [], None
    for line in text.splitlines():
        banner = line.strip()
        if banner == "====== start of log =====":
            current = []
            continue
        if banner == "====== end of log =====":
            dumps.append(current)
            current = None
            continue
        (routed if current is None else current).append(line)
    return routed, dumps


def seqs(lines, tag="seq"):
    pattern = re.compile(rf" : {tag} (\d+)\b")
    return [int(m.group(1)) for m in map(pattern.search, lines) if m]


def stats(d):
    run = d.admin("stats", "--json")
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout)


def output_stats(d, spec):
    return next(o for o in stats(d)["outputs"] if o["output"] == spec)


def figures(name, **values):
    print(f"\n{name} figures:", json.dumps(values))


# -- the daemon dies ---------------------------------------------------------------------
STREAMER = """
    import sys, time
    from virlogd.client.client import Client
    from virlogd.core.record import Record
    client = Client(sys.argv[1], hold=int(sys.argv[2]))
    for i in range(int(sys.argv[3])):
        client.send(Record(3, "stream", "seq %d" % i))
        if i % 5 == 4:
            time.sleep(0.001)
    client.close()
    print(client.dropped_total, client.resent_total, flush=True)
"""


def kill_under_a_stream(tmp_path, *, total, hold, under_way, unread):
    """Stream *total* records from a ``Client`` (``hold``), SIGKILL the daemon once record
    *under_way* has arrived and start another. With *unread*, the daemon is stopped (SIGSTOP)
    0.3 s before, so the client's records pile up unread in its socket buffer; without, the
    client logs into the void for 0.3 s. Returns (the log's text, the records routed before
    the kill, the client's dropped_total, its resent_total)."""
    log = tmp_path / "out.log"
    d = Daemon(tmp_path, outputs=f"1:file:{log}")
    client = python(STREAMER, d.env, d.socket, str(hold), str(total))
    again = None
    try:
        # the socket accepts before the outputs are open (the kernel queues a client that
        # connects early), so the file may not exist yet when the stream starts
        wait_for(lambda: log.exists() and max(seqs(log.read_text().splitlines()) or [0])
                 >= under_way, 20, "the stream to be under way")
        if unread:
            d.kill(signal.SIGSTOP)
            time.sleep(0.3)
        assert d.stop(signal.SIGKILL) == -signal.SIGKILL
        before_kill = seqs(split_dumps(log.read_text())[0])
        if not unread:
            time.sleep(0.3)
        again = Daemon(tmp_path, outputs=f"1:file:{log}")
        out, err = client.communicate(timeout=60)
        assert client.returncode == 0, err
        dropped, resent = map(int, out.split())
        read_until(log, f"seq {total - 1}\n")
    finally:
        if client.poll() is None:
            client.kill()
            client.wait()
        if again is not None:
            assert again.stop() == 0
    return log.read_text(), before_kill, dropped, resent


def in_order(got):
    """The first arrival of each record, which must be in the sent order."""
    first_seen = list(dict.fromkeys(got))
    assert first_seen == sorted(first_seen), "order kept"
    return first_seen


def test_sigkill_mid_stream_then_restart_loses_only_what_is_counted(tmp_path):
    """The client reconnects by itself, sends again what the killed daemon never
    acknowledged, reports its drops; the killed run's buffer is recovered. Every record is
    routed, recovered or counted."""
    total = 6000
    text, before_kill, client_dropped, client_resent = kill_under_a_stream(
        tmp_path, total=total, hold=300, under_way=1000, unread=False)
    routed, dumps = split_dumps(text)
    assert RECOVERED in text
    recovered = seqs(dumps[0])
    got = seqs(routed)
    # a record can arrive twice only if the killed daemon routed it in the instant before
    # it could acknowledge it (the client then sends it again)
    twice = len(got) - len(in_order(got))
    assert twice <= 100
    reported = sum(int(n) for n in re.findall(
        r"(\d+) record\(s\) dropped while the daemon was unreachable", text))
    assert reported == client_dropped > 0
    assert recovered and recovered[-1] >= before_kill[-1]
    unaccounted = total - len(set(got) | set(recovered)) - reported
    # nothing vanishes without a count: the records the killed daemon left unread in its
    # socket buffer were sent again (negative: counted lost, yet routed in that instant)
    assert -100 <= unaccounted <= 0
    figures("sigkill", sent=total, routed=len(got), routed_twice=twice, resent=client_resent,
            recovered_in_dump=len(recovered), reported_dropped=reported,
            unaccounted=unaccounted, routed_before_kill=len(before_kill))


def test_records_a_killed_daemon_never_read_are_sent_again(tmp_path):
    """The daemon is stopped (SIGSTOP) while a client writes, so records pile up unread in its
    socket buffer, then killed: the client sends those again to the next daemon, first, and
    every record arrives; none is dropped, none vanishes."""
    total = 4000
    text, _before, dropped, resent = kill_under_a_stream(
        tmp_path, total=total, hold=10000, under_way=500, unread=True)
    routed, dumps = split_dumps(text)
    got = seqs(routed)
    first_seen = in_order(got)
    assert dropped == 0 and "dropped while the daemon was unreachable" not in text
    assert resent > 0, "records were left unread in the killed daemon's socket buffer"
    assert set(got) | set(seqs(dumps[0])) == set(range(total)), "every record arrived"
    figures("sigkill unread", sent=total, resent=resent, routed=len(got),
            routed_twice=len(got) - len(first_seen), recovered_in_dump=len(seqs(dumps[0])))


# -- a full disk -------------------------------------------------------------------------
@pytest.fixture
def small_tmpfs():
    """A 2 MiB tmpfs (root only), unmounted afterwards whatever happens."""
    if os.geteuid() != 0:
        require_real("mounting a tmpfs needs root")
    path = tempfile.mkdtemp(prefix="vlfull.", dir="/tmp")
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m,mode=0755", "tmpfs", path],
                   check=True)
    try:
        yield Path(path)
    finally:
        if subprocess.run(["umount", path]).returncode != 0:
            subprocess.run(["umount", "-l", path])
        os.rmdir(path)


def send_seqs(d, first, last, pad=150):
    lines = "".join(f"seq {i} {'p' * pad}\n" for i in range(first, last))
    run = d.virlog("-p", "error", "-s", "fill", input=lines)
    assert run.returncode == 0, run.stderr


def test_a_full_disk_is_counted_reported_bounded_and_survived(tmp_path, small_tmpfs):
    """Other outputs get everything; the full one drops the oldest beyond its backlog, counts
    it, is reported once per interval, and writes again once space is freed."""
    full, other = small_tmpfs / "full.log", tmp_path / "other.log"
    filler = small_tmpfs / "filler"
    filler.write_bytes(b"\0" * (1800 * 1024))
    spec = f"1:file:{full}"
    d = Daemon(tmp_path, outputs=f"{spec} 1:file:{other}")
    try:
        send_seqs(d, 0, 2000)                        # fills the disk
        first = output_stats(d, spec)
        assert first["failed"] >= 1 and first["last_error"] == \
            "[Errno 28] No space left on device"
        rss_before = rss_kb(d.pid)
        send_seqs(d, 2000, 20000)                    # ~3 MB more while full
        rss_growth = rss_kb(d.pid) - rss_before
        while_full = output_stats(d, spec)
        assert while_full["dropped"] > 0
        assert rss_growth < 16 * 1024, f"daemon grew by {rss_growth} kB while the disk was full"
        filler.unlink()                              # the administrator frees space
        d.virlog("-p", "error", "-s", "fill", "after space was freed")
        read_until(full, "after space was freed")
        read_until(other, f"output '{spec}' works again (")
        after = output_stats(d, spec)
        assert d.proc.poll() is None
    finally:
        assert d.stop() == 0
    other_text = other.read_text()
    assert seqs(other_text.splitlines()) == list(range(20000))
    reports = re.findall(rf"output '{re.escape(spec)}' failed: \[Errno 28\] No space left on "
                         rf"device \((\d+) failures? so far\)", other_text)
    assert len(reports) == 1            # at most one per 10 s, and the test takes less
    assert re.findall(rf"output '{re.escape(spec)}' works again \((\d+) failures in all\)",
                      other_text) == [str(after["failed"])]
    kept = seqs(full.read_text().splitlines())
    assert kept == sorted(set(kept)) and kept[-1] == 19999, "in order, nothing twice"
    assert 20000 - len(kept) == after["dropped"], "every line missing is counted as dropped"
    figures("full disk", sent=20000, other_output=len(seqs(other_text.splitlines())),
            full_output_kept=len(kept), counted_dropped=after["dropped"],
            failures=after["failed"], reports=len(reports), rss_growth_kb=rss_growth)


# -- the file changes under the daemon ---------------------------------------------------
def test_a_file_replaced_or_deleted_under_the_daemon_is_reopened_within_a_second(tmp_path):
    """Another file renamed over the path: the stream moves to it, nothing lost; the path
    deleted: a new file appears; both noticed without a signal."""
    log = tmp_path / "a.log"
    d = Daemon(tmp_path, outputs=f"1:file:{log}")
    stream = python("""
        import sys, time
        from virlogd.client.client import Client
        from virlogd.core.record import Record
        client = Client(sys.argv[1])
        for i in range(600):
            client.send(Record(3, "swap", "seq %d" % i)); client.flush(); time.sleep(0.005)
        client.close()
    """, d.env, d.socket)
    try:
        read_until(log, "seq 50\n")
        old = tmp_path / "a.log.old"
        os.rename(log, old)
        replacement = tmp_path / "replacement"
        replacement.write_text("placed by the administrator\n")
        os.replace(replacement, log)
        started = time.monotonic()
        wait_for(lambda: seqs(log.read_text().splitlines()), 5, "records in the new file")
        replaced_after = time.monotonic() - started
        read_until(log, "seq 300\n")
        kept = tmp_path / "a.log.kept"          # a second name, to read what the deleted
        os.link(log, kept)                      # file received before the reopen
        log.unlink()
        started = time.monotonic()
        wait_for(log.exists, 5, "the deleted file to be recreated")
        recreated_after = time.monotonic() - started
        assert stream.wait(30) == 0
        read_until(log, "seq 599\n")
    finally:
        if stream.poll() is None:
            stream.kill()
            stream.wait()
        assert d.stop() == 0
    parts = [seqs(p.read_text().splitlines()) for p in (old, kept, log)]
    assert parts[0] and parts[1] and parts[2]
    assert parts[0] + parts[1] + parts[2] == list(range(600)), "nothing lost, nothing twice"
    assert kept.read_text().startswith("placed by the administrator\n")
    assert oct(log.stat().st_mode & 0o777) == "0o600"
    figures("file swapped", replaced_noticed_s=round(replaced_after, 2),
            recreated_s=round(recreated_after, 2), in_old_file=len(parts[0]),
            in_replacement=len(parts[1]), in_recreated=len(parts[2]))


# -- receivers restarted -----------------------------------------------------------------
def test_journald_and_rsyslog_restarted_under_a_running_daemon(
        tmp_path, real_journald, real_rsyslog_devlog, rsyslog_server):
    """While they are down the file gets everything and the failures are counted and
    reported; once they are back, each gets records again without a daemon restart. The
    remote collector (an rsyslog too) gets everything: its output holds records while it is
    down and sends them, in order, when it is back."""
    other = tmp_path / "other.log"
    remote = f"1:remote:tcp://127.0.0.1:{rsyslog_server.port}"
    d = Daemon(tmp_path, outputs=f"1:journald 1:syslog:vfault {remote} 1:file:{other}")
    tag = f"outage{os.getpid()}"

    def send(word, count):
        lines = "".join(f"{tag} {word} seq {i}\n" for i in range(count))
        assert d.virlog("-p", "error", "-s", "outage", input=lines).returncode == 0

    def journal(word, count):
        entries = real_journald.query("LIBVIRT_SOURCE=outage", count=count, timeout=10)
        return [e for e in entries if f"{tag} {word} " in str(e.get("MESSAGE"))]

    def devlog(word, count):
        return [l for l in real_rsyslog_devlog.lines(count, timeout=10) if f"{tag} {word} " in l]

    try:
        send("before", 20)
        assert len(journal("before", 20)) == 20
        assert len(devlog("before", 20)) == 20
        real_journald.stop()
        real_rsyslog_devlog.stop()
        rsyslog_server.stop()
        send("during", 100)
        down = {o["output"]: o for o in stats(d)["outputs"]}
        real_journald.start()
        real_rsyslog_devlog.start()
        rsyslog_server.start()
        send("after", 20)
        read_until(other, f"{tag} after seq 19\n")
        assert len(journal("after", 20 + 20)) == 20
        assert len(devlog("after", 20 + 20)) == 20
        collected = [line for line in rsyslog_server.lines(140, timeout=20) if tag in line]
        journal_during = len(journal("during", 1))
        devlog_during = len(devlog("during", 1))
        assert d.proc.poll() is None
    finally:
        assert d.stop() == 0
    text = other.read_text()
    assert len(seqs(text.splitlines(), f"{tag} (?:before|during|after) seq")) == 140
    assert down["1:journald"]["failed"] + journal_during >= 100
    assert down["1:syslog:vfault"]["failed"] + devlog_during >= 100
    assert "output '1:journald' failed: cannot reach journald at /run/systemd/journal/socket" \
        in text
    assert "output '1:syslog:vfault' failed: cannot reach syslog at /dev/log" in text
    assert [re.search(r"(before|during|after) seq (\d+)", line).groups() for line in collected] \
        == [(word, str(i)) for word, n in (("before", 20), ("during", 100), ("after", 20))
            for i in range(n)]
    figures("receivers restarted", sent_during_outage=100, collector_got=len(collected),
            journald_failed=down["1:journald"]["failed"], journald_got_during=journal_during,
            syslog_failed=down["1:syslog:vfault"]["failed"], syslog_got_during=devlog_during,
            file_output=len(seqs(text.splitlines(), f"{tag} (?:before|during|after) seq")))


# -- a pipe nobody reads -----------------------------------------------------------------
def test_a_fifo_nobody_reads_never_blocks_ingestion_and_counts_what_it_drops(tmp_path):
    """With no reader the daemon still starts and serves; beyond the pipe and the backlog
    lines are dropped and counted; a reader that comes later gets the rest."""
    fifo, other = tmp_path / "fifo", tmp_path / "other.log"
    os.mkfifo(fifo)
    spec = f"1:file:{fifo}"
    d = Daemon(tmp_path, outputs=f"{spec} 1:file:{other}")
    reader = None
    try:
        rss_before = rss_kb(d.pid)
        started = time.monotonic()
        send_seqs(d, 0, 20000)                        # ~3.4 MB into a 64 kB pipe
        send_seconds = time.monotonic() - started
        rss_growth = rss_kb(d.pid) - rss_before
        blocked = output_stats(d, spec)
        assert blocked["dropped"] > 0
        assert blocked["last_error"].startswith(f"{fifo} is not being read: the pipe is full")
        assert rss_growth < 16 * 1024
        read_until(other, "seq 19999 ")
        reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
        received = bytearray()

        def caught_up():
            try:
                while True:
                    chunk = os.read(reader, 65536)
                    if not chunk:
                        break
                    received.extend(chunk)
            except BlockingIOError:
                pass
            return b"seq 19999 " in received
        wait_for(caught_up, 10, "the reader to get the backlog")
        final = output_stats(d, spec)
    finally:
        if reader is not None:
            os.close(reader)
        assert d.stop() == 0
    got = seqs(received.decode().splitlines())
    assert got == sorted(set(got)) and got[-1] == 19999
    assert len(got) + final["dropped"] == 20000, "every line is delivered or counted"
    assert len(seqs(other.read_text().splitlines())) == 20000
    figures("fifo", sent=20000, other_output=20000, read_from_fifo=len(got),
            counted_dropped=final["dropped"], failures=final["failed"],
            send_seconds=round(send_seconds, 2), rss_growth_kb=rss_growth)


# -- clients that stall ------------------------------------------------------------------
def test_stalled_and_trickling_clients_do_not_hold_up_others_or_the_shutdown(tmp_path):
    """A client stuck mid-frame, one sending a byte per second and one that dies mid-frame:
    others' records flow, the dead one is counted, and SIGTERM still ends in time."""
    from virlogd.protocol import wire
    log = tmp_path / "out.log"
    d = Daemon(tmp_path, outputs=f"1:file:{log}")
    frame = wire.encode_parts(3, "trickle", "trickled record", time=time.time())
    socks = []

    def connect():
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(d.socket)
        socks.append(sock)
        return sock

    try:
        stuck = connect()
        stuck.sendall(wire.HELLO + frame[:20])
        dead = connect()
        dead.sendall(wire.HELLO + frame[:30])
        dead.close()
        wait_for(lambda: stats(d)["server"]["truncated_frames"] == 1, 10,
                 "the dead client's frame to be counted")
        trickle = connect()
        trickle.sendall(wire.HELLO)
        for byte in frame:                       # a whole frame, one byte per 10 ms
            trickle.send(bytes([byte]))
            time.sleep(0.01)
        read_until(log, "trickled record")
        good = python("""
            import sys
            from virlogd.client.client import Client
            from virlogd.core.record import Record
            client = Client(sys.argv[1])
            for i in range(1000):
                client.send(Record(3, "good", "good seq %d" % i))
            client.close()
        """, d.env, d.socket)
        for byte in frame[:3]:                   # the next one, a byte per second
            trickle.send(bytes([byte]))
            time.sleep(1)
        assert good.wait(30) == 0
        read_until(log, "good seq 999\n")
        mid = stats(d)
        started = time.monotonic()
        status = d.stop()
        stop_seconds = time.monotonic() - started
    finally:
        for sock in socks:
            sock.close()
        d.stop()
    assert status == 0
    text = log.read_text()
    assert seqs(text.splitlines(), "good seq") == list(range(1000))
    assert mid["dropped"] == {"truncated frame": 1}
    assert mid["clients"] == 2
    pid = os.getpid()
    ended = re.findall(rf"connection from pid {pid} \(uid {os.getuid()}\) ended inside a frame: "
                       rf"(\d+) byte\(s\) of an incomplete frame discarded", text)
    assert sorted(map(int, ended)) == [3, 20, 30]
    figures("stalled clients", good_records=1000, stop_seconds=round(stop_seconds, 2),
            truncated_reported=len(ended))


def test_a_client_that_never_reads_its_answers_costs_the_daemon_nothing(tmp_path):
    """A version 2 client that ignores the daemon's answers fills its own receive buffer:
    the daemon skips answers it cannot write at once, never blocks and keeps no backlog; all
    of that client's records and everyone else's arrive."""
    from virlogd.protocol import wire
    log = tmp_path / "out.log"
    d = Daemon(tmp_path, outputs=f"1:file:{log}")
    total = 60000
    deaf = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    deaf.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)   # fills after a few answers
    try:
        deaf.connect(d.socket)
        deaf.sendall(wire.HELLO)
        for start in range(0, total, 20):      # many small writes: many answers
            deaf.sendall(b"".join(wire.encode_parts(3, "deaf", f"deaf seq {i}", time=1.0)
                                  for i in range(start, start + 20)))
        rss_during = rss_kb(d.pid)
        d.virlog("-p", "warning", "-s", "other", "other client")
        read_until(log, f"deaf seq {total - 1}\n", timeout=60)
        read_until(log, "other client")
        unread = len(deaf.recv(1 << 20, socket.MSG_DONTWAIT))
    finally:
        deaf.close()
        assert d.stop() == 0
    assert seqs(log.read_text().splitlines(), "deaf seq") == list(range(total))
    assert 0 < unread < total * 8 / 20, "answers were skipped, not queued"
    figures("deaf client", records=total, answer_bytes_waiting=unread, rss_kb=rss_during)
