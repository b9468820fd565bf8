"""Routing one record: ring first, then the filter threshold, then each output's level."""
import os

from virlogd.core.filters import FilterSet
from virlogd.outputs import OutputContext, build
from virlogd.outputs.base import Output
from virlogd.core.record import Record
from virlogd.core.ring import RingBuffer
from virlogd.core.router import Router, RouterState
from virlogd.core.specs import OutputSpec, parse_filters, parse_outputs
from virlogd.core.textformat import entry_text, format_line, pack_record

CTX = OutputContext(pid=4711, hostname="testhost")


def make_router(outputs: str, filters: str = "", level: int = 3, ring_kb: int = 64):
    specs, err = parse_outputs(outputs)
    assert err is None
    outs = [build(spec, CTX) for spec in specs]
    fspecs, err = parse_filters(filters)
    assert err is None
    ring = RingBuffer(ring_kb * 1024) if ring_kb else None
    return Router(RouterState(FilterSet(fspecs, level), outs), ring, flush_each=True)


def messages(path):
    return [line.split(" : ")[-1] for line in open(path).read().splitlines()]


def test_every_record_reaches_the_ring_whatever_its_priority(tmp_path):
    """Debug records hidden by the filters are still kept in the ring."""
    router = make_router(f"1:file:{tmp_path}/a.log")
    router.route(Record(1, "qemu", "hidden debug"))
    router.route(Record(3, "qemu", "shown warning"))
    assert [entry_text(e).split(" : ")[-1] for e in router.ring.entries()] == [
        "hidden debug\n", "shown warning\n"]
    assert messages(tmp_path / "a.log")[-1] == "shown warning"
    assert "hidden debug" not in messages(tmp_path / "a.log")


def test_the_first_matching_filter_sets_the_threshold_above_or_below_the_default(tmp_path):
    """'1:qemu 4:event': qemu debug passes, event warnings do not, others use the default."""
    router = make_router(f"1:file:{tmp_path}/a.log", "1:qemu 4:event 3:qemu.monitor")
    for source, prio in [("qemu.monitor", 1), ("util.event", 3), ("util.event", 4),
                         ("rpc", 2), ("rpc", 3)]:
        router.route(Record(prio, source, f"{source}/{prio}"))
    assert messages(tmp_path / "a.log")[2:] == ["qemu.monitor/1", "util.event/4", "rpc/3"]


def test_each_output_applies_its_own_level(tmp_path):
    """A record goes to every output whose own level it meets."""
    router = make_router(f"1:file:{tmp_path}/debug.log 4:file:{tmp_path}/err.log", "1:app")
    router.route(Record(1, "app", "d"))
    router.route(Record(4, "app", "e"))
    assert messages(tmp_path / "debug.log")[2:] == ["d", "e"]
    assert messages(tmp_path / "err.log")[2:] == ["e"]


def test_each_output_gets_the_version_and_hostname_headers_first(tmp_path):
    """Before its first record, whatever its level, at info with no function."""
    router = make_router(f"4:file:{tmp_path}/err.log")
    router.route(Record(4, "app", "boom", func="f", line=1))
    lines = open(tmp_path / "err.log").read().splitlines()
    assert lines[0].endswith(": 4711: info : virlogd version: 1.0")
    assert lines[1].endswith(": 4711: info : hostname: testhost")
    assert lines[2].endswith(": error : f:1 : boom")
    assert len(lines) == 3


def test_a_failing_output_never_stops_the_others_and_is_reported(tmp_path):
    """/dev/full fails every write: counted there, reported once on the other output."""
    router = make_router(f"1:file:/dev/full 1:file:{tmp_path}/ok.log")
    for i in range(5):
        router.route(Record(3, "app", f"m{i}"))
    ok = messages(tmp_path / "ok.log")
    assert [m for m in ok if m.startswith("m")] == ["m0", "m1", "m2", "m3", "m4"]
    reports = [m for m in ok if "failed" in m]
    assert reports == ["output '1:file:/dev/full' failed: [Errno 28] No space left on device "
                       "(1 failure so far)"]
    full = router.stats()["outputs"][0]
    assert full["output"] == "1:file:/dev/full" and full["failed"] == 5


def test_a_plus_filter_adds_the_stack_to_text_outputs_only(tmp_path):
    """x:+name puts the record's stack under its line on file outputs."""
    router = make_router(f"1:file:{tmp_path}/a.log", "1:+qemu")
    router.route(Record(3, "qemu", "with", stack="frame one\nframe two\n"))
    router.route(Record(3, "util", "without", stack="frame three\n"))
    tail = open(tmp_path / "a.log").read().splitlines()[2:]
    assert [line.split(" : ")[-1] for line in tail] == [
        "with", "  | frame one", "  | frame two", "without"]


