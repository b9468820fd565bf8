"""Paths another user cannot hijack, and a runtime directory on a full filesystem.

* A non-root daemon without ``XDG_RUNTIME_DIR`` lives in ``/tmp/virlogd-UID``, a name anyone
  can take first: a directory another user owns, or may write to, is refused with a sentence
  naming it, and a symlink planted there is never written through.
* The ring file, sockets and pid file are created without following symlinks.
* A file output never follows a symlink another user planted in a directory they can write to.
* A nearly full runtime filesystem: the ring's blocks are reserved at creation; when they
  cannot be, the ring stays in memory with a warning and every record is still routed (no
  SIGBUS, which is what a sparse mapping on a full tmpfs gives).

The unprivileged runs use ``setpriv`` from ``daemonproc.as_other_user_cmd`` (a world-readable
copy of virlogd, so the checkout's .venv may sit under a 0700 home); they need root.
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest

from conftest import require_real
from daemonproc import (VIRLOGD, Daemon, as_other_user_cmd, other_user, read_until,
                        wait_for)
from virlogd.daemon.sockets import listening

NOBODY = 65534
TESTS = Path(__file__).resolve().parent.parent


@pytest.fixture
def root_only():
    if os.geteuid() != 0:
        require_real("running the daemon as another user needs root")


@pytest.fixture
def user(root_only):
    """The unprivileged account the daemon runs as, and its default runtime directory (made
    absent before and removed after the test)."""
    entry = other_user()
    runtime = Path(f"/tmp/virlogd-{entry.pw_uid}")
    shutil.rmtree(runtime, ignore_errors=True)
    if runtime.is_symlink():
        runtime.unlink()
    yield entry, runtime
    if runtime.is_symlink():
        runtime.unlink()
    shutil.rmtree(runtime, ignore_errors=True)



def user_env():
    """A login-less environment: no XDG_RUNTIME_DIR (cron, su), so the /tmp default applies."""
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": "/nonexistent",
            "LANG": "C.UTF-8"}


def run_as(entry, *args, timeout=30):
    return subprocess.run(as_other_user_cmd(entry, [VIRLOGD, *args]), env=user_env(),
                          cwd="/", capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


def victim_file(open_dir, entry):
    """A file of the daemon's user that a planted symlink points at."""
    victim = open_dir / "precious"
    victim.write_text("precious data\n")
    os.chown(victim, entry.pw_uid, entry.pw_gid)
    os.chmod(victim, 0o600)
    return victim


# -- the runtime directory -------------------------------------------------------------------
@pytest.mark.parametrize("owner, mode, problem", [
    ("attacker", 0o777, "it is owned by uid {attacker}, not by uid {uid} (the user running "
                        "virlogd)"),
    ("attacker", 0o755, "it is owned by uid {attacker}, not by uid {uid} (the user running "
                        "virlogd)"),
    ("user", 0o777, "others can write to it (mode 0777)"),
    ("user", 0o1777, "others can write to it (mode 1777)"),
    ("user", 0o775, "others can write to it (mode 0775)"),
])
def test_a_runtime_directory_someone_else_controls_is_refused(user, open_dir, owner, mode,
                                                              problem):
    """Another user made /tmp/virlogd-UID first (or it is writable by others) and planted a
    symlink at the ring file's path: the start is refused, naming the directory, and the file
    the symlink names is untouched."""
    entry, runtime = user
    runtime.mkdir()
    uid = NOBODY if owner == "attacker" else entry.pw_uid
    gid = NOBODY if owner == "attacker" else entry.pw_gid
    os.chown(runtime, uid, gid)
    os.chmod(runtime, mode)
    victim = victim_file(open_dir, entry)
    for name in ("virlogd-sock.ring", "virlogd.pid"):
        os.symlink(victim, runtime / name)
        os.lchown(runtime / name, uid, gid)
    done = run_as(entry, "--log-outputs", "3:stderr")
    sentence = problem.format(attacker=NOBODY, uid=entry.pw_uid)
    assert (done.returncode, done.stderr) == (
        1, f"virlogd: error: refusing the runtime directory {runtime}: {sentence}\n")
    assert victim.read_text() == "precious data\n"
    assert not (runtime / "virlogd-sock").exists()


