"""Real clients to a real daemon: virlog, VirlogdHandler, the library's virlogd output."""
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import textwrap
import time

from daemonproc import Daemon, isolated_env, read_until, wait_for

LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}\+0000: (\d+): (\w+) : (.*)$")


def records(path):
    """(pid, level, rest) of every record line in *path*."""
    out = []
    for line in path.read_text(errors="replace").splitlines():
        found = LINE.match(line)
        if found:
            out.append((int(found.group(1)), found.group(2), found.group(3)))
    return out


def python(tmp_path, program, env):
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(program)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            stdin=subprocess.DEVNULL)


def test_virlog_handler_and_library_output_land_with_the_clients_real_pid(tmp_path):
    """Each way of sending reaches the file output under the sender's own pid."""
    log = tmp_path / "out.log"
    d = Daemon(tmp_path, outputs=f"1:file:{log}", args=["--log-level", "1"])
    try:
        shell = d.virlog("-p", "info", "-s", "shell", "from virlog")
        assert (shell.returncode, shell.stderr) == (0, "")
        program = f"""
            import logging, os, virlogd
            print(os.getpid(), flush=True)
            handler = virlogd.VirlogdHandler({d.socket!r})
            logger = logging.getLogger("app.handler")
            logger.addHandler(handler)
            logger.setLevel(logging.DEBUG)
            logger.warning("from the handler")
            handler.close()
            virlogd.configure(outputs="1:virlogd:{d.socket}")
            virlogd.getLogger("app.library").error("from the library")
        """
        proc = python(tmp_path, program, d.env)
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
        pid = int(out.split()[0])
        read_until(log, "from the library")
        got = {rest.split(" : ")[-1]: (p, level) for p, level, rest in records(log)}
        assert got["from the handler"] == (pid, "warning")
        assert got["from the library"] == (pid, "error")
        assert got["from virlog"][1] == "info"
        assert got["from virlog"][0] not in (pid, d.pid)
    finally:
        assert d.stop() == 0


def test_eight_concurrent_clients_each_arrive_complete_and_in_order(tmp_path):
    """8 clients x 10,000 records: nothing lost, each client's order kept."""
    log = tmp_path / "out.log"
    d = Daemon(tmp_path, outputs=f"1:file:{log}", args=["--log-level", "1"])
    program = f"""
        import os, virlogd
        from virlogd.client.client import Client
        from virlogd.core.record import Record
        client = Client({d.socket!r})
        for i in range(10000):
            client.send(Record(2, "load", f"seq %d" % i))
        client.flush()
        print(os.getpid(), flush=True)
    """
    procs = [python(tmp_path, program, d.env) for _ in range(8)]
    pids = []
    for proc in procs:
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        pids.append(int(out.split()[0]))
    assert d.stop() == 0
    seen = {pid: [] for pid in pids}
    for pid, _level, rest in records(log):
        if pid in seen and rest.startswith("load : seq "):      # relayed: names its source
            seen[pid].append(int(rest[11:]))
    for pid in pids:
        assert seen[pid] == list(range(10000)), f"client {pid}"