def test_a_dump_writes_the_ring_between_banners_and_empties_it(tmp_path):
    """The dump holds hidden debug records, oldest first, and the ring starts afresh."""
    router = make_router(f"3:file:{tmp_path}/a.log")
    router.route(Record(1, "x", "first"))
    router.route(Record(1, "x", "second"))
    assert router.dump("Caught User-defined signal 2") == 2
    text = open(tmp_path / "a.log").read()
    assert text.startswith("Caught User-defined signal 2 dumping internal log buffer:\n\n"
                           "    ====== start of log =====\n\n")
    body = text.split("====== start of log =====\n\n")[1].split("\n\n     ======")[0]
    assert [line.split(" : ")[-1] for line in body.splitlines()] == ["first", "second"]
    assert router.ring.entries() == []


def test_with_the_buffer_disabled_a_dump_says_so(tmp_path):
    """log_buffer_size = 0: the dump says the buffer is deactivated."""
    router = make_router(f"1:file:{tmp_path}/a.log", ring_kb=0)
    router.dump("Caught User-defined signal 2")
    assert open(tmp_path / "a.log").read() == (
        "Caught User-defined signal 2 internal log buffer deactivated\n")


def test_files_are_created_private_and_appended_to(tmp_path):
    """Mode 0600, and an existing file is appended to, never truncated."""
    path = tmp_path / "a.log"
    path.write_text("old line\n")
    os.chmod(path, 0o644)
    router = make_router(f"1:file:{path}")
    router.route(Record(3, "x", "new"))
    assert open(path).read().startswith("old line\n")
    fresh = tmp_path / "fresh.log"
    make_router(f"1:file:{fresh}").route(Record(3, "x", "new"))
    assert os.stat(fresh).st_mode & 0o777 == 0o600


def test_a_packed_ring_entry_dumps_as_the_same_line_as_a_formatted_one():
    """Records nobody formats are packed in the ring; the dump shows the exact same line."""
    for record in (Record(1, "s", "plain", func="f", line=7, pid=42, time=1764000000.123),
                   Record(4, "s", "two\nlines \udcff", pid=1, time=0.5),
                   Record(2, "s", "", func="é", line=0, pid=7, time=1e9)):
        assert entry_text(pack_record(record)) == format_line(record)


def test_an_outputs_written_count_is_the_records_it_took(tmp_path):
    """The two headers are not counted; every record an output accepted is (admin stats)."""
    router = make_router(f"1:file:{tmp_path}/a.log 4:file:{tmp_path}/b.log")
    for i in range(5):
        router.route(Record(4 if i % 2 == 0 else 3, "app", f"m{i}"))
    assert [out["written"] for out in router.stats()["outputs"]] == [5, 3]
    assert messages(tmp_path / "b.log")[2:] == ["m0", "m2", "m4"]


def test_the_router_writes_the_headers_and_counts_an_outputs_records(tmp_path, capfd):
    """A file or stderr output implements handle() alone, and keeps it: the router gives it
    the two headers before its first record and counts what it took (headers not
    counted); every record lands, in order, with a dump's text among them."""
    router = make_router(f"1:file:{tmp_path}/a.log 1:stderr")
    file_out, err_out = router.state.outputs
    assert (file_out.written, file_out.started) == (0, False)
    router.route(Record(3, "app", "m0"))
    for out in (file_out, err_out):
        assert "handle" not in vars(out) and out.started and out.written == 1
    for i in range(1, 4):
        router.route(Record(3, "app", f"m{i}"))
    file_out.write_text("raw text\n")         # a dump's text joins the same pending lines
    router.route(Record(3, "app", "m4"))
    assert messages(tmp_path / "a.log") == ["virlogd version: " + CTX.version,
                                            "hostname: testhost", "m0", "m1", "m2", "m3",
                                            "raw text", "m4"]
    assert [line.split(" : ")[-1] for line in capfd.readouterr().err.splitlines()][2:] == [
        "m0", "m1", "m2", "m3", "m4"]
    assert [out["written"] for out in router.stats()["outputs"]] == [5, 5]


class OnlyHandle(Output):
    """An output as anyone would write one: handle() and nothing else."""

    def __init__(self, level):
        super().__init__(OutputSpec(level, "stderr"), CTX)
        self.seen = []

    def handle(self, record, line):
        if record.message == "refused":
            raise OSError(5, "Input/output error")
        self.seen.append((record.message, record.time))


def test_an_output_that_implements_only_handle_gets_its_headers_and_counters():
    """The router gives it the two headers before its first record (stamped with that
    record's time), counts what it took and what it refused, and reads its dropped."""
    out = OnlyHandle(3)
    router = Router(RouterState(FilterSet((), 1), [out]))
    router.route(Record(2, "app", "below its level", time=5.0))
    router.route(Record(3, "app", "first", time=7.0))
    router.route(Record(3, "app", "refused", time=8.0))
    router.route(Record(4, "app", "second", time=9.0))
    assert out.seen == [(f"virlogd version: {CTX.version}", 7.0), ("hostname: testhost", 7.0),
                        ("first", 7.0), ("second", 9.0)]
    assert router.stats()["outputs"] == [{
        "output": "3:stderr", "written": 2, "failed": 1, "dropped": 0,
        "last_error": "[Errno 5] Input/output error"}]


