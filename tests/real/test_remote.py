"""Forwarding to a real rsyslog (imtcp on 127.0.0.1): RFC 5424, octet counting, TCP and TLS."""
from __future__ import annotations

import os
import re
import socket

import pytest

from tests.conftest import wait_until
from virlogd.core.filters import FilterSet
from virlogd.outputs import OutputContext, build
from virlogd.outputs.remote import RemoteOutput, format_message
from virlogd.core.record import Record
from virlogd.core.router import Router, RouterState, start
from virlogd.core.specs import parse_outputs


def remote(url: str, **ctx) -> RemoteOutput:
    specs, err = parse_outputs(f"1:remote:{url}")
    assert err is None
    return build(specs[0], OutputContext(hostname="testhost", **ctx))


def send(out, *records: Record) -> None:
    """Give *records* to *out* as the router does: its two headers before the first."""
    for record in records:
        if not out.started:
            start(out, record.time)
        out.handle(record, "")
    try:
        out.flush()
    except ConnectionError:
        pass      # the router counts and reports it; see the test of that below


def numbered(count: int, start: int = 0):
    return [Record(2, "test.seq", f"seq {i}", pid=4242, ident="seqapp")
            for i in range(start, start + count)]


def messages(lines):
    return [line.split(" msg=", 1)[1] for line in lines]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_rsyslog_parses_app_name_procid_priority_and_structured_data(rsyslog_server):
    """Every header field and SD param reaches rsyslog as sent, escapes undone."""
    out = remote(f"tcp://127.0.0.1:{rsyslog_server.port}")
    try:
        send(out, Record(4, "qemu.monitor", "Failed to probe capabilities", pid=4711,
                         ident="libvirtd", func="virQEMUCapsProbe", line=278,
                         file="qemu_capabilities.c",
                         fields={"MESSAGE_ID": "8ae2f3fb-2dbe-498e-8fbd-012d40afa361",
                                 "LIBVIRT_QEMU_BINARY": 'C:\\qemu "kvm" [x]'}),
             Record(1, "util", "no ident", pid=99))
        assert out.wait_sent(5)
        lines = rsyslog_server.lines(4)
    finally:
        out.close()
    assert len(lines) == 4, lines
    version, hostname, error, debug = lines
    assert re.fullmatch(r'app=virlogd procid=\d+ msgid=- pri=30 '
                        r'sd=\[virlogd@32473 source="util.log"\] msg=virlogd version: \S+',
                        version), version
    assert hostname.endswith(" msg=hostname: testhost")
    assert error == ('app=libvirtd procid=4711 msgid=- pri=27 sd=[virlogd@32473 '
                     'source="qemu.monitor" func="virQEMUCapsProbe" line="278" '
                     'file="qemu_capabilities.c" '
                     'MESSAGE_ID="8ae2f3fb-2dbe-498e-8fbd-012d40afa361" '
                     'LIBVIRT_QEMU_BINARY="C:\\\\qemu \\"kvm\\" [x\\]"] '
                     'msg=Failed to probe capabilities')
    assert debug == ('app=virlogd procid=99 msgid=- pri=31 sd=[virlogd@32473 source="util"] '
                     'msg=no ident')


def test_the_message_is_rfc5424_with_octet_counting():
    """The bytes on the wire: <PRI>1 TIMESTAMP HOST APP PROCID - [SD] MSG."""
    record = Record(3, "a", "hi ]\"", pid=7, ident="my app", time=1700000000.25)
    assert format_message(record, "h", "virlogd") == (
        b'<28>1 2023-11-14T22:13:20.250000Z h my_app 7 - [virlogd@32473 source="a"] hi ]"')


def test_a_collector_restart_mid_stream_loses_nothing_and_keeps_the_order(rsyslog_server):
    """Records sent while rsyslog is down are held and delivered in order after it is back."""
    out = remote(f"tcp://127.0.0.1:{rsyslog_server.port}")
    try:
        send(out, *numbered(50))
        assert len(rsyslog_server.lines(52)) == 52
        rsyslog_server.stop()
        send(out, *numbered(50, 50))
        wait_until(lambda: out.last_error, 5, "the sender to notice the collector is gone")
        assert out.last_error == (f"cannot connect to tcp://127.0.0.1:{rsyslog_server.port}: "
                                  f"Connection refused")
        rsyslog_server.start()
        send(out, *numbered(50, 100))
        assert out.wait_sent(10)
        lines = rsyslog_server.lines(152, timeout=10)
    finally:
        out.close()
    assert messages(lines[2:]) == [f"seq {i}" for i in range(150)]
    assert out.dropped == 0


