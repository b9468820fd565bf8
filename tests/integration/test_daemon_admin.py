"""virlogd-admin against a real daemon: changes apply at once, refusals change nothing."""
import json

from daemonproc import Daemon, read_until
from virlogd.core.defaults import journal_writable


def messages(path):
    return [line.rsplit(" : ", 1)[-1] for line in path.read_text().splitlines()]


def test_filters_get_set_and_refusal_change_the_running_daemon_at_once(tmp_path):
    """daemon-log-filters: get, set (debug appears at once), refusal (nothing changes)."""
    log = tmp_path / "out.log"
    d = Daemon(tmp_path, outputs=f"1:file:{log}", args=["--log-filters", "3:remote"])
    try:
        assert d.admin("daemon-log-filters").stdout == " Logging filters: 3:remote\n"
        d.virlog("-p", "debug", "-s", "qemu.monitor", "debug before")
        done = d.admin("daemon-log-filters", "1:qemu 4:remote")
        assert (done.returncode, done.stdout, done.stderr) == (0, "", "")
        d.virlog("-p", "debug", "-s", "qemu.monitor", "debug after")
        text = read_until(log, "debug after")
        assert "debug before" not in text
        assert "log filters changed from \"3:remote\" to \"1:qemu 4:remote\" by uid " in text
        refused = d.admin("daemon-log-filters", "1:qemu 9:oops")
        assert (refused.returncode, refused.stderr) == (
            1, "virlogd-admin: error: Invalid priority '9' for filter '9:oops' in "
               "\"1:qemu 9:oops\"\n")
        assert d.admin("daemon-log-filters").stdout == " Logging filters: 1:qemu 4:remote\n"
        assert d.admin("daemon-log-filters", "").returncode == 0
        assert d.admin("daemon-log-filters").stdout == " Logging filters: \n"
    finally:
        assert d.stop() == 0


def test_outputs_get_set_and_refusal(tmp_path):
    """daemon-log-outputs: a new file output gets records at once; a bad string is refused."""
    first, second = tmp_path / "first.log", tmp_path / "second.log"
    d = Daemon(tmp_path, outputs=f"3:file:{first}")
    try:
        assert d.admin("daemon-log-outputs").stdout == f" Logging outputs: 3:file:{first}\n"
        assert d.admin("daemon-log-outputs", f"1:file:{second}").returncode == 0
        d.virlog("-p", "error", "-s", "x", "to the second file")
        read_until(second, "to the second file")
        refused = d.admin("daemon-log-outputs", f"1:file:{first} 2:nowhere")
        assert (refused.returncode, refused.stderr) == (
            1, f"virlogd-admin: error: Invalid destination 'nowhere' for output '2:nowhere' in "
               f"\"1:file:{first} 2:nowhere\"\n")
        unopenable = d.admin("daemon-log-outputs", "1:file:/proc/no/such/dir/x.log")
        assert unopenable.returncode == 1
        assert unopenable.stderr.startswith(
            "virlogd-admin: error: cannot open output '1:file:/proc/no/such/dir/x.log': ")
        assert d.admin("daemon-log-outputs").stdout == f" Logging outputs: 1:file:{second}\n"
        assert d.admin("daemon-log-outputs", "").returncode == 0      # back to the default
        default = "3:journald" if journal_writable() else "3:stderr"   # stdin is not a tty
        assert d.admin("daemon-log-outputs").stdout == f" Logging outputs: {default}\n"
    finally:
        assert d.stop() == 0


def test_level_get_set_and_refusal(tmp_path):
    """daemon-log-level: names or numbers; info appears once the level is 2."""
    log = tmp_path / "out.log"
    d = Daemon(tmp_path, outputs=f"1:file:{log}")
    try:
        assert d.admin("daemon-log-level").stdout == " Logging level: 3\n"
        d.virlog("-p", "info", "info before")
        assert d.admin("daemon-log-level", "info").returncode == 0
        assert d.admin("daemon-log-level").stdout == " Logging level: 2\n"
        d.virlog("-p", "info", "info after")
        text = read_until(log, "info after")
        assert "info before" not in text
        refused = d.admin("daemon-log-level", "9")
        assert (refused.returncode, refused.stderr) == (
            1, "virlogd-admin: error: invalid priority '9' (expected 1-4 or debug, info, "
               "warning, error)\n")
        assert d.admin("daemon-log-level").stdout == " Logging level: 2\n"
        stats = json.loads(d.admin("stats", "--json").stdout)
        assert stats["admin"] == {"refused_peers": 0, "refused_requests": 1}
    finally:
        assert d.stop() == 0


def test_dump_and_stats(tmp_path):
    """dump acts like SIGUSR2; stats counts what was received and written."""
    log = tmp_path / "out.log"
    d = Daemon(tmp_path, outputs=f"3:file:{log}")
    try:
        for i in range(5):
            d.virlog("-p", "debug", f"hidden {i}")
        d.virlog("-p", "error", "shown")
        read_until(log, "shown")
        dump = d.admin("dump")
        assert dump.returncode == 0
        text = read_until(log, "====== end of log =====")
        assert "Dump requested by virlogd-admin; dumping internal log buffer:" in text
        assert "hidden 4" in text
        stats = json.loads(d.admin("stats", "--json").stdout)
        assert stats["received"] >= 6
        assert stats["outputs"][0]["output"] == f"3:file:{log}"
        assert stats["outputs"][0]["written"] >= 1
        assert stats["buffer"]["size"] == 64 * 1024
        table = d.admin("stats")
        assert table.returncode == 0 and "received" in table.stdout
    finally:
        assert d.stop() == 0
