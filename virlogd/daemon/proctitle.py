"""The daemon's process name: ``virlogd``, as ``ps``, ``top``, ``pidof`` and ``pgrep`` show it.

Started as a console script, the process is the interpreter running a script: its argv[0] is
``.../python`` and its argv[1] the script's path, so ``pidof virlogd`` (which matches the
basename of argv[0], see sysvinit's killall5.c) finds nothing; started as ``python -m
virlogd`` even its comm is ``python``. So the daemon names itself at start:

* comm (``/proc/PID/comm``, ``ps -e``, ``top``, ``pgrep``): ``prctl(PR_SET_NAME)``;
* the command line (``/proc/PID/cmdline``, ``ps -f``, ``pidof``): the argument strings the
  kernel placed in the process's memory, from ``arg_start`` to ``arg_end`` (fields 48 and 49
  of ``/proc/self/stat``), are overwritten in place with ``virlogd ARGS...`` and padded with
  NULs. The new text is never longer than the old one (the interpreter's path and the
  script's are replaced by the shorter name), and the last byte stays NUL, so the kernel reads
  it as plain argument strings. Python's ``sys.argv`` is a copy made at start-up and does not
  change.

Best effort: where any step is impossible (no /proc, no libc, an unusual layout) the name
stays what it was; the daemon runs the same.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
from typing import List, Optional

PR_SET_NAME = 15
COMM_MAX = 15            # TASK_COMM_LEN - 1


def _libc() -> Optional[ctypes.CDLL]:
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    except OSError:
        return None


def _arg_area() -> Optional[tuple]:
    """(arg_start, arg_end) of this process, from /proc/self/stat (Linux 3.5 and later)."""
    try:
        with open("/proc/self/stat", "rb") as f:
            text = f.read()
        fields = text.rsplit(b")", 1)[1].split()
        # fields[0] is field 3 (state): field N is fields[N - 3]
        start, end = int(fields[48 - 3]), int(fields[49 - 3])
    except (OSError, IndexError, ValueError):
        return None
    return (start, end) if 0 < start < end else None


def command_line(name: str, args: List[str], size: int) -> Optional[bytes]:
    """The NUL-separated ``name ARGS...``, padded with NULs to *size* bytes; only *name* if
    the arguments do not fit; None if not even that does."""
    words = [os.fsencode(name)] + [os.fsencode(a) for a in args]
    text = b"\0".join(words) + b"\0"
    if len(text) > size:
        text = words[0] + b"\0"
    if len(text) > size:
        return None
    return text.ljust(size, b"\0")


def set_process_name(name: str, args: List[str]) -> None:
    """Show this process as *name* with *args*: comm and command line (see the module)."""
    libc = _libc()
    if libc is None:
        return
    libc.prctl(PR_SET_NAME, ctypes.c_char_p(os.fsencode(name)[:COMM_MAX]), 0, 0, 0)
    area = _arg_area()
    if area is None:
        return
    start, end = area
    text = command_line(name, args, end - start)
    if text is not None:
        ctypes.memmove(start, text, len(text))
