"""The client protocol (docs/protocol.md): what a frame carries, and what the decoder refuses.

Every test runs twice: with the compiled speedups and with pure Python. The two are compared
with each other on random streams in test_wire_twins.py.
"""
import math
import struct

import pytest
from hypothesis import given, settings, strategies as st

from virlogd.core import speedups
from virlogd.protocol import wire
from virlogd.core.errors import ProtocolError
from virlogd.core.record import Record


TWINS = ("frames", "encode_parts", "encode")


@pytest.fixture(scope="module", autouse=True, params=["compiled", "python"])
def implementation(request):
    """Which implementation every decoder and encoder of the test uses."""
    if request.param == "compiled" and not speedups.compiled():
        pytest.skip("the compiled speedups are not in use (not built, or VIRLOGD_PURE_PYTHON=1)")
    with pytest.MonkeyPatch.context() as patch:
        if request.param == "python":
            for name in TWINS:
                patch.setattr(wire, name, speedups.pure(getattr(wire, name)))
        yield request.param


def full_record(**changes):
    values = dict(priority=3, source="qemu.monitor", message="line one\nline\x00two \udcff",
                  time=1700000000.25, func="qemuMonitorSend", line=278,
                  file="/src/qemu_monitor.py", stack="Traceback...\n  boom\n", ident="app",
                  fields={"MESSAGE_ID": "8ae2f3fb-2dbe", "LIBVIRT_DOMAIN": "10",
                          "RAW": b"\x00\xff"})
    values.update(changes)
    return Record(values.pop("priority"), values.pop("source"), values.pop("message"),
                  **values)


def decode(data, **identity):
    decoder = wire.FrameDecoder(**identity)
    return decoder.feed(data)


def frame_with(header_changes=None, body=b""):
    """A hand-built record frame: the documented 44-byte header, then *body*."""
    values = dict(kind=1, priority=2, nfields=0, line=0, time=1.0, lengths=(1, 0, 0, 0, 0, 0))
    values.update(header_changes or {})
    head = struct.pack("<BBHId6I", values["kind"], values["priority"], values["nfields"],
                       values["line"], values["time"], *values["lengths"])
    payload = head + body
    return struct.pack("<I", values.get("size", len(payload))) + payload


def refused(data, **kwargs):
    with pytest.raises(ProtocolError) as info:
        wire.FrameDecoder(**kwargs).feed(data)
    return str(info.value)


def test_the_implementation_under_test_is_the_one_in_use(implementation):
    """The parametrization is real: decoders and the encoder run the implementation named."""
    for name in TWINS:
        function = getattr(wire, name)
        assert (function is speedups.pure(function)) == (implementation == "python" or
                                                         not speedups.compiled())


