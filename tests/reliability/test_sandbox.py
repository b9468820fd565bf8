"""The hardened unit: its exposure score, and the same restrictions around a real daemon.

No service manager may run here, so ``systemd/virlogd.service`` is checked offline
(``systemd-analyze security --offline=yes`` and ``verify``), and its sandbox is rebuilt by
hand around a real ``virlogd``, as the unit would run it:

* ``ProtectSystem=strict`` with ``RuntimeDirectory=``/``LogsDirectory=``: a private mount
  namespace in which every mount is read-only except the API filesystems (/proc, /sys, /dev)
  and the daemon's own runtime and log directories;
* root without capabilities, ``NoNewPrivileges=``: ``setpriv --no-new-privs`` with the
  bounding, inheritable and ambient sets emptied;
* ``MemoryDenyWriteExecute=``: ``prctl(PR_SET_MDWE)`` (the kernel's own W^X switch);
* ``SystemCallFilter=`` and ``RestrictAddressFamilies=``: a seccomp filter built with
  libseccomp from the unit's own lines (groups expanded by ``systemd-analyze syscall-filter``),
  EPERM for anything else, ``socket()`` only for AF_UNIX, AF_INET and AF_INET6.

Every output must still work there: a file in the log directory, stderr, syslog to a real
rsyslogd on the private ``/dev/log``, the private real journald (which honours OBJECT_PID=
from uid 0 without capabilities), and a remote collector on loopback. A file outside the
writable directories is refused with a warning, and the others carry on.
"""
import os
import re
import shutil
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from conftest import require_real, wait_until
from daemonproc import VIRLOG, VIRLOGD, read_until, wait_for
from virlogd.daemon.sockets import listening

ROOT = Path(__file__).resolve().parent.parent.parent
UNITS = ("virlogd.service", "virlogd.socket", "virlogd-admin.socket")
MAX_EXPOSURE = 2.5


def systemd_analyze() -> str:
    path = shutil.which("systemd-analyze")
    if path is None:
        require_real("systemd-analyze is not installed (apt-get install systemd)")
    return path


@pytest.fixture
def units(tmp_path):
    """The units as installed: ExecStart on this checkout's virlogd (verify needs it)."""
    for name in UNITS:
        text = (ROOT / "systemd" / name).read_text()
        (tmp_path / name).write_text(text.replace("ExecStart=/usr/local/bin/virlogd",
                                                  f"ExecStart={os.path.realpath(VIRLOGD)}"))
    return tmp_path


def test_the_unit_scores_at_most_2_5_and_verifies(units):
    """The exposure score ``systemd-analyze security --offline=yes`` gives is at most 2.5
    (9.6 before hardening; journald's own unit: 4.3), and ``verify`` prints nothing."""
    analyze = systemd_analyze()
    verify = subprocess.run([analyze, "verify", "--man=no", "--generators=no", *UNITS],
                            cwd=units, capture_output=True, text=True, timeout=60)
    assert (verify.returncode, verify.stderr) == (0, "")
    security = subprocess.run([analyze, "security", "--offline=yes", "--no-pager",
                               "./virlogd.service"], cwd=units, capture_output=True, text=True,
                              timeout=60)
    found = re.search(r"Overall exposure level for virlogd\.service: (\d+\.\d+)",
                      security.stdout)
    assert found, security.stdout + security.stderr
    score = float(found.group(1))
    print(f"\nexposure {score}")
    assert score <= MAX_EXPOSURE, security.stdout
    service = (units / "virlogd.service").read_text()
    for line in ("Documentation=man:virlogd(8) man:virlogd.conf(5)", "WatchdogSec=",
                 "NoNewPrivileges=yes", "CapabilityBoundingSet=\n", "ProtectSystem=strict",
                 "MemoryDenyWriteExecute=yes",
                 "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6"):
        assert line in service


