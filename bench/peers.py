"""The processes a benchmark row needs, started by hand on private sockets and stopped by pid.

Nothing here touches the host's logging: rsyslog listens on a socket in our temporary
directory (``SysSock.Use="off"``) and on a free TCP port of 127.0.0.1; virlogd gets private
XDG directories and its own sockets; journald is only used inside the private mount namespace
that ``ci/private-logging.sh`` sets up (see ``run.py``).
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import List, Optional, Tuple

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
VIRLOGD = str(VENV_BIN / "virlogd")
TOKEN = b"BENCHMSG"
CLK_TCK = os.sysconf("SC_CLK_TCK")


# -- measuring other processes ---------------------------------------------------------------
def cpu_seconds(pid: int) -> float:
    """utime + stime of *pid*, all its threads (from /proc/PID/stat)."""
    with open(f"/proc/{pid}/stat", "rb") as handle:
        fields = handle.read().rsplit(b")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def wait_child(proc: subprocess.Popen, timeout: float = 120.0) -> Tuple[int, float]:
    """Reap *proc*; return (status, its CPU seconds) from wait4's rusage."""
    deadline = time.monotonic() + timeout
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            proc.returncode = os.waitstatus_to_exitcode(status) \
                if hasattr(os, "waitstatus_to_exitcode") else status
            return proc.returncode, usage.ru_utime + usage.ru_stime
        if time.monotonic() > deadline:
            proc.kill()
            timeout = 5.0
            deadline = time.monotonic() + timeout
        time.sleep(0.002)


def stop(proc: Optional[subprocess.Popen], sig: int = signal.SIGTERM, timeout: float = 10.0):
    """Stop one process we started, by its pid."""
    if proc is None or proc.poll() is not None:
        return
    try:
        os.kill(proc.pid, sig)
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    except ProcessLookupError:
        pass


class Counter:
    """Counts the benchmark's lines in a growing file, reading only what is new."""

    def __init__(self, path: str, token: bytes = TOKEN) -> None:
        self.path = path
        self.token = token
        self.count = 0
        self._offset = 0
        self._rest = b""

    def poll(self) -> int:
        try:
            with open(self.path, "rb") as handle:
                handle.seek(self._offset)
                data = handle.read()
        except FileNotFoundError:
            return self.count
        if data:
            self._offset += len(data)
            data = self._rest + data
            cut = data.rfind(b"\n") + 1
            self._rest = data[cut:]
            self.count += data.count(self.token, 0, cut)
        return self.count

    def wait(self, expected: int, idle: float = 3.0, limit: float = 120.0) -> Tuple[int, float]:
        """Poll until *expected* lines are there, or nothing new came for *idle* seconds.
        Returns (lines, monotonic time the last line was seen)."""
        last_count, last_change = self.poll(), time.monotonic()
        start = last_change
        while self.count < expected:
            time.sleep(0.001)
            now = time.monotonic()
            if self.poll() != last_count:
                last_count, last_change = self.count, now
            elif now - last_change > idle or now - start > limit:
                break
        return self.count, last_change if self.count < expected else time.monotonic()


# -- the C senders ---------------------------------------------------------------------------
def build_senders(workdir: str) -> str:
    exe = os.path.join(workdir, "senders")
    subprocess.run(["gcc", "-O2", "-o", exe, str(ROOT / "bench" / "senders.c")], check=True)
    return exe


