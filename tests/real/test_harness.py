"""The real receivers the other tests rely on: each fixture receives what a plain client sends."""
import socket
import ssl
import subprocess
import sys
import uuid

import pytest

from conftest import require_real


def test_require_real_fails_instead_of_skipping_in_ci(tmp_path):
    """With CI set a missing real component is a failure; without it, a skip with the reason."""
    (tmp_path / "test_x.py").write_text(
        "from conftest import require_real\n"
        "def test_x():\n    require_real('no journald here')\n")
    for helper in ("conftest.py", "daemonproc.py"):
        (tmp_path / helper).write_text(open(__file__.rsplit("/", 2)[0] + "/" + helper).read())
    env_ci = {"CI": "true", "PATH": "/usr/bin:/bin"}
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                          "-rs", str(tmp_path)], capture_output=True, text=True,
                         cwd=tmp_path, env=env_ci)
    assert run.returncode == 1, run.stdout
    assert "real-component test cannot run in CI: no journald here" in run.stdout
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                          "-rs", str(tmp_path)], capture_output=True, text=True,
                         cwd=tmp_path, env={"PATH": "/usr/bin:/bin"})
    assert run.returncode == 0, run.stdout
    assert "no journald here" in run.stdout and "1 skipped" in run.stdout


def test_real_journald_returns_a_raw_datagram_and_survives_a_restart(real_journald):
    """A native-protocol datagram is read back with journalctl, before and after a restart."""
    run = uuid.uuid4().hex
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.sendto(f"MESSAGE=before\nTEST_RUN={run}\n".encode(), real_journald.socket)
        old_pid = real_journald.pid
        assert [e["MESSAGE"] for e in real_journald.query(f"TEST_RUN={run}")] == ["before"]
        real_journald.restart()
        assert real_journald.pid != old_pid
        sock.sendto(f"MESSAGE=after\nTEST_RUN={run}\n".encode(), real_journald.socket)
    entries = real_journald.query(f"TEST_RUN={run}", count=2)
    assert [e["MESSAGE"] for e in entries] == ["before", "after"]
    assert int(entries[1]["_PID"]) > 0


def test_a_stopped_journald_refuses_datagrams_until_started(real_journald):
    """stop() leaves a stale socket (ECONNREFUSED), as a crashed journald does."""
    real_journald.stop()
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        with pytest.raises(ConnectionRefusedError):
            sock.sendto(b"MESSAGE=lost\n", real_journald.socket)
        real_journald.start()
        run = uuid.uuid4().hex
        sock.sendto(f"MESSAGE=back\nTEST_RUN={run}\n".encode(), real_journald.socket)
    assert [e["MESSAGE"] for e in real_journald.query(f"TEST_RUN={run}")] == ["back"]


def test_real_rsyslog_devlog_receives_what_syslog3_sends_to_dev_log(real_rsyslog_devlog):
    """Python's syslog module (glibc's syslog(3)) reaches rsyslog's file via /dev/log."""
    code = ("import syslog; syslog.openlog('probe', 0, syslog.LOG_DAEMON); "
            "syslog.syslog(syslog.LOG_WARNING, 'hello from syslog(3)')")
    subprocess.run([sys.executable, "-c", code], check=True)
    assert real_rsyslog_devlog.lines() == ["28 daemon.warning probe: hello from syslog(3)"]
    real_rsyslog_devlog.restart()
    subprocess.run([sys.executable, "-c", code.replace("hello", "again")], check=True)
    assert real_rsyslog_devlog.lines(2)[1] == "28 daemon.warning probe: again from syslog(3)"


def frame(msg: bytes) -> bytes:
    return str(len(msg)).encode() + b" " + msg


MSG = b'<27>1 2026-11-23T14:29:04.771Z host libvirtd 42 ID1 [x@32473 k="v"] two\nlines'
LINE = ['app=libvirtd procid=42 msgid=ID1 pri=27 sd=[x@32473 k="v"] msg=two', "lines"]


def test_rsyslog_server_parses_octet_counted_rfc5424_and_keeps_its_port(rsyslog_server):
    """Frames over TCP arrive parsed, newlines intact; after a restart the port is the same."""
    with socket.create_connection(("127.0.0.1", rsyslog_server.port), timeout=5) as conn:
        conn.sendall(frame(MSG))
    assert rsyslog_server.lines(2) == LINE
    port = rsyslog_server.port
    rsyslog_server.restart()
    assert rsyslog_server.port == port
    with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
        conn.sendall(frame(MSG.replace(b"two", b"three")))
    assert rsyslog_server.lines(4)[2] == LINE[0].replace("two", "three")


def test_rsyslog_tls_server_accepts_a_client_that_verifies_it(rsyslog_tls_server):
    """A TLS client verifying the test CA and the name 127.0.0.1 gets its frame through."""
    ctx = ssl.create_default_context(cafile=rsyslog_tls_server.ca_file)
    with socket.create_connection(("127.0.0.1", rsyslog_tls_server.tls_port), timeout=5) as raw:
        with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as conn:
            conn.sendall(frame(MSG))
    assert rsyslog_tls_server.lines(2) == LINE


def test_rsyslog_tls_server_is_not_trusted_without_the_test_ca(rsyslog_tls_server):
    """The system CAs do not know the throw-away CA: verification fails."""
    ctx = ssl.create_default_context()
    with socket.create_connection(("127.0.0.1", rsyslog_tls_server.tls_port), timeout=5) as raw:
        with pytest.raises(ssl.SSLCertVerificationError):
            ctx.wrap_socket(raw, server_hostname="127.0.0.1")


def test_require_real_is_importable_from_the_conftest():
    """Other test files call conftest.require_real(reason) directly."""
    assert callable(require_real)
