"""virlogd-admin follow against a real daemon: live, at any level, several at once, never
in the way of the daemon (a stuck follower), told what it missed, admin-only."""
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

from daemonproc import ADMIN, Daemon, as_other_user_cmd, other_user, wait_for

N_LOAD = 100_000

# One client of the library sends N records as fast as it can, then waits for nothing.
LOAD = r"""
import sys, time
from virlogd.client.client import Client
from virlogd.protocol import wire
sock, n, tag = sys.argv[1], int(sys.argv[2]), sys.argv[3]
client = Client(sock)
encode = wire.encode_parts
for i in range(n):
    client.send_frame(encode(3, "load.one", "%s record %d of the load" % (tag, i),
                             time=time.time()))
client.close()
"""


def _interactive_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class Follower:
    """A real ``virlogd-admin follow``; its standard output is read by a thread into
    ``lines`` (unless *read* is False: then nobody reads it and it backs up)."""

    def __init__(self, d: Daemon, *args: str, read: bool = True, stderr=None) -> None:
        self.proc = subprocess.Popen([ADMIN, "-S", d.admin_socket, "follow", *args], env=d.env,
                                     stdout=subprocess.PIPE,
                                     stderr=stderr if stderr is not None else subprocess.PIPE,
                                     # as from a terminal: a suite started with SIGINT ignored
                                     # (nohup, a background job) would pass that on
                                     preexec_fn=_interactive_sigint)
        self.lines = []
        if read:
            self.start_reading()

    def start_reading(self) -> None:
        def pump():
            for raw in self.proc.stdout:
                self.lines.append(raw.decode("utf-8", "replace"))
        self.reader = threading.Thread(target=pump, daemon=True)
        self.reader.start()

    def text(self) -> str:
        return "".join(self.lines)

    def interrupt(self):
        """Ctrl-C: what a user does to end it; returns (status, stderr)."""
        self.proc.send_signal(signal.SIGINT)
        status = self.proc.wait(10)
        self.reader.join(10)
        err = self.proc.stderr.read().decode() if self.proc.stderr else ""
        return status, err


