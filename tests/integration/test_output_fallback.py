"""Nothing silent where the daemon writes: the default file's directories, an output that
cannot be opened, the fallback when none takes a record, and an output into itself.

Real ``virlogd`` processes, detached with ``-d`` as an administrator starts them. Where the
daemon's own paths are the point (``/var/log/virlogd/``, ``/run/virlogd/``, no journald, no
``/dev/log``) it runs in a private mount namespace (``unshare -m``) where a directory of the
test is bind-mounted over the real path: the host's ``/var/log`` and ``/run`` are never
touched, and the test reads what the daemon wrote from its own directory.
"""
from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import time
from pathlib import Path
from typing import List, Sequence

import pytest

from conftest import require_real
from daemonproc import (ADMIN, VIRLOG, VIRLOGD, Daemon, as_other_user_cmd, isolated_env,
                        other_user, read_until, wait_for)
from virlogd.core import defaults

# Sets up the namespace from its arguments, up to "--", then runs the command after it:
#   bind SRC DST    SRC mounted over DST
#   robind SRC DST  the same, read-only
#   nojournal       an empty tmpfs over /run/systemd (no journald, no /dev/log link target)
#   nodevlog FILE   FILE mounted over /dev/log if it is still there: nothing listens on it
NAMESPACE = r"""
set -e
mount --make-rprivate /
while [ "$1" != "--" ]; do
    case "$1" in
        bind) mount --bind "$2" "$3"; shift 3 ;;
        robind) mount --bind "$2" "$3"; mount -o remount,bind,ro "$3"; shift 3 ;;
        nojournal) if [ -d /run/systemd ]; then mount -t tmpfs tmpfs /run/systemd; fi; shift ;;
        nodevlog) if [ -e /dev/log ]; then mount --bind "$2" /dev/log; fi; shift 2 ;;
        *) echo "namespace: unknown step $1" >&2; exit 2 ;;
    esac
done
shift
exec "$@"
"""


def need_namespace() -> None:
    if os.geteuid() != 0 or not shutil.which("unshare"):
        require_real("a private mount namespace needs root and unshare(1)")


def in_namespace(cmd: Sequence[str], *steps: str) -> List[str]:
    return ["unshare", "-m", "sh", "-c", NAMESPACE, "namespace", *steps, "--", *cmd]



