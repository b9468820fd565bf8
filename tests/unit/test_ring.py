"""The ring buffer: byte-bounded, oldest whole records first, survives SIGKILL on disk."""
import os
import signal
import subprocess
import sys

from virlogd.ring import RingBuffer


def test_entries_come_back_oldest_first():
    """What goes in comes out in the order it went in."""
    ring = RingBuffer(1024)
    for i in range(5):
        ring.append(f"line {i}\n".encode())
    assert ring.entries() == [f"line {i}\n".encode() for i in range(5)]


def test_the_oldest_whole_records_are_overwritten_first():
    """When full, the oldest records go, whole, and the bound is never exceeded."""
    ring = RingBuffer(100)
    for i in range(50):
        ring.append(b"%02d-0123456789\n" % i)      # 14 bytes + 4 of length = 18
        assert ring.used <= 100
    assert ring.entries() == [b"%02d-0123456789\n" % i for i in range(45, 50)]


def test_a_record_larger_than_the_whole_buffer_is_not_stored():
    """A record bigger than the buffer is skipped and counted; the others stay."""
    ring = RingBuffer(64)
    ring.append(b"small\n")
    ring.append(b"x" * 61)
    assert ring.entries() == [b"small\n"]
    assert ring.skipped == 1


def test_wrapping_keeps_records_intact_across_the_end_of_the_area():
    """Records that straddle the end of the circular area read back intact."""
    ring, model = RingBuffer(50), []
    for i in range(200):
        data = bytes([65 + i % 26]) * (7 + i % 11)
        ring.append(data)
        model.append(data)
        while sum(len(d) + 4 for d in model) > 50:
            model.pop(0)
        assert ring.entries() == model


def test_clear_empties_the_buffer():
    """After a dump the buffer starts afresh, as libvirt's did."""
    ring = RingBuffer(100)
    ring.append(b"a\n")
    ring.clear()
    assert ring.entries() == [] and ring.used == 0


def test_a_cleanly_closed_file_has_nothing_to_recover(tmp_path):
    """A clean stop leaves nothing to recover."""
    path = str(tmp_path / "ring")
    ring = RingBuffer(256, path)
    ring.append(b"hello\n")
    ring.close()
    assert RingBuffer.recover(path) is None


def test_the_buffer_of_a_sigkilled_process_is_recovered(tmp_path):
    """A process killed with SIGKILL leaves its buffer for the next start."""
    path = str(tmp_path / "ring")
    code = ("import os,sys; from virlogd.ring import RingBuffer\n"
            f"r = RingBuffer(256, {path!r})\n"
            "for i in range(40): r.append(b'rec %d\\n' % i)\n"
            "os.kill(os.getpid(), 9)\n")
    proc = subprocess.run([sys.executable, "-c", code], check=False)
    assert proc.returncode == -signal.SIGKILL
    entries = RingBuffer.recover(path)
    assert entries[-1] == b"rec 39\n"
    assert sum(len(e) + 4 for e in entries) <= 256
    assert entries == [b"rec %d\n" % i for i in range(40 - len(entries), 40)]


def test_a_damaged_file_recovers_nothing_and_never_raises(tmp_path):
    """Garbage in the ring file must never stop a start."""
    path = tmp_path / "ring"
    path.write_bytes(b"VLRING1\0" + os.urandom(200))
    assert RingBuffer.recover(str(path)) in (None,) or isinstance(
        RingBuffer.recover(str(path)), list)
    path.write_bytes(b"junk")
    assert RingBuffer.recover(str(path)) is None
    assert RingBuffer.recover(str(tmp_path / "missing")) is None
