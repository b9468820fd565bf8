"""The default output: journald when its socket is writable and we are detached
or stdin is not a tty; else the default file when detached; else stderr. Its level is the
default priority, except that a default of 1 becomes 2 for journald."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile

import pytest

from virlogd.core.defaults import default_output, journal_writable, log_file
from virlogd.core.specs import OutputSpec

from daemonproc import as_other_user_cmd

USER_ENV = {"HOME": "/home/joe", "XDG_CACHE_HOME": "/home/joe/cache"}
ROOT_FILE = "/var/log/virlogd/virlogd.log"
USER_FILE = "/home/joe/cache/virlogd/virlogd.log"

# journal writable, detached, stdin a tty, uid, level -> expected output
CASES = [
    # journald: writable and (detached or stdin not a tty)
    (True, True, True, 0, 3, "3:journald"),
    (True, True, False, 0, 3, "3:journald"),
    (True, False, False, 0, 3, "3:journald"),
    (True, False, False, 1000, 4, "4:journald"),
    (True, True, True, 1000, 2, "2:journald"),
    # a default of 1 becomes 2 for journald (and only for journald)
    (True, True, False, 0, 1, "2:journald"),
    (True, False, False, 1000, 1, "2:journald"),
    # writable, but in the foreground on a terminal: the user is watching stderr
    (True, False, True, 0, 3, "3:stderr"),
    (True, False, True, 1000, 1, "1:stderr"),
    # no journal, detached: the default file, root's or the user's
    (False, True, True, 0, 3, f"3:file:{ROOT_FILE}"),
    (False, True, False, 0, 1, f"1:file:{ROOT_FILE}"),
    (False, True, False, 1000, 3, f"3:file:{USER_FILE}"),
    (False, True, True, 1000, 1, f"1:file:{USER_FILE}"),
    # no journal, foreground: stderr, tty or not
    (False, False, True, 0, 3, "3:stderr"),
    (False, False, False, 0, 4, "4:stderr"),
    (False, False, False, 1000, 1, "1:stderr"),
]


@pytest.mark.parametrize("journal, detached, tty, uid, level, expected", CASES,
                         ids=[f"journal={c[0]}-detached={c[1]}-tty={c[2]}-uid={c[3]}-level={c[4]}"
                              for c in CASES])
def test_the_default_output_follows_the_rule_in_every_case(journal, detached, tty, uid, level,
                                                           expected):
    """journald if writable and (detached or no tty); else file if detached; else stderr."""
    spec = default_output(level, detached, journal=journal, tty=tty, env=USER_ENV, uid=uid)
    assert str(spec) == expected
    assert isinstance(spec, OutputSpec)


@pytest.mark.parametrize("env, expected", [
    ({"HOME": "/home/joe", "XDG_CACHE_HOME": "/srv/cache"}, "/srv/cache/virlogd/virlogd.log"),
    ({"HOME": "/home/joe"}, "/home/joe/.cache/virlogd/virlogd.log"),
    ({"HOME": "/home/joe", "XDG_CACHE_HOME": ""}, "/home/joe/.cache/virlogd/virlogd.log"),
    ({"HOME": "/home/joe", "XDG_CACHE_HOME": "rel/cache"},
     "/home/joe/.cache/virlogd/virlogd.log"),
])
def test_a_users_default_file_is_under_xdg_cache_home_or_the_home_cache(env, expected):
    """$XDG_CACHE_HOME/virlogd/virlogd.log; unset, empty or relative means ~/.cache."""
    assert log_file(env, uid=1000) == expected
    assert str(default_output(3, True, journal=False, tty=False, env=env, uid=1000)) == \
        f"3:file:{expected}"


def test_roots_default_file_ignores_xdg_cache_home():
    """root always gets /var/log/virlogd/virlogd.log."""
    assert log_file({"XDG_CACHE_HOME": "/srv/cache"}, uid=0) == ROOT_FILE


def test_the_journal_counts_as_writable_only_for_a_socket(tmp_path):
    """A listening socket yes; a missing path, a regular file or a directory no."""
    sock_path = str(tmp_path / "socket")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(sock_path)
        assert journal_writable(sock_path) is True
    (tmp_path / "file").write_text("")
    assert journal_writable(str(tmp_path / "file")) is False
    assert journal_writable(str(tmp_path / "missing")) is False
    assert journal_writable(str(tmp_path)) is False


def writable_for_user(path: str) -> bool:
    """journal_writable(path) as an unprivileged user: root may write to any socket, so under
    root (CI) the check runs in a child that dropped to nobody with setpriv."""
    if os.geteuid() != 0:
        return journal_writable(path)
    run = subprocess.run(as_other_user_cmd(65534, [
        sys.executable, "-c",
        f"from virlogd.core.defaults import journal_writable; print(journal_writable({path!r}))"]),
        capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    return {"True": True, "False": False}[run.stdout.strip()]


def test_a_socket_without_write_permission_is_not_writable():
    """A journal socket the user may not write to does not count (and one they may, does)."""
    directory = tempfile.mkdtemp(prefix="virlogd-perm.")
    os.chmod(directory, 0o755)               # an unprivileged child must reach the socket
    sock_path = os.path.join(directory, "socket")
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.bind(sock_path)
            os.chmod(sock_path, 0o666)
            assert writable_for_user(sock_path) is True
            os.chmod(sock_path, 0o444)
            assert writable_for_user(sock_path) is False
    finally:
        shutil.rmtree(directory, ignore_errors=True)


PROBE = ("from virlogd.core.defaults import default_output; "
         "print(default_output(1, False, env={'HOME': '/nonexistent'}))")


def probe(stdin) -> str:
    return subprocess.run([sys.executable, "-c", PROBE], stdin=stdin, capture_output=True,
                          text=True, check=True, timeout=10).stdout.strip()


def test_stdin_on_a_terminal_or_not_is_detected_for_real(real_journald):
    """With the real journald: stdin /dev/null gives journald (level 2); a pty gives stderr."""
    assert probe(subprocess.DEVNULL) == "2:journald"
    master, slave = os.openpty()
    try:
        assert probe(slave) == "1:stderr"
    finally:
        os.close(master)
        os.close(slave)


def test_a_stopped_journald_is_not_chosen(real_journald):
    """Its socket file stays behind, but nothing listens: stderr, in the foreground."""
    real_journald.stop()
    assert probe(subprocess.DEVNULL) == "1:stderr"