class TestRoundTrip:
    def test_every_carried_value_comes_back_unchanged(self):
        """Priority, source, message, func, line, file, time, fields, stack and ident survive."""
        sent = full_record()
        got, = decode(wire.HELLO + wire.encode(sent))
        for name in ("priority", "source", "message", "func", "line", "file", "time",
                     "fields", "stack", "ident"):
            assert getattr(got, name) == getattr(sent, name), name

    def test_invalid_utf8_in_a_message_is_kept_byte_for_byte(self):
        """Messages are binary-safe: undecodable bytes come back as the same bytes."""
        raw = b"caf\xe9 \xff\xfe ok"
        sent = full_record(message=raw.decode("utf-8", "surrogateescape"))
        got, = decode(wire.HELLO + wire.encode(sent))
        assert got.message.encode("utf-8", "surrogateescape") == raw

    def test_identity_comes_from_the_decoder_never_from_the_frame(self):
        """pid/uid/gid are not on the wire: the decoder stamps the peer's credentials."""
        sent = full_record(pid=1, uid=0, gid=0)
        got, = decode(wire.HELLO + wire.encode(sent), pid=4242, uid=1000, gid=100)
        assert (got.pid, got.uid, got.gid) == (4242, 1000, 100)
        assert b"4242" not in wire.encode(full_record(pid=4242))

    def test_absent_optional_values_stay_absent(self):
        """A record with only priority, source and message decodes with None elsewhere."""
        got, = decode(wire.HELLO + wire.encode(Record(1, "s", "m", time=5.0)))
        assert (got.func, got.file, got.stack, got.ident, got.fields, got.line) == \
            (None, None, None, None, {}, 0)

    def test_a_one_mebibyte_message_fits_in_a_frame(self):
        """The frame limit (4 MiB) leaves room for a 1 MiB message."""
        got, = decode(wire.HELLO + wire.encode(full_record(message="x" * 1024 * 1024)))
        assert len(got.message) == 1024 * 1024

    @settings(max_examples=60, deadline=None)
    @given(messages=st.lists(st.text(), min_size=1, max_size=5),
           cuts=st.lists(st.integers(min_value=0, max_value=4000), max_size=8))
    def test_records_decode_the_same_however_the_stream_is_cut(self, messages, cuts):
        """Reads may split frames anywhere: the records and their order never change."""
        stream = wire.HELLO + b"".join(wire.encode(Record(2, "s", m, time=1.0))
                                       for m in messages)
        decoder = wire.FrameDecoder()
        got = []
        start = 0
        for cut in sorted(set(min(c, len(stream)) for c in cuts)) + [len(stream)]:
            got += decoder.feed(stream[start:cut])
            start = cut
        assert [r.message for r in got] == messages
        assert decoder.pending == 0

    def test_the_frame_layout_is_the_documented_one(self):
        """Length, type, priority, field count, line, time, six lengths, strings, fields."""
        frame = wire.encode(Record(4, "ab", "msg", time=2.5, line=7,
                                   fields={"K": "v"}))
        assert frame == (struct.pack("<IBBHId6I", 40 + 2 + 3 + 8, 1, 4, 1, 7, 2.5,
                                     2, 3, 0, 0, 0, 0)
                         + b"ab" + b"msg" + struct.pack("<BBI", 1, 0, 1) + b"K" + b"v")
        assert wire.HELLO == b"VIRLOGD\x02" and wire.HELLO_V1 == b"VIRLOGD\x01"


    def test_every_slot_of_a_decoded_record_is_set(self):
        """Decoded records are complete Records: every slot readable, the repr works."""
        got, = decode(wire.HELLO + wire.encode(full_record()), pid=7, uid=8, gid=9)
        assert type(got) is Record
        assert {name: type(getattr(got, name)).__name__ for name in Record.__slots__} == {
            "time": "float", "priority": "int", "source": "str", "message": "str",
            "func": "str", "line": "int", "file": "str", "fields": "dict", "stack": "str",
            "pid": "int", "uid": "int", "gid": "int", "ident": "str", "relayed": "bool"}
        assert got.relayed is True              # another process sent it: lines name it
        assert repr(got).startswith("Record(priority=3, source='qemu.monitor'")

    def test_a_memoryview_of_a_shared_read_buffer_is_decoded(self):
        """The server feeds slices of one reused buffer: records must not depend on it."""
        frames = b"".join(wire.encode(Record(2, "s", f"m{i}", time=1.0)) for i in range(3))
        shared = bytearray(wire.HELLO + frames)
        decoder = wire.FrameDecoder()
        got = decoder.feed(memoryview(shared)[:len(shared) - 5])
        shared[:] = b"\xff" * len(shared)
        assert [r.message for r in got] == ["m0", "m1"] and decoder.pending == 42

    def test_frames_the_fast_path_leaves_to_python_keep_their_order(self):
        """Good frames around one whose field is renamed come back in order, all of them."""
        frames = [wire.encode(Record(2, "s", "a", time=1.0)),
                  wire.encode(Record(2, "s", "b", time=1.0, fields={"bad-name": "x"})),
                  wire.encode(Record(2, "s", "c", time=1.0, fields={"GOOD": b"y"})),
                  wire.encode(Record(2, "s", "d", time=1.0))]
        decoder = wire.FrameDecoder()
        got = decoder.feed(wire.HELLO + b"".join(frames))
        assert [(r.message, r.fields) for r in got] == [
            ("a", {}), ("b", {"BAD_NAME": "x"}), ("c", {"GOOD": b"y"}), ("d", {})]
        assert decoder.renamed == 1


class TestFieldNames:
    def test_an_invalid_field_name_is_renamed_and_counted(self):
        """Data is never lost: 'message-id' becomes MESSAGE_ID, '_PID' X_PID, each counted."""
        decoder = wire.FrameDecoder()
        got, = decoder.feed(wire.HELLO + wire.encode(
            Record(2, "s", "m", fields={"message-id": "a", "_PID": "1", "OK": "b"})))
        assert got.fields == {"MESSAGE_ID": "a", "X_PID": "1", "OK": "b"}
        assert decoder.renamed == 2

    def test_bytes_values_stay_bytes_and_text_stays_text(self):
        """A field's kind (text or bytes) travels with it."""
        got, = decode(wire.HELLO + wire.encode(
            Record(2, "s", "m", fields={"T": "t\xe9", "B": b"\xe9"})))
        assert got.fields == {"T": "t\xe9", "B": b"\xe9"}


