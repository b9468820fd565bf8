"""Outputs, one module per destination; ``build()`` turns a spec into a live output."""
from __future__ import annotations

from importlib import import_module

from .base import Output, OutputContext

# destination -> (module, class); imported lazily so that the library does not pay for
# (or need) systemd-python, ssl or threads it never uses.
_KINDS = {
    "stderr": ("stderr", "StderrOutput"),
    "file": ("file", "FileOutput"),
    "syslog": ("syslog", "SyslogOutput"),
    "journald": ("journald", "JournaldOutput"),
    "virlogd": ("virlogd", "VirlogdOutput"),
    "remote": ("remote", "RemoteOutput"),
}


def build(spec, ctx: OutputContext) -> Output:
    """A new output for *spec*; raises OSError/ValueError if it cannot be opened."""
    module, cls = _KINDS[spec.dest]
    return getattr(import_module(f"{__name__}.{module}"), cls)(spec, ctx)


__all__ = ["Output", "OutputContext", "build"]
