"""Which implementation of the hot paths runs: the C twins, or pure Python.

``ring.py``, ``wire.py`` (with the ``x:virlogd`` output's ``FrameSender``; its twin also has
``RecordHandler``, ``VirlogdHandler.handle`` for the usual record),
``textformat.py``, ``framequeue.py`` and ``Router.route_many`` (with the text outputs'
``LineAppender``) are complete in pure Python; each has a C twin (``_cring``, ``_cwire``,
``_ctext``, ``_cqueue``, ``_croute``) built by ``setup.py`` that does the same work for the
per-record paths, several times faster (see docs/PERFORMANCE.md). This is the one place that
chooses: the twin when it was built and ``VIRLOGD_PURE_PYTHON`` is not set to 1.
The test suite runs the unit tables against both.
"""
from __future__ import annotations

import importlib
import os
from types import ModuleType
from typing import Optional

PURE = os.environ.get("VIRLOGD_PURE_PYTHON", "") == "1"
# every twin, as load() and built() name it (setup.py builds each virlogd/_c<name>.c)
TWINS = ("ring", "wire", "text", "queue", "route")


def load(name: str) -> Optional[ModuleType]:
    """The C twin ``virlogd._c<name>``, or None (not built, or pure Python asked for)."""
    if PURE:
        return None
    try:
        return importlib.import_module(f"virlogd._c{name}")
    except ImportError:
        return None


def built(name: str) -> bool:
    """Whether the twin exists at all (whatever PURE says): what CI checks."""
    try:
        importlib.import_module(f"virlogd._c{name}")
    except ImportError:
        return False
    return True
