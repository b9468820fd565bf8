"""Paths another user cannot hijack: the runtime directory, and files opened in shared places.

The daemon usually runs as root and writes where it is told. Two attacks are closed here:

* **A runtime directory someone else controls.** Without ``XDG_RUNTIME_DIR`` a user's daemon
  lives in ``/tmp/virlogd-UID``, a name anyone can create first. Whoever owns that directory,
  or may write to it, can plant a symlink where the ring file, the pid file or a socket will
  go, and the daemon would then write through it. So a runtime directory must be owned by the
  user (or by root) and writable by nobody else; otherwise the start is refused with a
  sentence naming the directory. Inside a directory that passed, files are still created with
  ``O_NOFOLLOW`` (and ``O_EXCL`` where the file must be new): defence in depth.
* **A planted symlink at a file output's path.** An administrator may point an output at a
  symlink on purpose, so symlinks are not refused outright. The rule is logrotate's and the
  kernel's ``protected_symlinks``: in a directory that others can write to (or that another
  user owns), a symlink is followed only if it belongs to the daemon's user or to root.
"""
from __future__ import annotations

import os
import stat
from typing import Optional


class UnsafePath(OSError):
    """A path another user could hijack; ``str()`` is the sentence alone."""

    def __init__(self, message: str) -> None:
        super().__init__(0, message)

    def __str__(self) -> str:
        return str(self.strerror)


def _trusted_owner(uid: int, euid: int) -> bool:
    return uid in (euid, 0)


def _others_can_write(info: os.stat_result) -> bool:
    """World-writable, or group-writable by a group other than root's (logrotate's test)."""
    mode = info.st_mode
    return bool(mode & stat.S_IWOTH) or bool(mode & stat.S_IWGRP and info.st_gid != 0)


def shared_directory(info: os.stat_result, euid: Optional[int] = None) -> bool:
    """True when someone other than us and root can create or replace entries in the
    directory described by *info*."""
    euid = os.geteuid() if euid is None else euid
    return not _trusted_owner(info.st_uid, euid) or _others_can_write(info)


def check_runtime_dir(path: str) -> None:
    """Raise UnsafePath unless *path* is a directory owned by us (or root) that nobody else
    may write to. A symlink at *path* must itself belong to us or root (its target is then
    checked like any directory)."""
    euid = os.geteuid()
    link = os.lstat(path)
    if stat.S_ISLNK(link.st_mode) and not _trusted_owner(link.st_uid, euid):
        raise UnsafePath(f"refusing the runtime directory {path}: it is a symbolic link "
                         f"owned by uid {link.st_uid}, not by uid {euid}")
    info = os.stat(path)
    if not stat.S_ISDIR(info.st_mode):
        raise UnsafePath(f"refusing the runtime directory {path}: it is not a directory")
    if not _trusted_owner(info.st_uid, euid):
        raise UnsafePath(f"refusing the runtime directory {path}: it is owned by uid "
                         f"{info.st_uid}, not by uid {euid} (the user running virlogd)")
    if _others_can_write(info):
        raise UnsafePath(f"refusing the runtime directory {path}: others can write to it "
                         f"(mode {stat.S_IMODE(info.st_mode):04o})")


def runtime_dir_for(path: str, mode: int = 0o755) -> str:
    """The directory holding *path* (a socket, the ring or the pid file), created with *mode*
    if missing and then checked with check_runtime_dir; returns it."""
    directory = os.path.dirname(os.path.abspath(path))
    try:
        # a fresh directory gets *mode* exactly, whatever the umask (makedirs honours it)
        old = os.umask(0o022)
        try:
            os.makedirs(directory, mode=mode, exist_ok=True)
        finally:
            os.umask(old)
    except FileExistsError:
        pass                              # a non-directory: check_runtime_dir names it
    check_runtime_dir(directory)
    return directory


def open_output(path: str, flags: int, mode: int = 0o600) -> int:
    """``os.open(path, flags, mode)`` that never follows a symlink another user planted.

    In a directory only we (or root) control, anything goes: a symlink there was put by
    someone trusted. In a shared one, the path is opened with ``O_NOFOLLOW``; if it is a
    symlink, it is followed only when it belongs to us or root, and it must still be the
    same link after the open (a swap in between is refused, not followed)."""
    flags |= os.O_CLOEXEC
    path = os.path.abspath(path)
    _check_ancestors(path)
    directory = os.path.dirname(path)
    try:
        shared = shared_directory(os.stat(directory))
    except OSError:
        shared = True                     # unknown: be strict; the open reports the error
    if not shared:
        return os.open(path, flags, mode)
    try:
        return os.open(path, flags | os.O_NOFOLLOW, mode)
    except OSError as err:
        # a symlink there gives ELOOP, or EACCES with O_CREAT in a sticky directory
        try:
            before = os.lstat(path)
        except OSError:
            raise err from None
        if not stat.S_ISLNK(before.st_mode):
            raise
    if not _trusted_owner(before.st_uid, os.geteuid()):
        raise _refused_link(path, before, directory)
    fd = os.open(path, flags, mode)
    try:
        after = os.lstat(path)
    except OSError:
        after = None
    if after is None or (after.st_dev, after.st_ino) != (before.st_dev, before.st_ino):
        os.close(fd)
        raise UnsafePath(f"refusing to follow the symbolic link {path}: it was replaced "
                         f"while being opened")
    return fd


def _refused_link(path: str, link: os.stat_result, directory: str) -> UnsafePath:
    return UnsafePath(f"refusing to follow the symbolic link {path}: it is owned by uid "
                      f"{link.st_uid} in {directory}, which other users can write to")


def _check_ancestors(path: str) -> None:
    """Refuse a symlink among the directories above *path* (``/tmp/x`` in ``/tmp/x/y.log``)
    that another user planted in a directory they can write to: the same rule as for the
    file itself, one component at a time, as the kernel's ``protected_symlinks`` would."""
    euid = os.geteuid()
    prefix = "/"
    for part in os.path.dirname(path).split("/"):
        if not part:
            continue
        parent, prefix = prefix, os.path.join(prefix, part)
        try:
            link = os.lstat(prefix)
        except OSError:
            return                        # missing: the open will say so
        if not stat.S_ISLNK(link.st_mode) or _trusted_owner(link.st_uid, euid):
            continue
        try:
            shared = shared_directory(os.stat(parent), euid)
        except OSError:
            shared = True
        if shared:
            raise _refused_link(prefix, link, parent)


def create_private(path: str, flags: int = os.O_RDWR, mode: int = 0o600) -> int:
    """Open (creating if missing) a regular file of ours at *path* without following a
    symlink; refuse anything else there (a FIFO, a device, a file with other links)."""
    fd = os.open(path, flags | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                 mode)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_nlink != 1 or \
                not _trusted_owner(info.st_uid, os.geteuid()):
            raise UnsafePath(f"refusing {path}: it is not a regular file of ours "
                             f"with a single link")
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd
