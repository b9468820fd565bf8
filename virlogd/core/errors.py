"""virlogd's exceptions.

Our exception hierarchy::

    VirlogdError
    ├── ConfigError     a setting that cannot be used (bad file, bad value in configure())
    └── ProtocolError   a malformed frame on a socket
"""


class VirlogdError(Exception):
    """Base of every error virlogd raises on purpose."""


class ConfigError(VirlogdError):
    """A setting that cannot be used; ``str()`` is the full message for the user."""


class ProtocolError(VirlogdError):
    """A malformed or oversized frame."""
