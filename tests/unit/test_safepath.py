"""safepath: which directories count as shared, and what is opened or refused there."""
import os
import stat

import pytest

from conftest import require_real
from virlogd.core import safepath

NOBODY = 65534


@pytest.fixture
def root_only():
    if os.geteuid() != 0:
        require_real("making files owned by another user needs root")


def fake_stat(uid, gid, mode):
    return os.stat_result((stat.S_IFDIR | mode, 0, 0, 2, uid, gid, 0, 0, 0, 0))


@pytest.mark.parametrize("uid, gid, mode, shared", [
    (1000, 1000, 0o755, False),     # ours
    (0, 0, 0o755, False),           # root's
    (0, 0, 0o775, False),           # group-writable by root's group: logrotate's "secure"
    (1000, 1000, 0o775, True),      # group-writable by another group
    (1000, 1000, 0o777, True),
    (0, 0, 0o1777, True),           # /tmp
    (1001, 1001, 0o755, True),      # another user's: they may plant anything there
])
def test_a_directory_is_shared_when_someone_else_can_change_its_entries(uid, gid, mode, shared):
    assert safepath.shared_directory(fake_stat(uid, gid, mode), euid=1000) is shared


def test_a_new_runtime_directory_is_made_with_the_given_mode(tmp_path):
    old = os.umask(0o077)                  # whatever the caller's umask
    try:
        directory = safepath.runtime_dir_for(str(tmp_path / "run" / "sock"))
    finally:
        os.umask(old)
    assert directory == str(tmp_path / "run")
    assert oct(stat.S_IMODE(os.stat(directory).st_mode)) == "0o755"


def test_a_non_directory_as_runtime_directory_is_refused(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(safepath.UnsafePath) as err:
        safepath.check_runtime_dir(str(tmp_path / "file"))
    assert str(err.value) == (f"refusing the runtime directory {tmp_path}/file: it is not a "
                              f"directory")


def test_create_private_refuses_a_symlink_a_fifo_and_a_hard_link(tmp_path):
    target = tmp_path / "target"
    target.write_text("keep\n")
    os.symlink(target, tmp_path / "link")
    with pytest.raises(OSError) as err:
        safepath.create_private(str(tmp_path / "link"))
    assert err.value.strerror == "Too many levels of symbolic links"
    os.mkfifo(tmp_path / "fifo")
    os.link(target, tmp_path / "hard")
    for name in ("fifo", "hard"):
        with pytest.raises(safepath.UnsafePath) as err:
            safepath.create_private(str(tmp_path / name))
        assert str(err.value) == (f"refusing {tmp_path}/{name}: it is not a regular file of "
                                  f"ours with a single link")
    assert target.read_text() == "keep\n"
    fd = safepath.create_private(str(tmp_path / "fresh"))
    os.close(fd)
    assert oct(stat.S_IMODE(os.stat(tmp_path / "fresh").st_mode)) == "0o600"


def test_open_output_in_a_shared_directory(tmp_path, root_only):
    """Another user's symlink is refused; ours is followed; a plain file is created."""
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o1777)
    target = tmp_path / "target"
    target.write_text("")
    os.symlink(target, shared / "theirs")
    os.lchown(shared / "theirs", NOBODY, NOBODY)
    os.symlink(target, shared / "ours")
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT
    with pytest.raises(safepath.UnsafePath) as err:
        safepath.open_output(str(shared / "theirs"), flags)
    assert str(err.value) == (f"refusing to follow the symbolic link {shared}/theirs: it is "
                              f"owned by uid {NOBODY} in {shared}, which other users can "
                              f"write to")
    fd = safepath.open_output(str(shared / "ours"), flags)
    os.write(fd, b"through our own link\n")
    os.close(fd)
    assert target.read_text() == "through our own link\n"
    os.close(safepath.open_output(str(shared / "plain.log"), flags))
    assert (shared / "plain.log").is_file()


def test_open_output_in_a_private_directory_follows_any_symlink(tmp_path, root_only):
    """In a directory only we control, a symlink was put by someone we trust."""
    target = tmp_path / "target"
    target.write_text("")
    os.symlink(target, tmp_path / "link")
    os.lchown(tmp_path / "link", NOBODY, NOBODY)
    fd = safepath.open_output(str(tmp_path / "link"), os.O_WRONLY | os.O_APPEND)
    os.close(fd)


def test_open_output_refuses_a_directory_symlink_planted_above_the_file(tmp_path, root_only):
    """/shared/logs -> /elsewhere made by another user: /shared/logs/app.log is refused,
    although /elsewhere itself is root's; the same link made by us is followed."""
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o1777)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    os.symlink(elsewhere, shared / "logs")
    os.lchown(shared / "logs", NOBODY, NOBODY)
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT
    with pytest.raises(safepath.UnsafePath) as err:
        safepath.open_output(str(shared / "logs" / "app.log"), flags)
    assert str(err.value) == (f"refusing to follow the symbolic link {shared}/logs: it is "
                              f"owned by uid {NOBODY} in {shared}, which other users can "
                              f"write to")
    assert list(elsewhere.iterdir()) == []
    os.lchown(shared / "logs", 0, 0)
    os.close(safepath.open_output(str(shared / "logs" / "app.log"), flags))
    assert (elsewhere / "app.log").is_file()