def test_a_symlink_planted_as_the_runtime_directory_is_refused(user, open_dir):
    """/tmp/virlogd-UID is a symlink another user made (to a directory of the victim's)."""
    entry, runtime = user
    target = open_dir / "victims-dir"
    target.mkdir()
    os.chown(target, entry.pw_uid, entry.pw_gid)
    os.symlink(target, runtime)
    os.lchown(runtime, NOBODY, NOBODY)
    done = run_as(entry, "--log-outputs", "3:stderr")
    assert (done.returncode, done.stderr) == (
        1, f"virlogd: error: refusing the runtime directory {runtime}: it is a symbolic link "
           f"owned by uid {NOBODY}, not by uid {entry.pw_uid}\n")
    assert list(target.iterdir()) == []


def test_a_missing_runtime_directory_is_created_private_to_the_user_and_works(user):
    """The safe case: the directory does not exist; the daemon makes it (owned by the user,
    writable by nobody else) and serves clients there."""
    entry, runtime = user
    proc = subprocess.Popen(as_other_user_cmd(entry, [VIRLOGD, "--log-outputs", "3:stderr"]),
                            env=user_env(), cwd="/", stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_for(lambda: proc.poll() is not None or listening(str(runtime / "virlogd-sock")),
                 15, "the daemon's socket")
        assert proc.poll() is None
        info = os.stat(runtime)
        assert (info.st_uid, oct(info.st_mode & 0o7777)) == (entry.pw_uid, "0o755")
        ring = os.lstat(runtime / "virlogd-sock.ring")
        assert (ring.st_uid, oct(ring.st_mode & 0o777)) == (entry.pw_uid, "0o600")
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        assert proc.wait(15) == 0, proc.stderr.read()


# -- files in a directory that passed --------------------------------------------------------
def test_symlinks_at_the_ring_and_socket_paths_are_never_followed(tmp_path):
    """Even in our own directory: a symlink at the ring file's or a socket's path stops the
    start with a clear error; the files they name are untouched."""
    victim = tmp_path / "victim"
    victim.write_text("keep me\n")
    d = tmp_path / "d"
    d.mkdir()
    os.symlink(victim, d / "virlogd-sock.ring")
    first = Daemon(tmp_path, outputs="3:stderr", wait=False)
    assert first.proc.wait(15) == 1
    assert first.stderr() == (f"virlogd: error: cannot create the ring buffer file "
                              f"{d}/virlogd-sock.ring: Too many levels of symbolic links\n")
    first.stop()
    os.unlink(d / "virlogd-sock.ring")
    os.symlink(victim, d / "virlogd-admin-sock")
    second = Daemon(tmp_path, outputs="3:stderr", wait=False, name="d")
    assert second.proc.wait(15) == 1
    assert second.stderr().endswith(
        f"virlogd: error: cannot listen on {d}/virlogd-admin-sock: {d}/virlogd-admin-sock is a "
        f"symbolic link; refusing to follow or remove it\n")
    second.stop()
    assert victim.read_text() == "keep me\n"
    assert os.path.islink(d / "virlogd-admin-sock")


def test_a_pid_file_symlink_is_replaced_not_written_through(tmp_path):
    """``-d -p FILE`` where FILE is a symlink: the pid lands in a new file at FILE; the
    symlink's target keeps its content."""
    victim = tmp_path / "victim"
    victim.write_text("keep me\n")
    pid_file = tmp_path / "virlogd.pid"
    os.symlink(victim, pid_file)
    d = Daemon(tmp_path, ["-d", "-p", str(pid_file)], outputs="3:stderr", wait=False)
    assert d.proc.wait(15) == 0, d.stderr()
    pid = int(pid_file.read_text())
    try:
        assert not pid_file.is_symlink()
        assert victim.read_text() == "keep me\n"
    finally:
        os.kill(pid, signal.SIGTERM)
        wait_for(lambda: not os.path.exists(f"/proc/{pid}"), 15, "the detached daemon to exit")
        d.stop()


# -- file outputs ----------------------------------------------------------------------------
@pytest.fixture
def sticky_dir(root_only):
    """A /tmp-like directory: world-writable and sticky."""
    path = tempfile.mkdtemp(prefix="vlsticky.", dir="/tmp")
    os.chmod(path, 0o1777)
    yield Path(path)
    shutil.rmtree(path, ignore_errors=True)


def test_a_file_output_never_follows_a_symlink_another_user_planted(tmp_path, sticky_dir):
    """In a world-writable directory, nobody's symlink at the output's path is refused with
    a warning naming it (the other outputs work, the target is untouched); root's own
    symlink there is followed, as an administrator meant it."""
    victim = tmp_path / "shadow"
    victim.write_text("root:secret\n")
    planted = sticky_dir / "planted.log"
    os.symlink(victim, planted)
    os.lchown(planted, NOBODY, NOBODY)
    mine_target = tmp_path / "real.log"
    mine = sticky_dir / "mine.log"
    os.symlink(mine_target, mine)
    good = tmp_path / "good.log"
    d = Daemon(tmp_path, outputs=f"3:file:{planted} 3:file:{mine} 3:file:{good}")
    try:
        assert d.virlog("-p", "error", "after the start").returncode == 0
        read_until(good, "after the start")
        read_until(mine_target, "after the start")
        assert victim.read_text() == "root:secret\n"
        assert d.stderr() == (f"virlogd: warning: cannot open output '3:file:{planted}': "
                              f"refusing to follow the symbolic link {planted}: it is owned by "
                              f"uid {NOBODY} in {sticky_dir}, which other users can write to; "
                              f"ignored\n")
    finally:
        assert d.stop() == 0


def test_a_file_output_in_another_users_directory_is_not_followed_either(tmp_path, open_dir):
    """A directory owned by another user (0755): their symlink is theirs to aim; refused."""
    theirs = open_dir / "theirs"
    theirs.mkdir()
    os.chown(theirs, NOBODY, NOBODY)
    victim = tmp_path / "victim"
    victim.write_text("keep me\n")
    planted = theirs / "app.log"
    os.symlink(victim, planted)
    os.lchown(planted, NOBODY, NOBODY)
    good = tmp_path / "good.log"
    d = Daemon(tmp_path, outputs=f"3:file:{planted} 3:file:{good}")
    try:
        d.virlog("-p", "error", "x")
        read_until(good, " : x")
        assert victim.read_text() == "keep me\n"
        assert "refusing to follow the symbolic link" in d.stderr()
    finally:
        assert d.stop() == 0


# -- a full runtime filesystem ----------------------------------------------------------------
FULL_SCENARIO = textwrap.dedent("""\
    # Runs inside `unshare -m`: the tmpfs below exists only in this mount namespace.
    import json, os, subprocess, sys
    sys.path.insert(0, sys.argv[1])
    from pathlib import Path
    from daemonproc import Daemon, read_until
    base, count = Path(sys.argv[2]), int(sys.argv[3])
    run = base / "d"
    run.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,mode=0755", "tmpfs", str(run)],
                   check=True)
    with open(run / "filler", "wb") as f:          # fill it up, then leave 16 kB free
        try:
            while True:
                f.write(b"\\0" * 65536)
                f.flush()
        except OSError:
            pass
    os.truncate(run / "filler", os.path.getsize(run / "filler") - 16384)
    log = base / "out.log"
    d = Daemon(base, ["--log-level", "1"], outputs=f"1:file:{log}", name="d")
    lines = "".join(f"debug record {i} {'x' * 150}\\n" for i in range(count))
    sent = d.virlog("-p", "debug", "-s", "fill", input=lines)
    d.virlog("-p", "error", "-s", "fill", "the last one")
    read_until(log, "the last one")
    status = d.stop()
    text = log.read_text()
    print(json.dumps({"status": status, "stderr": d.stderr(), "sent": sent.returncode,
                      "routed": text.count(" : debug record "), "log": text,
                      "ring_left": os.path.exists(run / "virlogd-sock.ring")}))
""")


def test_a_full_runtime_filesystem_keeps_the_ring_in_memory_and_routes_everything(tmp_path):
    """The runtime directory is a 1 MiB tmpfs with 16 kB free (the 64 kB ring does not fit).
    A sparse ring file would die of SIGBUS after a few hundred debug records; instead the
    daemon warns, keeps the ring in memory, routes all of them and stops cleanly."""
    if os.geteuid() != 0 or not shutil.which("unshare"):
        require_real("a private tmpfs needs root and unshare(1)")
    script = tmp_path / "scenario.py"
    script.write_text(FULL_SCENARIO)
    done = subprocess.run(["unshare", "-m", "--propagation", "private", sys.executable,
                           str(script), str(TESTS), str(tmp_path), "2000"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.splitlines()[-1])
    ring = tmp_path / "d" / "virlogd-sock.ring"
    warning = (f"cannot reserve space for the ring buffer file {ring} (No space left on "
               f"device); keeping the ring buffer in memory: SIGKILL recovery is off")
    assert result["stderr"] == f"virlogd: warning: {warning}\n"
    assert result["status"] == 0
    assert result["sent"] == 0
    assert result["routed"] == 2000
    assert f": warning : {warning}" in result["log"]
    assert result["ring_left"] is False       # no unbacked file left to "recover" next time
