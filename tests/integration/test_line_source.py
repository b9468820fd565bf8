"""Text lines name their source: real clients through a real daemon into a file.

A record relayed from another process carries its source as a field after the level, so a
host-wide file tells programs apart, and every line still starts with libvirt's
``TIMESTAMP: PID: LEVEL : ``. The daemon's own records keep libvirt's line exactly.
"""
import re
import subprocess
import sys
import textwrap

from daemonproc import Daemon, read_until

PREFIX = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}\+0000: (\d+): "


def test_a_relayed_record_names_its_source_and_the_daemons_own_do_not(tmp_path):
    log = tmp_path / "host.log"
    d = Daemon(tmp_path, ["--log-level", "1"], outputs=f"1:file:{log}")
    try:
        done = d.virlog("-p", "warning", "-s", "myapp", "disk almost full")
        assert done.returncode == 0, done.stderr
        # a library client with a call site (qemuMonitorSend:1024), as libvirt's lines have
        client = subprocess.run([sys.executable, "-c", textwrap.dedent(f"""
            import os
            from virlogd.client.client import Client
            from virlogd.core.record import Record
            client = Client({d.socket!r})
            client.send(Record(1, "qemu.monitor", "sent", func="qemuMonitorSend", line=1024))
            client.close()
            print(os.getpid())
        """)], env=d.env, capture_output=True, text=True, timeout=30)
        assert client.returncode == 0, client.stderr
        text = read_until(log, " : sent\n")
        read_until(log, "disk almost full\n")
    finally:
        assert d.stop() == 0
    text = log.read_text()
    lines = text.splitlines()
    # the daemon's own records: libvirt's line exactly, no source field
    header = re.fullmatch(PREFIX + r"info : virlogd version: [^:]+", lines[0])
    assert header and int(header.group(1)) == d.pid
    warning = re.search("^" + PREFIX + r"warning : myapp : disk almost full$", text, re.M)
    assert warning and int(warning.group(1)) != d.pid            # virlog's own pid
    debug = re.search("^" + PREFIX + r"debug : qemu\.monitor : qemuMonitorSend:1024 : sent$",
                      text, re.M)
    assert debug and int(debug.group(1)) == int(client.stdout)
    # every line still matches libvirt's own prefix
    assert all(re.match(PREFIX + r"(debug|info|warning|error) : ", line) for line in lines)
