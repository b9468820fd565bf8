"""Client.drain (confirmed delivery), Client.refused (the admin socket by mistake) and
Client.on_lost (a connection lost mid-stream): what ``virlog`` is built on."""
import os
import time

import pytest

from daemonproc import Daemon
from serve import InProcessServer
from virlogd.client.client import Client
from virlogd.core.record import Record


@pytest.fixture
def server(tmp_path):
    srv = InProcessServer(str(tmp_path / "sock"))
    yield srv
    srv.stop()


def test_drain_returns_once_the_daemon_routed_everything(server):
    """No waiting after drain(): every record is routed by the time it returns True."""
    client = Client(server.path, hold=10000)
    for i in range(2000):
        client.send(Record(3, "drained", f"m{i}"))
    assert client.drain(timeout=5) is True
    assert server.messages("drained") == [f"m{i}" for i in range(2000)]
    assert (client.connected, client.undelivered) == (False, 0)
    client.close()


def test_drain_with_nothing_to_send_and_no_daemon_is_true(tmp_path):
    client = Client(str(tmp_path / "nobody"))
    assert client.drain(timeout=0) is True
    client.close()


def test_drain_without_a_daemon_gives_up_and_keeps_the_records(tmp_path):
    client = Client(str(tmp_path / "nobody"))
    client.send(Record(3, "x", "kept"))
    assert client.drain(timeout=0.3) is False
    assert client.undelivered == 1 and client.last_error == "No such file or directory"
    with open(os.devnull, "w") as quiet:
        assert client.report_undelivered(stream=quiet) is not None
        client.close()


def test_the_admin_socket_is_refused_at_once_and_never_retried(tmp_path):
    """A client given the admin socket learns it from its answer: refused names it,
    drain fails at once, and no second connection is made (one refused request)."""
    d = Daemon(tmp_path)
    try:
        client = Client(d.admin_socket)
        assert client.open()
        client.send(Record(3, "x", "lost"))
        assert client.drain(timeout=10) is False
        assert client.refused == "this is virlogd's admin socket, not its client socket"
        assert client.last_error == client.refused and not client.open()
        with open(os.devnull, "w") as quiet:   # (the undelivered line is the client's test)
            client.report_undelivered(stream=quiet)
            client.close()
            client.report_undelivered(stream=quiet)
    finally:
        assert d.stop() == 0


def test_on_lost_is_told_why_once_per_lost_connection(tmp_path):
    """A daemon that goes away mid-stream: on_lost hears the reason, the client reconnects
    to the next daemon and sends again what the first never confirmed."""
    path = str(tmp_path / "sock")
    first = InProcessServer(path)
    client = Client(path)
    told = []
    client.on_lost.append(told.append)
    client.send(Record(3, "s", "before"))
    assert client.drain(timeout=5)
    deadline = time.monotonic() + 5     # a connection for the daemon to drop (open() never
    while not client.open():            # waits, not even for the lock its listener holds)
        assert time.monotonic() < deadline
        time.sleep(0.01)
    first.stop()
    second = InProcessServer(path)
    try:
        for i in range(3):
            client.send(Record(3, "s", f"after {i}"))
            client.flush()
        assert client.drain(timeout=10)
        assert second.messages("s")[-3:] == ["after 0", "after 1", "after 2"]
    finally:
        second.stop()
        client.close()
    assert told in (["Broken pipe"], ["Connection reset by peer"])