class Detached:
    """A ``virlogd -d`` started by *cmd*; ``launch`` is what the command the user typed
    printed and returned."""

    def __init__(self, cmd: List[str], env: dict, pid_file: Path, socket_path: str,
                 admin_path: str) -> None:
        self.socket, self.admin_socket, self.env = socket_path, admin_path, env
        self.launch = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60,
                                     stdin=subprocess.DEVNULL)
        assert self.launch.returncode == 0, self.launch.stderr
        self.pid = int(pid_file.read_text())

    def virlog(self, *args: str) -> None:
        done = subprocess.run([VIRLOG, "-S", self.socket, *args], env=self.env,
                              capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, done.stderr

    def stats(self) -> str:
        done = subprocess.run([ADMIN, "-S", self.admin_socket, "stats"], env=self.env,
                              capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, done.stderr
        return done.stdout

    def stop(self) -> None:
        try:
            os.kill(self.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        wait_for(lambda: not os.path.exists(f"/proc/{self.pid}"), 15, "the daemon to exit")


def daemon_args(d: Path, *more: str) -> List[str]:
    return [VIRLOGD, "-d", "-p", str(d / "virlogd.pid"), "--socket", str(d / "s"),
            "--admin-socket", str(d / "a"), *more]


def detached_as_root(tmp_path: Path, varlog: Path, *more: str, steps=()) -> Detached:
    """``virlogd -d`` as root with *varlog* as its /var/log and no journald."""
    d = tmp_path / "d"
    d.mkdir()
    cmd = in_namespace(daemon_args(d, *more), "bind", str(varlog), "/var/log", "nojournal",
                       *steps)
    return Detached(cmd, isolated_env(tmp_path), d / "virlogd.pid", str(d / "s"), str(d / "a"))


def mode(path) -> str:
    return oct(stat.S_IMODE(os.stat(path).st_mode))


def stats_row(stats: str, output: str) -> List[str]:
    for line in stats.splitlines():
        if line.split()[:1] == [output]:
            return line.split()
    raise AssertionError(f"no row for {output} in:\n{stats}")


# -- 1. the default output is created -------------------------------------------------------
def test_make_log_dir_creates_each_missing_directory_with_the_mode_of_its_owner(tmp_path):
    """0755 for root (like /var/log), 0700 for a user (~/.cache), whatever the umask."""
    old = os.umask(0o077)
    try:
        defaults.make_log_dir(str(tmp_path / "root" / "virlogd" / "virlogd.log"), uid=0)
        defaults.make_log_dir(str(tmp_path / "user" / "cache" / "virlogd" / "x.log"), uid=1000)
    finally:
        os.umask(old)
    assert mode(tmp_path / "root") == mode(tmp_path / "root" / "virlogd") == "0o755"
    assert mode(tmp_path / "user") == "0o700"
    assert mode(tmp_path / "user" / "cache" / "virlogd") == "0o700"
    assert defaults.log_file(uid=0) == "/var/log/virlogd/virlogd.log"


def test_a_detached_root_daemon_creates_var_log_virlogd(tmp_path):
    """No log_outputs, no journald, detached, as root: /var/log/virlogd/ is made (0755) and
    the records are in /var/log/virlogd/virlogd.log."""
    need_namespace()
    varlog = tmp_path / "varlog"
    varlog.mkdir()
    daemon = detached_as_root(tmp_path, varlog)
    try:
        assert daemon.launch.stderr == ""
        daemon.virlog("-p", "warning", "to the default file")
        text = read_until(varlog / "virlogd" / "virlogd.log", "to the default file")
        assert mode(varlog / "virlogd") == "0o755"
        assert mode(varlog / "virlogd" / "virlogd.log") == "0o600"
        assert re.search(r": \d+: warning : virlog : to the default file\n", text), text
    finally:
        daemon.stop()


def test_a_detached_user_daemon_creates_its_cache_directory(open_dir):
    """A user's detached daemon, no outputs, no journald, $XDG_CACHE_HOME missing: it and
    virlogd/ under it are made 0700, and the records are there."""
    need_namespace()
    user = other_user()
    home = open_dir / "home"
    (home / "run").mkdir(parents=True)
    shutil.chown(home, user.pw_uid, user.pw_gid)
    shutil.chown(home / "run", user.pw_uid, user.pw_gid)
    os.chmod(home / "run", 0o700)
    cache = home / "cache"              # does not exist yet
    env = isolated_env(open_dir, HOME=str(home), XDG_RUNTIME_DIR=str(home / "run"),
                       XDG_CACHE_HOME=str(cache), XDG_CONFIG_HOME=str(home / "config"))
    cmd = in_namespace(as_other_user_cmd(user, daemon_args(home / "run")), "nojournal")
    daemon = Detached(cmd, env, home / "run" / "virlogd.pid", str(home / "run" / "s"),
                      str(home / "run" / "a"))
    try:
        assert daemon.launch.stderr == ""
        daemon.virlog("-p", "error", "to the cache")
        read_until(cache / "virlogd" / "virlogd.log", ": error : virlog : to the cache\n")
        assert mode(cache) == mode(cache / "virlogd") == "0o700"
        assert os.stat(cache / "virlogd").st_uid == user.pw_uid
    finally:
        daemon.stop()


# -- 2. an output that cannot be opened is never silent ------------------------------------
LONG = "/tmp/" + "x" * 110


@pytest.mark.parametrize("output, reason", [
    ("1:file:/nonexistent/virlogd.log", "the directory /nonexistent does not exist"),
    ("1:file:/tmp", "it is a directory"),
    ("1:file:/proc/version", "it does not accept writes (Input/output error)"),
    (f"1:virlogd:{LONG}",
     f"the socket path {LONG} is too long for AF_UNIX (115 bytes, at most 107)"),
])
def test_check_config_reports_an_output_that_cannot_be_opened(tmp_path, output, reason):
    """-t: the output, why, what the daemon would do instead; exit 1."""
    done = subprocess.run([VIRLOGD, "-t", "--log-outputs", output], env=isolated_env(tmp_path),
                          capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
    instead = defaults.default_output(3, detached=False, tty=False)   # journald if it runs
    assert done.returncode == 1
    assert done.stderr == (f"virlogd: warning: cannot open output '{output}': {reason}; "
                           f"ignored\n"
                           f"virlogd: warning: no output could be opened; records go to "
                           f"'{instead}' instead\n")


def test_check_config_reports_a_socket_path_too_long_for_af_unix(tmp_path):
    done = subprocess.run([VIRLOGD, "-t", "--socket", LONG, "--log-outputs", "3:stderr"],
                          env=isolated_env(tmp_path), capture_output=True, text=True,
                          timeout=30, stdin=subprocess.DEVNULL)
    assert done.returncode == 1
    assert done.stderr == (f"virlogd: warning: socket_path: the socket path {LONG} is too "
                           f"long for AF_UNIX (115 bytes, at most 107)\n")


def test_check_config_accepts_outputs_that_open(tmp_path):
    done = subprocess.run([VIRLOGD, "-t", "--log-outputs", f"1:file:{tmp_path}/new.log"],
                          env=isolated_env(tmp_path), capture_output=True, text=True,
                          timeout=30, stdin=subprocess.DEVNULL)
    assert (done.returncode, done.stderr) == (0, "")
    assert not (tmp_path / "new.log").exists()      # -t creates nothing


def test_a_detached_daemon_warns_before_detaching_and_writes_to_the_default_file(tmp_path):
    """A file output in a missing directory: the command that detaches says so, and the
    records go to the default file instead (where the warning is logged too)."""
    need_namespace()
    varlog = tmp_path / "varlog"
    varlog.mkdir()
    daemon = detached_as_root(tmp_path, varlog, "--log-outputs", "1:file:/nonexistent/x.log")
    try:
        assert daemon.launch.stderr == (
            "virlogd: warning: cannot open output '1:file:/nonexistent/x.log': the directory "
            "/nonexistent does not exist; ignored\n"
            "virlogd: warning: no output could be opened; records go to "
            "'3:file:/var/log/virlogd/virlogd.log' instead\n")
        daemon.virlog("-p", "error", "not lost")
        log = varlog / "virlogd" / "virlogd.log"
        text = read_until(log, ": error : virlog : not lost\n")
        assert (": warning : cannot open output '1:file:/nonexistent/x.log': the directory "
                "/nonexistent does not exist; ignored\n") in text
        row = stats_row(daemon.stats(), "3:file:/var/log/virlogd/virlogd.log")
        assert int(row[1]) >= 2          # the warnings and the record (headers not counted)
    finally:
        daemon.stop()


def unreachable_syslog(stderr: str) -> str:
    """The reason the daemon gives for the missing /dev/log (no file, or nobody there)."""
    found = re.search(r"cannot reach syslog at /dev/log: (No such file or directory|"
                      r"Connection refused)", stderr)
    assert found, stderr
    return found.group(0)


def test_syslog_without_dev_log_falls_back_to_the_default_file_and_says_so(tmp_path):
    """x:syslog with nothing at /dev/log, detached: warned before detaching; every record
    goes to the default file, and stats shows where."""
    need_namespace()
    varlog = tmp_path / "varlog"
    varlog.mkdir()
    empty = tmp_path / "empty"
    empty.write_text("")
    daemon = detached_as_root(tmp_path, varlog, "--log-outputs", "1:syslog:virlogd",
                              steps=("nodevlog", str(empty)))
    try:
        why = unreachable_syslog(daemon.launch.stderr)
        assert daemon.launch.stderr == (
            f"virlogd: warning: output '1:syslog:virlogd' cannot deliver now: {why}; kept, "
            f"and its records go to the fallback output until it works\n")
        for i in range(3):
            daemon.virlog("-p", "warning", f"record {i}")
        log = varlog / "virlogd" / "virlogd.log"
        text = read_until(log, ": warning : virlog : record 2\n")
        assert (f": error : no output took a record (output '1:syslog:virlogd' failed: {why}); "
                f"records that no output takes go to '1:file:/var/log/virlogd/virlogd.log' "
                f"until one works\n") in text
        assert [line.rsplit(" : ", 1)[1] for line in text.splitlines()
                if " : virlog : " in line] == ["record 0", "record 1", "record 2"]
        # the start warning and the three records, written by the fallback; none dropped
        fallback = re.compile(r"^ 1:file:/var/log/virlogd/virlogd\.log \(fallback\) +4 +0 +0  -$",
                              re.M)
        stats = wait_for(lambda: (lambda s: s if fallback.search(s) else None)(daemon.stats()),
                         10, f"the fallback's row in {daemon.stats()}")
        assert re.search(r"^ Records dropped: +0$", stats, re.M), stats
        assert re.search(rf"^ 1:syslog:virlogd +0 +\d+ +0  {re.escape(why)}$", stats, re.M), \
            stats
    finally:
        daemon.stop()


def test_records_no_output_and_no_fallback_took_are_counted_as_dropped(tmp_path):
    """x:syslog with no /dev/log and a read-only /var/log: nowhere to write. stats counts
    every record under "no output took it"."""
    need_namespace()
    varlog = tmp_path / "varlog"
    varlog.mkdir()
    empty = tmp_path / "empty"
    empty.write_text("")
    d = tmp_path / "d"
    d.mkdir()
    cmd = in_namespace(daemon_args(d, "--log-outputs", "1:syslog:virlogd"), "robind",
                       str(varlog), "/var/log", "nojournal", "nodevlog", str(empty))
    daemon = Detached(cmd, isolated_env(tmp_path), d / "virlogd.pid", str(d / "s"),
                      str(d / "a"))
    try:
        for i in range(5):
            daemon.virlog("-p", "error", f"nowhere {i}")
        stats = wait_for(lambda: (lambda s: s if "no output took it" in s else None)(
            daemon.stats()), 10, "the drop to be counted")
        dropped = int(re.search(r"^ Records dropped: +(\d+)$", stats, re.M).group(1))
        reason = int(re.search(r"^   no output took it: +(\d+)$", stats, re.M).group(1))
        assert dropped == reason >= 5, stats
    finally:
        daemon.stop()
    assert list(varlog.iterdir()) == []


def test_with_not_even_the_default_output_every_record_is_counted_as_dropped(tmp_path):
    """No outputs configured, no journald, detached, /var/log read-only: said before
    detaching, and each record counted under "no output took it"."""
    need_namespace()
    varlog = tmp_path / "varlog"
    varlog.mkdir()
    d = tmp_path / "d"
    d.mkdir()
    cmd = in_namespace(daemon_args(d), "robind", str(varlog), "/var/log", "nojournal")
    daemon = Detached(cmd, isolated_env(tmp_path), d / "virlogd.pid", str(d / "s"),
                      str(d / "a"))
    try:
        assert daemon.launch.stderr == (
            "virlogd: warning: cannot open output '3:file:/var/log/virlogd/virlogd.log': "
            "cannot create the directory /var/log/virlogd: Read-only file system; ignored\n"
            "virlogd: warning: no output could be opened, nor the default output: records "
            "will be counted as dropped\n")
        for i in range(3):
            daemon.virlog("-p", "error", f"nowhere {i}")
        stats = wait_for(lambda: (lambda s: s if re.search(
            r"^   no output took it: +5$", s, re.M) else None)(daemon.stats()), 10,
            "3 records and the 2 start warnings counted as dropped")
        assert re.search(r"^ Records dropped: +5$", stats, re.M), stats
        assert re.search(r"^ \(no output\) +0 +5 +0  no output could be opened, nor the "
                         r"default output$", stats, re.M), stats
    finally:
        daemon.stop()


def test_in_the_foreground_records_no_output_took_go_to_stderr(tmp_path):
    """x:syslog with nothing at /dev/log, foreground: the warning and the records on stderr."""
    need_namespace()
    empty = tmp_path / "empty"
    empty.write_text("")
    sock, admin = str(tmp_path / "s"), str(tmp_path / "a")
    env = isolated_env(tmp_path)
    err = tmp_path / "stderr"
    with open(err, "wb") as f:
        proc = subprocess.Popen(in_namespace([VIRLOGD, "--socket", sock, "--admin-socket",
                                              admin, "--log-outputs", "1:syslog:virlogd"],
                                             "nojournal", "nodevlog", str(empty)),
                                env=env, stdin=subprocess.DEVNULL, stderr=f)
    try:
        wait_for(lambda: os.path.exists(sock) or proc.poll() is not None, 10, "start")
        done = subprocess.run([VIRLOG, "-S", sock, "-p", "error", "on stderr"], env=env,
                              capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, done.stderr
        text = read_until(err, ": error : virlog : on stderr\n")
        why = unreachable_syslog(text)
        assert (f"no output took a record (output '1:syslog:virlogd' failed: {why}); records "
                f"that no output takes go to '1:stderr' until one works\n") in text
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0


# -- 5. no self-loop ------------------------------------------------------------------------
def test_an_output_to_the_daemons_own_socket_is_refused(tmp_path):
    """x:virlogd naming our own socket through another directory (a symlink to ours):
    refused with a warning; one record sent is written once, not forever."""
    (tmp_path / "own").mkdir()
    (tmp_path / "alias").symlink_to(tmp_path / "own")
    other_name = tmp_path / "alias" / "virlogd-sock"
    d = Daemon(tmp_path, outputs=f"1:virlogd:{other_name} 1:stderr", name="own")
    try:
        assert (f"virlogd: warning: cannot open output '1:virlogd:{other_name}': {other_name} "
                f"is this daemon's own socket: every record would come back to it, forever; "
                f"ignored\n") in read_until(d.stderr_path, "ignored\n")
        done = d.virlog("-p", "error", "only once")
        assert done.returncode == 0, done.stderr
        read_until(d.stderr_path, ": error : virlog : only once\n")
        time.sleep(1.0)
        assert d.stderr().count("only once") == 1
        stats = d.admin("stats").stdout
        assert re.search(r"^ Records received: +1$", stats, re.M), stats
    finally:
        assert d.stop() == 0


def test_check_config_refuses_an_output_to_its_own_socket(tmp_path):
    sock = str(tmp_path / "sock")
    done = subprocess.run([VIRLOGD, "-t", "--socket", sock, "--log-outputs",
                           f"1:virlogd:{sock} 1:stderr"], env=isolated_env(tmp_path),
                          capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
    assert done.returncode == 1
    assert done.stderr == (f"virlogd: warning: cannot open output '1:virlogd:{sock}': {sock} "
                           f"is this daemon's own socket: every record would come back to it, "
                           f"forever; ignored\n")


def test_check_config_refuses_a_syslog_output_into_the_daemons_own_syslog_input(tmp_path):
    """syslog_socket_path = "/dev/log" (the daemon replaces the syslog daemon) and an
    x:syslog output: records would come back through /dev/log forever."""
    conf = tmp_path / "virlogd.conf"
    conf.write_text('syslog_socket_path = "/dev/log"\nlog_outputs = "1:syslog:virlogd 1:stderr"\n')
    done = subprocess.run([VIRLOGD, "-t", "-f", str(conf)], env=isolated_env(tmp_path),
                          capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
    assert done.returncode == 1
    assert done.stderr == ("virlogd: warning: cannot open output '1:syslog:virlogd': /dev/log is "
                           "this daemon's own syslog input: every record would come back to "
                           "it, forever; ignored\n")


def test_virlogd_admin_refuses_an_output_to_the_daemons_own_socket(tmp_path):
    """All-or-nothing: the whole change is refused, the outputs stay as they were."""
    d = Daemon(tmp_path, outputs="1:stderr")
    try:
        link = tmp_path / "alias"
        os.link(d.socket, link)         # a hard link: another path, the same socket
        refused = d.admin("daemon-log-outputs", f"1:stderr 1:virlogd:{link}")
        assert refused.returncode == 1
        assert refused.stderr.endswith(
            f"cannot open output '1:virlogd:{link}': {link} is this daemon's own socket: "
            f"every record would come back to it, forever\n"), refused.stderr
        assert d.admin("daemon-log-outputs").stdout == " Logging outputs: 1:stderr\n"
    finally:
        assert d.stop() == 0


def test_an_exported_libvirt_log_outputs_virlogd_does_not_make_the_daemon_feed_itself(tmp_path):
    """LIBVIRT_LOG_OUTPUTS=1:virlogd exported host-wide, then the system daemon started on
    its default socket (/run/virlogd/virlogd-sock, here a directory of the test): the output
    is refused, records go to stderr once each."""
    need_namespace()
    run = tmp_path / "run"
    run.mkdir()
    env = isolated_env(tmp_path, LIBVIRT_LOG_OUTPUTS="1:virlogd")
    err = tmp_path / "stderr"
    with open(err, "wb") as f:
        proc = subprocess.Popen(in_namespace([VIRLOGD], "bind", str(run), "/run"), env=env,
                                stdin=subprocess.DEVNULL, stderr=f)
    sock = run / "virlogd" / "virlogd-sock"
    try:
        # the warning comes once the socket is bound: wait for it, not for the socket
        text = read_until(err, "instead\n")
        assert proc.poll() is None, text
        assert text.startswith(
            "virlogd: warning: cannot open output '1:virlogd': /run/virlogd/virlogd-sock is "
            "this daemon's own socket: every record would come back to it, forever; "
            "ignored\n"
            "virlogd: warning: no output could be opened; records go to '3:stderr' "
            "instead\n"), text
        done = subprocess.run([VIRLOG, "-S", str(sock), "-p", "error", "just once"], env=env,
                              capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, done.stderr
        read_until(err, ": error : virlog : just once\n")
        time.sleep(1.0)
        assert err.read_text().count("just once") == 1
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
