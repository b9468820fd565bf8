"""virlogd: libvirt's logging facility for Python programs and for every program on a host.

    import virlogd
    log = virlogd.getLogger("qemu.monitor")
    log.debug("sent %s", cmd)
    virlogd.configure(level=2, filters="1:util", outputs="1:file:/tmp/app.log")
    virlogd.dump_buffer("why")

``virlogd.VirlogdHandler`` sends stdlib ``logging`` records to the daemon.
"""
__version__ = "1.0"

from .core.errors import ConfigError, VirlogdError  # noqa: E402
from .client.library import Logger, configure, dump_buffer, getLogger  # noqa: E402
from .core.priority import Priority  # noqa: E402

__all__ = ["ConfigError", "Logger", "Priority", "VirlogdError", "VirlogdHandler",
           "configure", "dump_buffer", "getLogger", "__version__"]


def __getattr__(name):
    # the handler pulls in the socket client; programs that only log in-process skip it
    if name == "VirlogdHandler":
        from .client.handler import VirlogdHandler
        return VirlogdHandler
    raise AttributeError(f"module 'virlogd' has no attribute {name!r}")
