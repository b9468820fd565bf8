"""The one SO_PEERCRED reader, which both daemon sockets trust instead of what a peer says."""
import os
import socket

from virlogd.daemon.peercred import peer_credentials


def test_peer_credentials_are_the_connecting_process():
    left, right = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with left, right:
        assert peer_credentials(left) == (os.getpid(), os.getuid(), os.getgid())

