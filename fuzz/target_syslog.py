"""Syslog datagrams (RFC 3164, RFC 5424, and whatever else arrives on /dev/log).

Each input is one datagram, read by the real ``SyslogInput`` from a fake datagram socket
(with the sender's credentials, cut at 64 kB as the kernel would), parsed by
``parse_syslog`` and routed through each profile's router. Nothing may raise out of
``SyslogInput.read``, the input's whole boundary, and no datagram may forge a line.
"""
import socket
import struct

from harness import FakeDatagrams, FakeLoop, check, make_daemons, syslog_input

CRED = [(socket.SOL_SOCKET, socket.SCM_CREDENTIALS, struct.pack("3i", 4242, 1000, 1000))]


def setup():
    inputs = []
    for d in make_daemons():
        sock = FakeDatagrams()
        inputs.append((syslog_input.SyslogInput(FakeLoop(), d.router, sock), sock, d))

    def one_input(data: bytes) -> None:
        for number, (syslog, sock, d) in enumerate(inputs):
            # every other profile: no credentials (a datagram from another namespace)
            sock.queue.append((data, CRED if number % 2 == 0 else []))
            syslog.read(syslog_input.READ_BATCH)
            d.router.flush()
            check()
    return one_input
