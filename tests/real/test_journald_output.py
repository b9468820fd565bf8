"""``x:journald`` through the library, in a real process, read back from a real journald with
journalctl: libvirt's QEMU-probe example, big / multi-line / binary values, an outage
mid-stream, and field names journald would drop."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import uuid

from programs import line_of, write_program
from journal_checks import (SEED_BINARY, SEED_MESSAGE_ID, SEED_SOURCE, check_seed_entry)
from conftest import wait_until

JOURNAL_SOCKET = "/run/systemd/journal/socket"


def run(path: str, **kw) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, path], stdin=subprocess.DEVNULL, capture_output=True,
                          text=True, timeout=30, **kw)
    assert done.returncode == 0, done.stderr
    return done


SEED_PROGRAM = """
virlogd.configure(outputs="1:journald")
log = virlogd.getLogger(SOURCE)

def virQEMUCapsNewForBinaryInternal(binary):
    log.error("Failed to probe capabilities for %s", binary,  # the example's call
              message_id=MESSAGE_ID, fields={"LIBVIRT_QEMU_BINARY": binary})

import os
print(os.getpid(), flush=True)
virQEMUCapsNewForBinaryInternal(BINARY)
"""


def test_the_seeds_record_is_found_by_the_seeds_journalctl_query(real_journald, tmp_path):
    """journalctl MESSAGE_ID=8ae2f3fb-... --output=json returns every field the example
    sets (libvirt's own journald fields)."""
    prog = write_program(tmp_path, SEED_PROGRAM, SOURCE=SEED_SOURCE, MESSAGE_ID=SEED_MESSAGE_ID,
                         BINARY=SEED_BINARY)
    pid = run(prog).stdout.strip()
    real_journald.query(f"MESSAGE_ID={SEED_MESSAGE_ID}", f"_PID={pid}")   # wait for it
    seed_query = subprocess.run(
        ["journalctl", f"MESSAGE_ID={SEED_MESSAGE_ID}", "--output=json", "--no-pager"],
        capture_output=True, text=True, check=True, timeout=10)
    mine = [entry for entry in map(json.loads, seed_query.stdout.splitlines())
            if entry["_PID"] == pid]
    assert len(mine) == 1
    check_seed_entry(mine[0], code_file=prog, code_line=line_of(prog, "# the example's call"),
                     code_func="virQEMUCapsNewForBinaryInternal")
    assert mine[0]["_TRANSPORT"] == "journal"


def test_the_output_announces_version_and_hostname_before_its_first_record(
        real_journald, tmp_path):
    """Two info entries from util.log precede the first record, as in libvirt."""
    prog = write_program(tmp_path, """
        virlogd.configure(outputs="4:journald")
        import os
        print(os.getpid(), flush=True)
        virlogd.getLogger("app").error("first")
        """)
    pid = run(prog).stdout.strip()
    entries = real_journald.query(f"_PID={pid}", count=3)
    assert [(e["LIBVIRT_SOURCE"], e["PRIORITY"], e["MESSAGE"].split(":")[0]) for e in entries] \
        == [("util.log", "6", "virlogd version"), ("util.log", "6", "hostname"),
            ("app", "3", "first")]


BIG_PROGRAM = """
virlogd.configure(level=1, outputs="1:journald")
log = virlogd.getLogger("test.big")
log.info("%s", "x" * (1 << 20) + "END", fields={"TEST_RUN": RUN, "TEST_CASE": "big"})
log.info("line one\\nline two\\n\\nline four", fields={"TEST_RUN": RUN, "TEST_CASE": "lines",
         "LIBVIRT_XML": "<domain>\\n  <name>vm1</name>\\n</domain>\\n"})
log.info("nul\\0and \\x1b escape", fields={"TEST_RUN": RUN, "TEST_CASE": "binary",
         "TEST_BYTES": bytes(range(256)), "TEST_UTF8": "caf\\u00e9 \\u2603"})
"""


def test_big_multiline_and_binary_values_arrive_byte_for_byte(real_journald, tmp_path):
    """A 1 MiB message, newlines, NUL, all 256 byte values: journald stores them intact."""
    run_id = uuid.uuid4().hex
    run(write_program(tmp_path, BIG_PROGRAM, RUN=run_id))
    by_case = {e["TEST_CASE"]: e for e in real_journald.query(f"TEST_RUN={run_id}", count=3)}
    value = real_journald.entry_bytes
    assert value(by_case["big"], "MESSAGE") == b"x" * (1 << 20) + b"END"
    assert value(by_case["lines"], "MESSAGE") == b"line one\nline two\n\nline four"
    assert value(by_case["lines"], "LIBVIRT_XML") == b"<domain>\n  <name>vm1</name>\n</domain>\n"
    assert value(by_case["binary"], "MESSAGE") == b"nul\0and \x1b escape"
    assert value(by_case["binary"], "TEST_BYTES") == bytes(range(256))
    assert value(by_case["binary"], "TEST_UTF8") == "caf\u00e9 \u2603".encode()


STREAM_PROGRAM = """
import json
virlogd.configure(level=1, outputs="1:journald 1:file:" + LOG)
log = virlogd.getLogger("test.stream")
for command in sys.stdin:            # "FIRST COUNT": log records FIRST..FIRST+COUNT-1
    first, count = map(int, command.split())
    for n in range(first, first + count):
        log.info("record %d", n, fields={"TEST_RUN": RUN})
    print("sent", flush=True)
stats = virlogd.client.library._router.stats()["outputs"]     # no public stats in the library
print(json.dumps({o["output"]: o["failed"] for o in stats}), flush=True)
"""


def test_a_journald_outage_mid_stream_is_reported_on_the_other_output_and_survived(
        real_journald, tmp_path):
    """Records during the outage fail, counted and reported in the file; later ones arrive."""
    run_id = uuid.uuid4().hex
    log = tmp_path / "app.log"
    proc = subprocess.Popen([sys.executable, write_program(tmp_path, STREAM_PROGRAM,
                                                           RUN=run_id, LOG=str(log))],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        def send(first: int, count: int) -> None:
            proc.stdin.write(f"{first} {count}\n")
            proc.stdin.flush()
            assert proc.stdout.readline() == "sent\n"

        send(0, 10)
        assert len(real_journald.query(f"TEST_RUN={run_id}", count=10)) == 10
        real_journald.stop()
        send(10, 5)                                   # journald is gone
        real_journald.start()
        send(15, 10)
        proc.stdin.close()
        failures = json.loads(proc.stdout.readline())
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    entries = real_journald.query(f"TEST_RUN={run_id}", count=20)
    assert [e["MESSAGE"] for e in entries] == [f"record {n}" for n in (*range(10),
                                                                        *range(15, 25))]
    assert failures == {"1:journald": 5, f"1:file:{log}": 0}
    lines = log.read_text().splitlines()
    # journald comes first in the outputs: the report precedes record 10 in the file
    assert [line.split(" : ")[-1] for line in lines[2:]] == [
        *(f"record {n}" for n in range(10)),
        f"output '1:journald' failed: cannot reach journald at {JOURNAL_SOCKET}: "
        f"Connection refused (1 failure so far)",
        *(f"record {n}" for n in range(10, 16)),
        # the first record that gets through again is followed by the all-clear
        "output '1:journald' works again (5 failures in all)",
        *(f"record {n}" for n in range(16, 25))]
    assert ": error : output '1:journald' failed" in lines[12]


def test_a_restart_between_two_records_loses_neither(real_journald, tmp_path):
    """The sender was connected to the old journald: it connects again, and the new journald
    gets the next record, with no failure counted."""
    run_id = uuid.uuid4().hex
    proc = subprocess.Popen([sys.executable, write_program(tmp_path, STREAM_PROGRAM,
                                                           RUN=run_id, LOG=str(tmp_path / "l"))],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        proc.stdin.write("0 1\n")
        proc.stdin.flush()
        assert proc.stdout.readline() == "sent\n"
        real_journald.query(f"TEST_RUN={run_id}")
        real_journald.restart()
        proc.stdin.write("1 1\n")
        proc.stdin.close()
        assert proc.stdout.readline() == "sent\n"
        assert json.loads(proc.stdout.readline())["1:journald"] == 0
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert [e["MESSAGE"] for e in real_journald.query(f"TEST_RUN={run_id}", count=2)] == [
        "record 0", "record 1"]


INVALID_PROGRAM = """
virlogd.configure(outputs="1:journald")
log = virlogd.getLogger("test.names")
for name in NAMES:
    try:
        log.error("must not be sent", fields={name: "v", "TEST_RUN": RUN})
    except ValueError as err:
        print(err)
log.error("sent", fields={"TEST_RUN": RUN, "TEST_OK": "1"})
"""


def test_the_library_refuses_a_field_name_journald_would_drop(real_journald, tmp_path):
    """Lower case, '_' first, '-', a digit first, 65 bytes, our own names: ValueError, no entry."""
    run_id = uuid.uuid4().hex
    names = ["lower", "_PID", "MY-FIELD", "1ST", "N" * 65, "MESSAGE", "PRIORITY"]
    out = run(write_program(tmp_path, INVALID_PROGRAM, RUN=run_id, NAMES=names)).stdout
    rule = "use 1-64 upper-case letters, digits and '_', starting with a letter"
    assert out.splitlines() == [
        f"invalid field name 'lower': {rule}",
        f"invalid field name '_PID': {rule}",
        f"invalid field name 'MY-FIELD': {rule}",
        f"invalid field name '1ST': {rule}",
        f"invalid field name '{'N' * 65}': {rule}",
        "field name 'MESSAGE' is reserved: virlogd sets it itself",
        "field name 'PRIORITY' is reserved: virlogd sets it itself",
    ]
    assert [e["MESSAGE"] for e in real_journald.query(f"TEST_RUN={run_id}")] == ["sent"]


def test_a_relayed_record_carries_the_clients_identity_and_keeps_renamed_fields(
        real_journald):
    """SYSLOG_IDENTIFIER and OBJECT_PID name the client; journald resolves OBJECT_COMM; a field
    journald would drop ('lower') or that would forge ours ('MESSAGE') keeps its data."""
    from virlogd.outputs import OutputContext
    from virlogd.outputs.journald import JournaldOutput
    from virlogd.core.record import Record
    from virlogd.core.specs import OutputSpec

    run_id = uuid.uuid4().hex
    client = subprocess.Popen(["sleep", "30"])
    try:
        # Popen returns after fork, maybe before exec: wait until the process is "sleep"
        wait_until(lambda: open(f"/proc/{client.pid}/comm").read().strip() == "sleep", 5,
                   "the client to exec sleep")
        out = JournaldOutput(OutputSpec(1, "journald"), OutputContext())
        out.handle(Record(3, "qemu.monitor", "from the client", pid=client.pid, uid=0, gid=0,
                        ident="qemu-kvm", fields={"TEST_RUN": run_id, "lower": "kept",
                                                  "MESSAGE": "forged"}), "")
        out.close()
        entry = real_journald.query(f"TEST_RUN={run_id}")[0]
    finally:
        client.kill()
        client.wait()
    assert {name: entry.get(name) for name in (
        "MESSAGE", "SYSLOG_IDENTIFIER", "SYSLOG_PID", "OBJECT_PID", "OBJECT_UID", "OBJECT_GID",
        "OBJECT_COMM", "LOWER", "X_MESSAGE")} == {
        "MESSAGE": "from the client", "SYSLOG_IDENTIFIER": "qemu-kvm",
        "SYSLOG_PID": str(client.pid), "OBJECT_PID": str(client.pid), "OBJECT_UID": "0",
        "OBJECT_GID": "0", "OBJECT_COMM": "sleep", "LOWER": "kept", "X_MESSAGE": "forged"}
