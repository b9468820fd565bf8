"""journald's native protocol as the journald output writes it: fields, their order, the
binary-safe form, renamed names, the sealed memfd for big entries, and delivery failures.

Where it matters, the bytes are compared with what systemd-python's ``journal.sendv`` (that
is, libsystemd's ``sd_journal_sendv``) puts on the wire: a helper process in its own mount
namespace binds a capture socket at the hard-coded ``/run/systemd/journal/socket``.
"""
from __future__ import annotations

import array
import fcntl
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time

import pytest
from hypothesis import given, strategies as st

from conftest import require_real
from virlogd.outputs import OutputContext
from virlogd.outputs.dgram import DeliveryError
from virlogd.outputs.journald import (JournaldOutput, encode_entry, encode_field,
                                      entry_payload, journal_fields, record_payload)
from virlogd.core.record import Record
from virlogd.core.specs import OutputSpec

PID = os.getpid()
LIBVIRT_ID = "8ae2f3fb-2dbe-498e-8fbd-012d40afa361"


def libvirt_record(message="Failed to probe capabilities for /bin/qemu-system-xtensa",
                **kw) -> Record:
    args = dict(func="virQEMUCapsNewForBinaryInternal", line=5411,
                file="../src/qemu/qemu_capabilities.c", pid=PID,
                fields={"MESSAGE_ID": LIBVIRT_ID, "LIBVIRT_QEMU_BINARY": "/bin/qemu-system-xtensa"})
    args.update(kw)
    return Record(4, "qemu.qemu_capabilities", message, **args)


# -- one field -------------------------------------------------------------------------------
@pytest.mark.parametrize("value, wire", [
    ("plain text", b"MESSAGE=plain text\n"),
    ("", b"MESSAGE=\n"),
    ("caf\u00e9 = tea", "MESSAGE=caf\u00e9 = tea\n".encode()),
    (42, b"MESSAGE=42\n"),
    ("two\nlines", b"MESSAGE\n" + struct.pack("<Q", 9) + b"two\nlines\n"),
    ("nul\0inside", b"MESSAGE\n" + struct.pack("<Q", 10) + b"nul\0inside\n"),
    (b"\xff\xfe raw", b"MESSAGE=\xff\xfe raw\n"),
    ("undecodable \udcff", b"MESSAGE=undecodable \xff\n"),
])
def test_a_field_is_name_equals_value_or_the_binary_safe_form(value, wire):
    """NAME=value; a value with a newline or NUL goes as NAME, LF, 64-bit LE length, bytes."""
    assert encode_field("MESSAGE", value) == wire


field_values = st.one_of(
    st.text(max_size=30),
    st.text(alphabet="ab\n\0\u00e9\udcff", max_size=8),      # newline, NUL, escaped byte
    st.text(alphabet=st.characters(exclude_categories=()), max_size=6),   # any surrogate
    st.binary(max_size=10), st.integers(-5, 10**6))


@given(st.dictionaries(st.from_regex(r"[A-Z][A-Z0-9_]{0,10}", fullmatch=True), field_values,
                       max_size=8))
def test_the_one_pass_payload_is_the_fields_one_by_one(fields):
    """entry_payload (what is sent) is the field-by-field encoding joined, byte for byte, and
    fails with the same error where that fails (a surrogate no byte stands for)."""
    try:
        expected = b"".join(encode_entry(fields))
    except UnicodeEncodeError as err:
        with pytest.raises(UnicodeEncodeError) as raised:
            entry_payload(fields)
        assert str(raised.value) == str(err)
    else:
        assert entry_payload(fields) == expected


plain_or_odd = st.one_of(st.text(max_size=20), st.text(alphabet="ab\n\0\udcff\ud800", max_size=6))


@given(priority=st.integers(0, 5), source=plain_or_odd, message=plain_or_odd,
       file=st.one_of(st.none(), plain_or_odd), func=st.one_of(st.none(), plain_or_odd),
       line=st.one_of(st.none(), st.integers(0, 99999)),
       pid=st.sampled_from([PID, 1, 4242]), uid=st.one_of(st.none(), st.integers(0, 70000)),
       gid=st.one_of(st.none(), st.integers(0, 70000)), ident=st.one_of(st.none(), plain_or_odd),
       fields=st.one_of(st.just({}), st.dictionaries(st.sampled_from(
           ["MESSAGE_ID", "PRIORITY", "OBJECT_PID", "bad name"]), field_values, max_size=3)))
