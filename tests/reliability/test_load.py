"""Load: 16 clients at once, signals every 10 ms, admin changes all the time; nothing lost.

The size is a parameter: ``VIRLOGD_LOAD_RECORDS`` records per client (CI default below, sized
to finish in well under a minute on a 2-core machine). The full run, whose figures
docs/RELIABILITY.md quotes, is

    VIRLOGD_LOAD_RECORDS=100000 bash scripts/test.sh -q tests/reliability/test_load.py -s

and ``-s`` prints the figures that docs/RELIABILITY.md quotes.
"""
import json
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time

from daemonproc import Daemon, wait_for

CLIENTS = 16
RECORDS = int(os.environ.get("VIRLOGD_LOAD_RECORDS", "100000"))
SIGNAL_PERIOD = 0.010

# Each client: N records, priorities 1-4 in turn, messages 0-3000 bytes of padding, sent
# through the library's Client exactly as a program would; prints its pid when done.
CLIENT = r"""
import os, sys, time
from virlogd.client.client import Client
from virlogd.protocol import wire
sock, idx, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
print(os.getpid(), flush=True)
client = Client(sock)
pad = "x" * 3000
source = "load.c%d" % idx
encode = wire.encode_parts
for i in range(n):
    size = (i * 7919) % 200 if i % 50 else (i * 13) % 3000
    client.send_frame(encode(1 + (i + idx) % 4, source, "c%d seq %d %s" % (idx, i, pad[:size]),
                             time=time.time()))
client.close()
print("done", client.dropped_total, flush=True)
"""

LEVELS = {"debug": 1, "info": 2, "warning": 3, "error": 4}
# a client's record is relayed: its line names its source (load.cN) after the level
RECORD = re.compile(rb"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}\+0000: (\d+): (\w+) : "
                    rb"load\.c\d+ : c(\d+) seq (\d+) (x*)$")

# Every change keeps load.* at 1 and the main file at 1, so every record must reach it.
FILTER_CHANGES = ["1:load", "4:virlogd.admin 1:load 3:unrelated", "1:load.c 2:*", "1:*"]
LEVEL_CHANGES = ["3", "4", "1", "2"]


def admin_request(path, cmd, *args):
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(10)
        sock.connect(path)
        sock.sendall(json.dumps({"cmd": cmd, "args": list(args)}).encode() + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    return json.loads(data)


def vm_kb(pid, key):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def parse(path):
    """{client index: [(seq, level, pad length)...]} of the routed lines, dumps left out."""
    got, dumps, in_dump = {}, 0, False
    with open(path, "rb") as f:
        for line in f:
            banner = line.strip()
            if banner == b"====== start of log =====":
                in_dump, dumps = True, dumps + 1
                continue
            if banner == b"====== end of log =====":
                in_dump = False
                continue
            if in_dump:
                continue
            found = RECORD.match(line.rstrip(b"\n"))
            if found:
                got.setdefault(int(found.group(3)), []).append(
                    (int(found.group(4)), found.group(2).decode(), len(found.group(5))))
    return got, dumps


def test_sixteen_clients_lose_nothing_under_signals_and_admin_changes(tmp_path):
    """Every record of every client reaches the file, in its client's order, at its level."""
    main = tmp_path / "main.log"
    side = tmp_path / "side.log"
    d = Daemon(tmp_path, ["--log-level", "1"], outputs=f"1:file:{main}")
    output_changes = [f"1:file:{main} 3:file:{side}", f"1:file:{main}",
                      f"4:file:{side} 1:file:{main}"]
    stop = threading.Event()
    sent = {"usr2": 0, "hup": 0, "admin": 0, "refused": []}

    def signaller():
        while not stop.is_set():
            for name, signum in (("usr2", signal.SIGUSR2), ("hup", signal.SIGHUP)):
                os.kill(d.pid, signum)
                sent[name] += 1
            time.sleep(SIGNAL_PERIOD)

    def administrator():
        i = 0
        while not stop.is_set():
            for cmd, values in (("daemon-log-filters", FILTER_CHANGES),
                                ("daemon-log-level", LEVEL_CHANGES),
                                ("daemon-log-outputs", output_changes)):
                answer = admin_request(d.admin_socket, cmd, values[i % len(values)])
                sent["admin"] += 1
                if not answer["ok"]:
                    sent["refused"].append(answer)
            i += 1
            time.sleep(0.005)

    threads = [threading.Thread(target=signaller), threading.Thread(target=administrator)]
    started = time.monotonic()
    procs = []
    try:
        for t in threads:
            t.start()
        procs = [subprocess.Popen([sys.executable, "-c", CLIENT, d.socket, str(idx),
                                   str(RECORDS)], env=d.env, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True,
                                  stdin=subprocess.DEVNULL) for idx in range(CLIENTS)]
        results = [proc.communicate(timeout=120) for proc in procs]
        elapsed = time.monotonic() - started
        for proc, (out, err) in zip(procs, results):
            assert proc.returncode == 0, err
            assert out.split("\n")[1] == "done 0", out       # the client dropped nothing
        total = CLIENTS * RECORDS
        # the stream is in the daemon's socket buffers at worst: wait until all is routed
        wait_for(lambda: admin_request(d.admin_socket, "stats")["result"]["server"]["records"]
                 >= total, 60, "every record to be routed")
        stop.set()
        for t in threads:
            t.join(10)
        admin_request(d.admin_socket, "daemon-log-outputs", f"1:file:{main}")
        stats = admin_request(d.admin_socket, "stats")["result"]
        peak_kb = vm_kb(d.pid, "VmHWM")
    finally:
        stop.set()
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        status = d.stop()
    assert status == 0, d.stderr()
    assert sent["refused"] == []
    got, dumps = parse(main)
    for idx in range(CLIENTS):
        records = got.get(idx, [])
        seqs = [seq for seq, _level, _pad in records]
        assert len(seqs) == RECORDS, f"client {idx}: {RECORDS - len(seqs)} record(s) lost"
        assert seqs == list(range(RECORDS)), f"client {idx}: order not kept"
        for seq, level, pad in records[::97]:
            assert LEVELS[level] == 1 + (seq + idx) % 4
            assert pad == ((seq * 7919) % 200 if seq % 50 else (seq * 13) % 3000)
    main_out = next(o for o in stats["outputs"] if o["output"] == f"1:file:{main}")
    assert stats["dropped"] == {} and main_out["failed"] == 0 and main_out["dropped"] == 0
    assert 0 < stats["sighup_ignored"] <= sent["hup"]
    assert d.stderr() == ""
    figures = {"clients": CLIENTS, "records_per_client": RECORDS, "sent": total,
               "arrived_in_order": sum(len(v) for v in got.values()),
               "seconds": round(elapsed, 1), "records_per_s": int(total / elapsed),
               "sigusr2_sent": sent["usr2"], "dumps_written": dumps, "sighup_sent": sent["hup"],
               "sighup_seen": stats["sighup_ignored"], "admin_changes": sent["admin"],
               "daemon_received": stats["received"], "dropped": stats["dropped"],
               "peak_rss_kb": peak_kb}
    print("\nload figures:", json.dumps(figures))