def test_a_malformed_frame_closes_only_that_connection_and_names_the_pid(tmp_path):
    """Garbage on one connection is refused and reported; other clients never notice."""
    log = tmp_path / "out.log"
    d = Daemon(tmp_path, outputs=f"1:file:{log}")
    try:
        good = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
            import sys, time
            from virlogd.client.client import Client
            from virlogd.core.record import Record
            c = Client({d.socket!r})
            for i in range(50):
                c.send(Record(3, "good", "good %d" % i)); c.flush(); time.sleep(0.01)
        """)], env=d.env)
        bad = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        bad.connect(d.socket)
        bad.sendall(struct.pack(">I", 0xFFFFFFF0) + b"\xff" * 64)
        bad.settimeout(10)
        assert bad.recv(1) == b""                 # the daemon closed this connection
        bad.close()
        assert good.wait(30) == 0
        text = read_until(log, "good 49")
        assert re.search(rf"closed connection from pid {os.getpid()} ", text), text
        assert d.proc.poll() is None
    finally:
        assert d.stop() == 0


def test_a_client_survives_a_daemon_restart_and_its_drops_are_reported(tmp_path):
    """The library reconnects; records it could not hold are counted and reported."""
    log = tmp_path / "out.log"
    d = Daemon(tmp_path, outputs=f"1:file:{log}")
    flag = tmp_path / "go"
    program = f"""
        import os, time, virlogd
        from virlogd.client.client import Client
        from virlogd.core.record import Record
        c = Client({d.socket!r}, hold=100)
        c.send(Record(3, "survivor", "before the restart")); c.flush()
        print("sent", flush=True)
        while not os.path.exists({str(flag)!r}):
            time.sleep(0.01)
        for i in range(300):
            c.send(Record(3, "survivor", "during %d" % i))
        c.flush()
        while not os.path.exists({str(flag) + '2'!r}):
            time.sleep(0.01)
        c.send(Record(3, "survivor", "after the restart"))
        c.flush()
        c.close()
    """
    proc = python(tmp_path, program, d.env)
    assert proc.stdout.readline() == "sent\n"
    read_until(log, "before the restart")
    assert d.stop() == 0
    flag.write_text("")                                 # the client sends while nobody listens
    again = Daemon(tmp_path, outputs=f"1:file:{log}")
    (tmp_path / "go2").write_text("")
    try:
        assert proc.wait(30) == 0
        text = read_until(log, "after the restart")
        assert "200 record(s) dropped while the daemon was unreachable" in text
        kept = re.findall(r"during (\d+)$", text, re.M)
        assert [int(k) for k in kept] == list(range(200, 300))
    finally:
        assert again.stop() == 0


def test_a_streaming_virlog_waits_for_a_restarted_daemon(tmp_path):
    """`... | virlog` keeps going across a daemon restart: every line arrives."""
    log = tmp_path / "out.log"
    d = Daemon(tmp_path, outputs=f"1:file:{log}")
    from daemonproc import VIRLOG
    proc = subprocess.Popen([VIRLOG, "-S", d.socket, "-p", "warning", "-s", "stream"],
                            stdin=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=d.env)
    proc.stdin.write("first line\n")
    proc.stdin.flush()
    read_until(log, "first line")
    assert d.stop() == 0
    again = Daemon(tmp_path, outputs=f"1:file:{log}")
    try:
        for i in range(3):                      # the first write may only reveal the loss
            proc.stdin.write(f"after restart {i}\n")
            proc.stdin.flush()
        proc.stdin.close()
        assert proc.wait(30) == 0, proc.stderr.read()
        text = read_until(log, "after restart 2")
        assert [f"after restart {i}" in text for i in range(3)] == [True] * 3
        assert proc.stderr.read() == (f"virlog: warning: lost connection to virlogd at "
                                      f"{d.socket}: Broken pipe; reconnecting\n")
    finally:
        assert again.stop() == 0


def test_a_streaming_virlog_sends_again_what_a_killed_daemon_never_read(tmp_path):
    """Lines written while the daemon was stopped sit unread in its socket buffer when it is
    killed: virlog sends them again to the next daemon, so every line arrives."""
    log = tmp_path / "out.log"
    d = Daemon(tmp_path, outputs=f"1:file:{log}")
    from daemonproc import VIRLOG
    proc = subprocess.Popen([VIRLOG, "-S", d.socket, "-p", "warning", "-s", "stream"],
                            stdin=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=d.env)
    again = None
    try:
        proc.stdin.write("before\n")
        proc.stdin.flush()
        read_until(log, "before")
        d.kill(signal.SIGSTOP)
        proc.stdin.write("".join(f"unread {i}\n" for i in range(200)))
        proc.stdin.flush()
        time.sleep(0.3)                     # virlog writes them into the stopped daemon
        assert d.stop(signal.SIGKILL) == -signal.SIGKILL
        again = Daemon(tmp_path, outputs=f"1:file:{log}")
        proc.stdin.write("after\n")
        proc.stdin.close()
        assert proc.wait(30) == 0, proc.stderr.read()
        text = read_until(log, "after")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if again is not None:
            assert again.stop() == 0
    unread = [int(n) for n in re.findall(r": unread (\d+)$", text, re.M)]
    assert unread == list(range(200))
    assert re.fullmatch(rf"virlog: warning: lost connection to virlogd at {re.escape(d.socket)}"
                        rf": (Broken pipe|Connection reset by peer); reconnecting\n",
                        proc.stderr.read())