class TestRefusals:
    def test_an_oversized_frame_is_refused_before_it_is_read(self):
        """A length beyond 4 MiB is refused from the prefix alone."""
        assert refused(wire.HELLO + b"\xff\xff\xff\xff") == \
            "frame of 4294967295 bytes exceeds the 4194304-byte limit"

    def test_an_invalid_priority_is_refused(self):
        """Only 1-4 exist."""
        assert refused(wire.HELLO + frame_with({"priority": 9}, b"s")) == "invalid priority 9"

    def test_invalid_utf8_in_the_source_is_refused(self):
        """The source is matched by filters: it must be text."""
        assert refused(wire.HELLO + frame_with({}, b"\xff")) == "invalid UTF-8 in source"

    def test_invalid_utf8_in_the_function_name_is_refused(self):
        """func is an identifier, not free text."""
        assert refused(wire.HELLO + frame_with({"lengths": (1, 0, 1, 0, 0, 0)}, b"s\xff")) \
            == "invalid UTF-8 in func at byte 0"

    def test_a_time_that_is_not_a_number_is_refused(self):
        """NaN, infinities and times beyond year 9999 cannot be formatted."""
        assert refused(wire.HELLO + frame_with({"time": math.nan}, b"s")) == "invalid time nan"
        assert refused(wire.HELLO + frame_with({"time": -1.0}, b"s")) == "invalid time -1.0"

    def test_strings_longer_than_their_frame_are_refused(self):
        """Declared lengths must fit in the frame."""
        assert refused(wire.HELLO + frame_with({"lengths": (1, 50, 0, 0, 0, 0)}, b"s")) == \
            "truncated strings: the header declares 51 bytes in a 41-byte frame"

    def test_a_truncated_field_is_refused(self):
        """A field whose value runs past the frame's end is named by its position."""
        field = struct.pack("<BBI", 1, 0, 99) + b"Kv"
        assert refused(wire.HELLO + frame_with({"nfields": 1}, b"s" + field)) == \
            "truncated field 1 of 1"

    def test_bytes_after_the_last_field_are_refused(self):
        """A frame must end exactly where its content does."""
        assert refused(wire.HELLO + frame_with({}, b"s" + b"junk")) == \
            "frame length mismatch: the record ends at byte 41 of a 45-byte frame"

    def test_too_many_fields_are_refused(self):
        """At most 256 fields per record."""
        assert refused(wire.HELLO + frame_with({"nfields": 300}, b"s")) == \
            "too many fields (300, limit 256)"

    def test_an_unknown_frame_type_is_refused(self):
        """Version 1 has record frames only."""
        assert refused(wire.HELLO + frame_with({"kind": 7}, b"s")) == "unknown frame type 7"

    def test_a_stream_without_the_greeting_is_refused(self):
        """The first bytes must be the greeting: anything else is not a virlogd client."""
        assert refused(b"<13>Nov 23 hello") == \
            "not a virlogd client: bad greeting b'<13>Nov ' (expected b'VIRLOGD\\x02')"

    def test_an_unknown_protocol_version_is_refused(self):
        """A future client meeting an old daemon is told why."""
        assert refused(b"VIRLOGD\x04") == \
            "unsupported protocol version 4 (this daemon speaks 1, 2 and 3)"
        assert refused(b"VIRLOGD\x00") == \
            "unsupported protocol version 0 (this daemon speaks 1, 2 and 3)"

    @pytest.mark.parametrize("greeting, version", [(wire.HELLO_V1, 1), (wire.HELLO, 2),
                                                   (wire.HELLO_V3, 3)])
    def test_both_versions_are_accepted_and_remembered(self, greeting, version):
        """Version 1 clients keep working; the decoder tells the server who wants answers."""
        decoder = wire.FrameDecoder()
        assert decoder.version == 0
        got, = decoder.feed(greeting + wire.encode(Record(2, "s", "m")))
        assert got.message == "m" and decoder.version == version

    def test_a_partial_greeting_waits_for_the_rest(self):
        """The greeting itself may arrive in pieces."""
        decoder = wire.FrameDecoder()
        assert decoder.feed(b"VIR") == [] and decoder.pending == 3
        assert [r.message for r in decoder.feed(b"LOGD\x01" + wire.encode(
            Record(2, "s", "m")))] == ["m"]

    def test_records_before_a_bad_frame_are_handed_over_with_the_error(self):
        """The good records already read are on the error, so they can still be routed."""
        data = wire.HELLO + wire.encode(Record(2, "s", "first")) + b"\xff\xff\xff\xff"
        decoder = wire.FrameDecoder()
        with pytest.raises(ProtocolError) as info:
            decoder.feed(data)
        assert [r.message for r in info.value.records] == ["first"]
        with pytest.raises(ProtocolError, match=r"^frame of 4294967295 bytes exceeds"):
            decoder.feed(wire.encode(Record(2, "s", "after")))


