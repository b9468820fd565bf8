"""The daemon's life: readiness, signals, dumps, crashes, recovery, detaching, activation."""
import os
import re
import signal
import socket
import subprocess
import time

import pytest

from daemonproc import VIRLOGD, Daemon, accepts, isolated_env, read_until, wait_for

START = "    ====== start of log =====\n"
END = "     ====== end of log =====\n"


def dumped(text, reason):
    """The records of the dump that follows *reason* in *text*."""
    head = f"{reason} dumping internal log buffer:\n\n{START}\n"
    assert head in text, text
    body = text.split(head, 1)[1].split(f"\n{END}", 1)[0]
    return [line.split(" : ")[-1] for line in body.splitlines()]


@pytest.fixture
def logfile(tmp_path):
    return tmp_path / "out.log"


def test_sigusr2_dumps_the_buffer_including_filtered_debug_and_keeps_running(tmp_path, logfile):
    """A debug record hidden by the filters appears in the SIGUSR2 dump."""
    d = Daemon(tmp_path, outputs=f"3:file:{logfile}")
    try:
        assert d.virlog("-p", "debug", "-s", "qemu.monitor", "hidden debug").returncode == 0
        assert d.virlog("-p", "error", "-s", "qemu.monitor", "visible error").returncode == 0
        read_until(logfile, "visible error")
        d.kill(signal.SIGUSR2)
        text = read_until(logfile, END)
        assert dumped(text, "Caught User-defined signal 2")[-2:] == ["hidden debug",
                                                                     "visible error"]
        assert "hidden debug" not in text.split("dumping internal log buffer")[0]
        assert d.virlog("-p", "error", "still alive").returncode == 0
        read_until(logfile, "still alive")
    finally:
        assert d.stop() == 0


def test_sighup_changes_nothing_and_is_noted_once(tmp_path, logfile):
    """SIGHUP neither stops nor reloads; one notice says a restart is needed."""
    conf = tmp_path / "virlogd.conf"
    conf.write_text(f'log_outputs = "3:file:{logfile}"\n')
    d = Daemon(tmp_path, ["-f", str(conf)])
    try:
        conf.write_text(f'log_outputs = "1:file:{logfile}"\n')   # would show debug if reloaded
        for _ in range(3):
            d.kill(signal.SIGHUP)
        d.virlog("-p", "debug", "debug after hup")
        d.virlog("-p", "warning", "warning after hup")
        text = read_until(logfile, "warning after hup")
        assert text.count("SIGHUP ignored: virlogd does not reload its configuration; "
                          "restart it to apply changes") == 1
        assert "debug after hup" not in text
        assert d.proc.poll() is None
    finally:
        assert d.stop() == 0


def test_sigterm_loses_nothing_already_sent(tmp_path, logfile):
    """Every record sent before SIGTERM is written; the exit status is 0."""
    d = Daemon(tmp_path, outputs=f"1:file:{logfile}")
    lines = "".join(f"record {i}\n" for i in range(5000))
    assert d.virlog("-p", "warning", "-s", "load", input=lines).returncode == 0
    assert d.stop(signal.SIGTERM) == 0
    text = logfile.read_text()
    got = [int(m) for m in re.findall(r"record (\d+)$", text, re.M)]
    assert got == list(range(5000))
    assert not os.path.exists(d.socket)


@pytest.mark.parametrize("how,reason,signum", [
    ("segv", "Fatal Python error: Segmentation fault", signal.SIGSEGV),
    ("abort", "Fatal Python error: Aborted", signal.SIGABRT),
])
def test_a_fatal_signal_kills_at_once_and_the_next_start_dumps_the_buffer(tmp_path, logfile,
                                                                          how, reason, signum):
    """A real SIGSEGV (or abort): faulthandler's traceback on stderr, death by that signal
    with no dump attempted in the handler (crash.py says why), and the next start dumps the
    crash-consistent ring file, marked as recovered."""
    env = isolated_env(tmp_path, VIRLOGD_TEST_HOOKS="1")
    d = Daemon(tmp_path, outputs=f"3:file:{logfile}", env=env)
    d.virlog("-p", "debug", "-s", "qemu", "the last debug words")
    d.virlog("-p", "debug", "-s", "virlogd.test.crash", how)
    assert d.proc.wait(10) == -signum
    assert reason in d.stderr()
    assert "dumping internal log buffer" not in logfile.read_text()
    d.stop()
    again = Daemon(tmp_path, outputs=f"3:file:{logfile}", env=env)
    try:
        text = read_until(logfile, END)
        head = ("Previous virlogd run ended without stopping cleanly; dumping recovered log "
                "buffer of a previous run:\n\n" + START + "\n")
        assert head in text, text
        body = text.split(head, 1)[1].split(f"\n{END}", 1)[0]
        records = [line.split(" : ")[-1] for line in body.splitlines()]
        # the crash record is routed (into the ring) before the hook crashes
        assert records[-2:] == ["the last debug words", how]
    finally:
        assert again.stop() == 0


