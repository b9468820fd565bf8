"""Size-based rotation of file outputs, with virtlogd's meaning.

``max_size`` bytes at most per file; ``max_backups`` older files named ``PATH.0`` (the
newest backup) ... ``PATH.<max_backups-1>`` (the oldest); on rollover every backup moves one
step older, the oldest is overwritten, and the live file becomes ``PATH.0``. With
``max_backups = 0`` a full file is simply removed and started again (virtlogd does the same).

Where a file is cut: virtlogd writes what fits, except that if a newline lies in the last 80
bytes of what fits, it cuts just after that newline, so a line is not split across two files.
We apply the same rule over the file's byte offsets rather than over one ``write()``'s buffer:
a newline already written in those last 80 bytes (the common case: the file ends with a whole
line and the next line does not fit) also counts, and the file is rolled over before the next
line. The result does not depend on how records were batched into writes.

``cut_point`` is pure; ``rollover`` does the renames.
"""
from __future__ import annotations

import errno
import os
from typing import Callable, List, Optional

NEWLINE_WINDOW = 80   # virtlogd: look for a newline in the last 80 bytes before the limit


def cut_point(data: bytes, start: int, end: int, size: int, max_size: int,
              last_newline: int) -> Optional[int]:
    """Where to cut ``data[start:end]``, about to be appended to a file of *size* bytes.

    Returns None when it all fits and the file stays below *max_size*; otherwise the number
    of bytes of it to write before rolling over (possibly 0: roll over first).
    *last_newline* is the file offset just after the file's last newline (0: none).
    """
    room = max_size - size
    if end - start < room:
        return None
    if room <= 0:
        return 0
    window = max_size - NEWLINE_WINDOW          # file offset where the window begins
    found = data.rfind(b"\n", start + max(0, window - size), start + room)
    if found >= 0:
        return found - start + 1
    if last_newline > 0 and last_newline - 1 >= window:
        return 0                                # the file already ends near the limit
    return room


def backup_path(path: str, index: int) -> str:
    return f"{path}.{index}"


def backup_paths(path: str, max_backups: int) -> List[str]:
    """``PATH.0`` (newest) ... ``PATH.<max_backups-1>`` (oldest)."""
    return [backup_path(path, i) for i in range(max_backups)]


def rollover(path: str, max_backups: int) -> None:
    """Shift the backups one step older and make *path* the newest (``PATH.0``); with no
    backups, remove *path*. Missing files are skipped; other errors raise OSError."""
    if max_backups <= 0:
        _ignore_missing(os.unlink, path)
        return
    for index in range(max_backups - 1, 0, -1):
        _ignore_missing(os.rename, backup_path(path, index - 1), backup_path(path, index))
    _ignore_missing(os.rename, path, backup_path(path, 0))


def _ignore_missing(func: Callable[..., object], *args: str) -> None:
    try:
        func(*args)
    except OSError as err:
        if err.errno != errno.ENOENT:
            raise