def stats(d: Daemon) -> dict:
    done = d.admin("stats", "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def followers(d: Daemon) -> int:
    return stats(d)["followers"]["connected"]


def test_two_followers_see_the_same_records_live_debug_no_output_keeps_included(tmp_path):
    """Two at once, one with --filters and --json: each record as it arrives, including a
    debug record the file output (level 3) never keeps; Ctrl-C ends them quietly."""
    log = tmp_path / "out.log"
    d = Daemon(tmp_path, outputs=f"3:file:{log}")
    everything = json_qemu = None
    try:
        everything = Follower(d)
        json_qemu = Follower(d, "--filters", "1:qemu 3:remote", "--json")
        wait_for(lambda: followers(d) == 2, what="two followers")
        assert d.virlog("-p", "debug", "-s", "qemu.monitor", "a debug record").returncode == 0
        wait_for(lambda: "a debug record" in everything.text(), what="the debug record")
        wait_for(lambda: "a debug record" in json_qemu.text(), what="the debug record (json)")
        d.virlog("-p", "info", "-s", "remote.rpc", "remote info")       # below 3:remote
        d.virlog("-p", "error", "-s", "remote.rpc", "remote error")
        wait_for(lambda: "remote error" in everything.text(), what="the error")
        wait_for(lambda: "remote error" in json_qemu.text(), what="the error (json)")
        assert "remote info" in everything.text()
        line = next(x for x in everything.lines if "a debug record" in x)
        assert line.endswith(": debug : qemu.monitor : a debug record\n"), line
        objects = [json.loads(x) for x in json_qemu.lines]
        assert [o["message"] for o in objects] == ["a debug record", "remote error"]
        first = objects[0]
        assert (first["priority"], first["source"], first["relayed"]) == (1, "qemu.monitor",
                                                                         True)
        assert set(first) == {"time", "priority", "source", "message", "func", "line", "file",
                              "fields", "stack", "pid", "uid", "gid", "ident", "relayed"}
        assert "a debug record" not in log.read_text()          # no output kept it
        assert everything.interrupt() == (0, "")
        assert json_qemu.interrupt() == (0, "")
        wait_for(lambda: followers(d) == 0, what="the followers to be gone")
    finally:
        for f in (everything, json_qemu):
            if f is not None and f.proc.poll() is None:
                f.proc.kill()
                f.proc.wait()
        assert d.stop() == 0


def test_a_bad_filter_is_refused_word_for_word(tmp_path):
    d = Daemon(tmp_path, outputs=f"3:file:{tmp_path / 'out.log'}")
    try:
        done = subprocess.run([ADMIN, "-S", d.admin_socket, "follow", "--filters", "1:qemu 9:x"],
                              env=d.env, capture_output=True, text=True, timeout=30)
        assert (done.returncode, done.stdout, done.stderr) == (
            1, "", "virlogd-admin: error: Invalid priority '9' for filter '9:x' in "
                   "\"1:qemu 9:x\"\n")
    finally:
        assert d.stop() == 0


def _load(d: Daemon, tag: str) -> float:
    """Seconds from the start of a load of N_LOAD records until the daemon routed them all."""
    before = stats(d)["received"]
    start = time.monotonic()
    client = subprocess.Popen([sys.executable, "-c", LOAD, d.socket, str(N_LOAD), tag],
                              env=d.env)
    wait_for(lambda: stats(d)["received"] >= before + N_LOAD, timeout=120,
             what="the load to be routed")
    took = time.monotonic() - start
    assert client.wait(60) == 0
    return took


def test_a_follower_that_never_reads_does_not_slow_the_load_and_learns_what_it_missed(
        tmp_path):
    """virlogd-admin follow whose output nobody reads stops reading the daemon: the daemon
    keeps going at its own pace, and once the follower reads it is told how many it missed."""
    log = tmp_path / "out.log"
    d = Daemon(tmp_path, outputs=f"3:file:{log}")
    errors = open(tmp_path / "follower.err", "wb")
    stuck = None
    try:
        alone = _load(d, "first")
        stuck = Follower(d, read=False, stderr=errors)
        wait_for(lambda: followers(d) == 1, what="the follower")
        stuck_times = [_load(d, "second"), _load(d, "third")]
        again = _load(d, "fourth")
        # a shared machine's noise: the better of two loads against the worse of two; a cost
        # the follower puts on every record shows in both
        with_stuck, baseline = min(stuck_times), max(alone, again)
        print(f"\nload of {N_LOAD}: alone {alone:.2f}s, {again:.2f}s; with a stuck follower "
              f"{stuck_times[0]:.2f}s, {stuck_times[1]:.2f}s")
        assert with_stuck < 1.5 * baseline, (alone, stuck_times, again)
        missed = stats(d)["followers"]["missed"]
        assert missed > N_LOAD           # most of two loads did not fit its queue
        stuck.start_reading()            # it reads at last
        text = wait_for(lambda: (tmp_path / "follower.err").read_text(), timeout=30,
                        what="the follower's notice")
        # one stall, one notice, once it has room again: all it missed, in one line
        assert text == f"virlogd-admin: {missed} records missed (follower too slow)\n"
        d.virlog("-p", "debug", "-s", "after", "live again")
        wait_for(lambda: "live again" in stuck.text(), timeout=30, what="records again")
        assert stuck.interrupt()[0] == 0
        assert log.read_text().count("record") >= 4 * N_LOAD      # nothing lost meanwhile
    finally:
        if stuck is not None and stuck.proc.poll() is None:
            stuck.proc.kill()
            stuck.proc.wait()
        errors.close()
        assert d.stop() == 0


def test_only_the_daemons_user_may_follow(tmp_path):
    """Another uid is refused (the admin socket's check), and gets no record."""
    # not under tmp_path: its parents are 0700, and another uid must reach the socket
    sockdir = tempfile.mkdtemp(prefix="virlogd-follow-test-")
    os.chmod(sockdir, 0o755)
    admin_socket = os.path.join(sockdir, "admin-sock")
    d = Daemon(tmp_path, ["--admin-socket", admin_socket],
               outputs=f"3:file:{tmp_path / 'out.log'}")
    d.admin_socket = admin_socket
    try:
        os.chmod(d.admin_socket, 0o666)          # even with the file's mode loosened
        user = other_user()
        done = subprocess.run(as_other_user_cmd(user, [ADMIN, "-S", d.admin_socket,
                                                       "follow"]),
                              env=d.env, capture_output=True, text=True, timeout=60, cwd="/")
        assert (done.returncode, done.stdout) == (1, "")
        assert done.stderr == (f"virlogd-admin: error: permission denied: uid {user.pw_uid} "
                               f"is not the daemon's uid {os.geteuid()}\n")
        assert followers(d) == 0
    finally:
        assert d.stop() == 0
        shutil.rmtree(sockdir, ignore_errors=True)


def test_the_daemon_stopping_ends_the_follow_with_a_clear_error(tmp_path):
    """Its daemon stops: the follower says so and exits 1 (no hang, no traceback)."""
    d = Daemon(tmp_path, outputs=f"3:file:{tmp_path / 'out.log'}")
    follower = Follower(d)
    try:
        wait_for(lambda: followers(d) == 1, what="the follower")
    finally:
        assert d.stop() == 0
    try:
        assert follower.proc.wait(10) == 1
        follower.reader.join(10)
        assert follower.proc.stderr.read().decode() == (
            f"virlogd-admin: error: virlogd at {d.admin_socket} ended the follow (it stopped, "
            f"or closed the connection)\n")
    finally:
        if follower.proc.poll() is None:
            follower.proc.kill()
            follower.proc.wait()
