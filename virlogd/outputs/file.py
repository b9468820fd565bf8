"""``x:file:PATH``: text lines appended to a file (mode 0600, created if missing).

Writes are buffered per batch and pushed by ``flush()`` (the daemon flushes after every batch
it reads, the library after every record), so a dump or an exit never loses a line.
"""
from __future__ import annotations

import os

from .base import Output


def open_append(path: str) -> int:
    return os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)


class FileOutput(Output):
    text = True

    def __init__(self, spec, ctx) -> None:
        super().__init__(spec, ctx)
        self.path = spec.name
        self._pending: list = []
        self._fd = open_append(self.path)   # fail at build time: a bad path is refused

    def emit(self, record, line: str) -> None:
        self._pending.append(line)

    def write_text(self, text: str) -> None:
        self._pending.append(text)
        self.flush()

    def flush(self) -> None:
        if not self._pending:
            return
        data = "".join(self._pending).encode("utf-8", "surrogateescape")
        if self._fd < 0:
            self._fd = open_append(self.path)
        view = memoryview(data)
        while view:
            view = view[os.write(self._fd, view):]
        # only forget what reached the file: a failed write is retried on the next flush
        self._pending.clear()

    def close(self) -> None:
        try:
            self.flush()
        finally:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1