def test_records_beyond_the_queue_bound_are_counted_and_reported_in_the_stream(
        rsyslog_server):
    """Queue of 10 while the collector is down: the 15 oldest of 25 are dropped, counted, and
    reported first once it is back; the 10 newest follow in order."""
    out = remote(f"tcp://127.0.0.1:{rsyslog_server.port}", remote_queue_size=10)
    router = Router(RouterState(FilterSet([], 1), [out]))
    try:
        send(out, *numbered(1))
        assert len(rsyslog_server.lines(3)) == 3
        rsyslog_server.stop()
        for record in numbered(25, 1):
            router.route(record)
        assert router.stats()["outputs"][0]["dropped"] == 15
        rsyslog_server.start()
        assert out.wait_sent(10)
        router.route(numbered(1, 26)[0])
        assert out.wait_sent(10)
        lines = rsyslog_server.lines(15, timeout=10)
    finally:
        out.close()
    assert messages(lines[3:]) == [
        f"virlogd dropped the 15 oldest records held for tcp://127.0.0.1:{rsyslog_server.port}: "
        f"the queue of 10 records was full while the collector was unreachable"] + [
        f"seq {i}" for i in range(16, 27)]
    assert lines[3].startswith("app=virlogd procid=%d msgid=- pri=28 sd=[virlogd@32473 "
                               "source=\"virlogd.remote\"] " % os.getpid())


def test_an_unreachable_collector_is_reported_on_the_other_outputs(tmp_path):
    """The router's failure report names the URL, the reason and how much is held."""
    port = free_port()
    out = remote(f"tcp://127.0.0.1:{port}", remote_queue_size=10)
    specs, _ = parse_outputs(f"1:file:{tmp_path}/local.log")
    local = build(specs[0], OutputContext())
    router = Router(RouterState(FilterSet([], 1), [out, local]))
    try:
        router.route(Record(2, "a", "first"))
        wait_until(lambda: out.last_error, 5, "the connection to fail")
        router.flush()
    finally:
        out.close()
        local.close()
    text = (tmp_path / "local.log").read_text()
    assert (f": error : output '1:remote:tcp://127.0.0.1:{port}' failed: cannot connect to "
            f"tcp://127.0.0.1:{port}: Connection refused; holding 3 records (queue of 10) "
            f"(1 failure so far)\n") in text
    assert router.stats()["outputs"][0]["failed"] == 1


def test_tls_delivers_to_rsyslog_verified_against_the_configured_ca(rsyslog_tls_server):
    """tls://: the server certificate is checked against remote_ca_file; records arrive."""
    out = remote(f"tls://127.0.0.1:{rsyslog_tls_server.port}",
                 remote_ca_file=rsyslog_tls_server.ca_file)
    try:
        send(out, *numbered(20))
        assert out.wait_sent(5)
        lines = rsyslog_tls_server.lines(22)
    finally:
        out.close()
    assert messages(lines[2:]) == [f"seq {i}" for i in range(20)]
    assert lines[2].startswith('app=seqapp procid=4242 msgid=- pri=30 '
                               'sd=[virlogd@32473 source="test.seq"]')


def test_tls_refuses_a_server_the_ca_file_does_not_vouch_for(rsyslog_tls_server, tmp_path):
    """Verified against the system CAs (no remote_ca_file), the test server is refused."""
    out = remote(f"tls://localhost:{rsyslog_tls_server.port}")
    try:
        send(out, *numbered(1))
        wait_until(lambda: out.last_error, 5, "the handshake to fail")
        assert out.last_error == (
            f"TLS handshake with tls://localhost:{rsyslog_tls_server.port} failed: "
            f"unable to get local issuer certificate (checked against the system CAs)")
        assert not out.wait_sent(0.2)
    finally:
        out.close()
    assert rsyslog_tls_server.lines(1, timeout=0.2) == []


def test_a_missing_ca_file_refuses_the_output_naming_the_file():
    """A CA file that cannot be read stops the output being built, with the path and why."""
    with pytest.raises(ValueError) as err:
        remote("tls://127.0.0.1:6514", remote_ca_file="/nonexistent/ca.pem")
    assert str(err.value) == ("cannot load the CA file '/nonexistent/ca.pem' (remote_ca_file): "
                              "No such file or directory")


