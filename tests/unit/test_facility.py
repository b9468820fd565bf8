"""A record's syslog facility (the field SYSLOG_INPUT_FACILITY) in each output that has a place
for it: journald's SYSLOG_FACILITY, the PRI of a syslog datagram and of a remote message.
virlog -p FACILITY.LEVEL and the syslog input set it; without it, daemon (3), as libvirt."""
import pytest

from virlogd.outputs.journald import journal_fields, record_payload
from virlogd.outputs.remote import format_message
from virlogd.outputs.syslog import format_datagram
from virlogd.core.record import Record
from virlogd.daemon.syslog_input import parse_syslog

OWN_PID = 1


def record(priority, fields=None):
    return Record(priority, "myapp", "m", fields=fields, pid=4242, time=1_700_000_000.0)


@pytest.mark.parametrize("fields,priority,facility,pri", [
    (None, 3, "3", 28),                                   # daemon.warning: libvirt's
    ({"SYSLOG_INPUT_FACILITY": "19"}, 4, "19", 155),       # local3.err
    ({"SYSLOG_INPUT_FACILITY": "0"}, 1, "0", 7),           # kern.debug
    ({"SYSLOG_INPUT_FACILITY": "99"}, 2, "3", 30),         # not a facility: daemon
    ({"SYSLOG_INPUT_FACILITY": b"19"}, 2, "3", 30),        # bytes: daemon
])
def test_each_syslog_speaking_output_writes_the_records_facility(fields, priority, facility,
                                                                 pri):
    rec = record(priority, fields)
    assert journal_fields(rec, OWN_PID)["SYSLOG_FACILITY"] == facility
    assert f"\nSYSLOG_FACILITY={facility}\n".encode() in record_payload(rec, OWN_PID)
    assert format_datagram(rec, "relay").startswith(f"<{pri}>".encode())
    assert format_message(rec, "host", "virlogd").startswith(f"<{pri}>1 ".encode())


def test_a_syslog_datagrams_facility_goes_on_to_the_outputs():
    """logger -p local4.notice to the syslog input: local4 (20) in journald and in the PRI
    (severity by libvirt's map: notice is info, 6)."""
    priority, source, message, fields = parse_syslog(b"<165>Nov  5 10:07:00 app[1]: hi")
    rec = Record(priority, source, message, fields=fields, pid=4242)
    assert journal_fields(rec, OWN_PID)["SYSLOG_FACILITY"] == "20"
    assert format_datagram(rec, "relay").startswith(b"<166>")