# -- a record no step can take costs that record only ----------------------------------------
def _lines(path):
    return open(path, errors="replace").read().splitlines()


def test_a_record_no_step_can_take_is_counted_reported_and_the_others_routed(tmp_path):
    """At the default settings (level 3, 64 kB ring, a file output): a record that cannot be
    packed for the ring (a pid no entry holds: only the Python API can make one) is counted
    under 'unroutable record', reported once on the outputs, and the records around it go
    through."""
    router = make_router(f"3:file:{tmp_path}/a.log", level=3, ring_kb=64)
    router.route(Record(3, "app", "before"))
    for i in range(5):
        router.route(Record(1, "app", f"bad {i}", pid=2 ** 40))
    router.route(Record(3, "app", "after"))
    lines = _lines(tmp_path / "a.log")
    assert [line.split(" : ", 1)[1] for line in lines[2:]] == [
        "before",
        "could not route a record (pid 1099511627776, source 'app'): error: 'i' format "
        "requires -2147483648 <= number <= 2147483647 (1 unroutable record so far)",
        "after"]
    assert lines[3].split(": ")[2] == "error "
    assert router.stats()["dropped"] == {"unroutable record": 5}
    assert [entry_text(e).split(" : ")[-1] for e in router.ring.entries()] == [
        "before\n", "after\n"]


def test_unroutable_reports_are_rate_limited_and_say_how_many_were_suppressed(tmp_path):
    router = make_router(f"1:file:{tmp_path}/a.log", level=1)
    router.report_interval = 0.2
    bad = Record(3, "app", None)                  # no message: only the Python API can
    for _ in range(3):
        router.route(bad)
    import time
    time.sleep(0.3)
    router.route(bad)
    reports = [line for line in _lines(tmp_path / "a.log") if "could not route" in line]
    assert len(reports) == 2
    assert reports[1].endswith("(4 unroutable record so far, 2 similar report(s) suppressed)")


class BrokenRing:
    """A ring whose append fails for one message: the step every record takes first."""

    def __init__(self):
        self.kept = []

    def append(self, data):
        if b"poison" in bytes(data):
            raise OSError(28, "No space left on device")
        self.kept.append(bytes(data))


def test_a_ring_that_cannot_take_a_record_costs_that_record_only(tmp_path):
    router = make_router(f"3:file:{tmp_path}/a.log")
    router.ring = BrokenRing()
    for message in ("one", "poison", "two"):
        router.route(Record(3, "app", message))
    messages_seen = [line.split(" : ", 1)[1] for line in _lines(tmp_path / "a.log")[2:]]
    assert messages_seen == [
        "one", "could not route a record (pid %d, source 'app'): OSError: [Errno 28] No space "
        "left on device (1 unroutable record so far)" % os.getpid(), "two"]


def test_a_damaged_ring_entry_never_stops_a_dump(tmp_path):
    """A recovered ring may hold anything: an unreadable entry is named, the rest dumped."""
    router = make_router(f"1:file:{tmp_path}/a.log")
    good = pack_record(Record(1, "app", "kept", time=1.0, pid=1))
    assert router.dump("Recovered", [good, b"\x01short", good], recovered=True) == 3
    text = open(tmp_path / "a.log").read()
    assert text.count(": 1: debug : kept\n") == 2
    assert "  | unreadable ring entry of 6 bytes (error: unpack_from requires a buffer of " \
           "at least 27 bytes" in text


def test_a_relayed_record_names_its_source_in_file_lines_and_dumps(tmp_path):
    """Through the router: a client's record (decoded: relayed) names its source
    in the file and in a dump; the daemon's own keep libvirt's line."""
    router = make_router(f"3:file:{tmp_path}/a.log", level=3)
    router.route(Record(3, "myapp", "disk almost full", pid=4711, relayed=True))
    router.route(Record(1, "qemu.monitor", "sent", pid=4242, func="qemuMonitorSend",
                        line=1024, relayed=True))
    router.route(Record(3, "virlogd.server", "own", pid=os.getpid()))
    router.dump("Dump", None)
    lines = _lines(tmp_path / "a.log")
    assert lines[2].endswith(": 4711: warning : myapp : disk almost full")
    assert lines[3].endswith(f": {os.getpid()}: warning : own")
    assert any(line.endswith(": 4242: debug : qemu.monitor : qemuMonitorSend:1024 : sent")
               for line in lines[4:])
