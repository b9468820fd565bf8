"""Shared fixtures: the real receivers virlogd writes to, started and stopped by the tests.

Real-component fixtures (a real ``systemd-journald``, a real ``rsyslogd``):

* ``real_journald``      the private journald of ``ci/private-logging.sh`` (journalctl read-back,
                          stop/start/restart for outage tests)
* ``real_rsyslog_devlog`` an rsyslogd that owns the private ``/dev/log`` for one test
* ``rsyslog_server``     an rsyslogd receiving RFC 5424 over TCP on 127.0.0.1
* ``rsyslog_tls_server`` the same over TLS (gtls driver), with a throw-away CA

and ``require_real(reason)``, the one way these tests may give up: a skip on a developer's
machine, a failure in CI (``CI`` set), where a real-component test must never be skipped.

Everything is stopped by the pid the fixture started, never by name. The journald and
``/dev/log`` fixtures only run inside ``unshare -m ci/private-logging.sh`` (``scripts/test.sh``
does that as root): there ``/run/systemd`` and ``/dev`` are private to the test run.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import pytest

from daemonproc import wait_for as wait_until  # noqa: F401 - shared with the tests
from virlogd.daemon.sockets import listening

JOURNALD = "/lib/systemd/systemd-journald"
JOURNAL_SOCKET = "/run/systemd/journal/socket"
JOURNAL_DEV_LOG = "/run/systemd/journal/dev-log"
DEV_LOG = "/dev/log"
RSYSLOGD = shutil.which("rsyslogd") or "/usr/sbin/rsyslogd"


# -- giving up -------------------------------------------------------------------------------
def require_real(reason: str) -> None:
    """Skip with *reason*; but fail in CI (``CI`` set): CI must never skip a real test."""
    if os.environ.get("CI"):
        pytest.fail(f"real-component test cannot run in CI: {reason}", pytrace=False)
    pytest.skip(reason)


def _require_namespace(what: str) -> str:
    base = os.environ.get("PRIVLOG_BASE", "")
    if os.geteuid() != 0:
        require_real(f"{what} needs root (run: sudo bash scripts/test.sh)")
    if not base or not os.path.isdir(base):
        require_real(f"{what} needs the private logging namespace "
                     f"(run through bash scripts/test.sh: PRIVLOG_BASE is not set)")
    return base


# -- small helpers ---------------------------------------------------------------------------
def dgram_listening(path: str) -> bool:
    """True when a datagram receiver is bound at *path* (a stale socket file gives False)."""
    return listening(path, socket.SOCK_DGRAM)


def _alive(pid: int) -> bool:
    """True while *pid* runs (a zombie, dead but not yet reaped by its parent, is not)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (OSError, IndexError):
        return False