def test_the_daemon_forwards_a_clients_records_with_its_ident_and_pid(tmp_path, rsyslog_server):
    """virlogd -> rsyslog: a virlog record arrives with the client's pid, source and field."""
    from tests.daemonproc import Daemon
    daemon = Daemon(tmp_path, ["--log-level", "1"],
                    outputs=f"1:remote:tcp://127.0.0.1:{rsyslog_server.port}")
    try:
        done = daemon.virlog("-p", "warning", "-s", "qemu.monitor", "--field", "CODE=7",
                             "forwarded")
        assert done.returncode == 0, done.stderr
        lines = rsyslog_server.lines(3)
    finally:
        assert daemon.stop() == 0
    record = [line for line in lines if line.endswith(" msg=forwarded")]
    assert len(record) == 1, lines
    found = re.fullmatch(r'app=\S+ procid=(\d+) msgid=- pri=28 sd=\[virlogd@32473 '
                         r'source="qemu.monitor" CODE="7"\] msg=forwarded', record[0])
    assert found, record
    assert int(found.group(1)) != daemon.pid        # the client's pid, not the relay's


# -- RFC 5424: every PARAM-VALUE UTF-8 (§6.3.3), the BOM rules of MSG (§6.4) ----------------
def not_utf8(data: bytes) -> str:
    """What a client's bytes that are not UTF-8 look like in a record (surrogateescape)."""
    return data.decode("utf-8", "surrogateescape")


def test_bytes_that_are_not_utf8_are_escaped_reversibly_in_structured_data():
    """A field value and a relayed tag with bytes that are not UTF-8: \\xHH, a literal \\x
    as \\x5c, then the SD escapes; unreversible() gives the bytes back."""
    from virlogd.outputs.remote import reversible, unreversible
    record = Record(3, not_utf8(b"tag\xff"), "m", pid=7, ident=not_utf8(b"tag\xff"),
                    time=1700000000.25,
                    fields={"X": not_utf8(b"\xc3\xa9\xe9 C:\\xen"), "B": b"\xff\"]"})
    assert format_message(record, "h", "virlogd") == (
        b'<28>1 2023-11-14T22:13:20.250000Z h tag_ 7 - [virlogd@32473 source="tag\\\\xff" '
        b'X="\xc3\xa9\\\\xe9 C:\\\\x5cxen" B="\\\\xff\\"\\]"] m')
    for raw in (b"\xc3\xa9\xe9 C:\\xen", b"\\x41", b"\xed\xa0\x80", b"plain", b"\\"):
        assert unreversible(reversible(not_utf8(raw))) == raw


@pytest.mark.parametrize("message, wire", [
    ("plain ASCII", b"plain ASCII"),
    ("h\xe9llo \u2713", b"\xef\xbb\xbfh\xc3\xa9llo \xe2\x9c\x93"),
    ("\ufeffits own BOM", b"\xef\xbb\xbf\xef\xbb\xbfits own BOM"),
    (not_utf8(b"\xef\xbb\xbf\xff after a BOM"), b"\xef\xbb\xbf\xef\xbb\xbf\\xff after a BOM"),
    (not_utf8(b"no BOM \xc3( bad"), b"no BOM \\xc3( bad"),
])
def test_msg_follows_the_bom_rules(message, wire):
    """ASCII as it is; other UTF-8 after a BOM (MUST); never a BOM before invalid UTF-8."""
    head = b'<28>1 2023-11-14T22:13:20.250000Z h a 7 - [virlogd@32473 source="a"] '
    assert format_message(Record(3, "a", message, pid=7, ident="a", time=1700000000.25),
                          "h", "virlogd") == head + wire


def test_rsyslog_parses_frames_with_non_utf8_fields_tags_and_messages(rsyslog_server):
    """Beside syslog-ng (test_syslog_ng.py): rsyslog parses every header field and the SD of
    each frame, and what it writes is valid UTF-8."""
    out = remote(f"tcp://127.0.0.1:{rsyslog_server.port}")
    records = [Record(3, not_utf8(b"tag\xfe"), "relayed", pid=11, ident=not_utf8(b"tag\xfe")),
               Record(3, "f", not_utf8(b"\xef\xbb\xbf\xff"), pid=12, ident="a",
                      fields={"LIBVIRT_V": not_utf8(b"\xff\\x")}),
               Record(3, "u", "\u00e9t\u00e9", pid=13, ident="a")]
    try:
        send(out, *records)
        assert out.wait_sent(5)
        lines = rsyslog_server.lines(5)
    finally:
        out.close()
    assert lines[2:] == [
        'app=tag_ procid=11 msgid=- pri=28 sd=[virlogd@32473 source="tag\\\\xfe"] msg=relayed',
        'app=a procid=12 msgid=- pri=28 sd=[virlogd@32473 source="f" '
        'LIBVIRT_V="\\\\xff\\\\x5cx"] msg=\ufeff\ufeff\\xff',
        'app=a procid=13 msgid=- pri=28 sd=[virlogd@32473 source="u"] msg=\ufeff\u00e9t\u00e9']
    rsyslog_server.text().encode("utf-8", "surrogateescape").decode("utf-8")
