"""``x:syslog:IDENT`` through the library, in a real process, read back from the file of a real
rsyslogd that owns /dev/log: each output's ident, libvirt's priority map (facility daemon),
libvirt's payload without a timestamp, and an rsyslog restart mid-stream."""
from __future__ import annotations

import json
import socket
import subprocess
import sys
import textwrap

from programs import line_of, write_program

HOSTNAME = socket.gethostname()


def run(path: str) -> str:
    done = subprocess.run([sys.executable, path], stdin=subprocess.DEVNULL, capture_output=True,
                          text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


TWO_IDENTS = """
import syslog
virlogd.configure(level=1, outputs="3:syslog:alpha 1:syslog:beta")
log = virlogd.getLogger("test.syslog")
syslog.openlog("hijack", 0, syslog.LOG_USER)   # another openlog() in the same process

def emit_all():
    log.debug("d")      # debug
    log.info("i")       # info
    log.warning("w")    # warning
    log.error("e")      # error
    syslog.syslog(syslog.LOG_NOTICE, "not ours")

print(os.getpid())
emit_all()
"""


def test_two_syslog_outputs_in_one_process_each_keep_their_ident_and_priorities(
        real_rsyslog_devlog, tmp_path):
    """3:syslog:alpha 1:syslog:beta: each line has its output's ident and libvirt's priority."""
    prog = write_program(tmp_path, TWO_IDENTS)
    pid = run(prog)
    at = {level: f"emit_all:{line_of(prog, '# ' + level)}"
          for level in ("debug", "info", "warning", "error")}
    header = [f"30 daemon.info {{}}: {pid}: info : virlogd version: 1.0",
              f"30 daemon.info {{}}: {pid}: info : hostname: {HOSTNAME}"]
    assert real_rsyslog_devlog.lines(11) == [
        *(h.format("beta") for h in header),
        f"31 daemon.debug beta: {pid}: debug : {at['debug']} : d",
        f"30 daemon.info beta: {pid}: info : {at['info']} : i",
        *(h.format("alpha") for h in header),
        f"28 daemon.warning alpha: {pid}: warning : {at['warning']} : w",
        f"28 daemon.warning beta: {pid}: warning : {at['warning']} : w",
        f"27 daemon.err alpha: {pid}: error : {at['error']} : e",
        f"27 daemon.err beta: {pid}: error : {at['error']} : e",
        "13 user.notice hijack: not ours",
    ]


def test_the_payload_carries_no_timestamp_and_cannot_forge_a_line(real_rsyslog_devlog,
                                                                 tmp_path):
    """PID: LEVEL : message; an embedded newline stays inside the one message."""
    prog = write_program(tmp_path, """
        virlogd.configure(outputs="4:syslog:libvirtd")
        virlogd.getLogger("x").error("first\\n2026-11-23 14:29:04.771+0000: 1: error : forged")
        print(os.getpid())
        """)
    pid = run(prog)
    raw = real_rsyslog_devlog.lines(3)[2]
    at = f"<module>:{line_of(prog, 'forged')}"
    assert raw == (f"27 daemon.err libvirtd: {pid}: error : {at} : first#012  | "
                   f"2026-11-23 14:29:04.771+0000: 1: error : forged")


STREAM = """
import json
virlogd.configure(level=1, outputs="1:syslog:streamer 1:file:" + LOG)
log = virlogd.getLogger("test.stream")
for command in sys.stdin:            # "FIRST COUNT": records FIRST..FIRST+COUNT-1
    first, count = map(int, command.split())
    for n in range(first, first + count):
        log.warning("record %d", n)
    print("sent", flush=True)
stats = virlogd.client.library._router.stats()["outputs"]     # no public stats in the library
print(json.dumps({o["output"]: o["failed"] for o in stats}), flush=True)
"""


def test_an_rsyslog_restart_mid_stream_is_reported_and_survived(real_rsyslog_devlog,
                                                                tmp_path):
    """While rsyslog is down records fail, counted and reported in the file; then they flow."""
    log = tmp_path / "app.log"
    proc = subprocess.Popen([sys.executable, write_program(tmp_path, STREAM, LOG=str(log))],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        def send(first: int, count: int) -> None:
            proc.stdin.write(f"{first} {count}\n")
            proc.stdin.flush()
            assert proc.stdout.readline() == "sent\n"

        send(0, 5)
        assert len(real_rsyslog_devlog.lines(7)) == 7
        real_rsyslog_devlog.stop()
        send(5, 3)                                    # rsyslog is gone
        real_rsyslog_devlog.start()
        send(8, 5)
        proc.stdin.close()
        failures = json.loads(proc.stdout.readline())
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    got = [line.rsplit(" : ", 1)[-1] for line in real_rsyslog_devlog.lines(12)[2:]]
    assert got == [f"record {n}" for n in (*range(5), *range(8, 13))]
    assert failures == {"1:syslog:streamer": 3, f"1:file:{log}": 0}
    in_file = [line.split(" : ")[-1] for line in log.read_text().splitlines()[2:]]
    assert in_file == [
        *(f"record {n}" for n in range(5)),
        "output '1:syslog:streamer' failed: cannot reach syslog at /dev/log: "
        "No such file or directory (1 failure so far)",
        *(f"record {n}" for n in range(5, 9)),
        # the first record that gets through again is followed by the all-clear
        "output '1:syslog:streamer' works again (3 failures in all)",
        *(f"record {n}" for n in range(9, 13))]