def test_the_payload_built_from_the_record_is_the_fields_payload(
        priority, source, message, file, func, line, pid, uid, gid, ident, fields):
    """record_payload (the output's path) is entry_payload(journal_fields(...)) byte for
    byte, on own and relayed records, odd text included, and fails alike."""
    record = Record(priority, source, message, func=func, line=line, file=file, pid=pid,
                    uid=uid, gid=gid, ident=ident, fields=fields)
    try:
        expected = entry_payload(journal_fields(record, PID))
    except UnicodeEncodeError as err:
        with pytest.raises(UnicodeEncodeError) as raised:
            record_payload(record, PID)
        assert str(raised.value) == str(err)
    else:
        assert record_payload(record, PID) == expected


def test_the_usual_record_never_builds_the_fields_dict(monkeypatch):
    """The fast path is taken for plain own and relayed records (else it would only ever
    cost a check): the reference path is not called."""
    from virlogd.outputs import journald
    records = [Record(2, "util", "plain text", func="f", line=3, file="a.py", pid=PID),
               Record(2, "util", "caf\u00e9 \udcff", pid=4242, uid=0, gid=0, ident="x")]
    expected = [entry_payload(journal_fields(r, PID)) for r in records]
    monkeypatch.setattr(journald, "journal_fields", None)
    assert [record_payload(r, PID) for r in records] == expected


# -- the fields of one entry -----------------------------------------------------------------
def test_a_libvirt_record_gives_libvirts_fields_in_libvirts_order():
    """MESSAGE, PRIORITY, SYSLOG_FACILITY, LIBVIRT_SOURCE, CODE_*, then the record's fields."""
    assert journal_fields(libvirt_record(), PID) == {
        "MESSAGE": "Failed to probe capabilities for /bin/qemu-system-xtensa",
        "PRIORITY": "3",
        "SYSLOG_FACILITY": "3",
        "LIBVIRT_SOURCE": "qemu.qemu_capabilities",
        "CODE_FILE": "../src/qemu/qemu_capabilities.c",
        "CODE_LINE": "5411",
        "CODE_FUNC": "virQEMUCapsNewForBinaryInternal",
        "MESSAGE_ID": LIBVIRT_ID,
        "LIBVIRT_QEMU_BINARY": "/bin/qemu-system-xtensa",
    }
    assert list(journal_fields(libvirt_record(), PID)) == [
        "MESSAGE", "PRIORITY", "SYSLOG_FACILITY", "LIBVIRT_SOURCE", "CODE_FILE", "CODE_LINE",
        "CODE_FUNC", "MESSAGE_ID", "LIBVIRT_QEMU_BINARY"]


@pytest.mark.parametrize("level, priority", [(1, "7"), (2, "6"), (3, "4"), (4, "3")])
def test_priority_follows_libvirts_map(level, priority):
    """debug 7, info 6, warning 4, error 3."""
    assert journal_fields(Record(level, "src", "m", pid=PID), PID)["PRIORITY"] == priority


def test_code_fields_are_left_out_when_unknown():
    """A record with no file, line or function has no CODE_* fields (not empty ones)."""
    assert list(journal_fields(Record(2, "src", "m", pid=PID), PID)) == [
        "MESSAGE", "PRIORITY", "SYSLOG_FACILITY", "LIBVIRT_SOURCE"]


def test_a_relayed_record_carries_the_clients_identity():
    """A record from another process: SYSLOG_IDENTIFIER, SYSLOG_PID, OBJECT_PID/UID/GID."""
    fields = journal_fields(Record(3, "qemu", "m", pid=4242, uid=107, gid=108, ident="qemu-kvm"),
                            PID)
    assert {k: fields[k] for k in list(fields)[4:]} == {
        "SYSLOG_IDENTIFIER": "qemu-kvm", "SYSLOG_PID": "4242", "OBJECT_PID": "4242",
        "OBJECT_UID": "107", "OBJECT_GID": "108"}
    assert journal_fields(Record(3, "qemu", "m", pid=4242), PID)["SYSLOG_IDENTIFIER"] == "qemu"