def start_sender(cmd: List[str], env: Optional[dict] = None) -> subprocess.Popen:
    """Start a sender; it sets up, prints ``ready`` and waits for ``go()``."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stdin=subprocess.PIPE, env=env)
    line = proc.stdout.readline()
    if line.strip() != b"ready":
        wait_child(proc, 10)
        raise RuntimeError(f"sender {cmd!r} failed to start (rc {proc.returncode}): {line!r}")
    return proc


def go(procs: List[subprocess.Popen]) -> None:
    for proc in procs:
        proc.stdin.write(b"go\n")
    for proc in procs:
        proc.stdin.flush()
        proc.stdin.close()


def run_sender(cmd: List[str]) -> Tuple[float, float, float]:
    proc = start_sender(cmd)
    go([proc])
    return sender_times(proc)


def sender_times(proc: subprocess.Popen) -> Tuple[float, float, float]:
    """(start, end, cpu seconds) of a finished sender that printed 'start T' / 'end T'."""
    out = proc.stdout.read().decode()
    _rc, cpu = wait_child(proc)
    times = dict(line.split() for line in out.splitlines() if len(line.split()) == 2)
    if "start" not in times:
        raise RuntimeError(f"sender {proc.args!r} failed (rc {proc.returncode}): {out!r}")
    return float(times["start"]), float(times.get("end", "nan")), cpu


# -- rsyslog -------------------------------------------------------------------------------
RSYSLOG_CONF = """\
global(workDirectory="{d}")
module(load="imuxsock" SysSock.Use="off")
input(type="imuxsock" Socket="{d}/log.sock" RateLimit.Interval="0" ruleset="local")
module(load="imtcp")
input(type="imtcp" address="127.0.0.1" port="0" listenPortFileName="{d}/tcp.port" ruleset="remote")
ruleset(name="local") {{ action(type="omfile" file="{d}/local.log") }}
ruleset(name="remote") {{ action(type="omfile" file="{d}/remote.log") }}
"""


class Rsyslog:
    """rsyslogd -n on a private unix socket and a free TCP port, stock omfile settings."""

    def __init__(self, workdir: str) -> None:
        self.dir = workdir
        os.makedirs(workdir, exist_ok=True)
        for name in ("local.log", "remote.log", "tcp.port", "log.sock"):
            try:
                os.unlink(os.path.join(workdir, name))
            except FileNotFoundError:
                pass
        conf = os.path.join(workdir, "rsyslog.conf")
        with open(conf, "w") as handle:
            handle.write(RSYSLOG_CONF.format(d=workdir))
        self.sock = os.path.join(workdir, "log.sock")
        self.local_log = os.path.join(workdir, "local.log")
        self.remote_log = os.path.join(workdir, "remote.log")
        self.proc = subprocess.Popen(
            ["rsyslogd", "-n", "-f", conf, "-i", os.path.join(workdir, "rsyslogd.pid")],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=open(os.path.join(workdir, "stderr"), "ab"))
        port_file = os.path.join(workdir, "tcp.port")
        deadline = time.monotonic() + 10
        while not (os.path.exists(self.sock) and _nonempty(port_file)):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"rsyslogd did not start; see {workdir}/stderr")
            time.sleep(0.002)
        with open(port_file) as handle:
            self.port = int(handle.read().strip())

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self) -> None:
        stop(self.proc)


def _nonempty(path: str) -> bool:
    try:
        return os.path.getsize(path) > 0
    except OSError:
        return False


# -- virlogd ---------------------------------------------------------------------------------
FILTERS = "3:remote 4:event 3:util.json 3:rpc 1:bench"   # five filters; 'bench' matches last


class Virlogd:
    """One ``virlogd`` in the foreground; ``ready_s`` = exec to READY=1 on $NOTIFY_SOCKET."""

    def __init__(self, workdir: str, outputs: str, *, filters: str = FILTERS,
                 buffer_kb: Optional[int] = None, level: Optional[int] = None,
                 extra_env: Optional[dict] = None) -> None:
        self.dir = workdir
        os.makedirs(workdir, exist_ok=True)
        self.socket = os.path.join(workdir, "virlogd-sock")
        self.admin_socket = os.path.join(workdir, "virlogd-admin-sock")
        conf = os.path.join(workdir, "virlogd.conf")
        open(conf, "w").close()                 # an empty config: nothing from /etc
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("LIBVIRT_", "NOTIFY_SOCKET", "LISTEN_"))}
        for name in ("XDG_RUNTIME_DIR", "XDG_CONFIG_HOME", "XDG_CACHE_HOME"):
            path = os.path.join(workdir, name.lower())
            os.makedirs(path, exist_ok=True)
            env[name] = path
        notify = os.path.join(workdir, "notify.sock")
        if os.path.exists(notify):
            os.unlink(notify)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        listener.bind(notify)
        env["NOTIFY_SOCKET"] = notify
        env.update(extra_env or {})
        cmd = [VIRLOGD, "-f", conf, "--socket", self.socket, "--admin-socket",
               self.admin_socket, "--log-outputs", outputs, "--log-filters", filters]
        if buffer_kb is not None:
            cmd += ["--log-buffer-size", str(buffer_kb)]
        if level is not None:
            cmd += ["--log-level", str(level)]
        self.stderr_path = os.path.join(workdir, "stderr")
        listener.settimeout(15)
        t0 = time.monotonic()
        self.proc = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL,
                                     stderr=open(self.stderr_path, "ab"))
        try:
            while True:
                data = listener.recv(4096)
                if b"READY=1" in data:
                    break
        except socket.timeout:
            stop(self.proc, signal.SIGKILL)
            raise RuntimeError(f"virlogd did not send READY=1; see {self.stderr_path}")
        finally:
            listener.close()
        self.ready_s = time.monotonic() - t0

    @property
    def pid(self) -> int:
        return self.proc.pid

    def admin(self, cmd: str, *args: str):
        from virlogd.cli.admin import request
        return request(self.admin_socket, cmd, list(args))

    def stop(self) -> None:
        stop(self.proc)