def _stop_pid(pid: int, proc: Optional[subprocess.Popen], what: str) -> None:
    """SIGTERM *pid*, wait for it to exit (SIGKILL after 5 s) and reap it if it is ours."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    deadline = time.monotonic() + 5
    while _alive(pid) and time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            break
        time.sleep(0.01)
    if _alive(pid):
        os.kill(pid, signal.SIGKILL)
        wait_until(lambda: not _alive(pid), 5, f"{what} (pid {pid}) to die after SIGKILL")
    if proc is not None:
        proc.wait(5)


def entry_bytes(entry: Dict, name: str) -> Optional[bytes]:
    """Field *name* of a ``journalctl -o json`` entry as bytes: journalctl prints a value that
    is not printable UTF-8 as an array of byte values, and a repeated field as a list."""
    value = entry.get(name)
    if value is None:
        return None
    if isinstance(value, str):
        return value.encode("utf-8")
    if value and all(isinstance(v, int) for v in value):
        return bytes(value)
    raise AssertionError(f"field {name} appears {len(value)} times in the entry: {value!r}")


# -- journald --------------------------------------------------------------------------------
class RealJournald:
    """The private journald of ``ci/private-logging.sh``, as seen from the tests.

    ``pid``: journald's pid now. ``query(*matches, count=1, timeout=5.0)``: the entries
    ``journalctl --no-pager -a -o json MATCH...`` returns, polled every 10 ms until there are
    at least *count* (after *timeout*, whatever there is: assert on the length). ``stop()``,
    ``start()``, ``restart()``: outages; the socket paths stay the standard ones.
    ``entry_bytes(entry, name)`` decodes a field (see the module function).
    """

    socket = JOURNAL_SOCKET
    entry_bytes = staticmethod(entry_bytes)

    def __init__(self, base: str, pid: int) -> None:
        self.base = base
        self.pid: Optional[int] = pid
        self.original_pid = pid
        self._proc: Optional[subprocess.Popen] = None

    def query(self, *matches: str, count: int = 1, timeout: float = 5.0) -> List[Dict]:
        cmd = ["journalctl", "--no-pager", "-a", "-o", "json", *matches]
        deadline = time.monotonic() + timeout
        while True:
            run = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True)
            if run.returncode != 0:
                raise AssertionError(f"{' '.join(cmd)} failed ({run.returncode}): "
                                     f"{run.stderr.decode(errors='replace')}")
            entries = [json.loads(line) for line in run.stdout.splitlines() if line.strip()]
            if len(entries) >= count or time.monotonic() > deadline:
                return entries
            time.sleep(0.01)

    def stop(self) -> None:
        """Stop journald (SIGTERM, by pid). Its socket file stays, stale: senders get
        ECONNREFUSED, as after a crash."""
        if self.pid is None:
            return
        _stop_pid(self.pid, self._proc, "journald")
        self.pid, self._proc = None, None

    def start(self) -> None:
        """Start journald again, in this namespace with this configuration; return once its
        native socket accepts datagrams."""
        if self.pid is not None:
            return
        self._proc = subprocess.Popen([JOURNALD], stdin=subprocess.DEVNULL,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.pid = self._proc.pid
        os.environ["PRIVLOG_JOURNALD_PID"] = str(self.pid)
        wait_until(lambda: dgram_listening(JOURNAL_SOCKET) or self._proc.poll() is not None,
                   10, "journald's socket")
        if self._proc.poll() is not None:
            raise AssertionError(f"journald exited at start with status {self._proc.returncode}")

    def restart(self) -> None:
        self.stop()
        self.start()

    def close(self) -> None:
        """At the end of the session: stop a journald we started ourselves (the wrapper stops
        the original one)."""
        if self._proc is not None:
            self.stop()


_journald: Optional[RealJournald] = None


@pytest.fixture(scope="session")
def _journald_session():
    global _journald
    base = os.environ.get("PRIVLOG_BASE", "")
    pid = os.environ.get("PRIVLOG_JOURNALD_PID", "")
    if os.geteuid() != 0 or not base or not pid.isdigit():
        yield None
        return
    _journald = RealJournald(base, int(pid))
    yield _journald
    _journald.close()


@pytest.fixture
def real_journald(_journald_session) -> RealJournald:
    """The real, private systemd-journald (see ``RealJournald``); skips (fails in CI) outside
    the namespace of ``scripts/test.sh``. A test that stopped it gets it started again."""
    _require_namespace("the journald test")
    journald = _journald_session
    if journald is None or not dgram_listening(JOURNAL_SOCKET):
        require_real("the private journald is not running")
    yield journald
    journald.start()


# -- rsyslog ---------------------------------------------------------------------------------
class Rsyslogd:
    """One rsyslogd started from *conf* in its own short directory (unix socket paths are
    limited to 108 bytes, pytest's tmp_path can be longer). ``path``: the file it writes;
    ``lines(count=1, timeout=5.0)``: that file's lines, waiting until there are *count* (after
    *timeout*, whatever there is); ``text()``: the whole file; ``restart()``; ``pid``."""

    def __init__(self, conf: str, directory: str, path: str, ready) -> None:
        self.dir = directory
        self.conf = os.path.join(directory, "rsyslog.conf")
        self.pidfile = os.path.join(directory, "rsyslogd.pid")
        self.path = path
        self._ready = ready
        self.proc: Optional[subprocess.Popen] = None
        self.pid: Optional[int] = None
        with open(self.conf, "w") as f:
            f.write(conf)
        check = subprocess.run([RSYSLOGD, "-N1", "-f", self.conf], capture_output=True,
                               text=True, stdin=subprocess.DEVNULL)
        if check.returncode != 0:
            raise AssertionError(f"rsyslog rejects the test configuration:\n{check.stderr}")

    def start(self) -> None:
        if self.proc is not None:
            return
        with open(os.path.join(self.dir, "rsyslogd.out"), "ab") as out:
            self.proc = subprocess.Popen([RSYSLOGD, "-n", "-f", self.conf, "-i", self.pidfile],
                                         stdin=subprocess.DEVNULL, stdout=out, stderr=out)
        self.pid = self.proc.pid
        wait_until(lambda: self._ready() or self.proc.poll() is not None, 10,
                   "rsyslogd to listen")
        if self.proc.poll() is not None:
            raise AssertionError(f"rsyslogd exited at start ({self.proc.returncode}): "
                                 f"{self.diagnostics()}")

    def stop(self) -> None:
        if self.proc is None:
            return
        _stop_pid(self.proc.pid, self.proc, "rsyslogd")
        self.proc, self.pid = None, None

    def restart(self) -> None:
        self.stop()
        self.start()

    def text(self) -> str:
        try:
            with open(self.path, encoding="utf-8", errors="surrogateescape") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def lines(self, count: int = 1, timeout: float = 5.0) -> List[str]:
        deadline = time.monotonic() + timeout
        while True:
            text = self.text()
            # only complete lines: rsyslog may be in the middle of writing the last one
            lines = text.split("\n")[:-1]
            if len(lines) >= count or time.monotonic() > deadline:
                return lines
            time.sleep(0.01)

    def diagnostics(self) -> str:
        out = []
        for name in ("rsyslogd.out", "internal.log"):
            try:
                with open(os.path.join(self.dir, name), errors="replace") as f:
                    out.append(f.read())
            except OSError:
                pass
        return "\n".join(out)


def _require_rsyslogd() -> None:
    if not os.access(RSYSLOGD, os.X_OK):
        require_real("rsyslogd is not installed (bash scripts/setup.sh installs it)")


@pytest.fixture
def short_dir():
    """A fresh directory with a short path under /tmp (for unix socket paths)."""
    path = tempfile.mkdtemp(prefix="vl.", dir="/tmp")
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _own_dir(short_dir: str, name: str) -> str:
    """A subdirectory of the test's short directory for one rsyslogd: each needs its own
    work directory and pid file, so that one test can start several."""
    path = os.path.join(short_dir, name)
    os.mkdir(path)
    return path


# Each line: "<PRI> <facility>.<severity> <TAG><MSG>" - the classic syslog file layout without
# date and host, so tests read the ident (TAG is "ident:") and the priority on every line:
#   "27 daemon.err alpha: 4711: error : main:12 : text"
DEVLOG_TEMPLATE = "%pri% %syslogfacility-text%.%syslogseverity-text% %syslogtag%%msg%\\n"


@pytest.fixture
def real_rsyslog_devlog(short_dir) -> Rsyslogd:
    """A real rsyslogd owning ``/dev/log`` for this test: ``/dev/log`` (private to the test
    run) points at its imuxsock socket, and is pointed back at journald afterwards. Each
    received message is one line of ``path``: ``"27 daemon.err alpha: 4711: error : f:1 : x"``
    (PRI, facility.severity, tag with its colon, message; control characters as ``#012``).
    Attributes: ``lines(count, timeout)``, ``text()``, ``path``, ``pid``, ``restart()``,
    ``stop()``, ``start()``, ``socket`` (the real socket path)."""
    _require_namespace("the /dev/log test")
    _require_rsyslogd()
    short_dir = _own_dir(short_dir, "devlog")
    sock = os.path.join(short_dir, "log.sock")
    conf = f"""\
global(workDirectory="{short_dir}" processInternalMessages="on")
module(load="imuxsock" SysSock.Use="off")
input(type="imuxsock" Socket="{sock}" RateLimit.Interval="0" ruleset="devlog")
template(name="devlog" type="string" string="{DEVLOG_TEMPLATE}")
ruleset(name="devlog") {{ action(type="omfile" file="{short_dir}/devlog.log" template="devlog") }}
*.* action(type="omfile" file="{short_dir}/internal.log")
"""
    rsyslog = Rsyslogd(conf, short_dir, os.path.join(short_dir, "devlog.log"),
                       lambda: dgram_listening(sock))
    rsyslog.socket = sock
    previous = os.readlink(DEV_LOG) if os.path.islink(DEV_LOG) else JOURNAL_DEV_LOG
    rsyslog.start()
    try:
        tmp_link = DEV_LOG + ".virlogd-test"
        if os.path.lexists(tmp_link):
            os.unlink(tmp_link)
        os.symlink(sock, tmp_link)
        os.replace(tmp_link, DEV_LOG)       # atomic: /dev/log is never missing
        yield rsyslog
    finally:
        tmp_link = DEV_LOG + ".virlogd-test"
        if os.path.lexists(tmp_link):
            os.unlink(tmp_link)
        os.symlink(previous, tmp_link)
        os.replace(tmp_link, DEV_LOG)
        rsyslog.stop()


REMOTE_TEMPLATE = ("app=%app-name% procid=%procid% msgid=%msgid% pri=%pri% "
                   "sd=%structured-data% msg=%msg%\\n")


def _port_file_ready(path: str):
    def ready():
        try:
            with open(path) as f:
                text = f.read().strip()
        except OSError:
            return False
        return text.isdigit() and int(text) > 0
    return ready


def _remote_conf(directory: str, port: int, tls: Optional[Dict[str, str]]) -> str:
    if tls is None:
        drivers, module = "", 'module(load="imtcp")'
    else:
        drivers = (f' defaultNetstreamDriver="gtls"'
                   f' defaultNetstreamDriverCAFile="{tls["ca"]}"'
                   f' defaultNetstreamDriverCertFile="{tls["cert"]}"'
                   f' defaultNetstreamDriverKeyFile="{tls["key"]}"')
        module = ('module(load="imtcp" StreamDriver.Name="gtls" StreamDriver.Mode="1" '
                  'StreamDriver.AuthMode="anon")')
    # Control characters kept as received: a test can see a newline arrive as a newline.
    return f"""\
global(workDirectory="{directory}" processInternalMessages="on" parser.escapeControlCharactersOnReceive="off"{drivers})
{module}
input(type="imtcp" address="127.0.0.1" port="{port}" listenPortFileName="{directory}/tcp.port" ruleset="remote")
template(name="t5424" type="string" string="{REMOTE_TEMPLATE}")
ruleset(name="remote") {{ action(type="omfile" file="{directory}/remote.log" template="t5424") }}
*.* action(type="omfile" file="{directory}/internal.log")
"""


class RsyslogServer(Rsyslogd):
    """An rsyslogd receiving RFC 5424 over TCP (optionally TLS) on 127.0.0.1. ``port``: where
    it listens (chosen by the kernel at the first start, kept on ``restart()``). Each message
    is one line of ``path`` (a message with embedded newlines spans several):
    ``app=libvirtd procid=42 msgid=ID1 pri=27 sd=[x@32473 k="v"] msg=text``."""

    def __init__(self, directory: str, tls: Optional[Dict[str, str]] = None) -> None:
        self.tls = tls
        self.port_file = os.path.join(directory, "tcp.port")
        super().__init__(_remote_conf(directory, 0, tls), directory,
                         os.path.join(directory, "remote.log"),
                         _port_file_ready(self.port_file))
        self.port = 0

    def start(self) -> None:
        if self.port:
            # A restart: listen on the same port again. rsyslog writes the port file only
            # for port 0, so readiness is now "accepts a connection".
            with open(self.conf, "w") as f:
                f.write(_remote_conf(self.dir, self.port, self.tls))
            self._ready = lambda: _tcp_accepts(self.port)
            super().start()
            return
        super().start()
        with open(self.port_file) as f:
            self.port = int(f.read().strip())


def _tcp_accepts(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


@pytest.fixture
def rsyslog_server(short_dir) -> RsyslogServer:
    """A real rsyslogd with imtcp on 127.0.0.1 (RFC 5424, octet-counted or LF framing), parsed
    into ``app=%app-name% procid=%procid% msgid=%msgid% pri=%pri% sd=%structured-data%
    msg=%msg%`` lines of ``path``, control characters kept. Attributes: ``port``,
    ``lines(count, timeout)``, ``text()``, ``pid``, ``restart()`` (same port), ``stop()``,
    ``start()``. Needs only rsyslogd, not root."""
    _require_rsyslogd()
    server = RsyslogServer(_own_dir(short_dir, "collector"))
    server.start()
    yield server
    server.stop()


def make_test_ca(directory: str) -> Dict[str, str]:
    """A throw-away CA and a server certificate for 127.0.0.1/localhost, made with openssl;
    returns the paths ``ca``, ``cert``, ``key`` (and ``ca_key``)."""
    d = Path(directory)
    paths = {"ca": str(d / "ca.pem"), "ca_key": str(d / "ca-key.pem"),
             "cert": str(d / "cert.pem"), "key": str(d / "key.pem")}
    (d / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n"
                               "extendedKeyUsage=serverAuth\n")

    def run(*args: str) -> None:
        done = subprocess.run(["openssl", *args], capture_output=True, text=True,
                              stdin=subprocess.DEVNULL)
        if done.returncode != 0:
            raise AssertionError(f"openssl {' '.join(args)} failed:\n{done.stderr}")

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj",
        "/CN=virlogd test CA", "-keyout", paths["ca_key"], "-out", paths["ca"])
    run("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost",
        "-keyout", paths["key"], "-out", str(d / "server.csr"))
    run("x509", "-req", "-in", str(d / "server.csr"), "-CA", paths["ca"], "-CAkey",
        paths["ca_key"], "-CAcreateserial", "-days", "2", "-extfile", str(d / "san.ext"),
        "-out", paths["cert"])
    return paths


@pytest.fixture
def rsyslog_tls_server(short_dir) -> RsyslogServer:
    """``rsyslog_server`` over TLS (rsyslog's gtls driver, anonymous client auth): a
    throw-away CA signs a certificate for 127.0.0.1 and localhost. Extra attributes:
    ``tls_port`` (same as ``port``), ``ca_file`` (the CA to verify the server with)."""
    _require_rsyslogd()
    if not any(os.path.exists(f"/usr/lib/{arch}/rsyslog/lmnsd_gtls.so")
               for arch in ("x86_64-linux-gnu", "aarch64-linux-gnu")) \
            and not any(Path("/usr/lib").glob("**/rsyslog/lmnsd_gtls.so")):
        require_real("rsyslog's TLS driver is not installed (Debian package rsyslog-gnutls)")
    if not shutil.which("openssl"):
        require_real("openssl is not installed")
    short_dir = _own_dir(short_dir, "tls")
    tls = make_test_ca(short_dir)
    server = RsyslogServer(short_dir, tls)
    server.start()
    server.tls_port = server.port
    server.ca_file = tls["ca"]
    yield server
    server.stop()


@pytest.fixture
def open_dir():
    """A directory every user may traverse (pytest's tmp_path is 0700), with a short path
    (socket paths inside it stay under AF_UNIX's limit): for daemons or clients run as
    another user."""
    path = tempfile.mkdtemp(prefix="vl.", dir="/tmp")
    os.chmod(path, 0o755)
    yield Path(path)
    shutil.rmtree(path, ignore_errors=True)
