"""File outputs of a real virlogd: built-in rotation, and external rotation (logrotate) that
works although SIGHUP is ignored: the daemon notices the rename by itself and loses nothing."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.daemonproc import Daemon, read_until, wait_for

REPO = Path(__file__).resolve().parents[2]
RECORD = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}\+0000: \d+: \w+ : ")


def start(tmp_path: Path, log: Path, **settings) -> Daemon:
    conf = tmp_path / "virlogd.conf"
    lines = [f'log_outputs = "1:file:{log}"', "log_level = 1"]
    lines += [f"{key} = {value}" for key, value in settings.items()]
    conf.write_text("\n".join(lines) + "\n")
    return Daemon(tmp_path, ["-f", str(conf)])


def send(daemon: Daemon, first: int, last: int) -> None:
    done = daemon.virlog("-p", "info", input="".join(f"seq {i:05d}\n"
                                                     for i in range(first, last + 1)))
    assert done.returncode == 0, done.stderr


def seqs(*paths: Path):
    """The seq numbers in the record lines of *paths*, in file order."""
    found = []
    for path in paths:
        found += [int(n) for n in re.findall(r" : seq (\d{5})$", path.read_text(), re.M)]
    return found


def test_builtin_rotation_keeps_max_backups_files_none_above_max_size(tmp_path):
    """max_size 2000, max_backups 2: a.log, a.log.0, a.log.1, each at most 2000 bytes, each
    starting with a whole record line; the newest records are in a.log."""
    log = tmp_path / "a.log"
    daemon = start(tmp_path, log, max_size=2000, max_backups=2)
    try:
        send(daemon, 1, 400)
        read_until(log, "seq 00400")
    finally:
        assert daemon.stop() == 0
    names = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("a.log"))
    assert names == ["a.log", "a.log.0", "a.log.1"]
    for name in names:
        data = (tmp_path / name).read_bytes()
        assert 0 < len(data) <= 2000, (name, len(data))
        assert data.endswith(b"\n") and RECORD.match(data.decode()), name
    kept = seqs(tmp_path / "a.log.1", tmp_path / "a.log.0", log)
    assert kept == list(range(kept[0], 401))
    assert len((tmp_path / "a.log.0").read_bytes()) > 2000 - 80   # cut at a line end


def test_a_renamed_file_is_reopened_by_itself_and_nothing_is_lost(tmp_path):
    """mv a.log a.log.1 (what logrotate does): the path is recreated, mode 0600, without a
    signal; every record is in a.log.1 or a.log, in order."""
    log = tmp_path / "a.log"
    daemon = start(tmp_path, log)
    try:
        send(daemon, 1, 100)
        read_until(log, "seq 00100")
        os.rename(log, tmp_path / "a.log.1")
        send(daemon, 101, 150)              # before or after the reopen: either file
        wait_for(log.exists, 5, "virlogd to reopen a.log")
        send(daemon, 151, 200)
        read_until(log, "seq 00200")
        assert oct(log.stat().st_mode & 0o777) == "0o600"
    finally:
        assert daemon.stop() == 0
    assert seqs(tmp_path / "a.log.1", log) == list(range(1, 201))


def test_a_deleted_file_is_recreated(tmp_path):
    """rm a.log: the next records land in a new a.log."""
    log = tmp_path / "a.log"
    daemon = start(tmp_path, log)
    try:
        send(daemon, 1, 10)
        read_until(log, "seq 00010")
        log.unlink()
        wait_for(log.exists, 5, "virlogd to recreate a.log")
        send(daemon, 11, 20)
        read_until(log, "seq 00020")
    finally:
        assert daemon.stop() == 0
    assert seqs(log) == list(range(11, 21))


@pytest.mark.skipif(not shutil.which("logrotate"), reason="logrotate is not installed")
def test_real_logrotate_with_the_shipped_config_loses_nothing(tmp_path):
    """logrotate -f with etc/logrotate.d/virlogd (path changed): rotated twice under load of
    a running daemon, every record is in a.log, a.log.1 or the compressed a.log.2.gz."""
    logdir = tmp_path / "logs"
    logdir.mkdir(mode=0o755)
    log = logdir / "a.log"
    shipped = (REPO / "etc" / "logrotate.d" / "virlogd").read_text()
    assert "/var/log/virlogd/*.log {" in shipped
    conf = tmp_path / "logrotate.conf"
    conf.write_text(shipped.replace("/var/log/virlogd/*.log", f"{logdir}/*.log"))
    os.chmod(conf, 0o644)
    state = tmp_path / "logrotate.state"

    def logrotate() -> None:
        done = subprocess.run(["logrotate", "-f", "-s", str(state), str(conf)],
                              capture_output=True, text=True, stdin=subprocess.DEVNULL,
                              timeout=30)
        assert done.returncode == 0 and done.stderr == "", done.stderr

    daemon = start(tmp_path, log)
    try:
        send(daemon, 1, 100)
        read_until(log, "seq 00100")
        logrotate()
        send(daemon, 101, 150)
        wait_for(log.exists, 5, "virlogd to reopen a.log")
        send(daemon, 151, 200)
        read_until(log, "seq 00200")
        logrotate()
        send(daemon, 201, 250)
        wait_for(log.exists, 5, "virlogd to reopen a.log again")
        send(daemon, 251, 300)
        read_until(log, "seq 00300")
    finally:
        assert daemon.stop() == 0
    assert sorted(p.name for p in logdir.iterdir()) == ["a.log", "a.log.1", "a.log.2.gz"]
    subprocess.run(["gunzip", str(logdir / "a.log.2.gz")], check=True)
    assert seqs(logdir / "a.log.2", logdir / "a.log.1", log) == list(range(1, 301))