@pytest.mark.parametrize("client, expected", [
    ({"message_id": "a"}, {"MESSAGE_ID": "a"}),
    ({"_PID": "1"}, {"X_PID": "1"}),
    ({"1ST": "x"}, {"X_1ST": "x"}),
    ({"LIBVIRT-DOMAIN": "d"}, {"LIBVIRT_DOMAIN": "d"}),
    ({"MESSAGE": "forged"}, {"X_MESSAGE": "forged"}),
    ({"PRIORITY": "0"}, {"X_PRIORITY": "0"}),
    ({"CODE_FUNC": "f"}, {"X_CODE_FUNC": "f"}),
    ({"LOWER": "a", "lower": "b"}, {"LOWER": "a", "X_LOWER": "b"}),
    ({"N" * 70: "long"}, {"N" * 64: "long"}),
    ({"FORGED\n": "x"}, {"FORGED_": "x"}),       # a newline would split the native field
])
def test_a_name_journald_would_drop_or_that_collides_keeps_its_data_under_a_valid_name(
        client, expected):
    """Lower case, a leading '_' or digit, '-', >64 bytes, one of our names: renamed, kept."""
    fields = journal_fields(Record(2, "src", "m", pid=PID, fields=client), PID)
    assert {k: fields[k] for k in list(fields)[4:]} == expected


def test_a_client_cannot_forge_the_identity_of_a_relayed_record():
    """SYSLOG_IDENTIFIER / OBJECT_PID sent as fields stay the client's data, renamed."""
    fields = journal_fields(Record(2, "src", "m", pid=4242, ident="real",
                                   fields={"SYSLOG_IDENTIFIER": "fake", "OBJECT_PID": "1"}),
                            PID)
    assert (fields["SYSLOG_IDENTIFIER"], fields["OBJECT_PID"]) == ("real", "4242")
    assert (fields["X_SYSLOG_IDENTIFIER"], fields["X_OBJECT_PID"]) == ("fake", "1")


# -- one datagram, or a sealed memfd ---------------------------------------------------------
@pytest.fixture
def receiver():
    """A datagram socket standing in for journald, at a short path."""
    directory = tempfile.mkdtemp(prefix="vl.", dir="/tmp")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(os.path.join(directory, "socket"))
    sock.settimeout(5)
    yield sock
    sock.close()
    shutil.rmtree(directory)


def receive(sock):
    """(how, payload, seals): 'dgram' and its bytes, or 'fd' and the passed file's bytes."""
    data, anc, _flags, _addr = sock.recvmsg(16 << 20, socket.CMSG_SPACE(4 * 4))
    fds = []
    for level, kind, payload in anc:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds += array.array("i", payload[:len(payload) - len(payload) % 4])
    if not fds:
        return "dgram", data, None
    assert data == b"" and len(fds) == 1
    try:
        size = os.fstat(fds[0]).st_size
        seals = fcntl.fcntl(fds[0], getattr(fcntl, "F_GET_SEALS", 1034))
        return "fd", os.pread(fds[0], size, 0), seals
    finally:
        os.close(fds[0])


def output_to(sock, **kw) -> JournaldOutput:
    return JournaldOutput(OutputSpec(1, "journald"), OutputContext(pid=PID),
                          path=sock.getsockname(), **kw)


def test_a_record_is_one_datagram_holding_exactly_its_encoded_fields(receiver):
    """handle() sends the entry's fields, nothing else, in one datagram."""
    output_to(receiver).handle(libvirt_record(), "")
    assert receive(receiver) == ("dgram", b"".join(encode_entry(journal_fields(libvirt_record(),
                                                                               PID))), None)


def test_an_entry_too_big_for_a_datagram_goes_in_a_sealed_memfd(receiver):
    """1 MiB: a file descriptor, sealed against every change, holding the whole entry."""
    record = libvirt_record(message="x" * (1 << 20))
    output_to(receiver).handle(record, "")
    how, payload, seals = receive(receiver)
    assert how == "fd"
    assert payload == b"".join(encode_entry(journal_fields(record, PID)))
    assert seals == 15          # F_SEAL_SEAL | F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE


# -- delivery failures -----------------------------------------------------------------------
def test_a_missing_journal_socket_raises_a_delivery_error_saying_so(tmp_path):
    """No socket file: 'cannot reach journald at PATH: No such file or directory'."""
    path = str(tmp_path / "socket")
    out = JournaldOutput(OutputSpec(1, "journald"), OutputContext(pid=PID), path=path)
    with pytest.raises(DeliveryError) as err:
        out.handle(libvirt_record(), "")
    assert str(err.value) == f"cannot reach journald at {path}: No such file or directory"