@pytest.mark.parametrize("how", ["raise", "thread-raise"])
def test_an_uncaught_exception_in_any_thread_dumps_the_buffer(tmp_path, logfile, how):
    """An uncaught exception in the loop or another thread: dump, traceback, exit 70."""
    env = isolated_env(tmp_path, VIRLOGD_TEST_HOOKS="1")
    d = Daemon(tmp_path, outputs=f"3:file:{logfile}", env=env)
    d.virlog("-p", "debug", "-s", "qemu", "before the exception")
    d.virlog("-p", "debug", "-s", "virlogd.test.crash", how)
    assert d.proc.wait(10) == 70
    reason = {"raise": "Caught unexpected exception in the event loop (TestCrash: "
                       "test-triggered exception in the event loop)",
              "thread-raise": "Caught unexpected exception in thread test-crash (TestCrash: "
                              "test-triggered exception in a thread)"}[how]
    assert dumped(logfile.read_text(), reason)[-2:] == ["before the exception", how]
    assert "TestCrash" in d.stderr()
    d.stop()


def test_after_sigkill_the_next_start_dumps_the_recovered_buffer(tmp_path, logfile):
    """SIGKILL leaves the ring file; the next start dumps it, marked as recovered."""
    d = Daemon(tmp_path, outputs=f"3:file:{logfile}")
    d.virlog("-p", "debug", "-s", "qemu", "said just before dying")
    d.virlog("-p", "error", "-s", "qemu", "written to the file")
    read_until(logfile, "written to the file")
    assert d.stop(signal.SIGKILL) == -signal.SIGKILL
    again = Daemon(tmp_path, outputs=f"3:file:{logfile}")
    try:
        text = read_until(logfile, END)
        head = ("Previous virlogd run ended without stopping cleanly; dumping recovered log "
                "buffer of a previous run:\n\n")
        assert head + START in text
        assert "said just before dying" in text.split(head)[1]
    finally:
        assert again.stop() == 0
    # a clean stop leaves nothing to recover
    third = Daemon(tmp_path, outputs=f"3:file:{logfile}")
    third.stop()
    assert logfile.read_text().count("recovered log buffer") == 1


def test_ready_is_sent_only_once_the_socket_accepts(tmp_path):
    """READY=1 reaches NOTIFY_SOCKET, and at that moment the client socket accepts."""
    notify = tmp_path / "notify.sock"
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    receiver.bind(str(notify))
    receiver.settimeout(10)
    env = isolated_env(tmp_path, NOTIFY_SOCKET=str(notify))
    d = Daemon(tmp_path, outputs="3:stderr", env=env, wait=False)
    try:
        message = receiver.recv(4096).decode()
        accepting = accepts(d.socket)
        assert message.startswith("READY=1\n")
        assert f"MAINPID={d.pid}" in message
        assert accepting
    finally:
        receiver.close()
        assert d.stop() == 0


def test_sockets_passed_through_listen_fds_are_served(tmp_path, logfile):
    """With LISTEN_FDS/LISTEN_FDNAMES the daemon uses the given sockets, told apart by name."""
    client_path, admin_path = str(tmp_path / "act-sock"), str(tmp_path / "act-admin")
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    client.bind(client_path)
    client.listen()
    admin = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    admin.bind(admin_path)
    admin.listen()
    # the admin socket first, to show the names decide, not the order
    script = (f"import os; os.dup2({admin.fileno()}, 3); os.dup2({client.fileno()}, 4); "
              f"os.environ['LISTEN_PID'] = str(os.getpid()); "
              f"os.execv({VIRLOGD!r}, [{VIRLOGD!r}, '--log-outputs', '1:file:{logfile}', "
              f"'--socket', {client_path!r}, '--admin-socket', {admin_path!r}])")
    env = isolated_env(tmp_path, LISTEN_FDS="2", LISTEN_FDNAMES="virlogd-admin:virlogd")
    proc = subprocess.Popen(["python3", "-c", script], env=env, stdin=subprocess.DEVNULL,
                            pass_fds=(admin.fileno(), client.fileno()))
    client.close()
    admin.close()
    try:
        wait_for(lambda: accepts(client_path), what="the activated socket")
        from daemonproc import VIRLOG, ADMIN
        sent = subprocess.run([VIRLOG, "-S", client_path, "-p", "error", "through activation"], env=env,
                              capture_output=True, text=True, timeout=30)
        assert sent.returncode == 0, sent.stderr
        read_until(logfile, "through activation")
        level = subprocess.run([ADMIN, "-S", admin_path, "daemon-log-level"], env=env,
                               capture_output=True, text=True, timeout=30)
        assert level.stdout == " Logging level: 3\n"
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
    assert os.path.exists(client_path)    # activated sockets belong to systemd: not removed


