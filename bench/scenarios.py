"""One function per benchmark row: start the peers, run once, stop them, return a Sample.

Two-process rows follow the anchors' method (reference/performance-anchors.md): msgs/s = N /
(time from the sender's first send to the moment the last record is in the receiver's file),
start-up excluded; CPU per million for the receiver (all threads, /proc/PID/stat) and for the
client (wait4's rusage); losses = N minus what arrived.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional

from . import peers

MSGLEN = 120
PY = sys.executable
HERE = os.path.dirname(os.path.abspath(__file__))


@dataclass
class Sample:
    n: int = 0
    seconds: float = 0.0            # wall time of the run (rate rows)
    daemon_cpu: Optional[float] = None
    client_cpu: Optional[float] = None
    lost: Optional[int] = None
    value: Optional[float] = None   # rows that measure something else (µs, ms, kB)
    extra: Dict[str, float] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.n / self.seconds if self.seconds > 0 else 0.0


class Context:
    def __init__(self, workdir: str, senders: str, journald_pid: Optional[int]) -> None:
        self.workdir = workdir
        self.senders = senders
        self.journald_pid = journald_pid
        self.runs = 0
        self.ready_times: List[float] = []
        self._dirs: List[str] = []

    def fresh_dir(self, name: str) -> str:
        self.runs += 1
        path = os.path.join(self.workdir, f"{self.runs:03d}-{name}")
        os.makedirs(path)
        self._dirs.append(path)
        return path

    def settle(self) -> None:
        """Before a run: remove what earlier runs wrote, then sync. Rows write up to ~40 MB
        of log files each; left on disk, their writeback ran during the next rows and cost
        whichever came next (measured: journald behind virlogd, right after six file rows,
        used 23 CPU-s per million instead of 20)."""
        for path in self._dirs:
            shutil.rmtree(path, ignore_errors=True)
        self._dirs.clear()
        os.sync()

    def virlogd(self, name: str, outputs: str = "", **kw) -> peers.Virlogd:
        d = self.fresh_dir(name)
        daemon = peers.Virlogd(d, outputs or f"1:file:{d}/out.log", **kw)
        self.ready_times.append(daemon.ready_s)
        return daemon


def _two_process(receiver_pid: int, out_path: str, n: int, cmds: List[List[str]],
                 env: Optional[dict] = None) -> Sample:
    counter = peers.Counter(out_path)
    counter.poll()
    cpu0 = peers.cpu_seconds(receiver_pid)
    procs = [peers.start_sender(cmd, env) for cmd in cmds]
    peers.go(procs)
    got, end = counter.wait(n)
    cpu1 = peers.cpu_seconds(receiver_pid)
    times = [peers.sender_times(p) for p in procs]
    start = min(t[0] for t in times)
    return Sample(n=n, seconds=end - start, daemon_cpu=cpu1 - cpu0,
                  client_cpu=sum(t[2] for t in times), lost=n - got)


def _split(n: int, k: int) -> List[int]:
    return [n // k + (1 if i < n % k else 0) for i in range(k)]


# -- peers (the anchors, measured in the same run) -----------------------------------------------
def rsyslog_uds(ctx: Context, n: int, clients: int = 1) -> Sample:
    r = peers.Rsyslog(ctx.fresh_dir(f"rsyslog-uds{clients}"))
    try:
        cmds = [[ctx.senders, "dgram", r.sock, str(k), str(MSGLEN), "x"]
                for k in _split(n, clients)]
        return _two_process(r.pid, r.local_log, n, cmds)
    finally:
        r.stop()


def rsyslog_tcp(ctx: Context, n: int) -> Sample:
    r = peers.Rsyslog(ctx.fresh_dir("rsyslog-tcp"))
    try:
        cmd = [ctx.senders, "tcp", str(r.port), str(n), str(MSGLEN + 1), "x"]
        return _two_process(r.pid, r.remote_log, n, [cmd])
    finally:
        r.stop()


def rsyslog_pysyslog(ctx: Context, n: int) -> Sample:
    r = peers.Rsyslog(ctx.fresh_dir("rsyslog-py"))
    try:
        cmd = [PY, os.path.join(HERE, "pysender.py"), "syslog", r.sock, str(n), str(MSGLEN - 30)]
        return _two_process(r.pid, r.local_log, n, [cmd])
    finally:
        r.stop()


# -- virlogd ---------------------------------------------------------------------------------
def virlogd_py(ctx: Context, n: int, mode: str = "record", clients: int = 1,
               pure: bool = False) -> Sample:
    """Python clients (virlogd's own Client / VirlogdHandler) -> daemon -> file; *pure*: the
    daemon and the clients without the compiled module (VIRLOGD_PURE_PYTHON=1)."""
    env = {"VIRLOGD_PURE_PYTHON": "1"} if pure else {}
    daemon = ctx.virlogd(f"virlogd-{mode}{clients}{'-pure' if pure else ''}", extra_env=env)
    try:
        out = os.path.join(daemon.dir, "out.log")
        cmds = [[PY, os.path.join(HERE, "pysender.py"), mode, daemon.socket, str(k),
                 str(MSGLEN)] for k in _split(n, clients)]
        return _two_process(daemon.pid, out, n, cmds, dict(os.environ, **env) if pure else None)
    finally:
        daemon.stop()


def virlogd_c(ctx: Context, n: int, clients: int = 1, batch: int = 1) -> Sample:
    """C clients writing protocol frames (*batch* per write) -> daemon -> file."""
    daemon = ctx.virlogd(f"virlogd-c{clients}")
    try:
        out = os.path.join(daemon.dir, "out.log")
        cmds = [[ctx.senders, "virlogd", daemon.socket, str(k), str(MSGLEN), "bench.io",
                 str(batch)] for k in _split(n, clients)]
        return _two_process(daemon.pid, out, n, cmds)
    finally:
        daemon.stop()


# -- journald (inside the private namespace only) -------------------------------------------
JOURNAL_SOCKET = "/run/systemd/journal/socket"


def _journal_count(match: str) -> int:
    out = subprocess.run(["journalctl", "--no-pager", "-o", "cat", match],
                         capture_output=True, check=False).stdout
    return out.count(peers.TOKEN)


def _journal_wait(match: str, limit: float = 60.0) -> float:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        out = subprocess.run(["journalctl", "--no-pager", "-o", "cat", match],
                             capture_output=True, check=False).stdout
        if out.strip():
            return time.monotonic()
        time.sleep(0.01)
    return time.monotonic()


def journald_c(ctx: Context, n: int, relayed: bool = False) -> Sample:
    """C client -> journald; *relayed*: each entry with the fields virlogd writes for a
    relayed record (OBJECT_PID... of the sender), sent by the client itself."""
    tag = f"j{ctx.runs + 1:03d}{os.getpid()}"
    ctx.fresh_dir("journald")
    cpu0 = peers.cpu_seconds(ctx.journald_pid)
    start, _end, ccpu = peers.run_sender([ctx.senders,
                                          "journal-relayed" if relayed else "journal",
                                          JOURNAL_SOCKET, str(n), str(MSGLEN), tag])
    end = _journal_wait(f"BENCH_END={tag}")
    cpu1 = peers.cpu_seconds(ctx.journald_pid)
    got = _journal_count(f"LIBVIRT_SOURCE={tag}" if relayed else f"BENCH_RUN={tag}")
    return Sample(n=n, seconds=end - start, daemon_cpu=cpu1 - cpu0, client_cpu=ccpu,
                  lost=n - got)


def virlogd_journald(ctx: Context, n: int) -> Sample:
    """C client -> virlogd (journald output) -> journald. CPU = virlogd + journald."""
    tag = f"bench.j{ctx.runs + 1:03d}{os.getpid()}"
    daemon = ctx.virlogd("virlogd-journald", outputs="1:journald")
    try:
        j0, d0 = peers.cpu_seconds(ctx.journald_pid), peers.cpu_seconds(daemon.pid)
        # returns once virlogd has routed it all (it closes the connection after our EOF)
        start, _end, ccpu = peers.run_sender([ctx.senders, "virlogd", daemon.socket, str(n),
                                              str(MSGLEN), tag, "1"])
        from virlogd.client.client import Client
        from virlogd.core.record import Record
        with Client(daemon.socket) as client:           # the sentinel, after every record
            client.send(Record(2, tag, "end of run", fields={"BENCH_END": tag}))
        end = _journal_wait(f"BENCH_END={tag}")
        j1, d1 = peers.cpu_seconds(ctx.journald_pid), peers.cpu_seconds(daemon.pid)
        got = _journal_count(f"LIBVIRT_SOURCE={tag}")
        return Sample(n=n, seconds=end - start, daemon_cpu=d1 - d0, client_cpu=ccpu,
                      lost=n - got, extra={"journald_cpu": j1 - j0})
    finally:
        daemon.stop()


# -- in-process costs ------------------------------------------------------------------------
# The daemon of the per-call rows wants info from the bench's source, not its debug: since
# protocol version 3 a client sends what its daemon's filters ask for, and "1:bench" would
# make the library send the debug calls these rows measure as wanted by nobody (ring only).
MICRO_FILTERS = peers.FILTERS.replace("1:bench", "2:bench")


def micro(ctx: Context, n: int, name: str, needs_daemon: bool = False) -> Sample:
    daemon = ctx.virlogd(f"micro-{name}", filters=MICRO_FILTERS) if needs_daemon else None
    d = daemon.dir if daemon else ctx.fresh_dir(f"micro-{name}")
    try:
        out = subprocess.run([PY, os.path.join(HERE, "micro.py"), name, str(n),
                              daemon.socket if daemon else "", d],
                             capture_output=True, text=True, check=True).stdout.split()
        return Sample(n=n, value=float(out[0]), client_cpu=float(out[1]) * n / 1e6)
    finally:
        if daemon:
            daemon.stop()


# -- memory, dump, start-up (once per run, not interleaved) ----------------------------------
def memory(ctx: Context, small: int, big: int) -> Sample:
    """RSS after *small* records, then after *big* in all; the ring's fill against its size."""
    daemon = ctx.virlogd("virlogd-memory")
    try:
        out = os.path.join(daemon.dir, "out.log")
        counter = peers.Counter(out)
        rss = {}
        sent = 0
        for total in (small, big):
            cmd = [ctx.senders, "virlogd", daemon.socket, str(total - sent), str(MSGLEN),
                   "bench.io", "64"]
            peers.run_sender(cmd)
            counter.wait(total)
            sent = total
            rss[total] = peers.rss_kb(daemon.pid)
        stats = daemon.admin("stats")
        buf = stats["buffer"]
        return Sample(n=big, lost=big - counter.count, value=rss[big] / rss[small],
                      extra={"rss_small_kb": rss[small], "rss_big_kb": rss[big],
                             "ring_used": buf["used"], "ring_size": buf["size"]})
    finally:
        daemon.stop()


def dump(ctx: Context, repeats: int) -> Sample:
    """Admin ``dump`` round trip (request -> ring written to the file -> answer) with a full
    64 kB ring, *repeats* times (the ring is refilled before each)."""
    daemon = ctx.virlogd("virlogd-dump")
    try:
        times, counts = [], []
        for _ in range(repeats):
            cmd = [ctx.senders, "virlogd", daemon.socket, "2000", str(MSGLEN), "bench.io", "64"]
            peers.run_sender(cmd)
            t0 = time.perf_counter()
            counts.append(daemon.admin("dump"))
            times.append(time.perf_counter() - t0)
        times.sort()
        return Sample(n=repeats, value=times[len(times) // 2] * 1000,
                      extra={"min_ms": times[0] * 1000, "max_ms": times[-1] * 1000,
                             "records": counts[0]})
    finally:
        daemon.stop()
