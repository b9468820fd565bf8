"""Wire frames: a client connection's bytes through the daemon's real client server.

Each input is everything one client sends on a connection (greeting, frames), delivered by a
fake socket in reads of the profile's size, so frames also arrive cut at every place; the
connection then ends (EOF). The server's read callback decodes with ``wire.FrameDecoder`` (the
compiled frame loop, or pure Python), routes through the profile's router (ring, filters,
outputs), answers with acknowledgements and reports malformed and truncated frames. Nothing
may raise out of the callback: that is what stops the daemon. And no string a client sends
may forge a line: every line handed to a text output, and every row of a dump, is checked
(``harness.LineCheck``).
"""
from harness import FakeListener, FakeLoop, FakeStream, check, make_daemons, server


def setup():
    daemons = make_daemons()
    servers = []
    for d in daemons:
        listener = FakeListener()
        srv = server.ClientServer(FakeLoop(), d.router, listener, max_clients=4)
        srv.start()
        servers.append((srv, listener, d))

    def one_input(data: bytes) -> None:
        for srv, listener, d in servers:
            conn = FakeStream(data, d.profile.chunk)
            listener.waiting.append(conn)
            srv._on_listen(listener)                 # accept: SO_PEERCRED, a decoder
            while conn.fd in srv.connections:
                srv._on_readable(conn)               # one read: decode, route, answer
                d.router.flush()                     # the loop's after_batch
            for out in d.router.state.outputs:       # housekeeping (rotation checks)
                out.poll()
            if d.profile.name == "ring-1k":          # a dump of what the ring kept
                d.router.dump("fuzz")
            check()
    return one_input