def test_detach_writes_the_pid_file_and_a_second_instance_is_refused(tmp_path, logfile):
    """-d returns once the daemon is ready; a second -d exits 1 with a clear message."""
    env = isolated_env(tmp_path)
    pid_file = tmp_path / "virlogd.pid"
    sock = str(tmp_path / "s")
    cmd = [VIRLOGD, "-d", "-p", str(pid_file), "--socket", sock,
           "--admin-socket", str(tmp_path / "a"), "--log-outputs", f"1:file:{logfile}"]
    first = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=30,
                           stdin=subprocess.DEVNULL)
    assert (first.returncode, first.stderr) == (0, "")
    pid = int(pid_file.read_text())
    try:
        assert accepts(sock)
        assert os.getsid(pid) != os.getsid(0)     # detached: a session of its own
        ppid = int(open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[1])
        assert ppid != os.getpid()                # not our child: it was double-forked
        second = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=30,
                                stdin=subprocess.DEVNULL)
        assert second.returncode == 1
        assert second.stderr == (f"virlogd: error: another virlogd is running (pid {pid}, "
                                 f"pid file {pid_file})\n")
    finally:
        os.kill(pid, signal.SIGTERM)
        wait_for(lambda: not os.path.exists(f"/proc/{pid}"), what="the daemon to exit")
    assert not pid_file.exists()


def test_a_stale_pid_file_does_not_block_a_start(tmp_path, logfile):
    """A pid file left by a killed run is replaced."""
    env = isolated_env(tmp_path)
    pid_file = tmp_path / "virlogd.pid"
    pid_file.write_text("999999\n")
    cmd = [VIRLOGD, "-d", "-p", str(pid_file), "--socket", str(tmp_path / "s"),
           "--admin-socket", str(tmp_path / "a"), "--log-outputs", f"1:file:{logfile}"]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=30,
                            stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stderr
    pid = int(pid_file.read_text())
    assert pid != 999999
    os.kill(pid, signal.SIGTERM)
    wait_for(lambda: not os.path.exists(f"/proc/{pid}"), what="the daemon to exit")


def test_a_second_daemon_on_the_same_socket_is_refused(tmp_path):
    """Without pid files, the live socket itself refuses a second daemon."""
    d = Daemon(tmp_path, outputs="3:stderr")
    try:
        second = subprocess.run([VIRLOGD, "--socket", d.socket, "--admin-socket",
                                 str(tmp_path / "other-admin")], env=d.env,
                                capture_output=True, text=True, timeout=30,
                                stdin=subprocess.DEVNULL)
        assert second.returncode == 1
        assert second.stderr == (f"virlogd: error: cannot listen on {d.socket}: another "
                                 f"virlogd is already listening on {d.socket}\n")
    finally:
        assert d.stop() == 0


def test_the_installed_systemd_units_pass_systemd_analyze_verify(tmp_path):
    """scripts/install.sh's units verify with empty stderr, ExecStart on this checkout."""
    root = os.path.join(os.path.dirname(__file__), "..", "..")
    done = subprocess.run(["bash", "scripts/install.sh"], cwd=root, capture_output=True,
                          text=True, timeout=120, env=dict(os.environ, DESTDIR=str(tmp_path)))
    assert done.returncode == 0, done.stderr
    units = tmp_path / "etc" / "systemd" / "system"
    result = subprocess.run(["systemd-analyze", "verify", "--man=no", "--generators=no",
                             "virlogd.service", "virlogd.socket", "virlogd-admin.socket"],
                            cwd=units, capture_output=True, text=True, timeout=60)
    assert (result.returncode, result.stderr) == (0, "")
    service = (units / "virlogd.service").read_text()
    assert "Type=notify" in service
    assert f"ExecStart={os.path.realpath(VIRLOGD)}" in service or \
        f"ExecStart={os.path.abspath(os.path.join(root, '.venv/bin/virlogd'))}" in service
    assert (tmp_path / "etc" / "virlogd.conf").read_text() == \
        open(os.path.join(root, "etc", "virlogd.conf")).read()