class TestEncoderRefusals:
    def test_the_encoder_refuses_a_priority_outside_one_to_four(self):
        """A bad record is refused in the client, so it never costs the connection."""
        with pytest.raises(ValueError, match=r"^invalid priority 9 \(expected 1-4\)$"):
            wire.encode(Record(9, "s", "m"))

    def test_the_encoder_refuses_a_record_beyond_the_frame_limit(self):
        """The daemon would close the connection: refuse it before sending."""
        with pytest.raises(ValueError, match=r"^record of 5242882 bytes exceeds the "
                                             r"4194304-byte frame limit$"):
            wire.encode(Record(2, "s", "x" * (5 * 1024 * 1024 - 39)))

    def test_the_encoder_refuses_more_than_256_fields(self):
        """The field limit is checked on both sides."""
        with pytest.raises(ValueError, match=r"^too many fields \(300, limit 256\)$"):
            wire.encode(Record(2, "s", "m", fields={f"F{i}": "v" for i in range(300)}))


class TestAnswers:
    def test_an_answer_is_the_count_as_eight_little_endian_bytes(self):
        """Version 2: the daemon's acknowledgement, as docs/protocol.md shows it."""
        assert wire.encode_ack(43) == bytes([43, 0, 0, 0, 0, 0, 0, 0])
        assert wire.encode_ack(2**40) == struct.pack("<Q", 2**40)

    def test_the_ack_decoder_gives_the_newest_count_and_keeps_a_partial_one(self):
        """Answers may be cut anywhere by the stream; only the newest complete count matters."""
        acks = wire.AckDecoder()
        stream = wire.encode_ack(5) + wire.encode_ack(9) + wire.encode_ack(12)
        assert acks.feed(stream[:3]) is None
        assert acks.feed(stream[3:13]) == 5
        assert acks.feed(stream[13:15]) is None
        assert acks.feed(stream[15:]) == 12
        assert acks.feed(b"") is None


# -- the admissible range of each field (docs/protocol.md) -----------------------------------
def strings_frame(source=b"s", message=b"m", func=b"", file=b"", stack=b"", ident=b"",
                  line=0):
    parts = (source, message, func, file, stack, ident)
    return frame_with({"line": line, "lengths": tuple(map(len, parts))}, b"".join(parts))


class TestRanges:
    def test_every_line_number_the_wire_admits_is_kept(self):
        """line is a u32: 2**31 and 2**32-1 come through as they were sent."""
        got = decode(wire.HELLO + strings_frame(line=2 ** 31) + strings_frame(line=2 ** 32 - 1))
        assert [r.line for r in got] == [2 ** 31, 2 ** 32 - 1]

    @pytest.mark.parametrize("name, limit", [("source", wire.MAX_SOURCE),
                                             ("func", wire.MAX_FUNC),
                                             ("file", wire.MAX_FILE),
                                             ("ident", wire.MAX_IDENT)])
    def test_a_long_name_is_cut_at_its_limit_and_the_record_kept(self, name, limit):
        """A value over its limit is cut there, never inside a UTF-8 sequence."""
        records = decode(wire.HELLO
                         + strings_frame(**{name: b"x" * (limit + 5000)})
                         + strings_frame(**{name: b"x" * limit})
                         + strings_frame(**{name: b"a" + "\u00e9".encode() * limit})
                         + strings_frame(**{name: b"ab" + "\U0001f600".encode() * limit})
                         + strings_frame(**{name: b"x" * limit + b"\xff"}))
        values = [getattr(r, name) for r in records]
        assert values[0] == values[1] == "x" * limit
        assert values[2] == "a" + "\u00e9" * ((limit - 1) // 2)          # the split one goes
        assert values[3] == "ab" + "\U0001f600" * ((limit - 2) // 4)
        assert values[4] == "x" * limit            # what lies past the cut is never read
        assert [r.message for r in records] == ["m"] * 5

    def test_invalid_utf8_inside_the_kept_part_is_still_refused(self):
        """The cut does not excuse a strict field: its kept bytes must be UTF-8."""
        assert refused(wire.HELLO + strings_frame(func=b"\xff" + b"x" * 5000)) == \
            "invalid UTF-8 in func at byte 0"
        assert refused(wire.HELLO + strings_frame(source=b"x" * 10 + b"\xc3(" + b"x" * 5000)) \
            == "invalid UTF-8 in source"

    def test_a_client_sent_record_is_marked_relayed_and_a_local_one_is_not(self):
        """The text lines of another process's records name its source (so a host-wide
        file tells programs apart)."""
        got, = decode(wire.HELLO + strings_frame())
        assert got.relayed is True
        assert Record(1, "s", "m").relayed is False
