"""Admin requests: bytes on an admin connection through the real ``AdminServer`` and the
daemon's real admin operations (filters, outputs, level, dump, stats).

Each input is everything one connection sends (possibly several request lines), delivered in
reads of the profile's size, then EOF. The control object is the real ``Daemon`` (with
``Daemon.start``'s ring, outputs and router, without its sockets), so a request that sets
filters, outputs or the level really swaps the router's state and logs the change; outputs
are confined by the harness. Before each input every daemon is put back to its profile's
settings, so an input does what it does alone. Nothing may raise out of the read callback,
and every answer must be one JSON object per line with ``ok``.
"""
import json

from harness import FakeListener, FakeLoop, FakeStream, add_check, admin, check, \
    make_daemons


def setup():
    servers = []
    for d in make_daemons():
        listener = FakeListener()
        servers.append((admin.AdminServer(FakeLoop(), d, listener), listener, d))

    def one_input(data: bytes) -> None:
        for srv, listener, d in servers:
            p = d.profile
            d.set_filters(p.filters, "fuzz")
            d.set_outputs(p.outputs, "fuzz")
            d.set_level(str(p.level), "fuzz")
            add_check(d)
            conn = FakeStream(data, p.chunk)
            listener.waiting.append(conn)
            srv._accept(listener)
            while conn.fd >= 0 and conn.fd in srv.connections:
                srv._readable(conn)
            d.router.flush()
            check()
            for line in bytes(conn.sent).splitlines():
                answer = json.loads(line)
                if not isinstance(answer, dict) or not isinstance(answer.get("ok"), bool):
                    raise AssertionError(f"malformed answer {line!r}")
    return one_input
