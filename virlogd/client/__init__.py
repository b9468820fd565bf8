"""What runs inside every program: the library, its connection to the daemon, the handler.

``Client`` is re-exported so that ``virlogd.client.Client``, its name before the package
layout, still works.
"""
from .client import Client

__all__ = ["Client"]
