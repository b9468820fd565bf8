"""The router's fallback (virlogd/fallback.py): a record every output failed on is written
there, a record another output took is not, and the fallback's reader learns when the output
works again. Real sockets and files; the daemon-level scenarios are in
tests/integration/test_output_fallback.py."""
from __future__ import annotations

import socket

from virlogd.daemon.fallback import Fallback
from virlogd.core.filters import FilterSet
from virlogd.outputs import OutputContext, build
from virlogd.outputs.syslog import SyslogOutput
from virlogd.core.record import Record
from virlogd.core.router import Router, RouterState
from virlogd.core.specs import OutputSpec


def syslog_at(path) -> SyslogOutput:
    return SyslogOutput(OutputSpec(1, "syslog", "app"), OutputContext(), path=str(path),
                        wait=0.1)


def file_output(path):
    return build(OutputSpec(1, "file", str(path)), OutputContext(hostname="h"))


def lines_of(path):
    return path.read_text().splitlines() if path.exists() else []


def test_records_every_output_failed_on_go_to_the_fallback_until_it_works_again(tmp_path):
    receiver_path = tmp_path / "log.sock"            # nobody there yet
    out = syslog_at(receiver_path)
    fallback_file = tmp_path / "fallback.log"
    fallback = Fallback(lambda: file_output(fallback_file))
    router = Router(RouterState(FilterSet([], 1), [out]))
    router.fallback = fallback
    for i in range(3):
        router.route(Record(3, "src", f"lost {i}"))
    router.flush()
    text = lines_of(fallback_file)
    assert [line.split(" : ", 1)[1] for line in text[:2]] == [   # as from the router
        f"virlogd version: {OutputContext().version}", "hostname: h"]
    assert [line.split(" : ", 1)[1] for line in text[2:]] == [
        f"no output took a record (output '1:syslog:app' failed: cannot reach syslog at "
        f"{receiver_path}: No such file or directory); records that no output takes go to "
        f"'1:file:{fallback_file}' until one works",
        "lost 0", "lost 1", "lost 2"]
    assert (fallback.taken, fallback.lost, router.dropped) == (3, 0, {})

    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    receiver.bind(str(receiver_path))
    try:
        router.route(Record(3, "src", "delivered"))
        router.flush()
        datagram = receiver.recv(4096)
        assert datagram.startswith(b"<28>") and datagram.endswith(b" : delivered"), datagram
    finally:
        receiver.close()
    text = lines_of(fallback_file)
    assert not any(line.endswith(" : delivered") for line in text)
    assert text[-1].endswith(": warning : output '1:syslog:app' works again "
                             "(3 failures in all)"), text
    assert fallback.taken == 3


def test_a_record_another_output_took_does_not_go_to_the_fallback(tmp_path):
    broken = syslog_at(tmp_path / "nobody")
    working = file_output(tmp_path / "working.log")
    fallback_file = tmp_path / "fallback.log"
    router = Router(RouterState(FilterSet([], 1), [broken, working]))
    router.fallback = Fallback(lambda: file_output(fallback_file))
    router.route(Record(3, "src", "taken by the file"))
    router.flush()
    assert not fallback_file.exists()
    assert lines_of(tmp_path / "working.log")[-1].endswith(" : taken by the file")


def test_a_record_below_the_working_outputs_level_goes_to_the_fallback(tmp_path):
    """Only the outputs whose level the record met count: a debug record that only the
    failing output wanted is not 'taken' by a warning-level file."""
    broken = syslog_at(tmp_path / "nobody")
    working = build(OutputSpec(3, "file", str(tmp_path / "w.log")), OutputContext())
    fallback_file = tmp_path / "fallback.log"
    router = Router(RouterState(FilterSet([], 1), [broken, working]))
    router.fallback = Fallback(lambda: file_output(fallback_file))
    router.route(Record(1, "src", "debug only syslog wanted"))
    router.flush()
    assert lines_of(fallback_file)[-1].endswith(" : debug only syslog wanted")


def test_with_no_fallback_to_be_had_the_record_is_counted_as_dropped(tmp_path):
    out = syslog_at(tmp_path / "nobody")
    router = Router(RouterState(FilterSet([], 1), [out]))
    router.fallback = Fallback(lambda: None)
    for i in range(4):
        router.route(Record(4, "src", f"nowhere {i}"))
    router.flush()
    assert router.stats()["dropped"] == {"no output took it": 4}