# The sandbox, built inside `unshare -m` and then exec'd into the daemon (same pid).
SANDBOX = r"""
import os, subprocess, sys
writable, FILTERS, cmd = sys.argv[1].split(":"), sys.argv[2], sys.argv[3:]
api = ("/proc", "/sys", "/dev")
points = []
with open("/proc/self/mountinfo") as f:
    for line in f:
        point = line.split()[4].encode().decode("unicode_escape")
        if not any(point == a or point.startswith(a + "/") for a in api):
            points.append(point)
for point in points:                      # ProtectSystem=strict: everything read-only...
    subprocess.run(["mount", "-o", "remount,bind,ro", point], stderr=subprocess.DEVNULL)
for path in writable:                     # ...but RuntimeDirectory= and LogsDirectory=
    subprocess.run(["mount", "--bind", path, path], check=True)
    subprocess.run(["mount", "-o", "remount,bind,rw", path], check=True)
os.execvp("setpriv", ["setpriv", "--no-new-privs", "--inh-caps=-all", "--ambient-caps=-all",
                      "--bounding-set=-all", "--", sys.executable, "-c", FILTERS, *cmd])
"""

# Then, without capabilities: MemoryDenyWriteExecute=, SystemCallFilter= and
# RestrictAddressFamilies= (libseccomp, as systemd does it), and exec the daemon.
FILTERS = r"""
import ctypes, os, sys
allowed, cmd = sys.argv[1].split(","), sys.argv[2:]
libc = ctypes.CDLL(None, use_errno=True)
if libc.prctl(65, 1, 0, 0, 0) != 0:       # PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN
    sys.exit(f"PR_SET_MDWE failed: {os.strerror(ctypes.get_errno())}")
class Cmp(ctypes.Structure):
    _fields_ = [("arg", ctypes.c_uint), ("op", ctypes.c_int), ("a", ctypes.c_uint64),
                ("b", ctypes.c_uint64)]
seccomp = ctypes.CDLL("libseccomp.so.2")
seccomp.seccomp_init.restype = ctypes.c_void_p
seccomp.seccomp_rule_add_array.argtypes = (ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int,
                                           ctypes.c_uint, ctypes.c_void_p)
seccomp.seccomp_load.argtypes = (ctypes.c_void_p,)
ALLOW, EPERM = 0x7fff0000, 0x00050000 | 1
ctx = seccomp.seccomp_init(EPERM)            # SystemCallErrorNumber=EPERM
for name in allowed:
    number = seccomp.seccomp_syscall_resolve_name(name.encode())
    if number < 0:
        continue                             # not on this architecture
    if name == "socket":                     # RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6
        for family in (1, 2, 10):
            cmp = Cmp(0, 4, family, 0)           # SCMP_CMP_EQ
            assert seccomp.seccomp_rule_add_array(ctx, ALLOW, number, 1, ctypes.byref(cmp)) == 0
        continue
    assert seccomp.seccomp_rule_add_array(ctx, ALLOW, number, 0, None) == 0, name
assert seccomp.seccomp_load(ctx) == 0
os.execv(cmd[0], cmd)
"""


def syscall_group(group: str, seen=None) -> set:
    """The system calls of a systemd syscall group, nested groups expanded."""
    seen = set() if seen is None else seen
    if group in seen:
        return set()
    seen.add(group)
    text = subprocess.run([systemd_analyze(), "syscall-filter", group], capture_output=True,
                          text=True, check=True, timeout=30).stdout
    calls = set()
    for line in text.splitlines()[1:]:
        item = line.strip()
        if item.startswith("@"):
            calls |= syscall_group(item, seen)
        elif item and not item.startswith("#"):
            calls.add(item)
    return calls


def unit_syscalls() -> set:
    """What the unit's SystemCallFilter= lines allow (first an allow list, then ~ lines)."""
    allowed: set = set()
    for line in (ROOT / "systemd" / "virlogd.service").read_text().splitlines():
        if line.startswith("SystemCallFilter="):
            value = line.split("=", 1)[1]
            deny = value.startswith("~")
            groups = set()
            for item in value.lstrip("~").split():
                groups |= syscall_group(item) if item.startswith("@") else {item}
            allowed = allowed - groups if deny else allowed | groups
    assert "socket" in allowed and "execve" in allowed
    return allowed


def status_of(pid: int) -> dict:
    with open(f"/proc/{pid}/status") as f:
        return dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)


