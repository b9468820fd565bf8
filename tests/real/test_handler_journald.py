"""The README's basicConfig example, relayed by a real daemon to the real journald:
MESSAGE is the message alone, not basicConfig's ``ERROR:qemu.monitor:probe failed``."""
import subprocess
import sys
import textwrap
import uuid

from daemonproc import Daemon


def test_basic_config_records_reach_journald_with_the_message_alone(real_journald, tmp_path):
    d = Daemon(tmp_path, outputs="1:journald")
    message_id = uuid.uuid4().hex
    try:
        run = subprocess.run([sys.executable, "-c", textwrap.dedent(f"""
            import logging, sys, virlogd
            logging.basicConfig(level=logging.DEBUG,
                                handlers=[virlogd.VirlogdHandler(sys.argv[1])])
            logging.getLogger("qemu.monitor").error(
                "probe failed", extra={{"MESSAGE_ID": "{message_id}"}})
        """), d.socket], env=d.env, capture_output=True, text=True, timeout=30)
        assert (run.returncode, run.stderr) == (0, "")
        entries = real_journald.query(f"MESSAGE_ID={message_id}")
        assert [e["MESSAGE"] for e in entries] == ["probe failed"]
        assert entries[0]["PRIORITY"] == "3"
    finally:
        assert d.stop() == 0