def test_a_stale_journal_socket_raises_connection_refused_then_recovers(receiver):
    """A dead journald's socket refuses; a new one bound at the same path gets the next one."""
    path = receiver.getsockname()
    out = output_to(receiver)
    receiver.close()
    with pytest.raises(DeliveryError) as err:
        out.handle(libvirt_record(), "")
    assert str(err.value) == f"cannot reach journald at {path}: Connection refused"
    os.unlink(path)
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as again:
        again.bind(path)
        again.settimeout(5)
        out.handle(libvirt_record(message="back"), "")
        assert b"MESSAGE=back\n" in receive(again)[1]


def test_a_journald_that_does_not_read_costs_one_bounded_wait_then_drops_are_counted(receiver):
    """Queue full: one send waits `wait` s, later ones drop at once, each drop counted."""
    out = output_to(receiver, wait=0.2)
    sent = 0
    start = time.monotonic()
    with pytest.raises(DeliveryError) as err:
        for sent in range(1, 1000):       # net.unix.max_dgram_qlen (10 here) fills the queue
            out.handle(libvirt_record(), "")
    assert str(err.value) == (f"journald at {receiver.getsockname()} is not keeping up: "
                              f"record dropped (1 dropped so far)")
    assert 0.15 < time.monotonic() - start < 5
    again = time.monotonic()
    with pytest.raises(DeliveryError) as err:
        out.handle(libvirt_record(), "")
    assert time.monotonic() - again < 0.1
    assert str(err.value).endswith("record dropped (2 dropped so far)")
    assert out.dropped == 2
    receive(receiver)                      # journald reads again: the next send succeeds
    out.handle(libvirt_record(message="flowing"), "")


# -- the same bytes as libsystemd ------------------------------------------------------------
CAPTURE = r"""
import array, json, os, socket, sys
from systemd import journal
srv = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
srv.bind("/run/systemd/journal/socket")
journal.sendv(*[bytes.fromhex(arg) for arg in json.load(sys.stdin)])
data, anc, _, _ = srv.recvmsg(16 << 20, socket.CMSG_SPACE(16))
how = "dgram"
for level, kind, payload in anc:
    if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
        fd = array.array("i", payload[:4])[0]
        data, how = os.pread(fd, os.fstat(fd).st_size, 0), "fd"
sys.stdout.buffer.write(how.encode() + b"\n" + data)
"""


def sd_journal_sendv(lines) -> bytes:
    """What libsystemd sends for ``journal.sendv(*lines)``: captured in a private mount
    namespace where a tmpfs hides the real /run (on the host there may be no journal dir)."""
    if os.geteuid() != 0 or not shutil.which("unshare"):
        require_real("capturing sd_journal_sendv needs root and unshare(1)")
    try:
        import systemd.journal  # noqa: F401
    except ImportError:
        require_real("systemd-python is not installed")
    run = subprocess.run(
        ["unshare", "-m", "sh", "-c",
         'mount -t tmpfs tmpfs /run && mkdir -p /run/systemd/journal && exec "$0" -c "$1"',
         sys.executable, CAPTURE], input=json.dumps([line.hex() for line in lines]).encode(),
        capture_output=True, timeout=10)
    assert run.returncode == 0, run.stderr.decode(errors="replace")
    return run.stdout.split(b"\n", 1)[1]


def as_sendv_lines(fields) -> list:
    """NAME=value lines as journal.sendv takes them (it encodes the binary-safe form itself)."""
    return [name.encode() + b"=" + (value if isinstance(value, bytes) else
                                    str(value).encode("utf-8", "surrogateescape"))
            for name, value in fields.items()]


@pytest.mark.parametrize("record", [
    Record(4, "qemu.qemu_capabilities", "probe failed", func="f", line=1, file="a.c", pid=4242,
           ident="libvirtd", fields={"MESSAGE_ID": LIBVIRT_ID, "LIBVIRT_QEMU_BINARY": "/bin/q"}),
    Record(1, "util", "first line\nsecond line\n", pid=4242, ident="x",
           fields={"LIBVIRT_XML": "<domain>\n  <name>x</name>\n</domain>"}),
    Record(2, "util", "caf\u00e9 \udcff", pid=4242, ident="x", fields={"RAW": b"\x01\xff"}),
    Record(3, "util", "m" * 300_000, pid=4242, ident="big"),
], ids=["libvirt", "newlines", "non-utf8", "300kB"])
def test_the_wire_bytes_are_the_same_as_sd_journal_sendv(record):
    """For the same fields, our datagram (or memfd) holds what libsystemd would send."""
    fields = journal_fields(record, PID)
    assert record_payload(record, PID) == entry_payload(fields) == \
        b"".join(encode_entry(fields)) == sd_journal_sendv(as_sendv_lines(fields))