def test_every_output_works_inside_the_units_sandbox(real_journald, real_rsyslog_devlog,
                                                     rsyslog_server, short_dir):
    if os.geteuid() != 0 or not shutil.which("unshare") or not shutil.which("setpriv"):
        require_real("the emulated sandbox needs root, unshare(1) and setpriv(1)")
    run_dir, logs = Path(short_dir) / "run", Path(short_dir) / "logs"
    run_dir.mkdir()
    logs.mkdir()
    log, outside = logs / "virlogd.log", Path(short_dir) / "outside.log"
    socket_path = str(run_dir / "virlogd-sock")
    source = f"sandbox.{uuid.uuid4().hex[:12]}"
    outputs = (f"1:file:{log} 1:stderr 1:syslog:sandboxed 1:journald "
               f"1:remote:tcp://127.0.0.1:{rsyslog_server.port} 1:file:{outside}")
    stderr_path = Path(short_dir) / "stderr"
    with open(stderr_path, "wb") as err:
        daemon = subprocess.Popen(
            ["unshare", "-m", "--propagation", "private", sys.executable, "-c", SANDBOX,
             f"{run_dir}:{logs}", FILTERS, ",".join(sorted(unit_syscalls())),
             os.path.realpath(VIRLOGD), "--socket", socket_path, "--admin-socket",
             str(run_dir / "virlogd-admin-sock"), "--log-outputs", outputs],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err)
    client = None
    try:
        wait_for(lambda: daemon.poll() is not None or listening(socket_path), 20,
                 "the sandboxed daemon's socket")
        assert daemon.poll() is None, stderr_path.read_text()
        # it is the daemon, confined as the unit would confine it
        status = status_of(daemon.pid)
        assert (status["CapEff"], status["CapPrm"], status["CapBnd"], status["NoNewPrivs"],
                status["Seccomp"]) == ("0000000000000000", "0000000000000000",
                                       "0000000000000000", "1", "2")
        assert os.readlink(f"/proc/{daemon.pid}/ns/mnt") != os.readlink("/proc/self/ns/mnt")
        assert open(f"/proc/{daemon.pid}/comm").read().startswith("virlogd")

        # a long-lived client, so journald can still resolve OBJECT_PID= into OBJECT_COMM=
        client = subprocess.Popen([VIRLOG, "-S", socket_path, "-p", "error", "-s", source],
                                  stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.PIPE, text=True)
        client.stdin.write("".join(f"sandboxed record {i}\n" for i in range(20)))
        client.stdin.flush()
        read_until(log, "sandboxed record 19")
        entries = real_journald.query(f"LIBVIRT_SOURCE={source}", count=20, timeout=10)
        remote = rsyslog_server.lines(20 + 3, timeout=10)
        syslog = real_rsyslog_devlog.lines(20 + 2, timeout=10)
        client.stdin.close()
        assert client.wait(15) == 0, client.stderr.read()
    finally:
        if client is not None and client.poll() is None:
            client.kill()
            client.wait()
        os.kill(daemon.pid, signal.SIGTERM)
        try:
            stopped = daemon.wait(15)
        except subprocess.TimeoutExpired:
            daemon.kill()
            stopped = daemon.wait()
    stderr = stderr_path.read_text()
    assert stopped == 0, stderr
    wanted = [f"sandboxed record {i}" for i in range(20)]
    # file, in the log directory
    assert [line for line in log.read_text().splitlines() if source in line][-20:] and \
        [w for w in wanted if f"{source} : {w}" not in log.read_text()] == []
    # stderr
    assert [w for w in wanted if f"{source} : {w}" not in stderr] == []
    # journald, with the client's identity resolved (uid 0 without capabilities suffices)
    assert [e["MESSAGE"] for e in entries] == wanted
    assert {(e.get("OBJECT_PID"), e.get("OBJECT_COMM")) for e in entries} == \
        {(str(client.pid), "virlog")}
    # syslog through the private /dev/log
    assert [w for w in wanted if not any("sandboxed" in line and line.endswith(w)
                                         for line in syslog)] == []
    # remote collector on loopback
    assert [w for w in wanted if not any(line.endswith(f"msg={w}") for line in remote)] == []
    # and nothing outside the writable directories
    assert not outside.exists()
    assert f"virlogd: warning: cannot open output '1:file:{outside}': " in stderr
