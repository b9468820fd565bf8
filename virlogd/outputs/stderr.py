"""``x:stderr``: text lines on the process's standard error."""
from __future__ import annotations

import os

from .base import LineBufferOutput


class StderrOutput(LineBufferOutput):
    def write_text(self, text: str) -> None:
        self._pending.append(text)
        self.flush()

    def flush(self) -> None:
        if not self._pending:
            return
        data = "".join(self._pending).encode("utf-8", "surrogateescape")
        self._pending.clear()
        view = memoryview(data)
        while view:     # retry short writes, as libvirt does
            view = view[os.write(2, view):]
